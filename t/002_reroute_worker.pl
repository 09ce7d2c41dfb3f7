# t/002_reroute_worker.pl: the re-route worker on real clusters.
#
# With aimroute preloaded: the worker shows in pg_stat_activity and re-routes
# an overdue lead by itself; SIGKILL of the worker in the middle of a batch
# and an immediate shutdown in the middle of a batch lose no deadline and
# re-route no lead twice; a streaming standby runs no worker, and the
# standby starts one when promoted.  Deadlines are moved into the past by
# UPDATE rather than waited for.  PostGIS placement: public
# (t/lib/Placement.pm), where a lead sent to the default dealer once
# crash-looped the worker.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Placement;

my $placement = Placement::pick('public');

my $node = PostgreSQL::Test::Cluster->new('primary');
$node->init(allows_streaming => 1);
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
aimroute.reroute_naptime = 1s
restart_after_crash = on
});
$node->start;

my $worker_pid_sql =
  "SELECT pid FROM pg_stat_activity WHERE backend_type = 'aimroute re-route worker'";

$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', $placement);
$node->psql('app', 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');
$node->safe_psql(
	'app', q{
	INSERT INTO aimroute.brands VALUES ('RW', 'Worker test brand');
	INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code) VALUES
	  ('HQ', 'HQ', 'US', '10001'), ('CHI', 'Chicago', 'US', '60601'),
	  ('MKE', 'Milwaukee', 'US', '53202'), ('MAD', 'Madison', 'US', '53703');
	INSERT INTO aimroute.dealer_brands VALUES ('CHI', 'RW'), ('MKE', 'RW'), ('MAD', 'RW');
	UPDATE aimroute.settings SET default_dealer_number = 'HQ', reroute_enabled = true,
	       reroute_after = '24 hours', reroute_max_dealers = 5;
});

ok($node->poll_query_until('app', "SELECT count(*) = 1 FROM ($worker_pid_sql) w"),
	'one worker in pg_stat_activity, as "aimroute re-route worker"');
is($node->safe_psql('app', 'SELECT aimroute.reroute_worker_running()'),
	't', 'reroute_worker_running() says so');

# With no deadline at all, the worker sleeps for its naptime (1 s here)
# between rounds of three short transactions; it does not spin.
my $commits_sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'";
my $commits_before = $node->safe_psql('app', $commits_sql);
sleep 4;
my $commits = $node->safe_psql('app', $commits_sql) - $commits_before;
cmp_ok($commits, '<', 60, "no deadline: the worker idles ($commits transactions in 4 s)");

# A timer fires by itself.
$node->safe_psql(
	'app', q{
	INSERT INTO aimroute.leads (brand_code, country, postal_code, comment) VALUES ('RW', 'US', '60601', 'one');
	UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE comment = 'one';
});
ok( $node->poll_query_until(
		'app', "SELECT dealer_number = 'MKE' AND match_type = 'Re-Route' FROM aimroute.leads WHERE comment = 'one'"),
	'an overdue lead is re-routed by the worker to the next best dealer');
is( $node->safe_psql(
		'app',
		"SELECT count(*) FROM aimroute.lead_history h JOIN aimroute.leads l USING (lead_id) WHERE l.comment = 'one'"),
	'1',
	'once, with its history row');

# A lead re-routed reroute_max_dealers times goes to the default dealer,
# measured with PostGIS from wherever it lives: once the worker's first
# lead of a round, such a lead stopped re-routing for everyone.
$node->safe_psql(
	'app', q{
	UPDATE aimroute.settings SET reroute_max_dealers = 1;
	INSERT INTO aimroute.leads (brand_code, country, postal_code, comment) VALUES ('RW', 'US', '60601', 'max');
	UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE comment = 'max';
});
ok( $node->poll_query_until(
		'app', "SELECT dealer_number = 'MKE' AND reroute_count = 1 FROM aimroute.leads WHERE comment = 'max'"),
	'reroute_max_dealers 1: the first deadline moves the lead to the next dealer');
$node->safe_psql('app',
	"UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE comment = 'max'");
ok( $node->poll_query_until(
		'app', "SELECT dealer_number = 'HQ' AND match_type = 'Default' FROM aimroute.leads WHERE comment = 'max'"),
	'the second sends it to the default dealer, by the worker');
is( $node->safe_psql(
		'app', q{
	SELECT round(l.distance_miles) || '|' || round(aimroute.dealer_distance_miles('US', '60601', 'HQ'))
	       || '|' || (h.reason LIKE '%reroute_max_dealers 1%')
	  FROM aimroute.leads l JOIN aimroute.lead_history h USING (lead_id)
	 WHERE l.comment = 'max' AND h.to_dealer = 'HQ'}),
	'712|712|true',
	'with the distance to the default dealer and the reason in its history');
