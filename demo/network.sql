--
-- demo/network.sql: the demo dealer network of Tamarack Outdoor Group, a
-- fictional OEM of boats, RVs and powersports vehicles.
--
--     psql -v ON_ERROR_STOP=1 -d aimroute -f demo/network.sql
--
-- Needs the postal codes loaded (aimroute.load_postal_codes).  Idempotent:
-- it replaces the previous demo network, in one transaction, so a failure
-- leaves the previous network in place.  Demo dealers are updated in place,
-- not deleted and inserted again, so that leads already routed to them (a
-- foreign key) do not stop a reload.
-- Deterministic: every "random" choice is an ordering by md5() of fixed
-- text, so every run on the same postal data gives the same network.
--
-- The demo owns the dealers numbered HQ-nnnn, US-nnnn and CA-nnnn (and
-- with them their regions, brands, products, inventory and territories)
-- and the four brands below; nothing else is touched, except
-- settings.default_dealer_number, which is set to HQ-0001.
-- docs/demo.md describes the network.
--
\set ON_ERROR_STOP 1

BEGIN;
-- aimroute first, then PostGIS wherever it is (public, a schema of its own,
-- or aimroute when CASCADE created it).
SELECT set_config('search_path', 'aimroute, pg_catalog, ' || e.extnamespace::regnamespace, true) AS search_path
  FROM pg_extension e WHERE e.extname = 'postgis' \gset

-- A stable non-negative number from a text: the demo's only "randomness".
CREATE FUNCTION pg_temp.demo_hash(text) RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT ('x' || substr(md5('tamarack:' || $1), 1, 7))::bit(28)::integer $$;

------------------------------------------------------------------------------
-- 1. Clear what the previous demo network holds.
------------------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM aimroute.postal_codes WHERE country = 'US' AND postal_code = '49757')
       OR NOT EXISTS (SELECT FROM aimroute.postal_codes WHERE country = 'CA' AND postal_code = 'P0S') THEN
        RAISE EXCEPTION 'the demo network needs the shipped postal codes, and they are not loaded'
            USING HINT = 'Run SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path()); first.';
    END IF;
END
$$;

-- The default dealer is referenced by settings: let go of a demo dealer
-- that this network may delete.  HQ-0001 is never deleted, and the default
-- cannot be cleared once leads exist, so it is the one to hold on to.
UPDATE aimroute.settings
   SET default_dealer_number = CASE WHEN EXISTS (SELECT FROM aimroute.dealers WHERE dealer_number = 'HQ-0001')
                                    THEN 'HQ-0001' END
 WHERE default_dealer_number ~ '^(HQ|US|CA)-[0-9]{4}$'
   AND default_dealer_number <> 'HQ-0001';

-- What the demo dealers hold.  The dealer rows themselves are kept and
-- updated in place below (leads routed to a demo dealer reference it);
-- only demo dealers that are no longer part of the network are deleted.
DELETE FROM aimroute.territories         WHERE dealer_number ~ '^(HQ|US|CA)-[0-9]{4}$';
DELETE FROM aimroute.inventory           WHERE dealer_number ~ '^(HQ|US|CA)-[0-9]{4}$';
DELETE FROM aimroute.product_assignments WHERE dealer_number ~ '^(HQ|US|CA)-[0-9]{4}$';
DELETE FROM aimroute.dealer_brands       WHERE dealer_number ~ '^(HQ|US|CA)-[0-9]{4}$';

------------------------------------------------------------------------------
-- 2. Brands and their products (products have no table of their own: a
--    product code is what leads, product_assignments and inventory share).
------------------------------------------------------------------------------

INSERT INTO aimroute.brands (brand_code, name) VALUES
    ('LWB', 'Loonwater Boats'),       -- aluminium fishing boats
    ('DLP', 'Driftline Pontoons'),    -- pontoon and tritoon boats
    ('PCR', 'Pinecairn RV'),          -- travel trailers, fifth wheels
    ('FPS', 'Frostpeak Powersports')  -- ATVs, side-by-sides, snowmobiles
ON CONFLICT (brand_code) DO UPDATE SET name = EXCLUDED.name;

