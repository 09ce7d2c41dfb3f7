-- test/delivery.sql: the delivery queue and its bookkeeping (SPEC section 4),
-- in SQL.  The mark routing leaves on a lead to be sent, the outbox the
-- expansion of the marks (aimroute.delivery_expand) and moves fill, the contact and
-- integration checks, how each reply is judged (aimroute.delivery_record is
-- what the delivery worker calls with what libcurl saw), suppression,
-- record_bounce, send_lead, failure notices, the daily recap and the
-- views.  t/003_delivery.pl sends the same messages over real SMTP and
-- HTTP.  Everything is rolled back.
BEGIN;
SELECT plan(141);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = warning;

INSERT INTO brands VALUES ('DQ', 'Delivery Queue Boats');
INSERT INTO dealers (dealer_number, name, country, postal_code, region) VALUES
    ('DQ-HQ', 'HQ', 'US', '10001', NULL),
    ('DQ-A', 'Alpha Marine', 'US', '49757', 'North'),
    ('DQ-B', 'Bravo Marine', 'US', '60601', 'North'),
    ('DQ-C', 'Charlie Marine', 'US', '90210', 'West');
INSERT INTO dealer_brands VALUES ('DQ-A', 'DQ'), ('DQ-B', 'DQ'), ('DQ-C', 'DQ');
INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
    ('DQ-A', 'DQ', 'postal', 'US', '49757'), ('DQ-B', 'DQ', 'postal', 'US', '60601'),
    ('DQ-C', 'DQ', 'postal', 'US', '90210');
INSERT INTO dealer_contacts (dealer_number, name, email, mobile, contact_types) VALUES
    ('DQ-A', 'A sales', 'sales@a.example', '+15550001', '{Leads: Emails To}'),
    ('DQ-A', 'A owner', 'owner@a.example', NULL, '{Leads: Emails CC}'),
    ('DQ-A', 'A manager', 'manager@a.example', NULL, '{Dealer Lead Delivery Notification (real-time),Lead Delivery Notification Daily}'),
    ('DQ-B', 'B owner', 'owner@b.example', NULL, '{Leads: Emails CC}');
INSERT INTO crm_integrations (dealer_number, kind, endpoint) VALUES
    ('DQ-A', 'adf_http', 'https://crm.a.example/adf'),
    ('DQ-A', 'adf_email', 'leads@crm.a.example'),
    ('DQ-A', 'adf_http', 'https://old-crm.a.example/adf');
UPDATE crm_integrations SET active = false WHERE endpoint LIKE '%old-crm%';
INSERT INTO notification_contacts (email, contact_type, region) VALUES
    ('ops@oem.example', 'Dealer Lead Delivery Notification (real-time)', NULL),
    ('west@oem.example', 'Dealer Lead Delivery Notification (real-time)', 'West'),
    ('daily@oem.example', 'Lead Delivery Notification Daily', NULL);
UPDATE settings SET default_dealer_number = 'DQ-HQ', push_gateway_url = 'https://push.example/send',
       delivery_retry_schedule = '{20 seconds,20 minutes,20 hours}', timezone = 'America/Chicago',
       reroute_enabled = false, product_routing_enabled = false, inventory_routing_enabled = false,
       radius_enabled = true, radius_countries = '{US,CA}';

CREATE FUNCTION pg_temp.lead(tag text, zip text, send boolean DEFAULT true) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO aimroute.leads (brand_code, country, postal_code, first_name, comment, send_to_dealer)
    VALUES ('DQ', 'US', zip, 'Ann', tag, send) RETURNING lead_id
$$;
-- The worker's round for one lead, as libcurl would report it: the
-- marked leads expanded into their messages, as every round begins, each
-- message claimed, then recorded with the reply the test gives its
-- recipient (default: accepted).
CREATE FUNCTION pg_temp.deliver(id bigint, replies jsonb DEFAULT '{}') RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    j aimroute.delivery_job;
    r jsonb;
BEGIN
    PERFORM aimroute.delivery_expand(1000);
    UPDATE aimroute.outbox SET due_at = clock_timestamp() WHERE lead_id = id AND status = 'queued';
    FOR j IN SELECT * FROM aimroute.delivery_claim(1000, '5 minutes') LOOP
        r := coalesce(replies -> (SELECT o.recipient FROM aimroute.outbox o WHERE o.message_id = j.message_id),
                      CASE WHEN j.transport = 'smtp' THEN '[0, 250, "250 OK"]' ELSE '[0, 200, "HTTP 200"]' END::jsonb);
        PERFORM aimroute.delivery_record(j.message_id, j.attempt, (r ->> 0)::int, (r ->> 1)::int, r ->> 2);
    END LOOP;
END
$$;
CREATE FUNCTION pg_temp.status(id bigint) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(' ', sent_to_dealer, coalesce(email_status, '-'), coalesce(mobile_status, '-'),
                     coalesce(crm_status, '-'), no_contacts_configured, delivery_pending)
      FROM aimroute.lead_delivery_status WHERE lead_id = id
$$;

-- What routing marks, and what the expansion of the mark queues.
SELECT pg_temp.lead('a', '49757');
SELECT is((SELECT notice_pending::text || ' ' || (SELECT count(*) FROM lead_notifications n WHERE n.lead_id = l.lead_id)
                  || ' ' || (SELECT count(*) FROM outbox o WHERE o.lead_id = l.lead_id)
             FROM leads l WHERE comment = 'a'),
          'true 0 0', 'routing marks a lead to be sent and queues nothing itself');
SELECT is(pg_temp.status((SELECT lead_id FROM leads WHERE comment = 'a')), 'f - - - f t',
          'a marked lead: not sent, no status, pending');
SELECT is((SELECT reason FROM unsent_leads WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'a')),
          'Waiting for the delivery worker', 'unsent_leads shows a marked lead waiting');
