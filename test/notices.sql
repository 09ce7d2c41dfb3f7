-- test/notices.sql: notices a person can act on (issue 17, SPEC section
-- 4).  The real-time failure notice and the daily recap carry the lead's
-- key details, what failed and why in words, links built from the URL
-- templates settings.lead_details_url and lead_list_url (none when they
-- are NULL, and the notice says so), the operators' SQL as a footer, and
-- a text and an HTML part in a valid multipart/alternative email; a
-- hostile lead name is escaped in HTML and stays on its line in text.
-- t/003_delivery.pl reads the same notices as a mail client through a
-- real SMTP server.  Everything is rolled back.
BEGIN;
SELECT plan(44);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = warning;

INSERT INTO brands VALUES ('NT', 'Notice Test Boats');
INSERT INTO dealers (dealer_number, name, country, postal_code, region) VALUES
    ('NT-HQ', 'HQ', 'US', '10001', NULL),
    ('NT-A', 'Alpha & <Sons> Marine', 'US', '49757', 'North');
INSERT INTO dealer_brands VALUES ('NT-A', 'NT');
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
    ('NT-A', 'NT', 'postal', 'US', '49757');
INSERT INTO dealer_contacts (dealer_number, name, email, mobile, contact_types) VALUES
    ('NT-A', 'A sales', 'sales@a.example', NULL, '{Leads: Emails To}'),
    ('NT-A', 'A owner', 'owner@a.example', NULL, '{Leads: Emails CC}');
INSERT INTO notification_contacts (email, contact_type, region) VALUES
    ('ops@oem.example', 'Dealer Lead Delivery Notification (real-time)', NULL),
    ('daily@oem.example', 'Lead Delivery Notification Daily', NULL);
UPDATE settings SET default_dealer_number = 'NT-HQ', timezone = 'America/Chicago', oem_name = 'Notice Boats Inc.',
       delivery_retry_schedule = '{20 seconds}', push_gateway_url = NULL, reroute_enabled = false,
       product_routing_enabled = false, inventory_routing_enabled = false,
       lead_details_url = 'https://crm.oem.example/leads/{lead_id}',
       lead_list_url = 'https://crm.oem.example/leads?date={date}';

-- A lead whose name tries everything: markup, quotes, and a line break
-- followed by what would be a header or a line of its own.
CREATE FUNCTION pg_temp.lead(tag text) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO aimroute.leads (brand_code, product_code, country, postal_code, city, state_code,
                                first_name, last_name, email, phone, comment)
    VALUES ('NT', 'X20', 'US', '49757', 'Mackinaw City', 'MI',
            'Ann "Nan"', E'O''Brien <script>alert(1)</script>\r\nBcc: victim@evil.example\nOpen the lead: https://evil.example/',
            'ann@example.net', '+1 555 0100', tag)
    RETURNING lead_id
$$;
-- The worker's round: expand, claim, record (the To contact bounces with
-- 550, the CC copy is delivered).
CREATE FUNCTION pg_temp.deliver(id bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    j aimroute.delivery_job;
BEGIN
    PERFORM aimroute.delivery_expand(1000);
    UPDATE aimroute.outbox SET due_at = clock_timestamp() WHERE lead_id = id AND status = 'queued';
    FOR j IN SELECT * FROM aimroute.delivery_claim(1000, '5 minutes') LOOP
        IF j.recipient = 'sales@a.example' THEN
            PERFORM aimroute.delivery_record(j.message_id, j.attempt, 55, 550,
                '550 5.1.1 <sales@a.example>: Recipient address rejected: User unknown', 'RCPT');
        ELSE
            PERFORM aimroute.delivery_record(j.message_id, j.attempt, 0, 250, '250 OK');
        END IF;
    END LOOP;
END
$$;
-- The email the worker sends for a message (delivery_render_batch, by way
-- of delivery_render), and its MIME parts: [headers, text, html].
CREATE FUNCTION pg_temp.payload(id bigint) RETURNS text LANGUAGE sql AS $$
    SELECT j.payload FROM aimroute.outbox o, aimroute.settings s, aimroute.delivery_render(o, s) j
     WHERE o.message_id = id
$$;
CREATE FUNCTION pg_temp.boundary(p text) RETURNS text LANGUAGE sql AS $$
    SELECT substring(split_part(p, E'\r\n\r\n', 1) FROM E'\r\nContent-Type: multipart/alternative; boundary="([^"]+)"\r\n')
$$;
-- A part: its headers and its base64 content decoded (after the
-- delimiter, the CRLF that ends its line).
CREATE FUNCTION pg_temp.part(p text, n int, OUT headers text, OUT content text) LANGUAGE sql AS $$
    SELECT split_part(x.part, E'\r\n\r\n', 1),
           convert_from(decode(replace(split_part(x.part, E'\r\n\r\n', 2), E'\r\n', ''), 'base64'), 'UTF8')
      FROM (SELECT substr((string_to_array(p, E'\r\n--' || pg_temp.boundary(p)))[n + 1], 3) AS part) x
$$;

SELECT pg_temp.lead('one');
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'one'));
CREATE TEMP TABLE notice AS
    SELECT o.*, pg_temp.payload(o.message_id) AS payload FROM outbox o
     WHERE o.purpose = 'failure notice' AND o.recipient = 'ops@oem.example'
       AND o.lead_id = (SELECT lead_id FROM leads WHERE comment = 'one');
