--
-- The delivery views BI tools read (SPEC section 4; docs/delivery.md).
-- Each reads as the caller (security_invoker), so that the row-level
-- security of its tables applies to it, and region and dealer users may
-- read it.  lead_delivery_status judges each lead by its latest notice to
-- the dealer that holds it now; a lead whose notice the delivery worker
-- has not queued yet (notice_pending) by the notice it is to get, from the
-- dealer's contacts and integrations as they are, by the rules that will
-- queue it (aimroute.lead_recipients).
--
CREATE VIEW aimroute.lead_delivery_status WITH (security_invoker = true) AS
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
       coalesce(p.no_contacts, n.no_contacts, false) AS no_contacts_configured,
       coalesce(o.pending, 0) > 0 OR NOT coalesce(p.no_contacts, true) AS delivery_pending,
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
         WHERE x.notification_id = n.notification_id AND x.purpose = 'lead' AND x.status <> 'cancelled') o ON true
  LEFT JOIN LATERAL (
        SELECT NOT EXISTS (SELECT FROM aimroute.lead_recipients(ARRAY[l.dealer_number]) r
                            WHERE r.reaches_dealer) AS no_contacts
         WHERE l.notice_pending AND l.send_to_dealer) p ON true;
GRANT SELECT ON aimroute.lead_delivery_status TO aimroute_region, aimroute_dealer;
COMMENT ON VIEW aimroute.lead_delivery_status IS
    'Whether each lead reached the dealer that holds it, by method, judged by the latest notice to that dealer (its first routing, a move, or send_lead). A status is NULL while no attempt was made by that method.';
COMMENT ON COLUMN aimroute.lead_delivery_status.lead_id IS 'The lead.';
COMMENT ON COLUMN aimroute.lead_delivery_status.dealer_number IS 'The dealer holding the lead now.';
COMMENT ON COLUMN aimroute.lead_delivery_status.sent_to_dealer IS 'An attempt was made to send the lead to this dealer (by any method).';
COMMENT ON COLUMN aimroute.lead_delivery_status.viewed IS 'The dealer viewed the lead (aimroute.mark_viewed or the view link).';
COMMENT ON COLUMN aimroute.lead_delivery_status.email_status IS 'Email to the dealer''s Leads To and CC contacts: Delivered (all of them), Partial Delivery (some), Failure (none), NULL (no attempt).';
COMMENT ON COLUMN aimroute.lead_delivery_status.mobile_status IS 'Mobile push to the contacts with a mobile number: Delivered, Partial Delivery, Failure, or NULL (no attempt).';
COMMENT ON COLUMN aimroute.lead_delivery_status.crm_status IS 'ADF to the dealer''s active CRM integrations: Delivered, Partial Delivery, Failure, or NULL (no attempt).';
COMMENT ON COLUMN aimroute.lead_delivery_status.no_contacts_configured IS 'When the lead was sent, the dealer had no ''Leads: Emails To'' contact with an email and no active CRM integration, so nothing was sent; for a lead whose notice the delivery worker has not queued yet, the dealer has none now.';
COMMENT ON COLUMN aimroute.lead_delivery_status.delivery_pending IS 'Some message still waits for its first attempt or a retry, or the lead''s messages wait for the delivery worker to queue them: the statuses can still change.';
COMMENT ON COLUMN aimroute.lead_delivery_status.send_to_dealer IS 'The lead is to be sent to its dealer (false: kept from the dealer on purpose).';
COMMENT ON COLUMN aimroute.lead_delivery_status.notification_id IS 'The notice the statuses are about (aimroute.lead_notifications).';
COMMENT ON COLUMN aimroute.lead_delivery_status.sent_at IS 'When that notice was queued.';
COMMENT ON COLUMN aimroute.lead_delivery_status.last_attempt_at IS 'The latest attempt to send any of its messages.';
COMMENT ON COLUMN aimroute.lead_delivery_status.received_at IS 'When the lead was received.';
COMMENT ON COLUMN aimroute.lead_delivery_status.received_day IS 'The day the lead was received, in the OEM''s time zone (settings.timezone).';
COMMENT ON COLUMN aimroute.lead_delivery_status.source IS 'Where the lead came from (api, import, manual, ...).';
COMMENT ON COLUMN aimroute.lead_delivery_status.brand_code IS 'The lead''s brand.';
COMMENT ON COLUMN aimroute.lead_delivery_status.match_type IS 'How the dealer was chosen.';
COMMENT ON COLUMN aimroute.lead_delivery_status.dealer_name IS 'The dealer''s name.';
COMMENT ON COLUMN aimroute.lead_delivery_status.region IS 'The dealer''s region (aimroute.dealers.region).';

