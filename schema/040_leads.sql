--
-- Leads and routing.
--
-- A C trigger (src/leads.c) routes each lead in the inserting transaction;
-- the decision itself is src/routing.c, shared by the trigger, the dealer
-- locator, simulation, reassignment and re-routing, so that all of them
-- agree.  The explanation of a decision is kept in the lead row itself
-- (routing_log), which costs no extra insert on the hot path.
--

CREATE TYPE aimroute.match_type AS ENUM (
    'Territory', 'Radius', 'Drive Distance', 'Default', 'Reassigned',
    'Pre-assigned', 'Dealer Group', 'Inventory', 'Re-Route'
);
COMMENT ON TYPE aimroute.match_type IS 'How a lead''s dealer was chosen.';

CREATE TYPE aimroute.routing_step AS (
    step            integer,
    rule            text,
    message         text,
    dealer_number   text,
    distance_miles  double precision
);
COMMENT ON TYPE aimroute.routing_step IS 'One line of a routing explanation; see aimroute.explain_lead().';

CREATE TYPE aimroute.routing_decision AS (
    dealer_number   text,
    match_type      aimroute.match_type,
    distance_miles  double precision,
    steps           aimroute.routing_step[]
);

CREATE TABLE aimroute.leads (
    lead_id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at          timestamptz NOT NULL DEFAULT now(),
    source               text NOT NULL DEFAULT 'api',
    brand_code           text,
    product_code         text,
    first_name           text,
    last_name            text,
    email                text,
    phone                text,
    address              text,
    city                 text,
    state_code           text,
    country              text,
    postal_code          text,
    dealer_number        text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE,
    dealer_group         text,
    send_to_dealer       boolean NOT NULL DEFAULT true,
    comment              text,
    match_type           aimroute.match_type NOT NULL,
    distance_miles       double precision,
    routed_at            timestamptz NOT NULL,
    viewed_at            timestamptz,
    reroute_count        integer NOT NULL DEFAULT 0,
    reroute_due_at       timestamptz,
    country_input        text,
    postal_code_input    text,
    dealer_number_input  text,
    routing_log          aimroute.routing_step[] NOT NULL DEFAULT '{}',
    viewed_by            text,
    notice_pending       boolean NOT NULL DEFAULT false
);
CREATE INDEX leads_dealer_idx ON aimroute.leads (dealer_number) WHERE viewed_at IS NULL;
CREATE INDEX leads_received_at_idx ON aimroute.leads (received_at);
-- What the worker looks for: unviewed leads with a deadline, earliest first.
CREATE INDEX leads_reroute_due_idx ON aimroute.leads (reroute_due_at)
    WHERE viewed_at IS NULL AND reroute_due_at IS NOT NULL;
-- What the delivery worker looks for: leads whose notice is to be queued
-- (aimroute.delivery_expand, 075_delivery.sql), oldest first.
CREATE INDEX leads_notice_pending_idx ON aimroute.leads (lead_id) WHERE notice_pending;
COMMENT ON TABLE aimroute.leads IS
    'Sales leads. Inserting one routes it: dealer_number, match_type, distance_miles and routed_at are filled in the same transaction.';
COMMENT ON COLUMN aimroute.leads.dealer_number IS
    'On input, an optional pre-assigned dealer; after routing, the dealer holding the lead.';
COMMENT ON COLUMN aimroute.leads.country IS 'ISO 3166-1 alpha-2 code after routing; NULL when the input named no known country (see country_input).';
COMMENT ON COLUMN aimroute.leads.postal_code IS 'Normalized postal code (see postal_code_input for the code as received).';
COMMENT ON COLUMN aimroute.leads.match_type IS 'Which rule chose the dealer.';
COMMENT ON COLUMN aimroute.leads.distance_miles IS 'Miles from the postal code''s centre to the dealer, as the crow flies (WGS84); NULL when unknown.';
COMMENT ON COLUMN aimroute.leads.country_input IS 'The country as received.';
COMMENT ON COLUMN aimroute.leads.postal_code_input IS 'The postal code as received.';
COMMENT ON COLUMN aimroute.leads.dealer_number_input IS 'The pre-assigned dealer number as received, if any.';
COMMENT ON COLUMN aimroute.leads.reroute_due_at IS 'When the dealer''s hold on the unviewed lead ends (settings.reroute_*; see aimroute.reroute_deadline); NULL when re-routing is off, for the default dealer and for leads not sent to their dealer.';
COMMENT ON COLUMN aimroute.leads.routing_log IS 'Why the lead went where it went; read it with aimroute.explain_lead(lead_id).';
COMMENT ON COLUMN aimroute.leads.viewed_by IS
    'Who viewed the lead: the contact''s email (mark_viewed) or ''view link <notification_id>'' (open_view_link).';
