-- test/reroute_deadline.sql: the re-route deadline (SPEC section 3).  A
-- routed lead is due reroute_after after its assignment; a deadline on a
-- skipped ISO weekday (in settings.timezone) moves to the same local time
-- on the next day that is not skipped.  Exact across changes of summer
-- time and week ends, the same in C (the routing trigger) and in SQL.
-- Expected instants are written in UTC and were worked out by hand; the
-- comments give the local times.  Everything is rolled back.
BEGIN;
SELECT plan(28);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = warning;
-- The session's own time zone must not matter: use one that is neither
-- UTC nor the OEM's.
SET LOCAL timezone = 'Asia/Kolkata';

-- reroute_deadline(assigned_at, after, skip_days, timezone) in UTC.
CREATE FUNCTION pg_temp.due(assigned timestamptz, after interval, skip integer[], tz text)
RETURNS timestamp LANGUAGE sql AS $$
    SELECT aimroute.reroute_deadline(assigned, after, skip, tz) AT TIME ZONE 'UTC'
$$;

-- Plain arithmetic.
SELECT is(pg_temp.due('2026-11-23 10:00Z', '24 hours', '{}', 'UTC'), '2026-11-24 10:00',
          'no skip day: assignment + 24 hours');
SELECT is(pg_temp.due('2026-11-23 10:00:30.25Z', '90 minutes', '{}', 'UTC'), '2026-11-23 11:30:30.25',
          'minutes and fractions of a second are kept');
SELECT is(pg_temp.due('2026-11-25 09:00Z', '3 days', '{6,7}', 'UTC'), '2026-11-30 09:00',
          'Wednesday + 3 days is Saturday: skipped with Sunday, due Monday at the same time');

-- Summer time starts in New York on Sunday 2026-03-08 at 02:00 (EST, UTC-5,
-- becomes EDT, UTC-4).
SELECT is(pg_temp.due('2026-03-07 17:00Z', '24 hours', '{}', 'America/New_York'), '2026-03-08 17:00',
          'hours are elapsed time: Saturday 12:00 EST + 24 hours is Sunday 13:00 EDT');
SELECT is(pg_temp.due('2026-03-07 17:00Z', '1 day', '{}', 'America/New_York'), '2026-03-08 16:00',
          'days are calendar days in the OEM''s zone: Saturday 12:00 EST + 1 day is Sunday 12:00 EDT');
SELECT is(pg_temp.due('2026-03-06 15:00Z', '24 hours', '{6,7}', 'America/New_York'), '2026-03-09 14:00',
          'Friday 10:00 EST + 24 hours is Saturday: skipped to Monday 10:00 EDT, across the change');
SELECT is(pg_temp.due('2026-03-06 07:30Z', '24 hours', '{6}', 'America/New_York'), '2026-03-08 07:30',
          'moved onto Sunday 02:30, a time that does not exist: PostgreSQL''s rule gives 03:30 EDT');

-- Summer time ends in New York on Sunday 2026-11-01 at 02:00 (EDT becomes
-- EST); 01:00 to 02:00 happens twice.
SELECT is(pg_temp.due('2026-10-31 05:30Z', '24 hours', '{7}', 'America/New_York'), '2026-11-02 06:30',
          'Saturday 01:30 EDT + 24 hours is Sunday: skipped to Monday 01:30 EST');
SELECT is(pg_temp.due('2026-10-30 05:30Z', '24 hours', '{6}', 'America/New_York'), '2026-11-01 06:30',
          'moved onto Sunday 01:30, a time that happens twice: PostgreSQL''s rule takes the later (EST)');
SELECT is(pg_temp.due('2026-10-31 16:00Z', '24 hours', '{}', 'America/New_York'), '2026-11-01 16:00',
          'no skip day: 24 elapsed hours even on a 25-hour day (Saturday 12:00 EDT, Sunday 11:00 EST)');