CREATE VIEW aimroute.unsent_leads WITH (security_invoker = true) AS
SELECT st.lead_id,
       st.dealer_number,
       CASE WHEN NOT st.send_to_dealer THEN 'send_to_dealer false'
            WHEN st.no_contacts_configured THEN 'No contacts configured'
            WHEN st.notification_id IS NULL AND NOT st.delivery_pending THEN 'Not queued'
            WHEN NOT st.delivery_pending THEN 'All contacts undeliverable'
            WHEN st.sent_to_dealer THEN 'Retrying'
            ELSE 'Waiting for the delivery worker' END AS reason,
       st.received_at,
       st.received_day,
       st.sent_at,
       st.last_attempt_at,
       st.source,
       st.brand_code,
       st.dealer_name,
       st.region
  FROM aimroute.lead_delivery_status st
 WHERE NOT st.viewed
   AND NOT EXISTS (SELECT FROM aimroute.lead_notifications n JOIN aimroute.outbox o USING (notification_id)
                    WHERE n.lead_id = st.lead_id AND n.dealer_number = st.dealer_number
                      AND o.purpose = 'lead' AND o.status = 'delivered');
GRANT SELECT ON aimroute.unsent_leads TO aimroute_region, aimroute_dealer;
COMMENT ON VIEW aimroute.unsent_leads IS
    'Leads not viewed and never delivered to the dealer holding them (by any method), with the reason.';
COMMENT ON COLUMN aimroute.unsent_leads.lead_id IS 'The lead.';
COMMENT ON COLUMN aimroute.unsent_leads.dealer_number IS 'The dealer holding the lead.';
COMMENT ON COLUMN aimroute.unsent_leads.reason IS
    'send_to_dealer false; No contacts configured (no Leads To contact, no active CRM); All contacts undeliverable (every message bounced, was suppressed or ran out of retries); Retrying (attempts failed, more are scheduled); Waiting for the delivery worker (no attempt yet, or its messages not queued yet); Not queued (a lead restored or routed before delivery was set up: aimroute.send_lead sends it).';
COMMENT ON COLUMN aimroute.unsent_leads.received_at IS 'When the lead was received.';
COMMENT ON COLUMN aimroute.unsent_leads.received_day IS 'The day the lead was received, in the OEM''s time zone.';
COMMENT ON COLUMN aimroute.unsent_leads.sent_at IS 'When its latest notice to this dealer was queued.';
COMMENT ON COLUMN aimroute.unsent_leads.last_attempt_at IS 'The latest attempt to send it.';
COMMENT ON COLUMN aimroute.unsent_leads.source IS 'Where the lead came from.';
COMMENT ON COLUMN aimroute.unsent_leads.brand_code IS 'The lead''s brand.';
COMMENT ON COLUMN aimroute.unsent_leads.dealer_name IS 'The dealer''s name.';
COMMENT ON COLUMN aimroute.unsent_leads.region IS 'The dealer''s region.';

CREATE VIEW aimroute.delivery_attempts WITH (security_invoker = true) AS
SELECT a.attempt_id,
       a.attempted_at,
       (a.attempted_at AT TIME ZONE s.timezone)::date AS day,
       o.lead_id,
       o.dealer_number,
       o.purpose,
       o.method,
       o.role,
       o.recipient,
       o.contact_id,
       o.integration_id,
       a.attempt,
       a.outcome,
       a.response_code,
       a.response,
       o.message_id,
       o.notification_id,
       o.message_key,
       o.status AS message_status
  FROM aimroute.delivery_attempt_log a
  JOIN aimroute.outbox o USING (message_id)
  CROSS JOIN aimroute.settings s;
GRANT SELECT ON aimroute.delivery_attempts TO aimroute_region, aimroute_dealer;
COMMENT ON VIEW aimroute.delivery_attempts IS
    'Every attempt to send a message, per recipient and method, with its outcome and the server''s response: the subscribers grid.';
