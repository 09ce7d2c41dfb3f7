-- bench/drive.sql: what Drive Distance costs routing (issue 18): a routed
-- single-row INSERT measured as the crow flies (Radius), by road with the
-- session's cache cold, and by road with it warm, side by side.  Cheap:
-- about a minute.
--
--   psql -X -d DB -f bench/drive.sql
--
-- DB has aimroute and pgRouting available (apt-get install
-- postgresql-15-pgrouting); the script creates the pgrouting extension if
-- it is missing, as a superuser would.  Everything runs in one transaction
-- that is rolled back.
--
-- The network is SYNTHETIC, for scale: a grid of streets 100 m apart,
-- 60 x 60 crossings (about 6 x 6 km, 3,600 vertices, 7,080 edges) in the
-- San Francisco Bay area, every third east-west street one way.  The
-- correctness of Drive Distance is shown on real OpenStreetMap data by
-- t/025_drive_distance.pl; this measures only what it costs.  300 dealers
-- and 300 postal codes (US 99000-99299, made here) at random points of
-- the grid; radius_miles 50, so every dealer is a candidate of every lead
-- as the crow flies.  Per round: a lead from each postal code as the crow
-- flies (drive_distance_enabled off), then by road with the cache emptied
-- (aimroute.drive_network_watch() gives the network a new version), then
-- again from each postal code with the cache warm.  Three rounds.  Prints
-- the best and worst microseconds per lead of each measure, and the
-- Dijkstra runs and road distances measured per lead (from the
-- explanations).
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgrouting;

CREATE TEMP TABLE bench_dd (measure text, per_lead_us numeric, runs numeric, measured numeric) ON COMMIT DROP;

-- The grid: vertex (i, j) has id i * 100 + j + 1.
CREATE SCHEMA bench_drive;
CREATE TABLE bench_drive.ways (
    gid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source bigint NOT NULL,
    target bigint NOT NULL,
    length_m float8,
    cost float8,
    reverse_cost float8,
    the_geom geometry(LineString, 4326)
);
CREATE TEMP TABLE bench_dd_vertex ON COMMIT DROP AS
SELECT i, j, i * 100 + j + 1 AS id,
       ST_SetSRID(ST_MakePoint(-122.30 + j * 100 / (111320 * cos(radians(37.80))), 37.80 + i * 100 / 110990.0), 4326) AS pt
  FROM generate_series(0, 59) i, generate_series(0, 59) j;
INSERT INTO bench_drive.ways (source, target, the_geom)
SELECT a.id, b.id, ST_MakeLine(a.pt, b.pt)
  FROM bench_dd_vertex a JOIN bench_dd_vertex b
    ON (b.i = a.i AND b.j = a.j + 1) OR (b.j = a.j AND b.i = a.i + 1);
UPDATE bench_drive.ways w
   SET length_m = ST_Length(w.the_geom::geography), cost = ST_Length(w.the_geom::geography),
       reverse_cost = CASE WHEN w.source / 100 = w.target / 100 AND (w.source / 100) % 3 = 0
                           THEN -1 ELSE ST_Length(w.the_geom::geography) END;
CREATE INDEX ON bench_drive.ways USING gist (the_geom);
ANALYZE bench_drive.ways;

INSERT INTO aimroute.brands VALUES ('DDBENCH', 'Drive Distance bench');
SELECT setseed(0.18);
INSERT INTO aimroute.dealers (dealer_number, name, country, location)
SELECT 'DD' || lpad(k::text, 4, '0'), 'Bench ' || k, 'US',
       ST_SetSRID(ST_MakePoint(-122.30 + random() * 5900 / (111320 * cos(radians(37.80))),
                               37.80 + random() * 5900 / 110990.0), 4326)::geography
  FROM generate_series(1, 300) k;
INSERT INTO aimroute.dealer_brands SELECT d.dealer_number, 'DDBENCH' FROM aimroute.dealers d WHERE d.dealer_number ~ '^DD[0-9]';
DELETE FROM aimroute.postal_codes WHERE country = 'US' AND postal_code BETWEEN '99000' AND '99299';
INSERT INTO aimroute.postal_codes (country, postal_code, place_name, state_code, centroid)
SELECT 'US', (99000 + k)::text, 'Bench grid', 'CA',
       ST_SetSRID(ST_MakePoint(-122.30 + random() * 5900 / (111320 * cos(radians(37.80))),
                               37.80 + random() * 5900 / 110990.0), 4326)::geography
  FROM generate_series(0, 299) k;
UPDATE aimroute.settings
   SET default_dealer_number = 'DD0001', radius_enabled = true, radius_miles = 50,
       radius_countries = '{US,CA}', drive_network = 'bench_drive.ways';

DO $$
DECLARE
    t0 timestamptz;
    codes constant integer := 300;
    first_lead bigint;
    kind text;
BEGIN
    FOR round IN 1 .. 3 LOOP
        FOREACH kind IN ARRAY ARRAY['as the crow flies', 'by road, cache cold', 'by road, cache warm'] LOOP
            IF kind = 'as the crow flies' THEN
                UPDATE aimroute.settings SET drive_distance_enabled = false;
            ELSIF kind = 'by road, cache cold' THEN
                UPDATE aimroute.settings SET drive_distance_enabled = true;
                PERFORM aimroute.drive_network_watch();
            END IF;
            -- The first INSERT after a configuration change rebuilds the model: not timed.
            IF kind <> 'by road, cache warm' THEN
                INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer)
                VALUES ('DDBENCH', 'US', '10001', false);
            END IF;
            first_lead := (SELECT max(l.lead_id) FROM aimroute.leads l) + 1;
            t0 := clock_timestamp();
            FOR k IN 0 .. codes - 1 LOOP
                INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer)
                VALUES ('DDBENCH', 'US', (99000 + k)::text, false);
            END LOOP;
            INSERT INTO pg_temp.bench_dd
            SELECT format('routed INSERT, %s', kind), extract(epoch FROM clock_timestamp() - t0) * 1e6 / codes,
                   avg(coalesce(substring(e.message FROM 'by ([0-9]+) pgr_dijkstraCost')::numeric, 0)),
                   avg(coalesce(substring(e.message FROM '^road distances: ([0-9]+) measured')::numeric, 0))
              FROM aimroute.leads l
              LEFT JOIN LATERAL (SELECT x.message FROM aimroute.explain_lead(l.lead_id) x
                                  WHERE x.message LIKE 'road distances:%') e ON true
             WHERE l.lead_id >= first_lead;
        END LOOP;
    END LOOP;
END
$$;

SELECT measure, round(min(per_lead_us), 1) AS best_us, round(max(per_lead_us), 1) AS worst_us,
       round(avg(runs), 2) AS dijkstra_runs_per_lead, round(avg(measured), 2) AS road_distances_per_lead
  FROM bench_dd GROUP BY measure ORDER BY min(per_lead_us);
SELECT match_type, count(*) FROM aimroute.leads WHERE brand_code = 'DDBENCH' GROUP BY 1 ORDER BY 1;
ROLLBACK;
