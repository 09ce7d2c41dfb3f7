--
-- reference: brands, dealers, territories and their rules.
--
SET search_path = aimroute, public;
INSERT INTO postal_codes (country, postal_code, place_name, state_code, county, centroid) VALUES
  ('US', '49757', 'Mackinac Island', 'MI', 'Mackinac', 'SRID=4326;POINT(-84.6189 45.8492)'),
  ('US', '49781', 'Saint Ignace', 'MI', 'Mackinac', 'SRID=4326;POINT(-84.7519 45.8997)'),
  ('US', '63101', 'Saint Louis', 'MO', 'St. Louis City', 'SRID=4326;POINT(-90.1910 38.6343)'),
  ('US', '00501', 'Holtsville', 'NY', 'Suffolk', 'SRID=4326;POINT(-73.0451 40.8154)'),
  ('CA', 'P0M', 'Killarney', 'ON', NULL, 'SRID=4326;POINT(-81.0 46.2)');

INSERT INTO brands VALUES ('LKB', 'Lakeshore Boats'), ('TRV', 'Trailway RV');
INSERT INTO brands VALUES (' LKB', 'untrimmed code');   -- refused

-- Dealers: country and postal code normalized; state, county and location
-- taken from the postal code when not given.
INSERT INTO dealers (dealer_number, name, country, postal_code)
VALUES ('D100', 'Island Marine', 'usa', '49757-0001'),
       ('D200', 'Killarney Boats', 'Canada', 'p0m 1a0'),
       ('D300', 'Gateway RV', 'US', '63101'),
       ('HQ', 'Corporate', 'US', '00501');
INSERT INTO dealers (dealer_number, name, country, postal_code, state_code, location)
VALUES ('D400', 'Given Location', 'US', '63101', 'il', 'SRID=4326;POINT(-90.0 38.7)');
SELECT dealer_number, country, postal_code, state_code, county,
       round(aimroute.st_y(location::aimroute.geometry)::numeric, 4) AS lat,
       round(aimroute.st_x(location::aimroute.geometry)::numeric, 4) AS lon
  FROM dealers ORDER BY dealer_number;

-- A dealer that moves: state, county and location follow the new postal
-- code, unless the same UPDATE sets them.
UPDATE dealers SET postal_code = '49781' WHERE dealer_number = 'D300';
UPDATE dealers SET postal_code = '49781', location = 'SRID=4326;POINT(-84.7 45.9)' WHERE dealer_number = 'D400';
SELECT dealer_number, postal_code, state_code, county,
       round(aimroute.st_x(location::aimroute.geometry)::numeric, 4) AS lon
  FROM dealers WHERE dealer_number IN ('D300', 'D400') ORDER BY 1;
UPDATE dealers SET postal_code = '63101' WHERE dealer_number = 'D300';

-- Bad dealer input is refused with a clear error.
INSERT INTO dealers (dealer_number, name, country) VALUES ('D900', 'Nowhere', 'Atlantis');
INSERT INTO dealers (dealer_number, name, country, timezone) VALUES ('D901', 'Bad TZ', 'US', 'Mars/Olympus');
INSERT INTO dealers (dealer_number, name, country) VALUES ('  ', 'Blank', 'US');
INSERT INTO dealers (dealer_number, name, country, timezone) VALUES ('D902', 'Good TZ', 'US', 'America/Detroit');
-- Business hours in OpenStreetMap opening_hours syntax: a bad token is named.
INSERT INTO dealers (dealer_number, name, country, business_hours) VALUES ('D903', 'Holidays', 'US', 'Mo-Fr 08:00-18:00; PH off');
INSERT INTO dealers (dealer_number, name, country, business_hours) VALUES ('D903', 'Night', 'US', 'Fr 22:00-02:00');
INSERT INTO dealers (dealer_number, name, country, business_hours) VALUES ('D903', 'Good hours', 'US', 'Mo-Fr 08:00-12:00,13:00-18:00; Sa 09:00-13:00; Su off');
SELECT dealer_number, business_hours FROM dealers WHERE dealer_number = 'D903';
DELETE FROM dealers WHERE dealer_number = 'D903';

INSERT INTO dealer_brands VALUES ('D100', 'LKB'), ('D200', 'LKB'), ('D300', 'TRV'),
                                 ('D400', 'LKB'), ('D400', 'TRV');
INSERT INTO dealer_brands VALUES ('D100', 'NOPE');        -- unknown brand

-- Territories: each kind's code in stored form.
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
  ('D100', NULL, 'postal', 'US', '49757-9999'),
  ('D100', NULL, 'County', 'usa', 'mi / mackinac'),
  ('D300', NULL, 'state', 'US', ' mo '),
  ('D200', NULL, 'country', 'CAN', NULL),
  ('D400', 'TRV', 'postal', 'US', '49757');
SELECT dealer_number, brand_code, kind, country, code FROM territories ORDER BY territory_id;

-- One dealer per postal code and brand scope: the error names the holder.
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D400', 'postal', 'US', '49757');
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES ('D300', 'TRV', 'postal', 'US', '49757-0000');
-- ... the same for an UPDATE that moves a territory onto a held code
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D300', 'postal', 'US', '49781');
UPDATE territories SET code = '49757' WHERE dealer_number = 'D300' AND kind = 'postal';
-- ... but another brand scope may hold it, and so may the holder after a release.
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES ('D400', 'LKB', 'postal', 'US', '49757');
DELETE FROM territories WHERE dealer_number = 'D100' AND kind = 'postal';
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D400', 'postal', 'US', '49757');
-- The race backstop: the unique index holds even with the trigger off.
ALTER TABLE territories DISABLE TRIGGER territories_normalize;
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D100', 'postal', 'US', '49757');
ALTER TABLE territories ENABLE TRIGGER territories_normalize;

-- A Brand Territory only for a brand the dealer sells.
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES ('D300', 'LKB', 'state', 'US', 'MO');
-- Bad kinds and codes.
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D100', 'zip', 'US', '49757');
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D100', 'postal', 'US', '1234X');
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D200', 'postal', 'CA', 'ZZZZ');
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D100', 'postal', 'Atlantis', '49757');
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D100', 'county', 'US', 'Mackinac');
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D100', 'state', 'US', '  ');
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D100', 'country', 'US', 'CA');
-- Codes the postal table does not know are kept, with a notice.
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D100', 'postal', 'US', '99999');
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D100', 'state', 'US', 'ZZ');
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D100', 'county', 'US', 'MI/Atlantis');

-- Products and inventory.
INSERT INTO product_assignments VALUES ('D100', 'LKB-FISH18');
INSERT INTO product_assignments VALUES ('D100', ' LKB-FISH18');   -- refused
INSERT INTO inventory VALUES ('D100', 'LKB-FISH18', 2);
INSERT INTO inventory VALUES ('D100', 'LKB-PONT22', -1);          -- refused

-- A dealer leaving takes its brands, territories, products and stock along.
DELETE FROM dealers WHERE dealer_number = 'D100';
SELECT (SELECT count(*) FROM dealer_brands WHERE dealer_number = 'D100') AS brands,
       (SELECT count(*) FROM territories WHERE dealer_number = 'D100') AS territories,
       (SELECT count(*) FROM product_assignments WHERE dealer_number = 'D100') AS products,
       (SELECT count(*) FROM inventory WHERE dealer_number = 'D100') AS stock;
-- A brand cannot be taken from a dealer that holds Brand Territories for it.
DELETE FROM dealer_brands WHERE dealer_number = 'D400' AND brand_code = 'TRV';
RESET search_path;
