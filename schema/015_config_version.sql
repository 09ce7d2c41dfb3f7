--
-- The configuration version: what lets each backend keep the routing
-- configuration in memory and still route exactly by the tables.
--
-- Every statement that changes a table routing reads (postal codes, brands,
-- dealers, dealer brands, territories, product assignments, inventory,
-- settings) sets config_version.version to a new number from a sequence, in
-- its own transaction.  Routing reads the version under the same snapshot
-- as the lead's statement and takes the model of that number: built once
-- per database and number in shared memory when the library is preloaded,
-- else by the session (src/model.c, src/model_share.c).  The number is
-- never reused, so two snapshots that see the same number see the same
-- configuration, in this session or another, committed or rolled back.  docs/performance.md
-- explains the trade-off: configuration writers serialize on this row.
--
CREATE SEQUENCE aimroute.config_version_seq;
COMMENT ON SEQUENCE aimroute.config_version_seq IS
    'Numbers for aimroute.config_version; never reused, so a number names one state of the configuration.';

CREATE TABLE aimroute.config_version (
    one      boolean PRIMARY KEY DEFAULT true CONSTRAINT config_version_one_row CHECK (one),
    version  bigint NOT NULL
);
COMMENT ON TABLE aimroute.config_version IS
    'One row: the number of the routing configuration''s current state. Changed by triggers on every table routing reads; do not change it by hand.';
INSERT INTO aimroute.config_version (version) VALUES (nextval('aimroute.config_version_seq'));
GRANT SELECT ON aimroute.config_version TO aimroute_region, aimroute_dealer;

CREATE FUNCTION aimroute.bump_config_version() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE aimroute.config_version SET version = nextval('aimroute.config_version_seq');
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION aimroute.bump_config_version() IS
    'Statement trigger: gives the routing configuration a new version number, so that every backend''s in-memory copy is rebuilt.';


--
-- Each table routing reads creates its own trigger, in its own file:
--   CREATE TRIGGER bump_config_version
--       AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON <table>
--       FOR EACH STATEMENT EXECUTE FUNCTION aimroute.bump_config_version();
--   ALTER TABLE <table> ENABLE ALWAYS TRIGGER bump_config_version;
-- (postal_codes, brands, dealers, dealer_brands, territories,
-- product_assignments, inventory, settings).  The triggers fire ALWAYS,
-- also under session_replication_role = replica (as in a logical
-- replication apply worker): a change that skipped them would leave
-- backends routing by a stale copy.
--

CREATE FUNCTION aimroute.routing_cache_info(
    OUT enabled boolean, OUT version bigint, OUT built_at timestamptz, OUT build_ms float8,
    OUT dealers integer, OUT territories integer, OUT postal_codes bigint, OUT memory_bytes bigint,
    OUT location text, OUT session_bytes bigint)
    AS 'MODULE_PATHNAME', 'aimroute_routing_cache_info'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION aimroute.routing_cache_info() IS
    'The model of the routing configuration this session routes with, brought up to date first: its version, when it was built and in how many milliseconds, what it holds (dealers, territories, postal_codes: every row of aimroute.postal_codes), its size (memory_bytes), where it lives (location: shared, one copy per database and version that every session maps, when aimroute is in shared_preload_libraries; local, this session''s own copy) and what this session holds besides (session_bytes: settings, PostGIS call info, copies of the postal codes looked up lately). enabled is always true: routing always uses the model (aimroute.routing_cache, which could turn it off, was retired in 0.2.0).';
REVOKE EXECUTE ON FUNCTION aimroute.routing_cache_info() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.routing_cache_info() TO aimroute_admin;
