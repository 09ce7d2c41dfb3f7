--
-- Who receives what (SPEC section 4): a dealer's contacts, the OEM and
-- region staff told of failed deliveries, and dealer CRMs.
--

--
-- Contact types.  'Leads: Emails To' contacts receive the dealer's leads and
-- are the only ones whose view counts; 'Leads: Emails CC' contacts get a
-- copy; the two notification types make a dealer's contact a recipient of
-- the failure notices about that dealer's leads.
--
CREATE FUNCTION aimroute.notification_contact_types() RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ARRAY['Dealer Lead Delivery Notification (real-time)', 'Lead Delivery Notification Daily'];
COMMENT ON FUNCTION aimroute.notification_contact_types() IS
    'The two kinds of failure notices, as contact types of aimroute.notification_contacts and aimroute.dealer_contacts.';
CREATE FUNCTION aimroute.contact_types() RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN ARRAY['Leads: Emails To', 'Leads: Emails CC'] || aimroute.notification_contact_types();
COMMENT ON FUNCTION aimroute.contact_types() IS 'The contact types aimroute.dealer_contacts accepts.';

--
-- dealer_contacts: who at a dealer receives its leads.  The columns are
-- the contract's; delivery (SPEC section 4) builds on them.  Only a
-- 'Leads: Emails To' contact's view of a lead counts (aimroute.mark_viewed,
-- 060_reroute.sql).
--
CREATE TABLE aimroute.dealer_contacts (
    contact_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dealer_number    text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    name             text,
    email            text,
    mobile           text,
    contact_types    text[] NOT NULL DEFAULT '{Leads: Emails To}',
    delivery_status  text NOT NULL DEFAULT 'Active'
        CONSTRAINT dealer_contacts_delivery_status_check
        CHECK (delivery_status IN ('Active', 'Hard Bounce', 'Soft Bounce')),
    CONSTRAINT dealer_contacts_contact_types_check
        CHECK (contact_types <@ aimroute.contact_types() AND cardinality(contact_types) > 0),
    CONSTRAINT dealer_contacts_email_check CHECK (aimroute.email_is_valid(email)),
    CONSTRAINT dealer_contacts_reachable_check CHECK (email IS NOT NULL OR mobile IS NOT NULL)
);
CREATE INDEX dealer_contacts_dealer_idx ON aimroute.dealer_contacts (dealer_number);
CREATE INDEX dealer_contacts_email_idx ON aimroute.dealer_contacts (lower(email));
COMMENT ON TABLE aimroute.dealer_contacts IS
    'People of a dealer who receive its leads.  Only a ''Leads: Emails To'' contact''s view of a lead counts (aimroute.mark_viewed).';
SELECT pg_catalog.pg_extension_config_dump('aimroute.dealer_contacts', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.dealer_contacts', 'contact_id')::regclass, '');

--
-- dealer_contacts_validate: trims and checks a contact, with an error that
-- says what is wrong (a CHECK violation can only name its constraint).
--
CREATE FUNCTION aimroute.dealer_contacts_validate() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad text;
BEGIN
    NEW.email := nullif(btrim(NEW.email), '');
    NEW.mobile := nullif(btrim(NEW.mobile), '');
    SELECT t INTO bad FROM unnest(NEW.contact_types) AS t
     WHERE t IS NULL OR NOT t = ANY (aimroute.contact_types()) LIMIT 1;
    IF FOUND OR cardinality(NEW.contact_types) = 0 THEN
        RAISE EXCEPTION 'invalid contact type %', coalesce(quote_literal(bad), 'NULL')
            USING ERRCODE = 'check_violation',
                  HINT = format('contact_types takes one or more of: %s.', array_to_string(aimroute.contact_types(), ', '));
    END IF;
    IF NOT aimroute.email_is_valid(NEW.email) THEN
        RAISE EXCEPTION 'invalid email address % for a contact of dealer %', quote_literal(NEW.email), NEW.dealer_number
            USING ERRCODE = 'check_violation',
                  HINT = 'Give one address, such as sales@dealer.example.com, or NULL for a contact reached by mobile push only.';
    END IF;
    IF NEW.email IS NULL AND NEW.mobile IS NULL THEN
        RAISE EXCEPTION 'a contact of dealer % needs an email address or a mobile number', NEW.dealer_number
            USING ERRCODE = 'check_violation',
                  HINT = 'Give email (for Leads and notices), mobile (for push), or both.';
    END IF;
    SELECT array_agg(DISTINCT t ORDER BY t) INTO NEW.contact_types FROM unnest(NEW.contact_types) AS t;
    RETURN NEW;
END
$$;
CREATE TRIGGER dealer_contacts_validate BEFORE INSERT OR UPDATE ON aimroute.dealer_contacts
    FOR EACH ROW EXECUTE FUNCTION aimroute.dealer_contacts_validate();
COMMENT ON COLUMN aimroute.dealer_contacts.contact_types IS
    'What the contact receives: ''Leads: Emails To'' (the dealer''s leads; only their views count), ''Leads: Emails CC'' (a copy), ''Dealer Lead Delivery Notification (real-time)'' and ''Lead Delivery Notification Daily'' (failure notices about this dealer''s leads).';
COMMENT ON COLUMN aimroute.dealer_contacts.mobile IS
    'Mobile number for push notices of new leads (through settings.push_gateway_url); NULL: no push.';
COMMENT ON COLUMN aimroute.dealer_contacts.delivery_status IS
    'Active, or Hard Bounce / Soft Bounce: then the contact is on the suppression list and no email is sent to it until aimroute.set_delivery_status_active(contact_id). The list is by address: a bounce suppresses every contact with the address, and resetting one lifts it for all of them.';

--
-- dealer_contacts_lift_address: the suppression list is by address, so a
-- contact set back to Active (set_delivery_status_active, or an UPDATE of
-- its delivery_status) lifts it for every contact with that address, of
-- any dealer.  SECURITY DEFINER: a dealer user who may reset its own
-- contact cannot see the other dealers' contacts with the same address;
-- it changes nothing but their delivery_status, to Active, and only after
-- the caller was allowed to reset a contact with that address.
--
CREATE FUNCTION aimroute.dealer_contacts_lift_address() RETURNS trigger
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

ALTER TABLE aimroute.dealer_contacts ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.dealer_contacts TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.dealer_contacts FOR SELECT TO aimroute_region, aimroute_dealer
    USING (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));