CREATE TEMP TABLE demo_products (brand_code text, product_code text) ON COMMIT DROP;
INSERT INTO demo_products VALUES
    ('LWB', 'LWB-FISH16'), ('LWB', 'LWB-FISH18'), ('LWB', 'LWB-BASS19'), ('LWB', 'LWB-WALK21'),
    ('DLP', 'DLP-PONT20'), ('DLP', 'DLP-PONT22'), ('DLP', 'DLP-TRI24'),
    ('PCR', 'PCR-TT22'), ('PCR', 'PCR-TT27'), ('PCR', 'PCR-TH30'), ('PCR', 'PCR-FW32'),
    ('FPS', 'FPS-ATV570'), ('FPS', 'FPS-SXS1000'), ('FPS', 'FPS-SNO850'), ('FPS', 'FPS-YTH110');

------------------------------------------------------------------------------
-- 3. Where the dealers go: every US state and DC, every Canadian province
--    and territory, each with its principal time zone.
------------------------------------------------------------------------------

CREATE TEMP TABLE demo_regions (country text, state_code text, timezone text) ON COMMIT DROP;
INSERT INTO demo_regions VALUES
    ('US', 'AL', 'America/Chicago'),  ('US', 'AK', 'America/Anchorage'), ('US', 'AZ', 'America/Phoenix'),
    ('US', 'AR', 'America/Chicago'),  ('US', 'CA', 'America/Los_Angeles'), ('US', 'CO', 'America/Denver'),
    ('US', 'CT', 'America/New_York'), ('US', 'DE', 'America/New_York'),  ('US', 'DC', 'America/New_York'),
    ('US', 'FL', 'America/New_York'), ('US', 'GA', 'America/New_York'),  ('US', 'HI', 'Pacific/Honolulu'),
    ('US', 'ID', 'America/Boise'),    ('US', 'IL', 'America/Chicago'),   ('US', 'IN', 'America/Indiana/Indianapolis'),
    ('US', 'IA', 'America/Chicago'),  ('US', 'KS', 'America/Chicago'),   ('US', 'KY', 'America/New_York'),
    ('US', 'LA', 'America/Chicago'),  ('US', 'ME', 'America/New_York'),  ('US', 'MD', 'America/New_York'),
    ('US', 'MA', 'America/New_York'), ('US', 'MI', 'America/Detroit'),   ('US', 'MN', 'America/Chicago'),
    ('US', 'MS', 'America/Chicago'),  ('US', 'MO', 'America/Chicago'),   ('US', 'MT', 'America/Denver'),
    ('US', 'NE', 'America/Chicago'),  ('US', 'NV', 'America/Los_Angeles'), ('US', 'NH', 'America/New_York'),
    ('US', 'NJ', 'America/New_York'), ('US', 'NM', 'America/Denver'),    ('US', 'NY', 'America/New_York'),
    ('US', 'NC', 'America/New_York'), ('US', 'ND', 'America/Chicago'),   ('US', 'OH', 'America/New_York'),
    ('US', 'OK', 'America/Chicago'),  ('US', 'OR', 'America/Los_Angeles'), ('US', 'PA', 'America/New_York'),
    ('US', 'RI', 'America/New_York'), ('US', 'SC', 'America/New_York'),  ('US', 'SD', 'America/Chicago'),
    ('US', 'TN', 'America/Chicago'),  ('US', 'TX', 'America/Chicago'),   ('US', 'UT', 'America/Denver'),
    ('US', 'VT', 'America/New_York'), ('US', 'VA', 'America/New_York'),  ('US', 'WA', 'America/Los_Angeles'),
    ('US', 'WV', 'America/New_York'), ('US', 'WI', 'America/Chicago'),   ('US', 'WY', 'America/Denver'),
    ('CA', 'AB', 'America/Edmonton'), ('CA', 'BC', 'America/Vancouver'), ('CA', 'MB', 'America/Winnipeg'),
    ('CA', 'NB', 'America/Moncton'),  ('CA', 'NL', 'America/St_Johns'),  ('CA', 'NS', 'America/Halifax'),
    ('CA', 'NT', 'America/Yellowknife'), ('CA', 'NU', 'America/Iqaluit'), ('CA', 'ON', 'America/Toronto'),
    ('CA', 'PE', 'America/Halifax'),  ('CA', 'QC', 'America/Toronto'),   ('CA', 'SK', 'America/Regina'),
    ('CA', 'YT', 'America/Whitehorse');

