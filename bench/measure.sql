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
-- time_first_route: in a new session, the latency of its first
-- aimroute.route() call and of the next one, in milliseconds, and what the
-- session's copy of the configuration took to build and holds in memory
-- (aimroute.routing_cache_info()).
--
CREATE FUNCTION bench.time_first_route(OUT first_ms double precision, OUT next_ms double precision,
                                       OUT build_ms double precision, OUT memory_mb double precision)
    LANGUAGE plpgsql
AS $$
DECLARE
    t0 timestamptz;
BEGIN
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
END
$$;

--
-- time_copy: rows per second of COPY FROM a server file into
-- aimroute.leads.  routed: the trigger routes each row (input columns
-- only); otherwise the route_lead trigger is disabled for this
-- transaction (the foreign key check still runs) and the file carries the
-- columns routing would fill.  The file is written and the session warmed up
-- first, untimed.
--
CREATE FUNCTION bench.time_copy(path text, nrows integer, routed boolean)
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
    IF routed THEN
        EXECUTE format('COPY (SELECT %s, dealer_number FROM bench.bulk_rows(%s)) TO %L',
                       inputs, nrows, path);
        t0 := clock_timestamp();
        EXECUTE format('COPY aimroute.leads (%s, dealer_number) FROM %L', inputs, path);
    ELSE
        EXECUTE format('COPY (SELECT %s, bare_dealer_number, bare_match_type, bare_distance_miles, now()'
                       ' FROM bench.bulk_rows(%s)) TO %L', inputs, nrows, path);
        -- Routing off for this transaction only: an error rolls the
        -- ALTER TABLE back with the rest.
        ALTER TABLE aimroute.leads DISABLE TRIGGER route_lead;
        t0 := clock_timestamp();
        EXECUTE format('COPY aimroute.leads (%s, dealer_number, match_type, distance_miles, routed_at)'
                       ' FROM %L', inputs, path);
    END IF;
    GET DIAGNOSTICS copied = ROW_COUNT;
    seconds := extract(epoch FROM clock_timestamp() - t0);
    IF NOT routed THEN
        ALTER TABLE aimroute.leads ENABLE TRIGGER route_lead;
    END IF;
    RETURN copied / seconds;
END
$$;

--
-- time_staging: rows per second of aimroute.process_staging() on a batch
-- of nrows staged rows (staging and the session's warm-up are not timed).
-- Raises unless every row became a lead.
--
CREATE FUNCTION bench.time_staging(batch text, nrows integer)
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
                                       country, postal_code, dealer_number, dealer_group, comment)
    SELECT batch, 'import', brand_code, product_code, first_name, last_name, email, phone,
           address, city, state_code, country, postal_code, dealer_number, dealer_group, comment
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
