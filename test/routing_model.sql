-- test/routing_model.sql: each backend routes with an in-memory model of
-- the configuration (src/model.c).  The model must never route
-- differently from the tables: after a change committed by another
-- session, inside a transaction that changes the configuration itself,
-- after a rollback to a savepoint, and not before another session commits.
-- A REPEATABLE READ transaction keeps routing by its snapshot.
--
-- The other sessions are dblink connections to this database: "w" writes
-- and commits, "rr" reads in REPEATABLE READ.  What "w" commits is removed
-- at the end.
BEGIN;
SELECT plan(43);
-- PostGIS is in public, in a schema of its own or in aimroute
-- (t/lib/Placement.pm): the reference below calls ST_Distance.
SELECT set_config('search_path', 'aimroute, public, ' || e.extnamespace::regnamespace, true)
  FROM pg_extension e WHERE e.extname = 'postgis';
SET LOCAL client_min_messages = warning;

SELECT dblink_connect('w', format('dbname=%s port=%s host=%s', current_database(),
                                  current_setting('port'),
                                  split_part(current_setting('unix_socket_directories'), ',', 1)));
SELECT dblink_connect('rr', format('dbname=%s port=%s host=%s', current_database(),
                                   current_setting('port'),
                                   split_part(current_setting('unix_socket_directories'), ',', 1)));

-- Should this test ever leave "w" waiting for a lock this transaction
-- holds, fail instead of hanging.
SELECT dblink_exec('w', 'SET lock_timeout = ''20s''');

-- Committed by "w": brand RC1, dealers in Chicago and Milwaukee, and a
-- default dealer in New York (which sells nothing).
SELECT dblink_exec('w', $$
    INSERT INTO aimroute.brands VALUES ('RC1', 'Cache test brand');
    INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code) VALUES
      ('RC-CHI', 'Chicago', 'US', '60601'),
      ('RC-MKE', 'Milwaukee', 'US', '53202'),
      ('RC-HQ', 'Cache test HQ', 'US', '10001');
    INSERT INTO aimroute.dealer_brands VALUES ('RC-CHI', 'RC1'), ('RC-MKE', 'RC1');
$$);
SELECT dblink_exec('w', $$
    CREATE TEMP TABLE saved_settings AS SELECT * FROM aimroute.settings;
    UPDATE aimroute.settings SET default_dealer_number = 'RC-HQ', radius_enabled = true,
           radius_miles = 1500, radius_countries = '{US,CA}', product_routing_enabled = false,
           inventory_routing_enabled = false
$$);

CREATE FUNCTION pg_temp.routed(conn text DEFAULT NULL) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    answer text;
BEGIN
    IF conn IS NULL THEN
        SELECT r.dealer_number || ' ' || r.match_type INTO answer
          FROM aimroute.route('US', '60601', 'RC1', NULL, NULL, NULL, NULL, NULL) r;
    ELSE
        SELECT x.answer INTO answer
          FROM dblink(conn, $q$SELECT r.dealer_number || ' ' || r.match_type
                                 FROM aimroute.route('US', '60601', 'RC1', NULL, NULL, NULL, NULL, NULL) r$q$)
               AS x(answer text);
    END IF;
    RETURN answer;
END
$$;

SELECT is(pg_temp.routed(), 'RC-CHI Radius', 'a Chicago lead goes to the Chicago dealer (the copy is built)');

-- Another session commits a change: the next statement here sees it.
SELECT dblink_exec('w', $$UPDATE aimroute.dealers SET active_for_sales = false WHERE dealer_number = 'RC-CHI'$$);
SELECT is(pg_temp.routed(), 'RC-MKE Radius', 'another session deactivates the Chicago dealer: Milwaukee takes the lead');

SELECT dblink_exec('w', $$
    UPDATE aimroute.dealers SET active_for_sales = true WHERE dealer_number = 'RC-CHI';
    INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
    VALUES ('RC-MKE', NULL, 'postal', 'US', '60601');
$$);
SELECT is(pg_temp.routed(), 'RC-MKE Territory', 'another session gives Milwaukee ZIP 60601: Territory');

-- Not before it commits.
SELECT dblink_exec('w', 'BEGIN');
SELECT dblink_exec('w', $$DELETE FROM aimroute.territories WHERE dealer_number = 'RC-MKE'$$);
SELECT is(pg_temp.routed(), 'RC-MKE Territory', 'an uncommitted change of another session does not count');
SELECT dblink_exec('w', 'ROLLBACK');
SELECT is(pg_temp.routed(), 'RC-MKE Territory', 'nor after it is rolled back');

