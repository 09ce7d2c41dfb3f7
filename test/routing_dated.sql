-- test/routing_dated.sql: dated configuration (SPEC section 10, issue 20
-- part 3): territories and product assignments carry valid_from /
-- valid_to, and one dealer holds a postal code at any moment.
-- Everything is rolled back.
BEGIN;
SELECT plan(14);
SELECT set_config('search_path', 'aimroute, public, ' || e.extnamespace::regnamespace, true)
  FROM pg_extension e WHERE e.extname = 'postgis';
SET LOCAL client_min_messages = warning;
SET LOCAL TimeZone = 'UTC';

-- The error `sql` raises, as its SQLSTATE, message, detail and hint, one a
-- line; NULL when it raises none.
CREATE FUNCTION pg_temp.error_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state text; msg text; detail text; hint text;
BEGIN
    EXECUTE sql;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN concat_ws(E'\n', state, msg, detail, hint);
END
$$;

INSERT INTO brands VALUES ('DTD', 'Dated');
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
  ('DT1', 'Dated One', 'US', '49757'),
  ('DT2', 'Dated Two', 'US', '49757'),
  ('DT3', 'Dated Three', 'US', '49757');
INSERT INTO dealer_brands (dealer_number, brand_code) VALUES ('DT1', 'DTD'), ('DT2', 'DTD'), ('DT3', 'DTD');
UPDATE settings SET default_dealer_number = 'DT3';

------------------------------------------------------------------------------
-- Periods: open by default, valid_from before valid_to.
------------------------------------------------------------------------------
INSERT INTO territories (dealer_number, brand_code, kind, country, code)
VALUES ('DT1', 'DTD', 'postal', 'US', '49781');
SELECT results_eq(
    $$SELECT valid_from, valid_to FROM territories WHERE dealer_number = 'DT1'$$,
    $$VALUES ('-infinity'::timestamptz, NULL::timestamptz)$$,
    'a territory without a period is valid always: valid_from -infinity, valid_to NULL');
INSERT INTO territories (dealer_number, brand_code, kind, country, code, valid_from)
VALUES ('DT3', 'DTD', 'state', 'US', 'MI', NULL);
SELECT is((SELECT valid_from FROM territories WHERE dealer_number = 'DT3'), '-infinity'::timestamptz,
    'a NULL valid_from is stored as -infinity (always)');
DELETE FROM territories WHERE dealer_number = 'DT3';
SELECT throws_like(
    $$INSERT INTO territories (dealer_number, brand_code, kind, country, code, valid_from, valid_to)
      VALUES ('DT2', 'DTD', 'postal', 'US', '49782', '2025-06-01', '2025-01-01')$$,
    'a territory of dealer DT2 cannot end (valid_to %) before it starts (valid_from %)',
    'a territory that ends before it starts is refused');
SELECT throws_ok(
    $$INSERT INTO product_assignments (dealer_number, product_code, valid_from, valid_to)
      VALUES ('DT2', 'DTD-X', '2025-06-01', '2025-06-01')$$,
    '23514', NULL, 'a product assignment with an empty period is refused (check_violation)');

------------------------------------------------------------------------------
-- One holder per postal code at any moment.
------------------------------------------------------------------------------
-- DT1 holds 49781 always: no dated holder fits beside it.
SELECT throws_ok(
    $$INSERT INTO territories (dealer_number, brand_code, kind, country, code, valid_from, valid_to)
      VALUES ('DT2', 'DTD', 'postal', 'US', '49781', '2025-01-01', '2026-01-01')$$,
    '23505', 'postal code US 49781 is already held by dealer DT1 for brand DTD always',
    'a dated holder beside an always holder is refused, naming the holder and its period');
UPDATE territories SET valid_to = '2025-01-01' WHERE dealer_number = 'DT1' AND code = '49781';
SELECT lives_ok(
    $$INSERT INTO territories (dealer_number, brand_code, kind, country, code, valid_from, valid_to)
      VALUES ('DT2', 'DTD', 'postal', 'US', '49781', '2025-01-01', '2026-01-01')$$,
    'periods that meet at a boundary (valid_to = the next valid_from) do not overlap');
