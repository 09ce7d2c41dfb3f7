--
-- demo/coverage.sql: coverage and white space of the demo network
-- (docs/coverage.md) -- where a Loonwater Boats lead from every postal code
-- would go -- and the files the coverage map is drawn from.
--
--     psql -d aimroute -v geojson=/tmp/lwb.geojson -v dealers=/tmp/lwb_dealers.csv \
--          -f demo/coverage.sql
--     python3 demo/coverage_map.py /tmp/lwb.geojson /tmp/lwb_dealers.csv /tmp 'Loonwater Boats'
--
-- The demo's settings have a radius of 1,500 miles, the default, and with
-- it nearly every postal code of the US and Canada has a dealer.  The rest
-- is a "what if", in a transaction rolled back at the end: with a radius
-- of 100 miles, where is the white space, what does the map look like
-- (geojson and dealers are written under that radius), and which postal
-- codes change dealer when North Chicago Boat & RV (US-0090) closes.
-- Nothing is changed.
--
\set QUIET 1
\set ON_ERROR_STOP 1
\pset footer off
\pset null '-'

\echo
\echo '== White space of Loonwater Boats under the demo''s settings (radius 1,500 miles) =='
SELECT country, state_code, postal_codes, white_space_postal_codes AS white_space
  FROM aimroute.white_space('LWB')
 WHERE white_space_postal_codes > 0
 ORDER BY white_space_postal_codes DESC, country, state_code
 LIMIT 8;

BEGIN;
UPDATE aimroute.settings SET radius_miles = 100;
CREATE TEMP TABLE coverage_now ON COMMIT DROP AS SELECT * FROM aimroute.coverage('LWB');

\echo
\echo '== What if the radius were 100 miles: white space by state or province (the 8 largest) =='
SELECT country, state_code, postal_codes, white_space_postal_codes AS white_space,
       white_space_percent AS "%", leads_30_days, default_dealer_leads_30_days AS "to default dealer"
  FROM aimroute.white_space('LWB')
 ORDER BY white_space_postal_codes DESC, country, state_code
 LIMIT 8;

\echo '== ... and the dealers'' effective areas (the 6 largest) =='
SELECT dealer_number, name, match_type, postal_codes, array_to_string(states, ',') AS states,
       round(max_distance_miles::numeric, 1) AS farthest_miles
  FROM aimroute.dealer_areas('LWB')
 WHERE match_type <> 'Default'
 ORDER BY postal_codes DESC, dealer_number
 LIMIT 6;

-- The map's data: the coverage as GeoJSON, and the brand's dealers with
-- their locations (PostGIS from wherever it was created).
\if :{?geojson}
\pset format unaligned
\pset tuples_only on
SELECT aimroute.coverage_geojson('LWB') \g :geojson
SELECT set_config('search_path', 'pg_catalog, ' || e.extnamespace::regnamespace, true)
  FROM pg_catalog.pg_extension e WHERE e.extname = 'postgis' \g /dev/null
\pset format csv
SELECT d.dealer_number, d.name, CASE WHEN d.active_for_sales THEN 't' ELSE 'f' END,
       round(ST_Y(d.location::geometry)::numeric, 6), round(ST_X(d.location::geometry)::numeric, 6)
  FROM aimroute.dealers d JOIN aimroute.dealer_brands b USING (dealer_number)
 WHERE b.brand_code = 'LWB'
 ORDER BY d.dealer_number \g :dealers
\pset format aligned
\pset tuples_only off
\endif

\echo
\echo '== ... and if North Chicago Boat & RV (US-0090) closed: the postal codes that change dealer =='
UPDATE aimroute.dealers SET active_for_sales = false WHERE dealer_number = 'US-0090';
SELECT b.dealer_number AS dealer_before, b.match_type AS match_before,
       a.dealer_number AS dealer_after, a.match_type AS match_after, count(*) AS postal_codes,
       array_to_string((array_agg(b.postal_code ORDER BY b.postal_code))[1:4], ' ')
       || CASE WHEN count(*) > 4 THEN ' ...' ELSE '' END AS for_example
  FROM coverage_now b
  JOIN aimroute.coverage('LWB') a USING (country, postal_code)
 WHERE a.dealer_number IS DISTINCT FROM b.dealer_number OR a.match_type IS DISTINCT FROM b.match_type
 GROUP BY 1, 2, 3, 4
 ORDER BY postal_codes DESC, dealer_after;
ROLLBACK;
