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

    IF NEW.timezone IS NOT NULL THEN
        BEGIN
            PERFORM now() AT TIME ZONE NEW.timezone;
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE EXCEPTION 'invalid time zone "%" for dealer %', NEW.timezone, NEW.dealer_number
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use a name from pg_timezone_names, such as America/Chicago, or NULL for the OEM''s time zone.';
        END;
    END IF;
    RETURN NEW;
END
$$;
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
-- As in schema/060_reroute.sql, 070_delivery.sql and 080_security.sql.

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
CREATE OR REPLACE VIEW aimroute.lead_delivery_status AS
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
       coalesce(n.no_contacts, false) AS no_contacts_configured,
       coalesce(o.pending, 0) > 0 AS delivery_pending,
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
         WHERE x.notification_id = n.notification_id AND x.purpose = 'lead' AND x.status <> 'cancelled') o ON true;
ALTER VIEW aimroute.lead_delivery_status SET (security_invoker = true);

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
