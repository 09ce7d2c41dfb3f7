-- test/bounces.sql: bounces as they arrive (SPEC section 4, issue 17;
-- docs/delivery.md, Bounces).  The suppression list is by address, however
-- the bounce arrived: the SMTP reply (delivery_record), record_bounce, a
-- DSN (record_dsn), a provider's event (record_delivery_event); resetting
-- one contact lifts it for the address.  The envelope sender carries the
-- message's key (VERP).  t/003_delivery.pl sends over real SMTP and reads
-- the envelope sender the server received.  Everything is rolled back.
BEGIN;
SELECT plan(68);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = warning;

INSERT INTO brands VALUES ('BX', 'Bounce Boats');
INSERT INTO dealers (dealer_number, name, country, postal_code, region) VALUES
    ('BX-HQ', 'HQ', 'US', '10001', NULL),
    ('BX-A', 'Alpha Bounce', 'US', '49757', 'North'),
    ('BX-B', 'Bravo Bounce', 'US', '60601', 'North');
INSERT INTO dealer_brands VALUES ('BX-A', 'BX'), ('BX-B', 'BX');
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
    ('BX-A', 'BX', 'postal', 'US', '49757'), ('BX-B', 'BX', 'postal', 'US', '60601');
-- One mailbox shared by a contact of each dealer, written two ways.
INSERT INTO dealer_contacts (dealer_number, name, email, contact_types) VALUES
    ('BX-A', 'A shared', 'Shared@Box.example', '{Leads: Emails To}'),
    ('BX-B', 'B shared', 'shared@box.example', '{Leads: Emails To}'),
    ('BX-B', 'B own', 'own@b.example', '{Leads: Emails To}'),
    ('BX-A', 'A other', 'other@a.example', '{Leads: Emails CC}');
INSERT INTO notification_contacts (email, contact_type) VALUES
    ('ops@oem.example', 'Dealer Lead Delivery Notification (real-time)');
UPDATE settings SET default_dealer_number = 'BX-HQ', push_gateway_url = NULL, smtp_from = 'leads@oem.example',
       delivery_retry_schedule = '{20 seconds}', reroute_enabled = false, product_routing_enabled = false,
       inventory_routing_enabled = false, radius_enabled = true, radius_countries = '{US,CA}';

CREATE FUNCTION pg_temp.lead(tag text, zip text) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO aimroute.leads (brand_code, country, postal_code, first_name, comment)
    VALUES ('BX', 'US', zip, 'Bo', tag) RETURNING lead_id
$$;
CREATE FUNCTION pg_temp.lid(tag text) RETURNS bigint LANGUAGE sql AS $$
    SELECT lead_id FROM aimroute.leads WHERE comment = tag
$$;
-- The worker's round, as in test/delivery.sql: the reply the test gives
-- a recipient (default: accepted).
CREATE FUNCTION pg_temp.deliver(replies jsonb DEFAULT '{}') RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    j aimroute.delivery_job;
    r jsonb;
BEGIN
    PERFORM aimroute.delivery_expand(1000);
    UPDATE aimroute.outbox SET due_at = clock_timestamp() WHERE status = 'queued';
    FOR j IN SELECT * FROM aimroute.delivery_claim(1000, '5 minutes') LOOP
        r := coalesce(replies -> (SELECT o.recipient FROM aimroute.outbox o WHERE o.message_id = j.message_id),
                      '[0, 250, "250 OK"]'::jsonb);
        PERFORM aimroute.delivery_record(j.message_id, j.attempt, (r ->> 0)::int, (r ->> 1)::int, r ->> 2, 'DATA');
    END LOOP;
END
$$;
CREATE FUNCTION pg_temp.statuses() RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(dealer_number || ':' || email || '=' || delivery_status, ' ' ORDER BY contact_id)
      FROM aimroute.dealer_contacts WHERE dealer_number LIKE 'BX-%'