SELECT lives_ok(
    $$INSERT INTO territories (dealer_number, brand_code, kind, country, code, valid_from)
      VALUES ('DT1', 'DTD', 'postal', 'US', '49781', '2026-01-01')$$,
    'the first holder may take the code again after the second one''s period (same dealer, two periods)');
SELECT throws_ok(
    $$INSERT INTO territories (dealer_number, brand_code, kind, country, code, valid_from, valid_to)
      VALUES ('DT3', 'DTD', 'postal', 'US', '49781', '2025-12-31', '2026-02-01')$$,
    '23505', 'postal code US 49781 is already held by dealer DT2 for brand DTD from 2025-01-01 00:00:00+00 to 2026-01-01 00:00:00+00',
    'a period overlapping two holders is refused, naming the earliest');
SELECT is(pg_temp.error_of($$UPDATE territories SET valid_to = NULL WHERE dealer_number = 'DT2' AND code = '49781'$$),
    E'23505\npostal code US 49781 is already held by dealer DT1 for brand DTD from 2026-01-01 00:00:00+00\n'
    'A postal code can be held by one dealer per brand scope at a time; dealer DT2 cannot take it from 2025-01-01 00:00:00+00 as well.\n'
    'Let the periods follow each other: end dealer DT1''s (valid_to) where dealer DT2''s starts (valid_from), or the other way round.',
    'an UPDATE that stretches a period over the next holder''s is refused: errcode, message, detail and hint');
-- Another brand scope is another holder, at the same moment too.
SELECT lives_ok(
    $$INSERT INTO territories (dealer_number, kind, country, code, valid_from, valid_to)
      VALUES ('DT3', 'postal', 'US', '49781', '2025-06-01', '2025-07-01')$$,
    'an all-brands holder beside a brand holder of the same period is accepted');
-- Without periods, the rule and its message are as before.
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES ('DT1', 'DTD', 'postal', 'US', '49782');
SELECT is(pg_temp.error_of($$INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES ('DT2', 'DTD', 'postal', 'US', '49782')$$),
    E'23505\npostal code US 49782 is already held by dealer DT1 for brand DTD\n'
    'A postal code can be held by one dealer per brand scope; dealer DT2 cannot take it as well.\n'
    'Remove it from dealer DT1 first, or assign it to dealer DT2 for a single brand (brand_code).',
    'two holders without periods: the error of before');
-- The race backstop still holds for rows that start together.
ALTER TABLE territories DISABLE TRIGGER territories_normalize;
SELECT throws_ok(
    $$INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES ('DT2', 'DTD', 'postal', 'US', '49782')$$,
    '23505', 'duplicate key value violates unique constraint "territories_one_postal_holder"',
    'the unique index refuses a second holder starting at the same moment, trigger or not');
ALTER TABLE territories ENABLE TRIGGER territories_normalize;
-- Product assignments: one dealer and product in several periods.
SELECT lives_ok(
    $$INSERT INTO product_assignments (dealer_number, product_code, valid_to) VALUES ('DT1', 'DTD-X', '2025-01-01');
      INSERT INTO product_assignments (dealer_number, product_code, valid_from) VALUES ('DT1', 'DTD-X', '2026-01-01')$$,
    'a product assignment may come back in a later period');

-- The model holds one link per dealer and product: with product routing
-- on, DT1 (two periods of DTD-X) is one candidate, listed once.
UPDATE settings SET product_routing_enabled = true;
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES ('DT1', 'DTD', 'state', 'US', 'MI');
SELECT is((SELECT string_agg(dealer_number, ',') FROM locate_dealers('US', '49757', 'DTD', 'DTD-X') WHERE match_type <> 'Default'),
    'DT1', 'a dealer assigned a product in two periods is a candidate for it, once');

SELECT * FROM finish();
ROLLBACK;