COMMENT ON COLUMN aimroute.leads.notice_pending IS
    'The lead is to be sent to its dealer and its notice is not queued yet: set by routing when send_to_dealer is true, cleared in the transaction that queues the notice and its messages (the delivery worker''s aimroute.delivery_expand, or a move or send_lead first). Written by aimroute only.';

CREATE TABLE aimroute.lead_history (
    history_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id      bigint NOT NULL REFERENCES aimroute.leads ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    event        text NOT NULL,
    from_dealer  text,
    to_dealer    text,
    match_type   aimroute.match_type,
    actor        text NOT NULL DEFAULT session_user,
    reason       text
);
CREATE INDEX lead_history_lead_idx ON aimroute.lead_history (lead_id, at);
COMMENT ON TABLE aimroute.lead_history IS
    'Every change of a lead''s dealer after its first routing: reassignment, re-route, a dealer leaving, the default after the re-route limit.';

SELECT pg_catalog.pg_extension_config_dump('aimroute.leads', '');

--
-- dealer_distance_miles: miles from a postal code's centre to a dealer, as
-- routing measures them (C: read from the routing model, src/model.c).
--
CREATE FUNCTION aimroute.dealer_distance_miles(country text, postal_code text, dealer_number text)
RETURNS double precision
    AS 'MODULE_PATHNAME', 'aimroute_dealer_distance_miles'
    LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION aimroute.dealer_distance_miles(text, text, text) IS
    'Miles from a postal code''s centre to a dealer''s location, as routing measures them (ST_Distance on the spheroid / 1609.344); NULL when either point is unknown.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.lead_history', '');
-- Identity sequences too, or a restored database would hand out used ids.
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.leads', 'lead_id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.lead_history', 'history_id')::regclass, '');

--
-- The routing decision (C).
--
CREATE FUNCTION aimroute.route(
    country text, postal_code text, brand_code text,
    product_code text DEFAULT NULL, dealer_number text DEFAULT NULL,
    dealer_group text DEFAULT NULL, excluded text[] DEFAULT '{}',
    state_code text DEFAULT NULL, as_of timestamptz DEFAULT NULL)
RETURNS aimroute.routing_decision
    AS 'MODULE_PATHNAME', 'aimroute_route'
    LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.route(text, text, text, text, text, text, text[], text, timestamptz) IS
    'The routing decision for these inputs under the configuration valid at as_of (NULL: now, the transaction''s start), with its explanation; changes nothing.';

CREATE FUNCTION aimroute.route_lead_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'aimroute_route_lead_trigger'
    LANGUAGE C;
CREATE TRIGGER route_lead BEFORE INSERT ON aimroute.leads
    FOR EACH ROW EXECUTE FUNCTION aimroute.route_lead_trigger();

CREATE FUNCTION aimroute.locate_dealers(
    country text, postal_code text, brand_code text,
    product_code text DEFAULT NULL, max_results integer DEFAULT 10)
RETURNS TABLE (rank integer, dealer_number text, name text,
               distance_miles double precision, match_type aimroute.match_type)
    AS 'MODULE_PATHNAME', 'aimroute_locate_dealers'
    LANGUAGE C STABLE PARALLEL SAFE ROWS 10;
COMMENT ON FUNCTION aimroute.locate_dealers(text, text, text, text, integer) IS
    'Find a Dealer: rank 1 is the dealer a lead with these inputs would get; ranks 2.. the order re-routing would follow.';

--
-- explain_lead: the routing log of a lead, one row per step, in order.
--
CREATE FUNCTION aimroute.explain_lead(lead_id bigint)
RETURNS TABLE (step integer, rule text, message text, dealer_number text,
               distance_miles double precision)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.step, s.rule, s.message, s.dealer_number, s.distance_miles
      FROM aimroute.leads l,
           unnest(l.routing_log) WITH ORDINALITY AS s(step, rule, message, dealer_number, distance_miles, n)
     WHERE l.lead_id = explain_lead.lead_id
     ORDER BY s.n
$$;
COMMENT ON FUNCTION aimroute.explain_lead(bigint) IS
    'Why a lead went to its dealer: the steps taken, the candidates considered with their distances, the rule that decided.';
