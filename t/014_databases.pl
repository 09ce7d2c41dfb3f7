# t/014_databases.pl: the workers of several databases side by side.
#
# A cluster often holds several databases with aimroute (one per brand
# family or per customer).  aimroute.database names them, a comma-separated
# list (SPEC section 3): each gets its own re-route worker and delivery
# worker, which re-route and deliver that database's leads only, and a lead
# committed in one database wakes that database's delivery worker.  A list
# that names a database twice is refused.  PostGIS placement:
# public (t/lib/Placement.pm).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use DeliverySinks;
use Placement;

my $placement = Placement::pick('public');
my $smtp = start_smtp_sink();

my $node = PostgreSQL::Test::Cluster->new('databases');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'boats, "RV Leads"'
aimroute.reroute_naptime = 1s
aimroute.delivery_naptime = 3600s
});
$node->start;

my %db = (boats => 'BT', 'RV Leads' => 'RV');
for my $name (sort keys %db)
{
	my $brand = $db{$name};
	$node->safe_psql('postgres', qq{CREATE DATABASE "$name"});
	Placement::install($node, $name, $placement);
	$node->psql($name, 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');
	$node->safe_psql(
		$name, qq{
		INSERT INTO aimroute.brands VALUES ('$brand', 'Brand of $name');
		INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code) VALUES
		  ('HQ', 'HQ', 'US', '10001'), ('CHI', 'Chicago', 'US', '60601'), ('MKE', 'Milwaukee', 'US', '53202');
		INSERT INTO aimroute.dealer_brands VALUES ('CHI', '$brand'), ('MKE', '$brand');
		INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, contact_types) VALUES
		  ('CHI', 'Sales', 'chi\@$brand.example', '{Leads: Emails To}'),
		  ('MKE', 'Sales', 'mke\@$brand.example', '{Leads: Emails To}');
		UPDATE aimroute.settings SET default_dealer_number = 'HQ', reroute_enabled = true,
		       reroute_after = '24 hours', reroute_max_dealers = 5,
		       smtp_url = '$smtp->{url}', smtp_from = 'leads\@$brand.example';
	});
}

# Two workers of each kind, one per database, each named after its database.
my $workers_sql = q{SELECT string_agg(backend_type || ' in ' || datname, '; ' ORDER BY backend_type, datname)
  FROM pg_stat_activity WHERE backend_type LIKE 'aimroute % worker'};
ok( $node->poll_query_until(
		'postgres', "SELECT ($workers_sql) = 'aimroute delivery worker in RV Leads; aimroute delivery worker in boats; "
		  . "aimroute re-route worker in RV Leads; aimroute re-route worker in boats'"),
	'a re-route worker and a delivery worker in each database of aimroute.database');
for my $name (sort keys %db)
{
	is($node->safe_psql($name, 'SELECT aimroute.reroute_worker_running() AND aimroute.delivery_worker_running()'),
		't', "the running checks say so in $name");
}
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'SET client_min_messages = warning; CREATE EXTENSION aimroute CASCADE');
is($node->safe_psql('other', 'SELECT aimroute.reroute_worker_running() OR aimroute.delivery_worker_running()'),
	'f', 'and say no in a database the list does not name');

# A lead in each database: delivered by that database's worker at once
# (the naptime is an hour, so only the wake at commit sends it), with that
# database's sender.
for my $name (sort keys %db)
{
	my $brand = $db{$name};
	$node->safe_psql($name,
		"INSERT INTO aimroute.leads (brand_code, country, postal_code, comment) VALUES ('$brand', 'US', '60601', 'one')");
}
my $got = wait_for_log(
	$smtp,
	sub {
		my @m = grep { $_->{event} eq 'message' } @{ $_[0] };
		return @m >= 2 ? \@m : undef;
	});
ok(defined $got, 'each database\'s lead was delivered, woken by its own commit');
is( join(',', sort map { lc "$_->{mail_from}>$_->{rcpt_tos}[0]" } @{ $got // [] }),
	'leads@bt.example>chi@bt.example,leads@rv.example>chi@rv.example',
	'... from that database\'s sender to that database\'s dealer contact');
for my $name (sort keys %db)
{
	ok( $node->poll_query_until(
			$name, "SELECT email_status = 'Delivered' FROM aimroute.lead_delivery_status s JOIN aimroute.leads l USING (lead_id) WHERE l.comment = 'one'"),
		"the lead shows Delivered in $name");
}

# An overdue lead in each database: each re-route worker moves its own.
for my $name (sort keys %db)
{
	$node->safe_psql($name, "UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE comment = 'one'");
}
for my $name (sort keys %db)
{
	ok( $node->poll_query_until(
			$name, "SELECT dealer_number = 'MKE' AND match_type = 'Re-Route' FROM aimroute.leads WHERE comment = 'one'"),
		"the overdue lead in $name is re-routed");
}

# A worker killed in one database is restarted; the other database's
# workers are not disturbed.
my $boats_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'aimroute re-route worker' AND datname = 'boats'");
my $rv_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'aimroute re-route worker' AND datname = 'RV Leads'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($boats_pid)");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'aimroute re-route worker' AND datname = 'boats' AND pid <> $boats_pid",
		't'),
	'a re-route worker ended in one database starts again there');
is( $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'aimroute re-route worker' AND datname = 'RV Leads'"),
	$rv_pid,
	'... and the other database\'s worker ran on');

# A list that names a database twice is refused, as PostgreSQL refuses a
# bad value of an extension's setting: a WARNING in the log, and the
# default (postgres) instead.
$node->stop;
$node->append_conf('postgresql.conf', "aimroute.database = 'boats, boats'\n");
my $log_offset = -s $node->logfile;
$node->start;
like(
	slurp_file($node->logfile, $log_offset),
	qr/invalid value for parameter "aimroute.database".*\n.*Database "boats" is named twice/,
	'a list naming a database twice is refused, and the log says why');
ok( $node->poll_query_until(
		'postgres', "SELECT ($workers_sql) = 'aimroute delivery worker in postgres; aimroute re-route worker in postgres'"),
	'... and the workers run in the default database instead');
stop($smtp);
done_testing();