-- A dealer keeps its own contacts.
CREATE POLICY scoped_write ON aimroute.dealer_contacts FOR ALL TO aimroute_region, aimroute_dealer
    USING (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]))
    WITH CHECK (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));
GRANT SELECT ON aimroute.dealer_contacts TO aimroute_region, aimroute_dealer;
GRANT INSERT (dealer_number, name, email, mobile, contact_types),
      UPDATE (name, email, mobile, contact_types, delivery_status), DELETE
    ON aimroute.dealer_contacts TO aimroute_region, aimroute_dealer;

--
-- notification_contacts: OEM and region staff who receive failure notices.
--
CREATE TABLE aimroute.notification_contacts (
    notification_contact_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email                    text NOT NULL
        CONSTRAINT notification_contacts_email_check CHECK (aimroute.email_is_valid(email)),
    contact_type             text NOT NULL
        CONSTRAINT notification_contacts_contact_type_check
        CHECK (contact_type = ANY (aimroute.notification_contact_types())),
    region                   text,
    name                     text
);
CREATE UNIQUE INDEX notification_contacts_unique_idx
    ON aimroute.notification_contacts (lower(email), contact_type, region) NULLS NOT DISTINCT;
COMMENT ON TABLE aimroute.notification_contacts IS
    'OEM and region staff who are told when leads fail to reach their dealers: at once (real-time) or in a daily recap.';
COMMENT ON COLUMN aimroute.notification_contacts.contact_type IS
    '''Dealer Lead Delivery Notification (real-time)'': a notice per lead whose delivery failed wholly or partly; ''Lead Delivery Notification Daily'': one recap a day (settings.daily_recap_hour) of the prior day''s failing leads.';
COMMENT ON COLUMN aimroute.notification_contacts.region IS
    'Only leads of dealers of this region (aimroute.dealers.region); NULL: every lead.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.notification_contacts', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.notification_contacts', 'notification_contact_id')::regclass, '');

CREATE FUNCTION aimroute.notification_contacts_validate() RETURNS trigger
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
CREATE TRIGGER notification_contacts_validate BEFORE INSERT OR UPDATE ON aimroute.notification_contacts
    FOR EACH ROW EXECUTE FUNCTION aimroute.notification_contacts_validate();

--
-- crm_integrations: a dealer's CRM, which takes leads as ADF XML by email
-- (adf_email: endpoint is the CRM's lead address) or by HTTP POST
-- (adf_http: endpoint is the URL).
--
CREATE TABLE aimroute.crm_integrations (
    integration_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dealer_number   text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    kind            text NOT NULL
        CONSTRAINT crm_integrations_kind_check CHECK (kind IN ('adf_email', 'adf_http')),
    endpoint        text NOT NULL,
    active          boolean NOT NULL DEFAULT true,
    name            text,
    CONSTRAINT crm_integrations_endpoint_check CHECK (
        CASE kind WHEN 'adf_email' THEN aimroute.email_is_valid(endpoint)
                  ELSE aimroute.url_is_valid(endpoint, '{http,https}') END)
);
CREATE INDEX crm_integrations_dealer_idx ON aimroute.crm_integrations (dealer_number) WHERE active;
COMMENT ON TABLE aimroute.crm_integrations IS
    'Dealer CRMs that receive each lead as ADF XML (docs/adf.md): adf_email sends it to the CRM''s lead address, adf_http POSTs it to a URL.';
COMMENT ON COLUMN aimroute.crm_integrations.endpoint IS 'adf_email: the CRM''s lead email address; adf_http: the http:// or https:// URL to POST to.';
COMMENT ON COLUMN aimroute.crm_integrations.active IS 'Only active integrations receive leads.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.crm_integrations', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.crm_integrations', 'integration_id')::regclass, '');

CREATE FUNCTION aimroute.crm_integrations_validate() RETURNS trigger
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
CREATE TRIGGER crm_integrations_validate BEFORE INSERT OR UPDATE ON aimroute.crm_integrations
    FOR EACH ROW EXECUTE FUNCTION aimroute.crm_integrations_validate();

ALTER TABLE aimroute.crm_integrations ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.crm_integrations TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.crm_integrations FOR SELECT TO aimroute_region, aimroute_dealer
    USING (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));
GRANT SELECT ON aimroute.crm_integrations TO aimroute_region, aimroute_dealer;
