--
-- test/valgrind/delivery_round.sql: a short round of real deliveries for
-- scripts/valgrind.sh, so that the delivery worker's libcurl path (SMTP,
-- HTTP, ADF by email and by HTTP, push) and the re-route worker run under
-- memcheck.  The database has the extension and the shipped postal codes;
-- the loopback sinks (test/servers/) listen on :smtp_port and :http_port.
--
--     psql -v ON_ERROR_STOP=1 -v smtp_port=N -v http_port=M -f delivery_round.sql
--
-- What the sinks answer (test/servers/README.md) picks the paths taken:
-- VG-A's mail is accepted, its CRM takes ADF by HTTP and by email, its
-- contact has a mobile number (a push); VG-B's To address is refused with
-- 550 (a hard bounce, then a failure notice to ops@), its CRM answers 500
-- twice before it accepts (two retries); VG-HQ, the default dealer, gets
-- the lead with no postal code.  One lead is marked for re-routing; the
-- script then sets its deadline to now and waits for the re-route worker,
-- and queues the daily recap of the failures for daily@.
--
\set ON_ERROR_STOP 1
BEGIN;
SET LOCAL search_path = aimroute, pg_catalog;
SET LOCAL client_min_messages = warning;

INSERT INTO brands VALUES ('VG', 'Valgrind Boats');
INSERT INTO dealers (dealer_number, name, country, postal_code, region) VALUES
    ('VG-HQ', 'Valgrind HQ', 'US', '10001', NULL),
    ('VG-A', 'Alpha Marine', 'US', '49757', 'North'),
    ('VG-B', 'Bravo Marine', 'US', '60601', 'North');
INSERT INTO dealer_brands VALUES ('VG-A', 'VG'), ('VG-B', 'VG');
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
    ('VG-A', 'VG', 'postal', 'US', '49757'),
    ('VG-B', 'VG', 'postal', 'US', '60601');
INSERT INTO dealer_contacts (dealer_number, name, email, mobile, contact_types) VALUES
    ('VG-HQ', 'Lead desk', 'leaddesk@hq.example', NULL, '{Leads: Emails To}'),
    ('VG-A', 'Sales', 'sales@alpha.example', '+1 231 555 0101', '{Leads: Emails To}'),
    ('VG-A', 'Manager', 'manager@alpha.example', NULL, '{Leads: Emails CC}'),
    ('VG-B', 'Sales', 'sales.hardbounce@bravo.example', NULL, '{Leads: Emails To}'),
    ('VG-B', 'Owner', 'owner@bravo.example', NULL, '{Dealer Lead Delivery Notification (real-time)}');
INSERT INTO crm_integrations (dealer_number, kind, endpoint) VALUES
    ('VG-A', 'adf_http', format('http://127.0.0.1:%s/ok/adf', :'http_port')),
    ('VG-A', 'adf_email', 'adf@alpha.example'),
    ('VG-B', 'adf_http', format('http://127.0.0.1:%s/flaky/adf', :'http_port'));
INSERT INTO notification_contacts (email, contact_type, region) VALUES
    ('ops@oem.example', 'Dealer Lead Delivery Notification (real-time)', NULL),
    ('daily@oem.example', 'Lead Delivery Notification Daily', NULL);
UPDATE settings
   SET default_dealer_number = 'VG-HQ',
       smtp_url = format('smtp://127.0.0.1:%s', :'smtp_port'),
       smtp_from = 'leads@oem.example',
       push_gateway_url = format('http://127.0.0.1:%s/ok/push', :'http_port'),
       delivery_retry_schedule = '{2 seconds,4 seconds}',
       oem_name = 'Valgrind Outdoor',
       reroute_enabled = true,
       radius_enabled = true, radius_countries = '{US}';

-- Names and comments with non-ASCII text go through the MIME and XML encoders.
INSERT INTO leads (brand_code, country, postal_code, first_name, last_name, email, phone, comment) VALUES
    ('VG', 'US', '49757-1234', 'Zoë', 'Ångström', 'zoe@example.com', '(231) 555-0100', 'vg: accepted'),
    ('VG', 'USA', '49757', 'Ann', 'O''Neil <&>', 'ann@example.com', NULL, 'vg: reroute'),
    ('VG', 'US', '60601', 'Bob', 'Brown', 'bob@example.com', NULL, 'vg: bounced, flaky CRM'),
    ('VG', 'US', NULL, 'Cy', 'Nopostal', NULL, '555-0199', 'vg: default dealer'),
    ('VG', 'United States', '60601', 'Dee', 'Line
Break', 'dee@example.com', NULL, 'vg: second bounce');
COMMIT;
