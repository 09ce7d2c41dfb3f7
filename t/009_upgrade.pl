# t/009_upgrade.pl: ALTER EXTENSION aimroute UPDATE from 0.1.0, on a
# database in use (SPEC section 8, docs/upgrading.md).
#
# With the current build installed and preloaded, a database gets aimroute
# 0.1.0 from its frozen install script (releases/) and is used as a user
# would: the shipped postal codes, a dealer network, settings, contacts,
# CRM integrations, notification contacts, user scopes, leads routed on
# INSERT and from a staging batch, a reassignment, a re-route by the
# worker, messages delivered by the worker to a loopback SMTP server, a
# hard bounce and its failure notice, a daily recap.  That is also the
# window between installing a new build and running ALTER EXTENSION
# UPDATE: the new library runs against the old schema, and routing and
# both workers must work in it.
#
# Then ALTER EXTENSION aimroute UPDATE, and:
# - the catalogs describe exactly what a fresh CREATE EXTENSION aimroute
#   gives in another database of the same cluster (test/upgrade/describe.sql;
#   a difference is printed as a unified diff), and so does every release
#   updated in an empty database, by a superuser and by an owner that is
#   not one;
# - every row of every table, and every sequence, is as it was;
# - routing, the re-route worker, the delivery worker and the four
#   delivery views work, for leads of before and after the update;
# - a pg_dump of the updated database restores.
use strict;
use warnings;

use FindBin;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use DeliverySinks;

# Every released version (releases/), oldest first; the oldest is filled
# with data, each of the others is updated empty.
my @releases =
  sort { version_key($a) cmp version_key($b) }
  map { m{/aimroute--([0-9.]+)\.sql$} ? $1 : () } glob("$FindBin::Bin/../releases/aimroute--*.sql");
my $from_version = $releases[0];
my ($to_version) =
  slurp_file("$FindBin::Bin/../aimroute.control") =~ /^default_version = '([^']+)'/m;

# version_key(version): a string that sorts versions numerically.
sub version_key
{
	return join '.', map { sprintf '%06d', $_ } split /\./, $_[0];
}
my $describe_sql = slurp_file("$FindBin::Bin/../test/upgrade/describe.sql");

my $smtp = start_smtp_sink();
my $smtp_url = "smtp://127.0.0.1:$smtp->{port}";

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
aimroute.reroute_naptime = 1s
aimroute.delivery_naptime = 1s
});
$node->start;

ok(scalar(@releases) >= 1 && $from_version eq '0.1.0', "the oldest release is 0.1.0 (releases: @releases)");
for my $version (@releases)
{
	is( $node->safe_psql(
			'postgres', "SELECT path IS NOT NULL FROM pg_available_extension_versions v,"
			  . " pg_extension_update_paths('aimroute') p"
			  . " WHERE v.name = 'aimroute' AND v.version = '$version' AND p.source = '$version' AND p.target = '$to_version'"),
		't', "release $version is installed with an update path to $to_version");
}

$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app',
	"SET client_min_messages = warning; CREATE EXTENSION aimroute VERSION '$from_version' CASCADE");
is($node->safe_psql('app', "SELECT extversion FROM pg_extension WHERE extname = 'aimroute'"),
	$from_version, "aimroute $from_version installed from its frozen script");
