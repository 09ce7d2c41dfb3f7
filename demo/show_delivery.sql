--
-- demo/show_delivery.sql: how the leads reached their dealers -- the
-- statuses per method, the leads never delivered and why, bounces and
-- retries with the servers' replies, the failed deliveries, the suppressed
-- contacts, the failure notices and the daily recap, and what the loopback
-- sinks received.
--
--     psql -d aimroute -f demo/show_delivery.sql
--     psql -d aimroute -v smtp_log=$PWD/.cluster/sinks/smtp.jsonl \
--          -v http_log=$PWD/.cluster/sinks/http.jsonl -f demo/show_delivery.sql
--
-- The counts cover every lead and message in the database.  smtp_log and
-- http_log, absolute paths of the sinks' logs, add what the sinks
-- received (read with pg_read_file: a superuser, such as the demo's
-- aimroute, and a server that can read the files).  scripts/demo.sh runs it
-- once the delivery worker has settled the demo leads; docs/delivery.md
-- explains the views.
--
\set QUIET 1
\pset footer off
\pset null '-'

\echo
\echo '== Where the delivery worker sends (aimroute.settings) =='
SELECT s.smtp_url,
       s.push_gateway_url,
       s.delivery_retry_schedule                                         AS retry_schedule,
       aimroute.delivery_worker_running()                                AS worker_registered,
       (SELECT count(*) FROM pg_stat_activity a
         WHERE a.backend_type = 'aimroute delivery worker')              AS workers_running
  FROM aimroute.settings s;

\echo '== Leads by delivery status: aimroute.lead_delivery_status =='
SELECT count(*)                                                          AS leads,
       count(*) FILTER (WHERE st.sent_to_dealer)                         AS sent_to_dealer,
       count(*) FILTER (WHERE st.no_contacts_configured)                 AS no_contacts_configured,
       count(*) FILTER (WHERE NOT st.send_to_dealer)                     AS send_to_dealer_false,
       count(*) FILTER (WHERE st.delivery_pending)                       AS delivery_pending
  FROM aimroute.lead_delivery_status st;

SELECT m.method,
       count(*) FILTER (WHERE m.status = 'Delivered')                    AS "Delivered",
       count(*) FILTER (WHERE m.status = 'Partial Delivery')             AS "Partial Delivery",
       count(*) FILTER (WHERE m.status = 'Failure')                      AS "Failure",
       count(*) FILTER (WHERE m.status IS NULL)                          AS "not sent this way"
  FROM aimroute.lead_delivery_status st
 CROSS JOIN LATERAL (VALUES (1, 'email (To and CC)', st.email_status),
                            (2, 'mobile push', st.mobile_status),
                            (3, 'CRM (ADF)', st.crm_status)) AS m (n, method, status)
 GROUP BY m.n, m.method
 ORDER BY m.n;

\echo '== Leads never delivered to their dealer: aimroute.unsent_leads, by reason =='
SELECT u.reason,
       count(*)                                                          AS leads,
       count(DISTINCT u.dealer_number)                                   AS dealers,
       array_to_string((array_agg(DISTINCT u.dealer_number))[1:4], ', ')
           || CASE WHEN count(DISTINCT u.dealer_number) > 4 THEN ', ...' ELSE '' END AS for_example
  FROM aimroute.unsent_leads u
 GROUP BY u.reason
 ORDER BY count(*) DESC, u.reason;

\echo '== Messages by outcome (aimroute.outbox: one message per recipient and method) =='
SELECT o.purpose,
       o.method,
       o.role,
       coalesce(o.outcome, o.status)                                     AS outcome,
       count(*)                                                          AS messages,
       sum(o.attempts)                                                   AS attempts
  FROM aimroute.outbox o
 GROUP BY o.purpose, o.method, o.role, coalesce(o.outcome, o.status)
 ORDER BY array_position(ARRAY['lead', 'failure notice', 'daily recap'], o.purpose),
          array_position(ARRAY['email', 'mobile', 'crm'], o.method), o.role, count(*) DESC;