------------------------------------------------------------------------------
-- 4. Dealers.
------------------------------------------------------------------------------

-- The three dealers every demo, test and document can name:
--  HQ-0001  the corporate lead desk, the default dealer.  It sells nothing
--           and is not active for sales, so it is never a candidate; it
--           receives only what no rule places.
--  US-0001  on Mackinac Island, Michigan (ZIP 49757), and
--  CA-0001  in Killarney, Ontario (FSA P0M): both sell Loonwater Boats.  A
--           Loonwater lead from Batchawana Bay, Ontario (FSA P0S) is 76 miles
--           from Mackinac Island and 158 from Killarney, and must still go to
--           Killarney: routing never crosses a country line.
--
-- P0M is in the shipped data, but its line has shifted columns and no
-- latitude, so the loader rejects it (docs/data.md, "Known flaws"): the
-- Killarney dealer is given its location and province explicitly.
INSERT INTO aimroute.dealers
        (dealer_number, name, country, postal_code, state_code, location, active_for_sales, timezone)
VALUES  ('HQ-0001', 'Tamarack Outdoor Group - Corporate Lead Desk', 'US', '55802', NULL, NULL, false, 'America/Chicago'),
        ('US-0001', 'Mackinac Island Marine', 'US', '49757', NULL, NULL, true, 'America/Detroit'),
        ('CA-0001', 'Killarney Bay Marine', 'CA', 'P0M', 'ON',
         ST_SetSRID(ST_MakePoint(-81.5125, 45.9700), 4326)::geography, true, 'America/Toronto')
ON CONFLICT (dealer_number) DO UPDATE SET
    name = EXCLUDED.name, country = EXCLUDED.country, postal_code = EXCLUDED.postal_code,
    state_code = EXCLUDED.state_code, county = EXCLUDED.county, location = EXCLUDED.location,
    active_for_sales = EXCLUDED.active_for_sales, dealer_group = NULL, timezone = EXCLUDED.timezone;