$node->safe_psql('app', 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');

# The network, its settings and its people, as a user would make them.
$node->safe_psql(
	'app', qq{
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('LKB', 'Lakeshore Boats'), ('TRX', 'Trail RVs');
	INSERT INTO dealers (dealer_number, name, country, postal_code, region) VALUES
	  ('HQ',   'Corporate',       'USA',    '00501', NULL),
	  ('D100', 'Island Marine',   'US',     '49757-1234', 'Great Lakes'),
	  ('D200', 'Killarney Boats', 'Canada', 'p0a 1a0', 'Canada'),
	  ('D300', 'Chicago Marine',  'US',     '60601', 'Great Lakes'),
	  ('D400', 'Milwaukee Boats', 'US',     '53202', 'Great Lakes'),
	  ('D500', 'Denver RVs',      'US',     '80202', 'West');
	INSERT INTO dealer_brands VALUES ('D100', 'LKB'), ('D200', 'LKB'), ('D300', 'LKB'), ('D400', 'LKB'),
	  ('D400', 'TRX'), ('D500', 'TRX');
	INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
	  ('D100', NULL, 'county', 'US', 'MI/Mackinac'),
	  ('D200', 'LKB', 'state', 'CA', 'ON'),
	  ('D300', NULL, 'postal', 'US', '60601');
	INSERT INTO product_assignments VALUES ('D500', 'TRX-2025-CAMPER'), ('D400', 'TRX-2025-CAMPER');
	INSERT INTO inventory VALUES ('D500', 'TRX-2025-CAMPER', 2), ('D400', 'TRX-2025-CAMPER', 0);
	UPDATE settings SET default_dealer_number = 'HQ', smtp_url = '$smtp_url', smtp_from = 'leads\@oem.example',
	       inventory_routing_enabled = true, reroute_enabled = true, reroute_after = '1 hour',
	       reroute_max_dealers = 3, daily_recap_hour = 0, oem_name = 'Lakeshore Group';
	INSERT INTO dealer_contacts (dealer_number, name, email, mobile, contact_types) VALUES
	  ('D100', 'Sales desk', 'sales\@d100.example', NULL, '{Leads: Emails To}'),
	  ('D100', 'Owner', 'owner\@d100.example', NULL, '{Leads: Emails CC}'),
	  ('D300', 'Sales', 'sales\@d300.example', NULL, '{Leads: Emails To}'),
	  ('D400', 'Sales', 'hardbounce\@d400.example', NULL, '{Leads: Emails To}'),
	  ('D500', 'Sales', 'sales\@d500.example', NULL, '{Leads: Emails To}');
	INSERT INTO crm_integrations (dealer_number, kind, endpoint, name) VALUES
	  ('D100', 'adf_email', 'crm\@d100.example', 'Island CRM'),
	  ('D300', 'adf_email', 'crm\@d300.example', 'Chicago CRM');
	UPDATE crm_integrations SET active = false WHERE dealer_number = 'D300';
	INSERT INTO notification_contacts (email, contact_type, region, name) VALUES
	  ('ops\@oem.example', 'Dealer Lead Delivery Notification (real-time)', NULL, 'Ops'),
	  ('lakes\@oem.example', 'Dealer Lead Delivery Notification (real-time)', 'Great Lakes', 'Lakes'),
	  ('daily\@oem.example', 'Lead Delivery Notification Daily', NULL, 'Daily');
	CREATE ROLE upgrade_dealer LOGIN IN ROLE aimroute_dealer;
	CREATE ROLE upgrade_region LOGIN IN ROLE aimroute_region;
	INSERT INTO user_scopes (role_name, dealer_number, region) VALUES
	  ('upgrade_dealer', 'D100', NULL), ('upgrade_region', NULL, 'Great Lakes');
});

# lead(comment, brand, country, postal code [, dealer [, product]]): insert a lead, return "id dealer match_type".
sub lead
{
	my ($comment, $brand, $country, $zip, $dealer, $product) = @_;
	my $d = defined $dealer ? "'$dealer'" : 'NULL';
	my $p = defined $product ? "'$product'" : 'NULL';
	return $node->safe_psql('app',
		"INSERT INTO aimroute.leads (brand_code, product_code, country, postal_code, dealer_number, first_name, email, comment)"
		  . " VALUES ('$brand', $p, '$country', '$zip', $d, 'Ann', 'ann\@example.com', '$comment')"
		  . " RETURNING concat_ws(' ', lead_id, dealer_number, match_type)");
}

# Leads routed by the current library on the 0.1.0 schema: each rule once.
my %old;
my @cases = (
	[ 'territory', 'LKB', 'US', '49757', undef, undef, 'D100 Territory' ],
	[ 'brand territory', 'LKB', 'CA', 'P0A 1A0', undef, undef, 'D200 Territory' ],
	[ 'radius', 'LKB', 'US', '53703', undef, undef, 'D400 Radius' ],
	[ 'pre-assigned', 'LKB', 'US', '49757', 'D300', undef, 'D300 Pre-assigned' ],
	[ 'inventory', 'TRX', 'US', '53202', undef, 'TRX-2025-CAMPER', 'D500 Inventory' ],
	[ 'default', 'LKB', 'US', '99999', undef, undef, 'HQ Default' ],
	[ 'to reassign', 'LKB', 'US', '49757', undef, undef, 'D100 Territory' ],
	[ 'to re-route', 'LKB', 'US', '60601', undef, undef, 'D300 Territory' ]);
for my $c (@cases)
{
	my ($comment, @args) = @$c;
	my $want = pop @args;
	my ($id, $got) = split / /, lead($comment, @args), 2;
	$old{$comment} = $id;
	is($got, $want, "$from_version schema, current library: the $comment lead is routed ($want)");
}
like(
	$node->safe_psql('app', "SELECT string_agg(rule || ': ' || message, E'\\n') FROM aimroute.explain_lead($old{radius})"),
	qr/Radius/, "$from_version schema: explain_lead says why");

$node->safe_psql('app', "SELECT aimroute.reassign($old{'to reassign'}, 'D300', 'customer asked')");
$node->safe_psql('app',
	"UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE lead_id = $old{'to re-route'}");
ok( $node->poll_query_until(
		'app', "SELECT concat_ws(' ', dealer_number, match_type) = 'D400 Re-Route' FROM aimroute.leads WHERE lead_id = $old{'to re-route'}"
	),
	"$from_version schema: the re-route worker re-routes an overdue lead");
$node->safe_psql('app', "SELECT aimroute.mark_viewed($old{territory}, 'sales\@d100.example')");

# A staging batch: two leads routed, one rejected.
$node->safe_psql(
	'app', q{
	INSERT INTO aimroute.lead_staging (batch_id, received_at, brand_code, email, country, postal_code, first_name, comment)
	VALUES ('import-1', '2024-05-01 10:00:00+00', 'LKB', 'bob@example.com', 'US', '49757', 'Bob', 'staged'),
	       ('import-1', NULL, 'LKB', 'cy@example.com', 'USA', '60601-1234', 'Cy', 'staged'),
	       ('import-1', NULL, 'LKB', NULL, 'US', '60601', 'Di', 'no email, no phone');
	SELECT aimroute.process_staging('import-1');
});
is( $node->safe_psql(
		'app', "SELECT string_agg(coalesce(status, '-'), ' ' ORDER BY staging_id) FROM aimroute.lead_staging"),
	'processed processed rejected',
	"$from_version schema: a staging batch is processed");

# Every message settled by the delivery worker, and the day's recap queued.
ok( $node->poll_query_until(
		'app', q{
	SELECT count(*) FILTER (WHERE status IN ('queued', 'sending')) = 0
	       AND count(*) FILTER (WHERE purpose = 'failure notice' AND status = 'delivered') > 0
	       AND (SELECT count(*) FROM aimroute.daily_recaps) > 0
	  FROM aimroute.outbox}),
	"$from_version schema: the delivery worker settles every message, failure notices included");
ok(wait_for_log($smtp, sub { grep { grep { $_ eq 'sales@d100.example' } @{ $_->{rcpt_tos} } } @{ $_[0] } }, 30),
	"$from_version schema: a lead's email reached the SMTP server");
is( $node->safe_psql(
		'app', "SELECT concat_ws(' ', sent_to_dealer, email_status) FROM aimroute.lead_delivery_status WHERE lead_id = $old{territory}"
	),
	't Delivered',
	"$from_version schema: lead_delivery_status says Delivered");

# snapshot(db, tables): one line per table (its rows, over the columns it
# has now unless given) and per sequence: count and md5 of the sorted rows.
sub snapshot
{
	my ($db, $columns) = @_;
	$columns //= {
		map { split /\t/ } split /\n/,
		$node->safe_psql(
			$db, q{
		SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) || E'\t'
		       || CASE WHEN c.relkind = 'S' THEN 'last_value, is_called'
		               ELSE string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) END
		  FROM pg_depend d
		  JOIN pg_class c ON c.oid = d.objid
		  JOIN pg_namespace n ON n.oid = c.relnamespace
		  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		 WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e' AND d.refclassid = 'pg_extension'::regclass
		   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'aimroute')
		   AND c.relkind IN ('r', 'p', 'S')
		 GROUP BY n.nspname, c.relname, c.relkind})
	};
	my $sql = join(
		"\nUNION ALL ",
		map {
			my $rel = $_;
			"SELECT '$rel: ' || count(*) || ' rows, md5 '"
			  . " || coalesce(md5(string_agg(r::text, E'\\n' ORDER BY r::text COLLATE \"C\")), '-')"
			  . " FROM (SELECT $columns->{$rel} FROM $rel) r"
		} sort keys %$columns);
	return ($node->safe_psql($db, "SELECT string_agg(line, E'\\n' ORDER BY line) FROM ($sql) s(line)"), $columns);
}

