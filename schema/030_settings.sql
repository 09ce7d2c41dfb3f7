--
-- aimroute.settings: one row of typed settings.
--
-- Each setting has a default and a CHECK constraint.  A BEFORE trigger
-- checks the same rules first so that a bad value is refused with an error
-- that names the setting and its allowed values (a CHECK violation can only
-- name the constraint); the CHECKs stay as the declarative rule that \d and
-- BI tools show and that holds even with triggers disabled.
--

CREATE FUNCTION aimroute.countries_normalized(countries text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(bool_and(c IS NOT NULL AND aimroute.normalize_country(c) = c), true)
      FROM unnest(countries) AS c
$$;
COMMENT ON FUNCTION aimroute.countries_normalized(text[]) IS
    'Whether every element is an ISO 3166-1 alpha-2 code as aimroute stores it.';

CREATE TABLE aimroute.settings (
    singleton                  boolean PRIMARY KEY DEFAULT true
        CONSTRAINT settings_one_row CHECK (singleton),
    radius_enabled             boolean NOT NULL DEFAULT true,
    radius_miles               numeric NOT NULL DEFAULT 1500
        CONSTRAINT settings_radius_miles_check CHECK (radius_miles > 0 AND radius_miles <= 12451),
    radius_countries           text[] NOT NULL DEFAULT '{US,CA}'
        CONSTRAINT settings_radius_countries_check CHECK (aimroute.countries_normalized(radius_countries)),
    default_dealer_number      text REFERENCES aimroute.dealers ON UPDATE CASCADE,
    product_routing_enabled    boolean NOT NULL DEFAULT false,
    inventory_routing_enabled  boolean NOT NULL DEFAULT false,
    reroute_enabled            boolean NOT NULL DEFAULT false,
    reroute_max_dealers        integer NOT NULL DEFAULT 3
        CONSTRAINT settings_reroute_max_dealers_check CHECK (reroute_max_dealers BETWEEN 1 AND 100),
    reroute_after              interval NOT NULL DEFAULT '24 hours'
        CONSTRAINT settings_reroute_after_check CHECK (reroute_after >= '1 minute' AND reroute_after <= '90 days'),
    reroute_skip_days          integer[] NOT NULL DEFAULT '{}'
        CONSTRAINT settings_reroute_skip_days_check
        CHECK (reroute_skip_days <@ '{1,2,3,4,5,6,7}' AND array_position(reroute_skip_days, NULL) IS NULL
               AND NOT reroute_skip_days @> '{1,2,3,4,5,6,7}'),
    timezone                   text NOT NULL DEFAULT 'UTC'
        CONSTRAINT settings_timezone_check CHECK (timezone <> ''),
    dedupe_window              interval NOT NULL DEFAULT '60 seconds'
        CONSTRAINT settings_dedupe_window_check CHECK (dedupe_window >= '0' AND dedupe_window <= '7 days'),
    smtp_url                   text NOT NULL DEFAULT 'smtp://127.0.0.1:25'
        CONSTRAINT settings_smtp_url_check CHECK (aimroute.url_is_valid(smtp_url, '{smtp,smtps}')),
    smtp_from                  text NOT NULL DEFAULT 'leads@aimroute.invalid'
        CONSTRAINT settings_smtp_from_check CHECK (smtp_from ~ '^[^@[:space:]<>]+@[^@[:space:]<>]+$'),
    smtp_username              text,
    smtp_password              text,
    push_gateway_url           text
        CONSTRAINT settings_push_gateway_url_check CHECK (aimroute.url_is_valid(push_gateway_url, '{http,https}')),
    delivery_retry_schedule    interval[] NOT NULL DEFAULT '{20 seconds,20 minutes,20 hours}'
        CONSTRAINT settings_delivery_retry_schedule_check
        CHECK (cardinality(delivery_retry_schedule) BETWEEN 1 AND 20
               AND array_position(delivery_retry_schedule, NULL) IS NULL
               AND '0'::interval < ALL (delivery_retry_schedule)),
    daily_recap_hour           integer NOT NULL DEFAULT 7
        CONSTRAINT settings_daily_recap_hour_check CHECK (daily_recap_hour BETWEEN 0 AND 23),
    oem_name                   text NOT NULL DEFAULT 'aimroute'
        CONSTRAINT settings_oem_name_check CHECK (btrim(oem_name) <> ''),
    view_link_url              text NOT NULL DEFAULT 'https://leads.aimroute.invalid/view?token='
        CONSTRAINT settings_view_link_url_check CHECK (aimroute.url_is_valid(view_link_url, '{http,https}')),
    bounce_address             text
        CONSTRAINT settings_bounce_address_check CHECK (bounce_address ~ '^[^@[:space:]<>+]{1,32}@[^@[:space:]<>]+$'),
    smtp_tls                   text NOT NULL DEFAULT 'try'
        CONSTRAINT settings_smtp_tls_check CHECK (smtp_tls IN ('try', 'required')),
    bounce_mailbox_url         text
        CONSTRAINT settings_bounce_mailbox_url_check CHECK (aimroute.url_is_valid(bounce_mailbox_url, '{imap,imaps}')),
    bounce_mailbox_username    text,
    bounce_mailbox_password    text,
    reroute_clock              text NOT NULL DEFAULT 'elapsed'
        CONSTRAINT settings_reroute_clock_check CHECK (reroute_clock IN ('elapsed', 'business_hours')),
    lead_details_url           text
        CONSTRAINT settings_lead_details_url_check
        CHECK (aimroute.url_is_valid(lead_details_url, '{http,https}') AND strpos(lead_details_url, '{lead_id}') > 0),
    lead_list_url              text
        CONSTRAINT settings_lead_list_url_check
        CHECK (aimroute.url_is_valid(lead_list_url, '{http,https}') AND strpos(lead_list_url, '{date}') > 0),
    tie_break                  text NOT NULL DEFAULT 'dealer_number'
        CONSTRAINT settings_tie_break_check CHECK (tie_break IN ('dealer_number', 'round_robin')),
    drive_distance_enabled     boolean NOT NULL DEFAULT false,
    drive_network              text
        CONSTRAINT settings_drive_network_check CHECK (btrim(drive_network) <> '')
);
COMMENT ON TABLE aimroute.settings IS 'aimroute''s settings: one row; change it with UPDATE.';
COMMENT ON COLUMN aimroute.settings.radius_enabled IS 'Route by distance when no territory applies (default true).';
COMMENT ON COLUMN aimroute.settings.radius_miles IS 'Largest distance, in statute miles, for radius and inventory routing (default 1500).';
COMMENT ON COLUMN aimroute.settings.radius_countries IS 'Countries where radius routing applies (default {US,CA}); adding one enables international radius.';
COMMENT ON COLUMN aimroute.settings.default_dealer_number IS 'The default (corporate) dealer: receives every lead no other rule places.';
COMMENT ON COLUMN aimroute.settings.product_routing_enabled IS 'Territory and radius routing consider only dealers assigned the lead''s product (default false).';
COMMENT ON COLUMN aimroute.settings.inventory_routing_enabled IS 'Route to the closest dealer with the product in stock first (default false).';
COMMENT ON COLUMN aimroute.settings.reroute_enabled IS 'Re-route leads not viewed in time (default false).';
COMMENT ON COLUMN aimroute.settings.reroute_max_dealers IS 'Re-routes before a lead goes to the default dealer (default 3).';
COMMENT ON COLUMN aimroute.settings.reroute_after IS 'How long a dealer may hold an unviewed lead (default 24 hours).';
COMMENT ON COLUMN aimroute.settings.reroute_skip_days IS 'ISO weekdays (1 = Monday) on which no re-route deadline falls (default none).';
COMMENT ON COLUMN aimroute.settings.timezone IS 'The OEM''s time zone, for skip days and the daily recap (default UTC).';
COMMENT ON COLUMN aimroute.settings.dedupe_window IS 'A staged row identical to one staged this recently is a duplicate (default 60 seconds).';
COMMENT ON COLUMN aimroute.settings.smtp_url IS 'SMTP server for email delivery (default smtp://127.0.0.1:25).';
COMMENT ON COLUMN aimroute.settings.smtp_from IS 'Sender address of lead emails.';
COMMENT ON COLUMN aimroute.settings.bounce_mailbox_url IS 'The IMAP mailbox the DSNs to bounce_address arrive in, such as imaps://mail.oem.example/INBOX: the delivery worker reads its new messages and records each with record_dsn (aimroute.bounce_mailbox_state); NULL (default): none is read. Admins only.';
COMMENT ON COLUMN aimroute.settings.bounce_mailbox_username IS 'The login at the bounce mailbox''s IMAP server. Admins only.';
COMMENT ON COLUMN aimroute.settings.bounce_mailbox_password IS 'Its password. Admins only.';
COMMENT ON COLUMN aimroute.settings.smtp_tls IS 'TLS with an smtp:// server: try (default): STARTTLS when the server offers it, else plaintext; required: STARTTLS or nothing is sent (no login, no message), a retryable failure.';
COMMENT ON COLUMN aimroute.settings.push_gateway_url IS 'HTTP endpoint of the mobile push gateway; NULL: no push.';
COMMENT ON COLUMN aimroute.settings.delivery_retry_schedule IS 'Waits before each retry of a failed delivery (default 20 seconds, 20 minutes, 20 hours).';
COMMENT ON COLUMN aimroute.settings.daily_recap_hour IS 'Local hour (settings.timezone) of the daily delivery-failure recap (default 7).';
COMMENT ON COLUMN aimroute.settings.oem_name IS 'The OEM''s name, the provider in ADF messages.';
COMMENT ON COLUMN aimroute.settings.view_link_url IS 'Start of the view link in lead emails: the notice''s token is appended, and the page behind it calls aimroute.open_view_link(token).';
COMMENT ON COLUMN aimroute.settings.bounce_address IS 'The mailbox DSNs go to (VERP): every email''s envelope sender is this address with the message''s key after a +, such as bounces+123.20260101120000000000@oem.example (aimroute.envelope_sender); NULL (default): the envelope sender is smtp_from.';
COMMENT ON COLUMN aimroute.settings.lead_details_url IS 'The page of one lead in the OEM''s own tools, linked from failure notices and the daily recap: an http:// or https:// URL template where {lead_id} stands for the lead, such as https://crm.oem.example/leads/{lead_id}; NULL (default): no link, and the notice says so.';
COMMENT ON COLUMN aimroute.settings.lead_list_url IS 'The list of a day''s leads in the OEM''s own tools, linked from the daily recap: an http:// or https:// URL template where {date} stands for the day recapped (YYYY-MM-DD, settings.timezone), such as https://crm.oem.example/leads?date={date}; NULL (default): no link, and the recap says so.';
COMMENT ON COLUMN aimroute.settings.drive_distance_enabled IS 'Radius routing picks the dealer closest by road on the network drive_network names (docs/drive-distance.md); needs pgRouting (default false).';
COMMENT ON COLUMN aimroute.settings.drive_network IS 'The edge table of the road network, schema-qualified, as osm2pgrouting imports it from OpenStreetMap data, such as public.ways; NULL (default): none.';
COMMENT ON COLUMN aimroute.settings.reroute_clock IS 'How reroute_after is counted: elapsed (default) or business_hours, the open time of the dealer holding the lead (dealers.business_hours).';
COMMENT ON COLUMN aimroute.settings.tie_break IS 'Which of several equally near dealers gets a lead: dealer_number (default), the lowest dealer number; round_robin, the one with the fewest leads of the brand by turn, the longest ago among equals (aimroute.tie_turns).';

--
-- drive_network_check: whether Drive Distance can run on a road network;
-- raises an error saying what to install or import when it cannot.
--
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

--
-- settings_validate: refuses a bad value with an error naming the setting
-- and the allowed values, and puts radius_countries in stored form.
--
CREATE FUNCTION aimroute.settings_validate() RETURNS trigger
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

CREATE TRIGGER settings_validate BEFORE INSERT OR UPDATE ON aimroute.settings
    FOR EACH ROW EXECUTE FUNCTION aimroute.settings_validate();
CREATE TRIGGER settings_keep_row BEFORE DELETE ON aimroute.settings
    FOR EACH ROW EXECUTE FUNCTION aimroute.settings_validate();
CREATE TRIGGER settings_keep_row_truncate BEFORE TRUNCATE ON aimroute.settings
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.settings_validate();

--
-- Once leads exist, the default dealer cannot be unset: a lead that no rule
-- places needs it, so the mistake is refused when it is made rather than at
-- a later INSERT.
--
CREATE FUNCTION aimroute.settings_keep_default_dealer() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.default_dealer_number IS NULL AND OLD.default_dealer_number IS NOT NULL
       AND EXISTS (SELECT FROM aimroute.leads) THEN
        RAISE EXCEPTION 'invalid value for setting "default_dealer_number": NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'default_dealer_number must stay set once leads exist: every lead no rule places goes to the default dealer. Name another dealer instead.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER settings_keep_default_dealer BEFORE UPDATE OF default_dealer_number ON aimroute.settings
    FOR EACH ROW EXECUTE FUNCTION aimroute.settings_keep_default_dealer();

-- Say so when re-routing is switched on and nothing will act on it.
CREATE FUNCTION aimroute.settings_check_reroute_worker() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.reroute_enabled AND NOT aimroute.reroute_worker_running() THEN
        RAISE NOTICE 're-routing is enabled, but the re-route worker is not running on this server'
            USING DETAIL = 'Leads get a reroute_due_at, but nothing re-routes them when it passes.',
                  HINT = 'Add aimroute to shared_preload_libraries, set aimroute.database to this database, and restart PostgreSQL.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER settings_check_reroute_worker AFTER UPDATE OF reroute_enabled ON aimroute.settings
    FOR EACH ROW WHEN (NEW.reroute_enabled AND NOT OLD.reroute_enabled)
    EXECUTE FUNCTION aimroute.settings_check_reroute_worker();

INSERT INTO aimroute.settings DEFAULT VALUES;
SELECT pg_catalog.pg_extension_config_dump('aimroute.settings', '');
-- After the first row: installing is not a change of the configuration.
CREATE TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aimroute.settings
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.bump_config_version();
ALTER TABLE aimroute.settings ENABLE ALWAYS TRIGGER bump_config_version;
-- Settings without the SMTP credentials and the bounce mailbox, which only
-- admins read.
GRANT SELECT (singleton, radius_enabled, radius_miles, radius_countries, default_dealer_number,
              product_routing_enabled, inventory_routing_enabled, reroute_enabled, reroute_max_dealers,
              reroute_after, reroute_skip_days, timezone, dedupe_window, smtp_url, smtp_from,
              push_gateway_url, delivery_retry_schedule, daily_recap_hour, oem_name, view_link_url,
              bounce_address, smtp_tls, reroute_clock, lead_details_url, lead_list_url, tie_break,
              drive_distance_enabled, drive_network)
    ON aimroute.settings TO aimroute_region, aimroute_dealer;
