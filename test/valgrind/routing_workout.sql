-- test/valgrind/routing_workout.sql: the routing C code on many varied
-- inputs, cheaply enough for scripts/valgrind.sh.
--
-- test/routing_property.sql checks every decision against the rules
-- written again in SQL; under memcheck those SQL checks (a spheroid
-- distance from every lead to every dealer, by PostGIS) take over twenty
-- minutes.  This file runs the same kinds of inputs through the C paths
-- (the routing trigger, route(), locate_dealers, simulate_routing, explain_lead, routing_cache_info, the
-- postal-code loader) and checks only what C answers against C, so almost
-- all of its time is spent in aimroute.  A pseudo-random but fixed network
-- (md5 of fixed strings) on the shipped postal codes: ~200 dealers,
-- territories of every kind, dealer groups, products and inventory; ~250
-- leads plus odd inputs; then a reconfiguration and a second batch.
-- Everything is rolled back.
--
--     pg_prove -d DB --set sample=FILE test/valgrind/routing_workout.sql
--
-- sample is a postal-code file in the shipped format (scripts/valgrind.sh
-- cuts one from the shipped file); its codes are loaded again.
BEGIN;
SELECT plan(13);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = warning;

-- A number from 0 to 999 picked by a text.
CREATE FUNCTION pg_temp.pick(s text) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT (('x' || substr(md5(s), 1, 7))::bit(28)::integer) % 1000
$$;

-- The loader, on codes that are all there already (its warnings about
-- the codes without a county are expected).
SET LOCAL client_min_messages = error;
SELECT cmp_ok(load_postal_codes(:'sample'), '>', 0::bigint, 'the postal-code sample loads again');
SET LOCAL client_min_messages = warning;

INSERT INTO brands VALUES ('WK1', 'Workout One'), ('WK2', 'Workout Two'), ('WK3', 'Workout Three');

-- Dealers: 200 picked postal codes (a few have no centre point), 10 more
-- sharing a location with one of them.
CREATE TEMP TABLE wk_sites ON COMMIT DROP AS
SELECT country, postal_code, row_number() OVER (ORDER BY md5('wk-site ' || country || postal_code)) AS n
  FROM postal_codes
 ORDER BY md5('wk-site ' || country || postal_code) LIMIT 200;
INSERT INTO wk_sites
SELECT country, postal_code, 200 + n FROM wk_sites WHERE n <= 10;
INSERT INTO wk_sites
SELECT country, postal_code, 210 + row_number() OVER (ORDER BY postal_code)
  FROM (SELECT country, postal_code FROM postal_codes WHERE centroid IS NULL ORDER BY postal_code LIMIT 3) x;
INSERT INTO dealers (dealer_number, name, country, postal_code, active_for_sales, dealer_group)
SELECT 'WK' || lpad(n::text, 3, '0'), 'Workout dealer ' || n, country, postal_code,
       pg_temp.pick('active ' || n) >= 100,
       CASE WHEN pg_temp.pick('group ' || n) < 150 THEN 'WKG' || pg_temp.pick('group ' || n) % 3 END
  FROM wk_sites;
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES ('WKHQ', 'Workout HQ', 'US', '10001');
INSERT INTO dealer_brands
SELECT d.dealer_number, b.brand_code
  FROM dealers d, (VALUES ('WK1', 700), ('WK2', 400), ('WK3', 150)) AS b(brand_code, below)
 WHERE d.dealer_number LIKE 'WK%' AND d.dealer_number <> 'WKHQ'
   AND pg_temp.pick(d.dealer_number || b.brand_code) < b.below;
UPDATE settings SET default_dealer_number = 'WKHQ', radius_enabled = true, radius_miles = 400,
                    radius_countries = '{US,CA}', product_routing_enabled = true,
                    inventory_routing_enabled = true;

