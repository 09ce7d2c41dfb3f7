# t/021_view_link.pl: the view link of a lead email, end to end.
#
# The delivery worker mails a lead to its dealer's 'Leads: Emails To'
# contact through the loopback SMTP sink; the test takes the link out of
# the message the sink received and opens it in headless Chromium, against
# the reference page examples/view-link/view_link.py, which logs in as a
# role that is only in aimroute_view_link.  Checks (SPEC section 3): the
# first dealer's link, once the re-route worker has moved the lead to a
# second dealer, shows "This link is no longer yours" and changes nothing;
# the second dealer's link shows the lead, marks it viewed and stops its
# re-route clock; an unknown token changes nothing either.  Saves the
# page as a screenshot when AIMROUTE_VIEW_LINK_SCREENSHOT names a file
# (docs/img/view-link.png was made so).
#
# PostGIS placement: public (t/lib/Placement.pm).
use strict;
use warnings;

use Cwd;
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

use DeliverySinks;
use Placement;

my $chromium = '/usr/bin/chromium';
plan skip_all => "no $chromium (Debian package chromium; scripts/test.sh installs it)" unless -x $chromium;

my $smtp = start_smtp_sink();

my $node = PostgreSQL::Test::Cluster->new('view_link');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
aimroute.reroute_naptime = 1s
aimroute.delivery_naptime = 60s
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', Placement::pick('public'));
$node->psql('app', 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');

# The page, on a port of its own choosing, logged in as view_page: a login
# that is only in aimroute_view_link.
$node->safe_psql('app', 'CREATE ROLE view_page LOGIN IN ROLE aimroute_view_link');
my $dir = PostgreSQL::Test::Utils::tempdir();
my $page_log = "$dir/view_link.log";
my $dsn = sprintf('host=%s port=%d dbname=app user=view_page', $node->host, $node->port);
my $page = IPC::Run::start(
	[ '/usr/bin/python3', Cwd::abs_path(dirname(__FILE__) . '/../examples/view-link/view_link.py'), '--port', '0', '--dsn', $dsn ],
	'<', \undef, '>&', $page_log);
# The page goes with the test, however it ends.
END { local $?; $page->kill_kill if $page && $page->pumpable; }
my $base;
for (1 .. 100)
{
	last if ($base) = (PostgreSQL::Test::Utils::slurp_file($page_log) =~ m{listening on (http://127\.0\.0\.1:\d+)/});
	sleep 0.1;
}
ok($base, "the page listens on loopback ($base)") or BAIL_OUT('the view link page did not start: ' . slurp_file($page_log));

$node->safe_psql(
	'app', qq{
	INSERT INTO aimroute.brands VALUES ('VL', 'View Link Boats');
	INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code) VALUES
	  ('HQ', 'HQ', 'US', '10001'), ('CHI', 'Chicago <Marine> & Sons', 'US', '60601'),
	  ('MKE', 'Milwaukee Marine', 'US', '53202');
	INSERT INTO aimroute.dealer_brands VALUES ('CHI', 'VL'), ('MKE', 'VL');
	INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, contact_types) VALUES
	  ('CHI', 'Sales', 'sales\@chi.example', '{Leads: Emails To}'),
	  ('MKE', 'Sales', 'sales\@mke.example', '{Leads: Emails To}');
	UPDATE aimroute.settings SET default_dealer_number = 'HQ', reroute_enabled = true,
	       reroute_after = '24 hours', smtp_url = '$smtp->{url}', smtp_from = 'leads\@oem.example',
	       view_link_url = '$base/view?token=';
	INSERT INTO aimroute.leads (brand_code, country, postal_code, first_name, last_name, email, phone, comment)
	VALUES ('VL', 'US', '60601', 'Ann', 'O''Brien <script>alert(1)</script>', 'ann\@example.com',
	        '312-555-0100', 'view link');
});
is($node->safe_psql('app', "SELECT dealer_number FROM aimroute.leads WHERE comment = 'view link'"),
	'CHI', 'the lead goes to Chicago first');

# link_to: the view link in the last message the SMTP sink received for $to.
sub link_to
{
	my ($to) = @_;
	my $log = wait_for_log($smtp,
		sub { grep { $_->{event} eq 'message' && grep { $_ eq $to } @{ $_->{rcpt_tos} } } @{ $_[0] } });
	return undef unless $log;
	my ($msg) = reverse grep { $_->{event} eq 'message' && grep { $_ eq $to } @{ $_->{rcpt_tos} } } @$log;
	my ($link) = $msg->{body} =~ m{(\Q$base\E/view\?token=[A-Za-z0-9_-]+)};
	return $link;
}

my $chi_link = link_to('sales@chi.example');
like($chi_link, qr{^\Q$base\E/view\?token=[A-Za-z0-9_-]{40}$}, "Chicago's email carries the link ($chi_link)");

# The re-route worker moves the unviewed lead to Milwaukee, which gets an
# email with a link of its own.
$node->safe_psql('app', "UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE comment = 'view link'");
ok( $node->poll_query_until(
		'app', "SELECT dealer_number = 'MKE' AND match_type = 'Re-Route' FROM aimroute.leads WHERE comment = 'view link'"),
	'the worker re-routes the lead to Milwaukee');
my $mke_link = link_to('sales@mke.example');
like($mke_link, qr{^\Q$base\E/view\?token=[A-Za-z0-9_-]{40}$}, "Milwaukee's email carries its own link");
isnt($mke_link, $chi_link, 'a link of its own');

# open_in_chromium: the DOM headless Chromium made of $url, and a
# screenshot of it when $png is given.
sub open_in_chromium
{
	my ($url, $png) = @_;
	my $profile = tempdir(CLEANUP => 1);
	my @cmd = ($chromium, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
		"--user-data-dir=$profile", '--window-size=720,560');
	my ($out, $err) = ('', '');
	local $ENV{HOME} = $profile;
	IPC::Run::run([ @cmd, '--dump-dom', $url ], '<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(120))
	  or diag("chromium: $err");
	IPC::Run::run([ @cmd, '--hide-scrollbars', "--screenshot=$png", $url ], '<', \undef, '>', \my $o, '2>', \my $e,
		IPC::Run::timeout(120))
	  if defined $png;
	return $out;
}

my $lead_sql = "SELECT format('%s|%s|%s|%s', dealer_number, viewed_at IS NOT NULL, viewed_by, reroute_due_at IS NOT NULL)"
  . " FROM aimroute.leads WHERE comment = 'view link'";
my $before = $node->safe_psql('app', $lead_sql);
is($before, 'MKE|f||t', 'Milwaukee holds the lead, unviewed, its clock running');
my $due_before = $node->safe_psql('app', "SELECT reroute_due_at FROM aimroute.leads WHERE comment = 'view link'");

# Chicago's stale link: the page says so, and nothing changes.
my $dom = open_in_chromium($chi_link);
like($dom, qr{<h1>This link is no longer yours</h1>}, "Chicago's stale link: \"This link is no longer yours\"");
unlike($dom, qr{Ann|Milwaukee}, 'and it shows nothing of the lead or its new dealer');
is($node->safe_psql('app', $lead_sql), $before, 'the lead is unchanged: Milwaukee, unviewed');
is($node->safe_psql('app', "SELECT reroute_due_at FROM aimroute.leads WHERE comment = 'view link'"),
	$due_before, 'its re-route clock still runs, to the same deadline');

# An unknown token: the same page, nothing changes.
$dom = open_in_chromium("$base/view?token=" . ('A' x 40));
like($dom, qr{<h1>This link is no longer yours</h1>}, 'an unknown token: "This link is no longer yours"');
is($node->safe_psql('app', $lead_sql), $before, 'the lead is unchanged');

# Milwaukee's link: the lead, viewed, its clock stopped.
my $notification = $node->safe_psql('app',
	"SELECT n.notification_id FROM aimroute.lead_notifications n JOIN aimroute.leads l USING (lead_id)"
	  . " WHERE l.comment = 'view link' AND n.dealer_number = 'MKE'");
$dom = open_in_chromium($mke_link, $ENV{AIMROUTE_VIEW_LINK_SCREENSHOT});
like($dom, qr{<h1>Lead \d+ for Milwaukee Marine</h1>}, "Milwaukee's link shows the lead");
like($dom, qr{Marked viewed}, 'and says that it is marked viewed');
like($dom, qr{O'Brien &lt;script&gt;alert\(1\)&lt;/script&gt;}, 'the name is escaped: no markup of the lead runs');
like($dom, qr{312-555-0100}, 'its key details: the phone');
is($node->safe_psql('app', $lead_sql), "MKE|t|view link $notification|f",
	'the lead is viewed by the view link of its notice, and its re-route deadline is cleared');

# Opened again: the same page, the first view stays.
my $viewed_at = $node->safe_psql('app', "SELECT viewed_at FROM aimroute.leads WHERE comment = 'view link'");
like(open_in_chromium($mke_link), qr{Marked viewed}, 'opened again, the link still shows the lead');
is($node->safe_psql('app', "SELECT viewed_at FROM aimroute.leads WHERE comment = 'view link'"),
	$viewed_at, 'and the first view stays');

# The clock stopped: the worker, given a round, moves it nowhere.
sleep 2;
is($node->safe_psql('app', "SELECT count(*) FROM aimroute.lead_history h JOIN aimroute.leads l USING (lead_id)"
	  . " WHERE l.comment = 'view link'"), '1', 'the worker re-routes the viewed lead no more');

# Chicago's stale link, once more, after the view: still nothing.
like(open_in_chromium($chi_link), qr{no longer yours}, "Chicago's link stays refused after the view");
is($node->safe_psql('app', $lead_sql), "MKE|t|view link $notification|f", 'and changes nothing');

# What the page's login may do: only that.
my ($rc, $out, $err) = $node->psql('app', 'SELECT count(*) FROM aimroute.leads', extra_params => [ '-U', 'view_page' ]);
like($err, qr/permission denied for table leads/, 'the page\'s login reads no lead table');
($rc, $out, $err) = $node->psql('app', "SELECT aimroute.mark_viewed(1, 'sales\@mke.example')", extra_params => [ '-U', 'view_page' ]);
like($err, qr/permission denied for function mark_viewed/, 'and marks no lead viewed by address');
unlike(slurp_file($page_log), qr{token=[A-Za-z0-9_-]{40}}, 'the page logs no token');

$page->kill_kill;
$smtp->stop;
$node->stop;
done_testing();