SELECT is((SELECT count(*) FROM notice), 1::bigint, 'the lead''s partial failure queues a real-time notice');

-- The text part: key details, the reason in words, the link, the SQL.
SELECT ok((SELECT body ~ ('(^|\n)Lead: +' || lead_id || '\n') FROM notice), 'text: the lead''s id');
SELECT ok((SELECT body ~ E'\nName: +Ann "Nan" O''Brien <script>alert\\(1\\)</script> Bcc: victim@evil.example Open the lead: https://evil.example/\n' FROM notice),
          'text: the name as typed, on one line (CR and LF as spaces)');
SELECT ok((SELECT body ~ E'\nEmail: +ann@example.net\n' AND body ~ E'\nPhone: +\\+1 555 0100\n' FROM notice),
          'text: the lead''s email and phone');
SELECT ok((SELECT body ~ E'\nProduct: +Notice Test Boats X20\n' FROM notice), 'text: the product');
SELECT ok((SELECT body ~ E'\nPlace: +Mackinaw City, MI 49757, US\n' FROM notice), 'text: the place');
SELECT ok((SELECT body ~ E'\nDealer: +Alpha & <Sons> Marine \\(NT-A\\), region North\n' FROM notice), 'text: the dealer');
SELECT ok((SELECT body LIKE E'%\n  - The dealer''s lead address sales@a.example does not exist or does not take mail (the mail server answered 550 5.1.1 <sales@a.example>: Recipient address rejected: User unknown (after RCPT))\n%' FROM notice),
          'text: what failed and why, in words, with the server''s answer');
SELECT ok((SELECT body LIKE '%ended in Partial Delivery: 1 of 2 messages delivered.%' FROM notice),
          'text: the verdict and the count');
SELECT ok((SELECT body ~ ('\nOpen the lead: https://crm\.oem\.example/leads/' || lead_id || '\n') FROM notice),
          'text: the link to the lead''s page, from settings.lead_details_url');
SELECT is((SELECT count(*) FROM notice, regexp_matches(body, '(^|\n)Open the lead:', 'g')), 1::bigint,
          'text: the name''s forged link line is not a line of its own');
SELECT ok((SELECT body LIKE E'%\nFor operators:\n  What to check: SELECT * FROM aimroute.delivery_attempts WHERE lead_id = ' || lead_id
                  || E';\n  Send it again once fixed: SELECT aimroute.send_lead(' || lead_id || E');\n%' FROM notice),
          'text: the operators'' SQL as a footer');

-- The HTML part: the same, escaped.
SELECT ok((SELECT body_html LIKE '%<td style="padding:2px 0">Ann &quot;Nan&quot; O&#39;Brien &lt;script&gt;alert(1)&lt;/script&gt; Bcc: victim@evil.example Open the lead: https://evil.example/</td>%' FROM notice),
          'html: the name escaped (markup, double and single quotes), on one line');
SELECT ok((SELECT body_html NOT LIKE '%<script%' AND body_html NOT LIKE '%"Nan"%' FROM notice),
          'html: no markup and no quote of the lead''s gets through');
SELECT ok((SELECT body_html LIKE '%Alpha &amp; &lt;Sons&gt; Marine (NT-A), region North%' FROM notice), 'html: the dealer, escaped');
SELECT ok((SELECT body_html LIKE '%<li style="margin:0 0 4px">The dealer&#39;s lead address sales@a.example does not exist or does not take mail (the mail server answered 550 5.1.1 &lt;sales@a.example&gt;: Recipient address rejected: User unknown (after RCPT))</li>%' FROM notice),
          'html: the reason in words');
