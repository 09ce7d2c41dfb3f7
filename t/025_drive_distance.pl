# t/025_drive_distance.pl: the road network of Drive Distance (issue 18,
# SPEC section 2), imported from real OpenStreetMap data.
#
# Debian's python-osmnx-doc ships an OpenStreetMap extract of West Oakland,
# California (West-Oakland.osm.bz2, (c) OpenStreetMap contributors, under
# the Open Database License: https://www.openstreetmap.org/copyright).
# osm2pgrouting imports it into a database with aimroute and pgRouting, as
# docs/drive-distance.md tells a user to, and the test checks:
# - aimroute does not require pgRouting: CREATE EXTENSION aimroute leaves it
#   out, and switching settings.drive_distance_enabled on is refused, with
#   what to install or import, until pgRouting is in the database and
#   settings.drive_network names a table with what routing reads;
# - what the import looks like: the edge table ways (source, target,
#   length_m in metres, reverse_cost negative on one-way streets, the_geom
#   in WGS84) and its vertices, inside the extract's bounds;
# - that pgr_dijkstraCost on it measures roads: never shorter than the
#   straight line between two vertices, and longer against a one-way street,
#   and that the network holds the seeds' case: of two places, the closer
#   as the crow flies is the farther by road;
# - that a dump of the database restores with Drive Distance on.
#
# PostGIS placement: public (t/lib/Placement.pm).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Placement;

# Where python-osmnx-doc puts the extract (dpkg -L python-osmnx-doc), and
# the osm2pgrouting configuration for cars: the streets a car may take.
my $extract = $ENV{AIMROUTE_OSM_EXTRACT}
  // '/usr/share/doc/python-osmnx-doc/examples/tests/input_data/West-Oakland.osm.bz2';
my $mapconfig = '/usr/share/osm2pgrouting/mapconfig_for_cars.xml';

my $placement = Placement::pick('public');
my $node = PostgreSQL::Test::Cluster->new('drive');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', $placement);

# refused(sql, sqlstate, message, hint, name): sql fails with that SQLSTATE,
# message and hint.
sub refused
{
	my ($sql, $sqlstate, $message, $hint, $name) = @_;
	my ($out, $err);
	$node->psql('app', "\\set VERBOSITY verbose\n$sql", stdout => \$out, stderr => \$err);
	like($err, qr/ERROR:  \Q$sqlstate\E: [^\n]*$message/, "$name: $sqlstate, the message says so");
	like($err, qr/HINT:  [^\n]*$hint/, "$name: the hint says what to do");
	return;
}

my $enable = q{UPDATE aimroute.settings SET drive_distance_enabled = true};

# pgRouting is optional: aimroute's control file does not ask for it.
is( $node->safe_psql(
		'app', q{
	SELECT coalesce('pgrouting' = ANY (v.requires), false) OR EXISTS (SELECT FROM pg_extension WHERE extname = 'pgrouting')
	  FROM pg_available_extension_versions v JOIN pg_extension e ON e.extname = v.name AND e.extversion = v.version
	 WHERE v.name = 'aimroute'}),
	'f',
	'aimroute does not require pgRouting, and creating it does not create pgRouting');
is($node->safe_psql('app', 'SELECT drive_distance_enabled, drive_network IS NULL FROM aimroute.settings'),
	'f|t', 'Drive Distance is off by default, with no network');

my $available =
  $node->safe_psql('app', q{SELECT count(*) FROM pg_available_extensions WHERE name = 'pgrouting'});
if ($available eq '0')
{
	refused($enable, '55000', 'needs pgRouting, which is not installed in database app',
		'apt-get install postgresql-15-pgrouting', 'pgRouting not installed on the server');
	diag 'pgRouting is not installed on this server: the import is not tested'
	  . ' (apt-get install postgresql-15-pgrouting osm2pgrouting python-osmnx-doc)';
	$node->stop;
	done_testing();
	exit 0;
}
refused($enable, '55000', 'needs pgRouting, which is not installed in database app',
	'Run CREATE EXTENSION pgrouting in this database', 'pgRouting not created in the database');

$node->safe_psql('app', 'CREATE EXTENSION pgrouting');
refused($enable, '55000', 'settings.drive_network is not set',
	"Import an OpenStreetMap extract with osm2pgrouting .*SET drive_network = 'public.ways', drive_distance_enabled = true",
	'no network named');
refused(
	"$enable, drive_network = 'public.ways'",
	'42P01', 'table "public.ways" \(settings.drive_network\) does not exist',
	'Import an OpenStreetMap extract with osm2pgrouting', 'the table is missing');
is($node->safe_psql('app', 'SELECT drive_distance_enabled, drive_network IS NULL FROM aimroute.settings'),
	'f|t', 'the settings did not change');

# The import, as docs/drive-distance.md shows it.
ok(-f $extract, "the OpenStreetMap extract is at $extract (python-osmnx-doc)");
ok(-f $mapconfig, "osm2pgrouting's configuration for cars is at $mapconfig");
my $osm = PostgreSQL::Test::Utils::tempdir . '/West-Oakland.osm';
ok(run_log([ 'sh', '-c', 'bunzip2 -c "$1" >"$2"', 'sh', $extract, $osm ]), 'the extract decompresses');
my ($minlat, $minlon, $maxlat, $maxlon);
{
	open my $fh, '<', $osm or die "$osm: $!";
	while (<$fh>)
	{
		if (/<bounds\b/)
		{
			($minlat) = /minlat="([-0-9.]+)"/;
			($minlon) = /minlon="([-0-9.]+)"/;
			($maxlat) = /maxlat="([-0-9.]+)"/;
			($maxlon) = /maxlon="([-0-9.]+)"/;
			last;
		}
	}
	close $fh;
}
ok(defined $maxlon, "the extract has its bounds: $minlat,$minlon to $maxlat,$maxlon");
my $user = $node->safe_psql('app', 'SELECT current_user');
ok( run_log(
		[
			'osm2pgrouting', '--file', $osm, '--conf', $mapconfig, '--dbname', 'app',
			'--username', $user, '--host', $node->host, '--port', $node->port, '--schema', 'public', '--clean'
		]),
	'osm2pgrouting imports it');

