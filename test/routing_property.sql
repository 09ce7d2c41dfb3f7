-- test/routing_property.sql: a property test of the routing engine on the
-- real postal data.  A pseudo-random (but deterministic: md5 of fixed
-- strings) network of ~325 dealers and a few dozen territories; ~300 leads
-- from pseudo-random US and Canadian postal codes; every decision checked
-- against the same rules written independently in plain SQL.  Then the
-- territories and settings change in the same transaction, and everything
-- is checked again, so that nothing stale (the session's in-memory model of
-- the configuration, src/model.c) is used.  Last, every rule of SPEC
-- section 2 -- Pre-assigned, Dealer Group, Inventory, Territory, Radius,
-- Default -- against a reference written in PL/pgSQL, product routing off
-- and on, before, inside and after a savepoint that changes the
-- configuration and is rolled back.  Everything is rolled back.
--
-- Every check is a set difference: a failure lists the offending leads.
BEGIN;
SELECT plan(27);
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

-- The explanation: the trigger stores what route() gives for the same
-- inputs, and its last line is the deciding rule, naming the dealer.
CREATE FUNCTION pg_temp.explanation_mismatches(batch text)
RETURNS TABLE (lead_id bigint, stored text, routed text) LANGUAGE sql AS $$
    SELECT l.lead_id, l.routing_log::text, r.steps::text
      FROM aimroute.leads l,
           LATERAL aimroute.route(l.country, l.postal_code, l.brand_code, l.product_code, NULL, NULL, NULL, l.state_code) r
     WHERE l.comment = batch
       AND (r.steps IS DISTINCT FROM l.routing_log
            OR (r.steps[cardinality(r.steps)]).rule IS DISTINCT FROM l.match_type::text
            OR (r.steps[cardinality(r.steps)]).dealer_number IS DISTINCT FROM l.dealer_number
            OR (r.steps[cardinality(r.steps)]).message NOT LIKE 'chosen%')
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
SELECT is_empty($$SELECT * FROM pg_temp.explanation_mismatches('prop1')$$,
                '(g) batch 1: the stored explanation is route()''s, its last line the deciding rule and dealer');

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
SELECT is_empty($$SELECT * FROM pg_temp.explanation_mismatches('prop2')$$,
                '(g) batch 2: the stored explanation is route()''s, its last line the deciding rule and dealer');

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


------------------------------------------------------------------------------
-- Every rule against a reference written independently in PL/pgSQL, from
-- SPEC section 2: Pre-assigned (active or not, selling the brand or not),
-- Dealer Group, Inventory, Territory (every kind, Brand Territories, never
-- across a country line), Radius (same country, radius_miles), Default;
-- product routing off and on; excluded dealers (re-routing); a
-- configuration changed in a savepoint, then rolled back.
------------------------------------------------------------------------------
UPDATE dealers SET dealer_group = 'PG' || pg_temp.rnd(dealer_number || 'group', 0) % 4
 WHERE pg_temp.rnd(dealer_number || 'group', 1) < 100 AND dealer_number <> 'PHQ';
INSERT INTO inventory (dealer_number, product_code, quantity)
SELECT d.dealer_number, 'PI' || k, pg_temp.rnd(d.dealer_number || 'stock' || k, 1) % 3
  FROM dealers d, generate_series(1, 2) AS k
 WHERE pg_temp.rnd(d.dealer_number || 'stock' || k, 0) < 50 AND d.dealer_number <> 'PHQ';
INSERT INTO product_assignments
SELECT d.dealer_number, 'PI1' FROM dealers d
 WHERE pg_temp.rnd(d.dealer_number || 'assigned', 0) < 90 AND d.dealer_number <> 'PHQ'
ON CONFLICT DO NOTHING;
UPDATE settings SET radius_enabled = true, radius_miles = 120, radius_countries = '{US,CA}',
       inventory_routing_enabled = true, product_routing_enabled = false;

-- The reference.  The lead's inputs are normalized with the product's own
-- functions (normalize_country, normalize_postal_code, which applies the
-- Canadian FSA fallback); the rules are written here.
CREATE FUNCTION pg_temp.reference(p_country text, p_postal text, p_brand text, p_product text,
                                  p_dealer text, p_group text, p_excluded text[], p_state text,
                                  OUT dealer_number text, OUT match_type text, OUT distance_miles float8)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s aimroute.settings;
    v_country text := aimroute.normalize_country(p_country);
    v_postal text := aimroute.normalize_postal_code(aimroute.normalize_country(p_country), p_postal);
    pc aimroute.postal_codes;
    v_state text;
    v_product text := nullif(p_product, '');
    v_filter text;