$$;
CREATE FUNCTION pg_temp.shared_id(dealer text) RETURNS bigint LANGUAGE sql AS $$
    SELECT contact_id FROM aimroute.dealer_contacts WHERE dealer_number = dealer AND lower(email) = 'shared@box.example'
$$;

-- 1. The suppression list is by address.
-- The SMTP reply: a 550 to dealer A's contact suppresses dealer B's too.
SELECT pg_temp.lead('smtp', '49757');
SELECT pg_temp.deliver('{"Shared@Box.example": [55, 550, "550 5.1.1 user unknown"]}');
SELECT is(pg_temp.statuses(),
          'BX-A:Shared@Box.example=Hard Bounce BX-B:shared@box.example=Hard Bounce BX-B:own@b.example=Active BX-A:other@a.example=Active',
          'a 550 in the SMTP reply suppresses every contact with the address, at every dealer, in any letter case');
SELECT pg_temp.lead('smtp b', '60601');
SELECT pg_temp.deliver();
SELECT is((SELECT string_agg(recipient || '=' || outcome, ' ' ORDER BY message_id) FROM outbox
            WHERE lead_id = pg_temp.lid('smtp b') AND purpose = 'lead'),
          'shared@box.example=Suppressed own@b.example=Delivered',
          'dealer B''s contact with that address gets nothing more');
-- Resetting one contact lifts it for the address.
SELECT set_delivery_status_active(pg_temp.shared_id('BX-B'));
SELECT is(pg_temp.statuses(),
          'BX-A:Shared@Box.example=Active BX-B:shared@box.example=Active BX-B:own@b.example=Active BX-A:other@a.example=Active',
          'resetting one contact to Active lifts the suppression for every contact with the address');
-- So does an UPDATE of delivery_status.
UPDATE dealer_contacts SET delivery_status = 'Soft Bounce' WHERE lower(email) = 'shared@box.example';
UPDATE dealer_contacts SET delivery_status = 'Active' WHERE contact_id = pg_temp.shared_id('BX-A');
SELECT is((SELECT string_agg(DISTINCT delivery_status, ',') FROM dealer_contacts WHERE lower(email) = 'shared@box.example'),
          'Active', 'an UPDATE of one contact''s delivery_status to Active lifts it for the address too');
-- The soft bounce of the SMTP reply, and a soft one never replaces a hard one.
SELECT pg_temp.lead('smtp soft', '60601');
SELECT pg_temp.deliver('{"shared@box.example": [55, 452, "452 4.2.2 mailbox full"]}');
SELECT is((SELECT string_agg(DISTINCT delivery_status, ',') FROM dealer_contacts WHERE lower(email) = 'shared@box.example'),
          'Soft Bounce', 'a 452 suppresses every contact with the address as Soft Bounce');
SELECT is(suppress_address(' SHARED@box.example', 'Hard Bounce'), 2, 'suppress_address: a hard bounce replaces a soft one');
SELECT is(suppress_address('shared@box.example', 'Soft Bounce'), 0, 'and a soft one does not replace a hard one');
SELECT throws_ok($$SELECT aimroute.suppress_address('x@y.example', 'Bounced')$$, '22023',
                 'invalid suppression status ''Bounced''', 'suppress_address: unknown status');
SELECT set_delivery_status_active(pg_temp.shared_id('BX-A'));
-- record_bounce: every contact with the address, and the latest message delivered to it.
SELECT pg_temp.lead('late', '49757');
SELECT pg_temp.deliver();
SELECT is(record_bounce('shared@BOX.example', 'hard', 'mailbox disabled'), 2,
          'record_bounce suppresses both contacts with the address');
SELECT is((SELECT status || ' ' || outcome || ' ' || last_response FROM outbox
            WHERE lead_id = pg_temp.lid('late') AND recipient = 'Shared@Box.example'),
          'failed Hard Bounce bounced after delivery: mailbox disabled',
          'the latest message delivered to the address is the bounce');
SELECT is((SELECT email_status FROM lead_delivery_status WHERE lead_id = pg_temp.lid('late')), 'Partial Delivery',
          'lead_delivery_status follows: the lead, Delivered before, is a Partial Delivery by email (its CC got it)');
