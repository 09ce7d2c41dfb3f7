# t/020_mail_servers.pl: delivery through a real mail server (issue 17,
# second part): Debian's Postfix as the OEM's relay, with STARTTLS on a
# certificate made for the test, relaying to test/servers/smtp_sink.py as
# the dealers' mail servers (550 unknown user, 552 and 452 mailbox full,
# 250), and mailing its own DSNs to the VERP address.
#
# Covers settings.smtp_tls: 'required' sends nothing to a server without
# STARTTLS (a retry, with a response that says why), not even over a
# connection 'try' left open, and sends through STARTTLS to Postfix; and
# the bounces Postfix reports after its 250, which it delivers into a
# Dovecot mailbox that the delivery worker reads over IMAP
# (settings.bounce_mailbox_url): Hard Bounce (550), Soft Bounce (552 5.2.2),
# a delay notice (452, still queued at Postfix: an attempt row, no bounce), the
# contact suppressed, the next lead Suppressed, a message that is not a
# DSN skipped with a WARNING, and after a restart nothing read twice, then
# the same mailbox over IMAPS.
#
# Postfix's master runs only as root, so the servers are started by
# scripts/test.sh (test/servers/mail_servers.sh, as root) before the Perl
# TAP layer, which names their env file in AIMROUTE_MAIL_SERVERS; the test
# is skipped without them.
#
# PostGIS placement: public (t/lib/Placement.pm).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use DeliverySinks;
use Placement;

my $env_file = $ENV{AIMROUTE_MAIL_SERVERS} // '';
plan skip_all => 'needs the mail servers scripts/test.sh starts as root (AIMROUTE_MAIL_SERVERS)'
  unless $env_file ne '' && -r $env_file;
my %mail = map { /^(\w+)=(.*)$/ ? ($1 => $2) : () } split /\n/, slurp_file($env_file);

# The dealers' mail servers, on the port Postfix relays to; and a server
# without STARTTLS.
my $dealers = start_smtp_sink(port => $mail{DEALER_PORT}, name => 'dealers');
my $plain = start_smtp_sink(name => 'plain');
my $relay_url = "smtp://127.0.0.1:$mail{RELAY_PORT}";

