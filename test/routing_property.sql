-- test/routing_property.sql: a property test of the routing engine on the
-- real postal data.  A pseudo-random (but deterministic: md5 of fixed
-- strings) network of ~325 dealers and a few dozen territories; ~300 leads
-- from pseudo-random US and Canadian postal codes; every decision checked
-- against the same rules written independently in plain SQL.  Then the
-- territories and settings change in the same transaction, and everything
-- is checked again, so that nothing stale (cached plans, settings,
-- candidates) is used.  Everything is rolled back.
--
-- Every check is a set difference: a failure lists the offending leads.
BEGIN;
SELECT plan(20);
-- PostGIS is in public, in a schema of its own or in aimroute
-- (t/lib/Placement.pm): its functions are found through its schema.
SELECT set_config('search_path', 'aimroute, public, ' || e.extnamespace::regnamespace, true)
  FROM pg_extension e WHERE e.extname = 'postgis';
SET LOCAL client_min_messages = warning;

-- A byte (0..255) of md5(s): a deterministic pseudo-random number.
CREATE FUNCTION pg_temp.rnd(s text, k int) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT get_byte(decode(md5(s), 'hex'), k)
$$;

-- Only this file's leads, whatever the database holds (rolled back).
DELETE FROM leads;
INSERT INTO brands VALUES ('PB1', 'Property One'), ('PB2', 'Property Two'), ('PB3', 'Property Three');

-- Dealers: 300 at distinct postal codes with a centre point, 20 more sharing
-- the first 20 of those locations (exact ties), 5 at codes without a centre
-- point (no location).  Dealer numbers mix 'D' and 'd' so that byte order
-- matters.
CREATE TEMP TABLE dealer_sites ON COMMIT DROP AS
SELECT country, postal_code, row_number() OVER (ORDER BY md5(country || postal_code || 'dealer')) AS n
  FROM postal_codes WHERE centroid IS NOT NULL
 ORDER BY md5(country || postal_code || 'dealer') LIMIT 300;
INSERT INTO dealers (dealer_number, name, country, postal_code, active_for_sales)
SELECT CASE WHEN pg_temp.rnd(s.country || s.postal_code || k, 4) % 2 = 0 THEN 'D' ELSE 'd' END
       || substr(md5(s.country || s.postal_code || k), 1, 8),
       'Property dealer ' || s.country || ' ' || s.postal_code || ' ' || k,
       s.country, s.postal_code,
       pg_temp.rnd(s.country || s.postal_code || k, 3) < 220
  FROM dealer_sites s, generate_series(1, 2) AS k
 WHERE k = 1 OR s.n <= 20;
INSERT INTO dealers (dealer_number, name, country, postal_code)
SELECT 'N' || substr(md5(country || postal_code), 1, 8), 'No location ' || postal_code, country, postal_code
  FROM postal_codes WHERE centroid IS NULL
 ORDER BY md5(country || postal_code || 'nolocation') LIMIT 5;
INSERT INTO dealer_brands
SELECT d.dealer_number, b.brand_code
  FROM dealers d
  JOIN (VALUES ('PB1', 0, 180), ('PB2', 1, 100), ('PB3', 2, 40)) AS b(brand_code, k, below)
    ON pg_temp.rnd(d.dealer_number || 'brands', b.k) < b.below;
-- The default dealer sells no brand: it only ever takes a lead as Default.
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES ('PHQ', 'Property HQ', 'US', '10001');
UPDATE settings SET default_dealer_number = 'PHQ';

