--
-- demo/delivery.sql: lead delivery for the demo network (demo/network.sql):
-- who at each dealer receives its leads, the dealers' CRMs, the OEM staff
-- told about failures, and where the delivery worker sends it all -- the
-- loopback SMTP and HTTP sinks that scripts/demo.sh starts
-- (test/servers/README.md).
--
--     psql -v ON_ERROR_STOP=1 -d aimroute -v smtp_port=54325 -v http_port=54326 \
--          -v view_link_url='http://127.0.0.1:54327/view?token=' -f demo/delivery.sql
--
-- Run it after demo/network.sql and before demo/leads.sql: a lead's
-- messages are queued when it is routed, to the contacts its dealer has
-- then.  smtp_port and http_port are the sinks' ports (default 54325 and
-- 54326, as in scripts/demo.sh); view_link_url is where the reference
-- page behind the view link (examples/view-link) listens.
--
-- The sinks answer by the recipient, so the contacts choose what happens:
--   - most dealers have a 'Leads: Emails To' contact, sales@<dealer>.example;
--     about three in ten a CC, manager@..., one in five a mobile number
--     (a push through the gateway at http://127.0.0.1:<http_port>/ok/push);
--   - a few To addresses contain "hardbounce" (the sink answers 550: Hard
--     Bounce, the contact is suppressed) or "full" (452: Soft Bounce);
--   - a few CC addresses contain "tempfail" (451: retried on the short
--     schedule set below, then Failed);
--   - a few dealers have no contact at all (No contacts configured);
--   - CRM integrations: ADF by HTTP POST to /ok/adf (accepted), /fail/adf
--     (500 every time: retried, then Failed) or /flaky/adf (500 twice, then
--     accepted), and ADF by email; a few dealers have a CRM and no contact;
--   - some dealers have an owner who gets failure notices (real-time) or
--     the daily recap of failures;
--   - OEM staff (aimroute.notification_contacts, @tamarack.example): a
--     real-time and a daily contact for all leads, and a real-time contact
--     for the Great Lakes region only.
-- Plus three leads kept from their dealers (send_to_dealer false).
--
-- Deterministic: every choice is a hash (md5) of the dealer number.
-- Idempotent: it replaces the contacts and CRM integrations of the demo
-- dealers, the notification contacts @tamarack.example and its own leads
-- (comment 'demo: held back'), in one transaction.  It sets the delivery
-- settings: SMTP server, sender, push gateway, retry schedule, OEM name,
-- view link and time zone.  docs/demo.md, "Lead delivery", describes it.
--
\set ON_ERROR_STOP 1
\if :{?smtp_port}
\else
\set smtp_port 54325
\endif
\if :{?http_port}
\else
\set http_port 54326
\endif

BEGIN;
-- aimroute first, then PostGIS wherever it is (public, a schema of its own,
-- or aimroute when CASCADE created it).
SELECT set_config('search_path', 'aimroute, pg_catalog, ' || e.extnamespace::regnamespace, true) AS search_path
  FROM pg_extension e WHERE e.extname = 'postgis' \gset

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM aimroute.dealers WHERE dealer_number IN ('US-0001', 'CA-0001', 'HQ-0001')
                    HAVING count(*) = 3) THEN
        RAISE EXCEPTION 'demo/delivery.sql needs the demo dealer network, and it is not loaded'
            USING HINT = 'Run demo/network.sql first.';
    END IF;
END
$$;

-- A stable non-negative number from a text, as in demo/network.sql.
CREATE FUNCTION pg_temp.demo_hash(text) RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT ('x' || substr(md5('tamarack:' || $1), 1, 7))::bit(28)::integer $$;

------------------------------------------------------------------------------
-- 1. Where messages go: the sinks, with retries a few seconds apart (the
--    default schedule is 20 seconds, 20 minutes, 20 hours).
------------------------------------------------------------------------------

UPDATE aimroute.settings
   SET smtp_url = format('smtp://127.0.0.1:%s', :'smtp_port'),
       smtp_from = 'leads@tamarack.example',
       push_gateway_url = format('http://127.0.0.1:%s/ok/push', :'http_port'),
       delivery_retry_schedule = '{5 seconds,10 seconds}',
       oem_name = 'Tamarack Outdoor Group',
       view_link_url = :'view_link_url',
       timezone = 'America/Chicago';

------------------------------------------------------------------------------
-- 2. Clear what an earlier run set up.
------------------------------------------------------------------------------

DELETE FROM aimroute.leads WHERE comment = 'demo: held back';
DELETE FROM aimroute.crm_integrations WHERE dealer_number ~ '^(HQ|US|CA)-[0-9]{4}$';
DELETE FROM aimroute.dealer_contacts WHERE dealer_number ~ '^(HQ|US|CA)-[0-9]{4}$';
DELETE FROM aimroute.notification_contacts WHERE email LIKE '%@tamarack.example';