SELECT is(delivery_expand(1000), 1, 'the expansion takes the marked lead');
SELECT is((SELECT notice_pending FROM leads WHERE comment = 'a'), false, 'and clears its mark');
SELECT is(delivery_expand(1000), 0, 'a lead is expanded once');
SELECT is((SELECT string_agg(method || ':' || role || ':' || recipient, ' ' ORDER BY method, role, recipient)
             FROM outbox WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'a')),
          'crm:adf_email:leads@crm.a.example crm:adf_http:https://crm.a.example/adf email:CC:owner@a.example email:To:sales@a.example mobile:Push:+15550001',
          'routing queues an email per To and CC contact, a push per mobile, an ADF message per active integration');
SELECT is((SELECT messages FROM lead_notifications WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'a')),
          5, 'the notice counts its 5 messages');
SELECT is(pg_temp.status((SELECT lead_id FROM leads WHERE comment = 'a')), 'f - - - f t',
          'before any attempt: not sent, no status, pending');
SELECT is((SELECT reason FROM unsent_leads WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'a')),
          'Waiting for the delivery worker', 'unsent_leads shows it waiting');

SELECT pg_temp.lead('b', '60601');
SELECT is((SELECT reason FROM unsent_leads WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'b')),
          'No contacts configured', 'unsent_leads: No contacts configured as soon as the lead is routed');
SELECT is(pg_temp.status((SELECT lead_id FROM leads WHERE comment = 'b')), 'f - - - t f',
          'lead_delivery_status: no contacts, nothing pending, before the expansion');
SELECT is(delivery_expand(1000), 1, 'the expansion takes it');
SELECT is((SELECT no_contacts::text || ' ' || messages FROM lead_notifications
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'b')), 'true 0',
          'a dealer with only a CC contact: No contacts configured, nothing queued');
SELECT is((SELECT reason FROM unsent_leads WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'b')),
          'No contacts configured', 'unsent_leads: No contacts configured');
SELECT pg_temp.lead('quiet', '49757', false);
SELECT is((SELECT notice_pending FROM leads WHERE comment = 'quiet'), false,
          'send_to_dealer false: no mark');
SELECT is(delivery_expand(1000), 0, 'and nothing to expand');
SELECT is((SELECT count(*) FROM lead_notifications WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'quiet')),
          0::bigint, 'send_to_dealer false: nothing is queued');
SELECT is((SELECT reason FROM unsent_leads WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'quiet')),
          'send_to_dealer false', 'unsent_leads: send_to_dealer false');
SELECT throws_ok($$SELECT aimroute.send_lead((SELECT lead_id FROM aimroute.leads WHERE comment = 'quiet'))$$,
                 '55000', NULL, 'send_lead refuses a lead not to be sent');
SELECT throws_ok($$SELECT aimroute.send_lead(-1)$$, 'P0002', 'lead -1 does not exist', 'send_lead: unknown lead');

-- A lead whose notice raises is set aside and keeps its mark; the others
-- are queued, and the next expansion does not try it before its retry_at.
CREATE FUNCTION pg_temp.planted_notice_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT comment FROM aimroute.leads WHERE lead_id = NEW.lead_id) = 'bad notice' THEN
        RAISE EXCEPTION 'planted notice fault' USING DETAIL = 'put there by the test';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER planted_notice_fault BEFORE INSERT ON lead_notifications
    FOR EACH ROW EXECUTE FUNCTION pg_temp.planted_notice_fault();
SELECT pg_temp.lead('good notice 1', '49757');
SELECT pg_temp.lead('bad notice', '49757');
SELECT pg_temp.lead('good notice 2', '49757');
SELECT is(delivery_expand(1000), 2, 'a notice that raises: the others are queued');
SELECT is((SELECT string_agg(comment || ':' || notice_pending, ' ' ORDER BY lead_id) FROM leads
            WHERE comment LIKE '% notice%'),
          'good notice 1:false bad notice:true good notice 2:false', 'the bad one keeps its mark');
SELECT is((SELECT kind || ' ' || step || ' ' || error_code || ' ' || error || ' ' || detail || ' ' || failures
                  || ' ' || (retry_at > clock_timestamp() + interval '50 seconds')
             FROM set_aside_items WHERE item_id = (SELECT lead_id FROM leads WHERE comment = 'bad notice')),
          'notice notice P0001 planted notice fault put there by the test 1 true',
          'and is set aside with its error, to be tried again in a minute');
SELECT is(delivery_expand(1000), 0, 'the next expansion does not try it before its retry_at');
SELECT is((SELECT failures FROM set_aside_items WHERE kind = 'notice'), 1, 'so it failed once');
DROP TRIGGER planted_notice_fault ON lead_notifications;
UPDATE set_aside_items SET retry_at = clock_timestamp() WHERE kind = 'notice';
SELECT is(delivery_expand(1000), 1, 'once retried, it is queued');
SELECT is((SELECT count(*) FROM lead_notifications
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'bad notice')), 1::bigint,
          'with one notice');
SELECT is((SELECT count(*) FROM set_aside_items WHERE kind = 'notice'), 0::bigint,
          'and its set-aside row is gone');

-- Header text: RFC 2047 words that decode to the text; a subject of any
-- length is rendered (in one pass: this took minutes at 100,000
-- characters) and cut to 200 characters.
CREATE FUNCTION pg_temp.decoded_words(h text) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(convert_from(decode(substring(w FROM '^=\?UTF-8\?B\?(.*)\?=$'), 'base64'), 'UTF8'), '' ORDER BY n)
      FROM regexp_split_to_table(h, E'\r\n ') WITH ORDINALITY AS t (w, n)
$$;
SELECT is(pg_temp.decoded_words(mime_header_text('Crème brûlée über ünïcödé 😀 and more')),
          'Crème brûlée über ünïcödé 😀 and more',
          'mime_header_text: encoded words that decode to the text');
