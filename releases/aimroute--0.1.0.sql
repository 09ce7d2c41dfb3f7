-- aimroute 0.1.0: generated from schema/*.sql by make; do not edit.
\echo Use "CREATE EXTENSION aimroute CASCADE" to load this file. \quit

-- source: schema/000_install.sql
--
-- The rest of this script runs with pg_temp last in its search_path.
--
-- CREATE EXTENSION runs the script with search_path = aimroute, then the
-- schema of PostGIS.  PostgreSQL looks up tables and types in the
-- session's temporary schema before any schema of the path that does not
-- name it, and aimroute is a trusted extension: its script runs as the
-- bootstrap superuser for whichever role creates it.  A temporary type of
-- that role's session named like one the script uses (text, geography)
-- would be taken instead of the real one.  With pg_catalog first and
-- pg_temp named last, it is not.  The setting ends with the script.
--
DO $install$
BEGIN
    PERFORM pg_catalog.set_config('search_path',
        pg_catalog.format('pg_catalog, aimroute, %I, pg_temp',
                          (SELECT n.nspname
                             FROM pg_catalog.pg_extension e
                             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                            WHERE e.extname = 'postgis')),
        true);
END
$install$;

-- source: schema/010_c_functions.sql
--
-- Functions implemented in C (src/).
--

CREATE FUNCTION aimroute.library_version() RETURNS text
    AS 'MODULE_PATHNAME', 'aimroute_library_version'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.library_version() IS
    'Version of the loaded aimroute shared library; compare with the installed extension version after an upgrade.';

CREATE FUNCTION aimroute.normalize_country(country text) RETURNS text
    AS 'MODULE_PATHNAME', 'aimroute_normalize_country'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.normalize_country(text) IS
    'ISO 3166-1 alpha-2 code for an alpha-2 or alpha-3 code or an English country name (any case, trimmed); NULL when unknown.';

CREATE FUNCTION aimroute.normalize_postal_code(country text, postal_code text) RETURNS text
    AS 'MODULE_PATHNAME', 'aimroute_normalize_postal_code'
    LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.normalize_postal_code(text, text) IS
    'Postal code as aimroute stores it: trimmed, upper-cased; US: first five digits of a ZIP or ZIP+4; CA: spaces removed, and the FSA when the full code is not in aimroute.postal_codes. NULL when blank.';

CREATE FUNCTION aimroute.postal_code_is_valid(country text, postal_code text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'aimroute_postal_code_is_valid'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.postal_code_is_valid(text, text) IS
    'Whether a postal code, once normalized, fits its country''s pattern (US: five digits; CA: an FSA or a full code; elsewhere: not blank).';

CREATE FUNCTION aimroute.load_postal_codes(path text, format text DEFAULT 'geonames') RETURNS bigint
    AS 'MODULE_PATHNAME', 'aimroute_load_postal_codes'
    LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION aimroute.load_postal_codes(text, text) IS
    'Loads a postal-code file on the server (plain or .gz) into aimroute.postal_codes; returns the rows loaded. Rows it cannot read are listed in aimroute.postal_code_load_issues.';
REVOKE EXECUTE ON FUNCTION aimroute.load_postal_codes(text, text) FROM PUBLIC;

CREATE FUNCTION aimroute.bundled_postal_codes_path() RETURNS text
    AS 'MODULE_PATHNAME', 'aimroute_bundled_postal_codes_path'
    LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.bundled_postal_codes_path() IS
    'Where the postal-code file shipped with aimroute (US ZIP codes, Canadian FSAs) is installed on the server.';

-- source: schema/020_reference.sql
--
-- Reference data: postal codes, brands, dealers and what they hold.
--
-- Every country stored here is an ISO 3166-1 alpha-2 code and every postal
-- code is normalized by aimroute.normalize_postal_code(), so that a lead's
-- postal code meets the reference rows whatever way it was typed.
--

CREATE TABLE aimroute.postal_codes (
    country      text NOT NULL,
    postal_code  text NOT NULL,
    place_name   text,
    state_code   text,
    state_name   text,
    county       text,
    county_code  text,
    centroid     geography(Point, 4326),
    PRIMARY KEY (country, postal_code),
    CONSTRAINT postal_codes_country_normalized
        CHECK (country = aimroute.normalize_country(country))
);
CREATE INDEX postal_codes_state_county_idx
    ON aimroute.postal_codes (country, state_code, county);
COMMENT ON TABLE aimroute.postal_codes IS
    'Postal codes with their centre points, state and county; filled by aimroute.load_postal_codes().';
COMMENT ON COLUMN aimroute.postal_codes.country IS 'ISO 3166-1 alpha-2 code.';
COMMENT ON COLUMN aimroute.postal_codes.postal_code IS 'Normalized postal code: US five-digit ZIP, Canadian FSA (K1A) or full code.';
COMMENT ON COLUMN aimroute.postal_codes.state_code IS 'State or province code (MI, ON); what state territories match.';
COMMENT ON COLUMN aimroute.postal_codes.county IS 'County name; county territories match state_code/county (MI/Mackinac).';
COMMENT ON COLUMN aimroute.postal_codes.centroid IS 'Centre point of the postal code; NULL when the source had no coordinates.';

CREATE TABLE aimroute.postal_code_loads (
    load_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path           text NOT NULL,
    format         text NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at    timestamptz,
    rows_loaded    bigint,
    rows_flawed    bigint,
    rows_rejected  bigint
);
COMMENT ON TABLE aimroute.postal_code_loads IS
    'One row per call of aimroute.load_postal_codes(), with its counts.';
COMMENT ON COLUMN aimroute.postal_code_loads.rows_loaded IS 'Rows stored, flawed rows included.';
COMMENT ON COLUMN aimroute.postal_code_loads.rows_flawed IS 'Rows stored with a flaw (no coordinates, no state code).';
COMMENT ON COLUMN aimroute.postal_code_loads.rows_rejected IS 'Lines that could not be stored.';

CREATE TABLE aimroute.postal_code_load_issues (
    load_id      bigint NOT NULL REFERENCES aimroute.postal_code_loads ON DELETE CASCADE,
    line_number  bigint NOT NULL,
    postal_code  text,
    rejected     boolean NOT NULL,
    problem      text NOT NULL,
    raw_line     text NOT NULL,
    PRIMARY KEY (load_id, line_number)
);
COMMENT ON TABLE aimroute.postal_code_load_issues IS
    'Every line of a postal-code file that was rejected or loaded with a flaw, and why.';
COMMENT ON COLUMN aimroute.postal_code_load_issues.rejected IS 'true: the line was not loaded; false: loaded with the flaw described.';
COMMENT ON COLUMN aimroute.postal_code_load_issues.raw_line IS 'The line as read (first 500 bytes), tabs kept.';

CREATE TABLE aimroute.brands (
    brand_code  text PRIMARY KEY
        CONSTRAINT brands_brand_code_trimmed CHECK (brand_code <> '' AND brand_code = btrim(brand_code)),
    name        text NOT NULL
);
COMMENT ON TABLE aimroute.brands IS 'The OEM''s brands.';

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

    IF NEW.timezone IS NOT NULL THEN
        BEGIN
            PERFORM now() AT TIME ZONE NEW.timezone;
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE EXCEPTION 'invalid time zone "%" for dealer %', NEW.timezone, NEW.dealer_number
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use a name from pg_timezone_names, such as America/Chicago, or NULL for the OEM''s time zone.';
        END;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER dealers_normalize BEFORE INSERT OR UPDATE ON aimroute.dealers
    FOR EACH ROW EXECUTE FUNCTION aimroute.dealers_normalize();

CREATE TABLE aimroute.dealer_brands (
    dealer_number  text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    brand_code     text NOT NULL REFERENCES aimroute.brands ON UPDATE CASCADE,
    PRIMARY KEY (dealer_number, brand_code)
);
CREATE INDEX dealer_brands_brand_idx ON aimroute.dealer_brands (brand_code);
COMMENT ON TABLE aimroute.dealer_brands IS 'The brands each dealer sells; only dealers selling a lead''s brand receive it.';

CREATE TABLE aimroute.territories (
    territory_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dealer_number  text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    brand_code     text,
    kind           text NOT NULL
        CONSTRAINT territories_kind_check CHECK (kind IN ('postal', 'county', 'state', 'country')),
    country        text NOT NULL,
    code           text NOT NULL,
    CONSTRAINT territories_country_normalized
        CHECK (country = aimroute.normalize_country(country)),
    CONSTRAINT territories_brand_sold_by_dealer
        FOREIGN KEY (dealer_number, brand_code) REFERENCES aimroute.dealer_brands
        ON UPDATE CASCADE,
    CONSTRAINT territories_unique
        UNIQUE NULLS NOT DISTINCT (dealer_number, brand_code, kind, country, code)
);
-- One dealer per postal code and brand scope (NULL = all brands).  The
-- trigger below names the holder; this index is the backstop for races.
CREATE UNIQUE INDEX territories_one_postal_holder
    ON aimroute.territories (country, code, brand_code) NULLS NOT DISTINCT
    WHERE kind = 'postal';
CREATE INDEX territories_lookup_idx ON aimroute.territories (country, kind, code);
CREATE INDEX territories_dealer_idx ON aimroute.territories (dealer_number);
COMMENT ON TABLE aimroute.territories IS
    'Areas of responsibility. brand_code NULL: a Territories-page assignment (every brand the dealer sells); otherwise a Brand Territory (that brand only).';
COMMENT ON COLUMN aimroute.territories.kind IS 'postal, county, state or country.';
COMMENT ON COLUMN aimroute.territories.code IS 'postal: a normalized postal code; county: state code and county joined by a slash (MI/Mackinac); state: a state code (MO); country: the country code.';

--
-- territories_normalize: stored form of each kind's code, the
-- one-holder-per-postal-code rule with an error that names the holder, and
-- notices for codes the postal-code table does not know.
--
CREATE FUNCTION aimroute.territories_normalize() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    country_in text := NEW.country;
    code_in text := NEW.code;
    holder text;
    county_state text;
    county_name text;
    known_county text;
BEGIN
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
        SELECT t.dealer_number INTO holder FROM aimroute.territories t
         WHERE t.kind = 'postal' AND t.country = NEW.country AND t.code = NEW.code
           AND t.brand_code IS NOT DISTINCT FROM NEW.brand_code
           AND t.territory_id IS DISTINCT FROM NEW.territory_id;
        IF holder IS NOT NULL THEN
            RAISE EXCEPTION 'postal code % % is already held by dealer % for %',
                NEW.country, NEW.code, holder,
                coalesce('brand ' || NEW.brand_code, 'all brands')
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('A postal code can be held by one dealer per brand scope; dealer %s cannot take it as well.', NEW.dealer_number),
                      HINT = format('Remove it from dealer %s first, or assign it to dealer %s for a single brand (brand_code).', holder, NEW.dealer_number);
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
    PRIMARY KEY (dealer_number, product_code)
);
CREATE INDEX product_assignments_product_idx ON aimroute.product_assignments (product_code);
COMMENT ON TABLE aimroute.product_assignments IS
    'Products each dealer may receive leads for, when settings.product_routing_enabled.';

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

SELECT pg_catalog.pg_extension_config_dump('aimroute.postal_codes', '');
SELECT pg_catalog.pg_extension_config_dump('aimroute.postal_code_loads', '');
SELECT pg_catalog.pg_extension_config_dump('aimroute.postal_code_load_issues', '');
SELECT pg_catalog.pg_extension_config_dump('aimroute.brands', '');
SELECT pg_catalog.pg_extension_config_dump('aimroute.dealers', '');
SELECT pg_catalog.pg_extension_config_dump('aimroute.dealer_brands', '');
SELECT pg_catalog.pg_extension_config_dump('aimroute.territories', '');
SELECT pg_catalog.pg_extension_config_dump('aimroute.product_assignments', '');
SELECT pg_catalog.pg_extension_config_dump('aimroute.inventory', '');
-- Identity sequences too, or a restored database would hand out used ids.
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.postal_code_loads', 'load_id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.territories', 'territory_id')::regclass, '');

-- source: schema/030_settings.sql
--
-- aimroute.settings: one row of typed settings.
--
-- Each setting has a default and a CHECK constraint.  A BEFORE trigger
-- checks the same rules first so that a bad value is refused with an error
-- that names the setting and its allowed values (a CHECK violation can only
-- name the constraint); the CHECKs stay as the declarative rule that \d and
-- BI tools show and that holds even with triggers disabled.
--

CREATE FUNCTION aimroute.countries_normalized(countries text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(bool_and(c IS NOT NULL AND aimroute.normalize_country(c) = c), true)
      FROM unnest(countries) AS c
$$;
COMMENT ON FUNCTION aimroute.countries_normalized(text[]) IS
    'Whether every element is an ISO 3166-1 alpha-2 code as aimroute stores it.';

CREATE TABLE aimroute.settings (
    singleton                  boolean PRIMARY KEY DEFAULT true
        CONSTRAINT settings_one_row CHECK (singleton),
    radius_enabled             boolean NOT NULL DEFAULT true,
    radius_miles               numeric NOT NULL DEFAULT 1500
        CONSTRAINT settings_radius_miles_check CHECK (radius_miles > 0 AND radius_miles <= 12451),
    radius_countries           text[] NOT NULL DEFAULT '{US,CA}'
        CONSTRAINT settings_radius_countries_check CHECK (aimroute.countries_normalized(radius_countries)),
    default_dealer_number      text REFERENCES aimroute.dealers ON UPDATE CASCADE,
    product_routing_enabled    boolean NOT NULL DEFAULT false,
    inventory_routing_enabled  boolean NOT NULL DEFAULT false,
    reroute_enabled            boolean NOT NULL DEFAULT false,
    reroute_max_dealers        integer NOT NULL DEFAULT 3
        CONSTRAINT settings_reroute_max_dealers_check CHECK (reroute_max_dealers BETWEEN 1 AND 100),
    reroute_after              interval NOT NULL DEFAULT '24 hours'
        CONSTRAINT settings_reroute_after_check CHECK (reroute_after >= '1 minute' AND reroute_after <= '90 days'),
    reroute_skip_days          integer[] NOT NULL DEFAULT '{}'
        CONSTRAINT settings_reroute_skip_days_check
        CHECK (reroute_skip_days <@ '{1,2,3,4,5,6,7}' AND array_position(reroute_skip_days, NULL) IS NULL
               AND NOT reroute_skip_days @> '{1,2,3,4,5,6,7}'),
    timezone                   text NOT NULL DEFAULT 'UTC'
        CONSTRAINT settings_timezone_check CHECK (timezone <> ''),
    dedupe_window              interval NOT NULL DEFAULT '60 seconds'
        CONSTRAINT settings_dedupe_window_check CHECK (dedupe_window >= '0' AND dedupe_window <= '7 days'),
    smtp_url                   text NOT NULL DEFAULT 'smtp://127.0.0.1:25'
        CONSTRAINT settings_smtp_url_check CHECK (smtp_url ~ '^smtps?://[^/[:space:]]+'),
    smtp_from                  text NOT NULL DEFAULT 'leads@aimroute.invalid'
        CONSTRAINT settings_smtp_from_check CHECK (smtp_from ~ '^[^@[:space:]<>]+@[^@[:space:]<>]+$'),
    smtp_username              text,
    smtp_password              text,
    push_gateway_url           text
        CONSTRAINT settings_push_gateway_url_check CHECK (push_gateway_url ~ '^https?://[^/[:space:]]+'),
    delivery_retry_schedule    interval[] NOT NULL DEFAULT '{20 seconds,20 minutes,20 hours}'
        CONSTRAINT settings_delivery_retry_schedule_check
        CHECK (cardinality(delivery_retry_schedule) BETWEEN 1 AND 20
               AND array_position(delivery_retry_schedule, NULL) IS NULL
               AND '0'::interval < ALL (delivery_retry_schedule)),
    daily_recap_hour           integer NOT NULL DEFAULT 7
        CONSTRAINT settings_daily_recap_hour_check CHECK (daily_recap_hour BETWEEN 0 AND 23),
    oem_name                   text NOT NULL DEFAULT 'aimroute'
        CONSTRAINT settings_oem_name_check CHECK (btrim(oem_name) <> ''),
    view_link_url              text NOT NULL DEFAULT 'https://leads.aimroute.invalid/view?token='
        CONSTRAINT settings_view_link_url_check CHECK (view_link_url ~ '^https?://[^/[:space:]]+')
);
COMMENT ON TABLE aimroute.settings IS 'aimroute''s settings: one row; change it with UPDATE.';
COMMENT ON COLUMN aimroute.settings.radius_enabled IS 'Route by distance when no territory applies (default true).';
COMMENT ON COLUMN aimroute.settings.radius_miles IS 'Largest distance, in statute miles, for radius and inventory routing (default 1500).';
COMMENT ON COLUMN aimroute.settings.radius_countries IS 'Countries where radius routing applies (default {US,CA}); adding one enables international radius.';
COMMENT ON COLUMN aimroute.settings.default_dealer_number IS 'The default (corporate) dealer: receives every lead no other rule places.';
COMMENT ON COLUMN aimroute.settings.product_routing_enabled IS 'Territory and radius routing consider only dealers assigned the lead''s product (default false).';
COMMENT ON COLUMN aimroute.settings.inventory_routing_enabled IS 'Route to the closest dealer with the product in stock first (default false).';
COMMENT ON COLUMN aimroute.settings.reroute_enabled IS 'Re-route leads not viewed in time (default false).';
COMMENT ON COLUMN aimroute.settings.reroute_max_dealers IS 'Re-routes before a lead goes to the default dealer (default 3).';
COMMENT ON COLUMN aimroute.settings.reroute_after IS 'How long a dealer may hold an unviewed lead (default 24 hours).';
COMMENT ON COLUMN aimroute.settings.reroute_skip_days IS 'ISO weekdays (1 = Monday) on which no re-route deadline falls (default none).';
COMMENT ON COLUMN aimroute.settings.timezone IS 'The OEM''s time zone, for skip days and the daily recap (default UTC).';
COMMENT ON COLUMN aimroute.settings.dedupe_window IS 'A staged row identical to one staged this recently is a duplicate (default 60 seconds).';
COMMENT ON COLUMN aimroute.settings.smtp_url IS 'SMTP server for email delivery (default smtp://127.0.0.1:25).';
COMMENT ON COLUMN aimroute.settings.smtp_from IS 'Sender address of lead emails.';
COMMENT ON COLUMN aimroute.settings.push_gateway_url IS 'HTTP endpoint of the mobile push gateway; NULL: no push.';
COMMENT ON COLUMN aimroute.settings.delivery_retry_schedule IS 'Waits before each retry of a failed delivery (default 20 seconds, 20 minutes, 20 hours).';
COMMENT ON COLUMN aimroute.settings.daily_recap_hour IS 'Local hour (settings.timezone) of the daily delivery-failure recap (default 7).';
COMMENT ON COLUMN aimroute.settings.oem_name IS 'The OEM''s name, the provider in ADF messages.';
COMMENT ON COLUMN aimroute.settings.view_link_url IS 'Start of the view link in lead emails: the notice''s token is appended, and the page behind it calls aimroute.open_view_link(token).';

--
-- settings_validate: refuses a bad value with an error naming the setting
-- and the allowed values, and puts radius_countries in stored form.
--
CREATE FUNCTION aimroute.settings_validate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text;
    normalized text[] := '{}';
    bad text;           -- the setting refused
    allowed text;       -- what it accepts
    bad_value text;     -- its value, as text
    tz_ok boolean := true;
BEGIN
    IF TG_OP = 'DELETE' OR TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'the aimroute.settings row cannot be deleted'
            USING ERRCODE = 'object_in_use',
                  HINT = 'Change settings with UPDATE aimroute.settings SET ...; there is always exactly one row.';
    END IF;

    FOREACH c IN ARRAY coalesce(NEW.radius_countries, '{}') LOOP
        IF aimroute.normalize_country(c) IS NULL THEN
            bad := 'radius_countries';
            allowed := format('an array of ISO 3166-1 country codes, such as {US,CA}; %s is not one',
                              coalesce('"' || c || '"', 'NULL'));
            EXIT;
        END IF;
        IF NOT aimroute.normalize_country(c) = ANY (normalized) THEN
            normalized := normalized || aimroute.normalize_country(c);
        END IF;
    END LOOP;
    IF NEW.timezone IS NOT NULL THEN
        BEGIN
            PERFORM now() AT TIME ZONE NEW.timezone;
        EXCEPTION WHEN invalid_parameter_value THEN
            tz_ok := false;
        END;
    END IF;

    IF bad IS NOT NULL THEN
        NULL;   -- radius_countries, above
    ELSIF NEW.radius_countries IS NULL THEN
        bad := 'radius_countries';
        allowed := 'an array of ISO 3166-1 country codes, such as {US,CA}; {} disables radius routing everywhere';
    ELSIF NEW.radius_enabled IS NULL THEN
        bad := 'radius_enabled';
        allowed := 'true or false';
    ELSIF NEW.product_routing_enabled IS NULL THEN
        bad := 'product_routing_enabled';
        allowed := 'true or false';
    ELSIF NEW.inventory_routing_enabled IS NULL THEN
        bad := 'inventory_routing_enabled';
        allowed := 'true or false';
    ELSIF NEW.reroute_enabled IS NULL THEN
        bad := 'reroute_enabled';
        allowed := 'true or false';
    ELSIF NEW.radius_miles IS NULL OR NEW.radius_miles <= 0 OR NEW.radius_miles > 12451 THEN
        bad := 'radius_miles';
        allowed := 'a distance in statute miles greater than 0 and at most 12451 (half the Earth''s circumference)';
    ELSIF NEW.default_dealer_number IS NOT NULL
          AND NOT EXISTS (SELECT FROM aimroute.dealers d WHERE d.dealer_number = NEW.default_dealer_number) THEN
        bad := 'default_dealer_number';
        allowed := 'the dealer_number of a row of aimroute.dealers; insert the default dealer first';
    ELSIF NEW.reroute_max_dealers IS NULL OR NEW.reroute_max_dealers NOT BETWEEN 1 AND 100 THEN
        bad := 'reroute_max_dealers';
        allowed := 'a whole number from 1 to 100';
    ELSIF NEW.reroute_after IS NULL OR NEW.reroute_after < '1 minute' OR NEW.reroute_after > '90 days' THEN
        bad := 'reroute_after';
        allowed := 'an interval from 1 minute to 90 days, such as ''24 hours''';
    ELSIF NEW.reroute_skip_days IS NULL OR NOT NEW.reroute_skip_days <@ '{1,2,3,4,5,6,7}'
          OR array_position(NEW.reroute_skip_days, NULL) IS NOT NULL
          OR NEW.reroute_skip_days @> '{1,2,3,4,5,6,7}' THEN
        bad := 'reroute_skip_days';
        allowed := 'an array of ISO weekday numbers from 1 (Monday) to 7 (Sunday), such as {6,7}, leaving at least one day not skipped';
    ELSIF NEW.timezone IS NULL OR NEW.timezone = '' OR NOT tz_ok THEN
        bad := 'timezone';
        allowed := 'a time zone name from pg_timezone_names, such as America/Chicago or UTC';
    ELSIF NEW.dedupe_window IS NULL OR NEW.dedupe_window < '0' OR NEW.dedupe_window > '7 days' THEN
        bad := 'dedupe_window';
        allowed := 'an interval from 0 (no deduplication) to 7 days, such as ''60 seconds''';
    ELSIF NEW.smtp_url IS NULL OR NEW.smtp_url !~ '^smtps?://[^/[:space:]]+' THEN
        bad := 'smtp_url';
        allowed := 'an smtp:// or smtps:// URL with a host, such as smtp://127.0.0.1:25';
    ELSIF NEW.smtp_from IS NULL OR NEW.smtp_from !~ '^[^@[:space:]<>]+@[^@[:space:]<>]+$' THEN
        bad := 'smtp_from';
        allowed := 'an email address, such as leads@example.com';
    ELSIF NEW.push_gateway_url !~ '^https?://[^/[:space:]]+' THEN
        bad := 'push_gateway_url';
        allowed := 'an http:// or https:// URL, or NULL for no mobile push';
    ELSIF NEW.delivery_retry_schedule IS NULL
          OR cardinality(NEW.delivery_retry_schedule) NOT BETWEEN 1 AND 20
          OR array_position(NEW.delivery_retry_schedule, NULL) IS NOT NULL
          OR NOT '0'::interval < ALL (NEW.delivery_retry_schedule) THEN
        bad := 'delivery_retry_schedule';
        allowed := 'an array of 1 to 20 positive intervals, such as {20 seconds,20 minutes,20 hours}';
    ELSIF NEW.daily_recap_hour IS NULL OR NEW.daily_recap_hour NOT BETWEEN 0 AND 23 THEN
        bad := 'daily_recap_hour';
        allowed := 'an hour of the day from 0 to 23, in settings.timezone';
    ELSIF NEW.oem_name IS NULL OR btrim(NEW.oem_name) = '' THEN
        bad := 'oem_name';
        allowed := 'a name that is not blank';
    ELSIF NEW.view_link_url IS NULL OR NEW.view_link_url !~ '^https?://[^/[:space:]]+' THEN
        bad := 'view_link_url';
        allowed := 'an http:// or https:// URL to which the view token is appended, such as https://dealers.example.com/lead?token=';
    ELSIF NEW.singleton IS DISTINCT FROM true THEN
        bad := 'singleton';
        allowed := 'true: aimroute.settings has exactly one row';
    END IF;

    IF bad IS NOT NULL THEN
        EXECUTE format('SELECT ($1).%I::text', bad) INTO bad_value USING NEW;
        RAISE EXCEPTION 'invalid value for setting "%": %', bad, coalesce(bad_value, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('%s must be %s.', bad, allowed);
    END IF;
    NEW.radius_countries := normalized;

    -- A second INSERT (such as a restore of a dump) updates the one row.
    IF TG_OP = 'INSERT' AND EXISTS (SELECT FROM aimroute.settings) THEN
        UPDATE aimroute.settings s SET
            radius_enabled = NEW.radius_enabled, radius_miles = NEW.radius_miles,
            radius_countries = NEW.radius_countries,
            default_dealer_number = NEW.default_dealer_number,
            product_routing_enabled = NEW.product_routing_enabled,
            inventory_routing_enabled = NEW.inventory_routing_enabled,
            reroute_enabled = NEW.reroute_enabled,
            reroute_max_dealers = NEW.reroute_max_dealers,
            reroute_after = NEW.reroute_after, reroute_skip_days = NEW.reroute_skip_days,
            timezone = NEW.timezone, dedupe_window = NEW.dedupe_window,
            smtp_url = NEW.smtp_url, smtp_from = NEW.smtp_from,
            smtp_username = NEW.smtp_username, smtp_password = NEW.smtp_password,
            push_gateway_url = NEW.push_gateway_url,
            delivery_retry_schedule = NEW.delivery_retry_schedule,
            daily_recap_hour = NEW.daily_recap_hour, oem_name = NEW.oem_name,
            view_link_url = NEW.view_link_url
         WHERE s.singleton;
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER settings_validate BEFORE INSERT OR UPDATE ON aimroute.settings
    FOR EACH ROW EXECUTE FUNCTION aimroute.settings_validate();
CREATE TRIGGER settings_keep_row BEFORE DELETE ON aimroute.settings
    FOR EACH ROW EXECUTE FUNCTION aimroute.settings_validate();
CREATE TRIGGER settings_keep_row_truncate BEFORE TRUNCATE ON aimroute.settings
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.settings_validate();

INSERT INTO aimroute.settings DEFAULT VALUES;
SELECT pg_catalog.pg_extension_config_dump('aimroute.settings', '');

-- source: schema/035_config_version.sql
--
-- The configuration version: what lets each backend keep the routing
-- configuration in memory and still route exactly by the tables.
--
-- Every statement that changes a table routing reads (postal codes, brands,
-- dealers, dealer brands, territories, product assignments, inventory,
-- settings) sets config_version.version to a new number from a sequence, in
-- its own transaction.  Routing reads the version under the same snapshot
-- as the lead's statement and rebuilds its in-memory copy when the number
-- differs from the copy's (src/routing_cache.c).  The number is never reused,
-- so two snapshots that see the same number see the same configuration, in
-- this session or another, committed or rolled back.  docs/performance.md
-- explains the trade-off: configuration writers serialize on this row.
--
CREATE SEQUENCE aimroute.config_version_seq;
COMMENT ON SEQUENCE aimroute.config_version_seq IS
    'Numbers for aimroute.config_version; never reused, so a number names one state of the configuration.';

CREATE TABLE aimroute.config_version (
    one      boolean PRIMARY KEY DEFAULT true CONSTRAINT config_version_one_row CHECK (one),
    version  bigint NOT NULL
);
COMMENT ON TABLE aimroute.config_version IS
    'One row: the number of the routing configuration''s current state. Changed by triggers on every table routing reads; do not change it by hand.';
INSERT INTO aimroute.config_version (version) VALUES (nextval('aimroute.config_version_seq'));

CREATE FUNCTION aimroute.bump_config_version() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE aimroute.config_version SET version = nextval('aimroute.config_version_seq');
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION aimroute.bump_config_version() IS
    'Statement trigger: gives the routing configuration a new version number, so that every backend''s in-memory copy is rebuilt.';

--
-- The triggers fire ALWAYS, also under session_replication_role = replica
-- (as in a logical replication apply worker): a change that skipped them
-- would leave backends routing by a stale copy.
--
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['postal_codes', 'brands', 'dealers', 'dealer_brands', 'territories',
                             'product_assignments', 'inventory', 'settings']
    LOOP
        EXECUTE format('CREATE TRIGGER bump_config_version'
                       ' AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aimroute.%I'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION aimroute.bump_config_version()', t);
        EXECUTE format('ALTER TABLE aimroute.%I ENABLE ALWAYS TRIGGER bump_config_version', t);
    END LOOP;
END
$$;

CREATE FUNCTION aimroute.routing_cache_info(
    OUT enabled boolean, OUT version bigint, OUT built_at timestamptz, OUT build_ms float8,
    OUT dealers integer, OUT territories integer, OUT postal_codes bigint, OUT memory_bytes bigint)
    AS 'MODULE_PATHNAME', 'aimroute_routing_cache_info'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION aimroute.routing_cache_info() IS
    'This session''s in-memory copy of the routing configuration, brought up to date first: its version, when it was built and in how many milliseconds, what it holds and the memory it takes. enabled is false (and the rest NULL) when aimroute.routing_cache is off.';

-- source: schema/036_reroute_deadline.sql
--
-- Re-route deadlines (src/reroute.c; docs/rerouting.md has the rules and
-- examples).  The routing trigger computes the deadline in C with the same
-- code; these functions give SQL, the tests and the re-route worker the
-- same answer.
--

CREATE FUNCTION aimroute.reroute_deadline(assigned_at timestamptz, reroute_after interval,
                                          skip_days integer[], timezone text)
RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'aimroute_reroute_deadline'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.reroute_deadline(timestamptz, interval, integer[], text) IS
    'assigned_at + reroute_after in time zone timezone, moved to the same local time of the next day that is not a skip day (ISO weekdays).';

CREATE FUNCTION aimroute.reroute_due_at(assigned_at timestamptz)
RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN s.reroute_enabled
                THEN aimroute.reroute_deadline(assigned_at, s.reroute_after, s.reroute_skip_days, s.timezone)
           END
      FROM aimroute.settings s
$$;
COMMENT ON FUNCTION aimroute.reroute_due_at(timestamptz) IS
    'The re-route deadline of a lead assigned at assigned_at under the current settings; NULL when re-routing is off.';

-- source: schema/040_leads.sql
--
-- Leads and routing.
--
-- A C trigger (src/leads.c) routes each lead in the inserting transaction;
-- the decision itself is src/routing.c, shared by the trigger, the dealer
-- locator, simulation, reassignment and re-routing, so that all of them
-- agree.  The explanation of a decision is kept in the lead row itself
-- (routing_log), which costs no extra insert on the hot path.
--

CREATE TYPE aimroute.match_type AS ENUM (
    'Territory', 'Radius', 'Drive Distance', 'Default', 'Reassigned',
    'Pre-assigned', 'Dealer Group', 'Inventory', 'Re-Route'
);
COMMENT ON TYPE aimroute.match_type IS 'How a lead''s dealer was chosen.';

CREATE TYPE aimroute.routing_step AS (
    step            integer,
    rule            text,
    message         text,
    dealer_number   text,
    distance_miles  double precision
);
COMMENT ON TYPE aimroute.routing_step IS 'One line of a routing explanation; see aimroute.explain_lead().';

CREATE TYPE aimroute.routing_decision AS (
    dealer_number   text,
    match_type      aimroute.match_type,
    distance_miles  double precision,
    steps           aimroute.routing_step[]
);

CREATE TABLE aimroute.leads (
    lead_id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at          timestamptz NOT NULL DEFAULT now(),
    source               text NOT NULL DEFAULT 'api',
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
    dealer_number        text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE,
    dealer_group         text,
    send_to_dealer       boolean NOT NULL DEFAULT true,
    comment              text,
    match_type           aimroute.match_type NOT NULL,
    distance_miles       double precision,
    routed_at            timestamptz NOT NULL,
    viewed_at            timestamptz,
    reroute_count        integer NOT NULL DEFAULT 0,
    reroute_due_at       timestamptz,
    country_input        text,
    postal_code_input    text,
    dealer_number_input  text,
    routing_log          aimroute.routing_step[] NOT NULL DEFAULT '{}'
);
CREATE INDEX leads_dealer_idx ON aimroute.leads (dealer_number) WHERE viewed_at IS NULL;
CREATE INDEX leads_received_at_idx ON aimroute.leads (received_at);
COMMENT ON TABLE aimroute.leads IS
    'Sales leads. Inserting one routes it: dealer_number, match_type, distance_miles and routed_at are filled in the same transaction.';
COMMENT ON COLUMN aimroute.leads.dealer_number IS
    'On input, an optional pre-assigned dealer; after routing, the dealer holding the lead.';
COMMENT ON COLUMN aimroute.leads.country IS 'ISO 3166-1 alpha-2 code after routing; NULL when the input named no known country (see country_input).';
COMMENT ON COLUMN aimroute.leads.postal_code IS 'Normalized postal code (see postal_code_input for the code as received).';
COMMENT ON COLUMN aimroute.leads.match_type IS 'Which rule chose the dealer.';
COMMENT ON COLUMN aimroute.leads.distance_miles IS 'Miles from the postal code''s centre to the dealer, as the crow flies (WGS84); NULL when unknown.';
COMMENT ON COLUMN aimroute.leads.country_input IS 'The country as received.';
COMMENT ON COLUMN aimroute.leads.postal_code_input IS 'The postal code as received.';
COMMENT ON COLUMN aimroute.leads.dealer_number_input IS 'The pre-assigned dealer number as received, if any.';
COMMENT ON COLUMN aimroute.leads.reroute_due_at IS 'When the dealer''s hold on the unviewed lead ends (settings.reroute_*; see aimroute.reroute_deadline); NULL when re-routing is off, for the default dealer and for leads not sent to their dealer.';
COMMENT ON COLUMN aimroute.leads.routing_log IS 'Why the lead went where it went; read it with aimroute.explain_lead(lead_id).';

CREATE TABLE aimroute.lead_history (
    history_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id      bigint NOT NULL REFERENCES aimroute.leads ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    event        text NOT NULL,
    from_dealer  text,
    to_dealer    text,
    match_type   aimroute.match_type,
    actor        text NOT NULL DEFAULT session_user,
    reason       text
);
CREATE INDEX lead_history_lead_idx ON aimroute.lead_history (lead_id, at);
COMMENT ON TABLE aimroute.lead_history IS
    'Every change of a lead''s dealer after its first routing: reassignment, re-route, a dealer leaving, the default after the re-route limit.';

SELECT pg_catalog.pg_extension_config_dump('aimroute.leads', '');

--
-- Once leads exist, the default dealer cannot be unset: a lead that no rule
-- places needs it, so the mistake is refused when it is made rather than at
-- a later INSERT.
--
CREATE FUNCTION aimroute.settings_keep_default_dealer() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.default_dealer_number IS NULL AND OLD.default_dealer_number IS NOT NULL
       AND EXISTS (SELECT FROM aimroute.leads) THEN
        RAISE EXCEPTION 'invalid value for setting "default_dealer_number": NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'default_dealer_number must stay set once leads exist: every lead no rule places goes to the default dealer. Name another dealer instead.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER settings_keep_default_dealer BEFORE UPDATE OF default_dealer_number ON aimroute.settings
    FOR EACH ROW EXECUTE FUNCTION aimroute.settings_keep_default_dealer();

--
-- dealer_distance_miles: miles from a postal code's centre to a dealer, as
-- routing measures them (PostGIS is found through the search_path the
-- extension was installed with).
--
CREATE FUNCTION aimroute.dealer_distance_miles(country text, postal_code text, dealer_number text)
RETURNS double precision
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
AS $$
    SELECT ST_Distance(p.centroid, d.location) / 1609.344
      FROM aimroute.postal_codes p, aimroute.dealers d
     WHERE p.country = dealer_distance_miles.country
       AND p.postal_code = dealer_distance_miles.postal_code
       AND d.dealer_number = dealer_distance_miles.dealer_number
$$;
SELECT pg_catalog.pg_extension_config_dump('aimroute.lead_history', '');
-- Identity sequences too, or a restored database would hand out used ids.
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.leads', 'lead_id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.lead_history', 'history_id')::regclass, '');

--
-- The routing decision (C).
--
CREATE FUNCTION aimroute.route(
    country text, postal_code text, brand_code text,
    product_code text DEFAULT NULL, dealer_number text DEFAULT NULL,
    dealer_group text DEFAULT NULL, excluded text[] DEFAULT '{}',
    state_code text DEFAULT NULL)
RETURNS aimroute.routing_decision
    AS 'MODULE_PATHNAME', 'aimroute_route'
    LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.route(text, text, text, text, text, text, text[], text) IS
    'The routing decision for these inputs under the current configuration, with its explanation; changes nothing.';

CREATE FUNCTION aimroute.route_lead_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'aimroute_route_lead_trigger'
    LANGUAGE C;
CREATE TRIGGER route_lead BEFORE INSERT ON aimroute.leads
    FOR EACH ROW EXECUTE FUNCTION aimroute.route_lead_trigger();

CREATE FUNCTION aimroute.locate_dealers(
    country text, postal_code text, brand_code text,
    product_code text DEFAULT NULL, max_results integer DEFAULT 10)
RETURNS TABLE (rank integer, dealer_number text, name text,
               distance_miles double precision, match_type aimroute.match_type)
    AS 'MODULE_PATHNAME', 'aimroute_locate_dealers'
    LANGUAGE C STABLE PARALLEL SAFE ROWS 10;
COMMENT ON FUNCTION aimroute.locate_dealers(text, text, text, text, integer) IS
    'Find a Dealer: rank 1 is the dealer a lead with these inputs would get; ranks 2.. the order re-routing would follow.';

--
-- explain_lead: the routing log of a lead, one row per step, in order.
--
CREATE FUNCTION aimroute.explain_lead(lead_id bigint)
RETURNS TABLE (step integer, rule text, message text, dealer_number text,
               distance_miles double precision)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.step, s.rule, s.message, s.dealer_number, s.distance_miles
      FROM aimroute.leads l,
           unnest(l.routing_log) WITH ORDINALITY AS s(step, rule, message, dealer_number, distance_miles, n)
     WHERE l.lead_id = explain_lead.lead_id
     ORDER BY s.n
$$;
COMMENT ON FUNCTION aimroute.explain_lead(bigint) IS
    'Why a lead went to its dealer: the steps taken, the candidates considered with their distances, the rule that decided.';

--
-- lead_history is written by one trigger for every change of dealer, so
-- that no path (the functions below, the re-route worker, a direct UPDATE)
-- can move a lead without a trace; the same trigger queues the new
-- dealer's notice and its messages (aimroute.queue_lead_delivery,
-- 070_delivery.sql).  Callers
-- describe the change in the transaction-local settings aimroute_ctx.event
-- and aimroute_ctx.reason.
--
CREATE FUNCTION aimroute.leads_record_history() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO aimroute.lead_history (lead_id, event, from_dealer, to_dealer, match_type, reason)
    VALUES (NEW.lead_id,
            coalesce(nullif(current_setting('aimroute_ctx.event', true), ''), 'Updated'),
            OLD.dealer_number, NEW.dealer_number, NEW.match_type,
            coalesce(nullif(current_setting('aimroute_ctx.reason', true), ''),
                     'dealer_number changed by a direct UPDATE of aimroute.leads'));
    IF NEW.send_to_dealer THEN
        PERFORM aimroute.queue_lead_delivery(NEW.lead_id, NEW.dealer_number,
            coalesce(nullif(current_setting('aimroute_ctx.event', true), ''), 'Updated'));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER leads_record_history AFTER UPDATE OF dealer_number ON aimroute.leads
    FOR EACH ROW WHEN (OLD.dealer_number IS DISTINCT FROM NEW.dealer_number)
    EXECUTE FUNCTION aimroute.leads_record_history();

-- move_lead: give a lead a new dealer and say why (internal).  The
-- explanation gains a line naming the event, then the new decision's lines,
-- numbered on from the lead's existing steps.
CREATE FUNCTION aimroute.move_lead(p_lead_id bigint, p_dealer text, p_match aimroute.match_type,
                                   p_distance double precision, p_event text, p_reason text,
                                   p_log aimroute.routing_step[] DEFAULT '{}')
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_log aimroute.routing_step[];
    old_dealer text;
    old_viewer text;
    old_viewed_at timestamptz;
    added aimroute.routing_step[];
BEGIN
    SELECT routing_log, dealer_number, viewed_by, viewed_at INTO old_log, old_dealer, old_viewer, old_viewed_at
      FROM aimroute.leads WHERE lead_id = p_lead_id;
    SELECT array_agg(ROW(coalesce(cardinality(old_log), 0) + n, s.rule, s.message,
                         s.dealer_number, s.distance_miles)::aimroute.routing_step ORDER BY n)
      INTO added
      FROM unnest(ARRAY[ROW(0, p_event,
                            format('moved from dealer %s to dealer %s by %s: %s%s', old_dealer,
                                   p_dealer, session_user, coalesce(p_reason, 'no reason given'),
                                   '; it had been viewed by ' || old_viewer || ' at ' || old_viewed_at),
                            p_dealer, p_distance)::aimroute.routing_step] || p_log)
           WITH ORDINALITY AS s(step, rule, message, dealer_number, distance_miles, n);
    PERFORM set_config('aimroute_ctx.event', p_event, true);
    PERFORM set_config('aimroute_ctx.reason', coalesce(p_reason, ''), true);
    -- A new dealer has not viewed the lead: its view, if any, was the old
    -- dealer's (the explanation keeps it).  The default dealer, the end of
    -- the line, gets no deadline, whatever the match type.
    UPDATE aimroute.leads
       SET dealer_number = p_dealer, match_type = p_match, distance_miles = p_distance,
           routed_at = now(), routing_log = routing_log || added,
           viewed_at = NULL, viewed_by = NULL,
           reroute_due_at = CASE WHEN p_match <> 'Default' AND send_to_dealer
                                      AND p_dealer IS DISTINCT FROM
                                          (SELECT s.default_dealer_number FROM aimroute.settings s)
                                 THEN aimroute.reroute_due_at(now()) END
     WHERE lead_id = p_lead_id;
    PERFORM set_config('aimroute_ctx.event', '', true);
    PERFORM set_config('aimroute_ctx.reason', '', true);
END
$$;

--
-- reassign: a person moves a lead to another dealer (match type Reassigned).
--
CREATE FUNCTION aimroute.reassign(lead_id bigint, dealer_number text, reason text)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lead aimroute.leads;
    target aimroute.dealers;
    dist double precision;
BEGIN
    SELECT * INTO lead FROM aimroute.leads l WHERE l.lead_id = reassign.lead_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lead % does not exist', reassign.lead_id
            USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO target FROM aimroute.dealers d WHERE d.dealer_number = reassign.dealer_number;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dealer "%" does not exist', reassign.dealer_number
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Reassign to a dealer_number of aimroute.dealers.';
    END IF;
    IF lead.dealer_number = target.dealer_number THEN
        RAISE NOTICE 'lead % is already with dealer %: nothing to do', lead.lead_id, target.dealer_number;
        RETURN;
    END IF;
    IF NOT target.active_for_sales THEN
        RAISE WARNING 'dealer % is not active for sales; the lead is reassigned as asked', target.dealer_number;
    END IF;
    dist := aimroute.dealer_distance_miles(lead.country, lead.postal_code, target.dealer_number);
    PERFORM aimroute.move_lead(lead.lead_id, target.dealer_number, 'Reassigned', dist, 'Reassigned',
                               coalesce(reason, 'no reason given'));
END
$$;
COMMENT ON FUNCTION aimroute.reassign(bigint, text, text) IS
    'Moves a lead to another dealer by hand (match type Reassigned), recorded in lead_history.';

--
-- reassign_dealer_leads: a dealer leaves the network; its open leads go to
-- the next best dealer by the routing rules.
--
CREATE FUNCTION aimroute.reassign_dealer_leads(dealer_number text, reason text)
RETURNS TABLE (to_dealer_number text, match_type aimroute.match_type, leads bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lead aimroute.leads;
    d aimroute.routing_decision;
BEGIN
    IF NOT EXISTS (SELECT FROM aimroute.dealers x WHERE x.dealer_number = reassign_dealer_leads.dealer_number) THEN
        RAISE EXCEPTION 'dealer "%" does not exist', reassign_dealer_leads.dealer_number
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (SELECT FROM aimroute.settings s
                WHERE s.default_dealer_number = reassign_dealer_leads.dealer_number) THEN
        RAISE EXCEPTION 'dealer % is the default dealer: its leads have nowhere else to go', reassign_dealer_leads.dealer_number
            USING ERRCODE = 'object_in_use',
                  HINT = 'Name another default dealer first (UPDATE aimroute.settings SET default_dealer_number = ...), then move its leads.';
    END IF;
    -- Other sessions route by the committed configuration: until this
    -- transaction commits, the dealer is active to them, and the leads
    -- they route to it now are not seen here.
    IF EXISTS (SELECT FROM aimroute.dealers x
                WHERE x.dealer_number = reassign_dealer_leads.dealer_number
                  AND x.xmin = pg_catalog.xid(pg_catalog.pg_current_xact_id_if_assigned())) THEN
        RAISE WARNING 'dealer % was deactivated in this transaction: leads other sessions route to it before this transaction commits are not moved',
                      reassign_dealer_leads.dealer_number
            USING HINT = 'Deactivate the dealer and commit first, then call reassign_dealer_leads; calling it again after the commit moves the rest.';
    ELSIF EXISTS (SELECT FROM aimroute.dealers x
                   WHERE x.dealer_number = reassign_dealer_leads.dealer_number AND x.active_for_sales) THEN
        RAISE WARNING 'dealer % is still active for sales: new leads keep going to it', reassign_dealer_leads.dealer_number
            USING HINT = 'UPDATE aimroute.dealers SET active_for_sales = false first, commit, then move its leads.';
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS aimroute_moves (to_dealer text, match aimroute.match_type) ON COMMIT DROP;
    TRUNCATE aimroute_moves;
    FOR lead IN SELECT * FROM aimroute.leads l
                 WHERE l.dealer_number = reassign_dealer_leads.dealer_number AND l.viewed_at IS NULL
                 ORDER BY l.lead_id FOR UPDATE
    LOOP
        d := aimroute.route(lead.country, lead.postal_code, lead.brand_code, lead.product_code,
                            NULL, lead.dealer_group, ARRAY[lead.dealer_number], lead.state_code);
        PERFORM aimroute.move_lead(lead.lead_id, d.dealer_number, d.match_type, d.distance_miles,
            'Dealer left', coalesce(reason, 'no reason given'), d.steps);
        INSERT INTO aimroute_moves VALUES (d.dealer_number, d.match_type);
    END LOOP;
    RETURN QUERY SELECT m.to_dealer, m.match, count(*) FROM aimroute_moves m GROUP BY 1, 2 ORDER BY 3 DESC, 1;
END
$$;
COMMENT ON FUNCTION aimroute.reassign_dealer_leads(text, text) IS
    'Moves every open (unviewed) lead of a dealer to the next best dealer by the routing rules; returns how many went where.';

--
-- simulate_routing: the stored leads routed again under the current
-- configuration, changing nothing.
--
CREATE FUNCTION aimroute.simulate_routing("from" timestamptz, "to" timestamptz)
RETURNS TABLE (lead_id bigint, dealer_number text, match_type aimroute.match_type,
               simulated_dealer_number text, simulated_match_type aimroute.match_type)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.lead_id, l.dealer_number, l.match_type, d.dealer_number, d.match_type
      FROM aimroute.leads l,
           LATERAL aimroute.route(coalesce(l.country, l.country_input), coalesce(l.postal_code_input, l.postal_code),
                                  l.brand_code, l.product_code, l.dealer_number_input,
                                  l.dealer_group, '{}', l.state_code) d
     WHERE l.received_at >= simulate_routing."from" AND l.received_at < simulate_routing."to"
     ORDER BY l.lead_id
$$;
COMMENT ON FUNCTION aimroute.simulate_routing(timestamptz, timestamptz) IS
    'Routes the leads received in [from, to) again under the current configuration without changing them: run it inside BEGIN ... ROLLBACK after a configuration change to see what the change would do.';

-- source: schema/050_staging.sql
--
-- Bulk import: aimroute.lead_staging and aimroute.process_staging().
--
-- Rows are staged as text, exactly as they arrive (INSERT or COPY into
-- aimroute.lead_staging, one batch_id per file or feed), and
-- aimroute.process_staging(batch_id) turns every unprocessed row of the
-- batch into exactly one outcome.  Nothing is deleted or dropped: each
-- staging row ends up 'processed' (it became lead lead_id), 'rejected'
-- (reason says why) or 'duplicate' (duplicate_of and reason say of what;
-- lead_id is the lead it duplicates).
--
-- Rejected versus routed.  A row is rejected only when it cannot become a
-- lead at all:
--   * received_at is not a timestamp, or not a finite one.  It is read
--     like any timestamptz input, with the session's DateStyle and TimeZone
--     (ISO 8601 with an offset, 2024-05-01 14:30:00+00, is unambiguous); a
--     blank received_at means the time the row was staged (staged_at);
--   * send_to_dealer is not a boolean (true/false, yes/no, on/off, 1/0, t/f,
--     y/n, any case); blank means true;
--   * the customer cannot be contacted: no email and no phone (a phone
--     needs at least 5 digits to count);
--   * the email is not an address (name@domain.tld: no spaces, one @, a dot
--     in the domain, at most 254 characters);
--   * a value is too long: more than 1000 characters (comment: 10000).
-- Every problem of a row is listed in its reason, separated by "; ".
-- Everything else is lead data the routing trigger deals with, and the
-- row becomes a lead routed by the rules, with its explanation in
-- aimroute.explain_lead(): an unknown or malformed postal code or country,
-- an unknown brand, an unknown or inactive pre-assigned dealer, an unknown
-- dealer group, odd characters anywhere.  Values are stored trimmed of
-- white space, with blank values as NULL; source defaults to 'import'.
-- If inserting a lead fails for any other reason (a constraint added to
-- aimroute.leads, say), the row is rejected with the error message as its
-- reason and the other rows go through.  Errors that are not about a row --
-- no default dealer configured, missing privileges, a deadlock, a
-- cancelled query, a full disk -- abort the call instead and nothing of it
-- is kept, so that the batch can simply be processed again once fixed.
-- To retry a rejected row, correct its values and set its status, reason
-- and processed_at back to NULL; the next call processes it.
--
-- Duplicates.  input_md5 is the md5 of all input columns as staged (NULL
-- and '' differ; batch_id and staged_at are not part of it).  A row that
-- passes validation is a duplicate when an earlier row (smaller
-- staging_id, any batch) has the same input_md5, was staged within
-- settings.dedupe_window of it, and was not rejected; duplicate_of is the
-- earliest staged such row, and lead_id the lead that row became (for a
-- duplicate of a duplicate, the lead of the row both repeat).  When that
-- row has not been processed yet (it belongs to another batch), lead_id is
-- filled in when it is; should it be rejected, the duplicate is rejected
-- too, with the same reason.  dedupe_window = 0 turns deduplication off.
--
-- How it works.  The batch is processed in chunks of 10,000 rows, in
-- staging_id order, each set-based: the chunk is read once into a temporary
-- table (values trimmed and parsed, problems listed), rejections and
-- duplicates are marked with one UPDATE each, and the valid rows are
-- inserted into aimroute.leads with one INSERT ... SELECT, which routes
-- each of them.  Each row's lead_id is drawn from the identity sequence of
-- aimroute.leads before the INSERT and inserted with OVERRIDING SYSTEM
-- VALUE, so the staging row -> lead mapping is exact by construction; it
-- does not depend on the order in which rows are inserted or returned.  The
-- caller therefore needs USAGE (or UPDATE) on that sequence as well as
-- INSERT on aimroute.leads.  If the chunk's INSERT fails, that chunk is inserted row
-- by row, each in its own subtransaction.  A NOTICE reports progress after
-- each chunk.  Calls run one at a time (a transaction-level advisory lock),
-- so that two imports cannot both miss a duplicate; staging new rows is
-- never blocked.  Processing a batch again only processes rows staged
-- since, if any.
--

CREATE TABLE aimroute.lead_staging (
    staging_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id        text NOT NULL,
    staged_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    received_at     text,
    source          text,
    brand_code      text,
    product_code    text,
    first_name      text,
    last_name       text,
    email           text,
    phone           text,
    address         text,
    city            text,
    state_code      text,
    country         text,
    postal_code     text,
    dealer_number   text,
    dealer_group    text,
    send_to_dealer  text,
    comment         text,
    status          text
        CONSTRAINT lead_staging_status_check
        CHECK (status IN ('processed', 'rejected', 'duplicate')),
    lead_id         bigint,
    duplicate_of    bigint,
    reason          text,
    processed_at    timestamptz,
    input_md5       text NOT NULL GENERATED ALWAYS AS (pg_catalog.md5(
        pg_catalog.quote_nullable(received_at) || ',' || pg_catalog.quote_nullable(source) || ',' ||
        pg_catalog.quote_nullable(brand_code) || ',' || pg_catalog.quote_nullable(product_code) || ',' ||
        pg_catalog.quote_nullable(first_name) || ',' || pg_catalog.quote_nullable(last_name) || ',' ||
        pg_catalog.quote_nullable(email) || ',' || pg_catalog.quote_nullable(phone) || ',' ||
        pg_catalog.quote_nullable(address) || ',' || pg_catalog.quote_nullable(city) || ',' ||
        pg_catalog.quote_nullable(state_code) || ',' || pg_catalog.quote_nullable(country) || ',' ||
        pg_catalog.quote_nullable(postal_code) || ',' || pg_catalog.quote_nullable(dealer_number) || ',' ||
        pg_catalog.quote_nullable(dealer_group) || ',' || pg_catalog.quote_nullable(send_to_dealer) || ',' ||
        pg_catalog.quote_nullable(comment))) STORED,
    CONSTRAINT lead_staging_outcome_check CHECK (
        (status <> 'processed' OR lead_id IS NOT NULL)
        AND (status <> 'rejected' OR reason IS NOT NULL)
        AND (status <> 'duplicate' OR duplicate_of IS NOT NULL))
);
-- The unprocessed rows of a batch, in order; and a batch's rows for reports.
CREATE INDEX lead_staging_batch_idx ON aimroute.lead_staging (batch_id, staging_id);
-- The duplicate lookup: the same input_md5, staged within the window, the
-- earliest first.
CREATE INDEX lead_staging_dedupe_idx ON aimroute.lead_staging (input_md5, staged_at, staging_id);
-- Duplicates still waiting for the lead of the row they duplicate.
CREATE INDEX lead_staging_waiting_duplicates_idx ON aimroute.lead_staging (duplicate_of)
    WHERE status = 'duplicate' AND lead_id IS NULL;

COMMENT ON TABLE aimroute.lead_staging IS
    'Bulk import: raw lead rows as text, one batch_id per file or feed; aimroute.process_staging(batch_id) turns each into a lead (processed), a rejection or a duplicate. Rows are never deleted.';
COMMENT ON COLUMN aimroute.lead_staging.staging_id IS 'Order of staging; rows are processed in this order.';
COMMENT ON COLUMN aimroute.lead_staging.batch_id IS 'The batch (file, feed, upload) the row belongs to; aimroute.process_staging() takes it.';
COMMENT ON COLUMN aimroute.lead_staging.staged_at IS 'When the row was staged; the dedupe window is measured on it, and it is the lead''s received_at when received_at is blank.';
COMMENT ON COLUMN aimroute.lead_staging.received_at IS 'Input: when the lead was received, as a timestamp (ISO 8601 with an offset is unambiguous); blank: staged_at.';
COMMENT ON COLUMN aimroute.lead_staging.source IS 'Input: where the lead comes from; blank: import.';
COMMENT ON COLUMN aimroute.lead_staging.brand_code IS 'Input: the brand; an unknown brand is routed to the default dealer, not rejected.';
COMMENT ON COLUMN aimroute.lead_staging.product_code IS 'Input: the product, optional.';
COMMENT ON COLUMN aimroute.lead_staging.first_name IS 'Input: the customer''s first name.';
COMMENT ON COLUMN aimroute.lead_staging.last_name IS 'Input: the customer''s last name.';
COMMENT ON COLUMN aimroute.lead_staging.email IS 'Input: the customer''s email; when given it must be an address. A row needs an email or a phone.';
COMMENT ON COLUMN aimroute.lead_staging.phone IS 'Input: the customer''s phone; counts as a way to contact the customer with at least 5 digits.';
COMMENT ON COLUMN aimroute.lead_staging.address IS 'Input: the customer''s street address.';
COMMENT ON COLUMN aimroute.lead_staging.city IS 'Input: the customer''s city.';
COMMENT ON COLUMN aimroute.lead_staging.state_code IS 'Input: the customer''s state or province code.';
COMMENT ON COLUMN aimroute.lead_staging.country IS 'Input: the customer''s country (alpha-2, alpha-3); an unknown country is routed to the default dealer, not rejected.';
COMMENT ON COLUMN aimroute.lead_staging.postal_code IS 'Input: the customer''s postal code; an unknown or malformed one is routed by the rules, not rejected.';
COMMENT ON COLUMN aimroute.lead_staging.dealer_number IS 'Input: a pre-assigned dealer, optional; an unknown one is routed by the rules, not rejected.';
COMMENT ON COLUMN aimroute.lead_staging.dealer_group IS 'Input: a dealer group, optional.';
COMMENT ON COLUMN aimroute.lead_staging.send_to_dealer IS 'Input: whether to notify the dealer, as a boolean (true/false, yes/no, on/off, 1/0); blank: true.';
COMMENT ON COLUMN aimroute.lead_staging.comment IS 'Input: the customer''s comment (up to 10000 characters; every other input up to 1000).';
COMMENT ON COLUMN aimroute.lead_staging.status IS 'NULL: not processed yet; processed: became lead lead_id; rejected: see reason; duplicate: see duplicate_of and reason.';
COMMENT ON COLUMN aimroute.lead_staging.lead_id IS 'processed: the lead the row became; duplicate: the lead it duplicates (NULL while that row is not processed yet). Not a foreign key: it outlives a deleted lead.';
COMMENT ON COLUMN aimroute.lead_staging.duplicate_of IS 'duplicate: the earliest staged of the earlier identical rows staged within the dedupe window.';
COMMENT ON COLUMN aimroute.lead_staging.reason IS 'rejected: every problem of the row; duplicate: the row it repeats.';
COMMENT ON COLUMN aimroute.lead_staging.processed_at IS 'When aimroute.process_staging() decided the row''s status.';
COMMENT ON COLUMN aimroute.lead_staging.input_md5 IS 'md5 of all input columns as staged (NULL and '''' differ): the duplicate key.';

SELECT pg_catalog.pg_extension_config_dump('aimroute.lead_staging', '');
-- The identity sequence too: marking the table does not dump the sequence's position.
SELECT pg_catalog.pg_extension_config_dump('aimroute.lead_staging_staging_id_seq', '');

--
-- staging_timestamptz: a staged received_at as a timestamptz, or NULL when
-- it is not one (internal; the session's DateStyle and TimeZone apply).
--
CREATE FUNCTION aimroute.staging_timestamptz(value text) RETURNS timestamptz
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION aimroute.staging_timestamptz(text) IS
    'A staged received_at as timestamptz, NULL when it is not a timestamp (internal to aimroute.process_staging).';

--
-- staging_error_is_row_level: whether an error raised while inserting one
-- lead is about that row (reject it) or about the environment (abort).
--
CREATE FUNCTION aimroute.staging_error_is_row_level(sqlstate text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT NOT (left(sqlstate, 2) IN ('08', '25', '40', '42', '53', '55', '57', '58', 'F0')
                OR sqlstate IN ('XX001', 'XX002'))
$$;
COMMENT ON FUNCTION aimroute.staging_error_is_row_level(text) IS
    'Whether an error (SQLSTATE) inserting a staged lead rejects that row rather than aborting the import: connection, transaction state, deadlock or serialization, privilege, resource, prerequisite, operator and system errors abort.';

--
-- staging_quote: a value quoted for a rejection reason, cut to 60 characters.
--
CREATE FUNCTION aimroute.staging_quote(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '"' || left(value, 60) || CASE WHEN length(value) > 60 THEN '..."' ELSE '"' END
$$;
COMMENT ON FUNCTION aimroute.staging_quote(text) IS
    'A value in double quotes for a rejection reason, cut to 60 characters (internal).';

--
-- process_staging: validates, deduplicates and inserts one batch.
--
CREATE FUNCTION aimroute.process_staging(batch_id text)
RETURNS TABLE (status text, rows bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    chunk_size      constant integer := 10000;
    max_length      constant integer := 1000;
    max_comment     constant integer := 10000;
    min_phone_digits constant integer := 5;
    ws              constant text := E' \t\r\n\f\x0B';
    email_pattern   constant text :=
        '^[^[:space:]@<>(),;:"\[\]\\]+@[^[:space:]@<>(),;:"\[\]\\.]+(\.[^[:space:]@<>(),;:"\[\]\\.]+)+$';
    v_batch         text := process_staging.batch_id;
    v_started       timestamptz := clock_timestamp();
    v_now           timestamptz;
    v_window        interval;
    v_default       text;
    v_seq           regclass;
    v_total         bigint;
    v_last          bigint := 0;    -- the chunks so far reached this staging_id
    v_lo            bigint;         -- the chunk's first and last staging_id
    v_hi            bigint;
    v_candidates    bigint;         -- rows of the chunk to become leads
    v_rows          bigint;
    v_done          bigint := 0;
    v_leads         bigint := 0;
    v_rejected      bigint := 0;
    v_duplicates    bigint := 0;
    v_resolved      bigint;
    v_failed        boolean;
    v_error         text;
    r               record;
BEGIN
    IF v_batch IS NULL THEN
        RAISE EXCEPTION 'batch_id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the batch_id the rows were staged with, as in SELECT * FROM aimroute.process_staging(''feed-2024-05-01'').';
    END IF;

    -- One import at a time: a duplicate is judged against rows another
    -- call might be processing.
    PERFORM pg_advisory_xact_lock('aimroute.lead_staging'::regclass::oid::bigint);

    SELECT count(*) INTO v_total
      FROM aimroute.lead_staging s
     WHERE s.batch_id = v_batch AND s.status IS NULL;

    IF v_total = 0 THEN
        IF EXISTS (SELECT FROM aimroute.lead_staging s WHERE s.batch_id = v_batch) THEN
            RAISE NOTICE 'batch %: every row is already processed; nothing to do', v_batch;
        ELSE
            RAISE NOTICE 'batch % has no staged rows', pg_catalog.quote_literal(v_batch)
                USING HINT = 'Stage rows with INSERT or COPY INTO aimroute.lead_staging (batch_id, ...) first; the batch_id must match exactly, case and spaces included.';
        END IF;
    ELSE
        SELECT s.dedupe_window, s.default_dealer_number INTO v_window, v_default
          FROM aimroute.settings s;
        IF v_default IS NULL THEN
            RAISE EXCEPTION 'no default dealer is configured'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'An imported lead that no rule places goes to the default dealer.',
                      HINT = 'UPDATE aimroute.settings SET default_dealer_number = ''...'' (a dealer of aimroute.dealers), then process the batch again.';
        END IF;
        v_seq := pg_get_serial_sequence('aimroute.leads', 'lead_id')::regclass;
        IF NOT has_sequence_privilege(v_seq, 'USAGE, UPDATE') THEN
            RAISE EXCEPTION 'permission denied for sequence %', v_seq
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'aimroute.process_staging() draws each new lead''s lead_id from it.',
                      HINT = format('GRANT USAGE ON SEQUENCE %s TO %I, together with INSERT ON aimroute.leads.',
                                    v_seq, current_user);
        END IF;

        CREATE TEMPORARY TABLE aimroute_staging_chunk (
            staging_id      bigint PRIMARY KEY,
            staged_at       timestamptz NOT NULL,
            input_md5       text NOT NULL,
            received_at     timestamptz,
            source          text,
            brand_code      text,
            product_code    text,
            first_name      text,
            last_name       text,
            email           text,
            phone           text,
            address         text,
            city            text,
            state_code      text,
            country         text,
            postal_code     text,
            dealer_number   text,
            dealer_group    text,
            send_to_dealer  boolean,
            comment         text,
            problems        text,
            duplicate_of    bigint,
            lead_id         bigint
        ) ON COMMIT DROP;
    END IF;

    WHILE v_done < v_total LOOP
        v_now := clock_timestamp();

        -- 1. The chunk: the next chunk_size unprocessed rows.  Read once,
        --    values trimmed and parsed, problems listed.
        SELECT min(x.staging_id), max(x.staging_id), count(*) INTO v_lo, v_hi, v_rows
          FROM (SELECT s.staging_id FROM aimroute.lead_staging s
                 WHERE s.batch_id = v_batch AND s.status IS NULL AND s.staging_id > v_last
                 ORDER BY s.staging_id
                 LIMIT chunk_size) AS x;
        EXIT WHEN v_rows = 0;   -- someone changed status by hand meanwhile

        INSERT INTO pg_temp.aimroute_staging_chunk
        SELECT t.staging_id, t.staged_at, t.input_md5,
               coalesce(p.received_at, t.staged_at), coalesce(t.source, 'import'),
               t.brand_code, t.product_code, t.first_name, t.last_name, t.email, t.phone,
               t.address, t.city, t.state_code, t.country, t.postal_code, t.dealer_number,
               t.dealer_group, coalesce(p.send_to_dealer, true), t.comment,
               nullif(concat_ws('; ',
                   CASE WHEN t.received_at IS NOT NULL AND p.received_at IS NULL THEN
                       format('received_at %s is not a timestamp (write it as 2024-05-01 14:30:00+00)',
                              aimroute.staging_quote(t.received_at))
                        WHEN p.received_at IN ('infinity', '-infinity') THEN
                       format('received_at %s is not a finite timestamp', aimroute.staging_quote(t.received_at))
                   END,
                   CASE WHEN t.send_to_dealer IS NOT NULL AND p.send_to_dealer IS NULL THEN
                       format('send_to_dealer %s is not a boolean (write true or false)',
                              aimroute.staging_quote(t.send_to_dealer))
                   END,
                   CASE WHEN t.email IS NOT NULL AND (length(t.email) > 254 OR t.email !~ email_pattern) THEN
                       format('email %s is not an address (such as name@example.com)',
                              aimroute.staging_quote(t.email))
                   END,
                   CASE WHEN t.email IS NULL AND t.phone IS NULL THEN
                       'no way to contact the customer: no email and no phone'
                        WHEN t.email IS NULL
                             AND length(regexp_replace(t.phone, '[^0-9]', '', 'g')) < min_phone_digits THEN
                       format('no way to contact the customer: no email, and phone %s has fewer than %s digits',
                              aimroute.staging_quote(t.phone), min_phone_digits)
                   END,
                   CASE WHEN length(t.comment) > max_comment
                             OR greatest(length(t.received_at), length(t.source), length(t.brand_code),
                                         length(t.product_code), length(t.first_name), length(t.last_name),
                                         length(t.email), length(t.phone), length(t.address), length(t.city),
                                         length(t.state_code), length(t.country), length(t.postal_code),
                                         length(t.dealer_number), length(t.dealer_group),
                                         length(t.send_to_dealer)) > max_length THEN
                       (SELECT string_agg(format('%s is too long (%s characters; at most %s)',
                                                 f.name, length(f.value), f.max), '; ' ORDER BY f.n)
                          FROM (VALUES (1, 'received_at', t.received_at, max_length),
                                       (2, 'source', t.source, max_length),
                                       (3, 'brand_code', t.brand_code, max_length),
                                       (4, 'product_code', t.product_code, max_length),
                                       (5, 'first_name', t.first_name, max_length),
                                       (6, 'last_name', t.last_name, max_length),
                                       (7, 'email', t.email, max_length),
                                       (8, 'phone', t.phone, max_length),
                                       (9, 'address', t.address, max_length),
                                       (10, 'city', t.city, max_length),
                                       (11, 'state_code', t.state_code, max_length),
                                       (12, 'country', t.country, max_length),
                                       (13, 'postal_code', t.postal_code, max_length),
                                       (14, 'dealer_number', t.dealer_number, max_length),
                                       (15, 'dealer_group', t.dealer_group, max_length),
                                       (16, 'send_to_dealer', t.send_to_dealer, max_length),
                                       (17, 'comment', t.comment, max_comment)) AS f(n, name, value, max)
                         WHERE length(f.value) > f.max)
                   END), ''),
               NULL, NULL
          FROM (SELECT s.staging_id, s.staged_at, s.input_md5,
                       nullif(btrim(s.received_at, ws), '') AS received_at,
                       nullif(btrim(s.source, ws), '') AS source,
                       nullif(btrim(s.brand_code, ws), '') AS brand_code,
                       nullif(btrim(s.product_code, ws), '') AS product_code,
                       nullif(btrim(s.first_name, ws), '') AS first_name,
                       nullif(btrim(s.last_name, ws), '') AS last_name,
                       nullif(btrim(s.email, ws), '') AS email,
                       nullif(btrim(s.phone, ws), '') AS phone,
                       nullif(btrim(s.address, ws), '') AS address,
                       nullif(btrim(s.city, ws), '') AS city,
                       nullif(btrim(s.state_code, ws), '') AS state_code,
                       nullif(btrim(s.country, ws), '') AS country,
                       nullif(btrim(s.postal_code, ws), '') AS postal_code,
                       nullif(btrim(s.dealer_number, ws), '') AS dealer_number,
                       nullif(btrim(s.dealer_group, ws), '') AS dealer_group,
                       nullif(btrim(s.send_to_dealer, ws), '') AS send_to_dealer,
                       nullif(btrim(s.comment, ws), '') AS comment
                  FROM aimroute.lead_staging s
                 WHERE s.batch_id = v_batch AND s.status IS NULL
                   AND s.staging_id > v_last AND s.staging_id <= v_hi) AS t,
               LATERAL (SELECT aimroute.staging_timestamptz(t.received_at) AS received_at,
                               CASE WHEN lower(t.send_to_dealer)
                                         ~ '^(t|tr|tru|true|y|ye|yes|on|1|f|fa|fal|fals|false|n|no|of|off|0)$'
                                    THEN t.send_to_dealer::boolean END AS send_to_dealer) AS p;

        -- 2. Rejections.
        UPDATE aimroute.lead_staging s
           SET status = 'rejected', reason = c.problems, processed_at = v_now
          FROM pg_temp.aimroute_staging_chunk c
         WHERE s.staging_id = c.staging_id AND s.staging_id > v_last AND s.staging_id <= v_hi
           AND c.problems IS NOT NULL;

        -- 3. Duplicates: the earliest staged of the earlier identical rows
        --    within the window that were not rejected.  (Ordered so that
        --    only lead_staging_dedupe_idx can serve it: ORDER BY staging_id
        --    tempts the planner into walking the primary key.)
        IF v_window > '0' THEN
            UPDATE pg_temp.aimroute_staging_chunk c
               SET duplicate_of = (SELECT e.staging_id
                                     FROM aimroute.lead_staging e
                                    WHERE e.input_md5 = c.input_md5
                                      AND e.staged_at >= c.staged_at - v_window
                                      AND e.staged_at <= c.staged_at + v_window
                                      AND e.staging_id < c.staging_id
                                      AND e.status IS DISTINCT FROM 'rejected'
                                    ORDER BY e.staged_at, e.staging_id
                                    LIMIT 1)
             WHERE c.problems IS NULL;
            UPDATE aimroute.lead_staging s
               SET status = 'duplicate', duplicate_of = e.staging_id, lead_id = e.lead_id,
                   processed_at = v_now,
                   reason = format('identical to staging row %s of batch %s, staged within the dedupe window of %s seconds',
                                   e.staging_id, pg_catalog.quote_literal(e.batch_id),
                                   round(extract(epoch FROM v_window)))
              FROM pg_temp.aimroute_staging_chunk c
              JOIN aimroute.lead_staging e ON e.staging_id = c.duplicate_of
             WHERE s.staging_id = c.staging_id AND s.staging_id > v_last AND s.staging_id <= v_hi;
        END IF;

        -- 4. The leads: lead_ids drawn first, in staging order, so that the
        --    mapping is exact whatever order the INSERT works in.
        UPDATE pg_temp.aimroute_staging_chunk c
           SET lead_id = n.lead_id
          FROM (SELECT o.staging_id, nextval(v_seq) AS lead_id
                  FROM (SELECT x.staging_id FROM pg_temp.aimroute_staging_chunk x
                         WHERE x.problems IS NULL AND x.duplicate_of IS NULL
                         ORDER BY x.staging_id OFFSET 0) AS o) AS n
         WHERE c.staging_id = n.staging_id;
        GET DIAGNOSTICS v_candidates = ROW_COUNT;

        v_failed := false;
        BEGIN
            INSERT INTO aimroute.leads (lead_id, received_at, source, brand_code, product_code,
                                        first_name, last_name, email, phone, address, city,
                                        state_code, country, postal_code, dealer_number,
                                        dealer_group, send_to_dealer, comment)
            OVERRIDING SYSTEM VALUE
            SELECT c.lead_id, c.received_at, c.source, c.brand_code, c.product_code,
                   c.first_name, c.last_name, c.email, c.phone, c.address, c.city,
                   c.state_code, c.country, c.postal_code, c.dealer_number,
                   c.dealer_group, c.send_to_dealer, c.comment
              FROM pg_temp.aimroute_staging_chunk c
             WHERE c.lead_id IS NOT NULL
             ORDER BY c.staging_id;
        EXCEPTION WHEN OTHERS THEN
            IF NOT aimroute.staging_error_is_row_level(SQLSTATE) THEN
                RAISE;
            END IF;
            v_failed := true;
            v_error := SQLERRM;
        END;

        -- 4b. The chunk failed as a whole: row by row, so that only the
        --     rows at fault are rejected.
        IF v_failed THEN
            RAISE WARNING 'batch %: inserting a chunk of % leads failed: %', v_batch, v_candidates, v_error
                USING DETAIL = format('The rows of the chunk (staging_id %s to %s) are inserted one at a time; those that fail are rejected with the error as reason.',
                                      v_lo, v_hi);
            FOR r IN SELECT * FROM pg_temp.aimroute_staging_chunk c
                      WHERE c.lead_id IS NOT NULL ORDER BY c.staging_id
            LOOP
                BEGIN
                    INSERT INTO aimroute.leads (lead_id, received_at, source, brand_code, product_code,
                                                first_name, last_name, email, phone, address, city,
                                                state_code, country, postal_code, dealer_number,
                                                dealer_group, send_to_dealer, comment)
                    OVERRIDING SYSTEM VALUE
                    VALUES (r.lead_id, r.received_at, r.source, r.brand_code, r.product_code,
                            r.first_name, r.last_name, r.email, r.phone, r.address, r.city,
                            r.state_code, r.country, r.postal_code, r.dealer_number,
                            r.dealer_group, r.send_to_dealer, r.comment);
                EXCEPTION WHEN OTHERS THEN
                    IF NOT aimroute.staging_error_is_row_level(SQLSTATE) THEN
                        RAISE;
                    END IF;
                    UPDATE pg_temp.aimroute_staging_chunk c
                       SET lead_id = NULL,
                           problems = format('could not become a lead: %s (SQLSTATE %s)', SQLERRM, SQLSTATE)
                     WHERE c.staging_id = r.staging_id;
                END;
            END LOOP;
            UPDATE aimroute.lead_staging s
               SET status = 'rejected', reason = c.problems, processed_at = v_now
              FROM pg_temp.aimroute_staging_chunk c
             WHERE s.staging_id = c.staging_id AND s.staging_id > v_last AND s.staging_id <= v_hi
               AND s.status IS NULL AND c.problems IS NOT NULL;
        END IF;

        -- 5. The rows that became leads.
        UPDATE aimroute.lead_staging s
           SET status = 'processed', lead_id = c.lead_id, processed_at = v_now
          FROM pg_temp.aimroute_staging_chunk c
         WHERE s.staging_id = c.staging_id AND s.staging_id > v_last AND s.staging_id <= v_hi
           AND c.lead_id IS NOT NULL;

        -- 6. Duplicates waiting for a lead, in any batch: they get the lead
        --    of the row they duplicate, or its rejection.  Chains take one
        --    round per link.
        LOOP
            UPDATE aimroute.lead_staging d
               SET lead_id = o.lead_id
              FROM aimroute.lead_staging o
             WHERE d.status = 'duplicate' AND d.lead_id IS NULL
               AND o.staging_id = d.duplicate_of AND o.lead_id IS NOT NULL;
            GET DIAGNOSTICS v_resolved = ROW_COUNT;
            UPDATE aimroute.lead_staging d
               SET status = 'rejected',
                   reason = format('identical to staging row %s, which was rejected: %s', o.staging_id, o.reason)
              FROM aimroute.lead_staging o
             WHERE d.status = 'duplicate' AND d.lead_id IS NULL
               AND o.staging_id = d.duplicate_of AND o.status = 'rejected';
            GET DIAGNOSTICS v_rows = ROW_COUNT;
            EXIT WHEN v_resolved + v_rows = 0;
        END LOOP;

        -- Progress.
        SELECT v_done + count(*),
               v_leads + count(*) FILTER (WHERE s.status = 'processed'),
               v_rejected + count(*) FILTER (WHERE s.status = 'rejected'),
               v_duplicates + count(*) FILTER (WHERE s.status = 'duplicate')
          INTO v_done, v_leads, v_rejected, v_duplicates
          FROM aimroute.lead_staging s
         WHERE s.batch_id = v_batch AND s.staging_id > v_last AND s.staging_id <= v_hi
           AND s.processed_at >= v_started;
        RAISE NOTICE 'batch %: % of % rows, % leads, % rejected, % duplicates',
            v_batch, v_done, v_total, v_leads, v_rejected, v_duplicates;

        v_last := v_hi;
        TRUNCATE pg_temp.aimroute_staging_chunk;
    END LOOP;

    IF v_total > 0 THEN
        DROP TABLE pg_temp.aimroute_staging_chunk;
    END IF;

    RETURN QUERY
        SELECT k.status, count(s.staging_id)
          FROM (VALUES (1, 'processed'), (2, 'rejected'), (3, 'duplicate')) AS k(n, status)
          LEFT JOIN aimroute.lead_staging s
                 ON s.batch_id = v_batch AND s.status = k.status AND s.processed_at >= v_started
         GROUP BY k.n, k.status
         ORDER BY k.n;
END
$$;
COMMENT ON FUNCTION aimroute.process_staging(text) IS
    'Bulk import: validates every unprocessed row of a batch of aimroute.lead_staging, inserts the valid ones into aimroute.leads (routing them) and marks each row processed, rejected or duplicate; returns how many rows of this call ended in each status.';

-- source: schema/060_reroute.sql
--
-- Re-routing (SPEC section 3): overdue unviewed leads go to the next best
-- dealer, views end a lead's deadline.  The background worker
-- (src/reroute_worker.c) calls reroute_overdue(); docs/rerouting.md.
--

--
-- dealer_contacts: who at a dealer receives its leads.  The columns are
-- the contract's; delivery (SPEC section 4) builds on them.
--
CREATE TABLE aimroute.dealer_contacts (
    contact_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dealer_number    text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    name             text,
    email            text,
    mobile           text,
    contact_types    text[] NOT NULL DEFAULT '{Leads: Emails To}',
    delivery_status  text NOT NULL DEFAULT 'Active'
        CONSTRAINT dealer_contacts_delivery_status_check
        CHECK (delivery_status IN ('Active', 'Hard Bounce', 'Soft Bounce'))
);
CREATE INDEX dealer_contacts_dealer_idx ON aimroute.dealer_contacts (dealer_number);
CREATE INDEX dealer_contacts_email_idx ON aimroute.dealer_contacts (lower(email));
COMMENT ON TABLE aimroute.dealer_contacts IS
    'People of a dealer who receive its leads.  Only a ''Leads: Emails To'' contact''s view of a lead counts (aimroute.mark_viewed).';
SELECT pg_catalog.pg_extension_config_dump('aimroute.dealer_contacts', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.dealer_contacts', 'contact_id')::regclass, '');

--
-- lead_notifications: one row per time a lead is sent to a dealer (its
-- first routing, each move, aimroute.send_lead), each with its own
-- view-link token.  The messages of a notice -- one per recipient and
-- method -- are rows of aimroute.outbox (070_delivery.sql), queued in the
-- same transaction by aimroute.queue_lead_delivery().
--
CREATE FUNCTION aimroute.new_view_token() RETURNS text
    AS 'MODULE_PATHNAME', 'aimroute_new_view_token'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION aimroute.new_view_token() IS
    'A new view-link token: 240 bits from the strong random source, as 40 URL-safe characters.';

CREATE TABLE aimroute.lead_notifications (
    notification_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id          bigint NOT NULL,
    dealer_number    text NOT NULL,
    event            text NOT NULL,
    queued_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    view_token       text NOT NULL UNIQUE DEFAULT aimroute.new_view_token(),
    no_contacts      boolean NOT NULL DEFAULT false,
    messages         integer NOT NULL DEFAULT 0,
    failure_notice_at timestamptz
);
CREATE INDEX lead_notifications_lead_idx ON aimroute.lead_notifications (lead_id, notification_id);
COMMENT ON TABLE aimroute.lead_notifications IS
    'Each time a lead is sent to a dealer (routing, a move, send_lead): its event, its unguessable view-link token, and how many messages were queued for it in aimroute.outbox.';
COMMENT ON COLUMN aimroute.lead_notifications.lead_id IS
    'The lead. Not a foreign key: the routing trigger queues the first notice before the lead''s row is stored, and a foreign key check would cost every lead; deleting a lead deletes its notices (aimroute.leads_delete_notices).';
COMMENT ON COLUMN aimroute.lead_notifications.dealer_number IS
    'The dealer the notice went to; follows a renumbered dealer (aimroute.dealers_renumber_notices).';
COMMENT ON COLUMN aimroute.lead_notifications.view_token IS
    'The token of the notice''s view link (aimroute.open_view_link): 240 random bits, 40 URL-safe characters.';
COMMENT ON COLUMN aimroute.lead_notifications.no_contacts IS
    'The dealer had no ''Leads: Emails To'' contact with an email and no active CRM integration when the notice was queued: nothing was sent.';
COMMENT ON COLUMN aimroute.lead_notifications.messages IS 'Messages queued for this notice in aimroute.outbox.';
COMMENT ON COLUMN aimroute.lead_notifications.failure_notice_at IS
    'When this notice''s delivery was found to have ended in total or partial failure, and failure notices were queued; NULL otherwise.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.lead_notifications', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.lead_notifications', 'notification_id')::regclass, '');

ALTER TABLE aimroute.leads ADD COLUMN viewed_by text;
COMMENT ON COLUMN aimroute.leads.viewed_by IS
    'Who viewed the lead: the contact''s email (mark_viewed) or ''view link <notification_id>'' (open_view_link).';

-- What the worker looks for: unviewed leads with a deadline, earliest first.
CREATE INDEX leads_reroute_due_idx ON aimroute.leads (reroute_due_at)
    WHERE viewed_at IS NULL AND reroute_due_at IS NOT NULL;

--
-- reroute_lead: re-route one locked, overdue lead (internal).  Every
-- dealer that held it is excluded; at the re-route limit, or when no other
-- dealer qualifies, it goes to the default dealer, which ends its
-- deadlines.
--
CREATE FUNCTION aimroute.reroute_lead(lead aimroute.leads, s aimroute.settings)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    held text[];
    d aimroute.routing_decision;
    why text;
BEGIN
    SELECT array_agg(DISTINCT x) INTO held
      FROM (SELECT lead.dealer_number
            UNION ALL SELECT h.from_dealer FROM aimroute.lead_history h WHERE h.lead_id = lead.lead_id
            UNION ALL SELECT h.to_dealer FROM aimroute.lead_history h WHERE h.lead_id = lead.lead_id) AS t(x)
     WHERE x IS NOT NULL;
    why := format('not viewed by dealer %s by %s', lead.dealer_number,
                  to_char(lead.reroute_due_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI:SS')
                  || ' ' || s.timezone);
    IF lead.reroute_count >= s.reroute_max_dealers THEN
        PERFORM aimroute.move_lead(lead.lead_id, s.default_dealer_number, 'Default',
            (SELECT aimroute.st_distance(dl.location, p.centroid) / 1609.344
               FROM aimroute.dealers dl, aimroute.postal_codes p
              WHERE dl.dealer_number = s.default_dealer_number
                AND p.country = lead.country AND p.postal_code = lead.postal_code),
            'Re-Route', format('%s; re-routed %s times already (reroute_max_dealers %s): default dealer',
                               why, lead.reroute_count, s.reroute_max_dealers));
    ELSE
        d := aimroute.route(lead.country, lead.postal_code, lead.brand_code, lead.product_code,
                            NULL, lead.dealer_group, held, lead.state_code);
        PERFORM aimroute.move_lead(lead.lead_id, d.dealer_number,
            CASE WHEN d.match_type = 'Default' THEN 'Default' ELSE 'Re-Route' END::aimroute.match_type,
            d.distance_miles, 'Re-Route',
            format('%s; excluded every dealer that held it (%s)', why, array_to_string(held, ', ')),
            d.steps);
    END IF;
    UPDATE aimroute.leads l SET reroute_count = l.reroute_count + 1 WHERE l.lead_id = lead.lead_id;
END
$$;

--
-- reroute_overdue: re-route up to max_leads overdue unviewed leads, the
-- earliest deadline first; returns how many.  Rows another session holds
-- are skipped (the worker, or whoever else calls this, takes them next
-- time); a row viewed meanwhile no longer qualifies when locked.
--
CREATE FUNCTION aimroute.reroute_overdue(max_leads integer DEFAULT 100)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s aimroute.settings;
    lead aimroute.leads;
    n integer := 0;
BEGIN
    SELECT * INTO s FROM aimroute.settings;
    FOR lead IN SELECT * FROM aimroute.leads l
                 WHERE l.reroute_due_at <= clock_timestamp() AND l.viewed_at IS NULL
                 ORDER BY l.reroute_due_at, l.lead_id
                 LIMIT max_leads
                 FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM aimroute.reroute_lead(lead, s);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION aimroute.reroute_overdue(integer) IS
    'Re-routes up to max_leads overdue unviewed leads, earliest deadline first; what the re-route worker runs.';

--
-- mark_viewed: a dealer's contact viewed the lead.  Counts only for a
-- 'Leads: Emails To' contact of the dealer holding the lead; anyone else
-- is refused (false) and nothing changes.  Viewing again is harmless.
--
CREATE FUNCTION aimroute.mark_viewed(lead_id bigint, viewer_email text)
RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    allowed boolean;
BEGIN
    -- Lock the lead first: a concurrent re-route either finished (and
    -- the viewer is then checked against the new dealer) or waits.
    SELECT EXISTS (SELECT FROM aimroute.dealer_contacts c
                    WHERE c.dealer_number = l.dealer_number
                      AND lower(c.email) = lower(btrim(viewer_email))
                      AND 'Leads: Emails To' = ANY (c.contact_types))
      INTO allowed
      FROM aimroute.leads l WHERE l.lead_id = mark_viewed.lead_id
       FOR UPDATE OF l;
    IF NOT coalesce(allowed, false) THEN
        RETURN false;
    END IF;
    UPDATE aimroute.leads l
       SET viewed_at = clock_timestamp(), viewed_by = lower(btrim(viewer_email)), reroute_due_at = NULL
     WHERE l.lead_id = mark_viewed.lead_id AND l.viewed_at IS NULL;
    RETURN true;
END
$$;
COMMENT ON FUNCTION aimroute.mark_viewed(bigint, text) IS
    'Marks a lead viewed when viewer_email is a ''Leads: Emails To'' contact of the dealer holding it (true); otherwise changes nothing (false).';

--
-- open_view_link: the view link of a notice was opened.  Counts while the
-- notice's dealer still holds the lead; the link of a dealer that lost it
-- to a re-route is refused (false).
--
CREATE FUNCTION aimroute.open_view_link(token text)
RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n aimroute.lead_notifications;
    holder text;
BEGIN
    SELECT * INTO n FROM aimroute.lead_notifications x WHERE x.view_token = open_view_link.token;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT l.dealer_number INTO holder FROM aimroute.leads l WHERE l.lead_id = n.lead_id FOR UPDATE;
    IF holder IS DISTINCT FROM n.dealer_number THEN
        RETURN false;
    END IF;
    UPDATE aimroute.leads l
       SET viewed_at = clock_timestamp(), viewed_by = format('view link %s', n.notification_id),
           reroute_due_at = NULL
     WHERE l.lead_id = n.lead_id AND l.viewed_at IS NULL;
    RETURN true;
END
$$;
COMMENT ON FUNCTION aimroute.open_view_link(text) IS
    'The view link of a notification was opened: marks the lead viewed while that notification''s dealer holds it (true); otherwise false.';

CREATE FUNCTION aimroute.reroute_worker_running() RETURNS boolean
    AS 'MODULE_PATHNAME', 'aimroute_reroute_worker_running'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION aimroute.reroute_worker_running() IS
    'Whether the re-route worker runs for this database (aimroute is in shared_preload_libraries and aimroute.database names it); see pg_stat_activity for the worker itself.';

-- Say so when re-routing is switched on and nothing will act on it.
CREATE FUNCTION aimroute.settings_check_reroute_worker() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.reroute_enabled AND NOT aimroute.reroute_worker_running() THEN
        RAISE NOTICE 're-routing is enabled, but the re-route worker is not running on this server'
            USING DETAIL = 'Leads get a reroute_due_at, but nothing re-routes them when it passes.',
                  HINT = 'Add aimroute to shared_preload_libraries, set aimroute.database to this database, and restart PostgreSQL.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER settings_check_reroute_worker AFTER UPDATE OF reroute_enabled ON aimroute.settings
    FOR EACH ROW WHEN (NEW.reroute_enabled AND NOT OLD.reroute_enabled)
    EXECUTE FUNCTION aimroute.settings_check_reroute_worker();


-- source: schema/065_adf.sql
--
-- ADF 1.0 (Auto-lead Data Format): a lead as the XML document dealer CRMs
-- ingest (SPEC section 4, CRM delivery).  src/adf.c writes the document;
-- lead_adf() gathers a lead's values for it.  docs/adf.md has every field,
-- where it comes from, and an example.
--

CREATE FUNCTION aimroute.adf_render(
    lead_id bigint, request_date text,
    vehicle_year integer, vehicle_make text, vehicle_model text,
    first_name text, last_name text, email text, phone text,
    street text, city text, region_code text, postal_code text, country text,
    comments text, vendor_id text, vendor_name text, provider_name text)
RETURNS text
    AS 'MODULE_PATHNAME', 'aimroute_adf_render'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.adf_render(bigint, text, integer, text, text, text, text, text, text,
                                        text, text, text, text, text, text, text, text, text) IS
    'An ADF 1.0 XML document (UTF-8 declared) of these values, elements in DTD order. NULL or blank optional values are left out; elements the DTD requires are written empty. Characters XML 1.0 forbids are dropped.';

--
-- adf_model_year: the model year a product code carries, and the model
-- without it.  A year is four digits 19xx or 20xx at the start or the end of
-- the code (trimmed), parted from the rest by spaces, dashes or
-- underscores: '2027 Sport 210' and 'SPORT-210_2027' are model year 2027
-- of 'Sport 210' and 'SPORT-210'.  A year at the start wins over one at the
-- end.  Otherwise model_year is NULL and the model is the code as it is.
--
CREATE FUNCTION aimroute.adf_model_year(product_code text, OUT model_year integer, OUT model text)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN head.m IS NOT NULL THEN head.m[1]::integer
                WHEN tail.m IS NOT NULL THEN tail.m[2]::integer
           END,
           CASE WHEN head.m IS NOT NULL THEN head.m[2]
                WHEN tail.m IS NOT NULL THEN tail.m[1]
                ELSE adf_model_year.product_code
           END
      FROM (SELECT pg_catalog.btrim(adf_model_year.product_code) AS code) c,
           LATERAL (SELECT pg_catalog.regexp_match(c.code, '^((?:19|20)[0-9]{2})[ _-]+([^ _-].*)$') AS m) head,
           LATERAL (SELECT pg_catalog.regexp_match(c.code, '^(.*[^ _-])[ _-]+((?:19|20)[0-9]{2})$') AS m) tail
$$;
COMMENT ON FUNCTION aimroute.adf_model_year(text) IS
    'The model year carried by a product code (19xx or 20xx at its start or end, parted by a space, dash or underscore) and the model without it; NULL year and the code unchanged when there is none.';

--
-- lead_adf: the ADF document of a stored lead, or NULL when there is no
-- such lead.  Where each value comes from:
--   id           leads.lead_id (source "aimroute")
--   requestdate  leads.received_at in settings.timezone, ISO 8601 with the
--                UTC offset of that instant: 2026-11-29T09:15:52-05:00
--   year, model  adf_model_year(leads.product_code); without a year in the
--                code, the year the lead was received (settings.timezone)
--   make         brands.name of leads.brand_code; the code itself when the
--                brand is not in aimroute.brands
--   customer     leads.first_name, last_name, email, phone, address (street
--                line 1), city, state_code (regioncode), country (ISO
--                alpha-2, left out when unknown) and comment; the postal
--                code as received (trimmed), which keeps a ZIP+4 or a full
--                Canadian code, else the stored one
--   vendor       the lead's dealer: dealers.dealer_number (id) and name
--                (vendorname and contact name)
--   provider     settings.oem_name
-- Runs with the caller's rights: it shows only leads the caller can read.
--
CREATE FUNCTION aimroute.lead_adf(lead_id bigint) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT aimroute.adf_render(
               l.lead_id,
               pg_catalog.to_char(t.local_at, 'YYYY-MM-DD"T"HH24:MI:SS')
                   || CASE WHEN t.utc_offset < '0'::interval THEN '-' ELSE '+' END
                   || pg_catalog.to_char(CASE WHEN t.utc_offset < '0'::interval THEN -t.utc_offset
                                              ELSE t.utc_offset END, 'HH24:MI'),
               coalesce(v.model_year, pg_catalog.date_part('year', t.local_at)::integer),
               coalesce(b.name, l.brand_code),
               v.model,
               l.first_name, l.last_name, l.email, l.phone,
               l.address, l.city, l.state_code,
               coalesce(nullif(pg_catalog.btrim(l.postal_code_input), ''), l.postal_code),
               l.country, l.comment,
               d.dealer_number, d.name, s.oem_name)
      FROM aimroute.leads l
     CROSS JOIN aimroute.settings s
      LEFT JOIN aimroute.dealers d ON d.dealer_number = l.dealer_number
      LEFT JOIN aimroute.brands b ON b.brand_code = l.brand_code
     CROSS JOIN LATERAL (SELECT l.received_at AT TIME ZONE s.timezone AS local_at,
                                (l.received_at AT TIME ZONE s.timezone)
                                    - (l.received_at AT TIME ZONE 'UTC') AS utc_offset) t
     CROSS JOIN LATERAL aimroute.adf_model_year(l.product_code) v
     WHERE l.lead_id = lead_adf.lead_id
$$;
COMMENT ON FUNCTION aimroute.lead_adf(bigint) IS
    'The ADF 1.0 XML document of a lead, as sent to CRM integrations; NULL when there is no such lead. docs/adf.md lists where each value comes from.';

-- source: schema/070_delivery.sql
--
-- Delivery (SPEC section 4): who receives a dealer's leads, the outbox the
-- routing transaction fills, what the delivery worker claims and records,
-- failure notices, the daily recap, and the views BI tools read.
--
-- The life of a message: aimroute.queue_lead_delivery() queues one row of
-- aimroute.outbox per recipient and method, in the transaction that routes
-- or moves the lead.  The delivery worker (src/delivery_worker.c) claims
-- due rows with aimroute.delivery_claim() under a lease and commits, talks
-- to the SMTP or HTTP server with no transaction open, and records each
-- outcome with aimroute.delivery_record() in a transaction of its own.  A
-- worker that dies between the two leaves its rows 'sending' with a lease
-- that runs out; the next claim sends them again under the same
-- Message-ID / Idempotency-Key.  A row recorded as delivered is never
-- claimed again.  docs/delivery.md.
--

-- A dealer's region, for region users and region failure notices.
ALTER TABLE aimroute.dealers ADD COLUMN region text;
COMMENT ON COLUMN aimroute.dealers.region IS
    'The OEM''s sales region of the dealer (free text, such as ''Great Lakes''); notification contacts and region users are scoped by it.';

--
-- Contact types.  'Leads: Emails To' contacts receive the dealer's leads and
-- are the only ones whose view counts; 'Leads: Emails CC' contacts get a
-- copy; the two notification types make a dealer's contact a recipient of
-- the failure notices about that dealer's leads.
--
CREATE FUNCTION aimroute.contact_types() RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ARRAY['Leads: Emails To', 'Leads: Emails CC',
                 'Dealer Lead Delivery Notification (real-time)',
                 'Lead Delivery Notification Daily'];
COMMENT ON FUNCTION aimroute.contact_types() IS 'The contact types aimroute.dealer_contacts accepts.';

CREATE FUNCTION aimroute.email_is_valid(email text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN email ~ '^[^@[:space:]<>(),;:"\[\]]+@[^@[:space:]<>(),;:"\[\]]+\.[^@[:space:]<>(),;:"\[\].]+$';
COMMENT ON FUNCTION aimroute.email_is_valid(text) IS
    'Whether a text is usable as one email address (local@domain.tld, no spaces, brackets or separators).';

ALTER TABLE aimroute.dealer_contacts
    ADD CONSTRAINT dealer_contacts_contact_types_check
        CHECK (contact_types <@ aimroute.contact_types() AND cardinality(contact_types) > 0),
    ADD CONSTRAINT dealer_contacts_email_check CHECK (aimroute.email_is_valid(email)),
    ADD CONSTRAINT dealer_contacts_reachable_check CHECK (email IS NOT NULL OR mobile IS NOT NULL);

--
-- dealer_contacts_validate: trims and checks a contact, with an error that
-- says what is wrong (a CHECK violation can only name its constraint).
--
CREATE FUNCTION aimroute.dealer_contacts_validate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad text;
BEGIN
    NEW.email := nullif(btrim(NEW.email), '');
    NEW.mobile := nullif(btrim(NEW.mobile), '');
    SELECT t INTO bad FROM unnest(NEW.contact_types) AS t
     WHERE t IS NULL OR NOT t = ANY (aimroute.contact_types()) LIMIT 1;
    IF FOUND OR cardinality(NEW.contact_types) = 0 THEN
        RAISE EXCEPTION 'invalid contact type %', coalesce(quote_literal(bad), 'NULL')
            USING ERRCODE = 'check_violation',
                  HINT = format('contact_types takes one or more of: %s.', array_to_string(aimroute.contact_types(), ', '));
    END IF;
    IF NOT aimroute.email_is_valid(NEW.email) THEN
        RAISE EXCEPTION 'invalid email address % for a contact of dealer %', quote_literal(NEW.email), NEW.dealer_number
            USING ERRCODE = 'check_violation',
                  HINT = 'Give one address, such as sales@dealer.example.com, or NULL for a contact reached by mobile push only.';
    END IF;
    IF NEW.email IS NULL AND NEW.mobile IS NULL THEN
        RAISE EXCEPTION 'a contact of dealer % needs an email address or a mobile number', NEW.dealer_number
            USING ERRCODE = 'check_violation',
                  HINT = 'Give email (for Leads and notices), mobile (for push), or both.';
    END IF;
    SELECT array_agg(DISTINCT t ORDER BY t) INTO NEW.contact_types FROM unnest(NEW.contact_types) AS t;
    RETURN NEW;
END
$$;
CREATE TRIGGER dealer_contacts_validate BEFORE INSERT OR UPDATE ON aimroute.dealer_contacts
    FOR EACH ROW EXECUTE FUNCTION aimroute.dealer_contacts_validate();
COMMENT ON COLUMN aimroute.dealer_contacts.contact_types IS
    'What the contact receives: ''Leads: Emails To'' (the dealer''s leads; only their views count), ''Leads: Emails CC'' (a copy), ''Dealer Lead Delivery Notification (real-time)'' and ''Lead Delivery Notification Daily'' (failure notices about this dealer''s leads).';
COMMENT ON COLUMN aimroute.dealer_contacts.mobile IS
    'Mobile number for push notices of new leads (through settings.push_gateway_url); NULL: no push.';
COMMENT ON COLUMN aimroute.dealer_contacts.delivery_status IS
    'Active, or Hard Bounce / Soft Bounce: then the contact is on the suppression list and nothing is sent to it until aimroute.set_delivery_status_active(contact_id).';

--
-- notification_contacts: OEM and region staff who receive failure notices.
--
CREATE TABLE aimroute.notification_contacts (
    notification_contact_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email                    text NOT NULL
        CONSTRAINT notification_contacts_email_check CHECK (aimroute.email_is_valid(email)),
    contact_type             text NOT NULL
        CONSTRAINT notification_contacts_contact_type_check
        CHECK (contact_type IN ('Dealer Lead Delivery Notification (real-time)', 'Lead Delivery Notification Daily')),
    region                   text,
    name                     text
);
CREATE UNIQUE INDEX notification_contacts_unique_idx
    ON aimroute.notification_contacts (lower(email), contact_type, region) NULLS NOT DISTINCT;
COMMENT ON TABLE aimroute.notification_contacts IS
    'OEM and region staff who are told when leads fail to reach their dealers: at once (real-time) or in a daily recap.';
COMMENT ON COLUMN aimroute.notification_contacts.contact_type IS
    '''Dealer Lead Delivery Notification (real-time)'': a notice per lead whose delivery failed wholly or partly; ''Lead Delivery Notification Daily'': one recap a day (settings.daily_recap_hour) of the prior day''s failing leads.';
COMMENT ON COLUMN aimroute.notification_contacts.region IS
    'Only leads of dealers of this region (aimroute.dealers.region); NULL: every lead.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.notification_contacts', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.notification_contacts', 'notification_contact_id')::regclass, '');

CREATE FUNCTION aimroute.notification_contacts_validate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.email := btrim(NEW.email);
    NEW.region := nullif(btrim(NEW.region), '');
    IF NEW.contact_type IS NULL OR NEW.contact_type NOT IN ('Dealer Lead Delivery Notification (real-time)',
                                                             'Lead Delivery Notification Daily') THEN
        RAISE EXCEPTION 'invalid notification contact type %', coalesce(quote_literal(NEW.contact_type), 'NULL')
            USING ERRCODE = 'check_violation',
                  HINT = 'contact_type is ''Dealer Lead Delivery Notification (real-time)'' or ''Lead Delivery Notification Daily''.';
    END IF;
    IF NEW.email IS NULL OR NOT aimroute.email_is_valid(NEW.email) THEN
        RAISE EXCEPTION 'invalid email address % for a notification contact', coalesce(quote_literal(NEW.email), 'NULL')
            USING ERRCODE = 'check_violation', HINT = 'Give one address, such as ops@oem.example.com.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER notification_contacts_validate BEFORE INSERT OR UPDATE ON aimroute.notification_contacts
    FOR EACH ROW EXECUTE FUNCTION aimroute.notification_contacts_validate();

--
-- crm_integrations: a dealer's CRM, which takes leads as ADF XML by email
-- (adf_email: endpoint is the CRM's lead address) or by HTTP POST
-- (adf_http: endpoint is the URL).
--
CREATE TABLE aimroute.crm_integrations (
    integration_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dealer_number   text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    kind            text NOT NULL
        CONSTRAINT crm_integrations_kind_check CHECK (kind IN ('adf_email', 'adf_http')),
    endpoint        text NOT NULL,
    active          boolean NOT NULL DEFAULT true,
    name            text,
    CONSTRAINT crm_integrations_endpoint_check CHECK (
        CASE kind WHEN 'adf_email' THEN aimroute.email_is_valid(endpoint)
                  ELSE endpoint ~ '^https?://[^/[:space:]]+[^[:space:]]*$' END)
);
CREATE INDEX crm_integrations_dealer_idx ON aimroute.crm_integrations (dealer_number) WHERE active;
COMMENT ON TABLE aimroute.crm_integrations IS
    'Dealer CRMs that receive each lead as ADF XML (docs/adf.md): adf_email sends it to the CRM''s lead address, adf_http POSTs it to a URL.';
COMMENT ON COLUMN aimroute.crm_integrations.endpoint IS 'adf_email: the CRM''s lead email address; adf_http: the http:// or https:// URL to POST to.';
COMMENT ON COLUMN aimroute.crm_integrations.active IS 'Only active integrations receive leads.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.crm_integrations', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.crm_integrations', 'integration_id')::regclass, '');

CREATE FUNCTION aimroute.crm_integrations_validate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.endpoint := btrim(NEW.endpoint);
    IF NEW.kind IS NULL OR NEW.kind NOT IN ('adf_email', 'adf_http') THEN
        RAISE EXCEPTION 'invalid CRM integration kind %', coalesce(quote_literal(NEW.kind), 'NULL')
            USING ERRCODE = 'check_violation',
                  HINT = 'kind is ''adf_email'' (ADF XML by email) or ''adf_http'' (ADF XML by HTTP POST).';
    ELSIF NEW.kind = 'adf_email' AND NOT coalesce(aimroute.email_is_valid(NEW.endpoint), false) THEN
        RAISE EXCEPTION 'invalid endpoint % for an adf_email integration of dealer %',
                        coalesce(quote_literal(NEW.endpoint), 'NULL'), NEW.dealer_number
            USING ERRCODE = 'check_violation', HINT = 'An adf_email endpoint is the CRM''s lead address, such as leads@crm.example.com.';
    ELSIF NEW.kind = 'adf_http' AND NOT coalesce(NEW.endpoint ~ '^https?://[^/[:space:]]+[^[:space:]]*$', false) THEN
        RAISE EXCEPTION 'invalid endpoint % for an adf_http integration of dealer %',
                        coalesce(quote_literal(NEW.endpoint), 'NULL'), NEW.dealer_number
            USING ERRCODE = 'check_violation', HINT = 'An adf_http endpoint is an http:// or https:// URL, such as https://crm.example.com/adf.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER crm_integrations_validate BEFORE INSERT OR UPDATE ON aimroute.crm_integrations
    FOR EACH ROW EXECUTE FUNCTION aimroute.crm_integrations_validate();

--
-- The outbox: one row per message, each to one recipient by one method.
--
CREATE TABLE aimroute.outbox (
    message_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  bigint,
    lead_id          bigint,
    dealer_number    text,
    purpose          text NOT NULL DEFAULT 'lead'
        CONSTRAINT outbox_purpose_check CHECK (purpose IN ('lead', 'failure notice', 'daily recap')),
    method           text NOT NULL
        CONSTRAINT outbox_method_check CHECK (method IN ('email', 'mobile', 'crm')),
    role             text NOT NULL,
    contact_id       bigint,
    integration_id   bigint,
    recipient        text NOT NULL,
    subject          text,
    body             text,
    status           text NOT NULL DEFAULT 'queued'
        CONSTRAINT outbox_status_check CHECK (status IN ('queued', 'sending', 'delivered', 'failed', 'cancelled')),
    outcome          text,
    attempts         integer NOT NULL DEFAULT 0,
    due_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    queued_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at      timestamptz,
    message_key      text,
    last_attempt_at  timestamptz,
    last_response    text
);
CREATE INDEX outbox_lead_idx ON aimroute.outbox (lead_id);
CREATE INDEX outbox_due_idx ON aimroute.outbox (due_at) WHERE status IN ('queued', 'sending');
CREATE INDEX outbox_notification_idx ON aimroute.outbox (notification_id);
COMMENT ON COLUMN aimroute.outbox.notification_id IS
    'The notice (aimroute.lead_notifications) a lead message or failure notice belongs to; NULL for a daily recap. Not a foreign key: the queue statement writes the notice and its messages together, and a foreign key check would cost every queued message about as much as its own insert; aimroute.lead_notifications_delete_messages keeps the cascade.';
COMMENT ON TABLE aimroute.outbox IS
    'Messages to send, one per recipient and method, queued in the transaction that routes or moves a lead; the delivery worker sends them. Read the views lead_delivery_status, delivery_attempts, delivery_issues and unsent_leads rather than this table.';
COMMENT ON COLUMN aimroute.outbox.purpose IS '''lead'' (a lead to its dealer), ''failure notice'' or ''daily recap'' (to notification contacts).';
COMMENT ON COLUMN aimroute.outbox.method IS '''email'' (SMTP), ''mobile'' (push gateway, HTTP) or ''crm'' (ADF XML, by email or HTTP).';
COMMENT ON COLUMN aimroute.outbox.role IS 'To, CC, Push, adf_email, adf_http, Notice or Recap.';
COMMENT ON COLUMN aimroute.outbox.contact_id IS 'The dealer contact (aimroute.dealer_contacts) it goes to, whose bounce status suppresses it.';
COMMENT ON COLUMN aimroute.outbox.status IS
    'queued (waiting for its first or next attempt), sending (claimed by the worker, under a lease until due_at), delivered, failed (bounced, suppressed or out of retries) or cancelled (the lead left the dealer first).';
COMMENT ON COLUMN aimroute.outbox.due_at IS 'queued: when the next attempt is due; sending: when the worker''s lease runs out.';
COMMENT ON COLUMN aimroute.outbox.last_attempt_at IS 'When the latest attempt was recorded (sent or skipped).';
COMMENT ON COLUMN aimroute.outbox.message_key IS 'The Message-ID (email) or Idempotency-Key (HTTP) every attempt of this message carries, so a receiver can recognize a repeat.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.outbox', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.outbox', 'message_id')::regclass, '');

-- A notice deleted (with its lead) takes its messages along.
CREATE FUNCTION aimroute.lead_notifications_delete_messages() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM aimroute.outbox o USING gone g WHERE o.notification_id = g.notification_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER lead_notifications_delete_messages AFTER DELETE ON aimroute.lead_notifications
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.lead_notifications_delete_messages();

CREATE TABLE aimroute.delivery_attempt_log (
    attempt_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id     bigint NOT NULL REFERENCES aimroute.outbox ON DELETE CASCADE,
    attempt        integer NOT NULL,
    attempted_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    outcome        text NOT NULL,
    response_code  integer,
    response       text
);
CREATE INDEX delivery_attempt_log_message_idx ON aimroute.delivery_attempt_log (message_id);
CREATE INDEX delivery_attempt_log_at_idx ON aimroute.delivery_attempt_log (attempted_at);
COMMENT ON TABLE aimroute.delivery_attempt_log IS 'Every attempt to send a message of aimroute.outbox, and what came of it; read it through aimroute.delivery_attempts.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.delivery_attempt_log', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.delivery_attempt_log', 'attempt_id')::regclass, '');

CREATE TABLE aimroute.daily_recaps (
    day        date PRIMARY KEY,
    queued_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    leads      integer NOT NULL DEFAULT 0,
    messages   integer NOT NULL DEFAULT 0
);
COMMENT ON TABLE aimroute.daily_recaps IS 'The daily recaps queued: one row per day recapped (a local date in settings.timezone), so that each day is recapped once.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.daily_recaps', '');

--
-- Queueing.  aimroute.queue_lead_delivery (C, src/delivery.c) runs one
-- prepared statement: the notice row and its messages.  The routing
-- trigger (src/leads.c) runs the same statement for each lead it routes to
-- be sent (a lead that pg_restore brings back, routed long ago, is not
-- routed again, and so not sent again).
--
CREATE FUNCTION aimroute.queue_lead_delivery(lead_id bigint, dealer_number text, event text)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'aimroute_queue_lead_delivery'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION aimroute.queue_lead_delivery(bigint, text, text) IS
    'Queues a notice of the lead to the dealer and its messages (one email per To and CC contact, one push per contact with a mobile, one ADF message per active CRM integration); returns the notice''s id. Internal: routing, moves and send_lead call it.';

CREATE FUNCTION aimroute.wake_delivery_worker() RETURNS void
    AS 'MODULE_PATHNAME', 'aimroute_wake_delivery_worker'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION aimroute.wake_delivery_worker() IS
    'Wakes the delivery worker when the current transaction commits, for messages queued by hand or by SQL. Does nothing when the worker does not run.';

-- What the foreign keys of a notice would do, for the rare change: a lead
-- deleted takes its notices (and so their messages) along; a renumbered
-- dealer keeps its notices and messages.
CREATE FUNCTION aimroute.leads_delete_notices() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM aimroute.lead_notifications n USING gone g WHERE n.lead_id = g.lead_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER leads_delete_notices AFTER DELETE ON aimroute.leads
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.leads_delete_notices();

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

--
-- Rendering.  Emails are RFC 5322 text with CRLF line ends, the body in
-- base64 so that any text goes through any server; non-ASCII header
-- text is RFC 2047 encoded.
--
CREATE FUNCTION aimroute.mime_header_text(t text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN t ~ '^[ -~]*$' THEN t
                ELSE (SELECT string_agg('=?UTF-8?B?' || encode(convert_to(substr(t, i, 12), 'UTF8'), 'base64') || '?=',
                                        E'\r\n ' ORDER BY i)
                        FROM generate_series(1, length(t), 12) AS i) END
$$;
COMMENT ON FUNCTION aimroute.mime_header_text(text) IS
    'Header text as RFC 2047 encoded words when it is not plain ASCII (12 characters a word, so none is cut inside a character).';

CREATE FUNCTION aimroute.render_email(mail_from text, rcpt text, subject text, body text,
                                      message_key text, sent_at timestamptz,
                                      content_type text DEFAULT 'text/plain')
RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT concat_ws(E'\r\n',
        'Date: ' || to_char(sent_at AT TIME ZONE 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS') || ' +0000',
        'From: ' || mail_from,
        'To: ' || rcpt,
        'Subject: ' || aimroute.mime_header_text(regexp_replace(subject, '[\r\n\t]+', ' ', 'g')),
        'Message-ID: ' || message_key,
        'MIME-Version: 1.0',
        'Content-Type: ' || content_type || '; charset=UTF-8',
        'Content-Transfer-Encoding: base64',
        'X-Mailer: aimroute',
        '',
        replace(encode(convert_to(body, 'UTF8'), 'base64'), E'\n', E'\r\n'),
        '')
$$;
COMMENT ON FUNCTION aimroute.render_email(text, text, text, text, text, timestamptz, text) IS
    'An email as sent over SMTP: headers, a blank line and the body in base64, CRLF line ends.';

CREATE FUNCTION aimroute.lead_email_subject(l aimroute.leads) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('New lead %s: %s%s%s', l.lead_id,
                  coalesce((SELECT b.name FROM aimroute.brands b WHERE b.brand_code = l.brand_code), l.brand_code, 'no brand'),
                  ' ' || l.product_code,
                  ' - ' || nullif(concat_ws(' ', l.first_name, l.last_name), ''))
$$;

--
-- lead_email_text: the text of a lead to its dealer.  A 'Leads: Emails To'
-- contact's copy has the view link; a CC copy does not (its reader cannot
-- mark the lead viewed).
--
CREATE FUNCTION aimroute.lead_email_text(l aimroute.leads, dealer_name text, view_link text)
RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT concat_ws(E'\n',
        format('A new lead for %s (%s).', dealer_name, l.dealer_number),
        '',
        'Lead:      ' || l.lead_id,
        'Received:  ' || to_char(l.received_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI') || ' ' || s.timezone,
        'Brand:     ' || coalesce((SELECT b.name FROM aimroute.brands b WHERE b.brand_code = l.brand_code), l.brand_code),
        'Product:   ' || l.product_code,
        'Name:      ' || nullif(concat_ws(' ', l.first_name, l.last_name), ''),
        'Email:     ' || l.email,
        'Phone:     ' || l.phone,
        'Address:   ' || nullif(concat_ws(', ', l.address, l.city,
                                          concat_ws(' ', l.state_code, coalesce(l.postal_code, l.postal_code_input)),
                                          l.country), ''),
        'Source:    ' || l.source,
        'Comment:   ' || l.comment,
        '',
        CASE WHEN view_link IS NOT NULL
             THEN 'Open the lead (this marks it viewed): ' || view_link
             ELSE 'You receive a copy of this lead; the dealer''s lead contacts have the link that marks it viewed.' END,
        CASE WHEN view_link IS NOT NULL AND l.reroute_due_at IS NOT NULL
             THEN 'Leads not viewed by ' || to_char(l.reroute_due_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI')
                  || ' ' || s.timezone || ' go to another dealer.' END,
        '',
        '-- ',
        s.oem_name || ' lead delivery (aimroute)')
      FROM aimroute.settings s
$$;

--
-- delivery_job: what the worker needs to send one message.
--
CREATE TYPE aimroute.delivery_job AS (
    message_id    bigint,
    attempt       integer,
    transport     text,      -- smtp or http
    url           text,      -- SMTP server or HTTP endpoint
    mail_from     text,
    recipient     text,      -- SMTP recipient (NULL for HTTP)
    username      text,
    password      text,
    content_type  text,      -- HTTP Content-Type
    message_key   text,      -- Message-ID or Idempotency-Key
    payload       text       -- the whole email, or the HTTP body
);

--
-- delivery_settle: after a lead message's final outcome, queue failure
-- notices once the notice's delivery is over and failed wholly or partly
-- (internal; the notices themselves never cause notices).
--
CREATE FUNCTION aimroute.delivery_settle(p_notification_id bigint)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n aimroute.lead_notifications;
    s aimroute.settings;
    d aimroute.dealers;
    total integer;
    delivered integer;
    open_count integer;
    failures text;
    verdict text;
    queued integer;
BEGIN
    SELECT * INTO n FROM aimroute.lead_notifications x WHERE x.notification_id = p_notification_id FOR UPDATE;
    IF NOT FOUND OR n.failure_notice_at IS NOT NULL THEN
        RETURN 0;
    END IF;
    SELECT count(*) FILTER (WHERE o.status <> 'cancelled'),
           count(*) FILTER (WHERE o.status = 'delivered'),
           count(*) FILTER (WHERE o.status IN ('queued', 'sending')),
           string_agg(format('  %s %s (%s): %s%s', o.method, o.recipient, o.role, o.outcome,
                             ' - ' || left(o.last_response, 200)), E'\n' ORDER BY o.message_id)
               FILTER (WHERE o.status = 'failed')
      INTO total, delivered, open_count, failures
      FROM aimroute.outbox o
     WHERE o.notification_id = n.notification_id AND o.purpose = 'lead';
    IF open_count > 0 OR total = 0 OR delivered = total THEN
        RETURN 0;
    END IF;
    verdict := CASE WHEN delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END;
    SELECT * INTO s FROM aimroute.settings;
    SELECT * INTO d FROM aimroute.dealers x WHERE x.dealer_number = n.dealer_number;
    INSERT INTO aimroute.outbox (notification_id, lead_id, dealer_number, purpose, method, role,
                                 contact_id, recipient, subject, body)
    SELECT n.notification_id, n.lead_id, n.dealer_number, 'failure notice', 'email', 'Notice',
           r.contact_id, r.email,
           format('Lead %s not delivered to dealer %s (%s)', n.lead_id, n.dealer_number, verdict),
           concat_ws(E'\n',
               format('Lead %s was sent to dealer %s (%s) on %s %s, and its delivery ended in %s:',
                      n.lead_id, n.dealer_number, d.name,
                      to_char(n.queued_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI'), s.timezone, verdict),
               '',
               format('  %s of %s messages delivered; not delivered:', delivered, total),
               failures,
               '',
               'What to check: SELECT * FROM aimroute.delivery_attempts WHERE lead_id = ' || n.lead_id || ';',
               'Send it again once fixed: SELECT aimroute.send_lead(' || n.lead_id || ');',
               '',
               '-- ',
               s.oem_name || ' lead delivery (aimroute)')
      FROM (SELECT NULL::bigint AS contact_id, c.email
              FROM aimroute.notification_contacts c
             WHERE c.contact_type = 'Dealer Lead Delivery Notification (real-time)'
               AND (c.region IS NULL OR c.region = d.region)
            UNION
            SELECT c.contact_id, c.email
              FROM aimroute.dealer_contacts c
             WHERE c.dealer_number = n.dealer_number AND c.email IS NOT NULL
               AND 'Dealer Lead Delivery Notification (real-time)' = ANY (c.contact_types)) AS r;
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM aimroute.wake_delivery_worker();
    END IF;
    UPDATE aimroute.lead_notifications x SET failure_notice_at = clock_timestamp()
     WHERE x.notification_id = n.notification_id;
    RETURN queued;
END
$$;

--
-- delivery_render: what the worker sends for one claimed message
-- (internal).  Lead emails and pushes are rendered when sent, so they show
-- the lead as it is then.
--
CREATE FUNCTION aimroute.delivery_render(m aimroute.outbox, s aimroute.settings)
RETURNS aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j aimroute.delivery_job;
    l aimroute.leads;
    token text;
    dealer_name text;
BEGIN
    j := ROW(m.message_id, m.attempts, 'smtp', s.smtp_url, s.smtp_from, m.recipient, s.smtp_username,
             s.smtp_password, NULL, m.message_key, NULL)::aimroute.delivery_job;
    IF m.purpose <> 'lead' THEN
        j.payload := aimroute.render_email(s.smtp_from, m.recipient, m.subject, m.body, m.message_key, clock_timestamp());
        RETURN j;
    END IF;

    SELECT * INTO l FROM aimroute.leads x WHERE x.lead_id = m.lead_id;
    SELECT n.view_token INTO token FROM aimroute.lead_notifications n WHERE n.notification_id = m.notification_id;
    SELECT d.name INTO dealer_name FROM aimroute.dealers d WHERE d.dealer_number = m.dealer_number;
    IF m.method = 'email' THEN
        j.payload := aimroute.render_email(s.smtp_from, m.recipient, aimroute.lead_email_subject(l),
                         aimroute.lead_email_text(l, dealer_name,
                             CASE WHEN m.role = 'To' THEN s.view_link_url || token END),
                         m.message_key, clock_timestamp());
    ELSIF m.method = 'mobile' THEN
        j.transport := 'http'; j.url := s.push_gateway_url; j.recipient := NULL;
        j.username := NULL; j.password := NULL;     -- the SMTP login is for the SMTP server only
        j.content_type := 'application/json';
        j.payload := json_build_object(
            'to', m.recipient,
            'title', aimroute.lead_email_subject(l),
            'body', concat_ws(', ', nullif(concat_ws(' ', l.first_name, l.last_name), ''),
                              nullif(concat_ws(' ', l.city, l.state_code), ''), l.phone),
            'lead_id', l.lead_id,
            'dealer_number', l.dealer_number,
            'url', CASE WHEN EXISTS (SELECT FROM aimroute.dealer_contacts c
                                      WHERE c.contact_id = m.contact_id
                                        AND 'Leads: Emails To' = ANY (c.contact_types))
                        THEN s.view_link_url || token END,
            'message_key', m.message_key)::text;
    ELSIF m.role = 'adf_email' THEN
        j.payload := aimroute.render_email(s.smtp_from, m.recipient,
                         format('ADF lead %s for dealer %s', l.lead_id, l.dealer_number),
                         aimroute.lead_adf(l.lead_id), m.message_key, clock_timestamp());
    ELSE
        j.transport := 'http'; j.url := m.recipient; j.recipient := NULL;
        j.username := NULL; j.password := NULL;
        j.content_type := 'application/xml';
        j.payload := aimroute.lead_adf(l.lead_id);
    END IF;
    RETURN j;
END
$$;

--
-- delivery_fail: record that a claimed message failed without a send
-- (internal).
--
CREATE FUNCTION aimroute.delivery_fail(m aimroute.outbox, p_outcome text, p_why text)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- A message not sent after all, though an attempt a crash cut short
    -- may have reached the receiver: say so.
    IF EXISTS (SELECT FROM aimroute.delivery_attempt_log a
                WHERE a.message_id = m.message_id AND a.outcome = 'Interrupted') THEN
        p_why := p_why || ' (an earlier attempt was interrupted and may have reached the receiver)';
    END IF;
    UPDATE aimroute.outbox o
       SET status = CASE WHEN p_outcome = 'Cancelled' THEN 'cancelled' ELSE 'failed' END,
           outcome = p_outcome, last_response = p_why, finished_at = clock_timestamp(),
           last_attempt_at = clock_timestamp()
     WHERE o.message_id = m.message_id;
    INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
    VALUES (m.message_id, m.attempts, p_outcome, p_why);
    -- Also after a cancel: it may have been the last message the notice
    -- waited for.
    IF m.purpose = 'lead' THEN
        PERFORM aimroute.delivery_settle(m.notification_id);
    END IF;
END
$$;

--
-- delivery_claim: the worker's claim of up to max_messages due messages,
-- under a lease.  In the same transaction: a message whose lease ran out
-- (its worker stopped before recording it) is logged as interrupted and
-- sent again under the same key; a message to a suppressed contact is
-- recorded as failed without sending; a lead message whose lead left the
-- dealer is cancelled; a message that cannot be rendered fails with the
-- error, instead of stopping the worker.
--
CREATE FUNCTION aimroute.delivery_claim(max_messages integer, lease interval)
RETURNS SETOF aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s aimroute.settings;
    m aimroute.outbox;
    j aimroute.delivery_job;
    contact_status text;
    holder text;
    newer bigint;
    domain text;
    err text;
BEGIN
    SELECT * INTO s FROM aimroute.settings;
    domain := split_part(s.smtp_from, '@', 2);
    FOR m IN SELECT * FROM aimroute.outbox o
              WHERE o.status IN ('queued', 'sending') AND o.due_at <= clock_timestamp()
              ORDER BY o.due_at, o.message_id
              LIMIT max_messages
              FOR UPDATE SKIP LOCKED
    LOOP
        IF m.status = 'sending' THEN
            INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
            VALUES (m.message_id, m.attempts, 'Interrupted',
                    'the delivery worker stopped before recording the outcome of this attempt; sending again with the same key');
            UPDATE aimroute.outbox o SET last_attempt_at = clock_timestamp() WHERE o.message_id = m.message_id;
        END IF;
        IF m.purpose = 'lead' THEN
            SELECT l.dealer_number INTO holder
              FROM aimroute.leads l JOIN aimroute.lead_notifications n USING (lead_id)
             WHERE n.notification_id = m.notification_id AND l.dealer_number = n.dealer_number;
            IF NOT FOUND THEN
                SELECT l.dealer_number INTO holder FROM aimroute.leads l WHERE l.lead_id = m.lead_id;
                PERFORM aimroute.delivery_fail(m, 'Cancelled',
                    CASE WHEN holder IS NULL THEN 'not sent: the lead does not exist (deleted, or its INSERT skipped by another trigger)'
                         ELSE format('not sent: the lead went to dealer %s first', holder) END);
                CONTINUE;
            END IF;
            SELECT x.notification_id INTO newer FROM aimroute.lead_notifications x
             WHERE x.lead_id = m.lead_id AND x.dealer_number = holder AND x.notification_id > m.notification_id
             ORDER BY x.notification_id DESC LIMIT 1;
            IF FOUND THEN
                PERFORM aimroute.delivery_fail(m, 'Cancelled',
                    format('not sent: notice %s sent the lead to the dealer again', newer));
                CONTINUE;
            END IF;
        END IF;
        -- A deleted contact gets nothing; a bounce is an email address's,
        -- so a push to the contact's mobile still goes.
        IF m.contact_id IS NOT NULL THEN
            SELECT c.delivery_status INTO contact_status FROM aimroute.dealer_contacts c WHERE c.contact_id = m.contact_id;
            IF NOT FOUND THEN
                PERFORM aimroute.delivery_fail(m, 'Cancelled', format('not sent: contact %s was deleted', m.contact_id));
                CONTINUE;
            END IF;
            IF m.method = 'email' AND contact_status <> 'Active' THEN
                PERFORM aimroute.delivery_fail(m, 'Suppressed',
                    format('not sent: contact %s is on the suppression list (%s)', m.contact_id, contact_status));
                CONTINUE;
            END IF;
        END IF;
        IF m.method = 'mobile' AND s.push_gateway_url IS NULL THEN
            PERFORM aimroute.delivery_fail(m, 'Failed', 'not sent: no push gateway is configured (settings.push_gateway_url)');
            CONTINUE;
        END IF;

        UPDATE aimroute.outbox o
           SET status = 'sending', attempts = o.attempts + 1, due_at = clock_timestamp() + lease,
               message_key = coalesce(o.message_key,
                                      format('<aimroute.%s.%s@%s>', o.message_id,
                                             to_char(o.queued_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS'), domain))
         WHERE o.message_id = m.message_id
        RETURNING * INTO m;
        BEGIN
            j := aimroute.delivery_render(m, s);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
            PERFORM aimroute.delivery_fail(m, 'Failed', 'not sent: the message could not be rendered: ' || err);
            CONTINUE;
        END;
        RETURN NEXT j;
    END LOOP;
END
$$;
COMMENT ON FUNCTION aimroute.delivery_claim(integer, interval) IS
    'The delivery worker''s claim: up to max_messages due messages, rendered, leased for the given interval. Internal.';

--
-- delivery_record: the outcome of one attempt, as the worker saw it:
-- libcurl's result code, the server's reply code (SMTP or HTTP, 0 when
-- there was none) and its text.  Decides delivered, bounce, retry or
-- failure; returns the outcome recorded.
--
CREATE FUNCTION aimroute.delivery_record(message_id bigint, attempt integer, curl_code integer,
                                         response_code integer, response text,
                                         smtp_command text DEFAULT NULL)
RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m aimroute.outbox;
    s aimroute.settings;
    smtp boolean;
    recipient_reply boolean;
    v_outcome text;
    detail text := left(response, 2000);
BEGIN
    SELECT * INTO m FROM aimroute.outbox o WHERE o.message_id = delivery_record.message_id FOR UPDATE;
    IF NOT FOUND OR m.status <> 'sending' OR m.attempts <> delivery_record.attempt THEN
        RETURN NULL;    -- deleted, or recorded already: nothing to do
    END IF;
    SELECT * INTO s FROM aimroute.settings;
    smtp := m.method = 'email' OR m.role = 'adf_email';
    IF smtp THEN
        -- Only the recipient's own replies are bounces: to RCPT, or to the
        -- end of DATA (one recipient a message).  A refusal of the sender
        -- or of the login says nothing about the contact.
        recipient_reply := coalesce(upper(smtp_command) IN ('RCPT', 'DATA'), true);
        v_outcome := CASE WHEN curl_code = 0 THEN 'Delivered'
                        WHEN recipient_reply AND response_code IN (550, 551, 553) THEN 'Hard Bounce'
                        WHEN recipient_reply AND response_code IN (452, 552) THEN 'Soft Bounce'
                        WHEN response_code BETWEEN 500 AND 599 THEN 'Failed'
                        ELSE 'Will retry' END;
    ELSE
        v_outcome := CASE WHEN curl_code = 0 AND response_code BETWEEN 200 AND 299 THEN 'Delivered'
                        ELSE 'Will retry' END;
    END IF;
    IF v_outcome = 'Will retry' AND m.attempts > cardinality(s.delivery_retry_schedule) THEN
        v_outcome := 'Failed';
        detail := format('%s (gave up after %s attempts)', detail, m.attempts);
    END IF;

    IF smtp AND curl_code <> 0 AND smtp_command IS NOT NULL THEN
        detail := format('%s (after %s)', detail, upper(smtp_command));
    END IF;
    INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response_code, response)
    VALUES (m.message_id, m.attempts, v_outcome, nullif(response_code, 0), detail);
    IF v_outcome = 'Will retry' THEN
        UPDATE aimroute.outbox o
           SET status = 'queued', outcome = 'Will retry', last_response = detail, last_attempt_at = clock_timestamp(),
               due_at = clock_timestamp() + s.delivery_retry_schedule[m.attempts]
         WHERE o.message_id = m.message_id;
        RETURN v_outcome;
    END IF;
    UPDATE aimroute.outbox o
       SET status = CASE WHEN v_outcome = 'Delivered' THEN 'delivered' ELSE 'failed' END,
           outcome = v_outcome, last_response = detail, finished_at = clock_timestamp(),
           last_attempt_at = clock_timestamp()
     WHERE o.message_id = m.message_id;
    IF v_outcome IN ('Hard Bounce', 'Soft Bounce') AND m.contact_id IS NOT NULL THEN
        UPDATE aimroute.dealer_contacts c SET delivery_status = v_outcome
         WHERE c.contact_id = m.contact_id AND c.delivery_status IS DISTINCT FROM 'Hard Bounce';
    END IF;
    IF m.purpose = 'lead' THEN
        PERFORM aimroute.delivery_settle(m.notification_id);
    END IF;
    RETURN v_outcome;
END
$$;
COMMENT ON FUNCTION aimroute.delivery_record(bigint, integer, integer, integer, text, text) IS
    'Records the outcome of one delivery attempt (libcurl code, server reply code and text, the SMTP command replied to): delivered, hard or soft bounce (the contact is suppressed), a retry on the schedule of settings.delivery_retry_schedule, or failure. Internal: the delivery worker calls it.';

--
-- delivery_next_due: seconds until the earliest due message (0 when one
-- is due, NULL when none is queued); the worker sleeps that long at most.
--
CREATE FUNCTION aimroute.delivery_next_due() RETURNS double precision
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    -- Not greatest(0, ...) alone: it ignores a NULL, and no message would
    -- read as one due now.
    SELECT CASE WHEN min(o.due_at) IS NOT NULL
                THEN greatest(0, extract(epoch FROM min(o.due_at) - clock_timestamp()))::float8 END
      FROM aimroute.outbox o WHERE o.status IN ('queued', 'sending')
$$;

--
-- queue_daily_recap: once a day, at or after settings.daily_recap_hour in
-- settings.timezone, one email to each daily notification contact listing
-- the leads whose delivery was found to have failed, wholly or partly, on
-- the prior day (region contacts: their region's; a dealer's contact: that
-- dealer's).  A lead is in the recap of the day its last retry ran out,
-- so one that fails late in the day is not missed.  Days the worker did
-- not run at the hour are caught up, a week back at most.  Returns the
-- messages queued; each day is recapped once, and a contact with nothing
-- to report gets no email.
--
CREATE FUNCTION aimroute.queue_daily_recap(at timestamptz DEFAULT clock_timestamp())
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s aimroute.settings;
    local_now timestamp;
    recap_day date;
    last_day date;
    queued integer;
    total integer := 0;
    lead_count integer;
BEGIN
    SELECT * INTO s FROM aimroute.settings;
    local_now := queue_daily_recap.at AT TIME ZONE s.timezone;
    IF extract(hour FROM local_now) < s.daily_recap_hour THEN
        RETURN 0;
    END IF;
    SELECT max(r.day) INTO last_day FROM aimroute.daily_recaps r;
    FOR recap_day IN
        SELECT d::date FROM generate_series(greatest(last_day + 1, local_now::date - 7),
                                            local_now::date - 1, interval '1 day') AS d
    LOOP
        INSERT INTO aimroute.daily_recaps (day) VALUES (recap_day) ON CONFLICT (day) DO NOTHING;
        CONTINUE WHEN NOT FOUND;

        WITH issues AS (
            SELECT i.* FROM aimroute.delivery_issues i
             WHERE (i.failed_at AT TIME ZONE s.timezone)::date = recap_day
        ), recipients AS (
            SELECT NULL::bigint AS contact_id, c.email, c.region, NULL::text AS dealer_number
              FROM aimroute.notification_contacts c
             WHERE c.contact_type = 'Lead Delivery Notification Daily'
            UNION
            SELECT c.contact_id, c.email, NULL, c.dealer_number
              FROM aimroute.dealer_contacts c
             WHERE c.email IS NOT NULL AND 'Lead Delivery Notification Daily' = ANY (c.contact_types)
        ), per_recipient AS (
            SELECT r.contact_id, r.email, r.region, r.dealer_number, count(DISTINCT i.lead_id) AS n,
                   string_agg(format('  lead %s  dealer %s (%s)  %s  email %s, mobile %s, CRM %s',
                                     i.lead_id, i.dealer_number, i.dealer_name, i.failure,
                                     coalesce(i.email_status, '-'), coalesce(i.mobile_status, '-'),
                                     coalesce(i.crm_status, '-')), E'\n' ORDER BY i.lead_id, i.notification_id) AS lines
              FROM recipients r
              JOIN issues i ON (r.region IS NULL OR i.region = r.region)
                           AND (r.dealer_number IS NULL OR i.dealer_number = r.dealer_number)
             GROUP BY 1, 2, 3, 4
        )
        INSERT INTO aimroute.outbox (purpose, method, role, contact_id, dealer_number, recipient, subject, body)
        SELECT 'daily recap', 'email', 'Recap', p.contact_id, p.dealer_number, p.email,
               format('Lead delivery failures on %s: %s lead%s%s', recap_day, p.n, CASE WHEN p.n = 1 THEN '' ELSE 's' END,
                      coalesce(' (region ' || p.region || ')', ' (dealer ' || p.dealer_number || ')', '')),
               concat_ws(E'\n',
                   format('Leads whose delivery failed wholly or partly on %s (%s):', recap_day, s.timezone),
                   '',
                   p.lines,
                   '',
                   format('The details: SELECT * FROM aimroute.delivery_issues WHERE (failed_at AT TIME ZONE %L)::date = %L;',
                          s.timezone, recap_day),
                   '',
                   '-- ',
                   s.oem_name || ' lead delivery (aimroute)')
          FROM per_recipient p;
        GET DIAGNOSTICS queued = ROW_COUNT;
        SELECT count(DISTINCT i.lead_id) INTO lead_count FROM aimroute.delivery_issues i
         WHERE (i.failed_at AT TIME ZONE s.timezone)::date = recap_day;
        UPDATE aimroute.daily_recaps r SET leads = lead_count, messages = queued WHERE r.day = recap_day;
        total := total + queued;
    END LOOP;
    IF total > 0 THEN
        PERFORM aimroute.wake_delivery_worker();
    END IF;
    RETURN total;
END
$$;
COMMENT ON FUNCTION aimroute.queue_daily_recap(timestamptz) IS
    'Queues the daily recap of the prior day''s failing leads to every ''Lead Delivery Notification Daily'' contact, once a day at or after settings.daily_recap_hour (settings.timezone); returns the messages queued. The delivery worker calls it every round.';

--
-- The contract's functions.
--

--
-- send_lead: send a lead to its dealer again (a new notice, with every
-- current contact and integration).  Returns the messages queued.
--
CREATE FUNCTION aimroute.send_lead(lead_id bigint)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l aimroute.leads;
    nid bigint;
BEGIN
    SELECT * INTO l FROM aimroute.leads x WHERE x.lead_id = send_lead.lead_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lead % does not exist', send_lead.lead_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT l.send_to_dealer THEN
        RAISE EXCEPTION 'lead % is not to be sent to its dealer (send_to_dealer is false)', l.lead_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('To send it all the same: UPDATE aimroute.leads SET send_to_dealer = true WHERE lead_id = %s; then call send_lead again.', l.lead_id);
    END IF;
    nid := aimroute.queue_lead_delivery(l.lead_id, l.dealer_number, 'Resent');
    RETURN (SELECT n.messages FROM aimroute.lead_notifications n WHERE n.notification_id = nid);
END
$$;
COMMENT ON FUNCTION aimroute.send_lead(bigint) IS
    'Sends a lead to its dealer again: queues a new notice to every current Leads contact, mobile and active CRM integration; returns how many messages were queued.';

--
-- record_bounce: a bounce that a mail provider reported after accepting
-- the message.  Every contact with that address gets the bounce status
-- (a hard bounce outranks a soft one); the latest message delivered to the
-- address in the last 30 days is recorded as bounced.  Returns the number
-- of contacts changed.
--
CREATE FUNCTION aimroute.record_bounce(email text, kind text, detail text)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status text;
    changed integer;
    m aimroute.outbox;
BEGIN
    v_status := CASE lower(btrim(kind))
                  WHEN 'hard' THEN 'Hard Bounce' WHEN 'hard bounce' THEN 'Hard Bounce'
                  WHEN 'soft' THEN 'Soft Bounce' WHEN 'soft bounce' THEN 'Soft Bounce' END;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'invalid bounce kind %', coalesce(quote_literal(kind), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'kind is ''hard'' (the address does not exist) or ''soft'' (a full inbox, for example).';
    END IF;
    IF email IS NULL OR btrim(email) = '' THEN
        RAISE EXCEPTION 'record_bounce needs the email address that bounced'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the recipient address the mail provider reported, such as sales@dealer.example.com.';
    END IF;
    UPDATE aimroute.dealer_contacts c SET delivery_status = v_status
     WHERE lower(c.email) = lower(btrim(record_bounce.email))
       AND c.delivery_status IS DISTINCT FROM 'Hard Bounce' AND c.delivery_status IS DISTINCT FROM v_status;
    GET DIAGNOSTICS changed = ROW_COUNT;

    SELECT * INTO m FROM aimroute.outbox o
     WHERE lower(o.recipient) = lower(btrim(record_bounce.email)) AND o.status = 'delivered'
       AND o.finished_at > clock_timestamp() - interval '30 days'
     ORDER BY o.finished_at DESC LIMIT 1 FOR UPDATE;
    IF FOUND THEN
        INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
        VALUES (m.message_id, m.attempts, v_status, 'bounced after delivery: ' || coalesce(detail, 'no detail given'));
        UPDATE aimroute.outbox o SET status = 'failed', outcome = v_status, last_attempt_at = clock_timestamp(),
               last_response = 'bounced after delivery: ' || coalesce(detail, 'no detail given')
         WHERE o.message_id = m.message_id;
        IF m.purpose = 'lead' THEN
            PERFORM aimroute.delivery_settle(m.notification_id);
        END IF;
    END IF;
    IF changed = 0 AND NOT FOUND THEN
        RAISE NOTICE 'no contact and no recent message has the address %', btrim(record_bounce.email);
    END IF;
    RETURN changed;
END
$$;
COMMENT ON FUNCTION aimroute.record_bounce(text, text, text) IS
    'Takes a bounce reported by a mail provider (kind ''hard'' or ''soft''): every contact with the address is suppressed, and the latest message delivered to it is recorded as bounced. Returns the contacts changed.';

CREATE FUNCTION aimroute.set_delivery_status_active(contact_id bigint)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE aimroute.dealer_contacts c SET delivery_status = 'Active'
     WHERE c.contact_id = set_delivery_status_active.contact_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'contact % does not exist', set_delivery_status_active.contact_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Look the contact up in aimroute.dealer_contacts.';
    END IF;
END
$$;
COMMENT ON FUNCTION aimroute.set_delivery_status_active(bigint) IS
    'Takes a contact off the suppression list: its delivery_status becomes Active, and later messages are sent to it again.';

--
-- The views.  lead_delivery_status judges each lead by its latest notice
-- to the dealer that holds it now.
--
CREATE VIEW aimroute.lead_delivery_status AS
SELECT l.lead_id,
       l.dealer_number,
       (n.notification_id IS NOT NULL AND o.attempted > 0) AS sent_to_dealer,
       l.viewed_at IS NOT NULL AS viewed,
       CASE WHEN o.email_attempted = 0 THEN NULL
            WHEN o.email_delivered = o.email_total THEN 'Delivered'
            WHEN o.email_delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS email_status,
       CASE WHEN o.mobile_attempted = 0 THEN NULL
            WHEN o.mobile_delivered = o.mobile_total THEN 'Delivered'
            WHEN o.mobile_delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS mobile_status,
       CASE WHEN o.crm_attempted = 0 THEN NULL
            WHEN o.crm_delivered = o.crm_total THEN 'Delivered'
            WHEN o.crm_delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS crm_status,
       coalesce(n.no_contacts, false) AS no_contacts_configured,
       coalesce(o.pending, 0) > 0 AS delivery_pending,
       l.send_to_dealer,
       n.notification_id,
       n.queued_at AS sent_at,
       o.last_attempt_at,
       l.received_at,
       (l.received_at AT TIME ZONE s.timezone)::date AS received_day,
       l.source,
       l.brand_code,
       l.match_type,
       d.name AS dealer_name,
       d.region
  FROM aimroute.leads l
  CROSS JOIN aimroute.settings s
  JOIN aimroute.dealers d ON d.dealer_number = l.dealer_number
  LEFT JOIN LATERAL (
        SELECT x.* FROM aimroute.lead_notifications x
         WHERE x.lead_id = l.lead_id AND x.dealer_number = l.dealer_number
         ORDER BY x.notification_id DESC LIMIT 1) n ON true
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE x.outcome IS NOT NULL OR x.status = 'sending') AS attempted,
               count(*) FILTER (WHERE x.status IN ('queued', 'sending')) AS pending,
               count(*) FILTER (WHERE x.method = 'email') AS email_total,
               count(*) FILTER (WHERE x.method = 'email' AND x.status = 'delivered') AS email_delivered,
               count(*) FILTER (WHERE x.method = 'email' AND (x.outcome IS NOT NULL OR x.status = 'sending')) AS email_attempted,
               count(*) FILTER (WHERE x.method = 'mobile') AS mobile_total,
               count(*) FILTER (WHERE x.method = 'mobile' AND x.status = 'delivered') AS mobile_delivered,
               count(*) FILTER (WHERE x.method = 'mobile' AND (x.outcome IS NOT NULL OR x.status = 'sending')) AS mobile_attempted,
               count(*) FILTER (WHERE x.method = 'crm') AS crm_total,
               count(*) FILTER (WHERE x.method = 'crm' AND x.status = 'delivered') AS crm_delivered,
               count(*) FILTER (WHERE x.method = 'crm' AND (x.outcome IS NOT NULL OR x.status = 'sending')) AS crm_attempted,
               max(x.last_attempt_at) AS last_attempt_at
          FROM aimroute.outbox x
         WHERE x.notification_id = n.notification_id AND x.purpose = 'lead' AND x.status <> 'cancelled') o ON true;
COMMENT ON VIEW aimroute.lead_delivery_status IS
    'Whether each lead reached the dealer that holds it, by method, judged by the latest notice to that dealer (its first routing, a move, or send_lead). A status is NULL while no attempt was made by that method.';
COMMENT ON COLUMN aimroute.lead_delivery_status.lead_id IS 'The lead.';
COMMENT ON COLUMN aimroute.lead_delivery_status.dealer_number IS 'The dealer holding the lead now.';
COMMENT ON COLUMN aimroute.lead_delivery_status.sent_to_dealer IS 'An attempt was made to send the lead to this dealer (by any method).';
COMMENT ON COLUMN aimroute.lead_delivery_status.viewed IS 'The dealer viewed the lead (aimroute.mark_viewed or the view link).';
COMMENT ON COLUMN aimroute.lead_delivery_status.email_status IS 'Email to the dealer''s Leads To and CC contacts: Delivered (all of them), Partial Delivery (some), Failure (none), NULL (no attempt).';
COMMENT ON COLUMN aimroute.lead_delivery_status.mobile_status IS 'Mobile push to the contacts with a mobile number: Delivered, Partial Delivery, Failure, or NULL (no attempt).';
COMMENT ON COLUMN aimroute.lead_delivery_status.crm_status IS 'ADF to the dealer''s active CRM integrations: Delivered, Partial Delivery, Failure, or NULL (no attempt).';
COMMENT ON COLUMN aimroute.lead_delivery_status.no_contacts_configured IS 'When the lead was sent, the dealer had no ''Leads: Emails To'' contact with an email and no active CRM integration, so nothing was sent.';
COMMENT ON COLUMN aimroute.lead_delivery_status.delivery_pending IS 'Some message still waits for its first attempt or a retry: the statuses can still change.';
COMMENT ON COLUMN aimroute.lead_delivery_status.send_to_dealer IS 'The lead is to be sent to its dealer (false: kept from the dealer on purpose).';
COMMENT ON COLUMN aimroute.lead_delivery_status.notification_id IS 'The notice the statuses are about (aimroute.lead_notifications).';
COMMENT ON COLUMN aimroute.lead_delivery_status.sent_at IS 'When that notice was queued.';
COMMENT ON COLUMN aimroute.lead_delivery_status.last_attempt_at IS 'The latest attempt to send any of its messages.';
COMMENT ON COLUMN aimroute.lead_delivery_status.received_at IS 'When the lead was received.';
COMMENT ON COLUMN aimroute.lead_delivery_status.received_day IS 'The day the lead was received, in the OEM''s time zone (settings.timezone).';
COMMENT ON COLUMN aimroute.lead_delivery_status.source IS 'Where the lead came from (api, import, manual, ...).';
COMMENT ON COLUMN aimroute.lead_delivery_status.brand_code IS 'The lead''s brand.';
COMMENT ON COLUMN aimroute.lead_delivery_status.match_type IS 'How the dealer was chosen.';
COMMENT ON COLUMN aimroute.lead_delivery_status.dealer_name IS 'The dealer''s name.';
COMMENT ON COLUMN aimroute.lead_delivery_status.region IS 'The dealer''s region (aimroute.dealers.region).';

CREATE VIEW aimroute.unsent_leads AS
SELECT st.lead_id,
       st.dealer_number,
       CASE WHEN NOT st.send_to_dealer THEN 'send_to_dealer false'
            WHEN st.notification_id IS NULL THEN 'Not queued'
            WHEN st.no_contacts_configured THEN 'No contacts configured'
            WHEN NOT st.delivery_pending THEN 'All contacts undeliverable'
            WHEN st.sent_to_dealer THEN 'Retrying'
            ELSE 'Waiting for the delivery worker' END AS reason,
       st.received_at,
       st.received_day,
       st.sent_at,
       st.last_attempt_at,
       st.source,
       st.brand_code,
       st.dealer_name,
       st.region
  FROM aimroute.lead_delivery_status st
 WHERE NOT st.viewed
   AND NOT EXISTS (SELECT FROM aimroute.lead_notifications n JOIN aimroute.outbox o USING (notification_id)
                    WHERE n.lead_id = st.lead_id AND n.dealer_number = st.dealer_number
                      AND o.purpose = 'lead' AND o.status = 'delivered');
COMMENT ON VIEW aimroute.unsent_leads IS
    'Leads not viewed and never delivered to the dealer holding them (by any method), with the reason.';
COMMENT ON COLUMN aimroute.unsent_leads.lead_id IS 'The lead.';
COMMENT ON COLUMN aimroute.unsent_leads.dealer_number IS 'The dealer holding the lead.';
COMMENT ON COLUMN aimroute.unsent_leads.reason IS
    'send_to_dealer false; No contacts configured (no Leads To contact, no active CRM); All contacts undeliverable (every message bounced, was suppressed or ran out of retries); Retrying (attempts failed, more are scheduled); Waiting for the delivery worker (no attempt yet); Not queued (a lead restored or routed before delivery was set up: aimroute.send_lead sends it).';
COMMENT ON COLUMN aimroute.unsent_leads.received_at IS 'When the lead was received.';
COMMENT ON COLUMN aimroute.unsent_leads.received_day IS 'The day the lead was received, in the OEM''s time zone.';
COMMENT ON COLUMN aimroute.unsent_leads.sent_at IS 'When its latest notice to this dealer was queued.';
COMMENT ON COLUMN aimroute.unsent_leads.last_attempt_at IS 'The latest attempt to send it.';
COMMENT ON COLUMN aimroute.unsent_leads.source IS 'Where the lead came from.';
COMMENT ON COLUMN aimroute.unsent_leads.brand_code IS 'The lead''s brand.';
COMMENT ON COLUMN aimroute.unsent_leads.dealer_name IS 'The dealer''s name.';
COMMENT ON COLUMN aimroute.unsent_leads.region IS 'The dealer''s region.';

CREATE VIEW aimroute.delivery_attempts AS
SELECT a.attempt_id,
       a.attempted_at,
       (a.attempted_at AT TIME ZONE s.timezone)::date AS day,
       o.lead_id,
       o.dealer_number,
       o.purpose,
       o.method,
       o.role,
       o.recipient,
       o.contact_id,
       o.integration_id,
       a.attempt,
       a.outcome,
       a.response_code,
       a.response,
       o.message_id,
       o.notification_id,
       o.message_key,
       o.status AS message_status
  FROM aimroute.delivery_attempt_log a
  JOIN aimroute.outbox o USING (message_id)
  CROSS JOIN aimroute.settings s;
COMMENT ON VIEW aimroute.delivery_attempts IS
    'Every attempt to send a message, per recipient and method, with its outcome and the server''s response: the subscribers grid.';
COMMENT ON COLUMN aimroute.delivery_attempts.attempt_id IS 'The attempt.';
COMMENT ON COLUMN aimroute.delivery_attempts.attempted_at IS 'When the outcome was recorded.';
COMMENT ON COLUMN aimroute.delivery_attempts.day IS 'The day of the attempt, in the OEM''s time zone (settings.timezone).';
COMMENT ON COLUMN aimroute.delivery_attempts.lead_id IS 'The lead (NULL for a daily recap).';
COMMENT ON COLUMN aimroute.delivery_attempts.dealer_number IS 'The dealer the lead was sent to.';
COMMENT ON COLUMN aimroute.delivery_attempts.purpose IS 'lead, failure notice or daily recap.';
COMMENT ON COLUMN aimroute.delivery_attempts.method IS 'email, mobile or crm.';
COMMENT ON COLUMN aimroute.delivery_attempts.role IS 'To, CC, Push, adf_email, adf_http, Notice or Recap.';
COMMENT ON COLUMN aimroute.delivery_attempts.recipient IS 'The email address, mobile number or URL.';
COMMENT ON COLUMN aimroute.delivery_attempts.contact_id IS 'The dealer contact, if the recipient is one.';
COMMENT ON COLUMN aimroute.delivery_attempts.integration_id IS 'The CRM integration, for crm messages.';
COMMENT ON COLUMN aimroute.delivery_attempts.attempt IS 'Which attempt of the message (1 = the first).';
COMMENT ON COLUMN aimroute.delivery_attempts.outcome IS
    'Delivered; Hard Bounce (550: recipient not found); Soft Bounce (452/552: inbox full); Will retry (connection, DNS, HTTP or temporary SMTP error); Failed (out of retries, a permanent SMTP error, no push gateway); Suppressed (contact on the suppression list, not sent); Interrupted (the worker stopped before recording; sent again with the same key); Cancelled (the lead left the dealer first).';
COMMENT ON COLUMN aimroute.delivery_attempts.response_code IS 'The SMTP or HTTP reply code; NULL when no server answered.';
COMMENT ON COLUMN aimroute.delivery_attempts.response IS 'The server''s reply, or the connection error.';
COMMENT ON COLUMN aimroute.delivery_attempts.message_id IS 'The message (aimroute.outbox).';
COMMENT ON COLUMN aimroute.delivery_attempts.notification_id IS 'The notice it belongs to (aimroute.lead_notifications).';
COMMENT ON COLUMN aimroute.delivery_attempts.message_key IS 'The Message-ID or Idempotency-Key it carried.';
COMMENT ON COLUMN aimroute.delivery_attempts.message_status IS 'Where the message stands now: queued, sending, delivered, failed or cancelled.';

CREATE VIEW aimroute.delivery_issues AS
SELECT (n.queued_at AT TIME ZONE s.timezone)::date AS day,
       n.lead_id,
       n.dealer_number,
       d.name AS dealer_name,
       d.region,
       l.brand_code,
       l.source,
       CASE WHEN o.delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS failure,
       CASE WHEN o.email_total = 0 THEN NULL WHEN o.email_delivered = o.email_total THEN 'Delivered'
            WHEN o.email_delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS email_status,
       CASE WHEN o.mobile_total = 0 THEN NULL WHEN o.mobile_delivered = o.mobile_total THEN 'Delivered'
            WHEN o.mobile_delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS mobile_status,
       CASE WHEN o.crm_total = 0 THEN NULL WHEN o.crm_delivered = o.crm_total THEN 'Delivered'
            WHEN o.crm_delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS crm_status,
       o.total AS messages,
       o.total - o.delivered AS failed_messages,
       o.failed_recipients,
       n.event,
       n.queued_at AS sent_at,
       n.notification_id,
       l.dealer_number = n.dealer_number AS dealer_holds_lead,
       n.failure_notice_at AS failed_at
  FROM aimroute.lead_notifications n
  CROSS JOIN aimroute.settings s
  JOIN aimroute.leads l ON l.lead_id = n.lead_id
  JOIN aimroute.dealers d ON d.dealer_number = n.dealer_number
  JOIN LATERAL (
        SELECT count(*) AS total,
               count(*) FILTER (WHERE x.status = 'delivered') AS delivered,
               count(*) FILTER (WHERE x.status IN ('queued', 'sending')) AS pending,
               count(*) FILTER (WHERE x.method = 'email') AS email_total,
               count(*) FILTER (WHERE x.method = 'email' AND x.status = 'delivered') AS email_delivered,
               count(*) FILTER (WHERE x.method = 'mobile') AS mobile_total,
               count(*) FILTER (WHERE x.method = 'mobile' AND x.status = 'delivered') AS mobile_delivered,
               count(*) FILTER (WHERE x.method = 'crm') AS crm_total,
               count(*) FILTER (WHERE x.method = 'crm' AND x.status = 'delivered') AS crm_delivered,
               string_agg(format('%s (%s)', x.recipient, x.outcome), ', ' ORDER BY x.message_id)
                   FILTER (WHERE x.status = 'failed') AS failed_recipients
          FROM aimroute.outbox x
         WHERE x.notification_id = n.notification_id AND x.purpose = 'lead' AND x.status <> 'cancelled') o ON true
 WHERE o.total > 0 AND o.pending = 0 AND o.delivered < o.total;
COMMENT ON VIEW aimroute.delivery_issues IS
    'Leads whose delivery to a dealer ended in total or partial failure, one row per notice (a lead sent twice can fail twice), by the day it was sent. Only notices whose messages are all settled; unsent_leads shows those still retrying.';
COMMENT ON COLUMN aimroute.delivery_issues.day IS 'The day the lead was sent, in the OEM''s time zone (settings.timezone).';
COMMENT ON COLUMN aimroute.delivery_issues.lead_id IS 'The lead.';
COMMENT ON COLUMN aimroute.delivery_issues.dealer_number IS 'The dealer it was sent to.';
COMMENT ON COLUMN aimroute.delivery_issues.dealer_name IS 'The dealer''s name.';
COMMENT ON COLUMN aimroute.delivery_issues.region IS 'The dealer''s region.';
COMMENT ON COLUMN aimroute.delivery_issues.brand_code IS 'The lead''s brand.';
COMMENT ON COLUMN aimroute.delivery_issues.source IS 'Where the lead came from.';
COMMENT ON COLUMN aimroute.delivery_issues.failure IS 'Failure (no message delivered) or Partial Delivery (some).';
COMMENT ON COLUMN aimroute.delivery_issues.email_status IS 'Email: Delivered, Partial Delivery, Failure, or NULL (none sent).';
COMMENT ON COLUMN aimroute.delivery_issues.mobile_status IS 'Mobile push: Delivered, Partial Delivery, Failure, or NULL (none sent).';
COMMENT ON COLUMN aimroute.delivery_issues.crm_status IS 'CRM (ADF): Delivered, Partial Delivery, Failure, or NULL (none sent).';
COMMENT ON COLUMN aimroute.delivery_issues.messages IS 'Messages of the notice.';
COMMENT ON COLUMN aimroute.delivery_issues.failed_messages IS 'Messages not delivered.';
COMMENT ON COLUMN aimroute.delivery_issues.failed_recipients IS 'Each recipient not reached, with its outcome.';
COMMENT ON COLUMN aimroute.delivery_issues.event IS 'Why the lead was sent: Routed, Re-Route, Reassigned, Dealer left or Resent.';
COMMENT ON COLUMN aimroute.delivery_issues.sent_at IS 'When the notice was queued.';
COMMENT ON COLUMN aimroute.delivery_issues.notification_id IS 'The notice (aimroute.lead_notifications).';
COMMENT ON COLUMN aimroute.delivery_issues.failed_at IS 'When the last of its messages settled and the failure was known (failure notices were queued then); the daily recap goes by this day.';
COMMENT ON COLUMN aimroute.delivery_issues.dealer_holds_lead IS 'The dealer still holds the lead (false once it was moved on).';

CREATE FUNCTION aimroute.delivery_worker_running() RETURNS boolean
    AS 'MODULE_PATHNAME', 'aimroute_delivery_worker_running'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION aimroute.delivery_worker_running() IS
    'Whether the delivery worker runs for this database (aimroute is in shared_preload_libraries and aimroute.database names it); see pg_stat_activity for the worker itself.';

-- One word at CREATE EXTENSION when neither worker will run here.
DO $$
BEGIN
    IF NOT aimroute.delivery_worker_running() THEN
        RAISE NOTICE 'the aimroute background workers are not running on this server: leads are routed, but not re-routed, and their notices are queued in aimroute.outbox but not sent'
            USING HINT = 'Add aimroute to shared_preload_libraries, set aimroute.database to this database, and restart PostgreSQL.';
    END IF;
END
$$;

-- source: schema/080_security.sql
--
-- Security (SPEC section 5): three roles, and row-level security from a
-- mapping table, so that a dealer user sees and acts on only its dealer's
-- leads, contacts and delivery rows, and a region user only its region's.
--
-- The model (docs/security.md):
--   aimroute_admin   configures everything and sees every row; the OEM's
--                    operations staff and the application that inserts
--                    leads.
--   aimroute_region  sees the leads, contacts and deliveries of the dealers
--                    of its regions; can reassign a lead within them.
--   aimroute_dealer  sees its dealers' leads, contacts and deliveries; can
--                    mark a lead viewed, send it again, and keep its
--                    contacts.
-- Which dealers or regions a user has is a row of aimroute.user_scopes per
-- login (or group) role.  The functions users call run with the caller's
-- rights (SECURITY INVOKER), so row-level security decides what each call
-- can see and change; the few SECURITY DEFINER functions take nothing a
-- caller could point at another dealer's rows, and pin their search_path.
-- The table owner (the role that created the extension) and the
-- background workers are not subject to row-level security.
--

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['aimroute_admin', 'aimroute_region', 'aimroute_dealer'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;
COMMENT ON ROLE aimroute_admin IS 'aimroute: configures everything and sees every lead.';
COMMENT ON ROLE aimroute_region IS 'aimroute: sees and acts on the leads of the dealers of its regions (aimroute.user_scopes).';
COMMENT ON ROLE aimroute_dealer IS 'aimroute: sees and acts on the leads of its dealers (aimroute.user_scopes).';

--
-- user_scopes: which dealers or regions a role may see.
--
CREATE TABLE aimroute.user_scopes (
    scope_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    role_name      name NOT NULL,
    dealer_number  text REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    region         text,
    CONSTRAINT user_scopes_one_scope CHECK ((dealer_number IS NULL) <> (region IS NULL))
);
CREATE UNIQUE INDEX user_scopes_unique_idx ON aimroute.user_scopes (role_name, dealer_number, region) NULLS NOT DISTINCT;
COMMENT ON TABLE aimroute.user_scopes IS
    'What each region or dealer user may see: one row per role and dealer (dealer users) or per role and region (region users, by aimroute.dealers.region). A role also has the scopes of the roles it is a member of.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.user_scopes', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.user_scopes', 'scope_id')::regclass, '');

CREATE FUNCTION aimroute.user_scopes_validate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = NEW.role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', NEW.role_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'CREATE ROLE it first, and GRANT it aimroute_dealer or aimroute_region.';
    END IF;
    IF (NEW.dealer_number IS NULL) = (NEW.region IS NULL) THEN
        RAISE EXCEPTION 'a user scope names a dealer or a region, not both and not neither'
            USING ERRCODE = 'check_violation',
                  HINT = 'Insert one row per dealer (dealer_number) or per region (region).';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER user_scopes_validate BEFORE INSERT OR UPDATE ON aimroute.user_scopes
    FOR EACH ROW EXECUTE FUNCTION aimroute.user_scopes_validate();

--
-- visible_dealers: the dealers the current role may see, by its scopes
-- and those of the roles it belongs to.  Policies call it once per query
-- (as an initplan, "(SELECT aimroute.visible_dealers())"), not per row.
--
CREATE FUNCTION aimroute.visible_dealers() RETURNS text[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(DISTINCT d.dealer_number), '{}')
      FROM aimroute.user_scopes u
      JOIN aimroute.dealers d ON d.dealer_number = u.dealer_number OR d.region = u.region
     WHERE u.role_name IN (SELECT r.rolname FROM pg_catalog.pg_roles r
                            WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))
$$;
COMMENT ON FUNCTION aimroute.visible_dealers() IS
    'The dealer numbers the current role may see through aimroute.user_scopes (its own scopes and those of the roles it is a member of).';

--
-- Row-level security.  Admins see and change every row; region and dealer
-- users see the rows of their dealers.  What else they may change is
-- granted below, column by column, and is limited to the same rows.
--
ALTER TABLE aimroute.user_scopes ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.user_scopes TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY own_scopes ON aimroute.user_scopes FOR SELECT TO aimroute_region, aimroute_dealer
    USING (role_name IN (SELECT r.rolname FROM pg_catalog.pg_roles r
                          WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER')));

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['leads', 'lead_notifications', 'dealer_contacts', 'crm_integrations'] LOOP
        EXECUTE format('ALTER TABLE aimroute.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY admin_all ON aimroute.%I TO aimroute_admin USING (true) WITH CHECK (true)', t);
        EXECUTE format('CREATE POLICY scoped_read ON aimroute.%I FOR SELECT TO aimroute_region, aimroute_dealer'
                       ' USING (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]))', t);
    END LOOP;
END
$$;
-- lead_history names two dealers: either side's users see the move.
ALTER TABLE aimroute.lead_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.lead_history TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.lead_history FOR SELECT TO aimroute_region, aimroute_dealer
    USING (to_dealer = ANY ((SELECT aimroute.visible_dealers())::text[])
           OR from_dealer = ANY ((SELECT aimroute.visible_dealers())::text[]));
-- Marking viewed, reassigning within the scope (the new dealer too).
CREATE POLICY scoped_update ON aimroute.leads FOR UPDATE TO aimroute_region, aimroute_dealer
    USING (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]))
    WITH CHECK (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));
-- A dealer keeps its own contacts.
CREATE POLICY scoped_write ON aimroute.dealer_contacts FOR ALL TO aimroute_region, aimroute_dealer
    USING (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]))
    WITH CHECK (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));

-- The outbox and its attempts: a user sees the lead messages of its dealers.
ALTER TABLE aimroute.outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.outbox TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.outbox FOR SELECT TO aimroute_region, aimroute_dealer
    USING (purpose = 'lead' AND dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));
ALTER TABLE aimroute.delivery_attempt_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.delivery_attempt_log TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.delivery_attempt_log FOR SELECT TO aimroute_region, aimroute_dealer
    USING (EXISTS (SELECT FROM aimroute.outbox o WHERE o.message_id = delivery_attempt_log.message_id));

-- The views read as the caller, so that the policies above apply to them.
ALTER VIEW aimroute.lead_delivery_status SET (security_invoker = true);
ALTER VIEW aimroute.unsent_leads SET (security_invoker = true);
ALTER VIEW aimroute.delivery_attempts SET (security_invoker = true);
ALTER VIEW aimroute.delivery_issues SET (security_invoker = true);

--
-- Privileges.  Nothing of aimroute is PUBLIC's but the schema's functions
-- that only compute (normalization, the locator); tables and the
-- functions that change data are granted to the three roles.
--
GRANT USAGE ON SCHEMA aimroute TO aimroute_admin, aimroute_region, aimroute_dealer;
DO $$
DECLARE
    t regclass;
BEGIN
    -- Only aimroute's own tables and sequences: PostGIS may share the schema.
    FOR t IN SELECT d.objid::regclass FROM pg_catalog.pg_depend d
              WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass
                AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'aimroute')
                AND d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'e'
    LOOP
        EXECUTE format('GRANT ALL ON %s TO aimroute_admin', t);
    END LOOP;
END
$$;

GRANT SELECT ON aimroute.postal_codes, aimroute.brands, aimroute.dealers, aimroute.dealer_brands,
                aimroute.territories, aimroute.product_assignments, aimroute.inventory,
                aimroute.config_version
    TO aimroute_region, aimroute_dealer;
-- Settings without the SMTP credentials, which only admins read.
GRANT SELECT (singleton, radius_enabled, radius_miles, radius_countries, default_dealer_number,
              product_routing_enabled, inventory_routing_enabled, reroute_enabled, reroute_max_dealers,
              reroute_after, reroute_skip_days, timezone, dedupe_window, smtp_url, smtp_from,
              push_gateway_url, delivery_retry_schedule, daily_recap_hour, oem_name, view_link_url)
    ON aimroute.settings TO aimroute_region, aimroute_dealer;
GRANT SELECT ON aimroute.leads, aimroute.lead_history, aimroute.outbox, aimroute.delivery_attempt_log,
                aimroute.dealer_contacts, aimroute.crm_integrations, aimroute.user_scopes,
                aimroute.lead_delivery_status, aimroute.unsent_leads, aimroute.delivery_attempts,
                aimroute.delivery_issues
    TO aimroute_region, aimroute_dealer;
-- A notice's view token is the dealer's: region users get the rest.
GRANT SELECT ON aimroute.lead_notifications TO aimroute_dealer;
GRANT SELECT (notification_id, lead_id, dealer_number, event, queued_at, no_contacts, messages, failure_notice_at)
    ON aimroute.lead_notifications TO aimroute_region;
-- mark_viewed (both), reassign (regions).
GRANT UPDATE (viewed_at, viewed_by, reroute_due_at) ON aimroute.leads TO aimroute_region, aimroute_dealer;
GRANT UPDATE (dealer_number, match_type, distance_miles, routed_at, routing_log) ON aimroute.leads TO aimroute_region;
GRANT INSERT (dealer_number, name, email, mobile, contact_types),
      UPDATE (name, email, mobile, contact_types, delivery_status), DELETE
    ON aimroute.dealer_contacts TO aimroute_region, aimroute_dealer;

-- Functions that change data or read everything are not PUBLIC's.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'aimroute'::regnamespace
                AND p.proname IN ('load_postal_codes', 'reassign_dealer_leads', 'process_staging',
                                  'reroute_overdue', 'reroute_lead', 'record_bounce', 'queue_daily_recap',
                                  'delivery_claim', 'delivery_record', 'delivery_fail', 'delivery_settle',
                                  'delivery_render', 'wake_delivery_worker', 'queue_lead_delivery',
                                  'simulate_routing', 'routing_cache_info', 'reassign', 'move_lead',
                                  'mark_viewed', 'send_lead', 'set_delivery_status_active', 'open_view_link',
                                  'explain_lead')
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO aimroute_admin', f);
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION aimroute.mark_viewed(bigint, text), aimroute.send_lead(bigint),
                          aimroute.set_delivery_status_active(bigint), aimroute.explain_lead(bigint),
                          aimroute.open_view_link(text), aimroute.queue_lead_delivery(bigint, text, text)
    TO aimroute_region, aimroute_dealer;
GRANT EXECUTE ON FUNCTION aimroute.reassign(bigint, text, text), aimroute.move_lead(bigint, text, aimroute.match_type, double precision, text, text, aimroute.routing_step[])
    TO aimroute_region;

--
-- The SECURITY DEFINER functions.  Each takes only what cannot reach
-- another dealer's rows, and pins its search_path.
--
-- open_view_link: the token is the capability (240 random bits), as a
-- password-reset link is; the web page behind the link calls it with
-- whatever role it has.
ALTER FUNCTION aimroute.open_view_link(text) SECURITY DEFINER;
-- The move trigger writes lead_history and queues the new dealer's notice
-- for whoever moved the lead within its rights.
ALTER FUNCTION aimroute.leads_record_history() SECURITY DEFINER;
-- Not SECURITY DEFINER, though it writes what dealer users may not:
-- aimroute.queue_lead_delivery (C) reads the lead with the caller's rights,
-- so it queues only a lead the caller can see, and only to the dealer
-- holding it, then queues as the extension's owner (src/owner.c).  Its
-- search_path is pinned, as a SECURITY DEFINER function's is: the
-- statement it runs as the owner must not find a caller's operators.
ALTER FUNCTION aimroute.queue_lead_delivery(bigint, text, text) SET search_path = pg_catalog, pg_temp;

-- source: schema/090_owner.sql
--
-- Ownership.  Every table, view, sequence and SQL function of aimroute
-- belongs to the role that ran CREATE EXTENSION, the extension's owner;
-- the C functions and types stay the bootstrap superuser's.
--
-- aimroute is a trusted extension (aimroute.control): once a superuser has
-- created PostGIS, any role with CREATE on the database may create it, and
-- this script then runs as the bootstrap superuser.  Left as they are, its
-- tables would be a superuser's, and the SECURITY DEFINER functions would
-- run as one.  Owned by the role that installed aimroute, they give that
-- role what it needs to run the whole product (it is exempt from row-level
-- security on its tables, and may pg_dump them) and nothing beyond: the
-- SECURITY DEFINER functions, and the background workers (src/owner.c),
-- act as that role too.  C functions stay the superuser's, so that nobody
-- else may change how they are declared (a C function declared
-- differently, e.g. not STRICT, could crash the server); their owner is
-- given EXECUTE on those not executable by PUBLIC.
--
DO $owner$
DECLARE
    ext oid;
    owner_name name;
    obj record;
BEGIN
    SELECT e.oid, pg_catalog.pg_get_userbyid(e.extowner) INTO ext, owner_name
      FROM pg_catalog.pg_extension e WHERE e.extname = 'aimroute';
    -- CREATE EXTENSION made the schema for its caller, unless it existed.
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA aimroute TO %I', owner_name);

    FOR obj IN
        SELECT c.oid::regclass AS name, c.relkind
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_class c ON c.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_class'::regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext
           AND d.deptype = 'e'
           -- An identity or serial sequence goes with its table.
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend s
                            WHERE s.classid = 'pg_catalog.pg_class'::regclass AND s.objid = c.oid
                              AND s.refclassid = 'pg_catalog.pg_class'::regclass
                              AND s.deptype IN ('a', 'i'))
           AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
    LOOP
        EXECUTE pg_catalog.format('ALTER %s %s OWNER TO %I',
            CASE obj.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                             WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
            obj.name, owner_name);
    END LOOP;

    FOR obj IN
        SELECT p.oid::regprocedure AS name, l.lanname, p.prokind, p.proacl
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_proc p ON p.oid = d.objid
          JOIN pg_catalog.pg_language l ON l.oid = p.prolang
         WHERE d.classid = 'pg_catalog.pg_proc'::regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext
           AND d.deptype = 'e'
    LOOP
        IF obj.lanname <> 'c' THEN
            EXECUTE pg_catalog.format('ALTER ROUTINE %s OWNER TO %I', obj.name, owner_name);
        ELSIF obj.proacl IS NOT NULL
              AND NOT EXISTS (SELECT FROM pg_catalog.aclexplode(obj.proacl) a
                               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', obj.name, owner_name);
        END IF;
    END LOOP;
END
$owner$;
