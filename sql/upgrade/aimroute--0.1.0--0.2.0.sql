--
-- aimroute 0.1.0 -> 0.2.0
--
-- Every change that 0.2.0 makes to the schema of 0.1.0, in the order the
-- install script (schema/*.sql) makes it.  A test (t/009_upgrade.pl)
-- installs releases/aimroute--0.1.0.sql, fills it, runs ALTER EXTENSION
-- aimroute UPDATE and compares the catalogs with a fresh 0.2.0 install:
-- what is missing here shows as a difference there.  See docs/upgrading.md.
--
\echo Use "ALTER EXTENSION aimroute UPDATE TO '0.2.0'" to load this file. \quit

-- Like the install script, run with pg_catalog first and pg_temp last, so
-- that no object of the session's is taken for one of aimroute's.
DO $upgrade$
BEGIN
    PERFORM pg_catalog.set_config('search_path',
        pg_catalog.format('pg_catalog, aimroute, %I, pg_temp',
                          (SELECT n.nspname
                             FROM pg_catalog.pg_extension e
                             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                            WHERE e.extname = 'postgis')),
        true);
END
$upgrade$;
