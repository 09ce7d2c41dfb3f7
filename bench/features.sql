-- bench/features.sql: what issue 20's four features cost routing together
-- (round robin, daily lead caps, the business-hours clock, dated
-- territories), side by side with the same network and the same leads
-- without them.  About a minute.
--
--   psql -X -d DB -f bench/features.sql
--
-- DB is a scratch database with aimroute and the shipped postal codes
-- loaded (aimroute.load_postal_codes(aimroute.bundled_postal_codes_path()));
-- bench/run.sh makes one and keeps the output in results/features.txt.
-- Each lead is inserted in a transaction of its own, as applications
-- insert them (synchronous_commit off: the disk is not measured): in one
-- long transaction the counters' rows, updated again and again, grow
-- version chains that no application sees, and the rounds slow down.  So
-- the network and its leads are committed and stay in DB: drop the
-- database afterwards (removing 10,000 dealers one by one is slower than
-- the bench: the foreign key of leads has no index of its own).  The
-- script refuses to run twice in one database.
--
-- The network: 10,000 US dealers, dealer n at the n-th postal code with a
-- centre point of its own (the codes are numbered k = 3n, 3n+1, 3n+2, ...);
-- the dealers with an even n hold their code and the two after it for
-- every brand (Territory), those with an odd n hold nothing, so the leads
-- from their codes go by Radius.  Every tenth dealer (n = 1, 11, 21, ...)
-- has a twin at the same point: a lead from that dealer's own code is a
-- tie.  Every dealer has business hours in one of four time zones, and
-- re-routing is on (4 hours).  20,000 leads a configuration, not sent,
-- spread over the codes of the network and 3,000 beyond it.
--
-- The configurations, each measured three times in turn:
--   none           tie_break dealer_number, no caps, reroute_clock elapsed,
--                  every territory open
--   round_robin    tie_break round_robin: the tied leads lock and count
--                  their dealers' turns (aimroute.tie_turns)
--   caps           a daily lead cap of 1,000,000 on every tenth dealer
--                  (never reached: each lead to such a dealer counts itself
--                  in aimroute.daily_lead_counts)
--   business_hours reroute_clock business_hours: each deadline counts the
--                  dealer's open time in its zone
--   dated          10% of the territories changed hands on 2026-01-01 (a
--                  past period with the next dealer; SPEC section 10)
--   all            the four at once
-- Prints the best and worst microseconds per lead of each, the best as a
-- ratio to the best of none, and how the leads of the last round went.
SET client_min_messages = warning;
SET synchronous_commit = off;

BEGIN;
DO $$
BEGIN
    IF EXISTS (SELECT FROM aimroute.brands WHERE brand_code = 'FTBENCH') THEN
        RAISE EXCEPTION 'bench/features.sql has run in this database already'
            USING HINT = 'Run it in a new scratch database.';
    END IF;
END
$$;
CREATE TEMP TABLE bench_ft (config text, per_lead_us numeric, territory bigint, radius bigint,
                            to_twin bigint);

INSERT INTO aimroute.brands VALUES ('FTBENCH', 'Features bench');
-- Postal codes with a centre point of their own (codes that share one
-- would make ties of their own), numbered.
CREATE TEMP TABLE bench_ft_zip AS
SELECT row_number() OVER (ORDER BY u.postal_code) AS k, u.postal_code
  FROM (SELECT p.postal_code, count(*) OVER (PARTITION BY p.centroid::text) AS sharing
          FROM aimroute.postal_codes p
         WHERE p.country = 'US' AND p.centroid IS NOT NULL AND p.postal_code ~ '^[0-9]{5}$') u
 WHERE u.sharing = 1;
ALTER TABLE bench_ft_zip ADD PRIMARY KEY (k);
ANALYZE bench_ft_zip;
INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code, business_hours, timezone)
SELECT 'FTA' || lpad((z.k / 3)::text, 6, '0'), 'Bench ' || z.k / 3, 'US', z.postal_code,
       (ARRAY['Mo-Fr 08:00-18:00', 'Mo-Fr 08:00-12:00,13:00-18:00; Sa 09:00-13:00', '24/7',
              'Mo-Sa 09:00-19:00; We off'])[1 + (z.k / 3) % 4],
       (ARRAY['America/New_York', 'America/Chicago', 'America/Denver', 'America/Los_Angeles'])[1 + (z.k / 7) % 4]
  FROM pg_temp.bench_ft_zip z
 WHERE z.k % 3 = 0 AND z.k / 3 <= 10000;
INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code, business_hours, timezone)
SELECT 'FTB' || lpad((z.k / 3)::text, 6, '0'), 'Bench twin ' || z.k / 3, 'US', z.postal_code,
       'Mo-Fr 09:00-17:00', 'America/Chicago'
  FROM pg_temp.bench_ft_zip z
 WHERE z.k % 3 = 0 AND z.k / 3 <= 10000 AND (z.k / 3) % 10 = 1;
INSERT INTO aimroute.dealer_brands
SELECT d.dealer_number, 'FTBENCH' FROM aimroute.dealers d WHERE d.dealer_number ~ '^FT[AB]';
INSERT INTO aimroute.territories (dealer_number, kind, country, code)
SELECT 'FTA' || lpad((z.k / 3)::text, 6, '0'), 'postal', 'US', h.postal_code
  FROM pg_temp.bench_ft_zip z
  JOIN pg_temp.bench_ft_zip h ON h.k BETWEEN z.k AND z.k + 2
 WHERE z.k % 3 = 0 AND z.k / 3 <= 10000 AND (z.k / 3) % 2 = 0;
