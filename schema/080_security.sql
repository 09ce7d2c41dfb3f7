--
-- Security (SPEC section 5): three roles, and row-level security from a
-- mapping table, so that a dealer user sees and acts on only its dealer's
-- leads, contacts and delivery rows, and a region user only its region's.
--
-- The model (docs/security.md):
--   aimroute_admin   configures everything and sees every row; the OEM's
--                    operations staff and the application that inserts
--                    leads.
--   aimroute_region  sees the leads, contacts and deliveries of the dealers
--                    of its regions; can reassign a lead within them.
--   aimroute_dealer  sees its dealers' leads, contacts and deliveries; can
--                    mark a lead viewed, send it again, and keep its
--                    contacts.
-- Which dealers or regions a user has is a row of aimroute.user_scopes per
-- login (or group) role.  The functions users call run with the caller's
-- rights (SECURITY INVOKER), so row-level security decides what each call
-- can see and change; the few SECURITY DEFINER functions take nothing a
-- caller could point at another dealer's rows, and pin their search_path.
-- The table owner (the role that created the extension) and the
-- background workers are not subject to row-level security.
--
-- Privileges.  Nothing of aimroute is PUBLIC's but the schema's functions
-- that only compute (normalization, the locator); tables and the
-- functions that change data are granted to the three roles.
--
-- Where each piece is written: the roles in 005_roles.sql; each table's
-- row-level security, policies and grants to the region and dealer roles
-- in the table's own file; each function that PUBLIC may not run says so,
-- and who may, where it is created, and so do the SECURITY DEFINER
-- functions (open_view_link, leads_record_history) and the pinned
-- search_path of queue_lead_delivery.  What is left here is the one rule
-- that holds for every table, view and sequence: admins may do anything.
--
DO $$
DECLARE
    t regclass;
BEGIN
    -- Only aimroute's own tables and sequences: PostGIS may share the schema.
    FOR t IN SELECT d.objid::regclass FROM pg_catalog.pg_depend d
              WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass
                AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'aimroute')
                AND d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'e'
    LOOP
        EXECUTE format('GRANT ALL ON %s TO aimroute_admin', t);
    END LOOP;
END
$$;
