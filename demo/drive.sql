--
-- demo/drive.sql: Drive Distance (docs/drive-distance.md) on a real road
-- network: OpenStreetMap's West Oakland (© OpenStreetMap contributors,
-- ODbL), which scripts/demo.sh imports with osm2pgrouting into
-- public.ways.  A few leads routed by road next to what crow flies would
-- pick, and the explanation of one.
--
--     psql -d aimroute -f demo/drive.sql
--
-- Everything runs in one transaction that is rolled back: the demo's
-- dealers, postal codes and settings stay as they were.  The demo places
-- its own dealers (brand DDM) and postal codes (US 00001 to 00005, which
-- no real ZIP code uses) at vertices of the network: among them the
-- seeds' case, a dealer closer as the crow flies than another but farther
-- by road.
--
\set QUIET 1
\set ON_ERROR_STOP 1
\pset footer off
BEGIN;
SET LOCAL client_min_messages = warning;

-- The seeds' case on this network: from vertex l, vertex a is closer as
-- the crow flies than vertex b, and farther by road.
CREATE TEMP TABLE demo_case ON COMMIT DROP AS
WITH d AS (
    SELECT c.start_vid AS l, c.end_vid AS v, c.agg_cost AS road,
           ST_Distance(a.the_geom::geography, b.the_geom::geography) AS crow
      FROM pgr_dijkstraCost(
               'SELECT gid AS id, source, target, length_m AS cost,
                       CASE WHEN reverse_cost < 0 THEN -1 ELSE length_m END AS reverse_cost FROM public.ways',
               ARRAY(SELECT id FROM public.ways_vertices_pgr), ARRAY(SELECT id FROM public.ways_vertices_pgr)) c
      JOIN public.ways_vertices_pgr a ON a.id = c.start_vid
      JOIN public.ways_vertices_pgr b ON b.id = c.end_vid)
SELECT x.l, x.v AS a, y.v AS b
  FROM d x JOIN d y ON y.l = x.l
 WHERE x.crow < y.crow AND x.road > y.road
 ORDER BY x.road - y.road DESC, x.l, x.v, y.v
 LIMIT 1;

INSERT INTO aimroute.brands VALUES ('DDM', 'Drive Distance demo');
-- Dealers A and B of the seeds' case, and three more at other vertices.
INSERT INTO aimroute.dealers (dealer_number, name, country, location)
SELECT n, name, 'US', v.the_geom::geography
  FROM (SELECT 'DDM-A', 'Closer as the crow flies', (SELECT a FROM demo_case)
        UNION ALL SELECT 'DDM-B', 'Closer by road', (SELECT b FROM demo_case)
        UNION ALL SELECT format('DDM-%s', k), format('West Oakland dealer %s', k),
                         (SELECT w.id FROM public.ways_vertices_pgr w ORDER BY w.id OFFSET 7 * k LIMIT 1)
            FROM generate_series(1, 3) k) AS t(n, name, vertex)
  JOIN public.ways_vertices_pgr v ON v.id = t.vertex;
INSERT INTO aimroute.dealer_brands SELECT d.dealer_number, 'DDM' FROM aimroute.dealers d WHERE d.dealer_number LIKE 'DDM-%';
-- Postal code 00001 at the seeds' case's lead, four more at other vertices.
INSERT INTO aimroute.postal_codes (country, postal_code, place_name, state_code, centroid)
SELECT 'US', format('0000%s', k), 'West Oakland (demo)', 'CA', v.the_geom::geography
  FROM generate_series(1, 5) k
  JOIN public.ways_vertices_pgr v
    ON v.id = CASE WHEN k = 1 THEN (SELECT l FROM demo_case)
                   ELSE (SELECT w.id FROM public.ways_vertices_pgr w ORDER BY w.id OFFSET 5 * k + 2 LIMIT 1) END;

UPDATE aimroute.settings
   SET radius_enabled = true, radius_countries = '{US,CA}',
       drive_network = 'public.ways', drive_distance_enabled = true;
CREATE TEMP TABLE demo_by_road ON COMMIT DROP AS
SELECT p.postal_code, r.dealer_number, r.match_type, r.distance_miles
  FROM aimroute.postal_codes p CROSS JOIN LATERAL aimroute.route('US', p.postal_code, 'DDM') r
 WHERE p.country = 'US' AND p.postal_code LIKE '0000_';
UPDATE aimroute.settings SET drive_distance_enabled = false;
CREATE TEMP TABLE demo_crow ON COMMIT DROP AS
SELECT p.postal_code, r.dealer_number, r.match_type, r.distance_miles
  FROM aimroute.postal_codes p CROSS JOIN LATERAL aimroute.route('US', p.postal_code, 'DDM') r
 WHERE p.country = 'US' AND p.postal_code LIKE '0000_';

\echo 'Leads from five West Oakland postal codes, by road and as the crow flies (miles):'
SELECT r.postal_code, r.dealer_number AS by_road, round(r.distance_miles::numeric, 2) AS road_miles,
       c.dealer_number AS crow_flies, round(c.distance_miles::numeric, 2) AS crow_miles,
       CASE WHEN r.dealer_number <> c.dealer_number THEN 'road picks another dealer' ELSE '' END AS note
  FROM demo_by_road r JOIN demo_crow c USING (postal_code)
 ORDER BY r.postal_code;

\echo
\echo 'The explanation of a lead from 00001 routed by road (aimroute.explain_lead):'
UPDATE aimroute.settings SET drive_distance_enabled = true;
INSERT INTO aimroute.leads (brand_code, country, postal_code, email, send_to_dealer)
VALUES ('DDM', 'US', '00001', 'drive-demo@example.com', false)
RETURNING lead_id AS drive_lead \gset
SELECT e.step, e.rule, e.dealer_number, round(e.distance_miles::numeric, 2) AS miles, e.message
  FROM aimroute.explain_lead(:drive_lead) e
 WHERE e.rule IN ('Drive Distance', 'Radius')
 ORDER BY e.step;
ROLLBACK;