SELECT is((SELECT failure || ' ' || failed_recipients FROM delivery_issues WHERE lead_id = pg_temp.lid('late')),
          'Partial Delivery Shared@Box.example (Hard Bounce)', 'and so does delivery_issues');
SELECT is((SELECT count(*) FROM outbox WHERE purpose = 'failure notice' AND lead_id = pg_temp.lid('late')), 1::bigint,
          'the real-time failure notice is queued');
SELECT is(record_message_bounce((SELECT message_id FROM outbox WHERE lead_id = pg_temp.lid('late') AND recipient = 'Shared@Box.example'),
                                'Soft Bounce', 'again'),
          false, 'a bounce recorded twice (or a soft one after a hard one) changes nothing');
SELECT is((SELECT count(*) FROM delivery_attempts WHERE lead_id = pg_temp.lid('late') AND outcome = 'Hard Bounce'), 1::bigint,
          'one attempt row for the bounce');
SELECT is(set_delivery_status_active(pg_temp.shared_id('BX-A'))::text, '', 'reset');
SELECT is(pg_temp.statuses(),
          'BX-A:Shared@Box.example=Active BX-B:shared@box.example=Active BX-B:own@b.example=Active BX-A:other@a.example=Active',
          'after the reset every contact is Active');

-- 2. VERP: the envelope sender names the message.
CREATE FUNCTION pg_temp.claim() RETURNS SETOF aimroute.delivery_job LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aimroute.delivery_expand(1000);
    UPDATE aimroute.outbox SET due_at = clock_timestamp() WHERE status = 'queued';
    RETURN QUERY SELECT * FROM aimroute.delivery_claim(1000, '5 minutes');
END
$$;
SELECT pg_temp.lead('plain', '60601');
CREATE TEMP TABLE plain_jobs AS SELECT * FROM pg_temp.claim();
SELECT is((SELECT string_agg(DISTINCT mail_from, ',') FROM plain_jobs), 'leads@oem.example',
          'without bounce_address the envelope sender is smtp_from');
SELECT delivery_record(message_id, attempt, 0, 250, '250 OK') FROM plain_jobs;
UPDATE settings SET bounce_address = 'bounces@oem.example';
SELECT pg_temp.lead('verp', '60601');
CREATE TEMP TABLE verp_claimed AS SELECT * FROM pg_temp.claim();
CREATE TEMP TABLE verp_jobs AS SELECT j.*, o.message_key AS key_kept, o.recipient AS to_whom, o.queued_at
  FROM verp_claimed j JOIN outbox o USING (message_id);
