--
-- demo/leads.sql: a batch of about 500 demo sales leads for the Tamarack
-- Outdoor Group network (demo/network.sql), routed as they are inserted.
--
--     psql -v ON_ERROR_STOP=1 -d aimroute -f demo/leads.sql
--     psql -d aimroute -f demo/show_routing.sql        (where they went)
--
-- The customers are invented; their postal codes are real rows of
-- aimroute.postal_codes.  About a third live in the county (or, in Canada,
-- the postal district) of a demo dealer, the rest anywhere in the US and
-- Canada.  The batch holds what a lead desk really receives:
--
--   - all four brands, some leads with a product code;
--   - countries written as codes, alpha-3 codes and names, in any case;
--   - ZIP and ZIP+4 codes; Canadian codes in full, with or without the
--     space, some in lower case, some as the FSA alone;
--   - web leads pre-assigned to a dealer (from a dealer's own page), one
--     to a dealer number that does not exist and one to a dealer that is
--     no longer active for sales;
--   - a few leads from a dealer group's campaign (dealer_group);
--   - bad data: the postal code 1234X, blank postal codes, a misspelt
--     country, a country with no dealers, unknown brand codes;
--   - sources web, api and import;
--   - the showcase lead: a Loonwater Boats customer in Batchawana Bay,
--     Ontario (P0S 1A0).  Mackinac Island Marine (US-0001) is closer, but
--     the lead must go to Killarney Bay Marine (CA-0001): routing never
--     crosses a country line.
--
-- Deterministic: every choice is a hash (md5) of the lead's position in
-- the batch, so every run on the same postal data and network inserts the
-- same leads.  Only lead_id and received_at (spread over the two days
-- before the run) differ between runs.
--
-- Idempotent: demo leads carry comment = 'demo', and the script first
-- deletes the demo leads of an earlier run (with their lead_history).  It
-- runs in one transaction and takes about a second.
--
\set ON_ERROR_STOP 1

BEGIN;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM aimroute.dealers WHERE dealer_number IN ('US-0001', 'CA-0001', 'HQ-0001')
                    HAVING count(*) = 3) THEN
        RAISE EXCEPTION 'the demo leads need the demo dealer network, and it is not loaded'
            USING HINT = 'Run demo/network.sql first.';
    END IF;
END
$$;

DELETE FROM aimroute.leads WHERE comment = 'demo';

-- A number from 0 to 2^28-1 for a lead's position and a purpose.
CREATE FUNCTION pg_temp.pick(g integer, purpose text) RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT ('x' || substr(md5('demo-lead:' || g || ':' || purpose), 1, 7))::bit(28)::integer $$;

-- Element (hash mod length) of an array.
CREATE FUNCTION pg_temp.one_of(g integer, purpose text, choices text[]) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT choices[1 + pg_temp.pick(g, purpose) % cardinality(choices)] $$;

------------------------------------------------------------------------------
-- Where customers live.
------------------------------------------------------------------------------