is($node->safe_psql('app', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'aimroute re-route worker'"),
	'1', 'and the worker still runs');
$node->safe_psql('app', 'UPDATE aimroute.settings SET reroute_max_dealers = 5');

# many_overdue(tag): 3,000 leads tagged tag, all overdue now.
sub many_overdue
{
	my ($tag) = @_;
	$node->safe_psql(
		'app', qq{
	INSERT INTO aimroute.leads (brand_code, country, postal_code, comment)
	SELECT 'RW', 'US', '60601', '$tag' FROM generate_series(1, 3000);
	UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE comment = '$tag';
});
}

# Every lead tagged tag re-routed exactly once: CHI -> MKE, one history row.
sub exactly_once
{
	my ($tag) = @_;
	return $node->safe_psql(
		'app', qq{
	SELECT count(*) FILTER (WHERE l.dealer_number = 'MKE' AND l.reroute_count = 1
	                          AND (SELECT count(*) FROM aimroute.lead_history h WHERE h.lead_id = l.lead_id) = 1)
	       || '/' || count(*)
	  FROM aimroute.leads l WHERE l.comment = '$tag'});
}

# Wait until the worker is inside a batch, and return its pid.
sub worker_in_batch
{
	my $pid;
	$node->poll_query_until('app',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'aimroute re-route worker' AND state = 'active' AND query LIKE '%re-routing%'"
	) or return undef;
	$pid = $node->safe_psql('app', $worker_pid_sql);
	return $pid;
}

# SIGKILL of the worker in the middle of a batch.
many_overdue('kill');
my $pid = worker_in_batch();
ok(defined $pid && $pid =~ /^\d+$/, 'the worker is re-routing a batch');
my $moved_before = $node->safe_psql('app',
	"SELECT count(*) FROM aimroute.leads WHERE comment = 'kill' AND dealer_number = 'MKE'");
kill 'KILL', $pid;
ok( $node->poll_query_until(
		'app',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'aimroute re-route worker' AND pid <> $pid"),
	'after SIGKILL (and the crash restart it causes) a new worker runs');
ok( $node->poll_query_until(
		'app', "SELECT count(*) = 0 FROM aimroute.leads WHERE comment = 'kill' AND dealer_number = 'CHI'"),
	"SIGKILL mid-batch ($moved_before of 3000 moved when killed): every lead is re-routed in the end");
is(exactly_once('kill'), '3000/3000', 'SIGKILL mid-batch: each lead re-routed exactly once');

# An immediate shutdown in the middle of a batch.
many_overdue('immediate');
$pid = worker_in_batch();
ok(defined $pid, 'the worker is re-routing another batch');
$node->stop('immediate');
$node->start;
ok( $node->poll_query_until(
		'app', "SELECT count(*) = 0 FROM aimroute.leads WHERE comment = 'immediate' AND dealer_number = 'CHI'"),
	'after pg_ctl stop -m immediate: every lead is re-routed in the end');
is(exactly_once('immediate'), '3000/3000', 'immediate shutdown mid-batch: each lead re-routed exactly once');

# A streaming standby runs no worker; promoted, it does.
$node->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'base', has_streaming => 1);
$standby->start;
$node->wait_for_catchup($standby);
is($standby->safe_psql('app', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');
sleep 2;
is($standby->safe_psql('app', "SELECT count(*) FROM ($worker_pid_sql) w"),
	'0', 'a streaming standby runs no re-route worker');
is( $standby->safe_psql(
		'app', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'aimroute delivery worker'"),
	'0',
	'and no delivery worker: a standby sends nothing');
$node->stop;
$standby->promote;
ok($standby->poll_query_until('app', "SELECT count(*) = 1 FROM ($worker_pid_sql) w"),
	'the promoted standby starts the worker');
ok( $standby->poll_query_until(
		'app', "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'aimroute delivery worker'"),
	'and the delivery worker');
$standby->safe_psql('app',
	"INSERT INTO aimroute.leads (brand_code, country, postal_code, comment) VALUES ('RW', 'US', '60601', 'promoted');
	 UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE comment = 'promoted'");
ok( $standby->poll_query_until(
		'app', "SELECT dealer_number = 'MKE' FROM aimroute.leads WHERE comment = 'promoted'"),
	'and it re-routes overdue leads');

$standby->stop;
done_testing();
