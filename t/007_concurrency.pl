# t/007_concurrency.pl: many clients working on the same leads at once,
# with both workers running, then the invariants (SPEC sections 2-4).
#
# pgbench runs the scripts of test/concurrency/ together for 20 seconds
# with 12 clients (200 transactions a second at most, so that the
# delivery worker keeps up), on 800 leads spread over 12 dealers: new leads
# arrive; dealers' contacts, CC contacts and other dealers' contacts view
# leads; people reassign leads (to the default dealer too); deadlines are
# moved into the past and clients re-route overdue leads themselves,
# racing the re-route worker; leads are sent again; dealers leave the
# network and come back.  The delivery worker sends everything to a
# loopback SMTP sink meanwhile.  pgbench retries a transaction that
# PostgreSQL aborts for a deadlock or a serialization failure
# (--max-tries); any other error would end its client, and fails the test.
#
# Then, once the workers are idle: a lead's dealer is its last move's;
# a view counts exactly when the viewer is a To contact of the dealer
# holding the lead, and nothing re-routes a lead after its view; the
# re-route count is the number of re-routes; each move has its notice,
# and the newest names the dealer; the messages of a notice that a move
# or a resend overtook are cancelled unless they were claimed before it;
# what the outbox records as delivered reached the sink exactly once;
# the view link of a dealer that lost the lead is refused.
#
# Then the same load again, cut by an immediate stop after a few seconds
# (its clients end with the server), and the same checks after the
# restart, where a message whose send the stop cut may reach the sink
# twice.
#
# Last, three known bugs, as TODO tests with their reproducers.
#
# PostGIS placement: gis (t/lib/Placement.pm).
use strict;
use warnings;

use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use DeliverySinks;
use Placement;

my $scripts = dirname(__FILE__) . '/../test/concurrency';
my $lease = 5;    # aimroute.delivery_lease, in seconds
# pgbench: clients, seconds, transactions per second at most (the
# delivery worker is to keep up), leads to start with, dealers.
my ($clients, $seconds, $rate, $nleads, $ndealers) = (12, 20, 200, 800, 12);

my $smtp = start_smtp_sink();
my $node = PostgreSQL::Test::Cluster->new('concurrency');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
aimroute.reroute_naptime = 1s
aimroute.delivery_naptime = 1s
aimroute.delivery_lease = ${lease}s
track_commit_timestamp = on
deadlock_timeout = 100ms
max_connections = 40
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
# The workers started before database app existed, failed, and would wait
# 10 s to try again.
$node->restart;
Placement::install($node, 'app', Placement::pick('gis'));
$node->psql(
	'app', qq{
	SET client_min_messages = warning;
	SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path());
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('CC', 'Concurrency Craft');
	INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
	  ('HQ', 'Corporate', 'US', '10001'),
	  ('D01', 'Chicago', 'US', '60601'), ('D02', 'Milwaukee', 'US', '53202'),
	  ('D03', 'Madison', 'US', '53703'), ('D04', 'Detroit', 'US', '48201'),
	  ('D05', 'Indianapolis', 'US', '46204'), ('D06', 'Columbus', 'US', '43215'),
	  ('D07', 'St Louis', 'US', '63101'), ('D08', 'Minneapolis', 'US', '55401'),
	  ('D09', 'Des Moines', 'US', '50309'), ('D10', 'Cleveland', 'US', '44113'),
	  ('D11', 'Cincinnati', 'US', '45202'), ('D12', 'Louisville', 'US', '40202');
	INSERT INTO dealer_brands SELECT dealer_number, 'CC' FROM dealers WHERE dealer_number <> 'HQ';
	INSERT INTO dealer_contacts (dealer_number, name, email, contact_types)
	SELECT dealer_number, 'Sales', lower(dealer_number) || '.sales\@dealers.example', '{Leads: Emails To}'::text[]
	  FROM dealers WHERE dealer_number <> 'HQ'
	UNION ALL
	SELECT dealer_number, 'Owner', lower(dealer_number) || '.owner\@dealers.example', '{Leads: Emails CC}'::text[]
	  FROM dealers WHERE dealer_number <> 'HQ';
	UPDATE settings SET default_dealer_number = 'HQ', reroute_enabled = true, reroute_after = '1 hour',
	       reroute_max_dealers = 3, smtp_url = 'smtp://127.0.0.1:$smtp->{port}', smtp_from = 'leads\@oem.example';
	INSERT INTO leads (brand_code, country, postal_code, first_name, email, comment, send_to_dealer)
	SELECT 'CC', 'US',
	       (ARRAY['60601', '53202', '53703', '48201', '46204', '43215',
	              '63101', '55401', '50309', '44113', '45202', '40202'])[1 + i % 12],
	       'Seed', 'seed' || i || '\@example.com', 'seed', i % 10 <> 0
	  FROM generate_series(1, $nleads) i;
	-- What view.sql saw: each view, and whether it counted.
	CREATE SCHEMA concurrency;
	CREATE TABLE concurrency.view_log (
	    log_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	    lead_id          bigint NOT NULL,
	    contact_id       bigint NOT NULL,
	    ok               boolean NOT NULL,
	    holder           text NOT NULL,
	    last_history_id  bigint
	);
},
	on_error_die => 1);
