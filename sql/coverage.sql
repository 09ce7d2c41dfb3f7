--
-- coverage: where a lead from every postal code with a centre point would
-- go (aimroute.coverage), as GeoJSON, the white space by state and the
-- dealers' effective areas; the same answers as routing, and "what if"
-- inside a transaction.
--
-- A brand of its own (CVG), so that the dealers of other tests do not
-- matter: C1 in Albany, NY, holds ZIP 49757 (Mackinac Island) for CVG; C2
-- in Ottawa; CHQ, the corporate dealer, sells nothing.  Radius 100 miles
-- in the US and Canada.
--
SET search_path = aimroute, public;
INSERT INTO brands VALUES ('CVG', 'Coverage Boats');
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
  ('C1', 'Albany Coverage', 'US', '12213'),
  ('C2', 'Ottawa Coverage', 'CA', 'K1A 0B1'),
  ('CHQ', 'Coverage Corporate', 'US', NULL);
INSERT INTO dealer_brands VALUES ('C1', 'CVG'), ('C2', 'CVG');
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES ('C1', 'CVG', 'postal', 'US', '49757');
UPDATE settings SET default_dealer_number = 'CHQ', radius_enabled = true, radius_miles = 100,
                    radius_countries = '{US,CA}';

-- Every postal code with a centre point, where a CVG lead from there goes.
SELECT country, postal_code, state_code, county, dealer_number, match_type,
       round(distance_miles::numeric, 1) AS miles
  FROM coverage('CVG');
SELECT count(*) AS postal_codes_with_centre,
       (SELECT count(*) FROM postal_codes WHERE centroid IS NOT NULL) AS expected
  FROM coverage('CVG');

-- The same answers as routing: route() and the locator's first rank.
SELECT count(*) AS compared,
       count(*) FILTER (WHERE r.dealer_number IS DISTINCT FROM c.dealer_number
                           OR r.match_type IS DISTINCT FROM c.match_type
                           OR r.distance_miles IS DISTINCT FROM c.distance_miles) AS differ_from_route,
       count(*) FILTER (WHERE l.dealer_number IS DISTINCT FROM c.dealer_number
                           OR l.match_type IS DISTINCT FROM c.match_type
                           OR l.distance_miles IS DISTINCT FROM c.distance_miles) AS differ_from_locator
  FROM coverage('CVG') c
  CROSS JOIN LATERAL route(c.country, c.postal_code, 'CVG') r
  LEFT JOIN LATERAL locate_dealers(c.country, c.postal_code, 'CVG', NULL, 1) l ON true;

-- And a lead inserted from each postal code gets what coverage said.
BEGIN;
INSERT INTO leads (brand_code, country, postal_code, send_to_dealer)
SELECT 'CVG', country, postal_code, false FROM coverage('CVG');
SELECT count(*) AS leads,
       count(*) FILTER (WHERE l.dealer_number IS DISTINCT FROM c.dealer_number
                           OR l.match_type IS DISTINCT FROM c.match_type) AS differ
  FROM leads l JOIN coverage('CVG') c USING (country, postal_code)
 WHERE l.brand_code = 'CVG';
ROLLBACK;

-- One country, by any of its names.
SELECT DISTINCT country FROM coverage('CVG', 'Canada');
SELECT count(*) AS us_postal_codes FROM coverage('CVG', 'usa');
SELECT count(*) AS none_in_mexico FROM coverage('CVG', 'MX');

-- What if C1 closed?  Inside a transaction, coverage follows the change;
-- the diff says which postal codes change dealer.
CREATE TEMP TABLE before_close AS SELECT * FROM coverage('CVG');
BEGIN;
UPDATE dealers SET active_for_sales = false WHERE dealer_number = 'C1';
SELECT b.country, b.postal_code, b.dealer_number AS dealer_before, b.match_type AS match_before,
       a.dealer_number AS dealer_after, a.match_type AS match_after
  FROM before_close b JOIN coverage('CVG') a USING (country, postal_code)
 WHERE a.dealer_number IS DISTINCT FROM b.dealer_number OR a.match_type IS DISTINCT FROM b.match_type
 ORDER BY 1, 2;
ROLLBACK;
SELECT count(*) AS changed_after_rollback
  FROM before_close b JOIN coverage('CVG') a USING (country, postal_code)
 WHERE a.dealer_number IS DISTINCT FROM b.dealer_number OR a.match_type IS DISTINCT FROM b.match_type;

-- White space by state, with the leads of the last 30 days: two CVG
-- leads from a postal code of white space, one from Mackinac Island.
INSERT INTO leads (brand_code, country, postal_code, send_to_dealer) VALUES
  ('CVG', 'US', '00501', false), ('CVG', 'US', '00501', false), ('CVG', 'US', '49757', false);
SELECT * FROM white_space('CVG');
SELECT * FROM white_space('CVG', 'CA');

-- The dealers' effective areas: postal codes won, by rule.
SELECT dealer_number, name, match_type, postal_codes, states,
       round(max_distance_miles::numeric, 1) AS max_miles
  FROM dealer_areas('CVG');

-- GeoJSON: a FeatureCollection with one Point per postal code that has a
-- centre point, and the coverage columns as properties.
SELECT g->>'type' AS type, json_array_length(g->'features') AS features
  FROM coverage_geojson('CVG') g;
SELECT f->'geometry'->>'type' AS geometry, f->'geometry'->'coordinates' AS coordinates,
       f->'properties' AS properties
  FROM json_array_elements(coverage_geojson('CVG', 'US')->'features') f
 WHERE f->'properties'->>'postal_code' IN ('49757', '00501');

-- Arguments are checked.
\set VERBOSITY default
SELECT * FROM coverage('NOPE');
SELECT * FROM coverage('CVG', 'Atlantis');
SELECT * FROM coverage(NULL);
SELECT coverage_geojson('CVG', '');
\set VERBOSITY terse

-- Who may run it: admins and region users, not dealer users or PUBLIC.
SELECT p.proname, r.rolname, has_function_privilege(r.rolname, p.oid, 'EXECUTE') AS may_run
  FROM pg_proc p, pg_roles r
 WHERE p.pronamespace = 'aimroute'::regnamespace
   AND p.proname IN ('coverage', 'coverage_geojson', 'white_space', 'dealer_areas')
   AND r.rolname IN ('aimroute_admin', 'aimroute_region', 'aimroute_dealer', 'pg_monitor')
 ORDER BY 1, 2;
-- A region user runs them, and counts only the leads of its region's
-- dealers (none here: C1 and C2 are in no region); a dealer user may not.
CREATE ROLE aimroute_regress_cov_region IN ROLE aimroute_region;
CREATE ROLE aimroute_regress_cov_dealer IN ROLE aimroute_dealer;
SET ROLE aimroute_regress_cov_region;
SELECT count(*) AS region_user_rows FROM coverage('CVG');
SELECT sum(leads_30_days) AS region_user_leads FROM white_space('CVG');
RESET ROLE;
SET ROLE aimroute_regress_cov_dealer;
SELECT count(*) FROM coverage('CVG');
RESET ROLE;
DROP ROLE aimroute_regress_cov_region, aimroute_regress_cov_dealer;
RESET search_path;
