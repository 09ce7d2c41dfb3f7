-- test/routing_dated.sql: dated configuration (SPEC section 10, issue 20
-- part 3): territories and product assignments carry valid_from /
-- valid_to, and one dealer holds a postal code at any moment.
-- Everything is rolled back.
BEGIN;
SELECT plan(30);
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

-- The lead tagged `tag`: its dealer and match type as 'DEALER Match'.
CREATE FUNCTION pg_temp.routed(tag text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(l.dealer_number || ' ' || l.match_type, ', ' ORDER BY l.lead_id)
      FROM aimroute.leads l WHERE l.comment = tag
$$;
-- The explanation of the lead tagged `tag`, one step a line.
CREATE FUNCTION pg_temp.why(tag text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(e.rule || ': ' || e.message, E'\n' ORDER BY e.step)
      FROM aimroute.leads l, aimroute.explain_lead(l.lead_id) e
     WHERE l.comment = tag
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

------------------------------------------------------------------------------
-- Routing uses what is valid at the lead's received_at.
------------------------------------------------------------------------------
-- 49781 for brand DTD: DT1 until 2025, DT2 in 2025, DT1 again from 2026.
DELETE FROM territories WHERE dealer_number = 'DT3' OR (dealer_number = 'DT1' AND kind = 'state');
DELETE FROM leads;
INSERT INTO leads (brand_code, country, postal_code, received_at, comment) VALUES
  ('DTD', 'US', '49781', '2025-03-01', 'back-dated'),
  ('DTD', 'US', '49781', '2025-01-01 00:00:00+00', 'at the boundary'),
  ('DTD', 'US', '49781', '2024-12-31 23:59:59.999999+00', 'just before'),
  ('DTD', 'US', '49781', '2026-01-01 00:00:00+00', 'at the next boundary'),
  ('DTD', 'US', '49781', DEFAULT, 'now');
SELECT is(pg_temp.routed('back-dated'), 'DT2 Territory',
    'a back-dated lead routes by the territory valid at its received_at');
SELECT is(pg_temp.routed('at the boundary'), 'DT2 Territory',
    'a lead received at the instant a period starts routes by it (valid_from is inclusive)');
SELECT is(pg_temp.routed('just before'), 'DT1 Territory',
    'a lead received just before, by the period that ends then');
SELECT is(pg_temp.routed('at the next boundary'), 'DT1 Territory',
    'a lead received at the instant a period ends routes by the next one (valid_to is exclusive)');
SELECT is(pg_temp.routed('now'), 'DT1 Territory', 'a lead received now, by the territory valid now');
SELECT alike(pg_temp.why('back-dated'),
    '%Territory: not considered: holds postal 49781 (brand DTD) until 2025-01-01 00:00:00+00, but not at 2025-03-01 00:00:00+00%'
    || 'Territory: candidate: holds postal 49781 (brand DTD) from 2025-01-01 00:00:00+00 to 2026-01-01 00:00:00+00%',
    'the explanation names the periods: the territories left out and the one that applied');
SELECT is((route('US', '49781', 'DTD', as_of => '2025-06-01')).dealer_number, 'DT2',
    'route() with as_of decides under the configuration of that instant');
SELECT is((route('US', '49781', 'DTD')).dealer_number, 'DT1',
    'route() without as_of decides under the configuration valid now');
SELECT is((SELECT dealer_number FROM locate_dealers('US', '49781', 'DTD') WHERE rank = 1), 'DT1',
    'locate_dealers ranks under the configuration valid now');

------------------------------------------------------------------------------
-- simulate_routing: each lead at its received_at, or all at as_of.
------------------------------------------------------------------------------
SELECT is((SELECT count(*) FROM simulate_routing('-infinity', 'infinity')
            WHERE simulated_dealer_number IS DISTINCT FROM dealer_number
               OR simulated_match_type IS DISTINCT FROM match_type), 0::bigint,
    'simulate_routing without as_of replays each lead at its received_at: no change, no difference');
SELECT results_eq(
    $$SELECT l.comment, s.simulated_dealer_number FROM simulate_routing('-infinity', 'infinity', '2025-03-01') s
       JOIN leads l USING (lead_id) ORDER BY l.lead_id$$,
    $$VALUES ('back-dated', 'DT2'), ('at the boundary', 'DT2'), ('just before', 'DT2'),
             ('at the next boundary', 'DT2'), ('now', 'DT2')$$,
    'simulate_routing as_of a past date routes every lead under the configuration of that date');
SELECT results_eq(
    $$SELECT s.simulated_dealer_number FROM simulate_routing('2025-01-01', '2025-12-31', '2025-03-01') s$$,
    $$SELECT l.dealer_number FROM leads l WHERE l.received_at >= '2025-01-01' AND l.received_at < '2025-12-31' ORDER BY l.lead_id$$,
    'simulate_routing as_of a past date gives what routing gave then');
SELECT is((SELECT count(*) FROM simulate_routing('-infinity', 'infinity', NULL)), 5::bigint,
    'simulate_routing(from, to, NULL) is the two-argument form');

------------------------------------------------------------------------------
-- Product assignments by period (product routing is on).
------------------------------------------------------------------------------
-- DT1 is assigned DTD-X until 2025 and from 2026 (above); DT2 never.
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES ('DT1', 'DTD', 'state', 'US', 'MI');
INSERT INTO leads (brand_code, product_code, country, postal_code, received_at, comment) VALUES
  ('DTD', 'DTD-X', 'US', '49781', '2025-03-01', 'product in the gap'),
  ('DTD', 'DTD-X', 'US', '49781', '2026-03-01', 'product assigned');
SELECT is(pg_temp.routed('product in the gap'), 'DT3 Default',
    'a lead received while no dealer is assigned its product goes past the territory holders');
SELECT is(pg_temp.routed('product assigned'), 'DT1 Territory',
    'a lead received while the holder is assigned its product goes to it');
SELECT alike(pg_temp.why('product in the gap'),
    '%only dealers assigned product DTD-X at 2025-03-01 00:00:00+00 (the assignments valid then)%',
    'the explanation says which instant''s product assignments applied');
SELECT * FROM finish();
ROLLBACK;