BEGIN
    SELECT * INTO s FROM aimroute.settings;
    SELECT * INTO pc FROM aimroute.postal_codes p WHERE p.country = v_country AND p.postal_code = v_postal;
    v_state := coalesce(pc.state_code, upper(btrim(p_state)));
    v_filter := CASE WHEN s.product_routing_enabled THEN v_product END;
    -- Candidates: active, selling the brand, not excluded, of the lead's
    -- country; with a product filter, assigned the product.
    CREATE TEMP TABLE IF NOT EXISTS ref_candidates (LIKE aimroute.dealers) ON COMMIT DROP;
    TRUNCATE ref_candidates;
    INSERT INTO ref_candidates
    SELECT d.* FROM aimroute.dealers d
     WHERE d.active_for_sales AND d.country = v_country
       AND EXISTS (SELECT FROM aimroute.dealer_brands b WHERE b.dealer_number = d.dealer_number AND b.brand_code = p_brand)
       AND d.dealer_number <> ALL (coalesce(p_excluded, '{}'));

    -- 1. Pre-assigned: an existing dealer, whatever it is.
    IF p_dealer <> '' AND p_dealer <> ALL (coalesce(p_excluded, '{}'))
       AND EXISTS (SELECT FROM aimroute.dealers d WHERE d.dealer_number = p_dealer) THEN
        dealer_number := p_dealer;
        match_type := 'Pre-assigned';
    ELSIF v_country IS NULL OR NOT EXISTS (SELECT FROM aimroute.brands b WHERE b.brand_code = p_brand) THEN
        NULL; -- no dealer can be chosen: the default dealer
    ELSE
        -- 2. Dealer Group: the closest of the group; without a centre
        -- point, the lowest dealer number.
        IF p_group <> '' THEN
            SELECT c.dealer_number, 'Dealer Group' INTO dealer_number, match_type
              FROM ref_candidates c
             WHERE c.dealer_group = p_group AND (pc.centroid IS NULL OR c.location IS NOT NULL)
             ORDER BY ST_Distance(c.location, pc.centroid), c.dealer_number COLLATE "C" LIMIT 1;
        END IF;
        -- 3. Inventory: in stock, within the radius.
        IF dealer_number IS NULL AND s.inventory_routing_enabled AND v_product IS NOT NULL THEN
            SELECT c.dealer_number, 'Inventory' INTO dealer_number, match_type
              FROM ref_candidates c
             WHERE EXISTS (SELECT FROM aimroute.inventory i
                            WHERE i.dealer_number = c.dealer_number AND i.product_code = v_product AND i.quantity > 0)
               AND ST_Distance(c.location, pc.centroid) <= s.radius_miles::float8 * 1609.344
             ORDER BY ST_Distance(c.location, pc.centroid), c.dealer_number COLLATE "C" LIMIT 1;
        END IF;
        -- 4. Territory: a holder of a territory of the lead's country that
        -- contains it; unknown distances last.
        IF dealer_number IS NULL THEN
            SELECT c.dealer_number, 'Territory' INTO dealer_number, match_type
              FROM ref_candidates c
             WHERE (v_filter IS NULL OR EXISTS (SELECT FROM aimroute.product_assignments a
                                                 WHERE a.dealer_number = c.dealer_number AND a.product_code = v_filter))
               AND EXISTS (SELECT FROM aimroute.territories t
                            WHERE t.dealer_number = c.dealer_number AND t.country = v_country
                              AND (t.brand_code IS NULL OR t.brand_code = p_brand)
                              AND (t.kind = 'country' OR (t.kind = 'postal' AND t.code = v_postal)
                                   OR (t.kind = 'state' AND t.code = v_state)
                                   OR (t.kind = 'county' AND t.code = pc.state_code || '/' || pc.county)))
             ORDER BY ST_Distance(c.location, pc.centroid) NULLS LAST, c.dealer_number COLLATE "C" LIMIT 1;
        END IF;
        -- 5. Radius: the closest within radius_miles, where radius routing
        -- applies.
        IF dealer_number IS NULL AND s.radius_enabled AND v_country = ANY (s.radius_countries) THEN
            SELECT c.dealer_number, 'Radius' INTO dealer_number, match_type
              FROM ref_candidates c
             WHERE (v_filter IS NULL OR EXISTS (SELECT FROM aimroute.product_assignments a
                                                 WHERE a.dealer_number = c.dealer_number AND a.product_code = v_filter))
               AND ST_Distance(c.location, pc.centroid) <= s.radius_miles::float8 * 1609.344
             ORDER BY ST_Distance(c.location, pc.centroid), c.dealer_number COLLATE "C" LIMIT 1;
        END IF;
    END IF;
    -- 6. Default.
    IF dealer_number IS NULL THEN
        dealer_number := s.default_dealer_number;
        match_type := 'Default';
    END IF;
    SELECT ST_Distance(d.location, pc.centroid) / 1609.344 INTO distance_miles
      FROM aimroute.dealers d WHERE d.dealer_number = reference.dealer_number;
