-- test/staging_paths.sql: the paths of aimroute.process_staging() that a
-- clean batch does not take.  A chunk whose INSERT fails because of a few
-- rows (retried 100 leads at a time, then one at a time), an error that is
-- not about a row in the middle of that retry, duplicates within one batch
-- (chains included), and one batch with every outcome.  Also that marking
-- the outcomes updates the rows in place (HOT).
BEGIN;
SELECT plan(25);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = error;

-- A brand of its own: PT1 in St. Louis sells it, PT-HQ is the default.
INSERT INTO brands VALUES ('SPT', 'Staging Paths');
INSERT INTO dealers (dealer_number, name, country, postal_code)
VALUES ('PT1', 'Paths St. Louis', 'US', '63101'), ('PT-HQ', 'Paths Corporate', 'US', '63101');
INSERT INTO dealer_brands VALUES ('PT1', 'SPT');
UPDATE settings SET default_dealer_number = 'PT-HQ', dedupe_window = '60 seconds',
       radius_enabled = true, radius_miles = 500, radius_countries = '{US}';

-- A constraint the staging checks know nothing of: the INSERT refuses
-- customers called Refused*.
ALTER TABLE leads ADD CONSTRAINT staging_paths_refused CHECK (first_name NOT LIKE 'Refused%') NOT VALID;

--
-- 1. Two chunks (12,000 rows), each with refused rows: rows 150 and 151
--    (one piece of 100 leads, or two), 3210 and 11005.  Row 160 repeats
--    row 100 and row 3300 repeats row 3210 (refused).  Batch fw, staged
--    after and processed before, repeats rows 151 and 7000: its rows wait
--    for the leads of those.
--
CREATE TEMP TABLE fb_rows AS
SELECT g, CASE g WHEN 160 THEN 100 WHEN 3300 THEN 3210 ELSE g END AS src
  FROM generate_series(1, 12000) g;
INSERT INTO lead_staging (batch_id, brand_code, email, country, postal_code, first_name, comment)
SELECT 'fb', 'SPT', 'fb' || src || '@example.com', 'US', '63101',
       CASE WHEN src IN (150, 151, 3210, 11005) THEN 'Refused' || src ELSE 'Good' || src END,
       'fb ' || src
  FROM fb_rows ORDER BY g;
INSERT INTO lead_staging (batch_id, brand_code, email, country, postal_code, first_name, comment)
SELECT 'fw', brand_code, email, country, postal_code, first_name, comment
  FROM lead_staging WHERE batch_id = 'fb' AND comment IN ('fb 151', 'fb 7000') ORDER BY staging_id;
SELECT results_eq($$SELECT status, rows FROM process_staging('fw')$$,
                  $$VALUES ('processed', 0::bigint), ('rejected', 0::bigint), ('duplicate', 2::bigint)$$,
                  'batch fw: both rows repeat rows of fb, not processed yet');

CREATE TEMP TABLE fb_run AS
SELECT (SELECT count(*) FROM leads) AS leads_before,
       pg_stat_get_xact_tuples_hot_updated('aimroute.lead_staging'::regclass) AS hot_before,
       pg_stat_get_xact_tuples_updated('aimroute.lead_staging'::regclass) AS updated_before;
SELECT results_eq($$SELECT status, rows FROM process_staging('fb')$$,
                  $$VALUES ('processed', 11994::bigint), ('rejected', 5::bigint), ('duplicate', 1::bigint)$$,
                  'batch fb: 11,994 leads, 4 refused rows and the repeat of one rejected, 1 duplicate');
SELECT set_eq($$SELECT comment FROM lead_staging WHERE batch_id = 'fb' AND status = 'rejected'$$,
              $$VALUES ('fb 150'), ('fb 151'), ('fb 3210'), ('fb 11005')$$,
              'the rejected rows are the refused ones and the repeat of one');
SELECT is((SELECT count(*) FROM lead_staging
            WHERE batch_id = 'fb' AND status = 'rejected' AND duplicate_of IS NULL
              AND reason <> 'could not become a lead: new row for relation "leads" violates check constraint "staging_paths_refused" (SQLSTATE 23514)'),
          0::bigint, 'a refused row has the error as its reason');
SELECT is((SELECT reason FROM lead_staging WHERE batch_id = 'fb' AND staging_id =
                  (SELECT max(staging_id) FROM lead_staging WHERE batch_id = 'fb' AND comment = 'fb 3210')),
          (SELECT format('identical to staging row %s, which was rejected: %s', staging_id, reason)
             FROM lead_staging WHERE batch_id = 'fb' AND comment = 'fb 3210' AND duplicate_of IS NULL),
          'the repeat of a refused row of the same chunk is rejected with it');