my $node = PostgreSQL::Test::Cluster->new('mail_servers');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
aimroute.delivery_naptime = 1s
aimroute.delivery_timeout = 10s
aimroute.tls_ca_file = '$mail{CA_FILE}'
aimroute.bounce_mailbox_interval = 1s
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', Placement::pick('public'));
$node->psql('app', 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');

$node->safe_psql(
	'app', qq{
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('MS', 'Mail Server Boats');
	INSERT INTO dealers (dealer_number, name, country, postal_code, region) VALUES
	  ('HQ', 'Corporate', 'US', '10001', NULL),
	  ('OK', 'All Good Marine', 'US', '49757', 'Great Lakes'),
	  ('HARD', 'Mistyped Marine', 'US', '60601', 'Great Lakes'),
	  ('FULL', 'Full Inbox Marine', 'US', '53202', 'Great Lakes'),
	  ('SLOW', 'Slow Server Marine', 'US', '53703', 'Great Lakes'),
	  ('GONE', 'Gone Marine', 'US', '90210', 'West');
	INSERT INTO dealer_brands SELECT dealer_number, 'MS' FROM dealers WHERE dealer_number <> 'HQ';
	INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
	  ('OK', NULL, 'postal', 'US', '49757'), ('HARD', NULL, 'postal', 'US', '60601'),
	  ('FULL', NULL, 'postal', 'US', '53202'), ('SLOW', NULL, 'postal', 'US', '53703'),
	  ('GONE', NULL, 'postal', 'US', '90210');
	INSERT INTO dealer_contacts (dealer_number, name, email, mobile, contact_types) VALUES
	  ('OK', 'Sales', 'sales\@ok.example', NULL, '{Leads: Emails To}'),
	  ('HARD', 'Sales', 'hardbounce\@hard.example', NULL, '{Leads: Emails To}'),
	  ('FULL', 'Sales', 'full552\@full.example', NULL, '{Leads: Emails To}'),
	  ('SLOW', 'Sales', 'full\@slow.example', NULL, '{Leads: Emails To}'),
	  ('GONE', 'Sales', 'hardbounce.gone\@gone.example', NULL, '{Leads: Emails To}');
	INSERT INTO notification_contacts (email, contact_type, region) VALUES
	  ('ops\@ops.example', 'Dealer Lead Delivery Notification (real-time)', NULL);
	UPDATE settings SET default_dealer_number = 'HQ', smtp_url = '$plain->{url}', smtp_tls = 'required',
	       smtp_from = 'leads\@oem.example', bounce_address = 'bounces\@oem.example',
	       delivery_retry_schedule = '{1 second,1 second,1 second,1 second,1 second,1 second,1 second,1 second}';
});

# lead(tag, postal code): insert a lead and return its id.
sub lead
{
	my ($tag, $zip) = @_;
	return $node->safe_psql('app',
		"INSERT INTO aimroute.leads (brand_code, country, postal_code, first_name, last_name, email, comment)"
		  . " VALUES ('MS', 'US', '$zip', 'Ann', 'Lee', 'ann\@example.com', '$tag') RETURNING lead_id");
}

# message(lead, recipient): "outcome|last_response" of the lead's message to it.
sub message
{
	my ($id, $to) = @_;
	return $node->safe_psql('app',
		"SELECT outcome || '|' || coalesce(last_response, '') FROM aimroute.outbox WHERE lead_id = $id AND recipient = '$to'"
	);
}

# outcome_is(lead, recipient, outcome): waits until the message has it.
sub outcome_is
{
	my ($id, $to, $outcome) = @_;
	return $node->poll_query_until('app',
		"SELECT outcome = '$outcome' FROM aimroute.outbox WHERE lead_id = $id AND recipient = '$to'");
}

# received(sink, recipient): the messages the sink accepted for it.
sub received
{
	my ($sink, $to) = @_;
	return [ grep { grep { lc $_ eq lc $to } @{ $_->{rcpt_tos} } } @{ read_log($sink, 'message') } ];
}

# 1. smtp_tls = 'required' and a server without STARTTLS: nothing is sent.
my $first = lead('first', '49757');
ok($node->poll_query_until('app',
		"SELECT outcome = 'Will retry' FROM aimroute.outbox WHERE lead_id = $first AND recipient = 'sales\@ok.example'"),
	'required, no STARTTLS: the message waits for a retry');
like(message($first, 'sales@ok.example'),
	qr/^Will retry\|the server does not offer STARTTLS and settings\.smtp_tls is 'required': nothing was sent \(no login, no message\)/,
	'the response says why nothing was sent');
is(scalar @{ read_log($plain, 'message') }, 0, 'the plaintext server got no message');

# 'try' (the default) sends in plaintext, and leaves the connection open;
# 'required' again must not send over it.
$node->safe_psql('app', "UPDATE aimroute.settings SET smtp_tls = 'try'");
ok(outcome_is($first, 'sales@ok.example', 'Delivered'), 'try: the retry goes out in plaintext');
is(scalar @{ received($plain, 'sales@ok.example') }, 1, 'the plaintext server got it');
$node->safe_psql('app', "UPDATE aimroute.settings SET smtp_tls = 'required'");
my $second = lead('second', '49757');
ok($node->poll_query_until('app',
		"SELECT outcome = 'Will retry' FROM aimroute.outbox WHERE lead_id = $second AND recipient = 'sales\@ok.example'"),
	'required again: the next message is not sent over the connection try left open');
is(scalar @{ read_log($plain, 'message') }, 1, 'the plaintext server got nothing more');

# 2. The relay: Postfix with STARTTLS.  The waiting message goes out.
$node->safe_psql('app', "UPDATE aimroute.settings SET smtp_url = '$relay_url'");
ok(outcome_is($second, 'sales@ok.example', 'Delivered'), 'required, STARTTLS: delivered to Postfix');
my $got = wait_for_log($dealers, sub { @{ received($dealers, 'sales@ok.example') } ? 1 : undef });
ok($got, 'Postfix relayed it to the dealer\'s mail server');
my ($relayed) = @{ received($dealers, 'sales@ok.example') };
my $key = $node->safe_psql('app',
	"SELECT aimroute.verp_key(o) FROM aimroute.outbox o WHERE lead_id = $second AND recipient = 'sales\@ok.example'");
is($relayed->{mail_from}, "bounces+$key\@oem.example", 'with the VERP envelope sender');
like(slurp_file($mail{POSTFIX_LOG}), qr/TLS connection established from/, 'Postfix logged the TLS connection');

# Bounces after Postfix's 250: Postfix mails DSNs to the VERP address.
my $hard = lead('hard', '60601');
my $full = lead('full', '53202');
my $slow = lead('slow', '53703');
ok(outcome_is($hard, 'hardbounce@hard.example', 'Delivered'), '550 at the dealer: Postfix said 250 first');
ok(outcome_is($full, 'full552@full.example', 'Delivered'), '552 at the dealer: Postfix said 250 first');
ok(outcome_is($slow, 'full@slow.example', 'Delivered'), '452 at the dealer: Postfix said 250 first');

# A message in the bounce mailbox that is not a DSN (an out-of-office
# reply), delivered to the maildir before the DSNs.
open(my $ooo, '>', "$mail{MAILDIR}/new/1000000000.ooo.test") or die "cannot write to the maildir: $!";
print $ooo "From: Sales <sales\@ok.example>\nTo: bounces\@oem.example\nSubject: Out of office\n"
  . "Message-ID: <ooo.1\@ok.example>\n\nI am away until Monday.\n";
close $ooo;

# The worker reads the mailbox (IMAP, STARTTLS as smtp_tls requires) and
# records what Postfix reported.
my $log_offset = -s $node->logfile;
$node->safe_psql('app',
	"UPDATE aimroute.settings SET bounce_mailbox_url = 'imap://127.0.0.1:$mail{IMAP_PORT}/INBOX',"
	  . " bounce_mailbox_username = '$mail{IMAP_USER}', bounce_mailbox_password = '$mail{IMAP_PASSWORD}'");
ok(outcome_is($hard, 'hardbounce@hard.example', 'Hard Bounce'), '550: the message became a Hard Bounce');
ok(outcome_is($full, 'full552@full.example', 'Soft Bounce'), '552 5.2.2: the message became a Soft Bounce');
like(message($hard, 'hardbounce@hard.example'), qr/^Hard Bounce\|bounced after delivery: 5\.1\.1 .*DSN, .*message found by VERP/,
	'from Postfix\'s DSN, found by its VERP address');
like(message($full, 'full552@full.example'), qr/^Soft Bounce\|bounced after delivery: 5\.2\.2/, 'with its status');
# 452 at the dealer's server: Postfix keeps the message and tries again;
# after delay_warning_time (1 s here) it mails a delay notice (Action:
# delayed), which is an attempt row, not a bounce.
ok($node->poll_query_until('app', "SELECT handled = 4 AND bounces = 2 FROM aimroute.bounce_mailbox_state"),
	'the worker handled the four messages of the mailbox, two of them bounces');
like( $node->safe_psql('app',
		"SELECT string_agg(a.outcome || ': ' || a.response, ' / ') FROM aimroute.delivery_attempts a"
		  . " JOIN aimroute.outbox o USING (message_id) WHERE o.lead_id = $slow AND a.outcome = 'Delayed'"),
	qr/^Delayed: delayed, not a bounce: 4\.2\.2 .*message found by VERP/,
	'452: Postfix\'s delay notice is recorded as a Delayed attempt, found by its VERP address');
like(message($slow, 'full@slow.example'), qr/^Delivered\|/, 'the delayed message stays Delivered');
is($node->safe_psql('app', "SELECT delivery_status FROM aimroute.dealer_contacts WHERE dealer_number = 'SLOW'"),
	'Active', 'and its contact is not suppressed');
ok($node->wait_for_log(qr/WARNING:  bounce mailbox .*: message UID \d+ is not a DSN aimroute can read, skipped/, $log_offset),
	'the out-of-office reply is skipped with a WARNING');
is( $node->safe_psql('app',
		"SELECT string_agg(email || ' ' || delivery_status, ', ' ORDER BY email) FROM aimroute.dealer_contacts"
		  . " WHERE dealer_number IN ('HARD', 'FULL')"),
	'full552@full.example Soft Bounce, hardbounce@hard.example Hard Bounce',
	'both contacts are suppressed');
is($node->safe_psql('app', "SELECT email_status FROM aimroute.lead_delivery_status WHERE lead_id = $hard"),
	'Failure', 'the lead shows Failure');
my $again = lead('again', '60601');
ok(outcome_is($again, 'hardbounce@hard.example', 'Suppressed'), 'the next lead to the contact is Suppressed');
is( $node->safe_psql('app',
		"SELECT count(*) FROM aimroute.delivery_attempts a JOIN aimroute.outbox o USING (message_id)"
		  . " WHERE o.lead_id = $hard AND a.response LIKE 'bounced after delivery:%'"),
	'1', 'the bounce is recorded once');

# A restart: the mailbox is read on from where it was, now over IMAPS.
my $last_uid = $node->safe_psql('app', 'SELECT last_uid FROM aimroute.bounce_mailbox_state');
$node->restart;
$log_offset = -s $node->logfile;
$node->safe_psql('app', "UPDATE aimroute.settings SET bounce_mailbox_url = 'imaps://127.0.0.1:$mail{IMAPS_PORT}/INBOX'");
my $gone = lead('gone', '90210');
ok(outcome_is($gone, 'hardbounce.gone@gone.example', 'Hard Bounce'),
	'after a restart, over IMAPS: the next DSN is recorded');
ok($node->poll_query_until('app', "SELECT handled = 5 AND bounces = 3 AND last_uid = $last_uid + 1 FROM aimroute.bounce_mailbox_state"),
	'only the new message was handled');
ok($node->wait_for_log(qr/read 1 message of the bounce mailbox imaps:/, $log_offset), 'the worker says it read one message');
unlike(slurp_file($node->logfile, $log_offset), qr/read \d+ messages? of the bounce mailbox imap:|is not a DSN/, 'and nothing of before the restart again');
is($node->safe_psql('app', "SELECT coalesce(last_error, '') FROM aimroute.bounce_mailbox_state"), '', 'no error noted');

# A message too large to read (over 16 MB) is skipped, not read again and again.
$log_offset = -s $node->logfile;
open(my $big, '>', "$mail{MAILDIR}/new/1000000001.big.test") or die "cannot write to the maildir: $!";
print $big "From: someone\@ok.example\nTo: bounces\@oem.example\nSubject: large\n\n", ("x" x 1023 . "\n") x 17000;
close $big;
ok($node->wait_for_log(qr/WARNING:  bounce mailbox .*: message UID \d+ is larger than the worker reads \(16 MB\), skipped/, $log_offset),
	'a message over 16 MB is skipped with a WARNING');
ok($node->poll_query_until('app', "SELECT handled = 6 AND bounces = 3 FROM aimroute.bounce_mailbox_state"),
	'and counted as handled');

# A wrong password: a WARNING and the error noted, nothing else changes.
$log_offset = -s $node->logfile;
$node->safe_psql('app', "UPDATE aimroute.settings SET bounce_mailbox_password = 'wrong'");
ok($node->poll_query_until('app', "SELECT last_error IS NOT NULL FROM aimroute.bounce_mailbox_state"),
	'a login refused is noted in bounce_mailbox_state.last_error');
ok($node->wait_for_log(qr/WARNING:  aimroute delivery worker: could not read the bounce mailbox imaps:/, $log_offset),
	'with a WARNING');
my @warnings = grep { /could not read the bounce mailbox/ } split /\n/, slurp_file($node->logfile, $log_offset);
ok(@warnings && !grep({ /wrong|\Q$mail{IMAP_PASSWORD}\E/ } @warnings), 'that shows no password');

$node->stop;
stop($dealers);
stop($plain);
done_testing();
