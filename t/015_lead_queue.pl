# t/015_lead_queue.pl: the lead is the queue (issue 16).  Routing only
# marks a lead to be sent (aimroute.leads.notice_pending); the delivery
# worker expands the marked leads into their notices and messages
# (aimroute.delivery_expand).  What must hold across a crash at that point
# (SPEC section 7): a committed lead gets its notice and its messages
# exactly once.
#
#   a. Leads committed while the worker cannot expand them (a session holds
#      a lock the expansion waits for, so the worker is in the middle of
#      its expansion transaction), then an immediate stop: after the
#      restart every lead has one notice and each of its messages is
#      delivered once; a lead not to be sent has none.  Before the stop,
#      lead_delivery_status already shows a lead waiting, and a dealer
#      without contacts as "No contacts configured".
#   b. The same, and a SIGKILL of the delivery worker in its expansion.
#   c. pg_dump and pg_restore of a database whose leads are still marked
#      (no worker runs there): the restored leads are still marked, and
#      expanding them gives each one notice.
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
my $smtp = start_smtp_sink();
my $smtp_url = "smtp://127.0.0.1:$smtp->{port}";

my $node = PostgreSQL::Test::Cluster->new('queue');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
aimroute.delivery_naptime = 1s
aimroute.reroute_naptime = 1s
restart_after_crash = on
});
$node->start;

# Brand LQ: Chicago and Milwaukee with a To and a CC contact each, Seattle
# with a CC contact only (No contacts configured), and the default dealer.
my $network = qq{
	SET client_min_messages = warning;
	SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path());
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('LQ', 'Lead Queue Boats');
	INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
	  ('HQ', 'Corporate', 'US', '10001'), ('CHI', 'Chicago', 'US', '60601'),
	  ('MKE', 'Milwaukee', 'US', '53202'), ('SEA', 'Seattle', 'US', '98101');
	INSERT INTO dealer_brands SELECT dealer_number, 'LQ' FROM dealers WHERE dealer_number <> 'HQ';
	INSERT INTO dealer_contacts (dealer_number, name, email, contact_types) VALUES
	  ('CHI', 'Sales', 'chi.sales\@dealers.example', '{Leads: Emails To}'),
	  ('CHI', 'Owner', 'chi.owner\@dealers.example', '{Leads: Emails CC}'),
	  ('MKE', 'Sales', 'mke.sales\@dealers.example', '{Leads: Emails To}'),
	  ('MKE', 'Owner', 'mke.owner\@dealers.example', '{Leads: Emails CC}'),
	  ('SEA', 'Owner', 'sea.owner\@dealers.example', '{Leads: Emails CC}');
	UPDATE settings SET default_dealer_number = 'HQ', reroute_enabled = false,
	       smtp_url = '$smtp_url', smtp_from = 'leads\@oem.example';
};
for my $db ('app', 'other')
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	Placement::install($node, $db, $placement);
	$node->psql($db, $network, on_error_die => 1);
}
# The workers started before database app existed.
$node->restart;
my $worker_sql = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'aimroute delivery worker'";
ok($node->poll_query_until('app', "SELECT count(*) = 1 FROM ($worker_sql) w"), 'the delivery worker runs');

# insert_leads(db, tag): in one transaction, 20 leads to Chicago, 20 to
# Milwaukee, 5 to Seattle and 5 to Chicago not to be sent.
sub insert_leads
{
	my ($db, $tag) = @_;
	$node->safe_psql(
		$db, qq{
	INSERT INTO aimroute.leads (brand_code, country, postal_code, email, comment, send_to_dealer)
	SELECT 'LQ', 'US', z, 'buyer\@example.com', '$tag', s
	  FROM (SELECT '60601', true FROM generate_series(1, 20)
	        UNION ALL SELECT '53202', true FROM generate_series(1, 20)
	        UNION ALL SELECT '98101', true FROM generate_series(1, 5)
	        UNION ALL SELECT '60601', false FROM generate_series(1, 5)) AS x(z, s)});
}

