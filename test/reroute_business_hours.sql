-- test/reroute_business_hours.sql: the business-hours clock (SPEC section
-- 10).  With settings.reroute_clock = 'business_hours', reroute_after
-- counts only the open time of the dealer holding the lead
-- (dealers.business_hours, an OpenStreetMap opening_hours value, in
-- dealers.timezone or settings.timezone); skip days count none.  Expected
-- instants are written in UTC and were worked out by hand; the comments
-- give the local times.  Then a random comparison with an independent SQL
-- statement of the rule, the routing trigger, moves and reroute_overdue().
-- Everything is rolled back.
BEGIN;
SELECT plan(55);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = warning;
-- The session's own time zone must not matter.
SET LOCAL timezone = 'Asia/Kolkata';

-- business_hours_deadline(assigned_at, after, hours, zone, skip_days) in UTC.
CREATE FUNCTION pg_temp.due(assigned timestamptz, after interval, hours text, tz text,
                            skip integer[] DEFAULT '{}')
RETURNS timestamp LANGUAGE sql AS $$
    SELECT aimroute.business_hours_deadline(assigned, after, hours, tz, skip) AT TIME ZONE 'UTC'
$$;

-- New York is on EST (UTC-5) in December.
SELECT is(pg_temp.due('2026-12-04 22:00Z', '4 hours', 'Mo-Fr 08:00-18:00', 'America/New_York'),
          '2026-12-07 16:00',
          'Friday 17:00 + 4 hours of Mo-Fr 08:00-18:00: one hour on Friday, three on Monday: Monday 11:00');
SELECT is(pg_temp.due('2026-12-04 19:00Z', '4 hours', 'Mo-Fr 08:00-18:00', 'America/New_York'),
          '2026-12-04 23:00',
          'Friday 14:00 + 4 hours ends at closing time, Friday 18:00, not on Monday');
SELECT is(pg_temp.due('2026-12-05 15:00Z', '4 hours', 'Mo-Fr 08:00-18:00', 'America/New_York'),
          '2026-12-07 17:00',
          'assigned on a closed Saturday: the clock starts when the dealer opens, Monday 08:00 + 4 hours');
SELECT is(pg_temp.due('2026-12-07 15:00Z', '4 hours', 'Mo-Fr 08:00-12:00,13:00-18:00', 'America/New_York'),
          '2026-12-07 20:00',
          'several ranges a day: Monday 10:00 + 2 hours to noon, lunch closed, 13:00 + 2 hours: 15:00');
SELECT is(pg_temp.due('2026-12-07 15:00Z', '4 hours', 'Mo-Fr 08:00-12:00, 12:30-14:00,  13:00-18:00', 'America/New_York'),
          '2026-12-07 19:30',
          'overlapping ranges are merged: 10:00 to noon, then 12:30 + 2 hours: 14:30');
SELECT is(pg_temp.due('2026-12-08 20:00Z', '4 hours', 'Mo-Sa 09:00-17:00; We off', 'America/New_York'),
          '2026-12-10 16:00',
          'off: Tuesday 15:00 + 2 hours, Wednesday off, Thursday 09:00 + 2 hours: 11:00');
SELECT is(pg_temp.due('2026-12-04 15:00Z', '4 hours', 'Mo-Fr 08:00-18:00; Fr 08:00-12:00', 'America/New_York'),
          '2026-12-07 15:00',
          'a later rule replaces the hours of its days: Friday 10:00 to noon, Monday 08:00 + 2 hours');
SELECT is(pg_temp.due('2026-12-04 12:00Z', '6 hours', 'Sa-Mo 10:00-14:00', 'UTC'),
          '2026-12-06 12:00',
          'a weekday range may wrap: Sa-Mo; Friday 12:00, Saturday 10:00-14:00, Sunday 10:00 + 2 hours');
SELECT is(pg_temp.due('2026-12-01 12:00Z', '3 hours', 'Mo,We 10:00-11:00; Sa', 'UTC'),
          '2026-12-05 02:00',
          'a list of days, and days without times open all day: Wednesday 1 hour, Saturday from 00:00 + 2 hours');
