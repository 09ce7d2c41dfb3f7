-- test/routing_ties.sql: ties (SPEC section 10, issue 20 part 1):
-- settings.tie_break = 'round_robin' makes equally near dealers take
-- turns per brand; dealer_number (the default) keeps the lowest dealer
-- number.  Everything is rolled back.
BEGIN;
SELECT plan(30);
SELECT set_config('search_path', 'aimroute, public, ' || e.extnamespace::regnamespace, true)
  FROM pg_extension e WHERE e.extname = 'postgis';
SET LOCAL client_min_messages = warning;
SET LOCAL TimeZone = 'UTC';

-- lead(tag, brand, zip): inserts a lead at a US postal code, returns its dealer.
CREATE FUNCTION pg_temp.lead(tag text, brand text, zip text) RETURNS text LANGUAGE sql AS $$
    INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer, comment)
    VALUES (brand, 'US', zip, false, tag) RETURNING dealer_number
$$;
-- The dealers of `n` new leads, in order, as one string.
CREATE FUNCTION pg_temp.leads(n int, brand text, zip text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(pg_temp.lead('rr', brand, zip), ' ' ORDER BY i) FROM generate_series(1, n) i
$$;
-- The explanation of the lead tagged `tag`, one step a line.
CREATE FUNCTION pg_temp.why(tag text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(e.rule || ': ' || e.message, E'\n' ORDER BY e.step)
      FROM aimroute.leads l, aimroute.explain_lead(l.lead_id) e
     WHERE l.comment = tag
$$;

INSERT INTO brands VALUES ('RRA', 'Round A'), ('RRB', 'Round B'), ('RRC', 'Round C');
-- RR1 to RR3 sit at the centre of 49757 (no location of their own): equally near.
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
  ('RR1', 'Round One', 'US', '49757'),
  ('RR2', 'Round Two', 'US', '49757'),
  ('RR3', 'Round Three', 'US', '49757'),
  ('RR4', 'Round Four, next town', 'US', '49781'),
  ('RRX', 'Round Default', 'US', '10001'),
  ('TT1', 'Territory One', 'US', '60601'),
  ('TT2', 'Territory Two', 'US', '60601');
INSERT INTO dealer_brands (dealer_number, brand_code)
SELECT d, b FROM unnest('{RR1,RR2,RR3,RR4}'::text[]) d, unnest('{RRA,RRB}'::text[]) b;
INSERT INTO dealer_brands VALUES ('TT1', 'RRC'), ('TT2', 'RRC');
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
  ('TT1', 'RRC', 'state', 'US', 'MI'), ('TT2', 'RRC', 'state', 'US', 'MI');
UPDATE settings SET default_dealer_number = 'RRX', radius_enabled = true, radius_countries = '{US}';

------------------------------------------------------------------------------
-- The default: the lowest dealer number, as before.
------------------------------------------------------------------------------
SELECT is((SELECT tie_break FROM settings), 'dealer_number', 'tie_break is dealer_number by default');
SELECT is(pg_temp.leads(3, 'RRA', '49757'), 'RR1 RR1 RR1',
    'dealer_number: the lowest dealer number takes every lead among equally near dealers');
SELECT is(pg_temp.leads(2, 'RRC', '49757'), 'TT1 TT1',
    'dealer_number: the lowest dealer number among equally near territory holders');
SELECT is((SELECT count(*) FROM tie_turns), 0::bigint, 'dealer_number: no turn is counted');
SELECT is((SELECT count(*) FROM leads l, explain_lead(l.lead_id) e
            WHERE l.comment = 'rr' AND e.message LIKE 'round robin%'), 0::bigint,
    'dealer_number: no explanation mentions round robin');
SELECT throws_ok($$UPDATE settings SET tie_break = 'random'$$, '22023',
    'invalid value for setting "tie_break": random', 'a tie_break other than dealer_number or round_robin is refused');

------------------------------------------------------------------------------
-- Round robin: turns per brand, the fewest leads by turn first.
------------------------------------------------------------------------------
UPDATE settings SET tie_break = 'round_robin';
CREATE TEMP TABLE version_before AS SELECT version FROM config_version;
SELECT is(pg_temp.leads(6, 'RRA', '49757'), 'RR1 RR2 RR3 RR1 RR2 RR3',
    'round robin: equally near dealers take turns, lowest number first');
SELECT is((SELECT version FROM config_version), (SELECT version FROM version_before),
    'taking turns is not a change of the configuration: config_version stays');
SELECT results_eq(
    $$SELECT dealer_number, leads FROM tie_turns WHERE brand_code = 'RRA' ORDER BY dealer_number$$,
    $$VALUES ('RR1', 2::bigint), ('RR2', 2::bigint), ('RR3', 2::bigint)$$,
    'tie_turns counts the leads each dealer received by turn');
SELECT is((SELECT count(*) FROM leads WHERE dealer_number = 'RR4' AND comment = 'rr'), 0::bigint,
    'a dealer a few miles further is not tied and gets no turn');

SELECT is(pg_temp.lead('first of RRA', 'RRA', '49757'), 'RR1', 'the seventh RRA lead goes to RR1 again');
SELECT matches(pg_temp.why('first of RRA'),
    'Radius: round robin: tied with RR2, RR3 at 0\.0 miles; 2 RRA leads by turn each; RR1 had its last one longer ago \(',
    'the explanation says round robin decided, with whom it was tied, and why');
SELECT matches(pg_temp.why('first of RRA'), 'Radius: chosen: the closest dealer of US',
    'the rule still names the decision');

-- Per brand: RRB has its own turns.
SELECT is(pg_temp.lead('first of RRB', 'RRB', '49757'), 'RR1', 'the first RRB lead goes to RR1: RRB''s turns are its own');
SELECT matches(pg_temp.why('first of RRB'),
    'round robin: tied with RR2, RR3 at 0\.0 miles; RR1 and RR2 have had no RRB lead by turn yet: the lower dealer number',
    'with no turn yet, the lowest dealer number, and the explanation says so');
SELECT is(pg_temp.lead('second of RRA', 'RRA', '49757'), 'RR2', 'the next RRA lead goes to RR2, whatever RRB did');
SELECT matches(pg_temp.why('second of RRA'),
    'round robin: tied with RR1, RR3 at 0\.0 miles; 2 RRA leads by turn each; RR2 had its last one longer ago',
    'among equal counts, the last turn longest ago');

------------------------------------------------------------------------------
-- The locator shows the order leads would get now, and changes nothing.
------------------------------------------------------------------------------
CREATE TEMP TABLE turns_before AS SELECT * FROM tie_turns;
SELECT is((SELECT string_agg(dealer_number, ' ' ORDER BY rank) FROM locate_dealers('US', '49757', 'RRA', max_results => 4)),
    'RR3 RR1 RR2 RR4', 'locate_dealers: the tied dealers in turn order, then the next nearest');
SELECT is((SELECT dealer_number FROM route('US', '49757', 'RRA')), 'RR3', 'route() gives the dealer whose turn it is');
SET LOCAL ROLE aimroute_dealer;
SELECT set_config('ties.located',
    (SELECT string_agg(dealer_number, ' ' ORDER BY rank) FROM aimroute.locate_dealers('US', '49757', 'RRA', max_results => 3)), true);
RESET ROLE;
SELECT is(current_setting('ties.located'), 'RR3 RR1 RR2',
    'a user without rights on tie_turns gets the same order from the locator');
SELECT set_eq('SELECT * FROM tie_turns', 'SELECT * FROM turns_before',
    'locate_dealers and route() take no turn');
SELECT is(pg_temp.lead('fewer', 'RRA', '49757'), 'RR3', 'the next lead goes to rank 1 of the locator');
SELECT matches(pg_temp.why('fewer'),
    'round robin: tied with RR1, RR2 at 0\.0 miles; RR3 had fewer RRA leads by turn \(2 against 3\)',
    'the explanation gives the counts of the winner and of the next in turn');
SELECT is(pg_temp.leads(2, 'RRA', '49757'), 'RR1 RR2', 'and the leads after it go in the locator''s order');

------------------------------------------------------------------------------
-- Territory holders tie too.
------------------------------------------------------------------------------
SELECT is(pg_temp.leads(4, 'RRC', '49757'), 'TT1 TT2 TT1 TT2',
    'round robin: equally near territory holders take turns');

------------------------------------------------------------------------------
-- Resetting a brand's turns with DELETE (as tie_turns' comment says): the
-- next tied lead starts the turns again from no counts.
------------------------------------------------------------------------------
DELETE FROM tie_turns WHERE brand_code = 'RRA';
SELECT is(pg_temp.leads(3, 'RRA', '49757'), 'RR1 RR2 RR3',
    'after a reset the tied dealers take turns again in dealer number order');
SELECT results_eq($$SELECT dealer_number, leads FROM tie_turns WHERE brand_code = 'RRA' ORDER BY 1$$,
    $$VALUES ('RR1', 1::bigint), ('RR2', 1::bigint), ('RR3', 1::bigint)$$,
    'each turn made its dealer''s counter again, one lead each');

------------------------------------------------------------------------------
-- A winner at its daily cap gets neither the lead nor the turn: the turn
-- counts for the dealer that gets the lead.
------------------------------------------------------------------------------
UPDATE dealers SET daily_lead_cap = 1 WHERE dealer_number = 'RR1';
INSERT INTO daily_lead_counts (dealer_number, day, leads)
SELECT 'RR1', (now() AT TIME ZONE s.timezone)::date, 1 FROM settings s;
SELECT is(pg_temp.lead('capped turn', 'RRA', '49757'), 'RR2',
    'RR1''s turn, but RR1 is full today: the lead goes to RR2, next in turn');
SELECT results_eq($$SELECT dealer_number, leads FROM tie_turns WHERE brand_code = 'RRA' ORDER BY 1$$,
    $$VALUES ('RR1', 1::bigint), ('RR2', 2::bigint), ('RR3', 1::bigint)$$,
    'the turn is counted for RR2, which got the lead, and not for RR1, which a cap skipped');
SELECT matches(pg_temp.why('capped turn'), 'RR1 skipped: daily lead cap 1 reached',
    'the explanation says RR1 was skipped for its cap');
UPDATE dealers SET daily_lead_cap = NULL WHERE dealer_number = 'RR1';

SELECT * FROM finish();
ROLLBACK;
