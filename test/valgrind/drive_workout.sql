-- test/valgrind/drive_workout.sql: Drive Distance's C code (src/drive.c,
-- rule 5 in src/routing.c) on varied inputs, for scripts/valgrind.sh.
--
-- t/025_drive_distance.pl checks the answers on real OpenStreetMap data;
-- this runs the same paths cheaply under memcheck, on a synthetic grid of
-- streets (20 x 20 crossings 100 m apart, every third east-west street one
-- way, a river crossed by two rows, a cut-off corner): leads by the
-- routing trigger, route() with excluded dealers, locate_dealers,
-- simulate_routing, explain_lead; the cache (a second lead, a network
-- change, the table renamed away and back), a failing network (a column
-- renamed), a lead and a dealer off the network, a dealer without a
-- location, round robin ties.  It needs pgRouting on the server.
-- Everything is rolled back.
--
--     pg_prove -d DB test/valgrind/drive_workout.sql
BEGIN;
SELECT plan(9);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgrouting;

CREATE TEMP TABLE vg_crossing ON COMMIT DROP AS
SELECT i * 20 + j + 1 AS id, i, j,
       ST_SetSRID(ST_MakePoint(-100.0 + j * 100 / (111320 * cos(radians(40.0))), 40.0 + i * 100 / 110990.0), 4326) AS pt
  FROM generate_series(0, 19) i, generate_series(0, 19) j;
CREATE TABLE public.vg_ways AS
SELECT a.id AS source, b.id AS target, ST_MakeLine(a.pt, b.pt) AS the_geom,
       ST_Length(ST_MakeLine(a.pt, b.pt)::geography) AS length_m,
       ST_Length(ST_MakeLine(a.pt, b.pt)::geography) AS cost,
       CASE WHEN a.i = b.i AND a.i % 3 = 0 THEN -1 ELSE ST_Length(ST_MakeLine(a.pt, b.pt)::geography) END AS reverse_cost
  FROM vg_crossing a JOIN vg_crossing b ON (b.i = a.i AND b.j = a.j + 1) OR (b.j = a.j AND b.i = a.i + 1)
 WHERE NOT (a.i = b.i AND a.j = 9 AND a.i NOT IN (0, 19))
   AND NOT (a.i = 16 AND b.i = 17 AND a.j >= 17) AND NOT (a.j = 16 AND b.j = 17 AND a.i >= 17);
CREATE INDEX ON public.vg_ways USING gist (the_geom);

INSERT INTO brands VALUES ('VGD', 'Drive workout');
-- 30 dealers at crossings (md5-picked), one off the grid, one without a
-- location, two sharing a crossing (a tie).
INSERT INTO dealers (dealer_number, name, country, location)
SELECT format('VGD%s', k), 'Drive workout', 'US', c.pt::geography
  FROM generate_series(1, 30) k
  JOIN vg_crossing c ON c.id = 1 + (('x' || substr(md5('vgd' || k), 1, 7))::bit(28)::integer) % 400;
INSERT INTO dealers (dealer_number, name, country, location) VALUES
    ('VGD-OFF', 'Off the grid', 'US', ST_SetSRID(ST_MakePoint(-100.05, 40.05), 4326)::geography),
    ('VGD-NONE', 'No location', 'US', NULL);
INSERT INTO dealers (dealer_number, name, country, location)
SELECT 'VGD-TWIN', 'Twin', 'US', location FROM dealers WHERE dealer_number = 'VGD1';
INSERT INTO dealer_brands SELECT dealer_number, 'VGD' FROM dealers WHERE dealer_number LIKE 'VGD%';
-- 40 postal codes at crossings, shifted up to 80 m, and one off the grid.
DELETE FROM postal_codes WHERE country = 'US' AND postal_code BETWEEN '00100' AND '00199';
INSERT INTO postal_codes (country, postal_code, place_name, state_code, centroid)
SELECT 'US', lpad((100 + k)::text, 5, '0'), 'Drive workout', 'NE',
       ST_Project(c.pt::geography, (('x' || substr(md5('vgp' || k), 1, 7))::bit(28)::integer) % 80, k)
  FROM generate_series(0, 39) k
  JOIN vg_crossing c ON c.id = 1 + (('x' || substr(md5('vgc' || k), 1, 7))::bit(28)::integer) % 400;