------------------------------------------------------------------------------
-- 3. The plan: what each demo dealer gets.  "kind" is one bucket of a hash
--    (per cent of the generated dealers):
--      0-3 none         no contact and no CRM
--      4-6 hardbounce   To address refused with 550
--      7-8 full         To address refused with 452
--     9-10 tempfail     a CC refused with 451 (the To works)
--    11-12 crm only     ADF by HTTP, no contact
--    13-16 crm ok       ADF by HTTP, accepted
--    17-18 crm fail     ADF by HTTP, 500 every time
--    19-20 crm flaky    ADF by HTTP, 500 twice, then accepted
--    21-23 crm email    ADF by email
--    other plain        To (and maybe CC, mobile, owner)
------------------------------------------------------------------------------

CREATE TEMP TABLE demo_delivery_plan ON COMMIT DROP AS
SELECT d.dealer_number, d.name,
       -- The dealer's mail domain: its name in lower case, dashed.
       btrim(regexp_replace(lower(d.name), '[^a-z0-9]+', '-', 'g'), '-') || '.example' AS domain,
       CASE
           WHEN k < 4 THEN 'none'
           WHEN k < 7 THEN 'hardbounce'
           WHEN k < 9 THEN 'full'
           WHEN k < 11 THEN 'tempfail'
           WHEN k < 13 THEN 'crm only'
           WHEN k < 17 THEN 'crm ok'
           WHEN k < 19 THEN 'crm fail'
           WHEN k < 21 THEN 'crm flaky'
           WHEN k < 24 THEN 'crm email'
           ELSE 'plain'
       END AS kind,
       pg_temp.demo_hash('cc:' || d.dealer_number) % 10 < 3 AS cc,
       pg_temp.demo_hash('mobile:' || d.dealer_number) % 5 = 0 AS mobile,
       -- An owner told about failures: real-time, daily, or not at all.
       (ARRAY['real-time', 'daily', NULL, NULL, NULL, NULL])[1 + pg_temp.demo_hash('owner:' || d.dealer_number) % 6]
           AS owner
  FROM aimroute.dealers d
 CROSS JOIN LATERAL (SELECT pg_temp.demo_hash('delivery:' || d.dealer_number) % 100 AS k) h
 WHERE d.dealer_number ~ '^(US|CA)-[0-9]{4}$'
   AND d.dealer_number NOT IN ('US-0001', 'CA-0001');

-- The three named dealers, by hand: the corporate lead desk (the default
-- dealer) has its own CRM; Mackinac Island Marine a To with a mobile, a
-- CC and an ADF address; Killarney Bay Marine a To with a mobile.
INSERT INTO demo_delivery_plan VALUES
    ('HQ-0001', 'Tamarack Outdoor Group - Corporate Lead Desk', 'tamarack.example', 'crm ok', false, false, NULL),
    ('US-0001', 'Mackinac Island Marine', 'mackinac-island-marine.example', 'crm email', true, true, 'real-time'),
    ('CA-0001', 'Killarney Bay Marine', 'killarney-bay-marine.example', 'plain', false, true, NULL);

------------------------------------------------------------------------------
-- 4. Dealer contacts.
------------------------------------------------------------------------------

-- The To contact.  555-01xx numbers are reserved for fiction.
INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, mobile, contact_types)
SELECT p.dealer_number,
       CASE WHEN p.dealer_number = 'HQ-0001' THEN 'Corporate lead desk' ELSE 'Sales desk' END,
       CASE p.kind
           WHEN 'hardbounce' THEN 'sales.hardbounce@'
           WHEN 'full' THEN 'sales.inbox-full@'
           ELSE CASE WHEN p.dealer_number = 'HQ-0001' THEN 'leaddesk@' ELSE 'sales@' END
       END || p.domain,
       CASE WHEN p.mobile THEN
            format('+1 %s 555 01%s', 201 + pg_temp.demo_hash('area:' || p.dealer_number) % 780,
                   lpad((pg_temp.demo_hash('line:' || p.dealer_number) % 100)::text, 2, '0'))
       END,
       '{Leads: Emails To}'
  FROM demo_delivery_plan p
 WHERE p.kind NOT IN ('none', 'crm only')
 ORDER BY p.dealer_number;

-- CC contacts: a manager, or a service desk whose mailbox fails for now.
INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, contact_types)
SELECT p.dealer_number,
       CASE WHEN p.kind = 'tempfail' THEN 'Service desk' ELSE 'Sales manager' END,
       CASE WHEN p.kind = 'tempfail' THEN 'service.tempfail@' ELSE 'manager@' END || p.domain,
       '{Leads: Emails CC}'
  FROM demo_delivery_plan p
 WHERE p.kind = 'tempfail' OR (p.cc AND p.kind NOT IN ('none', 'crm only'))
 ORDER BY p.dealer_number;