-- Territories of every kind, some overlapping, some of inactive dealers.
CREATE TEMP TABLE wk_ranked ON COMMIT DROP AS
SELECT d.*, row_number() OVER (ORDER BY md5('wk-territory ' || d.dealer_number)) AS n
  FROM dealers d WHERE d.dealer_number LIKE 'WK_%' AND d.dealer_number <> 'WKHQ';
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT dealer_number, NULL, 'state', country, state_code FROM wk_ranked WHERE n <= 10 AND state_code IS NOT NULL;
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT dealer_number, NULL, 'county', country, state_code || '/' || county
  FROM wk_ranked WHERE n BETWEEN 11 AND 25 AND county IS NOT NULL;
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT DISTINCT ON (country, postal_code) dealer_number, NULL, 'postal', country, postal_code
  FROM wk_ranked WHERE n BETWEEN 26 AND 45 AND postal_code IS NOT NULL
 ORDER BY country, postal_code, n;
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT r.dealer_number, 'WK2', 'state', 'US', (ARRAY['MI', 'WI', 'TX', 'CA', 'NY', 'FL', 'OH'])[1 + r.n % 7]
  FROM wk_ranked r
 WHERE r.n BETWEEN 46 AND 80 AND r.country = 'US'
   AND EXISTS (SELECT FROM dealer_brands b WHERE b.dealer_number = r.dealer_number AND b.brand_code = 'WK2')
ON CONFLICT DO NOTHING;
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT r.dealer_number, 'WK3', 'country', 'CA', NULL
  FROM wk_ranked r
 WHERE r.country = 'CA' AND EXISTS (SELECT FROM dealer_brands b WHERE b.dealer_number = r.dealer_number AND b.brand_code = 'WK3')
 ORDER BY r.n LIMIT 1;

-- Products and stock.
INSERT INTO product_assignments
SELECT dealer_number, 'WKP-' || (1 + pg_temp.pick('product ' || dealer_number) % 3)
  FROM dealers WHERE dealer_number LIKE 'WK0%' AND pg_temp.pick('assigned ' || dealer_number) < 500;
INSERT INTO inventory
SELECT dealer_number, 'WKP-2', pg_temp.pick('stock ' || dealer_number) % 4
  FROM dealers WHERE dealer_number LIKE 'WK%' AND pg_temp.pick('stocked ' || dealer_number) < 300;

-- Batch 1: 250 picked postal codes with picked brands and products, then
-- the inputs a lead can have wrong: unknown countries and codes, spacing
-- and case, ZIP+4, Canadian full codes, pre-assigned dealers that do not
-- qualify, dealer groups, unknown brands and products.
CREATE TEMP TABLE wk_leads ON COMMIT DROP AS
SELECT country, postal_code, row_number() OVER (ORDER BY md5('wk-lead ' || country || postal_code)) AS n
  FROM postal_codes
 ORDER BY md5('wk-lead ' || country || postal_code) LIMIT 250;
INSERT INTO leads (brand_code, product_code, country, postal_code, comment)
SELECT 'WK' || (1 + pg_temp.pick('brand ' || n) % 3),
       CASE WHEN pg_temp.pick('lead product ' || n) < 300 THEN 'WKP-' || (1 + pg_temp.pick('which ' || n) % 3) END,
       country, postal_code, 'wk1'
  FROM wk_leads ORDER BY n;