SELECT is(mime_header_text('Plain ASCII subject'), 'Plain ASCII subject', 'mime_header_text: ASCII as it is');
SELECT is(pg_temp.decoded_words(substring(render_email('a@x.example', 'b@x.example', repeat('é', 100000), 'body',
                                                      '<k@x.example>', now())
                                          FROM E'\r\nSubject: (.*?)\r\nMessage-ID')),
          repeat('é', 200), 'a subject of 100,000 characters is rendered, as its first 200');

-- A rolled-back lead leaves nothing queued.
SAVEPOINT s;
SELECT pg_temp.lead('rolled back', '49757');
ROLLBACK TO SAVEPOINT s;
SELECT is(delivery_expand(1000), 0, 'a rolled-back lead leaves no mark');
SELECT is((SELECT count(*) FROM outbox o WHERE NOT EXISTS (SELECT FROM leads l WHERE l.lead_id = o.lead_id)),
          0::bigint, 'no message outlives its rolled-back lead');

-- Delivered, by every method.
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'a'));
SELECT is(pg_temp.status((SELECT lead_id FROM leads WHERE comment = 'a')), 't Delivered Delivered Delivered f f',
          'all accepted: Delivered by email, mobile and CRM');
SELECT is((SELECT count(*) FROM unsent_leads WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'a')),
          0::bigint, 'a delivered lead is not unsent');
SELECT is((SELECT count(DISTINCT message_key) FROM outbox WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'a')),
          5::bigint, 'each message has its own key');
SELECT is((SELECT count(*) FROM delivery_claim(1000, '5 minutes')), 0::bigint,
          'nothing recorded as delivered is claimed again');

-- How each reply is judged.
SELECT pg_temp.lead('c', '49757');
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'c'),
    '{"owner@a.example": [55, 550, "550 5.1.1 recipient not found"],
      "+15550001": [0, 500, "HTTP 500"],
      "https://crm.a.example/adf": [7, 0, "Failed to connect"]}');
SELECT is((SELECT string_agg(recipient || '=' || outcome, ' ' ORDER BY message_id) FROM outbox
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'c')),
          'sales@a.example=Delivered owner@a.example=Hard Bounce +15550001=Will retry https://crm.a.example/adf=Will retry leads@crm.a.example=Delivered',
          '550: Hard Bounce; HTTP 500 and connection errors: retried');
SELECT is((SELECT delivery_status FROM dealer_contacts WHERE email = 'owner@a.example'), 'Hard Bounce',
          'the bounced contact is suppressed');
SELECT is((SELECT due_at - clock_timestamp() > interval '19 seconds' AND due_at - clock_timestamp() <= interval '20 seconds'
             FROM outbox WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'c') AND method = 'mobile'),
          true, 'the first retry is due after the schedule''s first wait (20 seconds)');
SELECT is(pg_temp.status((SELECT lead_id FROM leads WHERE comment = 'c')), 't Partial Delivery Failure Partial Delivery f t',
          'while retrying: statuses so far, still pending');
SELECT is((SELECT count(*) FROM outbox WHERE purpose = 'failure notice'), 0::bigint,
          'no failure notice while retries are pending');
-- Out of retries: the fourth failure is final (three waits in the schedule).
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'c'),
    '{"+15550001": [0, 500, "HTTP 500"], "https://crm.a.example/adf": [28, 0, "Operation timed out"]}');
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'c'),
    '{"+15550001": [0, 500, "HTTP 500"], "https://crm.a.example/adf": [28, 0, "Operation timed out"]}');
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'c'),
    '{"+15550001": [0, 503, "HTTP 503"], "https://crm.a.example/adf": [28, 0, "Operation timed out"]}');
SELECT is((SELECT string_agg(outcome, ',' ORDER BY attempt) FROM delivery_attempts
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'c') AND method = 'mobile'),
          'Will retry,Will retry,Will retry,Failed', 'retried three times on the schedule, then Failed');
SELECT ok((SELECT response LIKE '%gave up after 4 attempts%' FROM delivery_attempts
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'c') AND method = 'mobile' AND attempt = 4),
          'the last attempt says it gave up');
SELECT is(pg_temp.status((SELECT lead_id FROM leads WHERE comment = 'c')), 't Partial Delivery Failure Partial Delivery f f',
          'settled: email Partial, mobile Failure, CRM Partial');
SELECT is((SELECT failure || ' ' || failed_messages FROM delivery_issues
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'c')), 'Partial Delivery 3',
          'delivery_issues lists it as a Partial Delivery with 3 failed messages');
SELECT is((SELECT day FROM delivery_issues WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'c')),
          (now() AT TIME ZONE 'America/Chicago')::date, 'by the day in the OEM''s time zone');

-- Real-time failure notices: the OEM contact and the dealer's own, not another region's.
SELECT is((SELECT string_agg(recipient, ' ' ORDER BY recipient) FROM outbox
            WHERE purpose = 'failure notice' AND lead_id = (SELECT lead_id FROM leads WHERE comment = 'c')),
          'manager@a.example ops@oem.example', 'failure notices go to the OEM contact and the dealer''s notification contact');
SELECT ok((SELECT bool_and(subject = format('Lead %s not delivered to dealer DQ-A (Partial Delivery)', lead_id)
                           AND body LIKE '%The dealer''s copy (CC) address owner@a.example does not exist or does not take mail%')
             FROM outbox WHERE purpose = 'failure notice'),
          'the notice names the lead, the verdict and each recipient not reached');
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'c'));
SELECT is((SELECT count(*) FROM outbox WHERE purpose = 'failure notice' AND status = 'delivered'), 2::bigint,
          'the notices are sent like any message');
SELECT is((SELECT count(*) FROM lead_notifications WHERE failure_notice_at IS NOT NULL), 1::bigint,
          'once per notice');