# block_expansion(): a session that holds a lock the expansion's insert of
# notices waits for; the worker, woken by the leads' commit, waits in the
# middle of its expansion transaction.
sub block_expansion
{
	my $blocker = $node->background_psql('app');
	$blocker->query_safe('BEGIN; LOCK TABLE aimroute.lead_notifications IN EXCLUSIVE MODE;');
	return $blocker;
}

# worker_waits(): the delivery worker waits for that lock.
sub worker_waits
{
	return $node->poll_query_until('app',
		"SELECT wait_event_type = 'Lock' AND query = 'aimroute: queueing the messages of new leads'"
		  . " FROM pg_stat_activity WHERE backend_type = 'aimroute delivery worker'");
}

# state_of(tag): "marked/notices/messages" of the tag's leads.
sub state_of
{
	my ($tag) = @_;
	return $node->safe_psql(
		'app', qq{
	SELECT count(*) FILTER (WHERE l.notice_pending) || '/'
	       || (SELECT count(*) FROM aimroute.lead_notifications n JOIN aimroute.leads x USING (lead_id) WHERE x.comment = '$tag')
	       || '/' || (SELECT count(*) FROM aimroute.outbox o JOIN aimroute.leads x USING (lead_id) WHERE x.comment = '$tag')
	  FROM aimroute.leads l WHERE l.comment = '$tag'});
}