-- Territories: all-brands and Brand Territories of every kind, some
-- overlapping (two holders of one state), some held by inactive dealers or
-- by a dealer without a location.
CREATE TEMP TABLE ranked_dealers ON COMMIT DROP AS
SELECT d.*, row_number() OVER (ORDER BY md5(d.dealer_number || 'territory')) AS n
  FROM dealers d WHERE d.dealer_number <> 'PHQ';
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT r.dealer_number, NULL, 'state', r.country, r.state_code
  FROM ranked_dealers r WHERE r.n <= 12 AND r.state_code IS NOT NULL;
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT r.dealer_number, NULL, 'county', r.country, r.state_code || '/' || r.county
  FROM ranked_dealers r WHERE r.n BETWEEN 13 AND 24 AND r.county IS NOT NULL;
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT DISTINCT ON (r.country, r.postal_code) r.dealer_number, NULL, 'postal', r.country, r.postal_code
  FROM ranked_dealers r WHERE r.n BETWEEN 25 AND 40 AND r.postal_code IS NOT NULL
 ORDER BY r.country, r.postal_code, r.n;
-- Brand Territories: PB2 holders of a second state each.
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT r.dealer_number, 'PB2', 'state', 'US', (ARRAY['MI', 'OH', 'TX', 'CA', 'NY', 'FL'])[1 + r.n % 6]
  FROM ranked_dealers r
 WHERE r.n BETWEEN 41 AND 80 AND r.country = 'US'
   AND EXISTS (SELECT FROM dealer_brands b WHERE b.dealer_number = r.dealer_number AND b.brand_code = 'PB2')
ON CONFLICT DO NOTHING;
-- A PB3 Brand Territory of the whole of Canada.
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT r.dealer_number, 'PB3', 'country', 'CA', NULL
  FROM ranked_dealers r
 WHERE r.country = 'CA' AND EXISTS (SELECT FROM dealer_brands b WHERE b.dealer_number = r.dealer_number AND b.brand_code = 'PB3')
 ORDER BY r.n LIMIT 1;
-- A dealer without a location holds three big states, for all brands: a
-- candidate at no known distance, the only one for PB1 leads there, behind
-- every located PB2 holder for PB2 leads.
INSERT INTO dealer_brands
SELECT d.dealer_number, b.brand_code FROM dealers d, (VALUES ('PB1'), ('PB2')) b(brand_code)
 WHERE d.dealer_number LIKE 'N%' ON CONFLICT DO NOTHING;
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT n.dealer_number, NULL, 'state', 'US', st.code
  FROM (SELECT d.dealer_number FROM dealers d WHERE d.dealer_number LIKE 'N%' AND d.location IS NULL
           AND d.country = 'US'
         ORDER BY d.dealer_number LIMIT 1) n,
       unnest(ARRAY['TX', 'CA', 'NY']) AS st(code);
-- Three territory holders move to the other country after their
-- territories were made: the territories stay, but never cross the line.
SET LOCAL client_min_messages = error;
UPDATE dealers d SET country = CASE d.country WHEN 'US' THEN 'CA' ELSE 'US' END
 WHERE d.dealer_number IN (SELECT t.dealer_number FROM territories t
                            ORDER BY md5(t.dealer_number || 'moves') LIMIT 3);
SET LOCAL client_min_messages = warning;

-- The same rules, written independently: the closest eligible territory
-- holder, else the closest eligible dealer of the lead's country within the
-- radius, else the default dealer.
CREATE FUNCTION pg_temp.eligible(p_brand text, p_product text)
RETURNS SETOF aimroute.dealers LANGUAGE sql STABLE AS $$
    SELECT d.* FROM aimroute.dealers d, aimroute.settings s
     WHERE d.active_for_sales
       AND EXISTS (SELECT FROM aimroute.dealer_brands b
                    WHERE b.dealer_number = d.dealer_number AND b.brand_code = p_brand)
       AND (NOT s.product_routing_enabled OR p_product IS NULL
            OR EXISTS (SELECT FROM aimroute.product_assignments a
                        WHERE a.dealer_number = d.dealer_number AND a.product_code = p_product))
