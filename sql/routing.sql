--
-- routing: what a user sees.  Leads are routed on INSERT, every decision
-- is explained, the dealer locator follows the same rules, and people can
-- reassign leads, move a leaving dealer's leads and simulate a change.
--
-- The network left by the reference, settings and loader tests: D200 in
-- Killarney, Ontario (LKB, holds all of Canada), D300 in St. Louis (TRV,
-- holds Missouri and ZIP 49781), D400 near Mackinac Island (LKB and TRV,
-- holds ZIP 49757 for every brand and for each brand), HQ (sells
-- nothing).  No default dealer is set: the settings test's second INSERT
-- (a restored dump) reset it.
--
SET search_path = aimroute, public;
SELECT d.dealer_number, d.country, d.postal_code, d.active_for_sales,
       (SELECT string_agg(b.brand_code, ',' ORDER BY b.brand_code)
          FROM dealer_brands b WHERE b.dealer_number = d.dealer_number) AS brands,
       (SELECT string_agg(t.kind || ' ' || t.code || coalesce(' (' || t.brand_code || ')', ''), ', '
                          ORDER BY t.kind, t.code, t.brand_code)
          FROM territories t WHERE t.dealer_number = d.dealer_number) AS territories
  FROM dealers d ORDER BY d.dealer_number;
SELECT default_dealer_number, radius_enabled, radius_miles, radius_countries FROM settings;

-- Without a default dealer, a lead that no rule places is refused: the
-- one configuration error routing can hit.
\set VERBOSITY default
INSERT INTO leads (brand_code, country, postal_code) VALUES ('LKB', 'Atlantis', '49757');
SELECT count(*) AS leads FROM leads;
UPDATE settings SET default_dealer_number = 'HQ';

-- Two more dealers: one near Albany, NY (LKB), one in Ottawa (TRV).
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
  ('D500', 'Capital Region Boats', 'US', '12213'),
  ('D600', 'Ottawa RV', 'CA', 'K1A 0B1');
INSERT INTO dealer_brands VALUES ('D500', 'LKB');

-- Leads: each is routed by the INSERT itself.
INSERT INTO leads (source, brand_code, country, postal_code, dealer_number, first_name, comment) VALUES
  ('api', 'LKB', 'USA', '49757-0001', NULL, 'Ann', 'ZIP 49757 is held by D400'),
  ('api', 'LKB', 'Canada', 'p0s 1a0', NULL, 'Bob', 'D200 holds Canada'),
  ('api', 'TRV', 'US', '63101', NULL, 'Cy', 'D300 holds Missouri'),
  ('api', 'LKB', 'US', '12212', NULL, 'Di', 'no territory: radius'),
  ('api', 'TRV', 'CA', 'P0S', NULL, 'Ed', 'no TRV dealer selling in Canada yet'),
  ('import', 'LKB', 'US', '1234X', NULL, 'Flo', 'invalid ZIP'),
  ('import', 'LKB', 'Atlantis', '49757', NULL, 'Gus', 'unknown country'),
  ('manual', 'LKB', 'US', '12212', 'D200', 'Hal', 'pre-assigned'),
  ('manual', 'LKB', 'US', '12212', 'D999', 'Ida', 'pre-assigned to an unknown dealer'),
  ('api', 'TRV', 'US', '49757', NULL, 'Jo', 'ZIP 49757 is held by D400 for TRV');
-- D600 starts selling TRV: a Canadian TRV lead now stays in Canada,
-- although D400 on Mackinac Island is much closer.
INSERT INTO dealer_brands VALUES ('D600', 'TRV');
INSERT INTO leads (brand_code, country, postal_code, first_name, comment)
VALUES ('TRV', 'CA', 'P0S', 'Kim', 'the same lead as Ed''s, now D600 sells TRV');

SELECT first_name, source, country, postal_code, brand_code, dealer_number, match_type,
       round(distance_miles::numeric) AS miles
  FROM leads ORDER BY lead_id;