-- Suppression: the bounced contact gets nothing more, each skip is a failed attempt.
SELECT pg_temp.lead('d', '49757');
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'd'));
SELECT is((SELECT outcome || ' ' || attempt FROM delivery_attempts
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'd') AND recipient = 'owner@a.example'),
          'Suppressed 0', 'a suppressed contact''s message is recorded as failed without an attempt');
SELECT is(pg_temp.status((SELECT lead_id FROM leads WHERE comment = 'd')), 't Partial Delivery Delivered Delivered f f',
          'the lead is a Partial Delivery by email');
SELECT lives_ok($$SELECT aimroute.set_delivery_status_active((SELECT contact_id FROM aimroute.dealer_contacts WHERE email = 'owner@a.example'))$$,
                'set_delivery_status_active');
SELECT is((SELECT delivery_status FROM dealer_contacts WHERE email = 'owner@a.example'), 'Active', 'the contact is Active again');
SELECT is(send_lead((SELECT lead_id FROM leads WHERE comment = 'd')), 5, 'send_lead queues the lead again: 5 messages');
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'd'));
SELECT is(pg_temp.status((SELECT lead_id FROM leads WHERE comment = 'd')), 't Delivered Delivered Delivered f f',
          'after the reset the lead is Delivered: the status follows the latest notice');
SELECT throws_ok($$SELECT aimroute.set_delivery_status_active(-1)$$, 'P0002', 'contact -1 does not exist',
                 'set_delivery_status_active: unknown contact');

-- Soft bounces, other SMTP replies.
SELECT is(delivery_record(m.message_id, m.attempts, 55, 452, '452 4.2.2 mailbox full'), NULL,
          'delivery_record ignores a message that is not being sent')
  FROM outbox m WHERE recipient = 'sales@a.example' LIMIT 1;
SELECT pg_temp.lead('e', '49757');
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'e'),
    '{"sales@a.example": [55, 452, "452 4.2.2 mailbox full"], "owner@a.example": [55, 451, "451 try later"],
      "leads@crm.a.example": [55, 554, "554 transaction failed"]}');
SELECT is((SELECT string_agg(recipient || '=' || outcome, ' ' ORDER BY message_id) FROM outbox
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'e') AND method <> 'mobile' AND role <> 'adf_http'),
          'sales@a.example=Soft Bounce owner@a.example=Will retry leads@crm.a.example=Failed',
          '452: Soft Bounce; 451: retried; another 5xx: Failed');

-- A refusal of the sender, or of everything, is not the recipient's bounce.
SELECT pg_temp.lead('g', '49757');
SELECT delivery_expand(1000);
UPDATE outbox SET due_at = clock_timestamp() WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'g');
UPDATE settings SET smtp_username = 'relay', smtp_password = 'secret';
CREATE TEMP TABLE gjobs AS
    SELECT j.*, o.recipient AS to_whom FROM delivery_claim(1000, '5 minutes') j JOIN outbox o USING (message_id)
     WHERE o.lead_id = (SELECT lead_id FROM leads WHERE comment = 'g');
SELECT is(delivery_record(message_id, attempt, 55, 550, '550 5.7.1 sender rejected', 'MAIL'), 'Failed',
          '550 to MAIL FROM: Failed, not a bounce')
  FROM gjobs WHERE to_whom = 'owner@a.example';
SELECT is((SELECT delivery_status FROM dealer_contacts WHERE email = 'owner@a.example'), 'Active',
          'and the contact stays Active');
SELECT ok((SELECT response LIKE '%(after MAIL)' FROM delivery_attempts
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'g') AND recipient = 'owner@a.example'),
          'the attempt says which command was refused');
SELECT is(delivery_record(message_id, attempt, 56, 550, '550 no service here', 'GREETING'), 'Failed',
          '550 in the server''s greeting: Failed, not a bounce')
  FROM gjobs WHERE to_whom = 'leads@crm.a.example';
SELECT is((SELECT string_agg(transport || ':' || coalesce(password, '-'), ' ' ORDER BY transport) FROM gjobs
            WHERE transport = 'http' OR to_whom = 'leads@crm.a.example'),
          'http:- http:- smtp:secret', 'the SMTP login goes with SMTP messages only');
UPDATE settings SET smtp_username = NULL, smtp_password = NULL;
UPDATE outbox SET status = 'cancelled' WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'g') AND status = 'sending';

-- record_bounce: a bounce reported after delivery.
SELECT throws_ok($$SELECT aimroute.record_bounce('sales@a.example', 'medium', 'x')$$, '22023',
                 'invalid bounce kind ''medium''', 'record_bounce: unknown kind');
SELECT set_delivery_status_active(contact_id) FROM dealer_contacts WHERE email = 'sales@a.example';
SELECT is(record_bounce('SALES@a.example ', 'hard', 'mailbox disabled'), 1, 'record_bounce: one contact changed');
SELECT is((SELECT delivery_status FROM dealer_contacts WHERE email = 'sales@a.example'), 'Hard Bounce',
          'the contact is a Hard Bounce');
SELECT is((SELECT outcome FROM delivery_attempts WHERE recipient = 'sales@a.example' ORDER BY attempt_id DESC LIMIT 1),
          'Hard Bounce', 'the latest message delivered to the address is recorded as bounced');
SELECT is(record_bounce('sales@a.example', 'soft', 'full'), 0, 'a soft bounce does not outrank a hard one');

-- A suppressed email address does not stop the contact's pushes.
SELECT pg_temp.lead('h', '49757');
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'h'));
SELECT is((SELECT string_agg(method || '=' || outcome, ' ' ORDER BY message_id) FROM outbox
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'h') AND contact_id =
                  (SELECT contact_id FROM dealer_contacts WHERE email = 'sales@a.example')),
          'email=Suppressed mobile=Delivered', 'the bounced contact''s email is suppressed, its push is sent');

