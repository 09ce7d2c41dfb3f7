# t/013_worker_stall.pl: a worker never stalls on one bad item (SPEC
# section 8, issue 14 defect 2).
#
# Faults are planted with triggers the test adds: one lead whose re-route
# raises, one message whose claim raises, one message whose outcome cannot
# be recorded after it was really sent.  Each time the other items go on
# within a round, the bad one is set aside in aimroute.set_aside_items
# with its error and a WARNING in the server log, the worker keeps its
# process, and once the fault is gone the bad item goes through on a later
# try: a lead re-routed once for its deadline, a message sent exactly once.
# A daily recap that cannot be queued does not stop the sends either.
# PostGIS placement: gis, a schema of its own (t/lib/Placement.pm).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

use DeliverySinks;
use Placement;

my $placement = Placement::pick('gis');

my $smtp = start_smtp_sink();
my $smtp_url = "smtp://127.0.0.1:$smtp->{port}";

my $node = PostgreSQL::Test::Cluster->new('stall');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
aimroute.reroute_naptime = 1s
aimroute.delivery_naptime = 1s
aimroute.delivery_lease = 2s
aimroute.delivery_timeout = 3s
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', $placement);
$node->psql('app', 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');
$node->safe_psql(
	'app', qq{
	INSERT INTO aimroute.brands VALUES ('ST', 'Stall test brand');
	INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code) VALUES
	  ('HQ', 'HQ', 'US', '10001'), ('CHI', 'Chicago', 'US', '60601'),
	  ('MKE', 'Milwaukee', 'US', '53202'), ('MAD', 'Madison', 'US', '53703');
	INSERT INTO aimroute.dealer_brands VALUES ('CHI', 'ST'), ('MKE', 'ST'), ('MAD', 'ST');
	UPDATE aimroute.settings SET default_dealer_number = 'HQ', reroute_enabled = true,
	       reroute_after = '24 hours', reroute_max_dealers = 5,
	       smtp_url = '$smtp_url', smtp_from = 'leads\@oem.example';
});

my %pid_sql = (
	reroute => "SELECT pid FROM pg_stat_activity WHERE backend_type = 'aimroute re-route worker'",
	delivery => "SELECT pid FROM pg_stat_activity WHERE backend_type = 'aimroute delivery worker'");
ok( $node->poll_query_until(
		'app', "SELECT count(*) = 2 FROM ($pid_sql{reroute} UNION ALL $pid_sql{delivery}) w"),
	'both workers run');
my %pid = map { $_ => $node->safe_psql('app', $pid_sql{$_}) } keys %pid_sql;
# (Before the database existed they may have exited once: the log from here on.)
my $log_start = -s $node->logfile;

# within(seconds, sql): whether sql returns true within that many seconds.
sub within
{
	my ($seconds, $sql) = @_;
	my $end = time + $seconds;
	while (time < $end)
	{
		return 1 if $node->safe_psql('app', $sql) eq 't';
		sleep 0.1;
	}
	return 0;
}

# lead(comment): insert a lead near Chicago (so at CHI) and return its id.
sub lead
{
	my ($comment) = @_;
	return $node->safe_psql('app',
		"INSERT INTO aimroute.leads (brand_code, country, postal_code, comment) VALUES ('ST', 'US', '60601', '$comment') RETURNING lead_id"
	);
}

# set_aside(kind, id): the item's row of set_aside_items, as text.
sub set_aside
{
	my ($kind, $id) = @_;
	return $node->safe_psql('app',
		"SELECT concat_ws(' ', step, error_code, failures, round(extract(epoch FROM retry_at - failed_at))) || ': ' || error"
		  . " FROM aimroute.set_aside_items WHERE kind = '$kind' AND item_id = $id");
}

# retry_now(kind, id): what an operator does to try a set-aside item again now.
sub retry_now
{
	my ($kind, $id) = @_;
	$node->safe_psql('app',
		"UPDATE aimroute.set_aside_items SET retry_at = clock_timestamp() WHERE kind = '$kind' AND item_id = $id");
}

# idle(worker): transactions the database committed in 3 s while nothing is due.
sub idle_commits
{
	my $sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'";
	my $before = $node->safe_psql('app', $sql);
	sleep 3;
	return $node->safe_psql('app', $sql) - $before;
}