is($node->safe_psql('app', 'SELECT max(lead_id) FROM aimroute.leads'), $nleads, "$nleads leads to work on");
ok($node->poll_query_until('app',
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type IN ('aimroute re-route worker', 'aimroute delivery worker')"),
	'both workers run');

my @scripts =
  ('insert.sql@40', 'view.sql@40', 'reassign.sql@24', 'reroute.sql@24', 'send_lead.sql@12', 'dealer_leaves.sql@1');
my ($load_out, $load_err);

# start_pgbench(seconds, clients, scripts...): starts pgbench on database
# app in the background; what it prints goes to $load_out and $load_err.
sub start_pgbench
{
	my ($secs, $n, @files) = @_;
	my @cmd = (
		'pgbench', '-n', '-h', $node->host, '-p', $node->port, '-c', $n, '-j', 2, '-T', $secs, '-R', $rate,
		'--max-tries=20', '--failures-detailed', '-D', "nleads=$nleads", '-D', "ndealers=$ndealers",
		(map { ('-f', "$scripts/$_") } @files), 'app');
	($load_out, $load_err) = ('', '');
	local $ENV{PGOPTIONS} = '-c client_min_messages=error';
	return IPC::Run::start(\@cmd, '<', \undef, '>', \$load_out, '2>', \$load_err);
}

my $log_offset = -s $node->logfile;
my $started = time;
my $run = start_pgbench($seconds, $clients, @scripts);
$run->finish;
my ($rc, $out, $err) = ($? >> 8, $load_out, $load_err);
note sprintf('pgbench ran %.1f s', time - $started);
note $out;
diag "pgbench stderr:\n$err" if $err ne '';

# The first "label: number" of pgbench's summary.
sub summary
{
	my ($label) = @_;
	return $out =~ /^\Q$label\E: (\d+)/m ? $1 : undef;
}
my $processed = summary('number of transactions actually processed');
my $failed = summary('number of failed transactions');
my $deadlock_failures = summary('number of deadlock failures');
my $retried = summary('number of transactions retried');
my $retries = summary('total number of retries');
my $server_log = substr(slurp_file($node->logfile), $log_offset);
my $deadlocks = () = $server_log =~ /ERROR:  deadlock detected/g;
my $worker_exits = () = $server_log =~ /background worker "aimroute [^"]+" \(PID \d+\) exited with exit code 1/g;
note "transactions: $processed; deadlocks detected by the server: $deadlocks; pgbench: $retried transactions retried"
  . " ($retries retries), $deadlock_failures deadlock failures, $failed failed; worker restarts: $worker_exits";