COMMENT ON COLUMN aimroute.delivery_attempts.attempt_id IS 'The attempt.';
COMMENT ON COLUMN aimroute.delivery_attempts.attempted_at IS 'When the outcome was recorded.';
COMMENT ON COLUMN aimroute.delivery_attempts.day IS 'The day of the attempt, in the OEM''s time zone (settings.timezone).';
COMMENT ON COLUMN aimroute.delivery_attempts.lead_id IS 'The lead (NULL for a daily recap).';
COMMENT ON COLUMN aimroute.delivery_attempts.dealer_number IS 'The dealer the lead was sent to.';
COMMENT ON COLUMN aimroute.delivery_attempts.purpose IS 'lead, failure notice or daily recap.';
COMMENT ON COLUMN aimroute.delivery_attempts.method IS 'email, mobile or crm.';
COMMENT ON COLUMN aimroute.delivery_attempts.role IS 'To, CC, Push, adf_email, adf_http, Notice or Recap.';
COMMENT ON COLUMN aimroute.delivery_attempts.recipient IS 'The email address, mobile number or URL.';
COMMENT ON COLUMN aimroute.delivery_attempts.contact_id IS 'The dealer contact, if the recipient is one.';
COMMENT ON COLUMN aimroute.delivery_attempts.integration_id IS 'The CRM integration, for crm messages.';
COMMENT ON COLUMN aimroute.delivery_attempts.attempt IS 'Which attempt of the message (1 = the first).';
COMMENT ON COLUMN aimroute.delivery_attempts.outcome IS
    'Delivered (accepted by the server; or, reported by a mail provider''s event, delivered to the mailbox); Hard Bounce (550: recipient not found; or reported after delivery by a DSN, a provider''s event or record_bounce); Soft Bounce (452/552: inbox full; a block; or reported later); Delayed (a DSN or a provider said the message is delayed: not a bounce, the message keeps its status); Complaint (its reader marked it as spam: the address is suppressed, the message stays delivered); Will retry (connection, DNS, HTTP or temporary SMTP error); Failed (out of retries, a permanent SMTP error, no push gateway); Suppressed (contact on the suppression list, not sent); Interrupted (the worker stopped before recording; sent again with the same key); Set aside (preparing it, or recording its outcome after it was sent, raised an error: see aimroute.set_aside_items; tried again later, and a message sent is not sent again); Cancelled (the lead left the dealer first).';
COMMENT ON COLUMN aimroute.delivery_attempts.response_code IS 'The SMTP or HTTP reply code; NULL when no server answered.';
COMMENT ON COLUMN aimroute.delivery_attempts.response IS 'The server''s reply, or the connection error.';
COMMENT ON COLUMN aimroute.delivery_attempts.message_id IS 'The message (aimroute.outbox).';
COMMENT ON COLUMN aimroute.delivery_attempts.notification_id IS 'The notice it belongs to (aimroute.lead_notifications).';
COMMENT ON COLUMN aimroute.delivery_attempts.message_key IS 'The Message-ID or Idempotency-Key it carried.';
COMMENT ON COLUMN aimroute.delivery_attempts.message_status IS 'Where the message stands now: queued, sending, delivered, failed or cancelled.';