-- Skip days are weekdays in the OEM's zone, not in UTC: Monday 2026-11-23
-- 23:00 in Los Angeles is Tuesday 07:00 UTC.
SELECT is(pg_temp.due('2026-11-23 07:00Z', '24 hours', '{1}', 'America/Los_Angeles'), '2026-11-25 07:00',
          'Sunday 23:00 PST + 24 hours is Monday in Los Angeles (Tuesday in UTC): skipped to Tuesday 23:00');
SELECT is(pg_temp.due('2026-11-24 07:00Z', '24 hours', '{1}', 'America/Los_Angeles'), '2026-11-25 07:00',
          'Monday 23:00 PST + 24 hours is Tuesday in Los Angeles: not skipped, though Monday is');
-- Six skip days in a row, across the end of the year.
SELECT is(pg_temp.due('2026-12-31 12:00Z', '12 hours', '{1,2,3,4,5,6}', 'Europe/Berlin'), '2027-01-03 00:00',
          'only Sunday is not skipped: Friday 2027-01-01 01:00 CET moves to Sunday 01:00');

-- Refused settings.
SELECT throws_ok($$SELECT aimroute.reroute_deadline(now(), '1 hour', '{8}', 'UTC')$$, '22023',
                 'invalid skip day 8', 'a skip day outside 1..7 is refused');
SELECT throws_ok($$SELECT aimroute.reroute_deadline(now(), '1 hour', '{1,2,3,4,5,6,7}', 'UTC')$$, '22023',
                 'every weekday is a skip day', 'seven skip days are refused');
SELECT throws_ok($$SELECT aimroute.reroute_deadline(now(), '1 hour', '{}', 'Mars/Olympus')$$, '22023',
                 'time zone "Mars/Olympus" not recognized', 'an unknown time zone is refused');

-- An independent SQL statement of the rule, for hours-only intervals:
-- elapsed time first, then whole local days while the local weekday is
-- skipped.  It must agree with the C code everywhere.
CREATE FUNCTION pg_temp.due_by_sql(assigned timestamptz, after interval, skip integer[], tz text)
RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    due timestamptz := assigned + after;
BEGIN
    WHILE extract(isodow FROM due AT TIME ZONE tz)::integer = ANY (skip) LOOP
        due := ((due AT TIME ZONE tz) + interval '1 day') AT TIME ZONE tz;
    END LOOP;
    RETURN due;
END
$$;
SELECT setseed(0.23);
CREATE TEMP TABLE cases AS
SELECT timestamptz '2026-01-01 00:00Z' + random() * interval '730 days' AS assigned,
       (ARRAY['1 minute', '90 minutes', '24 hours', '48 hours', '73 hours'])[1 + floor(random() * 5)]::interval AS after,
       (ARRAY['{}', '{6,7}', '{7}', '{1}', '{5,6,7}', '{2,4,6}'])[1 + floor(random() * 6)]::integer[] AS skip,
       (ARRAY['America/New_York', 'America/Los_Angeles', 'America/St_Johns', 'Europe/Berlin',
              'Australia/Lord_Howe', 'UTC'])[1 + floor(random() * 6)] AS tz
  FROM generate_series(1, 3000);
SELECT is((SELECT count(*) FROM cases
            WHERE aimroute.reroute_deadline(assigned, after, skip, tz) <> pg_temp.due_by_sql(assigned, after, skip, tz)),
          0::bigint, '3,000 random assignments over two years in six zones: C and SQL agree on every deadline');

-- The routing trigger sets reroute_due_at from the settings.
INSERT INTO brands VALUES ('RRD', 'Deadline test brand');
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
    ('RRD-HQ', 'Deadline HQ', 'US', '10001'),
    ('RRD-CHI', 'Chicago', 'US', '60601'),
    ('RRD-MKE', 'Milwaukee', 'US', '53202');