-- This transaction's own changes count at once, and stop counting when
-- rolled back to a savepoint.
SAVEPOINT own_change;
DELETE FROM territories WHERE dealer_number = 'RC-MKE';
SELECT is(pg_temp.routed(), 'RC-CHI Radius', 'the same transaction deletes the territory: Radius again');
UPDATE settings SET radius_enabled = false;
SELECT is(pg_temp.routed(), 'RC-HQ Default', 'the same transaction turns radius routing off: Default');
ROLLBACK TO SAVEPOINT own_change;
SELECT is(pg_temp.routed(), 'RC-MKE Territory', 'rolled back to the savepoint: the territory holds again');
SELECT is(pg_temp.routed('w'), 'RC-MKE Territory', 'the other session never saw this transaction''s changes');

-- Rows routed under one snapshot share one check of the configuration
-- version; a change made just before the statement still counts for all.
SAVEPOINT many_rows;
DELETE FROM territories WHERE dealer_number = 'RC-MKE';
WITH routed AS (
    INSERT INTO leads (brand_code, country, postal_code, email)
    SELECT 'RC1', 'US', '60601', format('rc%s@example.com', g) FROM generate_series(1, 3) g
    RETURNING dealer_number || ' ' || match_type AS answer)
SELECT is((SELECT string_agg(answer, ', ') FROM routed), 'RC-CHI Radius, RC-CHI Radius, RC-CHI Radius',
          'one INSERT of three rows after the territory is deleted: all three by Radius');
ROLLBACK TO SAVEPOINT many_rows;

-- Within one statement, a function that changes the configuration between
-- routings, and undoes it in an exception block, sees each state in turn.
CREATE FUNCTION pg_temp.change_and_undo() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    before_change text := pg_temp.routed();
    changed text;
BEGIN
    BEGIN
        DELETE FROM aimroute.territories WHERE dealer_number = 'RC-MKE';
        changed := pg_temp.routed();
        RAISE EXCEPTION 'undo';
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    RETURN concat_ws(' / ', before_change, changed, pg_temp.routed());
END
$$;
SELECT is(pg_temp.change_and_undo(), 'RC-MKE Territory / RC-CHI Radius / RC-MKE Territory',
          'one statement: territory, deleted in a subtransaction (Radius), rolled back (territory)');

-- REPEATABLE READ: the snapshot decides, whatever commits meanwhile.
SELECT dblink_exec('rr', 'BEGIN ISOLATION LEVEL REPEATABLE READ');
SELECT is(pg_temp.routed('rr'), 'RC-MKE Territory', 'REPEATABLE READ: routed by its snapshot');
SELECT dblink_exec('w', $$DELETE FROM aimroute.territories WHERE dealer_number = 'RC-MKE'$$);
SELECT is(pg_temp.routed(), 'RC-CHI Radius', 'another session removes the territory: Radius here');
SELECT is(pg_temp.routed('rr'), 'RC-MKE Territory', 'REPEATABLE READ: still its snapshot''s territory');
SELECT dblink_exec('rr', 'COMMIT');
SELECT is(pg_temp.routed('rr'), 'RC-CHI Radius', 'after COMMIT: the current configuration');

-- A settings change by another session, and a moved dealer.
SELECT dblink_exec('w', $$UPDATE aimroute.settings SET radius_miles = 1$$);
SELECT is(pg_temp.routed(), 'RC-CHI Radius', 'radius cut to 1 mile: the Chicago dealer, at the ZIP''s centre, still within it');
SELECT dblink_exec('w', $$UPDATE aimroute.dealers SET location = 'SRID=4326;POINT(-87.9065 43.0389)' WHERE dealer_number = 'RC-CHI'$$);
SELECT is(pg_temp.routed(), 'RC-HQ Default', 'the Chicago dealer moves to Milwaukee: nobody within 1 mile, Default');

-- The model, rebuilt here after every change above, agrees with the rules
-- written in SQL (the closest active dealer selling the brand within the
-- radius, then the lower number) on the dealer and the distance, and with
-- a model built from scratch in a new session on the whole answer,
-- explanation included.
SELECT dblink_exec('w', $$UPDATE aimroute.settings SET radius_miles = 1500$$);
SELECT is((SELECT r.dealer_number || ' ' || r.match_type || ' ' || r.distance_miles
             FROM aimroute.route('US', '60601', 'RC1', NULL, NULL, NULL, NULL, NULL) r),
          (SELECT d.dealer_number || ' Radius ' || ST_Distance(d.location, p.centroid) / 1609.344
             FROM dealers d, postal_codes p, settings s
            WHERE p.country = 'US' AND p.postal_code = '60601' AND d.active_for_sales AND d.country = 'US'
              AND EXISTS (SELECT FROM dealer_brands b WHERE b.dealer_number = d.dealer_number AND b.brand_code = 'RC1')
              AND ST_Distance(d.location, p.centroid) <= s.radius_miles * 1609.344
            ORDER BY ST_Distance(d.location, p.centroid), d.dealer_number COLLATE "C" LIMIT 1),
          'the model routes as the rules written in SQL: the same dealer and distance');