-- Owners told about their dealer's failing leads (they do not get leads).
INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, contact_types)
SELECT p.dealer_number, 'Owner', 'owner@' || p.domain,
       CASE p.owner WHEN 'real-time' THEN '{Dealer Lead Delivery Notification (real-time)}'::text[]
                    ELSE '{Lead Delivery Notification Daily}'::text[] END
  FROM demo_delivery_plan p
 WHERE p.owner IS NOT NULL AND p.kind <> 'none'
 ORDER BY p.dealer_number;

------------------------------------------------------------------------------
-- 5. CRM integrations (ADF XML, docs/adf.md).
------------------------------------------------------------------------------

INSERT INTO aimroute.crm_integrations (dealer_number, kind, endpoint, name)
SELECT p.dealer_number,
       CASE WHEN p.kind = 'crm email' THEN 'adf_email' ELSE 'adf_http' END,
       CASE p.kind
           WHEN 'crm email' THEN 'adf@' || p.domain
           WHEN 'crm fail' THEN format('http://127.0.0.1:%s/fail/adf?dealer=%s', :'http_port', p.dealer_number)
           WHEN 'crm flaky' THEN format('http://127.0.0.1:%s/flaky/adf?dealer=%s', :'http_port', p.dealer_number)
           ELSE format('http://127.0.0.1:%s/ok/adf?dealer=%s', :'http_port', p.dealer_number)
       END,
       CASE p.kind
           WHEN 'crm email' THEN 'Dealer CRM (lead mailbox)'
           WHEN 'crm fail' THEN 'Dealer CRM (endpoint down)'
           WHEN 'crm flaky' THEN 'Dealer CRM (unstable endpoint)'
           ELSE CASE WHEN p.dealer_number = 'HQ-0001' THEN 'Corporate lead CRM' ELSE 'Dealer CRM' END
       END
  FROM demo_delivery_plan p
 WHERE p.kind LIKE 'crm %'
 ORDER BY p.dealer_number;

------------------------------------------------------------------------------
-- 6. OEM staff told about failures.
------------------------------------------------------------------------------

INSERT INTO aimroute.notification_contacts (email, contact_type, region, name)
VALUES ('lead-ops@tamarack.example', 'Dealer Lead Delivery Notification (real-time)', NULL, 'Lead operations'),
       ('sales-director@tamarack.example', 'Lead Delivery Notification Daily', NULL, 'Director of dealer sales'),
       ('great-lakes.manager@tamarack.example', 'Dealer Lead Delivery Notification (real-time)', 'Great Lakes',
        'Regional manager, Great Lakes');

------------------------------------------------------------------------------
-- 7. Leads kept from their dealers (send_to_dealer false): routed as
--    usual, never sent; aimroute.unsent_leads lists them.
------------------------------------------------------------------------------

INSERT INTO aimroute.leads
        (received_at, source, brand_code, product_code, first_name, last_name, email, phone,
         city, state_code, country, postal_code, send_to_dealer, comment)
VALUES (now() - interval '30 hours', 'import', 'PCR', 'PCR-TT27', 'Dana', 'Whitfield',
        'dana.whitfield@example.org', NULL, 'Denver', 'CO', 'US', '80202', false, 'demo: held back'),
       (now() - interval '20 hours', 'api', 'LWB', NULL, 'Arne', 'Lindqvist',
        'arne.lindqvist@example.com', '(218) 555-0163', 'Duluth', 'MN', 'US', '55802', false, 'demo: held back'),
       (now() - interval '6 hours', 'web', 'FPS', 'FPS-SNO850', 'Claire', 'Dubois',
        NULL, '(403) 555-0118', 'Calgary', 'AB', 'CA', 'T2P 1J9', false, 'demo: held back');

SELECT (SELECT count(*) FROM aimroute.dealer_contacts WHERE dealer_number ~ '^(HQ|US|CA)-[0-9]{4}$') AS dealer_contacts,
       (SELECT count(*) FROM aimroute.crm_integrations WHERE dealer_number ~ '^(HQ|US|CA)-[0-9]{4}$') AS crm_integrations,
       (SELECT count(*) FROM aimroute.notification_contacts WHERE email LIKE '%@tamarack.example') AS notification_contacts,
       (SELECT count(*) FROM demo_delivery_plan WHERE kind = 'none') AS dealers_without_contacts,
       (SELECT count(*) FROM aimroute.leads WHERE comment = 'demo: held back') AS leads_held_back;

COMMIT;
