-- test/reroute.sql: re-routing by the rules (SPEC section 3), views, and
-- the notices queued for dealers.  aimroute.reroute_overdue() is what the
-- background worker runs; here it is called directly, so that the test
-- needs no preloaded worker (t/002_reroute_worker.pl runs the worker
-- itself).  Deadlines are moved into the past by UPDATE rather than
-- waited for.  Everything is rolled back.
BEGIN;
SELECT plan(34);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = warning;

INSERT INTO brands VALUES ('RRT', 'Re-route test brand');
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
    ('RRT-HQ', 'HQ', 'US', '10001'),
    ('RRT-CHI', 'Chicago', 'US', '60601'),
    ('RRT-MKE', 'Milwaukee', 'US', '53202'),
    ('RRT-MAD', 'Madison', 'US', '53703'),
    ('RRT-TOR', 'Toronto', 'CA', 'M5V');
INSERT INTO dealer_brands VALUES ('RRT-CHI', 'RRT'), ('RRT-MKE', 'RRT'), ('RRT-MAD', 'RRT'), ('RRT-TOR', 'RRT');
INSERT INTO dealer_contacts (dealer_number, name, email, contact_types) VALUES
    ('RRT-CHI', 'Chicago sales', 'sales@chi.example', '{Leads: Emails To}'),
    ('RRT-CHI', 'Chicago owner', 'owner@chi.example', '{Leads: Emails CC}'),
    ('RRT-MKE', 'Milwaukee sales', 'sales@mke.example', '{Leads: Emails To}');
UPDATE settings SET default_dealer_number = 'RRT-HQ', radius_enabled = true, radius_miles = 1500,
       radius_countries = '{US,CA}', product_routing_enabled = false, inventory_routing_enabled = false,
       reroute_enabled = true, reroute_after = '24 hours', reroute_skip_days = '{}',
       reroute_max_dealers = 2, timezone = 'UTC';

-- The lead tagged `tag` as 'DEALER Match count'.
CREATE FUNCTION pg_temp.state(tag text) RETURNS text LANGUAGE sql AS $$
    SELECT l.dealer_number || ' ' || l.match_type || ' ' || l.reroute_count
      FROM aimroute.leads l WHERE l.comment = tag
$$;
CREATE FUNCTION pg_temp.id(tag text) RETURNS bigint LANGUAGE sql AS $$
    SELECT l.lead_id FROM aimroute.leads l WHERE l.comment = tag
$$;
-- Make the lead's deadline pass.
CREATE FUNCTION pg_temp.overdue(tag text) RETURNS void LANGUAGE sql AS $$
    UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() - interval '1 second' WHERE comment = tag
$$;

INSERT INTO leads (brand_code, country, postal_code, comment) VALUES
    ('RRT', 'US', '60601', 'a'), ('RRT', 'US', '60601', 'b'), ('RRT', 'CA', 'M5V 3L9', 'c');
SELECT is(pg_temp.state('a'), 'RRT-CHI Radius 0', 'routed to Chicago');
SELECT is((SELECT count(*) FROM leads WHERE comment IN ('a', 'b', 'c') AND notice_pending), 3::bigint,
          'routing marks each lead for its first notice in the inserting transaction');
SELECT is(delivery_expand(1000), 3, 'the delivery worker''s expansion takes them');
SELECT is((SELECT count(*) FROM lead_notifications WHERE lead_id = pg_temp.id('a') AND event = 'Routed'), 1::bigint,
          'and queues the first notice');
SELECT is(reroute_overdue(), 0, 'nothing is overdue yet: reroute_overdue does nothing');

-- Re-route by the rules, excluding every dealer that held the lead.
SELECT pg_temp.overdue('a');
SELECT is(reroute_overdue(), 1, 'one overdue lead re-routed');
SELECT is(pg_temp.state('a'), 'RRT-MKE Re-Route 1', 'the next best dealer, Milwaukee, match type Re-Route');
SELECT is((SELECT reroute_due_at FROM leads WHERE comment = 'a'), now() + interval '24 hours',
          'the new dealer gets reroute_after from the re-route');
SELECT is((SELECT format('%s %s>%s %s', event, from_dealer, to_dealer, match_type) FROM lead_history
            WHERE lead_id = pg_temp.id('a')), 'Re-Route RRT-CHI>RRT-MKE Re-Route',
          'lead_history records the re-route');
SELECT ok((SELECT reason LIKE 'not viewed by dealer RRT-CHI by %' FROM lead_history WHERE lead_id = pg_temp.id('a')),
          'and says why');