# exactly_once(tag): checks that each lead of the tag to be sent has one
# notice, a Seattle lead no message, a Chicago or Milwaukee lead its two
# messages, each delivered with one Delivered attempt and received once,
# and a lead not to be sent nothing.
sub exactly_once
{
	my ($tag, $what) = @_;
	ok( $node->poll_query_until(
			'app', qq{
	SELECT count(*) = 0 FROM aimroute.outbox o JOIN aimroute.leads l USING (lead_id)
	 WHERE l.comment = '$tag' AND o.status <> 'delivered'}
		),
		"$what: every message is delivered");
	is( $node->safe_psql(
			'app', qq{
	SELECT string_agg(k || '=' || n, ' ' ORDER BY k) FROM (
	  SELECT l.dealer_number || ':' || l.send_to_dealer || ':notices=' ||
	         (SELECT count(*) FROM aimroute.lead_notifications n WHERE n.lead_id = l.lead_id) || ':messages=' ||
	         (SELECT count(*) FROM aimroute.outbox o WHERE o.lead_id = l.lead_id) || ':marked=' || l.notice_pending AS k,
	         count(*) AS n
	    FROM aimroute.leads l WHERE l.comment = '$tag' GROUP BY 1) s}
		),
		'CHI:false:notices=0:messages=0:marked=false=5 CHI:true:notices=1:messages=2:marked=false=20 '
		  . 'MKE:true:notices=1:messages=2:marked=false=20 SEA:true:notices=1:messages=0:marked=false=5',
		"$what: each lead to be sent has one notice and its messages, the others nothing");
	is( $node->safe_psql(
			'app', qq{
	SELECT count(*) FROM aimroute.outbox o JOIN aimroute.leads l USING (lead_id)
	 WHERE l.comment = '$tag'
	   AND (SELECT count(*) FROM aimroute.delivery_attempt_log a
	         WHERE a.message_id = o.message_id AND a.outcome = 'Delivered') = 1}
		),
		'80',
		"$what: each of the 80 messages has one Delivered attempt");
	my %keys = map { $_ => 1 } split /\n/,
	  $node->safe_psql('app',
		"SELECT o.message_key FROM aimroute.outbox o JOIN aimroute.leads l USING (lead_id) WHERE l.comment = '$tag'");
	my %received;
	$received{ $_->{message_id} }++ for grep { $keys{ $_->{message_id} // '' } } @{ read_log($smtp, 'message') };
	is(scalar(keys %received), 80, "$what: the SMTP server received each of the 80 messages");
	is(scalar(grep { $_ > 1 } values %received), 0, "$what: none of them twice");
}

###
### a. An immediate stop with the leads committed and not expanded.
###
my $blocker = block_expansion();
insert_leads('app', 'stop');
ok(worker_waits(), 'a: the worker, woken by the commit, waits in its expansion');
is(state_of('stop'), '45/0/0', 'a: the 45 leads to be sent are marked, nothing is queued yet');
is( $node->safe_psql(
		'app', qq{
	SELECT string_agg(reason || '=' || n, ' ' ORDER BY reason) FROM (
	  SELECT u.reason, count(*) AS n FROM aimroute.unsent_leads u JOIN aimroute.leads l USING (lead_id)
	   WHERE l.comment = 'stop' GROUP BY 1) s}
	),
	'No contacts configured=5 Waiting for the delivery worker=40 send_to_dealer false=5',
	'a: unsent_leads: waiting, No contacts configured and send_to_dealer false at once');
$node->stop('immediate');
eval { $blocker->quit; 1 };
$node->start;
exactly_once('stop', 'a: after the immediate stop');

###
### b. A SIGKILL of the delivery worker in its expansion.
###
$blocker = block_expansion();
insert_leads('app', 'kill');
ok(worker_waits(), 'b: the worker waits in its expansion');
is(state_of('kill'), '45/0/0', 'b: the leads are marked, nothing is queued yet');
my $pid = $node->safe_psql('app', $worker_sql);
kill 'KILL', $pid;
eval { $blocker->quit; 1 };
ok($node->poll_query_until('app', "SELECT count(*) = 1 FROM ($worker_sql) w WHERE pid <> $pid"),
	'b: the worker is back after the crash restart');
exactly_once('kill', 'b: after the SIGKILL');

###
### c. A dump of marked leads (database other: no worker runs there).
###
insert_leads('other', 'dumped');
is( $node->safe_psql('other', "SELECT count(*) FROM aimroute.leads WHERE comment = 'dumped' AND notice_pending"),
	'45', 'c: without a worker the leads stay marked');
my $dump = PostgreSQL::Test::Utils::tempdir() . '/other.dump';
$node->command_ok([ 'pg_dump', '-Fc', '--exclude-table-data=public.spatial_ref_sys', '-f', $dump, '-d', 'other' ],
	'c: pg_dump backs up the database');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
my ($restore_out, $restore_err) = ('', '');
IPC::Run::run([ 'pg_restore', '-d', $node->connstr('restored'), $dump ], '>', \$restore_out, '2>', \$restore_err);
is(join("\n", grep { /error:/ } split /\n/, $restore_err), '', 'c: pg_restore restores it without an error');
is( $node->safe_psql(
		'restored',
		"SELECT string_agg(lead_id || ':' || notice_pending, ',' ORDER BY lead_id) FROM aimroute.leads WHERE comment = 'dumped'"),
	$node->safe_psql(
		'other',
		"SELECT string_agg(lead_id || ':' || notice_pending, ',' ORDER BY lead_id) FROM aimroute.leads WHERE comment = 'dumped'"),
	'c: the restored leads are marked as they were');
is($node->safe_psql('restored', 'SELECT aimroute.delivery_expand(1000)'), '45', 'c: the expansion takes them');
is( $node->safe_psql(
		'restored', qq{
	SELECT count(*) FILTER (WHERE (SELECT count(*) FROM aimroute.lead_notifications n WHERE n.lead_id = l.lead_id) = 1)
	       || '/' || count(*) FILTER (WHERE l.send_to_dealer)
	  FROM aimroute.leads l WHERE l.comment = 'dumped'}
	),
	'45/45',
	'c: each restored lead to be sent gets one notice');

$node->stop;
done_testing();