END
$$;

-- The leads: the lead sites with every input varied.  Some pre-assigned
-- (to any dealer: inactive ones and ones not selling the brand included;
-- to an unknown one), some of a dealer group (an unknown one included),
-- with a product in stock somewhere, full Canadian codes that fall back to
-- their FSA, an unknown ZIP code with the lead's own state, an unknown
-- brand, an unknown country.
CREATE TEMP TABLE cases ON COMMIT DROP AS
SELECT s.n,
       CASE WHEN s.n % 37 = 0 THEN 'Narnia' ELSE s.country END AS country,
       CASE WHEN s.country = 'US' AND s.n % 23 = 0 THEN '00000'
            WHEN s.country = 'CA' AND s.n % 2 = 0 THEN s.postal_code || ' 9Z9'
            ELSE s.postal_code END AS postal_code,
       CASE WHEN s.n % 41 = 0 THEN 'PBX' ELSE 'PB' || 1 + pg_temp.rnd(s.postal_code || 'case brand', 0) % 3 END AS brand_code,
       (ARRAY['PI1', 'PI2', 'PX', NULL])[1 + pg_temp.rnd(s.postal_code || 'case product', 0) % 4] AS product_code,
       CASE WHEN s.n % 7 = 0 THEN (SELECT r.dealer_number FROM ranked_dealers r
                                    WHERE r.n = 1 + pg_temp.rnd(s.postal_code || 'case dealer', 0))
            WHEN s.n % 29 = 0 THEN 'NO-SUCH-DEALER' END AS dealer_number,
       CASE WHEN s.n % 5 = 0 THEN 'PG' || pg_temp.rnd(s.postal_code || 'case group', 0) % 5 END AS dealer_group,
       CASE WHEN s.n % 23 = 0 THEN 'MI' END AS state_code
  FROM lead_sites s;

-- route() and the reference for every case, then again with the
-- reference's dealer excluded (as re-routing does), for every third case;
-- locate_dealers' rank 1 for the cases without a dealer or group.
CREATE FUNCTION pg_temp.reference_mismatches()
RETURNS TABLE (n bigint, excluded text[], routed text, expected text) LANGUAGE plpgsql AS $$
DECLARE
    c record;
    r aimroute.routing_decision;
    o record;
    pass int;
BEGIN
    FOR c IN SELECT * FROM pg_temp.cases ORDER BY 1 LOOP
        excluded := '{}';
        FOR pass IN 1 .. CASE WHEN c.n % 3 = 0 THEN 2 ELSE 1 END LOOP
            r := aimroute.route(c.country, c.postal_code, c.brand_code, c.product_code, c.dealer_number,
                                c.dealer_group, excluded, c.state_code);
            o := pg_temp.reference(c.country, c.postal_code, c.brand_code, c.product_code, c.dealer_number,
                                   c.dealer_group, excluded, c.state_code);
            IF (r.dealer_number, r.match_type::text) IS DISTINCT FROM (o.dealer_number, o.match_type)
               OR NOT coalesce(abs(r.distance_miles - o.distance_miles) < 1e-9,
                               r.distance_miles IS NULL AND o.distance_miles IS NULL) THEN
                n := c.n;
                routed := concat_ws(' ', r.dealer_number, r.match_type, r.distance_miles);
                expected := concat_ws(' ', o.dealer_number, o.match_type, o.distance_miles);
                RETURN NEXT;
            END IF;
            excluded := ARRAY[o.dealer_number];
        END LOOP;
        IF c.dealer_number IS NULL AND c.dealer_group IS NULL AND c.state_code IS NULL THEN
            excluded := '{}';
            o := pg_temp.reference(c.country, c.postal_code, c.brand_code, c.product_code, NULL, NULL, '{}', NULL);
            SELECT f.dealer_number || ' ' || f.match_type INTO routed
              FROM aimroute.locate_dealers(c.country, c.postal_code, c.brand_code, c.product_code, 1) f;
            IF routed IS DISTINCT FROM o.dealer_number || ' ' || o.match_type THEN
                n := c.n;
                expected := o.dealer_number || ' ' || o.match_type;
                routed := 'locate_dealers: ' || routed;
                RETURN NEXT;
            END IF;
        END IF;
    END LOOP;
