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
-- The roles are created by 005_roles.sql.  Each table's row-level
-- security, policies and grants to the region and dealer roles are in
-- the table's own file, the SECURITY DEFINER functions say so where they
-- are created (open_view_link, leads_record_history), and so does
-- queue_lead_delivery of its pinned search_path.  This file gives
-- admins every table, and keeps functions that change data from PUBLIC.
--

--
-- Privileges.  Nothing of aimroute is PUBLIC's but the schema's functions
-- that only compute (normalization, the locator); tables and the
-- functions that change data are granted to the three roles.
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

-- Functions that change data or read everything are not PUBLIC's.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'aimroute'::regnamespace
                AND p.proname IN ('load_postal_codes', 'reassign_dealer_leads', 'process_staging',
                                  'reroute_overdue', 'reroute_lead', 'record_bounce', 'queue_daily_recap',
                                  'delivery_claim', 'delivery_record', 'delivery_fail', 'delivery_settle',
                                  'delivery_render', 'wake_delivery_worker', 'queue_lead_delivery',
                                  'simulate_routing', 'routing_cache_info', 'reassign', 'move_lead',
                                  'mark_viewed', 'send_lead', 'set_delivery_status_active', 'open_view_link',
                                  'explain_lead', 'set_aside', 'reroute_next_due', 'delivery_claim_one')
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO aimroute_admin', f);
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION aimroute.mark_viewed(bigint, text), aimroute.send_lead(bigint),
                          aimroute.set_delivery_status_active(bigint), aimroute.explain_lead(bigint),
                          aimroute.open_view_link(text), aimroute.queue_lead_delivery(bigint, text, text)
    TO aimroute_region, aimroute_dealer;
GRANT EXECUTE ON FUNCTION aimroute.reassign(bigint, text, text), aimroute.move_lead(bigint, text, aimroute.match_type, double precision, text, text, aimroute.routing_step[])
    TO aimroute_region;
