-- bench/dated.sql: what dated configuration costs routing (issue 20,
-- part 3): a routed single-row INSERT with every territory open, against
-- the same network where 10% of the territories changed hands at the
-- start of 2026 (a past period with the former holder, the current one
-- from 2026 on), and between the two the open network with one dated
-- territory where no lead comes from (the check of the periods without
-- their explanation).  Cheap: about a minute.
--
--   psql -X -d DB -f bench/dated.sql
--
-- DB has aimroute with the shipped postal codes loaded
-- (aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())).
-- Everything runs in one transaction that is rolled back.  10,000 US
-- dealers, each holding the postal code it is in and the two after it
-- (one holder per code); 20,000 leads per round at US postal codes, not
-- sent, each configuration three times in turn.  Prints the best and worst
-- microseconds per lead of each configuration, and how many leads went by
-- Territory (the same in all: the current holders are the same).
BEGIN;
SET LOCAL client_min_messages = warning;

CREATE TEMP TABLE bench_dt (measure text, per_lead_us numeric, territory_leads bigint) ON COMMIT DROP;

INSERT INTO aimroute.brands VALUES ('DTBENCH', 'Dated bench');
CREATE TEMP TABLE bench_dt_zip ON COMMIT DROP AS
SELECT row_number() OVER (ORDER BY p.postal_code) AS k, p.postal_code
  FROM aimroute.postal_codes p
 WHERE p.country = 'US' AND p.centroid IS NOT NULL AND p.postal_code ~ '^[0-9]{5}$';
ALTER TABLE bench_dt_zip ADD PRIMARY KEY (k);
ANALYZE bench_dt_zip;
-- Dealer n sits at zip 3n and holds zips 3n, 3n+1 and 3n+2.
INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code)
SELECT 'DTB' || lpad(z.k::text, 6, '0'), 'Bench ' || z.k, 'US', z.postal_code
  FROM pg_temp.bench_dt_zip z
 WHERE z.k % 3 = 0 AND z.k / 3 <= 10000;
INSERT INTO aimroute.dealer_brands
SELECT d.dealer_number, 'DTBENCH' FROM aimroute.dealers d WHERE d.dealer_number LIKE 'DTB%';
INSERT INTO aimroute.territories (dealer_number, kind, country, code)
SELECT 'DTB' || lpad(z.k::text, 6, '0'), 'postal', 'US', h.postal_code
  FROM pg_temp.bench_dt_zip z
  JOIN pg_temp.bench_dt_zip h ON h.k BETWEEN z.k AND z.k + 2
 WHERE z.k % 3 = 0 AND z.k / 3 <= 10000;
UPDATE aimroute.settings
   SET default_dealer_number = (SELECT min(dealer_number) FROM aimroute.dealers WHERE dealer_number LIKE 'DTB%'),
       radius_enabled = true, radius_countries = '{US,CA}';

DO $$
DECLARE
    t0 timestamptz;
    zips bigint := (SELECT max(z.k) FROM pg_temp.bench_dt_zip z WHERE z.k <= 30002);
    leads constant integer := 20000;
    config text;
    first_lead bigint;
BEGIN
    -- Warm-up: the routing model and the plans.
    FOR i IN 1 .. 200 LOOP
        INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer)
        SELECT 'DTBENCH', 'US', z.postal_code, false FROM pg_temp.bench_dt_zip z WHERE z.k = 1 + (i * 7919) % zips;
    END LOOP;
    FOR round IN 1 .. 3 LOOP
        FOREACH config IN ARRAY ARRAY['open', 'open but one', 'dated'] LOOP
            IF config = 'open but one' THEN
                -- One dated row, where no lead comes from: the check runs
                -- for every lead, but no explanation names a period.
                INSERT INTO aimroute.territories (dealer_number, kind, country, code, valid_to)
                SELECT 'DTB000003', 'postal', 'US', z.postal_code, '2026-01-01'
                  FROM pg_temp.bench_dt_zip z WHERE z.k = 30010;
            ELSIF config = 'dated' THEN
                -- 10% of the territories changed hands on 2026-01-01: the
                -- next dealer held them before.
                UPDATE aimroute.territories t SET valid_from = '2026-01-01'
                 WHERE t.dealer_number LIKE 'DTB%' AND t.territory_id % 10 = 0;
                INSERT INTO aimroute.territories (dealer_number, kind, country, code, valid_to)
                SELECT coalesce((SELECT min(d.dealer_number) FROM aimroute.dealers d
                                  WHERE d.dealer_number LIKE 'DTB%' AND d.dealer_number > t.dealer_number),
                                (SELECT min(d.dealer_number) FROM aimroute.dealers d WHERE d.dealer_number LIKE 'DTB%')),
                       'postal', 'US', t.code, '2026-01-01'
                  FROM aimroute.territories t
                 WHERE t.dealer_number LIKE 'DTB%' AND t.valid_from = '2026-01-01';
            ELSE
                DELETE FROM aimroute.territories t WHERE t.dealer_number LIKE 'DTB%' AND t.valid_to IS NOT NULL;
                UPDATE aimroute.territories t SET valid_from = '-infinity'
                 WHERE t.dealer_number LIKE 'DTB%' AND t.valid_from <> '-infinity';
            END IF;
            -- The first INSERT after a configuration change rebuilds the model: not timed.
            INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer)
            VALUES ('DTBENCH', 'US', '10001', false);
            first_lead := (SELECT max(l.lead_id) FROM aimroute.leads l) + 1;
            t0 := clock_timestamp();
            FOR i IN 1 .. leads LOOP
                INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer)
                SELECT 'DTBENCH', 'US', z.postal_code, false FROM pg_temp.bench_dt_zip z WHERE z.k = 1 + (i * 7919) % zips;
            END LOOP;
            INSERT INTO pg_temp.bench_dt
            VALUES (format('routed INSERT, territories %s', config),
                    extract(epoch FROM clock_timestamp() - t0) * 1e6 / leads,
                    (SELECT count(*) FROM aimroute.leads l WHERE l.lead_id >= first_lead AND l.match_type = 'Territory'));
        END LOOP;
    END LOOP;
END
$$;

SELECT measure, round(min(per_lead_us), 2) AS best_us, round(max(per_lead_us), 2) AS worst_us,
       min(territory_leads) AS territory_leads, max(territory_leads) AS territory_leads_max
  FROM bench_dt GROUP BY measure ORDER BY min(per_lead_us);
SELECT count(*) AS territories, count(*) FILTER (WHERE valid_from <> '-infinity' OR valid_to IS NOT NULL) AS dated
  FROM aimroute.territories WHERE dealer_number LIKE 'DTB%';
ROLLBACK;
