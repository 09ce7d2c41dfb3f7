--
-- bench/measure.sql: the measurements bench/run.sh takes inside the
-- server (bulk import, dealer locator, agreement check), and the table the
-- results are collected in.
--
-- Times are clock_timestamp() differences taken in the backend, so they
-- leave out the client and the connection.
--

-- One row per dealer count and measure; run.sh writes it out as
-- results/results.csv.
CREATE TABLE bench.results (
    size     integer NOT NULL,
    measure  text NOT NULL,
    value    double precision,
    unit     text NOT NULL,
    PRIMARY KEY (size, measure)
);

-- The sample inputs as rows of a bulk load: row g is sample 1 + (g-1) % m,
-- with its own email so that no row is a duplicate of another.
CREATE FUNCTION bench.bulk_rows(nrows integer)
RETURNS SETOF bench.sample_leads
    LANGUAGE sql STABLE
AS $$
    SELECT s.id, s.brand_code, s.product_code, s.first_name, s.last_name,
           format('lead%s.%s@example.com', s.id, g), s.phone, s.address, s.city, s.state_code,
           s.country, s.postal_code, s.dealer_number, s.dealer_group,
           format('bench bulk row %s', g), s.bare_dealer_number, s.bare_match_type,
           s.bare_distance_miles, s.point_country, s.point
      FROM generate_series(1, nrows) AS g
      JOIN bench.sample_leads s ON s.id = 1 + (g - 1) % (SELECT count(*) FROM bench.sample_leads)
     ORDER BY g
$$;

--
-- warm_up: routes one sample lead, so that whatever a session sets up on
-- its first routing (library, caches, in-memory configuration) is in place
-- before a timed measurement starts.  time_first_route measures that setup.
--
CREATE FUNCTION bench.warm_up() RETURNS void
    LANGUAGE sql
AS $$
    SELECT aimroute.route(s.country, s.postal_code, s.brand_code, s.product_code)
      FROM bench.sample_leads s WHERE s.id = 1
$$;

--
-- smaps_kb: one field of this backend's /proc/self/smaps_rollup (Linux), in
-- kB: Pss (its resident memory, each shared page divided among the
-- processes that map it), Anonymous (its own heap and stack), Rss.  NULL where
-- the file cannot be read.
--
CREATE FUNCTION bench.smaps_kb(field text) RETURNS bigint
    LANGUAGE plpgsql
AS $$
DECLARE
    rollup text;
BEGIN
    BEGIN
        rollup := pg_read_file('/proc/self/smaps_rollup');
    EXCEPTION WHEN OTHERS THEN
        RETURN NULL;
    END;
    RETURN (regexp_match(rollup, '(?:^|\n)' || field || ':\s+(\d+) kB'))[1]::bigint;
END
$$;