is($rc, 0, 'pgbench exits 0: no client ended on an error');
unlike($err, qr/aborted/, 'no client aborted');
cmp_ok($processed // 0, '>', 500, "$processed transactions in $seconds s");
is($failed, 0, 'no transaction failed, retries included');
is($worker_exits, 0, 'neither worker stopped on an error (a deadlock would stop it)');
cmp_ok($deadlocks, '<=', $retries // 0, 'every deadlock the server detected was a pgbench client\'s, and retried');

# Each check counts the rows that break it.
my @checks = (
	[
		'a lead\'s dealer is the one its last move went to',
		q{SELECT count(*) FROM aimroute.leads l,
		         LATERAL (SELECT h.to_dealer FROM aimroute.lead_history h WHERE h.lead_id = l.lead_id
		                   ORDER BY h.history_id DESC LIMIT 1) h
		   WHERE h.to_dealer <> l.dealer_number}
	],
	[
		'each move starts from the dealer the one before went to, and changes the dealer',
		q{SELECT count(*) FROM (SELECT h.from_dealer, h.to_dealer,
		                               lag(h.to_dealer) OVER (PARTITION BY h.lead_id ORDER BY h.history_id) AS before
		                          FROM aimroute.lead_history h) x
		   WHERE x.before <> x.from_dealer OR x.from_dealer = x.to_dealer}
	],
	[
		'a view counted exactly when the viewer was a To contact of the dealer holding the lead',
		q{SELECT count(*) FROM concurrency.view_log v
		    LEFT JOIN aimroute.dealer_contacts c ON c.contact_id = v.contact_id
		   WHERE v.ok <> coalesce(c.dealer_number = v.holder AND 'Leads: Emails To' = ANY (c.contact_types), false)}
	],
	[
		'nothing re-routed a lead, nor moved it for a dealer leaving, after a view counted (a move by hand starts a new holding)',
		q{SELECT count(*) FROM concurrency.view_log v
		    JOIN LATERAL (SELECT h.event FROM aimroute.lead_history h
		                   WHERE h.lead_id = v.lead_id AND h.history_id > coalesce(v.last_history_id, 0)
		                   ORDER BY h.history_id LIMIT 1) h ON true
		   WHERE v.ok AND h.event IN ('Re-Route', 'Dealer left')}
	],
	[
		'no Re-Route recorded after the lead\'s viewed_at',
		q{SELECT count(*) FROM aimroute.leads l JOIN aimroute.lead_history h USING (lead_id)
		   WHERE h.event IN ('Re-Route', 'Dealer left') AND h.at > l.viewed_at}
	],
	[
		'viewed_by is the first viewer whose view counted since the lead\'s last move, and only viewed leads have one',
		q{SELECT count(*) FROM aimroute.leads l
		    LEFT JOIN LATERAL (SELECT c.email FROM concurrency.view_log v JOIN aimroute.dealer_contacts c USING (contact_id)
		                        WHERE v.lead_id = l.lead_id AND v.ok
		                          AND coalesce(v.last_history_id, 0)
		                              = coalesce((SELECT max(h.history_id) FROM aimroute.lead_history h WHERE h.lead_id = l.lead_id), 0)
		                        ORDER BY v.log_id LIMIT 1) f ON true
		   WHERE l.viewed_by IS DISTINCT FROM lower(f.email) OR (l.viewed_at IS NULL) <> (f.email IS NULL)}
	],
	[
		'reroute_count is the number of re-routes the explanation records',
		q{SELECT count(*) FROM aimroute.leads l
		   WHERE l.reroute_count <> (SELECT count(*) FROM unnest(l.routing_log) s WHERE s.rule = 'Re-Route')}
	],
	[
		'a re-route never goes back to a dealer that held the lead',
		q{SELECT count(*) FROM aimroute.lead_history h
		   WHERE h.event = 'Re-Route' AND h.match_type = 'Re-Route'
		     AND EXISTS (SELECT FROM aimroute.lead_history p
		                  WHERE p.lead_id = h.lead_id AND p.history_id < h.history_id
		                    AND h.to_dealer IN (p.from_dealer, p.to_dealer))}
	],
	[
		'a lead to be sent has one notice for its routing (none when a move or a resend queued one before the delivery worker expanded the lead) and one per move, in order, to the dealer it went to',
		q{WITH n AS (SELECT n.lead_id, array_agg(n.event || ':' || n.dealer_number ORDER BY n.notification_id) AS seq,
		                    bool_or(n.event = 'Routed') AS routed
		               FROM aimroute.lead_notifications n WHERE n.event <> 'Resent' GROUP BY 1),
		       h AS (SELECT h.lead_id, array_agg(h.event || ':' || h.to_dealer ORDER BY h.history_id) AS seq,
		                    (array_agg(h.from_dealer ORDER BY h.history_id))[1] AS first_dealer
		               FROM aimroute.lead_history h GROUP BY 1)
		  SELECT count(*) FROM aimroute.leads l LEFT JOIN n USING (lead_id) LEFT JOIN h USING (lead_id)
		   WHERE l.send_to_dealer
		     AND (coalesce(n.seq, '{}') IS DISTINCT FROM
		              CASE WHEN n.routed THEN ARRAY['Routed:' || coalesce(h.first_dealer, l.dealer_number)] ELSE '{}' END
		              || coalesce(h.seq, '{}')
		          OR (NOT coalesce(n.routed, false)
		              AND NOT EXISTS (SELECT FROM aimroute.lead_notifications x
		                               WHERE x.lead_id = l.lead_id AND x.event <> 'Routed')))}
	],
	[
		'the newest notice of a lead names the dealer holding it',
		q{SELECT count(*) FROM aimroute.leads l,
		         LATERAL (SELECT n.dealer_number FROM aimroute.lead_notifications n WHERE n.lead_id = l.lead_id
		                   ORDER BY n.notification_id DESC LIMIT 1) n
		   WHERE n.dealer_number <> l.dealer_number}
	],
	[
		'a lead kept from its dealer has no notice, no message and no deadline',
		q{SELECT count(*) FROM aimroute.leads l
		   WHERE NOT l.send_to_dealer
		     AND (EXISTS (SELECT FROM aimroute.lead_notifications n WHERE n.lead_id = l.lead_id)
		          OR EXISTS (SELECT FROM aimroute.outbox o WHERE o.lead_id = l.lead_id) OR l.reroute_due_at IS NOT NULL)}
	],
	[
		'an open lead to be sent, with a dealer other than the default, has a deadline',
		q{SELECT count(*) FROM aimroute.leads l
		   WHERE l.viewed_at IS NULL AND l.send_to_dealer AND l.dealer_number <> 'HQ' AND l.reroute_due_at IS NULL}
	],
	[
		'a notice has one message per To and CC contact of its dealer',
		q{SELECT count(*) FROM aimroute.lead_notifications n
		   WHERE n.messages <> (SELECT count(*) FROM aimroute.outbox o WHERE o.notification_id = n.notification_id)
		      OR n.messages <> CASE WHEN n.dealer_number = 'HQ' THEN 0 ELSE 2 END}
	],
	[
		'the newest notice\'s messages are delivered',
		q{SELECT count(*) FROM aimroute.outbox o
		   WHERE o.notification_id = (SELECT max(n.notification_id) FROM aimroute.lead_notifications n
		                               WHERE n.lead_id = o.lead_id)
		     AND o.status <> 'delivered'}
	],
	[
		'a delivered message has exactly one Delivered attempt',
		q{SELECT count(*) FROM aimroute.outbox o
		   WHERE o.status = 'delivered'
		     AND (SELECT count(*) FROM aimroute.delivery_attempt_log a
		           WHERE a.message_id = o.message_id AND a.outcome = 'Delivered') <> 1}
	],
	[
		'a message of a notice overtaken by a move or a resend was cancelled, or claimed before that committed',
		qq{SELECT count(*) FROM aimroute.outbox o,
		          LATERAL (SELECT pg_xact_commit_timestamp(x.xmin) AS at FROM aimroute.lead_notifications x
		                    WHERE x.lead_id = o.lead_id AND x.notification_id > o.notification_id
		                    ORDER BY x.notification_id LIMIT 1) overtaken
		    WHERE o.status <> 'cancelled'
		      AND (o.status <> 'delivered' OR o.due_at - interval '$lease seconds' > overtaken.at + interval '1 second')}
	],
);
# received_ids(): the Message-ID of every message the sink got.  (Faster
# than DeliverySinks::read_log, which decodes each message whole.)
sub received_ids
{
	my @ids;
	open(my $fh, '<', $smtp->{log}) or return ();
	while (my $line = <$fh>)
	{
		next unless $line =~ /\n\z/ && $line =~ /^\{"event": "message"/;
		push @ids, $1 if $line =~ /"message_id": "([^"\\]*)"/;
	}
	close $fh;
	return @ids;
}

# check_invariants(when, crashed): waits for the workers to finish, then
# checks everything; "when" starts each test name.  After a crash, a
# message may reach the sink twice, or reach it and end cancelled, if its
# send was cut before its outcome was recorded: it then has an Interrupted
# attempt.
# process_cpu_seconds: the user and system CPU time a process has used, in
# seconds, from /proc/PID/stat (fields 14 and 15, in clock ticks).
sub process_cpu_seconds
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or die "cannot read /proc/$pid/stat: $!";
	my $stat = <$fh>;
	close($fh);
	# The command name, in parentheses, may hold spaces: split after it.
	$stat =~ s/^.*\)\s+//s;
	my @fields = split /\s+/, $stat;
	my $ticks = `getconf CLK_TCK`;
	chomp $ticks;
	# Fields 14 and 15 of the whole line are 12 and 13 after the name.
	return ($fields[11] + $fields[12]) / $ticks;
}

