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

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['aimroute_admin', 'aimroute_region', 'aimroute_dealer'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;
COMMENT ON ROLE aimroute_admin IS 'aimroute: configures everything and sees every lead.';
COMMENT ON ROLE aimroute_region IS 'aimroute: sees and acts on the leads of the dealers of its regions (aimroute.user_scopes).';
COMMENT ON ROLE aimroute_dealer IS 'aimroute: sees and acts on the leads of its dealers (aimroute.user_scopes).';

--
-- user_scopes: which dealers or regions a role may see.
--
CREATE TABLE aimroute.user_scopes (
    scope_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    role_name      name NOT NULL,
    dealer_number  text REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    region         text,
    email          text CONSTRAINT user_scopes_email_check CHECK (aimroute.email_is_valid(email)),
    CONSTRAINT user_scopes_one_scope CHECK ((dealer_number IS NULL) <> (region IS NULL))
);
CREATE UNIQUE INDEX user_scopes_unique_idx ON aimroute.user_scopes (role_name, dealer_number, region) NULLS NOT DISTINCT;
COMMENT ON TABLE aimroute.user_scopes IS
    'What each region or dealer user may see: one row per role and dealer (dealer users) or per role and region (region users, by aimroute.dealers.region). A role also has the scopes of the roles it is a member of.';
COMMENT ON COLUMN aimroute.user_scopes.email IS
    'The email address of the person who logs in as role_name: the only viewer_email with which that role''s aimroute.mark_viewed counts (when it is a ''Leads: Emails To'' contact of the dealer holding the lead). NULL: the role''s mark_viewed never counts.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.user_scopes', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.user_scopes', 'scope_id')::regclass, '');

CREATE FUNCTION aimroute.user_scopes_validate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = NEW.role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', NEW.role_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'CREATE ROLE it first, and GRANT it aimroute_dealer or aimroute_region.';
    END IF;
    IF (NEW.dealer_number IS NULL) = (NEW.region IS NULL) THEN
        RAISE EXCEPTION 'a user scope names a dealer or a region, not both and not neither'
            USING ERRCODE = 'check_violation',
                  HINT = 'Insert one row per dealer (dealer_number) or per region (region).';
    END IF;
    NEW.email := nullif(btrim(NEW.email), '');
    IF NOT aimroute.email_is_valid(NEW.email) THEN
        RAISE EXCEPTION 'invalid email address % for role "%"', quote_literal(NEW.email), NEW.role_name
            USING ERRCODE = 'check_violation',
                  HINT = 'Give the one address of the person who logs in as this role, such as ann@dealer.example.com, or NULL.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER user_scopes_validate BEFORE INSERT OR UPDATE ON aimroute.user_scopes
    FOR EACH ROW EXECUTE FUNCTION aimroute.user_scopes_validate();

--
-- visible_dealers: the dealers the current role may see, by its scopes
-- and those of the roles it belongs to.  Policies call it once per query
-- (as an initplan, "(SELECT aimroute.visible_dealers())"), not per row.
--
CREATE FUNCTION aimroute.visible_dealers() RETURNS text[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(DISTINCT d.dealer_number), '{}')
      FROM aimroute.user_scopes u
      JOIN aimroute.dealers d ON d.dealer_number = u.dealer_number OR d.region = u.region
     WHERE u.role_name IN (SELECT r.rolname FROM pg_catalog.pg_roles r
                            WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))
$$;
COMMENT ON FUNCTION aimroute.visible_dealers() IS
    'The dealer numbers the current role may see through aimroute.user_scopes (its own scopes and those of the roles it is a member of).';