INSERT INTO leads (brand_code, product_code, country, postal_code, dealer_number, dealer_group, state_code, comment) VALUES
    ('WK1', NULL, 'USA', '49757-1234', NULL, NULL, NULL, 'wk1'),
    ('WK1', NULL, 'United States', ' 00501 ', NULL, NULL, NULL, 'wk1'),
    ('WK2', NULL, 'can', 'k1a 0b1', NULL, NULL, NULL, 'wk1'),
    ('WK3', NULL, 'CA', 'P0M-1A0', NULL, NULL, NULL, 'wk1'),
    ('WK1', NULL, 'ZZ', '12345', NULL, NULL, NULL, 'wk1'),
    ('WK1', NULL, 'US', 'ABCDE', NULL, NULL, NULL, 'wk1'),
    ('WK1', NULL, 'US', NULL, NULL, NULL, 'MI', 'wk1'),
    ('WK1', NULL, NULL, NULL, NULL, NULL, NULL, 'wk1'),
    ('NOPE', NULL, 'US', '60601', NULL, NULL, NULL, 'wk1'),
    ('WK2', 'NO-SUCH-PRODUCT', 'US', '60601', NULL, NULL, NULL, 'wk1'),
    ('WK2', 'WKP-2', 'US', '48201', NULL, NULL, NULL, 'wk1'),
    ('WK1', NULL, 'US', '90210', 'WK001', NULL, NULL, 'wk1'),
    ('WK1', NULL, 'US', '90210', 'NO-SUCH-DEALER', NULL, NULL, 'wk1'),
    ('WK1', NULL, 'US', '33101', NULL, 'WKG0', NULL, 'wk1'),
    ('WK2', NULL, 'CA', 'T2P', NULL, 'WKG1', NULL, 'wk1'),
    ('WK1', NULL, 'US', '33101', NULL, 'NO-SUCH-GROUP', NULL, 'wk1'),
    ('WK1', NULL, 'Ünïcödé', 'ß-1 ', NULL, NULL, NULL, 'wk1'),
    ('WK1', NULL, 'US', repeat('9', 5000), NULL, NULL, NULL, 'wk1');
INSERT INTO leads (brand_code, country, postal_code, dealer_number, comment)
SELECT 'WK1', 'US', '60601', dealer_number, 'wk1' FROM dealers WHERE NOT active_for_sales LIMIT 3;

-- The same decision by every C path: the one stored by the trigger, route(),
-- simulate_routing and locate_dealers.
CREATE FUNCTION pg_temp.routed(l aimroute.leads) RETURNS text LANGUAGE sql AS $$
    SELECT r.dealer_number || ' ' || r.match_type
      FROM aimroute.route(coalesce(l.country, l.country_input), coalesce(l.postal_code_input, l.postal_code),
                          l.brand_code, l.product_code, l.dealer_number_input, l.dealer_group, '{}',
                          l.state_code) r
$$;
-- route() against the decision stored by the trigger (same = true), or
-- against simulate_routing's under a configuration changed since (false).
CREATE FUNCTION pg_temp.path_mismatches(batch text, same boolean DEFAULT true)
RETURNS TABLE (lead_id bigint, other text, routed text) LANGUAGE sql AS $$
    SELECT l.lead_id, o.answer, pg_temp.routed(l)
      FROM aimroute.leads l
      JOIN (SELECT s.lead_id,
                   CASE WHEN same THEN s.dealer_number || ' ' || s.match_type
                        ELSE s.simulated_dealer_number || ' ' || s.simulated_match_type END
              FROM aimroute.simulate_routing('-infinity', 'infinity') s) AS o(lead_id, answer) USING (lead_id)
     WHERE l.comment = batch AND pg_temp.routed(l) IS DISTINCT FROM o.answer
$$;
CREATE FUNCTION pg_temp.simulate_mismatches(batch text)
RETURNS TABLE (lead_id bigint, stored text, simulated text) LANGUAGE sql AS $$
    SELECT s.lead_id, s.dealer_number || ' ' || s.match_type,
           s.simulated_dealer_number || ' ' || s.simulated_match_type
      FROM aimroute.simulate_routing('-infinity', 'infinity') s
      JOIN aimroute.leads l USING (lead_id)
     WHERE l.comment = batch
       AND (s.simulated_dealer_number, s.simulated_match_type) IS DISTINCT FROM (s.dealer_number, s.match_type)
$$;
-- locate_dealers lists distinct dealers ranked 1..n.
CREATE FUNCTION pg_temp.locator_problems(batch text)
RETURNS TABLE (lead_id bigint, problem text) LANGUAGE sql AS $$
    SELECT l.lead_id, 'ranks ' || string_agg(f.rank::text, ',' ORDER BY f.rank)
      FROM aimroute.leads l,
           LATERAL aimroute.locate_dealers(l.country, l.postal_code, l.brand_code, l.product_code, 6) f
     WHERE l.comment = batch
     GROUP BY l.lead_id
    HAVING min(f.rank) <> 1 OR max(f.rank) <> count(*) OR count(DISTINCT f.rank) <> count(*)
        OR count(DISTINCT f.dealer_number) <> count(*)
