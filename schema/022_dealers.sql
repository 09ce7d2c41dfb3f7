--
-- The dealer network: brands, dealers, the brands each sells, their
-- territories, the products they may receive leads for and their stock.
-- Countries and postal codes are stored normalized (010_normalize.sql).
--

CREATE TABLE aimroute.brands (
    brand_code  text PRIMARY KEY
        CONSTRAINT brands_brand_code_trimmed CHECK (brand_code <> '' AND brand_code = btrim(brand_code)),
    name        text NOT NULL
);
COMMENT ON TABLE aimroute.brands IS 'The OEM''s brands.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.brands', '');
CREATE TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aimroute.brands
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.bump_config_version();
ALTER TABLE aimroute.brands ENABLE ALWAYS TRIGGER bump_config_version;
GRANT SELECT ON aimroute.brands TO aimroute_region, aimroute_dealer;

-- business_hours_valid: true, or the error that points at the bad token
-- of an opening_hours value (src/opening_hours.c); dealers' CHECK.
CREATE FUNCTION aimroute.business_hours_valid(business_hours text)
RETURNS boolean
    AS 'MODULE_PATHNAME', 'aimroute_business_hours_valid'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.business_hours_valid(text) IS
    'True when business_hours is an opening_hours value aimroute reads (docs/rerouting.md); otherwise raises an error naming the bad token and its position.';

CREATE TABLE aimroute.dealers (
    dealer_number     text PRIMARY KEY
        CONSTRAINT dealers_dealer_number_trimmed CHECK (dealer_number <> '' AND dealer_number = btrim(dealer_number)),
    name              text NOT NULL,
    country           text NOT NULL,
    postal_code       text,
    state_code        text,
    county            text,
    location          geography(Point, 4326),
    active_for_sales  boolean NOT NULL DEFAULT true,
    dealer_group      text,
    timezone          text,
    region            text,
    business_hours    text
        CONSTRAINT dealers_business_hours_valid CHECK (aimroute.business_hours_valid(business_hours)),
    daily_lead_cap    integer
        CONSTRAINT dealers_daily_lead_cap_check CHECK (daily_lead_cap > 0),
    CONSTRAINT dealers_country_normalized
        CHECK (country = aimroute.normalize_country(country))
);
CREATE INDEX dealers_location_idx ON aimroute.dealers USING gist (location);
CREATE INDEX dealers_dealer_group_idx ON aimroute.dealers (dealer_group) WHERE dealer_group IS NOT NULL;
COMMENT ON TABLE aimroute.dealers IS 'The dealer network.';
COMMENT ON COLUMN aimroute.dealers.country IS 'ISO 3166-1 alpha-2 code; alpha-3 codes and English names are accepted on input.';
COMMENT ON COLUMN aimroute.dealers.postal_code IS 'Normalized on input; state_code, county and location default to the postal code''s.';
COMMENT ON COLUMN aimroute.dealers.location IS 'Where the dealer is; radius and distance are measured from here. Defaults to the postal code''s centre point.';
COMMENT ON COLUMN aimroute.dealers.active_for_sales IS 'Only active dealers receive leads (the default dealer excepted).';
COMMENT ON COLUMN aimroute.dealers.timezone IS 'The dealer''s time zone (a pg_timezone_names name), NULL for the OEM''s.';
COMMENT ON COLUMN aimroute.dealers.business_hours IS
    'When the dealer is open, in OpenStreetMap opening_hours syntax (such as ''Mo-Fr 08:00-18:00; Sa 09:00-13:00''), in its time zone; with settings.reroute_clock = ''business_hours'' the re-route deadline counts only this time. NULL: none (the elapsed clock).';
COMMENT ON COLUMN aimroute.dealers.daily_lead_cap IS
    'The most new leads routing gives the dealer in a day of the OEM''s time zone (settings.timezone, the day the lead was received); at the cap it is skipped like an inactive dealer (aimroute.daily_lead_counts). NULL: no cap.';