--
-- Row-level security.  Admins see and change every row; region and dealer
-- users see the rows of their dealers.  What else they may change is
-- granted below, column by column, and is limited to the same rows.
--
ALTER TABLE aimroute.user_scopes ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.user_scopes TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY own_scopes ON aimroute.user_scopes FOR SELECT TO aimroute_region, aimroute_dealer
    USING (role_name IN (SELECT r.rolname FROM pg_catalog.pg_roles r
                          WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER')));

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['leads', 'lead_notifications', 'dealer_contacts', 'crm_integrations'] LOOP
        EXECUTE format('ALTER TABLE aimroute.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY admin_all ON aimroute.%I TO aimroute_admin USING (true) WITH CHECK (true)', t);
        EXECUTE format('CREATE POLICY scoped_read ON aimroute.%I FOR SELECT TO aimroute_region, aimroute_dealer'
                       ' USING (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]))', t);
    END LOOP;
END
$$;
-- lead_history names two dealers: either side's users see the move.
ALTER TABLE aimroute.lead_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.lead_history TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.lead_history FOR SELECT TO aimroute_region, aimroute_dealer
    USING (to_dealer = ANY ((SELECT aimroute.visible_dealers())::text[])
           OR from_dealer = ANY ((SELECT aimroute.visible_dealers())::text[]));
-- Marking viewed, reassigning within the scope (the new dealer too).
CREATE POLICY scoped_update ON aimroute.leads FOR UPDATE TO aimroute_region, aimroute_dealer
    USING (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]))
    WITH CHECK (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));
-- A dealer keeps its own contacts.
CREATE POLICY scoped_write ON aimroute.dealer_contacts FOR ALL TO aimroute_region, aimroute_dealer
    USING (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]))
    WITH CHECK (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));

-- The outbox and its attempts: a user sees the lead messages of its dealers.
ALTER TABLE aimroute.outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.outbox TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.outbox FOR SELECT TO aimroute_region, aimroute_dealer
    USING (purpose = 'lead' AND dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));
ALTER TABLE aimroute.delivery_attempt_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.delivery_attempt_log TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.delivery_attempt_log FOR SELECT TO aimroute_region, aimroute_dealer
    USING (EXISTS (SELECT FROM aimroute.outbox o WHERE o.message_id = delivery_attempt_log.message_id));

--
-- The re-route clock (SPEC section 3): viewed_at, viewed_by, reroute_due_at
-- and reroute_count are written by aimroute only -- routing, the re-route
-- worker, mark_viewed and open_view_link, which write as the extension's
-- owner -- and by admins, never by a region or dealer user's UPDATE, or a
-- dealer could keep a lead it never looked at.  A region user's move of a
-- lead (reassign, or an UPDATE of dealer_number within its regions) gives
-- the new dealer the clock aimroute gives every move, whatever the UPDATE
-- said: unviewed, with a deadline unless the lead went to the default
-- dealer or is not to be sent.
--
CREATE FUNCTION aimroute.leads_protect_view() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.pg_has_role(current_user, 'aimroute_admin', 'USAGE')
       OR pg_catalog.pg_has_role(current_user, (SELECT e.extowner FROM pg_catalog.pg_extension e
                                                 WHERE e.extname = 'aimroute'), 'USAGE') THEN
        RETURN NEW;
    END IF;
    IF NEW.dealer_number IS DISTINCT FROM OLD.dealer_number THEN
        NEW.viewed_at := NULL;
        NEW.viewed_by := NULL;
        NEW.reroute_count := OLD.reroute_count;
        NEW.reroute_due_at := CASE WHEN NEW.send_to_dealer
                                        AND NEW.dealer_number IS DISTINCT FROM
                                            (SELECT s.default_dealer_number FROM aimroute.settings s)
                                   THEN aimroute.reroute_due_at(now()) END;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'permission denied to change the view or re-route deadline of lead %', OLD.lead_id
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = 'viewed_at, viewed_by, reroute_due_at and reroute_count are written by aimroute only.',
              HINT = 'A view is recorded by aimroute.mark_viewed(lead_id, your own address in aimroute.user_scopes.email) or by the view link of the lead''s email.';
END
$$;
COMMENT ON FUNCTION aimroute.leads_protect_view() IS
    'Trigger: only aimroute (its owner, admins) changes a lead''s viewed_at, viewed_by, reroute_due_at and reroute_count; a region user''s move gets aimroute''s clock.';
CREATE TRIGGER leads_protect_view BEFORE UPDATE ON aimroute.leads
    FOR EACH ROW
    WHEN (OLD.viewed_at IS DISTINCT FROM NEW.viewed_at OR OLD.viewed_by IS DISTINCT FROM NEW.viewed_by
          OR OLD.reroute_due_at IS DISTINCT FROM NEW.reroute_due_at
          OR OLD.reroute_count IS DISTINCT FROM NEW.reroute_count
          OR OLD.dealer_number IS DISTINCT FROM NEW.dealer_number)
    EXECUTE FUNCTION aimroute.leads_protect_view();