--
-- time_first_route: in a new session, the latency of its first
-- aimroute.route() call and of the next one, in milliseconds; what the
-- session's copy of the configuration took to build and holds in memory
-- (aimroute.routing_cache_info()); and the backend's memory (smaps_kb)
-- before the first routing and after it: PSS, and Anonymous kB (the
-- backend's own heap, without shared memory).  A backend that builds its
-- own copy holds it on its heap; one that attaches to a copy in shared
-- memory counts only its share of the pages it touched, in PSS.  PSS also
-- counts the backend's share of the shared buffers it touched.
--
CREATE FUNCTION bench.time_first_route(OUT first_ms double precision, OUT next_ms double precision,
                                       OUT build_ms double precision, OUT memory_mb double precision,
                                       OUT pss_before_kb bigint, OUT pss_kb bigint,
                                       OUT anon_kb bigint)
    LANGUAGE plpgsql
AS $$
DECLARE
    t0 timestamptz;
BEGIN
    pss_before_kb := bench.smaps_kb('Pss');
    t0 := clock_timestamp();
    PERFORM aimroute.route(s.country, s.postal_code, s.brand_code, s.product_code)
       FROM bench.sample_leads s WHERE s.id = 1;
    first_ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
    t0 := clock_timestamp();
    PERFORM aimroute.route(s.country, s.postal_code, s.brand_code, s.product_code)
       FROM bench.sample_leads s WHERE s.id = 2;
    next_ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
    SELECT i.build_ms, i.memory_bytes / 1048576.0 INTO build_ms, memory_mb
      FROM aimroute.routing_cache_info() i;
    pss_kb := bench.smaps_kb('Pss');
    anon_kb := bench.smaps_kb('Anonymous');
END
$$;

--
-- time_copy: rows per second of COPY FROM a server file into
-- aimroute.leads, in one of three modes.  'routed': the trigger routes each
-- row (input columns only) and marks it for the delivery worker, which
-- queues its notice and messages after the commit (send_to_dealer true,
-- the default).  'unsent': the same with
-- send_to_dealer false, so routing alone.  'bare': the trigger route_lead
-- is disabled for this transaction (the foreign key check still runs) and the
-- file carries the columns routing would fill.  The file is written and
-- the session warmed up first, untimed.
--
CREATE FUNCTION bench.time_copy(path text, nrows integer, mode text)
RETURNS double precision
    LANGUAGE plpgsql
AS $$
DECLARE
    inputs constant text := 'brand_code, product_code, first_name, last_name, email, phone, address, '
                            'city, state_code, country, postal_code, dealer_group, comment';
    t0 timestamptz;
    copied bigint;
    seconds double precision;
BEGIN
    PERFORM bench.warm_up();
    IF mode IN ('routed', 'unsent') THEN
        EXECUTE format('COPY (SELECT %s, dealer_number, %L::boolean FROM bench.bulk_rows(%s)) TO %L',
                       inputs, mode = 'routed', nrows, path);
        t0 := clock_timestamp();
        EXECUTE format('COPY aimroute.leads (%s, dealer_number, send_to_dealer) FROM %L', inputs, path);
    ELSIF mode = 'bare' THEN
        EXECUTE format('COPY (SELECT %s, bare_dealer_number, bare_match_type, bare_distance_miles, now()'
                       ' FROM bench.bulk_rows(%s)) TO %L', inputs, nrows, path);
        -- Routing and the queue off for this transaction only: an error
        -- rolls the ALTER TABLE back with the rest.
        ALTER TABLE aimroute.leads DISABLE TRIGGER route_lead;
        t0 := clock_timestamp();
        EXECUTE format('COPY aimroute.leads (%s, dealer_number, match_type, distance_miles, routed_at)'
                       ' FROM %L', inputs, path);
    ELSE
        RAISE EXCEPTION 'time_copy: mode is routed, unsent or bare, not %', mode;
    END IF;
    GET DIAGNOSTICS copied = ROW_COUNT;
    seconds := extract(epoch FROM clock_timestamp() - t0);
    IF mode = 'bare' THEN
        ALTER TABLE aimroute.leads ENABLE TRIGGER route_lead;
    END IF;
    RETURN copied / seconds;
END
$$;

--
-- time_staging: rows per second of aimroute.process_staging() on a batch
-- of nrows staged rows (staging and the session's warm-up are not timed),
-- sent (send_to_dealer blank: true) or not (send_to_dealer 'false'), as
-- time_copy's 'routed' and 'unsent'.  Raises unless every row became a lead.
--
CREATE FUNCTION bench.time_staging(batch text, nrows integer, sent boolean DEFAULT true)
RETURNS double precision
    LANGUAGE plpgsql
AS $$
DECLARE
    t0 timestamptz;
    seconds double precision;
    processed bigint;
BEGIN
    INSERT INTO aimroute.lead_staging (batch_id, source, brand_code, product_code, first_name,
                                       last_name, email, phone, address, city, state_code,
                                       country, postal_code, dealer_number, dealer_group,
                                       send_to_dealer, comment)
    SELECT batch, 'import', brand_code, product_code, first_name, last_name, email, phone,
           address, city, state_code, country, postal_code, dealer_number, dealer_group,
           CASE WHEN NOT sent THEN 'false' END, comment
      FROM bench.bulk_rows(nrows);
    PERFORM bench.warm_up();
    t0 := clock_timestamp();
    SELECT p.rows INTO processed FROM aimroute.process_staging(batch) p WHERE p.status = 'processed';
    seconds := extract(epoch FROM clock_timestamp() - t0);
    IF processed IS DISTINCT FROM nrows THEN
        RAISE EXCEPTION 'process_staging(%) made % leads of % rows', batch, processed, nrows;
    END IF;
    RETURN nrows / seconds;
END
$$;

--
-- time_locate: latency of aimroute.locate_dealers() per call, in
-- microseconds, over `calls` sample leads after a warm-up of 200 others:
-- each call is timed on its own and the median, 99th percentile and mean
-- are returned.  The timing includes PL/pgSQL running the query (a few
-- microseconds).
--
CREATE FUNCTION bench.time_locate(max_results integer, calls integer,
                                  OUT p50_us double precision, OUT p99_us double precision,
                                  OUT mean_us double precision)
    LANGUAGE plpgsql
AS $$
DECLARE
    s bench.sample_leads;
    t0 timestamptz;
    n bigint;
    lat double precision[] := '{}';
BEGIN
    FOR s IN SELECT * FROM bench.sample_leads ORDER BY id LIMIT 200 LOOP
        SELECT count(*) INTO n
          FROM aimroute.locate_dealers(s.country, s.postal_code, s.brand_code, s.product_code, max_results);
    END LOOP;
    FOR s IN SELECT * FROM bench.sample_leads ORDER BY id OFFSET 200 LIMIT calls LOOP
        t0 := clock_timestamp();
        SELECT count(*) INTO n
          FROM aimroute.locate_dealers(s.country, s.postal_code, s.brand_code, s.product_code, max_results);
        lat := lat || extract(epoch FROM clock_timestamp() - t0)::double precision * 1e6;
    END LOOP;
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY x),
           avg(x)
      INTO p50_us, p99_us, mean_us
      FROM unnest(lat) AS x;
END
$$;

--
-- time_coverage: aimroute.coverage() of every postal code (the US and
-- Canada) for the brand with the most dealers, timed twice in the
-- caller's session: first (in a new session, that includes taking the
-- routing model and looking up every postal code) and again.  Returns the
-- brand, both times in milliseconds, the rows and the white space.
--
CREATE FUNCTION bench.time_coverage(OUT brand text, OUT first_ms double precision,
                                    OUT again_ms double precision, OUT postal_codes bigint,
                                    OUT white_space bigint)
    LANGUAGE plpgsql