COMMENT ON COLUMN aimroute.dealers.region IS
    'The OEM''s sales region of the dealer (free text, such as ''Great Lakes''); notification contacts and region users are scoped by it.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.dealers', '');
CREATE TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aimroute.dealers
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.bump_config_version();
ALTER TABLE aimroute.dealers ENABLE ALWAYS TRIGGER bump_config_version;
GRANT SELECT ON aimroute.dealers TO aimroute_region, aimroute_dealer;

--
-- dealers_normalize: countries and postal codes in stored form, and state,
-- county and location taken from the postal code when not given.  A new
-- postal code moves the dealer: state, county and location follow it unless
-- the same UPDATE sets them.
--
CREATE FUNCTION aimroute.dealers_normalize() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    country_in text := NEW.country;
    pc aimroute.postal_codes;
    moved boolean;
BEGIN
    NEW.dealer_number := btrim(NEW.dealer_number);
    NEW.country := aimroute.normalize_country(NEW.country);
    IF NEW.country IS NULL THEN
        RAISE EXCEPTION 'unknown country "%" for dealer %', country_in, NEW.dealer_number
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an ISO 3166-1 alpha-2 or alpha-3 code, such as US, USA, CA or CAN.';
    END IF;
    NEW.postal_code := aimroute.normalize_postal_code(NEW.country, NEW.postal_code);
    NEW.state_code := nullif(upper(btrim(NEW.state_code)), '');

    moved := TG_OP = 'INSERT'
             OR NEW.country IS DISTINCT FROM OLD.country
             OR NEW.postal_code IS DISTINCT FROM OLD.postal_code;
    IF TG_OP = 'UPDATE' AND NEW.country IS DISTINCT FROM OLD.country
       AND EXISTS (SELECT FROM aimroute.territories t
                    WHERE t.dealer_number = OLD.dealer_number AND t.country <> NEW.country) THEN
        RAISE WARNING 'dealer % moves to %, but holds territories in other countries: they route no lead while it is there',
            NEW.dealer_number, NEW.country
            USING HINT = 'A territory never crosses a country line. Give those territories to a dealer of their country.';
    END IF;
    IF moved THEN
        SELECT * INTO pc FROM aimroute.postal_codes p
         WHERE p.country = NEW.country AND p.postal_code = NEW.postal_code;
        IF NOT FOUND AND NEW.postal_code IS NOT NULL THEN
            RAISE NOTICE 'postal code % % of dealer % is not in aimroute.postal_codes: state, county and location are not filled from it',
                NEW.country, NEW.postal_code, NEW.dealer_number;
        ELSIF FOUND AND pc.centroid IS NULL AND NEW.location IS NULL THEN
            RAISE NOTICE 'postal code % % of dealer % has no centre point: give the dealer a location, or it cannot be measured from',
                NEW.country, NEW.postal_code, NEW.dealer_number;
        END IF;
        IF TG_OP = 'INSERT' THEN
            -- A county is only taken along with its own state.
            IF NEW.state_code IS NULL OR NEW.state_code = pc.state_code THEN
                NEW.county := coalesce(NEW.county, pc.county);
            END IF;
            NEW.state_code := coalesce(NEW.state_code, pc.state_code);
            NEW.location := coalesce(NEW.location, pc.centroid);
        ELSE
            IF NEW.state_code IS NOT DISTINCT FROM OLD.state_code THEN
                NEW.state_code := coalesce(pc.state_code, NEW.state_code);
            END IF;
            IF NEW.county IS NOT DISTINCT FROM OLD.county THEN
                NEW.county := coalesce(pc.county, NEW.county);
            END IF;
            IF NEW.location IS NOT DISTINCT FROM OLD.location THEN
                NEW.location := coalesce(pc.centroid, NEW.location);
            END IF;
        END IF;
    END IF;

    IF NOT aimroute.timezone_is_valid(NEW.timezone) THEN
        RAISE EXCEPTION 'invalid time zone "%" for dealer %', NEW.timezone, NEW.dealer_number
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a name from pg_timezone_names, such as America/Chicago, or NULL for the OEM''s time zone.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER dealers_normalize BEFORE INSERT OR UPDATE ON aimroute.dealers
    FOR EACH ROW EXECUTE FUNCTION aimroute.dealers_normalize();

