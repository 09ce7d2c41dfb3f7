--
-- Ownership.  Every table, view, sequence and SQL function of aimroute
-- belongs to the role that ran CREATE EXTENSION, the extension's owner;
-- the C functions and types stay the bootstrap superuser's.
--
-- aimroute is a trusted extension (aimroute.control): once a superuser has
-- created PostGIS, any role with CREATE on the database may create it, and
-- this script then runs as the bootstrap superuser.  Left as they are, its
-- tables would be a superuser's, and the SECURITY DEFINER functions would
-- run as one.  Owned by the role that installed aimroute, they give that
-- role what it needs to run the whole product (it is exempt from row-level
-- security on its tables, and may pg_dump them) and nothing beyond: the
-- SECURITY DEFINER functions, and the background workers (src/owner.c),
-- act as that role too.  C functions stay the superuser's, so that nobody
-- else may change how they are declared (a C function declared
-- differently, e.g. not STRICT, could crash the server); their owner is
-- given EXECUTE on those not executable by PUBLIC.
--
-- It is a function, not a block of this script, because every upgrade
-- script creates objects too: each ends with a call of it
-- (docs/upgrading.md).  It changes nothing when run again.
--
CREATE FUNCTION aimroute.give_objects_to_owner() RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $owner$
DECLARE
    ext oid;
    owner_name name;
    obj record;
BEGIN
    SELECT e.oid, pg_catalog.pg_get_userbyid(e.extowner) INTO ext, owner_name
      FROM pg_catalog.pg_extension e WHERE e.extname = 'aimroute';
    -- CREATE EXTENSION made the schema for its caller, unless it existed.
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA aimroute TO %I', owner_name);

    FOR obj IN
        SELECT c.oid::regclass AS name, c.relkind
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_class c ON c.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_class'::regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext
           AND d.deptype = 'e'
           -- An identity or serial sequence goes with its table.
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend s
                            WHERE s.classid = 'pg_catalog.pg_class'::regclass AND s.objid = c.oid
                              AND s.refclassid = 'pg_catalog.pg_class'::regclass
                              AND s.deptype IN ('a', 'i'))
           AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
    LOOP
        EXECUTE pg_catalog.format('ALTER %s %s OWNER TO %I',
            CASE obj.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                             WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
            obj.name, owner_name);
    END LOOP;

    FOR obj IN
        SELECT p.oid::regprocedure AS name, l.lanname, p.prokind, p.proacl
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_proc p ON p.oid = d.objid
          JOIN pg_catalog.pg_language l ON l.oid = p.prolang
         WHERE d.classid = 'pg_catalog.pg_proc'::regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext
           AND d.deptype = 'e'
    LOOP
        IF obj.lanname <> 'c' THEN
            EXECUTE pg_catalog.format('ALTER ROUTINE %s OWNER TO %I', obj.name, owner_name);
        ELSIF obj.proacl IS NOT NULL
              AND NOT EXISTS (SELECT FROM pg_catalog.aclexplode(obj.proacl) a
                               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', obj.name, owner_name);
        END IF;
    END LOOP;
END
$owner$;
COMMENT ON FUNCTION aimroute.give_objects_to_owner() IS
    'Gives every table, view, sequence and SQL function of aimroute to the extension''s owner, and EXECUTE on the C functions PUBLIC may not run; what the install and upgrade scripts run last (internal).';
REVOKE EXECUTE ON FUNCTION aimroute.give_objects_to_owner() FROM PUBLIC;
SELECT aimroute.give_objects_to_owner();