SELECT is(pg_temp.due('2026-12-05 22:00Z', '4 hours', '24/7', 'America/New_York'),
          '2026-12-06 02:00', '24/7: four elapsed hours');
SELECT is(pg_temp.due('2026-12-04 15:00Z', '4 hours', 'Mo-Su 09:00-17:00', 'UTC', '{6,7}'),
          '2026-12-07 11:00',
          'skip days count no open time: Friday 15:00 + 2 hours, Saturday and Sunday skipped, Monday 09:00 + 2 hours');
SELECT is(pg_temp.due('2026-12-04 16:00Z', '4 hours', 'Mo-Fr 09:00-17:00', 'Europe/Berlin'),
          '2026-12-07 12:00',
          'in the dealer''s zone: Friday 17:00 CET is closing time in Berlin, Monday 09:00 + 4 hours: 13:00 CET');
SELECT is(pg_temp.due('2026-12-07 15:00Z', '1 day', '24/7', 'UTC'), '2026-12-08 15:00',
          'a day is 24 open hours');
SELECT is(pg_temp.due('2026-12-07 15:00Z', '1 day', 'Mo-Fr 09:00-17:00', 'UTC'), '2026-12-10 15:00',
          'a day is 24 open hours, not a working day: 2 + 8 + 8 + 6 hours');

-- Summer time starts in New York on Sunday 2026-03-08 at 02:00 (EST,
-- UTC-5, becomes EDT, UTC-4) and ends on Sunday 2026-11-01 at 02:00.
SELECT is(pg_temp.due('2026-03-06 22:00Z', '4 hours', 'Mo-Fr 08:00-18:00', 'America/New_York'),
          '2026-03-09 15:00',
          'across the change: Friday 17:00 EST + 4 hours is Monday 11:00 EDT');
SELECT is(pg_temp.due('2026-03-08 04:00Z', '4 hours', '24/7', 'America/New_York'),
          '2026-03-08 08:00',
          'open through the change: Saturday 23:00 EST + 4 open hours is Sunday 04:00 EDT (02:00-03:00 does not exist)');
SELECT is(pg_temp.due('2026-03-07 20:00Z', '3 hours', 'Su 01:00-04:00', 'America/New_York'),
          '2026-03-15 06:00',
          'Su 01:00-04:00 on the day of the change is two hours long: the next Sunday 02:00 EDT');
SELECT is(pg_temp.due('2026-11-01 04:00Z', '25 hours', 'Su', 'America/New_York'),
          '2026-11-02 05:00',
          'the 25-hour Sunday of the change back holds 25 open hours: due at its end, Monday 00:00 EST');

-- Never open (after skip days): NULL, and the deadline falls back to the
-- elapsed clock (below).
SELECT is(pg_temp.due('2026-12-04 22:00Z', '4 hours', 'off', 'UTC'), NULL, 'never open: NULL');
SELECT is(pg_temp.due('2026-12-04 22:00Z', '4 hours', 'Sa 09:00-13:00', 'UTC', '{6,7}'), NULL,
          'open only on a skip day: NULL');

-- Values refused, with the token and where it is.
SELECT throws_ok($$SELECT aimroute.business_hours_valid('Mo-Fr 08:00-18:00; PH off')$$, '22023',
                 'invalid business hours at character 20: "PH"', 'public holidays: refused at their token');
SELECT throws_ok($$SELECT aimroute.business_hours_valid('Mo-Fr 22:00-02:00')$$, '22023',
                 'invalid business hours at character 7: "22:00-02:00"', 'a range past midnight is refused');
SELECT throws_ok($$SELECT aimroute.business_hours_valid('Mon-Fri 08:00-18:00')$$, '22023',
                 'invalid business hours at character 1: "Mon-Fri"', 'three-letter weekdays are refused');
SELECT throws_ok($$SELECT aimroute.business_hours_valid('Mo-Fr 8:00-18:00')$$, '22023',
                 'invalid business hours at character 7: "8:00-18:00"', 'a time needs two-digit hours');