CREATE VIEW aimroute.delivery_issues WITH (security_invoker = true) AS
SELECT (n.queued_at AT TIME ZONE s.timezone)::date AS day,
       n.lead_id,
       n.dealer_number,
       d.name AS dealer_name,
       d.region,
       l.brand_code,
       l.source,
       CASE WHEN o.delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS failure,
       CASE WHEN o.email_total = 0 THEN NULL WHEN o.email_delivered = o.email_total THEN 'Delivered'
            WHEN o.email_delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS email_status,
       CASE WHEN o.mobile_total = 0 THEN NULL WHEN o.mobile_delivered = o.mobile_total THEN 'Delivered'
            WHEN o.mobile_delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS mobile_status,
       CASE WHEN o.crm_total = 0 THEN NULL WHEN o.crm_delivered = o.crm_total THEN 'Delivered'
            WHEN o.crm_delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END AS crm_status,
       o.total AS messages,
       o.total - o.delivered AS failed_messages,
       o.failed_recipients,
       n.event,
       n.queued_at AS sent_at,
       n.notification_id,
       l.dealer_number = n.dealer_number AS dealer_holds_lead,
       n.failure_notice_at AS failed_at
  FROM aimroute.lead_notifications n
  CROSS JOIN aimroute.settings s
  JOIN aimroute.leads l ON l.lead_id = n.lead_id
  JOIN aimroute.dealers d ON d.dealer_number = n.dealer_number
  JOIN LATERAL (
        SELECT count(*) AS total,
               count(*) FILTER (WHERE x.status = 'delivered') AS delivered,
               count(*) FILTER (WHERE x.status IN ('queued', 'sending')) AS pending,
               count(*) FILTER (WHERE x.method = 'email') AS email_total,
               count(*) FILTER (WHERE x.method = 'email' AND x.status = 'delivered') AS email_delivered,
               count(*) FILTER (WHERE x.method = 'mobile') AS mobile_total,
               count(*) FILTER (WHERE x.method = 'mobile' AND x.status = 'delivered') AS mobile_delivered,
               count(*) FILTER (WHERE x.method = 'crm') AS crm_total,
               count(*) FILTER (WHERE x.method = 'crm' AND x.status = 'delivered') AS crm_delivered,
               string_agg(format('%s (%s)', x.recipient, x.outcome), ', ' ORDER BY x.message_id)
                   FILTER (WHERE x.status = 'failed') AS failed_recipients
          FROM aimroute.outbox x
         WHERE x.notification_id = n.notification_id AND x.purpose = 'lead' AND x.status <> 'cancelled') o ON true
 WHERE o.total > 0 AND o.pending = 0 AND o.delivered < o.total;
GRANT SELECT ON aimroute.delivery_issues TO aimroute_region, aimroute_dealer;
COMMENT ON VIEW aimroute.delivery_issues IS
    'Leads whose delivery to a dealer ended in total or partial failure, one row per notice (a lead sent twice can fail twice), by the day it was sent. Only notices whose messages are all settled; unsent_leads shows those still retrying.';
COMMENT ON COLUMN aimroute.delivery_issues.day IS 'The day the lead was sent, in the OEM''s time zone (settings.timezone).';
COMMENT ON COLUMN aimroute.delivery_issues.lead_id IS 'The lead.';
COMMENT ON COLUMN aimroute.delivery_issues.dealer_number IS 'The dealer it was sent to.';
COMMENT ON COLUMN aimroute.delivery_issues.dealer_name IS 'The dealer''s name.';
COMMENT ON COLUMN aimroute.delivery_issues.region IS 'The dealer''s region.';
COMMENT ON COLUMN aimroute.delivery_issues.brand_code IS 'The lead''s brand.';
COMMENT ON COLUMN aimroute.delivery_issues.source IS 'Where the lead came from.';
COMMENT ON COLUMN aimroute.delivery_issues.failure IS 'Failure (no message delivered) or Partial Delivery (some).';
COMMENT ON COLUMN aimroute.delivery_issues.email_status IS 'Email: Delivered, Partial Delivery, Failure, or NULL (none sent).';
COMMENT ON COLUMN aimroute.delivery_issues.mobile_status IS 'Mobile push: Delivered, Partial Delivery, Failure, or NULL (none sent).';
COMMENT ON COLUMN aimroute.delivery_issues.crm_status IS 'CRM (ADF): Delivered, Partial Delivery, Failure, or NULL (none sent).';
COMMENT ON COLUMN aimroute.delivery_issues.messages IS 'Messages of the notice.';
COMMENT ON COLUMN aimroute.delivery_issues.failed_messages IS 'Messages not delivered.';
COMMENT ON COLUMN aimroute.delivery_issues.failed_recipients IS 'Each recipient not reached, with its outcome.';
COMMENT ON COLUMN aimroute.delivery_issues.event IS 'Why the lead was sent: Routed, Re-Route, Reassigned, Dealer left or Resent.';
COMMENT ON COLUMN aimroute.delivery_issues.sent_at IS 'When the notice was queued.';
COMMENT ON COLUMN aimroute.delivery_issues.notification_id IS 'The notice (aimroute.lead_notifications).';
COMMENT ON COLUMN aimroute.delivery_issues.failed_at IS 'When the last of its messages settled and the failure was known (failure notices were queued then); the daily recap goes by this day.';
COMMENT ON COLUMN aimroute.delivery_issues.dealer_holds_lead IS 'The dealer still holds the lead (false once it was moved on).';