-- A message cut short by a crash, then not sent again because a newer
-- notice replaced it: its record says the first attempt may have arrived.
SELECT pg_temp.lead('crash', '49757');
SELECT delivery_expand(1000);
UPDATE outbox SET due_at = clock_timestamp() WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'crash');
CREATE TEMP TABLE ijobs AS
    SELECT j.message_id FROM delivery_claim(1000, '5 minutes') j JOIN outbox o USING (message_id)
     WHERE o.lead_id = (SELECT lead_id FROM leads WHERE comment = 'crash');
UPDATE outbox SET due_at = clock_timestamp() - interval '1 second' WHERE message_id IN (SELECT message_id FROM ijobs);
SELECT send_lead((SELECT lead_id FROM leads WHERE comment = 'crash'));
CREATE TEMP TABLE ijobs2 AS SELECT message_id FROM delivery_claim(1000, '5 minutes');
SELECT is((SELECT count(*) FROM outbox WHERE message_id IN (SELECT message_id FROM ijobs)
            AND outcome = 'Cancelled'
            AND last_response LIKE 'not sent: notice % sent the lead to the dealer again (an earlier attempt was interrupted and may have reached the receiver)'),
          (SELECT count(*) FROM ijobs),
          'a crashed message cancelled by a newer notice says its attempt may have reached the receiver');
SELECT is((SELECT string_agg(outcome, ',' ORDER BY attempt_id) FROM delivery_attempt_log
            WHERE message_id = (SELECT min(message_id) FROM ijobs)),
          'Interrupted,Cancelled', 'its attempts: Interrupted, then Cancelled');
UPDATE outbox SET status = 'cancelled' WHERE message_id IN (SELECT message_id FROM ijobs2) AND status = 'sending';

-- send_lead supersedes the retries of the dealer's earlier notice.
SELECT pg_temp.lead('i', '49757');
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'i'), '{"+15550001": [0, 500, "HTTP 500"]}');
SELECT send_lead((SELECT lead_id FROM leads WHERE comment = 'i'));
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'i'));
SELECT ok((SELECT outcome = 'Cancelled' AND last_response LIKE 'not sent: notice % sent the lead to the dealer again'
             FROM outbox o JOIN lead_notifications n USING (notification_id)
            WHERE o.lead_id = (SELECT lead_id FROM leads WHERE comment = 'i') AND o.method = 'mobile'
            ORDER BY n.notification_id LIMIT 1),
          'the first notice''s pending retry is cancelled, not sent twice');

-- Moves queue a notice for the new dealer; the old dealer's pending messages are cancelled.
INSERT INTO dealer_contacts (dealer_number, name, email, contact_types) VALUES ('DQ-C', 'C sales', 'sales@c.example', '{Leads: Emails To}');
SELECT pg_temp.lead('f', '49757');
SELECT delivery_expand(1000);
SELECT reassign((SELECT lead_id FROM leads WHERE comment = 'f'), 'DQ-C', 'customer moved');
SELECT pg_temp.deliver((SELECT lead_id FROM leads WHERE comment = 'f'));
SELECT is((SELECT string_agg(DISTINCT dealer_number || '=' || status, ' ') FROM outbox
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'f') AND purpose = 'lead'),
          'DQ-A=cancelled DQ-C=delivered', 'a reassignment queues the new dealer''s messages and cancels the old dealer''s');
SELECT is(pg_temp.status((SELECT lead_id FROM leads WHERE comment = 'f')), 't Delivered - - f f',
          'lead_delivery_status follows the dealer holding the lead');
-- A lead moved while still marked gets one notice, to its new dealer:
-- the move queues it and clears the mark.
SELECT pg_temp.lead('moved marked', '49757');
SELECT reassign((SELECT lead_id FROM leads WHERE comment = 'moved marked'), 'DQ-C', 'customer moved');
SELECT is((SELECT notice_pending FROM leads WHERE comment = 'moved marked'), false, 'the move clears the mark');
SELECT is(delivery_expand(1000), 0, 'and leaves nothing to expand');
SELECT is((SELECT string_agg(dealer_number || ':' || event, ' ') FROM lead_notifications
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'moved marked')),
          'DQ-C:Reassigned', 'a lead moved while marked: one notice, to its new dealer');
-- So does a direct UPDATE of dealer_number (leads_record_history), and
-- send_lead of a marked lead.
SELECT pg_temp.lead('updated marked', '49757');
UPDATE leads SET dealer_number = 'DQ-C' WHERE comment = 'updated marked';
SELECT pg_temp.lead('resent marked', '49757');
SELECT is(send_lead((SELECT lead_id FROM leads WHERE comment = 'resent marked')), 5, 'send_lead of a marked lead');
SELECT is(delivery_expand(1000), 0, 'neither leaves a mark to expand');
SELECT is((SELECT string_agg(l.comment || '=' || n.dealer_number || ':' || n.event, ' ' ORDER BY l.lead_id)
             FROM leads l JOIN lead_notifications n USING (lead_id)
            WHERE l.comment IN ('updated marked', 'resent marked')),
          'updated marked=DQ-C:Updated resent marked=DQ-A:Resent', 'each got one notice');
-- Clearing the mark is not a user's change: no history, no new deadline.
SELECT pg_temp.lead('history', '49757');
CREATE TEMP TABLE before_expand AS SELECT * FROM leads WHERE comment = 'history';
SELECT delivery_expand(1000);
SELECT is((SELECT count(*) FROM lead_history WHERE lead_id = (SELECT lead_id FROM before_expand)), 0::bigint,
          'the expansion writes no lead_history');
SELECT is((SELECT to_jsonb(l) - 'notice_pending' FROM leads l WHERE comment = 'history'),
          (SELECT to_jsonb(b) - 'notice_pending' FROM before_expand b),
          'and changes nothing of the lead but its mark');