INSERT INTO postal_codes (country, postal_code, place_name, state_code, centroid)
VALUES ('US', '00199', 'Off the grid', 'NE', ST_SetSRID(ST_MakePoint(-100.05, 39.95), 4326)::geography);
UPDATE settings SET default_dealer_number = 'VGD-NONE', radius_enabled = true, radius_miles = 50,
       radius_countries = '{US}', drive_network = 'public.vg_ways', drive_distance_enabled = true;

-- Leads by the trigger, twice from each postal code (the second from the cache).
CREATE TEMP TABLE vg_leads ON COMMIT DROP AS SELECT * FROM leads WHERE false;
WITH l AS (INSERT INTO leads (brand_code, country, postal_code, email, send_to_dealer)
           SELECT 'VGD', 'US', p.postal_code, 'vg@example.com', false
             FROM postal_codes p, generate_series(1, 2) n
            WHERE p.country = 'US' AND p.postal_code BETWEEN '00100' AND '00199'
            ORDER BY n, p.postal_code
           RETURNING *)
INSERT INTO vg_leads SELECT * FROM l;
SELECT is((SELECT count(*) FROM vg_leads WHERE dealer_number IS NOT NULL AND match_type IS NOT NULL),
          82::bigint, 'every lead routed');
SELECT cmp_ok((SELECT count(*) FROM vg_leads WHERE match_type = 'Drive Distance'), '>', 40::bigint,
              'most by road');
SELECT is((SELECT match_type::text FROM vg_leads WHERE postal_code = '00199' LIMIT 1), 'Radius',
          'the lead off the grid as the crow flies');

-- The locator and route() with excluded dealers (re-routing's way).
SELECT cmp_ok((SELECT count(*) FROM postal_codes p CROSS JOIN LATERAL locate_dealers('US', p.postal_code, 'VGD', NULL, 8) d
                WHERE p.country = 'US' AND p.postal_code BETWEEN '00100' AND '00120'), '>=', 21::bigint,
              'locate_dealers ranks by road');
SELECT is((SELECT count(*) FROM postal_codes p
            CROSS JOIN LATERAL route('US', p.postal_code, 'VGD', excluded => ARRAY['VGD1', 'VGD2', 'VGD3']) r
            WHERE p.country = 'US' AND p.postal_code BETWEEN '00100' AND '00199' AND r.dealer_number IS NOT NULL),
          41::bigint, 'route() with excluded dealers');

-- Round robin among the twins; simulate_routing; explain_lead.
UPDATE settings SET tie_break = 'round_robin';
SELECT is((SELECT count(*) FROM simulate_routing('-infinity', 'infinity') s JOIN vg_leads v USING (lead_id)
            WHERE s.simulated_dealer_number IS NOT NULL), 82::bigint, 'simulate_routing');
SELECT cmp_ok((SELECT count(*) FROM vg_leads v CROSS JOIN LATERAL explain_lead(v.lead_id) e), '>', 82 * 5::bigint,
              'explain_lead');
UPDATE settings SET tie_break = 'dealer_number';

-- The network changes (a new version), goes away and comes back (another
-- table for a statement), and fails (a column renamed).
UPDATE public.vg_ways SET length_m = length_m * 1.5 WHERE source % 7 = 0;
SELECT aimroute.drive_network_watch();
UPDATE public.vg_ways SET length_m = length_m / 1.5 WHERE source % 7 = 0;
ALTER TABLE public.vg_ways RENAME TO vg_ways_away;
CREATE TABLE public.vg_ways AS SELECT * FROM public.vg_ways_away WHERE source < 200;
SELECT is((SELECT count(*) FROM postal_codes p CROSS JOIN LATERAL route('US', p.postal_code, 'VGD') r
            WHERE p.country = 'US' AND p.postal_code BETWEEN '00100' AND '00199' AND r.dealer_number IS NOT NULL),
          41::bigint, 'routed on another table of the same name');
DROP TABLE public.vg_ways;
ALTER TABLE public.vg_ways_away RENAME TO vg_ways;
ALTER TABLE public.vg_ways RENAME COLUMN length_m TO len;
UPDATE public.vg_ways SET cost = cost WHERE false; -- its trigger: a new version, the cache emptied
SELECT ok((SELECT count(*) FILTER (WHERE r.dealer_number IS NOT NULL) = 41
                  AND count(*) FILTER (WHERE r.match_type = 'Radius') > 20
             FROM postal_codes p CROSS JOIN LATERAL route('US', p.postal_code, 'VGD') r
            WHERE p.country = 'US' AND p.postal_code BETWEEN '00100' AND '00199'),
          'a failing network: every lead routed, as the crow flies');

SELECT * FROM finish();
ROLLBACK;