AS $$
DECLARE
    t0 timestamptz;
BEGIN
    SELECT b.brand_code INTO brand
      FROM aimroute.dealer_brands b GROUP BY b.brand_code ORDER BY count(*) DESC, b.brand_code LIMIT 1;
    t0 := clock_timestamp();
    SELECT count(*), count(*) FILTER (WHERE c.match_type = 'Default') INTO postal_codes, white_space
      FROM aimroute.coverage(brand) c;
    first_ms := extract(epoch FROM clock_timestamp() - t0) * 1e3;
    t0 := clock_timestamp();
    PERFORM count(*) FROM aimroute.coverage(brand);
    again_ms := extract(epoch FROM clock_timestamp() - t0) * 1e3;
END
$$;

--
-- check_agreement: routes sample leads 1..nrows through the C trigger
-- (aimroute.leads) and through the PL/pgSQL baseline (bench.leads_plpgsql)
-- and keeps both answers side by side in bench.agreement.  Empties both
-- lead tables first.
--
CREATE TABLE bench.agreement (
    sample_id       integer PRIMARY KEY,
    c_dealer        text,
    c_match         aimroute.match_type,
    c_miles         double precision,
    plpgsql_dealer  text,
    plpgsql_match   aimroute.match_type,
    plpgsql_miles   double precision
);

