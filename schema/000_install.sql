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

-- PostGIS in a schema of its own needs USAGE for whoever routes: PostGIS
-- reads its spatial_ref_sys with the caller's rights when it measures on
-- the spheroid.  Say so now rather than at the first lead.
DO $install$
DECLARE
    gis name := (SELECT n.nspname FROM pg_catalog.pg_extension e
                   JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                  WHERE e.extname = 'postgis');
BEGIN
    IF gis <> 'aimroute' AND NOT pg_catalog.has_schema_privilege('public', gis, 'USAGE') THEN
        RAISE WARNING 'PostGIS''s schema % is not usable by every role: routing fails for a role without USAGE on it', gis
            USING DETAIL = 'PostGIS reads ' || pg_catalog.quote_ident(gis) || '.spatial_ref_sys with the rights of the role that measures a distance.',
                  HINT = pg_catalog.format('GRANT USAGE ON SCHEMA %I TO PUBLIC, or to every role that inserts leads, locates dealers or owns aimroute.', gis);
    END IF;
END
$install$;

-- Which library the server loaded (C, src/aimroute.c).
CREATE FUNCTION aimroute.library_version() RETURNS text
    AS 'MODULE_PATHNAME', 'aimroute_library_version'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.library_version() IS
    'Version of the loaded aimroute shared library; compare with the installed extension version after an upgrade.';