# What the import looks like.
is( $node->safe_psql(
		'app', q{SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'spatial_ref_sys'}),
	'configuration,pointsofinterest,ways,ways_vertices_pgr',
	'osm2pgrouting made ways, ways_vertices_pgr, configuration and pointsofinterest in schema public');
is( $node->safe_psql(
		'app', q{
	SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attname)
	  FROM pg_attribute a
	 WHERE a.attrelid = 'public.ways'::regclass
	   AND a.attname IN ('source', 'target', 'length_m', 'cost', 'reverse_cost', 'the_geom')}),
	'cost double precision, length_m double precision, reverse_cost double precision, '
	  . 'source bigint, target bigint, the_geom geometry(LineString,4326)',
	'ways: source, target, costs, length_m and a WGS84 line per edge');
# The counts are those of Debian 12's packages (osm2pgrouting 2.3.8 on
# python-osmnx-doc 1.2.3's extract): of the 66 ways it reads, the 23 a car
# may take, split where they cross, are 50 edges between 43 vertices.
is( $node->safe_psql(
		'app', 'SELECT (SELECT count(DISTINCT osm_id) FROM ways), (SELECT count(*) FROM ways),
		               (SELECT count(*) FROM ways_vertices_pgr)'),
	'23|50|43',
	'23 OpenStreetMap ways a car may take are 50 edges between 43 vertices');
my $vertices = 43;
is( $node->safe_psql(
		'app', q{
	SELECT count(*) FROM ways w
	 WHERE NOT EXISTS (SELECT FROM ways_vertices_pgr v WHERE v.id = w.source)
	    OR NOT EXISTS (SELECT FROM ways_vertices_pgr v WHERE v.id = w.target)}),
	'0', 'every edge joins two vertices of ways_vertices_pgr');
is( $node->safe_psql(
		'app', q{
	SELECT count(*) FROM ways w
	 WHERE abs(w.length_m - ST_Length(w.the_geom::geography)) > 0.01 * w.length_m + 0.5}),
	'0', 'length_m is the length of the edge in metres');
cmp_ok(
	$node->safe_psql(
		'app', qq{
	SELECT count(*) FROM ways_vertices_pgr v
	 WHERE ST_Intersects(v.the_geom, ST_MakeEnvelope($minlon, $minlat, $maxlon, $maxlat, 4326))}),
	'>=', $vertices / 2,
	'the vertices are in West Oakland, most inside the extract\'s bounds');
is($node->safe_psql('app', 'SELECT count(*) FROM ways WHERE reverse_cost < 0'),
	'17', '17 edges are one way (reverse_cost < 0)');
is( $node->safe_psql('app', 'SELECT count(*) FROM ways WHERE reverse_cost < 0 AND cost < 0'),
	'0', 'no edge is closed both ways');

# Road distances in metres: from a vertex of the biggest connected part of
# the network to every vertex it reaches, never shorter than the straight
# line, and driving against a one-way street costs a detour.
my $edges_sql = q{SELECT gid AS id, source, target, length_m AS cost,
       CASE WHEN reverse_cost < 0 THEN -1 ELSE length_m END AS reverse_cost FROM ways};
my $start = $node->safe_psql(
	'app', qq{
	SELECT component FROM pgr_connectedComponents('$edges_sql')
	 GROUP BY component ORDER BY count(*) DESC, component LIMIT 1});
my ($reached, $shorter) = split /\|/, $node->safe_psql(
	'app', qq{
	SELECT count(*), count(*) FILTER (WHERE d.agg_cost < ST_Distance(a.the_geom::geography, b.the_geom::geography) - 0.01)
	  FROM pgr_dijkstraCost('$edges_sql', $start,
	                        ARRAY(SELECT id FROM ways_vertices_pgr WHERE id <> $start)) d
	  JOIN ways_vertices_pgr a ON a.id = d.start_vid
	  JOIN ways_vertices_pgr b ON b.id = d.end_vid});
cmp_ok($reached, '>', 1, "pgr_dijkstraCost reaches $reached vertices from vertex $start");
is($shorter, '0', 'no road distance is shorter than the straight line');
my $detours = $node->safe_psql(
	'app', qq{
	SELECT count(*)
	  FROM ways w
	  JOIN LATERAL pgr_dijkstraCost('$edges_sql', w.target, w.source) d ON true
	 WHERE w.reverse_cost < 0 AND d.agg_cost > w.length_m + 0.01});
cmp_ok($detours, '>', 0, "going back against $detours one-way edges takes a longer road");

# The seeds' case at city scale, which the network must be able to show:
# from some vertex, of two others, the closer as the crow flies is the
# farther by road.
my ($lead, $crow_pick, $road_pick, $case) = split /\|/, $node->safe_psql(
	'app', qq{
	WITH d AS (SELECT c.start_vid AS l, c.end_vid AS v, c.agg_cost AS road,
	                  ST_Distance(a.the_geom::geography, b.the_geom::geography) AS crow
	             FROM pgr_dijkstraCost('$edges_sql', ARRAY(SELECT id FROM ways_vertices_pgr),
	                                   ARRAY(SELECT id FROM ways_vertices_pgr)) c
	             JOIN ways_vertices_pgr a ON a.id = c.start_vid
	             JOIN ways_vertices_pgr b ON b.id = c.end_vid)
	SELECT x.l, x.v, y.v,
	       format('%s m straight, %s m by road against %s m and %s m', round(x.crow), round(x.road),
	              round(y.crow), round(y.road))
	  FROM d x JOIN d y ON y.l = x.l
	 WHERE x.crow < y.crow AND x.road > y.road
	 ORDER BY x.road - y.road DESC, x.l, x.v, y.v LIMIT 1});
ok(defined $road_pick,
	"from vertex $lead, vertex $crow_pick is closer as the crow flies and vertex $road_pick by road ($case)");

# Now Drive Distance can be switched on, with the edge table named with its
# schema; a table without what routing reads is refused.
refused(
	"$enable, drive_network = 'ways'",
	'42P01', 'table "ways" \(settings.drive_network\) does not exist',
	'name it with its schema, such as public.ways', 'an unqualified name');
$node->safe_psql('app', 'CREATE TABLE public.roads AS SELECT gid, source, target, the_geom FROM ways');
refused(
	"$enable, drive_network = 'public.roads'",
	'42703', 'table public\.roads \(settings.drive_network\) is not a road network: it has no column length_m',
	'source and target \(vertex ids\), length_m \(metres\)', 'a table without lengths');
is($node->safe_psql('app', q{SELECT aimroute.drive_network_check('public.ways')}),
	'ways', 'drive_network_check accepts the imported edge table');
$node->safe_psql('app', "$enable, drive_network = 'public.ways'");
is($node->safe_psql('app', 'SELECT drive_distance_enabled, drive_network FROM aimroute.settings'),
	't|public.ways', 'Drive Distance is on, on public.ways');
# Other settings change without the network being checked again; naming
# another network checks it.
$node->safe_psql('app', 'UPDATE aimroute.settings SET radius_miles = 100');
refused(
	q{UPDATE aimroute.settings SET drive_network = 'public.roads'},
	'42703', 'it has no column length_m', 'length_m \(metres\)', 'another network');
# A dump restores with Drive Distance on: the settings row is checked
# again on its way in, and finds pgRouting and the network restored.
my $dump = PostgreSQL::Test::Utils::tempdir . '/app.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('app'), '-f', $dump ], 'pg_dump of the database');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ],
	'pg_restore into a new database');