CREATE FUNCTION bench.check_agreement(nrows integer) RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    TRUNCATE aimroute.leads, bench.leads_plpgsql, bench.agreement CASCADE;
    INSERT INTO aimroute.leads (brand_code, product_code, first_name, last_name, email, phone,
                                address, city, state_code, country, postal_code, dealer_number,
                                dealer_group, comment)
    SELECT brand_code, product_code, first_name, last_name, email, phone, address, city,
           state_code, country, postal_code, dealer_number, dealer_group, comment
      FROM bench.sample_leads WHERE id <= nrows ORDER BY id;
    INSERT INTO bench.leads_plpgsql (brand_code, product_code, first_name, last_name, email, phone,
                                     address, city, state_code, country, postal_code, dealer_number,
                                     dealer_group, comment)
    SELECT brand_code, product_code, first_name, last_name, email, phone, address, city,
           state_code, country, postal_code, dealer_number, dealer_group, comment
      FROM bench.sample_leads WHERE id <= nrows ORDER BY id;
    INSERT INTO bench.agreement
    SELECT s.id, c.dealer_number, c.match_type, c.distance_miles,
           b.dealer_number, b.match_type, b.distance_miles
      FROM bench.sample_leads s
      JOIN aimroute.leads c ON c.comment = s.comment
      JOIN bench.leads_plpgsql b ON b.comment = s.comment
     WHERE s.id <= nrows;
END
$$;

--
-- The worker measures.  run.sh takes them with the cluster preloading
-- aimroute (aimroute.database = the benchmark database), so that the
-- re-route and delivery workers run, and with the loopback SMTP and HTTP
-- sinks of test/servers listening.
--

--
-- How the delivery queue works, in one place.  'synchronous': the routing
-- trigger writes a lead's notice and its messages in the inserting
-- transaction (0.2.0 before issue 16).  'deferred': the trigger only marks
-- the lead, and the delivery worker expands the mark into the notice and
-- its messages later, in its own transactions (issue 16, "the lead is the
-- queue").  Detected by what the deferred queue adds: a function
-- aimroute.delivery_expand or a column aimroute.leads.notice_pending.  If
-- the queue's names differ, change queue_mode and unexpanded_leads here,
-- and nothing else.
--
CREATE FUNCTION bench.queue_mode() RETURNS text
    LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_proc p
                              WHERE p.pronamespace = 'aimroute'::regnamespace
                                AND p.proname = 'delivery_expand')
                  OR EXISTS (SELECT FROM pg_catalog.pg_attribute a
                              WHERE a.attrelid = 'aimroute.leads'::regclass
                                AND a.attname = 'notice_pending' AND NOT a.attisdropped)
                THEN 'deferred' ELSE 'synchronous' END
$$;

--
-- unexpanded_leads: the leads committed and sent whose messages the
-- delivery worker has not made yet: those still marked (notice_pending),
-- or, without that column, those with no notice.  Always 0 with a
-- synchronous queue.
--
CREATE FUNCTION bench.unexpanded_leads() RETURNS bigint
    LANGUAGE plpgsql
AS $$
DECLARE
    n bigint;
BEGIN
    IF bench.queue_mode() = 'synchronous' THEN
        RETURN 0;
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid = 'aimroute.leads'::regclass
                     AND a.attname = 'notice_pending' AND NOT a.attisdropped) THEN
        EXECUTE 'SELECT count(*) FROM aimroute.leads WHERE notice_pending' INTO n;
    ELSE
        SELECT count(*) INTO n FROM aimroute.leads l
         WHERE l.send_to_dealer
           AND NOT EXISTS (SELECT FROM aimroute.lead_notifications x WHERE x.lead_id = l.lead_id);
    END IF;
    RETURN n;
END
$$;

--
-- expansion_stats: the leads inserted since a moment (the start of the
-- expansion measure) and their messages: how many leads, how many
-- messages, and the seconds from the last lead received to the last
-- message queued (with a synchronous queue, the messages are queued with
-- their lead: about 0).
--
CREATE FUNCTION bench.expansion_stats(since timestamptz,
                                      OUT leads bigint, OUT messages bigint,
                                      OUT insert_seconds double precision,
                                      OUT lag_seconds double precision)
    LANGUAGE sql
