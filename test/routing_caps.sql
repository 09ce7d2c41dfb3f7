-- test/routing_caps.sql: daily lead caps (SPEC section 10, issue 20 part 1):
-- a dealer at its dealers.daily_lead_cap for the day (settings.timezone)
-- is skipped like an inactive one, and the explanation says so; no cap
-- changes nothing.  Everything is rolled back.
BEGIN;
SELECT plan(21);
SELECT set_config('search_path', 'aimroute, public, ' || e.extnamespace::regnamespace, true)
  FROM pg_extension e WHERE e.extname = 'postgis';
SET LOCAL client_min_messages = warning;
SET LOCAL TimeZone = 'UTC';

-- lead(tag, at): a lead of brand CPA at 49757 received at `at`; returns its dealer.
CREATE FUNCTION pg_temp.lead(tag text, at timestamptz, dealer text DEFAULT NULL) RETURNS text
LANGUAGE sql AS $$
    INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer, comment,
                                received_at, dealer_number)
    VALUES ('CPA', 'US', '49757', false, tag, at, dealer) RETURNING dealer_number
$$;
-- The dealers of `n` new leads received at `at`, in order, as one string.
CREATE FUNCTION pg_temp.leads(n int, at timestamptz) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(pg_temp.lead('cap', at), ' ' ORDER BY i) FROM generate_series(1, n) i
$$;
-- The explanation of the lead tagged `tag`, one step a line.
CREATE FUNCTION pg_temp.why(tag text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(e.rule || ': ' || e.message, E'\n' ORDER BY e.step)
      FROM aimroute.leads l, aimroute.explain_lead(l.lead_id) e
     WHERE l.comment = tag
$$;

INSERT INTO brands VALUES ('CPA', 'Capped A');
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
  ('CP1', 'Cap One', 'US', '49757'),
  ('CP2', 'Cap Two, next town', 'US', '49781'),
  ('CPX', 'Cap Default', 'US', '10001');
INSERT INTO dealer_brands VALUES ('CP1', 'CPA'), ('CP2', 'CPA');
UPDATE settings SET default_dealer_number = 'CPX', radius_enabled = true, radius_countries = '{US}',
                    timezone = 'America/Detroit';

------------------------------------------------------------------------------
-- No cap: as before, nothing counted.
------------------------------------------------------------------------------
SELECT is(pg_temp.leads(3, '2026-03-10 16:00+00'), 'CP1 CP1 CP1', 'no cap: the closest dealer takes every lead');
SELECT is((SELECT count(*) FROM daily_lead_counts), 0::bigint, 'no cap: nothing is counted');
SELECT throws_ok($$UPDATE dealers SET daily_lead_cap = 0 WHERE dealer_number = 'CP1'$$, '23514', NULL,
    'a daily lead cap must be positive');

------------------------------------------------------------------------------
-- A cap of 2: the third lead of the day goes to the next dealer.
------------------------------------------------------------------------------
UPDATE dealers SET daily_lead_cap = 2 WHERE dealer_number = 'CP1';
SELECT is(pg_temp.leads(2, '2026-03-10 16:00+00'), 'CP1 CP1', 'under the cap: the closest dealer');
SELECT is(pg_temp.lead('full', '2026-03-10 18:00+00'), 'CP2', 'at the cap: the next dealer');
SELECT matches(pg_temp.why('full'), 'Radius: CP1 skipped: daily lead cap 2 reached for 2026-03-10',
    'the explanation says the dealer was skipped for its cap, and the day');
SELECT matches(pg_temp.why('full'), 'reached for 2026-03-10; the rules again without it\nTerritory: .*\nRadius: candidate at 10\.3 miles\nRadius: chosen: [^\n]*$',
    'the rules then run again without the dealer and choose the next one');
SELECT results_eq($$SELECT dealer_number, day, leads FROM daily_lead_counts ORDER BY 1, 2$$,
    $$VALUES ('CP1', '2026-03-10'::date, 2)$$,
    'only the capped dealer is counted, at its cap (the lead given to CP2 is not)');

------------------------------------------------------------------------------
-- The day is the OEM's (America/Detroit, UTC-4 in March 2026).
------------------------------------------------------------------------------
SELECT is(pg_temp.lead('late', '2026-03-11 03:59+00'), 'CP2', '23:59 in Detroit: still the full day');
SELECT is(pg_temp.lead('next day', '2026-03-11 04:00+00'), 'CP1', '00:00 in Detroit: a new day, room again');
SELECT results_eq($$SELECT day, leads FROM daily_lead_counts WHERE dealer_number = 'CP1' ORDER BY 1$$,
    $$VALUES ('2026-03-10'::date, 2), ('2026-03-11'::date, 1)$$, 'one count per day of the OEM''s time zone');

------------------------------------------------------------------------------
-- Pre-assigned leads and route() are not counted; route() respects the cap.
------------------------------------------------------------------------------
SELECT is(pg_temp.lead('pre', '2026-03-10 20:00+00', 'CP1'), 'CP1',
    'a lead pre-assigned to a dealer at its cap keeps its dealer');
SELECT is((SELECT leads FROM daily_lead_counts WHERE dealer_number = 'CP1' AND day = '2026-03-10'), 2,
    'a pre-assigned lead is not counted');
SELECT is(pg_temp.lead('all full', '2026-03-10 21:00+00'), 'CP2', 'still full for the rest of the day');
UPDATE dealers SET active_for_sales = false WHERE dealer_number = 'CP2';
SELECT is(pg_temp.lead('default', '2026-03-10 22:00+00'), 'CPX',
    'no other candidate: the default dealer, as when every dealer is inactive');

------------------------------------------------------------------------------
-- Removing the cap: the closest dealer again.
------------------------------------------------------------------------------
UPDATE dealers SET daily_lead_cap = NULL, active_for_sales = true WHERE dealer_number IN ('CP1', 'CP2');
SELECT is(pg_temp.leads(2, '2026-03-10 23:00+00'), 'CP1 CP1', 'no cap any more: the closest dealer');

------------------------------------------------------------------------------
-- The locator shows the order a lead would get now: a dealer at its cap
-- today comes after the others.
------------------------------------------------------------------------------
UPDATE dealers SET daily_lead_cap = 1 WHERE dealer_number = 'CP1';
SELECT is((SELECT dealer_number FROM locate_dealers('US', '49757', 'CPA', max_results => 1) WHERE rank = 1),
    'CP1', 'locator: room today, the closest dealer first');
SELECT is(pg_temp.lead('today', now()), 'CP1', 'a lead received now fills today''s one place');
SELECT is((SELECT dealer_number FROM locate_dealers('US', '49757', 'CPA', max_results => 1) WHERE rank = 1),
    'CP2', 'locator: the dealer at its cap today is not ranked first');
-- A lead received at infinity counts on the day of its transaction.
SELECT is(pg_temp.lead('forever', 'infinity'), 'CP2', 'a lead received at infinity: today''s count, full');
SELECT ok(pg_temp.why('forever') LIKE '%CP1 skipped: daily lead cap 1 reached for '
          || to_char(now() AT TIME ZONE 'America/Detroit', 'YYYY-MM-DD') || '%',
          'its explanation names the day of its transaction');

SELECT * FROM finish();
ROLLBACK;