$$;
CREATE FUNCTION pg_temp.territory_winner(p_country text, p_postal text, p_brand text, p_product text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT e.dealer_number
      FROM pg_temp.eligible(p_brand, p_product) e
      LEFT JOIN aimroute.postal_codes p ON p.country = p_country AND p.postal_code = p_postal
     WHERE e.country = p_country
       AND EXISTS (SELECT FROM aimroute.territories t
                    WHERE t.dealer_number = e.dealer_number AND t.country = p_country
                      AND (t.brand_code IS NULL OR t.brand_code = p_brand)
                      AND (t.kind = 'country'
                           OR (t.kind = 'postal' AND t.code = p_postal)
                           OR (t.kind = 'state' AND t.code = p.state_code)
                           OR (t.kind = 'county' AND t.code = p.state_code || '/' || p.county)))
     ORDER BY ST_Distance(e.location, p.centroid) NULLS LAST, e.dealer_number COLLATE "C"
     LIMIT 1
$$;
CREATE FUNCTION pg_temp.radius_winner(p_country text, p_postal text, p_brand text, p_product text)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT e.dealer_number
      FROM pg_temp.eligible(p_brand, p_product) e, aimroute.postal_codes p, aimroute.settings s
     WHERE p.country = p_country AND p.postal_code = p_postal
       AND s.radius_enabled AND p_country = ANY (s.radius_countries)
       AND e.country = p_country AND e.location IS NOT NULL
       AND ST_Distance(e.location, p.centroid) <= s.radius_miles::float8 * 1609.344
     ORDER BY ST_Distance(e.location, p.centroid), e.dealer_number COLLATE "C"
     LIMIT 1
$$;
CREATE FUNCTION pg_temp.oracle(p_country text, p_postal text, p_brand text, p_product text,
                               OUT dealer_number text, OUT match_type text)
LANGUAGE sql STABLE AS $$
    SELECT x.dealer, x.match
      FROM (SELECT 1, pg_temp.territory_winner(p_country, p_postal, p_brand, p_product), 'Territory'
            UNION ALL
            SELECT 2, pg_temp.radius_winner(p_country, p_postal, p_brand, p_product), 'Radius'
            UNION ALL
            SELECT 3, s.default_dealer_number, 'Default' FROM aimroute.settings s) AS x(o, dealer, match)
     WHERE x.dealer IS NOT NULL
     ORDER BY x.o LIMIT 1
$$;

-- The leads: 300 pseudo-random US and Canadian postal codes, a few of them
-- without a centre point, with pseudo-random brands.
CREATE TEMP TABLE lead_sites ON COMMIT DROP AS
SELECT country, postal_code, row_number() OVER (ORDER BY md5(country || postal_code || 'lead')) AS n
  FROM postal_codes
 ORDER BY md5(country || postal_code || 'lead') LIMIT 290;
INSERT INTO lead_sites
SELECT country, postal_code, 290 + row_number() OVER (ORDER BY md5(country || postal_code || 'lead'))
  FROM postal_codes WHERE centroid IS NULL OR country = 'CA'
 ORDER BY md5(country || postal_code || 'lead') LIMIT 10;
INSERT INTO leads (brand_code, country, postal_code, comment)
SELECT 'PB' || (1 + pg_temp.rnd(country || postal_code || 'brand', 0) % 3), country, postal_code, 'prop1'
  FROM lead_sites ORDER BY n;

-- The checks, as views over a batch of leads (comment = batch).
CREATE FUNCTION pg_temp.locate_mismatches(batch text)
RETURNS TABLE (lead_id bigint, routed text, located text) LANGUAGE sql AS $$
    SELECT l.lead_id, l.dealer_number || ' ' || l.match_type, f.dealer_number || ' ' || f.match_type
      FROM aimroute.leads l
      LEFT JOIN LATERAL aimroute.locate_dealers(l.country, l.postal_code, l.brand_code, l.product_code, 1) f
        ON f.rank = 1
     WHERE l.comment = batch
       AND (f.dealer_number IS DISTINCT FROM l.dealer_number OR f.match_type IS DISTINCT FROM l.match_type)
$$;
CREATE FUNCTION pg_temp.radius_mismatches(batch text)
RETURNS TABLE (lead_id bigint, postal text, brand text, routed text, nearest text) LANGUAGE sql AS $$
    SELECT l.lead_id, l.country || ' ' || l.postal_code, l.brand_code, l.dealer_number,
           pg_temp.radius_winner(l.country, l.postal_code, l.brand_code, l.product_code)
      FROM aimroute.leads l
     WHERE l.comment = batch AND l.match_type = 'Radius'
       AND pg_temp.radius_winner(l.country, l.postal_code, l.brand_code, l.product_code)
           IS DISTINCT FROM l.dealer_number
$$;
CREATE FUNCTION pg_temp.territory_mismatches(batch text)
RETURNS TABLE (lead_id bigint, postal text, brand text, routed text, closest_holder text) LANGUAGE sql AS $$
    SELECT l.lead_id, l.country || ' ' || l.postal_code, l.brand_code, l.dealer_number,
           pg_temp.territory_winner(l.country, l.postal_code, l.brand_code, l.product_code)
      FROM aimroute.leads l
     WHERE l.comment = batch AND l.match_type = 'Territory'
       AND pg_temp.territory_winner(l.country, l.postal_code, l.brand_code, l.product_code)
           IS DISTINCT FROM l.dealer_number
$$;
CREATE FUNCTION pg_temp.oracle_mismatches(batch text)
RETURNS TABLE (lead_id bigint, postal text, brand text, product text, routed text, expected text)
LANGUAGE sql AS $$
    SELECT l.lead_id, l.country || ' ' || l.postal_code, l.brand_code, l.product_code,
           l.dealer_number || ' ' || l.match_type, o.dealer_number || ' ' || o.match_type
      FROM aimroute.leads l,
           LATERAL pg_temp.oracle(l.country, l.postal_code, l.brand_code, l.product_code) o
     WHERE l.comment = batch
       AND (o.dealer_number, o.match_type) IS DISTINCT FROM (l.dealer_number, l.match_type::text)
$$;
CREATE FUNCTION pg_temp.distance_mismatches(batch text)
RETURNS TABLE (lead_id bigint, dealer text, distance_miles float8, crow_miles float8) LANGUAGE sql AS $$
    SELECT l.lead_id, l.dealer_number, l.distance_miles,
           ST_Distance(d.location, p.centroid) / 1609.344
      FROM aimroute.leads l
      JOIN aimroute.dealers d ON d.dealer_number = l.dealer_number
      LEFT JOIN aimroute.postal_codes p ON p.country = l.country AND p.postal_code = l.postal_code
     WHERE l.comment = batch
       AND NOT coalesce(abs(l.distance_miles - ST_Distance(d.location, p.centroid) / 1609.344) < 1e-6,
                        l.distance_miles IS NULL AND ST_Distance(d.location, p.centroid) IS NULL)
$$;
-- locate_dealers' list: distinct dealers, ranks 1..n, the default dealer
-- only last, and Radius ranks in order of distance.
CREATE FUNCTION pg_temp.locator_list_problems(batch text)
RETURNS TABLE (lead_id bigint, listed text) LANGUAGE sql AS $$
    SELECT x.lead_id, string_agg(x.rank || ':' || x.dealer_number || ' ' || x.match_type, ', ' ORDER BY x.rank)
      FROM (SELECT l.lead_id, f.*, count(*) OVER w AS n,
                   lag(f.distance_miles) OVER (w ORDER BY f.rank) AS prev_distance,
                   lag(f.match_type) OVER (w ORDER BY f.rank) AS prev_match
              FROM aimroute.leads l,
                   LATERAL aimroute.locate_dealers(l.country, l.postal_code, l.brand_code, l.product_code, 6) f
             WHERE l.comment = batch AND l.lead_id % 5 = 0
            WINDOW w AS (PARTITION BY l.lead_id)) x
     GROUP BY x.lead_id
    HAVING count(DISTINCT x.dealer_number) <> count(*)
        OR min(x.rank) <> 1 OR max(x.rank) <> count(*) OR count(DISTINCT x.rank) <> count(*)
        OR bool_or(x.match_type = 'Default' AND x.rank <> x.n)
        OR bool_or(x.match_type = 'Radius' AND x.prev_match = 'Radius' AND x.distance_miles < x.prev_distance)
$$;

-- Both code paths: the in-memory copy (aimroute.routing_cache = on, the
-- default) and SQL queries (off) give the same answer, explanation included.
CREATE FUNCTION pg_temp.path_mismatches(batch text)
RETURNS TABLE (lead_id bigint, in_memory text, by_queries text) LANGUAGE plpgsql AS $$
DECLARE
    l record;
BEGIN
    FOR l IN SELECT * FROM aimroute.leads WHERE comment = batch ORDER BY 1 LOOP
        PERFORM set_config('aimroute.routing_cache', 'on', true);
        SELECT row(r.*)::text INTO in_memory
          FROM aimroute.route(l.country, l.postal_code, l.brand_code, l.product_code, NULL, NULL, NULL, l.state_code) r;
        PERFORM set_config('aimroute.routing_cache', 'off', true);
        SELECT row(r.*)::text INTO by_queries
          FROM aimroute.route(l.country, l.postal_code, l.brand_code, l.product_code, NULL, NULL, NULL, l.state_code) r;
        PERFORM set_config('aimroute.routing_cache', 'on', true);
        IF in_memory IS DISTINCT FROM by_queries THEN
            lead_id := l.lead_id;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- Coverage: the batch exercises every rule that can apply to it.
SELECT is((SELECT array_agg(DISTINCT match_type::text ORDER BY match_type::text) FROM leads WHERE comment = 'prop1'),
          ARRAY['Default', 'Radius', 'Territory'],
          'batch 1: leads routed by Territory, Radius and Default');
SELECT cmp_ok((SELECT count(*)::int FROM leads WHERE comment = 'prop1' AND match_type = 'Territory'), '>=', 20,
              'batch 1: at least 20 Territory leads');

SELECT is_empty($$SELECT * FROM pg_temp.locate_mismatches('prop1')$$,
                '(a) batch 1: locate_dealers rank 1 is the routed dealer and match type, for every lead');
SELECT is_empty($$SELECT * FROM pg_temp.radius_mismatches('prop1')$$,
                '(b) batch 1: every Radius lead has the nearest eligible dealer of its country within radius_miles');
SELECT is_empty($$SELECT * FROM pg_temp.territory_mismatches('prop1')$$,
                '(c) batch 1: every Territory lead has the closest eligible territory holder');
SELECT is_empty($$SELECT * FROM pg_temp.distance_mismatches('prop1')$$,
                '(d) batch 1: distance_miles = ST_Distance(centroid, location) / 1609.344 for every lead');
SELECT is_empty($$SELECT * FROM pg_temp.oracle_mismatches('prop1')$$,
                '(e) batch 1: every lead''s dealer and match type are what the rules, written in SQL, give');
SELECT is_empty($$SELECT * FROM pg_temp.locator_list_problems('prop1')$$,
                '(f) batch 1: locate_dealers lists distinct dealers, ranks 1..n, radius ranks by distance, the default dealer last');
SELECT is_empty($$SELECT * FROM pg_temp.path_mismatches('prop1')$$,
                '(g) batch 1: the in-memory path and the SQL path give the same answer and explanation');

------------------------------------------------------------------------------
-- Change territories and settings in the same transaction; route again.
------------------------------------------------------------------------------
DELETE FROM territories WHERE kind = 'state' AND brand_code IS NULL;
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT r.dealer_number, NULL, 'state', r.country, r.state_code
  FROM ranked_dealers r WHERE r.n BETWEEN 81 AND 100 AND r.state_code IS NOT NULL;
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT r.dealer_number, NULL, 'country', 'US', NULL
  FROM ranked_dealers r
 WHERE EXISTS (SELECT FROM dealer_brands b WHERE b.dealer_number = r.dealer_number AND b.brand_code = 'PB3')
   AND r.country = 'US' AND r.active_for_sales
 ORDER BY r.n LIMIT 2;
UPDATE dealers SET active_for_sales = NOT active_for_sales
 WHERE pg_temp.rnd(dealer_number || 'flip', 0) < 25 AND dealer_number <> 'PHQ';
-- Two dealers move: one to another city, one loses its location.
UPDATE dealers SET location = 'SRID=4326;POINT(-87.6298 41.8781)'
 WHERE dealer_number = (SELECT dealer_number FROM ranked_dealers WHERE n = 150);
UPDATE dealers SET location = NULL
 WHERE dealer_number = (SELECT dealer_number FROM ranked_dealers WHERE n = 151);
INSERT INTO product_assignments
SELECT d.dealer_number, 'PX' FROM dealers d WHERE pg_temp.rnd(d.dealer_number || 'product', 0) < 128;
UPDATE settings SET radius_miles = 250, radius_countries = '{US}', product_routing_enabled = true;

INSERT INTO leads (brand_code, product_code, country, postal_code, comment)
SELECT 'PB' || (1 + pg_temp.rnd(country || postal_code || 'brand2', 0) % 3),
       CASE WHEN n % 2 = 0 THEN 'PX' END, country, postal_code, 'prop2'
  FROM lead_sites ORDER BY n;

SELECT is((SELECT array_agg(DISTINCT match_type::text ORDER BY match_type::text) FROM leads WHERE comment = 'prop2'),
          ARRAY['Default', 'Radius', 'Territory'],
          'batch 2: leads routed by Territory, Radius and Default');
SELECT is((SELECT count(*) FROM leads WHERE comment = 'prop2' AND country = 'CA' AND match_type = 'Radius'),
          0::bigint, 'batch 2: no Canadian lead by radius once CA left radius_countries');
SELECT is_empty($$SELECT * FROM pg_temp.locate_mismatches('prop2')$$,
                '(a) batch 2: locate_dealers rank 1 is the routed dealer and match type, for every lead');
SELECT is_empty($$SELECT * FROM pg_temp.radius_mismatches('prop2')$$,
                '(b) batch 2: every Radius lead has the nearest eligible dealer within the new radius_miles');
SELECT is_empty($$SELECT * FROM pg_temp.territory_mismatches('prop2')$$,
                '(c) batch 2: every Territory lead has the closest eligible holder of the new territories');
SELECT is_empty($$SELECT * FROM pg_temp.distance_mismatches('prop2')$$,
                '(d) batch 2: distance_miles = ST_Distance / 1609.344 for every lead');
SELECT is_empty($$SELECT * FROM pg_temp.oracle_mismatches('prop2')$$,
                '(e) batch 2: every lead''s dealer and match type are what the rules, written in SQL, give');
SELECT is_empty($$SELECT * FROM pg_temp.locator_list_problems('prop2')$$,
                '(f) batch 2: locate_dealers lists distinct dealers, ranks 1..n, radius ranks by distance, the default dealer last');
SELECT is_empty($$SELECT * FROM pg_temp.path_mismatches('prop2')$$,
                '(g) batch 2: the in-memory path and the SQL path give the same answer and explanation');

-- Batch 1 routed again under the new configuration (simulate_routing):
-- the new rules, not the old ones, and the stored leads unchanged.
SELECT is_empty(
  $$SELECT s.lead_id, s.simulated_dealer_number || ' ' || s.simulated_match_type AS simulated,
           o.dealer_number || ' ' || o.match_type AS expected
      FROM aimroute.simulate_routing('-infinity', 'infinity') s
      JOIN aimroute.leads l USING (lead_id),
           LATERAL pg_temp.oracle(l.country, l.postal_code, l.brand_code, l.product_code) o
     WHERE l.comment = 'prop1'
       AND (o.dealer_number, o.match_type) IS DISTINCT FROM (s.simulated_dealer_number, s.simulated_match_type::text)$$,
  'simulate_routing routes batch 1 by the new configuration');
SELECT is((SELECT count(*) FROM lead_history), 0::bigint, 'no lead changed dealer: lead_history is empty');

SELECT * FROM finish();
ROLLBACK;