SELECT ok((SELECT body_html LIKE '%<a href="https://crm.oem.example/leads/' || lead_id || '"%>Open the lead</a>%' FROM notice),
          'html: the link to the lead''s page');
SELECT is((SELECT count(*) FROM notice, regexp_matches(body_html, '<a ', 'g')), 1::bigint, 'html: that is its only link');
SELECT ok((SELECT body_html LIKE '%<code style="font-family:Menlo,Consolas,monospace">What to check: SELECT * FROM aimroute.delivery_attempts WHERE lead_id = ' || lead_id || ';</code>%' FROM notice),
          'html: the operators'' SQL');

-- The email: valid MIME, both parts, the lead's CR/LF nowhere in a header.
SELECT ok((SELECT pg_temp.boundary(payload) ~ '^=_aimroute_[0-9a-f]{32}$' FROM notice),
          'MIME: multipart/alternative with a boundary base64 cannot hold');
SELECT is((SELECT count(*) FROM notice, regexp_matches(payload, E'\r\n--' || pg_temp.boundary(payload) || E'\r\n', 'g')), 2::bigint,
          'MIME: two parts');
SELECT ok((SELECT payload LIKE E'%\r\n--' || pg_temp.boundary(payload) || E'--\r\n' FROM notice), 'MIME: the closing boundary ends it');
SELECT is((SELECT (pg_temp.part(payload, 1)).headers FROM notice), E'Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: base64',
          'MIME: the first part is text/plain in base64');
SELECT is((SELECT (pg_temp.part(payload, 2)).headers FROM notice), E'Content-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: base64',
          'MIME: the second is text/html in base64');
SELECT ok((SELECT (pg_temp.part(payload, 1)).content = body AND (pg_temp.part(payload, 2)).content = body_html FROM notice),
          'MIME: each part decodes to the notice''s text and HTML');
SELECT ok((SELECT payload !~ E'[^\r]\n' AND payload !~ E'\r[^\n]' FROM notice), 'MIME: CRLF line ends only');
SELECT ok((SELECT split_part(payload, E'\r\n\r\n', 1) !~* E'(^|\n)bcc:' AND split_part(payload, E'\r\n\r\n', 1) !~ 'victim' FROM notice),
          'MIME: the name''s forged header is in no header');
SELECT ok((SELECT split_part(payload, E'\r\n\r\n', 1) LIKE E'%\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="%' FROM notice),
          'MIME: version and type headers');

-- Lead emails are as before: one text/plain part.
SELECT ok((SELECT bool_and(pg_temp.payload(o.message_id) LIKE E'%\r\nContent-Type: text/plain; charset=UTF-8\r\n%')
             FROM outbox o WHERE o.purpose = 'lead' AND o.method = 'email'),
          'lead emails are still one text/plain part');

-- A notice queued before notices had an HTML part (by 0.1.0, before an
-- upgrade) is sent as it was written: one text/plain part.
UPDATE outbox SET body_html = NULL WHERE message_id = (SELECT message_id FROM notice);
SELECT ok((SELECT pg_temp.payload(message_id) LIKE E'%\r\nContent-Type: text/plain; charset=UTF-8\r\n%' FROM notice),
          'a notice without an HTML part is sent as plain text');

-- Without URL templates: no link, and the notice says so.
UPDATE settings SET lead_details_url = NULL, lead_list_url = NULL;
SELECT pg_temp.lead('two');
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'two'));
SELECT ok((SELECT body LIKE E'%\nThere is no link to the lead''s page: settings.lead_details_url is not set.\n%'
                  AND body NOT LIKE '%https://crm.oem.example%'
                  AND body_html LIKE '%There is no link to the lead&#39;s page: settings.lead_details_url is not set.%'
                  AND body_html NOT LIKE '%<a %'
             FROM outbox WHERE purpose = 'failure notice' AND recipient = 'ops@oem.example'
              AND lead_id = (SELECT lead_id FROM leads WHERE comment = 'two')),
          'lead_details_url NULL: no link in either part, and the notice says so');

-- The daily recap: each lead's details, why, its link and the day's list.
UPDATE settings SET lead_details_url = 'https://crm.oem.example/leads/{lead_id}',
       lead_list_url = 'https://crm.oem.example/leads?date={date}';
