# t/011_standby.pl: aimroute read on a streaming standby.
#
# A primary holds the shipped postal codes, a small network and routed
# leads, delivered by its worker to a loopback SMTP sink (one recipient
# bounces); a standby streams from it.  In ONE
# long-lived session on the standby, locate_dealers(), route(),
# explain_lead(), the four delivery views and the other functions that
# only read (normalization, lead_adf, reroute_due_at, simulate_routing)
# answer, the same as on the primary.  Then the primary's configuration changes three times (a dealer
# deactivated, a territory added, radius_miles raised); after each change
# is replayed, the same standby session answers by the new configuration:
# its in-memory copy of the configuration (src/model.c) is rebuilt,
# because the version number it reads is replayed with the change.  Last,
# nothing in the standby tried to write: its log holds no ERROR.
#
# PostGIS placement: gis (t/lib/Placement.pm).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use DeliverySinks;
use Placement;

my $smtp = start_smtp_sink();

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
});
$primary->start;
$primary->safe_psql('postgres', 'CREATE DATABASE app');
# The workers started before database app existed and would wait to retry.
$primary->restart;
Placement::install($primary, 'app', Placement::pick('gis'));
$primary->psql('app', 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');
# Brand SB around Lake Michigan, radius routing within 100 miles; Champaign
# (61820) is farther than that from every dealer.
$primary->safe_psql(
	'app', qq{
	INSERT INTO aimroute.brands VALUES ('SB', 'Standby Boats');
	INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code) VALUES
	  ('HQ', 'Corporate', 'US', '10001'), ('CHI', 'Chicago', 'US', '60601'),
	  ('MKE', 'Milwaukee', 'US', '53202'), ('MAD', 'Madison', 'US', '53703');
	INSERT INTO aimroute.dealer_brands VALUES ('CHI', 'SB'), ('MKE', 'SB'), ('MAD', 'SB');
	INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, contact_types) VALUES
	  ('CHI', 'Sales', 'sales\@chi.example', '{Leads: Emails To}'),
	  ('MKE', 'Sales', 'sales\@mke.example', '{Leads: Emails To}'),
	  ('MKE', 'Owner', 'hardbounce\@mke.example', '{Leads: Emails CC}');
	UPDATE aimroute.settings SET default_dealer_number = 'HQ', radius_miles = 100,
	       smtp_url = '$smtp->{url}', smtp_from = 'leads\@oem.example';
	INSERT INTO aimroute.leads (brand_code, country, postal_code, email, comment) VALUES
	  ('SB', 'US', '60601', 'a\@example.com', 'chicago'),
	  ('SB', 'US', '53202', 'b\@example.com', 'milwaukee'),
	  ('SB', 'US', '61820', 'c\@example.com', 'champaign');
});
is( $primary->safe_psql(
		'app', "SELECT string_agg(comment || ' ' || dealer_number || ' ' || match_type, ', ' ORDER BY lead_id) FROM aimroute.leads"),
	'chicago CHI Radius, milwaukee MKE Radius, champaign HQ Default',
	'the primary routed its leads');
ok( $primary->poll_query_until(
		'app', "SELECT count(*) = 0 FROM aimroute.outbox WHERE status IN ('queued', 'sending')"),
	'and its delivery worker sent their messages');

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

my $lead_id = $primary->safe_psql('app', "SELECT lead_id FROM aimroute.leads WHERE comment = 'chicago'");

# What is asked on the standby, and of the primary to compare.
my %query = (
	locate => "SELECT rank, dealer_number, round(distance_miles), match_type FROM aimroute.locate_dealers('US', '60601', 'SB', max_results => 3)",
	route => "SELECT dealer_number, match_type, round(distance_miles) FROM aimroute.route('US', '61820', 'SB')",
	explain => "SELECT step, rule, message, dealer_number, round(distance_miles) FROM aimroute.explain_lead($lead_id)",
	status => 'SELECT lead_id, dealer_number, email_status FROM aimroute.lead_delivery_status ORDER BY lead_id',
	unsent => 'SELECT lead_id, dealer_number FROM aimroute.unsent_leads ORDER BY lead_id',
	attempts => 'SELECT lead_id, recipient, outcome FROM aimroute.delivery_attempts ORDER BY lead_id, recipient',
	issues => 'SELECT count(*) FROM aimroute.delivery_issues',
	# The other functions that only read, which docs/scaling.md sends to
	# standbys too.
	reads => "SELECT aimroute.normalize_country('usa'), aimroute.normalize_postal_code('CA', 'k1a 0b1'),"
	  . " aimroute.postal_code_is_valid('US', '1234X'), length(aimroute.lead_adf($lead_id)) > 0,"
	  . " aimroute.reroute_due_at('2026-01-05 10:00+00') IS NULL, aimroute.library_version()",
	simulate => "SELECT lead_id, dealer_number, match_type, simulated_dealer_number, simulated_match_type"
	  . " FROM aimroute.simulate_routing('-infinity', 'infinity') ORDER BY lead_id",
);

