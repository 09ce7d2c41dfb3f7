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
-- (aimroute.settings_validate(): its 0.2.0 text is set once, in the section "settings" at the end.)
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
-- (aimroute.settings_validate() checks the time zone with timezone_is_valid in its one 0.2.0 text, in the section "settings" at the end.)

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
-- are; the fillfactor applies to rows staged from now on.)  The 0.2.0
-- text of process_staging() is in the "stage" section below.
ALTER TABLE aimroute.lead_staging SET (fillfactor = 45);
DROP INDEX aimroute.lead_staging_waiting_duplicates_idx;
CREATE INDEX lead_staging_duplicates_idx ON aimroute.lead_staging (duplicate_of)
    WHERE duplicate_of IS NOT NULL;
DROP INDEX aimroute.lead_staging_dedupe_idx;
CREATE INDEX lead_staging_dedupe_idx ON aimroute.lead_staging (input_md5 COLLATE "C", staged_at, staging_id);

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

-- bounce: bounces as they really arrive (issue 17, first part).  The
-- suppression list is by address: every bounce path goes through
-- aimroute.suppress_address, which suppresses every contact with the
-- address, and a contact set back to Active lifts it for the address
-- (trigger dealer_contacts_lift_address).  A bounce reported after sending
-- is recorded by aimroute.record_message_bounce.  VERP: with the new
-- setting bounce_address, every email's envelope sender carries its
-- message's key (aimroute.envelope_sender, called by delivery_render).
-- aimroute.record_dsn reads one raw DSN (RFC 3464) and records its
-- bounces against the message it names (VERP, or the returned
-- Message-ID).
-- aimroute.record_delivery_event takes the webhook events of sendgrid,
-- mailgun, ses (SNS) and postmark (aimroute.delivery_event_reports).
COMMENT ON COLUMN aimroute.dealer_contacts.delivery_status IS
    'Active, or Hard Bounce / Soft Bounce: then the contact is on the suppression list and no email is sent to it until aimroute.set_delivery_status_active(contact_id). The list is by address: a bounce suppresses every contact with the address, and resetting one lifts it for all of them.';

CREATE OR REPLACE FUNCTION aimroute.dealer_contacts_lift_address() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE aimroute.dealer_contacts c SET delivery_status = 'Active'
     WHERE lower(c.email) = lower(NEW.email) AND c.delivery_status <> 'Active';
    RETURN NULL;
END
$$;
CREATE TRIGGER dealer_contacts_lift_address AFTER UPDATE OF delivery_status ON aimroute.dealer_contacts
    FOR EACH ROW WHEN (NEW.delivery_status = 'Active' AND OLD.delivery_status <> 'Active' AND NEW.email IS NOT NULL)
    EXECUTE FUNCTION aimroute.dealer_contacts_lift_address();