SELECT is((SELECT count(*) FROM verp_jobs), 2::bigint, 'two emails claimed');
SELECT is((SELECT count(*) FROM verp_jobs
            WHERE mail_from = format('bounces+%s.%s@oem.example', message_id,
                                     to_char(queued_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS'))),
          2::bigint, 'with bounce_address each email''s envelope sender is bounces+<message_id>.<queued_at, UTC, to the microsecond>@oem.example');
SELECT is((SELECT count(*) FROM verp_jobs
            WHERE key_kept = format('<aimroute.%s@oem.example>', split_part(split_part(mail_from, '+', 2), '@', 1))),
          2::bigint, 'the key is the left part of the Message-ID');
SELECT ok((SELECT bool_and(payload LIKE '%From: leads@oem.example' || E'\r\n' || '%'
                           AND payload LIKE '%Message-ID: ' || key_kept || E'\r\n' || '%') FROM verp_jobs),
          'the From: header is still smtp_from, and the Message-ID is kept');
SELECT delivery_record(message_id, attempt, 0, 250, '250 OK') FROM verp_jobs;

-- 3. record_dsn: DSNs as a relay (Postfix) writes them, CRLF line ends.
-- dsn(to, final recipient, action, status, diagnostic, returned Message-ID)
CREATE FUNCTION pg_temp.dsn(to_addr text, final text, action text, status text, diag text, returned_id text)
RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(E'\r\n',
        'Return-Path: <>',
        'Delivered-To: ' || to_addr,
        'Date: Sun,  6 Dec 2026 11:40:00 +0000 (UTC)',
        'From: MAILER-DAEMON@relay.oem.example (Mail Delivery System)',
        'Subject: Undelivered Mail Returned to Sender',
        'To: ' || to_addr,
        'Auto-Submitted: auto-replied',
        'MIME-Version: 1.0',
        'Content-Type: multipart/report; report-type=delivery-status;',
        E'\tboundary="4F1A2B3C.1733485200/relay.oem.example"',
        'Message-Id: <20261206114000.4F1A2B3C@relay.oem.example>',
        '',
        'This is a MIME-encapsulated message.',
        '',
        '--4F1A2B3C.1733485200/relay.oem.example',
        'Content-Description: Notification',
        'Content-Type: text/plain; charset=us-ascii',
        '',
        'This is the mail system at host relay.oem.example.',
        '',
        '<' || final || '>: host mx.box.example[192.0.2.7] said: ' || diag,
        '',
        '--4F1A2B3C.1733485200/relay.oem.example',
        'Content-Description: Delivery report',
        'Content-Type: message/delivery-status',
        '',
        'Reporting-MTA: dns; relay.oem.example',
        'X-Postfix-Queue-ID: 4F1A2B3C',
        'Arrival-Date: Sun,  6 Dec 2026 11:39:58 +0000 (UTC)',
        '',
        'Final-Recipient: rfc822; ' || final,
        'Original-Recipient: rfc822;' || final,
        'Action: ' || action,
        'Status: ' || status,
        'Remote-MTA: dns; mx.box.example',
        'Diagnostic-Code: smtp; ' || diag,
        '    (in reply to RCPT TO command)',
        '',
        '--4F1A2B3C.1733485200/relay.oem.example',
        'Content-Description: Undelivered Message Headers',
        'Content-Type: text/rfc822-headers',
        '',
        'From: leads@oem.example',
        'To: ' || final,
        'Subject: New lead',
        'Message-ID: ' || returned_id,
        '',
        '--4F1A2B3C.1733485200/relay.oem.example--',
        '')
$$;
CREATE FUNCTION pg_temp.msg(tag text, rcpt text) RETURNS aimroute.outbox LANGUAGE sql AS $$
    SELECT * FROM aimroute.outbox WHERE lead_id = pg_temp.lid(tag) AND recipient = rcpt AND purpose = 'lead'
$$;
CREATE FUNCTION pg_temp.verp(tag text, rcpt text) RETURNS text LANGUAGE sql AS $$
    SELECT 'bounces+' || aimroute.verp_key(pg_temp.msg(tag, rcpt)) || '@oem.example'
$$;
SELECT is(record_dsn(pg_temp.dsn(pg_temp.verp('verp', 'own@b.example'), 'own@b.example', 'delayed', '4.4.1',
                                 '451 4.4.1 try again later', '<someone@else.example>')),
          0, 'Action delayed: no bounce recorded');
SELECT is((SELECT outcome || ' ' || message_status || ' ' || response FROM delivery_attempts
            WHERE message_id = (pg_temp.msg('verp', 'own@b.example')).message_id ORDER BY attempt_id DESC LIMIT 1),
          'Delayed delivered delayed, not a bounce: 4.4.1 smtp; 451 4.4.1 try again later (in reply to RCPT TO command) (DSN, dns; relay.oem.example, message found by VERP)',
          'but an attempt row Delayed, with the status and diagnostic; the message stays delivered');
SELECT is(record_dsn(pg_temp.dsn(pg_temp.verp('verp', 'own@b.example'), 'own@b.example', 'failed', '5.2.2',
                                 '552 5.2.2 mailbox full', '<someone@else.example>')),
          1, '5.2.2 (mailbox full): one bounce recorded');
SELECT is((SELECT status || ' ' || outcome FROM outbox WHERE message_id = (pg_temp.msg('verp', 'own@b.example')).message_id)
            || ' ' || (SELECT delivery_status FROM dealer_contacts WHERE email = 'own@b.example'),
          'failed Soft Bounce Soft Bounce', '5.2.2 is a Soft Bounce, as providers treat it; the contact is suppressed');
SELECT is(record_dsn(pg_temp.dsn(pg_temp.verp('verp', 'shared@box.example'), 'shared@box.example', 'failed', '5.1.1',
                                 '550 5.1.1 <shared@box.example>: Recipient address rejected: User unknown',
                                 '<someone@else.example>')),
          1, '5.1.1: one bounce recorded, the message found by its VERP address');
SELECT is((SELECT status || ' ' || outcome FROM outbox WHERE message_id = (pg_temp.msg('verp', 'shared@box.example')).message_id),
          'failed Hard Bounce', 'the Delivered message becomes the Hard Bounce');
SELECT is((SELECT string_agg(DISTINCT delivery_status, ',') FROM dealer_contacts WHERE lower(email) = 'shared@box.example'),
          'Hard Bounce', 'every contact with the address is suppressed');
SELECT is((SELECT email_status FROM lead_delivery_status WHERE lead_id = pg_temp.lid('verp')), 'Failure',
          'lead_delivery_status: the lead, Delivered before, is a Failure');
SELECT is((SELECT failure FROM delivery_issues WHERE lead_id = pg_temp.lid('verp')), 'Failure', 'delivery_issues lists it');
SELECT is((SELECT count(*) FROM outbox WHERE purpose = 'failure notice' AND lead_id = pg_temp.lid('verp')), 1::bigint,
          'and the real-time failure notice is queued');
SELECT is(record_dsn(pg_temp.dsn(pg_temp.verp('verp', 'shared@box.example'), 'shared@box.example', 'failed', '5.1.1',
                                 '550 5.1.1 user unknown', '<someone@else.example>')),
          0, 'the same DSN again records nothing');
-- By the returned Message-ID, when the DSN went to smtp_from.
SELECT set_delivery_status_active(pg_temp.shared_id('BX-A'));
SELECT is(record_dsn(pg_temp.dsn('leads@oem.example', 'Shared@Box.example', 'failed', '5.1.1', '550 5.1.1 user unknown',
                                 (pg_temp.msg('plain', 'shared@box.example')).message_key)),
          1, 'without VERP, the returned headers'' Message-ID names the message');
SELECT is((SELECT outcome FROM outbox WHERE message_id = (pg_temp.msg('plain', 'shared@box.example')).message_id),
          'Hard Bounce', 'and it is the bounce');
-- Nothing is recorded against a message the DSN does not name exactly.
SELECT is(record_dsn(pg_temp.dsn('bounces+' || (pg_temp.msg('plain', 'own@b.example')).message_id || '.00000000000000000000@oem.example',
                                 'own@b.example', 'failed', '5.1.1', '550 user unknown', '<aimroute.1.2@oem.example>')),
          0, 'a VERP key with the right message id and a wrong time, and a Message-ID of no message: nothing recorded');
SELECT is(record_dsn(pg_temp.dsn(pg_temp.verp('plain', 'own@b.example'), 'someone@else.example', 'failed', '5.1.1',
                                 '550 user unknown', '<x@y>')),
          0, 'a report on another recipient than the message''s: nothing recorded');
SELECT is((SELECT status FROM outbox WHERE message_id = (pg_temp.msg('plain', 'own@b.example')).message_id),
          'delivered', 'and that message stays delivered');
-- Not a DSN: a clear error.
SELECT throws_ok($$SELECT aimroute.record_dsn(E'From: a@b.example\r\nSubject: out of office\r\nContent-Type: text/plain\r\n\r\nI am away.')$$,
                 '22023', 'not a delivery status notification: its Content-Type is text/plain, not multipart/report',
                 'a message that is not multipart/report is refused');
SELECT throws_ok($$SELECT aimroute.record_dsn(E'Content-Type: multipart/report; boundary=b\n\n--b\nContent-Type: text/plain\n\nhello\n--b--\n')$$,
                 '22023', 'not a delivery status notification: it has no message/delivery-status part',
                 'a report without a delivery-status part is refused');
SELECT throws_ok($$SELECT aimroute.record_dsn(NULL)$$, '22004', 'record_dsn needs the DSN', 'NULL is refused');

-- 4. record_delivery_event: provider webhooks.  The fixtures follow each
-- provider's public description of its events; the message keys are the
-- ones aimroute sent.
CREATE FUNCTION pg_temp.fresh(tag text) RETURNS void LANGUAGE sql AS $$
    UPDATE aimroute.dealer_contacts SET delivery_status = 'Active' WHERE dealer_number LIKE 'BX-%';
    SELECT pg_temp.lead(tag, '60601');
    SELECT pg_temp.deliver();
$$;
CREATE FUNCTION pg_temp.state(tag text, rcpt text) RETURNS text LANGUAGE sql AS $$
    SELECT o.status || ' ' || o.outcome || ' ' || c.delivery_status
      FROM aimroute.outbox o JOIN aimroute.dealer_contacts c USING (contact_id)
     WHERE o.lead_id = pg_temp.lid(tag) AND o.recipient = rcpt AND o.purpose = 'lead'
$$;
CREATE FUNCTION pg_temp.last_row(tag text, rcpt text) RETURNS text LANGUAGE sql AS $$
    SELECT a.outcome || ': ' || a.response FROM aimroute.delivery_attempts a
     WHERE a.lead_id = pg_temp.lid(tag) AND a.recipient = rcpt ORDER BY a.attempt_id DESC LIMIT 1
$$;

-- SendGrid: the Event Webhook posts an array of events.
SELECT pg_temp.fresh('sg');
SELECT is(record_delivery_event('sendgrid', jsonb_build_array(
    jsonb_build_object('email', 'own@b.example', 'timestamp', 1765020000, 'event', 'processed',
                       'smtp-id', (pg_temp.msg('sg', 'own@b.example')).message_key, 'sg_message_id', 'sg1.filter0001'),
    jsonb_build_object('email', 'own@b.example', 'timestamp', 1765020003, 'event', 'delivered', 'response', '250 2.0.0 OK queued',
                       'smtp-id', (pg_temp.msg('sg', 'own@b.example')).message_key, 'sg_message_id', 'sg1.filter0001'),
    jsonb_build_object('email', 'shared@box.example', 'timestamp', 1765020004, 'event', 'bounce', 'type', 'bounce',
                       'status', '5.1.1', 'reason', '550 5.1.1 The email account that you tried to reach does not exist',
                       'smtp-id', (pg_temp.msg('sg', 'shared@box.example')).message_key, 'sg_message_id', 'sg2.filter0001'))),
          2, 'sendgrid: an array of processed (ignored), delivered and bounce: two recorded');
SELECT is(pg_temp.last_row('sg', 'own@b.example'), 'Delivered: delivered to the mailbox: 250 2.0.0 OK queued (sendgrid)',
          'sendgrid delivered: an attempt row');
SELECT is(pg_temp.state('sg', 'shared@box.example'), 'failed Hard Bounce Hard Bounce',
          'sendgrid bounce: the Delivered message becomes the Hard Bounce, the contact is suppressed');
SELECT is(record_delivery_event('sendgrid', jsonb_build_object('email', 'own@b.example', 'event', 'bounce', 'type', 'blocked',
              'status', '5.7.1', 'reason', '554 5.7.1 blocked using a blocklist', 'smtp-id', (pg_temp.msg('sg', 'own@b.example')).message_key)),
          1, 'sendgrid block: recorded');
SELECT is(pg_temp.state('sg', 'own@b.example'), 'failed Soft Bounce Soft Bounce', 'a block is a Soft Bounce');
SELECT is(record_delivery_event('sendgrid', '{"email": "nobody@nowhere.example", "event": "bounce", "status": "5.1.1"}'), 0,
          'a bounce of an address no contact and no message has: nothing recorded');

-- Mailgun: {"signature": ..., "event-data": ...}; Message-ID without brackets.
SELECT pg_temp.fresh('mg');
SELECT is(record_delivery_event('mailgun', jsonb_build_object('signature', jsonb_build_object('timestamp', '1765020000', 'token', 't', 'signature', 's'),
    'event-data', jsonb_build_object('event', 'failed', 'severity', 'temporary', 'reason', 'generic', 'recipient', 'own@b.example',
        'envelope', jsonb_build_object('sender', pg_temp.verp('mg', 'own@b.example'), 'targets', 'own@b.example'),
        'message', jsonb_build_object('headers', jsonb_build_object('message-id', btrim((pg_temp.msg('mg', 'own@b.example')).message_key, '<>'))),
        'delivery-status', jsonb_build_object('code', 421, 'message', '4.7.0 try again later', 'attempt-no', 1)))),
          1, 'mailgun temporary failure: recorded');
SELECT is(pg_temp.last_row('mg', 'own@b.example') || ' / ' || pg_temp.state('mg', 'own@b.example'),
          'Delayed: delayed, not a bounce: 421 4.7.0 try again later generic (mailgun) / delivered Delivered Active',
          'as a Delayed attempt: not a bounce');
SELECT is(record_delivery_event('mailgun', jsonb_build_object('event-data', jsonb_build_object('event', 'failed', 'severity', 'permanent',
        'reason', 'bounce', 'recipient', 'shared@box.example',
        'message', jsonb_build_object('headers', jsonb_build_object('message-id', btrim((pg_temp.msg('mg', 'shared@box.example')).message_key, '<>'))),
        'delivery-status', jsonb_build_object('code', 550, 'message', '5.1.1 No such user', 'description', '')))),
          1, 'mailgun permanent failure: recorded');
SELECT is(pg_temp.state('mg', 'shared@box.example'), 'failed Hard Bounce Hard Bounce', 'as a Hard Bounce');
SELECT is(record_delivery_event('mailgun', jsonb_build_object('event-data', jsonb_build_object('event', 'complained',
        'recipient', 'own@b.example',
        'message', jsonb_build_object('headers', jsonb_build_object('message-id', btrim((pg_temp.msg('mg', 'own@b.example')).message_key, '<>')))))),
          1, 'mailgun spam complaint: recorded');
SELECT is(pg_temp.state('mg', 'own@b.example') || ' / ' || pg_temp.last_row('mg', 'own@b.example'),
          'delivered Delivered Hard Bounce / Complaint: marked as spam by its reader: complaint (mailgun)',
          'a complaint suppresses the address; the message stays delivered, with a Complaint row');

-- Amazon SES through SNS: the event is the notification's Message, as a string.
SELECT pg_temp.fresh('ses');
SELECT is(record_delivery_event('ses', jsonb_build_object('Type', 'Notification', 'MessageId', 'sns-1',
    'TopicArn', 'arn:aws:sns:us-east-1:123456789012:ses-bounces', 'Timestamp', '2026-12-06T11:40:00.000Z',
    'Message', jsonb_build_object('notificationType', 'Bounce',
        'bounce', jsonb_build_object('bounceType', 'Permanent', 'bounceSubType', 'General', 'reportingMTA', 'dns; a1.smtp-out.amazonses.com',
            'bouncedRecipients', jsonb_build_array(jsonb_build_object('emailAddress', 'shared@box.example', 'action', 'failed',
                'status', '5.1.1', 'diagnosticCode', 'smtp; 550 5.1.1 user unknown'))),
        'mail', jsonb_build_object('source', pg_temp.verp('ses', 'shared@box.example'), 'messageId', '0100018c-ses-id',
            'destination', jsonb_build_array('shared@box.example'),
            'headers', jsonb_build_array(jsonb_build_object('name', 'Message-ID', 'value', (pg_temp.msg('ses', 'shared@box.example')).message_key))))::text)),
          1, 'ses bounce in an SNS notification: recorded');
SELECT is(pg_temp.state('ses', 'shared@box.example') || ' / ' || pg_temp.last_row('ses', 'shared@box.example'),
          'failed Hard Bounce Hard Bounce / Hard Bounce: bounced after delivery: 5.1.1 smtp; 550 5.1.1 user unknown (Permanent General) (ses)',
          'a Permanent bounce is a Hard Bounce');
SELECT is(record_delivery_event('ses', jsonb_build_object('eventType', 'Delivery',
        'delivery', jsonb_build_object('recipients', jsonb_build_array('own@b.example'), 'smtpResponse', '250 2.6.0 Message received'),
        'mail', jsonb_build_object('source', pg_temp.verp('ses', 'own@b.example')))),
          1, 'ses delivery, raw message delivery (no SNS envelope): recorded');
SELECT is(pg_temp.last_row('ses', 'own@b.example'), 'Delivered: delivered to the mailbox: 250 2.6.0 Message received (ses)',
          'as an attempt row');
SELECT is(record_delivery_event('ses', '{"Type": "SubscriptionConfirmation", "SubscribeURL": "https://sns.example/confirm"}'), 0,
          'an SNS subscription confirmation records nothing');
SELECT throws_ok($$SELECT aimroute.record_delivery_event('ses', '{"Type": "Notification", "Message": "not json"}')$$, '22023',
                 'the SNS notification''s Message is not an SES event in JSON', 'an SNS notification whose Message is not JSON is refused');

-- Postmark: no key of ours in the event; the latest message delivered to the address.
SELECT pg_temp.fresh('pm');
SELECT is(record_delivery_event('postmark', '{"RecordType": "Bounce", "ID": 42, "Type": "HardBounce", "TypeCode": 1,
    "MessageID": "883953f4-0000-0000-0000-000000000000", "Description": "The server was unable to deliver your message",
    "Details": "smtp; 550 5.1.1 user unknown", "Email": "Shared@Box.example", "BouncedAt": "2026-12-06T11:40:00Z",
    "Inactive": true, "CanActivate": true, "MessageStream": "outbound"}'),
          1, 'postmark hard bounce: recorded');
SELECT is(pg_temp.state('pm', 'shared@box.example'), 'failed Hard Bounce Hard Bounce',
          'against the latest message delivered to the address');
SELECT is(record_delivery_event('postmark', '{"RecordType": "Delivery", "MessageID": "883953f4-1", "Recipient": "own@b.example",
    "DeliveredAt": "2026-12-06T11:40:00Z", "Details": "Test delivery webhook details", "Tag": "", "ServerID": 1}'),
          1, 'postmark delivery: recorded');
SELECT is(record_delivery_event('postmark', '{"RecordType": "SpamComplaint", "Type": "SpamComplaint", "TypeCode": 512,
    "Email": "own@b.example", "Details": "complaint", "MessageID": "883953f4-1"}'),
          1, 'postmark spam complaint: recorded');
SELECT is(pg_temp.state('pm', 'own@b.example'), 'delivered Delivered Hard Bounce', 'the address is suppressed');
SELECT is(record_delivery_event('postmark', '{"RecordType": "Open", "Recipient": "own@b.example"}'), 0, 'an open records nothing');

-- Bad input.
SELECT throws_ok($$SELECT aimroute.record_delivery_event('mandrill', '{}')$$, '22023', 'unknown mail provider ''mandrill''',
                 'an unknown provider is refused');
SELECT throws_ok($$SELECT aimroute.record_delivery_event('sendgrid', '"bounce"')$$, '22023',
                 'a sendgrid event is a JSON object, not string', 'an event that is not an object is refused');
SELECT throws_ok($$SELECT aimroute.record_delivery_event('postmark', NULL)$$, '22004', 'record_delivery_event needs the event',
                 'a NULL event is refused');

SELECT * FROM finish();
ROLLBACK;