-- Why: a territory lead, a radius lead and two default leads.
SELECT step, rule, message, dealer_number, round(distance_miles::numeric, 1) AS miles
  FROM explain_lead((SELECT lead_id FROM leads WHERE first_name = 'Ann'));
SELECT step, rule, message, dealer_number, round(distance_miles::numeric, 1) AS miles
  FROM explain_lead((SELECT lead_id FROM leads WHERE first_name = 'Kim'));
SELECT step, rule, message, dealer_number, round(distance_miles::numeric, 1) AS miles
  FROM explain_lead((SELECT lead_id FROM leads WHERE first_name = 'Ed'));
SELECT step, rule, message, dealer_number, round(distance_miles::numeric, 1) AS miles
  FROM explain_lead((SELECT lead_id FROM leads WHERE first_name = 'Flo'));

-- Find a Dealer: rank 1 is where such a lead goes, then the order
-- re-routing would follow, down to the default dealer.
SELECT rank, dealer_number, name, round(distance_miles::numeric, 1) AS miles, match_type
  FROM locate_dealers('US', '12212', 'LKB');
SELECT rank, dealer_number, name, round(distance_miles::numeric, 1) AS miles, match_type
  FROM locate_dealers('CA', 'P0S 1A0', 'LKB');
SELECT rank, dealer_number, name, round(distance_miles::numeric, 1) AS miles, match_type
  FROM locate_dealers('US', '12212', 'LKB', max_results => 1);

-- Reassignment by hand.
SELECT reassign((SELECT lead_id FROM leads WHERE first_name = 'Di'), 'D400', 'customer asked for Mackinac');
SELECT dealer_number, match_type, round(distance_miles::numeric) AS miles
  FROM leads WHERE first_name = 'Di';
SELECT reassign((SELECT lead_id FROM leads WHERE first_name = 'Di'), 'D400', 'again');
SELECT reassign(1000000, 'D400', 'no such lead');
SELECT reassign((SELECT lead_id FROM leads WHERE first_name = 'Di'), 'D999', 'no such dealer');

-- D400 leaves the network: it stops selling, and its open leads move to
-- the next best dealer; Ann's, already viewed, stays.
UPDATE leads SET viewed_at = now() WHERE first_name = 'Ann';
UPDATE dealers SET active_for_sales = false WHERE dealer_number = 'D400';
SELECT * FROM reassign_dealer_leads('D400', 'D400 closed');
SELECT first_name, dealer_number, match_type FROM leads
 WHERE first_name IN ('Ann', 'Di', 'Jo') ORDER BY lead_id;
SELECT * FROM reassign_dealer_leads('D999', 'no such dealer');

-- A direct UPDATE is recorded too.
UPDATE leads SET dealer_number = 'D300' WHERE first_name = 'Ida';

-- Every change of dealer after routing, in lead_history.
SELECT l.first_name, h.event, h.from_dealer, h.to_dealer, h.match_type, h.reason,
       h.actor = session_user AS by_session_user
  FROM lead_history h JOIN leads l USING (lead_id)
 ORDER BY h.history_id;

-- What would giving D500 the state of New York do?  Nothing changes.
BEGIN;
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('D500', 'state', 'US', 'NY');
SELECT l.first_name, s.dealer_number, s.match_type,
       s.simulated_dealer_number, s.simulated_match_type
  FROM simulate_routing('-infinity', 'infinity') s JOIN leads l USING (lead_id)
 ORDER BY s.lead_id;
ROLLBACK;
SELECT first_name, dealer_number, match_type FROM leads
 WHERE first_name IN ('Di', 'Ed', 'Ida') ORDER BY lead_id;

-- Nothing is lost: every lead has a dealer and a match type.
SELECT count(*) AS leads, count(dealer_number) AS with_dealer, count(match_type) AS with_match_type
  FROM leads;

-- The tests after this one find the reference network with D400 active
-- again, plus D500, D600, HQ as the default dealer and these leads.
UPDATE dealers SET active_for_sales = true WHERE dealer_number = 'D400';
RESET search_path;
