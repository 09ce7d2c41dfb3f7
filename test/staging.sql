-- test/staging.sql: bulk import of 100,000 staged rows, about 1% of them bad,
-- through aimroute.process_staging(), on the real postal data.
BEGIN;
SELECT plan(27);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = warning;

-- A small network: a default dealer, dealers of brand TAP spread over
-- real US ZIP codes and Canadian FSAs, a state territory.
INSERT INTO brands VALUES ('TAP', 'Tap Boats');
INSERT INTO dealers (dealer_number, name, country, postal_code)
SELECT 'US' || lpad(((n - 1) / 1000 + 1)::text, 3, '0'), 'US dealer ' || n, 'US', postal_code
  FROM (SELECT postal_code, row_number() OVER (ORDER BY postal_code) AS n
          FROM postal_codes WHERE country = 'US' AND centroid IS NOT NULL) z
 WHERE n % 1000 = 1;
INSERT INTO dealers (dealer_number, name, country, postal_code)
SELECT 'CA' || lpad(((n - 1) / 100 + 1)::text, 3, '0'), 'CA dealer ' || n, 'CA', postal_code
  FROM (SELECT postal_code, row_number() OVER (ORDER BY postal_code) AS n
          FROM postal_codes WHERE country = 'CA' AND centroid IS NOT NULL) z
 WHERE n % 100 = 1;
INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES ('TAP-HQ', 'Corporate', 'US', '49757');
INSERT INTO dealer_brands SELECT dealer_number, 'TAP' FROM dealers WHERE dealer_number <> 'TAP-HQ';
INSERT INTO territories (dealer_number, kind, country, code) VALUES ('US001', 'state', 'US', 'MI');
UPDATE settings SET default_dealer_number = 'TAP-HQ', dedupe_window = '60 seconds',
       radius_enabled = true, radius_miles = 1500, radius_countries = '{US,CA}';

-- 100,000 rows.  Row g is bad when g % 100 = 7, in one of six ways by
-- (g / 100) % 6; rows with g % 100 in (13, 19, 23, 29) carry lead data the
-- router must cope with (not rejections); row g with g % 1000 = 500 repeats
-- row g - 1 exactly (a duplicate).  comment names the row it was made from.
CREATE TEMP TABLE codes AS
SELECT country, postal_code, row_number() OVER (ORDER BY country DESC, postal_code) - 1 AS k
  FROM postal_codes
 WHERE centroid IS NOT NULL    -- places a dealer of the network is within 1500 miles of
   AND state_code NOT IN ('AK', 'HI', 'PR', 'VI', 'GU', 'AS', 'MP', 'FM', 'MH', 'PW', 'AA', 'AE', 'AP',
                          'YT', 'NT', 'NU');
CREATE TEMP TABLE staging_run (started timestamptz, finished timestamptz, leads_before bigint);
INSERT INTO staging_run (leads_before) SELECT count(*) FROM leads;

INSERT INTO lead_staging (batch_id, received_at, source, brand_code, product_code, first_name,
                          last_name, email, phone, address, city, state_code, country,
                          postal_code, dealer_number, dealer_group, send_to_dealer, comment)
SELECT 'tap-100k',
       CASE WHEN bad = 0 THEN 'last tuesdayish'
            WHEN bad = 5 THEN '2024-02-30 10:00:00+00'
            WHEN g % 4 = 0 THEN NULL
            ELSE (timestamptz '2024-05-01 00:00:00+00' + g * interval '1 minute')::text END,
       CASE WHEN g % 2 = 0 THEN 'web' END,
       CASE WHEN g % 100 = 23 THEN 'NOPE' ELSE 'TAP' END,
       NULL,
       CASE WHEN bad = 4 THEN repeat('x', 1001) ELSE 'First' || g END,
       ' Last' || g || ' ',
       CASE WHEN bad = 2 THEN NULL
            WHEN bad = 3 THEN 'customer' || g || '.example.com'
            WHEN g % 3 = 0 THEN NULL
            ELSE 'customer' || g || '@example.com' END,
       CASE WHEN bad = 2 OR g % 3 = 1 THEN NULL ELSE '+1 555 ' || lpad(g::text, 7, '0') END,
       g || ' Main Street', NULL, NULL,
       CASE WHEN g % 100 = 19 THEN 'Atlantis' ELSE c.country END,
       CASE WHEN g % 100 = 13 THEN 'XXXXX' ELSE c.postal_code END,
       CASE WHEN g % 100 = 29 THEN 'NO-SUCH-DEALER' END,
       NULL,
       CASE WHEN bad = 1 THEN 'maybe' WHEN g % 5 = 0 THEN 'no' END,
       'row ' || g
  FROM (SELECT i, CASE WHEN i % 1000 = 500 THEN i - 1 ELSE i END AS g FROM generate_series(1, 100000) i) s
  CROSS JOIN LATERAL (SELECT CASE WHEN s.g % 100 = 7 THEN (s.g / 100) % 6 END AS bad) b
  JOIN codes c ON c.k = s.g % (SELECT count(*) FROM codes)
 ORDER BY s.i;