SELECT is((SELECT count(*) FROM lead_staging WHERE batch_id = 'fb' AND status = 'rejected' AND lead_id IS NOT NULL),
          0::bigint, 'rejected rows have no lead');
SELECT is((SELECT count(*) FROM leads) - (SELECT leads_before FROM fb_run), 11994::bigint,
          'as many leads as processed rows: a refused row left no lead, and no lead was inserted twice');
SELECT is((SELECT count(*) FROM lead_staging s JOIN leads l USING (lead_id)
            WHERE s.batch_id = 'fb' AND s.status = 'processed'
              AND l.comment = s.comment AND l.first_name = s.first_name AND l.email = s.email
              AND l.dealer_number = 'PT1'),
          11994::bigint, 'each processed row has a lead of its own with its own data, routed');
SELECT is((SELECT d.lead_id = o.lead_id AND d.duplicate_of = o.staging_id
             FROM lead_staging d JOIN lead_staging o ON o.batch_id = 'fb' AND o.comment = 'fb 100' AND o.status = 'processed'
            WHERE d.batch_id = 'fb' AND d.status = 'duplicate'),
          true, 'the repeat of a good row of the same chunk is its duplicate, with its lead');
SELECT results_eq(
    $$SELECT s.comment, s.status, s.lead_id = o.lead_id,
             s.reason = CASE s.status
                 WHEN 'rejected' THEN format('identical to staging row %s, which was rejected: %s', o.staging_id, o.reason)
                 ELSE format('identical to staging row %s of batch ''fb'', staged within the dedupe window of 60 seconds', o.staging_id) END
        FROM lead_staging s JOIN lead_staging o ON o.staging_id = s.duplicate_of
       WHERE s.batch_id = 'fw' ORDER BY s.staging_id$$,
    $$VALUES ('fb 151', 'rejected', NULL::boolean, true), ('fb 7000', 'duplicate', true, true)$$,
    'the rows of fw that waited: the repeat of a refused row is rejected, the other has its lead');
-- Marking the outcomes: one UPDATE of each row, in place when its page has
-- room, as the fillfactor leaves it.  (The repeats waiting in fw, and the
-- one rejected with its original, are updated twice.)
SELECT is((SELECT pg_stat_get_xact_tuples_updated('aimroute.lead_staging'::regclass) - updated_before FROM fb_run),
          12000::bigint + 3, 'each row of fb is updated once, the three that waited once more');
SELECT cmp_ok((SELECT pg_stat_get_xact_tuples_hot_updated('aimroute.lead_staging'::regclass) - hot_before FROM fb_run),
              '>=', 11880::bigint, 'nearly every row (99%) was updated in place (HOT): no index covers the outcome');

--
-- 2. An error that is not about a row, met while the chunk is retried in
--    pieces: the call is aborted and nothing of it is kept.
--
CREATE FUNCTION pg_temp.staging_paths_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.first_name = 'Locked' THEN
        RAISE EXCEPTION 'could not obtain a lock' USING ERRCODE = 'lock_not_available';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER staging_paths_lock BEFORE INSERT ON leads FOR EACH ROW EXECUTE FUNCTION pg_temp.staging_paths_lock();
INSERT INTO lead_staging (batch_id, brand_code, email, country, postal_code, first_name, comment)
SELECT 'fa', 'SPT', 'fa' || g || '@example.com', 'US', '63101',
       CASE g WHEN 10 THEN 'Refused' WHEN 250 THEN 'Locked' ELSE 'Fine' END, 'fa ' || g
  FROM generate_series(1, 300) g;
CREATE TEMP TABLE fa_run AS SELECT count(*) AS leads_before FROM leads;
SELECT throws_ok($$SELECT * FROM process_staging('fa')$$, '55P03', 'could not obtain a lock',
                 'a lock error on row 250, while the chunk is retried because of row 10, aborts the call');
SELECT is((SELECT count(*) FROM lead_staging WHERE batch_id = 'fa' AND (status IS NOT NULL OR lead_id IS NOT NULL)),
          0::bigint, 'every row of the aborted batch is still pending');
SELECT is((SELECT count(*) FROM leads) - (SELECT leads_before FROM fa_run), 0::bigint,
          'and none of its leads exists');
DROP TRIGGER staging_paths_lock ON leads;
SELECT results_eq($$SELECT status, rows FROM process_staging('fa')$$,
                  $$VALUES ('processed', 299::bigint), ('rejected', 1::bigint), ('duplicate', 0::bigint)$$,
                  'once fixed, the batch is processed again: only the refused row is rejected');