sub check_invariants
{
	my ($when, $crashed) = @_;

	ok( $node->poll_query_until(
			'app',
			"SELECT count(*) = 0 FROM aimroute.leads WHERE viewed_at IS NULL AND reroute_due_at <= clock_timestamp()"),
		"$when: the re-route worker has re-routed every overdue lead");
	ok($node->poll_query_until('app', "SELECT count(*) = 0 FROM aimroute.leads WHERE notice_pending"),
		"$when: the delivery worker has queued the messages of every lead routing marked");
	ok( $node->poll_query_until(
			'app', "SELECT count(*) = 0 FROM aimroute.outbox WHERE status IN ('queued', 'sending')"),
		"$when: the delivery worker has settled every message");
	note "$when: "
	  . $node->safe_psql(
		'app', q{
	SELECT concat_ws(', ',
	         (SELECT count(*) FROM aimroute.leads) || ' leads',
	         (SELECT count(*) FROM aimroute.leads WHERE viewed_at IS NOT NULL) || ' viewed',
	         (SELECT string_agg(event || ' ' || n, ', ' ORDER BY event)
	            FROM (SELECT event, count(*) AS n FROM aimroute.lead_history GROUP BY 1) h),
	         (SELECT count(*) FROM aimroute.lead_notifications) || ' notices',
	         (SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
	            FROM (SELECT status, count(*) AS n FROM aimroute.outbox GROUP BY 1) o) || ' messages',
	         (SELECT count(*) FROM aimroute.delivery_attempt_log WHERE outcome = 'Interrupted') || ' Interrupted attempts',
	         (SELECT count(*) FILTER (WHERE ok) || ' views counted, ' || count(*) FILTER (WHERE NOT ok) || ' refused'
	            FROM concurrency.view_log))});

	for my $check (@checks)
	{
		my ($name, $sql) = @$check;
		is($node->safe_psql('app', $sql), '0', "$when: $name");
	}
	note "$when, messages of overtaken notices: "
	  . $node->safe_psql(
		'app', qq{
	SELECT count(*) FILTER (WHERE o.status = 'cancelled') || ' cancelled, '
	       || count(*) FILTER (WHERE o.status = 'delivered') || ' delivered; the last claimed '
	       || coalesce(round(extract(epoch FROM max(o.due_at - interval '$lease seconds' - overtaken.at)
	                                          FILTER (WHERE o.status = 'delivered')) * 1000), 0)
	       || ' ms after the move committed'
	  FROM aimroute.outbox o,
	       LATERAL (SELECT pg_xact_commit_timestamp(x.xmin) AS at FROM aimroute.lead_notifications x
	                 WHERE x.lead_id = o.lead_id AND x.notification_id > o.notification_id
	                 ORDER BY x.notification_id LIMIT 1) overtaken});

	# What the sink received, against what the outbox says was delivered.
	my %received;
	$received{$_}++ for received_ids();
	my %delivered = map { $_ => 1 } split /\n/,
	  $node->safe_psql('app', "SELECT message_key FROM aimroute.outbox WHERE status = 'delivered'");
	my %interrupted = map { $_ => 1 } split /\n/,
	  $node->safe_psql('app',
		"SELECT DISTINCT o.message_key FROM aimroute.outbox o JOIN aimroute.delivery_attempt_log a USING (message_id)"
		  . " WHERE a.outcome = 'Interrupted'");
	is(scalar(grep { !$received{$_} } keys %delivered),
		0, "$when: " . scalar(keys %delivered) . ' messages recorded as delivered, the sink got each');
	my @twice = grep { $received{$_} > 1 } keys %received;
	is(scalar(grep { !$interrupted{$_} } @twice),
		0, "$when: the sink got a message twice only when a crash cut its send (" . scalar(@twice) . ' such)');
	my @unrecorded = grep { !$delivered{$_} } keys %received;
	is(scalar(grep { !$interrupted{$_} } @unrecorded),
		0, "$when: the sink got no message the outbox does not record as delivered, but those a crash cut ("
		  . scalar(@unrecorded) . ' such)');
	ok(!$crashed || scalar(@twice) + scalar(@unrecorded) <= scalar(keys %interrupted),
		"$when: no more than one repeat per interrupted message");

	# No lead with two dealers: the view link of every notice to a dealer
	# that no longer holds the lead is refused.  (Rolled back: a link that
	# counted would mark its lead viewed.)
	is( $node->safe_psql(
			'app', q{
	BEGIN;
	SELECT count(*) FILTER (WHERE aimroute.open_view_link(n.view_token))
	  FROM aimroute.lead_notifications n JOIN aimroute.leads l USING (lead_id)
	 WHERE n.dealer_number <> l.dealer_number;
	ROLLBACK;}),
		'0',
		"$when: the view link of a dealer that lost the lead is refused, for every such notice");
	return;
}

