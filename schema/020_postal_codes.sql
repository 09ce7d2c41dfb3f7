--
-- Postal codes: their centre points, states and counties, and the loads
-- that fill them (C, src/postal_loader.c).
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
SELECT pg_catalog.pg_extension_config_dump('aimroute.postal_codes', '');
CREATE TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aimroute.postal_codes
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.bump_config_version();
ALTER TABLE aimroute.postal_codes ENABLE ALWAYS TRIGGER bump_config_version;
GRANT SELECT ON aimroute.postal_codes TO aimroute_region, aimroute_dealer;

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
SELECT pg_catalog.pg_extension_config_dump('aimroute.postal_code_loads', '');
-- Identity sequences too, or a restored database would hand out used ids.
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.postal_code_loads', 'load_id')::regclass, '');

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
SELECT pg_catalog.pg_extension_config_dump('aimroute.postal_code_load_issues', '');

CREATE FUNCTION aimroute.load_postal_codes(path text, format text DEFAULT 'geonames') RETURNS bigint
    AS 'MODULE_PATHNAME', 'aimroute_load_postal_codes'
    LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION aimroute.load_postal_codes(text, text) IS
    'Loads a postal-code file on the server (plain or .gz) into aimroute.postal_codes; returns the rows loaded. Rows it cannot read are listed in aimroute.postal_code_load_issues.';
REVOKE EXECUTE ON FUNCTION aimroute.load_postal_codes(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.load_postal_codes(text, text) TO aimroute_admin;

CREATE FUNCTION aimroute.bundled_postal_codes_path() RETURNS text
    AS 'MODULE_PATHNAME', 'aimroute_bundled_postal_codes_path'
    LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.bundled_postal_codes_path() IS
    'Where the postal-code file shipped with aimroute (US ZIP codes, Canadian FSAs) is installed on the server.';
