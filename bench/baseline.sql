--
-- bench/baseline.sql: the routing rules of SPEC section 2 in plain
-- PL/pgSQL, the baseline the C routing is compared with.
--
-- Written the way a competent developer would write it without a
-- performance brief: one BEFORE INSERT trigger, one query per rule, plans
-- cached by PL/pgSQL, the indexes the extension already has, and nearest
-- dealers found by ORDER BY ST_Distance(...) LIMIT 1 (within the radius by
-- ST_DWithin where the rule has one).  No routing explanation is kept.
--
-- bench.leads_plpgsql is made LIKE aimroute.leads, with the same keys,
-- indexes and foreign key, so that the rows it stores cost what
-- aimroute.leads rows cost (less the explanation, which it does not keep).
--
-- PostGIS is reached through the session's search_path (run.sh sets it on
-- the database).
--

CREATE TABLE bench.leads_plpgsql (
    LIKE aimroute.leads INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING INDEXES
);
ALTER TABLE bench.leads_plpgsql
    ADD FOREIGN KEY (dealer_number) REFERENCES aimroute.dealers ON UPDATE CASCADE;

CREATE FUNCTION bench.route_lead_plpgsql() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    s          aimroute.settings;
    pc         aimroute.postal_codes;
    v_country  text;
    v_postal   text;
    v_state    text;
    v_county   text;
    v_product  text;            -- the product filter of territory and radius, or NULL
    v_brand_ok boolean;
    v_match    aimroute.match_type;
    v_dealer   text;
    v_meters   double precision;
