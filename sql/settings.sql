--
-- settings: one row, defaults, and an error naming the setting and its
-- allowed values for every bad value.
--
SET search_path = aimroute, public;
\x on
SELECT * FROM settings;
\x off

-- Every setting refuses a bad value with a hint of what it accepts.
\set VERBOSITY default
UPDATE settings SET radius_miles = 0;
UPDATE settings SET radius_miles = 20000;
UPDATE settings SET radius_countries = '{US,Atlantis}';
UPDATE settings SET radius_countries = '{US,NULL}';
UPDATE settings SET radius_countries = NULL;
UPDATE settings SET default_dealer_number = 'NO-SUCH-DEALER';
UPDATE settings SET reroute_max_dealers = 0;
UPDATE settings SET reroute_max_dealers = 101;
UPDATE settings SET reroute_after = '30 seconds';
UPDATE settings SET reroute_after = '91 days';
UPDATE settings SET reroute_after = NULL;
UPDATE settings SET reroute_skip_days = '{0}';
UPDATE settings SET reroute_skip_days = '{8}';
UPDATE settings SET reroute_skip_days = '{1,2,3,4,5,6,7}';
UPDATE settings SET reroute_skip_days = '{6,NULL}';
UPDATE settings SET timezone = 'Mars/Olympus';
UPDATE settings SET timezone = '';
UPDATE settings SET reroute_clock = 'open hours';
UPDATE settings SET reroute_clock = NULL;
UPDATE settings SET tie_break = 'random';
UPDATE settings SET tie_break = NULL;
UPDATE settings SET dedupe_window = '-1 second';
UPDATE settings SET dedupe_window = '8 days';
UPDATE settings SET smtp_url = 'http://127.0.0.1:25';
UPDATE settings SET smtp_url = 'smtp://';
UPDATE settings SET smtp_from = 'not an address';
UPDATE settings SET bounce_address = 'bounces+x@oem.example';
UPDATE settings SET bounce_address = 'a-local-part-longer-than-32-characters@oem.example';
UPDATE settings SET smtp_tls = 'always';
UPDATE settings SET smtp_tls = NULL;
UPDATE settings SET bounce_mailbox_url = 'pop3://mail.oem.example';
UPDATE settings SET bounce_mailbox_url = 'imaps:///INBOX';
UPDATE settings SET push_gateway_url = 'ftp://push.example';
-- One URL rule for every URL (url_is_valid): no white space anywhere.
UPDATE settings SET push_gateway_url = 'https://push.example/send now';
UPDATE settings SET view_link_url = 'https://dealers.example.com/lead?token= ';
SELECT url, aimroute.url_is_valid(url, '{http,https}') AS http_ok, aimroute.url_is_valid(url, '{smtp,smtps}') AS smtp_ok
  FROM unnest(ARRAY['https://crm.example.com/adf', 'http://127.0.0.1:8080', 'smtps://relay:465',
                    'https://', 'https:///path', 'https://host/a b', 'HTTPS://host', ' https://host']) AS url;
UPDATE settings SET delivery_retry_schedule = '{}';
UPDATE settings SET delivery_retry_schedule = '{20 seconds,-1 minute}';
UPDATE settings SET delivery_retry_schedule = '{20 seconds,NULL}';
UPDATE settings SET daily_recap_hour = 24;
UPDATE settings SET daily_recap_hour = -1;
UPDATE settings SET oem_name = '  ';
UPDATE settings SET view_link_url = 'dealers.example.com/lead?token=';
-- Notice links are URL templates with their placeholder.
UPDATE settings SET lead_details_url = 'https://crm.oem.example/leads/';
UPDATE settings SET lead_details_url = 'crm.oem.example/leads/{lead_id}';
UPDATE settings SET lead_list_url = 'https://crm.oem.example/leads?day={lead_id}';
UPDATE settings SET lead_list_url = 'https://crm.oem.example/leads?date={date} ';
UPDATE settings SET singleton = false;
UPDATE settings SET radius_enabled = NULL;
UPDATE settings SET reroute_enabled = NULL;
UPDATE settings SET drive_distance_enabled = NULL;
UPDATE settings SET drive_network = ' ';
-- Drive Distance needs pgRouting in the database (t/025_drive_distance.pl
-- covers the rest: a missing or unusable road network, an imported one).
-- Terse: the hint depends on whether this server has pgRouting to create.
\set VERBOSITY terse
UPDATE settings SET drive_distance_enabled = true, drive_network = 'public.ways';
\set VERBOSITY default
SELECT drive_distance_enabled, drive_network FROM settings;