-- What the foreign keys of a notice (075_delivery.sql) would do: a
-- renumbered dealer keeps its notices and messages.
CREATE FUNCTION aimroute.dealers_renumber_notices() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE aimroute.lead_notifications n SET dealer_number = NEW.dealer_number
     WHERE n.dealer_number = OLD.dealer_number;
    UPDATE aimroute.outbox o SET dealer_number = NEW.dealer_number
     WHERE o.dealer_number = OLD.dealer_number;
    RETURN NULL;
END
$$;
CREATE TRIGGER dealers_renumber_notices AFTER UPDATE OF dealer_number ON aimroute.dealers
    FOR EACH ROW WHEN (OLD.dealer_number IS DISTINCT FROM NEW.dealer_number)
    EXECUTE FUNCTION aimroute.dealers_renumber_notices();

CREATE TABLE aimroute.dealer_brands (
    dealer_number  text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    brand_code     text NOT NULL REFERENCES aimroute.brands ON UPDATE CASCADE,
    PRIMARY KEY (dealer_number, brand_code)
);
CREATE INDEX dealer_brands_brand_idx ON aimroute.dealer_brands (brand_code);
COMMENT ON TABLE aimroute.dealer_brands IS 'The brands each dealer sells; only dealers selling a lead''s brand receive it.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.dealer_brands', '');
CREATE TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aimroute.dealer_brands
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.bump_config_version();
ALTER TABLE aimroute.dealer_brands ENABLE ALWAYS TRIGGER bump_config_version;
GRANT SELECT ON aimroute.dealer_brands TO aimroute_region, aimroute_dealer;

CREATE TABLE aimroute.territories (
    territory_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dealer_number  text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    brand_code     text,
    kind           text NOT NULL
        CONSTRAINT territories_kind_check CHECK (kind IN ('postal', 'county', 'state', 'country')),
    country        text NOT NULL,
    code           text NOT NULL,
    valid_from     timestamptz NOT NULL DEFAULT '-infinity',
    valid_to       timestamptz,
    CONSTRAINT territories_country_normalized
        CHECK (country = aimroute.normalize_country(country)),
    CONSTRAINT territories_brand_sold_by_dealer
        FOREIGN KEY (dealer_number, brand_code) REFERENCES aimroute.dealer_brands
        ON UPDATE CASCADE,
    CONSTRAINT territories_unique
        UNIQUE NULLS NOT DISTINCT (dealer_number, brand_code, kind, country, code, valid_from),
    CONSTRAINT territories_period_check CHECK (valid_from < valid_to)
);
-- One dealer per postal code and brand scope (NULL = all brands) at any
-- moment.  The trigger below names the holder and compares periods under
-- a lock; this index is the backstop for races between rows that start
-- at the same moment (every row without a period starts at -infinity).
CREATE UNIQUE INDEX territories_one_postal_holder
    ON aimroute.territories (country, code, brand_code, valid_from) NULLS NOT DISTINCT
    WHERE kind = 'postal';
CREATE INDEX territories_lookup_idx ON aimroute.territories (country, kind, code);
CREATE INDEX territories_dealer_idx ON aimroute.territories (dealer_number);
COMMENT ON TABLE aimroute.territories IS
    'Areas of responsibility. brand_code NULL: a Territories-page assignment (every brand the dealer sells); otherwise a Brand Territory (that brand only).';
