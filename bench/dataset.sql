--
-- bench/dataset.sql: the benchmark's dealer network and sample leads.
--
-- Loaded by bench/run.sh into the benchmark database once the shipped
-- postal codes are in.  bench.clear_network() empties the dealer
-- configuration, bench.build_network(n) fills it with a network of n
-- dealers, and bench.build_samples(m) draws m lead inputs
-- (bench.sample_leads, id 1..m) for that network.  Both builders start with
-- setseed() and draw their random numbers in a fixed order, so the same
-- arguments always build the same data.
--
-- Each active dealer also gets the people and systems its leads are
-- delivered to (dealer_contacts, crm_integrations), drawn last with a seed
-- of their own so that the routing network is the same as before delivery
-- existed.
--
-- Everything is placed at real US and Canadian postal codes: dealers at a
-- postal code's centre point (US about 90%, CA about 10%), territories of
-- every kind around them, and leads from postal codes all over both
-- countries.  Territories cover about the same share of the map whatever
-- the dealer count (each territory is held by the dealer nearest to it), so
-- the mix of routing rules the leads exercise stays comparable from 1,000
-- to 100,000 dealers.
--
-- The functions rely on the session's search_path reaching PostGIS (for
-- <->); run.sh sets it on the database.
--

CREATE SCHEMA bench;

-- The postal codes dealers and leads are drawn from: those with a centre
-- point and a state, numbered per country so that a random number picks one.
CREATE TABLE bench.postal_pool AS
SELECT p.country, p.postal_code, p.place_name, p.state_code, p.county, p.centroid,
       row_number() OVER (PARTITION BY p.country ORDER BY p.postal_code)::integer AS n
  FROM aimroute.postal_codes p
 WHERE p.country IN ('US', 'CA') AND p.centroid IS NOT NULL AND p.state_code IS NOT NULL;
ALTER TABLE bench.postal_pool ADD PRIMARY KEY (country, n);

-- US counties, each with the centre point of its first postal code.
CREATE TABLE bench.county_pool AS
SELECT DISTINCT ON (state_code, county) state_code, county, centroid
  FROM bench.postal_pool
 WHERE country = 'US' AND county IS NOT NULL
 ORDER BY state_code, county, postal_code;

-- Brands, with their share of dealers and of leads: each brand owns the
-- slice [lo, hi) of [0, 1).  LUX is the niche brand sold nationally.
CREATE TABLE bench.brand_mix (
    brand_code  text PRIMARY KEY,
    name        text NOT NULL,
    weight      double precision NOT NULL,
    lo          double precision,
    hi          double precision
);
INSERT INTO bench.brand_mix (brand_code, name, weight) VALUES
    ('NRD', 'Nordhaven Boats', 30), ('CRS', 'Crestline Pontoons', 20),
    ('SUM', 'Summit ATV', 15), ('TRL', 'Trailhead RV', 12),
    ('BAY', 'Bayview Yachts', 8), ('RDG', 'Ridgeback Mowers', 7),
    ('PKE', 'Pike Outboards', 5), ('LUX', 'Luxe Cruisers', 3);
UPDATE bench.brand_mix b
   SET lo = (s.upto - b.weight) / s.total, hi = s.upto / s.total
  FROM (SELECT brand_code, sum(weight) OVER (ORDER BY weight DESC, brand_code) AS upto,
               sum(weight) OVER () AS total
          FROM bench.brand_mix) s
 WHERE s.brand_code = b.brand_code;

-- The product codes of product routing and inventory.
CREATE TABLE bench.products AS
SELECT format('P%s', lpad(i::text, 2, '0')) AS product_code FROM generate_series(1, 20) AS i;

-- The lead inputs the measurements insert, one per id; the last columns
-- are not inputs: what the bare INSERT (routing off) writes instead of
-- routing, and the lead's centre point when its postal code is known.
CREATE TABLE bench.sample_leads (
    id                   integer PRIMARY KEY,
    brand_code           text,
    product_code         text,
    first_name           text,
    last_name            text,
    email                text,
    phone                text,
    address              text,
    city                 text,
    state_code           text,
    country              text,
    postal_code          text,
    dealer_number        text,
    dealer_group         text,
    comment              text,
    bare_dealer_number   text NOT NULL,
    bare_match_type      aimroute.match_type NOT NULL,
    bare_distance_miles  double precision,
    point_country        text,
    point                geography(Point, 4326)
);