is( $node->safe_psql(
		'restored', 'SELECT s.drive_distance_enabled, s.drive_network, (SELECT count(*) FROM public.ways)
		               FROM aimroute.settings s'),
	't|public.ways|50',
	'the restored database has Drive Distance on, on its restored network');
# Routing by road (SPEC section 2, Drive Distance).  A fixture inside West
# Oakland: postal codes whose centre points are vertices of the network or
# near it, and dealers there, of brand DRV; the default dealer has no
# location.  Road distances are checked against pgr_dijkstraCost itself.
$node->safe_psql(
	'app', q{
	INSERT INTO aimroute.brands VALUES ('DRV', 'Drive test brand');
	INSERT INTO aimroute.dealers (dealer_number, name, country) VALUES ('DEF', 'Default dealer', 'US');
	UPDATE aimroute.settings SET default_dealer_number = 'DEF', radius_enabled = true,
	       radius_miles = 50, radius_countries = '{US}';
	CREATE FUNCTION public.vertex_point(bigint) RETURNS geography
	    LANGUAGE sql STABLE AS 'SELECT the_geom::geography FROM public.ways_vertices_pgr WHERE id = $1';
	CREATE FUNCTION public.add_postal(code text, at geography) RETURNS void LANGUAGE sql AS $$
	    DELETE FROM aimroute.postal_codes WHERE country = 'US' AND postal_code = code;
	    INSERT INTO aimroute.postal_codes (country, postal_code, place_name, state_code, centroid)
	    VALUES ('US', code, 'West Oakland', 'CA', at) $$;
	CREATE FUNCTION public.add_dealer(number text, at geography) RETURNS void LANGUAGE sql AS $$
	    INSERT INTO aimroute.dealers (dealer_number, name, country, location) VALUES (number, 'Dealer ' || number, 'US', at);
	    INSERT INTO aimroute.dealer_brands VALUES (number, 'DRV') $$;
	CREATE FUNCTION public.lead(code text) RETURNS TABLE (lead_id bigint, dealer_number text, match_type text, miles float8)
	    LANGUAGE sql AS $$
	    INSERT INTO aimroute.leads (brand_code, country, postal_code, email)
	    VALUES ('DRV', 'US', code, 'drive@example.com')
	    RETURNING lead_id, dealer_number, match_type::text, distance_miles $$;
	CREATE FUNCTION public.lead_prp(code text) RETURNS TABLE (lead_id bigint, dealer_number text, match_type text, miles float8)
	    LANGUAGE sql AS $$
	    INSERT INTO aimroute.leads (brand_code, country, postal_code, email)
	    VALUES ('PRP', 'US', code, 'property@example.com')
	    RETURNING lead_id, dealer_number, match_type::text, distance_miles $$;
	CREATE FUNCTION public.explained(id bigint) RETURNS text LANGUAGE sql AS $$
	    SELECT string_agg(format('%s|%s|%s|%s', e.rule, e.dealer_number, round(e.distance_miles::numeric, 3), e.message), E'\n' ORDER BY e.step)
	      FROM aimroute.explain_lead(id) e $$;
	CREATE FUNCTION public.road_m(a bigint, b bigint) RETURNS float8 LANGUAGE sql AS $$
	    SELECT CASE WHEN a = b THEN 0 ELSE (SELECT agg_cost FROM pgr_dijkstraCost(
	        'SELECT gid AS id, source, target, length_m AS cost,
	                CASE WHEN reverse_cost < 0 THEN -1 ELSE length_m END AS reverse_cost FROM public.ways', a, b)) END $$;
});

# The seeds' case: dealer A at the vertex closer as the crow flies, dealer
# B at the one closer by road, the lead's postal code at the third.
$node->safe_psql(
	'app', qq{
	SELECT public.add_postal('94601', public.vertex_point($lead));
	SELECT public.add_dealer('DA', public.vertex_point($crow_pick));
	SELECT public.add_dealer('DB', public.vertex_point($road_pick));
});
my ($crow_a, $road_a, $crow_b, $road_b) = split /\|/, $node->safe_psql(
	'app', qq{
	SELECT ST_Distance(vertex_point($lead), vertex_point($crow_pick)) / 1609.344, road_m($lead, $crow_pick) / 1609.344,
	       ST_Distance(vertex_point($lead), vertex_point($road_pick)) / 1609.344, road_m($lead, $road_pick) / 1609.344});
my ($id, $dealer, $match, $miles) = split /\|/, $node->safe_psql('app', q{SELECT * FROM public.lead('94601')});
is("$dealer|$match", 'DB|Drive Distance',
	'the seeds\' case: the dealer closer by road gets the lead, as Drive Distance');
cmp_ok(abs($miles - $road_b), '<', 1e-9, "distance_miles is the road miles ($road_b) of pgr_dijkstraCost");
my $why = $node->safe_psql('app', "SELECT explained($id)");
note "the explanation of the seeds' case:\n$why";
like($why, qr/^Drive Distance\|\|\|by road on public\.ways: the lead's postal centre point is 0 m from its vertex $lead$/m,
	'the explanation names the network and the lead\'s vertex');
like($why, qr/^Drive Distance\|DA\|[0-9.]+\|candidate at [0-9.]+ miles by road, [0-9.]+ miles as the crow flies$/m,
	'the explanation gives road and straight-line miles of dealer A');
like($why, qr/^Drive Distance\|DB\|[0-9.]+\|candidate at [0-9.]+ miles by road, [0-9.]+ miles as the crow flies$/m,
	'and of dealer B');
like($why, qr/^Drive Distance\|DB\|[0-9.]+\|chosen: the closest by road .*; DA is closer as the crow flies \([0-9.]+ miles\) but [0-9.]+ miles by road$/m,
	'the explanation says why B won: A is closer as the crow flies but not by road');
cmp_ok($crow_a, '<', $crow_b, 'A is closer than B as the crow flies');
cmp_ok($road_a, '>', $road_b, 'and farther by road');

# pgRouting runs the edges query under a search_path with its own schema
# (public here) before pg_temp: an operator planted there, matching the
# cost columns' types better than pg_catalog's, must not be called.
$node->safe_psql(
	'app', q{
	CREATE FUNCTION public.planted_lt(double precision, integer) RETURNS boolean
	    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the planted operator ran'; END $$;
	CREATE OPERATOR public.< (LEFTARG = double precision, RIGHTARG = integer, FUNCTION = public.planted_lt);
});
my ($planted_id, $planted_dealer, $planted_match) = split /\|/,
  $node->safe_psql('app', q{SELECT * FROM public.lead('94601')});
is("$planted_dealer|$planted_match", 'DB|Drive Distance',
	'with an operator planted in pgRouting\'s schema, the lead is still routed by road');
unlike($node->safe_psql('app', "SELECT explained($planted_id)"), qr/planted/,
	'and the planted operator never ran');
$node->safe_psql('app',
	'DROP OPERATOR public.< (double precision, integer); DROP FUNCTION public.planted_lt(double precision, integer)');

# Other ways to route agree: the locator ranks by road, route() and
# simulate_routing follow.
is( $node->safe_psql(
		'app', q{SELECT string_agg(dealer_number || ' ' || match_type, ', ' ORDER BY rank)
		           FROM aimroute.locate_dealers('US', '94601', 'DRV')}),
	'DB Drive Distance, DA Drive Distance, DEF Default',
	'locate_dealers ranks by road: B, then A, then the default dealer');
is( $node->safe_psql(
		'app', qq{SELECT simulated_dealer_number || ' ' || simulated_match_type
		           FROM aimroute.simulate_routing('-infinity', 'infinity') WHERE lead_id = $id}),
	'DB Drive Distance', 'simulate_routing routes the lead by road too');

# Re-routing follows the road order: the lead, overdue, goes to A, the
# next closest by road, at A's road miles.
$node->safe_psql('app',
	"UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() - interval '1 minute' WHERE lead_id = $id");
is($node->safe_psql('app', 'SELECT aimroute.reroute_overdue()'), '1', 'the overdue lead is re-routed');
my ($rerouted, $rerouted_miles) = split /\|/,
  $node->safe_psql('app', "SELECT dealer_number || ' ' || match_type, distance_miles FROM aimroute.leads WHERE lead_id = $id");
is($rerouted, 'DA Re-Route', 're-routed to A, the next closest by road');
cmp_ok(abs($rerouted_miles - $road_a), '<', 1e-9, "at A's road miles ($road_a)");

# Ties by road follow settings.tie_break: two dealers at B's vertex take
# turns under round_robin.
$node->safe_psql(
	'app', qq{
	INSERT INTO aimroute.brands VALUES ('TIE', 'Tie test brand');
	INSERT INTO aimroute.dealers (dealer_number, name, country, location) VALUES
	    ('T1', 'Tie 1', 'US', public.vertex_point($road_pick)), ('T2', 'Tie 2', 'US', public.vertex_point($road_pick)),
	    ('T3', 'Tie 3', 'US', public.vertex_point($crow_pick));
	INSERT INTO aimroute.dealer_brands VALUES ('T1', 'TIE'), ('T2', 'TIE'), ('T3', 'TIE');
	UPDATE aimroute.settings SET tie_break = 'round_robin';
});
my $turns = $node->safe_psql(
	'app', q{
	INSERT INTO aimroute.leads (brand_code, country, postal_code, email)
	VALUES ('TIE', 'US', '94601', 'tie@example.com') RETURNING dealer_number || ' ' || match_type;
	INSERT INTO aimroute.leads (brand_code, country, postal_code, email)
	VALUES ('TIE', 'US', '94601', 'tie@example.com') RETURNING lead_id AS second, dealer_number || ' ' || match_type AS d2 \gset
	SELECT :'d2', (SELECT e.message FROM aimroute.explain_lead(:second) e WHERE e.message LIKE 'round robin:%');
});
like($turns, qr/^T1 Drive Distance\nT2 Drive Distance\|round robin: tied with T1 at 0\.5 miles; /,
	'round robin: T1 and T2, tied by road, take turns, and the explanation says so');
$node->safe_psql('app', q{UPDATE aimroute.settings SET tie_break = 'dealer_number'});

# The cache: a second lead from the same postal code reads the road
# distances kept by the session, with no new pgr_dijkstraCost run
# (pg_stat_xact_user_functions counts its calls in the transaction).
my $cache = $node->safe_psql(
	'app', q{
	SET track_functions = 'all';
	BEGIN;
	SELECT lead_id AS first FROM public.lead('94601') \gset
	SELECT coalesce(sum(calls), 0) AS runs1 FROM pg_stat_xact_user_functions WHERE funcname = 'pgr_dijkstracost' \gset
	SELECT lead_id AS second FROM public.lead('94601') \gset
	SELECT coalesce(sum(calls), 0) AS runs2 FROM pg_stat_xact_user_functions WHERE funcname = 'pgr_dijkstracost' \gset
	COMMIT;
	SELECT :runs1, :runs2,
	       (SELECT message FROM aimroute.explain_lead(:first) WHERE message LIKE 'road distances:%'),
	       (SELECT message FROM aimroute.explain_lead(:second) WHERE message LIKE 'road distances:%');
});
my ($runs1, $runs2, $msg1, $msg2) = split /\|/, $cache;
# Twice: around the lead, which leaves A farther than 1,000 m by road
# (DRIVE_MIN_REACH_M), then on the whole network, since A is closer as the
# crow flies than B by road: were A cut off from the network, it would win
# as the crow flies.
is($runs1, '2', 'the first lead of a session from 94601 runs pgr_dijkstraCost twice');
is($msg1, 'road distances: 2 measured by 2 pgr_dijkstraCost runs, 0 from the cache',
	'and its explanation says so');
is($runs2, '2', 'the second lead from 94601 runs it no more');
is($msg2, 'road distances: 0 measured by 0 pgr_dijkstraCost runs, 2 from the cache',
	'its road distances come from the cache, as its explanation says');

# A change of the network gives it a new version: the cache is not used.
# Every edge into B's vertex made 5 km longer, in a transaction rolled
# back: the lead from 94601 is measured on the changed network.
$cache = $node->safe_psql(
	'app', qq{
	SELECT version AS v1 FROM aimroute.drive_network_version \\gset
	SELECT lead_id AS before FROM public.lead('94601') \\gset
	BEGIN;
	UPDATE public.ways SET length_m = length_m + 5000 WHERE source = $road_pick OR target = $road_pick;
	SELECT version AS v2 FROM aimroute.drive_network_version \\gset
	SELECT lead_id AS changed, dealer_number AS d2, miles AS m2 FROM public.lead('94601') \\gset
	SELECT message AS msg_changed FROM aimroute.explain_lead(:changed) WHERE message LIKE 'road distances:%' \\gset
	SELECT least(road_m($lead, $crow_pick), road_m($lead, $road_pick)) / 1609.344 AS expected,
	       CASE WHEN road_m($lead, $crow_pick) < road_m($lead, $road_pick) THEN 'DA' ELSE 'DB' END AS expected_dealer \\gset
	ROLLBACK;
	SELECT lead_id AS reopened FROM public.lead('94601') \\gset
	SELECT :v1 < :v2, :'d2' = :'expected_dealer', abs(:m2 - :expected) < 1e-9, :m2 > $road_b + 1,
	       (SELECT message FROM aimroute.explain_lead(:before) WHERE message LIKE 'road distances:%'),
	       :'msg_changed',
	       (SELECT message FROM aimroute.explain_lead(:reopened) WHERE message LIKE 'road distances:%'),
	       (SELECT miles FROM aimroute.leads l CROSS JOIN LATERAL (SELECT l.distance_miles AS miles) x WHERE l.lead_id = :reopened);
});
my ($moved, $right_dealer, $right_miles, $longer, $msg_before, $msg_changed, $msg_reopened, $miles_reopened) =
  split /\|/, $cache;
is($moved, 't',
	'an UPDATE of the network gives it a new version (its trigger, put there when Drive Distance was switched on)');
is($msg_before, 'road distances: 2 measured by 2 pgr_dijkstraCost runs, 0 from the cache',
	'a new session measures once');
is($msg_changed, 'road distances: 2 measured by 2 pgr_dijkstraCost runs, 0 from the cache',
	'after the change, the same postal code is measured again');
is("$right_dealer|$right_miles|$longer", 't|t|t', 'on the changed network: its road distance, longer');
is($msg_reopened, 'road distances: 2 measured by 2 pgr_dijkstraCost runs, 0 from the cache',
	'after the rollback, measured again (the version is the old one, not the one kept)');
cmp_ok(abs($miles_reopened - $road_b), '<', 1e-9, 'and the road distance is B\'s again');

# One-way streets count: a lead at the end of a one-way edge, the only
# dealer at its start, is measured around the block, not back along it.
my ($oneway, $from_v, $to_v, $len) = split /\|/, $node->safe_psql(
	'app', q{
	SELECT w.gid, w.target, w.source, w.length_m FROM public.ways w
	 WHERE w.reverse_cost < 0 AND road_m(w.target, w.source) > w.length_m + 1
	 ORDER BY w.gid LIMIT 1});
$node->safe_psql(
	'app', qq{
	SELECT public.add_postal('94602', public.vertex_point($from_v));
	UPDATE aimroute.dealers SET active_for_sales = false WHERE dealer_number IN ('DA', 'DB');
	SELECT public.add_dealer('DC', public.vertex_point($to_v));
});
($id, $dealer, $match, $miles) = split /\|/, $node->safe_psql('app', q{SELECT * FROM public.lead('94602')});
my $around = $node->safe_psql('app', "SELECT road_m($from_v, $to_v) / 1609.344");
is("$dealer|$match", 'DC|Drive Distance', "one-way edge $oneway: the lead goes to DC by road");
cmp_ok(abs($miles - $around), '<', 1e-9,
	"against the one-way street: the road around ($around miles), not the edge back (" . ($len / 1609.344) . ' miles)');
# Without reverse_cost (dropped in a transaction rolled back: no trigger
# fires), every edge is two-way: the session measures again, and the lead
# goes back along the edge.
my ($before_drop, $after_drop) = split /\n/, $node->safe_psql(
	'app', q{
	SELECT miles FROM public.lead('94602');
	BEGIN;
	ALTER TABLE public.ways DROP COLUMN reverse_cost;
	SELECT miles FROM public.lead('94602');
	ROLLBACK;
});
cmp_ok(abs($before_drop - $around), '<', 1e-9, 'the same session: around the block');
cmp_ok(abs($after_drop - $len / 1609.344), '<', 1e-9,
	'with reverse_cost dropped, back along the edge: the cache was not used for other columns');

# Off the network: a lead 2 km north of West Oakland is measured as the
# crow flies, and a dealer 2 km away is too.
$node->safe_psql(
	'app', qq{
	SELECT public.add_postal('94603', ST_Project(public.vertex_point($lead), 2000, 0)::geography);
	SELECT public.add_dealer('DF', ST_Project(public.vertex_point($lead), 2000, pi())::geography);
	UPDATE aimroute.dealers SET active_for_sales = true WHERE dealer_number IN ('DA', 'DB');
});
($id, $dealer, $match, $miles) = split /\|/, $node->safe_psql('app', q{SELECT * FROM public.lead('94603')});
is($match, 'Radius', 'a lead off the network is routed as the crow flies (match Radius)');
my $crow_best = $node->safe_psql(
	'app', q{
	SELECT d.dealer_number FROM aimroute.dealers d, aimroute.postal_codes p
	 WHERE p.postal_code = '94603' AND d.location IS NOT NULL AND d.active_for_sales
	 ORDER BY ST_Distance(d.location, p.centroid), d.dealer_number LIMIT 1});
is($dealer, $crow_best, 'to the dealer closest as the crow flies');
like(
	$node->safe_psql('app', "SELECT explained($id)"),
	qr/^Drive Distance\|\|\|no vertex of the road network within 250 m of the lead's postal centre point: candidates are measured as the crow flies$/m,
	'the explanation says the lead is off the network');
($id, $dealer, $match, $miles) = split /\|/, $node->safe_psql('app', q{SELECT * FROM public.lead('94601')});
like(
	$node->safe_psql('app', "SELECT explained($id)"),
	qr/^Drive Distance\|DF\|[0-9.]+\|no vertex of the road network within 250 m of dealer DF: measured as the crow flies$/m,
	'a dealer off the network is measured as the crow flies, and the explanation says so');
is("$dealer|$match", 'DB|Drive Distance', 'the lead from 94601 still goes to B by road');

# pgRouting failing does not lose the lead: with the network's length_m
# renamed (in a transaction rolled back), the lead is routed as the crow
# flies, and the explanation gives pgRouting's error.
my $failed = $node->safe_psql(
	'app', q{
	BEGIN;
	ALTER TABLE public.ways RENAME COLUMN length_m TO len;
	SELECT lead_id AS failing, dealer_number AS fd, match_type AS fm FROM public.lead('94601') \gset
	SELECT :'fd', :'fm', explained(:failing);
	ROLLBACK;
});
like($failed, qr/^DA\|Radius\|/, 'pgRouting failing: the lead goes to the dealer closest as the crow flies');
like($failed, qr/the road network could not be read: .*length_m.*: those candidates are measured as the crow flies/,
	'and the explanation gives the error');

# The property: over random leads and dealers placed in the network (at
# most 150 m from a vertex, in any direction), the chosen dealer and its
# road miles are those of a brute force: pgr_dijkstraCost from the lead's
# nearest vertex to every dealer's, plus both snaps, the closest winning,
# the lower dealer number among equals, a dealer with no path measured as
# the crow flies.  Three rounds of 8 dealers (brand PRP) and 15 postal
# codes, each lead from a fresh session (cold cache) and again from one
# session (warm).
$node->safe_psql(
	'app', q{
	INSERT INTO aimroute.brands VALUES ('PRP', 'Property test brand');
	CREATE FUNCTION public.random_spot() RETURNS geography LANGUAGE sql VOLATILE AS $$
	    SELECT ST_Project(public.vertex_point(a.ids[1 + floor(random() * array_length(a.ids, 1))::int]),
	                      random() * 150, random() * 2 * pi())::geography
	      FROM (SELECT array_agg(x.id ORDER BY x.id) AS ids
	              FROM (SELECT source AS id FROM public.ways UNION SELECT target FROM public.ways) x) a $$;
	CREATE FUNCTION public.nearest_vertex(g geography, OUT id bigint, OUT m float8) LANGUAGE sql AS $$
	    SELECT v.id, ST_Distance(v.the_geom::geography, g) FROM public.ways_vertices_pgr v
	     WHERE v.id IN (SELECT source FROM public.ways UNION SELECT target FROM public.ways)
	     ORDER BY 2, 1 LIMIT 1 $$;
	CREATE FUNCTION public.brute_force(code text, OUT dealer_number text, OUT miles float8) LANGUAGE sql AS $$
	    SELECT d.dealer_number,
	           coalesce(ls.m + public.road_m(ls.id, ds.id) + ds.m, ST_Distance(d.location, p.centroid)) / 1609.344
	      FROM aimroute.postal_codes p, aimroute.dealers d
	      JOIN aimroute.dealer_brands b ON b.dealer_number = d.dealer_number AND b.brand_code = 'PRP'
	      CROSS JOIN LATERAL public.nearest_vertex(d.location) ds
	      CROSS JOIN LATERAL public.nearest_vertex((SELECT p2.centroid FROM aimroute.postal_codes p2
	                                                 WHERE p2.country = 'US' AND p2.postal_code = code)) ls
	     WHERE p.country = 'US' AND p.postal_code = code AND d.active_for_sales
	     ORDER BY 2, 1 LIMIT 1 $$;
	CREATE TABLE public.property_leads (round int, postal_code text, session text, lead_id bigint,
	                                     dealer_number text, match_type text, miles float8);
});
# property_round(round, dealers, codes): dealers and postal codes at
# random spots of the network, a lead from each code from a fresh session,
# then twice from one session; returns the leads that differ from the brute
# force.
sub property_round
{
	my ($round, $ndealers, $ncodes) = @_;
	$node->safe_psql(
		'app', qq{
		SELECT setseed(0.$round);
		UPDATE aimroute.dealers SET active_for_sales = false WHERE dealer_number LIKE 'PRP%';
		INSERT INTO aimroute.dealers (dealer_number, name, country, location)
		SELECT format('PRP%s-%s', $round, i), 'Property dealer', 'US', public.random_spot() FROM generate_series(1, $ndealers) i;
		INSERT INTO aimroute.dealer_brands SELECT format('PRP%s-%s', $round, i), 'PRP' FROM generate_series(1, $ndealers) i;
		SELECT public.add_postal(format('97%s%s', $round, lpad(i::text, 2, '0')), public.random_spot()) FROM generate_series(1, $ncodes) i;
	});
	my @codes = map { sprintf('97%d%02d', $round, $_) } 1 .. $ncodes;
	for my $code (@codes)
	{
		$node->safe_psql(
			'app', qq{
			INSERT INTO public.property_leads SELECT $round, '$code', 'cold', * FROM public.lead_prp('$code')});
	}
	$node->safe_psql('app',
		join('', map { qq{INSERT INTO public.property_leads SELECT $round, '$_', 'one session', * FROM public.lead_prp('$_');\n} } @codes)
		  . join('', map { qq{INSERT INTO public.property_leads SELECT $round, '$_', 'one session, again', * FROM public.lead_prp('$_');\n} } @codes));
	# The brute force reads the dealers of this round, the active ones.
	return $node->safe_psql(
		'app', qq{
	SELECT string_agg(format('%s (%s): routed to %s at %s miles, brute force %s at %s', t.postal_code, t.session,
	                         t.dealer_number, t.miles, b.dealer_number, b.miles), E'\\n')
	  FROM public.property_leads t CROSS JOIN LATERAL public.brute_force(t.postal_code) b
	 WHERE t.round = $round AND (t.dealer_number IS DISTINCT FROM b.dealer_number OR abs(t.miles - b.miles) > 1e-9)});
}
my $mismatches = join('', map { property_round($_, 8, 15) } 1 .. 3);
is($mismatches, '', 'every lead went to the dealer closest by road, at its road miles, as the brute force says');
my ($n, $road, $differs) = split /\|/, $node->safe_psql(
	'app', q{
	SELECT count(*), count(*) FILTER (WHERE t.match_type = 'Drive Distance'),
	       count(DISTINCT t.postal_code) FILTER (WHERE t.dealer_number <> (
	           SELECT d.dealer_number FROM aimroute.dealers d JOIN aimroute.dealer_brands b USING (dealer_number)
	             JOIN aimroute.postal_codes p ON p.country = 'US' AND p.postal_code = t.postal_code
	            WHERE b.brand_code = 'PRP' AND d.dealer_number LIKE format('PRP%s-%%', t.round)
	            ORDER BY ST_Distance(d.location, p.centroid), d.dealer_number LIMIT 1))
	  FROM public.property_leads t WHERE t.round <= 3});
is($n, 3 * 15 * 3, '135 leads: 45 postal codes, each from a fresh session, then twice from one session');
cmp_ok($road, '>', $n / 2, "$road of them matched Drive Distance");
cmp_ok($differs, '>', 0, "for $differs of the 45 postal codes the dealer closest by road is not the closest as the crow flies");
is( $node->safe_psql(
		'app', q{
	SELECT count(*) FROM aimroute.leads l JOIN public.property_leads t ON t.lead_id = l.lead_id AND t.session = 'one session, again'
	 CROSS JOIN LATERAL aimroute.explain_lead(l.lead_id) e
	 WHERE t.round <= 3 AND e.message LIKE 'road distances: 0 measured by 0 pgr_dijkstraCost runs%'}),
	'45', 'the second lead of each postal code in one session read every road distance from the cache');

# The same on a synthetic network larger than what a first Dijkstra run
# reads (the edges within DRIVE_MIN_REACH_M, 1,000 m, or twice the
# farthest straight line, of the lead): a grid of streets 100 m apart, 30 x
# 30 crossings 7 km east of West Oakland, every third east-west street one
# way (eastbound), a river between columns 14 and 15 crossed only by the
# first and last rows, and an island (rows and columns 26 to 29) with no
# road to the rest.  It replaces West Oakland under the name public.ways,
# as a new import with osm2pgrouting --clean would: a new table, without
# the change trigger until drive_network_watch() puts it there.
$node->safe_psql(
	'app', q{
	ALTER TABLE public.ways RENAME TO ways_west_oakland;
	ALTER TABLE public.ways_vertices_pgr RENAME TO ways_vertices_west_oakland;
	CREATE TABLE public.ways_vertices_pgr AS
	SELECT i * 100 + j + 1 AS id, i, j,
	       ST_SetSRID(ST_MakePoint(-122.20 + j * 100 / (111320 * cos(radians(37.80))), 37.80 + i * 100 / 110990.0), 4326) AS the_geom
	  FROM generate_series(0, 29) i, generate_series(0, 29) j;
	CREATE TABLE public.ways AS
	SELECT row_number() OVER () AS gid, a.id AS source, b.id AS target,
	       ST_MakeLine(a.the_geom, b.the_geom) AS the_geom,
	       ST_Length(ST_MakeLine(a.the_geom, b.the_geom)::geography) AS length_m,
	       a.i = b.i AND a.i % 3 = 0 AS one_way
	  FROM public.ways_vertices_pgr a JOIN public.ways_vertices_pgr b
	    ON (b.i = a.i AND b.j = a.j + 1) OR (b.j = a.j AND b.i = a.i + 1)
	 WHERE NOT (b.i = a.i AND a.j = 14 AND a.i NOT IN (0, 29))
	   AND NOT (a.i = 25 AND b.i = 26 AND a.j >= 26) AND NOT (a.j = 25 AND b.j = 26 AND a.i >= 26);
	ALTER TABLE public.ways ADD cost float8, ADD reverse_cost float8;
	UPDATE public.ways SET cost = length_m, reverse_cost = CASE WHEN one_way THEN -1 ELSE length_m END;
	CREATE INDEX ON public.ways USING gist (the_geom);
	ANALYZE public.ways;
});
($id, $dealer, $match, $miles) = split /\|/, $node->safe_psql(
	'app', q{
	UPDATE aimroute.dealers SET active_for_sales = false WHERE dealer_number LIKE 'PRP%';
	SELECT public.add_dealer('DG', public.vertex_point(1));
	SELECT public.add_postal('94604', public.vertex_point(102));
	SELECT * FROM public.lead('94604');
});
is("$dealer|$match", 'DG|Drive Distance', 'the new network is read under the same name');
like(
	$node->safe_psql('app', "SELECT explained($id)"),
	qr/^Drive Distance\|\|\|road distances: [0-9]+ measured by 1 pgr_dijkstraCost run, 0 from the cache \(kept for this statement only: the network table has no change trigger; run aimroute.drive_network_watch\(\)\)$/m,
	'without its change trigger, the explanation says road distances are kept for this statement only');
# An admin who may not put triggers on the table switches Drive Distance
# on: it is on, and a notice says who can put the trigger there.
my ($notice_out, $notice) = ('', '');
$node->psql(
	'app', q{
	CREATE ROLE drive_admin IN ROLE aimroute_admin;
	SET ROLE drive_admin;
	UPDATE aimroute.settings SET drive_distance_enabled = false;
	UPDATE aimroute.settings SET drive_distance_enabled = true;
	RESET ROLE;
	SELECT drive_distance_enabled FROM aimroute.settings;
}, stdout => \$notice_out, stderr => \$notice);
is($notice_out, 't', 'an admin who does not own the network table switches Drive Distance on');
like(
	$notice,
	qr/NOTICE:  road distances are kept for one statement only: public\.ways has no change trigger\nHINT:  The owner of the table can put it there: SELECT aimroute\.drive_network_watch\(\)/,
	'and a notice says the network has no change trigger, and who can put it there');
cmp_ok($node->safe_psql('app', 'SELECT aimroute.drive_network_watch()'),
	'>', 0, 'drive_network_watch puts the trigger on the new table');
$node->safe_psql('app', q{UPDATE aimroute.dealers SET active_for_sales = false WHERE dealer_number = 'DG'});
$mismatches = join('', map { property_round($_, 12, 20) } 4 .. 5);
is($mismatches, '', 'on the grid too, every lead went to the dealer the brute force says, at its road miles');
my ($grid_leads, $beyond, $reruns, $no_road, $grid_cached) = split /\|/, $node->safe_psql(
	'app', q{
	SELECT count(DISTINCT t.lead_id),
	       count(DISTINCT t.lead_id) FILTER (WHERE e.message LIKE '%more than % by road: not measured further'),
	       count(DISTINCT t.lead_id) FILTER (WHERE e.message ~ '^road distances: .* by [2-9] pgr_dijkstraCost runs'),
	       count(DISTINCT t.lead_id) FILTER (WHERE e.message LIKE 'no road from the lead''s vertex %'),
	       count(DISTINCT t.lead_id) FILTER (WHERE t.session = 'one session, again' AND e.message LIKE 'road distances: 0 measured by 0 %')
	  FROM public.property_leads t CROSS JOIN LATERAL aimroute.explain_lead(t.lead_id) e
	 WHERE t.round >= 4});
is($grid_leads, 2 * 20 * 3, '120 leads on the grid');
cmp_ok($beyond, '>', 0, "$beyond of them left a farther candidate unmeasured (farther by road than what the first run read)");
cmp_ok($reruns, '>', 0, "$reruns of them needed a run on the whole network (across the river)");
cmp_ok($no_road, '>', 0, "$no_road of them had a candidate with no road to it (the island)");
is($grid_cached, '40', 'the second lead of each postal code in one session read every road distance from the cache');
$node->safe_psql(
	'app', q{
	DROP TABLE public.ways, public.ways_vertices_pgr;
	ALTER TABLE public.ways_west_oakland RENAME TO ways;
	ALTER TABLE public.ways_vertices_west_oakland RENAME TO ways_vertices_pgr;
});

# Drive Distance off: Radius as before.
$node->safe_psql('app', 'UPDATE aimroute.settings SET drive_distance_enabled = false');
($id, $dealer, $match, $miles) = split /\|/, $node->safe_psql('app', q{SELECT * FROM public.lead('94601')});
is("$dealer|$match", 'DA|Radius', 'Drive Distance off: the dealer closest as the crow flies, by Radius');
cmp_ok(abs($miles - $crow_a), '<', 1e-6, 'at its straight-line miles');
unlike($node->safe_psql('app', "SELECT explained($id)"), qr/Drive Distance|by road/,
	'and the explanation does not speak of roads');
$node->safe_psql('app', 'UPDATE aimroute.settings SET drive_distance_enabled = true');

$node->safe_psql('app', 'UPDATE aimroute.settings SET drive_distance_enabled = false, drive_network = NULL');
is($node->safe_psql('app', 'SELECT drive_distance_enabled, drive_network IS NULL FROM aimroute.settings'),
	'f|t', 'and it is switched off');

$node->stop;
done_testing();