#
# The re-route worker.
#
$node->safe_psql(
	'app', q{
	CREATE FUNCTION public.planted_lead_fault() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	    IF NEW.comment LIKE 'bad%' AND NEW.dealer_number IS DISTINCT FROM OLD.dealer_number THEN
	        RAISE EXCEPTION 'planted fault for lead %', NEW.lead_id USING DETAIL = 'put there by the test';
	    END IF;
	    RETURN NEW;
	END $$;
	CREATE TRIGGER planted_lead_fault BEFORE UPDATE ON aimroute.leads
	    FOR EACH ROW EXECUTE FUNCTION public.planted_lead_fault();
});
# The bad lead is the earliest overdue, so it comes first in the batch.
my $bad = lead('bad');
my $viewed = lead('bad, then viewed');
my @good = map { lead("good $_") } 1 .. 4;
my $due = $node->safe_psql(
	'app', qq{
	UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() - interval '1 minute' WHERE lead_id IN ($bad, $viewed);
	UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE comment LIKE 'good%';
	SELECT reroute_due_at FROM aimroute.leads WHERE lead_id = $bad});
my $good_list = join(',', @good);
ok( within(8, "SELECT bool_and(dealer_number = 'MKE') FROM aimroute.leads WHERE lead_id IN ($good_list)"),
	'the other overdue leads are re-routed within a round, despite the lead whose re-route raises');
is( $node->safe_psql(
		'app',
		"SELECT concat_ws(' ', dealer_number, reroute_count, reroute_due_at = '$due', viewed_at IS NULL,"
		  . " (SELECT count(*) FROM aimroute.lead_history h WHERE h.lead_id = $bad))"
		  . " FROM aimroute.leads WHERE lead_id = $bad"),
	'CHI 0 t t 0',
	'the bad lead stays with its dealer and its deadline: nothing of its re-route happened');
like(set_aside('lead', $bad), qr/^re-route P0001 1 60: planted fault for lead $bad$/,
	'it is set aside in set_aside_items: step, SQLSTATE, one failure, next try in a minute, the error');
is( $node->safe_psql(
		'app',
		"SELECT concat_ws(' ', lead_id = item_id, reroute_due_at = '$due', detail, context LIKE '%planted_lead_fault%')"
		  . " FROM aimroute.set_aside_items WHERE kind = 'lead' AND item_id = $bad"),
	't t put there by the test t',
	'with the deadline it was due at, the detail and the context of the error');
ok($node->log_contains(qr/WARNING: .*aimroute: lead $bad set aside: re-routing it failed: planted fault/),
	'a WARNING in the server log names the lead and the error');
is($node->safe_psql('app', $pid_sql{reroute}), $pid{reroute}, 'the re-route worker did not exit');
is( $node->safe_psql(
		'app',
		"SELECT count(*) FROM aimroute.leads WHERE viewed_at IS NULL AND reroute_due_at < clock_timestamp()"),
	'2',
	'the set-aside leads still count as overdue');
cmp_ok(idle_commits(), '<', 40, 'the worker does not spin on the set-aside leads');

# A retry that fails again waits twice as long.
retry_now('lead', $bad);
ok(within(8, "SELECT failures = 2 FROM aimroute.set_aside_items WHERE kind = 'lead' AND item_id = $bad"),
	'tried again when its retry time came, it fails again');
like(set_aside('lead', $bad), qr/^re-route P0001 2 120: /, 'the second failure puts the next try two minutes away');

# A lead viewed while set aside is not re-routed afterwards.
$node->safe_psql('app',
	"UPDATE aimroute.leads SET viewed_at = clock_timestamp(), viewed_by = 'test', reroute_due_at = NULL WHERE lead_id = $viewed"
);

# The fault is fixed; the operator retries the lead now.
$node->safe_psql('app', 'DROP TRIGGER planted_lead_fault ON aimroute.leads');
retry_now('lead', $bad);
retry_now('lead', $viewed);
ok(within(8, "SELECT dealer_number = 'MKE' FROM aimroute.leads WHERE lead_id = $bad"),
	'once the fault is gone, the set-aside lead is re-routed on its next try');
is( $node->safe_psql(
		'app',
		"SELECT concat_ws(' ', reroute_count, (SELECT count(*) FROM aimroute.lead_history h WHERE h.lead_id = $bad),"
		  . " (SELECT reason LIKE '%by ' || to_char(timestamptz '$due' AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '%'"
		  . "    FROM aimroute.lead_history h WHERE h.lead_id = $bad))"
		  . " FROM aimroute.leads WHERE lead_id = $bad"),
	'1 1 t',
	'once, for the deadline it was set aside at');
ok(within(5, "SELECT count(*) = 0 FROM aimroute.set_aside_items WHERE kind = 'lead'"),
	'its set-aside row is gone, and so is the row of the lead viewed meanwhile');