check_invariants('after the run', 0);

# The same load, cut by an immediate stop half way.
my $leads_before = $node->safe_psql('app', 'SELECT count(*) FROM aimroute.leads');
my $load = start_pgbench($seconds, $clients, @scripts);
ok( $node->poll_query_until(
		'app', "SELECT count(*) > $leads_before + 300 FROM aimroute.leads"),
	'pgbench runs again');
$node->stop('immediate');
$load->finish;
note 'immediate stop in the middle of the load; pgbench said: ' . ($load_err =~ /(\d+ clients? aborted|aborted[^\n]*)/ ? $1 : 'nothing about it');
$node->start;
check_invariants('after an immediate stop in the middle', 1);

###
### Known bugs.
###

# The stop may have cut dealer_leaves.sql between a dealer's leaving and
# its return.
$node->safe_psql('app', 'UPDATE aimroute.dealers SET active_for_sales = true WHERE NOT active_for_sales');

# A lead reassigned by hand to the default dealer gets a deadline (docs:
# "There is no deadline when ... the lead went to the default dealer").
# When it passes, the lead is re-routed away from the default dealer; at
# the re-route limit it "moves" from the default dealer to itself: the
# count goes up, the explanation says "moved from dealer HQ to dealer
# HQ", and lead_history has no row for it.
my $default_with_deadline = $node->safe_psql('app',
	"SELECT count(*) FROM aimroute.leads WHERE dealer_number = 'HQ' AND reroute_due_at IS NOT NULL");