SELECT dblink_connect('fresh', format('dbname=%s port=%s host=%s', current_database(),
                                      current_setting('port'),
                                      split_part(current_setting('unix_socket_directories'), ',', 1)));
SELECT is((SELECT row(r.*)::text FROM aimroute.route('US', '60601', 'RC1', NULL, NULL, NULL, NULL, NULL) r),
          (SELECT x.answer FROM dblink('fresh', $q$SELECT row(r.*)::text FROM aimroute.route('US', '60601', 'RC1', NULL, NULL, NULL, NULL, NULL) r$q$)
                               AS x(answer text)),
          'the model rebuilt here and one built from scratch in a new session: the same dealer, distance and explanation');

-- The version row is read where it was last seen, on the table's first
-- page, when the snapshot sees it there; otherwise the table is scanned.
-- A new file (VACUUM FULL), and the row pushed off the first page by
-- versions an old snapshot still sees, change nothing: each statement
-- routes by the version its snapshot sees.
CREATE TEMP TABLE wide_radius AS SELECT pg_temp.routed() AS answer;
SELECT dblink_exec('w', 'VACUUM FULL aimroute.config_version');
SELECT dblink_exec('w', $$UPDATE aimroute.settings SET radius_miles = 1$$);
SELECT is(pg_temp.routed(), 'RC-HQ Default', 'after VACUUM FULL of config_version: the 1-mile radius counts');
SELECT dblink_exec('rr', 'BEGIN ISOLATION LEVEL REPEATABLE READ');
SELECT is(pg_temp.routed('rr'), 'RC-HQ Default', 'REPEATABLE READ: routed by the 1-mile radius');
SELECT dblink_exec('w', $$
    DO $d$
    BEGIN
        FOR i IN 1..400 LOOP
            UPDATE aimroute.settings SET radius_miles = CASE WHEN i % 2 = 0 THEN 1500 ELSE 1 END;
        END LOOP;
    END
    $d$
$$);
SELECT cmp_ok((SELECT (ctid::text::point)[0] FROM aimroute.config_version), '>', 0::float8,
              'the version row now lives past the first page of config_version');
SELECT is(pg_temp.routed(), (SELECT answer FROM wide_radius), 'the row off the first page: the wide radius again');
SELECT is(pg_temp.routed('rr'), 'RC-HQ Default', 'REPEATABLE READ: still its snapshot''s radius, on the first page');
SELECT dblink_exec('rr', 'COMMIT');
SELECT is(pg_temp.routed('rr'), (SELECT answer FROM wide_radius), 'after COMMIT: the wide radius');
SELECT dblink_exec('w', 'VACUUM aimroute.config_version');
SELECT dblink_exec('w', $$UPDATE aimroute.settings SET radius_miles = 1$$);
SELECT is(pg_temp.routed(), 'RC-HQ Default', 'after VACUUM and one more change: the 1-mile radius');
SELECT dblink_exec('w', $$UPDATE aimroute.settings SET radius_miles = 1500$$);
SELECT is(pg_temp.routed(), (SELECT answer FROM wide_radius), 'and back: the wide radius');

-- Postal codes are part of the model, and the session's copies of the
-- codes it looked up lately belong to one version: a code another session
-- adds, changes or deletes counts at the next statement, whether this
-- session looked it up before or not; so does one this transaction adds,
-- until it is rolled back.
CREATE FUNCTION pg_temp.place(country text, code text) RETURNS text LANGUAGE sql AS $$
    SELECT (r.steps[1]).message FROM aimroute.route(country, code, 'RC1', NULL, NULL, NULL, NULL, NULL) r
$$;
SELECT is(pg_temp.place('US', '00998'), 'postal code 00998 not found for US: no centre point, no county appended',
          'an unknown ZIP: not found');
SELECT is(pg_temp.place('US', '00998'), 'postal code 00998 not found for US: no centre point, no county appended',
          '... and again, from the session''s copies');
SELECT dblink_exec('w', $$INSERT INTO aimroute.postal_codes (country, postal_code, place_name, state_code, county, centroid)
                         VALUES ('US', '00998', 'Test Place', 'IL', 'Cook', 'SRID=4326;POINT(-87.62 41.88)')$$);
SELECT is(pg_temp.place('US', '00998'), 'postal code US 00998: Test Place, state IL, county IL/Cook',
          'another session adds the ZIP: found at the next statement');