-- The round robin counters exist, as after each pair's first tie: the
-- figures are the cost of a turn (bench/ties.sql says more).
INSERT INTO aimroute.tie_turns (brand_code, dealer_number)
SELECT 'FTBENCH', d.dealer_number FROM aimroute.dealers d
 WHERE d.dealer_number ~ '^FT[AB]' AND substr(d.dealer_number, 4)::int % 10 = 1;
UPDATE aimroute.settings
   SET default_dealer_number = 'FTA000001', radius_enabled = true, radius_countries = '{US,CA}',
       reroute_enabled = true, reroute_after = '4 hours', reroute_skip_days = '{}';
COMMIT;

-- set_config(config): the network as the configuration has it.
CREATE FUNCTION pg_temp.set_config(config text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE aimroute.settings
       SET tie_break = CASE WHEN config IN ('round_robin', 'all') THEN 'round_robin' ELSE 'dealer_number' END,
           reroute_clock = CASE WHEN config IN ('business_hours', 'all') THEN 'business_hours' ELSE 'elapsed' END;
    UPDATE aimroute.dealers d
       SET daily_lead_cap = CASE WHEN config IN ('caps', 'all') AND right(d.dealer_number, 1) = '0'
                                 THEN 1000000 END
     WHERE d.dealer_number LIKE 'FTA%'
       AND d.daily_lead_cap IS DISTINCT FROM
           CASE WHEN config IN ('caps', 'all') AND right(d.dealer_number, 1) = '0' THEN 1000000 END;
    DELETE FROM aimroute.territories t WHERE t.dealer_number LIKE 'FT%' AND t.valid_to IS NOT NULL;
    UPDATE aimroute.territories t SET valid_from = '-infinity'
     WHERE t.dealer_number LIKE 'FT%' AND t.valid_from <> '-infinity';
    IF config IN ('dated', 'all') THEN
        -- 10% of the territories changed hands on 2026-01-01: the next
        -- dealer held them before.
        UPDATE aimroute.territories t SET valid_from = '2026-01-01'
         WHERE t.dealer_number LIKE 'FT%' AND t.territory_id % 10 = 0;
        INSERT INTO aimroute.territories (dealer_number, kind, country, code, valid_to)
        SELECT 'FTA' || lpad((substr(t.dealer_number, 4)::int % 10000 + 1)::text, 6, '0'),
               'postal', 'US', t.code, '2026-01-01'
          FROM aimroute.territories t
         WHERE t.dealer_number LIKE 'FT%' AND t.valid_from = '2026-01-01';
    END IF;
END
$$;

-- The measure: the configuration changed and committed, then each lead a
-- transaction (COMMIT in DO: psql must not be in a transaction block).
DO $$
DECLARE
    t0 timestamptz;
    zips bigint := (SELECT max(z.k) FROM pg_temp.bench_ft_zip z WHERE z.k <= 33002);
    leads constant integer := 20000;
    config text;
    first_lead bigint;
BEGIN
    -- Warm-up: the routing model and the plans.
    PERFORM pg_temp.set_config('all');
    COMMIT;
    FOR i IN 1 .. 500 LOOP
        INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer)
        SELECT 'FTBENCH', 'US', z.postal_code, false FROM pg_temp.bench_ft_zip z WHERE z.k = 1 + (i * 7919) % zips;
        COMMIT;
    END LOOP;
    FOR round IN 1 .. 3 LOOP
        FOREACH config IN ARRAY ARRAY['none', 'round_robin', 'caps', 'business_hours', 'dated', 'all'] LOOP
            PERFORM pg_temp.set_config(config);
            COMMIT;
            -- The first INSERT after a configuration change rebuilds the model: not timed.
            INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer)
            VALUES ('FTBENCH', 'US', '10001', false);
            COMMIT;
            first_lead := (SELECT max(l.lead_id) FROM aimroute.leads l) + 1;
            t0 := clock_timestamp();
            FOR i IN 1 .. leads LOOP
                INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer)
                SELECT 'FTBENCH', 'US', z.postal_code, false FROM pg_temp.bench_ft_zip z
                 WHERE z.k = 1 + (i * 7919) % zips;
                COMMIT;
            END LOOP;
            INSERT INTO pg_temp.bench_ft
            SELECT config, extract(epoch FROM clock_timestamp() - t0) * 1e6 / leads,
                   count(*) FILTER (WHERE l.match_type = 'Territory'),
                   count(*) FILTER (WHERE l.match_type = 'Radius'),
                   count(*) FILTER (WHERE l.dealer_number LIKE 'FTB%')
              FROM aimroute.leads l WHERE l.lead_id >= first_lead;
        END LOOP;
    END LOOP;
END
$$;

SELECT f.config, round(min(f.per_lead_us), 2) AS best_us, round(max(f.per_lead_us), 2) AS worst_us,
       round(min(f.per_lead_us) / (SELECT min(n.per_lead_us) FROM bench_ft n WHERE n.config = 'none'), 3)
           AS best_vs_none,
       min(f.territory) AS territory, min(f.radius) AS radius, min(f.to_twin) AS to_twin
  FROM bench_ft f
 GROUP BY f.config
 ORDER BY array_position(ARRAY['none', 'round_robin', 'caps', 'business_hours', 'dated', 'all'], f.config);
SELECT (SELECT count(*) FROM aimroute.territories WHERE dealer_number LIKE 'FT%') AS territories,
       (SELECT count(*) FROM aimroute.territories WHERE dealer_number LIKE 'FT%' AND valid_to IS NOT NULL)
           AS past_periods,
       (SELECT sum(leads) FROM aimroute.tie_turns WHERE brand_code = 'FTBENCH') AS turns_taken,
       (SELECT sum(leads) FROM aimroute.daily_lead_counts WHERE dealer_number LIKE 'FT%') AS leads_counted;