REVOKE EXECUTE ON FUNCTION aimroute.explain_lead(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.explain_lead(bigint) TO aimroute_admin, aimroute_region, aimroute_dealer;

--
-- lead_history is written by one trigger for every change of dealer, so
-- that no path (the functions below, the re-route worker, a direct UPDATE)
-- can move a lead without a trace; the same trigger queues the new
-- dealer's notice and its messages (aimroute.queue_lead_delivery,
-- 075_delivery.sql).  Callers describe the change in the
-- transaction-local settings aimroute_ctx.event and aimroute_ctx.reason.
-- SECURITY DEFINER: it writes lead_history and queues the new dealer's
-- notice for whoever moved the lead within its rights.
--
CREATE FUNCTION aimroute.leads_record_history() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO aimroute.lead_history (lead_id, event, from_dealer, to_dealer, match_type, reason)
    VALUES (NEW.lead_id,
            coalesce(nullif(current_setting('aimroute_ctx.event', true), ''), 'Updated'),
            OLD.dealer_number, NEW.dealer_number, NEW.match_type,
            coalesce(nullif(current_setting('aimroute_ctx.reason', true), ''),
                     'dealer_number changed by a direct UPDATE of aimroute.leads'));
    IF NEW.send_to_dealer THEN
        PERFORM aimroute.queue_lead_delivery(NEW.lead_id, NEW.dealer_number,
            coalesce(nullif(current_setting('aimroute_ctx.event', true), ''), 'Updated'));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER leads_record_history AFTER UPDATE OF dealer_number ON aimroute.leads
    FOR EACH ROW WHEN (OLD.dealer_number IS DISTINCT FROM NEW.dealer_number)
    EXECUTE FUNCTION aimroute.leads_record_history();

-- move_lead: give a lead a new dealer and say why (internal).  The
-- explanation gains a line naming the event, then the new decision's lines,
-- numbered on from the lead's existing steps.
CREATE FUNCTION aimroute.move_lead(p_lead_id bigint, p_dealer text, p_match aimroute.match_type,
                                   p_distance double precision, p_event text, p_reason text,
                                   p_log aimroute.routing_step[] DEFAULT '{}')
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_log aimroute.routing_step[];
    old_dealer text;
    old_viewer text;
    old_viewed_at timestamptz;
    added aimroute.routing_step[];
BEGIN
    SELECT routing_log, dealer_number, viewed_by, viewed_at INTO old_log, old_dealer, old_viewer, old_viewed_at
      FROM aimroute.leads WHERE lead_id = p_lead_id;
    SELECT array_agg(ROW(coalesce(cardinality(old_log), 0) + n, s.rule, s.message,
                         s.dealer_number, s.distance_miles)::aimroute.routing_step ORDER BY n)
      INTO added
      FROM unnest(ARRAY[ROW(0, p_event,
                            format('moved from dealer %s to dealer %s by %s: %s%s', old_dealer,
                                   p_dealer, session_user, coalesce(p_reason, 'no reason given'),
                                   '; it had been viewed by ' || old_viewer || ' at ' || old_viewed_at),
                            p_dealer, p_distance)::aimroute.routing_step] || p_log)
           WITH ORDINALITY AS s(step, rule, message, dealer_number, distance_miles, n);
    PERFORM set_config('aimroute_ctx.event', p_event, true);
    PERFORM set_config('aimroute_ctx.reason', coalesce(p_reason, ''), true);
    -- A new dealer has not viewed the lead: its view, if any, was the old
    -- dealer's (the explanation keeps it).  The default dealer, the end of
    -- the line, gets no deadline, whatever the match type.
    UPDATE aimroute.leads
       SET dealer_number = p_dealer, match_type = p_match, distance_miles = p_distance,
           routed_at = now(), routing_log = routing_log || added,
           viewed_at = NULL, viewed_by = NULL,
           reroute_due_at = CASE WHEN p_match <> 'Default' AND send_to_dealer
                                      AND p_dealer IS DISTINCT FROM
                                          (SELECT s.default_dealer_number FROM aimroute.settings s)
                                 THEN aimroute.reroute_due_at(now(), p_dealer) END
     WHERE lead_id = p_lead_id;
    PERFORM set_config('aimroute_ctx.event', '', true);
    PERFORM set_config('aimroute_ctx.reason', '', true);
