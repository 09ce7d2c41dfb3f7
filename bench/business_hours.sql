-- bench/business_hours.sql: what the business-hours clock costs (issue 20,
-- part 2), side by side with the elapsed clock.  Cheap: about ten seconds.
--
--   psql -X -d DB -f bench/business_hours.sql
--
-- DB has aimroute with the shipped postal codes loaded
-- (aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())).
-- Everything runs in one transaction that is rolled back.  Prints:
--   1. the deadline alone, per call: aimroute.reroute_deadline (elapsed)
--      against aimroute.business_hours_deadline for typical weekly hours,
--      over 100,000 assignments spread over a year;
--   2. a routed single-row INSERT, per lead, with reroute_clock elapsed and
--      business_hours, 2,000 leads each, twice in turn (the routing trigger
--      computes the deadline: under business_hours it also reads the
--      dealer's hours), on 1,000 dealers that all have business hours.
BEGIN;
SET LOCAL client_min_messages = warning;

CREATE TEMP TABLE bench_bh (measure text, per_call_us numeric) ON COMMIT DROP;

-- 1. The deadline alone.
CREATE TEMP TABLE bench_bh_at ON COMMIT DROP AS
SELECT timestamptz '2026-01-01 00:00Z' + i * interval '5 minutes 15.3 seconds' AS at
  FROM generate_series(1, 100000) i;
DO $$
DECLARE
    t0 timestamptz;
    n bigint;
BEGIN
    FOR round IN 1 .. 2 LOOP
        t0 := clock_timestamp();
        SELECT count(aimroute.reroute_deadline(at, '4 hours', '{6,7}', 'America/New_York')) INTO n
          FROM pg_temp.bench_bh_at;
        INSERT INTO pg_temp.bench_bh
        VALUES ('deadline, elapsed clock (reroute_deadline)',
                extract(epoch FROM clock_timestamp() - t0) * 1e6 / n);
        t0 := clock_timestamp();
        SELECT count(aimroute.business_hours_deadline(at, '4 hours', 'Mo-Fr 08:00-12:00,13:00-18:00; Sa 09:00-13:00',
                                                      'America/New_York', '{7}')) INTO n
          FROM pg_temp.bench_bh_at;
        INSERT INTO pg_temp.bench_bh
        VALUES ('deadline, business hours (business_hours_deadline)',
                extract(epoch FROM clock_timestamp() - t0) * 1e6 / n);
    END LOOP;
END
$$;

-- 2. Routed INSERTs: 1,000 dealers with hours, at US postal codes.
INSERT INTO aimroute.brands VALUES ('BHBENCH', 'Business hours bench');
INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code, business_hours, timezone)
SELECT 'BHB' || lpad(n::text, 5, '0'), 'Bench ' || n, 'US', p.postal_code,
       (ARRAY['Mo-Fr 08:00-18:00', 'Mo-Fr 08:00-12:00,13:00-18:00; Sa 09:00-13:00', '24/7',
              'Mo-Sa 09:00-19:00; We off'])[1 + n % 4],
       (ARRAY[NULL, 'America/New_York', 'America/Chicago', 'America/Los_Angeles'])[1 + n % 4]
  FROM (SELECT p.postal_code, row_number() OVER (ORDER BY p.postal_code) AS n
          FROM aimroute.postal_codes p
         WHERE p.country = 'US' AND p.centroid IS NOT NULL AND p.postal_code ~ '^[0-9]{5}$') p
 WHERE p.n % 30 = 0 AND p.n / 30 <= 1000;
INSERT INTO aimroute.dealer_brands
SELECT d.dealer_number, 'BHBENCH' FROM aimroute.dealers d WHERE d.dealer_number LIKE 'BHB%';
UPDATE aimroute.settings
   SET default_dealer_number = (SELECT min(dealer_number) FROM aimroute.dealers WHERE dealer_number LIKE 'BHB%'),
       radius_enabled = true, radius_countries = '{US,CA}', reroute_enabled = true, reroute_after = '4 hours';
CREATE TEMP TABLE bench_bh_zip ON COMMIT DROP AS
SELECT row_number() OVER (ORDER BY p.postal_code) AS k, p.postal_code
  FROM aimroute.postal_codes p
 WHERE p.country = 'US' AND p.centroid IS NOT NULL AND p.postal_code ~ '^[0-9]{5}$';
ALTER TABLE bench_bh_zip ADD PRIMARY KEY (k);
ANALYZE bench_bh_zip;

DO $$
DECLARE
    t0 timestamptz;
    zips bigint := (SELECT count(*) FROM pg_temp.bench_bh_zip);
    leads constant integer := 2000;
    clock text;
BEGIN
    -- Warm-up: the routing model and the plans.
    FOR i IN 1 .. 200 LOOP
        INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer)
        SELECT 'BHBENCH', 'US', z.postal_code, true FROM pg_temp.bench_bh_zip z WHERE z.k = 1 + (i * 7919) % zips;
    END LOOP;
    FOR round IN 1 .. 2 LOOP
        FOREACH clock IN ARRAY ARRAY['elapsed', 'business_hours'] LOOP
            UPDATE aimroute.settings SET reroute_clock = clock;
            -- The first INSERT after a settings change rebuilds the model: not timed.
            INSERT INTO aimroute.leads (brand_code, country, postal_code) VALUES ('BHBENCH', 'US', '10001');
            t0 := clock_timestamp();
            FOR i IN 1 .. leads LOOP
                INSERT INTO aimroute.leads (brand_code, country, postal_code)
                SELECT 'BHBENCH', 'US', z.postal_code FROM pg_temp.bench_bh_zip z WHERE z.k = 1 + (i * 7919) % zips;
            END LOOP;
            INSERT INTO pg_temp.bench_bh
            VALUES (format('routed INSERT, reroute_clock %s', clock),
                    extract(epoch FROM clock_timestamp() - t0) * 1e6 / leads);
        END LOOP;
    END LOOP;
    IF EXISTS (SELECT FROM aimroute.leads l
                WHERE l.brand_code = 'BHBENCH' AND l.reroute_due_at IS DISTINCT FROM
                      CASE WHEN l.match_type = 'Default'
                                OR l.dealer_number = (SELECT s.default_dealer_number FROM aimroute.settings s)
                           THEN NULL
                           ELSE aimroute.reroute_due_at(l.routed_at, l.dealer_number) END
                  AND l.reroute_due_at IS DISTINCT FROM
                      aimroute.reroute_deadline(l.routed_at, '4 hours', '{}', (SELECT s.timezone FROM aimroute.settings s))) THEN
        RAISE EXCEPTION 'a lead has a deadline of neither clock';
    END IF;
END
$$;

SELECT measure, round(min(per_call_us), 2) AS best_us, round(max(per_call_us), 2) AS worst_us
  FROM bench_bh GROUP BY measure ORDER BY measure;
ROLLBACK;