-- The views read as the caller, so that the policies above apply to them.
ALTER VIEW aimroute.lead_delivery_status SET (security_invoker = true);
ALTER VIEW aimroute.unsent_leads SET (security_invoker = true);
ALTER VIEW aimroute.delivery_attempts SET (security_invoker = true);
ALTER VIEW aimroute.delivery_issues SET (security_invoker = true);

--
-- Privileges.  Nothing of aimroute is PUBLIC's but the schema's functions
-- that only compute (normalization, the locator); tables and the
-- functions that change data are granted to the three roles.
--
GRANT USAGE ON SCHEMA aimroute TO aimroute_admin, aimroute_region, aimroute_dealer;
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

GRANT SELECT ON aimroute.postal_codes, aimroute.brands, aimroute.dealers, aimroute.dealer_brands,
                aimroute.territories, aimroute.product_assignments, aimroute.inventory,
                aimroute.config_version
    TO aimroute_region, aimroute_dealer;
-- Settings without the SMTP credentials, which only admins read.
GRANT SELECT (singleton, radius_enabled, radius_miles, radius_countries, default_dealer_number,
              product_routing_enabled, inventory_routing_enabled, reroute_enabled, reroute_max_dealers,
              reroute_after, reroute_skip_days, timezone, dedupe_window, smtp_url, smtp_from,
              push_gateway_url, delivery_retry_schedule, daily_recap_hour, oem_name, view_link_url)
    ON aimroute.settings TO aimroute_region, aimroute_dealer;
GRANT SELECT ON aimroute.leads, aimroute.lead_history, aimroute.outbox, aimroute.delivery_attempt_log,
                aimroute.dealer_contacts, aimroute.crm_integrations, aimroute.user_scopes,
                aimroute.lead_delivery_status, aimroute.unsent_leads, aimroute.delivery_attempts,
                aimroute.delivery_issues
    TO aimroute_region, aimroute_dealer;
-- A notice's view token marks its lead viewed (open_view_link): it is for
-- the To contacts the email carries it to, and for admins; region and
-- dealer users get the other columns.
GRANT SELECT (notification_id, lead_id, dealer_number, event, queued_at, no_contacts, messages, failure_notice_at)
    ON aimroute.lead_notifications TO aimroute_region, aimroute_dealer;
-- Locking a lead (send_lead) takes an UPDATE privilege, and moving one
-- (reassign) writes these columns; the trigger leads_protect_view below
-- lets only aimroute change them.
GRANT UPDATE (viewed_at, viewed_by, reroute_due_at) ON aimroute.leads TO aimroute_region, aimroute_dealer;
GRANT UPDATE (dealer_number, match_type, distance_miles, routed_at, routing_log) ON aimroute.leads TO aimroute_region;
GRANT INSERT (dealer_number, name, email, mobile, contact_types),
      UPDATE (name, email, mobile, contact_types, delivery_status), DELETE
    ON aimroute.dealer_contacts TO aimroute_region, aimroute_dealer;

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

--
-- The SECURITY DEFINER functions.  Each takes only what cannot reach
-- another dealer's rows, and pins its search_path.
--
-- open_view_link: the token is the capability (240 random bits), as a
-- password-reset link is; the web page behind the link calls it with
-- whatever role it has.
ALTER FUNCTION aimroute.open_view_link(text) SECURITY DEFINER;
-- The move trigger writes lead_history and queues the new dealer's notice
-- for whoever moved the lead within its rights.
ALTER FUNCTION aimroute.leads_record_history() SECURITY DEFINER;
-- mark_viewed (C, src/reroute.c) is not SECURITY DEFINER either: it reads
-- the lead with the caller's rights, takes the caller's own address from
-- user_scopes unless the caller is an admin, and records the view as the
-- extension's owner.  Its search_path is pinned where it is created.
-- Not SECURITY DEFINER, though it writes what dealer users may not:
-- aimroute.queue_lead_delivery (C) reads the lead with the caller's rights,
-- so it queues only a lead the caller can see, and only to the dealer
-- holding it, then queues as the extension's owner (src/owner.c).  Its
-- search_path is pinned, as a SECURITY DEFINER function's is: the
-- statement it runs as the owner must not find a caller's operators.
ALTER FUNCTION aimroute.queue_lead_delivery(bigint, text, text) SET search_path = pg_catalog, pg_temp;