$$;

SELECT is((SELECT count(*) FROM leads WHERE comment = 'wk1'), 271::bigint, 'batch 1: every lead was inserted');
SELECT is_empty($$SELECT * FROM pg_temp.path_mismatches('wk1')$$,
                'batch 1: route() gives the decision the trigger stored');
SELECT is_empty($$SELECT * FROM pg_temp.simulate_mismatches('wk1')$$,
                'batch 1: simulate_routing gives the stored decision when nothing changed');
SELECT is_empty($$SELECT * FROM pg_temp.locator_problems('wk1')$$,
                'batch 1: locate_dealers lists distinct dealers ranked 1..n');
SELECT is((SELECT count(*) FROM leads l WHERE l.comment = 'wk1'
             AND NOT EXISTS (SELECT FROM explain_lead(l.lead_id))), 0::bigint,
          'batch 1: every lead has an explanation');
SELECT ok((SELECT dealers > 200 FROM routing_cache_info()), 'the routing cache holds the network');

-- A reconfiguration in the same transaction: nothing stale may be used.
SELECT version AS wk_version FROM routing_cache_info() \gset
DELETE FROM territories WHERE kind = 'state' AND brand_code IS NULL AND dealer_number LIKE 'WK%';
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
SELECT dealer_number, NULL, 'state', country, state_code FROM wk_ranked WHERE n BETWEEN 81 AND 90 AND state_code IS NOT NULL
ON CONFLICT DO NOTHING;
UPDATE dealers SET active_for_sales = NOT active_for_sales
 WHERE dealer_number LIKE 'WK%' AND pg_temp.pick('flip ' || dealer_number) < 100;
UPDATE dealers SET location = 'SRID=4326;POINT(-87.6298 41.8781)' WHERE dealer_number = 'WK005';
UPDATE dealers SET location = NULL WHERE dealer_number = 'WK006';
DELETE FROM dealer_brands WHERE dealer_number = 'WK007';
UPDATE inventory SET quantity = quantity + 1 WHERE dealer_number LIKE 'WK%';
UPDATE settings SET radius_miles = 150, radius_countries = '{US}', inventory_routing_enabled = false;
SELECT ok((SELECT version <> :'wk_version' FROM routing_cache_info()), 'the routing cache was rebuilt');

INSERT INTO leads (brand_code, product_code, country, postal_code, comment)
SELECT 'WK' || (1 + pg_temp.pick('brand 2 ' || n) % 3),
       CASE WHEN pg_temp.pick('lead product 2 ' || n) < 300 THEN 'WKP-' || (1 + pg_temp.pick('which 2 ' || n) % 3) END,
       country, postal_code, 'wk2'
  FROM wk_leads WHERE n % 2 = 0 ORDER BY n;
SELECT is((SELECT count(*) FROM leads WHERE comment = 'wk2'), 125::bigint, 'batch 2: every lead was inserted');
SELECT is_empty($$SELECT * FROM pg_temp.path_mismatches('wk2')$$,
                'batch 2: route() gives the decision the trigger stored');
SELECT is_empty($$SELECT * FROM pg_temp.simulate_mismatches('wk2')$$,
                'batch 2: simulate_routing gives the stored decision when nothing changed since');
SELECT is_empty($$SELECT * FROM pg_temp.path_mismatches('wk1', false)$$,
                'batch 1 again, under the new configuration: route() and simulate_routing agree');
SELECT is_empty($$SELECT * FROM pg_temp.locator_problems('wk2')$$,
                'batch 2: locate_dealers lists distinct dealers ranked 1..n');

SELECT * FROM finish();
ROLLBACK;
