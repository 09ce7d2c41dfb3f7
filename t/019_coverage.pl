# t/019_coverage.pl: coverage on the shipped postal table (SPEC section 9,
# docs/coverage.md).
#
# - aimroute.coverage_geojson() is read by a real GIS reader: GDAL's
#   ogrinfo (Debian gdal-bin) opens the FeatureCollection and reports as
#   many Point features as coverage() has rows, the fields of the
#   properties with their types, a known postal code's dealer and place,
#   and the white space count that coverage() gives.
# - On random small networks (dealers at random postal codes of the US and
#   Canada, some inactive, territories of every kind for all brands or one,
#   random radius settings), coverage() agrees with route() for a sample
#   of postal codes and every postal code won by a territory, and with
#   locate_dealers()'s first rank for a smaller sample: dealer, match type
#   and miles.
# PostGIS placement: gis (t/lib/Placement.pm), so that nothing of coverage
# relies on PostGIS being on the search_path.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Placement;

my $placement = Placement::pick('gis');

my $node = PostgreSQL::Test::Cluster->new('coverage');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', $placement);
$node->psql('app', 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');

# A network: Chicago and Milwaukee (Milwaukee holds Wisconsin), Toronto;
# headquarters in New York as the default dealer; radius 60 miles.
$node->safe_psql(
	'app', q{
	INSERT INTO aimroute.brands VALUES ('BT', 'Boats');
	INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code) VALUES
	  ('HQ', 'Headquarters', 'US', '10001'), ('CHI', 'Chicago', 'US', '60601'),
	  ('MKE', 'Milwaukee', 'US', '53202'), ('TOR', 'Toronto', 'CA', 'M5V');
	INSERT INTO aimroute.dealer_brands VALUES ('CHI', 'BT'), ('MKE', 'BT'), ('TOR', 'BT');
	INSERT INTO aimroute.territories (dealer_number, kind, country, code) VALUES ('MKE', 'state', 'US', 'WI');
	UPDATE aimroute.settings SET default_dealer_number = 'HQ', radius_enabled = true,
	       radius_miles = 60, radius_countries = '{US,CA}';
});

# ogrinfo_of(args...): ogrinfo's output, failing the test when it fails.
sub ogrinfo_of
{
	my @cmd = ('ogrinfo', '-ro', @_);
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	ok($ok, "ogrinfo @_[1 .. $#_] runs") or diag($err);
	return $out;
}

