# t/017_delivery_concurrency.pl: the delivery worker sends many messages
# at once, and no endpoint holds back the others (issue 16).
#
#   a. Head of line: a dealer's CRM endpoint accepts the connection and
#      never answers, and its message is queued first; 50 emails to other
#      dealers queued after it are all delivered while that message is
#      still being sent, long before aimroute.delivery_timeout runs out.
#      The hanging message then times out and is retried on the schedule,
#      with the same Idempotency-Key, as before.
#   b. The per-endpoint limit: a CRM endpoint that answers slowly never
#      has more requests open at once than
#      aimroute.delivery_endpoint_concurrency (seen by the sink itself), and
#      a new limit applies after a reload.
#   c. A fast restart while transfers run, one of them hanging: the worker
#      stops at once and gives the messages back, sent again after the
#      restart as the same attempts.
#
# The sinks are real servers on loopback (t/lib/DeliverySinks.pm).  No
# timing is asserted: what shows the property is the order of events.
#
# PostGIS placement: public (t/lib/Placement.pm).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use DeliverySinks;
use Placement;

my $timeout = 20;    # aimroute.delivery_timeout, seconds
my $smtp = start_smtp_sink();
my $hang = start_http_sink();
my $slow = start_http_sink(stall_seconds => 1.5);