-- The "full" sample leads: those of bench.sample_leads that the network
-- routes to a dealer with all three kinds of recipient, a 'Leads: Emails
-- To' contact, a 'Leads: Emails CC' contact and an active CRM integration,
-- renumbered 1..k (sample_id: the row of bench.sample_leads).  A lead
-- inserted as applications insert it, for a dealer that is fully set up,
-- queues three messages; the routed INSERT over these samples measures
-- that (bench/pgbench_routed_full_insert.sql).  Drawn from the same inputs
-- and the same network, so nothing the other measures use changes.
CREATE TABLE bench.sample_full (LIKE bench.sample_leads);
ALTER TABLE bench.sample_full ADD PRIMARY KEY (id), ADD COLUMN sample_id integer NOT NULL;

-- The centre points of the sample leads whose postal code is known,
-- numbered 1..k: what the plain KNN query measures from.
CREATE TABLE bench.sample_points (
    id         integer PRIMARY KEY,
    sample_id  integer NOT NULL,
    country    text NOT NULL,
    centroid   geography(Point, 4326) NOT NULL
);

--
-- clear_network: empties the dealer configuration and every table that
-- references dealers.  Leads go first (they reference dealers; their
-- notices and history go with them), with the outbox and its attempts
-- (which hold no foreign key), and the settings stop naming the default
-- dealer; dealers are deleted rather than truncated because the settings
-- row refuses TRUNCATE.  Run VACUUM on aimroute.dealers afterwards, or the
-- deleted rows slow down the nearest-dealer searches of the next build.
--
CREATE FUNCTION bench.clear_network() RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    TRUNCATE aimroute.leads, aimroute.lead_staging, aimroute.outbox, bench.leads_plpgsql,
             bench.agreement, bench.sample_full CASCADE;
    UPDATE aimroute.settings SET default_dealer_number = NULL;
    TRUNCATE aimroute.territories, aimroute.product_assignments, aimroute.inventory,
             aimroute.dealer_brands, aimroute.brands, aimroute.dealer_contacts,
             aimroute.crm_integrations, aimroute.tie_turns, aimroute.daily_lead_counts;
    DELETE FROM aimroute.dealers;
END
$$;

--
-- build_network: fills the empty configuration (see clear_network) with a
-- network of n dealers (D000001 ..) plus the default dealer D000000:
-- brands, dealers, dealer_brands, product_assignments, inventory,
-- territories and the routing settings; then the recipients of each active
-- dealer's leads, its CRM integrations posting to crm_url (run.sh passes
-- the loopback HTTP sink's URL; the default goes nowhere).
--
CREATE FUNCTION bench.build_network(dealers integer, crm_url text DEFAULT 'http://127.0.0.1:1/adf')
RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    us_codes integer;
    ca_codes integer;
    groups integer := greatest(2, dealers / 500);
