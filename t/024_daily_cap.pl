# t/024_daily_cap.pl: daily lead caps under concurrent inserts
# (dealers.daily_lead_cap, SPEC section 10).
#
# C1 is the closest dealer to the leads' ZIP code, with a cap of 20 a day;
# C2, the next one, has a cap of 30; beyond both the default dealer HQ
# takes the leads.  pgbench clients insert leads there at once, each lead
# in a transaction of its own, and some in transactions of three leads.  A
# new lead counts itself in its dealer's row of aimroute.daily_lead_counts
# only while the count is below the cap, waiting for a session that holds
# the row, so no two sessions take the last place: C1 holds exactly 20
# leads, C2 exactly 30, the counts equal the leads, and no transaction
# failed.
#
# PostGIS placement: public (t/lib/Placement.pm).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Placement;

my $clients = 6;
my $transactions = 20;    # per client

my $node = PostgreSQL::Test::Cluster->new('caps');
$node->init;
$node->append_conf('postgresql.conf', "max_connections = 40\nlog_lock_waits = off");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', Placement::pick('public'));
$node->safe_psql(
	'app', q{
	SET client_min_messages = warning;
	SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path());
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('CA', 'Caps A');
	INSERT INTO dealers (dealer_number, name, country, postal_code, daily_lead_cap)
	VALUES ('HQ', 'Corporate', 'US', '10001', NULL),
	       ('C1', 'Cap One', 'US', '49757', 20), ('C2', 'Cap Two', 'US', '49781', 30);
	INSERT INTO dealer_brands VALUES ('C1', 'CA'), ('C2', 'CA');
	UPDATE settings SET default_dealer_number = 'HQ', radius_enabled = true, radius_countries = '{US}';
},
	on_error_die => 1);

# One day for every lead, whenever the test runs.
my $lead = q{INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer, received_at)
VALUES ('CA', 'US', '49757', false, '2026-03-10 12:00+00');};
my $dir = PostgreSQL::Test::Utils::tempdir;
open(my $one, '>', "$dir/one.sql") or die;
print $one "$lead\n";
close $one;
open(my $three, '>', "$dir/three.sql") or die;
print $three "BEGIN;\n$lead\n$lead\n$lead\nCOMMIT;\n";
close $three;

my ($out, $err) = ('', '');
my @cmd = (
	'pgbench', '-n', '-h', $node->host, '-p', $node->port, '-c', $clients, '-j', 2,
	'-t', $transactions, '-f', "$dir/one.sql\@3", '-f', "$dir/three.sql\@1", 'app');
IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err);
my $rc = $? >> 8;
note $out;
diag "pgbench stderr:\n$err" if $err ne '';
is($rc, 0, 'pgbench exits 0: no client ended on an error');
like($out, qr/number of transactions actually processed: @{[ $clients * $transactions ]}\//,
	'every transaction was processed');

my $leads = $node->safe_psql('app', "SELECT count(*) FROM aimroute.leads");
cmp_ok($leads, '>', 50, "$leads leads inserted, more than both caps");
my $spread = $node->safe_psql('app',
	"SELECT string_agg(dealer_number || ' ' || n, ', ' ORDER BY dealer_number)"
	  . " FROM (SELECT dealer_number, count(*) AS n FROM aimroute.leads GROUP BY 1) l");
note "leads by dealer: $spread";
is($node->safe_psql('app', "SELECT count(*) FROM aimroute.leads WHERE dealer_number = 'C1'"),
	20, 'the closest dealer took exactly its cap');
is($node->safe_psql('app', "SELECT count(*) FROM aimroute.leads WHERE dealer_number = 'C2'"),
	30, 'leads beyond it went to the next dealer, up to that one\'s cap');
is($node->safe_psql('app', "SELECT count(*) FROM aimroute.leads WHERE dealer_number = 'HQ'"),
	$leads - 50, 'the rest went to the default dealer');
is($node->safe_psql('app', "SELECT string_agg(dealer_number || ' ' || day || ' ' || leads, ', ' ORDER BY 1)"
	  . " FROM aimroute.daily_lead_counts"),
	'C1 2026-03-10 20, C2 2026-03-10 30', 'the counts equal the leads, one row per capped dealer');
like($node->safe_psql('app',
		"SELECT string_agg(e.message, ' | ' ORDER BY e.step) FROM aimroute.leads l, aimroute.explain_lead(l.lead_id) e"
	  . " WHERE l.dealer_number = 'HQ' AND e.message LIKE '%skipped%' GROUP BY l.lead_id LIMIT 1"),
	qr/^C1 skipped: daily lead cap 20 reached for 2026-03-10; the rules again without it \| C2 skipped: daily lead cap 30 reached for 2026-03-10; the rules again without it$/,
	'a lead beyond both caps says both dealers were skipped');
unlike(slurp_file($node->logfile), qr/deadlock detected/, 'no deadlock');

$node->stop;
done_testing();
