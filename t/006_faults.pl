# t/006_faults.pl: immediate stops and a failover in the middle of the
# work, and what must hold afterwards (SPEC section 7: nothing is lost).
#
#   a. Bulk routing cut by an immediate stop: a COPY of 100,000 leads, a
#      process_staging() call of 30,000 staged rows (after its first chunk
#      of 10,000) and a client committing 200-lead INSERTs one after the
#      other.  Afterwards every lead a client saw committed is there, no
#      statement left half its rows, every lead is routed and explained,
#      every lead to be sent is marked for the delivery worker and, once
#      the marks are expanded (aimroute.delivery_expand, what the worker
#      runs), has its notice and one message per recipient, and no staging
#      row is processed without its lead.
#   d. Deadlines that pass while the server is down after an immediate
#      stop fire once it is up, each exactly once.
#   b. An immediate stop while the delivery worker is in the middle of a
#      batch (the SMTP sink holds back its reply to one message): every
#      message ends delivered once in the outbox, the sink got every
#      Message-ID, and nothing recorded as delivered before the stop is
#      received again.
#   c. A standby promoted while messages are queued and some are leased
#      ('sending') by the old primary's worker, and while deadlines are
#      pending: the new primary sends the queued ones, the leased ones
#      once the lease is over, and fires the deadlines.
#
# t/002 covers a killed re-route worker and an immediate stop in the
# middle of a re-route batch; t/003 a killed delivery worker between a
# send and its record, and a fast restart during a send.
#
# PostGIS placement: public (t/lib/Placement.pm).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use DeliverySinks;
use Placement;

my $placement = Placement::pick('public');

# The sink holds back its reply to a "stall" recipient for longer than the
# test runs, so a stalled send ends only when the server stops.
my $smtp = start_smtp_sink(stall_seconds => 600);
my $smtp_url = "smtp://127.0.0.1:$smtp->{port}";

my $node = PostgreSQL::Test::Cluster->new('primary');
$node->init(allows_streaming => 1);
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
aimroute.reroute_naptime = 1s
aimroute.delivery_naptime = 1s
aimroute.delivery_batch_size = 10
aimroute.delivery_lease = 3s
aimroute.delivery_timeout = 300s
restart_after_crash = on
});
$node->start;