AS $$
    SELECT (SELECT count(*) FROM aimroute.leads l WHERE l.received_at >= since),
           (SELECT count(*) FROM aimroute.outbox o WHERE o.queued_at >= since),
           (SELECT extract(epoch FROM max(l.received_at) - min(l.received_at))::float8
              FROM aimroute.leads l WHERE l.received_at >= since),
           (SELECT extract(epoch FROM greatest((SELECT max(o.queued_at) FROM aimroute.outbox o
                                                  WHERE o.queued_at >= since)
                                               - (SELECT max(l.received_at) FROM aimroute.leads l
                                                   WHERE l.received_at >= since),
                                               interval '0'))::float8)
$$;

--
-- sent_from: when a message's lead was sent as the application sees it:
-- the routing of its lead (the INSERT, just before its commit), not the
-- moment the delivery worker made the message, which with a deferred
-- queue comes later and may itself be held up.  A message without a lead
-- (a recap) counts from when it was queued.
--
CREATE FUNCTION bench.sent_from(o aimroute.outbox) RETURNS timestamptz
    LANGUAGE sql STABLE
AS $$
    SELECT least(o.queued_at, (SELECT l.routed_at FROM aimroute.leads l WHERE l.lead_id = o.lead_id))
$$;

--
-- email_delays: the lead emails above first_id, leaving out those of one
-- dealer (the hanging endpoint's): how many, how many delivered, the
-- median and 99th percentile of sent (bench.sent_from) to delivered in
-- milliseconds, and
-- when the last was delivered.
--
CREATE FUNCTION bench.email_delays(first_id bigint, except_dealer text,
                                   OUT emails bigint, OUT delivered bigint,
                                   OUT p50_ms double precision, OUT p99_ms double precision,
                                   OUT last_at timestamptz)
    LANGUAGE sql
AS $$
    SELECT count(*), count(*) FILTER (WHERE o.status = 'delivered'),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM o.finished_at - bench.sent_from(o))::float8 * 1000),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM o.finished_at - bench.sent_from(o))::float8 * 1000),
           max(o.finished_at)
      FROM aimroute.outbox o
     WHERE o.message_id > first_id AND o.method = 'email'
       AND o.dealer_number IS DISTINCT FROM except_dealer
$$;

--
-- wait_for: waits until the boolean query returns true, or timeout_s
-- passes; done says which.  A procedure that commits between its polls,
-- so that it holds no snapshot while the workers change the rows it
-- watches.
--
CREATE PROCEDURE bench.wait_for(query text, timeout_s double precision, INOUT done boolean DEFAULT NULL)
    LANGUAGE plpgsql
AS $$
DECLARE
    t0 constant timestamptz := clock_timestamp();
BEGIN
    LOOP
        EXECUTE query INTO done;
        EXIT WHEN done OR clock_timestamp() - t0 > make_interval(secs => timeout_s);
        COMMIT;
        PERFORM pg_sleep(0.05);
    END LOOP;
    done := coalesce(done, false);
END
$$;