my $dir = PostgreSQL::Test::Utils::tempdir();
foreach my $case ([ 'all', 'NULL' ], [ 'canada', q{'Canada'} ])
{
	my ($name, $country) = @$case;
	my $file = "$dir/coverage_$name.geojson";
	append_to_file($file,
		$node->safe_psql('app', "SELECT aimroute.coverage_geojson('BT', $country)"));
	my $rows = $node->safe_psql('app', "SELECT count(*) FROM aimroute.coverage('BT', $country)");
	my $white = $node->safe_psql('app',
		"SELECT count(*) FROM aimroute.coverage('BT', $country) WHERE match_type = 'Default'");
	cmp_ok($rows, '>', ($name eq 'all' ? 40000 : 1000), "$name: coverage has the postal codes");

	my $summary = ogrinfo_of('-al', '-so', $file);
	like($summary, qr/using driver `GeoJSON' successful/, "$name: GDAL opens it as GeoJSON");
	like($summary, qr/^Geometry: Point$/m, "$name: of points");
	my ($count) = $summary =~ /^Feature Count: (\d+)$/m;
	is($count, $rows, "$name: one feature per row of coverage()");
	foreach my $field (
		'country: String', 'postal_code: String',
		'state_code: String', 'county: String',
		'dealer_number: String', 'match_type: String',
		'distance_miles: Real', 'white_space: Integer\(Boolean\)')
	{
		like($summary, qr/^$field /m, "$name: field $field");
	}

	my $layer = "coverage_$name";
	my $sql = ogrinfo_of($file, '-sql',
		"SELECT COUNT(*) AS n FROM $layer WHERE match_type = 'Default'");
	like($sql, qr/n \(Integer\) = $white$/m, "$name: GDAL counts the $white postal codes of white space");
	$sql = ogrinfo_of($file, '-sql', "SELECT COUNT(*) AS n FROM $layer WHERE white_space = 1");
	like($sql, qr/n \(Integer\) = $white$/m, "$name: and as many flagged white_space");
}

# One feature read back: a Wisconsin ZIP code of Milwaukee's territory.
my $one = ogrinfo_of("$dir/coverage_all.geojson", '-al', '-where', "postal_code = '53703'");
like($one, qr/dealer_number \(String\) = MKE$/m, '53703 (Madison, WI) goes to MKE');
like($one, qr/match_type \(String\) = Territory$/m, 'by its territory');
like($one, qr/POINT \(-89\.3\d* 43\.0\d*\)/, 'at its centre point, longitude first');
like($one, qr/state_code \(String\) = WI$/m, 'with its state');

# Random small networks: coverage() is what routing says, postal code by
# postal code.  Each network is a brand of its own (RB1..), built from a
# fixed seed.
my $networks = 4;
foreach my $n (1 .. $networks)
{
	$node->safe_psql(
		'app', qq{
		SELECT setseed(0.$n);
		INSERT INTO aimroute.brands VALUES ('RB$n', 'Random $n');
		CREATE TEMP TABLE picked AS
		SELECT row_number() OVER () AS i, p.*
		  FROM (SELECT country, postal_code, state_code, county FROM aimroute.postal_codes
		         WHERE centroid IS NOT NULL AND country IN ('US', 'CA') AND state_code IS NOT NULL
		         ORDER BY random() LIMIT 40) p;
		INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code, active_for_sales)
		SELECT 'R$n-' || i, 'Random dealer ' || i, country, postal_code, random() < 0.8 FROM picked;
		INSERT INTO aimroute.dealer_brands SELECT 'R$n-' || i, 'RB$n' FROM picked;
		INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
		SELECT 'R$n-' || i, CASE WHEN random() < 0.5 THEN 'RB$n' END, k.kind, p.country,
		       CASE k.kind WHEN 'postal' THEN p.postal_code WHEN 'state' THEN p.state_code
		                   ELSE p.state_code || '/' || p.county END
		  FROM picked p
		  CROSS JOIN LATERAL (SELECT (ARRAY['postal', 'county', 'state'])[1 + floor(random() * 3)::int] AS kind) k
		 WHERE p.i % 4 = 0 AND (k.kind <> 'county' OR p.county IS NOT NULL);
		UPDATE aimroute.settings SET radius_enabled = random() < 0.8,
		       radius_miles = 20 + floor(random() * 300),
		       radius_countries = (ARRAY['{US,CA}', '{US}', '{CA}'])[1 + floor(random() * 3)::int]::text[];
	});
	my $mix = $node->safe_psql('app',
		"SELECT string_agg(match_type || ' ' || n, ', ' ORDER BY match_type)
		   FROM (SELECT match_type, count(*) AS n FROM aimroute.coverage('RB$n') GROUP BY 1) m");
	note("network $n: $mix");
	my $route = $node->safe_psql(
		'app', qq{
		SELECT count(*) || ' ' || count(*) FILTER (WHERE r.dealer_number IS DISTINCT FROM c.dealer_number
		                                             OR r.match_type IS DISTINCT FROM c.match_type
		                                             OR r.distance_miles IS DISTINCT FROM c.distance_miles)
		  FROM aimroute.coverage('RB$n') c
		  CROSS JOIN LATERAL aimroute.route(c.country, c.postal_code, 'RB$n') r
		 WHERE abs(hashtext(c.postal_code || '$n')) % 20 = 0 OR c.match_type = 'Territory'});
	my ($compared, $differ) = split / /, $route;
	cmp_ok($compared, '>', 1500, "network $n: $compared postal codes compared with route()");
	is($differ, 0, "network $n: coverage() agrees with route() on every one");
	my $locate = $node->safe_psql(
		'app', qq{
		SELECT count(*) FILTER (WHERE l.dealer_number IS DISTINCT FROM c.dealer_number
		                          OR l.match_type IS DISTINCT FROM c.match_type
		                          OR l.distance_miles IS DISTINCT FROM c.distance_miles)
		  FROM aimroute.coverage('RB$n') c
		  LEFT JOIN LATERAL aimroute.locate_dealers(c.country, c.postal_code, 'RB$n', NULL, 1) l ON true
		 WHERE abs(hashtext(c.postal_code || '$n')) % 100 = 0});
	is($locate, 0, "network $n: and with locate_dealers()'s first rank");
	my $mixes = $node->safe_psql('app',
		"SELECT count(DISTINCT match_type) FROM aimroute.coverage('RB$n')");
	cmp_ok($mixes, '>=', 2, "network $n: more than one rule wins somewhere");
}

$node->stop;
done_testing();