-- Good values are taken; countries are stored as alpha-2, once each.
UPDATE settings SET radius_countries = '{usa,Canada,MEX,US}', radius_miles = 250.5,
       reroute_skip_days = '{6,7}', timezone = 'America/Chicago',
       default_dealer_number = 'HQ', push_gateway_url = 'http://127.0.0.1:8080/push',
       delivery_retry_schedule = '{1 minute,1 hour}', dedupe_window = '0';
SELECT radius_countries, radius_miles, reroute_skip_days, timezone, default_dealer_number,
       push_gateway_url, delivery_retry_schedule, dedupe_window
  FROM settings;
UPDATE settings SET lead_details_url = 'https://crm.oem.example/leads/{lead_id}',
       lead_list_url = 'https://crm.oem.example/leads?date={date}';
SELECT lead_details_url, lead_list_url FROM settings;
UPDATE settings SET lead_details_url = NULL, lead_list_url = NULL;
-- The default dealer cannot be deleted while it is the default.
DELETE FROM dealers WHERE dealer_number = 'HQ';

-- Exactly one row.
DELETE FROM settings;
TRUNCATE settings;
SELECT count(*) AS rows FROM settings;
-- A second INSERT (a dump being restored) updates the one row.
INSERT INTO settings (radius_miles, timezone) VALUES (42, 'UTC');
SELECT count(*) AS rows, min(radius_miles) AS radius_miles, min(timezone) AS timezone FROM settings;
INSERT INTO settings (radius_miles) VALUES (-1);

-- The CHECK constraints hold on their own, without the trigger.
ALTER TABLE settings DISABLE TRIGGER settings_validate;
\set VERBOSITY terse
UPDATE settings SET radius_miles = 0;
UPDATE settings SET radius_countries = '{usa}';
UPDATE settings SET reroute_max_dealers = 0;
UPDATE settings SET reroute_after = '1 second';
UPDATE settings SET reroute_skip_days = '{1,2,3,4,5,6,7}';
UPDATE settings SET timezone = '';
UPDATE settings SET dedupe_window = '-1 second';
UPDATE settings SET smtp_url = 'http://x';
UPDATE settings SET smtp_from = 'x';
UPDATE settings SET push_gateway_url = 'ftp://x';
UPDATE settings SET smtp_url = 'smtp://relay/ x';
UPDATE settings SET delivery_retry_schedule = '{}';
UPDATE settings SET daily_recap_hour = 24;
UPDATE settings SET reroute_clock = 'business';
UPDATE settings SET tie_break = 'coin';
UPDATE settings SET oem_name = ' ';
UPDATE settings SET view_link_url = 'ftp://x';
UPDATE settings SET lead_details_url = 'https://x/leads';
UPDATE settings SET lead_list_url = 'ftp://x/{date}';
UPDATE settings SET drive_network = '';
UPDATE settings SET singleton = false;
UPDATE settings SET default_dealer_number = 'NO-SUCH-DEALER';
\set VERBOSITY default
ALTER TABLE settings ENABLE TRIGGER settings_validate;
UPDATE settings SET radius_miles = 1500, radius_countries = '{US,CA}', reroute_skip_days = '{}',
       timezone = 'UTC', push_gateway_url = NULL,
       delivery_retry_schedule = '{20 seconds,20 minutes,20 hours}', dedupe_window = '60 seconds';
RESET search_path;

-- This server does not preload aimroute: re-routing can be switched on, and
-- a NOTICE says that nothing will act on the deadlines.
SET client_min_messages = notice;
SELECT aimroute.reroute_worker_running();
BEGIN;
UPDATE aimroute.settings SET reroute_enabled = true;
SELECT reroute_enabled FROM aimroute.settings;
ROLLBACK;
RESET client_min_messages;