END
$$;
REVOKE EXECUTE ON FUNCTION aimroute.move_lead(bigint, text, aimroute.match_type, double precision, text, text, aimroute.routing_step[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.move_lead(bigint, text, aimroute.match_type, double precision, text, text, aimroute.routing_step[]) TO aimroute_admin, aimroute_region;

--
-- reassign: a person moves a lead to another dealer (match type Reassigned).
--
CREATE FUNCTION aimroute.reassign(lead_id bigint, dealer_number text, reason text)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lead aimroute.leads;
    target aimroute.dealers;
    dist double precision;
BEGIN
    SELECT * INTO lead FROM aimroute.leads l WHERE l.lead_id = reassign.lead_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lead % does not exist', reassign.lead_id
            USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO target FROM aimroute.dealers d WHERE d.dealer_number = reassign.dealer_number;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dealer "%" does not exist', reassign.dealer_number
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Reassign to a dealer_number of aimroute.dealers.';
    END IF;
    IF lead.dealer_number = target.dealer_number THEN
        RAISE NOTICE 'lead % is already with dealer %: nothing to do', lead.lead_id, target.dealer_number;
        RETURN;
    END IF;
    IF NOT target.active_for_sales THEN
        RAISE WARNING 'dealer % is not active for sales; the lead is reassigned as asked', target.dealer_number;
    END IF;
    dist := aimroute.dealer_distance_miles(lead.country, lead.postal_code, target.dealer_number);
    PERFORM aimroute.move_lead(lead.lead_id, target.dealer_number, 'Reassigned', dist, 'Reassigned',
                               coalesce(reason, 'no reason given'));
END
$$;
COMMENT ON FUNCTION aimroute.reassign(bigint, text, text) IS
    'Moves a lead to another dealer by hand (match type Reassigned), recorded in lead_history.';
REVOKE EXECUTE ON FUNCTION aimroute.reassign(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.reassign(bigint, text, text) TO aimroute_admin, aimroute_region;

--
-- reassign_dealer_leads: a dealer leaves the network; its open leads go to
-- the next best dealer by the routing rules.
--
CREATE FUNCTION aimroute.reassign_dealer_leads(dealer_number text, reason text)
RETURNS TABLE (to_dealer_number text, match_type aimroute.match_type, leads bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lead aimroute.leads;
    d aimroute.routing_decision;
BEGIN
    IF NOT EXISTS (SELECT FROM aimroute.dealers x WHERE x.dealer_number = reassign_dealer_leads.dealer_number) THEN
        RAISE EXCEPTION 'dealer "%" does not exist', reassign_dealer_leads.dealer_number
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (SELECT FROM aimroute.settings s
                WHERE s.default_dealer_number = reassign_dealer_leads.dealer_number) THEN
        RAISE EXCEPTION 'dealer % is the default dealer: its leads have nowhere else to go', reassign_dealer_leads.dealer_number
            USING ERRCODE = 'object_in_use',
                  HINT = 'Name another default dealer first (UPDATE aimroute.settings SET default_dealer_number = ...), then move its leads.';
    END IF;
    -- Other sessions route by the committed configuration: until this
    -- transaction commits, the dealer is active to them, and the leads
    -- they route to it now are not seen here.
    IF EXISTS (SELECT FROM aimroute.dealers x
                WHERE x.dealer_number = reassign_dealer_leads.dealer_number
                  AND x.xmin = pg_catalog.xid(pg_catalog.pg_current_xact_id_if_assigned())) THEN
        RAISE WARNING 'dealer % was deactivated in this transaction: leads other sessions route to it before this transaction commits are not moved',
                      reassign_dealer_leads.dealer_number
            USING HINT = 'Deactivate the dealer and commit first, then call reassign_dealer_leads; calling it again after the commit moves the rest.';
    ELSIF EXISTS (SELECT FROM aimroute.dealers x
                   WHERE x.dealer_number = reassign_dealer_leads.dealer_number AND x.active_for_sales) THEN
        RAISE WARNING 'dealer % is still active for sales: new leads keep going to it', reassign_dealer_leads.dealer_number
            USING HINT = 'UPDATE aimroute.dealers SET active_for_sales = false first, commit, then move its leads.';
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS aimroute_moves (to_dealer text, match aimroute.match_type) ON COMMIT DROP;
    TRUNCATE aimroute_moves;
    FOR lead IN SELECT * FROM aimroute.leads l
                 WHERE l.dealer_number = reassign_dealer_leads.dealer_number AND l.viewed_at IS NULL
                 ORDER BY l.lead_id FOR UPDATE
    LOOP
        d := aimroute.route(lead.country, lead.postal_code, lead.brand_code, lead.product_code,
                            NULL, lead.dealer_group, ARRAY[lead.dealer_number], lead.state_code);
        PERFORM aimroute.move_lead(lead.lead_id, d.dealer_number, d.match_type, d.distance_miles,
            'Dealer left', coalesce(reason, 'no reason given'), d.steps);
        INSERT INTO aimroute_moves VALUES (d.dealer_number, d.match_type);
    END LOOP;
    RETURN QUERY SELECT m.to_dealer, m.match, count(*) FROM aimroute_moves m GROUP BY 1, 2 ORDER BY 3 DESC, 1;
END
$$;
COMMENT ON FUNCTION aimroute.reassign_dealer_leads(text, text) IS
    'Moves every open (unviewed) lead of a dealer to the next best dealer by the routing rules; returns how many went where.';
REVOKE EXECUTE ON FUNCTION aimroute.reassign_dealer_leads(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.reassign_dealer_leads(text, text) TO aimroute_admin;

--
-- simulate_routing: the stored leads routed again under the configuration
-- as it stands (uncommitted changes of the transaction included), changing
-- nothing: each lead under the periods valid at its received_at, or every
-- lead under those valid at as_of.
--
CREATE FUNCTION aimroute.simulate_routing("from" timestamptz, "to" timestamptz, as_of timestamptz DEFAULT NULL)
RETURNS TABLE (lead_id bigint, dealer_number text, match_type aimroute.match_type,
               simulated_dealer_number text, simulated_match_type aimroute.match_type)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.lead_id, l.dealer_number, l.match_type, d.dealer_number, d.match_type
      FROM aimroute.leads l,
           LATERAL aimroute.route(coalesce(l.country, l.country_input), coalesce(l.postal_code_input, l.postal_code),
                                  l.brand_code, l.product_code, l.dealer_number_input,
                                  l.dealer_group, '{}', l.state_code,
                                  coalesce(simulate_routing.as_of, l.received_at)) d
     WHERE l.received_at >= simulate_routing."from" AND l.received_at < simulate_routing."to"
     ORDER BY l.lead_id
$$;
COMMENT ON FUNCTION aimroute.simulate_routing(timestamptz, timestamptz, timestamptz) IS
    'Routes the leads received in [from, to) again without changing them, each under the territories and product assignments valid at its received_at, or all under those valid at as_of: run it inside BEGIN ... ROLLBACK after a configuration change to see what the change would do, or with as_of to see how the configuration of that date would have routed them.';
REVOKE EXECUTE ON FUNCTION aimroute.simulate_routing(timestamptz, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.simulate_routing(timestamptz, timestamptz, timestamptz) TO aimroute_admin;

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
                                   THEN aimroute.reroute_due_at(now(), NEW.dealer_number) END;
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

-- What the foreign keys of a notice (075_delivery.sql) would do, for the
-- rare change: a lead deleted takes its notices (and so their messages)
-- along.
CREATE FUNCTION aimroute.leads_delete_notices() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM aimroute.lead_notifications n USING gone g WHERE n.lead_id = g.lead_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER leads_delete_notices AFTER DELETE ON aimroute.leads
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.leads_delete_notices();

--
-- Row-level security.  Admins see and change every row; region and dealer
-- users see the rows of their dealers.  What else they may change is
-- granted here, column by column, and is limited to the same rows.
--
ALTER TABLE aimroute.leads ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.leads TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.leads FOR SELECT TO aimroute_region, aimroute_dealer
    USING (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));
-- Marking viewed, reassigning within the scope (the new dealer too).
CREATE POLICY scoped_update ON aimroute.leads FOR UPDATE TO aimroute_region, aimroute_dealer
    USING (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]))
    WITH CHECK (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));
-- lead_history names two dealers: either side's users see the move.
ALTER TABLE aimroute.lead_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.lead_history TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.lead_history FOR SELECT TO aimroute_region, aimroute_dealer
    USING (to_dealer = ANY ((SELECT aimroute.visible_dealers())::text[])
           OR from_dealer = ANY ((SELECT aimroute.visible_dealers())::text[]));
GRANT SELECT ON aimroute.leads TO aimroute_region, aimroute_dealer;
GRANT SELECT ON aimroute.lead_history TO aimroute_region, aimroute_dealer;
-- Locking a lead (send_lead) takes an UPDATE privilege, and moving one
-- (reassign) writes these columns; the trigger leads_protect_view above
-- lets only aimroute change them.
GRANT UPDATE (viewed_at, viewed_by, reroute_due_at) ON aimroute.leads TO aimroute_region, aimroute_dealer;
GRANT UPDATE (dealer_number, match_type, distance_miles, routed_at, routing_log) ON aimroute.leads TO aimroute_region;