SELECT throws_ok($$SELECT aimroute.business_hours_valid('Mo-Fr 08:00-18:00, Sa 10:00-12:00')$$, '22023',
                 'invalid business hours at character 20: "Sa"', 'rules are separated by semicolons');
SELECT throws_ok($$SELECT aimroute.business_hours_valid('Jan-Mar Mo 10:00-12:00')$$, '22023',
                 'invalid business hours at character 1: "Jan-Mar"', 'months are refused');
SELECT throws_ok($$SELECT aimroute.business_hours_valid('Mo 10:00+')$$, '22023',
                 'invalid business hours at character 9: "+"', 'an open end is refused');
SELECT throws_ok($$SELECT aimroute.business_hours_valid('Mo 24:00-24:00')$$, '22023',
                 'invalid business hours at character 4: "24:00-24:00"', '24:00 only ends a range');
SELECT throws_ok($$SELECT aimroute.business_hours_valid('Mo 10:00-')$$, '22023',
                 'invalid business hours: unexpected end at character 10', 'a value cut short');
SELECT throws_ok($$SELECT aimroute.business_hours_valid('  ')$$, '22023',
                 'invalid business hours: unexpected end at character 3', 'blank is refused (NULL means none)');

-- The random comparison: schedules of 0 to 3 ranges on a quarter-hour
-- grid per day, each day named by a rule of its own after a rule for the
-- whole week that they replace; the deadline by SQL walks the local
-- calendar, clips each range at the assignment and sums the open time.
SELECT setseed(0.20);
CREATE TEMP TABLE bh_cases AS
SELECT i AS id,
       date_trunc('second', timestamptz '2026-01-01 00:00Z' + random() * interval '730 days') AS assigned,
       (ARRAY['1 minute', '90 minutes', '4 hours', '24 hours', '73 hours'])[1 + floor(random() * 5)]::interval AS after,
       (ARRAY['{}', '{6,7}', '{7}', '{1}', '{2,4,6}'])[1 + floor(random() * 5)]::integer[] AS skip,
       (ARRAY['America/New_York', 'America/Los_Angeles', 'America/St_Johns', 'Europe/Berlin',
              'Australia/Lord_Howe', 'Asia/Kolkata', 'UTC'])[1 + floor(random() * 7)] AS tz,
       NULL::text AS hours
  FROM generate_series(1, 1500) i;
-- Per case and ISO weekday, up to 3 ranges from distinct sorted quarter hours.
CREATE TEMP TABLE bh_ranges AS
WITH k AS (SELECT c.id, d.dow, floor(random() * 4)::integer AS n
             FROM bh_cases c CROSS JOIN generate_series(1, 7) AS d(dow)),
     marks AS (SELECT k.id, k.dow, m.q, row_number() OVER (PARTITION BY k.id, k.dow ORDER BY m.q) AS r
                 FROM k CROSS JOIN LATERAL (SELECT q FROM generate_series(0, 96) q
                                             WHERE k.n > 0 ORDER BY random() LIMIT 2 * k.n) m)
SELECT a.id, a.dow, a.q * 15 AS s, b.q * 15 AS e
  FROM marks a JOIN marks b ON b.id = a.id AND b.dow = a.dow AND b.r = a.r + 1
 WHERE a.r % 2 = 1;
-- Every case open on a day that is not skipped.
INSERT INTO bh_ranges
SELECT c.id, d, 540, 1020 FROM bh_cases c,
       LATERAL (SELECT min(x) AS d FROM generate_series(1, 7) x WHERE NOT x = ANY (c.skip)) f
 WHERE NOT EXISTS (SELECT FROM bh_ranges r WHERE r.id = c.id AND NOT r.dow = ANY (c.skip));
