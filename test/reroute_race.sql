-- test/reroute_race.sql: a view racing a re-route of the same lead is
-- resolved one way or the other, never both (SPEC section 3).  Two other
-- sessions, dblink connections "r" (re-routes) and "v" (views), work on
-- committed data; what they commit is removed at the end.
BEGIN;
SELECT plan(13);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = warning;

SELECT dblink_connect('r', format('dbname=%s port=%s host=%s', current_database(), current_setting('port'),
                                  split_part(current_setting('unix_socket_directories'), ',', 1)));
SELECT dblink_connect('v', format('dbname=%s port=%s host=%s', current_database(), current_setting('port'),
                                  split_part(current_setting('unix_socket_directories'), ',', 1)));
-- Never hang the suite on a lock: fail instead.
SELECT dblink_exec('r', 'SET lock_timeout = ''20s''');
SELECT dblink_exec('v', 'SET lock_timeout = ''20s''');

SELECT dblink_exec('r', $$
    CREATE TEMP TABLE saved_settings AS SELECT * FROM aimroute.settings;
    INSERT INTO aimroute.brands VALUES ('RRC', 'Race test brand');
    INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code) VALUES
      ('RRC-HQ', 'HQ', 'US', '10001'), ('RRC-CHI', 'Chicago', 'US', '60601'), ('RRC-MKE', 'Milwaukee', 'US', '53202');
    INSERT INTO aimroute.dealer_brands VALUES ('RRC-CHI', 'RRC'), ('RRC-MKE', 'RRC');
    INSERT INTO aimroute.dealer_contacts (dealer_number, email) VALUES
      ('RRC-CHI', 'sales@chi.example'), ('RRC-MKE', 'sales@mke.example');
    UPDATE aimroute.settings SET default_dealer_number = 'RRC-HQ', radius_enabled = true, radius_miles = 1500,
           radius_countries = '{US,CA}', product_routing_enabled = false, inventory_routing_enabled = false,
           reroute_enabled = true, reroute_after = '24 hours', reroute_skip_days = '{}', reroute_max_dealers = 3;
    INSERT INTO aimroute.leads (brand_code, country, postal_code, comment)
    VALUES ('RRC', 'US', '60601', 'race-1'), ('RRC', 'US', '60601', 'race-2'), ('RRC', 'US', '60601', 'race-3');
    -- Due in the order of their numbers, whatever order the UPDATE visits
    -- them in (the heap's, which earlier files' deleted rows can change).
    UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() - make_interval(secs => 4 - right(comment, 1)::integer)
     WHERE comment LIKE 'race-%';
$$);

CREATE FUNCTION pg_temp.id(tag text) RETURNS bigint LANGUAGE sql AS $$
    SELECT lead_id FROM aimroute.leads WHERE comment = tag
$$;
CREATE FUNCTION pg_temp.state(tag text) RETURNS text LANGUAGE sql AS $$
    SELECT dealer_number || CASE WHEN viewed_at IS NULL THEN ' unviewed' ELSE ' viewed' END
      FROM aimroute.leads WHERE comment = tag
