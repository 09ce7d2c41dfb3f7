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

-- Re-routing with PostGIS outside schema aimroute (issue 14, defect 1): the
-- distance to the default dealer is measured by dealer_distance_miles,
-- which finds PostGIS wherever it was installed.
CREATE OR REPLACE FUNCTION aimroute.reroute_lead(lead aimroute.leads, s aimroute.settings)
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

-- Territories never cross a country line (issue 14, defect 3): a territory
-- in another country than its dealer's is refused, and a dealer moving to
-- another country while holding territories is warned.
-- (aimroute.dealers_normalize(): its 0.2.0 text is set once, in the time-zone section below.)
CREATE OR REPLACE FUNCTION aimroute.territories_normalize() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    country_in text := NEW.country;
    code_in text := NEW.code;
    dealer_country text;
    holder text;
    county_state text;
    county_name text;
    known_county text;
BEGIN
    NEW.kind := lower(btrim(NEW.kind));
    IF NEW.kind IS NULL OR NEW.kind NOT IN ('postal', 'county', 'state', 'country') THEN
        RAISE EXCEPTION 'invalid territory kind "%"', NEW.kind
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A territory''s kind is one of postal, county, state or country.';
    END IF;
    NEW.country := aimroute.normalize_country(NEW.country);
    IF NEW.country IS NULL THEN
        RAISE EXCEPTION 'unknown country "%" for a territory of dealer %', country_in, NEW.dealer_number
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an ISO 3166-1 alpha-2 or alpha-3 code, such as US, USA, CA or CAN.';
    END IF;
    SELECT d.country INTO dealer_country FROM aimroute.dealers d WHERE d.dealer_number = NEW.dealer_number;
    IF dealer_country IS DISTINCT FROM NEW.country AND dealer_country IS NOT NULL THEN
        RAISE EXCEPTION 'a territory in % cannot be given to dealer %, which is in %', NEW.country, NEW.dealer_number, dealer_country
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The territory: %s %s %s.', NEW.kind, NEW.country, coalesce(NEW.code, '')),
                  HINT = format('A territory never crosses a country line: give it to a dealer in %s.', NEW.country);
    END IF;

    IF NEW.kind = 'country' THEN
        IF nullif(btrim(NEW.code), '') IS NULL THEN
            NEW.code := NEW.country;
        ELSIF aimroute.normalize_country(NEW.code) IS DISTINCT FROM NEW.country THEN
            RAISE EXCEPTION 'country territory code "%" does not match its country %', NEW.code, NEW.country
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For a country territory, leave code empty or repeat the country code.';
        ELSE
            NEW.code := NEW.country;
        END IF;

    ELSIF NEW.kind = 'state' THEN
        NEW.code := upper(btrim(NEW.code));
        IF NEW.code IS NULL OR NEW.code = '' THEN
            RAISE EXCEPTION 'a state territory needs a state code'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use the state or province code as in aimroute.postal_codes.state_code, such as MO or ON.';
        END IF;
        IF NOT EXISTS (SELECT FROM aimroute.postal_codes p
                        WHERE p.country = NEW.country AND p.state_code = NEW.code) THEN
            RAISE NOTICE 'no postal code of % has state code %: the territory of dealer % matches no lead yet',
                NEW.country, NEW.code, NEW.dealer_number;
        END IF;

    ELSIF NEW.kind = 'county' THEN
        county_state := upper(btrim(split_part(NEW.code, '/', 1)));
        county_name := btrim(substr(NEW.code, length(split_part(NEW.code, '/', 1)) + 2));
        IF position('/' IN coalesce(NEW.code, '')) = 0 OR county_state = '' OR county_name = '' THEN
            RAISE EXCEPTION 'invalid county territory code "%"', NEW.code
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write the state code and the county name joined by a slash, as in MI/Mackinac.';
        END IF;
        SELECT p.county INTO known_county FROM aimroute.postal_codes p
         WHERE p.country = NEW.country AND p.state_code = county_state
           AND lower(p.county) = lower(county_name)
         LIMIT 1;
        IF known_county IS NULL THEN
            RAISE NOTICE 'no postal code of % lies in county %/%: the territory of dealer % matches no lead yet',
                NEW.country, county_state, county_name, NEW.dealer_number;
        END IF;
        NEW.code := county_state || '/' || coalesce(known_county, county_name);

    ELSE -- postal
        NEW.code := aimroute.normalize_postal_code(NEW.country, NEW.code);
        IF NEW.code IS NULL OR NOT aimroute.postal_code_is_valid(NEW.country, NEW.code) THEN
            RAISE EXCEPTION 'invalid % postal code "%" for a territory of dealer %',
                NEW.country, coalesce(code_in, ''), NEW.dealer_number
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE NEW.country
                                 WHEN 'US' THEN 'A US territory postal code is a five-digit ZIP code, such as 49757.'
                                 WHEN 'CA' THEN 'A Canadian territory postal code is an FSA (P0S) or a full code (K1A 0B1).'
                                 ELSE 'A postal code cannot be blank.' END;
        END IF;
        SELECT t.dealer_number INTO holder FROM aimroute.territories t
         WHERE t.kind = 'postal' AND t.country = NEW.country AND t.code = NEW.code
           AND t.brand_code IS NOT DISTINCT FROM NEW.brand_code
           AND t.territory_id IS DISTINCT FROM NEW.territory_id;
        IF holder IS NOT NULL THEN
            RAISE EXCEPTION 'postal code % % is already held by dealer % for %',
                NEW.country, NEW.code, holder,
                coalesce('brand ' || NEW.brand_code, 'all brands')
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('A postal code can be held by one dealer per brand scope; dealer %s cannot take it as well.', NEW.dealer_number),
                      HINT = format('Remove it from dealer %s first, or assign it to dealer %s for a single brand (brand_code).', holder, NEW.dealer_number);
        END IF;
        IF NOT EXISTS (SELECT FROM aimroute.postal_codes p
                        WHERE p.country = NEW.country AND p.postal_code = NEW.code) THEN
            RAISE NOTICE 'postal code % % is not in aimroute.postal_codes: leads from it will match this territory but have no centre point',
                NEW.country, NEW.code;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- dealer_distance_miles in C (issue 14): with PostGIS in a schema of its own,
