-- test/routing_rules.sql: every routing rule of SPEC section 2 and its edge
-- cases, on the real postal data (US ZIP codes, Canadian FSAs) with a small
-- dealer network built here.  Everything is rolled back.
--
-- Each scenario uses its own brand, so that the dealers of one scenario are
-- never candidates in another (only dealers selling a lead's brand are).
-- Leads are tagged in `comment` and read back with the helpers below.
BEGIN;
SELECT plan(141);
-- PostGIS is in public, in a schema of its own or in aimroute
-- (t/lib/Placement.pm): its functions are found through its schema.
SELECT set_config('search_path', 'aimroute, public, ' || e.extnamespace::regnamespace, true)
  FROM pg_extension e WHERE e.extname = 'postgis';
SET LOCAL client_min_messages = warning;

-- The lead tagged `tag`: its dealer and match type as 'DEALER Match'.
CREATE FUNCTION pg_temp.routed(tag text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(l.dealer_number || ' ' || l.match_type, ', ' ORDER BY l.lead_id)
      FROM aimroute.leads l WHERE l.comment = tag
$$;
CREATE FUNCTION pg_temp.lead_id(tag text) RETURNS bigint LANGUAGE sql AS $$
    SELECT l.lead_id FROM aimroute.leads l WHERE l.comment = tag
$$;
-- The explanation of a lead, one step a line, for alike()/unalike().
CREATE FUNCTION pg_temp.why(tag text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(e.rule || ': ' || e.message, E'\n' ORDER BY e.n)
      FROM aimroute.explain_lead(pg_temp.lead_id(tag)) WITH ORDINALITY AS e(step, rule, message, dealer_number, distance_miles, n)
$$;
-- |distance_miles - ST_Distance(postal centre, dealer location) / 1609.344|
-- for the lead's current dealer; NULL when either point is unknown.
CREATE FUNCTION pg_temp.crow_error(tag text) RETURNS double precision LANGUAGE sql AS $$
    SELECT abs(l.distance_miles
               - ST_Distance(d.location, p.centroid) / 1609.344)
      FROM aimroute.leads l
      JOIN aimroute.dealers d ON d.dealer_number = l.dealer_number
      JOIN aimroute.postal_codes p ON p.country = l.country AND p.postal_code = l.postal_code
     WHERE l.comment = tag
$$;
CREATE FUNCTION pg_temp.miles(country text, postal text, dealer text) RETURNS double precision
LANGUAGE sql AS $$
    SELECT ST_Distance(d.location, p.centroid) / 1609.344
      FROM aimroute.postal_codes p, aimroute.dealers d
     WHERE p.country = $1 AND p.postal_code = $2 AND d.dealer_number = $3
$$;

INSERT INTO brands VALUES
  ('LWB', 'Lakewood Boats'), ('OTH', 'Other Brand'), ('PRE', 'Pre-assigned'),
  ('GRP', 'Group'), ('INV', 'Inventory'), ('TER', 'Territory'), ('TRV', 'Trailway RV'),
  ('TIE', 'Ties'), ('NVR', 'Never'), ('PRD', 'Product'), ('USO', 'US Only'),
  ('HIS', 'History'), ('RDL', 'Dealer Leaves'), ('SIM', 'Simulation'), ('LOC', 'Locator');

------------------------------------------------------------------------------
-- No default dealer: a lead that needs one is refused with a clear error.
------------------------------------------------------------------------------
-- Only this file's leads, whatever the database holds (rolled back).
DELETE FROM leads;
UPDATE settings SET default_dealer_number = NULL;
-- LWB: Mackinac Island, Michigan (the ZIP's centre) and Killarney, Ontario.
INSERT INTO dealers (dealer_number, name, country, postal_code)
VALUES ('MAC', 'Mackinac Island Marine', 'US', '49757');
INSERT INTO dealers (dealer_number, name, country, postal_code, location)
VALUES ('KIL', 'Killarney Boats', 'CA', 'P0M 1A0', 'SRID=4326;POINT(-81.51 45.97)');
INSERT INTO dealer_brands VALUES ('MAC', 'LWB'), ('KIL', 'LWB');

SELECT throws_ok(
  $$INSERT INTO aimroute.leads (brand_code, country, postal_code, comment)
    VALUES ('LWB', 'XX', '49757', 'no-default')$$,
  '55000', 'no default dealer is configured',
  'a lead that only the default dealer could take, with none configured: SQLSTATE 55000');
SELECT lives_ok(
  $$INSERT INTO aimroute.leads (brand_code, country, postal_code, comment)
    VALUES ('LWB', 'US', '49781', 'no-default-radius')$$,
  'a lead that a rule places needs no default dealer');
SELECT is(pg_temp.routed('no-default-radius'), 'MAC Radius', '... and is routed by radius');

INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES ('HQ', 'Corporate', 'US', '10001');
UPDATE settings SET default_dealer_number = 'HQ';

------------------------------------------------------------------------------
-- 1. Pre-assigned.
------------------------------------------------------------------------------
INSERT INTO dealers (dealer_number, name, country, postal_code, active_for_sales) VALUES
  ('PA1', 'Pre Mackinac', 'US', '49757', true),
  ('PA2', 'Pre St Louis', 'US', '63101', true),
  ('PA3', 'Pre Inactive', 'US', '49781', false),
  ('PA4', 'Pre Other Brand', 'US', '49781', true);
INSERT INTO dealer_brands VALUES ('PA1', 'PRE'), ('PA2', 'PRE'), ('PA3', 'PRE'), ('PA4', 'OTH');
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
VALUES ('PA1', 'PRE', 'county', 'US', 'MI/Mackinac');
INSERT INTO leads (brand_code, country, postal_code, dealer_number, dealer_group, comment) VALUES
  ('PRE', 'US', '49757', 'PA2', 'NORTH', 'pre-known'),
  ('PRE', 'US', '49757', 'NOPE-1', NULL, 'pre-unknown'),
  ('PRE', 'US', '49757', 'PA3', NULL, 'pre-inactive'),
  ('PRE', 'US', '49757', 'PA4', NULL, 'pre-nobrand'),
  ('PRE', NULL, NULL, 'PA2', NULL, 'pre-nocountry'),
  (NULL, 'US', '49757', 'PA2', NULL, 'pre-missingbrand'),
  ('XXB', 'US', '49757', 'PA2', NULL, 'pre-unknownbrand'),
  ('OTH', 'US', '49757', 'PA3', NULL, 'pre-inactive-nobrand');

SELECT is(pg_temp.routed('pre-known'), 'PA2 Pre-assigned',
          'pre-assigned to an existing dealer: that dealer, although another holds the county and sits at the lead''s ZIP, 574 miles closer');
SELECT is((SELECT count(*) FROM explain_lead(pg_temp.lead_id('pre-known'))
            WHERE rule NOT IN ('Input', 'Pre-assigned')), 0::bigint,
          '... and every other step is skipped (no group, territory or radius step in the explanation)');
SELECT alike(pg_temp.why('pre-known'),
             '%Pre-assigned: chosen: the lead arrived pre-assigned to dealer PA2; every other step skipped',
             '... and the explanation says so');
SELECT cmp_ok(pg_temp.crow_error('pre-known'), '<', 1e-6::float8,
              '... and its distance is the distance to that dealer');
SELECT is(pg_temp.routed('pre-unknown'), 'PA1 Territory',
          'pre-assigned to an unknown dealer: routed by the rules instead (never lost, never an error)');
SELECT alike(pg_temp.why('pre-unknown'),
             '%pre-assigned dealer "NOPE-1" does not exist: routed by the rules instead%',
             '... and the unknown dealer number is in the explanation');
SELECT is((SELECT dealer_number_input FROM leads WHERE comment = 'pre-unknown'), 'NOPE-1',
          '... and the number as received is kept');
-- SPEC rule 1: an existing dealer keeps the lead whether or not it is
-- still active or sells the brand (historical imports, "Contact This
-- Dealer"); the explanation notes what it lacks.
SELECT is(pg_temp.routed('pre-inactive'), 'PA3 Pre-assigned',
          'pre-assigned to an inactive dealer: that dealer all the same');
SELECT alike(pg_temp.why('pre-inactive'),
             '%Pre-assigned: chosen: the lead arrived pre-assigned to dealer PA3 (kept although the dealer is not active for sales); every other step skipped',
             '... and the explanation notes that the dealer is inactive');
SELECT is(pg_temp.routed('pre-nobrand'), 'PA4 Pre-assigned',
          'pre-assigned to a dealer not selling the brand: that dealer all the same');
SELECT alike(pg_temp.why('pre-nobrand'),
             '%dealer PA4 (kept although the dealer does not sell brand PRE); every other step skipped',
             '... and the explanation notes the brand it does not sell');
SELECT is(pg_temp.routed('pre-nocountry'), 'PA2 Pre-assigned',
          'pre-assigned needs no country or postal code');
SELECT is(pg_temp.routed('pre-missingbrand'), 'PA2 Pre-assigned',
          'pre-assigned, without a brand: that dealer all the same');
SELECT alike(pg_temp.why('pre-missingbrand'), '%dealer PA2 (kept although the lead has no brand)%',
             '... and the explanation says the lead has no brand');
SELECT is(pg_temp.routed('pre-unknownbrand'), 'PA2 Pre-assigned',
          'pre-assigned, with a brand not in aimroute.brands: that dealer all the same');
SELECT alike(pg_temp.why('pre-unknownbrand'), '%dealer PA2 (kept although brand XXB is not in aimroute.brands)%',
             '... and the explanation names the unknown brand');
SELECT alike(pg_temp.why('pre-inactive-nobrand'),
             '%dealer PA3 (kept although the dealer is not active for sales and the dealer does not sell brand OTH)%',
             'inactive and not selling the brand: the explanation says both');
SELECT is((SELECT count(*) FROM explain_lead(pg_temp.lead_id('pre-inactive'))
            WHERE rule NOT IN ('Input', 'Pre-assigned')), 0::bigint,
          '... and no other step is taken for a kept inactive dealer');

------------------------------------------------------------------------------
-- 2. Dealer Group: the closest dealer of the group in the lead's country.
------------------------------------------------------------------------------
INSERT INTO dealers (dealer_number, name, country, postal_code, dealer_group, active_for_sales) VALUES
  ('GA', 'Group Mackinac', 'US', '49757', 'NORTH', true),
  ('GB', 'Group St Louis', 'US', '63101', 'NORTH', true),
  ('GC', 'Group Sault Ontario', 'CA', 'P6A', 'NORTH', true),
  ('GD', 'No Group Sault', 'US', '49783', NULL, true),
  ('GE', 'Group Inactive Sault', 'US', '49783', 'NORTH', false),
  ('GF', 'Group Other Brand Sault', 'US', '49783', 'NORTH', true);
INSERT INTO dealer_brands VALUES ('GA', 'GRP'), ('GB', 'GRP'), ('GC', 'GRP'), ('GD', 'GRP'),
                                 ('GE', 'GRP'), ('GF', 'OTH');
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
VALUES ('GD', 'GRP', 'county', 'US', 'MI/Chippewa');
INSERT INTO leads (brand_code, country, postal_code, dealer_group, comment) VALUES
  ('GRP', 'US', '49783', 'NORTH', 'grp-us'),
  ('GRP', 'CA', 'P6A', 'NORTH', 'grp-ca'),
  ('GRP', 'US', '49783', 'SOUTH', 'grp-none');

SELECT is(pg_temp.routed('grp-us'), 'GA Dealer Group',
          'dealer group: the closest active group dealer selling the brand in the lead''s country (not the Ontario one 8 miles away, not the territory holder)');
SELECT cmp_ok(pg_temp.crow_error('grp-us'), '<', 1e-6::float8, '... at its crow-flies distance');
SELECT is(pg_temp.routed('grp-ca'), 'GC Dealer Group', 'dealer group: a Canadian lead gets the Canadian group dealer');
SELECT is(pg_temp.routed('grp-none'), 'GD Territory', 'a group with no dealer: routed by the following rules');
SELECT alike(pg_temp.why('grp-none'), '%no active dealer of group SOUTH in US sells brand GRP%',
             '... and the explanation says so');

------------------------------------------------------------------------------
-- 3. Inventory.
------------------------------------------------------------------------------
INSERT INTO dealers (dealer_number, name, country, postal_code, active_for_sales) VALUES
  ('IA', 'Inv Mackinac none', 'US', '49757', true),
  ('IB', 'Inv St Ignace', 'US', '49781', true),
  ('IC', 'Inv St Louis', 'US', '63101', true),
  ('ID', 'Inv Sault Ontario', 'CA', 'P6A', true),
  ('IE', 'Inv Mackinac inactive', 'US', '49757', false);
INSERT INTO dealer_brands VALUES ('IA', 'INV'), ('IB', 'INV'), ('IC', 'INV'), ('ID', 'INV'), ('IE', 'INV');
INSERT INTO inventory VALUES ('IA', 'BOAT-1', 0), ('IB', 'BOAT-1', 2), ('IC', 'BOAT-1', 5),
                             ('ID', 'BOAT-1', 9), ('IE', 'BOAT-1', 7);

INSERT INTO leads (brand_code, product_code, country, postal_code, comment)
VALUES ('INV', 'BOAT-1', 'US', '49757', 'inv-off');
UPDATE settings SET inventory_routing_enabled = true;
INSERT INTO leads (brand_code, product_code, country, postal_code, comment)
VALUES ('INV', 'BOAT-1', 'US', '49757', 'inv-on');
UPDATE inventory SET quantity = 0 WHERE dealer_number = 'IB';
INSERT INTO leads (brand_code, product_code, country, postal_code, comment)
VALUES ('INV', 'BOAT-1', 'US', '49757', 'inv-zero');
UPDATE settings SET radius_miles = 100;
INSERT INTO leads (brand_code, product_code, country, postal_code, comment)
VALUES ('INV', 'BOAT-1', 'US', '49757', 'inv-beyond');
INSERT INTO leads (brand_code, product_code, country, postal_code, comment)
VALUES ('INV', NULL, 'US', '49757', 'inv-noproduct');
UPDATE settings SET radius_miles = 1500, inventory_routing_enabled = false;

SELECT is(pg_temp.routed('inv-off'), 'IA Radius', 'inventory routing off: stock is not looked at');
SELECT is(pg_temp.routed('inv-on'), 'IB Inventory',
          'inventory routing on: the closest dealer with the product in stock (quantity 0 does not count, inactive never wins)');
SELECT cmp_ok(pg_temp.crow_error('inv-on'), '<', 1e-6::float8, '... at its crow-flies distance');
SELECT is(pg_temp.routed('inv-zero'), 'IC Inventory',
          'stock sold out at the closest: the next one in the same country, not the closer Ontario dealer');
SELECT is(pg_temp.routed('inv-beyond'), 'IA Radius',
          'stock only beyond radius_miles: inventory does not apply, the next rules do');
SELECT alike(pg_temp.why('inv-beyond'), '%no dealer of US within 100.0 miles has product BOAT-1 in stock%',
             '... and the explanation says so');
SELECT is(pg_temp.routed('inv-noproduct'), 'IA Radius', 'inventory routing on, lead without a product: next rules');
SELECT alike(pg_temp.why('inv-noproduct'), '%inventory routing is on, but the lead has no product%',
             '... and the explanation says so');

------------------------------------------------------------------------------
-- 4. Territory.
------------------------------------------------------------------------------
INSERT INTO dealers (dealer_number, name, country, postal_code, active_for_sales) VALUES
  ('TP', 'Holds ZIP 60601, sits in St Louis', 'US', '63101', true),
  ('TR', 'Radius only, Chicago', 'US', '60601', true),
  ('TC', 'Holds Mackinac county', 'US', '49781', true),
  ('TS', 'Holds Wisconsin, sits in Detroit', 'US', '48201', true),
  ('TS2', 'Holds Ohio, Cleveland', 'US', '44113', true),
  ('TS3', 'Holds Ohio, Columbus', 'US', '43215', true),
  ('TK', 'Holds Canada, Toronto', 'CA', 'M5V', true),
  ('TI', 'Inactive, holds ZIP 49783', 'US', '49783', false),
  ('BT', 'Brand Territory TRV Iowa', 'US', '55401', true),
  ('AB', 'All brands Minnesota, sells TER only', 'US', '10001', true);
INSERT INTO dealer_brands VALUES ('TP', 'TER'), ('TR', 'TER'), ('TC', 'TER'), ('TS', 'TER'),
  ('TS2', 'TER'), ('TS3', 'TER'), ('TK', 'TER'), ('TI', 'TER'), ('BT', 'TER'), ('BT', 'TRV'),
  ('AB', 'TER');
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
  ('TP', NULL, 'postal', 'US', '60601'),
  ('TC', NULL, 'county', 'US', 'MI/Mackinac'),
  ('TS', NULL, 'state', 'US', 'WI'),
  ('TS2', NULL, 'state', 'US', 'OH'),
  ('TS3', NULL, 'state', 'US', 'OH'),
  ('TK', NULL, 'country', 'CA', NULL),
  ('TI', NULL, 'postal', 'US', '49783'),
  ('BT', 'TRV', 'state', 'US', 'IA'),
  ('AB', NULL, 'state', 'US', 'MN');
-- Territories are not limited by the radius.
UPDATE settings SET radius_miles = 50;
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES
  ('TER', 'US', '60601', 'ter-postal'),
  ('TER', 'US', '49757', 'ter-county'),
  ('TER', 'US', '53202', 'ter-state'),
  ('TER', 'CA', 'X0A', 'ter-country'),
  ('TER', 'US', '44113', 'ter-closer-1'),
  ('TER', 'US', '43215', 'ter-closer-2'),
  ('TER', 'US', '49783', 'ter-inactive');
UPDATE settings SET radius_miles = 1500;
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES
  ('TER', 'US', '50309', 'bt-other-brand'),
  ('TRV', 'US', '50309', 'bt-own-brand'),
  ('TRV', 'US', '55401', 'ab-unsold-brand'),
  ('TER', 'US', '55401', 'ab-sold-brand');

SELECT is(pg_temp.routed('ter-postal'), 'TP Territory',
          'postal territory: its holder 262 miles away, not the radius dealer at the lead''s ZIP, beyond radius_miles 50');
SELECT alike(pg_temp.why('ter-postal'), '%Territory: candidate: holds postal 60601%Territory: chosen%',
             '... and the explanation names the territory');
SELECT cmp_ok(pg_temp.crow_error('ter-postal'), '<', 1e-6::float8, '... at its crow-flies distance');
SELECT is(pg_temp.routed('ter-county'), 'TC Territory', 'county territory MI/Mackinac');
SELECT alike(pg_temp.why('ter-county'), '%candidate: holds county MI/Mackinac%',
             '... and the explanation names the county');
SELECT is(pg_temp.routed('ter-state'), 'TS Territory',
          'state territory: its holder, not the closer radius dealer in Chicago');
SELECT is(pg_temp.routed('ter-country'), 'TK Territory',
          'country territory: Iqaluit goes to the Toronto holder of CA, 1,893 miles away, beyond any radius');
SELECT is(pg_temp.routed('ter-closer-1'), 'TS2 Territory', 'two dealers hold Ohio: Cleveland lead to the Cleveland one');
SELECT is(pg_temp.routed('ter-closer-2'), 'TS3 Territory', 'two dealers hold Ohio: Columbus lead to the Columbus one');
SELECT alike(pg_temp.why('ter-closer-2'), '%Territory: chosen: the closest territory holder%',
             '... and the explanation says the closest holder won');
SELECT isnt((SELECT dealer_number FROM leads WHERE comment = 'ter-inactive'), 'TI',
            'an inactive dealer''s territory never wins');
SELECT is(pg_temp.routed('ter-inactive'), 'TC Radius', '... the lead goes by radius to the closest active dealer');
SELECT is((SELECT match_type::text FROM leads WHERE comment = 'bt-other-brand'), 'Radius',
          'a Brand Territory (TRV) does not capture a lead of another brand (TER)');
SELECT is(pg_temp.routed('bt-own-brand'), 'BT Territory', '... but captures its own brand''s lead');
SELECT isnt((SELECT dealer_number FROM leads WHERE comment = 'ab-unsold-brand'), 'AB',
            'an all-brands territory does not capture a brand the dealer does not sell');
SELECT is(pg_temp.routed('ab-unsold-brand'), 'BT Radius', '... that lead goes by radius');
SELECT is(pg_temp.routed('ab-sold-brand'), 'AB Territory',
          'an all-brands territory captures a brand the dealer sells (over a dealer at the lead''s ZIP)');

-- Never across a country line (SPEC rule 4): a territory in another
-- country than its dealer's is refused, naming both; and a dealer that moved
-- to another country after its territories were made is not considered.
INSERT INTO brands VALUES ('XCL', 'Cross-border');
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
  ('XUS', 'US dealer near Ontario, Detroit', 'US', '48201'),
  ('XON', 'Ontario dealer, Sudbury', 'CA', 'P3A'),
  ('XMV', 'Ontario dealer about to move to the US, Windsor', 'CA', 'N9A');
INSERT INTO dealer_brands VALUES ('XUS', 'XCL'), ('XON', 'XCL'), ('XMV', 'XCL');
SELECT throws_ok($$INSERT INTO territories (dealer_number, kind, country, code) VALUES ('XUS', 'state', 'CA', 'ON')$$,
                 '22023', 'a territory in CA cannot be given to dealer XUS, which is in US',
                 'a US dealer given an Ontario territory: refused, naming both countries');
SELECT throws_ok($$INSERT INTO territories (dealer_number, kind, country, code) VALUES ('XUS', 'country', 'CAN', NULL)$$,
                 '22023', 'a territory in CA cannot be given to dealer XUS, which is in US',
                 '... a whole country too (given as alpha-3)');
SELECT throws_ok($$UPDATE territories SET country = 'US', code = '48201' WHERE dealer_number = 'TK'$$,
                 '22023', 'a territory in US cannot be given to dealer TK, which is in CA',
                 '... and an UPDATE that moves a territory across the line');
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('XMV', 'state', 'CA', 'ON');
UPDATE dealers SET country = 'US', postal_code = '48226', location = NULL WHERE dealer_number = 'XMV';
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('XCL', 'CA', 'N9A', 'x-moved');
SELECT is(pg_temp.routed('x-moved'), 'XON Radius',
          'a dealer that moved to the US keeps an Ontario territory in the table, but it routes no Ontario lead');
SELECT alike(pg_temp.why('x-moved'),
             '%Territory: 1 territory holder in CA not considered: its dealer is in another country%',
             '... and the explanation says why the holder was passed over');
SELECT is((SELECT rank || ' ' || dealer_number FROM locate_dealers('CA', 'N9A', 'XCL') WHERE rank = 1), '1 XON',
          '... and the locator agrees');

------------------------------------------------------------------------------
-- 5. Radius: same country only, as the crow flies, within radius_miles.
------------------------------------------------------------------------------
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES
  ('LWB', 'CA', 'P0S 1A0', 'spec-batchawana'),
  ('LWB', 'usa', '49757-1234', 'zip-plus-4');
SELECT cmp_ok(pg_temp.miles('CA', 'P0S', 'MAC'), '<', pg_temp.miles('CA', 'P0S', 'KIL'),
              'Mackinac Island (US) is closer to Batchawana Bay (P0S) than Killarney (CA)');
SELECT is(pg_temp.routed('spec-batchawana'), 'KIL Radius',
          'SPEC: a lead from Batchawana Bay, Ontario goes to Killarney, Ontario, not across the border');
SELECT is((SELECT postal_code FROM leads WHERE comment = 'spec-batchawana'), 'P0S',
          '... its full Canadian code resolved to the FSA');
SELECT cmp_ok(pg_temp.crow_error('spec-batchawana'), '<', 1e-6::float8,
              '... distance_miles = ST_Distance(geography) / 1609.344 (as the crow flies)');
SELECT alike(pg_temp.why('spec-batchawana'), '%Radius: chosen: the closest dealer of CA within 1500.0 miles%',
             '... and the explanation says radius decided');
SELECT is(pg_temp.routed('zip-plus-4'), 'MAC Radius', 'alpha-3 country and ZIP+4 are normalized');
SELECT is((SELECT country || ' ' || postal_code || ' ' || postal_code_input FROM leads WHERE comment = 'zip-plus-4'),
          'US 49757 49757-1234', '... stored as US 49757, the input kept');
SELECT cmp_ok(pg_temp.crow_error('zip-plus-4'), '<', 1e-6::float8, '... at distance 0 from the ZIP''s centre');

-- Radius limit and the switch.
UPDATE settings SET radius_miles = 100;
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('LWB', 'CA', 'P0S', 'radius-limit');
UPDATE settings SET radius_miles = 1500, radius_enabled = false;
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('LWB', 'US', '49781', 'radius-off');
UPDATE settings SET radius_enabled = true;
SELECT is(pg_temp.routed('radius-limit'), 'HQ Default', 'the only dealer beyond radius_miles (158 > 100): Default');
SELECT alike(pg_temp.why('radius-limit'), '%no active dealer of CA within 100.0 miles sells brand LWB%',
             '... and the explanation says so');
SELECT is(pg_temp.routed('radius-off'), 'HQ Default', 'radius routing off: Default');
SELECT alike(pg_temp.why('radius-off'), '%radius routing is off (settings.radius_enabled)%',
             '... and the explanation says so');

-- Ties: the lower dealer number in byte order.
INSERT INTO dealers (dealer_number, name, country, postal_code, location) VALUES
  ('TIE9', 'Tie 9', 'US', '49757', 'SRID=4326;POINT(-84.5 45.9)'),
  ('TIEa', 'Tie a', 'US', '49757', 'SRID=4326;POINT(-84.5 45.9)'),
  ('TIE10', 'Tie 10', 'US', '49757', 'SRID=4326;POINT(-84.5 45.9)');
INSERT INTO dealer_brands VALUES ('TIE9', 'TIE'), ('TIEa', 'TIE'), ('TIE10', 'TIE');
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('TIE', 'US', '49757', 'tie');
SELECT is(pg_temp.routed('tie'), 'TIE10 Radius', 'equal distances: the lower dealer number in byte order (TIE10 < TIE9 < TIEa)');

-- Inactive dealers and dealers not selling the brand never win.
INSERT INTO dealers (dealer_number, name, country, postal_code, active_for_sales) VALUES
  ('NV1', 'Inactive at the ZIP', 'US', '49757', false),
  ('NV2', 'Other brand at the ZIP', 'US', '49757', true),
  ('NV3', 'Far but eligible', 'US', '63101', true);
INSERT INTO dealer_brands VALUES ('NV1', 'NVR'), ('NV2', 'OTH'), ('NV3', 'NVR');
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('NVR', 'US', '49757', 'never');
SELECT is(pg_temp.routed('never'), 'NV3 Radius',
          'an inactive dealer and a dealer not selling the brand, both at the lead''s ZIP, never win');

-- International radius: off by default, on once the country is listed.
INSERT INTO postal_codes (country, postal_code, place_name, state_code, county, centroid) VALUES
  ('GB', 'SW1A 1AA', 'Westminster', 'ENG', NULL, 'SRID=4326;POINT(-0.1276 51.5034)'),
  ('GB', 'M1 1AE', 'Manchester', 'ENG', NULL, 'SRID=4326;POINT(-2.2374 53.4808)'),
  ('MX', '06000', 'Ciudad de Mexico', 'CMX', NULL, 'SRID=4326;POINT(-99.1332 19.4326)'),
  ('MX', '64000', 'Monterrey', 'NLE', NULL, 'SRID=4326;POINT(-100.3161 25.6866)');
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
  ('GBL', 'Manchester Boats', 'GB', 'm1 1ae'),
  ('MXD', 'Monterrey Botes', 'MEX', '64000');
INSERT INTO dealer_brands VALUES ('GBL', 'LWB'), ('MXD', 'LWB');
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES
  ('LWB', 'GB', 'sw1a 1aa', 'intl-gb-off'),
  ('LWB', 'Mexico', '06000', 'intl-mx-off');
UPDATE settings SET radius_countries = '{US,CA,GB,MEX}';
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES
  ('LWB', 'GB', 'sw1a 1aa', 'intl-gb-on'),
  ('LWB', 'MX', '06000', 'intl-mx-on');
UPDATE settings SET radius_countries = '{US,CA}';
SELECT is(pg_temp.routed('intl-gb-off'), 'HQ Default', 'international radius off by default: a GB lead with a GB dealer goes to Default');
SELECT alike(pg_temp.why('intl-gb-off'), '%radius routing does not apply in GB: it is not in settings.radius_countries%',
             '... and the explanation says so');
SELECT is(pg_temp.routed('intl-mx-off'), 'HQ Default', '... and so does an MX lead');
SELECT is(pg_temp.routed('intl-gb-on'), 'GBL Radius', 'GB in radius_countries: the GB dealer by radius');
SELECT cmp_ok(pg_temp.crow_error('intl-gb-on'), '<', 1e-6::float8, '... at its crow-flies distance');
SELECT is(pg_temp.routed('intl-mx-on'), 'MXD Radius', 'MEX (alpha-3) in radius_countries: the MX dealer by radius');

------------------------------------------------------------------------------
-- Product routing: steps 4 and 5 consider only dealers assigned the product.
------------------------------------------------------------------------------
INSERT INTO dealers (dealer_number, name, country, postal_code, dealer_group) VALUES
  ('PD1', 'Assigned PX, Mackinac', 'US', '49757', NULL),
  ('PD2', 'County holder, not assigned', 'US', '49781', NULL),
  ('PD3', 'Group PG, not assigned', 'US', '49783', 'PG');
INSERT INTO dealer_brands VALUES ('PD1', 'PRD'), ('PD2', 'PRD'), ('PD3', 'PRD');
INSERT INTO product_assignments VALUES ('PD1', 'PX');
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
VALUES ('PD2', 'PRD', 'county', 'US', 'MI/Mackinac');
INSERT INTO leads (brand_code, product_code, country, postal_code, comment)
VALUES ('PRD', 'PX', 'US', '49757', 'prd-off');
UPDATE settings SET product_routing_enabled = true;
INSERT INTO leads (brand_code, product_code, country, postal_code, dealer_group, comment) VALUES
  ('PRD', 'PX', 'US', '49757', NULL, 'prd-on'),
  ('PRD', NULL, 'US', '49757', NULL, 'prd-noproduct'),
  ('PRD', 'PX', 'US', '49781', NULL, 'prd-radius'),
  ('PRD', 'PX', 'US', '49757', 'PG', 'prd-group');
UPDATE settings SET product_routing_enabled = false;
SELECT is(pg_temp.routed('prd-off'), 'PD2 Territory', 'product routing off: the territory holder, assigned or not');
SELECT is(pg_temp.routed('prd-on'), 'PD1 Radius',
          'product routing on: the territory holder without the product is skipped; radius to the assigned dealer');
SELECT alike(pg_temp.why('prd-on'), '%product routing: only dealers assigned product PX%',
             '... and the explanation says so');
SELECT is(pg_temp.routed('prd-radius'), 'PD1 Radius',
          'product routing on: radius skips a closer dealer not assigned the product');
SELECT is(pg_temp.routed('prd-noproduct'), 'PD2 Territory', 'product routing on, lead without a product: no filter');
SELECT alike(pg_temp.why('prd-noproduct'), '%product routing is on, but the lead has no product: no product filter%',
             '... and the explanation says so');
SELECT is(pg_temp.routed('prd-group'), 'PD3 Dealer Group',
          'product routing filters steps 4 and 5 only: the dealer group step still takes a group dealer not assigned the product');

------------------------------------------------------------------------------
-- 6. Default.
------------------------------------------------------------------------------
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES ('UO1', 'US only', 'US', '49757');
INSERT INTO dealer_brands VALUES ('UO1', 'USO');
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES
  ('LWB', 'US', '1234X', 'def-invalid'),
  ('LWB', 'US', '00000', 'def-unknown'),
  ('LWB', 'XX', '49757', 'def-country'),
  ('LWB', NULL, '49757', 'def-nocountry'),
  ('LWB', 'US', '   ', 'def-blank'),
  ('LWB', 'US', NULL, 'def-nopostal'),
  ('ZZZ', 'US', '49757', 'def-brand'),
  (NULL, 'US', '49757', 'def-nobrand'),
  ('USO', 'CA', 'P0S', 'def-nodealer'),
  ('LWB', 'CA', 'H0H 0H0', 'def-nocentre');
SELECT is(pg_temp.routed('def-invalid'), 'HQ Default', 'invalid postal code: Default');
SELECT alike(pg_temp.why('def-invalid'), '%postal code 1234X not found for US%', '... explained');
SELECT is((SELECT distance_miles FROM leads WHERE comment = 'def-invalid'), NULL::float8,
          '... with no distance (no centre point)');
SELECT is(pg_temp.routed('def-unknown'), 'HQ Default', 'unknown postal code: Default');
SELECT alike(pg_temp.why('def-unknown'), '%postal code 00000 not found for US%', '... explained');
SELECT is(pg_temp.routed('def-country'), 'HQ Default', 'unknown country: Default');
SELECT alike(pg_temp.why('def-country'), '%country "XX" is not an ISO 3166-1 country%', '... explained');
SELECT is(pg_temp.routed('def-nocountry'), 'HQ Default', 'no country: Default');
SELECT alike(pg_temp.why('def-nocountry'), '%no country%', '... explained');
SELECT is(pg_temp.routed('def-blank'), 'HQ Default', 'blank postal code: Default');
SELECT alike(pg_temp.why('def-blank'), '%no postal code (blank) for US%', '... explained');
SELECT is(pg_temp.routed('def-nopostal'), 'HQ Default', 'no postal code: Default');
SELECT is(pg_temp.routed('def-brand'), 'HQ Default', 'unknown brand: Default');
SELECT alike(pg_temp.why('def-brand'), '%brand ZZZ is not in aimroute.brands%', '... explained');
SELECT is(pg_temp.routed('def-nobrand'), 'HQ Default', 'no brand: Default');
SELECT alike(pg_temp.why('def-nobrand'), '%no brand%', '... explained');
SELECT is(pg_temp.routed('def-nodealer'), 'HQ Default',
          'no dealer of the brand in the lead''s country (one 76 miles away across the border): Default');
SELECT alike(pg_temp.why('def-nodealer'), '%no active dealer of CA within 1500.0 miles sells brand USO%', '... explained');
SELECT alike(pg_temp.why('def-nodealer'), '%Default: chosen: no rule placed the lead, so the default dealer HQ',
             '... the last step names the default dealer');
SELECT cmp_ok(pg_temp.crow_error('def-nodealer'), '<', 1e-6::float8, '... its distance is the default dealer''s');
SELECT is(pg_temp.routed('def-nocentre'), 'HQ Default', 'a postal code without a centre point: Default');
SELECT alike(pg_temp.why('def-nocentre'), '%no centre point for the lead''s postal code: no radius%', '... explained');

-- Nothing is lost: every lead has a dealer and a match type.
SELECT is((SELECT count(*) FROM leads WHERE dealer_number IS NULL OR match_type IS NULL OR routed_at IS NULL),
          0::bigint, 'every lead has dealer_number, match_type and routed_at');
SELECT is((SELECT count(*) FROM leads l WHERE NOT EXISTS (SELECT FROM dealers d WHERE d.dealer_number = l.dealer_number)),
          0::bigint, 'every lead''s dealer exists');
SELECT is((SELECT count(*) FROM leads WHERE cardinality(routing_log) = 0), 0::bigint,
          'every lead has an explanation');

------------------------------------------------------------------------------
-- Reassignment and lead_history.
------------------------------------------------------------------------------
INSERT INTO dealers (dealer_number, name, country, postal_code, active_for_sales) VALUES
  ('H1', 'History Mackinac', 'US', '49757', true),
  ('H2', 'History St Ignace', 'US', '49781', true),
  ('H3', 'History inactive', 'US', '63101', false),
  ('H4', 'History other brand', 'US', '63101', true);
INSERT INTO dealer_brands VALUES ('H1', 'HIS'), ('H2', 'HIS'), ('H3', 'HIS'), ('H4', 'OTH');
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('HIS', 'US', '49757', 'his');
SELECT is(pg_temp.routed('his'), 'H1 Radius', 'history lead routed');
SELECT is((SELECT count(*) FROM lead_history WHERE lead_id = pg_temp.lead_id('his')), 0::bigint,
          'the first routing is not a history row');
SELECT lives_ok(format($$SELECT aimroute.reassign(%s, 'H2', 'customer asked')$$, pg_temp.lead_id('his')),
                'reassign to another dealer');
SELECT is(pg_temp.routed('his'), 'H2 Reassigned', '... the lead is with that dealer, match type Reassigned');
SELECT cmp_ok(pg_temp.crow_error('his'), '<', 1e-6::float8, '... at the distance to that dealer');
SELECT alike(pg_temp.why('his'), '%Reassigned: moved from dealer H1 to dealer H2 by %: customer asked',
             '... and the explanation ends with the reassignment');
SELECT is((SELECT array_agg(e.step ORDER BY e.n) FROM explain_lead(pg_temp.lead_id('his')) WITH ORDINALITY AS e(step, rule, message, dealer_number, distance_miles, n)),
          (SELECT array_agg(g) FROM generate_series(1, (SELECT count(*)::int FROM explain_lead(pg_temp.lead_id('his')))) g),
          '... explain_lead numbers its rows 1, 2, ... in order, the reassignment included');
SELECT lives_ok(format($$SELECT aimroute.reassign(%s, 'H4', 'dealer swap')$$, pg_temp.lead_id('his')),
                'reassign to a dealer that does not sell the brand (a person may)');
SELECT is(pg_temp.routed('his'), 'H4 Reassigned', '... the lead is with that dealer');
SELECT cmp_ok(pg_temp.crow_error('his'), '<', 1e-6::float8,
              '... and distance_miles is the distance to that dealer, not to the dealer routing would pick');
UPDATE leads SET dealer_number = 'H1' WHERE comment = 'his';
SELECT results_eq(
  format($$SELECT event, from_dealer, to_dealer, match_type::text, reason, actor = session_user::text
             FROM aimroute.lead_history WHERE lead_id = %s ORDER BY history_id$$, pg_temp.lead_id('his')),
  $$VALUES ('Reassigned', 'H1', 'H2', 'Reassigned', 'customer asked', true),
           ('Reassigned', 'H2', 'H4', 'Reassigned', 'dealer swap', true),
           ('Updated', 'H4', 'H1', 'Reassigned', 'dealer_number changed by a direct UPDATE of aimroute.leads', true)$$,
  'lead_history: both reassignments and the direct UPDATE, with dealers, reason and actor');
SELECT throws_ok($$SELECT aimroute.reassign(-1, 'H1', 'x')$$, 'P0002', 'lead -1 does not exist',
                 'reassign of an unknown lead: an error');
SELECT throws_ok(format($$SELECT aimroute.reassign(%s, 'NOPE', 'x')$$, pg_temp.lead_id('his')),
                 '23503', 'dealer "NOPE" does not exist', 'reassign to an unknown dealer: an error');
SELECT throws_ok($$SELECT * FROM aimroute.reassign_dealer_leads('NOPE', 'x')$$,
                 '23503', 'dealer "NOPE" does not exist', 'reassign_dealer_leads of an unknown dealer: an error');

------------------------------------------------------------------------------
-- A dealer leaves: its open leads move to the next best dealer.
------------------------------------------------------------------------------
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
  ('R1', 'Leaving, Mackinac', 'US', '49757'),
  ('R2', 'Next, St Ignace', 'US', '49781'),
  ('R3', 'St Louis', 'US', '63101');
INSERT INTO dealer_brands VALUES ('R1', 'RDL'), ('R2', 'RDL'), ('R3', 'RDL');
INSERT INTO leads (brand_code, country, postal_code, dealer_number, comment) VALUES
  ('RDL', 'US', '49757', NULL, 'rdl-1'),
  ('RDL', 'US', '49757', NULL, 'rdl-2'),
  ('RDL', 'US', '49757', NULL, 'rdl-viewed'),
  ('RDL', 'US', '63101', NULL, 'rdl-other'),
  ('RDL', 'US', '63101', 'R1', 'rdl-pre');
UPDATE leads SET viewed_at = now() WHERE comment = 'rdl-viewed';
SELECT is((SELECT string_agg(dealer_number, ',' ORDER BY lead_id) FROM leads WHERE comment LIKE 'rdl-%'),
          'R1,R1,R1,R3,R1', 'before: four leads with R1 (one viewed, one pre-assigned), one with R3');
SELECT results_eq($$SELECT to_dealer_number, match_type::text, leads FROM aimroute.reassign_dealer_leads('R1', 'R1 closed')$$,
                  $$VALUES ('R2', 'Radius', 2::bigint), ('R3', 'Radius', 1::bigint)$$,
                  'reassign_dealer_leads returns how many open leads moved where');
SELECT is((SELECT string_agg(comment || '=' || dealer_number || ' ' || match_type, ', ' ORDER BY lead_id)
             FROM leads WHERE comment LIKE 'rdl-%'),
          'rdl-1=R2 Radius, rdl-2=R2 Radius, rdl-viewed=R1 Radius, rdl-other=R3 Radius, rdl-pre=R3 Radius',
          '... the viewed lead stays, the others go to the next best dealer, never back to R1');
SELECT results_eq(
  $$SELECT l.comment, h.event, h.from_dealer, h.to_dealer, h.reason
      FROM aimroute.lead_history h JOIN aimroute.leads l USING (lead_id)
     WHERE l.comment LIKE 'rdl-%' ORDER BY h.history_id$$,
  $$VALUES ('rdl-1', 'Dealer left', 'R1', 'R2', 'R1 closed'), ('rdl-2', 'Dealer left', 'R1', 'R2', 'R1 closed'),
           ('rdl-pre', 'Dealer left', 'R1', 'R3', 'R1 closed')$$,
  '... each move is a lead_history row');
SELECT alike(pg_temp.why('rdl-pre'), '%Pre-assigned: chosen: the lead arrived pre-assigned to dealer R1;%Radius: chosen: the closest dealer of US within 1500.0 miles',
             '... a lead pre-assigned to the leaving dealer is routed by the rules, explained after its first routing');
-- The default dealer leaving: its leads must not be "moved" back to it
-- (either they go elsewhere or the call is refused).
CREATE FUNCTION pg_temp.moved_back(dealer text) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT coalesce(sum(m.leads), 0) FROM aimroute.reassign_dealer_leads(dealer, 'closing') m
             WHERE m.to_dealer_number = dealer);
EXCEPTION WHEN OTHERS THEN
    RETURN 0;
END
$$;
SELECT is(pg_temp.moved_back('HQ'), 0::bigint,
          'reassign_dealer_leads of the default dealer never reports leads moved back to it');

------------------------------------------------------------------------------
-- simulate_routing changes nothing and shows what a change would do.
------------------------------------------------------------------------------
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
  ('S1', 'Sim Mackinac', 'US', '49757'),
  ('S2', 'Sim St Louis', 'US', '63101');
INSERT INTO dealer_brands VALUES ('S1', 'SIM'), ('S2', 'SIM');
INSERT INTO leads (received_at, brand_code, country, postal_code, comment) VALUES
  ('2001-02-03 10:00:00+00', 'SIM', 'US', '49757', 'sim-1'),
  ('2001-02-03 11:00:00+00', 'SIM', 'US', '63101', 'sim-2'),
  ('2001-02-03 12:00:00+00', 'SIM', 'US', '49781', 'sim-3');
CREATE TEMP TABLE leads_before ON COMMIT DROP AS SELECT * FROM leads;
CREATE TEMP TABLE history_before ON COMMIT DROP AS SELECT * FROM lead_history;
SELECT results_eq(
  $$SELECT l.comment, s.dealer_number, s.match_type::text, s.simulated_dealer_number, s.simulated_match_type::text
      FROM aimroute.simulate_routing('2001-02-03', '2001-02-04') s JOIN aimroute.leads l USING (lead_id)
     ORDER BY s.lead_id$$,
  $$VALUES ('sim-1', 'S1', 'Radius', 'S1', 'Radius'), ('sim-2', 'S2', 'Radius', 'S2', 'Radius'),
           ('sim-3', 'S1', 'Radius', 'S1', 'Radius')$$,
  'simulate_routing under the same configuration: the same decisions, only the leads received in [from, to)');
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES ('S2', 'SIM', 'county', 'US', 'MI/Mackinac');
SELECT results_eq(
  $$SELECT l.comment, s.dealer_number, s.match_type::text, s.simulated_dealer_number, s.simulated_match_type::text
      FROM aimroute.simulate_routing('2001-02-03', '2001-02-04') s JOIN aimroute.leads l USING (lead_id)
     ORDER BY s.lead_id$$,
  $$VALUES ('sim-1', 'S1', 'Radius', 'S2', 'Territory'), ('sim-2', 'S2', 'Radius', 'S2', 'Radius'),
           ('sim-3', 'S1', 'Radius', 'S2', 'Territory')$$,
  'after giving S2 the Mackinac county, in the same transaction: the difference shows');
SELECT is_empty(
  $$(SELECT to_jsonb(l) FROM aimroute.leads l EXCEPT SELECT to_jsonb(b) FROM leads_before b)
    UNION ALL
    (SELECT to_jsonb(b) FROM leads_before b EXCEPT SELECT to_jsonb(l) FROM aimroute.leads l)$$,
  'simulate_routing changed no lead');
SELECT is((SELECT count(*) FROM lead_history), (SELECT count(*) FROM history_before),
          '... and wrote no history');

------------------------------------------------------------------------------
-- locate_dealers: the same path as routing.
------------------------------------------------------------------------------
INSERT INTO dealers (dealer_number, name, country, postal_code, active_for_sales) VALUES
  ('LA', 'Loc Mackinac', 'US', '49757', true),
  ('LB', 'Loc St Ignace', 'US', '49781', true),
  ('LC', 'Loc Sault', 'US', '49783', true),
  ('LD', 'Loc inactive', 'US', '49757', false),
  ('LE', 'Loc Ontario', 'CA', 'P6A', true);
INSERT INTO dealer_brands VALUES ('LA', 'LOC'), ('LB', 'LOC'), ('LC', 'LOC'), ('LD', 'LOC'), ('LE', 'LOC');
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('LOC', 'US', '49757', 'loc');
SELECT results_eq(
  $$SELECT rank, dealer_number, name, match_type::text FROM aimroute.locate_dealers('US', '49757', 'LOC')$$,
  $$VALUES (1, 'LA', 'Loc Mackinac', 'Radius'), (2, 'LB', 'Loc St Ignace', 'Radius'),
           (3, 'LC', 'Loc Sault', 'Radius'), (4, 'HQ', 'Corporate', 'Default')$$,
  'locate_dealers: active US dealers by distance, then the default dealer, which ends the list');
SELECT is((SELECT dealer_number || ' ' || match_type FROM locate_dealers('US', '49757', 'LOC') WHERE rank = 1),
          pg_temp.routed('loc'), 'locate_dealers rank 1 is the dealer the lead was routed to');
SELECT is_empty(
  $$SELECT l.rank FROM aimroute.locate_dealers('US', '49757', 'LOC') l
     WHERE abs(l.distance_miles - pg_temp.miles('US', '49757', l.dealer_number)) >= 1e-6$$,
  'locate_dealers distances are the crow-flies distances');
SELECT is((SELECT count(*) FROM locate_dealers('US', '49757', 'LOC', NULL, 2)), 2::bigint,
          'max_results is respected');
SELECT is((SELECT dealer_number || ' ' || match_type FROM locate_dealers('CA', 'P0S', 'TER') WHERE rank = 1),
          'TK Territory', 'locate_dealers rank 1 by territory');
SELECT throws_ok($$SELECT * FROM aimroute.locate_dealers('US', '49757', 'LOC', NULL, 0)$$, '22023', NULL,
                 'max_results 0 is refused');
-- When the default dealer also sells the brand, it must not be listed twice.
INSERT INTO dealer_brands VALUES ('HQ', 'LOC');
SELECT is((SELECT count(*) FROM locate_dealers('US', '49757', 'LOC')),
          (SELECT count(DISTINCT dealer_number) FROM locate_dealers('US', '49757', 'LOC')),
          'locate_dealers lists each dealer once, also when the default dealer sells the brand');
SELECT is((SELECT array_agg(rank ORDER BY rank) FROM locate_dealers('US', '49757', 'LOC')),
          (SELECT array_agg(g) FROM generate_series(1, (SELECT count(*)::int FROM locate_dealers('US', '49757', 'LOC'))) g),
          'ranks are 1, 2, ... without gaps or repeats');

SELECT * FROM finish();
ROLLBACK;