-- The generated dealers, planned in a temporary table: how many per state
-- (about 300 in the US, at least 2 per state, the rest in proportion to
-- the state's ZIP codes; about 40 in Canada, at least 1 per province or
-- territory), at which postal codes (the first ones in md5 order among
-- those with a centre point), with which brands and names.
CREATE TEMP TABLE demo_plan ON COMMIT DROP AS
WITH candidates AS (
    -- Postal codes a dealer may stand at: a centre point on the right side
    -- of the globe, a state code, a readable place name.
    SELECT p.country, p.postal_code, p.place_name, p.state_code, p.centroid, r.timezone
      FROM aimroute.postal_codes p
      JOIN demo_regions r USING (country, state_code)
     WHERE p.centroid IS NOT NULL
       AND ST_X(p.centroid::geometry) BETWEEN -180 AND -50
       AND ST_Y(p.centroid::geometry) BETWEEN 15 AND 75
       AND p.place_name NOT LIKE '%' || U&'\FFFD' || '%'
       AND NOT (p.country = 'US' AND p.postal_code = '49757')
), picked AS (
    SELECT c.*,
           row_number() OVER (PARTITION BY c.country, c.state_code
                              ORDER BY md5('site:' || c.postal_code), c.postal_code) AS pick,
           count(*) OVER (PARTITION BY c.country, c.state_code) AS state_codes,
           count(*) OVER (PARTITION BY c.country) AS country_codes
      FROM candidates c
)
SELECT p.country,
       p.country || '-' || lpad((1 + row_number() OVER (PARTITION BY p.country
                                                       ORDER BY p.state_code, p.pick))::text, 4, '0')
           AS dealer_number,
       p.postal_code, p.state_code, p.timezone,
       -- A town to name the dealer after: Canadian FSA names are areas
       -- ("London (talbot / Lambeth)", "Lethbridge West And Central").
       CASE p.country
           WHEN 'US' THEN p.place_name
           ELSE regexp_replace(initcap(btrim(regexp_replace(
                    regexp_replace(p.place_name, '\s*\(.*$', ''),
                    '(\s+(north|south|east|west|central|northeast|northwest|southeast|southwest|and|inner|outer|upper|lower|mid|region))+$',
                    '', 'i'))), '''S\y', '''s', 'g')
       END AS town,
       -- Distance to the Batchawana Bay FSA: no generated dealer within
       -- 160 miles of it sells Loonwater Boats, so that Mackinac Island and
       -- Killarney stay the closest Loonwater dealers of their countries.
       ST_Distance(p.centroid, (SELECT centroid FROM aimroute.postal_codes
                                 WHERE country = 'CA' AND postal_code = 'P0S')) / 1609.344
           AS miles_to_p0s
  FROM picked p
 WHERE p.pick <= CASE p.country
                     WHEN 'US' THEN greatest(2, round(297.0 * p.state_codes / p.country_codes))
                     ELSE 1 + round(27.0 * p.state_codes / p.country_codes)
                 END;
ANALYZE demo_plan;

-- 1 to 3 brands per dealer.
CREATE TEMP TABLE demo_plan_brands ON COMMIT DROP AS
SELECT d.dealer_number, b.brand_code, b.brand_rank
  FROM demo_plan d
 CROSS JOIN LATERAL (
        SELECT brand_code, row_number() OVER (ORDER BY md5(d.dealer_number || ':' || brand_code)) AS brand_rank
          FROM aimroute.brands
         WHERE brand_code IN ('LWB', 'DLP', 'PCR', 'FPS')
           AND NOT (brand_code = 'LWB' AND coalesce(d.miles_to_p0s < 160, false))
       ) b
 WHERE b.brand_rank <= 1 + pg_temp.demo_hash('brands:' || d.dealer_number) % 3;
ANALYZE demo_plan_brands;

INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code, timezone)
SELECT d.dealer_number,
       format(CASE
                  WHEN nb.brands = 3 THEN (ARRAY['%s Outdoor Center', '%s Boat & RV', '%s Outdoor Sports'])[1 + h % 3]
                  WHEN pb.brand_code IN ('LWB', 'DLP') THEN (ARRAY['%s Marine', '%s Boats & Motors', 'Marine Center of %s', '%s Marina Sales'])[1 + h % 4]
                  WHEN pb.brand_code = 'PCR' THEN (ARRAY['%s RV Center', '%s RV & Camping', 'RV Country of %s', '%s RV Sales'])[1 + h % 4]
                  ELSE (ARRAY['%s Powersports', '%s Motorsports', '%s Sled & ATV', 'Powersports of %s'])[1 + h % 4]
              END, d.town),
       d.country, d.postal_code, d.timezone
  FROM demo_plan d
  JOIN demo_plan_brands pb ON pb.dealer_number = d.dealer_number AND pb.brand_rank = 1
  JOIN (SELECT dealer_number, count(*) AS brands FROM demo_plan_brands GROUP BY dealer_number) nb
       ON nb.dealer_number = d.dealer_number
 CROSS JOIN LATERAL (SELECT pg_temp.demo_hash('name:' || d.dealer_number) AS h) hh
 ORDER BY d.dealer_number
ON CONFLICT (dealer_number) DO UPDATE SET
    name = EXCLUDED.name, country = EXCLUDED.country, postal_code = EXCLUDED.postal_code,
    state_code = EXCLUDED.state_code, county = EXCLUDED.county, location = EXCLUDED.location,
    active_for_sales = true, dealer_group = NULL, timezone = EXCLUDED.timezone;

-- Demo dealers of an earlier network that this one no longer has (only
-- when the postal data changed).
DELETE FROM aimroute.dealers d
 WHERE d.dealer_number ~ '^(HQ|US|CA)-[0-9]{4}$'
   AND d.dealer_number NOT IN ('HQ-0001', 'US-0001', 'CA-0001')
   AND NOT EXISTS (SELECT FROM demo_plan p WHERE p.dealer_number = d.dealer_number);

