--
-- Re-routing (SPEC section 3): overdue unviewed leads go to the next best
-- dealer, views end a lead's deadline.  The background worker
-- (src/reroute_worker.c) calls reroute_overdue(); docs/rerouting.md.
--

--
-- reroute_lead: re-route one locked, overdue lead (internal).  Every
-- dealer that held it is excluded; at the re-route limit, or when no other
-- dealer qualifies, it goes to the default dealer, which ends its
-- deadlines.
--
CREATE FUNCTION aimroute.reroute_lead(lead aimroute.leads, s aimroute.settings)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    held text[];
    d aimroute.routing_decision;
    why text;
BEGIN
    SELECT array_agg(DISTINCT x) INTO held
      FROM (SELECT lead.dealer_number
            UNION ALL SELECT h.from_dealer FROM aimroute.lead_history h WHERE h.lead_id = lead.lead_id
            UNION ALL SELECT h.to_dealer FROM aimroute.lead_history h WHERE h.lead_id = lead.lead_id) AS t(x)
     WHERE x IS NOT NULL;
    why := format('not viewed by dealer %s by %s', lead.dealer_number,
                  to_char(lead.reroute_due_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI:SS')
                  || ' ' || s.timezone);
    -- Under the business-hours clock, whose open time the deadline counts.
    why := why || coalesce((SELECT format(' (reroute_after %s of its business hours: %s, %s)',
                                          s.reroute_after, h.business_hours, coalesce(h.timezone, s.timezone))
                              FROM aimroute.dealers h
                             WHERE h.dealer_number = lead.dealer_number AND h.business_hours IS NOT NULL
                               AND s.reroute_clock = 'business_hours'), '');
    IF lead.reroute_count >= s.reroute_max_dealers THEN
        PERFORM aimroute.move_lead(lead.lead_id, s.default_dealer_number, 'Default',
            aimroute.dealer_distance_miles(lead.country, lead.postal_code, s.default_dealer_number),
            'Re-Route', format('%s; re-routed %s times already (reroute_max_dealers %s): default dealer',
                               why, lead.reroute_count, s.reroute_max_dealers));
    ELSE
        d := aimroute.route(lead.country, lead.postal_code, lead.brand_code, lead.product_code,
                            NULL, lead.dealer_group, held, lead.state_code);
        PERFORM aimroute.move_lead(lead.lead_id, d.dealer_number,
            CASE WHEN d.match_type = 'Default' THEN 'Default' ELSE 'Re-Route' END::aimroute.match_type,
            d.distance_miles, 'Re-Route',
            format('%s; excluded every dealer that held it (%s)', why, array_to_string(held, ', ')),
            d.steps);
    END IF;
    UPDATE aimroute.leads l SET reroute_count = l.reroute_count + 1 WHERE l.lead_id = lead.lead_id;
END
$$;
REVOKE EXECUTE ON FUNCTION aimroute.reroute_lead(aimroute.leads, aimroute.settings) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.reroute_lead(aimroute.leads, aimroute.settings) TO aimroute_admin;

--
-- reroute_overdue: re-route up to max_leads overdue unviewed leads, the
-- earliest deadline first; returns how many.  Rows another session holds
-- are skipped (the worker, or whoever else calls this, takes them next
-- time); a row viewed meanwhile no longer qualifies when locked.
--
-- One lead whose re-route raises does not stop the others (SPEC section
-- 8): it is set aside (aimroute.set_aside_items, 055_set_aside.sql) with
-- its error and skipped until its retry time, its deadline unchanged.  The
-- batch is tried whole first, in one subtransaction; only when that fails
-- is it done again lead by lead, each in a subtransaction of its own.  (A
-- subtransaction per lead every time would give a batch of 100 more
-- subtransaction IDs than a backend caches, and slow down every other
-- session's snapshots while it runs.)  Set-aside rows of leads that no
-- longer wait at that deadline (re-routed, viewed, reassigned) are removed.
--
CREATE FUNCTION aimroute.reroute_overdue(max_leads integer DEFAULT 100)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s aimroute.settings;
    lead aimroute.leads;
    n integer := 0;
    whole boolean := true;
    e_code text;
    e_message text;
    e_detail text;
    e_hint text;
    e_context text;
BEGIN
    SELECT * INTO s FROM aimroute.settings;
    LOOP
        BEGIN
            n := 0;
            FOR lead IN SELECT * FROM aimroute.leads l
                         WHERE l.reroute_due_at <= clock_timestamp() AND l.viewed_at IS NULL
                           AND NOT EXISTS (SELECT FROM aimroute.set_aside_items f
                                            WHERE f.kind = 'lead' AND f.item_id = l.lead_id
                                              AND f.reroute_due_at = l.reroute_due_at
                                              AND f.retry_at > clock_timestamp())
                         ORDER BY l.reroute_due_at, l.lead_id
                         LIMIT max_leads
                         FOR UPDATE SKIP LOCKED
            LOOP
                IF whole THEN
                    PERFORM aimroute.reroute_lead(lead, s);
                    n := n + 1;
                    CONTINUE;
                END IF;
                BEGIN
                    PERFORM aimroute.reroute_lead(lead, s);
                    n := n + 1;
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
                        e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT,
                        e_context = PG_EXCEPTION_CONTEXT;
                    PERFORM aimroute.set_aside('lead', lead.lead_id, lead.lead_id, 're-route', e_code, e_message,
                                               e_detail, e_hint, e_context, lead.reroute_due_at);
                END;
            END LOOP;
            EXIT;
        EXCEPTION WHEN OTHERS THEN
            -- Not a lead's own error (a bad max_leads, say): the caller's.
            IF NOT whole THEN
                RAISE;
            END IF;
            whole := false;
        END;
    END LOOP;
    -- Rows another session holds are its own to keep or remove.
    DELETE FROM aimroute.set_aside_items f
     WHERE f.kind = 'lead'
       AND f.item_id IN (SELECT g.item_id FROM aimroute.set_aside_items g
                          WHERE g.kind = 'lead'
                            AND NOT EXISTS (SELECT FROM aimroute.leads l
                                             WHERE l.lead_id = g.item_id AND l.viewed_at IS NULL
                                               AND l.reroute_due_at = g.reroute_due_at)
                            FOR UPDATE SKIP LOCKED);
    RETURN n;
END
$$;
COMMENT ON FUNCTION aimroute.reroute_overdue(integer) IS
    'Re-routes up to max_leads overdue unviewed leads, earliest deadline first; what the re-route worker runs. A lead whose re-route raises is set aside in aimroute.set_aside_items, with a WARNING, and tried again later.';
REVOKE EXECUTE ON FUNCTION aimroute.reroute_overdue(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.reroute_overdue(integer) TO aimroute_admin;

--
-- reroute_next_due: seconds until the re-route worker has something to do
-- (0 when a lead is overdue now, NULL when no lead has a deadline); a
-- set-aside lead counts at its retry time, not at its passed deadline, so
-- that the worker does not wake for it every second.
--
CREATE FUNCTION aimroute.reroute_next_due() RETURNS double precision
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    -- Not greatest(0, ...) alone: it ignores a NULL, and no deadline would
    -- read as one due now.
    SELECT CASE WHEN x.next_at IS NOT NULL
                THEN greatest(0, extract(epoch FROM x.next_at - clock_timestamp()))::float8 END
      FROM (SELECT least(
                (SELECT l.reroute_due_at FROM aimroute.leads l
                  WHERE l.viewed_at IS NULL AND l.reroute_due_at IS NOT NULL
                    AND NOT EXISTS (SELECT FROM aimroute.set_aside_items f
                                     WHERE f.kind = 'lead' AND f.item_id = l.lead_id
                                       AND f.reroute_due_at = l.reroute_due_at
                                       AND f.retry_at > clock_timestamp())
                  ORDER BY l.reroute_due_at LIMIT 1),
                (SELECT min(f.retry_at) FROM aimroute.set_aside_items f
                   JOIN aimroute.leads l ON l.lead_id = f.item_id AND l.reroute_due_at = f.reroute_due_at
                  WHERE f.kind = 'lead' AND l.viewed_at IS NULL)) AS next_at) x
$$;
COMMENT ON FUNCTION aimroute.reroute_next_due() IS
    'Seconds until the next lead is due for re-routing (0: one is overdue now; NULL: none has a deadline), a set-aside lead at its retry time. The re-route worker sleeps that long at most.';
REVOKE EXECUTE ON FUNCTION aimroute.reroute_next_due() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.reroute_next_due() TO aimroute_admin;

--
-- mark_viewed: a dealer's contact viewed the lead.  Counts only for a
-- 'Leads: Emails To' contact of the dealer holding the lead; anyone else
-- is refused (false) and nothing changes.  Viewing again is harmless.  A
-- region or dealer user may name only its own address
-- (aimroute.user_scopes.email); admins and the extension's owner name the
-- contact whose view they record.  In C (src/reroute.c), and not SECURITY
-- DEFINER: it reads the lead with the caller's rights, takes the caller's
-- own address from user_scopes unless the caller is an admin, and records
-- the view as the extension's owner, since only aimroute writes viewed_at
-- (leads_protect_view, 040_leads.sql).  Its search_path is pinned here.
--
CREATE FUNCTION aimroute.mark_viewed(lead_id bigint, viewer_email text)
RETURNS boolean
    AS 'MODULE_PATHNAME', 'aimroute_mark_viewed'
    LANGUAGE C
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION aimroute.mark_viewed(bigint, text) IS
    'Marks a lead viewed when viewer_email is a ''Leads: Emails To'' contact of the dealer holding it and, for a region or dealer user, the caller''s own address (aimroute.user_scopes.email) (true); otherwise changes nothing (false).';
REVOKE EXECUTE ON FUNCTION aimroute.mark_viewed(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.mark_viewed(bigint, text) TO aimroute_admin, aimroute_region, aimroute_dealer;

--
-- open_view_link: the view link of a notice was opened.  Counts while the
-- notice's dealer still holds the lead; the link of a dealer that lost it
-- to a re-route is refused (false).
--
-- SECURITY DEFINER: the token is the capability (240 random bits), as a
-- password-reset link is; the web page behind the link calls it with
-- whatever role it has.
CREATE FUNCTION aimroute.open_view_link(token text)
RETURNS boolean
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n aimroute.lead_notifications;
    holder text;
BEGIN
    SELECT * INTO n FROM aimroute.lead_notifications x WHERE x.view_token = open_view_link.token;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT l.dealer_number INTO holder FROM aimroute.leads l WHERE l.lead_id = n.lead_id FOR UPDATE;
    IF holder IS DISTINCT FROM n.dealer_number THEN
        RETURN false;
    END IF;
    UPDATE aimroute.leads l
       SET viewed_at = clock_timestamp(), viewed_by = format('view link %s', n.notification_id),
           reroute_due_at = NULL
     WHERE l.lead_id = n.lead_id AND l.viewed_at IS NULL;
    RETURN true;
END
$$;
COMMENT ON FUNCTION aimroute.open_view_link(text) IS
    'The view link of a notification was opened: marks the lead viewed while that notification''s dealer holds it (true); otherwise false.';
REVOKE EXECUTE ON FUNCTION aimroute.open_view_link(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.open_view_link(text) TO aimroute_admin, aimroute_region, aimroute_dealer, aimroute_view_link;

CREATE FUNCTION aimroute.reroute_worker_running() RETURNS boolean
    AS 'MODULE_PATHNAME', 'aimroute_reroute_worker_running'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION aimroute.reroute_worker_running() IS
    'Whether the re-route worker runs for this database (aimroute is in shared_preload_libraries and aimroute.database names it); see pg_stat_activity for the worker itself.';