--
-- 3. Duplicates within one batch, with staged_at set: A, then B = A 50 s
--    later, C = A 100 s later, D = A 170 s later.  B repeats A; the
--    earliest row within the window of C is B, a duplicate itself, so C
--    gets A's lead; D is more than 60 s from every other row: a lead.
--    E and F differ only by NULL and '' (not duplicates); G and H are the
--    same and staged at the same moment.
--
INSERT INTO lead_staging (batch_id, staged_at, brand_code, email, country, postal_code, address, comment)
SELECT 'dd', t0 + s.offs * interval '1 second', 'SPT', s.email, 'US', '63101', s.address, s.comment
  FROM (SELECT clock_timestamp() - interval '10 minutes' AS t0) AS t,
       (VALUES (1, 0, 'chain@example.com', NULL, 'A'), (2, 50, 'chain@example.com', NULL, 'A'),
               (3, 100, 'chain@example.com', NULL, 'A'), (4, 170, 'chain@example.com', NULL, 'A'),
               (5, 0, 'e@example.com', NULL, 'E'), (6, 1, 'e@example.com', '', 'E'),
               (7, 5, 'g@example.com', NULL, 'G'), (8, 5, 'g@example.com', NULL, 'G')) AS s(n, offs, email, address, comment)
 ORDER BY s.n;
SELECT results_eq($$SELECT status, rows FROM process_staging('dd')$$,
                  $$VALUES ('processed', 5::bigint), ('rejected', 0::bigint), ('duplicate', 3::bigint)$$,
                  'batch dd: 5 leads and 3 duplicates');
SELECT results_eq(
    $$SELECT s.status, o.n AS duplicate_of_row, s.lead_id = first_value(s.lead_id) OVER (PARTITION BY s.comment ORDER BY s.n)
        FROM (SELECT x.*, row_number() OVER (ORDER BY x.staging_id) AS n FROM lead_staging x WHERE x.batch_id = 'dd') s
        LEFT JOIN (SELECT x.staging_id, row_number() OVER (ORDER BY x.staging_id) AS n FROM lead_staging x WHERE x.batch_id = 'dd') o
               ON o.staging_id = s.duplicate_of
       ORDER BY s.n$$,
    $$VALUES ('processed', NULL, true), ('duplicate', 1::bigint, true), ('duplicate', 2::bigint, true),
             ('processed', NULL, false), ('processed', NULL, true), ('processed', NULL, false),
             ('processed', NULL, true), ('duplicate', 7::bigint, true)$$,
    'B and C have the lead of A (C through B), D is a lead of its own, E and F differ, H repeats G');
SELECT is((SELECT reason FROM lead_staging WHERE batch_id = 'dd' AND comment = 'G' AND status = 'duplicate'),
          (SELECT format('identical to staging row %s of batch ''dd'', staged within the dedupe window of 60 seconds', staging_id)
             FROM lead_staging WHERE batch_id = 'dd' AND comment = 'G' AND status = 'processed'),
          'a duplicate names the row and batch it repeats');

--
-- 4. One batch with every outcome, rows in this order, each line the
--    outcome expected.  Batch mo is processed before (row m1), batch mu
--    is staged before and processed after (row u1).
--
INSERT INTO lead_staging (batch_id, brand_code, email, country, postal_code, first_name, comment)
VALUES ('mo', 'SPT', 'm1@example.com', 'US', '63101', 'Earlier', 'm1');
SELECT results_eq($$SELECT status, rows FROM process_staging('mo')$$,
                  $$VALUES ('processed', 1::bigint), ('rejected', 0::bigint), ('duplicate', 0::bigint)$$,
                  'batch mo: one lead');
INSERT INTO lead_staging (batch_id, brand_code, email, country, postal_code, first_name, comment)
VALUES ('mu', 'SPT', 'u1@example.com', 'US', '63101', 'Unprocessed', 'u1');
INSERT INTO lead_staging (batch_id, received_at, send_to_dealer, brand_code, email, phone, country, postal_code,
                          first_name, comment)