my $uncounted = $node->safe_psql('app',
	"SELECT count(*) FROM aimroute.leads l WHERE l.reroute_count <> (SELECT count(*) FROM aimroute.lead_history h"
	  . " WHERE h.lead_id = l.lead_id AND h.event = 'Re-Route')");
note "after the runs, $default_with_deadline leads at the default dealer have a deadline, and $uncounted leads"
  . ' have re-routes that lead_history does not show (moves from the default dealer to itself)';
my $lead = $node->safe_psql(
	'app', q{
	INSERT INTO aimroute.leads (brand_code, country, postal_code, email, comment)
	VALUES ('CC', 'US', '60601', 'hq@example.com', 'to the default dealer') RETURNING lead_id});
for (1 .. 3)
{
	$node->safe_psql('app',
		"UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE lead_id = $lead; SELECT aimroute.reroute_overdue(100)");
	$node->poll_query_until('app', "SELECT reroute_count = $_ FROM aimroute.leads WHERE lead_id = $lead");
}
$node->safe_psql('app', "SELECT aimroute.reassign($lead, 'HQ', 'reassigned to the default dealer')");
my $hq_deadline = $node->safe_psql('app', "SELECT reroute_due_at IS NOT NULL FROM aimroute.leads WHERE lead_id = $lead");
$node->safe_psql('app',
	"UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE lead_id = $lead AND reroute_due_at IS NOT NULL;"
	  . " SELECT aimroute.reroute_overdue(100)");
my $hq_history = $node->safe_psql('app',
	"SELECT l.reroute_count || ' re-routes, ' || (SELECT count(*) FROM aimroute.lead_history h WHERE h.lead_id = l.lead_id AND h.event = 'Re-Route')"
	  . " || ' in lead_history' FROM aimroute.leads l WHERE l.lead_id = $lead");