-- A lead no longer to be sent when the worker comes loses its mark and
-- gets nothing.
SELECT pg_temp.lead('unsent since', '49757');
UPDATE leads SET send_to_dealer = false WHERE comment = 'unsent since';
SELECT is(delivery_expand(1000), 1, 'a lead set not to be sent since is taken');
SELECT is((SELECT notice_pending::text || ' ' || (SELECT count(*) FROM lead_notifications n WHERE n.lead_id = l.lead_id)
             FROM leads l WHERE comment = 'unsent since'), 'false 0', 'and gets no notice');
-- The expansion is set-based: a batch of leads to several dealers, each
-- by its own dealer's recipients, max_leads at a time, oldest first.
SELECT pg_temp.lead('batch ' || i, CASE i % 3 WHEN 0 THEN '49757' WHEN 1 THEN '60601' ELSE '90210' END)
  FROM generate_series(1, 9) i;
SELECT is(delivery_expand(4), 4, 'max_leads at a time');
SELECT is((SELECT string_agg(comment, ',' ORDER BY lead_id) FROM leads WHERE comment LIKE 'batch %' AND NOT notice_pending),
          'batch 1,batch 2,batch 3,batch 4', 'oldest first');
SELECT is(delivery_expand(1000), 5, 'the rest');
SELECT is((SELECT string_agg(DISTINCT n.dealer_number || ':' || n.messages || ':' || n.no_contacts
                             || ':' || (SELECT count(*) FROM outbox o WHERE o.notification_id = n.notification_id), ' ')
             FROM leads l JOIN lead_notifications n USING (lead_id) WHERE l.comment LIKE 'batch %'),
          'DQ-A:5:false:5 DQ-B:0:true:0 DQ-C:1:false:1', 'each lead of the batch by its own dealer''s recipients');
SELECT throws_ok($$SELECT aimroute.delivery_expand(0)$$, '22023', 'max_leads must be 1 or more, not 0',
                 'delivery_expand: a bad max_leads');

-- The claim, set-based: one claim of messages of every kind.  Plain ones
-- (queued, their lead still with the dealer, their contact active) are
-- leased and rendered together, without delivery_claim_one; a message to
-- a suppressed contact, one whose lead moved, one whose lease ran out go
-- through delivery_claim_one in the same claim.
SET LOCAL track_functions = 'all';
SELECT count(*) FROM delivery_claim(1000, '5 minutes');  -- what earlier tests left due, out of the way
SELECT pg_temp.lead('sb expired', '49757');
SELECT delivery_expand(1000);
SELECT count(*) FROM delivery_claim(1000, '5 minutes');
UPDATE outbox SET due_at = clock_timestamp() - interval '1 second',
                  message_key = '<expired.' || message_id || '@oem.example>'
 WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb expired') AND role = 'CC';
SELECT pg_temp.lead('sb plain', '49757');
SELECT pg_temp.lead('sb moved', '49757');
SELECT delivery_expand(1000);
SELECT reassign((SELECT lead_id FROM leads WHERE comment = 'sb moved'), 'DQ-C', 'customer moved');
CREATE TEMP TABLE one_by_one AS
    SELECT pg_stat_get_xact_function_calls('aimroute.delivery_claim_one(aimroute.outbox, aimroute.settings, interval)'::regprocedure) AS calls;
CREATE TEMP TABLE sb_jobs AS
    SELECT j.*, o.recipient AS to_whom, l.comment FROM delivery_claim(1000, '5 minutes') j
      JOIN outbox o USING (message_id) JOIN leads l USING (lead_id)
     WHERE l.comment LIKE 'sb %';
