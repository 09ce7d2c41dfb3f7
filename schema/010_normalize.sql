--
-- Rules for values that several tables share, each stated once: a
-- country and a postal code in stored form (C, src/country.c and
-- src/postal.c), and an email address.  The CHECKs and triggers of the
-- tables that hold one call these.
--

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

CREATE FUNCTION aimroute.email_is_valid(email text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN email ~ '^[^@[:space:]<>(),;:"\[\]]+@[^@[:space:]<>(),;:"\[\]]+\.[^@[:space:]<>(),;:"\[\].]+$';
-- timezone_is_valid: whether PostgreSQL knows a time zone name (as
-- pg_timezone_names lists it, or an abbreviation or POSIX offset it takes),
-- the one test for the OEM's and each dealer's time zone.
CREATE FUNCTION aimroute.timezone_is_valid(tz text) RETURNS boolean
    LANGUAGE plpgsql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM now() AT TIME ZONE tz;
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END
$$;
COMMENT ON FUNCTION aimroute.timezone_is_valid(text) IS
    'Whether PostgreSQL takes a text as a time zone (a pg_timezone_names name such as America/Chicago, an abbreviation or an offset); NULL for NULL.';

-- url_is_valid: the one rule for every URL aimroute is given (the SMTP
-- server, the push gateway, the view link, a CRM endpoint): one of the
-- schemes, ://, a host, and no white space anywhere.  Standard SQL, bound
-- when created: no caller's search_path reaches it.
CREATE FUNCTION aimroute.url_is_valid(url text, schemes text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN url ~ ('^(' || array_to_string(schemes, '|') || ')://[^/[:space:]]+[^[:space:]]*$');
COMMENT ON FUNCTION aimroute.url_is_valid(text, text[]) IS
    'Whether a text is a URL of one of the schemes (such as {http,https}): scheme://host, then anything but white space.';

COMMENT ON FUNCTION aimroute.email_is_valid(text) IS
    'Whether a text is usable as one email address (local@domain.tld, no spaces, brackets or separators).';