-- A handful of dealers not active for sales (they stay in the network, and
-- in the locator's data, but receive no leads).
UPDATE aimroute.dealers d
   SET active_for_sales = false
 WHERE d.dealer_number IN (
        (SELECT dealer_number FROM demo_plan WHERE country = 'US'
          ORDER BY md5('inactive:' || dealer_number) LIMIT 6)
        UNION ALL
        (SELECT dealer_number FROM demo_plan WHERE country = 'CA'
          ORDER BY md5('inactive:' || dealer_number) LIMIT 2));

-- Dealer groups: about half of the dealers of the group's states.
UPDATE aimroute.dealers d
   SET dealer_group = g.dealer_group
  FROM (VALUES ('US', 'MI', 'Great Lakes Marine Group'), ('US', 'WI', 'Great Lakes Marine Group'),
               ('US', 'MN', 'Great Lakes Marine Group'), ('US', 'OH', 'Great Lakes Marine Group'),
               ('US', 'TX', 'Sunbelt Powersports'),     ('US', 'OK', 'Sunbelt Powersports'),
               ('US', 'FL', 'Sunbelt Powersports'),     ('US', 'GA', 'Sunbelt Powersports'),
               ('US', 'WA', 'Cascade RV Centers'),      ('US', 'OR', 'Cascade RV Centers'),
               ('US', 'ID', 'Cascade RV Centers'),
               ('CA', 'AB', 'Prairie Outdoor Group'),   ('CA', 'SK', 'Prairie Outdoor Group'),
               ('CA', 'MB', 'Prairie Outdoor Group'))
       AS g (country, state_code, dealer_group)
 WHERE d.country = g.country AND d.state_code = g.state_code
   AND d.dealer_number ~ '^(US|CA)-[0-9]{4}$'
   AND d.dealer_number NOT IN ('US-0001', 'CA-0001')
   AND pg_temp.demo_hash('group:' || d.dealer_number) % 2 = 0;

-- Sales regions (dealers.region), which scope the notification contacts
-- of demo/delivery.sql.  The corporate lead desk has none.
UPDATE aimroute.dealers d
   SET region = CASE
           WHEN d.country = 'CA' AND d.state_code IN ('ON', 'QC', 'NB', 'NS', 'PE', 'NL') THEN 'Canada East'
           WHEN d.country = 'CA' THEN 'Canada West'
           WHEN d.state_code IN ('MI', 'WI', 'MN', 'OH', 'IL', 'IN') THEN 'Great Lakes'
           WHEN d.state_code IN ('ME', 'NH', 'VT', 'MA', 'RI', 'CT', 'NY', 'NJ', 'PA', 'DE', 'MD', 'DC') THEN 'Northeast'
           WHEN d.state_code IN ('VA', 'WV', 'KY', 'TN', 'NC', 'SC', 'GA', 'FL', 'AL', 'MS') THEN 'Southeast'
           WHEN d.state_code IN ('ND', 'SD', 'NE', 'KS', 'IA', 'MO', 'OK', 'TX', 'AR', 'LA') THEN 'Central'
           ELSE 'West'
       END
 WHERE d.dealer_number ~ '^(US|CA)-[0-9]{4}$';
UPDATE aimroute.dealers SET region = NULL WHERE dealer_number ~ '^HQ-[0-9]{4}$';

------------------------------------------------------------------------------
-- 5. Brands sold, product assignments, inventory.
------------------------------------------------------------------------------

INSERT INTO aimroute.dealer_brands (dealer_number, brand_code)
SELECT dealer_number, brand_code FROM demo_plan_brands
UNION ALL
VALUES ('US-0001', 'LWB'), ('US-0001', 'DLP'),
       ('CA-0001', 'LWB'), ('CA-0001', 'FPS');

-- Each dealer is assigned 2 or more of the products of each brand it sells.
INSERT INTO aimroute.product_assignments (dealer_number, product_code)
SELECT db.dealer_number, p.product_code
  FROM aimroute.dealer_brands db
 CROSS JOIN LATERAL (
        SELECT product_code,
               row_number() OVER (ORDER BY md5(db.dealer_number || ':' || product_code)) AS product_rank,
               count(*) OVER () AS products
          FROM demo_products dp
         WHERE dp.brand_code = db.brand_code
       ) p
 WHERE db.dealer_number ~ '^(US|CA)-[0-9]{4}$'
   AND p.product_rank <= 2 + pg_temp.demo_hash('products:' || db.dealer_number || db.brand_code) % (p.products - 1);

-- About three in four assigned products have an inventory row, 0 to 5 units.
INSERT INTO aimroute.inventory (dealer_number, product_code, quantity)
SELECT dealer_number, product_code,
       pg_temp.demo_hash('quantity:' || dealer_number || product_code) % 6
  FROM aimroute.product_assignments
 WHERE dealer_number ~ '^(US|CA)-[0-9]{4}$'
   AND pg_temp.demo_hash('stocked:' || dealer_number || product_code) % 4 <> 0;

------------------------------------------------------------------------------
-- 6. Territories.
--
-- Nothing here covers the Batchawana Bay FSA P0S, Ontario or Canada for
-- Loonwater Boats, so that a Loonwater lead from P0S is routed by radius.
------------------------------------------------------------------------------

-- Postal territories for all brands: 30 US and 4 Canadian dealers hold
-- their own postal code and the nearest others of their state (5 in the US,
-- 2 in Canada).  Where two dealers would take the same code, the closer
-- dealer gets it (one holder per postal code and brand scope).
WITH holders AS (
    SELECT d.dealer_number, d.country, d.state_code, d.location,
           CASE d.country WHEN 'US' THEN 6 ELSE 3 END AS codes
      FROM aimroute.dealers d
     WHERE d.dealer_number IN (
            (SELECT dealer_number FROM demo_plan WHERE country = 'US'
              ORDER BY md5('postal:' || dealer_number) LIMIT 30)
            UNION ALL
            (SELECT dealer_number FROM demo_plan WHERE country = 'CA'
              ORDER BY md5('postal:' || dealer_number) LIMIT 4))
), wanted AS (
    SELECT h.dealer_number, h.country, n.postal_code, n.miles
      FROM holders h
     CROSS JOIN LATERAL (
            SELECT p.postal_code, ST_Distance(p.centroid, h.location) / 1609.344 AS miles
              FROM aimroute.postal_codes p
             WHERE p.country = h.country AND p.state_code = h.state_code
               AND p.centroid IS NOT NULL
               AND NOT (p.country = 'CA' AND p.postal_code = 'P0S')
             ORDER BY p.centroid <-> h.location, p.postal_code
             LIMIT h.codes
           ) n
)
INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
SELECT DISTINCT ON (w.country, w.postal_code)
       w.dealer_number, NULL, 'postal', w.country, w.postal_code
  FROM wanted w
 WHERE NOT EXISTS (SELECT FROM aimroute.territories t
                    WHERE t.kind = 'postal' AND t.country = w.country
                      AND t.code = w.postal_code AND t.brand_code IS NULL)
 ORDER BY w.country, w.postal_code, w.miles, w.dealer_number;

-- Postal Brand Territories: 10 US dealers hold their own ZIP code and the
-- 3 nearest others of their state for one of their brands.
WITH holders AS (
    SELECT d.dealer_number, d.country, d.state_code, d.location,
           (SELECT db.brand_code FROM aimroute.dealer_brands db
             WHERE db.dealer_number = d.dealer_number
             ORDER BY md5('brand-postal:' || d.dealer_number || db.brand_code) LIMIT 1) AS brand_code
      FROM aimroute.dealers d
     WHERE d.dealer_number IN (
            SELECT dealer_number FROM demo_plan WHERE country = 'US'
             ORDER BY md5('brand-postal:' || dealer_number) LIMIT 10)
), wanted AS (
    SELECT h.dealer_number, h.brand_code, h.country, n.postal_code, n.miles
      FROM holders h
     CROSS JOIN LATERAL (
            SELECT p.postal_code, ST_Distance(p.centroid, h.location) / 1609.344 AS miles
              FROM aimroute.postal_codes p
             WHERE p.country = h.country AND p.state_code = h.state_code
               AND p.centroid IS NOT NULL
             ORDER BY p.centroid <-> h.location, p.postal_code
             LIMIT 4
           ) n
)
INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
SELECT DISTINCT ON (w.country, w.postal_code, w.brand_code)
       w.dealer_number, w.brand_code, 'postal', w.country, w.postal_code
  FROM wanted w
 WHERE NOT EXISTS (SELECT FROM aimroute.territories t
                    WHERE t.kind = 'postal' AND t.country = w.country
                      AND t.code = w.postal_code AND t.brand_code = w.brand_code)
 ORDER BY w.country, w.postal_code, w.brand_code, w.miles, w.dealer_number;

-- County territories: Mackinac Island Marine holds its county, 12 US
-- dealers hold theirs for all brands, 4 more for one brand only.
INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
SELECT 'US-0001', NULL, 'county', 'US', 'MI/Mackinac'
UNION ALL
(SELECT d.dealer_number, NULL, 'county', d.country, d.state_code || '/' || d.county
   FROM aimroute.dealers d JOIN demo_plan p USING (dealer_number)
  WHERE d.country = 'US' AND d.county IS NOT NULL
  ORDER BY md5('county:' || d.dealer_number) LIMIT 12)
UNION ALL
(SELECT d.dealer_number,
        (SELECT db.brand_code FROM aimroute.dealer_brands db
          WHERE db.dealer_number = d.dealer_number
          ORDER BY md5('brand-county:' || d.dealer_number || db.brand_code) LIMIT 1),
        'county', d.country, d.state_code || '/' || d.county
   FROM aimroute.dealers d JOIN demo_plan p USING (dealer_number)
  WHERE d.country = 'US' AND d.county IS NOT NULL
  ORDER BY md5('brand-county:' || d.dealer_number) LIMIT 4);

-- State territories: a Wyoming dealer holds Wyoming and a Prince Edward
-- Island dealer the whole island, for all brands; an Alaska dealer holds
-- Alaska for Frostpeak Powersports (or, if no Alaska dealer sells it, for
-- one of its own brands).
INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
(SELECT p.dealer_number, NULL, 'state', p.country, p.state_code
   FROM demo_plan p JOIN aimroute.dealers d USING (dealer_number)
  WHERE p.country = 'US' AND p.state_code = 'WY' AND d.active_for_sales
  ORDER BY p.dealer_number LIMIT 1)
UNION ALL
(SELECT p.dealer_number, NULL, 'state', p.country, p.state_code
   FROM demo_plan p JOIN aimroute.dealers d USING (dealer_number)
  WHERE p.country = 'CA' AND p.state_code = 'PE' AND d.active_for_sales
  ORDER BY p.dealer_number LIMIT 1)
UNION ALL
(SELECT p.dealer_number, b.brand_code, 'state', p.country, p.state_code
   FROM demo_plan p JOIN demo_plan_brands b USING (dealer_number)
   JOIN aimroute.dealers d USING (dealer_number)
  WHERE p.country = 'US' AND p.state_code = 'AK' AND d.active_for_sales
  ORDER BY b.brand_code = 'FPS' DESC, p.dealer_number, b.brand_code LIMIT 1);

-- A country territory: one Canadian dealer is the national distributor of
-- Frostpeak Powersports (a Brand Territory for all of Canada).
INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
SELECT p.dealer_number, b.brand_code, 'country', 'CA', 'CA'
  FROM demo_plan p JOIN demo_plan_brands b USING (dealer_number)
  JOIN aimroute.dealers d USING (dealer_number)
 WHERE p.country = 'CA' AND d.active_for_sales
 ORDER BY b.brand_code = 'FPS' DESC, b.brand_rank, md5('country:' || p.dealer_number), b.brand_code
 LIMIT 1;

------------------------------------------------------------------------------
-- 7. The default dealer.
------------------------------------------------------------------------------

UPDATE aimroute.settings SET default_dealer_number = 'HQ-0001';

COMMIT;
