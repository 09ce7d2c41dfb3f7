-- test/postal_data.sql: invariants of the shipped postal data, as loaded
-- by scripts/test.sh with aimroute.load_postal_codes().
BEGIN;
SELECT plan(16);
-- PostGIS is in public, in a schema of its own or in aimroute
-- (t/lib/Placement.pm): its functions are found through its schema.
SELECT set_config('search_path', 'aimroute, public, ' || e.extnamespace::regnamespace, true)
  FROM pg_extension e WHERE e.extname = 'postgis';

SELECT is((SELECT count(*) FROM postal_codes WHERE country = 'US'), 42555::bigint,
          'every US ZIP code of the shipped file is loaded');
SELECT is((SELECT count(*) FROM postal_codes WHERE country = 'CA'), 1613::bigint,
          'every Canadian FSA is loaded but the 7 with shifted columns');
SELECT is((SELECT count(*) FROM postal_codes WHERE country NOT IN ('US', 'CA')), 0::bigint,
          'no other country');

SELECT is((SELECT count(*) FROM postal_codes WHERE NOT postal_code_is_valid(country, postal_code)),
          0::bigint, 'every stored postal code fits its country''s pattern');
SELECT is((SELECT count(*) FROM postal_codes
            WHERE normalize_postal_code(country, postal_code) IS DISTINCT FROM postal_code),
          0::bigint, 'stored postal codes are already normalized');
SELECT is((SELECT count(*) FROM postal_codes WHERE country = 'CA' AND length(postal_code) <> 3),
          0::bigint, 'Canadian rows are FSAs');

-- Centre points: where the country is, or none.
SELECT is((SELECT count(*) FROM postal_codes
            WHERE country = 'CA' AND centroid IS NOT NULL
              AND NOT (st_y(centroid::geometry) BETWEEN 41.6 AND 83.2
                       AND st_x(centroid::geometry) BETWEEN -141.1 AND -52.6)),
          0::bigint, 'every Canadian centre point lies in Canada');
SELECT is((SELECT count(*) FROM postal_codes
            WHERE country = 'US' AND centroid IS NOT NULL
              AND st_y(centroid::geometry) = 0 AND st_x(centroid::geometry) = 0),
          0::bigint, 'no 0,0 placeholder is kept as a centre point');
SELECT is((SELECT centroid IS NULL FROM postal_codes WHERE country = 'US' AND postal_code = '10200'),
          true, 'ZIP 10200 (longitude sign lost in the source) has no centre point');

-- Known places.
SELECT is((SELECT place_name || '|' || state_code || '|' || county FROM postal_codes
            WHERE country = 'US' AND postal_code = '49757'),
          'Mackinac Island|MI|Mackinac', 'Mackinac Island, Michigan');
SELECT is((SELECT state_code FROM postal_codes WHERE country = 'US' AND postal_code = '00501'),
          'NY', 'ZIP 00501 keeps its leading zeros');
SELECT is((SELECT state_code FROM postal_codes WHERE country = 'CA' AND postal_code = 'P0S'),
          'ON', 'Batchawana Bay''s FSA P0S is in Ontario');
SELECT is((SELECT count(*) FROM postal_codes WHERE country = 'CA' AND postal_code = 'E1H'),
          0::bigint, 'E1H (shifted columns) is not loaded');

-- The load's report lists what it could not read.
SELECT set_eq(
    $$SELECT postal_code FROM postal_code_load_issues
       WHERE rejected AND load_id = (SELECT max(load_id) FROM postal_code_loads)$$,
    ARRAY['E1H', 'E2E', 'E2H', 'E3C', 'K0C', 'K0K', 'P0M'],
    'the rejected lines are exactly the Canadian rows with shifted columns');
SELECT ok((SELECT bool_and(problem LIKE '%columns look shifted%') FROM postal_code_load_issues
            WHERE rejected AND load_id = (SELECT max(load_id) FROM postal_code_loads)),
          'each rejection says the columns look shifted');
SELECT is((SELECT rows_loaded + rows_rejected FROM postal_code_loads
            WHERE load_id = (SELECT max(load_id) FROM postal_code_loads)),
          44175::bigint, 'loaded plus rejected is every line of the file');

SELECT * FROM finish();
ROLLBACK;