SELECT is((SELECT count(*) FROM lead_staging WHERE batch_id = 'tap-100k'), 100000::bigint,
          '100,000 rows are staged');

UPDATE staging_run SET started = clock_timestamp();
CREATE TEMP TABLE summary AS SELECT * FROM process_staging('tap-100k');
UPDATE staging_run SET finished = clock_timestamp();
-- Statistics that see this transaction's 100,000 rows, so that the checks
-- below join by hash, whatever autovacuum last saw of these tables.
ANALYZE aimroute.leads;
ANALYZE aimroute.lead_staging;
SELECT diag(format('process_staging: 100,000 rows in %s s (%s rows/s)',
                   round(extract(epoch FROM finished - started)::numeric, 1),
                   round(100000 / extract(epoch FROM finished - started))))
  FROM staging_run;

SELECT results_eq(
    'SELECT status, rows FROM summary',
    $$VALUES ('processed', 98900::bigint), ('rejected', 1000::bigint), ('duplicate', 100::bigint)$$,
    'the summary counts 98,900 leads, 1,000 rejections and 100 duplicates');
SELECT is((SELECT count(*) FROM lead_staging WHERE batch_id = 'tap-100k' AND status IS NULL),
          0::bigint, 'every staging row has a status');
SELECT is((SELECT count(*) FILTER (WHERE status = 'processed') + count(*) FILTER (WHERE status = 'rejected')
                  + count(*) FILTER (WHERE status = 'duplicate')
             FROM lead_staging WHERE batch_id = 'tap-100k'),
          100000::bigint, 'processed + rejected + duplicate = staged');

-- Processed rows: one lead each, routed, with the row's own data.
SELECT is((SELECT count(*) FROM leads) - (SELECT leads_before FROM staging_run),
          (SELECT count(*) FROM lead_staging WHERE batch_id = 'tap-100k' AND status = 'processed'),
          'as many leads were created as rows were processed');
SELECT is((SELECT count(DISTINCT lead_id) FROM lead_staging WHERE batch_id = 'tap-100k' AND status = 'processed'),
          98900::bigint, 'each processed row has a lead of its own');
SELECT is((SELECT count(*) FROM lead_staging s LEFT JOIN leads l USING (lead_id)
            WHERE s.batch_id = 'tap-100k' AND s.status = 'processed'
              AND (l.lead_id IS NULL OR l.dealer_number IS NULL OR l.match_type IS NULL)),
          0::bigint, 'every processed row has a lead with a dealer and a match type');
SELECT is((SELECT count(*) FROM lead_staging s JOIN leads l USING (lead_id)
            WHERE s.batch_id = 'tap-100k' AND s.status = 'processed'
              AND (l.comment IS DISTINCT FROM s.comment OR l.email IS DISTINCT FROM s.email
                   OR l.phone IS DISTINCT FROM s.phone OR l.first_name IS DISTINCT FROM s.first_name
                   OR l.last_name IS DISTINCT FROM btrim(s.last_name)
                   OR l.postal_code_input IS DISTINCT FROM s.postal_code
                   OR l.received_at IS DISTINCT FROM coalesce(s.received_at::timestamptz, s.staged_at)
                   OR l.send_to_dealer IS DISTINCT FROM coalesce(s.send_to_dealer::boolean, true)
                   OR l.source IS DISTINCT FROM coalesce(s.source, 'import'))),
          0::bigint, 'each lead carries the data of its own staging row (the mapping is exact)');