--
-- queue_burst: n leads inserted in one transaction, each pre-assigned to
-- an active dealer whose only contact is its 'Leads: Emails To' address
-- and who has no CRM integration, so that each lead queues exactly one
-- email.  Those dealers are taken in turn; a lead's brand is one its
-- dealer sells, its postal code the dealer's.  Returns the largest outbox
-- message_id before the burst (the burst's messages are those above it);
-- raises unless exactly n emails were queued.
--
CREATE FUNCTION bench.queue_burst(n integer) RETURNS bigint
    LANGUAGE plpgsql
AS $$
DECLARE
    ndealers integer;
    first_id bigint;
BEGIN
    CREATE TEMP TABLE burst_dealers ON COMMIT DROP AS
    SELECT row_number() OVER (ORDER BY d.dealer_number)::integer AS k, d.dealer_number, d.country,
           d.postal_code,
           (SELECT min(b.brand_code) FROM aimroute.dealer_brands b
             WHERE b.dealer_number = d.dealer_number) AS brand_code
      FROM aimroute.dealers d
     WHERE d.active_for_sales
       AND (SELECT count(*) FROM aimroute.dealer_contacts c WHERE c.dealer_number = d.dealer_number) = 1
       AND EXISTS (SELECT FROM aimroute.dealer_contacts c
                    WHERE c.dealer_number = d.dealer_number AND c.email IS NOT NULL
                      AND 'Leads: Emails To' = ANY (c.contact_types))
       AND NOT EXISTS (SELECT FROM aimroute.crm_integrations i
                        WHERE i.dealer_number = d.dealer_number AND i.active);
    SELECT count(*) INTO ndealers FROM burst_dealers;
    IF ndealers = 0 THEN
        RAISE EXCEPTION 'queue_burst: no dealer has a single To contact and no CRM';
    END IF;
    SELECT coalesce(max(message_id), 0) INTO first_id FROM aimroute.outbox;
    INSERT INTO aimroute.leads (brand_code, first_name, last_name, email, phone, country, postal_code,
                                dealer_number, comment)
    SELECT d.brand_code, 'Burst', format('Lead %s', g), format('burst%s@example.com', g),
           format('555-%s', lpad((g % 10000)::text, 4, '0')), d.country, d.postal_code,
           d.dealer_number, format('bench delivery burst %s', g)
      FROM generate_series(1, n) AS g
      JOIN burst_dealers d ON d.k = 1 + (g - 1) % ndealers
     ORDER BY g;
    -- With a deferred queue the messages do not exist yet: run.sh waits
    -- until the worker has expanded the leads, then calls check_burst.
    IF bench.queue_mode() = 'synchronous' THEN
        PERFORM bench.check_burst(first_id, n);
    END IF;
    RETURN first_id;
END
$$;

-- check_burst: raises unless the messages above first_id are n emails to
-- To contacts, one per lead of a queue_burst(n).
CREATE FUNCTION bench.check_burst(first_id bigint, n integer) RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    queued bigint;
    emails bigint;
BEGIN
    SELECT count(*), count(*) FILTER (WHERE method = 'email' AND role = 'To')
      INTO queued, emails
      FROM aimroute.outbox WHERE message_id > first_id;
    IF queued <> n OR emails <> n THEN
        RAISE EXCEPTION 'queue_burst: % leads queued % messages (% To emails), not one email each',
                        n, queued, emails;
    END IF;
END
$$;

--
-- delivery_stats: the messages above first_id (a burst): how many, how
-- many delivered, the attempts made, and the seconds from the last one
-- queued (the burst's transaction committed just after) to the last one
-- finished, with the rate that makes; and the median and 99th percentile
-- of each message's time from its lead's routing (bench.sent_from) to
-- finished, in milliseconds.
--
CREATE FUNCTION bench.delivery_stats(first_id bigint,
                                     OUT messages bigint, OUT delivered bigint, OUT attempts bigint,
                                     OUT seconds double precision, OUT per_second double precision,
                                     OUT p50_ms double precision, OUT p99_ms double precision)
    LANGUAGE sql
AS $$
    SELECT count(*), count(*) FILTER (WHERE status = 'delivered'), sum(o.attempts),
           extract(epoch FROM max(finished_at) - max(queued_at))::float8,
           count(*) FILTER (WHERE status = 'delivered')
               / extract(epoch FROM max(finished_at) - max(queued_at))::float8,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - bench.sent_from(o))::float8 * 1000),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - bench.sent_from(o))::float8 * 1000)
      FROM aimroute.outbox o
     WHERE o.message_id > first_id
$$;

-- file_size: the size of a file in bytes, NULL when there is none.
CREATE FUNCTION bench.file_size(path text) RETURNS bigint
    LANGUAGE sql
AS $$
    SELECT (pg_stat_file(path, true)).size
$$;

