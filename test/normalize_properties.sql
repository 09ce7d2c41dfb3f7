-- test/normalize_properties.sql: properties of postal-code and country
-- normalization over every stored code and over generated junk.
BEGIN;
SELECT plan(9);
SET LOCAL search_path = aimroute, public;

-- Every way of writing a stored US ZIP normalizes to it.
SELECT is((SELECT count(*) FROM postal_codes p,
                  LATERAL unnest(ARRAY[p.postal_code || '-1234', ' ' || p.postal_code || ' ',
                                       p.postal_code || '1234', p.postal_code || ' 0001']) AS v
            WHERE p.country = 'US' AND normalize_postal_code('usa', v) <> p.postal_code),
          0::bigint, 'ZIP, ZIP+4 and padded forms of every US code meet the stored code');

-- A full Canadian code not in the table falls back to its stored FSA, in
-- any case and spacing.
SELECT is((SELECT count(*) FROM postal_codes p,
                  LATERAL unnest(ARRAY[lower(p.postal_code) || ' 1a1', p.postal_code || '-9Z9',
                                       ' ' || lower(p.postal_code) || '  ']) AS v
            WHERE p.country = 'CA' AND normalize_postal_code('Canada', v) <> p.postal_code),
          0::bigint, 'every Canadian full code meets its FSA');

-- Normalization is idempotent, for any input.
CREATE TEMP TABLE junk AS
SELECT c.country, j.s
  FROM unnest(ARRAY['US', 'CA', 'GB', 'XX', NULL]) AS c(country),
       LATERAL (SELECT CASE g % 6
                         WHEN 0 THEN substr(md5(g::text), 1, g % 12)
                         WHEN 1 THEN upper(substr(md5(g::text), 1, 5)) || '-' || g
                         WHEN 2 THEN ' ' || lpad((g * 7919 % 100000)::text, 5, '0') || ' '
                         WHEN 3 THEN chr(65 + g % 26) || (g % 10) || chr(65 + g % 7) || ' ' || (g % 10) || 'A' || (g % 10)
                         WHEN 4 THEN repeat(' ', g % 3) || E'\t'
                         ELSE 'ÄÖÜ' || g END
                  FROM generate_series(1, 2000) AS g) AS j(s);
SELECT is((SELECT count(*) FROM junk
            WHERE normalize_postal_code(country, normalize_postal_code(country, s))
                  IS DISTINCT FROM normalize_postal_code(country, s)),
          0::bigint, 'normalize_postal_code(normalize_postal_code(x)) = normalize_postal_code(x)');
SELECT is((SELECT count(*) FROM junk WHERE normalize_postal_code(country, s) ~ '^\s|\s$'),
          0::bigint, 'a normalized code never starts or ends with white space');
SELECT is((SELECT count(*) FROM junk
            WHERE normalize_postal_code(country, s) <> upper(normalize_postal_code(country, s))
              AND normalize_postal_code(country, s) ~ '[a-z]'),
          0::bigint, 'a normalized code has no lower-case ASCII letter');
SELECT is((SELECT count(*) FROM junk
            WHERE postal_code_is_valid(coalesce(country, 'XX'), s)
              AND country = 'US' AND normalize_postal_code(country, s) !~ '^[0-9]{5}$'),
          0::bigint, 'a valid US code normalizes to five digits');

-- Countries: every stored form maps to itself; alpha-3 and names agree.
SELECT is((SELECT count(*) FROM unnest(ARRAY['US', 'CA', 'MX', 'GB', 'DE', 'FR', 'JP', 'PR', 'VI', 'GU']) c
            WHERE normalize_country(c) <> c OR normalize_country(lower(c)) <> c),
          0::bigint, 'alpha-2 codes map to themselves in any case');
SELECT is((SELECT count(*) FROM (VALUES ('USA', 'United States'), ('CAN', 'Canada'),
                                        ('MEX', 'Mexico'), ('DEU', 'Germany'), ('JPN', 'Japan')) v(a3, name)
            WHERE normalize_country(a3) IS DISTINCT FROM normalize_country(name)
               OR normalize_country(a3) IS NULL),
          0::bigint, 'alpha-3 codes and English names give the same alpha-2 code');
SELECT is((SELECT count(*) FROM junk WHERE normalize_country(s) IS NOT NULL AND length(s) > 3
              AND s !~* '^[a-z ]+$'),
          0::bigint, 'junk is not taken for a country');

SELECT * FROM finish();
ROLLBACK;