my $node = PostgreSQL::Test::Cluster->new('concurrency');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
aimroute.delivery_naptime = 60s
aimroute.delivery_timeout = ${timeout}s
aimroute.delivery_concurrency = 16
aimroute.delivery_endpoint_concurrency = 3
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', Placement::pick('public'));
$node->psql('app', 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');
ok( $node->poll_query_until(
		'app',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'aimroute delivery worker'"),
	'the delivery worker runs');

$node->safe_psql(
	'app', qq{
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('HOL', 'Head of Line Boats');
	INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
	  ('HQ', 'Corporate', 'US', '10001'),
	  ('HANG', 'Silent CRM Marine', 'US', '49757'),
	  ('A', 'Alpha Marine', 'US', '60601'),
	  ('B', 'Beta Marine', 'US', '53202'),
	  ('SLOW', 'Slow CRM Marine', 'US', '33101');
	INSERT INTO dealer_brands SELECT dealer_number, 'HOL' FROM dealers WHERE dealer_number <> 'HQ';
	INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
	  ('HANG', NULL, 'postal', 'US', '49757'), ('A', NULL, 'postal', 'US', '60601'),
	  ('B', NULL, 'postal', 'US', '53202'), ('SLOW', NULL, 'postal', 'US', '33101');
	INSERT INTO dealer_contacts (dealer_number, name, email, contact_types) VALUES
	  ('A', 'Sales', 'sales\@a.example', '{Leads: Emails To}'),
	  ('B', 'Sales', 'sales\@b.example', '{Leads: Emails To}');
	INSERT INTO crm_integrations (dealer_number, kind, endpoint) VALUES
	  ('HANG', 'adf_http', '$hang->{url}/hang/adf'),
	  ('SLOW', 'adf_http', '$slow->{url}/slow/adf');
	UPDATE settings SET default_dealer_number = 'HQ', smtp_url = '$smtp->{url}',
	       smtp_from = 'leads\@oem.example', delivery_retry_schedule = '{1 second}';
});

# leads(zip, n): insert n leads in one statement; their ids, in order.
sub leads
{
	my ($zip, $n) = @_;
	return split /\n/,
	  $node->safe_psql('app',
		"INSERT INTO aimroute.leads (brand_code, country, postal_code, first_name, last_name, email)"
		  . " SELECT 'HOL', 'US', '$zip', 'Lee', 'Number ' || i, 'lee' || i || '\@example.com'"
		  . " FROM generate_series(1, $n) i RETURNING lead_id");
}

### a. Head of line.
my ($hanging) = leads('49757', 1);
my $hang_message = $node->safe_psql('app',
	"SELECT message_id FROM aimroute.outbox WHERE lead_id = $hanging AND role = 'adf_http'");
ok(defined wait_for_log($hang, sub { grep { $_->{event} eq 'request' } @{ $_[0] } }),
	'the silent CRM endpoint has the hanging message\'s request, and answers nothing');

my @emails = (leads('60601', 25), leads('53202', 25));
my $list = join(',', @emails);
ok( $node->poll_query_until(
		'app',
		"SELECT count(*) = 50 FROM aimroute.outbox WHERE lead_id IN ($list) AND status = 'delivered'"),
	'the 50 emails queued after it are all delivered');
is( $node->safe_psql(
		'app',
		"SELECT status || ' ' || attempts || ' ' || (SELECT count(*) FROM aimroute.delivery_attempt_log a WHERE a.message_id = o.message_id)"
		  . " FROM aimroute.outbox o WHERE message_id = $hang_message"),
	'sending 1 0',
	'... while the hanging message is still being sent, its timeout not run out');
is(scalar @{ read_log($smtp, 'message') }, 50, 'the SMTP server got the 50 emails');
is(scalar @{ read_log($hang, 'hang_closed') }, 0, 'and the silent endpoint still holds the connection');
note(
	'delay of the 50 emails (queued to delivered): '
	  . $node->safe_psql(
		'app',
		"SELECT format('p50 %s ms, max %s ms', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY d)), round(max(d)))"
		  . " FROM (SELECT extract(epoch FROM finished_at - queued_at) * 1000 AS d"
		  . "       FROM aimroute.outbox WHERE lead_id IN ($list)) x"));

ok( $node->poll_query_until(
		'app', "SELECT status = 'failed' FROM aimroute.outbox WHERE message_id = $hang_message"),
	'the hanging message times out, is retried, and fails');
is( $node->safe_psql(
		'app',
		"SELECT string_agg(outcome || ' ' || (response LIKE '%timed out%'), ',' ORDER BY attempt)"
		  . " FROM aimroute.delivery_attempts WHERE message_id = $hang_message"),
	'Will retry true,Failed true',
	'each attempt timed out after aimroute.delivery_timeout: retried on the schedule, then failed');
my @held = @{ read_log($hang, 'hang_closed') };
is(scalar @held, 2, 'the silent endpoint saw two attempts, each ended by the worker');
cmp_ok($held[0]{seconds}, '>=', $timeout - 1, 'each held for the whole timeout');
my @keys = map { $_->{headers}{'Idempotency-Key'} } @{ read_log($hang, 'request') };
ok(@keys == 2 && $keys[0] && $keys[0] eq $keys[1], 'both with the same Idempotency-Key');

### b. The per-endpoint limit, seen by the endpoint.
my @slow_leads = leads('33101', 12);
$list = join(',', @slow_leads);
ok( $node->poll_query_until(
		'app',
		"SELECT count(*) = 12 FROM aimroute.outbox WHERE lead_id IN ($list) AND status = 'delivered'"),
	'12 messages to a slow CRM endpoint are delivered');
my @requests = @{ read_log($slow, 'request') };
my ($most) = sort { $b <=> $a } map { $_->{requests_open} } @requests;
my ($most_connections) = sort { $b <=> $a } map { $_->{connections} } @requests;
is($most, 3, 'the endpoint never had more than aimroute.delivery_endpoint_concurrency (3) requests open, and had 3');
cmp_ok($most_connections, '<=', 3, "nor more than 3 connections ($most_connections)");

$node->safe_psql('app',
	"ALTER SYSTEM SET aimroute.delivery_endpoint_concurrency = 5; SELECT pg_reload_conf()");
ok( $node->poll_query_until(
		'app', "SELECT current_setting('aimroute.delivery_endpoint_concurrency') = '5'"),
	'the limit is raised to 5 and the configuration reloaded');
my $before = scalar @requests;
@slow_leads = leads('33101', 15);
$list = join(',', @slow_leads);
ok( $node->poll_query_until(
		'app',
		"SELECT count(*) = 15 FROM aimroute.outbox WHERE lead_id IN ($list) AND status = 'delivered'"),
	'15 more are delivered');
@requests = @{ read_log($slow, 'request') };
($most) = sort { $b <=> $a } map { $_->{requests_open} } @requests[ $before .. $#requests ];
is($most, 5, 'the worker read the new limit: 5 requests open at most, and 5 at a time');

### c. A fast shutdown while a transfer hangs and others run: the worker
### gives the messages back at once, the hanging one as the same attempt.
$hanging = (leads('49757', 1))[0];
$hang_message = $node->safe_psql('app',
	"SELECT message_id FROM aimroute.outbox WHERE lead_id = $hanging AND role = 'adf_http'");
ok( defined wait_for_log(
		$hang, sub { scalar(grep { $_->{event} eq 'request' } @{ $_[0] }) >= 3 }),
	'a third hanging request is held by the silent endpoint');
my $slow_before = scalar @{ read_log($slow, 'request') };
@slow_leads = leads('33101', 5);
ok(defined wait_for_log($slow, sub { scalar(grep { $_->{event} eq 'request' } @{ $_[0] }) > $slow_before }),
	'and the slow endpoint has requests of five more');
my $stop_started = time;
$node->restart;
cmp_ok(time - $stop_started, '<', $timeout,
	'the restart did not wait for the hanging transfer (its timeout is 20 s)');
$list = join(',', @slow_leads);
ok( $node->poll_query_until(
		'app',
		"SELECT count(*) = 5 FROM aimroute.outbox WHERE lead_id IN ($list) AND status = 'delivered'"),
	'after the restart the slow endpoint\'s five are delivered');
ok( defined wait_for_log(
		$hang, sub { scalar(grep { $_->{event} eq 'request' } @{ $_[0] }) >= 4 }),
	'and the hanging message is sent again');
is( $node->safe_psql(
		'app',
		"SELECT attempts || ' ' || (SELECT count(*) FROM aimroute.delivery_attempt_log a WHERE a.message_id = o.message_id)"
		  . " FROM aimroute.outbox o WHERE message_id = $hang_message"),
	'1 0',
	'as its first attempt again: given back at the shutdown, not Interrupted');
is( $node->safe_psql(
		'app',
		"SELECT count(*) FROM aimroute.delivery_attempt_log a JOIN aimroute.outbox o USING (message_id)"
		  . " WHERE o.lead_id IN ($list) AND a.outcome <> 'Delivered'"),
	'0',
	'the slow endpoint\'s messages cut short were given back too: no attempt but Delivered');

$node->stop;
done_testing();