UPDATE bh_cases c SET hours =
    'Mo-Su 10:00-11:00; ' || (SELECT string_agg(
        (ARRAY['Mo', 'Tu', 'We', 'Th', 'Fr', 'Sa', 'Su'])[d.dow] || ' ' ||
        coalesce((SELECT string_agg(to_char(time '00:00' + r.s * interval '1 minute', 'HH24:MI') || '-' ||
                                    CASE WHEN r.e = 1440 THEN '24:00'
                                         ELSE to_char(time '00:00' + r.e * interval '1 minute', 'HH24:MI') END,
                                    ',' ORDER BY r.s)
                    FROM bh_ranges r WHERE r.id = c.id AND r.dow = d.dow), 'off'),
        '; ' ORDER BY d.dow) FROM generate_series(1, 7) d(dow));
CREATE TEMP TABLE bh_expected AS
WITH w AS (SELECT c.*, (SELECT sum(r.e - r.s) * 60 FROM bh_ranges r
                         WHERE r.id = c.id AND NOT r.dow = ANY (c.skip)) AS weekly
             FROM bh_cases c),
     r AS (SELECT w.id, extract(epoch FROM w.after) AS need,
                  greatest(w.assigned, (day + g.s * interval '1 minute') AT TIME ZONE w.tz) AS rs,
                  (day + g.e * interval '1 minute') AT TIME ZONE w.tz AS re
             FROM w
            CROSS JOIN LATERAL generate_series((w.assigned AT TIME ZONE w.tz)::date::timestamp,
                                               (w.assigned AT TIME ZONE w.tz)::date::timestamp
                                               + (7 * (ceil(extract(epoch FROM w.after) / w.weekly) + 2)) * interval '1 day',
                                               interval '1 day') AS day
             JOIN bh_ranges g ON g.id = w.id AND g.dow = extract(isodow FROM day)
            WHERE NOT extract(isodow FROM day)::integer = ANY (w.skip)),
     o AS (SELECT id, rs, need, extract(epoch FROM re - rs) AS len,
                  sum(extract(epoch FROM re - rs)) OVER (PARTITION BY id ORDER BY rs) AS upto
             FROM r WHERE re > rs)
SELECT DISTINCT ON (id) id, rs + (need - (upto - len)) * interval '1 second' AS due
  FROM o WHERE upto >= need ORDER BY id, rs;
SELECT is((SELECT count(*) FROM bh_cases c LEFT JOIN bh_expected x USING (id)
            WHERE aimroute.business_hours_deadline(c.assigned, c.after, c.hours, c.tz, c.skip)
                  IS DISTINCT FROM x.due),
          0::bigint,
          '1,500 random schedules, assignments over two years in seven zones: C and SQL agree on every deadline');
SELECT cmp_ok((SELECT count(*) FROM bh_cases c
                WHERE aimroute.business_hours_deadline(c.assigned, c.after, c.hours, c.tz, c.skip)
                      > c.assigned + c.after), '>', 1000::bigint,
              'and most deadlines are later than the elapsed clock''s (the comparison is not trivial)');

-- The configuration: a dealer's hours are checked, the setting too.
INSERT INTO brands VALUES ('RBH', 'Business hours test brand');
INSERT INTO dealers (dealer_number, name, country, postal_code, business_hours, timezone) VALUES
    ('RBH-HQ', 'HQ', 'US', '10001', NULL, NULL),
    ('RBH-CHI', 'Chicago', 'US', '60601', 'Mo-Fr 08:00-18:00', NULL),
    ('RBH-MKE', 'Milwaukee', 'US', '53202', 'Mo-Sa 09:00-17:00; Sa 09:00-12:00', 'Europe/Berlin'),
    ('RBH-MAD', 'Madison', 'US', '53703', NULL, NULL);
INSERT INTO dealer_brands VALUES ('RBH-CHI', 'RBH'), ('RBH-MKE', 'RBH'), ('RBH-MAD', 'RBH');
SELECT throws_ok($$INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code, business_hours)
                   VALUES ('RBH-BAD', 'Bad', 'US', '60601', 'Mo-Fr 08:00-18:00; PH off')$$, '22023',
                 'invalid business hours at character 20: "PH"', 'a dealer with bad business hours is refused');