SELECT dblink_exec('w', $$UPDATE aimroute.postal_codes SET place_name = 'Moved Place', county = 'Lake'
                           WHERE country = 'US' AND postal_code = '00998'$$);
SELECT is(pg_temp.place('US', '00998'), 'postal code US 00998: Moved Place, state IL, county IL/Lake',
          'another session changes it: the change counts');
SELECT dblink_exec('w', $$DELETE FROM aimroute.postal_codes WHERE country = 'US' AND postal_code = '00998'$$);
SELECT is(pg_temp.place('US', '00998'), 'postal code 00998 not found for US: no centre point, no county appended',
          'another session deletes it: not found again');
SAVEPOINT own_postal;
INSERT INTO postal_codes (country, postal_code, place_name, state_code, county, centroid)
VALUES ('US', '00998', 'Own Place', 'WI', 'Milwaukee', 'SRID=4326;POINT(-87.9065 43.0389)');
SELECT is(pg_temp.place('US', '00998'), 'postal code US 00998: Own Place, state WI, county WI/Milwaukee',
          'this transaction adds it: found');
ROLLBACK TO SAVEPOINT own_postal;
SELECT is(pg_temp.place('US', '00998'), 'postal code 00998 not found for US: no centre point, no county appended',
          'rolled back: not found');
-- A full Canadian code falls back to its FSA, the first time and from the
-- session's copies; a code too long for the copies is looked up each time.
SELECT is(pg_temp.place('CA', 'k1a 0b1'), (SELECT format('postal code CA K1A: %s, state %s, county unknown', place_name, state_code)
                                           FROM postal_codes WHERE country = 'CA' AND postal_code = 'K1A'),
          'a full Canadian code: its FSA');
SELECT is(pg_temp.place('CA', 'K1A0B1'), (SELECT format('postal code CA K1A: %s, state %s, county unknown', place_name, state_code)
                                          FROM postal_codes WHERE country = 'CA' AND postal_code = 'K1A'),
          '... and again, from the session''s copies');
SELECT is(pg_temp.place('US', '0099800998009980'),
          'postal code 0099800998009980 not found for US: no centre point, no county appended',
          'a code too long for the session''s copies: not found');
SELECT is(pg_temp.place('US', '0099800998009980'),
          'postal code 0099800998009980 not found for US: no centre point, no county appended',
          '... and again');

-- routing_cache_info() tells what the session holds and when it changed.
SELECT ok((SELECT enabled AND dealers >= 3 AND postal_codes >= 1 AND memory_bytes > 0 AND build_ms >= 0
             FROM routing_cache_info()),
          'routing_cache_info: the copy holds the dealers and the postal code looked up');
CREATE TEMP TABLE info_before AS SELECT * FROM routing_cache_info();
SELECT is((SELECT version FROM routing_cache_info()), (SELECT version FROM info_before),
          'routing_cache_info: no change, the same version');
-- (In a savepoint: the change holds the config_version row until rolled
-- back, and "w" has to write again below.)
SAVEPOINT rename;
UPDATE dealers SET name = name || ' (renamed)' WHERE dealer_number = 'RC-MKE';
SELECT cmp_ok((SELECT version FROM routing_cache_info()), '>', (SELECT version FROM info_before),
              'routing_cache_info: an UPDATE of dealers gives a new version');
ROLLBACK TO SAVEPOINT rename;
-- aimroute.routing_cache (off: route by SQL queries) is retired: the
-- library reserves the prefix aimroute, so setting it is refused, and the
-- model is always on.
SELECT throws_ok($$SET LOCAL aimroute.routing_cache = off$$, '42602',
                 'invalid configuration parameter name "aimroute.routing_cache"',
                 'aimroute.routing_cache is retired: SET refuses it');
SELECT ok((SELECT enabled FROM routing_cache_info()), 'routing_cache_info: the model is always enabled');

-- Remove what "w" committed.
SELECT dblink_exec('w', $$
    UPDATE aimroute.settings s
       SET default_dealer_number = v.default_dealer_number, radius_enabled = v.radius_enabled,
           radius_miles = v.radius_miles, radius_countries = v.radius_countries,
           product_routing_enabled = v.product_routing_enabled,
           inventory_routing_enabled = v.inventory_routing_enabled
      FROM saved_settings v;
    DELETE FROM aimroute.territories WHERE dealer_number LIKE 'RC-%';
    DELETE FROM aimroute.dealers WHERE dealer_number LIKE 'RC-%';
    DELETE FROM aimroute.brands WHERE brand_code = 'RC1';
$$);
SELECT dblink_disconnect('w');
SELECT dblink_disconnect('rr');
SELECT dblink_disconnect('fresh');

SELECT * FROM finish();
ROLLBACK;