END
$$;
-- Which rules the cases exercise under the current configuration.
CREATE FUNCTION pg_temp.reference_rules() RETURNS text[] LANGUAGE sql AS $$
    SELECT array_agg(DISTINCT o.match_type ORDER BY o.match_type)
      FROM pg_temp.cases c,
           LATERAL pg_temp.reference(c.country, c.postal_code, c.brand_code, c.product_code, c.dealer_number,
                                     c.dealer_group, '{}', c.state_code) o
$$;

SELECT is(pg_temp.reference_rules(),
          ARRAY['Dealer Group', 'Default', 'Inventory', 'Pre-assigned', 'Radius', 'Territory'],
          'reference: the cases exercise every rule');
SELECT is_empty($$SELECT * FROM pg_temp.reference_mismatches()$$,
                'reference: route() and locate_dealers decide as the reference, product routing off, inventory routing on');

-- In a savepoint: product routing on, inventory routing off, territories
-- replaced, a group's dealers deactivated, a dealer moved to the other
-- country, another to Chicago, stock sold out.  The model follows this
-- transaction's own uncommitted changes, then their rollback.
SAVEPOINT reconfigured;
SET LOCAL client_min_messages = error;
UPDATE settings SET product_routing_enabled = true, inventory_routing_enabled = false, radius_miles = 300;
DELETE FROM territories WHERE kind IN ('county', 'postal');
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT r.dealer_number, 'PB1', 'state', r.country, r.state_code
  FROM ranked_dealers r JOIN dealers d USING (dealer_number)
 WHERE r.n BETWEEN 101 AND 160 AND r.state_code IS NOT NULL AND d.country = r.country
   AND EXISTS (SELECT FROM dealer_brands b WHERE b.dealer_number = r.dealer_number AND b.brand_code = 'PB1')
ON CONFLICT DO NOTHING;
UPDATE dealers SET active_for_sales = false WHERE dealer_group = 'PG1';
UPDATE dealers SET country = CASE country WHEN 'US' THEN 'CA' ELSE 'US' END
 WHERE dealer_number = (SELECT dealer_number FROM ranked_dealers WHERE n = 160);
UPDATE dealers SET location = 'SRID=4326;POINT(-87.6298 41.8781)'
 WHERE dealer_number = (SELECT dealer_number FROM ranked_dealers WHERE n = 161);
UPDATE inventory SET quantity = 0 WHERE product_code = 'PI2';
SET LOCAL client_min_messages = warning;
SELECT is(pg_temp.reference_rules(),
          ARRAY['Dealer Group', 'Default', 'Pre-assigned', 'Radius', 'Territory'],
          'reference, reconfigured: the cases exercise every rule that is on');
SELECT is_empty($$SELECT * FROM pg_temp.reference_mismatches()$$,
                'reference, reconfigured in this transaction: route() and locate_dealers decide as the reference');
SELECT ok((SELECT bool_and(r.product_code IS NULL OR r.match_type NOT IN ('Territory', 'Radius')
                           OR EXISTS (SELECT FROM product_assignments a
                                       WHERE a.dealer_number = r.dealer_number AND a.product_code = r.product_code))
             FROM (SELECT c.product_code, d.dealer_number, d.match_type
                     FROM pg_temp.cases c,
                          LATERAL aimroute.route(c.country, c.postal_code, c.brand_code, c.product_code) d) r),
          'reference, reconfigured: product routing gives Territory and Radius leads only to dealers assigned the product');
ROLLBACK TO SAVEPOINT reconfigured;
SELECT is_empty($$SELECT * FROM pg_temp.reference_mismatches()$$,
                'reference, the savepoint rolled back: route() and locate_dealers decide as before');
SELECT ok((SELECT NOT product_routing_enabled AND inventory_routing_enabled FROM settings),
          'the savepoint rolled back: the settings are the ones before it');

SELECT * FROM finish();
ROLLBACK;