# The data just before the update.
my ($rows_before, $columns_before) = snapshot('app');
like($rows_before, qr/^aimroute\.leads: 10 rows/m, 'the snapshot holds the leads');

# A fresh install of the current version, in another database.
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'SET client_min_messages = warning; CREATE EXTENSION aimroute CASCADE');
my $fresh = $node->safe_psql('fresh', $describe_sql);

# The update.
$node->safe_psql('app', 'ALTER EXTENSION aimroute UPDATE');
is($node->safe_psql('app', "SELECT extversion FROM pg_extension WHERE extname = 'aimroute'"),
	$to_version, "ALTER EXTENSION aimroute UPDATE took it to $to_version");

my $updated = $node->safe_psql('app', $describe_sql);
cmp_ok(length($fresh), '>', 10000, 'describe.sql describes the fresh install');
same_text($updated, $fresh, "updated from $from_version", "fresh $to_version",
	"the updated schema is the fresh $to_version install's (test/upgrade/describe.sql)");

# The other releases, updated empty.
for my $version (@releases[ 1 .. $#releases ])
{
	my $db = "release_$version" =~ s/\./_/gr;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db,
		"SET client_min_messages = warning; CREATE EXTENSION aimroute VERSION '$version' CASCADE; ALTER EXTENSION aimroute UPDATE"
	);
	same_text($node->safe_psql($db, $describe_sql),
		$fresh, "updated from $version", "fresh $to_version", "release $version updated is the fresh $to_version install");
}

# Every release updated by an owner that is not a superuser: what the
# update creates must end up owned, and granted, as a fresh install's.
$node->safe_psql('postgres', 'CREATE ROLE oem LOGIN');
for my $version ('fresh', @releases)
{
	my $db = "oem_$version" =~ s/\./_/gr;
	$node->safe_psql('postgres', "CREATE DATABASE $db OWNER oem");
	$node->safe_psql($db, 'SET client_min_messages = warning; CREATE EXTENSION postgis');
	$node->safe_psql(
		$db,
		$version eq 'fresh'
		? 'CREATE EXTENSION aimroute'
		: "CREATE EXTENSION aimroute VERSION '$version'; ALTER EXTENSION aimroute UPDATE",
		extra_params => [ '-U', 'oem' ]);
}
my $oem_fresh = $node->safe_psql('oem_fresh', $describe_sql);
like($oem_fresh, qr/^extension aimroute: version \Q$to_version\E, schema aimroute, owner oem,/m,
	'oem owns a fresh install');
for my $version (@releases)
{
	same_text($node->safe_psql("oem_$version" =~ s/\./_/gr, $describe_sql),
		$oem_fresh, "updated from $version by oem", "fresh $to_version by oem",
		"owner oem: release $version updated is the fresh $to_version install");
}

my ($rows_after) = snapshot('app', $columns_before);
same_text($rows_after, $rows_before, 'after the update', 'before the update',
	'every row of every table and every sequence is as it was before the update');

# same_text(got, want, got's name, want's name, test name): a test that two
# texts are equal.  Unlike is(), which would print both texts whole (some
# 3,000 lines each for a description), a failure prints a unified diff,
# each hunk headed by the line of the object it is in.
sub same_text
{
	my ($got, $want, $got_name, $want_name, $test_name) = @_;
	return 1 if ok($got eq $want, $test_name);
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my ($fa, $fb) = ("$dir/$got_name", "$dir/$want_name");
	for ([ $fa, $got ], [ $fb, $want ])
	{
		open(my $fh, '>', $_->[0]) or die "cannot write $_->[0]: $!";
		print $fh $_->[1], "\n";
		close $fh;
	}
	my $out = '';
	IPC::Run::run([ 'diff', '-u', '-F', '^[^ ]', '--label', $got_name, '--label', $want_name, $fa, $fb ],
		'>', \$out);
	diag("what differs, $got_name (-) against $want_name (+):\n$out");
	return 0;
}

# Routing after the update.
my ($new_id, $new_routed) = split / /, lead('after update', 'LKB', 'US', '49757'), 2;
is($new_routed, 'D100 Territory', 'after the update: a new lead is routed (D100 Territory)');
like(
	$node->safe_psql('app', "SELECT string_agg(rule || ': ' || message, E'\\n') FROM aimroute.explain_lead($new_id)"),
	qr/Territory/, 'after the update: explain_lead says why');
is( $node->safe_psql(
		'app', "SELECT string_agg(dealer_number || ' ' || match_type, ', ' ORDER BY rank) FROM aimroute.locate_dealers('US', '53703', 'LKB', max_results => 2)"
	),
	'D400 Radius, D300 Radius',
	'after the update: locate_dealers answers');

# The re-route worker, on a lead of before and one of after the update.
my ($reroute_id) = split / /, lead('re-route after update', 'LKB', 'US', '60601');
$node->safe_psql('app',
	"UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE lead_id IN ($reroute_id, $old{'to re-route'})");
ok( $node->poll_query_until(
		'app',
		"SELECT string_agg(concat_ws(' ', dealer_number, match_type), ', ' ORDER BY lead_id) = 'D100 Re-Route, D400 Re-Route'"
		  . " FROM aimroute.leads WHERE lead_id IN ($old{'to re-route'}, $reroute_id)"),
	'after the update: the re-route worker re-routes an old and a new overdue lead');

# The delivery worker: the new lead's email reaches the SMTP server.
my $token = $node->safe_psql('app',
	"SELECT view_token FROM aimroute.lead_notifications WHERE lead_id = $new_id ORDER BY notification_id DESC LIMIT 1"
);
ok( wait_for_log(
		$smtp,
		sub {
			grep { (grep { $_ eq 'sales@d100.example' } @{ $_->{rcpt_tos} }) && index($_->{body} // '', $token) >= 0 }
			  @{ $_[0] };
		},
		60),
	'after the update: the delivery worker delivers the new lead\'s email');
ok( $node->poll_query_until(
		'app', "SELECT NOT delivery_pending AND email_status = 'Delivered' FROM aimroute.lead_delivery_status WHERE lead_id = $new_id"
	),
	'after the update: lead_delivery_status says Delivered for the new lead');

# The four views, for old and new leads.
is( $node->safe_psql(
		'app', "SELECT string_agg(lead_id || ' ' || coalesce(email_status, '-'), ', ' ORDER BY lead_id) FROM aimroute.lead_delivery_status"
		  . " WHERE lead_id IN ($old{territory}, $old{'brand territory'}, $new_id)"),
	"$old{territory} Delivered, $old{'brand territory'} -, $new_id Delivered",
	'lead_delivery_status answers for old and new leads');
is( $node->safe_psql(
		'app', "SELECT string_agg(lead_id || ' ' || reason, ', ') FROM aimroute.unsent_leads WHERE lead_id IN ($old{'brand territory'}, $new_id)"
	),
	"$old{'brand territory'} No contacts configured",
	'unsent_leads shows the old lead whose dealer has no contact, and not the new lead, delivered');
is( $node->safe_psql(
		'app', "SELECT count(DISTINCT lead_id) FROM aimroute.delivery_attempts WHERE lead_id IN ($old{territory}, $new_id)"
	),
	'2',
	'delivery_attempts answers for old and new leads');
is($node->safe_psql('app', "SELECT count(*) > 0 FROM aimroute.delivery_issues WHERE lead_id = $old{radius}"),
	't', 'delivery_issues shows the old lead whose email hard-bounced');
is( $node->safe_psql(
		'app', "SELECT count(*) FROM aimroute.leads", extra_params => [ '-U', 'upgrade_dealer' ]),
	$node->safe_psql('app', "SELECT count(*) FROM aimroute.leads WHERE dealer_number = 'D100'"),
	'a dealer user still sees exactly its dealer\'s leads');

# A backup of the updated database restores, once the workers are done.
ok( $node->poll_query_until(
		'app', "SELECT count(*) = 0 FROM aimroute.outbox WHERE status IN ('queued', 'sending')"),
	'the delivery worker settles every message');
my $dump = $node->basedir . '/app.dump';
$node->command_ok([ 'pg_dump', '-Fc', '--exclude-table-data=public.spatial_ref_sys', '-f', $dump, '-d', 'app' ],
	'pg_dump backs up the updated database');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
my ($restore_out, $restore_err) = ('', '');
IPC::Run::run([ 'pg_restore', '-d', $node->connstr('restored'), $dump ], '>', \$restore_out, '2>', \$restore_err);
is(join("\n", grep { /error:/ } split /\n/, $restore_err), '', 'pg_restore restores it without an error');
# Restoring the configuration tables gives the configuration a new
# version number (config_version): that is the one difference.
my ($rows_app, $columns_app) = snapshot('app');
my ($rows_restored) = snapshot('restored', $columns_app);
s/^aimroute\.config_version.*\n//mg for $rows_app, $rows_restored;
same_text($rows_restored, $rows_app, 'restored', 'backed up', 'the restored database has every row');
same_text($node->safe_psql('restored', $describe_sql),
	$fresh, 'restored', "fresh $to_version", 'and the schema of a fresh install');

$node->stop;
done_testing();