--
-- sink_check: what the SMTP sink logged from byte from_byte of its
-- JSON-lines log on: the messages it received, their distinct Message-IDs,
-- and how many of those are the Message-IDs of outbox messages above
-- first_id.
--
CREATE FUNCTION bench.sink_check(path text, from_byte bigint, first_id bigint,
                                 OUT messages bigint, OUT distinct_ids bigint, OUT known_ids bigint)
    LANGUAGE sql
AS $$
    WITH received AS (
        SELECT l::json ->> 'message_id' AS id
          FROM regexp_split_to_table(pg_read_file(path, from_byte, bench.file_size(path) - from_byte),
                                     E'\n') AS l
         WHERE l <> '' AND l::json ->> 'event' = 'message'
    )
    SELECT count(*), count(DISTINCT id),
           count(DISTINCT id) FILTER (WHERE id IN (SELECT o.message_key FROM aimroute.outbox o
                                                    WHERE o.message_id > first_id))
      FROM received
$$;

--
-- reroute_leads: sample leads 1..m routed with re-routing on, in one
-- transaction, without their first notices (deleted again in this
-- transaction: only the re-route's notices are part of the measure).
-- Returns how many have a deadline: all but those at the default dealer.
--
CREATE FUNCTION bench.reroute_leads(m integer) RETURNS bigint
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NOT (SELECT s.reroute_enabled FROM aimroute.settings s) THEN
        RAISE EXCEPTION 'reroute_leads: settings.reroute_enabled is off';
    END IF;
    INSERT INTO aimroute.leads (brand_code, product_code, first_name, last_name, email, phone,
                                address, city, state_code, country, postal_code, dealer_number,
                                dealer_group, comment)
    SELECT brand_code, product_code, first_name, last_name, email, phone, address, city,
           state_code, country, postal_code, dealer_number, dealer_group, comment
      FROM bench.sample_leads WHERE id <= m ORDER BY id;
    DELETE FROM aimroute.lead_notifications n WHERE n.event = 'Routed';
    RETURN (SELECT count(*) FROM aimroute.leads WHERE reroute_due_at IS NOT NULL AND viewed_at IS NULL);
END
$$;

--
-- set_deadlines: moves the deadline of up to how_many leads not re-routed
-- yet (the lowest lead_ids) to in_seconds from now; returns that deadline
-- and how many leads it was set on.
--
CREATE FUNCTION bench.set_deadlines(how_many bigint, in_seconds double precision,
                                    OUT deadline timestamptz, OUT leads bigint)
    LANGUAGE plpgsql
AS $$
BEGIN
    deadline := clock_timestamp() + make_interval(secs => in_seconds);
    UPDATE aimroute.leads l SET reroute_due_at = deadline
     WHERE l.lead_id IN (SELECT x.lead_id FROM aimroute.leads x
                          WHERE x.reroute_count = 0 AND x.viewed_at IS NULL
                            AND x.reroute_due_at > deadline
                          ORDER BY x.lead_id LIMIT how_many);
    GET DIAGNOSTICS leads = ROW_COUNT;
END
$$;

--
-- reroute_stats: the leads re-routed at or after a deadline: how many, the
-- seconds from the deadline to the last of them, the rate that makes, and
-- each lead's lag behind the deadline in milliseconds (the first, median
-- and 99th percentile).  A lead's moment is its Re-Route notice's
-- queued_at, the clock when the worker moved that lead; lead_history.at is
-- now(), the start of the worker's transaction, shared by a batch of 100.
--
CREATE FUNCTION bench.reroute_stats(deadline timestamptz,
                                    OUT leads bigint, OUT seconds double precision,
                                    OUT per_second double precision, OUT first_ms double precision,
                                    OUT p50_ms double precision, OUT p99_ms double precision)
    LANGUAGE sql
AS $$
    SELECT count(*), max(lag) / 1000, count(*) / (max(lag) / 1000), min(lag),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY lag),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)
      FROM (SELECT extract(epoch FROM n.queued_at - deadline)::float8 * 1000 AS lag
              FROM aimroute.lead_notifications n
             WHERE n.event = 'Re-Route' AND n.queued_at >= deadline) AS x
$$;