SELECT is((SELECT count(*) FROM lead_notifications WHERE lead_id = pg_temp.id('a') AND event = 'Re-Route'
                                                     AND dealer_number = 'RRT-MKE'), 1::bigint,
          'a notice to the new dealer is queued');
SELECT ok((SELECT string_agg(rule, ',') LIKE '%Re-Route%' FROM explain_lead(pg_temp.id('a'))),
          'explain_lead shows the re-route');

SELECT pg_temp.overdue('a');
SELECT is(reroute_overdue(), 1, 'overdue again');
SELECT is(pg_temp.state('a'), 'RRT-MAD Re-Route 2', 'Madison: Chicago and Milwaukee both held it');
SELECT ok((SELECT reason LIKE '%excluded every dealer that held it (RRT-CHI, RRT-MKE)' FROM lead_history
            WHERE lead_id = pg_temp.id('a') AND to_dealer = 'RRT-MAD'), 'the reason names the excluded dealers');

SELECT pg_temp.overdue('a');
SELECT is(reroute_overdue(), 1, 'overdue a third time');
SELECT is(pg_temp.state('a'), 'RRT-HQ Default 3', 'reroute_max_dealers (2) reached: the default dealer');
SELECT is((SELECT reroute_due_at FROM leads WHERE comment = 'a'), NULL, 'the default dealer has no deadline');
SELECT ok((SELECT reason LIKE '%reroute_max_dealers 2%default dealer' FROM lead_history
            WHERE lead_id = pg_temp.id('a') AND to_dealer = 'RRT-HQ'), 'and the history says so');

-- Never across a country line: the only other Canadian dealer is none.
SELECT pg_temp.overdue('c');
SELECT is(reroute_overdue(), 1, 'the Canadian lead is overdue');
SELECT is(pg_temp.state('c'), 'RRT-HQ Default 1', 'no other dealer in Canada: the default dealer, not a US one');

-- Views.
SELECT is(mark_viewed(pg_temp.id('b'), 'stranger@example.com'), false, 'a stranger''s view is refused');
SELECT is(mark_viewed(pg_temp.id('b'), 'owner@chi.example'), false, 'a Leads: Emails CC contact''s view is refused');
SELECT is(mark_viewed(pg_temp.id('b'), 'sales@mke.example'), false, 'another dealer''s contact is refused');
SELECT is((SELECT viewed_at FROM leads WHERE comment = 'b'), NULL, 'refused views change nothing');
SELECT is(mark_viewed(pg_temp.id('b'), '  Sales@Chi.Example '), true,
          'the holding dealer''s Leads: Emails To contact counts (case and spaces do not matter)');
SELECT pg_temp.overdue('b');
SELECT is(reroute_overdue(), 0, 'a viewed lead never re-routes, even past its deadline');
SELECT is(mark_viewed(-1, 'sales@chi.example'), false, 'an unknown lead: false');

-- The view link of a notice.
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('RRT', 'US', '60601', 'd');
SELECT pg_temp.overdue('d');
SELECT is(reroute_overdue(), 1, 'the lead is re-routed to Milwaukee, with a notice and its link');
CREATE TEMP TABLE first_notice AS
SELECT view_token FROM lead_notifications WHERE lead_id = pg_temp.id('d') AND dealer_number = 'RRT-MKE';
SELECT reassign(pg_temp.id('d'), 'RRT-MAD', 'customer asked for Madison');
SELECT ok((SELECT view_token ~ '^[A-Za-z0-9_-]{40,}$'
                  AND view_token <> (SELECT n.view_token FROM lead_notifications n
                                      WHERE n.lead_id = pg_temp.id('d') AND n.dealer_number = 'RRT-MAD')
             FROM first_notice), 'each notice has its own long, URL-safe token');
SELECT is(open_view_link((SELECT view_token FROM first_notice)), false,
          'the link of a dealer that no longer holds the lead does not count');
SELECT is((SELECT viewed_at FROM leads WHERE comment = 'd'), NULL, 'and changes nothing');
SELECT is(open_view_link((SELECT view_token FROM lead_notifications
                           WHERE lead_id = pg_temp.id('d') AND dealer_number = 'RRT-MAD')), true,
          'the holding dealer''s link marks the lead viewed');
SELECT is(open_view_link('not-a-token'), false, 'an unknown token: false');

SELECT * FROM finish();
ROLLBACK;