-- One message of each kind of trouble, with every attempt: a hard and a
-- soft bounce, a message not sent to a suppressed contact, and retries
-- that ended in failure or, later, in delivery.
\echo '== Bounces and retries, with the servers'' replies: aimroute.delivery_attempts =='
WITH kinds (n, kind) AS (
    VALUES (1, 'Hard Bounce'), (2, 'Soft Bounce'), (3, 'Suppressed'),
           (4, 'email retried, failed'), (5, 'crm retried, failed'), (6, 'crm retried, delivered')
), messages AS (
    SELECT DISTINCT ON (k.n) k.n, a.message_id
      FROM aimroute.delivery_attempts a
      JOIN kinds k ON k.kind = CASE WHEN a.outcome IN ('Hard Bounce', 'Soft Bounce', 'Suppressed') THEN a.outcome
                                    WHEN a.outcome = 'Will retry' AND a.message_status = 'failed'
                                        THEN a.method || ' retried, failed'
                                    WHEN a.outcome = 'Will retry' AND a.message_status = 'delivered'
                                        THEN a.method || ' retried, delivered' END
     WHERE a.purpose = 'lead'
     ORDER BY k.n, a.lead_id, a.message_id
)
SELECT a.lead_id                                                         AS lead,
       a.method || ' ' || a.role                                         AS sent_as,
       regexp_replace(a.recipient, '^https?://[^/]+', '')                AS recipient,
       a.attempt,
       to_char(a.attempted_at, 'HH24:MI:SS')                             AS at,
       a.outcome,
       left(regexp_replace(a.response, '\s+', ' ', 'g'), 64)             AS response
  FROM aimroute.delivery_attempts a
  JOIN messages m USING (message_id)
 ORDER BY m.n, a.attempt_id;

\echo '== Failed deliveries: aimroute.delivery_issues (notices whose messages are settled) =='
SELECT i.failure,
       coalesce(i.email_status, '-')                                     AS email,
       coalesce(i.mobile_status, '-')                                    AS mobile,
       coalesce(i.crm_status, '-')                                       AS crm,
       count(*)                                                          AS leads,
       count(*) FILTER (WHERE i.region = 'Great Lakes')                  AS in_great_lakes
  FROM aimroute.delivery_issues i
 GROUP BY 1, 2, 3, 4
 ORDER BY count(*) DESC, 1, 2, 3, 4;

SELECT i.lead_id                                                         AS lead,
       i.dealer_number                                                   AS dealer,
       i.region,
       i.failure,
       left(i.failed_recipients, 90)                                     AS not_reached
  FROM aimroute.delivery_issues i
 ORDER BY i.lead_id, i.notification_id
 LIMIT 6;

\echo '== Suppressed contacts: nothing is sent to them until aimroute.set_delivery_status_active(contact_id) =='
SELECT c.contact_id,
       c.dealer_number                                                   AS dealer,
       c.email,
       c.delivery_status,
       (SELECT count(*) FROM aimroute.outbox o
         WHERE o.contact_id = c.contact_id AND o.outcome = 'Suppressed') AS messages_held_back
  FROM aimroute.dealer_contacts c
 WHERE c.delivery_status <> 'Active'
 ORDER BY c.delivery_status, c.dealer_number, c.contact_id;

\echo '== Failure notices (real-time) and the daily recap, by recipient =='
SELECT o.purpose,
       coalesce(CASE WHEN o.contact_id IS NULL THEN o.recipient END,
                'owners of ' || count(DISTINCT o.dealer_number) || ' dealers') AS recipient,
       count(*)                                                          AS emails,
       count(*) FILTER (WHERE o.status = 'delivered')                    AS delivered,
       min(o.subject)                                                    AS first_subject
  FROM aimroute.outbox o
 WHERE o.purpose IN ('failure notice', 'daily recap')
 GROUP BY o.purpose, CASE WHEN o.contact_id IS NULL THEN o.recipient END
 ORDER BY o.purpose DESC, count(*) DESC, 2;