BEGIN
    PERFORM setseed(0.20241123);

    INSERT INTO aimroute.brands (brand_code, name)
    SELECT brand_code, name FROM bench.brand_mix ORDER BY brand_code;

    SELECT count(*) FILTER (WHERE country = 'US'), count(*) FILTER (WHERE country = 'CA')
      INTO us_codes, ca_codes
      FROM bench.postal_pool;

    -- The default dealer: the OEM's headquarters, not a sales outlet.
    INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code, active_for_sales)
    SELECT 'D000000', 'Headquarters', country, postal_code, false
      FROM bench.postal_pool WHERE country = 'US' AND n = us_codes / 2;

    -- One row of random draws per dealer, in dealer order.
    CREATE TEMP TABLE dealer_draw ON COMMIT DROP AS
    SELECT i, format('D%s', lpad(i::text, 6, '0')) AS dealer_number,
           random() AS r_country, random() AS r_code, random() AS r_active, random() AS r_group,
           1 + floor(random() * 3)::integer AS nbrands
      FROM generate_series(1, dealers) AS i;

    -- A handful (1%) inactive; 3% in dealer groups of about 15.
    INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code, state_code, county,
                                  location, active_for_sales, dealer_group)
    SELECT d.dealer_number, format('%s Dealer %s', p.place_name, d.i),
           p.country, p.postal_code, p.state_code, p.county, p.centroid,
           d.r_active >= 0.01,
           CASE WHEN d.r_group < 0.03
                THEN format('G%s', lpad((1 + floor(d.r_group / 0.03 * groups))::text, 4, '0')) END
      FROM dealer_draw d
      JOIN bench.postal_pool p
        ON p.country = CASE WHEN d.r_country < 0.9 THEN 'US' ELSE 'CA' END
       AND p.n = 1 + floor(d.r_code * CASE WHEN d.r_country < 0.9 THEN us_codes ELSE ca_codes END)
     ORDER BY d.i;

    -- Each dealer sells 1 to 3 brands, popular brands more often: a
    -- weighted draw without replacement (the smallest -ln(u)/weight keys).
    INSERT INTO aimroute.dealer_brands (dealer_number, brand_code)
    SELECT dealer_number, brand_code
      FROM (SELECT k.dealer_number, k.brand_code, k.nbrands,
                   row_number() OVER (PARTITION BY k.dealer_number ORDER BY k.key, k.brand_code) AS pick
              FROM (SELECT d.dealer_number, d.nbrands, b.brand_code,
                           -ln(1.0 - random()) / b.weight AS key
                      FROM dealer_draw d CROSS JOIN bench.brand_mix b
                     ORDER BY d.i, b.brand_code) AS k) AS ranked
     WHERE pick <= nbrands;

    -- Each dealer is assigned about 6 of the 20 products, and stocks what
    -- it is assigned (0 to 4 units: a fifth of the rows out of stock).
    INSERT INTO aimroute.product_assignments (dealer_number, product_code)
    SELECT dealer_number, product_code
      FROM (SELECT d.dealer_number, p.product_code, random() AS r
              FROM dealer_draw d CROSS JOIN bench.products p
             ORDER BY d.i, p.product_code) AS a
     WHERE r < 0.3;
    INSERT INTO aimroute.inventory (dealer_number, product_code, quantity)
    SELECT dealer_number, product_code, q
      FROM (SELECT dealer_number, product_code, floor(random() * 5)::integer AS q
              FROM aimroute.product_assignments
             ORDER BY dealer_number, product_code) AS s;

    -- The territory holders below are found by nearest-dealer queries,
    -- which need the new rows' statistics to use the indexes.
    ANALYZE aimroute.dealers, aimroute.dealer_brands, aimroute.product_assignments, aimroute.inventory;

    -- Random draws per postal code and per county, in a fixed order.
    CREATE TEMP TABLE code_draw ON COMMIT DROP AS
    SELECT c.*, random() AS r_all, random() AS r_brand, random() AS r_which, random() AS r_state
      FROM (SELECT * FROM bench.postal_pool ORDER BY country, n) AS c;
    CREATE TEMP TABLE county_draw ON COMMIT DROP AS
    SELECT c.*, random() AS r_all, random() AS r_which
      FROM (SELECT * FROM bench.county_pool ORDER BY state_code, county) AS c;

    -- Postal territories for all brands: 20% of the postal codes, each
    -- held by the nearest dealer of its country (one holder per code).
    INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
    SELECT h.dealer_number, NULL, 'postal', c.country, c.postal_code
      FROM code_draw c
     CROSS JOIN LATERAL (SELECT d.dealer_number FROM aimroute.dealers d
                          WHERE d.country = c.country AND d.dealer_number <> 'D000000'
                          ORDER BY d.location <-> c.centroid LIMIT 1) h
     WHERE c.r_all < 0.20
     ORDER BY c.country, c.postal_code;

    -- Brand Territories by postal code: 5% of the codes, for one brand
    -- each, held by the nearest dealer of the country selling it.
    INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
    SELECT h.dealer_number, b.brand_code, 'postal', c.country, c.postal_code
      FROM code_draw c
      JOIN bench.brand_mix b ON c.r_which >= b.lo AND c.r_which < b.hi
     CROSS JOIN LATERAL (SELECT d.dealer_number FROM aimroute.dealers d
                          WHERE d.country = c.country
                            AND EXISTS (SELECT FROM aimroute.dealer_brands db
                                         WHERE db.dealer_number = d.dealer_number
                                           AND db.brand_code = b.brand_code)
                          ORDER BY d.location <-> c.centroid LIMIT 1) h
     WHERE c.r_brand < 0.05
     ORDER BY c.country, c.postal_code;

    -- County territories (US): 5% of the counties for all brands, another
    -- 2% for one brand, each held by the nearest (suitable) dealer.
    INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
    SELECT h.dealer_number, NULL, 'county', 'US', c.state_code || '/' || c.county
      FROM county_draw c
     CROSS JOIN LATERAL (SELECT d.dealer_number FROM aimroute.dealers d
                          WHERE d.country = 'US' AND d.dealer_number <> 'D000000'
                          ORDER BY d.location <-> c.centroid LIMIT 1) h
     WHERE c.r_all < 0.05
     ORDER BY c.state_code, c.county;
    INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
    SELECT h.dealer_number, b.brand_code, 'county', 'US', c.state_code || '/' || c.county
      FROM county_draw c
      JOIN bench.brand_mix b ON c.r_which >= b.lo AND c.r_which < b.hi
     CROSS JOIN LATERAL (SELECT d.dealer_number FROM aimroute.dealers d
                          WHERE d.country = 'US'
                            AND EXISTS (SELECT FROM aimroute.dealer_brands db
                                         WHERE db.dealer_number = d.dealer_number
                                           AND db.brand_code = b.brand_code)
                          ORDER BY d.location <-> c.centroid LIMIT 1) h
     WHERE c.r_all >= 0.05 AND c.r_all < 0.07
     ORDER BY c.state_code, c.county;

    -- State territories, a fixed few whatever the network's size: the
    -- states of five random postal codes, the first four for one brand,
    -- the fifth for all brands, held by the dealer nearest to that code.
    INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
    SELECT h.dealer_number, s.brand_code, 'state', s.country, s.state_code
      FROM (SELECT c.country, c.state_code, c.centroid,
                   CASE WHEN row_number() OVER (ORDER BY c.r_state) <= 4 THEN b.brand_code END AS brand_code
              FROM code_draw c
              JOIN bench.brand_mix b ON c.r_which >= b.lo AND c.r_which < b.hi
             ORDER BY c.r_state
             LIMIT 5) s
     CROSS JOIN LATERAL (SELECT d.dealer_number FROM aimroute.dealers d
                          WHERE d.country = s.country AND d.dealer_number <> 'D000000'
                            AND (s.brand_code IS NULL
                                 OR EXISTS (SELECT FROM aimroute.dealer_brands db
                                             WHERE db.dealer_number = d.dealer_number
                                               AND db.brand_code = s.brand_code))
                          ORDER BY d.location <-> s.centroid LIMIT 1) h
    ON CONFLICT DO NOTHING;

    -- Country territories for the niche brand: in each country, its
    -- dealer with the lowest number holds the whole country for it.
    INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
    SELECT min(d.dealer_number), 'LUX', 'country', d.country, d.country
      FROM aimroute.dealers d
      JOIN aimroute.dealer_brands db ON db.dealer_number = d.dealer_number AND db.brand_code = 'LUX'
     GROUP BY d.country;

    -- Product and inventory routing on, so that every rule of the SPEC
    -- takes part; radius as shipped (1500 miles, US and CA).
    UPDATE aimroute.settings
       SET default_dealer_number = 'D000000', radius_enabled = true, radius_miles = 1500,
           radius_countries = '{US,CA}', product_routing_enabled = true,
           inventory_routing_enabled = true;

    -- Who receives the leads (SPEC section 4), drawn after everything
    -- above from a seed of its own, so that the draws of the routing
    -- network stay what they were.  Every active dealer has one 'Leads:
    -- Emails To' contact, sales@dNNNNNN.example; about half of them a
    -- mobile number too (push is sent only with settings.push_gateway_url,
    -- which the benchmark leaves NULL).  About 30% have a second contact
    -- who gets a copy ('Leads: Emails CC'), and about 10% a CRM taking
    -- ADF XML by HTTP POST.  The inactive dealers, the default dealer
    -- among them, have none: a lead they get queues its notice, with no
    -- message ("No contacts configured").
    PERFORM setseed(0.4);
    CREATE TEMP TABLE contact_draw ON COMMIT DROP AS
    SELECT d.dealer_number, lower(d.dealer_number) AS handle,
           random() AS r_cc, random() AS r_mobile, random() AS r_crm
      FROM (SELECT dealer_number FROM aimroute.dealers
             WHERE active_for_sales ORDER BY dealer_number) AS d;
    INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, mobile, contact_types)
    SELECT c.dealer_number, 'Sales desk', format('sales@%s.example', c.handle),
           CASE WHEN c.r_mobile < 0.5 THEN format('+1555%s', substr(c.dealer_number, 2)) END,
           '{Leads: Emails To}'
      FROM contact_draw c
     ORDER BY c.dealer_number;
    INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, contact_types)
    SELECT c.dealer_number, 'Sales manager', format('manager@%s.example', c.handle),
           '{Leads: Emails CC}'
      FROM contact_draw c
     WHERE c.r_cc < 0.3
     ORDER BY c.dealer_number;
    INSERT INTO aimroute.crm_integrations (dealer_number, kind, endpoint, name)
    SELECT c.dealer_number, 'adf_http', format('%s/%s', crm_url, c.handle), 'Dealer CRM'
      FROM contact_draw c
     WHERE c.r_crm < 0.1
     ORDER BY c.dealer_number;
    ANALYZE aimroute.dealer_contacts, aimroute.crm_integrations;