COMMENT ON COLUMN aimroute.territories.kind IS 'postal, county, state or country.';
COMMENT ON COLUMN aimroute.territories.code IS 'postal: a normalized postal code; county: state code and county joined by a slash (MI/Mackinac); state: a state code (MO); country: the country code.';
COMMENT ON COLUMN aimroute.territories.valid_from IS 'First moment the territory routes leads (by their received_at); -infinity (the default, also what NULL becomes) for always.';
COMMENT ON COLUMN aimroute.territories.valid_to IS 'Moment the territory stops routing leads (exclusive); NULL (the default) for never.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.territories', '');
-- Identity sequences too, or a restored database would hand out used ids.
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.territories', 'territory_id')::regclass, '');
CREATE TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aimroute.territories
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.bump_config_version();
ALTER TABLE aimroute.territories ENABLE ALWAYS TRIGGER bump_config_version;
GRANT SELECT ON aimroute.territories TO aimroute_region, aimroute_dealer;

--
-- period_text: a period in words.
--
CREATE FUNCTION aimroute.period_text(valid_from timestamptz, valid_to timestamptz) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
               WHEN coalesce(valid_from, '-infinity') = '-infinity' AND valid_to IS NULL THEN 'always'
               WHEN coalesce(valid_from, '-infinity') = '-infinity' THEN format('until %s', valid_to)
               WHEN valid_to IS NULL THEN format('from %s', valid_from)
               ELSE format('from %s to %s', valid_from, valid_to)
           END
$$;
COMMENT ON FUNCTION aimroute.period_text(timestamptz, timestamptz) IS
    'A period of a territory or product assignment in words (always, until ..., from ..., from ... to ...), for messages and explanations.';

--
-- territories_normalize: stored form of each kind's code, the
-- one-holder-per-postal-code rule with an error that names the holder, no
-- territory across a country line (SPEC section 2, rule 4), and notices
-- for codes the postal-code table does not know.
--
CREATE FUNCTION aimroute.territories_normalize() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    country_in text := NEW.country;
    code_in text := NEW.code;
    dealer_country text;
    holder text;
    county_state text;
    county_name text;
    known_county text;
    held_from timestamptz;
    held_to timestamptz;