\if :{?smtp_log}
\echo '== What the SMTP sink received: its log,' :smtp_log '=='
WITH log AS (
    SELECT line::jsonb AS j
      FROM regexp_split_to_table(coalesce(pg_read_file(:'smtp_log', 0, 1000000000, true), ''), E'\n') AS line
     WHERE line <> ''
)
SELECT count(*) FILTER (WHERE j->>'event' = 'message')                   AS messages_received,
       count(DISTINCT j->>'message_id') FILTER (WHERE j->>'event' = 'message') AS distinct_message_ids,
       (SELECT count(*) FROM aimroute.outbox o
         WHERE (o.method = 'email' OR o.role = 'adf_email') AND o.status = 'delivered') AS recorded_delivered,
       count(*) FILTER (WHERE j->>'event' = 'rcpt_refused')              AS recipients_refused,
       (SELECT string_agg(r.code || ' x' || r.n, ', ' ORDER BY r.code)
          FROM (SELECT x.j->>'code' AS code, count(*) AS n FROM log x
                 WHERE x.j->>'event' = 'rcpt_refused' GROUP BY 1) r)     AS refused_by_code
  FROM log;
\endif

\if :{?http_log}
\echo '== What the HTTP sink received: its log,' :http_log '=='
WITH log AS (
    SELECT line::jsonb AS j
      FROM regexp_split_to_table(coalesce(pg_read_file(:'http_log', 0, 1000000000, true), ''), E'\n') AS line
     WHERE line <> ''
)
SELECT split_part(j->>'path', '?', 1)                                    AS path,
       j->>'status'                                                      AS answered,
       count(*)                                                          AS requests,
       count(DISTINCT j->'headers'->>'Idempotency-Key')                  AS distinct_keys
  FROM log
 WHERE j->>'event' = 'request'
 GROUP BY 1, 2
 ORDER BY 1, 2;
\endif

-- Leads to look at next: the first hard bounce, and the first retry.
SELECT format('    SELECT * FROM aimroute.lead_delivery_status WHERE lead_id = %s;', b.lead_id) AS hint_status,
       format('    SELECT attempt, outcome, recipient, response_code, response FROM aimroute.delivery_attempts WHERE lead_id = %s ORDER BY attempt_id;',
              coalesce(r.lead_id, b.lead_id)) AS hint_attempts,
       format('    UPDATE aimroute.dealer_contacts SET email = ''sales@...'' WHERE contact_id = %s;', b.contact_id) AS hint_fix,
       format('    SELECT aimroute.set_delivery_status_active(%s);', b.contact_id) AS hint_active,
       format('    SELECT aimroute.send_lead(%s);', b.lead_id) AS hint_resend
  FROM (SELECT a.lead_id, a.contact_id FROM aimroute.delivery_attempts a
         WHERE a.purpose = 'lead' AND a.outcome = 'Hard Bounce'
         ORDER BY a.lead_id, a.attempt_id LIMIT 1) b
  LEFT JOIN (SELECT a.lead_id FROM aimroute.delivery_attempts a
              WHERE a.purpose = 'lead' AND a.outcome = 'Will retry'
              ORDER BY a.lead_id, a.attempt_id LIMIT 1) r ON true \gset
\echo '== Next =='
\if :{?hint_status}
\echo 'One lead''s delivery, and every attempt of another (docs/delivery.md explains the statuses):'
\echo :hint_status
\echo :hint_attempts
\echo 'Leads never delivered, and failed deliveries by day:'
\echo '    SELECT reason, lead_id, dealer_number FROM aimroute.unsent_leads ORDER BY reason, lead_id;'
\echo '    SELECT * FROM aimroute.delivery_issues ORDER BY day DESC, lead_id;'
\echo 'Fix a bounced address, take the contact off the suppression list, send the lead again:'
\echo :hint_fix
\echo :hint_active
\echo :hint_resend
\else
\echo 'No message bounced. SELECT * FROM aimroute.lead_delivery_status; SELECT * FROM aimroute.delivery_attempts;'
\endif
\echo 'docs/delivery.md is the guide to a lead that did not arrive.'
