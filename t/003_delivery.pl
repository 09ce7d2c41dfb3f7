# t/003_delivery.pl: lead delivery against a real SMTP server and a real
# HTTP receiver on loopback (test/servers/), sent by the delivery worker.
#
# Covers SPEC section 4: Delivered, Partial Delivery, Failure, No contacts
# configured, send_to_dealer false, suppression and its reset, retries
# then failure, the real-time failure notice and the daily recap, and a
# worker killed between sending a message and recording it: the message
# is sent again with the same Message-ID, and nothing recorded as
# delivered is sent twice.  The worker's naptime is a minute, so every
# delivery here that is quicker than that was woken by the commit that
# queued it.
#
# PostGIS placement: gis (t/lib/Placement.pm).
use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use DeliverySinks;
use Placement;

my $smtp = start_smtp_sink(stall_seconds => 120);
my $http = start_http_sink(stall_seconds => 30);
my $smtp_url = "smtp://127.0.0.1:$smtp->{port}";
my $http_url = "http://127.0.0.1:$http->{port}";

my $node = PostgreSQL::Test::Cluster->new('delivery');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
aimroute.delivery_naptime = 60s
aimroute.delivery_lease = 3s
aimroute.delivery_timeout = 3s
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', Placement::pick('gis'));
$node->psql('app', 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');
my $worker_sql = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'aimroute delivery worker'";
ok($node->poll_query_until('app', "SELECT count(*) = 1 FROM ($worker_sql) w"),
	'the delivery worker runs, as "aimroute delivery worker"');

# One dealer per case, each holding one county.
$node->safe_psql(
	'app', qq{
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('DLV', 'Delivery Boats');
	INSERT INTO dealers (dealer_number, name, country, postal_code, region) VALUES
	  ('HQ', 'Corporate', 'US', '10001', NULL),
	  ('OK', 'All Good Marine', 'US', '49757', 'Great Lakes'),
	  ('PART', 'Partly Marine', 'US', '60601', 'Great Lakes'),
	  ('FULL', 'Full Inbox Marine', 'US', '53202', 'Great Lakes'),
	  ('NONE', 'No Contacts Marine', 'US', '90210', 'West'),
	  ('RETRY', 'Flaky CRM Marine', 'US', '33101', 'South'),
	  ('STALL', 'Slow Mail Marine', 'US', '98101', 'West');
	INSERT INTO dealer_brands SELECT dealer_number, 'DLV' FROM dealers WHERE dealer_number <> 'HQ';
	INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
	  ('OK', NULL, 'postal', 'US', '49757'), ('PART', NULL, 'postal', 'US', '60601'),
	  ('FULL', NULL, 'postal', 'US', '53202'), ('NONE', NULL, 'postal', 'US', '90210'),
	  ('RETRY', NULL, 'postal', 'US', '33101'), ('STALL', NULL, 'postal', 'US', '98101');
	INSERT INTO dealer_contacts (dealer_number, name, email, mobile, contact_types) VALUES
	  ('OK', 'Sales', 'sales\@ok.example', '+15550100', '{Leads: Emails To}'),
	  ('OK', 'Owner', 'owner\@ok.example', NULL, '{Leads: Emails CC}'),
	  ('PART', 'Sales', 'hardbounce\@part.example', NULL, '{Leads: Emails To}'),
	  ('PART', 'Owner', 'owner\@part.example', NULL, '{Leads: Emails CC}'),
	  ('FULL', 'Sales', 'full\@full.example', NULL, '{Leads: Emails To}'),
	  ('STALL', 'Sales', 'stall\@stall.example', NULL, '{Leads: Emails To}');
	INSERT INTO crm_integrations (dealer_number, kind, endpoint) VALUES
	  ('OK', 'adf_http', '$http_url/ok/adf'),
	  ('OK', 'adf_email', 'crm\@ok.example'),
	  ('RETRY', 'adf_http', '$http_url/fail/adf'),
	  ('RETRY', 'adf_http', '$http_url/flaky/adf'),
	  ('RETRY', 'adf_http', '$http_url/slow/adf'),
	  ('RETRY', 'adf_http', 'http://127.0.0.1:1/adf');
	INSERT INTO notification_contacts (email, contact_type, region) VALUES
	  ('ops\@oem.example', 'Dealer Lead Delivery Notification (real-time)', NULL),
	  ('west\@oem.example', 'Dealer Lead Delivery Notification (real-time)', 'West'),
	  ('daily\@oem.example', 'Lead Delivery Notification Daily', NULL);
	UPDATE settings SET default_dealer_number = 'HQ', smtp_url = '$smtp_url',
	       smtp_from = 'leads\@oem.example', push_gateway_url = '$http_url/ok/push',
	       delivery_retry_schedule = '{1 second,1 second}', oem_name = 'Delivery Boats Inc.',
	       lead_details_url = 'https://crm.oem.example/leads/{lead_id}',
	       lead_list_url = 'https://crm.oem.example/leads?date={date}';
});

# lead(tag, postal code [, send_to_dealer]): insert a lead and return its id.
sub lead
{
	my ($tag, $zip, $send) = @_;
	$send //= 'true';
	return $node->safe_psql('app',
		"INSERT INTO aimroute.leads (brand_code, country, postal_code, first_name, last_name, email, comment, send_to_dealer)"
		  . " VALUES ('DLV', 'US', '$zip', 'Ann', 'O''Brien & <Sons>', 'ann\@example.com', '$tag', $send) RETURNING lead_id"
	);
}

# status(lead): its row of lead_delivery_status, as text.
sub status
{
	my ($id) = @_;
	return $node->safe_psql('app',
		"SELECT concat_ws(' ', sent_to_dealer, coalesce(email_status, '-'), coalesce(mobile_status, '-'),"
		  . " coalesce(crm_status, '-'), no_contacts_configured)"
		  . " FROM aimroute.lead_delivery_status WHERE lead_id = $id");
}

# settled(lead): true once nothing of its current notice is pending.
sub settled
{
	my ($id) = @_;
	return $node->poll_query_until('app',
		"SELECT NOT delivery_pending AND sent_to_dealer FROM aimroute.lead_delivery_status WHERE lead_id = $id");
}

# messages(to): the SMTP sink's messages to one address.
sub messages
{
	my ($to) = @_;
	return [ grep { grep { lc $_ eq lc $to } @{ $_->{rcpt_tos} } } @{ read_log($smtp, 'message') } ];
}

# Delivered: two emails, a push, ADF by HTTP and by email.
my $ok = lead('ok', '49757');
ok(settled($ok), 'Delivered: the lead\'s messages are settled');
is(status($ok), 't Delivered Delivered Delivered f', 'Delivered: email, mobile and CRM all Delivered');
my ($to_mail) = @{ messages('sales@ok.example') };
my ($cc_mail) = @{ messages('owner@ok.example') };
my ($token, $key) = split /\|/,
  $node->safe_psql('app',
	"SELECT n.view_token || '|' || o.message_key FROM aimroute.lead_notifications n JOIN aimroute.outbox o USING (notification_id)"
	  . " WHERE n.lead_id = $ok AND o.recipient = 'sales\@ok.example'");
ok($to_mail && index($to_mail->{body}, $token) >= 0, 'the To contact\'s email carries the view link');
ok($cc_mail && index($cc_mail->{body}, $token) < 0, 'the CC copy does not');
is($to_mail->{message_id}, $key, 'the email\'s Message-ID is the message key kept in the outbox');
like($to_mail->{body}, qr/O'Brien & <Sons>/, 'the lead\'s details are in the email, as typed');
my ($adf_mail) = @{ messages('crm@ok.example') };
ok($adf_mail, 'adf_email: the CRM\'s lead address got an email');
my @requests = @{ read_log($http, 'request') };
my ($push) = grep { $_->{path} eq '/ok/push' } @requests;
my ($adf_post) = grep { $_->{path} eq '/ok/adf' } @requests;
is(decode_json($push->{body})->{to}, '+15550100', 'the push gateway got the contact\'s mobile number');
is($adf_post->{headers}{'Content-Type'}, 'application/xml', 'adf_http: POSTed as application/xml');
ok($adf_post->{headers}{'Idempotency-Key'}, 'with an Idempotency-Key');
my $adf_quoted = $adf_post->{body};
$adf_quoted =~ s/'/''/g;
is( $node->safe_psql(
		'app',
		"SELECT xml_is_well_formed_document('$adf_quoted')"
		  . " AND (xpath('/adf/prospect/customer/contact/name[\@part=\"last\"]/text()', '$adf_quoted'::xml))[1]::text"
		  . " = 'O''Brien &amp; &lt;Sons&gt;'"),
	't',
	'the ADF document POSTed is well-formed XML (libxml2) with the customer\'s name escaped');
(my $adf_in_mail = $adf_mail->{body}) =~ s/\s+$//;
is($adf_in_mail, $adf_post->{body} =~ s/\s+$//r, 'adf_email carries the same ADF document as the email body');

# Partial Delivery: the To contact bounces (550), the CC copy arrives.
my $part = lead('part', '60601');
ok(settled($part), 'Partial: settled');
is(status($part), 't Partial Delivery - - f', 'Partial: email_status Partial Delivery');
is( $node->safe_psql(
		'app', "SELECT delivery_status FROM aimroute.dealer_contacts WHERE email = 'hardbounce\@part.example'"),
	'Hard Bounce',
	'550: the contact is a Hard Bounce');
ok(defined wait_for_log($smtp, sub { grep { $_->{subject} =~ /^Lead $part not delivered/ && $_->{rcpt_tos}[0] eq 'ops@oem.example' } @{ $_[0] } }),
	'a real-time failure notice reached the OEM contact');
# The notice as a mail client reads it: the sink parsed it with Python's
# email package (test/servers/smtp_sink.py).
my ($notice) = grep { $_->{subject} =~ /^Lead $part not delivered/ } @{ messages('ops@oem.example') };
is($notice->{content_type}, 'multipart/alternative', 'the notice is multipart/alternative');
is(join(' ', map { $_->{content_type} } @{ $notice->{parts} }), 'text/plain text/html', 'with a text and an HTML part');
my ($notice_text, $notice_html) = map { $_->{content} } @{ $notice->{parts} };
like($notice_text, qr/^Name: +Ann O'Brien & <Sons>$/m, 'the text part names the lead as typed');
like($notice_text,
	qr/The dealer's lead address hardbounce\@part\.example does not exist or does not take mail \(the mail server answered 550/,
	'and says what failed and why, in words, with the server\'s answer');
like($notice_text, qr{^Open the lead: https://crm\.oem\.example/leads/$part$}m, 'and links the lead\'s page');
like($notice_text, qr/^  What to check: SELECT \* FROM aimroute\.delivery_attempts WHERE lead_id = $part;$/m,
	'the SQL stays, for operators');
like($notice_html, qr{<td[^>]*>Ann O&#39;Brien &amp; &lt;Sons&gt;</td>}, 'the HTML part escapes the name');
like($notice_html, qr{<a href="https://crm\.oem\.example/leads/$part"}, 'and links the lead\'s page');
is(scalar(grep { $_->{subject} =~ /^Lead $part / } @{ messages('west@oem.example') }),
	0, 'and not the West region\'s contact (the dealer is in Great Lakes)');

# Failure: the only contact's inbox is full (452).
my $full = lead('full', '53202');
ok(settled($full), 'Failure: settled');
is(status($full), 't Failure - - f', 'Failure: email_status Failure');
is($node->safe_psql('app', "SELECT delivery_status FROM aimroute.dealer_contacts WHERE email = 'full\@full.example'"),
	'Soft Bounce', '452: the contact is a Soft Bounce');
is( $node->safe_psql(
		'app', "SELECT reason FROM aimroute.unsent_leads WHERE lead_id = $full"),
	'All contacts undeliverable',
	'unsent_leads: all contacts undeliverable');

# No contacts configured, and send_to_dealer false.
my $none = lead('none', '90210');
is(status($none), 'f - - - t', 'No contacts configured: nothing sent, flagged');
is($node->safe_psql('app', "SELECT reason FROM aimroute.unsent_leads WHERE lead_id = $none"),
	'No contacts configured', 'unsent_leads: No contacts configured');
my $quiet = lead('quiet', '49757', 'false');
is($node->safe_psql('app', "SELECT count(*) FROM aimroute.outbox WHERE lead_id = $quiet"),
	'0', 'send_to_dealer false: nothing queued');
is($node->safe_psql('app', "SELECT reason FROM aimroute.unsent_leads WHERE lead_id = $quiet"),
	'send_to_dealer false', 'unsent_leads: send_to_dealer false');

# Suppression: a second lead to the bounced contact is not sent to it.
my $refused_before = scalar @{ read_log($smtp, 'rcpt_refused') };
my $part2 = lead('part2', '60601');
ok(settled($part2), 'suppression: settled');
is( $node->safe_psql(
		'app',
		"SELECT outcome FROM aimroute.delivery_attempts WHERE lead_id = $part2 AND recipient = 'hardbounce\@part.example'"),
	'Suppressed',
	'the bounced contact\'s message is recorded as Suppressed');
is(scalar @{ read_log($smtp, 'rcpt_refused') }, $refused_before, 'and the SMTP server never saw it');
is(status($part2), 't Partial Delivery - - f', 'the lead is a Partial Delivery (the CC copy went)');

# Reset: the contact is active again, and send_lead reaches the server.
$node->safe_psql('app',
	"SELECT aimroute.set_delivery_status_active(contact_id) FROM aimroute.dealer_contacts WHERE email = 'hardbounce\@part.example'");
is($node->safe_psql('app', "SELECT aimroute.send_lead($part2)"), '2', 'send_lead queues the lead again (2 messages)');
ok(defined wait_for_log($smtp, sub { scalar(grep { $_->{event} eq 'rcpt_refused' } @{ $_[0] }) > $refused_before }),
	'after set_delivery_status_active the server is tried again');

# Retries, then failure; and a flaky endpoint that succeeds on its third try.
my $retry = lead('retry', '33101');
ok( $node->poll_query_until(
		'app',
		"SELECT count(*) = 4 FROM aimroute.outbox WHERE lead_id = $retry AND purpose = 'lead' AND status IN ('delivered', 'failed')"),
	'retries: the four CRM messages settle');
is( $node->safe_psql(
		'app',
		"SELECT string_agg(outcome, ',' ORDER BY attempt) FROM aimroute.delivery_attempts WHERE lead_id = $retry AND recipient LIKE '%/fail/%'"),
	'Will retry,Will retry,Failed',
	'HTTP 500: retried on the schedule (2 retries), then failed');
is( $node->safe_psql(
		'app',
		"SELECT string_agg(outcome, ',' ORDER BY attempt) FROM aimroute.delivery_attempts WHERE lead_id = $retry AND recipient LIKE '%/flaky/%'"),
	'Will retry,Will retry,Delivered',
	'a flaky endpoint: delivered on the third attempt');
is( $node->safe_psql(
		'app',
		"SELECT string_agg(outcome, ',' ORDER BY attempt) || ' ' || bool_and(response LIKE '%timed out%')"
		  . " FROM aimroute.delivery_attempts WHERE lead_id = $retry AND recipient LIKE '%/slow/%'"),
	'Will retry,Will retry,Failed true',
	'an endpoint slower than aimroute.delivery_timeout: timed out, retried, failed');
is( $node->safe_psql(
		'app',
		"SELECT string_agg(outcome, ',' ORDER BY attempt) || ' ' || bool_and(response_code IS NULL)"
		  . " FROM aimroute.delivery_attempts WHERE lead_id = $retry AND recipient = 'http://127.0.0.1:1/adf'"),
	'Will retry,Will retry,Failed true',
	'nothing listening (connection refused): retried, failed, no response code');
my @flaky = grep { $_->{path} eq '/flaky/adf' } @{ read_log($http, 'request') };
is(scalar(keys %{ { map { $_->{headers}{'Idempotency-Key'} => 1 } @flaky } }),
	1, 'every retry carried the same Idempotency-Key');
is(status($retry), 't - - Partial Delivery f', 'crm_status Partial Delivery');

# The worker is killed after the server got the message, before the worker
# recorded it: the restarted worker takes the message back at once (SPEC
# section 7), not when its lease runs out, and sends it again with the same
# Message-ID.  The lease is ten minutes here, so that the difference shows.
$node->safe_psql('app', "ALTER SYSTEM SET aimroute.delivery_lease = '10min'; SELECT pg_reload_conf()");
my $stall = lead('stall', '98101');
ok(defined wait_for_log($smtp, sub { grep { $_->{event} eq 'stall' } @{ $_[0] } }),
	'the SMTP server has the message and holds back its reply');
my $pid = $node->safe_psql('app', $worker_sql);
my $killed_at = time;
kill 'KILL', $pid;
ok(settled($stall), 'after SIGKILL and the crash restart, the message settles');
cmp_ok(time - $killed_at, '<', 120,
	'... taken back by the restarted worker at once, long before its 10-minute lease ran out');
$node->safe_psql('app', "ALTER SYSTEM RESET aimroute.delivery_lease; SELECT pg_reload_conf()");
is(status($stall), 't Delivered - - f', 'and is Delivered');
is( $node->safe_psql(
		'app', "SELECT string_agg(outcome, ',' ORDER BY attempt_id) FROM aimroute.delivery_attempts WHERE lead_id = $stall"),
	'Interrupted,Delivered',
	'the attempt cut short is logged as Interrupted');
my @copies = grep { $_->{subject} =~ /^New lead $stall:/ } @{ messages('stall@stall.example') };
is(scalar @copies, 2, 'the server got the message twice');
is($copies[0]{message_id}, $copies[1]{message_id}, 'both with the same Message-ID');

# A fast shutdown while the server holds back its reply: the worker gives
# the message back instead of leaving it leased, and it goes out once the
# server is up again, as the same attempt.
my $stall2 = lead('stall2', '98101');
ok( defined wait_for_log(
		$smtp, sub { scalar(grep { $_->{event} eq 'stall' } @{ $_[0] }) >= 2 }),
	'a second message is held back by the server');
$node->restart;
ok(settled($stall2), 'after a fast restart the message settles');
is( $node->safe_psql(
		'app', "SELECT string_agg(outcome || ' ' || attempt, ',' ORDER BY attempt_id) FROM aimroute.delivery_attempts WHERE lead_id = $stall2"),
	'Delivered 1',
	'given back at shutdown: no Interrupted attempt, delivered as attempt 1');

# Nothing recorded as delivered is sent again: another round sends only
# the new lead's messages.
my $count_before = scalar @{ read_log($smtp, 'message') };
my $ok2 = lead('ok2', '49757');
ok(settled($ok2), 'another lead goes out (a worker round)');
is(scalar @{ read_log($smtp, 'message') }, $count_before + 3, 'only its own 3 emails were sent');
my %seen;
$seen{ $_->{message_id} }++ for @{ read_log($smtp, 'message') };
my ($stall2_key) = map { $_->{message_id} } grep { $_->{subject} =~ /^New lead $stall2:/ } @{ messages('stall@stall.example') };
is(join(',', grep { $seen{$_} > 1 } sort keys %seen), join(',', sort($copies[0]{message_id}, $stall2_key)),
	'no Message-ID but the two cut short was ever sent twice');

# The daily recap of today's failures, as the worker queues it tomorrow.
is( $node->safe_psql(
		'app',
		"SELECT aimroute.queue_daily_recap((current_date + 1 + time '08:00') AT TIME ZONE 'UTC')"),
	'1',
	'the daily recap is queued for the daily contact');
my $recap = wait_for_log($smtp, sub { grep { $_->{subject} =~ /^Lead delivery failures/ } @{ $_[0] } });
ok($recap, 'and delivered');
my ($recap_mail) = grep { ($_->{subject} // '') =~ /^Lead delivery failures/ } @{ $recap // [] };
like($recap_mail->{body}, qr/^Lead $part, .*\n  Dealer: .*: Partial Delivery/m, 'it lists the Partial Delivery lead');
like($recap_mail->{body}, qr/^Lead $full, .*\n  Dealer: .*: Failure/m, 'and the failed lead');
is(join(' ', map { $_->{content_type} } @{ $recap_mail->{parts} }), 'text/plain text/html', 'the recap has a text and an HTML part');
my $recap_day = $node->safe_psql('app', "SELECT to_char(max(day), 'YYYY-MM-DD') FROM aimroute.daily_recaps");
like($recap_mail->{body}, qr{^The day's list: https://crm\.oem\.example/leads\?date=$recap_day$}m, 'and links the day\'s list');
like($recap_mail->{parts}[1]{content}, qr{<a href="https://crm\.oem\.example/leads\?date=$recap_day"}, 'in both parts');
is( $node->safe_psql(
		'app',
		"SELECT aimroute.queue_daily_recap((current_date + 1 + time '09:00') AT TIME ZONE 'UTC')"),
	'0',
	'a day is recapped once');

# VERP (issue 17): with settings.bounce_address the envelope sender names
# the message; without it, it is smtp_from.
is($to_mail->{mail_from}, 'leads@oem.example', 'without bounce_address the envelope sender is smtp_from');
$node->safe_psql('app', "UPDATE aimroute.settings SET bounce_address = 'bounces\@oem.example'");
my $verp = lead('verp', '49757');
ok(settled($verp), 'VERP: the lead goes out');
my ($verp_mail) = grep { $_->{subject} =~ /^New lead $verp:/ } @{ messages('sales@ok.example') };
my ($verp_key, $verp_from) = split /\|/,
  $node->safe_psql('app',
	"SELECT o.message_key || '|' || aimroute.envelope_sender(o, s) FROM aimroute.outbox o, aimroute.settings s"
	  . " WHERE o.lead_id = $verp AND o.recipient = 'sales\@ok.example'");
like($verp_mail->{mail_from}, qr/^bounces\+\d+\.\d{20}\@oem\.example$/,
	'the SMTP server received MAIL FROM bounces+<key>@oem.example');
is($verp_mail->{mail_from}, $verp_from, 'the key is the message\'s (aimroute.envelope_sender)');
is($verp_mail->{message_id}, $verp_key, 'the Message-ID is kept');
is($verp_mail->{headers}{From}, 'leads@oem.example', 'and From: is still smtp_from');

# A DSN, as the relay mails it to the VERP address after it said 250:
# the Delivered message becomes the Hard Bounce, the contact is
# suppressed, the failure notice goes out, the next lead skips the contact.
my $dsn = join("\r\n",
	'Return-Path: <>',
	"To: $verp_mail->{mail_from}",
	'From: MAILER-DAEMON@relay.oem.example (Mail Delivery System)',
	'Subject: Undelivered Mail Returned to Sender',
	'MIME-Version: 1.0',
	'Content-Type: multipart/report; report-type=delivery-status; boundary="B0UNCE"',
	'',
	'--B0UNCE',
	'Content-Type: text/plain',
	'',
	'Your message could not be delivered.',
	'--B0UNCE',
	'Content-Type: message/delivery-status',
	'',
	'Reporting-MTA: dns; relay.oem.example',
	'',
	'Final-Recipient: rfc822; sales@ok.example',
	'Action: failed',
	'Status: 5.1.1',
	'Diagnostic-Code: smtp; 550 5.1.1 user unknown',
	'',
	'--B0UNCE',
	'Content-Type: text/rfc822-headers',
	'',
	"Message-ID: $verp_key",
	'',
	'--B0UNCE--',
	'');
$dsn =~ s/'/''/g;
is($node->safe_psql('app', "SELECT aimroute.record_dsn('$dsn')"), '1', 'record_dsn records the bounce the relay reported');
is( $node->safe_psql(
		'app', "SELECT delivery_status FROM aimroute.dealer_contacts WHERE email = 'sales\@ok.example'"),
	'Hard Bounce',
	'the contact is suppressed');
is(status($verp), 't Partial Delivery Delivered Delivered f', 'the lead, Delivered before, is a Partial Delivery');
ok(defined wait_for_log($smtp, sub { grep { $_->{subject} =~ /^Lead $verp not delivered/ && $_->{rcpt_tos}[0] eq 'ops@oem.example' } @{ $_[0] } }),
	'the real-time failure notice went out');
my $after = lead('after dsn', '49757');
ok(settled($after), 'the next lead goes out');
is( $node->safe_psql(
		'app', "SELECT outcome FROM aimroute.outbox WHERE lead_id = $after AND recipient = 'sales\@ok.example'"),
	'Suppressed',
	'and skips the suppressed contact');

$node->stop;
done_testing();