END
$$;

--
-- build_samples: m lead inputs for the current network.  90% US, 10% CA;
-- postal codes as people type them (ZIP+4, Canadian full codes, lower
-- case), 3% unknown; brands in proportion to their weight, 0.5% unknown;
-- 30% with a product; 2% with a dealer group, 1% pre-assigned to a dealer.
--
CREATE FUNCTION bench.build_samples(leads integer) RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    us_codes integer;
    ca_codes integer;
    ndealers integer;
    groups text[];
BEGIN
    PERFORM setseed(0.5);
    TRUNCATE bench.sample_leads, bench.sample_points;

    SELECT count(*) FILTER (WHERE country = 'US'), count(*) FILTER (WHERE country = 'CA')
      INTO us_codes, ca_codes
      FROM bench.postal_pool;
    SELECT count(*) INTO ndealers FROM aimroute.dealers WHERE dealer_number <> 'D000000';
    SELECT array_agg(DISTINCT dealer_group ORDER BY dealer_group) INTO groups
      FROM aimroute.dealers WHERE dealer_group IS NOT NULL;

    WITH draw AS MATERIALIZED (
        SELECT i, random() AS r_country, random() AS r_code, random() AS r_kind, random() AS r_fmt,
               random() AS r_brand, random() AS r_product, random() AS r_extra, random() AS r_tail
          FROM generate_series(1, leads) AS i
    ), placed AS (
        SELECT d.*, p.postal_code AS code, p.place_name, p.state_code, p.centroid, p.country AS cc,
               d.r_kind < 0.03 AS unknown_code
          FROM draw d
          JOIN bench.postal_pool p
            ON p.country = CASE WHEN d.r_country < 0.9 THEN 'US' ELSE 'CA' END
           AND p.n = 1 + floor(d.r_code * CASE WHEN d.r_country < 0.9 THEN us_codes ELSE ca_codes END)
    )
    INSERT INTO bench.sample_leads
    SELECT x.i,
           CASE WHEN x.r_tail < 0.005 THEN 'ZZZ'
                ELSE (SELECT b.brand_code FROM bench.brand_mix b
                       WHERE x.r_brand >= b.lo AND x.r_brand < b.hi) END,
           CASE WHEN x.r_product < 0.3
                THEN format('P%s', lpad((1 + floor(x.r_product / 0.3 * 20))::text, 2, '0')) END,
           (ARRAY['Ava', 'Ben', 'Chloe', 'Dmitri', 'Elena', 'Farid', 'Grace', 'Hugo'])[1 + x.i % 8],
           (ARRAY['Tremblay', 'Smith', 'Nguyen', 'Garcia', 'Roy', 'Johnson', 'Kowalski'])[1 + x.i % 7],
           format('lead%s@example.com', x.i),
           format('555-%s', lpad((x.i % 10000)::text, 4, '0')),
           format('%s Main Street', 1 + x.i % 999),
           x.place_name,
           x.state_code,
           CASE WHEN x.r_fmt < 0.80 THEN x.cc
                WHEN x.r_fmt < 0.90 THEN CASE x.cc WHEN 'US' THEN 'USA' ELSE 'CAN' END
                WHEN x.r_fmt < 0.95 THEN lower(x.cc)
                ELSE CASE x.cc WHEN 'US' THEN 'United States' ELSE 'Canada' END END,
           CASE WHEN x.unknown_code AND x.cc = 'US' AND x.r_kind < 0.015
                    THEN format('%sX', lpad(floor(x.r_fmt * 10000)::text, 4, '0'))   -- malformed
                WHEN x.unknown_code AND x.cc = 'US'
                    THEN format('000%s', lpad(floor(x.r_fmt * 100)::text, 2, '0'))   -- no such ZIP
                WHEN x.unknown_code
                    THEN format('Z%sZ', floor(x.r_fmt * 10)::integer)                -- no such FSA
                WHEN x.cc = 'US' AND x.r_kind > 0.8
                    THEN format('%s-%s', x.code, lpad(floor(x.r_tail * 10000)::text, 4, '0'))
                WHEN x.cc = 'US' THEN x.code
                WHEN x.r_kind > 0.5            -- a full Canadian code, found by its FSA
                    THEN format('%s %s%s%s', x.code, floor(x.r_tail * 10)::integer,
                                chr(65 + floor(x.r_fmt * 26)::integer), x.i % 10)
                ELSE lower(x.code) END,
           CASE WHEN x.r_extra >= 0.99
                THEN format('D%s', lpad((1 + floor((x.r_extra - 0.99) / 0.01 * ndealers))::text, 6, '0')) END,
           CASE WHEN x.r_extra >= 0.97 AND x.r_extra < 0.99
                THEN groups[1 + floor((x.r_extra - 0.97) / 0.02 * cardinality(groups))::integer] END,
           format('bench sample %s', x.i),
           format('D%s', lpad((1 + floor(x.r_code * ndealers))::text, 6, '0')),
           'Radius',
           round((x.r_tail * 200)::numeric, 3),
           CASE WHEN NOT x.unknown_code THEN x.cc END,
           CASE WHEN NOT x.unknown_code THEN x.centroid END
      FROM placed x
     ORDER BY x.i;

    INSERT INTO bench.sample_points (id, sample_id, country, centroid)
    SELECT row_number() OVER (ORDER BY id), id, point_country, point
      FROM bench.sample_leads
     WHERE point IS NOT NULL;