$$;
-- Wait (up to 10 s) until connection conn waits for a lock.
CREATE FUNCTION pg_temp.waits(conn_pid integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..200 LOOP
        IF EXISTS (SELECT FROM pg_stat_activity WHERE pid = conn_pid AND wait_event_type = 'Lock') THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN false;
END
$$;
CREATE TEMP TABLE pids AS
SELECT (SELECT p FROM dblink('r', 'SELECT pg_backend_pid()') AS t(p integer)) AS r,
       (SELECT p FROM dblink('v', 'SELECT pg_backend_pid()') AS t(p integer)) AS v;

-- 1. The re-route takes the lead first; the old dealer's view waits, then
--    is refused.
SELECT dblink_exec('r', 'BEGIN');
SELECT is((SELECT n FROM dblink('r', $$SELECT aimroute.reroute_overdue(1)$$) AS t(n integer)), 1,
          '1. "r" re-routes the first overdue lead, not committed yet');
SELECT dblink_send_query('v', format($$SELECT aimroute.mark_viewed(%s, 'sales@chi.example')$$, pg_temp.id('race-1')));
SELECT ok(pg_temp.waits((SELECT v FROM pids)), '1. the old dealer''s view waits for the re-route');
SELECT dblink_exec('r', 'COMMIT');
SELECT is((SELECT ok FROM dblink_get_result('v') AS t(ok boolean)), false,
          '1. once the re-route commits, the old dealer''s view is refused');
SELECT is((SELECT count(*)::integer FROM dblink_get_result('v') AS t(ok boolean)), 0, '1. (no other result)');
SELECT is(pg_temp.state('race-1'), 'RRC-MKE unviewed', '1. the lead is with the new dealer, unviewed');

-- 2. The view takes the lead first; the re-route skips it, and finds it
--    viewed once the view commits.
SELECT dblink_exec('v', 'BEGIN');
SELECT is((SELECT ok FROM dblink('v', format($$SELECT aimroute.mark_viewed(%s, 'sales@chi.example')$$, pg_temp.id('race-2')))
                                  AS t(ok boolean)), true, '2. "v" views the second lead, not committed yet');
SELECT dblink_exec('r', $$UPDATE aimroute.leads SET reroute_due_at = 'infinity' WHERE comment = 'race-3'$$);
SELECT is((SELECT n FROM dblink('r', $$SELECT aimroute.reroute_overdue(10)$$) AS t(n integer)), 0,
          '2. the re-route skips the lead being viewed (SKIP LOCKED) without waiting');
SELECT dblink_exec('v', 'COMMIT');
SELECT is((SELECT n FROM dblink('r', $$SELECT aimroute.reroute_overdue(10)$$) AS t(n integer)), 0,
          '2. after the view commits, the lead is no longer due');
SELECT is(pg_temp.state('race-2'), 'RRC-CHI viewed', '2. it stays with the dealer that viewed it');

-- 3. The view link of the old dealer, racing a re-route.  A first re-route
--    (committed) gives Milwaukee a notice and its link; the second, to the
--    default dealer, races that link.
SELECT dblink_exec('r', $$UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE comment = 'race-3'$$);
SELECT is((SELECT n FROM dblink('r', $$SELECT aimroute.reroute_overdue(1)$$) AS t(n integer)), 1,
          '3. the third lead is re-routed to Milwaukee');
SELECT dblink_exec('r', $$UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE comment = 'race-3'$$);
SELECT dblink_exec('r', 'BEGIN');
SELECT is((SELECT n FROM dblink('r', $$SELECT aimroute.reroute_overdue(1)$$) AS t(n integer)), 1,
          '3. "r" re-routes it again, not committed yet');
SELECT dblink_send_query('v', format($$SELECT aimroute.open_view_link(%L)$$,
                                     (SELECT view_token FROM lead_notifications
                                       WHERE lead_id = pg_temp.id('race-3') AND dealer_number = 'RRC-MKE')));
SELECT ok(pg_temp.waits((SELECT v FROM pids)), '3. the link waits for the re-route');
SELECT dblink_exec('r', 'COMMIT');
SELECT is((SELECT ok FROM dblink_get_result('v') AS t(ok boolean)), false,
          '3. the old dealer''s view link, opened during the re-route, is refused once it commits');
SELECT dblink_get_result('v');

-- Remove what "r" committed.
SELECT dblink_exec('r', $$
    DELETE FROM aimroute.leads WHERE comment LIKE 'race-%';
    UPDATE aimroute.settings s
       SET default_dealer_number = v.default_dealer_number, radius_enabled = v.radius_enabled,
           radius_miles = v.radius_miles, radius_countries = v.radius_countries,
           product_routing_enabled = v.product_routing_enabled,
           inventory_routing_enabled = v.inventory_routing_enabled, reroute_enabled = v.reroute_enabled,
           reroute_after = v.reroute_after, reroute_skip_days = v.reroute_skip_days,
           reroute_max_dealers = v.reroute_max_dealers
      FROM saved_settings v;
    DELETE FROM aimroute.dealers WHERE dealer_number LIKE 'RRC-%';
    DELETE FROM aimroute.brands WHERE brand_code = 'RRC';
$$);
SELECT dblink_disconnect('r');
SELECT dblink_disconnect('v');

SELECT * FROM finish();
ROLLBACK;