CREATE OR REPLACE FUNCTION aimroute.suppress_address(address text, status text)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed integer;
BEGIN
    IF status IS NULL OR status NOT IN ('Hard Bounce', 'Soft Bounce') THEN
        RAISE EXCEPTION 'invalid suppression status %', coalesce(quote_literal(status), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The status is ''Hard Bounce'' or ''Soft Bounce''.';
    END IF;
    UPDATE aimroute.dealer_contacts c SET delivery_status = suppress_address.status
     WHERE lower(c.email) = lower(btrim(suppress_address.address))
       AND c.delivery_status <> 'Hard Bounce' AND c.delivery_status <> suppress_address.status;
    GET DIAGNOSTICS changed = ROW_COUNT;
    RETURN changed;
END
$$;
COMMENT ON FUNCTION aimroute.suppress_address(text, text) IS
    'The suppression list is by address: every dealer contact with this address (any dealer, any letter case) takes the status ''Hard Bounce'' or ''Soft Bounce'' (a soft bounce does not replace a hard one); returns the contacts changed. Internal: every bounce path calls it.';
REVOKE EXECUTE ON FUNCTION aimroute.suppress_address(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.suppress_address(text, text) TO aimroute_admin;

CREATE OR REPLACE FUNCTION aimroute.record_message_bounce(message_id bigint, status text, detail text)
RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m aimroute.outbox;
BEGIN
    SELECT * INTO m FROM aimroute.outbox o WHERE o.message_id = record_message_bounce.message_id FOR UPDATE;
    IF NOT FOUND OR m.status = 'cancelled' OR NOT (m.method = 'email' OR m.role = 'adf_email') THEN
        RETURN false;
    END IF;
    PERFORM aimroute.suppress_address(m.recipient, status);
    IF m.status = 'failed' AND m.outcome IN ('Hard Bounce', status) THEN
        RETURN false;
    END IF;
    detail := left(coalesce(detail, 'no detail given'), 2000);
    INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
    VALUES (m.message_id, m.attempts, status, detail);
    UPDATE aimroute.outbox o
       SET status = 'failed', outcome = record_message_bounce.status, last_response = detail,
           last_attempt_at = clock_timestamp(), finished_at = coalesce(o.finished_at, clock_timestamp())
     WHERE o.message_id = m.message_id;
    IF m.purpose = 'lead' THEN
        PERFORM aimroute.delivery_settle(m.notification_id);
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION aimroute.record_message_bounce(bigint, text, text) IS
    'Records a bounce reported after the message was sent: the message becomes failed with outcome ''Hard Bounce'' or ''Soft Bounce'' (a Delivered one too), with an attempt row; its notice is settled and its address suppressed (aimroute.suppress_address). Returns false for a message cancelled, not an email, or with that bounce recorded already. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.record_message_bounce(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.record_message_bounce(bigint, text, text) TO aimroute_admin;

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
        IF v_outcome IN ('Hard Bounce', 'Soft Bounce') THEN
            PERFORM aimroute.suppress_address(m.recipient, v_outcome);
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
REVOKE EXECUTE ON FUNCTION aimroute.delivery_record(bigint, integer, integer, integer, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_record(bigint, integer, integer, integer, text, text) TO aimroute_admin;

CREATE OR REPLACE FUNCTION aimroute.record_bounce(email text, kind text, detail text)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status text;
    changed integer;
    latest bigint;
BEGIN
    v_status := CASE lower(btrim(kind))
                  WHEN 'hard' THEN 'Hard Bounce' WHEN 'hard bounce' THEN 'Hard Bounce'
                  WHEN 'soft' THEN 'Soft Bounce' WHEN 'soft bounce' THEN 'Soft Bounce' END;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'invalid bounce kind %', coalesce(quote_literal(kind), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'kind is ''hard'' (the address does not exist) or ''soft'' (a full inbox, for example).';
    END IF;
    IF email IS NULL OR btrim(email) = '' THEN
        RAISE EXCEPTION 'record_bounce needs the email address that bounced'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the recipient address the mail provider reported, such as sales@dealer.example.com.';
    END IF;
    changed := aimroute.suppress_address(record_bounce.email, v_status);

    SELECT o.message_id INTO latest FROM aimroute.outbox o
     WHERE lower(o.recipient) = lower(btrim(record_bounce.email)) AND o.status = 'delivered'
       AND o.finished_at > clock_timestamp() - interval '30 days'
     ORDER BY o.finished_at DESC LIMIT 1;
    IF FOUND THEN
        PERFORM aimroute.record_message_bounce(latest, v_status,
                                               'bounced after delivery: ' || coalesce(detail, 'no detail given'));
    END IF;
    IF changed = 0 AND latest IS NULL THEN
        RAISE NOTICE 'no contact and no recent message has the address %', btrim(record_bounce.email);
    END IF;
    RETURN changed;
END
$$;
COMMENT ON FUNCTION aimroute.record_bounce(text, text, text) IS
    'Takes a bounce reported by a mail provider (kind ''hard'' or ''soft''): every contact with the address is suppressed, and the latest message delivered to it is recorded as bounced. Returns the contacts changed.';
REVOKE EXECUTE ON FUNCTION aimroute.record_bounce(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.record_bounce(text, text, text) TO aimroute_admin;

COMMENT ON FUNCTION aimroute.set_delivery_status_active(bigint) IS
    'Takes a contact off the suppression list: its delivery_status becomes Active, and so does that of every contact with the same address (the suppression list is by address); later messages are sent to them again.';

ALTER TABLE aimroute.settings ADD COLUMN bounce_address text
    CONSTRAINT settings_bounce_address_check CHECK (bounce_address ~ '^[^@[:space:]<>+]{1,32}@[^@[:space:]<>]+$');
COMMENT ON COLUMN aimroute.settings.bounce_address IS 'The mailbox DSNs go to (VERP): every email''s envelope sender is this address with the message''s key after a +, such as bounces+123.20260101120000000000@oem.example (aimroute.envelope_sender); NULL (default): the envelope sender is smtp_from.';
GRANT SELECT (bounce_address) ON aimroute.settings TO aimroute_region, aimroute_dealer;

-- (aimroute.settings_validate() checks this setting from its one 0.2.0 text, in the section "settings" at the end.)

CREATE OR REPLACE FUNCTION aimroute.verp_key(m aimroute.outbox) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN m.message_id || '.' || to_char(m.queued_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS');
COMMENT ON FUNCTION aimroute.verp_key(aimroute.outbox) IS
    'The key of a message in its VERP envelope sender: <message_id>.<queued_at in UTC as YYYYMMDDHHMISSUUUUUU>, as in its Message-ID.';

CREATE FUNCTION aimroute.envelope_sender(m aimroute.outbox, s aimroute.settings) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN CASE WHEN s.bounce_address IS NULL THEN s.smtp_from
                ELSE split_part(s.bounce_address, '@', 1) || '+' || aimroute.verp_key(m) || '@'
                     || split_part(s.bounce_address, '@', 2) END;
COMMENT ON FUNCTION aimroute.envelope_sender(aimroute.outbox, aimroute.settings) IS
    'The envelope sender (MAIL FROM) of an email: settings.bounce_address with +<key> (aimroute.verp_key) before its @, such as bounces+123.20260101120000000000@oem.example; settings.smtp_from when bounce_address is NULL.';

CREATE OR REPLACE FUNCTION aimroute.delivery_render(m aimroute.outbox, s aimroute.settings)
RETURNS aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j aimroute.delivery_job;
    l aimroute.leads;
    token text;
    dealer_name text;
BEGIN
    j := ROW(m.message_id, m.attempts, 'smtp', s.smtp_url, aimroute.envelope_sender(m, s), m.recipient, s.smtp_username,
             s.smtp_password, NULL, m.message_key, NULL)::aimroute.delivery_job;
    IF m.purpose <> 'lead' THEN
        j.payload := aimroute.render_email(s.smtp_from, m.recipient, m.subject, m.body, m.message_key, clock_timestamp());
        RETURN j;
    END IF;

    SELECT * INTO l FROM aimroute.leads x WHERE x.lead_id = m.lead_id;
    SELECT n.view_token INTO token FROM aimroute.lead_notifications n WHERE n.notification_id = m.notification_id;
    SELECT d.name INTO dealer_name FROM aimroute.dealers d WHERE d.dealer_number = m.dealer_number;
    IF m.method = 'email' THEN
        j.payload := aimroute.render_email(s.smtp_from, m.recipient, aimroute.lead_email_subject(l),
                         aimroute.lead_email_text(l, dealer_name,
                             CASE WHEN m.role = 'To' THEN s.view_link_url || token END),
                         m.message_key, clock_timestamp());
    ELSIF m.method = 'mobile' THEN
        j.transport := 'http'; j.url := s.push_gateway_url; j.recipient := NULL;
        j.username := NULL; j.password := NULL;     -- the SMTP login is for the SMTP server only
        j.content_type := 'application/json';
        j.payload := json_build_object(
            'to', m.recipient,
            'title', aimroute.lead_email_subject(l),
            'body', concat_ws(', ', nullif(concat_ws(' ', l.first_name, l.last_name), ''),
                              nullif(concat_ws(' ', l.city, l.state_code), ''), l.phone),
            'lead_id', l.lead_id,
            'dealer_number', l.dealer_number,
            'url', CASE WHEN EXISTS (SELECT FROM aimroute.dealer_contacts c
                                      WHERE c.contact_id = m.contact_id
                                        AND 'Leads: Emails To' = ANY (c.contact_types))
                        THEN s.view_link_url || token END,
            'message_key', m.message_key)::text;
    ELSIF m.role = 'adf_email' THEN
        j.payload := aimroute.render_email(s.smtp_from, m.recipient,
                         format('ADF lead %s for dealer %s', l.lead_id, l.dealer_number),
                         aimroute.lead_adf(l.lead_id), m.message_key, clock_timestamp());
    ELSE
        j.transport := 'http'; j.url := m.recipient; j.recipient := NULL;
        j.username := NULL; j.password := NULL;
        j.content_type := 'application/xml';
        j.payload := aimroute.lead_adf(l.lead_id);
    END IF;
    RETURN j;
END
$$;
REVOKE EXECUTE ON FUNCTION aimroute.delivery_render(aimroute.outbox, aimroute.settings) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_render(aimroute.outbox, aimroute.settings) TO aimroute_admin;

CREATE OR REPLACE FUNCTION aimroute.mime_fields(block text)
RETURNS TABLE (name text, value text)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT lower(f.m[1]), btrim(f.m[2], E' \t')
      FROM regexp_matches(regexp_replace(block, E'\n[ \t]+', ' ', 'g'),
                          E'^([!-9;-~]+)[ \t]*:[ \t]*(.*)$', 'gn') AS f (m)
$$;
COMMENT ON FUNCTION aimroute.mime_fields(text) IS
    'The header fields of a block of text (LF line ends): folded lines unfolded, names in lower case. Internal: record_dsn reads DSNs with it.';

CREATE OR REPLACE FUNCTION aimroute.record_dsn(message text)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    raw text;
    head text;
    body text;
    ctype text;
    boundary text;
    part text;
    p_head text;
    p_body text;
    p_type text;
    status_text text;
    returned text;
    m aimroute.outbox;
    k record;
    found_by text;
    msgid text;
    blk text;
    reporter text;
    v_action text;
    v_status text;
    v_diag text;
    v_final text;
    v_original text;
    v_kind text;
    detail text;
    recorded integer := 0;
    pos integer;
BEGIN
    IF message IS NULL OR btrim(message) = '' THEN
        RAISE EXCEPTION 'record_dsn needs the DSN'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass one whole raw DSN (RFC 3464), headers included, as the mail server mailed it to the bounce address.';
    END IF;
    raw := replace(replace(message, E'\r\n', E'\n'), E'\r', E'\n');
    -- An mbox "From " line, as a pipe from a mail server may start with.
    raw := regexp_replace(raw, E'^From [^\n]*\n', '');
    pos := strpos(raw, E'\n\n');
    IF pos = 0 THEN
        head := raw;
        body := '';
    ELSE
        head := left(raw, pos - 1);
        body := substr(raw, pos + 2);
    END IF;
    SELECT f.value INTO ctype FROM aimroute.mime_fields(head) f WHERE f.name = 'content-type' LIMIT 1;
    IF ctype IS NULL OR lower(ctype) !~ '^multipart/report\M' THEN
        RAISE EXCEPTION 'not a delivery status notification: its Content-Type is %, not multipart/report',
                        coalesce(split_part(ctype, ';', 1), 'missing')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'record_dsn takes one whole raw DSN (RFC 3464: multipart/report with a message/delivery-status part), headers included, as the mail server mailed it to the bounce address.';
    END IF;
    boundary := coalesce(substring(ctype FROM '(?i)boundary[ \t]*=[ \t]*"([^"]+)"'),
                         substring(ctype FROM '(?i)boundary[ \t]*=[ \t]*([^"; \t]+)'));
    IF boundary IS NULL THEN
        RAISE EXCEPTION 'not a delivery status notification: its multipart/report Content-Type has no boundary'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the DSN as the mail server sent it, with its headers unchanged.';
    END IF;
    FOREACH part IN ARRAY regexp_split_to_array(
        body, '(^|\n)--' || regexp_replace(boundary, '([^A-Za-z0-9])', '\\\1', 'g') || E'(--)?[ \t]*(\n|$)')
    LOOP
        IF left(part, 1) = E'\n' THEN
            p_head := '';
            p_body := substr(part, 2);
        ELSE
            pos := strpos(part, E'\n\n');
            CONTINUE WHEN pos = 0;
            p_head := left(part, pos - 1);
            p_body := substr(part, pos + 2);
        END IF;
        SELECT lower(btrim(split_part(f.value, ';', 1))) INTO p_type
          FROM aimroute.mime_fields(p_head) f WHERE f.name = 'content-type' LIMIT 1;
        IF EXISTS (SELECT FROM aimroute.mime_fields(p_head) f
                    WHERE f.name = 'content-transfer-encoding' AND lower(f.value) = 'base64') THEN
            BEGIN
                p_body := convert_from(decode(regexp_replace(p_body, '[^A-Za-z0-9+/=]', '', 'g'), 'base64'), 'UTF8');
                p_body := replace(p_body, E'\r\n', E'\n');
            EXCEPTION WHEN OTHERS THEN
                CONTINUE;
            END;
        END IF;
        IF p_type IN ('message/delivery-status', 'message/global-delivery-status') AND status_text IS NULL THEN
            status_text := p_body;
        ELSIF p_type IN ('text/rfc822-headers', 'message/rfc822', 'message/global', 'message/global-headers')
              AND returned IS NULL THEN
            -- The returned message's headers, up to its first blank line.
            returned := split_part(p_body, E'\n\n', 1);
        END IF;
    END LOOP;
    IF status_text IS NULL THEN
        RAISE EXCEPTION 'not a delivery status notification: it has no message/delivery-status part'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'record_dsn takes RFC 3464 DSNs (multipart/report; report-type=delivery-status); a bounce in plain text can be recorded with aimroute.record_bounce(email, kind, detail).';
    END IF;

    -- The message: by its VERP address (in the DSN's headers, in the
    -- returned headers' Return-Path, or anywhere in the report), both
    -- halves of the key checked; else by the returned Message-ID.
    FOR k IN SELECT x.v[1]::bigint AS id, x.v[1] || '.' || x.v[2] AS key
               FROM regexp_matches(concat_ws(E'\n', head, returned, status_text),
                                   '\+([0-9]{1,18})\.([0-9]{20})@', 'g') AS x (v)
    LOOP
        SELECT * INTO m FROM aimroute.outbox o WHERE o.message_id = k.id AND aimroute.verp_key(o) = k.key;
        IF FOUND THEN
            found_by := 'VERP';
            EXIT;
        END IF;
    END LOOP;
    IF found_by IS NULL AND returned IS NOT NULL THEN
        SELECT f.value INTO msgid FROM aimroute.mime_fields(returned) f WHERE f.name = 'message-id' LIMIT 1;
        msgid := '<' || btrim(msgid, ' <>') || '>';
        IF msgid ~ '^<aimroute\.[0-9]{1,18}\.' THEN
            SELECT * INTO m FROM aimroute.outbox o
             WHERE o.message_id = substring(msgid FROM '^<aimroute\.([0-9]+)\.')::bigint
               AND lower(o.message_key) = lower(msgid);
            IF FOUND THEN
                found_by := 'Message-ID';
            END IF;
        END IF;
    END IF;
    IF found_by IS NULL THEN
        RAISE WARNING 'the DSN names no message aimroute sent: nothing recorded'
            USING DETAIL = format('No VERP address of settings.bounce_address with a key of an outbox message, and %s.',
                                  coalesce('the returned Message-ID ' || msgid || ' is no message''s key',
                                           'no returned headers with a Message-ID')),
                  HINT = 'Set settings.bounce_address so that DSNs name their message; a bounce of a known address can be recorded with aimroute.record_bounce(email, kind, detail).';
        RETURN 0;
    END IF;

    SELECT f.value INTO reporter
      FROM aimroute.mime_fields(split_part(btrim(status_text, E'\n'), E'\n\n', 1)) f
     WHERE f.name = 'reporting-mta' LIMIT 1;
    FOREACH blk IN ARRAY regexp_split_to_array(btrim(status_text, E' \t\n'), E'\n([ \t]*\n)+') LOOP
        SELECT max(f.value) FILTER (WHERE f.name = 'final-recipient'),
               max(f.value) FILTER (WHERE f.name = 'original-recipient'),
               lower(max(f.value) FILTER (WHERE f.name = 'action')),
               max(f.value) FILTER (WHERE f.name = 'status'),
               max(f.value) FILTER (WHERE f.name = 'diagnostic-code')
          INTO v_final, v_original, v_action, v_status, v_diag
          FROM aimroute.mime_fields(blk) f;
        CONTINUE WHEN v_final IS NULL;
        -- Only a report on the message's own recipient counts.
        IF lower(m.recipient) NOT IN (lower(btrim(substring(v_final FROM ';(.*)$'), ' <>')),
                                      coalesce(lower(btrim(substring(v_original FROM ';(.*)$'), ' <>')), '')) THEN
            RAISE WARNING 'the DSN reports on %, but message % went to %: not recorded', v_final, m.message_id, m.recipient;
            CONTINUE;
        END IF;
        v_status := substring(v_status FROM '^[ \t]*([245]\.[0-9]{1,3}\.[0-9]{1,3})');
        detail := concat_ws(' ', v_status, v_diag) || format(' (DSN%s, message found by %s)',
                                                             ', ' || reporter, found_by);
        IF v_action = 'delayed' THEN
            INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
            VALUES (m.message_id, m.attempts, 'Delayed', left('delayed, not a bounce: ' || detail, 2000));
            CONTINUE;
        ELSIF v_action IS DISTINCT FROM 'failed' THEN
            RAISE NOTICE 'the DSN says % for message %: nothing to record', coalesce(v_action, 'no Action'), m.message_id;
            CONTINUE;
        END IF;
        v_kind := CASE WHEN v_status IN ('5.2.2', '4.2.2') THEN 'Soft Bounce'
                       WHEN v_status LIKE '5.%' THEN 'Hard Bounce'
                       WHEN v_status LIKE '4.%' THEN 'Soft Bounce'
                       -- No usable Status: the SMTP reply code of the Diagnostic-Code.
                       WHEN v_diag ~* '^smtp[ \t]*;[ \t]*(452|552)' THEN 'Soft Bounce'
                       WHEN v_diag ~* '^smtp[ \t]*;[ \t]*5' THEN 'Hard Bounce'
                       WHEN v_diag ~* '^smtp[ \t]*;[ \t]*4' THEN 'Soft Bounce' END;
        IF v_kind IS NULL THEN
            RAISE WARNING 'the DSN reports a failure of message % with no Status: not recorded', m.message_id;
            CONTINUE;
        END IF;
        IF aimroute.record_message_bounce(m.message_id, v_kind, 'bounced after delivery: ' || detail) THEN
            recorded := recorded + 1;
        ELSE
            RAISE NOTICE 'message % has this bounce recorded already (or was cancelled)', m.message_id;
        END IF;
    END LOOP;
    RETURN recorded;
END
$$;
COMMENT ON FUNCTION aimroute.record_dsn(text) IS
    'Records one raw DSN (RFC 3464) against the message it names (its VERP address, or the returned Message-ID) and that message''s address: Action failed with Status 5.x.x is a Hard Bounce, 5.2.2 and 4.x.x a Soft Bounce; Action delayed an attempt row ''Delayed''. Returns the bounces recorded. Not a DSN: an error; a DSN of no message of ours: 0 with a WARNING.';
REVOKE EXECUTE ON FUNCTION aimroute.record_dsn(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.record_dsn(text) TO aimroute_admin;

CREATE OR REPLACE FUNCTION aimroute.delivery_event_reports(provider text, event jsonb)
RETURNS TABLE (address text, kind text, detail text)
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d jsonb;
    ev text;
    code text;
BEGIN
    IF jsonb_typeof(event) IS DISTINCT FROM 'object' THEN
        RETURN;
    END IF;
    IF provider = 'sendgrid' THEN
        ev := lower(event ->> 'event');
        address := event ->> 'email';
        code := event ->> 'status';
        detail := concat_ws(' ', code, coalesce(event ->> 'reason', event ->> 'response'));
        kind := CASE WHEN ev IN ('bounce', 'blocked') AND (ev = 'blocked' OR lower(event ->> 'type') = 'blocked') THEN 'Soft Bounce'
                     WHEN ev = 'bounce' AND (code LIKE '4.%' OR code = '5.2.2') THEN 'Soft Bounce'
                     WHEN ev IN ('bounce', 'dropped') THEN 'Hard Bounce'
                     WHEN ev = 'spamreport' THEN 'Complaint'
                     WHEN ev = 'delivered' THEN 'Delivered'
                     WHEN ev = 'deferred' THEN 'Delayed' END;
        IF ev IN ('blocked') OR lower(event ->> 'type') = 'blocked' THEN
            detail := 'blocked: ' || detail;
        END IF;
        IF kind IS NOT NULL THEN
            RETURN NEXT;
        END IF;
    ELSIF provider = 'mailgun' THEN
        d := coalesce(event -> 'event-data', event);
        ev := lower(d ->> 'event');
        address := d ->> 'recipient';
        code := d -> 'delivery-status' ->> 'code';
        detail := concat_ws(' ', code, d -> 'delivery-status' ->> 'message',
                            nullif(d -> 'delivery-status' ->> 'description', ''), d ->> 'reason');
        kind := CASE WHEN ev = 'failed' AND lower(d ->> 'severity') = 'temporary' THEN 'Delayed'
                     WHEN ev = 'failed' AND (code IN ('452', '552') OR detail ~ '\m5\.2\.2\M') THEN 'Soft Bounce'
                     WHEN ev = 'failed' THEN 'Hard Bounce'
                     WHEN ev = 'complained' THEN 'Complaint'
                     WHEN ev = 'delivered' THEN 'Delivered' END;
        IF kind IS NOT NULL THEN
            RETURN NEXT;
        END IF;
    ELSIF provider = 'ses' THEN
        ev := coalesce(event ->> 'notificationType', event ->> 'eventType');
        IF ev = 'Bounce' THEN
            RETURN QUERY
                SELECT r ->> 'emailAddress',
                       CASE WHEN event -> 'bounce' ->> 'bounceType' = 'Permanent' AND r ->> 'status' IS DISTINCT FROM '5.2.2'
                            THEN 'Hard Bounce' ELSE 'Soft Bounce' END,
                       concat_ws(' ', r ->> 'status', r ->> 'diagnosticCode',
                                 format('(%s %s)', event -> 'bounce' ->> 'bounceType', event -> 'bounce' ->> 'bounceSubType'))
                  FROM jsonb_array_elements(CASE WHEN jsonb_typeof(event -> 'bounce' -> 'bouncedRecipients') = 'array'
                                                 THEN event -> 'bounce' -> 'bouncedRecipients' ELSE '[]' END) r;
        ELSIF ev = 'Complaint' THEN
            RETURN QUERY
                SELECT r ->> 'emailAddress', 'Complaint',
                       concat_ws(' ', 'complaint', event -> 'complaint' ->> 'complaintFeedbackType')
                  FROM jsonb_array_elements(CASE WHEN jsonb_typeof(event -> 'complaint' -> 'complainedRecipients') = 'array'
                                                 THEN event -> 'complaint' -> 'complainedRecipients' ELSE '[]' END) r;
        ELSIF ev = 'Delivery' THEN
            RETURN QUERY
                SELECT r #>> '{}', 'Delivered', event -> 'delivery' ->> 'smtpResponse'
                  FROM jsonb_array_elements(CASE WHEN jsonb_typeof(event -> 'delivery' -> 'recipients') = 'array'
                                                 THEN event -> 'delivery' -> 'recipients' ELSE '[]' END) r;
        ELSIF ev = 'DeliveryDelay' THEN
            RETURN QUERY
                SELECT r ->> 'emailAddress', 'Delayed',
                       concat_ws(' ', event -> 'deliveryDelay' ->> 'delayType', r ->> 'status', r ->> 'diagnosticCode')
                  FROM jsonb_array_elements(CASE WHEN jsonb_typeof(event -> 'deliveryDelay' -> 'delayedRecipients') = 'array'
                                                 THEN event -> 'deliveryDelay' -> 'delayedRecipients' ELSE '[]' END) r;
        END IF;
    ELSIF provider = 'postmark' THEN
        ev := event ->> 'RecordType';
        address := coalesce(event ->> 'Email', event ->> 'Recipient');
        detail := concat_ws(': ', event ->> 'Type', coalesce(nullif(event ->> 'Details', ''), event ->> 'Description'));
        kind := CASE WHEN ev = 'Bounce' AND event ->> 'Type' IN ('HardBounce', 'BadEmailAddress') THEN 'Hard Bounce'
                     WHEN ev = 'Bounce' AND event ->> 'Type' IN ('SoftBounce', 'Transient', 'DnsError', 'Blocked') THEN 'Soft Bounce'
                     WHEN ev = 'SpamComplaint' OR (ev = 'Bounce' AND event ->> 'Type' = 'SpamComplaint') THEN 'Complaint'
                     WHEN ev = 'Delivery' THEN 'Delivered' END;
        IF kind IS NOT NULL THEN
            RETURN NEXT;
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION aimroute.delivery_event_reports(text, jsonb) IS
    'What one webhook event of sendgrid, mailgun, ses or postmark reports, per recipient: the address, the kind (Hard Bounce, Soft Bounce, Complaint, Delivered, Delayed) and the detail. Internal: record_delivery_event calls it.';

CREATE OR REPLACE FUNCTION aimroute.record_delivery_event(provider text, event jsonb)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p text := lower(btrim(provider));
    e jsonb := event;
    r record;
    k record;
    mid bigint;
    recorded integer := 0;
    changed boolean;
BEGIN
    IF p IS NULL OR p NOT IN ('sendgrid', 'mailgun', 'ses', 'postmark') THEN
        RAISE EXCEPTION 'unknown mail provider %', coalesce(quote_literal(provider), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'record_delivery_event takes the webhook events of ''sendgrid'', ''mailgun'', ''ses'' (an SNS notification) and ''postmark''; for another provider, call aimroute.record_bounce(email, kind, detail).';
    END IF;
    IF e IS NULL THEN
        RAISE EXCEPTION 'record_delivery_event needs the event'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the JSON body the provider POSTed to the webhook.';
    END IF;
    IF jsonb_typeof(e) = 'array' THEN
        SELECT coalesce(sum(aimroute.record_delivery_event(p, x)), 0) INTO recorded FROM jsonb_array_elements(e) x;
        RETURN recorded;
    END IF;
    IF jsonb_typeof(e) <> 'object' THEN
        RAISE EXCEPTION 'a % event is a JSON object, not %', p, jsonb_typeof(e)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the JSON body the provider POSTed to the webhook (SendGrid: the array, or one of its events).';
    END IF;
    IF p = 'ses' AND e ->> 'Type' = 'SubscriptionConfirmation' THEN
        RAISE WARNING 'an SNS subscription confirmation, not an SES event: nothing recorded'
            USING HINT = format('Confirm the subscription by opening its SubscribeURL once: %s', e ->> 'SubscribeURL');
        RETURN 0;
    END IF;
    IF p = 'ses' AND e ->> 'Type' = 'Notification' THEN
        BEGIN
            e := (e ->> 'Message')::jsonb;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'the SNS notification''s Message is not an SES event in JSON'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Point the SNS topic of the SES configuration set (or identity notifications) at the webhook, without raw message delivery or with it: both are read.';
        END;
    END IF;

    FOR r IN SELECT lower(btrim(x.address, ' <>')) AS address, x.kind, x.detail
               FROM aimroute.delivery_event_reports(p, e) x
    LOOP
        IF r.address IS NULL OR r.address = '' THEN
            RAISE WARNING 'a % % event with no recipient address: not recorded', p, r.kind;
            CONTINUE;
        END IF;
        mid := NULL;
        -- The message whose key the event carries (VERP address or
        -- Message-ID, both halves checked), to this very address.
        FOR k IN SELECT x.v[1]::bigint AS id, x.v[1] || '.' || x.v[2] AS key
                   FROM regexp_matches(event::text, '(?:\+|<?aimroute\.)([0-9]{1,18})\.([0-9]{20})@', 'g') AS x (v)
        LOOP
            SELECT o.message_id INTO mid FROM aimroute.outbox o
             WHERE o.message_id = k.id AND aimroute.verp_key(o) = k.key AND lower(o.recipient) = r.address;
            EXIT WHEN mid IS NOT NULL;
        END LOOP;
        IF mid IS NULL THEN
            SELECT o.message_id INTO mid FROM aimroute.outbox o
             WHERE lower(o.recipient) = r.address AND o.status = 'delivered'
               AND (o.method = 'email' OR o.role = 'adf_email')
               AND o.finished_at > clock_timestamp() - interval '30 days'
             ORDER BY o.finished_at DESC LIMIT 1;
        END IF;
        r.detail := left(coalesce(nullif(r.detail, ''), CASE r.kind WHEN 'Complaint' THEN 'complaint' ELSE 'no detail given' END)
                         || format(' (%s)', p), 2000);

        IF r.kind IN ('Hard Bounce', 'Soft Bounce') THEN
            changed := aimroute.suppress_address(r.address, r.kind) > 0;
            IF mid IS NOT NULL THEN
                changed := aimroute.record_message_bounce(mid, r.kind, 'bounced after delivery: ' || r.detail) OR changed;
            END IF;
        ELSIF r.kind = 'Complaint' THEN
            changed := aimroute.suppress_address(r.address, 'Hard Bounce') > 0;
            IF mid IS NOT NULL AND NOT EXISTS (SELECT FROM aimroute.delivery_attempt_log a
                                                WHERE a.message_id = mid AND a.outcome = 'Complaint') THEN
                INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
                SELECT o.message_id, o.attempts, 'Complaint', 'marked as spam by its reader: ' || r.detail
                  FROM aimroute.outbox o WHERE o.message_id = mid;
                changed := true;
            END IF;
        ELSIF mid IS NOT NULL THEN
            -- Delivered or Delayed: an attempt row; the message keeps its status.
            INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
            SELECT o.message_id, o.attempts, r.kind,
                   CASE r.kind WHEN 'Delayed' THEN 'delayed, not a bounce: ' ELSE 'delivered to the mailbox: ' END || r.detail
              FROM aimroute.outbox o WHERE o.message_id = mid;
            changed := true;
        ELSE
            RAISE NOTICE 'a % % event for %, but no message of aimroute to that address: nothing recorded', p, r.kind, r.address;
            changed := false;
        END IF;
        recorded := recorded + changed::integer;
    END LOOP;
    RETURN recorded;
END
$$;
COMMENT ON FUNCTION aimroute.record_delivery_event(text, jsonb) IS
    'Records one webhook event (or an array of them) of ''sendgrid'', ''mailgun'', ''ses'' (an SNS notification) or ''postmark'': bounces and blocks as Hard or Soft Bounce of the message and its address, spam complaints suppress the address, delivered and delayed events are attempt rows. Returns the reports recorded.';
REVOKE EXECUTE ON FUNCTION aimroute.record_delivery_event(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.record_delivery_event(text, jsonb) TO aimroute_admin;

COMMENT ON COLUMN aimroute.delivery_attempts.outcome IS
    'Delivered (accepted by the server; or, reported by a mail provider''s event, delivered to the mailbox); Hard Bounce (550: recipient not found; or reported after delivery by a DSN, a provider''s event or record_bounce); Soft Bounce (452/552: inbox full; a block; or reported later); Delayed (a DSN or a provider said the message is delayed: not a bounce, the message keeps its status); Complaint (its reader marked it as spam: the address is suppressed, the message stays delivered); Will retry (connection, DNS, HTTP or temporary SMTP error); Failed (out of retries, a permanent SMTP error, no push gateway); Suppressed (contact on the suppression list, not sent); Interrupted (the worker stopped before recording; sent again with the same key); Set aside (preparing it, or recording its outcome after it was sent, raised an error: see aimroute.set_aside_items; tried again later, and a message sent is not sent again); Cancelled (the lead left the dealer first).';

-- coverage: coverage and white space (issue 19, SPEC section 9): aimroute.coverage(),
-- coverage_geojson(), white_space() and dealer_areas(), as schema/085_coverage.sql
-- creates them; admins and region users may run them.
CREATE FUNCTION aimroute.coverage(brand_code text, country text DEFAULT NULL)
RETURNS TABLE (country text, postal_code text, state_code text, county text,
               dealer_number text, match_type aimroute.match_type,
               distance_miles double precision)
    AS 'MODULE_PATHNAME', 'aimroute_coverage'
    LANGUAGE C STABLE PARALLEL SAFE ROWS 50000;
COMMENT ON FUNCTION aimroute.coverage(text, text) IS
    'For every postal code with a centre point (of the country, or of every country when NULL), where a lead of the brand from there would go under the current configuration -- no product, no dealer group, no pre-assigned dealer -- routed by the routing core itself: dealer, match type (Default is white space) and miles. Inside BEGIN ... ROLLBACK after a configuration change it answers "what if".';
REVOKE EXECUTE ON FUNCTION aimroute.coverage(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.coverage(text, text) TO aimroute_admin, aimroute_region;

CREATE FUNCTION aimroute.coverage_geojson(brand_code text, country text DEFAULT NULL)
RETURNS json
    AS 'MODULE_PATHNAME', 'aimroute_coverage_geojson'
    LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.coverage_geojson(text, text) IS
    'aimroute.coverage() as a GeoJSON FeatureCollection (RFC 7946, json, one feature per line): a Point at each postal centre (longitude, latitude) with properties country, postal_code, state_code, county, dealer_number, match_type, distance_miles and white_space.';
REVOKE EXECUTE ON FUNCTION aimroute.coverage_geojson(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.coverage_geojson(text, text) TO aimroute_admin, aimroute_region;

--
-- white_space: by state or province, the postal codes that fall to the
-- default dealer, and the stored leads of the last 30 days that went to it.
--
CREATE FUNCTION aimroute.white_space(brand_code text, country text DEFAULT NULL)
RETURNS TABLE (country text, state_code text, postal_codes bigint,
               white_space_postal_codes bigint, white_space_percent numeric,
               leads_30_days bigint, default_dealer_leads_30_days bigint)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH areas AS (
        SELECT c.country, c.state_code, count(*) AS postal_codes,
               count(*) FILTER (WHERE c.match_type = 'Default') AS white
          FROM aimroute.coverage(white_space.brand_code, white_space.country) c
         GROUP BY c.country, c.state_code
    ), leads AS (
        SELECT l.country, coalesce(p.state_code, upper(btrim(l.state_code))) AS state_code,
               count(*) AS leads,
               count(*) FILTER (WHERE l.dealer_number = s.default_dealer_number) AS defaulted
          FROM aimroute.leads l
          CROSS JOIN aimroute.settings s
          LEFT JOIN aimroute.postal_codes p ON p.country = l.country AND p.postal_code = l.postal_code
         WHERE l.brand_code = white_space.brand_code
           AND l.received_at >= now() - interval '30 days'
           AND (white_space.country IS NULL
                OR l.country = aimroute.normalize_country(white_space.country))
         GROUP BY 1, 2
    )
    SELECT coalesce(a.country, l.country), coalesce(a.state_code, l.state_code),
           coalesce(a.postal_codes, 0), coalesce(a.white, 0),
           CASE WHEN a.postal_codes > 0 THEN round(100.0 * a.white / a.postal_codes, 1) END,
           coalesce(l.leads, 0), coalesce(l.defaulted, 0)
      FROM areas a
      -- NULL (an unknown country or state) meets NULL: the keys are coalesced.
      FULL JOIN leads l ON coalesce(l.country, '') = coalesce(a.country, '')
                       AND coalesce(l.state_code, '') = coalesce(a.state_code, '')
     ORDER BY 1, 2
$$;
COMMENT ON FUNCTION aimroute.white_space(text, text) IS
    'White space of a brand by country and state or province: postal codes with a centre point, those that fall to the default dealer (count and percent, from aimroute.coverage()), and the stored leads of the brand received in the last 30 days, all and those whose dealer is the default dealer (the leads the caller may see).';
REVOKE EXECUTE ON FUNCTION aimroute.white_space(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.white_space(text, text) TO aimroute_admin, aimroute_region;

--
-- dealer_areas: each dealer's effective area, the postal codes it wins
-- and by which rule.
--
CREATE FUNCTION aimroute.dealer_areas(brand_code text, country text DEFAULT NULL)
RETURNS TABLE (dealer_number text, name text, match_type aimroute.match_type,
               postal_codes bigint, states text[], max_distance_miles double precision)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.dealer_number, d.name, c.match_type, count(*),
           array_agg(DISTINCT c.state_code ORDER BY c.state_code) FILTER (WHERE c.state_code IS NOT NULL),
           max(c.distance_miles)
      FROM aimroute.coverage(dealer_areas.brand_code, dealer_areas.country) c
      LEFT JOIN aimroute.dealers d ON d.dealer_number = c.dealer_number
     GROUP BY c.dealer_number, d.name, c.match_type
     ORDER BY c.dealer_number, c.match_type
$$;
COMMENT ON FUNCTION aimroute.dealer_areas(text, text) IS
    'Each dealer''s effective area for a brand, from aimroute.coverage(): per dealer and winning rule (match type), the postal codes it would get, their states or provinces and the farthest of them in miles; the default dealer''s Default row is the white space.';
REVOKE EXECUTE ON FUNCTION aimroute.dealer_areas(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.dealer_areas(text, text) TO aimroute_admin, aimroute_region;

-- mailbox: issue 17, second part.  settings.smtp_tls: 'try' is what the
-- worker always did (STARTTLS when the server offers it); 'required' sends
-- no login and no message unless the connection is TLS.  The bounce
-- mailbox: settings.bounce_mailbox_url and its login (admins only), read
-- by the delivery worker over IMAP (src/bounce_mailbox.c), its position
-- in aimroute.bounce_mailbox_state.
-- In steps: a column added with a default, here, is refused ("function
-- delivery_endpoint(outbox,settings) uses its row type").
ALTER TABLE aimroute.settings ADD COLUMN smtp_tls text
    CONSTRAINT settings_smtp_tls_check CHECK (smtp_tls IN ('try', 'required'));
ALTER TABLE aimroute.settings ALTER COLUMN smtp_tls SET DEFAULT 'try';
-- Not a change of the configuration: config_version stays as it was.
ALTER TABLE aimroute.settings DISABLE TRIGGER bump_config_version;
UPDATE aimroute.settings SET smtp_tls = 'try';
ALTER TABLE aimroute.settings ENABLE ALWAYS TRIGGER bump_config_version;
ALTER TABLE aimroute.settings ALTER COLUMN smtp_tls SET NOT NULL;
COMMENT ON COLUMN aimroute.settings.smtp_tls IS 'TLS with an smtp:// server: try (default): STARTTLS when the server offers it, else plaintext; required: STARTTLS or nothing is sent (no login, no message), a retryable failure.';
GRANT SELECT (smtp_tls) ON aimroute.settings TO aimroute_region, aimroute_dealer;

ALTER TABLE aimroute.settings ADD COLUMN bounce_mailbox_url text
    CONSTRAINT settings_bounce_mailbox_url_check CHECK (aimroute.url_is_valid(bounce_mailbox_url, '{imap,imaps}'));
ALTER TABLE aimroute.settings ADD COLUMN bounce_mailbox_username text;
ALTER TABLE aimroute.settings ADD COLUMN bounce_mailbox_password text;
COMMENT ON COLUMN aimroute.settings.bounce_mailbox_url IS 'The IMAP mailbox the DSNs to bounce_address arrive in, such as imaps://mail.oem.example/INBOX: the delivery worker reads its new messages and records each with record_dsn (aimroute.bounce_mailbox_state); NULL (default): none is read. Admins only.';
COMMENT ON COLUMN aimroute.settings.bounce_mailbox_username IS 'The login at the bounce mailbox''s IMAP server. Admins only.';
COMMENT ON COLUMN aimroute.settings.bounce_mailbox_password IS 'Its password. Admins only.';

-- (aimroute.settings_validate() checks this setting from its one 0.2.0 text, in the section "settings" at the end.)

CREATE TABLE aimroute.bounce_mailbox_state (
    singleton     boolean PRIMARY KEY DEFAULT true
        CONSTRAINT bounce_mailbox_state_one_row CHECK (singleton),
    mailbox_url   text NOT NULL,
    uidvalidity   bigint,
    last_uid      bigint NOT NULL DEFAULT 0,
    handled       bigint NOT NULL DEFAULT 0,
    bounces       bigint NOT NULL DEFAULT 0,
    failing_uid   bigint,
    failures      integer NOT NULL DEFAULT 0,
    checked_at    timestamptz,
    last_error    text
);
COMMENT ON TABLE aimroute.bounce_mailbox_state IS
    'Where the delivery worker is in the bounce mailbox (settings.bounce_mailbox_url): every message up to last_uid was handled. Delete the row to read the mailbox again from its first message (record_dsn records nothing twice).';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.singleton IS 'Always true: one row.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.mailbox_url IS 'The mailbox last read, as settings.bounce_mailbox_url named it.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.uidvalidity IS 'The mailbox''s IMAP UIDVALIDITY, which tells one mailbox from another: when it changes (another mailbox, or the same made again), the worker reads from the first message.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.last_uid IS 'The highest IMAP UID handled: recorded by record_dsn, or skipped with a WARNING.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.handled IS 'Messages handled in all.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.bounces IS 'Bounces record_dsn recorded from them.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.failing_uid IS 'A message whose record raised an error that was not about its content; failures counts its tries, and after 3 it is skipped.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.failures IS 'Tries of failing_uid that raised.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.checked_at IS 'When the worker last read the mailbox, or tried to.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.last_error IS 'Why the last try to read it failed (connection, login, TLS); NULL when it worked.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.bounce_mailbox_state', '');
GRANT ALL ON aimroute.bounce_mailbox_state TO aimroute_admin;

--
-- bounce_mailbox_position: where to go on reading a mailbox (internal, the
-- delivery worker): the highest UID handled, 0 for a mailbox new or made
-- again (its UIDVALIDITY changed).  Notes the check.
--
CREATE FUNCTION aimroute.bounce_mailbox_position(p_mailbox_url text, p_uidvalidity bigint) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st aimroute.bounce_mailbox_state;
BEGIN
    INSERT INTO aimroute.bounce_mailbox_state (mailbox_url, uidvalidity)
    VALUES (p_mailbox_url, p_uidvalidity)
    ON CONFLICT (singleton) DO NOTHING;
    SELECT * INTO st FROM aimroute.bounce_mailbox_state s WHERE s.singleton FOR UPDATE;
    IF st.uidvalidity IS NOT NULL AND st.uidvalidity IS DISTINCT FROM p_uidvalidity THEN
        RAISE WARNING 'bounce mailbox %: its UIDVALIDITY is % where it was %, so it is read from its first message',
                      p_mailbox_url, p_uidvalidity, st.uidvalidity
            USING DETAIL = 'Another mailbox, or the same one made again; record_dsn records no DSN twice.';
        st.last_uid := 0;
    END IF;
    UPDATE aimroute.bounce_mailbox_state s
       SET mailbox_url = p_mailbox_url, uidvalidity = p_uidvalidity, last_uid = st.last_uid,
           checked_at = clock_timestamp(), last_error = NULL
     WHERE s.singleton;
    RETURN st.last_uid;
END
$$;
COMMENT ON FUNCTION aimroute.bounce_mailbox_position(text, bigint) IS
    'The highest IMAP UID of the bounce mailbox handled so far, 0 when the mailbox is new or its UIDVALIDITY changed. Internal: the delivery worker calls it.';
REVOKE EXECUTE ON FUNCTION aimroute.bounce_mailbox_position(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.bounce_mailbox_position(text, bigint) TO aimroute_admin;

--
-- bounce_mailbox_failed: a try to read the mailbox failed (internal).
--
CREATE FUNCTION aimroute.bounce_mailbox_failed(p_mailbox_url text, p_error text) RETURNS void
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO aimroute.bounce_mailbox_state (mailbox_url, checked_at, last_error)
    VALUES (p_mailbox_url, clock_timestamp(), left(p_error, 1000))
    ON CONFLICT (singleton) DO UPDATE SET checked_at = excluded.checked_at, last_error = excluded.last_error;
END;
COMMENT ON FUNCTION aimroute.bounce_mailbox_failed(text, text) IS
    'Notes why reading the bounce mailbox failed (bounce_mailbox_state.last_error). Internal: the delivery worker calls it.';
REVOKE EXECUTE ON FUNCTION aimroute.bounce_mailbox_failed(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.bounce_mailbox_failed(text, text) TO aimroute_admin;

--
-- bounce_mailbox_record: records one message of the mailbox (internal, the
-- delivery worker), and moves the position past it in the same
-- transaction.  A message already handled records nothing.  Not a DSN (or
-- a DSN record_dsn refuses, SQLSTATE class 22): a WARNING, and it is
-- skipped; so is a message too large to fetch (p_message NULL).  Any
-- other error (a lock, the server): a WARNING and NULL, the
-- position stays and the worker stops reading until its next look; the
-- third try of the same message that raises skips it, so that one message
-- never stops the mailbox.  Returns the bounces recorded.
--
CREATE FUNCTION aimroute.bounce_mailbox_record(p_mailbox_url text, p_uidvalidity bigint, p_uid bigint,
                                               p_message text) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st aimroute.bounce_mailbox_state;
    recorded integer := 0;
    e_code text;
    e_message text;
BEGIN
    SELECT * INTO st FROM aimroute.bounce_mailbox_state s WHERE s.singleton FOR UPDATE;
    IF NOT FOUND OR st.uidvalidity IS DISTINCT FROM p_uidvalidity OR p_uid <= st.last_uid THEN
        RETURN 0;   -- handled already, or the mailbox changed meanwhile
    END IF;
    IF p_message IS NULL THEN
        RAISE WARNING 'bounce mailbox %: message UID % is larger than the worker reads (16 MB), skipped',
                      p_mailbox_url, p_uid
            USING HINT = 'It stays in the mailbox; a DSN is rarely that large: look at it in a mail client.';
    ELSE
    BEGIN
        recorded := aimroute.record_dsn(p_message);
    EXCEPTION
        WHEN data_exception THEN
            GET STACKED DIAGNOSTICS e_message = MESSAGE_TEXT;
            RAISE WARNING 'bounce mailbox %: message UID % is not a DSN aimroute can read, skipped: %',
                          p_mailbox_url, p_uid, e_message
                USING HINT = 'It stays in the mailbox, marked \Seen; a bounce it reports can be recorded with aimroute.record_bounce(email, kind, detail).';
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT;
            st.failures := CASE WHEN st.failing_uid = p_uid THEN st.failures + 1 ELSE 1 END;
            IF st.failures < 3 THEN
                RAISE WARNING 'bounce mailbox %: recording message UID % failed (try %), tried again later: %',
                              p_mailbox_url, p_uid, st.failures, e_message
                    USING DETAIL = format('SQLSTATE %s.', e_code);
                UPDATE aimroute.bounce_mailbox_state s
                   SET failing_uid = p_uid, failures = st.failures, last_error = left(e_message, 1000)
                 WHERE s.singleton;
                RETURN NULL;
            END IF;
            RAISE WARNING 'bounce mailbox %: recording message UID % failed 3 times, skipped: %',
                          p_mailbox_url, p_uid, e_message
                USING DETAIL = format('SQLSTATE %s.', e_code),
                      HINT = 'It stays in the mailbox, marked \Seen; record it by hand with aimroute.record_dsn once the cause is fixed.';
    END;
    END IF;
    UPDATE aimroute.bounce_mailbox_state s
       SET last_uid = p_uid, handled = s.handled + 1, bounces = s.bounces + coalesce(recorded, 0),
           failing_uid = NULL, failures = 0
     WHERE s.singleton;
    RETURN coalesce(recorded, 0);
END
$$;
COMMENT ON FUNCTION aimroute.bounce_mailbox_record(text, bigint, bigint, text) IS
    'Records one message of the bounce mailbox with record_dsn and moves bounce_mailbox_state.last_uid past it, in one transaction; a message handled already records nothing, one that is not a DSN is skipped with a WARNING. Internal: the delivery worker calls it.';
REVOKE EXECUTE ON FUNCTION aimroute.bounce_mailbox_record(text, bigint, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.bounce_mailbox_record(text, bigint, bigint, text) TO aimroute_admin;
-- stage: process_staging() is cheaper a row (issue 16).  It reads staged
-- values with staging_value(), in C, instead of nullif(btrim(...), ''),
-- which measures every character of a multibyte value first; it measures
-- the lengths of a row's values in characters only when one is too long
-- in bytes; and it casts a chunk's received_at values all at once,
-- parsing each on its own (with an exception block) only in a chunk where
-- one is not a timestamp.
CREATE FUNCTION aimroute.staging_value(value text) RETURNS text
    AS 'MODULE_PATHNAME', 'aimroute_staging_value'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.staging_value(text) IS
    'A staged value trimmed of white space (space, tab, CR, LF, form feed, vertical tab), NULL when blank (internal to aimroute.process_staging).';
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
    v_parse_each    boolean;        -- step 1: each received_at parsed on its own, catching errors
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
        --    the table is empty, as after a TRUNCATE.)  The received_at
        --    values are cast all at once; should one not be a timestamp,
        --    the chunk is read again with each parsed on its own
        --    (staging_timestamptz: an exception block, a subtransaction,
        --    for every value).
        v_parse_each := false;
        LOOP
            BEGIN
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
                                           -- A value has at most as many characters as bytes:
                                           -- only a row with a value that long in bytes is
                                           -- measured in characters (the list below, NULL
                                           -- when none is too long).
                                           CASE WHEN octet_length(t.comment) > max_comment
                                                     OR greatest(octet_length(t.received_at), octet_length(t.source), octet_length(t.brand_code),
                                                                 octet_length(t.product_code), octet_length(t.first_name), octet_length(t.last_name),
                                                                 octet_length(t.email), octet_length(t.phone), octet_length(t.address), octet_length(t.city),
                                                                 octet_length(t.state_code), octet_length(t.country), octet_length(t.postal_code),
                                                                 octet_length(t.dealer_number), octet_length(t.dealer_group),
                                                                 octet_length(t.send_to_dealer)) > max_length THEN
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
                                               CASE WHEN t.received_at IS NULL THEN NULL
                                                    WHEN v_parse_each THEN aimroute.staging_timestamptz(t.received_at)
                                                    ELSE t.received_at::timestamptz END AS parsed_received_at,
                                               CASE WHEN lower(t.send_to_dealer)
                                                         ~ '^(t|tr|tru|true|y|ye|yes|on|1|f|fa|fal|fals|false|n|no|of|off|0)$'
                                                    THEN t.send_to_dealer::boolean END AS parsed_send_to_dealer
                                          FROM (SELECT s.staging_id, s.staged_at, s.input_md5,
                                                       aimroute.staging_value(s.received_at) AS received_at,
                                                       aimroute.staging_value(s.source) AS source,
                                                       aimroute.staging_value(s.brand_code) AS brand_code,
                                                       aimroute.staging_value(s.product_code) AS product_code,
                                                       aimroute.staging_value(s.first_name) AS first_name,
                                                       aimroute.staging_value(s.last_name) AS last_name,
                                                       aimroute.staging_value(s.email) AS email,
                                                       aimroute.staging_value(s.phone) AS phone,
                                                       aimroute.staging_value(s.address) AS address,
                                                       aimroute.staging_value(s.city) AS city,
                                                       aimroute.staging_value(s.state_code) AS state_code,
                                                       aimroute.staging_value(s.country) AS country,
                                                       aimroute.staging_value(s.postal_code) AS postal_code,
                                                       aimroute.staging_value(s.dealer_number) AS dealer_number,
                                                       aimroute.staging_value(s.dealer_group) AS dealer_group,
                                                       aimroute.staging_value(s.send_to_dealer) AS send_to_dealer,
                                                       aimroute.staging_value(s.comment) AS comment
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
                EXIT;
            EXCEPTION WHEN data_exception THEN
                -- A received_at that is not a timestamp: read the chunk
                -- again, each received_at on its own.
                IF v_parse_each THEN
                    RAISE;
                END IF;
                v_parse_each := true;
            END;
        END LOOP;
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
REVOKE EXECUTE ON FUNCTION aimroute.process_staging(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.process_staging(text) TO aimroute_admin;

-- viewlink: the page behind the view link (issue 17).  A fourth role,
-- aimroute_view_link, for that page: it may open a link and read the lead
-- the link shows, and nothing else; view_link_lead is that read.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'aimroute_view_link') THEN
        CREATE ROLE aimroute_view_link NOLOGIN;
    END IF;
END
$$;
COMMENT ON ROLE aimroute_view_link IS 'aimroute: the page behind the view link; opens a link and reads the lead it shows (open_view_link, view_link_lead), nothing else.';
GRANT USAGE ON SCHEMA aimroute TO aimroute_view_link;
GRANT EXECUTE ON FUNCTION aimroute.open_view_link(text) TO aimroute_view_link;
CREATE FUNCTION aimroute.view_link_lead(token text)
RETURNS TABLE (lead_id bigint, dealer_number text, dealer_name text, received_at timestamptz,
               timezone text, brand text, product_code text, first_name text, last_name text,
               email text, phone text, address text, city text, state_code text,
               postal_code text, country text, comment text, viewed_at timestamptz,
               reroute_due_at timestamptz)
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.lead_id, l.dealer_number, d.name, l.received_at, s.timezone,
           coalesce(b.name, l.brand_code), l.product_code, l.first_name, l.last_name,
           l.email, l.phone, l.address, l.city, l.state_code,
           coalesce(l.postal_code, l.postal_code_input), coalesce(l.country, l.country_input),
           l.comment, l.viewed_at, l.reroute_due_at
      FROM aimroute.lead_notifications n
      JOIN aimroute.leads l ON l.lead_id = n.lead_id AND l.dealer_number = n.dealer_number
      JOIN aimroute.dealers d ON d.dealer_number = l.dealer_number
      LEFT JOIN aimroute.brands b ON b.brand_code = l.brand_code
      CROSS JOIN aimroute.settings s
     WHERE n.view_token = view_link_lead.token
$$;
COMMENT ON FUNCTION aimroute.view_link_lead(text) IS
    'The lead a notification''s view link shows: its key details while that notification''s dealer holds it; no row for an unknown token or the link of a dealer that lost the lead. Changes nothing (open_view_link marks it viewed).';
REVOKE EXECUTE ON FUNCTION aimroute.view_link_lead(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.view_link_lead(text) TO aimroute_admin, aimroute_region, aimroute_dealer, aimroute_view_link;

-- hours: business hours (issue 20, part 2; SPEC section 10).
-- dealers.business_hours (an OpenStreetMap opening_hours value, checked by
-- aimroute.business_hours_valid) and settings.reroute_clock: under
-- 'business_hours' the re-route deadline counts only the open time of the
-- dealer holding the lead, in its time zone
-- (aimroute.business_hours_deadline, aimroute.reroute_due_at(assigned_at,
-- dealer_number)); moves give the new dealer its own deadline.
CREATE FUNCTION aimroute.business_hours_valid(business_hours text)
RETURNS boolean
    AS 'MODULE_PATHNAME', 'aimroute_business_hours_valid'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.business_hours_valid(text) IS
    'True when business_hours is an opening_hours value aimroute reads (docs/rerouting.md); otherwise raises an error naming the bad token and its position.';

ALTER TABLE aimroute.dealers ADD COLUMN business_hours text
    CONSTRAINT dealers_business_hours_valid CHECK (aimroute.business_hours_valid(business_hours));
COMMENT ON COLUMN aimroute.dealers.business_hours IS
    'When the dealer is open, in OpenStreetMap opening_hours syntax (such as ''Mo-Fr 08:00-18:00; Sa 09:00-13:00''), in its time zone; with settings.reroute_clock = ''business_hours'' the re-route deadline counts only this time. NULL: none (the elapsed clock).';

-- In steps: a new column with a default, or a new NOT NULL column, makes
-- PostgreSQL check the table's rows, which it refuses while a function
-- takes the row type (aimroute.delivery_endpoint).  SET NOT NULL does not.
-- Filling in the default is not a change of the configuration: no new
-- config_version.
ALTER TABLE aimroute.settings ADD COLUMN reroute_clock text
    CONSTRAINT settings_reroute_clock_check CHECK (reroute_clock IN ('elapsed', 'business_hours'));
ALTER TABLE aimroute.settings ALTER COLUMN reroute_clock SET DEFAULT 'elapsed';
ALTER TABLE aimroute.settings DISABLE TRIGGER bump_config_version;
UPDATE aimroute.settings SET reroute_clock = 'elapsed';
ALTER TABLE aimroute.settings ENABLE ALWAYS TRIGGER bump_config_version;
ALTER TABLE aimroute.settings ALTER COLUMN reroute_clock SET NOT NULL;
COMMENT ON COLUMN aimroute.settings.reroute_clock IS 'How reroute_after is counted: elapsed (default) or business_hours, the open time of the dealer holding the lead (dealers.business_hours).';
GRANT SELECT (reroute_clock) ON aimroute.settings TO aimroute_region, aimroute_dealer;

-- (aimroute.settings_validate() checks this setting from its one 0.2.0 text, in the section "settings" at the end.)

CREATE FUNCTION aimroute.business_hours_deadline(assigned_at timestamptz, reroute_after interval,
                                                 business_hours text, timezone text,
                                                 skip_days integer[])
RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'aimroute_business_hours_deadline'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.business_hours_deadline(timestamptz, interval, text, text, integer[]) IS
    'The moment reroute_after of open time (business_hours, an OpenStreetMap opening_hours value, in time zone timezone; days of 24 hours) has passed since assigned_at, skip days (ISO weekdays) counting none; NULL when no day that is not skipped is open.';

CREATE FUNCTION aimroute.reroute_due_at(assigned_at timestamptz, dealer_number text)
RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN s.reroute_enabled
                THEN coalesce(CASE WHEN s.reroute_clock = 'business_hours'
                                   THEN (SELECT aimroute.business_hours_deadline(
                                                    assigned_at, s.reroute_after, d.business_hours,
                                                    coalesce(d.timezone, s.timezone), s.reroute_skip_days)
                                           FROM aimroute.dealers d
                                          WHERE d.dealer_number = reroute_due_at.dealer_number) END,
                              aimroute.reroute_deadline(assigned_at, s.reroute_after, s.reroute_skip_days, s.timezone))
           END
      FROM aimroute.settings s
$$;
COMMENT ON FUNCTION aimroute.reroute_due_at(timestamptz, text) IS
    'The re-route deadline of a lead assigned to dealer dealer_number at assigned_at under the current settings (settings.reroute_clock); NULL when re-routing is off.';

CREATE OR REPLACE FUNCTION aimroute.move_lead(p_lead_id bigint, p_dealer text, p_match aimroute.match_type,
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

CREATE OR REPLACE FUNCTION aimroute.leads_protect_view() RETURNS trigger
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


-- hours: a re-route under the business-hours clock says whose open time
-- the deadline counted.
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

-- claim: the delivery worker claims and records set-based (issue 16, row
-- 4).  delivery_claim leases (delivery_lease) and renders
-- (delivery_render_batch) the plain messages of a claim in a few
-- statements and leaves the others to delivery_claim_one;
-- delivery_record_batch records the deliveries of a batch together.
-- mime_header_text and render_email are PL/pgSQL, for their kept plans;
-- the claim walks outbox_due_idx in order (enable_sort off).
-- docs/delivery.md, docs/performance.md.
CREATE OR REPLACE FUNCTION aimroute.mime_header_text(t text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF t ~ '^[ -~]*$' THEN
        RETURN t;
    END IF;
    -- The words are cut in one pass (regexp_matches), not by substr() from
    -- the start each time, which took minutes for a name of 100,000
    -- characters.
    RETURN (SELECT string_agg('=?UTF-8?B?' || encode(convert_to(w.chars[1], 'UTF8'), 'base64') || '?=',
                              E'\r\n ' ORDER BY w.n)
              FROM regexp_matches(t, '.{1,12}', 'gs') WITH ORDINALITY AS w (chars, n));
END
$$;
COMMENT ON FUNCTION aimroute.mime_header_text(text) IS
    'Header text as RFC 2047 encoded words when it is not plain ASCII (12 characters a word, so none is cut inside a character), in time linear in its length.';

CREATE OR REPLACE FUNCTION aimroute.render_email(mail_from text, rcpt text, subject text, body text,
                                      message_key text, sent_at timestamptz,
                                      content_type text DEFAULT 'text/plain')
RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN concat_ws(E'\r\n',
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
        '');
END
$$;
COMMENT ON FUNCTION aimroute.render_email(text, text, text, text, text, timestamptz, text) IS
    'An email as sent over SMTP: headers (the subject on one line, 200 characters at most), a blank line and the body in base64, CRLF line ends.';

CREATE OR REPLACE FUNCTION aimroute.delivery_render_batch(messages aimroute.outbox[], s aimroute.settings)
RETURNS SETOF aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    -- A few messages, each looked up by key (as in delivery_claim).
    SET enable_hashjoin = off
    SET enable_mergejoin = off
    SET enable_seqscan = off
    -- A path turned off costs 1e10: the plan would pass every JIT
    -- threshold, and each statement would be compiled.
    SET jit = off
AS $$
BEGIN
    RETURN QUERY
    SELECT m.message_id, m.attempts,
           CASE WHEN k.http THEN 'http' ELSE 'smtp' END,
           CASE k.kind WHEN 'push' THEN s.push_gateway_url WHEN 'adf_http' THEN m.recipient ELSE s.smtp_url END,
           aimroute.envelope_sender(m, s),
           -- The SMTP login is for the SMTP server only.
           CASE WHEN NOT k.http THEN m.recipient END,
           CASE WHEN NOT k.http THEN s.smtp_username END,
           CASE WHEN NOT k.http THEN s.smtp_password END,
           CASE k.kind WHEN 'push' THEN 'application/json' WHEN 'adf_http' THEN 'application/xml' END,
           m.message_key,
           CASE k.kind
               WHEN 'notice' THEN
                   aimroute.render_email(s.smtp_from, m.recipient, m.subject, m.body, m.message_key, clock_timestamp())
               WHEN 'email' THEN
                   aimroute.render_email(s.smtp_from, m.recipient, aimroute.lead_email_subject(l),
                       aimroute.lead_email_text(l, d.name, CASE WHEN m.role = 'To' THEN s.view_link_url || n.view_token END),
                       m.message_key, clock_timestamp())
               WHEN 'push' THEN
                   json_build_object(
                       'to', m.recipient,
                       'title', aimroute.lead_email_subject(l),
                       'body', concat_ws(', ', nullif(concat_ws(' ', l.first_name, l.last_name), ''),
                                         nullif(concat_ws(' ', l.city, l.state_code), ''), l.phone),
                       'lead_id', l.lead_id,
                       'dealer_number', l.dealer_number,
                       'url', CASE WHEN EXISTS (SELECT FROM aimroute.dealer_contacts c
                                                 WHERE c.contact_id = m.contact_id
                                                   AND 'Leads: Emails To' = ANY (c.contact_types))
                                   THEN s.view_link_url || n.view_token END,
                       'message_key', m.message_key)::text
               WHEN 'adf_email' THEN
                   aimroute.render_email(s.smtp_from, m.recipient,
                       format('ADF lead %s for dealer %s', l.lead_id, l.dealer_number),
                       aimroute.lead_adf(l.lead_id), m.message_key, clock_timestamp())
               ELSE aimroute.lead_adf(l.lead_id) END
      FROM unnest(messages) AS m
      CROSS JOIN LATERAL (
          SELECT x.kind, x.kind IN ('push', 'adf_http') AS http
            FROM (SELECT CASE WHEN m.purpose <> 'lead' THEN 'notice'
                              WHEN m.method = 'email' THEN 'email'
                              WHEN m.method = 'mobile' THEN 'push'
                              WHEN m.role = 'adf_email' THEN 'adf_email'
                              ELSE 'adf_http' END AS kind) x) k
      LEFT JOIN aimroute.leads l ON k.kind <> 'notice' AND l.lead_id = m.lead_id
      LEFT JOIN aimroute.lead_notifications n ON k.kind <> 'notice' AND n.notification_id = m.notification_id
      LEFT JOIN aimroute.dealers d ON k.kind <> 'notice' AND d.dealer_number = m.dealer_number;
END
$$;
COMMENT ON FUNCTION aimroute.delivery_render_batch(aimroute.outbox[], aimroute.settings) IS
    'What the delivery worker sends for each of the messages given, a row each: where to, how, the envelope sender, and the whole email or HTTP body. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_render_batch(aimroute.outbox[], aimroute.settings) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_render_batch(aimroute.outbox[], aimroute.settings) TO aimroute_admin;

CREATE OR REPLACE FUNCTION aimroute.delivery_render(m aimroute.outbox, s aimroute.settings)
RETURNS aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j aimroute.delivery_job;
BEGIN
    SELECT * INTO j FROM aimroute.delivery_render_batch(ARRAY[m], s);
    RETURN j;
END
$$;
REVOKE EXECUTE ON FUNCTION aimroute.delivery_render(aimroute.outbox, aimroute.settings) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_render(aimroute.outbox, aimroute.settings) TO aimroute_admin;

CREATE OR REPLACE FUNCTION aimroute.delivery_lease(message_ids bigint[], s aimroute.settings, lease interval)
RETURNS SETOF aimroute.outbox
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    UPDATE aimroute.outbox o
       SET status = 'sending', attempts = o.attempts + 1, due_at = clock_timestamp() + lease,
           message_key = coalesce(o.message_key,
                                  format('<aimroute.%s.%s@%s>', o.message_id,
                                         to_char(o.queued_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS'),
                                         split_part(s.smtp_from, '@', 2)))
     WHERE o.message_id = ANY (message_ids)
    RETURNING o.*;
END
$$;
REVOKE EXECUTE ON FUNCTION aimroute.delivery_lease(bigint[], aimroute.settings, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_lease(bigint[], aimroute.settings, interval) TO aimroute_admin;

CREATE OR REPLACE FUNCTION aimroute.delivery_claim_one(m aimroute.outbox, s aimroute.settings, lease interval)
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

    SELECT * INTO m FROM aimroute.delivery_lease(ARRAY[m.message_id], s, lease);
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
REVOKE EXECUTE ON FUNCTION aimroute.delivery_claim_one(aimroute.outbox, aimroute.settings, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_claim_one(aimroute.outbox, aimroute.settings, interval) TO aimroute_admin;

CREATE OR REPLACE FUNCTION aimroute.delivery_claim(max_messages integer, lease interval,
                                        full_endpoints text[] DEFAULT '{}', held bigint[] DEFAULT '{}')
RETURNS SETOF aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    -- The due messages are walked in outbox_due_idx's order and the walk
    -- stops at max_messages; the few messages taken are looked up by key
    -- in the other tables.  The plans are kept from the worker's first
    -- claim, often made on a new or emptied outbox, whose statistics make
    -- a sort of every due message, or a hash join over a whole table, look
    -- cheaper: then each claim cost the whole queue (3.7 ms a claim at
    -- 5,000 due messages).  The functions it calls run with these too.
    SET enable_sort = off
    SET enable_hashjoin = off
    SET enable_mergejoin = off
    SET enable_seqscan = off
    -- A path turned off costs 1e10: the plan would pass every JIT
    -- threshold, and each statement would be compiled.
    SET jit = off
AS $$
DECLARE
    s aimroute.settings;
    m aimroute.outbox;
    f aimroute.set_aside_items;
    j aimroute.delivery_job;
    batch aimroute.outbox[];
    plain bigint[];
    bad bigint;
    jobs aimroute.delivery_job[] := '{}';
    claimed bigint[] := '{}';
    whole boolean;
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

    -- Locked here, outside the subtransactions, so that a failed try
    -- leaves the same messages to try one by one.
    batch := ARRAY(SELECT o FROM aimroute.outbox o
                    WHERE o.status IN ('queued', 'sending') AND o.due_at <= clock_timestamp()
                      AND NOT EXISTS (SELECT FROM aimroute.set_aside_items x
                                       WHERE x.kind = 'message' AND x.item_id = o.message_id
                                         AND (x.retry_at > clock_timestamp() OR x.step = 'record'))
                      AND (coalesce(cardinality(full_endpoints), 0) = 0
                           OR aimroute.delivery_endpoint(o, s) <> ALL (full_endpoints))
                      AND (coalesce(cardinality(held), 0) = 0 OR o.message_id <> ALL (held))
                    ORDER BY o.due_at, o.message_id
                    LIMIT max_messages
                    FOR UPDATE SKIP LOCKED);
    IF cardinality(batch) = 0 THEN
        RETURN;
    END IF;

    BEGIN
        -- What delivery_claim_one would lease and render with nothing
        -- settled first; a condition that is not plainly true leaves the
        -- message to delivery_claim_one.
        plain := ARRAY(
            SELECT b.message_id FROM unnest(batch) WITH ORDINALITY AS b
             WHERE b.status = 'queued'
               AND (b.purpose <> 'lead'
                    OR (EXISTS (SELECT FROM aimroute.lead_notifications n
                                  JOIN aimroute.leads l ON l.lead_id = n.lead_id AND l.dealer_number = n.dealer_number
                                 WHERE n.notification_id = b.notification_id)
                        AND NOT EXISTS (SELECT FROM aimroute.lead_notifications n
                                          JOIN aimroute.lead_notifications x ON x.dealer_number = n.dealer_number
                                         WHERE n.notification_id = b.notification_id
                                           AND x.lead_id = b.lead_id AND x.notification_id > b.notification_id)))
               AND (b.contact_id IS NULL
                    OR EXISTS (SELECT FROM aimroute.dealer_contacts c
                                WHERE c.contact_id = b.contact_id
                                  AND (b.method <> 'email' OR c.delivery_status = 'Active')))
               AND (b.method <> 'mobile' OR s.push_gateway_url IS NOT NULL)
             ORDER BY b.ordinality);
        FOR m IN SELECT * FROM unnest(batch) b WHERE b.message_id <> ALL (plain) LOOP
            j := aimroute.delivery_claim_one(m, s, lease);
            IF j.message_id IS NOT NULL THEN
                jobs := jobs || j;
            END IF;
        END LOOP;
        IF cardinality(plain) > 0 THEN
            SELECT jobs || array_agg(r) INTO jobs
              FROM aimroute.delivery_render_batch(
                       ARRAY(SELECT x FROM aimroute.delivery_lease(plain, s, lease) x), s) r;
        END IF;
        SELECT r.message_id INTO bad FROM unnest(jobs) r WHERE r.url IS NULL OR r.payload IS NULL LIMIT 1;
        IF FOUND THEN
            -- delivery_claim_one raises for that message alone, which is set aside.
            RAISE EXCEPTION 'message % has no address or content', bad USING ERRCODE = 'null_value_not_allowed';
        END IF;
        claimed := ARRAY(SELECT b.message_id FROM unnest(batch) b);
        whole := true;
    EXCEPTION WHEN OTHERS THEN
        -- In the server log, as when recording together fails: a claim
        -- that keeps failing so is slower, though every message goes.
        RAISE LOG 'aimroute: claiming % messages together failed (%), claiming them one by one',
                  cardinality(batch), SQLERRM;
        whole := false;
    END;

    IF NOT whole THEN
        jobs := '{}';
        FOREACH m IN ARRAY batch LOOP
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
            claimed := claimed || m.message_id;
            IF j.message_id IS NOT NULL THEN
                jobs := jobs || j;
            END IF;
        END LOOP;
    END IF;
    IF cardinality(claimed) > 0 THEN
        DELETE FROM aimroute.set_aside_items x WHERE x.kind = 'message' AND x.item_id = ANY (claimed);
    END IF;
    -- In the order claimed.
    RETURN QUERY SELECT r.* FROM unnest(jobs) r
                  ORDER BY array_position(ARRAY(SELECT b.message_id FROM unnest(batch) b), r.message_id);
END
$$;
COMMENT ON FUNCTION aimroute.delivery_claim(integer, interval, text[], bigint[]) IS
    'The delivery worker''s claim: up to max_messages due messages, rendered, leased for the given interval, none to the endpoints listed (aimroute.delivery_endpoint) and none of the messages held (the worker''s own, still being sent); a message whose claim raises is set aside in aimroute.set_aside_items, with a WARNING, and tried again later. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_claim(integer, interval, text[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_claim(integer, interval, text[], bigint[]) TO aimroute_admin;

CREATE OR REPLACE FUNCTION aimroute.delivery_record_batch(message_ids bigint[], attempts integer[], curl_codes integer[],
                                               response_codes integer[], responses text[],
                                               smtp_commands text[])
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    -- A few messages, each looked up by key (as in delivery_claim).
    SET enable_hashjoin = off
    SET enable_mergejoin = off
    SET enable_seqscan = off
    -- A path turned off costs 1e10: the plan would pass every JIT
    -- threshold, and each statement would be compiled.
    SET jit = off
AS $$
DECLARE
    delivered bigint[] := '{}';
    notices bigint[];
BEGIN
    -- A message given twice is left to delivery_record, which records it once.
    IF cardinality(message_ids) = (SELECT count(DISTINCT x) FROM unnest(message_ids) x) THEN
        BEGIN
            delivered := ARRAY(
                SELECT o.message_id
                  FROM ROWS FROM (unnest(message_ids), unnest(attempts), unnest(curl_codes), unnest(response_codes))
                       AS r (message_id, attempt, curl_code, response_code)
                  JOIN aimroute.outbox o ON o.message_id = r.message_id
                 WHERE o.status = 'sending' AND o.attempts = r.attempt AND r.curl_code = 0
                   AND (o.method = 'email' OR o.role = 'adf_email' OR r.response_code BETWEEN 200 AND 299)
                 ORDER BY o.message_id
                   FOR UPDATE OF o);
            IF cardinality(delivered) > 0 THEN
                DELETE FROM aimroute.set_aside_items x WHERE x.kind = 'message' AND x.item_id = ANY (delivered);
                INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response_code, response)
                SELECT r.message_id, r.attempt, 'Delivered', nullif(r.response_code, 0), left(r.response, 2000)
                  FROM ROWS FROM (unnest(message_ids), unnest(attempts), unnest(response_codes), unnest(responses))
                       WITH ORDINALITY AS r (message_id, attempt, response_code, response, n)
                 WHERE r.message_id = ANY (delivered)
                 ORDER BY r.n;
                WITH done AS (
                    UPDATE aimroute.outbox o
                       SET status = 'delivered', outcome = 'Delivered', last_response = left(r.response, 2000),
                           finished_at = clock_timestamp(), last_attempt_at = clock_timestamp()
                      FROM ROWS FROM (unnest(message_ids), unnest(responses)) AS r (message_id, response)
                     WHERE o.message_id = r.message_id AND o.message_id = ANY (delivered)
                    RETURNING o.notification_id, o.purpose)
                SELECT array_agg(DISTINCT d.notification_id) INTO notices FROM done d WHERE d.purpose = 'lead';
                IF cardinality(notices) > 0 THEN
                    PERFORM FROM aimroute.lead_notifications n
                      WHERE n.notification_id = ANY (notices)
                      ORDER BY n.notification_id
                        FOR UPDATE;
                    -- With the locks held, a statement of its own sees what
                    -- others committed meanwhile, as delivery_settle does;
                    -- it has something to do when no message of the notice
                    -- is left to send and one failed.  (Counted with FILTER,
                    -- as there: a condition on status would let the planner
                    -- scan outbox_due_idx, every message still queued.)
                    PERFORM aimroute.delivery_settle(n.notification_id)
                       FROM aimroute.lead_notifications n
                      CROSS JOIN LATERAL (
                          SELECT count(*) FILTER (WHERE o.status IN ('queued', 'sending')) AS open_count,
                                 count(*) FILTER (WHERE o.status = 'failed') AS failed
                            FROM aimroute.outbox o
                           WHERE o.notification_id = n.notification_id AND o.purpose = 'lead') c
                      WHERE n.notification_id = ANY (notices) AND n.failure_notice_at IS NULL
                        AND c.open_count = 0 AND c.failed > 0;
                END IF;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE LOG 'aimroute: recording % deliveries together failed (%), recording them one by one',
                      cardinality(delivered), SQLERRM;
            delivered := '{}';
        END;
    END IF;
    PERFORM aimroute.delivery_record(r.message_id, r.attempt, r.curl_code, r.response_code, r.response, r.smtp_command)
       FROM ROWS FROM (unnest(message_ids), unnest(attempts), unnest(curl_codes), unnest(response_codes),
                       unnest(responses), unnest(smtp_commands))
            WITH ORDINALITY AS r (message_id, attempt, curl_code, response_code, response, smtp_command, n)
      WHERE r.message_id <> ALL (delivered)
      ORDER BY r.n;
    RETURN cardinality(delivered);
END
$$;
COMMENT ON FUNCTION aimroute.delivery_record_batch(bigint[], integer[], integer[], integer[], text[], text[]) IS
    'Records the outcomes of several delivery attempts (delivery_record''s arguments as arrays, one element a message): the deliveries together, set-based, every other outcome through delivery_record; returns how many were recorded together. Internal: the delivery worker calls it.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_record_batch(bigint[], integer[], integer[], integer[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_record_batch(bigint[], integer[], integer[], integer[], text[], text[]) TO aimroute_admin;
-- route: the routing model holds every postal code (issue 16, rows 1
-- and 2): routing_cache_info().postal_codes counts the model's postal
-- codes, and session_bytes holds copies of the codes looked up lately.
COMMENT ON FUNCTION aimroute.routing_cache_info() IS
    'The model of the routing configuration this session routes with, brought up to date first: its version, when it was built and in how many milliseconds, what it holds (dealers, territories, postal_codes: every row of aimroute.postal_codes), its size (memory_bytes), where it lives (location: shared, one copy per database and version that every session maps, when aimroute is in shared_preload_libraries; local, this session''s own copy) and what this session holds besides (session_bytes: settings, PostGIS call info, copies of the postal codes looked up lately). enabled is always true: routing always uses the model (aimroute.routing_cache, which could turn it off, was retired in 0.2.0).';

-- notices: notices a person can act on (issue 17, SPEC section 4).  The
-- real-time failure notice and the daily recap carry the lead's key
-- details, what failed and why in words, links built from two URL
-- templates in settings (lead_details_url, lead_list_url; NULL: no link,
-- and the notice says so) and the operators' SQL as a footer, in a
-- plain-text and an HTML part (outbox.body_html), sent as
-- multipart/alternative (render_email_alternative).  Lead emails are
-- unchanged.  docs/delivery.md, Notices.
-- No default, so the columns go in directly.
ALTER TABLE aimroute.settings ADD COLUMN lead_details_url text
    CONSTRAINT settings_lead_details_url_check
    CHECK (aimroute.url_is_valid(lead_details_url, '{http,https}') AND strpos(lead_details_url, '{lead_id}') > 0);
ALTER TABLE aimroute.settings ADD COLUMN lead_list_url text
    CONSTRAINT settings_lead_list_url_check
    CHECK (aimroute.url_is_valid(lead_list_url, '{http,https}') AND strpos(lead_list_url, '{date}') > 0);
COMMENT ON COLUMN aimroute.settings.lead_details_url IS 'The page of one lead in the OEM''s own tools, linked from failure notices and the daily recap: an http:// or https:// URL template where {lead_id} stands for the lead, such as https://crm.oem.example/leads/{lead_id}; NULL (default): no link, and the notice says so.';
COMMENT ON COLUMN aimroute.settings.lead_list_url IS 'The list of a day''s leads in the OEM''s own tools, linked from the daily recap: an http:// or https:// URL template where {date} stands for the day recapped (YYYY-MM-DD, settings.timezone), such as https://crm.oem.example/leads?date={date}; NULL (default): no link, and the recap says so.';
GRANT SELECT (lead_details_url, lead_list_url) ON aimroute.settings TO aimroute_region, aimroute_dealer;

-- (aimroute.settings_validate() checks this setting from its one 0.2.0 text, in the section "settings" at the end.)

ALTER TABLE aimroute.outbox ADD COLUMN body_html text;
COMMENT ON COLUMN aimroute.outbox.body_html IS 'The HTML part of a failure notice or daily recap, sent with body (the plain-text part) as multipart/alternative; NULL for every other message.';

--
-- Notices to people (failure notices, the daily recap; docs/delivery.md,
-- Notices): the lead's key details, what failed and why in words, links to
-- the OEM's own lead pages (settings.lead_details_url, lead_list_url), and
-- the SQL for operators last.  Each is queued with a plain-text body and
-- an HTML one (outbox.body, outbox.body_html) and sent as
-- multipart/alternative (render_email_alternative).
--
CREATE FUNCTION aimroute.html_escape(t text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN replace(replace(replace(replace(replace(t, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;');
COMMENT ON FUNCTION aimroute.html_escape(text) IS
    'Text made safe for HTML content and quoted attribute values: & < > " and '' as character references.';

-- notice_line: one line of a notice, whatever the value holds: control
-- characters (CR, LF, tabs) become a space, so that a lead's name cannot
-- start a line of its own (a forged link, a forged header).
CREATE FUNCTION aimroute.notice_line(t text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN nullif(btrim(regexp_replace(t, '[[:cntrl:]]+', ' ', 'g')), '');
COMMENT ON FUNCTION aimroute.notice_line(text) IS
    'A value as one line of a notice: control characters (CR, LF, tab) as a space, trimmed; NULL when nothing is left.';

CREATE FUNCTION aimroute.notice_link(template text, lead_id bigint, day date) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN replace(replace(template, '{lead_id}', coalesce(lead_id::text, '')),
                   '{date}', coalesce(to_char(day::timestamp, 'YYYY-MM-DD'), ''));
COMMENT ON FUNCTION aimroute.notice_link(text, bigint, date) IS
    'A link of a notice from its URL template (settings.lead_details_url, settings.lead_list_url): {lead_id} and {date} (YYYY-MM-DD) replaced; NULL when the template is NULL.';

-- failure_reason: why a message was not delivered, in words, with the
-- receiver's own answer after it.
CREATE FUNCTION aimroute.failure_reason(method text, role text, recipient text, outcome text, response text)
RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('%s %s %s', w.who, aimroute.notice_line(recipient),
               CASE WHEN outcome = 'Hard Bounce' THEN 'does not exist or does not take mail'
                    WHEN outcome = 'Soft Bounce' THEN 'has a full mailbox'
                    WHEN outcome = 'Suppressed'
                        THEN 'is on the suppression list after an earlier bounce, so nothing was sent to it: correct the address, then reset the contact (aimroute.set_delivery_status_active)'
                    WHEN method = 'mobile' THEN 'could not be reached through the push gateway'
                    WHEN role = 'adf_http' THEN 'did not take the lead'
                    WHEN response LIKE '%gave up after%' THEN 'could not be reached'
                    ELSE 'refused the message' END
               || CASE WHEN response LIKE '%gave up after%' THEN ', and the last retry has run out' ELSE '' END)
           || coalesce(format(' (%s %s)',
                              CASE WHEN outcome = 'Suppressed' OR response LIKE 'not sent:%' THEN 'aimroute:'
                                   WHEN method = 'email' OR role = 'adf_email' THEN 'the mail server answered'
                                   ELSE 'the answer was' END,
                              left(aimroute.notice_line(response), 300)), '')
      FROM (SELECT CASE role WHEN 'To' THEN 'The dealer''s lead address'
                             WHEN 'CC' THEN 'The dealer''s copy (CC) address'
                             WHEN 'adf_email' THEN 'The dealer''s CRM address'
                             WHEN 'adf_http' THEN 'The dealer''s CRM endpoint'
                             WHEN 'Push' THEN 'The mobile number'
                             ELSE 'The address' END AS who) w
$$;
COMMENT ON FUNCTION aimroute.failure_reason(text, text, text, text, text) IS
    'Why a message was not delivered, in words (such as: The dealer''s lead address sales@... does not exist or does not take mail), with the receiver''s answer in brackets.';

-- lead_key_details: what a person needs to recognize a lead, as labelled
-- lines, each one line (notice_line); empty values are left out.
CREATE FUNCTION aimroute.lead_key_details(p_lead_id bigint, p_dealer_number text, s aimroute.settings)
RETURNS TABLE (label text, value text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT x.label, aimroute.notice_line(x.value)
      FROM aimroute.leads l
      LEFT JOIN aimroute.dealers d ON d.dealer_number = p_dealer_number
      LEFT JOIN aimroute.brands b ON b.brand_code = l.brand_code
     CROSS JOIN LATERAL (VALUES
            (1, 'Lead', l.lead_id::text),
            (2, 'Received', to_char(l.received_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI') || ' ' || s.timezone),
            (3, 'Name', concat_ws(' ', l.first_name, l.last_name)),
            (4, 'Email', l.email),
            (5, 'Phone', l.phone),
            (6, 'Product', concat_ws(' ', coalesce(b.name, l.brand_code), l.product_code)),
            (7, 'Place', concat_ws(', ', l.city,
                                   nullif(concat_ws(' ', l.state_code, coalesce(l.postal_code, l.postal_code_input)), ''),
                                   l.country)),
            (8, 'Dealer', coalesce(d.name || ' (' || p_dealer_number || ')', p_dealer_number)
                          || coalesce(', region ' || d.region, ''))) AS x (n, label, value)
     WHERE l.lead_id = p_lead_id AND aimroute.notice_line(x.value) IS NOT NULL
     ORDER BY x.n
$$;
COMMENT ON FUNCTION aimroute.lead_key_details(bigint, text, aimroute.settings) IS
    'A lead''s key details for a notice: lead, received, name, email, phone, product, place and dealer, as label and one-line value (empty ones left out).';

-- notice_html: the HTML page of a notice around its content: inline
-- styles only (mail clients drop style sheets), the operators' SQL in a
-- grey footer.  Every text in it is escaped by its caller or here.
CREATE FUNCTION aimroute.notice_html(title text, content text, operator_lines text[], signature text)
RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT concat(
        '<!DOCTYPE html>', E'\n',
        '<html><head><meta charset="utf-8"><title>', aimroute.html_escape(title), '</title></head>', E'\n',
        '<body style="margin:0;padding:16px;background:#f3f4f6;font-family:Helvetica,Arial,sans-serif;font-size:14px;color:#1f2328">', E'\n',
        '<div style="max-width:680px;margin:0 auto;background:#ffffff;border:1px solid #d0d7de;border-radius:6px;padding:20px 24px">', E'\n',
        content,
        '<div style="margin-top:20px;padding-top:10px;border-top:1px solid #d0d7de;font-size:12px;color:#57606a">', E'\n',
        '<p style="margin:0 0 4px">For operators:</p>', E'\n',
        (SELECT string_agg('<div><code style="font-family:Menlo,Consolas,monospace">' || aimroute.html_escape(o) || '</code></div>', E'\n')
           FROM unnest(operator_lines) AS o), E'\n',
        '<p style="margin:10px 0 0">', aimroute.html_escape(signature), '</p>', E'\n',
        '</div></div></body></html>', E'\n')
$$;
COMMENT ON FUNCTION aimroute.notice_html(text, text, text[], text) IS
    'The HTML page of a notice: its escaped title, the content (HTML), the operators'' SQL as a footer, and the signature.';

-- notice_details_html: a lead's key details as an HTML table.
CREATE FUNCTION aimroute.notice_details_html(labels text[], vals text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '<table style="border-collapse:collapse;margin:8px 0 12px">' || E'\n'
           || string_agg('<tr><th style="text-align:left;vertical-align:top;padding:2px 16px 2px 0;color:#57606a;font-weight:normal">'
                         || aimroute.html_escape(x.label) || '</th><td style="padding:2px 0">'
                         || aimroute.html_escape(x.value) || '</td></tr>', E'\n' ORDER BY x.n)
           || E'\n</table>\n'
      FROM unnest(labels, vals) WITH ORDINALITY AS x (label, value, n)
$$;
COMMENT ON FUNCTION aimroute.notice_details_html(text[], text[]) IS
    'Labelled values as an HTML table, escaped.';

CREATE FUNCTION aimroute.notice_link_html(url text, words text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN '<a href="' || aimroute.html_escape(url) || '" style="display:inline-block;padding:6px 14px;background:#0b5cad;color:#ffffff;text-decoration:none;border-radius:4px">'
           || aimroute.html_escape(words) || '</a>';
COMMENT ON FUNCTION aimroute.notice_link_html(text, text) IS
    'A link of a notice as an HTML button, URL and words escaped.';

--
-- failure_notice_content: the real-time failure notice of a notice whose
-- delivery ended in total or partial failure: subject, text and HTML.
--
CREATE FUNCTION aimroute.failure_notice_content(p_notification_id bigint, s aimroute.settings,
                                                OUT subject text, OUT text_body text, OUT html_body text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n aimroute.lead_notifications;
    dealer_name text;
    total integer;
    delivered integer;
    reasons text[];
    verdict text;
    labels text[];
    vals text[];
    link text;
    intro text;
    no_link text := 'There is no link to the lead''s page: settings.lead_details_url is not set.';
    ops text[];
    signature text := s.oem_name || ' lead delivery (aimroute)';
BEGIN
    SELECT * INTO n FROM aimroute.lead_notifications x WHERE x.notification_id = p_notification_id;
    SELECT d.name INTO dealer_name FROM aimroute.dealers d WHERE d.dealer_number = n.dealer_number;
    SELECT count(*) FILTER (WHERE o.status <> 'cancelled'),
           count(*) FILTER (WHERE o.status = 'delivered'),
           array_agg(aimroute.failure_reason(o.method, o.role, o.recipient, o.outcome, o.last_response)
                     ORDER BY o.message_id) FILTER (WHERE o.status = 'failed')
      INTO total, delivered, reasons
      FROM aimroute.outbox o
     WHERE o.notification_id = n.notification_id AND o.purpose = 'lead';
    verdict := CASE WHEN delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END;
    SELECT array_agg(k.label), array_agg(k.value) INTO labels, vals
      FROM aimroute.lead_key_details(n.lead_id, n.dealer_number, s) k;
    link := aimroute.notice_link(s.lead_details_url, n.lead_id, NULL);
    intro := format('Lead %s was sent to %s on %s %s, and its delivery ended in %s: %s of %s messages delivered.',
                    n.lead_id, coalesce(aimroute.notice_line(dealer_name) || ' (' || n.dealer_number || ')', 'dealer ' || n.dealer_number),
                    to_char(n.queued_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI'), s.timezone,
                    verdict, delivered, total);
    ops := ARRAY['What to check: SELECT * FROM aimroute.delivery_attempts WHERE lead_id = ' || n.lead_id || ';',
                 'Send it again once fixed: SELECT aimroute.send_lead(' || n.lead_id || ');'];
    subject := format('Lead %s not delivered to dealer %s (%s)', n.lead_id, n.dealer_number, verdict);
    text_body := concat_ws(E'\n',
        intro,
        '',
        (SELECT string_agg(rpad(x.label || ':', 10) || ' ' || x.value, E'\n' ORDER BY x.n)
           FROM unnest(labels, vals) WITH ORDINALITY AS x (label, value, n)),
        '',
        'Not delivered:',
        (SELECT string_agg('  - ' || r, E'\n') FROM unnest(reasons) AS r),
        '',
        coalesce('Open the lead: ' || link, no_link),
        '',
        'For operators:',
        (SELECT string_agg('  ' || o, E'\n') FROM unnest(ops) AS o),
        '',
        '-- ',
        signature);
    html_body := aimroute.notice_html(subject,
        concat('<h1 style="font-size:18px;margin:0 0 10px">', aimroute.html_escape(subject), '</h1>', E'\n',
               '<p style="margin:0 0 8px">', aimroute.html_escape(intro), '</p>', E'\n',
               aimroute.notice_details_html(labels, vals),
               '<h2 style="font-size:15px;margin:12px 0 6px">Not delivered</h2>', E'\n',
               '<ul style="margin:0 0 12px;padding-left:20px">', E'\n',
               (SELECT string_agg('<li style="margin:0 0 4px">' || aimroute.html_escape(r) || '</li>', E'\n') FROM unnest(reasons) AS r),
               E'\n</ul>\n',
               '<p style="margin:12px 0">',
               coalesce(aimroute.notice_link_html(link, 'Open the lead'), aimroute.html_escape(no_link)),
               '</p>', E'\n'),
        ops, signature);
END
$$;
COMMENT ON FUNCTION aimroute.failure_notice_content(bigint, aimroute.settings) IS
    'The real-time failure notice of a lead notice: subject, plain text and HTML with the lead''s key details, each message not delivered and why in words, the link to the lead''s page (settings.lead_details_url) and the operators'' SQL. Internal: delivery_settle queues it.';
REVOKE EXECUTE ON FUNCTION aimroute.failure_notice_content(bigint, aimroute.settings) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.failure_notice_content(bigint, aimroute.settings) TO aimroute_admin;

--
-- daily_recap_content: the daily recap of a day's failing leads for one
-- recipient (a region's, a dealer's or all): subject, text and HTML, and
-- how many leads it lists (0: nothing to send).
--
CREATE FUNCTION aimroute.daily_recap_content(p_day date, p_region text, p_dealer_number text, s aimroute.settings,
                                             OUT leads integer, OUT subject text, OUT text_body text, OUT html_body text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i record;
    list_link text := aimroute.notice_link(s.lead_list_url, NULL, p_day);
    link text;
    title text;
    reasons text[];
    statuses text;
    summary text;
    text_items text[] := '{}';
    html_items text[] := '{}';
    lead_ids bigint[] := '{}';
    ops text[];
    intro text;
    signature text := s.oem_name || ' lead delivery (aimroute)';
BEGIN
    FOR i IN
        SELECT x.* FROM aimroute.delivery_issues x
         WHERE (x.failed_at AT TIME ZONE s.timezone)::date = p_day
           AND (p_region IS NULL OR x.region = p_region)
           AND (p_dealer_number IS NULL OR x.dealer_number = p_dealer_number)
         ORDER BY x.lead_id, x.notification_id
    LOOP
        SELECT array_agg(aimroute.failure_reason(o.method, o.role, o.recipient, o.outcome, o.last_response)
                         ORDER BY o.message_id)
          INTO reasons
          FROM aimroute.outbox o
         WHERE o.notification_id = i.notification_id AND o.purpose = 'lead' AND o.status = 'failed';
        SELECT concat_ws(', ', l.lead_id::text,
                         aimroute.notice_line(concat_ws(' ', l.first_name, l.last_name)),
                         aimroute.notice_line(concat_ws(' ', coalesce(b.name, l.brand_code), l.product_code)),
                         aimroute.notice_line(concat_ws(', ', l.city, nullif(concat_ws(' ', l.state_code, l.postal_code), ''))))
          INTO title
          FROM aimroute.leads l LEFT JOIN aimroute.brands b ON b.brand_code = l.brand_code
         WHERE l.lead_id = i.lead_id;
        title := 'Lead ' || title;
        statuses := concat_ws(', ', 'email ' || i.email_status, 'mobile ' || i.mobile_status, 'CRM ' || i.crm_status);
        summary := format('%s (%s): %s (%s)', aimroute.notice_line(i.dealer_name), i.dealer_number, i.failure, statuses);
        link := aimroute.notice_link(s.lead_details_url, i.lead_id, NULL);
        lead_ids := lead_ids || i.lead_id;
        text_items := text_items || concat_ws(E'\n',
            title,
            '  Dealer:  ' || summary,
            (SELECT string_agg('  Why:     ' || r, E'\n') FROM unnest(reasons) AS r),
            '  Open:    ' || link);
        html_items := html_items || concat(
            '<li style="margin:0 0 12px"><div style="font-weight:bold">', aimroute.html_escape(title), '</div>', E'\n',
            '<div>Dealer: ', aimroute.html_escape(summary), '</div>', E'\n',
            (SELECT string_agg('<div style="color:#57606a">Why: ' || aimroute.html_escape(r) || '</div>', E'\n') FROM unnest(reasons) AS r),
            CASE WHEN link IS NOT NULL
                 THEN E'\n<div><a href="' || aimroute.html_escape(link) || '">Open the lead</a></div>' END,
            '</li>');
    END LOOP;
    leads := (SELECT count(DISTINCT x) FROM unnest(lead_ids) AS x);
    IF leads = 0 THEN
        RETURN;
    END IF;
    subject := format('Lead delivery failures on %s: %s lead%s%s', p_day, leads, CASE WHEN leads = 1 THEN '' ELSE 's' END,
                      coalesce(' (region ' || p_region || ')', ' (dealer ' || p_dealer_number || ')', ''));
    intro := format('%s lead%s whose delivery failed wholly or partly on %s (%s).', leads,
                    CASE WHEN leads = 1 THEN '' ELSE 's' END, to_char(p_day, 'YYYY-MM-DD'), s.timezone);
    ops := ARRAY[format('The details: SELECT * FROM aimroute.delivery_issues WHERE (failed_at AT TIME ZONE %L)::date = %L;',
                        s.timezone, to_char(p_day, 'YYYY-MM-DD'))];
    text_body := concat_ws(E'\n',
        intro,
        coalesce('The day''s list: ' || list_link,
                 'There is no link to the day''s list: settings.lead_list_url is not set.'),
        '',
        array_to_string(text_items, E'\n\n'),
        '',
        'For operators:',
        '  ' || ops[1],
        '',
        '-- ',
        signature);
    html_body := aimroute.notice_html(subject,
        concat('<h1 style="font-size:18px;margin:0 0 10px">', aimroute.html_escape(subject), '</h1>', E'\n',
               '<p style="margin:0 0 8px">', aimroute.html_escape(intro), '</p>', E'\n',
               '<p style="margin:0 0 14px">',
               coalesce(aimroute.notice_link_html(list_link, 'Open the day''s list'),
                        aimroute.html_escape('There is no link to the day''s list: settings.lead_list_url is not set.')),
               '</p>', E'\n',
               '<ol style="margin:0;padding-left:20px">', E'\n', array_to_string(html_items, E'\n'), E'\n</ol>\n'),
        ops, signature);
END
$$;
COMMENT ON FUNCTION aimroute.daily_recap_content(date, text, text, aimroute.settings) IS
    'The daily recap of a day''s failing leads for one recipient (p_region, p_dealer_number: NULL for all) on p_day: how many leads, subject, plain text and HTML with each lead''s key details, why it failed in words, links to its page and to the day''s list (settings.lead_details_url, lead_list_url) and the operators'' SQL. Internal: queue_daily_recap queues it.';
REVOKE EXECUTE ON FUNCTION aimroute.daily_recap_content(date, text, text, aimroute.settings) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.daily_recap_content(date, text, text, aimroute.settings) TO aimroute_admin;

-- render_email_alternative: a notice as sent: the headers of render_email,
-- then multipart/alternative with the text part first and the HTML part
-- last (the one a mail client shows when it can), each in base64.  The
-- boundary starts with =_, which base64 never holds.  PL/pgSQL, as
-- render_email, for its kept plan.
CREATE FUNCTION aimroute.render_email_alternative(mail_from text, rcpt text, subject text, text_body text,
                                                  html_body text, message_key text, sent_at timestamptz)
RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    boundary text := '=_aimroute_' || md5(coalesce(message_key, '') || sent_at::text);
BEGIN
    RETURN concat_ws(E'\r\n',
        'Date: ' || to_char(sent_at AT TIME ZONE 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS') || ' +0000',
        'From: ' || mail_from,
        'To: ' || rcpt,
        'Subject: ' || aimroute.mime_header_text(left(regexp_replace(subject, '[\r\n\t]+', ' ', 'g'), 200)),
        'Message-ID: ' || message_key,
        'MIME-Version: 1.0',
        'Content-Type: multipart/alternative; boundary="' || boundary || '"',
        'X-Mailer: aimroute',
        '',
        '--' || boundary,
        'Content-Type: text/plain; charset=UTF-8',
        'Content-Transfer-Encoding: base64',
        '',
        replace(encode(convert_to(text_body, 'UTF8'), 'base64'), E'\n', E'\r\n'),
        '--' || boundary,
        'Content-Type: text/html; charset=UTF-8',
        'Content-Transfer-Encoding: base64',
        '',
        replace(encode(convert_to(html_body, 'UTF8'), 'base64'), E'\n', E'\r\n'),
        '--' || boundary || '--',
        '');
END
$$;
COMMENT ON FUNCTION aimroute.render_email_alternative(text, text, text, text, text, text, timestamptz) IS
    'A notice as sent over SMTP: the headers of render_email, then a multipart/alternative body with a text/plain and a text/html part, each in base64, CRLF line ends.';

CREATE OR REPLACE FUNCTION aimroute.delivery_settle(p_notification_id bigint)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n aimroute.lead_notifications;
    s aimroute.settings;
    d aimroute.dealers;
    total integer;
    delivered integer;
    open_count integer;
    notice record;
    queued integer;
BEGIN
    SELECT * INTO n FROM aimroute.lead_notifications x WHERE x.notification_id = p_notification_id FOR UPDATE;
    IF NOT FOUND OR n.failure_notice_at IS NOT NULL THEN
        RETURN 0;
    END IF;
    SELECT count(*) FILTER (WHERE o.status <> 'cancelled'),
           count(*) FILTER (WHERE o.status = 'delivered'),
           count(*) FILTER (WHERE o.status IN ('queued', 'sending'))
      INTO total, delivered, open_count
      FROM aimroute.outbox o
     WHERE o.notification_id = n.notification_id AND o.purpose = 'lead';
    IF open_count > 0 OR total = 0 OR delivered = total THEN
        RETURN 0;
    END IF;
    SELECT * INTO s FROM aimroute.settings;
    SELECT * INTO d FROM aimroute.dealers x WHERE x.dealer_number = n.dealer_number;
    SELECT * INTO notice FROM aimroute.failure_notice_content(n.notification_id, s);
    INSERT INTO aimroute.outbox (notification_id, lead_id, dealer_number, purpose, method, role,
                                 contact_id, recipient, subject, body, body_html)
    SELECT n.notification_id, n.lead_id, n.dealer_number, 'failure notice', 'email', 'Notice',
           r.contact_id, r.email, notice.subject, notice.text_body, notice.html_body
      FROM (SELECT NULL::bigint AS contact_id, c.email
              FROM aimroute.notification_contacts c
             WHERE c.contact_type = 'Dealer Lead Delivery Notification (real-time)'
               AND (c.region IS NULL OR c.region = d.region)
            UNION
            SELECT c.contact_id, c.email
              FROM aimroute.dealer_contacts c
             WHERE c.dealer_number = n.dealer_number AND c.email IS NOT NULL
               AND 'Dealer Lead Delivery Notification (real-time)' = ANY (c.contact_types)) AS r;
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM aimroute.wake_delivery_worker();
    END IF;
    UPDATE aimroute.lead_notifications x SET failure_notice_at = clock_timestamp()
     WHERE x.notification_id = n.notification_id;
    RETURN queued;
END
$$;

CREATE OR REPLACE FUNCTION aimroute.queue_daily_recap(at timestamptz DEFAULT clock_timestamp())
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s aimroute.settings;
    local_now timestamp;
    recap_day date;
    last_day date;
    queued integer;
    total integer := 0;
    lead_count integer;
BEGIN
    SELECT * INTO s FROM aimroute.settings;
    local_now := queue_daily_recap.at AT TIME ZONE s.timezone;
    IF extract(hour FROM local_now) < s.daily_recap_hour THEN
        RETURN 0;
    END IF;
    SELECT max(r.day) INTO last_day FROM aimroute.daily_recaps r;
    FOR recap_day IN
        SELECT d::date FROM generate_series(greatest(last_day + 1, local_now::date - 7),
                                            local_now::date - 1, interval '1 day') AS d
    LOOP
        INSERT INTO aimroute.daily_recaps (day) VALUES (recap_day) ON CONFLICT (day) DO NOTHING;
        CONTINUE WHEN NOT FOUND;

        INSERT INTO aimroute.outbox (purpose, method, role, contact_id, dealer_number, recipient, subject, body, body_html)
        SELECT 'daily recap', 'email', 'Recap', r.contact_id, r.dealer_number, r.email,
               x.subject, x.text_body, x.html_body
          FROM (SELECT NULL::bigint AS contact_id, n.email, n.region, NULL::text AS dealer_number
                  FROM aimroute.notification_contacts n
                 WHERE n.contact_type = 'Lead Delivery Notification Daily'
                UNION
                SELECT c.contact_id, c.email, NULL, c.dealer_number
                  FROM aimroute.dealer_contacts c
                 WHERE c.email IS NOT NULL AND 'Lead Delivery Notification Daily' = ANY (c.contact_types)) AS r
         CROSS JOIN LATERAL aimroute.daily_recap_content(recap_day, r.region, r.dealer_number, s) AS x
         WHERE x.leads > 0;
        GET DIAGNOSTICS queued = ROW_COUNT;
        SELECT count(DISTINCT i.lead_id) INTO lead_count FROM aimroute.delivery_issues i
         WHERE (i.failed_at AT TIME ZONE s.timezone)::date = recap_day;
        UPDATE aimroute.daily_recaps r SET leads = lead_count, messages = queued WHERE r.day = recap_day;
        total := total + queued;
    END LOOP;
    IF total > 0 THEN
        PERFORM aimroute.wake_delivery_worker();
    END IF;
    RETURN total;
END
$$;

CREATE OR REPLACE FUNCTION aimroute.delivery_render_batch(messages aimroute.outbox[], s aimroute.settings)
RETURNS SETOF aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    -- A few messages, each looked up by key (as in delivery_claim).
    SET enable_hashjoin = off
    SET enable_mergejoin = off
    SET enable_seqscan = off
    -- A path turned off costs 1e10: the plan would pass every JIT
    -- threshold, and each statement would be compiled.
    SET jit = off
AS $$
BEGIN
    RETURN QUERY
    SELECT m.message_id, m.attempts,
           CASE WHEN k.http THEN 'http' ELSE 'smtp' END,
           CASE k.kind WHEN 'push' THEN s.push_gateway_url WHEN 'adf_http' THEN m.recipient ELSE s.smtp_url END,
           aimroute.envelope_sender(m, s),
           -- The SMTP login is for the SMTP server only.
           CASE WHEN NOT k.http THEN m.recipient END,
           CASE WHEN NOT k.http THEN s.smtp_username END,
           CASE WHEN NOT k.http THEN s.smtp_password END,
           CASE k.kind WHEN 'push' THEN 'application/json' WHEN 'adf_http' THEN 'application/xml' END,
           m.message_key,
           CASE k.kind
               -- A notice queued before notices had an HTML part has none.
               WHEN 'notice' THEN
                   CASE WHEN m.body_html IS NULL
                        THEN aimroute.render_email(s.smtp_from, m.recipient, m.subject, m.body, m.message_key, clock_timestamp())
                        ELSE aimroute.render_email_alternative(s.smtp_from, m.recipient, m.subject, m.body, m.body_html,
                                                               m.message_key, clock_timestamp()) END
               WHEN 'email' THEN
                   aimroute.render_email(s.smtp_from, m.recipient, aimroute.lead_email_subject(l),
                       aimroute.lead_email_text(l, d.name, CASE WHEN m.role = 'To' THEN s.view_link_url || n.view_token END),
                       m.message_key, clock_timestamp())
               WHEN 'push' THEN
                   json_build_object(
                       'to', m.recipient,
                       'title', aimroute.lead_email_subject(l),
                       'body', concat_ws(', ', nullif(concat_ws(' ', l.first_name, l.last_name), ''),
                                         nullif(concat_ws(' ', l.city, l.state_code), ''), l.phone),
                       'lead_id', l.lead_id,
                       'dealer_number', l.dealer_number,
                       'url', CASE WHEN EXISTS (SELECT FROM aimroute.dealer_contacts c
                                                 WHERE c.contact_id = m.contact_id
                                                   AND 'Leads: Emails To' = ANY (c.contact_types))
                                   THEN s.view_link_url || n.view_token END,
                       'message_key', m.message_key)::text
               WHEN 'adf_email' THEN
                   aimroute.render_email(s.smtp_from, m.recipient,
                       format('ADF lead %s for dealer %s', l.lead_id, l.dealer_number),
                       aimroute.lead_adf(l.lead_id), m.message_key, clock_timestamp())
               ELSE aimroute.lead_adf(l.lead_id) END
      FROM unnest(messages) AS m
      CROSS JOIN LATERAL (
          SELECT x.kind, x.kind IN ('push', 'adf_http') AS http
            FROM (SELECT CASE WHEN m.purpose <> 'lead' THEN 'notice'
                              WHEN m.method = 'email' THEN 'email'
                              WHEN m.method = 'mobile' THEN 'push'
                              WHEN m.role = 'adf_email' THEN 'adf_email'
                              ELSE 'adf_http' END AS kind) x) k
      LEFT JOIN aimroute.leads l ON k.kind <> 'notice' AND l.lead_id = m.lead_id
      LEFT JOIN aimroute.lead_notifications n ON k.kind <> 'notice' AND n.notification_id = m.notification_id
      LEFT JOIN aimroute.dealers d ON k.kind <> 'notice' AND d.dealer_number = m.dealer_number;
END
$$;

-- dated: territories and product assignments carry valid_from / valid_to
-- (issue 20, part 3); the one-holder-per-postal-code rule holds per period.
-- docs/routing.md, "Dated configuration".
ALTER TABLE aimroute.territories
    ADD COLUMN valid_from timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN valid_to timestamptz,
    DROP CONSTRAINT territories_unique,
    ADD CONSTRAINT territories_unique
        UNIQUE NULLS NOT DISTINCT (dealer_number, brand_code, kind, country, code, valid_from),
    ADD CONSTRAINT territories_period_check CHECK (valid_from < valid_to);
DROP INDEX aimroute.territories_one_postal_holder;
CREATE UNIQUE INDEX territories_one_postal_holder
    ON aimroute.territories (country, code, brand_code, valid_from) NULLS NOT DISTINCT
    WHERE kind = 'postal';
COMMENT ON COLUMN aimroute.territories.valid_from IS 'First moment the territory routes leads (by their received_at); -infinity (the default, also what NULL becomes) for always.';
COMMENT ON COLUMN aimroute.territories.valid_to IS 'Moment the territory stops routing leads (exclusive); NULL (the default) for never.';
ALTER TABLE aimroute.product_assignments
    ADD COLUMN valid_from timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN valid_to timestamptz,
    ADD CONSTRAINT product_assignments_period_check CHECK (valid_from < valid_to),
    DROP CONSTRAINT product_assignments_pkey,
    ADD PRIMARY KEY (dealer_number, product_code, valid_from);
COMMENT ON COLUMN aimroute.product_assignments.valid_from IS 'First moment the assignment counts for a lead (by its received_at); -infinity (the default) for always.';
COMMENT ON COLUMN aimroute.product_assignments.valid_to IS 'Moment the assignment stops counting (exclusive); NULL (the default) for never.';
CREATE FUNCTION aimroute.period_text(valid_from timestamptz, valid_to timestamptz) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
               WHEN coalesce(valid_from, '-infinity') = '-infinity' AND valid_to IS NULL THEN 'always'
               WHEN coalesce(valid_from, '-infinity') = '-infinity' THEN format('until %s', valid_to)
               WHEN valid_to IS NULL THEN format('from %s', valid_from)
               ELSE format('from %s to %s', valid_from, valid_to)
           END
$$;
COMMENT ON FUNCTION aimroute.period_text(timestamptz, timestamptz) IS
    'A period of a territory or product assignment in words (always, until ..., from ..., from ... to ...), for messages and explanations.';
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
    held_from timestamptz;
    held_to timestamptz;
BEGIN
    NEW.valid_from := coalesce(NEW.valid_from, '-infinity');
    IF NEW.valid_from >= NEW.valid_to THEN
        RAISE EXCEPTION 'a territory of dealer % cannot end (valid_to %) before it starts (valid_from %)',
            NEW.dealer_number, NEW.valid_to, NEW.valid_from
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'valid_to is the first moment the territory no longer applies: set it after valid_from, or leave it NULL for never.';
    END IF;
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
        -- Periods that overlap but start apart escape the unique index:
        -- writers of postal territories take turns (one lock for the
        -- transaction), so that each sees the rows of the one before at
        -- READ COMMITTED.
        PERFORM pg_catalog.pg_advisory_xact_lock('aimroute.territories'::regclass::oid::bigint);
        SELECT t.dealer_number, t.valid_from, t.valid_to INTO holder, held_from, held_to
          FROM aimroute.territories t
         WHERE t.kind = 'postal' AND t.country = NEW.country AND t.code = NEW.code
           AND t.brand_code IS NOT DISTINCT FROM NEW.brand_code
           AND t.territory_id IS DISTINCT FROM NEW.territory_id
           AND t.valid_from < coalesce(NEW.valid_to, 'infinity')
           AND NEW.valid_from < coalesce(t.valid_to, 'infinity')
         ORDER BY t.valid_from
         LIMIT 1;
        IF holder IS NOT NULL AND held_from = '-infinity' AND held_to IS NULL
           AND NEW.valid_from = '-infinity' AND NEW.valid_to IS NULL THEN
            RAISE EXCEPTION 'postal code % % is already held by dealer % for %',
                NEW.country, NEW.code, holder,
                coalesce('brand ' || NEW.brand_code, 'all brands')
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('A postal code can be held by one dealer per brand scope; dealer %s cannot take it as well.', NEW.dealer_number),
                      HINT = format('Remove it from dealer %s first, or assign it to dealer %s for a single brand (brand_code).', holder, NEW.dealer_number);
        ELSIF holder IS NOT NULL THEN
            RAISE EXCEPTION 'postal code % % is already held by dealer % for % %',
                NEW.country, NEW.code, holder,
                coalesce('brand ' || NEW.brand_code, 'all brands'),
                aimroute.period_text(held_from, held_to)
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('A postal code can be held by one dealer per brand scope at a time; dealer %s cannot take it %s as well.',
                                      NEW.dealer_number, aimroute.period_text(NEW.valid_from, NEW.valid_to)),
                      HINT = format('Let the periods follow each other: end dealer %s''s (valid_to) where dealer %s''s starts (valid_from), or the other way round.',
                                    holder, NEW.dealer_number);
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

-- dated: routing reads the periods: the trigger routes a lead under the
-- configuration valid at its received_at, route() at as_of (NULL: now),
-- and simulate_routing replays leads at their received_at or at as_of.
DROP FUNCTION aimroute.route(text, text, text, text, text, text, text[], text);
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
DROP FUNCTION aimroute.simulate_routing(timestamptz, timestamptz);
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


-- ties: ties and caps (issue 20, part 1; SPEC section 10).
-- settings.tie_break: dealer_number (default, as before) or round_robin,
-- where equally near dealers take turns per brand, counted in
-- aimroute.tie_turns by the routing transaction (src/ties.c).
-- In steps, as reroute_clock above: a new column with a default makes
-- PostgreSQL check the rows of settings, which aimroute.delivery_endpoint's
-- use of its row type forbids.  Filling in the default is not a change of
-- the configuration: no new config_version.
ALTER TABLE aimroute.settings ADD COLUMN tie_break text
    CONSTRAINT settings_tie_break_check CHECK (tie_break IN ('dealer_number', 'round_robin'));
ALTER TABLE aimroute.settings ALTER COLUMN tie_break SET DEFAULT 'dealer_number';
ALTER TABLE aimroute.settings DISABLE TRIGGER bump_config_version;
UPDATE aimroute.settings SET tie_break = 'dealer_number';
ALTER TABLE aimroute.settings ENABLE ALWAYS TRIGGER bump_config_version;
ALTER TABLE aimroute.settings ALTER COLUMN tie_break SET NOT NULL;
COMMENT ON COLUMN aimroute.settings.tie_break IS 'Which of several equally near dealers gets a lead: dealer_number (default), the lowest dealer number; round_robin, the one with the fewest leads of the brand by turn, the longest ago among equals (aimroute.tie_turns).';
GRANT SELECT (tie_break) ON aimroute.settings TO aimroute_region, aimroute_dealer;

-- (aimroute.settings_validate() checks this setting from its one 0.2.0 text, in the section "settings" at the end.)

CREATE TABLE aimroute.tie_turns (
    brand_code     text NOT NULL REFERENCES aimroute.brands ON UPDATE CASCADE ON DELETE CASCADE,
    dealer_number  text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    leads          bigint NOT NULL DEFAULT 0
        CONSTRAINT tie_turns_leads_check CHECK (leads >= 0),
    last_at        timestamptz,
    PRIMARY KEY (brand_code, dealer_number)
);
COMMENT ON TABLE aimroute.tie_turns IS
    'Round robin among equally near dealers (settings.tie_break = ''round_robin''): per brand and dealer, the leads received by a turn and when the last one came. Written by routing; reset a brand''s turns with DELETE.';
COMMENT ON COLUMN aimroute.tie_turns.leads IS 'Leads of the brand the dealer received by a round robin turn.';
COMMENT ON COLUMN aimroute.tie_turns.last_at IS 'When it received the last one; NULL: none yet.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.tie_turns', '');
GRANT ALL ON aimroute.tie_turns TO aimroute_admin;

-- caps: dealers.daily_lead_cap and aimroute.daily_lead_counts (SPEC
-- section 10): a dealer at its cap for the day (settings.timezone) is
-- skipped like an inactive one (src/caps.c).  The new column is NULL (no
-- cap) for every dealer: no new config_version is needed.
ALTER TABLE aimroute.dealers ADD COLUMN daily_lead_cap integer
    CONSTRAINT dealers_daily_lead_cap_check CHECK (daily_lead_cap > 0);
COMMENT ON COLUMN aimroute.dealers.daily_lead_cap IS
    'The most new leads routing gives the dealer in a day of the OEM''s time zone (settings.timezone, the day the lead was received); at the cap it is skipped like an inactive dealer (aimroute.daily_lead_counts). NULL: no cap.';

CREATE TABLE aimroute.daily_lead_counts (
    dealer_number  text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    day            date NOT NULL,
    leads          integer NOT NULL
        CONSTRAINT daily_lead_counts_leads_check CHECK (leads >= 0),
    PRIMARY KEY (dealer_number, day)
);
COMMENT ON TABLE aimroute.daily_lead_counts IS
    'Daily lead caps (dealers.daily_lead_cap): per capped dealer and day of settings.timezone, the new leads routing gave it. Written by routing; old days may be deleted.';
COMMENT ON COLUMN aimroute.daily_lead_counts.day IS 'The day the leads were received, in settings.timezone.';
COMMENT ON COLUMN aimroute.daily_lead_counts.leads IS 'New leads a rule routed to the dealer that day (pre-assigned and default-dealer leads, moves and re-routes are not counted).';
SELECT pg_catalog.pg_extension_config_dump('aimroute.daily_lead_counts', '');
GRANT ALL ON aimroute.daily_lead_counts TO aimroute_admin;

-- drive: Drive Distance (issue 18, SPEC section 2): settings.drive_distance_enabled
-- and settings.drive_network, the edge table of a road network that
-- osm2pgrouting imports from OpenStreetMap data.  pgRouting stays
-- optional: switching the setting on without it, or without a usable
-- table, is refused by aimroute.drive_network_check with what to install
-- or import.
-- In steps, as reroute_clock above: a new column with a default is refused
-- while a function takes the settings' row type.  Filling in the default is
-- not a change of the configuration: no new config_version.
ALTER TABLE aimroute.settings ADD COLUMN drive_distance_enabled boolean;
ALTER TABLE aimroute.settings ALTER COLUMN drive_distance_enabled SET DEFAULT false;
ALTER TABLE aimroute.settings DISABLE TRIGGER bump_config_version;
UPDATE aimroute.settings SET drive_distance_enabled = false;
ALTER TABLE aimroute.settings ENABLE ALWAYS TRIGGER bump_config_version;
ALTER TABLE aimroute.settings ALTER COLUMN drive_distance_enabled SET NOT NULL;
ALTER TABLE aimroute.settings ADD COLUMN drive_network text
    CONSTRAINT settings_drive_network_check CHECK (btrim(drive_network) <> '');
COMMENT ON COLUMN aimroute.settings.drive_distance_enabled IS 'Radius routing picks the dealer closest by road on the network drive_network names (docs/drive-distance.md); needs pgRouting (default false).';
COMMENT ON COLUMN aimroute.settings.drive_network IS 'The edge table of the road network, schema-qualified, as osm2pgrouting imports it from OpenStreetMap data, such as public.ways; NULL (default): none.';
GRANT SELECT (drive_distance_enabled, drive_network) ON aimroute.settings TO aimroute_region, aimroute_dealer;

CREATE FUNCTION aimroute.drive_network_check(network text) RETURNS regclass
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
    kind "char";
    col text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE e.extname = 'pgrouting') THEN
        IF EXISTS (SELECT FROM pg_catalog.pg_available_extensions a WHERE a.name = 'pgrouting') THEN
            RAISE EXCEPTION 'drive distance routing needs pgRouting, which is not installed in database %',
                            current_database()
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Run CREATE EXTENSION pgrouting in this database (docs/drive-distance.md).';
        END IF;
        RAISE EXCEPTION 'drive distance routing needs pgRouting, which is not installed in database %',
                        current_database()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Install pgRouting on this server (Debian and Ubuntu: apt-get install postgresql-15-pgrouting), then run CREATE EXTENSION pgrouting in this database (docs/drive-distance.md).';
    END IF;
    IF network IS NULL THEN
        RAISE EXCEPTION 'drive distance routing needs a road network, and settings.drive_network is not set'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Import an OpenStreetMap extract with osm2pgrouting and name its edge table in the same UPDATE: SET drive_network = ''public.ways'', drive_distance_enabled = true (docs/drive-distance.md).';
    END IF;
    BEGIN
        rel := pg_catalog.to_regclass(network);
    EXCEPTION WHEN invalid_name OR syntax_error OR feature_not_supported THEN
        rel := NULL;
    END;
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = rel;
    IF rel IS NULL OR kind NOT IN ('r', 'p', 'v', 'm', 'f') THEN
        RAISE EXCEPTION 'drive distance routing needs a road network, and table "%" (settings.drive_network) does not exist',
                        network
            USING ERRCODE = 'undefined_table',
                  HINT = 'Import an OpenStreetMap extract with osm2pgrouting, which makes the edge table ways, and name it with its schema, such as public.ways (docs/drive-distance.md).';
    END IF;
    SELECT m.col INTO col
      FROM (VALUES (1, 'source', '{int2,int4,int8}'::text[]), (2, 'target', '{int2,int4,int8}'),
                   (3, 'length_m', '{int2,int4,int8,float4,float8,numeric}'), (4, 'the_geom', '{geometry}'))
           AS m(i, col, types)
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = rel AND a.attname = m.col AND a.attnum > 0
                          AND NOT a.attisdropped
                          AND a.atttypid IN (SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typname = ANY (m.types)))
     ORDER BY m.i
     LIMIT 1;
    IF col IS NOT NULL THEN
        RAISE EXCEPTION 'table % (settings.drive_network) is not a road network: it has no column % of the expected type',
                        rel, col
            USING ERRCODE = 'undefined_column',
                  HINT = 'drive_network names the edge table osm2pgrouting imports: source and target (vertex ids), length_m (metres), the_geom (a PostGIS line), and reverse_cost (negative: one way) when it has one (docs/drive-distance.md).';
    END IF;
    RETURN rel;
END
$$;
COMMENT ON FUNCTION aimroute.drive_network_check(text) IS
    'The edge table a Drive Distance network names (settings.drive_network), when pgRouting is installed and the table has what routing reads; otherwise raises an error saying what to install or import.';



-- drive: the road network's version, for the road distances routing keeps
-- (docs/drive-distance.md, "The cache").
--
-- The version of the road network.  Routing keeps road distances in each
-- session (src/drive.c) for as long as the network table is the same table
-- and this version has not moved on: aimroute.drive_network_watch puts a
-- statement trigger on the network table, which gives it a new version,
-- never reused, with every change of the table, in the changing
-- transaction.  A network without the trigger (such as one imported again
-- with osm2pgrouting --clean) has its road distances kept for one
-- statement only.
--
CREATE SEQUENCE aimroute.drive_network_changes;
COMMENT ON SEQUENCE aimroute.drive_network_changes IS
    'Numbers for aimroute.drive_network_version; never reused.';

CREATE TABLE aimroute.drive_network_version (
    one         boolean PRIMARY KEY DEFAULT true CONSTRAINT drive_network_version_one_row CHECK (one),
    version     bigint NOT NULL DEFAULT 0,
    changed_at  timestamptz
);
COMMENT ON TABLE aimroute.drive_network_version IS
    'One row: the version of the Drive Distance road network, moved on by the trigger aimroute.drive_network_watch puts on the network table; road distances kept by routing are valid for one version. Do not change it by hand.';
COMMENT ON COLUMN aimroute.drive_network_version.version IS 'The number of the network''s current state.';
COMMENT ON COLUMN aimroute.drive_network_version.changed_at IS 'When the network last changed, as its trigger or drive_network_watch saw it; NULL: never.';
INSERT INTO aimroute.drive_network_version DEFAULT VALUES;
GRANT SELECT ON aimroute.drive_network_version TO aimroute_region, aimroute_dealer;
GRANT ALL ON aimroute.drive_network_version TO aimroute_admin;
GRANT ALL ON SEQUENCE aimroute.drive_network_changes TO aimroute_admin;

CREATE FUNCTION aimroute.drive_network_changed() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE aimroute.drive_network_version v
       SET version = pg_catalog.nextval('aimroute.drive_network_changes'), changed_at = pg_catalog.now()
     WHERE v.one;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION aimroute.drive_network_changed() IS
    'Statement trigger on the Drive Distance road network table (put there by drive_network_watch): gives the network a new version, so that the road distances sessions keep are measured again.';

CREATE FUNCTION aimroute.drive_network_watch(network text DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
    moved bigint;
BEGIN
    rel := aimroute.drive_network_check(coalesce(network, (SELECT s.drive_network FROM aimroute.settings s)));
    IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = rel) IN ('r', 'p')
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                        WHERE t.tgrelid = rel
                          AND t.tgfoid = 'aimroute.drive_network_changed()'::pg_catalog.regprocedure) THEN
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER aimroute_drive_network_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s'
            ' FOR EACH STATEMENT EXECUTE FUNCTION aimroute.drive_network_changed()', rel);
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER aimroute_drive_network_changed', rel);
    END IF;
    UPDATE aimroute.drive_network_version v
       SET version = pg_catalog.nextval('aimroute.drive_network_changes'), changed_at = pg_catalog.now()
     WHERE v.one
    RETURNING v.version INTO moved;
    RETURN moved;
END
$$;
COMMENT ON FUNCTION aimroute.drive_network_watch(text) IS
    'Puts the change trigger (aimroute_drive_network_changed) on a road network table, settings.drive_network when NULL, unless it has it, and gives the network a new version: run it after importing the network again (osm2pgrouting --clean makes a new table). Returns the new version.';
REVOKE EXECUTE ON FUNCTION aimroute.drive_network_watch(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.drive_network_watch(text) TO aimroute_admin;

-- settings: aimroute.settings_validate()'s 0.2.0 text, once, after every
-- section above added its settings.  Until here the row is changed only
-- to fill in new columns' defaults, which 0.1.0's text, still in place,
-- accepts (it reads only 0.1.0's columns).  A section that adds a setting
-- goes above this one and its check goes into this text.
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
    ELSIF NEW.drive_distance_enabled IS NULL THEN
        bad := 'drive_distance_enabled';
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
    ELSIF NEW.smtp_tls IS NULL OR NEW.smtp_tls NOT IN ('try', 'required') THEN
        bad := 'smtp_tls';
        allowed := 'try (STARTTLS when the server offers it) or required (never a login or a message in plaintext)';
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
    ELSIF NEW.bounce_address !~ '^[^@[:space:]<>+]{1,32}@[^@[:space:]<>]+$' THEN
        bad := 'bounce_address';
        allowed := 'an email address whose local part has at most 32 characters and no +, such as bounces@oem.example (aimroute adds +<key> to it), or NULL';
    ELSIF NOT aimroute.url_is_valid(NEW.bounce_mailbox_url, '{imap,imaps}') THEN
        bad := 'bounce_mailbox_url';
        allowed := 'an imap:// or imaps:// URL of a mailbox, such as imaps://mail.oem.example/INBOX (the login goes in bounce_mailbox_username and bounce_mailbox_password), or NULL for none';
    ELSIF NEW.reroute_clock IS NULL OR NEW.reroute_clock NOT IN ('elapsed', 'business_hours') THEN
        bad := 'reroute_clock';
        allowed := 'elapsed (reroute_after is elapsed time) or business_hours (the open time of the dealer holding the lead, dealers.business_hours)';
    ELSIF NOT (aimroute.url_is_valid(NEW.lead_details_url, '{http,https}')
               AND strpos(NEW.lead_details_url, '{lead_id}') > 0) THEN
        bad := 'lead_details_url';
        allowed := 'an http:// or https:// URL template with {lead_id} where the lead goes, such as https://crm.oem.example/leads/{lead_id}, or NULL for no link';
    ELSIF NOT (aimroute.url_is_valid(NEW.lead_list_url, '{http,https}')
               AND strpos(NEW.lead_list_url, '{date}') > 0) THEN
        bad := 'lead_list_url';
        allowed := 'an http:// or https:// URL template with {date} where the day goes (YYYY-MM-DD), such as https://crm.oem.example/leads?date={date}, or NULL for no link';
    ELSIF NEW.tie_break IS NULL OR NEW.tie_break NOT IN ('dealer_number', 'round_robin') THEN
        bad := 'tie_break';
        allowed := 'dealer_number (the lowest dealer number among equally near dealers) or round_robin (they take turns, per brand)';
    ELSIF btrim(NEW.drive_network) = '' THEN
        bad := 'drive_network';
        allowed := 'the edge table of a road network, with its schema, such as public.ways, or NULL for none';
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
    -- Switching Drive Distance on, or naming another network: can it run?
    IF NEW.drive_distance_enabled
       AND (TG_OP = 'INSERT' OR NOT OLD.drive_distance_enabled
            OR OLD.drive_network IS DISTINCT FROM NEW.drive_network) THEN
        PERFORM aimroute.drive_network_check(NEW.drive_network);
        -- Kept road distances need to know when the network changes: its
        -- trigger.  Not on INSERT, nor on the UPDATE a second INSERT makes
        -- (below): a restore brings the trigger with the table.
        IF TG_OP = 'UPDATE' AND pg_catalog.pg_trigger_depth() = 1 THEN
            BEGIN
                PERFORM aimroute.drive_network_watch(NEW.drive_network);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE NOTICE 'road distances are kept for one statement only: % has no change trigger', NEW.drive_network
                    USING HINT = 'The owner of the table can put it there: SELECT aimroute.drive_network_watch() (docs/drive-distance.md).';
            END;
        END IF;
    END IF;

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
            smtp_tls = NEW.smtp_tls, bounce_mailbox_url = NEW.bounce_mailbox_url,
            bounce_mailbox_username = NEW.bounce_mailbox_username,
            bounce_mailbox_password = NEW.bounce_mailbox_password,
            push_gateway_url = NEW.push_gateway_url,
            delivery_retry_schedule = NEW.delivery_retry_schedule,
            daily_recap_hour = NEW.daily_recap_hour, oem_name = NEW.oem_name,
            view_link_url = NEW.view_link_url, bounce_address = NEW.bounce_address,
            reroute_clock = NEW.reroute_clock,
            lead_details_url = NEW.lead_details_url, lead_list_url = NEW.lead_list_url,
            tie_break = NEW.tie_break,
            drive_distance_enabled = NEW.drive_distance_enabled, drive_network = NEW.drive_network
         WHERE s.singleton;
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;


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
