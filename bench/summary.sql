--
-- bench/summary.sql: the figures derived from the measurements (stored in
-- bench.results with them), the summary table and the verdict on each
-- target of SPEC section 7.  Run by bench/run.sh after the last size.
--
-- Costs are per lead, in microseconds: for the pgbench runs clients / tps
-- after the warm-up, which includes the client round trip and the commit of
-- each lead's transaction.  "1st lead ms" is the first routing of a new
-- session, left out of the other figures.
--
-- Routing is compared through the leads not sent (send_to_dealer false):
-- routing alone, what the SPEC's targets are about, and what the PL/pgSQL
-- baseline implements.  The leads sent (the default) also queue their
-- delivery; "queue" is the difference.  "routing in COPY" is the routing
-- cost alone: the time per row of the COPY not sent less that of the COPY
-- with routing and the queue off; "queue in COPY" the time per row of the
-- routed COPY less that of the COPY not sent; all in one backend and one
-- transaction.
--
-- Growth is judged against a logarithm through the smallest size:
-- cost(n) / cost(n0) <= ln(n) / ln(n0), n0 the smallest dealer count (a
-- cost of c * ln(n) meets it exactly; any constant part only helps).
--

CREATE TEMP VIEW pivot AS
SELECT size, routed, sent, bare, plpgsql, knn, copy_routed, copy_unsent, copy_bare, staging, staging_unsent,
       1e6 / copy_unsent - 1e6 / copy_bare AS copy_routing,
       1e6 / copy_routed - 1e6 / copy_unsent AS copy_queue,
       l10_p50, l10_p99, l1_p50, l1_p99, first_ms, cache_mb, differ, checked,
       delivery, delivery_p50, delivery_p99, reroute, reroute_first, reroute_p50, reroute_p99,
       coverage_first, coverage_again
  FROM (SELECT size,
               max(value) FILTER (WHERE measure = 'routed_unsent_insert_us') AS routed,
               max(value) FILTER (WHERE measure = 'routed_insert_us') AS sent,
               max(value) FILTER (WHERE measure = 'copy_routed_unsent') AS copy_unsent,
               max(value) FILTER (WHERE measure = 'bare_insert_us') AS bare,
               max(value) FILTER (WHERE measure = 'plpgsql_insert_us') AS plpgsql,
               max(value) FILTER (WHERE measure = 'knn_us') AS knn,
               max(value) FILTER (WHERE measure = 'copy_routed') AS copy_routed,
               max(value) FILTER (WHERE measure = 'copy_bare') AS copy_bare,
               max(value) FILTER (WHERE measure = 'staging') AS staging,
               max(value) FILTER (WHERE measure = 'staging_unsent') AS staging_unsent,
               max(value) FILTER (WHERE measure = 'locate10_p50') AS l10_p50,
               max(value) FILTER (WHERE measure = 'locate10_p99') AS l10_p99,
               max(value) FILTER (WHERE measure = 'locate1_p50') AS l1_p50,
               max(value) FILTER (WHERE measure = 'locate1_p99') AS l1_p99,
               max(value) FILTER (WHERE measure = 'first_route_ms') AS first_ms,
               max(value) FILTER (WHERE measure = 'cache_memory_mb') AS cache_mb,
               max(value) FILTER (WHERE measure = 'agreement_disagreements') AS differ,
               max(value) FILTER (WHERE measure = 'agreement_checked') AS checked,
               max(value) FILTER (WHERE measure = 'delivery_msgs_per_s') AS delivery,
               max(value) FILTER (WHERE measure = 'delivery_p50_ms') AS delivery_p50,
               max(value) FILTER (WHERE measure = 'delivery_p99_ms') AS delivery_p99,
               max(value) FILTER (WHERE measure = 'reroute_leads_per_s') AS reroute,
               max(value) FILTER (WHERE measure = 'reroute_lag_first_ms') AS reroute_first,
               max(value) FILTER (WHERE measure = 'reroute_lag_p50_ms') AS reroute_p50,
               max(value) FILTER (WHERE measure = 'reroute_lag_p99_ms') AS reroute_p99,
               max(value) FILTER (WHERE measure = 'coverage_first_ms') AS coverage_first,
               max(value) FILTER (WHERE measure = 'coverage_again_ms') AS coverage_again
          FROM bench.results
         GROUP BY size
        -- Only the sizes measured whole (not the network built for the
        -- first lead alone, nor the run's own row 0).
        HAVING max(value) FILTER (WHERE measure = 'routed_unsent_insert_us') IS NOT NULL) AS r;

CREATE TEMP VIEW growth AS
SELECT p.size,
       p.routed / first_value(p.routed) OVER w AS routed_growth,
       p.copy_routing / first_value(p.copy_routing) OVER w AS copy_growth,
       p.l10_p50 / first_value(p.l10_p50) OVER w AS locate_growth,
       ln(p.size) / ln(first_value(p.size) OVER w) AS log_bound
  FROM pivot p
WINDOW w AS (ORDER BY p.size);

INSERT INTO bench.results (size, measure, value, unit)
SELECT p.size, m.measure, m.value, m.unit
  FROM pivot p JOIN growth g USING (size),
       LATERAL (VALUES ('copy_routing_us', p.copy_routing, 'us'),
                       ('copy_queue_us', p.copy_queue, 'us'),
                       ('queue_us', p.sent - p.routed, 'us'),
                       ('routed_unsent_vs_bare', p.routed / p.bare, 'ratio'),
                       ('routed_vs_bare', p.sent / p.bare, 'ratio'),
                       ('plpgsql_vs_routed_unsent', p.plpgsql / p.routed, 'ratio'),
                       ('routed_unsent_vs_knn', p.routed / p.knn, 'ratio'),
                       ('routed_unsent_growth', g.routed_growth, 'ratio'),
                       ('copy_routing_growth', g.copy_growth, 'ratio'),
                       ('locate10_p50_growth', g.locate_growth, 'ratio'),
                       ('log_growth_bound', g.log_bound, 'ratio')) AS m(measure, value, unit)
ON CONFLICT (size, measure) DO UPDATE SET value = excluded.value;

\pset footer off
\pset null '-'
\echo 'Median over the rounds.  Costs in µs per lead (pgbench: clients / tps); bulk import in rows/s;'
\echo 'routed = routed INSERT not sent (routing alone); +queue = routed and sent (routing and the delivery queue);'
\echo 'queue = the difference, per lead; bare = routing and the queue switched off.'
\echo 'locate = locate_dealers() per call, max_results 10 (and 1); 1st lead = first routing of a new session;'
\echo 'copy MB = memory of a session''s copy of the configuration (routing_cache_info()).'
\echo 'ok/MISS: against the SPEC target, which applies at 10,000 dealers (growth: at every size).'
SELECT p.size AS dealers,
       round(p.routed::numeric, 1) AS "routed µs",
       round(p.sent::numeric, 1) AS "+queue µs",
       round((p.sent - p.routed)::numeric, 1) AS "queue µs",
       round(p.bare::numeric, 1) AS "bare µs",
       format('%s %s', round((p.routed / p.bare)::numeric, 2),
              CASE WHEN p.size <> 10000 THEN '' WHEN p.routed / p.bare <= 1.5 THEN 'ok' ELSE 'MISS' END)
           AS "routed/bare ≤1.5",
       round((p.sent / p.bare)::numeric, 2) AS "+queue/bare",
       round(p.plpgsql::numeric, 1) AS "PL/pgSQL µs",
       format('%s %s', round((p.plpgsql / p.routed)::numeric, 1),
              CASE WHEN p.size <> 10000 THEN '' WHEN p.plpgsql / p.routed >= 50 THEN 'ok' ELSE 'MISS' END)
           AS "PL/pgSQL/routed ≥50",
       round(p.knn::numeric, 1) AS "KNN µs",
       round((p.routed / p.knn)::numeric, 2) AS "routed/KNN",
       round(p.copy_routed) AS "COPY +queue/s",
       round(p.copy_bare) AS "COPY bare/s",
       round(p.staging) AS "staging/s",
       format('%s %s', round((p.staging / p.copy_routed)::numeric, 2),
              CASE WHEN p.size <> 10000 THEN '' WHEN p.staging >= p.copy_routed THEN 'ok' ELSE 'MISS' END)
           AS "staging/COPY ≥1",
       round((p.staging_unsent / p.copy_unsent)::numeric, 2) AS "not sent: staging/COPY",
       round(p.copy_routing::numeric, 1) AS "routing in COPY µs",
       round(p.copy_queue::numeric, 1) AS "queue in COPY µs",
       round(p.l10_p50::numeric) AS "locate p50",
       format('%s %s', round(p.l10_p99::numeric),
              CASE WHEN p.size <> 10000 THEN '' WHEN p.l10_p99 < 1000 THEN 'ok' ELSE 'MISS' END)
           AS "locate p99 <1000",
       format('%s/%s', round(p.l1_p50::numeric), round(p.l1_p99::numeric)) AS "locate(1) p50/p99",
       round(p.first_ms::numeric) AS "1st lead ms",
       round(p.cache_mb::numeric, 1) AS "copy MB",
       format('%s ≤ %s %s', round(g.routed_growth::numeric, 2), round(g.log_bound::numeric, 2),
              CASE WHEN g.routed_growth <= g.log_bound THEN 'ok' ELSE 'MISS' END) AS "INSERT growth",
       format('%s ≤ %s %s', round(g.copy_growth::numeric, 2), round(g.log_bound::numeric, 2),
              CASE WHEN g.copy_growth <= g.log_bound THEN 'ok' ELSE 'MISS' END) AS "COPY routing growth",
       format('%s/%s', p.differ, p.checked) AS "C≠PL/pgSQL"
  FROM pivot p JOIN growth g USING (size)
 ORDER BY p.size;

\echo 'The workers (aimroute preloaded): delivery = emails queued at once, sent to the loopback SMTP sink,'
\echo 'per second, and each one''s time from its lead''s INSERT to delivered; re-route = overdue leads moved per second,'
\echo 'and each one''s lag behind its deadline (a burst: the later leads wait for the earlier ones).'
SELECT p.size AS dealers,
       round(p.delivery::numeric, 1) AS "delivery msgs/s",
       format('%s / %s', round(p.delivery_p50::numeric), round(p.delivery_p99::numeric)) AS "queued→delivered p50/p99 ms",
       round(p.reroute::numeric, 1) AS "re-route leads/s",
       format('%s / %s / %s', round(p.reroute_first::numeric, 1), round(p.reroute_p50::numeric),
              round(p.reroute_p99::numeric)) AS "lag first/p50/p99 ms"
  FROM pivot p
 ORDER BY p.size;

\echo 'Targets (SPEC section 7; the first three on the 10,000-dealer network):'
SELECT t.target AS "target", coalesce(t.value, 'not measured (10000 is not in BENCH_SIZES)') AS "measured",
       CASE WHEN t.value IS NULL OR t.met IS NULL THEN '-' WHEN t.met THEN 'met' ELSE 'NOT MET' END AS "verdict"
  FROM (SELECT 1 AS n, 'routed INSERT (routing alone: not sent) at most 1.5x a bare INSERT' AS target,
               CASE WHEN p.size IS NOT NULL THEN format('%sx', round((p.routed / p.bare)::numeric, 2)) END AS value,
               p.routed / p.bare <= 1.5 AS met
          FROM (VALUES (10000)) AS s(size) LEFT JOIN pivot p USING (size)
        UNION ALL
        SELECT 2, '  the same, sent (routing and the delivery queue): no target',
               CASE WHEN p.size IS NOT NULL
                    THEN format('%sx (the queue: %s µs a lead; %s µs in COPY)', round((p.sent / p.bare)::numeric, 2),
                                round((p.sent - p.routed)::numeric, 1), round(p.copy_queue::numeric, 1)) END,
               NULL
          FROM (VALUES (10000)) AS s(size) LEFT JOIN pivot p USING (size)
        UNION ALL
        SELECT 3, 'at least 50x faster than the PL/pgSQL baseline',
               CASE WHEN p.size IS NOT NULL THEN format('%sx', round((p.plpgsql / p.routed)::numeric, 1)) END,
               p.plpgsql / p.routed >= 50
          FROM (VALUES (10000)) AS s(size) LEFT JOIN pivot p USING (size)
        UNION ALL
        SELECT 4, 'locate_dealers() p99 under 1 ms',
               CASE WHEN p.size IS NOT NULL THEN format('%s µs', round(p.l10_p99::numeric)) END,
               p.l10_p99 < 1000
          FROM (VALUES (10000)) AS s(size) LEFT JOIN pivot p USING (size)
        UNION ALL
        SELECT 5, 're-route worker throughput and lag: no target',
               CASE WHEN p.size IS NOT NULL
                    THEN format('%s leads/s; lag p50 %s ms, p99 %s ms', round(p.reroute::numeric, 1),
                                round(p.reroute_p50::numeric), round(p.reroute_p99::numeric)) END,
               NULL
          FROM (VALUES (10000)) AS s(size) LEFT JOIN pivot p USING (size)
        UNION ALL
        SELECT 6, 'delivery throughput to a loopback SMTP server: no target',
               CASE WHEN p.size IS NOT NULL
                    THEN format('%s msgs/s; sent to delivered p50 %s ms, p99 %s ms', round(p.delivery::numeric, 1),
                                round(p.delivery_p50::numeric), round(p.delivery_p99::numeric)) END,
               NULL
          FROM (VALUES (10000)) AS s(size) LEFT JOIN pivot p USING (size)
        UNION ALL
        SELECT 6 + x.k, format('%s grows no faster than log(dealers)', x.what),
               string_agg(format('%s: %sx (bound %sx)', g.size, round(x.growth::numeric, 2),
                                 round(g.log_bound::numeric, 2)), ', ' ORDER BY g.size),
               bool_and(x.growth <= g.log_bound)
          FROM growth g,
               LATERAL (VALUES (1, 'routed INSERT cost (not sent)', g.routed_growth),
                               (2, 'routing cost in COPY', g.copy_growth),
                               (3, 'locate_dealers() p50', g.locate_growth)) AS x(k, what, growth)
         WHERE g.log_bound > 1
         GROUP BY x.k, x.what
        UNION ALL
        SELECT 10, 'PL/pgSQL baseline agrees with C routing on dealer_number',
               format('%s of %s leads differ', sum(p.differ), sum(p.checked)), sum(p.differ) = 0
          FROM pivot p
        UNION ALL
        SELECT 11, 'coverage() of the US and Canada for one brand under 2 s (SPEC section 9)',
               CASE WHEN p.size IS NOT NULL
                    THEN format('%s ms in a new session (%s ms again)', round(p.coverage_first::numeric),
                                round(p.coverage_again::numeric)) END,
               p.coverage_first < 2000
          FROM (VALUES (10000)) AS s(size) LEFT JOIN pivot p USING (size)) AS t
 ORDER BY t.n;

--
-- The targets of issue 16 ("the lead is the queue"), each measured by this
-- run: at 10,000 dealers, except the first lead of a session, at
-- :first_lead_size dealers (BENCH_FIRST_LEAD_SIZE).  docs/performance.md
-- says how each is measured.
--
CREATE TEMP VIEW t16 AS
SELECT max(value) FILTER (WHERE size = 10000 AND measure = 'routed_full_insert_us') AS full_us,
       max(value) FILTER (WHERE size = 10000 AND measure = 'routed_insert_us') AS sent_us,
       max(value) FILTER (WHERE size = 10000 AND measure = 'routed_unsent_insert_us') AS unsent_us,
       max(value) FILTER (WHERE size = 10000 AND measure = 'bare_insert_us') AS bare_us,
       max(value) FILTER (WHERE size = 10000 AND measure = 'copy_routed') AS copy_routed,
       max(value) FILTER (WHERE size = 10000 AND measure = 'copy_bare') AS copy_bare,
       max(value) FILTER (WHERE size = 10000 AND measure = 'copy_routed_expanded') AS copy_expanded,
       max(value) FILTER (WHERE size = 10000 AND measure = 'copy_expand_lag_s') AS copy_expand_lag,
       max(value) FILTER (WHERE size = 10000 AND measure = 'staging') AS staging,
       max(value) FILTER (WHERE size = 10000 AND measure = 'delivery_msgs_per_s') AS delivery,
       max(value) FILTER (WHERE size = 10000 AND measure = 'delivery_sink_cpu_pct') AS sink_cpu,
       max(value) FILTER (WHERE size = 10000 AND measure = 'delivery_worker_cpu_pct') AS worker_cpu,
       max(value) FILTER (WHERE size = 10000 AND measure = 'hol_extra_p99_ms') AS hol_extra,
       max(value) FILTER (WHERE size = 10000 AND measure = 'hol_base_p99_ms') AS hol_alone,
       max(value) FILTER (WHERE size = 10000 AND measure = 'hol_p99_ms') AS hol_hung,
       max(value) FILTER (WHERE size = 10000 AND measure = 'hol_timeout_s') AS hol_timeout,
       max(value) FILTER (WHERE size = 10000 AND measure = 'crash_kill_held_s') AS crash_kill,
       max(value) FILTER (WHERE size = 10000 AND measure = 'crash_immediate_held_s') AS crash_immediate,
       max(value) FILTER (WHERE size = :first_lead_size AND measure = 'first_route_preloaded_ms') AS first_pre,
       max(value) FILTER (WHERE size = :first_lead_size AND measure = 'first_route_ms') AS first_plain,
       max(value) FILTER (WHERE size = :first_lead_size AND measure = 'first_route_preloaded_pss_mb') AS pss_pre,
       max(value) FILTER (WHERE size = :first_lead_size AND measure = 'first_route_pss_mb') AS pss_plain,
       max(value) FILTER (WHERE size = :first_lead_size AND measure = 'first_route_preloaded_anon_mb') AS heap_pre,
       max(value) FILTER (WHERE size = :first_lead_size AND measure = 'first_route_anon_mb') AS heap_plain,
       max(value) FILTER (WHERE size = 10000 AND measure = 'locate10_p99') AS locate_p99,
       max(value) FILTER (WHERE size = 10000 AND measure = 'expand_lag_s') AS expand_lag,
       max(value) FILTER (WHERE size = 10000 AND measure = 'expand_leads_per_s') AS expand_rate,
       max(value) FILTER (WHERE size = 10000 AND measure = 'expand_messages_per_lead') AS expand_per_lead,
       max(value) FILTER (WHERE size = 0 AND measure = 'queue_deferred') AS deferred
  FROM bench.results;

-- held: a crash measure's seconds, or what Infinity (not delivered in time) means.
CREATE FUNCTION pg_temp.held(seconds double precision) RETURNS text
    LANGUAGE sql
AS $$
    SELECT CASE WHEN seconds IS NULL THEN 'not measured (no message still claimed at the crash)'
                WHEN seconds = 'Infinity' THEN 'more than BENCH_CRASH_WAIT s'
                ELSE round(seconds::numeric, 2) || ' s' END
$$;

\echo
\echo 'Issue 16: every row of its target table, measured by this run (10,000 dealers unless stated):'
SELECT r.n AS "#", r.measure AS "measure",
       CASE WHEN r.key IS NULL THEN 'not measured' ELSE r.measured END AS "measured", r.target AS "target",
       CASE WHEN r.key IS NULL OR r.met IS NULL THEN '-' WHEN r.met THEN 'met' ELSE 'NOT MET' END AS "verdict"
  FROM t16 t,
       LATERAL (VALUES
        (1, 'INSERT routed + queued (To, CC, CRM) / bare INSERT',
         t.full_us / t.bare_us,
         format('%sx (%s µs / %s µs); routing only %sx, the sample mix sent %sx',
                round((t.full_us / t.bare_us)::numeric, 2), round(t.full_us::numeric, 1), round(t.bare_us::numeric, 1),
                round((t.unsent_us / t.bare_us)::numeric, 2), round((t.sent_us / t.bare_us)::numeric, 2)),
         '≤ 1.3x', t.full_us / t.bare_us <= 1.3),
        (2, 'COPY routed + queued / bare COPY (rows/s)',
         t.copy_routed / t.copy_bare,
         format('%s (%s / %s rows/s)', round((t.copy_routed / t.copy_bare)::numeric, 2), round(t.copy_routed),
                round(t.copy_bare))
         || CASE WHEN t.copy_expanded IS NOT NULL
                 THEN format('; %s counting the worker''s expansion after the COPY (%s rows/s)',
                             round((t.copy_expanded / t.copy_bare)::numeric, 2), round(t.copy_expanded)) ELSE '' END,
         '≥ 0.5', t.copy_routed / t.copy_bare >= 0.5),
        (3, 'process_staging / routed COPY',
         t.staging / t.copy_routed,
         format('%s (%s / %s rows/s)', round((t.staging / t.copy_routed)::numeric, 2), round(t.staging),
                round(t.copy_routed)),
         '≥ 1', t.staging / t.copy_routed >= 1),
        (4, 'delivery to a loopback SMTP server that is not the bottleneck',
         t.delivery,
         format('%s msgs/s; SMTP sink busy %s%% of a core, delivery worker %s%%%s', round(t.delivery::numeric, 1),
                round(t.sink_cpu::numeric), round(t.worker_cpu::numeric),
                CASE WHEN t.sink_cpu >= 85 THEN ': the sink is saturated'
                     WHEN t.sink_cpu >= t.worker_cpu THEN ': the sink is busier than the worker' END),
         '≥ 2,000 msgs/s', t.delivery >= 2000),
        (5, 'delay of other messages while one endpoint hangs until its timeout',
         t.hol_extra,
         format('+%s ms at p99 (p99 %s ms alone, %s ms behind a CRM that never answers, timeout %s s)',
                round(t.hol_extra::numeric), round(t.hol_alone::numeric), round(t.hol_hung::numeric),
                round(t.hol_timeout::numeric)),
         '≤ 1 s', t.hol_extra <= 1000),
        (6, 'messages held back after a crash',
         greatest(t.crash_kill, t.crash_immediate),
         format('the last claimed message delivered %s after the new worker started (SIGKILL of the worker), %s (immediate stop)',
                pg_temp.held(t.crash_kill), pg_temp.held(t.crash_immediate)),
         'until the worker restarts (≤ 10 s after it)', greatest(t.crash_kill, t.crash_immediate) <= 10),
        (7, CASE WHEN :first_lead_size = 0 THEN 'first lead of a session (BENCH_FIRST_LEAD_SIZE is empty)'
                 ELSE format('first lead of a session, %s dealers', to_char(:first_lead_size, 'FM999,999,999')) END,
         t.first_pre,
         format('%s ms preloaded (%s ms not); backend after it: PSS %s MB, heap %s MB preloaded; PSS %s MB, heap %s MB not',
                round(t.first_pre::numeric, 1), round(t.first_plain::numeric, 1),
                coalesce(round(t.pss_pre::numeric, 1)::text, '?'), coalesce(round(t.heap_pre::numeric, 1)::text, '?'),
                coalesce(round(t.pss_plain::numeric, 1)::text, '?'), coalesce(round(t.heap_plain::numeric, 1)::text, '?')),
         '< 20 ms', t.first_pre < 20),
        (8, 'locator p99',
         t.locate_p99, format('%s µs', round(t.locate_p99)), '< 500 µs', t.locate_p99 < 500),
        (9, 'the queue''s expansion keeps up with the inserts (rows 1 and 2 hold only with it)',
         t.expand_lag,
         format('all messages existed %s s after the last lead; %s leads/s inserted, %s messages a lead (%s queue)',
                round(t.expand_lag::numeric, 3), round(t.expand_rate), round(t.expand_per_lead::numeric, 2),
                CASE WHEN t.deferred = 1 THEN 'deferred' ELSE 'synchronous' END)
         || CASE WHEN t.copy_expand_lag IS NOT NULL
                 THEN format('; after a COPY: %s s', round(t.copy_expand_lag::numeric, 3)) ELSE '' END,
         '≤ 1 s', t.expand_lag <= 1)
       ) AS r(n, measure, key, measured, target, met)
 ORDER BY r.n;