SELECT is((SELECT count(*) FROM lead_staging s JOIN leads l USING (lead_id)
            WHERE s.batch_id = 'tap-100k' AND s.status = 'processed' AND l.match_type = 'Default'
              AND s.brand_code = 'TAP' AND s.country <> 'Atlantis' AND s.postal_code <> 'XXXXX'),
          0::bigint, 'leads with a known brand, country and postal code are placed by a rule, not the default');

-- Rejected rows: exactly the bad ones, each with its reason.
SELECT set_eq(
    $$SELECT comment FROM lead_staging WHERE batch_id = 'tap-100k' AND status = 'rejected'$$,
    $$SELECT 'row ' || g FROM generate_series(1, 100000) g WHERE g % 100 = 7$$,
    'the rejected rows are exactly the bad ones');
SELECT is((SELECT count(*) FROM lead_staging
            WHERE batch_id = 'tap-100k' AND status = 'rejected'
              AND reason NOT LIKE CASE (substr(comment, 5)::int / 100) % 6
                  WHEN 0 THEN 'received_at "last tuesdayish" is not a timestamp%'
                  WHEN 1 THEN 'send_to_dealer "maybe" is not a boolean%'
                  WHEN 2 THEN 'no way to contact the customer: no email and no phone'
                  WHEN 3 THEN 'email "customer%.example.com" is not an address%'
                  WHEN 4 THEN 'first_name is too long (1001 characters; at most 1000)'
                  WHEN 5 THEN 'received_at "2024-02-30 10:00:00+00" is not a timestamp%' END),
          0::bigint, 'each rejected row says what is wrong with it');
SELECT is((SELECT count(*) FROM lead_staging WHERE batch_id = 'tap-100k' AND status = 'rejected'
              AND (lead_id IS NOT NULL OR processed_at IS NULL)),
          0::bigint, 'rejected rows have no lead and a processed_at');

-- Lead data problems are routed, not rejected.
SELECT is((SELECT count(*) FROM lead_staging
            WHERE batch_id = 'tap-100k' AND substr(comment, 5)::int % 100 IN (13, 19, 23, 29)
              AND status IS DISTINCT FROM 'processed'),
          0::bigint, 'unknown postal codes, countries, brands and dealers are not rejections');
SELECT is((SELECT count(*) FROM lead_staging s JOIN leads l USING (lead_id)
            WHERE s.batch_id = 'tap-100k' AND (s.country = 'Atlantis' OR s.brand_code = 'NOPE')
              AND l.match_type <> 'Default'),
          0::bigint, 'leads of an unknown country or brand go to the default dealer');
SELECT ok((SELECT bool_and(l.match_type <> 'Pre-assigned')
             FROM lead_staging s JOIN leads l USING (lead_id)
            WHERE s.batch_id = 'tap-100k' AND s.dealer_number = 'NO-SUCH-DEALER'),
          'an unknown pre-assigned dealer is routed by the rules');

-- Duplicates: exactly the repeated rows, pointing at the first one and its lead.
SELECT set_eq(
    $$SELECT comment FROM lead_staging WHERE batch_id = 'tap-100k' AND status = 'duplicate'$$,
    $$SELECT 'row ' || (i - 1) FROM generate_series(1, 100000) i WHERE i % 1000 = 500$$,
    'the duplicates are exactly the repeated rows');
SELECT is((SELECT count(*) FROM lead_staging d JOIN lead_staging o ON o.staging_id = d.duplicate_of
            WHERE d.batch_id = 'tap-100k' AND d.status = 'duplicate'
              AND (o.status <> 'processed' OR d.lead_id IS DISTINCT FROM o.lead_id
                   OR o.comment <> d.comment OR o.staging_id > d.staging_id)),
          0::bigint, 'each duplicate names the earlier processed row and its lead');
SELECT is((SELECT count(*) FROM lead_staging WHERE batch_id = 'tap-100k' AND status = 'duplicate'
              AND (duplicate_of IS NULL OR lead_id IS NULL)),
          0::bigint, 'no duplicate lacks its original or its lead');