VALUES ('mix', NULL, NULL, 'SPT', 'p1@example.com', NULL, 'US', '63101', 'Plain', 'processed'),
       ('mix', '2024-05-01 10:00:00+00', 'no', 'NOPE', NULL, '314 555 0100', 'Atlantis', 'XXXXX', 'Odd', 'processed'),
       ('mix', 'whenever', NULL, 'SPT', 'r1@example.com', NULL, 'US', '63101', 'Late', 'rejected: received_at'),
       ('mix', NULL, 'perhaps', 'SPT', 'r2@example.com', NULL, 'US', '63101', 'Maybe', 'rejected: send_to_dealer'),
       ('mix', NULL, NULL, 'SPT', NULL, '12', 'US', '63101', 'Nobody', 'rejected: no contact'),
       ('mix', NULL, NULL, 'SPT', 'not-an-address', NULL, 'US', '63101', 'Bad', 'rejected: email'),
       ('mix', NULL, NULL, 'SPT', 'r5@example.com', NULL, 'US', repeat('9', 1001), 'Long', 'rejected: too long'),
       ('mix', NULL, NULL, 'SPT', 'r6@example.com', NULL, 'US', '63101', 'Refused', 'rejected: insert'),
       ('mix', NULL, NULL, 'SPT', 'p1@example.com', NULL, 'US', '63101', 'Plain', 'processed'),
       ('mix', NULL, NULL, 'SPT', 'r6@example.com', NULL, 'US', '63101', 'Refused', 'rejected: insert'),
       ('mix', NULL, NULL, 'SPT', 'm1@example.com', NULL, 'US', '63101', 'Earlier', 'm1'),
       ('mix', NULL, NULL, 'SPT', 'u1@example.com', NULL, 'US', '63101', 'Unprocessed', 'u1');
CREATE TEMP TABLE mix_expected (n, status, duplicate_of, has_lead, reason) AS
VALUES (1, 'processed', NULL, true, NULL),
       (2, 'processed', NULL, true, NULL),
       (3, 'rejected', NULL, false, 'received_at "whenever" is not a timestamp%'),
       (4, 'rejected', NULL, false, 'send_to_dealer "perhaps" is not a boolean%'),
       (5, 'rejected', NULL, false, 'no way to contact the customer: no email, and phone "12" has fewer than 5 digits'),
       (6, 'rejected', NULL, false, 'email "not-an-address" is not an address%'),
       (7, 'rejected', NULL, false, 'postal_code is too long (1001 characters; at most 1000)'),
       (8, 'rejected', NULL, false, 'could not become a lead: %(SQLSTATE 23514)'),
       (9, 'duplicate', 'mix 1', true, 'identical to staging row % of batch ''mix'', %'),
       (10, 'rejected', 'mix 8', false, 'identical to staging row %, which was rejected: could not become a lead: %'),
       (11, 'duplicate', 'mo 1', true, 'identical to staging row % of batch ''mo'', %'),
       (12, 'duplicate', 'mu 1', false, 'identical to staging row % of batch ''mu'', %');
SELECT results_eq($$SELECT status, rows FROM process_staging('mix')$$,
                  $$VALUES ('processed', 2::bigint), ('rejected', 7::bigint), ('duplicate', 3::bigint)$$,
                  'batch mix: 2 leads, 7 rejected, 3 duplicates');
CREATE TEMP VIEW mix_outcomes AS
SELECT s.n, s.status, o.batch_id || ' ' || o.n AS duplicate_of, s.lead_id IS NOT NULL AS has_lead, s.reason,
       s.lead_id, o.lead_id AS original_lead_id, s.processed_at
  FROM (SELECT x.*, row_number() OVER (PARTITION BY x.batch_id ORDER BY x.staging_id) AS n
          FROM lead_staging x WHERE x.batch_id IN ('mix', 'mo', 'mu')) s
  LEFT JOIN (SELECT x.*, row_number() OVER (PARTITION BY x.batch_id ORDER BY x.staging_id) AS n
               FROM lead_staging x WHERE x.batch_id IN ('mix', 'mo', 'mu')) o ON o.staging_id = s.duplicate_of
 WHERE s.batch_id = 'mix';
SELECT is((SELECT count(*) FROM mix_outcomes m JOIN mix_expected e USING (n)
            WHERE m.status = e.status AND m.duplicate_of IS NOT DISTINCT FROM e.duplicate_of
              AND m.has_lead = e.has_lead
              AND (m.reason LIKE e.reason OR (m.reason IS NULL AND e.reason IS NULL))
              AND m.processed_at IS NOT NULL),
          12::bigint, 'every row of mix has the outcome, duplicate_of and reason expected');
SELECT is((SELECT count(*) FROM mix_outcomes WHERE status = 'duplicate' AND lead_id IS DISTINCT FROM original_lead_id),
          0::bigint, 'each duplicate has the lead of the row it repeats (none yet for the row of mu)');
SELECT results_eq($$SELECT status, rows FROM process_staging('mu')$$,
                  $$VALUES ('processed', 1::bigint), ('rejected', 0::bigint), ('duplicate', 0::bigint)$$,
                  'batch mu, processed last: one lead');
SELECT is((SELECT lead_id IS NOT NULL AND lead_id = original_lead_id FROM mix_outcomes WHERE n = 12),
          true, 'and the row of mix that waited for it now has its lead');

ALTER TABLE leads DROP CONSTRAINT staging_paths_refused;
SELECT * FROM finish();
ROLLBACK;