END
$$;

--
-- build_full_samples: bench.sample_full for the current network and
-- samples.  Routes every sample lead once (send_to_dealer false, so
-- nothing is queued), keeps those whose dealer has a To contact with an
-- email, a CC contact with an email and an active CRM integration, and
-- empties aimroute.leads again.  Returns how many it kept (about 3% of the
-- samples: 30% of the dealers have a CC contact and 10% a CRM).
--
CREATE FUNCTION bench.build_full_samples() RETURNS bigint
    LANGUAGE plpgsql
AS $$
DECLARE
    kept bigint;
BEGIN
    TRUNCATE aimroute.leads, bench.sample_full CASCADE;
    INSERT INTO aimroute.leads (brand_code, product_code, first_name, last_name, email, phone,
                                address, city, state_code, country, postal_code, dealer_number,
                                dealer_group, comment, send_to_dealer)
    SELECT brand_code, product_code, first_name, last_name, email, phone, address, city,
           state_code, country, postal_code, dealer_number, dealer_group, comment, false
      FROM bench.sample_leads ORDER BY id;
    INSERT INTO bench.sample_full
    SELECT row_number() OVER (ORDER BY s.id), s.brand_code, s.product_code, s.first_name,
           s.last_name, s.email, s.phone, s.address, s.city, s.state_code, s.country,
           s.postal_code, s.dealer_number, s.dealer_group, s.comment, s.bare_dealer_number,
           s.bare_match_type, s.bare_distance_miles, s.point_country, s.point, s.id
      FROM bench.sample_leads s
      JOIN aimroute.leads l ON l.comment = s.comment
     WHERE EXISTS (SELECT FROM aimroute.dealer_contacts c
                    WHERE c.dealer_number = l.dealer_number AND c.email IS NOT NULL
                      AND 'Leads: Emails To' = ANY (c.contact_types))
       AND EXISTS (SELECT FROM aimroute.dealer_contacts c
                    WHERE c.dealer_number = l.dealer_number AND c.email IS NOT NULL
                      AND 'Leads: Emails CC' = ANY (c.contact_types))
       AND EXISTS (SELECT FROM aimroute.crm_integrations i
                    WHERE i.dealer_number = l.dealer_number AND i.active);
    GET DIAGNOSTICS kept = ROW_COUNT;
    TRUNCATE aimroute.leads CASCADE;
    IF kept = 0 THEN
        RAISE EXCEPTION 'build_full_samples: no sample lead goes to a dealer with To, CC and a CRM';
    END IF;
    RETURN kept;
END
$$;