is( $node->safe_psql(
		'app',
		"SELECT dealer_number || ' ' || (SELECT count(*) FROM aimroute.lead_history h WHERE h.lead_id = $viewed) FROM aimroute.leads WHERE lead_id = $viewed"
	),
	'CHI 0',
	'the lead viewed while set aside was never re-routed');
is($node->safe_psql('app', $pid_sql{reroute}), $pid{reroute}, 'the same re-route worker throughout');

#
# The delivery worker.
#
# messages(to): the SMTP sink's messages to one address.
sub messages
{
	my ($to) = @_;
	return scalar grep { grep { lc $_ eq lc $to } @{ $_->{rcpt_tos} } } @{ read_log($smtp, 'message') };
}

# message(to): the outbox row of the message to that address, as text.
sub message
{
	my ($to) = @_;
	return $node->safe_psql('app',
		"SELECT concat_ws(' ', status, attempts, coalesce(outcome, '-')) FROM aimroute.outbox WHERE recipient = '$to'");
}

# id(to): the message_id of the message to that address.
sub id
{
	my ($to) = @_;
	return $node->safe_psql('app', "SELECT message_id FROM aimroute.outbox WHERE recipient = '$to'");
}

$node->safe_psql(
	'app', q{
	INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code) VALUES
	  ('DC', 'Claim fault', 'US', '49757'), ('DR', 'Record fault', 'US', '33101'),
	  ('D1', 'Good one', 'US', '90210'), ('D2', 'Good two', 'US', '98101');
	INSERT INTO aimroute.dealer_brands VALUES ('DC', 'ST'), ('DR', 'ST'), ('D1', 'ST'), ('D2', 'ST');
	INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code) VALUES
	  ('DC', NULL, 'postal', 'US', '49757'), ('DR', NULL, 'postal', 'US', '33101'),
	  ('D1', NULL, 'postal', 'US', '90210'), ('D2', NULL, 'postal', 'US', '98101');
	INSERT INTO aimroute.dealer_contacts (dealer_number, email, contact_types) VALUES
	  ('DC', 'claim@bad.example', '{Leads: Emails To}'), ('DC', 'ok@dc.example', '{Leads: Emails CC}'),
	  ('DR', 'record@bad.example', '{Leads: Emails To}'),
	  ('D1', 'ok@d1.example', '{Leads: Emails To}'), ('D2', 'ok@d2.example', '{Leads: Emails To}');
	-- Claiming (or preparing) the message to claim@bad.example raises;
	-- recording the delivery of the one to record@bad.example raises.
	CREATE FUNCTION public.planted_message_fault() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	    IF NEW.recipient = 'claim@bad.example' AND NEW.status = 'sending' THEN
	        RAISE EXCEPTION 'planted claim fault for message %', NEW.message_id USING ERRCODE = 'XX001';
	    ELSIF NEW.recipient = 'record@bad.example' AND NEW.status = 'delivered' THEN
	        RAISE EXCEPTION 'planted record fault for message %', NEW.message_id USING ERRCODE = 'XX002';
	    END IF;
	    RETURN NEW;
	END $$;
	CREATE TRIGGER planted_message_fault BEFORE UPDATE ON aimroute.outbox
	    FOR EACH ROW EXECUTE FUNCTION public.planted_message_fault();
});
# The bad messages first, so that they come first in the worker's batch.
$node->safe_psql(
	'app', q{
	INSERT INTO aimroute.leads (brand_code, country, postal_code, comment) VALUES
	  ('ST', 'US', '49757', 'claim fault'), ('ST', 'US', '33101', 'record fault'),
	  ('ST', 'US', '90210', 'good'), ('ST', 'US', '98101', 'good');
});
ok( defined wait_for_log(
		$smtp,
		sub { !grep { !messages($_) } qw(ok@dc.example ok@d1.example ok@d2.example record@bad.example) }, 8),
	'the other messages reach the SMTP server within a round, the one whose record fails included');
is(messages('claim@bad.example'), 0, 'the message whose claim raises is not sent');
is(message('claim@bad.example'), 'queued 0 -', 'it stays queued, no attempt counted: not lost, not delivered');
like(set_aside('message', id('claim@bad.example')), qr/^claim XX001 1 60: planted claim fault/,
	'it is set aside with its error, tried again in a minute');
ok( $node->log_contains(
		qr/WARNING: .*aimroute: message ${\ id('claim@bad.example')} set aside: preparing it failed: planted claim fault/),
	'with a WARNING in the server log');
is( $node->safe_psql(
		'app',
		"SELECT outcome || ': ' || response FROM aimroute.delivery_attempts WHERE recipient = 'claim\@bad.example'"),
	"Set aside: not sent: preparing it failed: planted claim fault for message ${\ id('claim@bad.example')}",
	'delivery_attempts shows the attempt that was set aside, with the error');