-- a role without USAGE on that schema could not reassign a lead.  A new
-- language and owner (C functions stay the bootstrap superuser's), so the
-- function is made anew.
DROP FUNCTION aimroute.dealer_distance_miles(text, text, text);
CREATE FUNCTION aimroute.dealer_distance_miles(country text, postal_code text, dealer_number text)
RETURNS double precision
    AS 'MODULE_PATHNAME', 'aimroute_dealer_distance_miles'
    LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION aimroute.dealer_distance_miles(text, text, text) IS
    'Miles from a postal code''s centre to a dealer''s location, as routing measures them (ST_Distance on the spheroid / 1609.344); NULL when either point is unknown.';

-- security: a dealer or region user cannot stop its own re-route clock
-- (issue 14, defect 5), and region and dealer users read all four
-- delivery views of their scope, without the view tokens (defect 6).
-- As in schema/025_user_scopes.sql, 040_leads.sql, 060_reroute.sql, 075_delivery.sql and 078_delivery_views.sql.

-- A user's own address, the only one its mark_viewed counts.
ALTER TABLE aimroute.user_scopes
    ADD COLUMN email text CONSTRAINT user_scopes_email_check CHECK (aimroute.email_is_valid(email));
COMMENT ON COLUMN aimroute.user_scopes.email IS
    'The email address of the person who logs in as role_name: the only viewer_email with which that role''s aimroute.mark_viewed counts (when it is a ''Leads: Emails To'' contact of the dealer holding the lead). NULL: the role''s mark_viewed never counts.';
CREATE OR REPLACE FUNCTION aimroute.user_scopes_validate() RETURNS trigger
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

-- mark_viewed is C now: it reads the lead as the caller and records the
-- view as the extension's owner.  Like every C function of aimroute it
-- belongs to the bootstrap superuser (give_objects_to_owner, below, gives
-- the extension's owner EXECUTE on it).
CREATE OR REPLACE FUNCTION aimroute.mark_viewed(lead_id bigint, viewer_email text)
RETURNS boolean
    AS 'MODULE_PATHNAME', 'aimroute_mark_viewed'
    LANGUAGE C
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION aimroute.mark_viewed(bigint, text) IS
    'Marks a lead viewed when viewer_email is a ''Leads: Emails To'' contact of the dealer holding it and, for a region or dealer user, the caller''s own address (aimroute.user_scopes.email) (true); otherwise changes nothing (false).';

DO $security$
BEGIN
    EXECUTE pg_catalog.format('ALTER FUNCTION aimroute.mark_viewed(bigint, text) OWNER TO %I',
                              pg_catalog.pg_get_userbyid(10));
END
$security$;

-- Only aimroute writes a lead's view and deadline.
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


-- The view tokens are the admins'; the views read no token.
REVOKE SELECT ON aimroute.lead_notifications FROM aimroute_dealer;
GRANT SELECT (notification_id, lead_id, dealer_number, event, queued_at, no_contacts, messages, failure_notice_at)
    ON aimroute.lead_notifications TO aimroute_region, aimroute_dealer;
-- (aimroute.lead_delivery_status: its 0.2.0 text, security_invoker with it, is set once, in the queue section below.)

-- stall: a worker never stalls on one bad item (issue 14, defect 2; SPEC
-- section 8).  A lead whose re-route raises, or a message whose claim or
-- record raises, is set aside in aimroute.set_aside_items with its error
-- and a WARNING, tried again later with a backoff, and the worker goes on
-- with the others (schema/055_set_aside.sql, 060_reroute.sql,
-- 075_delivery.sql).
CREATE TABLE aimroute.set_aside_items (
    kind             text NOT NULL
        CONSTRAINT set_aside_items_kind_check CHECK (kind IN ('lead', 'notice', 'message')),
    item_id          bigint NOT NULL,
    lead_id          bigint,
    step             text NOT NULL
        CONSTRAINT set_aside_items_step_check CHECK (step IN ('re-route', 'notice', 'claim', 'record')),
    error_code       text NOT NULL,
    error            text NOT NULL,
    detail           text,
    hint             text,
    context          text,
    failures         integer NOT NULL DEFAULT 1,
    first_failed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    failed_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    retry_at         timestamptz NOT NULL,
    reroute_due_at   timestamptz,
    send_result      jsonb,
    PRIMARY KEY (kind, item_id)
);
COMMENT ON TABLE aimroute.set_aside_items IS
    'Leads and messages a background worker set aside because processing them raised an error: the error, how often, and when they are tried next. The worker goes on with the others meanwhile. To try one again now, set its retry_at to clock_timestamp().';
COMMENT ON COLUMN aimroute.set_aside_items.kind IS '''lead'' (the re-route worker), ''notice'' (a lead''s notice, the delivery worker) or ''message'' (the delivery worker).';
COMMENT ON COLUMN aimroute.set_aside_items.item_id IS 'The lead_id of a lead or of a lead whose notice it is, the message_id (aimroute.outbox) of a message.';
COMMENT ON COLUMN aimroute.set_aside_items.lead_id IS 'The lead concerned (NULL for a message that is not about a lead, such as a daily recap).';
COMMENT ON COLUMN aimroute.set_aside_items.step IS
    '''re-route'' (re-routing an overdue lead), ''notice'' (queueing the notice and messages of a lead routing marked to be sent; the lead keeps its mark, nothing was queued), ''claim'' (preparing a message to send: the checks, the claim and the rendering; nothing was sent) or ''record'' (recording the outcome of a message that was sent; it is recorded again, never sent again).';
COMMENT ON COLUMN aimroute.set_aside_items.error_code IS 'The SQLSTATE of the latest error.';
COMMENT ON COLUMN aimroute.set_aside_items.error IS 'The message of the latest error.';
COMMENT ON COLUMN aimroute.set_aside_items.detail IS 'Its detail, if any.';
COMMENT ON COLUMN aimroute.set_aside_items.hint IS 'Its hint, if any.';
COMMENT ON COLUMN aimroute.set_aside_items.context IS 'Where it was raised: the PL/pgSQL call stack.';
COMMENT ON COLUMN aimroute.set_aside_items.failures IS 'Tries that failed in a row (for a lead: for its current deadline).';
COMMENT ON COLUMN aimroute.set_aside_items.first_failed_at IS 'When the first of those failed.';
COMMENT ON COLUMN aimroute.set_aside_items.failed_at IS 'When the latest failed.';
COMMENT ON COLUMN aimroute.set_aside_items.retry_at IS
    'When the worker tries it again: 1 minute after the first failure, then 2, 4, 8 ... minutes, 1 hour at most. Set it to clock_timestamp() to try now.';
COMMENT ON COLUMN aimroute.set_aside_items.reroute_due_at IS
    'A lead''s deadline when it was set aside. The lead still counts as overdue; a new deadline (a reassignment) or a view makes the row moot, and the worker removes it.';
COMMENT ON COLUMN aimroute.set_aside_items.send_result IS
    'Step record: what the send came to (attempt, curl_code, response_code, response, smtp_command), recorded as the outcome when recording works again.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.set_aside_items', '');

CREATE FUNCTION aimroute.set_aside(p_kind text, p_item_id bigint, p_lead_id bigint, p_step text,
                                   p_error_code text, p_error text, p_detail text, p_hint text,
                                   p_context text, p_reroute_due_at timestamptz DEFAULT NULL,
                                   p_send_result jsonb DEFAULT NULL)
RETURNS aimroute.set_aside_items
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f aimroute.set_aside_items;
    at_time timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO f FROM aimroute.set_aside_items x
     WHERE x.kind = p_kind AND x.item_id = p_item_id FOR UPDATE;
    -- A lead's failures count for one deadline; a message's for one step.
    IF NOT FOUND OR f.step IS DISTINCT FROM p_step OR f.reroute_due_at IS DISTINCT FROM p_reroute_due_at THEN
        f.failures := 1;
        f.first_failed_at := at_time;
    ELSE
        f.failures := f.failures + 1;
    END IF;
    INSERT INTO aimroute.set_aside_items AS x
           (kind, item_id, lead_id, step, error_code, error, detail, hint, context, failures,
            first_failed_at, failed_at, retry_at, reroute_due_at, send_result)
    VALUES (p_kind, p_item_id, p_lead_id, p_step, p_error_code, p_error, nullif(p_detail, ''),
            nullif(p_hint, ''), nullif(p_context, ''), f.failures, f.first_failed_at, at_time,
            at_time + least(interval '1 minute' * power(2, least(f.failures - 1, 6)), interval '1 hour'),
            p_reroute_due_at, p_send_result)
    ON CONFLICT (kind, item_id) DO UPDATE
       SET lead_id = excluded.lead_id, step = excluded.step, error_code = excluded.error_code,
           error = excluded.error, detail = excluded.detail, hint = excluded.hint,
           context = excluded.context, failures = excluded.failures,
           first_failed_at = excluded.first_failed_at, failed_at = excluded.failed_at,
           retry_at = excluded.retry_at, reroute_due_at = excluded.reroute_due_at,
           send_result = excluded.send_result
    RETURNING * INTO f;
    RAISE WARNING 'aimroute: % % set aside: % failed: %',
                  CASE p_kind WHEN 'notice' THEN 'the notice of lead' ELSE p_kind END, p_item_id,
                  CASE p_step WHEN 're-route' THEN 're-routing it' WHEN 'notice' THEN 'queueing it'
                              WHEN 'claim' THEN 'preparing it' ELSE 'recording its outcome' END,
                  p_error
        USING DETAIL = format('Failure %s in a row (SQLSTATE %s); next try at %s.%s', f.failures, p_error_code,
                              f.retry_at, ' The error''s detail: ' || nullif(p_detail, '')),
              HINT = format('See aimroute.set_aside_items; to try it again now: UPDATE aimroute.set_aside_items SET retry_at = clock_timestamp() WHERE kind = %L AND item_id = %s;',
                            p_kind, p_item_id);
    RETURN f;
END
$$;
COMMENT ON FUNCTION aimroute.set_aside(text, bigint, bigint, text, text, text, text, text, text, timestamptz, jsonb) IS
    'Sets a lead or message aside after an error: records the error in aimroute.set_aside_items, puts its next try 1, 2, 4 ... minutes away (an hour at most), and raises a WARNING. Internal: the workers'' functions call it.';

CREATE OR REPLACE FUNCTION aimroute.reroute_overdue(max_leads integer DEFAULT 100)
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

CREATE FUNCTION aimroute.delivery_claim_one(m aimroute.outbox, s aimroute.settings, lease interval)
RETURNS aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j aimroute.delivery_job;
    contact_status text;
    holder text;
    newer bigint;
BEGIN
    IF m.status = 'sending' THEN
        INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
        VALUES (m.message_id, m.attempts, 'Interrupted',
                'the delivery worker stopped before recording the outcome of this attempt; sending again with the same key');
        UPDATE aimroute.outbox o SET last_attempt_at = clock_timestamp() WHERE o.message_id = m.message_id;
    END IF;
    IF m.purpose = 'lead' THEN
        SELECT l.dealer_number INTO holder
          FROM aimroute.leads l JOIN aimroute.lead_notifications n USING (lead_id)
         WHERE n.notification_id = m.notification_id AND l.dealer_number = n.dealer_number;
        IF NOT FOUND THEN
            SELECT l.dealer_number INTO holder FROM aimroute.leads l WHERE l.lead_id = m.lead_id;
            PERFORM aimroute.delivery_fail(m, 'Cancelled',
                CASE WHEN holder IS NULL THEN 'not sent: the lead does not exist (deleted, or its INSERT skipped by another trigger)'
                     ELSE format('not sent: the lead went to dealer %s first', holder) END);
            RETURN NULL;
        END IF;
        SELECT x.notification_id INTO newer FROM aimroute.lead_notifications x
         WHERE x.lead_id = m.lead_id AND x.dealer_number = holder AND x.notification_id > m.notification_id
         ORDER BY x.notification_id DESC LIMIT 1;
        IF FOUND THEN
            PERFORM aimroute.delivery_fail(m, 'Cancelled',
                format('not sent: notice %s sent the lead to the dealer again', newer));
            RETURN NULL;
        END IF;
    END IF;
    -- A deleted contact gets nothing; a bounce is an email address's,
    -- so a push to the contact's mobile still goes.
    IF m.contact_id IS NOT NULL THEN
        SELECT c.delivery_status INTO contact_status FROM aimroute.dealer_contacts c WHERE c.contact_id = m.contact_id;
        IF NOT FOUND THEN
            PERFORM aimroute.delivery_fail(m, 'Cancelled', format('not sent: contact %s was deleted', m.contact_id));
            RETURN NULL;
        END IF;
        IF m.method = 'email' AND contact_status <> 'Active' THEN
            PERFORM aimroute.delivery_fail(m, 'Suppressed',
                format('not sent: contact %s is on the suppression list (%s)', m.contact_id, contact_status));
            RETURN NULL;
        END IF;
    END IF;
    IF m.method = 'mobile' AND s.push_gateway_url IS NULL THEN
        PERFORM aimroute.delivery_fail(m, 'Failed', 'not sent: no push gateway is configured (settings.push_gateway_url)');
        RETURN NULL;
    END IF;

    UPDATE aimroute.outbox o
       SET status = 'sending', attempts = o.attempts + 1, due_at = clock_timestamp() + lease,
           message_key = coalesce(o.message_key,
                                  format('<aimroute.%s.%s@%s>', o.message_id,
                                         to_char(o.queued_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS'),
                                         split_part(s.smtp_from, '@', 2)))
     WHERE o.message_id = m.message_id
    RETURNING * INTO m;
    j := aimroute.delivery_render(m, s);
    IF j.url IS NULL OR j.payload IS NULL THEN
        RAISE EXCEPTION 'message % has no %', m.message_id,
                        CASE WHEN j.url IS NULL THEN 'address to send to' ELSE 'content' END
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = CASE WHEN j.url IS NULL THEN 'Check settings.smtp_url, settings.push_gateway_url and the CRM integration''s endpoint.' END;
    END IF;
    RETURN j;
END
$$;

-- (aimroute.delivery_claim(): its 0.2.0 text is set once, in the multi section below.)

CREATE OR REPLACE FUNCTION aimroute.delivery_record(message_id bigint, attempt integer, curl_code integer,
                                         response_code integer, response text,
                                         smtp_command text DEFAULT NULL)
RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m aimroute.outbox;
    s aimroute.settings;
    smtp boolean;
    recipient_reply boolean;
    v_outcome text;
    detail text := left(response, 2000);
    e_code text;
    e_message text;
    e_detail text;
    e_hint text;
    e_context text;
BEGIN
    SELECT * INTO m FROM aimroute.outbox o WHERE o.message_id = delivery_record.message_id FOR UPDATE;
    IF NOT FOUND OR m.status <> 'sending' OR m.attempts <> delivery_record.attempt THEN
        -- Deleted, or recorded already: nothing to do, nothing to record again.
        DELETE FROM aimroute.set_aside_items x
         WHERE x.kind = 'message' AND x.item_id = delivery_record.message_id AND x.step = 'record'
           AND (x.send_result ->> 'attempt')::integer = delivery_record.attempt;
        RETURN NULL;
    END IF;
    BEGIN
        DELETE FROM aimroute.set_aside_items x WHERE x.kind = 'message' AND x.item_id = m.message_id;
        SELECT * INTO s FROM aimroute.settings;
        smtp := m.method = 'email' OR m.role = 'adf_email';
        IF smtp THEN
            -- Only the recipient's own replies are bounces: to RCPT, or to the
            -- end of DATA (one recipient a message).  A refusal of the sender
            -- or of the login says nothing about the contact.
            recipient_reply := coalesce(upper(smtp_command) IN ('RCPT', 'DATA'), true);
            v_outcome := CASE WHEN curl_code = 0 THEN 'Delivered'
                            WHEN recipient_reply AND response_code IN (550, 551, 553) THEN 'Hard Bounce'
                            WHEN recipient_reply AND response_code IN (452, 552) THEN 'Soft Bounce'
                            WHEN response_code BETWEEN 500 AND 599 THEN 'Failed'
                            ELSE 'Will retry' END;
        ELSE
            v_outcome := CASE WHEN curl_code = 0 AND response_code BETWEEN 200 AND 299 THEN 'Delivered'
                            ELSE 'Will retry' END;
        END IF;
        IF v_outcome = 'Will retry' AND m.attempts > cardinality(s.delivery_retry_schedule) THEN
            v_outcome := 'Failed';
            detail := format('%s (gave up after %s attempts)', detail, m.attempts);
        END IF;

        IF smtp AND curl_code <> 0 AND smtp_command IS NOT NULL THEN
            detail := format('%s (after %s)', detail, upper(smtp_command));
        END IF;
        INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response_code, response)
        VALUES (m.message_id, m.attempts, v_outcome, nullif(response_code, 0), detail);
        IF v_outcome = 'Will retry' THEN
            UPDATE aimroute.outbox o
               SET status = 'queued', outcome = 'Will retry', last_response = detail, last_attempt_at = clock_timestamp(),
                   due_at = clock_timestamp() + s.delivery_retry_schedule[m.attempts]
             WHERE o.message_id = m.message_id;
            RETURN v_outcome;
        END IF;
        UPDATE aimroute.outbox o
           SET status = CASE WHEN v_outcome = 'Delivered' THEN 'delivered' ELSE 'failed' END,
               outcome = v_outcome, last_response = detail, finished_at = clock_timestamp(),
               last_attempt_at = clock_timestamp()
         WHERE o.message_id = m.message_id;
        IF v_outcome IN ('Hard Bounce', 'Soft Bounce') AND m.contact_id IS NOT NULL THEN
            UPDATE aimroute.dealer_contacts c SET delivery_status = v_outcome
             WHERE c.contact_id = m.contact_id AND c.delivery_status IS DISTINCT FROM 'Hard Bounce';
        END IF;
        IF m.purpose = 'lead' THEN
            PERFORM aimroute.delivery_settle(m.notification_id);
        END IF;
        RETURN v_outcome;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
            e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT, e_context = PG_EXCEPTION_CONTEXT;
    END;
    PERFORM aimroute.set_aside('message', m.message_id, m.lead_id, 'record', e_code, e_message, e_detail,
                               e_hint, e_context, NULL,
                               jsonb_build_object('attempt', m.attempts, 'curl_code', curl_code,
                                                  'response_code', response_code, 'response', response,
                                                  'smtp_command', smtp_command));
    -- Shown in delivery_attempts, when the log takes it.
    BEGIN
        INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
        VALUES (m.message_id, m.attempts, 'Set aside',
                left('sent, but recording its outcome failed: ' || e_message, 2000));
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION aimroute.delivery_record(bigint, integer, integer, integer, text, text) IS
    'Records the outcome of one delivery attempt (libcurl code, server reply code and text, the SMTP command replied to): delivered, hard or soft bounce (the contact is suppressed), a retry on the schedule of settings.delivery_retry_schedule, or failure. Internal: the delivery worker calls it.';

CREATE OR REPLACE FUNCTION aimroute.delivery_next_due() RETURNS double precision
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    -- Not greatest(0, ...) alone: it ignores a NULL, and no message would
    -- read as one due now.
    SELECT CASE WHEN x.next_at IS NOT NULL
                THEN greatest(0, extract(epoch FROM x.next_at - clock_timestamp()))::float8 END
      FROM (SELECT least(
                (SELECT o.due_at FROM aimroute.outbox o
                  WHERE o.status IN ('queued', 'sending')
                    AND NOT EXISTS (SELECT FROM aimroute.set_aside_items f
                                     WHERE f.kind = 'message' AND f.item_id = o.message_id)
                  ORDER BY o.due_at LIMIT 1),
                (SELECT min(CASE WHEN f.step = 'record' THEN f.retry_at ELSE greatest(o.due_at, f.retry_at) END)
                   FROM aimroute.set_aside_items f
                   JOIN aimroute.outbox o ON o.message_id = f.item_id
                  WHERE f.kind = 'message' AND o.status IN ('queued', 'sending')),
                (SELECT min(f.retry_at) FROM aimroute.set_aside_items f WHERE f.kind = 'notice')) AS next_at) x
$$;

COMMENT ON COLUMN aimroute.delivery_attempts.outcome IS
    'Delivered; Hard Bounce (550: recipient not found); Soft Bounce (452/552: inbox full); Will retry (connection, DNS, HTTP or temporary SMTP error); Failed (out of retries, a permanent SMTP error, no push gateway); Suppressed (contact on the suppression list, not sent); Interrupted (the worker stopped before recording; sent again with the same key); Set aside (preparing it, or recording its outcome after it was sent, raised an error: see aimroute.set_aside_items; tried again later, and a message sent is not sent again); Cancelled (the lead left the dealer first).';

-- Privileges as a fresh install gives them (each function's home file; 080_security.sql for the table): the table is
-- aimroute_admin's to use, the new functions are internal.  Their owner is
-- given by give_objects_to_owner() at the end of the script.
GRANT ALL ON aimroute.set_aside_items TO aimroute_admin;
REVOKE EXECUTE ON FUNCTION aimroute.set_aside(text, bigint, bigint, text, text, text, text, text, text, timestamp with time zone, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.set_aside(text, bigint, bigint, text, text, text, text, text, text, timestamp with time zone, jsonb) TO aimroute_admin;
REVOKE EXECUTE ON FUNCTION aimroute.reroute_next_due() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.reroute_next_due() TO aimroute_admin;
REVOKE EXECUTE ON FUNCTION aimroute.delivery_claim_one(aimroute.outbox, aimroute.settings, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_claim_one(aimroute.outbox, aimroute.settings, interval) TO aimroute_admin;

-- A starting delivery worker takes back at once what a dead one claimed
-- (SPEC section 7): delivery_take_back.
CREATE FUNCTION aimroute.delivery_take_back() RETURNS integer
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH taken AS (
        UPDATE aimroute.outbox o SET due_at = clock_timestamp()
         WHERE o.status = 'sending' AND o.due_at > clock_timestamp()
        RETURNING 1)
    SELECT count(*)::integer FROM taken
$$;
COMMENT ON FUNCTION aimroute.delivery_take_back() IS
    'What a starting delivery worker runs first: messages an earlier worker claimed and did not record fall due at once instead of when their lease runs out; returns how many. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_take_back() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_take_back() TO aimroute_admin;

-- core: one implementation of the routing rules (issue 15).  The GUC
-- aimroute.routing_cache is retired (the library no longer defines it):
-- routing_cache_info().enabled is always true, and its comment says so.
COMMENT ON FUNCTION aimroute.routing_cache_info() IS
    'This session''s in-memory model of the routing configuration, brought up to date first: its version, when it was built and in how many milliseconds, what it holds and the memory it takes. enabled is always true: routing always uses the model (aimroute.routing_cache, which could turn it off, was retired in 0.2.0).';

-- One URL rule (issue 15): aimroute.url_is_valid, for the settings' URLs
-- and the CRM endpoints alike.  A URL with white space in it, which 0.1.0
-- took in a setting after its host, is refused now: if the update stops
-- on one of these constraints, correct that setting and update again.
CREATE FUNCTION aimroute.url_is_valid(url text, schemes text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN url ~ ('^(' || array_to_string(schemes, '|') || ')://[^/[:space:]]+[^[:space:]]*$');
COMMENT ON FUNCTION aimroute.url_is_valid(text, text[]) IS
    'Whether a text is a URL of one of the schemes (such as {http,https}): scheme://host, then anything but white space.';
ALTER TABLE aimroute.settings
    DROP CONSTRAINT settings_smtp_url_check,
    ADD CONSTRAINT settings_smtp_url_check CHECK (aimroute.url_is_valid(smtp_url, '{smtp,smtps}')),
    DROP CONSTRAINT settings_push_gateway_url_check,
    ADD CONSTRAINT settings_push_gateway_url_check CHECK (aimroute.url_is_valid(push_gateway_url, '{http,https}')),
    DROP CONSTRAINT settings_view_link_url_check,
    ADD CONSTRAINT settings_view_link_url_check CHECK (aimroute.url_is_valid(view_link_url, '{http,https}'));
ALTER TABLE aimroute.crm_integrations
    DROP CONSTRAINT crm_integrations_endpoint_check,
    ADD CONSTRAINT crm_integrations_endpoint_check CHECK (
        CASE kind WHEN 'adf_email' THEN aimroute.email_is_valid(endpoint)
                  ELSE aimroute.url_is_valid(endpoint, '{http,https}') END);
-- (aimroute.settings_validate(): its 0.2.0 text is set once, in the time-zone section below.)
CREATE OR REPLACE FUNCTION aimroute.crm_integrations_validate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.endpoint := btrim(NEW.endpoint);
    IF NEW.kind IS NULL OR NEW.kind NOT IN ('adf_email', 'adf_http') THEN
        RAISE EXCEPTION 'invalid CRM integration kind %', coalesce(quote_literal(NEW.kind), 'NULL')
            USING ERRCODE = 'check_violation',
                  HINT = 'kind is ''adf_email'' (ADF XML by email) or ''adf_http'' (ADF XML by HTTP POST).';
    ELSIF NEW.kind = 'adf_email' AND NOT coalesce(aimroute.email_is_valid(NEW.endpoint), false) THEN
        RAISE EXCEPTION 'invalid endpoint % for an adf_email integration of dealer %',
                        coalesce(quote_literal(NEW.endpoint), 'NULL'), NEW.dealer_number
            USING ERRCODE = 'check_violation', HINT = 'An adf_email endpoint is the CRM''s lead address, such as leads@crm.example.com.';
    ELSIF NEW.kind = 'adf_http' AND NOT coalesce(aimroute.url_is_valid(NEW.endpoint, '{http,https}'), false) THEN
        RAISE EXCEPTION 'invalid endpoint % for an adf_http integration of dealer %',
                        coalesce(quote_literal(NEW.endpoint), 'NULL'), NEW.dealer_number
            USING ERRCODE = 'check_violation', HINT = 'An adf_http endpoint is an http:// or https:// URL, such as https://crm.example.com/adf.';
    END IF;
    RETURN NEW;
END
$$;

-- A delivery worker asked to stop gives back what it has not sent through
-- a function of the schema, not SQL of its own (issue 15).
CREATE FUNCTION aimroute.delivery_give_back(message_id bigint, attempt integer) RETURNS void
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE aimroute.outbox o
       SET status = 'queued', attempts = o.attempts - 1, due_at = clock_timestamp()
     WHERE o.message_id = delivery_give_back.message_id
       AND o.attempts = delivery_give_back.attempt AND o.status = 'sending'
$$;
COMMENT ON FUNCTION aimroute.delivery_give_back(bigint, integer) IS
    'What a delivery worker asked to stop runs for each claimed message it has not sent: due again at once, as the same attempt. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_give_back(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_give_back(bigint, integer) TO aimroute_admin;

-- One time-zone test (issue 15): aimroute.timezone_is_valid, for the
-- OEM's and each dealer's time zone.
CREATE FUNCTION aimroute.timezone_is_valid(tz text) RETURNS boolean
    LANGUAGE plpgsql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM now() AT TIME ZONE tz;
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END
$$;
COMMENT ON FUNCTION aimroute.timezone_is_valid(text) IS
    'Whether PostgreSQL takes a text as a time zone (a pg_timezone_names name such as America/Chicago, an abbreviation or an offset); NULL for NULL.';
CREATE OR REPLACE FUNCTION aimroute.dealers_normalize() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    country_in text := NEW.country;
    pc aimroute.postal_codes;
    moved boolean;
BEGIN
    NEW.dealer_number := btrim(NEW.dealer_number);
    NEW.country := aimroute.normalize_country(NEW.country);
    IF NEW.country IS NULL THEN
        RAISE EXCEPTION 'unknown country "%" for dealer %', country_in, NEW.dealer_number
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an ISO 3166-1 alpha-2 or alpha-3 code, such as US, USA, CA or CAN.';
    END IF;
    NEW.postal_code := aimroute.normalize_postal_code(NEW.country, NEW.postal_code);
    NEW.state_code := nullif(upper(btrim(NEW.state_code)), '');

    moved := TG_OP = 'INSERT'
             OR NEW.country IS DISTINCT FROM OLD.country
             OR NEW.postal_code IS DISTINCT FROM OLD.postal_code;
    IF TG_OP = 'UPDATE' AND NEW.country IS DISTINCT FROM OLD.country
       AND EXISTS (SELECT FROM aimroute.territories t
                    WHERE t.dealer_number = OLD.dealer_number AND t.country <> NEW.country) THEN
        RAISE WARNING 'dealer % moves to %, but holds territories in other countries: they route no lead while it is there',
            NEW.dealer_number, NEW.country
            USING HINT = 'A territory never crosses a country line. Give those territories to a dealer of their country.';
    END IF;
    IF moved THEN
        SELECT * INTO pc FROM aimroute.postal_codes p
         WHERE p.country = NEW.country AND p.postal_code = NEW.postal_code;
        IF NOT FOUND AND NEW.postal_code IS NOT NULL THEN
            RAISE NOTICE 'postal code % % of dealer % is not in aimroute.postal_codes: state, county and location are not filled from it',
                NEW.country, NEW.postal_code, NEW.dealer_number;
        ELSIF FOUND AND pc.centroid IS NULL AND NEW.location IS NULL THEN
            RAISE NOTICE 'postal code % % of dealer % has no centre point: give the dealer a location, or it cannot be measured from',
                NEW.country, NEW.postal_code, NEW.dealer_number;
        END IF;
        IF TG_OP = 'INSERT' THEN
            -- A county is only taken along with its own state.
            IF NEW.state_code IS NULL OR NEW.state_code = pc.state_code THEN
                NEW.county := coalesce(NEW.county, pc.county);
            END IF;
            NEW.state_code := coalesce(NEW.state_code, pc.state_code);
            NEW.location := coalesce(NEW.location, pc.centroid);
        ELSE
            IF NEW.state_code IS NOT DISTINCT FROM OLD.state_code THEN
                NEW.state_code := coalesce(pc.state_code, NEW.state_code);
            END IF;
            IF NEW.county IS NOT DISTINCT FROM OLD.county THEN
                NEW.county := coalesce(pc.county, NEW.county);
            END IF;
            IF NEW.location IS NOT DISTINCT FROM OLD.location THEN
                NEW.location := coalesce(pc.centroid, NEW.location);
            END IF;
        END IF;
    END IF;

    IF NOT aimroute.timezone_is_valid(NEW.timezone) THEN
        RAISE EXCEPTION 'invalid time zone "%" for dealer %', NEW.timezone, NEW.dealer_number
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a name from pg_timezone_names, such as America/Chicago, or NULL for the OEM''s time zone.';
    END IF;
    RETURN NEW;
END
$$;
CREATE OR REPLACE FUNCTION aimroute.settings_validate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text;
    normalized text[] := '{}';
    bad text;           -- the setting refused
    allowed text;       -- what it accepts
    bad_value text;     -- its value, as text
    tz_ok boolean := true;
BEGIN
    IF TG_OP = 'DELETE' OR TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'the aimroute.settings row cannot be deleted'
            USING ERRCODE = 'object_in_use',
                  HINT = 'Change settings with UPDATE aimroute.settings SET ...; there is always exactly one row.';
    END IF;

    FOREACH c IN ARRAY coalesce(NEW.radius_countries, '{}') LOOP
        IF aimroute.normalize_country(c) IS NULL THEN
            bad := 'radius_countries';
            allowed := format('an array of ISO 3166-1 country codes, such as {US,CA}; %s is not one',
                              coalesce('"' || c || '"', 'NULL'));
            EXIT;
        END IF;
        IF NOT aimroute.normalize_country(c) = ANY (normalized) THEN
            normalized := normalized || aimroute.normalize_country(c);
        END IF;
    END LOOP;
    tz_ok := coalesce(aimroute.timezone_is_valid(NEW.timezone), true);

    IF bad IS NOT NULL THEN
        NULL;   -- radius_countries, above
    ELSIF NEW.radius_countries IS NULL THEN
        bad := 'radius_countries';
        allowed := 'an array of ISO 3166-1 country codes, such as {US,CA}; {} disables radius routing everywhere';
    ELSIF NEW.radius_enabled IS NULL THEN
        bad := 'radius_enabled';
        allowed := 'true or false';
    ELSIF NEW.product_routing_enabled IS NULL THEN
        bad := 'product_routing_enabled';
        allowed := 'true or false';
    ELSIF NEW.inventory_routing_enabled IS NULL THEN
        bad := 'inventory_routing_enabled';
        allowed := 'true or false';
    ELSIF NEW.reroute_enabled IS NULL THEN
        bad := 'reroute_enabled';
        allowed := 'true or false';
    ELSIF NEW.radius_miles IS NULL OR NEW.radius_miles <= 0 OR NEW.radius_miles > 12451 THEN
        bad := 'radius_miles';
        allowed := 'a distance in statute miles greater than 0 and at most 12451 (half the Earth''s circumference)';
    ELSIF NEW.default_dealer_number IS NOT NULL
          AND NOT EXISTS (SELECT FROM aimroute.dealers d WHERE d.dealer_number = NEW.default_dealer_number) THEN
        bad := 'default_dealer_number';
        allowed := 'the dealer_number of a row of aimroute.dealers; insert the default dealer first';
    ELSIF NEW.reroute_max_dealers IS NULL OR NEW.reroute_max_dealers NOT BETWEEN 1 AND 100 THEN
        bad := 'reroute_max_dealers';
        allowed := 'a whole number from 1 to 100';
    ELSIF NEW.reroute_after IS NULL OR NEW.reroute_after < '1 minute' OR NEW.reroute_after > '90 days' THEN
        bad := 'reroute_after';
        allowed := 'an interval from 1 minute to 90 days, such as ''24 hours''';
    ELSIF NEW.reroute_skip_days IS NULL OR NOT NEW.reroute_skip_days <@ '{1,2,3,4,5,6,7}'
          OR array_position(NEW.reroute_skip_days, NULL) IS NOT NULL
          OR NEW.reroute_skip_days @> '{1,2,3,4,5,6,7}' THEN
        bad := 'reroute_skip_days';
        allowed := 'an array of ISO weekday numbers from 1 (Monday) to 7 (Sunday), such as {6,7}, leaving at least one day not skipped';
    ELSIF NEW.timezone IS NULL OR NEW.timezone = '' OR NOT tz_ok THEN
        bad := 'timezone';
        allowed := 'a time zone name from pg_timezone_names, such as America/Chicago or UTC';
    ELSIF NEW.dedupe_window IS NULL OR NEW.dedupe_window < '0' OR NEW.dedupe_window > '7 days' THEN
        bad := 'dedupe_window';
        allowed := 'an interval from 0 (no deduplication) to 7 days, such as ''60 seconds''';
    ELSIF NEW.smtp_url IS NULL OR NOT aimroute.url_is_valid(NEW.smtp_url, '{smtp,smtps}') THEN
        bad := 'smtp_url';
        allowed := 'an smtp:// or smtps:// URL with a host, such as smtp://127.0.0.1:25';
    ELSIF NEW.smtp_from IS NULL OR NEW.smtp_from !~ '^[^@[:space:]<>]+@[^@[:space:]<>]+$' THEN
        bad := 'smtp_from';
        allowed := 'an email address, such as leads@example.com';
    ELSIF NOT aimroute.url_is_valid(NEW.push_gateway_url, '{http,https}') THEN
        bad := 'push_gateway_url';
        allowed := 'an http:// or https:// URL, or NULL for no mobile push';
    ELSIF NEW.delivery_retry_schedule IS NULL
          OR cardinality(NEW.delivery_retry_schedule) NOT BETWEEN 1 AND 20
          OR array_position(NEW.delivery_retry_schedule, NULL) IS NOT NULL
          OR NOT '0'::interval < ALL (NEW.delivery_retry_schedule) THEN
        bad := 'delivery_retry_schedule';
        allowed := 'an array of 1 to 20 positive intervals, such as {20 seconds,20 minutes,20 hours}';
    ELSIF NEW.daily_recap_hour IS NULL OR NEW.daily_recap_hour NOT BETWEEN 0 AND 23 THEN
        bad := 'daily_recap_hour';
        allowed := 'an hour of the day from 0 to 23, in settings.timezone';
    ELSIF NEW.oem_name IS NULL OR btrim(NEW.oem_name) = '' THEN
        bad := 'oem_name';
        allowed := 'a name that is not blank';
    ELSIF NEW.view_link_url IS NULL OR NOT aimroute.url_is_valid(NEW.view_link_url, '{http,https}') THEN
        bad := 'view_link_url';
        allowed := 'an http:// or https:// URL to which the view token is appended, such as https://dealers.example.com/lead?token=';
    ELSIF NEW.singleton IS DISTINCT FROM true THEN
        bad := 'singleton';
        allowed := 'true: aimroute.settings has exactly one row';
    END IF;

    IF bad IS NOT NULL THEN
        EXECUTE format('SELECT ($1).%I::text', bad) INTO bad_value USING NEW;
        RAISE EXCEPTION 'invalid value for setting "%": %', bad, coalesce(bad_value, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('%s must be %s.', bad, allowed);
    END IF;
    NEW.radius_countries := normalized;

    -- A second INSERT (such as a restore of a dump) updates the one row.
    IF TG_OP = 'INSERT' AND EXISTS (SELECT FROM aimroute.settings) THEN
        UPDATE aimroute.settings s SET
            radius_enabled = NEW.radius_enabled, radius_miles = NEW.radius_miles,
            radius_countries = NEW.radius_countries,
            default_dealer_number = NEW.default_dealer_number,
            product_routing_enabled = NEW.product_routing_enabled,
            inventory_routing_enabled = NEW.inventory_routing_enabled,
            reroute_enabled = NEW.reroute_enabled,
            reroute_max_dealers = NEW.reroute_max_dealers,
            reroute_after = NEW.reroute_after, reroute_skip_days = NEW.reroute_skip_days,
            timezone = NEW.timezone, dedupe_window = NEW.dedupe_window,
            smtp_url = NEW.smtp_url, smtp_from = NEW.smtp_from,
            smtp_username = NEW.smtp_username, smtp_password = NEW.smtp_password,
            push_gateway_url = NEW.push_gateway_url,
            delivery_retry_schedule = NEW.delivery_retry_schedule,
            daily_recap_hour = NEW.daily_recap_hour, oem_name = NEW.oem_name,
            view_link_url = NEW.view_link_url
         WHERE s.singleton;
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

-- One list of the notification contact types (issue 15):
-- aimroute.notification_contact_types, for both contact tables.
CREATE FUNCTION aimroute.notification_contact_types() RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ARRAY['Dealer Lead Delivery Notification (real-time)', 'Lead Delivery Notification Daily'];
COMMENT ON FUNCTION aimroute.notification_contact_types() IS
    'The two kinds of failure notices, as contact types of aimroute.notification_contacts and aimroute.dealer_contacts.';
CREATE OR REPLACE FUNCTION aimroute.contact_types() RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ARRAY['Leads: Emails To', 'Leads: Emails CC'] || aimroute.notification_contact_types();
COMMENT ON FUNCTION aimroute.contact_types() IS 'The contact types aimroute.dealer_contacts accepts.';
ALTER TABLE aimroute.notification_contacts
    DROP CONSTRAINT notification_contacts_contact_type_check,
    ADD CONSTRAINT notification_contacts_contact_type_check
        CHECK (contact_type = ANY (aimroute.notification_contact_types()));
CREATE OR REPLACE FUNCTION aimroute.notification_contacts_validate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.email := btrim(NEW.email);
    NEW.region := nullif(btrim(NEW.region), '');
    IF NEW.contact_type IS NULL OR NOT NEW.contact_type = ANY (aimroute.notification_contact_types()) THEN
        RAISE EXCEPTION 'invalid notification contact type %', coalesce(quote_literal(NEW.contact_type), 'NULL')
            USING ERRCODE = 'check_violation',
                  HINT = format('contact_type is %s.', array_to_string(
                             ARRAY(SELECT quote_literal(t) FROM unnest(aimroute.notification_contact_types()) t), ' or '));
    END IF;
    IF NEW.email IS NULL OR NOT aimroute.email_is_valid(NEW.email) THEN
        RAISE EXCEPTION 'invalid email address % for a notification contact', coalesce(quote_literal(NEW.email), 'NULL')
            USING ERRCODE = 'check_violation', HINT = 'Give one address, such as ops@oem.example.com.';
    END IF;
    RETURN NEW;
END
$$;

-- lead_adf of a lead received at infinity or -infinity: no requestdate
-- and no year, instead of "cannot subtract infinite timestamps" (found by
-- t/005_fuzz.pl).
CREATE OR REPLACE FUNCTION aimroute.lead_adf(lead_id bigint) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT aimroute.adf_render(
               l.lead_id,
               pg_catalog.to_char(t.local_at, 'YYYY-MM-DD"T"HH24:MI:SS')
                   || CASE WHEN t.utc_offset < '0'::interval THEN '-' ELSE '+' END
                   || pg_catalog.to_char(CASE WHEN t.utc_offset < '0'::interval THEN -t.utc_offset
                                              ELSE t.utc_offset END, 'HH24:MI'),
               coalesce(v.model_year, pg_catalog.date_part('year', t.local_at)::integer),
               coalesce(b.name, l.brand_code),
               v.model,
               l.first_name, l.last_name, l.email, l.phone,
               l.address, l.city, l.state_code,
               coalesce(nullif(pg_catalog.btrim(l.postal_code_input), ''), l.postal_code),
               l.country, l.comment,
               d.dealer_number, d.name, s.oem_name)
      FROM aimroute.leads l
     CROSS JOIN aimroute.settings s
      LEFT JOIN aimroute.dealers d ON d.dealer_number = l.dealer_number
      LEFT JOIN aimroute.brands b ON b.brand_code = l.brand_code
     CROSS JOIN LATERAL (SELECT CASE WHEN pg_catalog.isfinite(l.received_at)
                                     THEN l.received_at AT TIME ZONE s.timezone END AS local_at,
                                CASE WHEN pg_catalog.isfinite(l.received_at)
                                     THEN (l.received_at AT TIME ZONE s.timezone)
                                          - (l.received_at AT TIME ZONE 'UTC') END AS utc_offset) t
     CROSS JOIN LATERAL aimroute.adf_model_year(l.product_code) v
     WHERE l.lead_id = lead_adf.lead_id
$$;

-- shmodel: one routing model per database and configuration version, in
-- shared memory when the library is preloaded (issue 16).
-- routing_cache_info() says where the model lives and what the session
-- holds besides; new OUT columns, so the function is made anew.
DROP FUNCTION aimroute.routing_cache_info();
CREATE FUNCTION aimroute.routing_cache_info(
    OUT enabled boolean, OUT version bigint, OUT built_at timestamptz, OUT build_ms float8,
    OUT dealers integer, OUT territories integer, OUT postal_codes bigint, OUT memory_bytes bigint,
    OUT location text, OUT session_bytes bigint)
    AS 'MODULE_PATHNAME', 'aimroute_routing_cache_info'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION aimroute.routing_cache_info() IS
    'The model of the routing configuration this session routes with, brought up to date first: its version, when it was built and in how many milliseconds, what it holds, its size (memory_bytes), where it lives (location: shared, one copy per database and version that every session maps, when aimroute is in shared_preload_libraries; local, this session''s own copy) and what this session holds besides (session_bytes: postal codes looked up, settings). enabled is always true: routing always uses the model (aimroute.routing_cache, which could turn it off, was retired in 0.2.0).';
REVOKE EXECUTE ON FUNCTION aimroute.routing_cache_info() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.routing_cache_info() TO aimroute_admin;

-- queue: the lead is the queue (issue 16).  Routing marks a lead to be
-- sent (aimroute.leads.notice_pending) instead of queueing its notice
-- and messages in the inserting transaction; the delivery worker expands
-- the marked leads in batches, set-based (aimroute.delivery_expand), by the
-- rules of aimroute.lead_recipients through aimroute.queue_notices, which
-- queue_lead_delivery (moves, send_lead) runs too.  The leads of 0.1.0
-- have their notices already: the mark's default, false, is theirs.
ALTER TABLE aimroute.leads ADD COLUMN notice_pending boolean NOT NULL DEFAULT false;
-- What the delivery worker looks for: leads whose notice is to be queued
-- (aimroute.delivery_expand, 075_delivery.sql), oldest first.
CREATE INDEX leads_notice_pending_idx ON aimroute.leads (lead_id) WHERE notice_pending;
COMMENT ON COLUMN aimroute.leads.notice_pending IS
    'The lead is to be sent to its dealer and its notice is not queued yet: set by routing when send_to_dealer is true, cleared in the transaction that queues the notice and its messages (the delivery worker''s aimroute.delivery_expand, or a move or send_lead first). Written by aimroute only.';
COMMENT ON COLUMN aimroute.lead_notifications.lead_id IS
    'The lead. Not a foreign key: a foreign key check would cost every notice queued; deleting a lead deletes its notices (aimroute.leads_delete_notices).';
COMMENT ON TABLE aimroute.outbox IS
    'Messages to send, one per recipient and method, queued by the delivery worker for a lead routed (aimroute.delivery_expand) or in the transaction that moves or resends a lead; the delivery worker sends them. Read the views lead_delivery_status, delivery_attempts, delivery_issues and unsent_leads rather than this table.';
CREATE FUNCTION aimroute.lead_recipients(dealer_numbers text[])
RETURNS TABLE (dealer_number text, method text, role text, contact_id bigint,
               integration_id bigint, recipient text, reaches_dealer boolean)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.dealer_number, 'email', CASE WHEN c.lead_to THEN 'To' ELSE 'CC' END, c.contact_id,
           NULL::bigint, c.email, c.lead_to
      FROM (SELECT x.*, 'Leads: Emails To' = ANY (x.contact_types) AS lead_to
              FROM aimroute.dealer_contacts x
             WHERE x.dealer_number = ANY (lead_recipients.dealer_numbers)
               AND x.contact_types && '{Leads: Emails To,Leads: Emails CC}'::text[]) c
     WHERE c.email IS NOT NULL
    UNION ALL
    SELECT c.dealer_number, 'mobile', 'Push', c.contact_id, NULL, c.mobile, false
      FROM aimroute.dealer_contacts c, aimroute.settings s
     WHERE c.dealer_number = ANY (lead_recipients.dealer_numbers)
       AND c.contact_types && '{Leads: Emails To,Leads: Emails CC}'::text[]
       AND c.mobile IS NOT NULL AND s.push_gateway_url IS NOT NULL
    UNION ALL
    SELECT i.dealer_number, 'crm', i.kind, NULL, i.integration_id, i.endpoint, true
      FROM aimroute.crm_integrations i
     WHERE i.dealer_number = ANY (lead_recipients.dealer_numbers) AND i.active
$$;
COMMENT ON FUNCTION aimroute.lead_recipients(text[]) IS
    'Who a notice to each of these dealers goes to, one row per message: an email per Leads To and CC contact with an address, a push per such contact with a mobile (when settings.push_gateway_url is set), an ADF message per active CRM integration; reaches_dealer is true for a To email and a CRM message, without which nothing is sent (No contacts configured).';
REVOKE EXECUTE ON FUNCTION aimroute.lead_recipients(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.lead_recipients(text[]) TO aimroute_admin, aimroute_region, aimroute_dealer;

--
-- queue_notices: a notice of each lead to the dealer paired with it, with
-- its messages by aimroute.lead_recipients, in two statements for the
-- whole set (internal).  Returns each lead's notice.  A dealer whose
-- recipients do not reach it gets a notice marked no_contacts and no
-- message.
--
CREATE FUNCTION aimroute.queue_notices(lead_ids bigint[], dealer_numbers text[], event text)
RETURNS TABLE (lead_id bigint, notification_id bigint)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
-- PL/pgSQL rather than SQL for its kept plan: a SQL function plans its
-- statement again on every call, which cost each move or send_lead about
-- 0.4 ms (three times the statement itself).
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH l AS (
        SELECT x.lead_id, x.dealer_number, x.n
          FROM unnest(queue_notices.lead_ids, queue_notices.dealer_numbers)
               WITH ORDINALITY AS x(lead_id, dealer_number, n)),
    r AS (
        SELECT * FROM aimroute.lead_recipients(ARRAY(SELECT DISTINCT l.dealer_number FROM l))),
    q AS (
        SELECT r.dealer_number, bool_or(r.reaches_dealer) AS reaches, count(*)::integer AS messages
          FROM r GROUP BY r.dealer_number),
    n AS (
        INSERT INTO aimroute.lead_notifications (lead_id, dealer_number, event, no_contacts, messages)
        SELECT l.lead_id, l.dealer_number, queue_notices.event, NOT coalesce(q.reaches, false),
               CASE WHEN q.reaches THEN q.messages ELSE 0 END
          FROM l LEFT JOIN q ON q.dealer_number = l.dealer_number
         ORDER BY l.n
        RETURNING notification_id, lead_id, dealer_number, no_contacts),
    m AS (
        INSERT INTO aimroute.outbox (notification_id, lead_id, dealer_number, method, role,
                                     contact_id, integration_id, recipient)
        SELECT n.notification_id, n.lead_id, n.dealer_number, r.method, r.role,
               r.contact_id, r.integration_id, r.recipient
          FROM n JOIN r ON r.dealer_number = n.dealer_number
         WHERE NOT n.no_contacts
         ORDER BY n.notification_id, CASE r.method WHEN 'email' THEN 1 WHEN 'mobile' THEN 2 ELSE 3 END,
                  r.contact_id, r.integration_id)
    SELECT n.lead_id, n.notification_id FROM n;
END
$$;
COMMENT ON FUNCTION aimroute.queue_notices(bigint[], text[], text) IS
    'Queues a notice of each lead to the dealer paired with it, and the notice''s messages (aimroute.lead_recipients), for the whole set at once; returns each lead''s notice. Internal: aimroute.delivery_expand and aimroute.queue_lead_delivery call it.';
REVOKE EXECUTE ON FUNCTION aimroute.queue_notices(bigint[], text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.queue_notices(bigint[], text[], text) TO aimroute_admin;

COMMENT ON FUNCTION aimroute.queue_lead_delivery(bigint, text, text) IS
    'Queues a notice of the lead to the dealer and its messages at once (aimroute.lead_recipients: one email per To and CC contact, one push per contact with a mobile, one ADF message per active CRM integration), and clears the lead''s notice_pending; returns the notice''s id. Internal: moves and send_lead call it.';
CREATE FUNCTION aimroute.delivery_expand(max_leads integer)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    taken integer := 0;
    whole boolean := false;
    ids bigint[];
    dealers text[];
    l record;
    e_code text;
    e_message text;
    e_detail text;
    e_hint text;
    e_context text;
BEGIN
    IF max_leads IS NULL OR max_leads < 1 THEN
        RAISE EXCEPTION 'max_leads must be 1 or more, not %', coalesce(max_leads::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The whole batch in one statement; only when that fails, lead by lead.
    BEGIN
        WITH batch AS (
            SELECT x.lead_id FROM aimroute.leads x
             WHERE x.notice_pending
               AND NOT EXISTS (SELECT FROM aimroute.set_aside_items f
                                WHERE f.kind = 'notice' AND f.item_id = x.lead_id
                                  AND f.retry_at > clock_timestamp())
             ORDER BY x.lead_id LIMIT max_leads
               FOR NO KEY UPDATE SKIP LOCKED),
        cleared AS (
            UPDATE aimroute.leads x SET notice_pending = false
              FROM batch b
             WHERE x.lead_id = b.lead_id
            RETURNING x.lead_id, x.dealer_number, x.send_to_dealer)
        SELECT count(*), array_agg(c.lead_id ORDER BY c.lead_id) FILTER (WHERE c.send_to_dealer),
               array_agg(c.dealer_number ORDER BY c.lead_id) FILTER (WHERE c.send_to_dealer)
          INTO taken, ids, dealers
          FROM cleared c;
        IF ids IS NOT NULL THEN
            PERFORM FROM aimroute.queue_notices(ids, dealers, 'Routed');
        END IF;
        whole := true;
    EXCEPTION WHEN OTHERS THEN
        taken := 0;
    END;
    IF NOT whole THEN
        FOR l IN SELECT x.lead_id FROM aimroute.leads x
                  WHERE x.notice_pending
                    AND NOT EXISTS (SELECT FROM aimroute.set_aside_items f
                                     WHERE f.kind = 'notice' AND f.item_id = x.lead_id
                                       AND f.retry_at > clock_timestamp())
                  ORDER BY x.lead_id LIMIT max_leads
                    FOR NO KEY UPDATE SKIP LOCKED
        LOOP
            BEGIN
                WITH cleared AS (
                    UPDATE aimroute.leads x SET notice_pending = false
                     WHERE x.lead_id = l.lead_id
                    RETURNING x.lead_id, x.dealer_number, x.send_to_dealer)
                SELECT array_agg(c.lead_id) FILTER (WHERE c.send_to_dealer),
                       array_agg(c.dealer_number) FILTER (WHERE c.send_to_dealer)
                  INTO ids, dealers
                  FROM cleared c;
                IF ids IS NOT NULL THEN
                    PERFORM FROM aimroute.queue_notices(ids, dealers, 'Routed');
                END IF;
                taken := taken + 1;
            EXCEPTION WHEN OTHERS THEN
                -- The lead keeps its mark; it is tried again at retry_at.
                GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
                    e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT,
                    e_context = PG_EXCEPTION_CONTEXT;
                PERFORM aimroute.set_aside('notice', l.lead_id, l.lead_id, 'notice', e_code, e_message,
                                           e_detail, e_hint, e_context);
            END;
        END LOOP;
    END IF;
    -- A set-aside notice whose lead lost its mark (queued now, moved, sent
    -- by send_lead, deleted) is no longer waiting.  Rows another session
    -- holds are its own to keep or remove.
    IF EXISTS (SELECT FROM aimroute.set_aside_items f WHERE f.kind = 'notice') THEN
        DELETE FROM aimroute.set_aside_items f
         WHERE f.kind = 'notice'
           AND f.item_id IN (SELECT g.item_id FROM aimroute.set_aside_items g
                              WHERE g.kind = 'notice'
                                AND NOT EXISTS (SELECT FROM aimroute.leads x
                                                 WHERE x.lead_id = g.item_id AND x.notice_pending)
                                FOR UPDATE SKIP LOCKED);
    END IF;
    RETURN taken;
END
$$;
COMMENT ON FUNCTION aimroute.delivery_expand(integer) IS
    'Queues the notices and messages of up to max_leads leads that routing marked to be sent (notice_pending), oldest first, set-based, and clears their marks in the same transaction; skips leads other transactions have locked. A lead whose notice raises keeps its mark and is set aside (aimroute.set_aside_items, kind notice) until its retry_at. Returns the leads taken. The delivery worker calls it every round; without the worker, call it to queue what routing marked.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_expand(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_expand(integer) TO aimroute_admin;

CREATE OR REPLACE VIEW aimroute.lead_delivery_status WITH (security_invoker = true) AS
SELECT l.lead_id,
       l.dealer_number,
       (n.notification_id IS NOT NULL AND o.attempted > 0) AS sent_to_dealer,
       l.viewed_at IS NOT NULL AS viewed,
       CASE WHEN o.email_attempted = 0 THEN NULL
            WHEN o.email_delivered = o.email_total THEN 'Delivered'
            WHEN o.email_delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS email_status,
       CASE WHEN o.mobile_attempted = 0 THEN NULL
            WHEN o.mobile_delivered = o.mobile_total THEN 'Delivered'
            WHEN o.mobile_delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS mobile_status,
       CASE WHEN o.crm_attempted = 0 THEN NULL
            WHEN o.crm_delivered = o.crm_total THEN 'Delivered'
            WHEN o.crm_delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS crm_status,
       coalesce(p.no_contacts, n.no_contacts, false) AS no_contacts_configured,
       coalesce(o.pending, 0) > 0 OR NOT coalesce(p.no_contacts, true) AS delivery_pending,
       l.send_to_dealer,
       n.notification_id,
       n.queued_at AS sent_at,
       o.last_attempt_at,
       l.received_at,
       (l.received_at AT TIME ZONE s.timezone)::date AS received_day,
       l.source,
       l.brand_code,
       l.match_type,
       d.name AS dealer_name,
       d.region
  FROM aimroute.leads l
  CROSS JOIN aimroute.settings s
  JOIN aimroute.dealers d ON d.dealer_number = l.dealer_number
  LEFT JOIN LATERAL (
        -- Not the view token, which region and dealer users do not read.
        SELECT x.notification_id, x.queued_at, x.no_contacts FROM aimroute.lead_notifications x
         WHERE x.lead_id = l.lead_id AND x.dealer_number = l.dealer_number
         ORDER BY x.notification_id DESC LIMIT 1) n ON true
  LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE x.outcome IS NOT NULL OR x.status = 'sending') AS attempted,
               count(*) FILTER (WHERE x.status IN ('queued', 'sending')) AS pending,
               count(*) FILTER (WHERE x.method = 'email') AS email_total,
               count(*) FILTER (WHERE x.method = 'email' AND x.status = 'delivered') AS email_delivered,
               count(*) FILTER (WHERE x.method = 'email' AND (x.outcome IS NOT NULL OR x.status = 'sending')) AS email_attempted,
               count(*) FILTER (WHERE x.method = 'mobile') AS mobile_total,
               count(*) FILTER (WHERE x.method = 'mobile' AND x.status = 'delivered') AS mobile_delivered,
               count(*) FILTER (WHERE x.method = 'mobile' AND (x.outcome IS NOT NULL OR x.status = 'sending')) AS mobile_attempted,
               count(*) FILTER (WHERE x.method = 'crm') AS crm_total,
               count(*) FILTER (WHERE x.method = 'crm' AND x.status = 'delivered') AS crm_delivered,
               count(*) FILTER (WHERE x.method = 'crm' AND (x.outcome IS NOT NULL OR x.status = 'sending')) AS crm_attempted,
               max(x.last_attempt_at) AS last_attempt_at
          FROM aimroute.outbox x
         WHERE x.notification_id = n.notification_id AND x.purpose = 'lead' AND x.status <> 'cancelled') o ON true
  LEFT JOIN LATERAL (
        SELECT NOT EXISTS (SELECT FROM aimroute.lead_recipients(ARRAY[l.dealer_number]) r
                            WHERE r.reaches_dealer) AS no_contacts
         WHERE l.notice_pending AND l.send_to_dealer) p ON true;
COMMENT ON COLUMN aimroute.lead_delivery_status.no_contacts_configured IS 'When the lead was sent, the dealer had no ''Leads: Emails To'' contact with an email and no active CRM integration, so nothing was sent; for a lead whose notice the delivery worker has not queued yet, the dealer has none now.';
COMMENT ON COLUMN aimroute.lead_delivery_status.delivery_pending IS 'Some message still waits for its first attempt or a retry, or the lead''s messages wait for the delivery worker to queue them: the statuses can still change.';
CREATE OR REPLACE VIEW aimroute.unsent_leads WITH (security_invoker = true) AS
SELECT st.lead_id,
       st.dealer_number,
       CASE WHEN NOT st.send_to_dealer THEN 'send_to_dealer false'
            WHEN st.no_contacts_configured THEN 'No contacts configured'
            WHEN st.notification_id IS NULL AND NOT st.delivery_pending THEN 'Not queued'
            WHEN NOT st.delivery_pending THEN 'All contacts undeliverable'
            WHEN st.sent_to_dealer THEN 'Retrying'
            ELSE 'Waiting for the delivery worker' END AS reason,
       st.received_at,
       st.received_day,
       st.sent_at,
       st.last_attempt_at,
       st.source,
       st.brand_code,
       st.dealer_name,
       st.region
  FROM aimroute.lead_delivery_status st
 WHERE NOT st.viewed
   AND NOT EXISTS (SELECT FROM aimroute.lead_notifications n JOIN aimroute.outbox o USING (notification_id)
                    WHERE n.lead_id = st.lead_id AND n.dealer_number = st.dealer_number
                      AND o.purpose = 'lead' AND o.status = 'delivered');
COMMENT ON COLUMN aimroute.unsent_leads.reason IS
    'send_to_dealer false; No contacts configured (no Leads To contact, no active CRM); All contacts undeliverable (every message bounced, was suppressed or ran out of retries); Retrying (attempts failed, more are scheduled); Waiting for the delivery worker (no attempt yet, or its messages not queued yet); Not queued (a lead restored or routed before delivery was set up: aimroute.send_lead sends it).';

-- staging: process_staging() set-based end to end (issue 16).  Marking a
-- row's outcome is a HOT update: the table leaves room on each page, and
-- the index of waiting duplicates, which covered status and lead_id, gives
-- way to one of every row's duplicates.  The duplicate lookup compares
-- input_md5 byte by byte.  (Rows staged before keep their pages as they
-- are; the fillfactor applies to rows staged from now on.)
ALTER TABLE aimroute.lead_staging SET (fillfactor = 45);
DROP INDEX aimroute.lead_staging_waiting_duplicates_idx;
CREATE INDEX lead_staging_duplicates_idx ON aimroute.lead_staging (duplicate_of)
    WHERE duplicate_of IS NOT NULL;
DROP INDEX aimroute.lead_staging_dedupe_idx;
CREATE INDEX lead_staging_dedupe_idx ON aimroute.lead_staging (input_md5 COLLATE "C", staged_at, staging_id);
CREATE OR REPLACE FUNCTION aimroute.process_staging(batch_id text)
RETURNS TABLE (status text, rows bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    chunk_size      constant integer := 10000;
    piece_size      constant integer := 100;    -- rows per INSERT once a chunk's INSERT failed
    max_length      constant integer := 1000;
    max_comment     constant integer := 10000;
    min_phone_digits constant integer := 5;
    ws              constant text := E' \t\r\n\f\x0B';
    email_pattern   constant text :=
        '^[^[:space:]@<>(),;:"\[\]\\]+@[^[:space:]@<>(),;:"\[\]\\.]+(\.[^[:space:]@<>(),;:"\[\]\\.]+)+$';
    v_batch         text := process_staging.batch_id;
    v_started       timestamptz := clock_timestamp();
    v_now           timestamptz;
    v_window        interval;
    v_default       text;
    v_seq           regclass;
    v_total         bigint;
    v_last          bigint := 0;    -- the chunks so far reached this staging_id
    v_lo            bigint;         -- the chunk's first and last staging_id
    v_hi            bigint;
    v_step          integer;        -- leads per INSERT: 0 the whole chunk, then piece_size, then 1
    v_rows          bigint;
    v_done          bigint := 0;
    v_leads         bigint := 0;
    v_rejected      bigint := 0;
    v_duplicates    bigint := 0;
    v_settled       bigint[];       -- step 4: the staging_ids settled in the last round, in order
    v_failed        boolean;
    r               record;
BEGIN
    IF v_batch IS NULL THEN
        RAISE EXCEPTION 'batch_id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the batch_id the rows were staged with, as in SELECT * FROM aimroute.process_staging(''feed-2024-05-01'').';
    END IF;

    -- One import at a time: a duplicate is judged against rows another
    -- call might be processing.
    PERFORM pg_advisory_xact_lock('aimroute.lead_staging'::regclass::oid::bigint);

    SELECT count(*) INTO v_total
      FROM aimroute.lead_staging s
     WHERE s.batch_id = v_batch AND s.status IS NULL;

    IF v_total = 0 THEN
        IF EXISTS (SELECT FROM aimroute.lead_staging s WHERE s.batch_id = v_batch) THEN
            RAISE NOTICE 'batch %: every row is already processed; nothing to do', v_batch;
        ELSE
            RAISE NOTICE 'batch % has no staged rows', pg_catalog.quote_literal(v_batch)
                USING HINT = 'Stage rows with INSERT or COPY INTO aimroute.lead_staging (batch_id, ...) first; the batch_id must match exactly, case and spaces included.';
        END IF;
    ELSE
        SELECT s.dedupe_window, s.default_dealer_number INTO v_window, v_default
          FROM aimroute.settings s;
        IF v_default IS NULL THEN
            RAISE EXCEPTION 'no default dealer is configured'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'An imported lead that no rule places goes to the default dealer.',
                      HINT = 'UPDATE aimroute.settings SET default_dealer_number = ''...'' (a dealer of aimroute.dealers), then process the batch again.';
        END IF;
        v_seq := pg_get_serial_sequence('aimroute.leads', 'lead_id')::regclass;
        IF NOT has_sequence_privilege(v_seq, 'USAGE, UPDATE') THEN
            RAISE EXCEPTION 'permission denied for sequence %', v_seq
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'aimroute.process_staging() draws each new lead''s lead_id from it.',
                      HINT = format('GRANT USAGE ON SEQUENCE %s TO %I, together with INSERT ON aimroute.leads.',
                                    v_seq, current_user);
        END IF;

        -- One row per staging row of the chunk: the lead it becomes
        -- (lead_id), or its problems, or the row it duplicates
        -- (duplicate_of; duplicate_lead_id is that row's lead if it has one
        -- yet, duplicate_reason the reason to record).
        CREATE TEMPORARY TABLE aimroute_staging_chunk (
            staging_id      bigint NOT NULL,
            received_at     timestamptz,
            source          text,
            brand_code      text,
            product_code    text,
            first_name      text,
            last_name       text,
            email           text,
            phone           text,
            address         text,
            city            text,
            state_code      text,
            country         text,
            postal_code     text,
            dealer_number   text,
            dealer_group    text,
            send_to_dealer  boolean,
            comment         text,
            problems        text,
            duplicate_of    bigint,
            duplicate_lead_id bigint,
            duplicate_reason text,
            lead_id         bigint,
            inserted        boolean NOT NULL DEFAULT false  -- only kept up to date once an INSERT failed
        ) ON COMMIT DROP;
    END IF;

    WHILE v_done < v_total LOOP
        v_now := clock_timestamp();

        -- 1. The chunk: the next chunk_size unprocessed rows, read once.
        --    Values are trimmed and parsed and problems listed; a row
        --    without problems is looked up among the earlier rows (the
        --    earliest staged identical row within the window that was not
        --    rejected: the rows of this chunk have not been marked yet, but
        --    an identical row has the same problems, none); a row that
        --    becomes a lead has its lead_id drawn, in staging order, so that
        --    the mapping is exact whatever order the INSERT works in.
        --    (The lookup is written so that only lead_staging_dedupe_idx
        --    can serve it: ORDER BY staging_id, or staging_id < ... as an
        --    index condition, tempts the planner into walking the primary
        --    key, every earlier row for every row, when the statistics say
        --    the table is empty, as after a TRUNCATE.)
        INSERT INTO pg_temp.aimroute_staging_chunk
        SELECT v.staging_id, v.received_at, v.source, v.brand_code, v.product_code, v.first_name,
               v.last_name, v.email, v.phone, v.address, v.city, v.state_code, v.country,
               v.postal_code, v.dealer_number, v.dealer_group, v.send_to_dealer, v.comment,
               v.problems, v.duplicate_of, v.duplicate_lead_id, v.duplicate_reason,
               CASE WHEN v.problems IS NULL AND v.duplicate_of IS NULL THEN nextval(v_seq) END
          FROM (SELECT c.*, d.staging_id AS duplicate_of, d.lead_id AS duplicate_lead_id,
                       CASE WHEN d.staging_id IS NOT NULL THEN
                           format('identical to staging row %s of batch %s, staged within the dedupe window of %s seconds',
                                  d.staging_id, pg_catalog.quote_literal(d.batch_id),
                                  round(extract(epoch FROM v_window)))
                       END AS duplicate_reason
                  FROM (SELECT t.staging_id, t.staged_at, t.input_md5,
                               coalesce(t.parsed_received_at, t.staged_at) AS received_at,
                               coalesce(t.source, 'import') AS source,
                               t.brand_code, t.product_code, t.first_name, t.last_name, t.email, t.phone,
                               t.address, t.city, t.state_code, t.country, t.postal_code, t.dealer_number,
                               t.dealer_group, coalesce(t.parsed_send_to_dealer, true) AS send_to_dealer, t.comment,
                               nullif(concat_ws('; ',
                                   CASE WHEN t.received_at IS NOT NULL AND t.parsed_received_at IS NULL THEN
                                       format('received_at %s is not a timestamp (write it as 2024-05-01 14:30:00+00)',
                                              aimroute.staging_quote(t.received_at))
                                        WHEN t.parsed_received_at IN ('infinity', '-infinity') THEN
                                       format('received_at %s is not a finite timestamp', aimroute.staging_quote(t.received_at))
                                   END,
                                   CASE WHEN t.send_to_dealer IS NOT NULL AND t.parsed_send_to_dealer IS NULL THEN
                                       format('send_to_dealer %s is not a boolean (write true or false)',
                                              aimroute.staging_quote(t.send_to_dealer))
                                   END,
                                   CASE WHEN t.email IS NOT NULL AND (length(t.email) > 254 OR t.email !~ email_pattern) THEN
                                       format('email %s is not an address (such as name@example.com)',
                                              aimroute.staging_quote(t.email))
                                   END,
                                   CASE WHEN t.email IS NULL AND t.phone IS NULL THEN
                                       'no way to contact the customer: no email and no phone'
                                        WHEN t.email IS NULL
                                             AND length(regexp_replace(t.phone, '[^0-9]', '', 'g')) < min_phone_digits THEN
                                       format('no way to contact the customer: no email, and phone %s has fewer than %s digits',
                                              aimroute.staging_quote(t.phone), min_phone_digits)
                                   END,
                                   CASE WHEN length(t.comment) > max_comment
                                             OR greatest(length(t.received_at), length(t.source), length(t.brand_code),
                                                         length(t.product_code), length(t.first_name), length(t.last_name),
                                                         length(t.email), length(t.phone), length(t.address), length(t.city),
                                                         length(t.state_code), length(t.country), length(t.postal_code),
                                                         length(t.dealer_number), length(t.dealer_group),
                                                         length(t.send_to_dealer)) > max_length THEN
                                       (SELECT string_agg(format('%s is too long (%s characters; at most %s)',
                                                                 f.name, length(f.value), f.max), '; ' ORDER BY f.n)
                                          FROM (VALUES (1, 'received_at', t.received_at, max_length),
                                                       (2, 'source', t.source, max_length),
                                                       (3, 'brand_code', t.brand_code, max_length),
                                                       (4, 'product_code', t.product_code, max_length),
                                                       (5, 'first_name', t.first_name, max_length),
                                                       (6, 'last_name', t.last_name, max_length),
                                                       (7, 'email', t.email, max_length),
                                                       (8, 'phone', t.phone, max_length),
                                                       (9, 'address', t.address, max_length),
                                                       (10, 'city', t.city, max_length),
                                                       (11, 'state_code', t.state_code, max_length),
                                                       (12, 'country', t.country, max_length),
                                                       (13, 'postal_code', t.postal_code, max_length),
                                                       (14, 'dealer_number', t.dealer_number, max_length),
                                                       (15, 'dealer_group', t.dealer_group, max_length),
                                                       (16, 'send_to_dealer', t.send_to_dealer, max_length),
                                                       (17, 'comment', t.comment, max_comment)) AS f(n, name, value, max)
                                         WHERE length(f.value) > f.max)
                                   END), '') AS problems
                          FROM (SELECT t.*,
                                       CASE WHEN t.received_at IS NOT NULL
                                            THEN aimroute.staging_timestamptz(t.received_at) END AS parsed_received_at,
                                       CASE WHEN lower(t.send_to_dealer)
                                                 ~ '^(t|tr|tru|true|y|ye|yes|on|1|f|fa|fal|fals|false|n|no|of|off|0)$'
                                            THEN t.send_to_dealer::boolean END AS parsed_send_to_dealer
                                  FROM (SELECT s.staging_id, s.staged_at, s.input_md5,
                                               nullif(btrim(s.received_at, ws), '') AS received_at,
                                               nullif(btrim(s.source, ws), '') AS source,
                                               nullif(btrim(s.brand_code, ws), '') AS brand_code,
                                               nullif(btrim(s.product_code, ws), '') AS product_code,
                                               nullif(btrim(s.first_name, ws), '') AS first_name,
                                               nullif(btrim(s.last_name, ws), '') AS last_name,
                                               nullif(btrim(s.email, ws), '') AS email,
                                               nullif(btrim(s.phone, ws), '') AS phone,
                                               nullif(btrim(s.address, ws), '') AS address,
                                               nullif(btrim(s.city, ws), '') AS city,
                                               nullif(btrim(s.state_code, ws), '') AS state_code,
                                               nullif(btrim(s.country, ws), '') AS country,
                                               nullif(btrim(s.postal_code, ws), '') AS postal_code,
                                               nullif(btrim(s.dealer_number, ws), '') AS dealer_number,
                                               nullif(btrim(s.dealer_group, ws), '') AS dealer_group,
                                               nullif(btrim(s.send_to_dealer, ws), '') AS send_to_dealer,
                                               nullif(btrim(s.comment, ws), '') AS comment
                                          FROM aimroute.lead_staging s
                                         WHERE s.batch_id = v_batch AND s.status IS NULL AND s.staging_id > v_last
                                         ORDER BY s.staging_id
                                         LIMIT chunk_size) AS t
                                  OFFSET 0) AS t
                        OFFSET 0) AS c
                  LEFT JOIN LATERAL (SELECT e.staging_id, e.batch_id, e.lead_id
                                       FROM aimroute.lead_staging e
                                      WHERE c.problems IS NULL AND v_window > '0'
                                        AND e.input_md5 COLLATE "C" = c.input_md5
                                        AND e.staged_at >= c.staged_at - v_window
                                        AND e.staged_at <= c.staged_at + v_window
                                        AND e.staging_id + 0 < c.staging_id
                                        AND e.status IS DISTINCT FROM 'rejected'
                                      ORDER BY e.staged_at, e.staging_id
                                      LIMIT 1) AS d ON true
                 ORDER BY c.staging_id
                OFFSET 0) AS v;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        EXIT WHEN v_rows = 0;   -- someone changed status by hand meanwhile
        SELECT min(c.staging_id), max(c.staging_id) INTO v_lo, v_hi
          FROM pg_temp.aimroute_staging_chunk c;

        -- 2. The leads: the whole chunk in one INSERT ... SELECT, which
        --    routes each row.  Should it fail because of a row, it is
        --    tried again in pieces of piece_size leads, and the leads of a
        --    piece that fails one at a time, each in its own
        --    subtransaction; a lead that cannot be inserted rejects its row.
        v_failed := false;
        FOREACH v_step IN ARRAY ARRAY[0, piece_size, 1] LOOP
            FOR r IN SELECT coalesce(c.lead_id / nullif(v_step, 0), 0) AS piece
                       FROM pg_temp.aimroute_staging_chunk c
                      WHERE c.lead_id IS NOT NULL AND NOT c.inserted
                      GROUP BY 1 ORDER BY 1
            LOOP
                BEGIN
                    INSERT INTO aimroute.leads (lead_id, received_at, source, brand_code, product_code,
                                                first_name, last_name, email, phone, address, city,
                                                state_code, country, postal_code, dealer_number,
                                                dealer_group, send_to_dealer, comment)
                    OVERRIDING SYSTEM VALUE
                    SELECT c.lead_id, c.received_at, c.source, c.brand_code, c.product_code,
                           c.first_name, c.last_name, c.email, c.phone, c.address, c.city,
                           c.state_code, c.country, c.postal_code, c.dealer_number,
                           c.dealer_group, c.send_to_dealer, c.comment
                      FROM pg_temp.aimroute_staging_chunk c
                     WHERE c.lead_id IS NOT NULL AND NOT c.inserted
                       AND (v_step = 0 OR c.lead_id / nullif(v_step, 0) = r.piece)
                     ORDER BY c.staging_id;
                    IF v_failed THEN
                        UPDATE pg_temp.aimroute_staging_chunk c SET inserted = true
                         WHERE c.lead_id IS NOT NULL AND c.lead_id / v_step = r.piece;
                    END IF;
                EXCEPTION WHEN OTHERS THEN
                    IF NOT aimroute.staging_error_is_row_level(SQLSTATE) THEN
                        RAISE;
                    END IF;
                    IF v_step = 0 THEN
                        v_failed := true;
                        RAISE WARNING 'batch %: inserting a chunk of % leads failed: %', v_batch,
                            (SELECT count(*) FROM pg_temp.aimroute_staging_chunk c WHERE c.lead_id IS NOT NULL),
                            SQLERRM
                            USING DETAIL = format('The leads of the chunk (staging_id %s to %s) are inserted again %s at a time, and those of a piece that fails one at a time; a lead that fails rejects its row, with the error as reason.',
                                                  v_lo, v_hi, piece_size);
                    ELSIF v_step = 1 THEN
                        UPDATE pg_temp.aimroute_staging_chunk c
                           SET lead_id = NULL,
                               problems = format('could not become a lead: %s (SQLSTATE %s)', SQLERRM, SQLSTATE)
                         WHERE c.lead_id = r.piece;
                    END IF;
                END;
            END LOOP;
            EXIT WHEN NOT v_failed;
        END LOOP;

        -- 3. Every row's outcome, in one UPDATE.  A duplicate of a row of
        --    this chunk gets that row's lead here; one of a row still
        --    waiting, or rejected in step 2, is settled in step 4.
        WITH outcome AS (
            UPDATE aimroute.lead_staging s
               SET status = CASE WHEN c.problems IS NOT NULL THEN 'rejected'
                                 WHEN c.duplicate_of IS NOT NULL THEN 'duplicate'
                                 ELSE 'processed' END,
                   lead_id = CASE WHEN c.problems IS NULL
                                  THEN coalesce(c.lead_id, c.duplicate_lead_id, o.lead_id, o.duplicate_lead_id) END,
                   duplicate_of = c.duplicate_of,
                   reason = coalesce(c.problems, c.duplicate_reason),
                   processed_at = v_now
              FROM pg_temp.aimroute_staging_chunk c
              LEFT JOIN pg_temp.aimroute_staging_chunk o ON o.staging_id = c.duplicate_of
             WHERE s.staging_id = c.staging_id AND s.staging_id >= v_lo AND s.staging_id <= v_hi
            RETURNING s.status)
        SELECT v_leads + count(*) FILTER (WHERE o.status = 'processed'),
               v_rejected + count(*) FILTER (WHERE o.status = 'rejected'),
               v_duplicates + count(*) FILTER (WHERE o.status = 'duplicate')
          INTO v_leads, v_rejected, v_duplicates
          FROM outcome o;
        v_done := v_done + v_rows;

        -- 4. Duplicates waiting for a lead, in any batch, of a row of
        --    this chunk: they get the lead of the row they duplicate, or
        --    its rejection.  Then those waiting for one of them, and so on:
        --    chains take one round per link.
        v_settled := NULL;
        LOOP
            WITH settled AS (
                UPDATE aimroute.lead_staging d
                   SET lead_id = o.lead_id,
                       status = CASE WHEN o.lead_id IS NULL THEN 'rejected' ELSE d.status END,
                       reason = CASE WHEN o.lead_id IS NULL
                                     THEN format('identical to staging row %s, which was rejected: %s', o.staging_id, o.reason)
                                     ELSE d.reason END
                  FROM aimroute.lead_staging o
                 WHERE d.duplicate_of >= coalesce(v_settled[1], v_lo)
                   AND d.duplicate_of <= coalesce(v_settled[cardinality(v_settled)], v_hi)
                   AND (v_settled IS NULL OR d.duplicate_of = ANY (v_settled))
                   AND d.status = 'duplicate' AND d.lead_id IS NULL
                   AND o.staging_id = d.duplicate_of AND (o.lead_id IS NOT NULL OR o.status = 'rejected')
                RETURNING d.staging_id, d.status)
            SELECT array_agg(x.staging_id ORDER BY x.staging_id), count(*) FILTER (WHERE x.status = 'rejected')
              INTO v_settled, v_rows
              FROM settled x;
            EXIT WHEN v_settled IS NULL;
            IF v_rows > 0 THEN
                -- Rejected with the row they duplicate (rejected in step 2):
                -- the counts below are taken again.
                v_failed := true;
            END IF;
        END LOOP;

        -- Progress.
        IF v_failed THEN
            SELECT count(*) FILTER (WHERE s.status = 'processed'),
                   count(*) FILTER (WHERE s.status = 'rejected'),
                   count(*) FILTER (WHERE s.status = 'duplicate')
              INTO v_leads, v_rejected, v_duplicates
              FROM aimroute.lead_staging s
             WHERE s.batch_id = v_batch AND s.staging_id <= v_hi AND s.processed_at >= v_started;
        END IF;
        RAISE NOTICE 'batch %: % of % rows, % leads, % rejected, % duplicates',
            v_batch, v_done, v_total, v_leads, v_rejected, v_duplicates;

        v_last := v_hi;
        TRUNCATE pg_temp.aimroute_staging_chunk;
    END LOOP;

    IF v_total > 0 THEN
        DROP TABLE pg_temp.aimroute_staging_chunk;
    END IF;

    -- The counts of the chunks: what step 3 marked, taken again after a
    -- chunk where step 4 rejected some of those rows.  (Step 4 of a later
    -- chunk cannot change them: a row only duplicates earlier rows.)
    RETURN QUERY VALUES ('processed', v_leads), ('rejected', v_rejected), ('duplicate', v_duplicates);
END
$$;
COMMENT ON FUNCTION aimroute.process_staging(text) IS
    'Bulk import: validates every unprocessed row of a batch of aimroute.lead_staging, inserts the valid ones into aimroute.leads (routing them) and marks each row processed, rejected or duplicate; returns how many rows of this call ended in each status.';

-- multi: the delivery worker sends many messages at once (issue 16), at
-- most aimroute.delivery_endpoint_concurrency to one endpoint; its claim
-- skips the messages of the endpoints whose slots are all taken
-- (aimroute.delivery_endpoint) and the messages it still sends, so two new
-- arguments of delivery_claim.
DROP FUNCTION aimroute.delivery_claim(integer, interval);
CREATE FUNCTION aimroute.delivery_endpoint(m aimroute.outbox, s aimroute.settings) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    RETURN coalesce(lower(substring(CASE WHEN m.method = 'mobile' THEN s.push_gateway_url
                                         WHEN m.method = 'crm' AND m.role <> 'adf_email' THEN m.recipient
                                         ELSE s.smtp_url END
                                    FROM '^[^:/?#]+://[^/?#]*')), '');
COMMENT ON FUNCTION aimroute.delivery_endpoint(aimroute.outbox, aimroute.settings) IS
    'Where the delivery worker sends a message, as it counts its transfers per endpoint (aimroute.delivery_endpoint_concurrency): the URL''s scheme and authority, in lower case. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_endpoint(aimroute.outbox, aimroute.settings) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_endpoint(aimroute.outbox, aimroute.settings) TO aimroute_admin;

CREATE FUNCTION aimroute.delivery_claim(max_messages integer, lease interval,
                                        full_endpoints text[] DEFAULT '{}', held bigint[] DEFAULT '{}')
RETURNS SETOF aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s aimroute.settings;
    m aimroute.outbox;
    f aimroute.set_aside_items;
    j aimroute.delivery_job;
    jobs aimroute.delivery_job[] := '{}';
    claimed bigint[] := '{}';
    whole boolean := true;
    e_code text;
    e_message text;
    e_detail text;
    e_hint text;
    e_context text;
BEGIN
    SELECT * INTO s FROM aimroute.settings;
    -- delivery_record sets the message aside again when it fails again.
    FOR f IN SELECT * FROM aimroute.set_aside_items x
              WHERE x.kind = 'message' AND x.step = 'record' AND x.retry_at <= clock_timestamp()
              ORDER BY x.retry_at
              FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM aimroute.delivery_record(f.item_id, (f.send_result ->> 'attempt')::integer,
                                         (f.send_result ->> 'curl_code')::integer,
                                         (f.send_result ->> 'response_code')::integer,
                                         f.send_result ->> 'response', f.send_result ->> 'smtp_command');
    END LOOP;
    DELETE FROM aimroute.set_aside_items x
     WHERE x.kind = 'message'
       AND NOT EXISTS (SELECT FROM aimroute.outbox o
                        WHERE o.message_id = x.item_id AND o.status IN ('queued', 'sending'));

    LOOP
        BEGIN
            jobs := '{}';
            claimed := '{}';
            FOR m IN SELECT * FROM aimroute.outbox o
                      WHERE o.status IN ('queued', 'sending') AND o.due_at <= clock_timestamp()
                        AND NOT EXISTS (SELECT FROM aimroute.set_aside_items x
                                         WHERE x.kind = 'message' AND x.item_id = o.message_id
                                           AND (x.retry_at > clock_timestamp() OR x.step = 'record'))
                        AND (coalesce(cardinality(full_endpoints), 0) = 0
                             OR aimroute.delivery_endpoint(o, s) <> ALL (full_endpoints))
                        AND (coalesce(cardinality(held), 0) = 0 OR o.message_id <> ALL (held))
                      ORDER BY o.due_at, o.message_id
                      LIMIT max_messages
                      FOR UPDATE SKIP LOCKED
            LOOP
                IF whole THEN
                    j := aimroute.delivery_claim_one(m, s, lease);
                ELSE
                    BEGIN
                        j := aimroute.delivery_claim_one(m, s, lease);
                    EXCEPTION WHEN OTHERS THEN
                        GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
                            e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT,
                            e_context = PG_EXCEPTION_CONTEXT;
                        PERFORM aimroute.set_aside('message', m.message_id, m.lead_id, 'claim', e_code, e_message,
                                                   e_detail, e_hint, e_context);
                        -- Shown in delivery_attempts, when the log takes it.
                        BEGIN
                            INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
                            VALUES (m.message_id, m.attempts + 1, 'Set aside',
                                    left('not sent: preparing it failed: ' || e_message, 2000));
                        EXCEPTION WHEN OTHERS THEN
                            NULL;
                        END;
                        CONTINUE;
                    END;
                END IF;
                claimed := claimed || m.message_id;
                IF j.message_id IS NOT NULL THEN
                    jobs := jobs || j;
                END IF;
            END LOOP;
            EXIT;
        EXCEPTION WHEN OTHERS THEN
            -- Not a message's own error (a bad max_messages, say): the caller's.
            IF NOT whole THEN
                RAISE;
            END IF;
            whole := false;
        END;
    END LOOP;
    IF cardinality(claimed) > 0 THEN
        DELETE FROM aimroute.set_aside_items x WHERE x.kind = 'message' AND x.item_id = ANY (claimed);
    END IF;
    RETURN QUERY SELECT * FROM unnest(jobs);
END
$$;
COMMENT ON FUNCTION aimroute.delivery_claim(integer, interval, text[], bigint[]) IS
    'The delivery worker''s claim: up to max_messages due messages, rendered, leased for the given interval, none to the endpoints listed (aimroute.delivery_endpoint) and none of the messages held (the worker''s own, still being sent); a message whose claim raises is set aside in aimroute.set_aside_items, with a WARNING, and tried again later. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_claim(integer, interval, text[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_claim(integer, interval, text[], bigint[]) TO aimroute_admin;

-- A lead with a name of 100,000 characters held the delivery worker for
-- minutes: mime_header_text cut its words with substr() from the start,
-- in quadratic time.  Now in one pass, and the subject at most 200
-- characters (found by t/005_fuzz.pl once the worker also queued notices).
CREATE OR REPLACE FUNCTION aimroute.mime_header_text(t text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    -- The words are cut in one pass (regexp_matches), not by substr() from
    -- the start each time, which took minutes for a name of 100,000
    -- characters.
    SELECT CASE WHEN t ~ '^[ -~]*$' THEN t
                ELSE (SELECT string_agg('=?UTF-8?B?' || encode(convert_to(w.chars[1], 'UTF8'), 'base64') || '?=',
                                        E'\r\n ' ORDER BY w.n)
                        FROM regexp_matches(t, '.{1,12}', 'gs') WITH ORDINALITY AS w (chars, n)) END
$$;
COMMENT ON FUNCTION aimroute.mime_header_text(text) IS
    'Header text as RFC 2047 encoded words when it is not plain ASCII (12 characters a word, so none is cut inside a character), in time linear in its length.';

CREATE OR REPLACE FUNCTION aimroute.render_email(mail_from text, rcpt text, subject text, body text,
                                      message_key text, sent_at timestamptz,
                                      content_type text DEFAULT 'text/plain')
RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT concat_ws(E'\r\n',
        'Date: ' || to_char(sent_at AT TIME ZONE 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS') || ' +0000',
        'From: ' || mail_from,
        'To: ' || rcpt,
        -- A subject sums up; the body has everything.  200 characters at
        -- most, so that a lead with a name of any length does not make a
        -- header mail servers refuse.
        'Subject: ' || aimroute.mime_header_text(left(regexp_replace(subject, '[\r\n\t]+', ' ', 'g'), 200)),
        'Message-ID: ' || message_key,
        'MIME-Version: 1.0',
        'Content-Type: ' || content_type || '; charset=UTF-8',
        'Content-Transfer-Encoding: base64',
        'X-Mailer: aimroute',
        '',
        replace(encode(convert_to(body, 'UTF8'), 'base64'), E'\n', E'\r\n'),
        '')
$$;
COMMENT ON FUNCTION aimroute.render_email(text, text, text, text, text, timestamptz, text) IS
    'An email as sent over SMTP: headers (the subject on one line, 200 characters at most), a blank line and the body in base64, CRLF line ends.';

-- route: the routing model holds every postal code (issue 16, rows 1
-- and 2): routing_cache_info().postal_codes counts the model's postal
-- codes, and session_bytes holds copies of the codes looked up lately.
COMMENT ON FUNCTION aimroute.routing_cache_info() IS
    'The model of the routing configuration this session routes with, brought up to date first: its version, when it was built and in how many milliseconds, what it holds (dealers, territories, postal_codes: every row of aimroute.postal_codes), its size (memory_bytes), where it lives (location: shared, one copy per database and version that every session maps, when aimroute is in shared_preload_libraries; local, this session''s own copy) and what this session holds besides (session_bytes: settings, PostGIS call info, copies of the postal codes looked up lately). enabled is always true: routing always uses the model (aimroute.routing_cache, which could turn it off, was retired in 0.2.0).';

-- Ownership, last (docs/upgrading.md): what this script created goes to the
-- extension's owner, as in a fresh install.  Every later upgrade script
-- ends with the SELECT.
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