BEGIN
    NEW.valid_from := coalesce(NEW.valid_from, '-infinity');
    IF NEW.valid_from >= NEW.valid_to THEN
        RAISE EXCEPTION 'a territory of dealer % cannot end (valid_to %) before it starts (valid_from %)',
            NEW.dealer_number, NEW.valid_to, NEW.valid_from
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'valid_to is the first moment the territory no longer applies: set it after valid_from, or leave it NULL for never.';
    END IF;
    NEW.kind := lower(btrim(NEW.kind));
    IF NEW.kind IS NULL OR NEW.kind NOT IN ('postal', 'county', 'state', 'country') THEN
        RAISE EXCEPTION 'invalid territory kind "%"', NEW.kind
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A territory''s kind is one of postal, county, state or country.';
    END IF;
    NEW.country := aimroute.normalize_country(NEW.country);
    IF NEW.country IS NULL THEN
        RAISE EXCEPTION 'unknown country "%" for a territory of dealer %', country_in, NEW.dealer_number
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an ISO 3166-1 alpha-2 or alpha-3 code, such as US, USA, CA or CAN.';
    END IF;
    SELECT d.country INTO dealer_country FROM aimroute.dealers d WHERE d.dealer_number = NEW.dealer_number;
    IF dealer_country IS DISTINCT FROM NEW.country AND dealer_country IS NOT NULL THEN
        RAISE EXCEPTION 'a territory in % cannot be given to dealer %, which is in %', NEW.country, NEW.dealer_number, dealer_country
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The territory: %s %s %s.', NEW.kind, NEW.country, coalesce(NEW.code, '')),
                  HINT = format('A territory never crosses a country line: give it to a dealer in %s.', NEW.country);
    END IF;

    IF NEW.kind = 'country' THEN
        IF nullif(btrim(NEW.code), '') IS NULL THEN
            NEW.code := NEW.country;
        ELSIF aimroute.normalize_country(NEW.code) IS DISTINCT FROM NEW.country THEN
            RAISE EXCEPTION 'country territory code "%" does not match its country %', NEW.code, NEW.country
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For a country territory, leave code empty or repeat the country code.';
        ELSE
            NEW.code := NEW.country;
        END IF;

    ELSIF NEW.kind = 'state' THEN
        NEW.code := upper(btrim(NEW.code));
        IF NEW.code IS NULL OR NEW.code = '' THEN
            RAISE EXCEPTION 'a state territory needs a state code'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use the state or province code as in aimroute.postal_codes.state_code, such as MO or ON.';
        END IF;
        IF NOT EXISTS (SELECT FROM aimroute.postal_codes p
                        WHERE p.country = NEW.country AND p.state_code = NEW.code) THEN
            RAISE NOTICE 'no postal code of % has state code %: the territory of dealer % matches no lead yet',
                NEW.country, NEW.code, NEW.dealer_number;
        END IF;

    ELSIF NEW.kind = 'county' THEN
        county_state := upper(btrim(split_part(NEW.code, '/', 1)));
        county_name := btrim(substr(NEW.code, length(split_part(NEW.code, '/', 1)) + 2));
        IF position('/' IN coalesce(NEW.code, '')) = 0 OR county_state = '' OR county_name = '' THEN
            RAISE EXCEPTION 'invalid county territory code "%"', NEW.code
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write the state code and the county name joined by a slash, as in MI/Mackinac.';
        END IF;
        SELECT p.county INTO known_county FROM aimroute.postal_codes p
         WHERE p.country = NEW.country AND p.state_code = county_state
           AND lower(p.county) = lower(county_name)
         LIMIT 1;
        IF known_county IS NULL THEN
            RAISE NOTICE 'no postal code of % lies in county %/%: the territory of dealer % matches no lead yet',
                NEW.country, county_state, county_name, NEW.dealer_number;
        END IF;
        NEW.code := county_state || '/' || coalesce(known_county, county_name);

    ELSE -- postal
        NEW.code := aimroute.normalize_postal_code(NEW.country, NEW.code);
        IF NEW.code IS NULL OR NOT aimroute.postal_code_is_valid(NEW.country, NEW.code) THEN
            RAISE EXCEPTION 'invalid % postal code "%" for a territory of dealer %',
                NEW.country, coalesce(code_in, ''), NEW.dealer_number
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE NEW.country
                                 WHEN 'US' THEN 'A US territory postal code is a five-digit ZIP code, such as 49757.'
                                 WHEN 'CA' THEN 'A Canadian territory postal code is an FSA (P0S) or a full code (K1A 0B1).'
                                 ELSE 'A postal code cannot be blank.' END;
        END IF;
        -- Periods that overlap but start apart escape the unique index:
        -- writers of postal territories take turns (one lock for the
        -- transaction), so that each sees the rows of the one before at
        -- READ COMMITTED.
        PERFORM pg_catalog.pg_advisory_xact_lock('aimroute.territories'::regclass::oid::bigint);
        SELECT t.dealer_number, t.valid_from, t.valid_to INTO holder, held_from, held_to
          FROM aimroute.territories t
         WHERE t.kind = 'postal' AND t.country = NEW.country AND t.code = NEW.code
           AND t.brand_code IS NOT DISTINCT FROM NEW.brand_code
           AND t.territory_id IS DISTINCT FROM NEW.territory_id
           AND t.valid_from < coalesce(NEW.valid_to, 'infinity')
           AND NEW.valid_from < coalesce(t.valid_to, 'infinity')
         ORDER BY t.valid_from
         LIMIT 1;
        IF holder IS NOT NULL AND held_from = '-infinity' AND held_to IS NULL
           AND NEW.valid_from = '-infinity' AND NEW.valid_to IS NULL THEN
            RAISE EXCEPTION 'postal code % % is already held by dealer % for %',
                NEW.country, NEW.code, holder,
                coalesce('brand ' || NEW.brand_code, 'all brands')
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('A postal code can be held by one dealer per brand scope; dealer %s cannot take it as well.', NEW.dealer_number),
                      HINT = format('Remove it from dealer %s first, or assign it to dealer %s for a single brand (brand_code).', holder, NEW.dealer_number);
        ELSIF holder IS NOT NULL THEN
            RAISE EXCEPTION 'postal code % % is already held by dealer % for % %',
                NEW.country, NEW.code, holder,
                coalesce('brand ' || NEW.brand_code, 'all brands'),
                aimroute.period_text(held_from, held_to)
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('A postal code can be held by one dealer per brand scope at a time; dealer %s cannot take it %s as well.',
                                      NEW.dealer_number, aimroute.period_text(NEW.valid_from, NEW.valid_to)),
                      HINT = format('Let the periods follow each other: end dealer %s''s (valid_to) where dealer %s''s starts (valid_from), or the other way round.',
                                    holder, NEW.dealer_number);
        END IF;
        IF NOT EXISTS (SELECT FROM aimroute.postal_codes p
                        WHERE p.country = NEW.country AND p.postal_code = NEW.code) THEN
            RAISE NOTICE 'postal code % % is not in aimroute.postal_codes: leads from it will match this territory but have no centre point',
                NEW.country, NEW.code;
        END IF;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER territories_normalize BEFORE INSERT OR UPDATE ON aimroute.territories
    FOR EACH ROW EXECUTE FUNCTION aimroute.territories_normalize();

