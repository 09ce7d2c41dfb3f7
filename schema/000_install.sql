--
-- The rest of this script runs with pg_temp last in its search_path.
--
-- CREATE EXTENSION runs the script with search_path = aimroute, then the
-- schema of PostGIS.  PostgreSQL looks up tables and types in the
-- session's temporary schema before any schema of the path that does not
-- name it, and aimroute is a trusted extension: its script runs as the
-- bootstrap superuser for whichever role creates it.  A temporary type of
-- that role's session named like one the script uses (text, geography)
-- would be taken instead of the real one.  With pg_catalog first and
-- pg_temp named last, it is not.  The setting ends with the script.
--
DO $install$
BEGIN
    PERFORM pg_catalog.set_config('search_path',
        pg_catalog.format('pg_catalog, aimroute, %I, pg_temp',
                          (SELECT n.nspname
                             FROM pg_catalog.pg_extension e
                             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                            WHERE e.extname = 'postgis')),
        true);
END
$install$;