# One session on the standby for the whole test.
my $session = $standby->background_psql('app', on_error_stop => 0);
$session->set_query_timer_restart;

# ask(sql): the standby session's answer; fails the test on an error.
sub ask
{
	my ($sql) = @_;
	my ($out, $failed) = $session->query($sql);
	if ($failed)
	{
		fail("on the standby: $sql");
		diag($session->{stderr});
		$session->{stderr} = '';
	}
	return $out;
}

my $pid = ask('SELECT pg_backend_pid()');
is(ask('SELECT pg_is_in_recovery()'), 't', 'the session is on a standby in recovery');

for my $name (sort keys %query)
{
	my $got = ask($query{$name});
	isnt($got, '', "on the standby, $name answers");
	is($got, $primary->safe_psql('app', $query{$name}), "... the same as the primary");
}
like(ask($query{locate}), qr/^1\|CHI\|0\|Radius$/m, 'the locator gives CHI first for 60601');
like(ask($query{attempts}), qr/\|sales\@chi\.example\|\w/, 'the delivery views show the messages sent');
is(ask($query{issues}), '1', '... and the one that bounced');

# cache(): the version of the session's copy of the configuration and when
# it was built.
sub cache
{
	return ask('SELECT version, built_at FROM aimroute.routing_cache_info()');
}

# change(description, sql): runs sql on the primary, waits for the standby
# to replay it, and checks the session's copy was rebuilt for it.
sub change
{
	my ($what, $sql) = @_;
	my $before = cache();
	$primary->safe_psql('app', $sql);
	$primary->wait_for_catchup($standby);
	my $after = cache();
	my ($version_before) = split /\|/, $before;
	my ($version_after) = split /\|/, $after;
	cmp_ok($version_after, '>', $version_before,
		"$what: replayed, the session's copy of the configuration is rebuilt");
	is($version_after, $primary->safe_psql('app', 'SELECT version FROM aimroute.config_version'),
		'... at the primary\'s configuration version');
}

change('a dealer deactivated', "UPDATE aimroute.dealers SET active_for_sales = false WHERE dealer_number = 'CHI'");
like(ask($query{locate}), qr/^1\|MKE\|\d+\|Radius$/m, 'the same session: CHI is gone, MKE is first for 60601');
unlike(ask($query{locate}), qr/\|CHI\|/, '... and CHI is not listed at all');

change('a territory added',
	"INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code) VALUES ('MAD', 'SB', 'postal', 'US', '60601')");
like(ask($query{locate}), qr/^1\|MAD\|\d+\|Territory$/m, 'the same session: MAD holds 60601 as its territory');

is(ask($query{route}), 'HQ|Default|' . ask("SELECT round(aimroute.dealer_distance_miles('US', '61820', 'HQ'))"),
	'Champaign is beyond radius_miles 100: the default dealer');
change('radius_miles raised', 'UPDATE aimroute.settings SET radius_miles = 300');
like(ask($query{route}), qr/^(MKE|MAD)\|Radius\|\d+$/, 'the same session: within 300 miles, Champaign goes by radius');

for my $name (sort keys %query)
{
	is(ask($query{$name}), $primary->safe_psql('app', $query{$name}),
		"after the changes, $name on the standby answers as the primary does");
}
is(ask('SELECT pg_backend_pid()'), $pid, 'all in one standby session');
$session->quit;

# Nothing on the standby tried to write (an INSERT, a nextval, a lock
# that needs an xid all fail in recovery with an ERROR).
my @errors = grep { /\b(ERROR|FATAL|PANIC):/ } split /\n/, slurp_file($standby->logfile);
is(join("\n", @errors), '', 'the standby\'s log has no error');

$standby->stop;
$primary->stop;
done_testing();