-- Processing the batch again does nothing.
SELECT results_eq(
    $$SELECT status, rows FROM process_staging('tap-100k')$$,
    $$VALUES ('processed', 0::bigint), ('rejected', 0::bigint), ('duplicate', 0::bigint)$$,
    'processing the batch again processes nothing');
SELECT is((SELECT count(*) FROM leads) - (SELECT leads_before FROM staging_run), 98900::bigint,
          'and creates no lead');

-- Values are read trimmed, blank as NULL, by aimroute.staging_value(): the
-- same as nullif(btrim(value, white space), ''), multibyte text included.
SELECT is((SELECT count(*) FROM (VALUES (E' a b\t'), (''), (E' \t\r\n\f\x0B'), ('x'), (E'\x0B\u00e9\f'),
                                        (E'\u00a0x\u00a0'), (E'\u65e5 \u672c'), (E'  \u00fc'), (E'\u00fc\n'), (NULL)) v(x)
            WHERE staging_value(x) IS DISTINCT FROM nullif(btrim(x, E' \t\r\n\f\x0B'), '')),
          0::bigint, 'staging_value trims as btrim does, blanks are NULL');

-- Lengths are counted in characters, not bytes: 1,000 two-byte characters
-- are not too long, 1,001 are.
INSERT INTO lead_staging (batch_id, brand_code, email, country, postal_code, last_name, comment)
VALUES ('tap-long', 'TAP', 'long1@example.com', 'US', '49757', repeat(E'\u00e9', 1000), repeat(E'\u00fc', 10000)),
       ('tap-long', 'TAP', 'long2@example.com', 'US', '49757', repeat(E'\u00e9', 1001), 'one too many');
SELECT results_eq($$SELECT status, rows FROM process_staging('tap-long')$$,
                  $$VALUES ('processed', 1::bigint), ('rejected', 1::bigint), ('duplicate', 0::bigint)$$,
                  'multibyte values within the limits in characters become leads');
SELECT is((SELECT reason FROM lead_staging WHERE batch_id = 'tap-long' AND status = 'rejected'),
          'last_name is too long (1001 characters; at most 1000)',
          'a value over the limit in characters is rejected, with its length in characters');

-- received_at: a chunk's values are cast all at once, and a chunk with a
-- value that is not a timestamp is read again with each parsed on its
-- own.  Both ways give every row the same received_at and outcome.
INSERT INTO lead_staging (batch_id, received_at, brand_code, email, country, postal_code, comment)
SELECT b, v, 'TAP', b || n || '@example.com', 'US', '49757', b || ' ' || n
  FROM unnest(ARRAY['tap-times', 'tap-times-bad']) b,
       unnest(ARRAY['2024-05-01 14:30:00+00', '2024-05-01T14:30:00Z', 'May 1 2024 2:30pm',
                    E' 2024-05-01 14:30:00.25+02\t', '2024-05-01 14:30', '2024-13-01 10:00']) WITH ORDINALITY AS t(v, n)
 WHERE b = 'tap-times-bad' OR n < 6
 ORDER BY b, n;
SELECT results_eq($$SELECT status, rows FROM process_staging('tap-times')$$,
                  $$VALUES ('processed', 5::bigint), ('rejected', 0::bigint), ('duplicate', 0::bigint)$$,
                  'a chunk of valid received_at values: every row becomes a lead');
SELECT results_eq($$SELECT status, rows FROM process_staging('tap-times-bad')$$,
                  $$VALUES ('processed', 5::bigint), ('rejected', 1::bigint), ('duplicate', 0::bigint)$$,
                  'a chunk with one received_at that is not a timestamp: only that row is rejected');
SELECT is((SELECT count(*) FROM lead_staging s JOIN leads l USING (lead_id)
            WHERE s.batch_id IN ('tap-times', 'tap-times-bad') AND s.status = 'processed'
              AND l.received_at = btrim(s.received_at, E' \t')::timestamptz),
          10::bigint, 'each lead has its row''s received_at, read the same way in both chunks');
SELECT is((SELECT reason FROM lead_staging WHERE batch_id = 'tap-times-bad' AND status = 'rejected'),
          'received_at "2024-13-01 10:00" is not a timestamp (write it as 2024-05-01 14:30:00+00)',
          'the row whose received_at is not a timestamp says so');

SELECT * FROM finish();
ROLLBACK;
