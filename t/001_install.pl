# t/001_install.pl: aimroute on a fresh cluster of its own.
#
# CREATE EXTENSION CASCADE on a new cluster, the shipped postal data loaded
# and kept across an immediate shutdown, a pg_dump/pg_restore round trip of
# the configuration (including the one settings row), and a clean
# DROP EXTENSION.  PostGIS placement: cascade (t/lib/Placement.pm).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Placement;

my $placement = Placement::pick('cascade');

my $node = PostgreSQL::Test::Cluster->new('install');
$node->init;
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', $placement);
is( $node->safe_psql(
		'app', "SELECT extversion = aimroute.library_version() FROM pg_extension WHERE extname = 'aimroute'"),
	't',
	'the installed SQL and the loaded library are the same version');

# PostGIS in a schema of its own that PUBLIC may not use: CREATE EXTENSION
# says that routing will fail for roles without USAGE on it (PostGIS reads
# its spatial_ref_sys with the caller's rights), and the GRANT it names
# silences it.
{
	my ($out, $err);
	$node->safe_psql('postgres', 'CREATE DATABASE closed_gis');
	$node->safe_psql('closed_gis',
		'SET client_min_messages = warning; CREATE SCHEMA gis; CREATE EXTENSION postgis SCHEMA gis');
	$node->psql('closed_gis', 'CREATE EXTENSION aimroute', stdout => \$out, stderr => \$err);
	like($err, qr/WARNING:  PostGIS's schema gis is not usable by every role/,
		'PostGIS in a schema PUBLIC may not use: CREATE EXTENSION warns');
	like($err, qr/HINT:  GRANT USAGE ON SCHEMA gis TO PUBLIC/, '... and names the GRANT');
	$node->safe_psql('closed_gis', 'DROP EXTENSION aimroute; GRANT USAGE ON SCHEMA gis TO PUBLIC');
	$node->psql('closed_gis', 'CREATE EXTENSION aimroute', stdout => \$out, stderr => \$err);
	unlike($err, qr/WARNING/, '... and is silent once PUBLIC may use it');
	$node->safe_psql('postgres', 'DROP DATABASE closed_gis');
}

# The shipped data: US ZIP codes and Canadian FSAs.
my ($loaded, $stderr);
$node->psql(
	'app',
	'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())',
	stdout => \$loaded,
	stderr => \$stderr);
cmp_ok($loaded, '>', 44000, "shipped file loads ($loaded rows)");
like($stderr, qr/WARNING:.*\d+ rejected/, 'the load reports the rows it could not read');
like($stderr, qr/columns look shifted/, 'the shifted Canadian rows are named');
is( $node->safe_psql(
		'app',
		"SELECT count(*) FROM aimroute.postal_code_load_issues WHERE rejected"),
	'7',
	'every rejected line of the shipped file is listed');
is( $node->safe_psql(
		'app',
		"SELECT place_name || '|' || state_code || '|' || county FROM aimroute.postal_codes WHERE country = 'US' AND postal_code = '49757'"),
	'Mackinac Island|MI|Mackinac',
	'Mackinac Island is there with its county');
is( $node->safe_psql(
		'app',
		"SELECT state_code || '|' || (centroid IS NOT NULL) FROM aimroute.postal_codes WHERE country = 'CA' AND postal_code = 'P0S'"),
	'ON|true',
	'Batchawana Bay (P0S) is there with a centre point');

# A small network, then an immediate shutdown: nothing is lost.
$node->safe_psql(
	'app', q{
	INSERT INTO aimroute.brands VALUES ('LKB', 'Lakeshore Boats');
	INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code)
	  VALUES ('HQ', 'Corporate', 'USA', '00501'), ('D100', 'Island Marine', 'US', '49757');
	INSERT INTO aimroute.dealer_brands VALUES ('D100', 'LKB');
	INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
	  VALUES ('D100', 'LKB', 'county', 'US', 'MI/Mackinac');
	UPDATE aimroute.settings SET default_dealer_number = 'HQ', radius_miles = 750;
	INSERT INTO aimroute.leads (brand_code, country, postal_code, email)
	  VALUES ('LKB', 'US', '49757', 'a@example.com'), ('LKB', 'US', '49781', 'b@example.com');
	SELECT aimroute.reassign(1, 'HQ', 'a notice with a view link to keep');
	SELECT aimroute.reassign(1, 'D100', 'and back');
});
$node->stop('immediate');
$node->start;
is( $node->safe_psql(
		'app',
		"SELECT (SELECT count(*) FROM aimroute.postal_codes) > 44000, (SELECT count(*) FROM aimroute.dealers), (SELECT radius_miles FROM aimroute.settings)"),
	't|2|750',
	'data and settings survive an immediate shutdown');

# pg_dump / pg_restore: the configuration tables are dumped with the
# extension, and the settings row is restored over the default one.
my $dump = $PostgreSQL::Test::Utils::tmp_check . '/app.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('app'), '-f', $dump ],
	'pg_dump of a database using aimroute');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ],
	'pg_restore into a new database');
is( $node->safe_psql(
		'restored',
		"SELECT (SELECT count(*) FROM aimroute.settings), (SELECT radius_miles || '|' || default_dealer_number FROM aimroute.settings), (SELECT count(*) FROM aimroute.territories), (SELECT count(*) > 44000 FROM aimroute.postal_codes)"),
	'1|750|HQ|1|t',
	'the restore has one settings row with the dumped values, and the network');
my $leads_and_notices =
  "SELECT string_agg(format('%s %s %s %s', l.lead_id, l.dealer_number, l.routed_at, n.view_token), ';' ORDER BY l.lead_id)"
  . " FROM aimroute.leads l JOIN aimroute.lead_notifications n USING (lead_id)";
is($node->safe_psql('restored', $leads_and_notices),
	$node->safe_psql('app', $leads_and_notices),
	'restored leads keep their routing time, dealer and notices (view links still work)');

is( $node->safe_psql(
		'restored', q{
	INSERT INTO aimroute.leads (brand_code, country, postal_code, email)
	  VALUES ('LKB', 'US', '49757', 'c@example.com');
	INSERT INTO aimroute.territories (dealer_number, kind, country, code) VALUES ('D100', 'state', 'US', 'MI');
	SELECT count(*) || '|' || count(DISTINCT lead_id) FROM aimroute.leads;
}),
	'3|3',
	'after the restore, new leads and territories get fresh ids (identity sequences are dumped)');

# DROP EXTENSION removes everything; CREATE again starts clean.
$node->safe_psql('app', 'DROP EXTENSION aimroute');
is($node->safe_psql('app', "SELECT count(*) FROM pg_namespace WHERE nspname = 'aimroute'"),
	'1', 'the schema stays (it holds PostGIS, installed by CASCADE)');
is( $node->safe_psql(
		'app',
		"SELECT count(*) FROM pg_class WHERE relnamespace = 'aimroute'::regnamespace AND relname IN ('dealers', 'settings', 'postal_codes')"),
	'0',
	'DROP EXTENSION removes the tables');

$node->stop;
done_testing();