is($default_with_deadline, '0', 'after the runs, no lead at the default dealer has a deadline');
is($hq_deadline, 'f', 'a lead reassigned by hand to the default dealer has no deadline');
is($hq_history, '3 re-routes, 3 in lead_history',
	'at the re-route limit, a lead at the default dealer is not "re-routed" to it without a history row');

# The documented way for a dealer to leave (docs/routing.md: deactivate it
# and call reassign_dealer_leads in one transaction) leaves behind the
# leads routed to it while that transaction runs: routing reads the
# configuration committed when the INSERT began, in which the dealer is
# still active, and reassign_dealer_leads cannot see leads committed after
# its snapshot.  They stay open at the dealer that left.
my $leaver = IPC::Run::start(
	[ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('app') ],
	'<', \my $leaver_in, '>', \my $leaver_out, '2>', \my $leaver_err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
$leaver_in = "SET client_min_messages = warning; BEGIN;\n"
  . "UPDATE aimroute.dealers SET active_for_sales = false WHERE dealer_number = 'D01';\n"
  . "SELECT 'moved ' || coalesce(sum(leads), 0) FROM aimroute.reassign_dealer_leads('D01', 'dealer closed');\n";
$leaver->pump until $leaver_out =~ /moved \d+/ || !$leaver->pumpable;
my $stray = $node->safe_psql('app',
	"INSERT INTO aimroute.leads (brand_code, country, postal_code, email, comment)"
	  . " VALUES ('CC', 'US', '60601', 'stray\@example.com', 'while D01 leaves') RETURNING dealer_number");
$leaver_in .= "COMMIT;\n";
$leaver->finish;
note "a lead inserted while D01 was leaving went to $stray";
like($leaver_err, qr/deactivated in this transaction/, 'reassign_dealer_leads warns when the dealer left in the same transaction');
TODO:
{
	local $TODO = 'limitation: a lead routed while its dealer leaves in one transaction stays with it (docs/routing.md: deactivate and commit first)';
	is( $node->safe_psql(
			'app', "SELECT count(*) FROM aimroute.leads WHERE dealer_number = 'D01' AND viewed_at IS NULL"),
		'0',
		'once the dealer has left, it holds no open lead');
}
$node->safe_psql('app', "UPDATE aimroute.dealers SET active_for_sales = true WHERE dealer_number = 'D01'");

# While another transaction holds the row lock of an overdue lead, the
# re-route worker skips it (SKIP LOCKED), finds the earliest deadline
# passed, sleeps a millisecond and tries again: a busy loop of thousands
# of transactions a second, for as long as the lock is held.  (The
# delivery worker does the same while a due message is locked.)
my $locked = $node->safe_psql(
	'app', q{
	UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() + interval '2 seconds'
	 WHERE lead_id = (SELECT min(lead_id) FROM aimroute.leads
	                   WHERE viewed_at IS NULL AND reroute_due_at IS NOT NULL AND dealer_number <> 'HQ')
	RETURNING lead_id});
my $locker = IPC::Run::start(
	[
		'psql', '-X', '-At', '-d', $node->connstr('app'), '-c',
		"BEGIN; SELECT 1 FROM aimroute.leads WHERE lead_id = $locked FOR UPDATE; SELECT pg_sleep(7); COMMIT;"
	],
	'<', \undef, '>', \my $locker_out, '2>', \my $locker_err);
$node->poll_query_until('app',
	"SELECT clock_timestamp() > reroute_due_at + interval '1 second' FROM aimroute.leads WHERE lead_id = $locked");
# The worker's own CPU time tells a wait from a spin.  (The database's
# commit count did not: the delivery worker, still sending the notices of
# the moves above, commits every few milliseconds on its own.)
my $reroute_pid = $node->safe_psql('app',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'aimroute re-route worker'");
my $cpu_before = process_cpu_seconds($reroute_pid);
sleep 3;
my $cpu = process_cpu_seconds($reroute_pid) - $cpu_before;
$locker->finish;
note sprintf("the re-route worker used %.2f s of CPU in 3 s while overdue lead %s was locked", $cpu, $locked);
cmp_ok($cpu, '<', 0.3, 'the re-route worker waits, rather than spinning, while an overdue lead is locked');
ok($node->poll_query_until('app', "SELECT reroute_count > 0 FROM aimroute.leads WHERE lead_id = $locked"),
	'and re-routes the lead once the lock is gone');

$node->stop;
done_testing();