SELECT throws_ok($$UPDATE aimroute.dealers SET business_hours = 'sunrise-sunset' WHERE dealer_number = 'RBH-CHI'$$,
                 '22023', 'invalid business hours at character 1: "sunrise-sunset"', 'and so is an UPDATE');
SELECT throws_ok($$UPDATE aimroute.settings SET reroute_clock = 'hourly'$$, '22023',
                 'invalid value for setting "reroute_clock": hourly', 'reroute_clock is elapsed or business_hours');
SELECT is((SELECT reroute_clock FROM settings), 'elapsed', 'the default clock is elapsed');
UPDATE settings SET default_dealer_number = 'RBH-HQ', radius_enabled = true, radius_miles = 1500,
       radius_countries = '{US,CA}', product_routing_enabled = false, inventory_routing_enabled = false,
       reroute_enabled = true, reroute_after = '4 hours', reroute_skip_days = '{}',
       reroute_max_dealers = 3, timezone = 'America/Chicago', reroute_clock = 'business_hours';

-- reroute_due_at(assigned_at, dealer): the dealer's hours in its zone, or
-- the elapsed clock for a dealer without hours.
SELECT is(reroute_due_at('2026-12-04 22:00Z', 'RBH-MKE') AT TIME ZONE 'UTC', '2026-12-07 09:00',
          'another zone than the OEM''s: Friday 16:00 CST is 23:00 in Berlin; Saturday 09:00-12:00, Monday 09:00 + 1 hour (CET)');
SELECT is(reroute_due_at('2026-12-04 22:00Z', 'RBH-CHI') AT TIME ZONE 'UTC', '2026-12-07 16:00',
          'NULL timezone: the OEM''s, Friday 16:00 CST + 2 hours, Monday 08:00 + 2 hours');
SELECT is(reroute_due_at('2026-12-04 22:00Z', 'RBH-MAD'), reroute_deadline('2026-12-04 22:00Z', '4 hours', '{}', 'America/Chicago'),
          'a dealer without business hours keeps the elapsed clock');
UPDATE dealers SET business_hours = 'off' WHERE dealer_number = 'RBH-MAD';
SELECT is(reroute_due_at('2026-12-04 22:00Z', 'RBH-MAD'), reroute_deadline('2026-12-04 22:00Z', '4 hours', '{}', 'America/Chicago'),
          'and so does a dealer that is never open');
UPDATE dealers SET business_hours = NULL WHERE dealer_number = 'RBH-MAD';

-- From here on, whenever the test runs, the clocks differ: each dealer is
-- open only on one day, two or three days from now in its zone.
UPDATE dealers SET business_hours = left(to_char(now() AT TIME ZONE 'America/Chicago' + interval '3 days', 'Dy'), 2)
                                    || ' 10:00-18:00'
 WHERE dealer_number = 'RBH-CHI';
UPDATE dealers SET business_hours = left(to_char(now() AT TIME ZONE 'Europe/Berlin' + interval '2 days', 'Dy'), 2)
                                    || ' 10:00-18:00'
 WHERE dealer_number = 'RBH-MKE';

-- The routing trigger (C) gives the deadline of the dealer it chose.
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('RBH', 'US', '60601', 'bh');
SELECT is((SELECT dealer_number FROM leads WHERE comment = 'bh'), 'RBH-CHI', 'routed to Chicago');
SELECT is((SELECT reroute_due_at FROM leads WHERE comment = 'bh'),
          (SELECT business_hours_deadline(routed_at, '4 hours', d.business_hours, 'America/Chicago', '{}')
             FROM leads l JOIN dealers d USING (dealer_number) WHERE l.comment = 'bh'),
          'the routing trigger counts Chicago''s business hours');
SELECT ok((SELECT reroute_due_at > routed_at + interval '1 day' FROM leads WHERE comment = 'bh'),
          'not four elapsed hours');
