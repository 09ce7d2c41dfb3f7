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
