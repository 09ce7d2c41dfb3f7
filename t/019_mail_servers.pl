# t/019_mail_servers.pl: delivery through a real mail server (issue 17,
# second part): Debian's Postfix as the OEM's relay, with STARTTLS on a
# certificate made for the test, relaying to test/servers/smtp_sink.py as
# the dealers' mail servers (550 unknown user, 452 mailbox full, 250), and
# mailing its own DSNs to the VERP address.
#
# Covers settings.smtp_tls: 'required' sends nothing to a server without
# STARTTLS (a retry, with a response that says why), not even over a
# connection 'try' left open, and sends through STARTTLS to Postfix; and
# the bounces Postfix reports after its 250: Hard Bounce (550), Soft Bounce
# (452), the contact suppressed, the next lead Suppressed.
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
	  ('FULL', 'Full Inbox Marine', 'US', '53202', 'Great Lakes');
	INSERT INTO dealer_brands SELECT dealer_number, 'MS' FROM dealers WHERE dealer_number <> 'HQ';
	INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
	  ('OK', NULL, 'postal', 'US', '49757'), ('HARD', NULL, 'postal', 'US', '60601'),
	  ('FULL', NULL, 'postal', 'US', '53202');
	INSERT INTO dealer_contacts (dealer_number, name, email, mobile, contact_types) VALUES
	  ('OK', 'Sales', 'sales\@ok.example', NULL, '{Leads: Emails To}'),
	  ('HARD', 'Sales', 'hardbounce\@hard.example', NULL, '{Leads: Emails To}'),
	  ('FULL', 'Sales', 'full\@full.example', NULL, '{Leads: Emails To}');
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
ok(outcome_is($hard, 'hardbounce@hard.example', 'Delivered'), '550 at the dealer: Postfix said 250 first');
ok(outcome_is($full, 'full@full.example', 'Delivered'), '452 at the dealer: Postfix said 250 first');

# dsns(count): the DSN files in the bounce maildir, once there are count.
sub dsns
{
	my ($count) = @_;
	for (my $i = 0; $i < 300; $i++)
	{
		my @files = sort glob("$mail{MAILDIR}/new/*");
		return @files if @files >= $count;
		usleep(100_000);
	}
	return sort glob("$mail{MAILDIR}/new/*");
}
my @dsns = dsns(2);
is(scalar @dsns, 2, 'Postfix delivered two DSNs into the bounce mailbox');
my $recorded = 0;
for my $file (@dsns)
{
	my $raw = slurp_file($file);
	$recorded += $node->safe_psql('app', 'SELECT aimroute.record_dsn($dsn$' . $raw . '$dsn$)');
}
is($recorded, 2, 'record_dsn recorded both');
like(message($hard, 'hardbounce@hard.example'), qr/^Hard Bounce\|bounced after delivery: 5\.1\.1/,
	'550: the message became a Hard Bounce');
like(message($full, 'full@full.example'), qr/^Soft Bounce\|bounced after delivery: 4\.2\.2/,
	'452: the message became a Soft Bounce');
is( $node->safe_psql('app',
		"SELECT string_agg(email || ' ' || delivery_status, ', ' ORDER BY email) FROM aimroute.dealer_contacts"
		  . " WHERE dealer_number IN ('HARD', 'FULL')"),
	'full@full.example Soft Bounce, hardbounce@hard.example Hard Bounce',
	'both contacts are suppressed');
is($node->safe_psql('app', "SELECT email_status FROM aimroute.lead_delivery_status WHERE lead_id = $hard"),
	'Failure', 'the lead shows Failure');
my $again = lead('again', '60601');
ok(outcome_is($again, 'hardbounce@hard.example', 'Suppressed'), 'the next lead to the contact is Suppressed');

$node->stop;
stop($dealers);
stop($plain);
done_testing();