is( $node->safe_psql(
		'app',
		"SELECT delivery_pending FROM aimroute.lead_delivery_status s JOIN aimroute.leads l USING (lead_id) WHERE l.comment = 'claim fault'"
	),
	't',
	'lead_delivery_status shows its delivery as still pending');

my $record_id = id('record@bad.example');
ok(within(8, "SELECT count(*) = 1 FROM aimroute.set_aside_items WHERE kind = 'message' AND item_id = $record_id"),
	'the message whose outcome cannot be recorded is set aside');
like(set_aside('message', $record_id), qr/^record XX002 1 60: planted record fault/,
	'at the record step, with its error');
is( $node->safe_psql(
		'app',
		"SELECT (send_result ->> 'curl_code') || ' ' || (send_result ->> 'attempt') FROM aimroute.set_aside_items WHERE item_id = $record_id"
	),
	'0 1',
	'keeping what the send came to');
ok($node->log_contains(qr/WARNING: .*aimroute: message $record_id set aside: recording its outcome failed: planted record fault/),
	'with a WARNING in the server log');
# Past its lease (2 s) a message left 'sending' is normally sent again.
sleep 4;
is(messages('record@bad.example'), 1, 'past its lease, it is not sent again');
is(message('record@bad.example'), 'sending 1 -', 'it stays sending, its one attempt counted');
is($node->safe_psql('app', $pid_sql{delivery}), $pid{delivery}, 'the delivery worker did not exit');
cmp_ok(idle_commits(), '<', 40, 'the worker does not spin on the set-aside messages');

# The faults are fixed; the operator retries both now.
$node->safe_psql('app', 'DROP TRIGGER planted_message_fault ON aimroute.outbox');
retry_now('message', id('claim@bad.example'));
retry_now('message', $record_id);
$node->safe_psql('app', 'SELECT aimroute.wake_delivery_worker()');
ok(within(8, "SELECT status = 'delivered' FROM aimroute.outbox WHERE message_id = $record_id"),
	'once recording works, its outcome is recorded on the next try');
is( $node->safe_psql(
		'app',
		"SELECT string_agg(outcome, ',' ORDER BY attempt_id) FROM aimroute.delivery_attempts WHERE message_id = $record_id"),
	'Set aside,Delivered',
	'as Delivered: its attempts are the set-aside record and the delivery');
ok(within(8, "SELECT status = 'delivered' FROM aimroute.outbox WHERE recipient = 'claim\@bad.example'"),
	'the message whose claim failed is sent on its next try');
is(messages('claim@bad.example') . ' ' . messages('record@bad.example'), '1 1', 'each bad message reached the server exactly once');
is(messages('ok@d1.example') . ' ' . messages('ok@d2.example') . ' ' . messages('ok@dc.example'),
	'1 1 1', 'and each good one');
ok(within(5, "SELECT count(*) = 0 FROM aimroute.set_aside_items"), 'nothing is set aside any more');

# A daily recap that cannot be queued (each round's first statement) does
# not stop the sends either.
$node->safe_psql(
	'app', q{
	CREATE FUNCTION public.planted_recap_fault() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	    RAISE EXCEPTION 'planted recap fault';
	END $$;
	CREATE TRIGGER planted_recap_fault BEFORE INSERT ON aimroute.daily_recaps
	    FOR EACH ROW EXECUTE FUNCTION public.planted_recap_fault();
	DELETE FROM aimroute.daily_recaps;
	UPDATE aimroute.settings SET daily_recap_hour = 0;
	INSERT INTO aimroute.dealer_contacts (dealer_number, email, contact_types) VALUES ('D1', 'after@d1.example', '{Leads: Emails To}');
	INSERT INTO aimroute.leads (brand_code, country, postal_code, comment) VALUES ('ST', 'US', '90210', 'after recap fault');
});
ok(defined wait_for_log($smtp, sub { messages('after@d1.example') }, 8),
	'a lead queued while the daily recap fails is sent within a round');
ok($node->log_contains(qr/WARNING: .*aimroute: the daily recap was not queued: planted recap fault/, $log_start),
	'the recap\'s error is a WARNING in the server log');
$node->safe_psql('app', 'DROP TRIGGER planted_recap_fault ON aimroute.daily_recaps');
is($node->safe_psql('app', $pid_sql{delivery}), $pid{delivery}, 'the same delivery worker throughout');
ok(!$node->log_contains(qr/terminated by signal|exited with exit code/, $log_start), 'no worker exited');

$node->stop;
done_testing();