SELECT is((SELECT string_agg(method || ':' || role || '=' || status || coalesce('/' || outcome, ''), ' ' ORDER BY message_id)
             FROM outbox WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb plain')),
          'email:To=failed/Suppressed email:CC=sending mobile:Push=sending crm:adf_http=sending crm:adf_email=sending',
          'set-based claim: the plain messages are leased, the suppressed contact''s email is settled');
SELECT is((SELECT string_agg(dealer_number || ':' || role || '=' || status || coalesce('/' || outcome, ''), ' ' ORDER BY message_id)
             FROM outbox WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb moved') AND role IN ('CC', 'To')),
          'DQ-A:To=cancelled/Cancelled DQ-A:CC=cancelled/Cancelled DQ-C:To=sending',
          'the moved lead''s old messages are cancelled, its new dealer''s claimed');
SELECT is((SELECT string_agg(a.outcome, ',' ORDER BY a.attempt_id) || ' ' || o.status || ' ' || o.attempts
             FROM outbox o JOIN delivery_attempt_log a USING (message_id)
            WHERE o.lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb expired') AND o.role = 'CC'
            GROUP BY o.status, o.attempts),
          'Interrupted sending 2', 'a lease run out: logged Interrupted and claimed again as the next attempt');
SELECT is((SELECT message_key FROM sb_jobs WHERE comment = 'sb expired' AND to_whom = 'owner@a.example'),
          (SELECT '<expired.' || message_id || '@oem.example>' FROM outbox
            WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb expired') AND role = 'CC'),
          'with the same key');
SELECT is((SELECT count(*) FROM sb_jobs), 6::bigint,
          'the claim returns the 5 plain messages and the one claimed again');
SELECT is(pg_stat_get_xact_function_calls('aimroute.delivery_claim_one(aimroute.outbox, aimroute.settings, interval)'::regprocedure)
              - (SELECT calls FROM one_by_one), 7::bigint,
          'only the others go through delivery_claim_one: 1 suppressed, 5 cancelled, 1 interrupted');
SELECT is((SELECT regexp_replace(payload, E'^Date: [^\r]*', '')
             FROM sb_jobs WHERE comment = 'sb plain' AND to_whom = 'owner@a.example'),
          (SELECT regexp_replace((delivery_render(o, s)).payload, E'^Date: [^\r]*', '') FROM outbox o, settings s
            WHERE o.lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb plain') AND o.role = 'CC'),
          'an email rendered with others is the email rendered on its own');
SELECT is((SELECT string_agg(transport || ' ' || coalesce(content_type, '-'), ', ' ORDER BY message_id)
             FROM sb_jobs WHERE comment = 'sb plain'),
          'smtp -, http application/json, http application/xml, smtp -', 'each by its transport');

-- Recording together: the deliveries set-based, every other outcome by
-- delivery_record, as delivery_record alone would record them.
SELECT is(delivery_record_batch(array_agg(j.message_id ORDER BY j.message_id), array_agg(j.attempt ORDER BY j.message_id),
                                array_agg(CASE j.role WHEN 'adf_email' THEN 55 ELSE 0 END ORDER BY j.message_id),
                                array_agg(CASE j.role WHEN 'adf_email' THEN 550 WHEN 'adf_http' THEN 500
                                                      WHEN 'Push' THEN 202 ELSE 250 END ORDER BY j.message_id),
                                array_agg(j.role || ' reply' ORDER BY j.message_id),
                                array_agg(CASE WHEN j.transport = 'smtp' THEN 'DATA' END ORDER BY j.message_id)),
          2, 'delivery_record_batch: two deliveries recorded together')
  FROM (SELECT s.*, o.role FROM sb_jobs s JOIN outbox o USING (message_id) WHERE s.comment = 'sb plain') j;
SELECT is((SELECT string_agg(role || '=' || status || '/' || outcome || '/' || coalesce(last_response, '-'), ' ' ORDER BY message_id)
             FROM outbox WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb plain') AND role <> 'To'),
          'CC=delivered/Delivered/CC reply Push=delivered/Delivered/Push reply adf_http=queued/Will retry/adf_http reply adf_email=failed/Hard Bounce/adf_email reply (after DATA)',
          'delivered, retried and bounced as delivery_record judges them');
SELECT is((SELECT string_agg(a.outcome || ':' || coalesce(a.response_code, 0), ' ' ORDER BY a.message_id)
             FROM delivery_attempt_log a JOIN outbox o USING (message_id)
            WHERE o.lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb plain') AND a.outcome <> 'Suppressed'),
          'Delivered:250 Delivered:202 Will retry:500 Hard Bounce:550', 'each attempt logged once');
SELECT is((SELECT count(*) FROM outbox o JOIN lead_notifications n USING (notification_id)
            WHERE o.purpose = 'failure notice' AND n.lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb plain')),
          0::bigint, 'no failure notice while a message of the notice is still to be sent');
UPDATE outbox SET due_at = clock_timestamp()
 WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb plain') AND role = 'adf_http';
CREATE TEMP TABLE sb_retry AS
    SELECT j.* FROM delivery_claim(1000, '5 minutes') j JOIN outbox o USING (message_id)
     WHERE o.lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb plain');
SELECT is(delivery_record_batch(ARRAY[message_id, message_id + 1000000], ARRAY[attempt, 1], '{0,0}', '{200,200}',
                                '{"HTTP 200",x}', '{NULL,NULL}'),
          1, 'the last delivery of a notice recorded together (a message that is not being sent: ignored)')
  FROM sb_retry;
SELECT is((SELECT string_agg(o.recipient, ' ' ORDER BY o.recipient) FROM outbox o
            WHERE o.purpose = 'failure notice'
              AND o.notification_id = (SELECT notification_id FROM outbox
                                        WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb plain') LIMIT 1)),
          'manager@a.example ops@oem.example', 'that settles the notice: its failure notices are queued');

-- A message whose claim raises is set aside; the others of the claim are
-- claimed all the same (the set-based try fails, and the claim goes
-- message by message).  So is a delivery whose record raises.
CREATE FUNCTION pg_temp.planted_claim_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'sending' AND OLD.status = 'queued'
       AND (SELECT comment FROM aimroute.leads WHERE lead_id = NEW.lead_id) = 'sb bad' AND NEW.role = 'CC' THEN
        RAISE EXCEPTION 'planted claim fault';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER planted_claim_fault BEFORE UPDATE ON outbox FOR EACH ROW EXECUTE FUNCTION pg_temp.planted_claim_fault();
SELECT pg_temp.lead('sb bad', '49757');
SELECT delivery_expand(1000);
CREATE TEMP TABLE bad_jobs AS
    SELECT j.*, o.role FROM delivery_claim(1000, '5 minutes') j JOIN outbox o USING (message_id)
     WHERE o.lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb bad');
SELECT is((SELECT string_agg(role, ',' ORDER BY message_id) FROM bad_jobs), 'Push,adf_http,adf_email',
          'a claim that raises for one message: the others are claimed');
SELECT is((SELECT string_agg(role || '=' || status || coalesce('/' || outcome, '') || ':' || attempts, ' ' ORDER BY message_id)
             FROM outbox WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb bad')),
          'To=failed/Suppressed:0 CC=queued:0 Push=sending:1 adf_http=sending:1 adf_email=sending:1',
          'and settled (the suppressed one) or leased');
SELECT is((SELECT step || ' ' || error FROM set_aside_items
            WHERE kind = 'message' AND item_id = (SELECT message_id FROM outbox
                                                   WHERE lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb bad') AND role = 'CC')),
          'claim planted claim fault', 'the bad one is set aside, queued, no attempt counted');
DROP TRIGGER planted_claim_fault ON outbox;
CREATE FUNCTION pg_temp.planted_record_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.outcome = 'Delivered' AND (SELECT role FROM aimroute.outbox WHERE message_id = NEW.message_id) = 'Push'
       AND (SELECT comment FROM aimroute.leads l JOIN aimroute.outbox o USING (lead_id) WHERE o.message_id = NEW.message_id) = 'sb bad' THEN
        RAISE EXCEPTION 'planted record fault';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER planted_record_fault BEFORE INSERT ON delivery_attempt_log FOR EACH ROW EXECUTE FUNCTION pg_temp.planted_record_fault();
SELECT is(delivery_record_batch(array_agg(message_id ORDER BY message_id), array_agg(attempt ORDER BY message_id),
                                array_fill(0, ARRAY[count(*)::integer]), array_fill(250, ARRAY[count(*)::integer]),
                                array_fill('OK'::text, ARRAY[count(*)::integer]), array_fill(NULL::text, ARRAY[count(*)::integer])),
          0, 'deliveries whose recording together raises are recorded one by one')
  FROM bad_jobs;
SELECT is((SELECT string_agg(o.role || '=' || o.status || coalesce('/' || f.step, ''), ' ' ORDER BY o.message_id)
             FROM outbox o LEFT JOIN set_aside_items f ON f.kind = 'message' AND f.item_id = o.message_id
            WHERE o.lead_id = (SELECT lead_id FROM leads WHERE comment = 'sb bad') AND o.role <> 'To'),
          'CC=queued/claim Push=sending/record adf_http=delivered adf_email=delivered',
          'the one whose record raises is set aside at its record step, the others delivered');
DROP TRIGGER planted_record_fault ON delivery_attempt_log;

-- The daily recap.
SELECT is(queue_daily_recap(((now() AT TIME ZONE 'America/Chicago')::date + 1 + time '06:59') AT TIME ZONE 'America/Chicago'),
          0, 'no recap before settings.daily_recap_hour');
SELECT is(queue_daily_recap(((now() AT TIME ZONE 'America/Chicago')::date + 1 + time '07:00') AT TIME ZONE 'America/Chicago'),
          2, 'at the hour: one recap for the OEM''s daily contact, one for the dealer''s');
SELECT ok((SELECT body LIKE '%Lead ' || (SELECT lead_id FROM leads WHERE comment = 'c') || ', Ann%Dealer:  Alpha Marine (DQ-A): Partial Delivery%'
             FROM outbox WHERE purpose = 'daily recap' AND recipient = 'daily@oem.example'),
          'the recap lists the prior day''s failing leads');
SELECT is(queue_daily_recap(((now() AT TIME ZONE 'America/Chicago')::date + 1 + time '08:00') AT TIME ZONE 'America/Chicago'),
          0, 'each day is recapped once');
SELECT is(queue_daily_recap(((now() AT TIME ZONE 'America/Chicago')::date + 4 + time '08:00') AT TIME ZONE 'America/Chicago'),
          0, 'days with nothing to report send nothing');
SELECT is((SELECT max(day) - min(day) FROM daily_recaps WHERE day >= (now() AT TIME ZONE 'America/Chicago')::date), 3,
          'but are recapped: the days the worker missed are caught up');

-- Deleting a lead takes its notices and their messages along; a marked
-- lead deleted leaves nothing to expand.
SELECT pg_temp.lead('gone', '49757');
SELECT delivery_expand(1000);
DELETE FROM leads WHERE comment = 'gone';
SELECT pg_temp.lead('gone marked', '49757');
DELETE FROM leads WHERE comment = 'gone marked';
SELECT is(delivery_expand(1000), 0, 'a marked lead deleted leaves nothing to expand');
SELECT is((SELECT count(*) FROM outbox o WHERE NOT EXISTS (SELECT FROM lead_notifications n WHERE n.notification_id = o.notification_id)
             AND o.purpose <> 'daily recap'), 0::bigint, 'a deleted lead leaves no message behind');

-- Contacts and integrations are checked with errors that say what is wrong.
SELECT throws_ok($$INSERT INTO aimroute.dealer_contacts (dealer_number, email, contact_types) VALUES ('DQ-A', 'x@y.example', '{Leads: Emails BCC}')$$,
                 '23514', 'invalid contact type ''Leads: Emails BCC''', 'an unknown contact type is refused');
SELECT throws_ok($$INSERT INTO aimroute.dealer_contacts (dealer_number, email) VALUES ('DQ-A', 'not an address')$$,
                 '23514', 'invalid email address ''not an address'' for a contact of dealer DQ-A', 'a malformed email is refused');
SELECT throws_ok($$INSERT INTO aimroute.crm_integrations (dealer_number, kind, endpoint) VALUES ('DQ-A', 'adf_http', 'leads@crm.example')$$,
                 '23514', NULL, 'an adf_http endpoint must be a URL');
SELECT throws_ok($$INSERT INTO aimroute.notification_contacts (email, contact_type) VALUES ('a@b.example', 'Leads: Emails To')$$,
                 '23514', NULL, 'a notification contact takes only the two notification types');

-- The views BI tools read: the contract's columns, and a comment on every view and column.
SELECT has_column('aimroute', 'lead_delivery_status', c, 'lead_delivery_status.' || c)
  FROM unnest(ARRAY['lead_id', 'dealer_number', 'sent_to_dealer', 'viewed', 'email_status', 'mobile_status',
                    'crm_status', 'no_contacts_configured']) AS c;
SELECT has_column('aimroute', 'unsent_leads', c, 'unsent_leads.' || c) FROM unnest(ARRAY['lead_id', 'reason']) AS c;
SELECT has_column('aimroute', 'delivery_attempts', c, 'delivery_attempts.' || c)
  FROM unnest(ARRAY['lead_id', 'recipient', 'method', 'outcome', 'response']) AS c;
SELECT has_column('aimroute', 'delivery_issues', c, 'delivery_issues.' || c) FROM unnest(ARRAY['day', 'lead_id']) AS c;
SELECT is((SELECT string_agg(c.relname || coalesce('.' || a.attname, ''), ', ')
             FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
            WHERE c.relkind = 'v'
              AND EXISTS (SELECT FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                           WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                             AND d.deptype = 'e' AND e.extname = 'aimroute')
              AND (obj_description(c.oid, 'pg_class') IS NULL
                   OR (a.attname IS NOT NULL AND col_description(c.oid, a.attnum) IS NULL))),
          NULL, 'every view and every view column has a comment');

SELECT * FROM finish();
ROLLBACK;