# wait_until polls $check every 0.1 s until it is true; false on timeout.
sub wait_until
{
	my ($check, $timeout) = @_;
	my $deadline = time + ($timeout // $PostgreSQL::Test::Utils::timeout_default);
	while (time < $deadline)
	{
		return 1 if $check->();
		usleep(100_000);
	}
	return 0;
}

# slurp_file_or_empty reads a file that may not exist yet.
sub slurp_file_or_empty
{
	my ($file) = @_;
	return -e $file ? slurp_file($file) : '';
}

# Both databases get the same network.  Brand FT: five dealers around Lake
# Michigan, each with a To and a CC contact, and the default dealer HQ
# with none.  Brand ST: one dealer whose only contact's address makes the
# sink hold back its reply.
my $network = qq{
	SET client_min_messages = warning;
	SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path());
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('FT', 'Fault Tolerant Boats'), ('ST', 'Stalling Boats');
	INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
	  ('HQ', 'Corporate', 'US', '10001'), ('CHI', 'Chicago', 'US', '60601'),
	  ('MKE', 'Milwaukee', 'US', '53202'), ('MAD', 'Madison', 'US', '53703'),
	  ('GRB', 'Green Bay', 'US', '54301'), ('DET', 'Detroit', 'US', '48201'),
	  ('STL', 'Seattle Slow Mail', 'US', '98101');
	INSERT INTO dealer_brands SELECT dealer_number, 'FT' FROM dealers WHERE dealer_number NOT IN ('HQ', 'STL');
	INSERT INTO dealer_brands VALUES ('STL', 'ST');
	INSERT INTO dealer_contacts (dealer_number, name, email, contact_types)
	SELECT dealer_number, 'Sales', lower(dealer_number) || '.sales\@dealers.example', '{Leads: Emails To}'::text[]
	  FROM dealers WHERE dealer_number NOT IN ('HQ', 'STL')
	UNION ALL
	SELECT dealer_number, 'Owner', lower(dealer_number) || '.owner\@dealers.example', '{Leads: Emails CC}'::text[]
	  FROM dealers WHERE dealer_number NOT IN ('HQ', 'STL');
	INSERT INTO dealer_contacts (dealer_number, name, email) VALUES ('STL', 'Sales', 'stall\@stl.example');
	UPDATE settings SET default_dealer_number = 'HQ', reroute_enabled = true, reroute_after = '1 hour',
	       reroute_max_dealers = 3, smtp_url = '$smtp_url', smtp_from = 'leads\@oem.example';
};
for my $db ('app', 'bulk')
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	Placement::install($node, $db, $placement);
	$node->psql($db, $network, on_error_die => 1);
}
# The workers started before database app existed, failed, and would wait
# 10 s to try again.
$node->restart;
ok($node->poll_query_until('app',
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type IN ('aimroute re-route worker', 'aimroute delivery worker')"),
	'both workers run in database app');

my $zips = q{(ARRAY['60601', '53202', '53703', '54301', '48201', '1234X'])};

###
### a. Bulk routing cut by an immediate stop (database bulk, where no
###    worker runs: the point is what the routing statements leave).
###
my $dir = PostgreSQL::Test::Utils::tempdir;
my $copy_file = "$dir/leads.csv";
$node->safe_psql(
	'bulk', qq{
	-- A batch processed before the stop: 3,000 rows, 150 of them
	-- rejected (no way to contact the customer), and the last 100 repeat
	-- the first 100 (95 duplicates; the 5 others are rejected too).
	INSERT INTO aimroute.lead_staging (batch_id, brand_code, country, postal_code, first_name, email, comment)
	SELECT 'early', 'FT', 'US', $zips\[1 + (i % 2900) % 6], 'Early ' || (i % 2900),
	       CASE WHEN i % 20 <> 0 THEN 'early' || (i % 2900) || '\@example.com' END, 'staged-early'
	  FROM generate_series(1, 3000) i;
	SELECT count(*) FROM aimroute.process_staging('early');
	-- The batch the stop will cut.
	INSERT INTO aimroute.lead_staging (batch_id, brand_code, country, postal_code, first_name, email, comment, send_to_dealer)
	SELECT 'crash', 'FT', 'US', $zips\[1 + i % 6], 'Crash ' || i,
	       CASE WHEN i % 50 <> 0 THEN 'crash' || i || '\@example.com' END, 'staged-crash',
	       CASE WHEN i % 10 = 0 THEN 'false' END
	  FROM generate_series(1, 30000) i;
});
open(my $csv, '>', $copy_file) or die "cannot write $copy_file: $!";
print $csv "FT,US,", (qw(60601 53202 53703 54301 48201 1234X))[ $_ % 6 ], ",copy$_\@example.com,copy,",
  ($_ % 10 ? 't' : 'f'), "\n"
  for 1 .. 100000;
close $csv;

# The batch client: 200 leads per INSERT, each committed on its own, with
# a line for each one the server acknowledged.
my $batch_file = "$dir/batches.sql";
open(my $sql, '>', $batch_file) or die "cannot write $batch_file: $!";
for my $b (1 .. 1000)
{
	print $sql "WITH ins AS (INSERT INTO aimroute.leads (brand_code, country, postal_code, email, comment, send_to_dealer)"
	  . " SELECT 'FT', 'US', $zips\[1 + i % 6], 'batch\@example.com', 'batch-$b', i % 10 <> 0"
	  . " FROM generate_series(1, 200) i RETURNING 1) SELECT 'acked batch-$b ' || count(*) FROM ins;\n";
}
close $sql;

# background_client(name, sql or file) runs psql on database bulk in the
# background, its output and errors in files.
sub background_client
{
	my ($name, @input) = @_;
	my @cmd = ('psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('bulk'), @input);
	return IPC::Run::start(\@cmd, '<', \undef, '>', "$dir/$name.out", '2>', "$dir/$name.err");
}

my $batch_client = background_client('batches', '-f', $batch_file);
my $staging_client = background_client('staging', '-c', "SELECT * FROM aimroute.process_staging('crash')");
ok(wait_until(sub { slurp_file_or_empty("$dir/staging.err") =~ /batch crash: 10000 of 30000 rows/ }),
	'process_staging has inserted its first chunk of 10,000 leads');
my $copy_client = background_client('copy', '-c',
	"COPY aimroute.leads (brand_code, country, postal_code, email, comment, send_to_dealer) FROM '$copy_file' (FORMAT csv)");
ok( wait_until(
		sub {
			$node->safe_psql('bulk', 'SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy') >= 10000;
		}),
	'the COPY has read 10,000 rows');
my $copied = $node->safe_psql('bulk', 'SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy');
my $active = $node->safe_psql('bulk',
	"SELECT string_agg(CASE WHEN query LIKE 'COPY%' THEN 'copy' WHEN query LIKE '%process_staging%' THEN 'staging' ELSE 'batch' END, ',' ORDER BY 1)"
	  . " FROM pg_stat_activity WHERE datname = 'bulk' AND backend_type = 'client backend' AND pid <> pg_backend_pid()");
$node->stop('immediate');
note "immediate stop with the COPY at row $copied of 100000; active: $active";
like($active, qr/copy/, 'the COPY was still running at the stop');
cmp_ok($copied, '<', 100000, 'still reading its rows');
like($active, qr/staging/, 'so was process_staging, after its first chunk');
# (Connected, between two of its 1,000 batches or in one: idle for an
# instant between statements is still in the middle of its run.)
like($active, qr/batch/, 'and the batch client');
for my $client ($copy_client, $batch_client, $staging_client)
{
	eval { $client->finish; 1 } or $client->kill_kill;
}
$node->start;

my @acked = slurp_file_or_empty("$dir/batches.out") =~ /^acked (batch-\d+) 200$/mg;
cmp_ok(scalar @acked, '>=', 1, scalar(@acked) . ' batches of 200 were acknowledged before the stop');
my $acked_list = join(',', map { "'$_'" } @acked) || "''";
is( $node->safe_psql(
		'bulk',
		"SELECT count(*) FROM (SELECT comment FROM aimroute.leads WHERE comment IN ($acked_list) GROUP BY comment HAVING count(*) = 200) b"
	),
	scalar @acked,
	'no lead lost: every acknowledged batch is there, 200 leads each');
is( $node->safe_psql(
		'bulk',
		"SELECT count(*) FROM (SELECT comment FROM aimroute.leads WHERE comment LIKE 'batch-%' GROUP BY comment HAVING count(*) <> 200) b"
	),
	'0',
	'no half batch: every batch statement is all or nothing');
is($node->safe_psql('bulk', "SELECT count(*) FROM aimroute.leads WHERE comment = 'copy'"),
	'0', "the COPY cut at row $copied left no lead");
is( $node->safe_psql(
		'bulk',
		"SELECT count(*) FILTER (WHERE status IS NULL) || '/' || count(*) FROM aimroute.lead_staging WHERE batch_id = 'crash'"
	),
	'30000/30000',
	'process_staging cut after its first chunk: every row of the batch is still pending');
is($node->safe_psql('bulk', "SELECT count(*) FROM aimroute.leads WHERE comment = 'staged-crash'"),
	'0', 'and none of its leads exists');

# The checks on every lead of the database, by the numbers.
my %bulk_checks = (
	'routed and explained' => q{
		SELECT count(*) FROM aimroute.leads
		 WHERE dealer_number IS NULL OR match_type IS NULL OR routed_at IS NULL OR cardinality(routing_log) = 0},
	'a deadline exactly when due one' => q{
		SELECT count(*) FROM aimroute.leads
		 WHERE (reroute_due_at IS NOT NULL) <> (send_to_dealer AND match_type <> 'Default')},
	'one notice to its dealer with one message per recipient, or nothing when kept from the dealer' => q{
		WITH recipients AS (
		  SELECT d.dealer_number,
		         CASE WHEN bool_or('Leads: Emails To' = ANY (c.contact_types)) THEN count(c.email) ELSE 0 END AS n
		    FROM aimroute.dealers d
		    LEFT JOIN aimroute.dealer_contacts c
		           ON c.dealer_number = d.dealer_number AND c.contact_types && '{Leads: Emails To,Leads: Emails CC}'
		   GROUP BY 1)
		SELECT count(*) FROM aimroute.leads l JOIN recipients r USING (dealer_number),
		       LATERAL (SELECT count(*) AS notices, min(n.dealer_number) AS dealer, min(n.event) AS event,
		                       coalesce(sum(n.messages), 0) AS messages,
		                       (SELECT count(*) FROM aimroute.outbox o WHERE o.lead_id = l.lead_id) AS queued
		                  FROM aimroute.lead_notifications n WHERE n.lead_id = l.lead_id) q
		 WHERE CASE WHEN l.send_to_dealer
		            THEN q.notices <> 1 OR q.dealer <> l.dealer_number OR q.event <> 'Routed'
		                 OR q.messages <> r.n OR q.queued <> r.n
		            ELSE q.notices <> 0 OR q.queued <> 0 END},
	'no message without its lead' => q{
		SELECT count(*) FROM aimroute.outbox o WHERE NOT EXISTS (SELECT FROM aimroute.leads l WHERE l.lead_id = o.lead_id)},
	'no staging row processed without its lead' => q{
		SELECT count(*) FROM aimroute.lead_staging s
		 WHERE s.status = 'processed' AND NOT EXISTS (SELECT FROM aimroute.leads l WHERE l.lead_id = s.lead_id)},
	'every staging row processed, rejected, duplicate or pending' => q{
		SELECT count(*) FROM aimroute.lead_staging s
		 WHERE s.status IS NULL AND (s.lead_id IS NOT NULL OR s.processed_at IS NOT NULL)},
);
# No worker runs in database bulk: the leads wait, marked, and the test
# expands the marks as the worker would.
my $marked_check = q{
	SELECT count(*) FROM aimroute.leads l
	 WHERE l.notice_pending <> l.send_to_dealer
	    OR EXISTS (SELECT FROM aimroute.lead_notifications n WHERE n.lead_id = l.lead_id)};
my $expand_all = q{DO $$ BEGIN WHILE aimroute.delivery_expand(10000) > 0 LOOP END LOOP; END $$};
is($node->safe_psql('bulk', $marked_check), '0',
	'after the stop, every lead to be sent, and only those, is marked for the delivery worker');
$node->safe_psql('bulk', $expand_all);
for my $check (sort keys %bulk_checks)
{
	is($node->safe_psql('bulk', $bulk_checks{$check}), '0', "after the stop, every lead: $check");
}
is( $node->safe_psql(
		'bulk',
		"SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM (SELECT status, count(*) AS n FROM aimroute.lead_staging WHERE batch_id = 'early' GROUP BY 1) s"
	),
	'duplicate 95, processed 2755, rejected 150',
	'the batch processed before the stop is intact');

# The cut batch goes through once the server is up again.
$node->safe_psql('bulk', "SELECT * FROM aimroute.process_staging('crash')");
is( $node->safe_psql(
		'bulk',
		"SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM (SELECT status, count(*) AS n FROM aimroute.lead_staging WHERE batch_id = 'crash' GROUP BY 1) s"
	),
	'processed 29400, rejected 600',
	'processed again after the restart: 29,400 leads, 600 rejected');
$node->safe_psql('bulk', $expand_all);
for my $check (sort keys %bulk_checks)
{
	is($node->safe_psql('bulk', $bulk_checks{$check}), '0', "and then still: $check");
}
note 'bulk: '
  . $node->safe_psql('bulk',
	"SELECT (SELECT count(*) FROM aimroute.leads) || ' leads, ' || (SELECT count(*) FROM aimroute.lead_notifications)"
	  . " || ' notices, ' || (SELECT count(*) FROM aimroute.outbox) || ' messages queued'");

###
### d. Deadlines that pass while the server is down.
###
$node->safe_psql(
	'app', qq{
	INSERT INTO aimroute.leads (brand_code, country, postal_code, email, comment)
	SELECT 'FT', 'US', $zips\[1 + i % 5], 'timer\@example.com',
	       CASE WHEN i <= 200 THEN 'timer' WHEN i <= 250 THEN 'timer-later' ELSE 'timer-viewed' END
	  FROM generate_series(1, 270) i;
	SELECT count(aimroute.mark_viewed(l.lead_id, lower(l.dealer_number) || '.sales\@dealers.example'))
	  FROM aimroute.leads l WHERE l.comment = 'timer-viewed';
});
# No message may wait when part b starts: let these go out first.
my $outbox_idle = "SELECT count(*) = 0 FROM aimroute.outbox WHERE status IN ('queued', 'sending')";
ok($node->poll_query_until('app', $outbox_idle), 'the timer leads\' messages are delivered');
my $deadline = $node->safe_psql(
	'app', q{
	UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() + interval '4 seconds' WHERE comment = 'timer';
	UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() + interval '1 hour' WHERE comment = 'timer-later';
	UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE comment = 'timer-viewed';
	SELECT extract(epoch FROM max(reroute_due_at)) FROM aimroute.leads WHERE comment = 'timer';
});
my $later = $node->safe_psql('app',
	"SELECT string_agg(lead_id || ':' || reroute_due_at, ',' ORDER BY lead_id) FROM aimroute.leads WHERE comment = 'timer-later'");
is( $node->safe_psql(
		'app',
		"SELECT count(*) FROM aimroute.leads WHERE comment = 'timer' AND (reroute_count > 0 OR reroute_due_at <= clock_timestamp())"
	),
	'0',
	'200 deadlines a few seconds away, none passed yet');
$node->stop('immediate');
ok(time < $deadline, 'the server stopped (immediate) before the deadlines');
wait_until(sub { time > $deadline + 1 }, 30);
$node->start;
ok( $node->poll_query_until(
		'app', "SELECT count(*) = 0 FROM aimroute.leads WHERE comment = 'timer' AND reroute_count = 0"),
	'deadlines that passed while the server was down fire once it is up');
is( $node->safe_psql(
		'app', q{
	SELECT count(*) FILTER (WHERE l.reroute_count = 1 AND l.match_type = 'Re-Route'
	                          AND (SELECT count(*) FROM aimroute.lead_history h WHERE h.lead_id = l.lead_id AND h.event = 'Re-Route') = 1
	                          AND (SELECT min(h.at) FROM aimroute.lead_history h WHERE h.lead_id = l.lead_id) >= to_timestamp(}
		  . $deadline . q{) - interval '0.5 seconds')
	       || '/' || count(*)
	  FROM aimroute.leads l WHERE l.comment = 'timer'}),
	'200/200',
	'each exactly once, after its deadline');
is( $node->safe_psql(
		'app',
		"SELECT string_agg(lead_id || ':' || reroute_due_at, ',' ORDER BY lead_id) FROM aimroute.leads WHERE comment = 'timer-later' AND reroute_count = 0"
	),
	$later,
	'deadlines an hour away are kept, unchanged, and did not fire');
is( $node->safe_psql(
		'app', "SELECT count(*) FROM aimroute.leads WHERE comment = 'timer-viewed' AND (reroute_count > 0 OR viewed_at IS NULL)"),
	'0',
	'viewed leads were not re-routed');
ok($node->poll_query_until('app', $outbox_idle), 'the re-routed leads\' messages are delivered');

###
### b. An immediate stop in the middle of a delivery batch.
###

# mail_leads(tag, before, after): in one transaction, before leads to CHI
# (two emails each), one lead to the stalling dealer, after more to CHI.
# The worker claims them ten at a time in that order.
sub mail_leads
{
	my ($target, $tag, $before, $after) = @_;
	$target->safe_psql(
		'app', qq{
	BEGIN;
	INSERT INTO aimroute.leads (brand_code, country, postal_code, email, comment)
	SELECT 'FT', 'US', '60601', 'mail\@example.com', '$tag' FROM generate_series(1, $before);
	INSERT INTO aimroute.leads (brand_code, country, postal_code, email, comment)
	VALUES ('ST', 'US', '98101', 'mail\@example.com', '$tag');
	INSERT INTO aimroute.leads (brand_code, country, postal_code, email, comment)
	SELECT 'FT', 'US', '60601', 'mail\@example.com', '$tag' FROM generate_series(1, $after);
	COMMIT;
});
}

# messages_of(node, tag): "status count, ..." of the tag's lead messages.
sub messages_of
{
	my ($target, $tag) = @_;
	return $target->safe_psql('app',
		"SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM (SELECT o.status, count(*) AS n FROM aimroute.outbox o"
		  . " JOIN aimroute.leads l USING (lead_id) WHERE l.comment = '$tag' AND o.purpose = 'lead' GROUP BY 1) s");
}

# keys_of(node, tag, condition): the message keys of the tag's messages.
sub keys_of
{
	my ($target, $tag, $condition) = @_;
	return split /\n/,
	  $target->safe_psql('app',
		"SELECT o.message_key FROM aimroute.outbox o JOIN aimroute.leads l USING (lead_id)"
		  . " WHERE l.comment = '$tag' AND o.message_key IS NOT NULL AND $condition ORDER BY o.message_id");
}

# stalls(): how many times the sink has held back a reply.
sub stalls { return scalar @{ read_log($smtp, 'stall') }; }

my $stalls_before = stalls();
mail_leads($node, 'stop-mid-batch', 12, 12);
ok(wait_until(sub { stalls() > $stalls_before }), 'the sink holds back its reply to the stalling dealer\'s email');
my $before_stop = messages_of($node, 'stop-mid-batch');
like($before_stop, qr/^delivered \d+, queued \d+, sending \d+$/,
	"the worker is in the middle of a batch: $before_stop");
my %delivered_before = map { $_ => 1 } keys_of($node, 'stop-mid-batch', "o.status = 'delivered'");
my %sending_at_stop = map { $_ => 1 } keys_of($node, 'stop-mid-batch', "o.status = 'sending'");
my $log_mark = scalar @{ read_log($smtp, 'message') };
$node->stop('immediate');
$node->start;
ok( $node->poll_query_until(
		'app',
		"SELECT count(*) = 49 FROM aimroute.outbox o JOIN aimroute.leads l USING (lead_id) WHERE l.comment = 'stop-mid-batch' AND o.status = 'delivered'"
	),
	'after the restart all 49 messages are delivered');

# delivered_once(node, tag): "ok/total" of the tag's messages delivered
# with exactly one Delivered attempt.
sub delivered_once
{
	my ($target, $tag) = @_;
	return $target->safe_psql(
		'app', qq{
	SELECT count(*) FILTER (WHERE o.status = 'delivered'
	                          AND (SELECT count(*) FROM aimroute.delivery_attempt_log a
	                                WHERE a.message_id = o.message_id AND a.outcome = 'Delivered') = 1)
	       || '/' || count(*)
	  FROM aimroute.outbox o JOIN aimroute.leads l USING (lead_id) WHERE l.comment = '$tag' AND o.purpose = 'lead'});
}
is(delivered_once($node, 'stop-mid-batch'), '49/49', 'each delivered exactly once, as the outbox records it');
is( $node->safe_psql(
		'app',
		"SELECT count(*) FROM aimroute.delivery_attempt_log a JOIN aimroute.outbox o USING (message_id) JOIN aimroute.leads l USING (lead_id)"
		  . " WHERE l.comment = 'stop-mid-batch' AND a.outcome = 'Interrupted'"),
	scalar(keys %sending_at_stop),
	'an Interrupted attempt for each message leased at the stop, and no other');

# received(): Message-ID => times the sink got it, from log entry $from on.
sub received
{
	my ($from) = @_;
	my @entries = @{ read_log($smtp, 'message') };
	my %count;
	$count{ $_->{message_id} }++ for @entries[ $from .. $#entries ];
	return \%count;
}
my @all_keys = keys_of($node, 'stop-mid-batch', 'true');
my $got = received(0);
is(scalar(grep { !$got->{$_} } @all_keys), 0, 'the sink got every Message-ID at least once');
my $after_stop = received($log_mark);
is(join(',', grep { $after_stop->{$_} } sort keys %delivered_before),
	'', scalar(keys %delivered_before) . ' messages recorded as delivered before the stop: none received again');
is(join(',', grep { $got->{$_} > 1 && !$sending_at_stop{$_} } @all_keys),
	'', 'a Message-ID received twice was leased at the stop (sent, its outcome not recorded)');

###
### c. A standby promoted while messages are queued and leased, and
###    deadlines are pending.
###
$node->backup('before_failover');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'before_failover', has_streaming => 1);
$standby->start;

$node->safe_psql(
	'app', qq{
	INSERT INTO aimroute.leads (brand_code, country, postal_code, email, comment)
	SELECT 'FT', 'US', $zips\[1 + i % 5], 'failover\@example.com', 'failover-timer' FROM generate_series(1, 100) i});
ok($node->poll_query_until('app', $outbox_idle), 'the failover timer leads\' messages are delivered');
# A lease of ten minutes from here: the promoted standby's worker must take
# the leased messages back at once, not when their leases run out.
$node->safe_psql('app', "ALTER SYSTEM SET aimroute.delivery_lease = '10min'; SELECT pg_reload_conf()");
$stalls_before = stalls();
mail_leads($node, 'failover-mail', 0, 15);
ok(wait_until(sub { stalls() > $stalls_before }), 'the old primary\'s worker is held in the middle of a batch');
my $failover_deadline = $node->safe_psql(
	'app', q{
	UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() + interval '8 seconds' WHERE comment = 'failover-timer';
	SELECT extract(epoch FROM max(reroute_due_at)) FROM aimroute.leads WHERE comment = 'failover-timer'});
$node->wait_for_catchup($standby);
my $on_standby = messages_of($standby, 'failover-mail');
like($on_standby, qr/^queued \d+, sending \d+$/, "the standby has the messages queued and leased: $on_standby");
%sending_at_stop = map { $_ => 1 } keys_of($standby, 'failover-mail', "o.status = 'sending'");
my $leases = $standby->safe_psql('app',
	"SELECT string_agg(format('(%s, %L::timestamptz)', o.message_id, o.due_at), ', ') FROM aimroute.outbox o"
	  . " JOIN aimroute.leads l USING (lead_id) WHERE l.comment = 'failover-mail' AND o.status = 'sending'");
is( $standby->safe_psql(
		'app', "SELECT count(*) FROM aimroute.leads WHERE comment = 'failover-timer' AND reroute_due_at > clock_timestamp()"),
	'100',
	'and the 100 deadlines, not passed yet');
$log_mark = scalar @{ read_log($smtp, 'message') };
$node->stop('immediate');
$standby->promote;
ok( $standby->poll_query_until(
		'app',
		"SELECT count(*) = 31 FROM aimroute.outbox o JOIN aimroute.leads l USING (lead_id) WHERE l.comment = 'failover-mail' AND o.status = 'delivered'"
	),
	'the promoted standby delivers all 31 messages');
is(delivered_once($standby, 'failover-mail'), '31/31', 'each exactly once, as its outbox records it');
is( $standby->safe_psql(
		'app',
		"SELECT count(*) FILTER (WHERE a.attempted_at < v.lease_end) || '/' || count(*)"
		  . " FROM (VALUES $leases) AS v (message_id, lease_end)"
		  . " JOIN aimroute.delivery_attempt_log a ON a.message_id = v.message_id AND a.outcome = 'Interrupted'"),
	scalar(keys %sending_at_stop) . '/' . scalar(keys %sending_at_stop),
	'each message leased by the old primary was taken back by the promoted worker at once, before its lease was over, logged Interrupted (SPEC section 7)');
@all_keys = keys_of($standby, 'failover-mail', 'true');
$got = received(0);
is(scalar(grep { !$got->{$_} } @all_keys), 0, 'the sink got every Message-ID');
is(join(',', grep { $got->{$_} > 1 && !$sending_at_stop{$_} } @all_keys),
	'', 'only a message leased at the failover was received twice');
ok( $standby->poll_query_until(
		'app', "SELECT count(*) = 0 FROM aimroute.leads WHERE comment = 'failover-timer' AND reroute_count = 0"),
	'the deadlines fire on the new primary');
is( $standby->safe_psql(
		'app', q{
	SELECT count(*) FILTER (WHERE l.reroute_count = 1
	                          AND (SELECT count(*) FROM aimroute.lead_history h WHERE h.lead_id = l.lead_id) = 1
	                          AND (SELECT min(h.at) FROM aimroute.lead_history h WHERE h.lead_id = l.lead_id) >= to_timestamp(}
		  . $failover_deadline . q{) - interval '0.5 seconds')
	       || '/' || count(*)
	  FROM aimroute.leads l WHERE l.comment = 'failover-timer'}),
	'100/100',
	'each exactly once, after its deadline');
ok( $standby->poll_query_until(
		'app', "SELECT count(*) = 0 FROM aimroute.outbox WHERE status IN ('queued', 'sending')"),
	'and the new dealers\' messages go out');

$standby->stop;
done_testing();
