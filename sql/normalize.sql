--
-- normalize: countries and postal codes as aimroute stores them.
--
CREATE EXTENSION aimroute CASCADE;
SELECT aimroute.library_version() = extversion AS library_matches_extension
  FROM pg_extension WHERE extname = 'aimroute';

-- pg_regress runs in one PostGIS placement: by CASCADE, which puts PostGIS
-- in schema aimroute (pgTAP and Perl TAP cover the others: t/lib/Placement.pm).
SELECT extnamespace::regnamespace AS postgis_schema FROM pg_extension WHERE extname = 'postgis';

-- Countries: alpha-2, alpha-3, English names; any case; trimmed.
SELECT input, aimroute.normalize_country(input) AS alpha2
  FROM unnest(ARRAY['US', 'us', ' usa ', 'USA', 'CAN', 'ca', 'Canada',
                    'united states', 'United States of America', 'GBR',
                    'mex', 'Côte d''Ivoire', 'CÔTE D''IVOIRE',
                    'XX', 'XXX', 'U', '', '   ', 'U S A', 'America',
                    E'US\t', 'Unitedstates']) AS input;
SELECT aimroute.normalize_country(NULL) IS NULL AS null_in_null_out;
SELECT aimroute.normalize_country(repeat('A', 100000)) IS NULL AS huge_is_unknown;

-- Every alpha-3 code maps to an alpha-2 code that maps to itself.
SELECT count(*) AS alpha3_codes_checked
  FROM (SELECT a3 FROM unnest(ARRAY['ABW','AFG','DEU','FRA','JPN','NZL','ZWE','PRI','VIR','GUM']) a3) s
 WHERE aimroute.normalize_country(aimroute.normalize_country(a3)) = aimroute.normalize_country(a3);

-- Postal codes, lexical rules (no reference rows yet).
SELECT country, input, aimroute.normalize_postal_code(country, input) AS normalized,
       aimroute.postal_code_is_valid(country, input) AS valid
  FROM (VALUES
        ('US', '49757'),
        ('US', '49757-1234'),      -- ZIP+4
        ('US', '49757 1234'),
        ('US', '497571234'),
        ('US', ' 00501 '),         -- leading zeros kept
        ('US', '02134-0001'),
        ('usa', '2134'),           -- lost leading zero: kept as typed, invalid
        ('US', '1234X'),
        ('US', '49757-12'),
        ('US', '49757-'),
        ('US', '123456'),
        ('US', 'abcde'),
        ('CA', 'k1a 0b1'),         -- lower case with a space
        ('CA', 'K1A-0B1'),
        ('can', ' p0s '),
        ('CA', 'P0S 1A0'),
        ('CA', '1A1'),
        ('CA', 'K1A0B'),
        ('GB', ' sw1a 1aa '),      -- elsewhere: exact after trim and upper-case
        ('DE', '10115'),
        ('XX', ' ab-12 '),         -- unknown country: trim and upper-case only
        ('US', '   '),             -- white space: no postal code
        ('US', E'\t49757\n'),
        ('US', '')
       ) AS t(country, input);
SELECT aimroute.normalize_postal_code(NULL, ' ab1 ') AS unknown_country,
       aimroute.normalize_postal_code('US', NULL) IS NULL AS null_code;

-- The Canadian FSA fallback needs the reference table.
INSERT INTO aimroute.postal_codes (country, postal_code, place_name, state_code)
VALUES ('CA', 'K1A', 'Ottawa', 'ON'), ('CA', 'K1A0B1', 'Ottawa Parliament', 'ON'),
       ('CA', 'P0S', 'Batchawana Bay', 'ON');
SELECT input, aimroute.normalize_postal_code('CA', input) AS normalized
  FROM unnest(ARRAY['k1a 0b1', 'K1A 0B2', 'p0s 1a0', 'P0S', 'K1A0B1', 'X9X 9X9', 'K1A0B']) AS input;