INSERT INTO dealer_brands VALUES ('RRD-CHI', 'RRD'), ('RRD-MKE', 'RRD');
UPDATE settings SET default_dealer_number = 'RRD-HQ', radius_enabled = true, radius_miles = 1500,
       radius_countries = '{US,CA}', product_routing_enabled = false, inventory_routing_enabled = false,
       reroute_enabled = false, reroute_after = '24 hours', reroute_skip_days = '{6,7}',
       timezone = 'America/Chicago';

INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('RRD', 'US', '60601', 'off');
SELECT is((SELECT reroute_due_at FROM leads WHERE comment = 'off'), NULL,
          're-routing off: no deadline');
SELECT is(reroute_due_at(now()), NULL, 'reroute_due_at() with re-routing off: NULL');

UPDATE settings SET reroute_enabled = true;
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('RRD', 'US', '60601', 'on');
SELECT is((SELECT reroute_due_at FROM leads WHERE comment = 'on'),
          (SELECT reroute_deadline(routed_at, '24 hours', '{6,7}', 'America/Chicago') FROM leads WHERE comment = 'on'),
          're-routing on: the deadline of the routing time under the settings');
SELECT ok((SELECT reroute_due_at >= routed_at + interval '24 hours' FROM leads WHERE comment = 'on'),
          'at least reroute_after after the routing time');
SELECT ok((SELECT extract(isodow FROM reroute_due_at AT TIME ZONE 'America/Chicago') NOT IN (6, 7)
             FROM leads WHERE comment = 'on'),
          'never on a skipped weekday in the OEM''s zone');
SELECT is((SELECT reroute_due_at FROM leads WHERE comment = 'on'),
          (SELECT reroute_due_at(routed_at) FROM leads WHERE comment = 'on'),
          'the trigger (C) and reroute_due_at() (SQL) agree');

-- A settings change in this transaction rebuilds the session's model of
-- the configuration: the next lead's deadline follows the new settings.
UPDATE settings SET reroute_after = '48 hours';
INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('RRD', 'US', '60601', 'rebuilt');
SELECT is((SELECT reroute_due_at FROM leads WHERE comment = 'rebuilt'),
          (SELECT reroute_due_at(routed_at) FROM leads WHERE comment = 'rebuilt'),
          'routed after a settings change in the same transaction: the deadline of the new settings');
UPDATE settings SET reroute_after = '24 hours';

INSERT INTO leads (brand_code, country, postal_code, comment) VALUES ('NOBRAND', 'US', '60601', 'default');
SELECT is((SELECT match_type::text || ' ' || coalesce(reroute_due_at::text, 'no deadline') FROM leads WHERE comment = 'default'),
          'Default no deadline', 'a lead that goes to the default dealer has no deadline: it is the end of the line');
INSERT INTO leads (brand_code, country, postal_code, send_to_dealer, comment)
VALUES ('RRD', 'US', '60601', false, 'not sent');
SELECT is((SELECT reroute_due_at FROM leads WHERE comment = 'not sent'), NULL,
          'a lead not sent to its dealer has no deadline: the dealer cannot view it');
INSERT INTO leads (brand_code, country, postal_code, reroute_due_at, comment)
VALUES ('RRD', 'US', '60601', '2000-01-01Z', 'given');
SELECT isnt((SELECT reroute_due_at FROM leads WHERE comment = 'given'), '2000-01-01Z'::timestamptz,
            'a deadline given on INSERT is replaced by routing''s');

-- A reassignment starts a new deadline for the new dealer.
UPDATE settings SET reroute_after = '30 hours', reroute_skip_days = '{}';
SELECT reassign(lead_id, 'RRD-MKE', 'test') FROM leads WHERE comment = 'on';
SELECT is((SELECT reroute_due_at FROM leads WHERE comment = 'on'), now() + interval '30 hours',
          'reassign: the new dealer has reroute_after from now');

SELECT * FROM finish();
ROLLBACK;