SELECT is((SELECT reroute_due_at FROM leads WHERE comment = 'bh'),
          (SELECT reroute_due_at(routed_at, dealer_number) FROM leads WHERE comment = 'bh'),
          'the trigger (C) and reroute_due_at(assigned_at, dealer) (SQL) agree');

-- A move gives the new dealer its own deadline.
SELECT reassign(lead_id, 'RBH-MKE', 'test') FROM leads WHERE comment = 'bh';
SELECT is((SELECT reroute_due_at FROM leads WHERE comment = 'bh'), reroute_due_at(now(), 'RBH-MKE'),
          'reassign: Milwaukee''s hours in Berlin time from now');
-- A region user's move by UPDATE: the new dealer's hours, read with the
-- region user's rights.
CREATE ROLE rbh_region IN ROLE aimroute_region;
UPDATE dealers SET region = 'BH Lakes' WHERE dealer_number IN ('RBH-CHI', 'RBH-MKE', 'RBH-MAD');
INSERT INTO user_scopes (role_name, dealer_number, region) VALUES ('rbh_region', NULL, 'BH Lakes');
SET LOCAL ROLE rbh_region;
SELECT lives_ok($$UPDATE aimroute.leads SET dealer_number = 'RBH-CHI' WHERE comment = 'bh'$$,
                'a region user moves the lead back to Chicago by UPDATE');
RESET ROLE;
SELECT is((SELECT dealer_number || ' ' || (reroute_due_at = reroute_due_at(now(), 'RBH-CHI'))
             FROM leads WHERE comment = 'bh'), 'RBH-CHI true',
          'with Chicago''s business-hours deadline from now');

-- Re-routing: assigned five hours ago to a dealer open only on a day that
-- is neither today nor yesterday, the lead is not overdue, although the
-- elapsed clock's deadline has passed; open 24/7, it is.
UPDATE dealers SET business_hours = left(to_char(now() AT TIME ZONE 'America/Chicago' + interval '3 days', 'Dy'), 2)
                                    || ' 10:00-18:00'
 WHERE dealer_number = 'RBH-CHI';
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('RBH', 'US', '60601', 'overdue?');
UPDATE leads SET reroute_due_at = reroute_due_at(now() - interval '5 hours', dealer_number) WHERE comment = 'overdue?';
SELECT ok((SELECT reroute_due_at > now() + interval '2 days' FROM leads WHERE comment = 'overdue?'),
          'assigned 5 hours ago to a dealer closed since: 4 open hours have not passed');
SELECT ok(reroute_deadline(now() - interval '5 hours', '4 hours', '{}', 'America/Chicago') < now(),
          'while the elapsed clock''s deadline has');
SELECT is(reroute_overdue(), 0, 'reroute_overdue leaves the lead before its business-hours deadline');
SELECT is((SELECT dealer_number FROM leads WHERE comment = 'overdue?'), 'RBH-CHI', 'with its dealer');
UPDATE dealers SET business_hours = '24/7' WHERE dealer_number = 'RBH-CHI';
UPDATE leads SET reroute_due_at = reroute_due_at(now() - interval '5 hours', dealer_number) WHERE comment = 'overdue?';
SELECT is(reroute_overdue(), 1, 'open 24/7, the same lead is past its deadline and re-routed');
SELECT is((SELECT dealer_number || ' ' || match_type FROM leads WHERE comment = 'overdue?'), 'RBH-MKE Re-Route',
          'to the next best dealer');
SELECT ok((SELECT h.reason LIKE 'not viewed by dealer RBH-CHI by % America/Chicago (reroute_after 04:00:00 of its business hours: 24/7, America/Chicago); excluded %'
              FROM lead_history h WHERE h.lead_id = (SELECT lead_id FROM leads WHERE comment = 'overdue?')),
          'the explanation names the business-hours clock and the hours it counted');
SELECT is((SELECT reroute_due_at FROM leads WHERE comment = 'overdue?'), reroute_due_at(now(), 'RBH-MKE'),
          'which gets the deadline of its own hours');

SELECT * FROM finish();
ROLLBACK;