CREATE TABLE aimroute.product_assignments (
    dealer_number  text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    product_code   text NOT NULL
        CONSTRAINT product_assignments_product_code_trimmed CHECK (product_code <> '' AND product_code = btrim(product_code)),
    valid_from     timestamptz NOT NULL DEFAULT '-infinity',
    valid_to       timestamptz,
    CONSTRAINT product_assignments_period_check CHECK (valid_from < valid_to),
    PRIMARY KEY (dealer_number, product_code, valid_from)
);
CREATE INDEX product_assignments_product_idx ON aimroute.product_assignments (product_code);
COMMENT ON TABLE aimroute.product_assignments IS
    'Products each dealer may receive leads for, when settings.product_routing_enabled.';
COMMENT ON COLUMN aimroute.product_assignments.valid_from IS 'First moment the assignment counts for a lead (by its received_at); -infinity (the default) for always.';
COMMENT ON COLUMN aimroute.product_assignments.valid_to IS 'Moment the assignment stops counting (exclusive); NULL (the default) for never.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.product_assignments', '');
CREATE TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aimroute.product_assignments
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.bump_config_version();
ALTER TABLE aimroute.product_assignments ENABLE ALWAYS TRIGGER bump_config_version;
GRANT SELECT ON aimroute.product_assignments TO aimroute_region, aimroute_dealer;

CREATE TABLE aimroute.inventory (
    dealer_number  text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    product_code   text NOT NULL
        CONSTRAINT inventory_product_code_trimmed CHECK (product_code <> '' AND product_code = btrim(product_code)),
    quantity       integer NOT NULL DEFAULT 0
        CONSTRAINT inventory_quantity_not_negative CHECK (quantity >= 0),
    PRIMARY KEY (dealer_number, product_code)
);
CREATE INDEX inventory_in_stock_idx ON aimroute.inventory (product_code) WHERE quantity > 0;
COMMENT ON TABLE aimroute.inventory IS
    'Units in stock per dealer and product; inventory routing sends a lead to the closest dealer with the product in stock.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.inventory', '');
CREATE TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aimroute.inventory
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.bump_config_version();
ALTER TABLE aimroute.inventory ENABLE ALWAYS TRIGGER bump_config_version;
GRANT SELECT ON aimroute.inventory TO aimroute_region, aimroute_dealer;