-- Every usable postal code, with the town a customer would write: a
-- Canadian FSA's name is an area ("London (talbot / Lambeth)", "Whitby
-- Central"), so the part in brackets and a trailing direction go.
CREATE TEMP TABLE demo_places ON COMMIT DROP AS
SELECT p.country, p.postal_code, p.state_code, p.centroid,
       CASE p.country
           WHEN 'US' THEN p.place_name
           ELSE replace(initcap(btrim(regexp_replace(regexp_replace(
                    regexp_replace(p.place_name, '\s*\(.*$', ''),
                    '(\s+(north|south|east|west|central|northeast|northwest|southeast|southwest|and|inner|outer|region))+$',
                    '', 'i'), '-\s+', '-', 'g'))), '''S', '''s')
       END AS city,
       p.state_code || '/' || coalesce(p.county, substr(p.postal_code, 1, 2)) AS district
  FROM aimroute.postal_codes p
 WHERE p.centroid IS NOT NULL
   AND p.state_code IS NOT NULL
   AND p.state_code NOT IN ('AA', 'AE', 'AP')          -- military mail
   AND p.place_name NOT LIKE '%' || U&'\FFFD' || '%'
   AND p.place_name NOT LIKE '%Government%';              -- FSAs of a single building

-- Three pools to draw from, each numbered in md5 order: anywhere in the
-- country, near a demo dealer (its county, or in Canada the first two
-- characters of its FSA), and the states of the dealer groups.
CREATE TEMP TABLE demo_pool ON COMMIT DROP AS
SELECT pool, country, postal_code, state_code, city, centroid,
       row_number() OVER (PARTITION BY pool, country ORDER BY md5(pool || ':' || postal_code), postal_code) AS n,
       count(*) OVER (PARTITION BY pool, country) AS size
  FROM (SELECT 'anywhere' AS pool, p.* FROM demo_places p
        UNION ALL
        SELECT 'near a dealer', p.* FROM demo_places p
         WHERE p.district IN (SELECT d.state_code || '/' || coalesce(d.county, substr(d.postal_code, 1, 2))
                                FROM aimroute.dealers d
                               WHERE d.dealer_number ~ '^(US|CA)-[0-9]{4}$' AND d.active_for_sales)
        UNION ALL
        SELECT g.dealer_group, p.* FROM demo_places p
          JOIN (SELECT DISTINCT dealer_group, country, state_code FROM aimroute.dealers
                 WHERE dealer_group IS NOT NULL AND dealer_number ~ '^(US|CA)-[0-9]{4}$') g
            USING (country, state_code)) pools;
CREATE UNIQUE INDEX ON demo_pool (pool, country, n);
ANALYZE demo_pool;

------------------------------------------------------------------------------
-- The plan of each lead: its position g decides what it is.
------------------------------------------------------------------------------

CREATE TEMP TABLE demo_lead_plan ON COMMIT DROP AS
SELECT g, kind,
       CASE WHEN kind = 'dealer group' THEN
                 CASE WHEN pool = 'Prairie Outdoor Group' THEN 'CA' ELSE 'US' END
            WHEN kind IN ('bad postal code', 'misspelt country', 'unknown dealer') THEN 'US'
            WHEN pg_temp.pick(g, 'country') % 100 < 16 THEN 'CA'
            ELSE 'US'
       END AS country,
       pool,
       -- A group's campaign is for the group's brands.
       CASE pool
           WHEN 'Sunbelt Powersports' THEN 'FPS'
           WHEN 'Cascade RV Centers' THEN 'PCR'
           ELSE pg_temp.one_of(g, 'brand', ARRAY['LWB', 'LWB', 'LWB', 'DLP', 'DLP', 'PCR', 'PCR', 'PCR', 'FPS', 'FPS'])
       END AS brand_code
  FROM (SELECT g, kind,
               CASE WHEN kind = 'dealer group' THEN
                         pg_temp.one_of(g, 'group', ARRAY['Great Lakes Marine Group', 'Great Lakes Marine Group',
                                                          'Sunbelt Powersports', 'Cascade RV Centers',
                                                          'Prairie Outdoor Group'])
                    WHEN pg_temp.pick(g, 'near') % 3 = 0 THEN 'near a dealer'
                    ELSE 'anywhere'
               END AS pool
          FROM (SELECT g,
                       CASE WHEN g % 70 = 13   THEN 'bad postal code'
                            WHEN g % 70 = 27   THEN 'blank postal code'
                            WHEN g % 140 = 41  THEN 'misspelt country'
                            WHEN g % 140 = 111 THEN 'country without dealers'
                            WHEN g % 70 = 55   THEN 'unknown brand'
                            WHEN g = 250       THEN 'unknown dealer'
                            WHEN g % 20 = 4    THEN 'pre-assigned'
                            WHEN g % 35 = 9    THEN 'dealer group'
                            ELSE 'plain'
                       END AS kind
                  FROM generate_series(1, 490) AS g) k) p;

-- Which place of its pool.
ALTER TABLE demo_lead_plan ADD COLUMN place_n bigint;
UPDATE demo_lead_plan l
   SET place_n = 1 + pg_temp.pick(l.g, 'place') % s.size
  FROM (SELECT DISTINCT pool, country, size FROM demo_pool) s
 WHERE s.pool = l.pool AND s.country = l.country;

------------------------------------------------------------------------------
-- The leads.
------------------------------------------------------------------------------

-- The showcase lead first.
INSERT INTO aimroute.leads
        (received_at, source, brand_code, product_code, first_name, last_name, email, phone,
         address, city, state_code, country, postal_code, comment)
VALUES  (now() - interval '41 hours', 'web', 'LWB', 'LWB-FISH16', 'Marie', 'Tremblay',
         'marie.tremblay@example.com', '(705) 555-0147', '112 Highway 17', 'Batchawana Bay', 'ON',
         'CA', 'P0S 1A0', 'demo');

INSERT INTO aimroute.leads
        (received_at, source, brand_code, product_code, first_name, last_name, email, phone,
         address, city, state_code, country, postal_code, dealer_number, dealer_group, comment)
SELECT now() - (491 - l.g) * interval '5 minutes',
       CASE WHEN l.kind IN ('pre-assigned', 'unknown dealer') THEN 'web'
            ELSE pg_temp.one_of(l.g, 'source', ARRAY['web', 'web', 'web', 'web', 'api', 'api', 'api', 'import', 'import'])
       END,
       CASE WHEN l.kind = 'unknown brand' THEN pg_temp.one_of(l.g, 'bad brand', ARRAY['LBW', 'TOG'])
            ELSE l.brand_code END,
       -- Two in five leads name a product of their brand.
       CASE WHEN pg_temp.pick(l.g, 'has product') % 5 < 2 THEN
            pg_temp.one_of(l.g, 'product', CASE l.brand_code
                WHEN 'LWB' THEN ARRAY['LWB-FISH16', 'LWB-FISH18', 'LWB-BASS19', 'LWB-WALK21']
                WHEN 'DLP' THEN ARRAY['DLP-PONT20', 'DLP-PONT22', 'DLP-TRI24']
                WHEN 'PCR' THEN ARRAY['PCR-TT22', 'PCR-TT27', 'PCR-TH30', 'PCR-FW32']
                ELSE ARRAY['FPS-ATV570', 'FPS-SXS1000', 'FPS-SNO850', 'FPS-YTH110'] END)
       END,
       n.first_name,
       n.last_name,
       -- Most leads give an e-mail address, many a phone number
       -- (555-01xx numbers are reserved for fiction).
       CASE WHEN pg_temp.pick(l.g, 'email') % 10 > 0 THEN
            lower(n.first_name || '.' || replace(n.last_name, '''', '')) || pg_temp.pick(l.g, 'email number') % 100
            || '@example.' || pg_temp.one_of(l.g, 'domain', ARRAY['com', 'net', 'org']) END,
       CASE WHEN pg_temp.pick(l.g, 'phone') % 10 < 7 THEN
            format('(%s) 555-01%s', 201 + pg_temp.pick(l.g, 'area code') % 780,
                   lpad((pg_temp.pick(l.g, 'line') % 100)::text, 2, '0')) END,
       (1 + pg_temp.pick(l.g, 'house') % 9800) || ' '
           || pg_temp.one_of(l.g, 'street', ARRAY['Lakeshore Dr', 'Main St', 'Maple Ave', 'County Road 12',
                  'Birch Ln', 'Harbor Rd', 'Pine St', 'Elm St', 'Ridge Rd', 'River Rd', 'Oak St',
                  'Cedar Ct', 'Park Ave', 'Old Mill Rd', 'Shoreline Blvd', 'Sunset Dr']),
       CASE WHEN l.kind = 'country without dealers'
            THEN (ARRAY['Monterrey', 'Guadalajara', 'Cancún'])[1 + pg_temp.pick(l.g, 'mx') % 3]
            ELSE p.city END,
       CASE WHEN l.kind = 'country without dealers'
            THEN (ARRAY['NL', 'JAL', 'QROO'])[1 + pg_temp.pick(l.g, 'mx') % 3]
            ELSE p.state_code END,
       -- The country as people type it.
       CASE l.kind
           WHEN 'misspelt country' THEN 'Untied States'
           WHEN 'country without dealers' THEN 'Mexico'
           ELSE CASE l.country
                    WHEN 'US' THEN pg_temp.one_of(l.g, 'country spelling',
                                       ARRAY['US', 'US', 'US', 'US', 'US', 'USA', 'United States', 'us'])
                    ELSE pg_temp.one_of(l.g, 'country spelling',
                             ARRAY['CA', 'CA', 'CA', 'Canada', 'CAN', 'ca'])
                END
       END,
       -- The postal code as people type it.
       CASE
           WHEN l.kind = 'bad postal code' THEN '1234X'
           WHEN l.kind = 'blank postal code' THEN pg_temp.one_of(l.g, 'blank', ARRAY['', '   '])
           WHEN l.kind = 'country without dealers' THEN (ARRAY['64000', '44100', '77500'])[1 + pg_temp.pick(l.g, 'mx') % 3]
           WHEN l.country = 'US' THEN
               CASE WHEN pg_temp.pick(l.g, 'zip+4') % 4 = 0
                    THEN p.postal_code || '-' || lpad((pg_temp.pick(l.g, 'plus 4') % 10000)::text, 4, '0')
                    ELSE p.postal_code END
           ELSE
               (SELECT CASE s % 10
                           WHEN 0 THEN p.postal_code                        -- the FSA alone
                           WHEN 1 THEN p.postal_code || ldu                 -- no space
                           WHEN 2 THEN lower(p.postal_code || ' ' || ldu)   -- lower case
                           WHEN 3 THEN lower(p.postal_code || ' ' || ldu)
                           ELSE p.postal_code || ' ' || ldu
                       END
                  FROM (SELECT pg_temp.pick(l.g, 'postal style') AS s,
                               (pg_temp.pick(l.g, 'ldu 1') % 10)::text
                               || substr('ABCEGHJKLMNPRSTVWXYZ', 1 + pg_temp.pick(l.g, 'ldu 2') % 20, 1)
                               || (pg_temp.pick(l.g, 'ldu 3') % 10)::text AS ldu) x)
       END,
       -- A pre-assigned dealer: the customer asked one of the three
       -- dealers of the brand nearest to home (not always the nearest).
       CASE l.kind
           WHEN 'unknown dealer' THEN 'US-0417'
           WHEN 'pre-assigned' THEN
               (SELECT near.dealer_number
                  FROM (SELECT d.dealer_number
                          FROM aimroute.dealers d
                         WHERE d.country = l.country AND d.dealer_number ~ '^(US|CA)-[0-9]{4}$'
                           AND EXISTS (SELECT FROM aimroute.dealer_brands b
                                        WHERE b.dealer_number = d.dealer_number AND b.brand_code = l.brand_code)
                         ORDER BY d.location OPERATOR(aimroute.<->) p.centroid
                         LIMIT 3) near
                 ORDER BY md5(l.g || ':' || near.dealer_number)
                 LIMIT 1)
       END,
       CASE WHEN l.kind = 'dealer group' THEN l.pool END,
       'demo'
  FROM demo_lead_plan l
 CROSS JOIN LATERAL (
        SELECT pl.postal_code, pl.state_code, pl.city, pl.centroid
          FROM demo_pool pl
         WHERE pl.pool = l.pool AND pl.country = l.country AND pl.n = l.place_n
       ) p
 CROSS JOIN LATERAL (
        SELECT pg_temp.one_of(l.g, 'first name', ARRAY[
                   'James', 'Mary', 'Robert', 'Patricia', 'John', 'Jennifer', 'Michael', 'Linda',
                   'David', 'Elizabeth', 'William', 'Barbara', 'Richard', 'Susan', 'Joseph', 'Jessica',
                   'Thomas', 'Karen', 'Chris', 'Sarah', 'Daniel', 'Lisa', 'Matthew', 'Nancy', 'Mark',
                   'Sandra', 'Paul', 'Ashley', 'Steven', 'Emily', 'Kevin', 'Donna', 'Brian', 'Michelle',
                   'Jean-Luc', 'Amelie', 'Gord', 'Connor', 'Mei', 'Priya', 'Diego', 'Rosa', 'Tyler',
                   'Kayla', 'Dale', 'Brenda', 'Wes', 'Tammy']) AS first_name,
               pg_temp.one_of(l.g, 'last name', ARRAY[
                   'Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Miller', 'Davis', 'Garcia',
                   'Wilson', 'Anderson', 'Taylor', 'Thomas', 'Moore', 'Martin', 'Jackson', 'Thompson',
                   'White', 'Lopez', 'Lee', 'Harris', 'Clark', 'Lewis', 'Walker', 'Hall', 'Young',
                   'King', 'Wright', 'Nguyen', 'Hill', 'Larsen', 'Olson', 'Kowalski', 'Nowak',
                   'Gagnon', 'Roy', 'Cote', 'Bouchard', 'MacDonald', 'Campbell', 'O''Brien', 'Singh',
                   'Chen', 'Peterson', 'Lindqvist', 'Schmidt', 'Yazzie', 'Begay', 'Fontaine']) AS last_name
       ) n
 ORDER BY l.g;

-- A web lead from the page of a dealer that is no longer active for
-- sales: the dealer is named, but the lead is routed by the rules.
INSERT INTO aimroute.leads
        (received_at, source, brand_code, first_name, last_name, email, address, city, state_code,
         country, postal_code, dealer_number, comment)
SELECT now() - interval '3 minutes', 'web', b.brand_code, 'Gary', 'Kowalski',
       'gary.kowalski@example.net', '41 Ridge Rd', p.place_name, d.state_code, d.country,
       d.postal_code, d.dealer_number, 'demo'
  FROM aimroute.dealers d
  JOIN aimroute.postal_codes p ON p.country = d.country AND p.postal_code = d.postal_code
 CROSS JOIN LATERAL (SELECT x.brand_code FROM aimroute.dealer_brands x
                      WHERE x.dealer_number = d.dealer_number ORDER BY x.brand_code LIMIT 1) b
 WHERE NOT d.active_for_sales AND d.dealer_number ~ '^US-[0-9]{4}$'
 ORDER BY md5('inactive lead:' || d.dealer_number)
 LIMIT 1;

SELECT count(*) AS demo_leads_routed
  FROM aimroute.leads
 WHERE comment = 'demo';

COMMIT;