BEGIN
    SELECT * INTO s FROM aimroute.settings;

    -- Where the lead is.
    v_country := aimroute.normalize_country(NEW.country);
    v_postal := aimroute.normalize_postal_code(v_country, NEW.postal_code);
    IF v_country IS NOT NULL AND v_postal IS NOT NULL THEN
        SELECT * INTO pc FROM aimroute.postal_codes p
         WHERE p.country = v_country AND p.postal_code = v_postal;
    END IF;
    v_state := coalesce(pc.state_code, nullif(upper(btrim(NEW.state_code)), ''));
    v_county := pc.state_code || '/' || pc.county;
    IF s.product_routing_enabled THEN
        v_product := nullif(NEW.product_code, '');
    END IF;
    v_brand_ok := EXISTS (SELECT FROM aimroute.brands b WHERE b.brand_code = NEW.brand_code);

    -- 1. Pre-assigned: an existing dealer keeps the lead, whether or not
    --    it is active or sells the brand (SPEC section 2, rule 1).
    IF nullif(NEW.dealer_number, '') IS NOT NULL THEN
        SELECT d.dealer_number, ST_Distance(d.location, pc.centroid)
          INTO v_dealer, v_meters
          FROM aimroute.dealers d
         WHERE d.dealer_number = NEW.dealer_number;
        IF FOUND THEN
            v_match := 'Pre-assigned';
        END IF;
    END IF;

    -- 2. Dealer Group: the closest dealer of the group in the country
    --    (without a centre point, the lowest dealer number).
    IF v_match IS NULL AND v_brand_ok AND v_country IS NOT NULL
       AND nullif(NEW.dealer_group, '') IS NOT NULL THEN
        SELECT d.dealer_number, ST_Distance(d.location, pc.centroid)
          INTO v_dealer, v_meters
          FROM aimroute.dealers d
          JOIN aimroute.dealer_brands db ON db.dealer_number = d.dealer_number
         WHERE d.dealer_group = NEW.dealer_group AND d.country = v_country
           AND d.active_for_sales AND db.brand_code = NEW.brand_code
           AND (pc.centroid IS NULL OR d.location IS NOT NULL)
         ORDER BY ST_Distance(d.location, pc.centroid), d.dealer_number COLLATE "C"
         LIMIT 1;
        IF FOUND THEN
            v_match := 'Dealer Group';
        END IF;
    END IF;

    -- 3. Inventory: the closest dealer of the country within the radius
    --    with the product in stock.
    IF v_match IS NULL AND v_brand_ok AND v_country IS NOT NULL AND s.inventory_routing_enabled
       AND nullif(NEW.product_code, '') IS NOT NULL AND pc.centroid IS NOT NULL THEN
        SELECT d.dealer_number, ST_Distance(d.location, pc.centroid)
          INTO v_dealer, v_meters
          FROM aimroute.dealers d
          JOIN aimroute.dealer_brands db ON db.dealer_number = d.dealer_number
          JOIN aimroute.inventory i ON i.dealer_number = d.dealer_number
         WHERE d.country = v_country AND d.active_for_sales
           AND db.brand_code = NEW.brand_code
           AND i.product_code = NEW.product_code AND i.quantity > 0
           AND ST_DWithin(d.location, pc.centroid, s.radius_miles * 1609.344)
         ORDER BY ST_Distance(d.location, pc.centroid), d.dealer_number COLLATE "C"
         LIMIT 1;
        IF FOUND THEN
            v_match := 'Inventory';
        END IF;
    END IF;

    -- 4. Territory: the closest dealer holding the lead's postal code,
    --    county, state or country, for all brands or for this brand.
    IF v_match IS NULL AND v_brand_ok AND v_country IS NOT NULL THEN
        SELECT d.dealer_number, ST_Distance(d.location, pc.centroid)
          INTO v_dealer, v_meters
          FROM aimroute.territories t
          JOIN aimroute.dealers d ON d.dealer_number = t.dealer_number
          JOIN aimroute.dealer_brands db ON db.dealer_number = d.dealer_number
         WHERE t.country = v_country
           AND (t.brand_code IS NULL OR t.brand_code = NEW.brand_code)
           AND ((t.kind = 'postal' AND t.code = v_postal)
                OR (t.kind = 'county' AND t.code = v_county)
                OR (t.kind = 'state' AND t.code = v_state)
                OR t.kind = 'country')
           AND d.active_for_sales AND db.brand_code = NEW.brand_code
           AND (v_product IS NULL
                OR EXISTS (SELECT FROM aimroute.product_assignments pa
                            WHERE pa.dealer_number = d.dealer_number AND pa.product_code = v_product))
         ORDER BY ST_Distance(d.location, pc.centroid), d.dealer_number COLLATE "C"
         LIMIT 1;
        IF FOUND THEN
            v_match := 'Territory';
        END IF;
    END IF;

    -- 5. Radius: the closest dealer of the same country within the radius.
    IF v_match IS NULL AND v_brand_ok AND s.radius_enabled AND v_country = ANY (s.radius_countries)
       AND pc.centroid IS NOT NULL THEN
        SELECT d.dealer_number, ST_Distance(d.location, pc.centroid)
          INTO v_dealer, v_meters
          FROM aimroute.dealers d
          JOIN aimroute.dealer_brands db ON db.dealer_number = d.dealer_number
         WHERE d.country = v_country AND d.active_for_sales
           AND db.brand_code = NEW.brand_code
           AND ST_DWithin(d.location, pc.centroid, s.radius_miles * 1609.344)
           AND (v_product IS NULL
                OR EXISTS (SELECT FROM aimroute.product_assignments pa
                            WHERE pa.dealer_number = d.dealer_number AND pa.product_code = v_product))
         ORDER BY ST_Distance(d.location, pc.centroid), d.dealer_number COLLATE "C"
         LIMIT 1;
        IF FOUND THEN
            v_match := 'Radius';
        END IF;
    END IF;

    -- 6. Default: whatever no rule placed.
    IF v_match IS NULL THEN
        IF s.default_dealer_number IS NULL THEN
            RAISE EXCEPTION 'no default dealer is configured';
        END IF;
        v_match := 'Default';
        v_dealer := s.default_dealer_number;
        SELECT ST_Distance(d.location, pc.centroid) INTO v_meters
          FROM aimroute.dealers d WHERE d.dealer_number = v_dealer;
    END IF;

    NEW.country := v_country;
    NEW.postal_code := v_postal;
    NEW.dealer_number := v_dealer;
    NEW.match_type := v_match;
    NEW.distance_miles := v_meters / 1609.344;
    NEW.routed_at := clock_timestamp();
    RETURN NEW;
END
$$;

CREATE TRIGGER route_lead_plpgsql BEFORE INSERT ON bench.leads_plpgsql
    FOR EACH ROW EXECUTE FUNCTION bench.route_lead_plpgsql();