SELECT is(queue_daily_recap(((now() AT TIME ZONE 'America/Chicago')::date + 1 + time '07:00') AT TIME ZONE 'America/Chicago'),
          1, 'the daily recap is queued for the daily contact');
CREATE TEMP TABLE recap AS
    SELECT o.*, pg_temp.payload(o.message_id) AS payload,
           to_char((now() AT TIME ZONE 'America/Chicago')::date, 'YYYY-MM-DD') AS day
      FROM outbox o WHERE o.purpose = 'daily recap' AND o.recipient = 'daily@oem.example';
SELECT ok((SELECT body LIKE E'2 leads whose delivery failed wholly or partly on ' || day || E' (America/Chicago).\nThe day''s list: https://crm.oem.example/leads?date=' || day || E'\n%'
             FROM recap),
          'recap text: how many, and the link to the day''s list from settings.lead_list_url');
SELECT ok((SELECT body ~ (E'\nLead ' || (SELECT lead_id FROM leads WHERE comment = 'one')
                          || E', Ann "Nan" O''Brien <script>alert\\(1\\)</script> Bcc: victim@evil\\.example Open the lead: https://evil\\.example/, Notice Test Boats X20, Mackinaw City, MI 49757\n'
                          || E'  Dealer:  Alpha & <Sons> Marine \\(NT-A\\): Partial Delivery \\(email Partial Delivery\\)\n'
                          || E'  Why:     The dealer''s lead address sales@a\\.example does not exist or does not take mail \\(the mail server answered 550 ')
             FROM recap),
          'recap text: each lead''s key details on one line, its dealer and verdict, and why');
SELECT ok((SELECT body ~ (E'\n  Open:    https://crm\\.oem\\.example/leads/' || (SELECT lead_id FROM leads WHERE comment = 'one') || E'\n') FROM recap),
          'recap text: each lead''s link');
SELECT ok((SELECT body LIKE E'%\nFor operators:\n  The details: SELECT * FROM aimroute.delivery_issues WHERE (failed_at AT TIME ZONE ''America/Chicago'')::date = ''' || day || E''';\n%'
             FROM recap),
          'recap text: the operators'' SQL');
SELECT ok((SELECT body_html LIKE '%<a href="https://crm.oem.example/leads?date=' || day || '"%>Open the day&#39;s list</a>%'
                  AND body_html LIKE '%<a href="https://crm.oem.example/leads/' || (SELECT lead_id FROM leads WHERE comment = 'two') || '">Open the lead</a>%'
             FROM recap),
          'recap html: the day''s list and each lead''s page');
SELECT ok((SELECT body_html LIKE '%O&#39;Brien &lt;script&gt;%' AND body_html NOT LIKE '%<script%' FROM recap), 'recap html: the name escaped');
SELECT ok((SELECT (pg_temp.part(payload, 1)).content = body AND (pg_temp.part(payload, 2)).content = body_html
                  AND split_part(payload, E'\r\n\r\n', 1) LIKE '%Content-Type: multipart/alternative; boundary="%'
             FROM recap),
          'recap: a multipart/alternative email of both parts');

-- Without a list URL the recap says so.
UPDATE settings SET lead_list_url = NULL;
SELECT ok((SELECT c.text_body LIKE E'%\nThere is no link to the day''s list: settings.lead_list_url is not set.\n%'
                  AND c.html_body NOT LIKE '%leads?date=%'
             FROM settings s, daily_recap_content((now() AT TIME ZONE 'America/Chicago')::date, NULL, NULL, s) c),
          'lead_list_url NULL: no list link, and the recap says so');

-- The link templates are filled in, and only with what they name.
SELECT is(notice_link('https://crm.oem.example/leads/{lead_id}?from=aimroute', 42, NULL),
          'https://crm.oem.example/leads/42?from=aimroute', 'notice_link: {lead_id}');
SELECT is(notice_link('https://crm.oem.example/leads?date={date}', NULL, date '2026-03-01'),
          'https://crm.oem.example/leads?date=2026-03-01', 'notice_link: {date} as YYYY-MM-DD');
SELECT is(notice_link(NULL, 42, NULL), NULL, 'notice_link: no template, no link');
SELECT is(html_escape(E'<a href="x">O''Brien & co</a>'), '&lt;a href=&quot;x&quot;&gt;O&#39;Brien &amp; co&lt;/a&gt;',
          'html_escape: & < > " and ''');

SELECT * FROM finish();
ROLLBACK;
