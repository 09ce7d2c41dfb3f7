--
-- Delivery (SPEC section 4): the notices and the outbox the
-- routing transaction fills, what the delivery worker claims and records,
-- failure notices and the daily recap.  Who receives them is
-- 070_contacts.sql; the views BI tools read are 078_delivery_views.sql.
--
-- The life of a message: the transaction that routes a lead to be sent
-- only marks it (aimroute.leads.notice_pending); the delivery worker
-- expands the marked leads, a batch at a time, into their notices and one
-- row of aimroute.outbox per recipient and method, clearing the marks in
-- the same transaction (aimroute.delivery_expand).  A move or send_lead
-- queues its notice at once (aimroute.queue_lead_delivery).  Both go by
-- one set of rules, aimroute.lead_recipients, and one statement,
-- aimroute.queue_notices.  The delivery worker (src/delivery_worker.c) claims
-- due rows with aimroute.delivery_claim() under a lease and commits, talks
-- to the SMTP or HTTP server with no transaction open, and records each
-- outcome with aimroute.delivery_record() in a transaction of its own.  A
-- worker that dies between the two leaves its rows 'sending' with a lease
-- that runs out; the next claim sends them again under the same
-- Message-ID / Idempotency-Key.  A row recorded as delivered is never
-- claimed again.  docs/delivery.md.
--

--
-- lead_notifications: one row per time a lead is sent to a dealer (its
-- first routing, each move, aimroute.send_lead), each with its own
-- view-link token.  The messages of a notice -- one per recipient and
-- method -- are rows of aimroute.outbox (below), queued in the
-- same transaction by aimroute.queue_notices().
--
CREATE FUNCTION aimroute.new_view_token() RETURNS text
    AS 'MODULE_PATHNAME', 'aimroute_new_view_token'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION aimroute.new_view_token() IS
    'A new view-link token: 240 bits from the strong random source, as 40 URL-safe characters.';

CREATE TABLE aimroute.lead_notifications (
    notification_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id          bigint NOT NULL,
    dealer_number    text NOT NULL,
    event            text NOT NULL,
    queued_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    view_token       text NOT NULL UNIQUE DEFAULT aimroute.new_view_token(),
    no_contacts      boolean NOT NULL DEFAULT false,
    messages         integer NOT NULL DEFAULT 0,
    failure_notice_at timestamptz
);
CREATE INDEX lead_notifications_lead_idx ON aimroute.lead_notifications (lead_id, notification_id);
COMMENT ON TABLE aimroute.lead_notifications IS
    'Each time a lead is sent to a dealer (routing, a move, send_lead): its event, its unguessable view-link token, and how many messages were queued for it in aimroute.outbox.';
COMMENT ON COLUMN aimroute.lead_notifications.lead_id IS
    'The lead. Not a foreign key: a foreign key check would cost every notice queued; deleting a lead deletes its notices (aimroute.leads_delete_notices).';
COMMENT ON COLUMN aimroute.lead_notifications.dealer_number IS
    'The dealer the notice went to; follows a renumbered dealer (aimroute.dealers_renumber_notices).';
COMMENT ON COLUMN aimroute.lead_notifications.view_token IS
    'The token of the notice''s view link (aimroute.open_view_link): 240 random bits, 40 URL-safe characters.';
COMMENT ON COLUMN aimroute.lead_notifications.no_contacts IS
    'The dealer had no ''Leads: Emails To'' contact with an email and no active CRM integration when the notice was queued: nothing was sent.';
COMMENT ON COLUMN aimroute.lead_notifications.messages IS 'Messages queued for this notice in aimroute.outbox.';
COMMENT ON COLUMN aimroute.lead_notifications.failure_notice_at IS
    'When this notice''s delivery was found to have ended in total or partial failure, and failure notices were queued; NULL otherwise.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.lead_notifications', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.lead_notifications', 'notification_id')::regclass, '');
-- A notice deleted (with its lead) takes its messages along.
CREATE FUNCTION aimroute.lead_notifications_delete_messages() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM aimroute.outbox o USING gone g WHERE o.notification_id = g.notification_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER lead_notifications_delete_messages AFTER DELETE ON aimroute.lead_notifications
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION aimroute.lead_notifications_delete_messages();
ALTER TABLE aimroute.lead_notifications ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.lead_notifications TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.lead_notifications FOR SELECT TO aimroute_region, aimroute_dealer
    USING (dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));
-- A notice's view token marks its lead viewed (open_view_link): it is for
-- the To contacts the email carries it to, and for admins; region and
-- dealer users get the other columns.
GRANT SELECT (notification_id, lead_id, dealer_number, event, queued_at, no_contacts, messages, failure_notice_at)
    ON aimroute.lead_notifications TO aimroute_region, aimroute_dealer;

--
-- The outbox: one row per message, each to one recipient by one method.
--
CREATE TABLE aimroute.outbox (
    message_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  bigint,
    lead_id          bigint,
    dealer_number    text,
    purpose          text NOT NULL DEFAULT 'lead'
        CONSTRAINT outbox_purpose_check CHECK (purpose IN ('lead', 'failure notice', 'daily recap')),
    method           text NOT NULL
        CONSTRAINT outbox_method_check CHECK (method IN ('email', 'mobile', 'crm')),
    role             text NOT NULL,
    contact_id       bigint,
    integration_id   bigint,
    recipient        text NOT NULL,
    subject          text,
    body             text,
    status           text NOT NULL DEFAULT 'queued'
        CONSTRAINT outbox_status_check CHECK (status IN ('queued', 'sending', 'delivered', 'failed', 'cancelled')),
    outcome          text,
    attempts         integer NOT NULL DEFAULT 0,
    due_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    queued_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at      timestamptz,
    message_key      text,
    last_attempt_at  timestamptz,
    last_response    text,
    body_html        text
);
CREATE INDEX outbox_lead_idx ON aimroute.outbox (lead_id);
CREATE INDEX outbox_due_idx ON aimroute.outbox (due_at) WHERE status IN ('queued', 'sending');
CREATE INDEX outbox_notification_idx ON aimroute.outbox (notification_id);
COMMENT ON COLUMN aimroute.outbox.notification_id IS
    'The notice (aimroute.lead_notifications) a lead message or failure notice belongs to; NULL for a daily recap. Not a foreign key: the queue statement writes the notice and its messages together, and a foreign key check would cost every queued message about as much as its own insert; aimroute.lead_notifications_delete_messages keeps the cascade.';
COMMENT ON TABLE aimroute.outbox IS
    'Messages to send, one per recipient and method, queued by the delivery worker for a lead routed (aimroute.delivery_expand) or in the transaction that moves or resends a lead; the delivery worker sends them. Read the views lead_delivery_status, delivery_attempts, delivery_issues and unsent_leads rather than this table.';
COMMENT ON COLUMN aimroute.outbox.purpose IS '''lead'' (a lead to its dealer), ''failure notice'' or ''daily recap'' (to notification contacts).';
COMMENT ON COLUMN aimroute.outbox.method IS '''email'' (SMTP), ''mobile'' (push gateway, HTTP) or ''crm'' (ADF XML, by email or HTTP).';
COMMENT ON COLUMN aimroute.outbox.role IS 'To, CC, Push, adf_email, adf_http, Notice or Recap.';
COMMENT ON COLUMN aimroute.outbox.contact_id IS 'The dealer contact (aimroute.dealer_contacts) it goes to, whose bounce status suppresses it.';
COMMENT ON COLUMN aimroute.outbox.status IS
    'queued (waiting for its first or next attempt), sending (claimed by the worker, under a lease until due_at), delivered, failed (bounced, suppressed or out of retries) or cancelled (the lead left the dealer first).';
COMMENT ON COLUMN aimroute.outbox.due_at IS 'queued: when the next attempt is due; sending: when the worker''s lease runs out.';
COMMENT ON COLUMN aimroute.outbox.last_attempt_at IS 'When the latest attempt was recorded (sent or skipped).';
COMMENT ON COLUMN aimroute.outbox.body_html IS 'The HTML part of a failure notice or daily recap, sent with body (the plain-text part) as multipart/alternative; NULL for every other message.';
COMMENT ON COLUMN aimroute.outbox.message_key IS 'The Message-ID (email) or Idempotency-Key (HTTP) every attempt of this message carries, so a receiver can recognize a repeat.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.outbox', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.outbox', 'message_id')::regclass, '');
-- A user sees the lead messages of its dealers.
ALTER TABLE aimroute.outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.outbox TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.outbox FOR SELECT TO aimroute_region, aimroute_dealer
    USING (purpose = 'lead' AND dealer_number = ANY ((SELECT aimroute.visible_dealers())::text[]));
GRANT SELECT ON aimroute.outbox TO aimroute_region, aimroute_dealer;

CREATE TABLE aimroute.delivery_attempt_log (
    attempt_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id     bigint NOT NULL REFERENCES aimroute.outbox ON DELETE CASCADE,
    attempt        integer NOT NULL,
    attempted_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    outcome        text NOT NULL,
    response_code  integer,
    response       text
);
CREATE INDEX delivery_attempt_log_message_idx ON aimroute.delivery_attempt_log (message_id);
CREATE INDEX delivery_attempt_log_at_idx ON aimroute.delivery_attempt_log (attempted_at);
COMMENT ON TABLE aimroute.delivery_attempt_log IS 'Every attempt to send a message of aimroute.outbox, and what came of it; read it through aimroute.delivery_attempts.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.delivery_attempt_log', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('aimroute.delivery_attempt_log', 'attempt_id')::regclass, '');
ALTER TABLE aimroute.delivery_attempt_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_all ON aimroute.delivery_attempt_log TO aimroute_admin USING (true) WITH CHECK (true);
CREATE POLICY scoped_read ON aimroute.delivery_attempt_log FOR SELECT TO aimroute_region, aimroute_dealer
    USING (EXISTS (SELECT FROM aimroute.outbox o WHERE o.message_id = delivery_attempt_log.message_id));
GRANT SELECT ON aimroute.delivery_attempt_log TO aimroute_region, aimroute_dealer;

CREATE TABLE aimroute.daily_recaps (
    day        date PRIMARY KEY,
    queued_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    leads      integer NOT NULL DEFAULT 0,
    messages   integer NOT NULL DEFAULT 0
);
COMMENT ON TABLE aimroute.daily_recaps IS 'The daily recaps queued: one row per day recapped (a local date in settings.timezone), so that each day is recapped once.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.daily_recaps', '');

--
-- Queueing.  Who gets a lead's messages is one set of rules,
-- aimroute.lead_recipients; one statement, aimroute.queue_notices, queues
-- the notices of a set of leads and their messages by those rules.  The
-- delivery worker runs it over a batch of the leads routing marked
-- (aimroute.delivery_expand, below); a move, send_lead and
-- queue_lead_delivery run it for one lead at once; lead_delivery_status
-- judges a lead still marked by the same rules (078_delivery_views.sql).
--

--
-- lead_recipients: the messages a notice to each of these dealers gets, by
-- the dealers' current contacts and integrations: an email per 'Leads:
-- Emails To' or CC contact with an address, a push per such contact with a
-- mobile number when a push gateway is set, an ADF message per active CRM
-- integration.  reaches_dealer marks what makes a notice reach the dealer
-- (a To email, a CRM message): a dealer with none gets no message at all
-- ("No contacts configured").
--
CREATE FUNCTION aimroute.lead_recipients(dealer_numbers text[])
RETURNS TABLE (dealer_number text, method text, role text, contact_id bigint,
               integration_id bigint, recipient text, reaches_dealer boolean)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.dealer_number, 'email', CASE WHEN c.lead_to THEN 'To' ELSE 'CC' END, c.contact_id,
           NULL::bigint, c.email, c.lead_to
      FROM (SELECT x.*, 'Leads: Emails To' = ANY (x.contact_types) AS lead_to
              FROM aimroute.dealer_contacts x
             WHERE x.dealer_number = ANY (lead_recipients.dealer_numbers)
               AND x.contact_types && '{Leads: Emails To,Leads: Emails CC}'::text[]) c
     WHERE c.email IS NOT NULL
    UNION ALL
    SELECT c.dealer_number, 'mobile', 'Push', c.contact_id, NULL, c.mobile, false
      FROM aimroute.dealer_contacts c, aimroute.settings s
     WHERE c.dealer_number = ANY (lead_recipients.dealer_numbers)
       AND c.contact_types && '{Leads: Emails To,Leads: Emails CC}'::text[]
       AND c.mobile IS NOT NULL AND s.push_gateway_url IS NOT NULL
    UNION ALL
    SELECT i.dealer_number, 'crm', i.kind, NULL, i.integration_id, i.endpoint, true
      FROM aimroute.crm_integrations i
     WHERE i.dealer_number = ANY (lead_recipients.dealer_numbers) AND i.active
$$;
COMMENT ON FUNCTION aimroute.lead_recipients(text[]) IS
    'Who a notice to each of these dealers goes to, one row per message: an email per Leads To and CC contact with an address, a push per such contact with a mobile (when settings.push_gateway_url is set), an ADF message per active CRM integration; reaches_dealer is true for a To email and a CRM message, without which nothing is sent (No contacts configured).';
REVOKE EXECUTE ON FUNCTION aimroute.lead_recipients(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.lead_recipients(text[]) TO aimroute_admin, aimroute_region, aimroute_dealer;

--
-- queue_notices: a notice of each lead to the dealer paired with it, with
-- its messages by aimroute.lead_recipients, in two statements for the
-- whole set (internal).  Returns each lead's notice.  A dealer whose
-- recipients do not reach it gets a notice marked no_contacts and no
-- message.
--
CREATE FUNCTION aimroute.queue_notices(lead_ids bigint[], dealer_numbers text[], event text)
RETURNS TABLE (lead_id bigint, notification_id bigint)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
-- PL/pgSQL rather than SQL for its kept plan: a SQL function plans its
-- statement again on every call, which cost each move or send_lead about
-- 0.4 ms (three times the statement itself).
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH l AS (
        SELECT x.lead_id, x.dealer_number, x.n
          FROM unnest(queue_notices.lead_ids, queue_notices.dealer_numbers)
               WITH ORDINALITY AS x(lead_id, dealer_number, n)),
    r AS (
        SELECT * FROM aimroute.lead_recipients(ARRAY(SELECT DISTINCT l.dealer_number FROM l))),
    q AS (
        SELECT r.dealer_number, bool_or(r.reaches_dealer) AS reaches, count(*)::integer AS messages
          FROM r GROUP BY r.dealer_number),
    n AS (
        INSERT INTO aimroute.lead_notifications (lead_id, dealer_number, event, no_contacts, messages)
        SELECT l.lead_id, l.dealer_number, queue_notices.event, NOT coalesce(q.reaches, false),
               CASE WHEN q.reaches THEN q.messages ELSE 0 END
          FROM l LEFT JOIN q ON q.dealer_number = l.dealer_number
         ORDER BY l.n
        RETURNING notification_id, lead_id, dealer_number, no_contacts),
    m AS (
        INSERT INTO aimroute.outbox (notification_id, lead_id, dealer_number, method, role,
                                     contact_id, integration_id, recipient)
        SELECT n.notification_id, n.lead_id, n.dealer_number, r.method, r.role,
               r.contact_id, r.integration_id, r.recipient
          FROM n JOIN r ON r.dealer_number = n.dealer_number
         WHERE NOT n.no_contacts
         ORDER BY n.notification_id, CASE r.method WHEN 'email' THEN 1 WHEN 'mobile' THEN 2 ELSE 3 END,
                  r.contact_id, r.integration_id)
    SELECT n.lead_id, n.notification_id FROM n;
END
$$;
COMMENT ON FUNCTION aimroute.queue_notices(bigint[], text[], text) IS
    'Queues a notice of each lead to the dealer paired with it, and the notice''s messages (aimroute.lead_recipients), for the whole set at once; returns each lead''s notice. Internal: aimroute.delivery_expand and aimroute.queue_lead_delivery call it.';
REVOKE EXECUTE ON FUNCTION aimroute.queue_notices(bigint[], text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.queue_notices(bigint[], text[], text) TO aimroute_admin;

--
-- queue_lead_delivery (C, src/delivery.c): one lead's notice to its
-- dealer, at once (moves, send_lead).  It clears the lead's mark, if the
-- lead still has one, so that the lead gets this notice and no other.
--
-- Not SECURITY DEFINER, though it writes what dealer users may not: it
-- reads the lead with the caller's rights,
-- so it queues only a lead the caller can see, and only to the dealer
-- holding it, then queues as the extension's owner (src/owner.c).  Its
-- search_path is pinned, as a SECURITY DEFINER function's is: the
-- statement it runs as the owner must not find a caller's operators.
CREATE FUNCTION aimroute.queue_lead_delivery(lead_id bigint, dealer_number text, event text)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'aimroute_queue_lead_delivery'
    LANGUAGE C STRICT VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION aimroute.queue_lead_delivery(bigint, text, text) IS
    'Queues a notice of the lead to the dealer and its messages at once (aimroute.lead_recipients: one email per To and CC contact, one push per contact with a mobile, one ADF message per active CRM integration), and clears the lead''s notice_pending; returns the notice''s id. Internal: moves and send_lead call it.';
REVOKE EXECUTE ON FUNCTION aimroute.queue_lead_delivery(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.queue_lead_delivery(bigint, text, text) TO aimroute_admin, aimroute_region, aimroute_dealer;

CREATE FUNCTION aimroute.wake_delivery_worker() RETURNS void
    AS 'MODULE_PATHNAME', 'aimroute_wake_delivery_worker'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION aimroute.wake_delivery_worker() IS
    'Wakes the delivery worker when the current transaction commits, for messages queued by hand or by SQL. Does nothing when the worker does not run.';
REVOKE EXECUTE ON FUNCTION aimroute.wake_delivery_worker() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.wake_delivery_worker() TO aimroute_admin;

--
-- delivery_expand: the delivery worker's expansion of up to max_leads
-- leads that routing marked (notice_pending), oldest first, into their
-- notices and messages (aimroute.queue_notices, two statements for the
-- batch), clearing the marks in the same transaction; a lead no longer to
-- be sent (send_to_dealer set false since) loses its mark and gets
-- nothing.  A lead another transaction has locked is skipped (SKIP
-- LOCKED): that transaction's move or send_lead queues its notice, or the
-- next round takes it.  The worker runs it every round before it claims
-- messages; an installation without the worker, and tests, may call it.
-- Returns the leads taken.
--
-- As delivery_claim does, it tries the batch whole first; when that
-- raises, lead by lead, and a lead whose notice raises keeps its mark,
-- with a WARNING, and is tried again the next round (SPEC section 8: the
-- others are queued meanwhile).
--
CREATE FUNCTION aimroute.delivery_expand(max_leads integer)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    taken integer := 0;
    whole boolean := false;
    ids bigint[];
    dealers text[];
    l record;
    e_code text;
    e_message text;
    e_detail text;
    e_hint text;
    e_context text;
BEGIN
    IF max_leads IS NULL OR max_leads < 1 THEN
        RAISE EXCEPTION 'max_leads must be 1 or more, not %', coalesce(max_leads::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The whole batch in one statement; only when that fails, lead by lead.
    BEGIN
        WITH batch AS (
            SELECT x.lead_id FROM aimroute.leads x
             WHERE x.notice_pending
               AND NOT EXISTS (SELECT FROM aimroute.set_aside_items f
                                WHERE f.kind = 'notice' AND f.item_id = x.lead_id
                                  AND f.retry_at > clock_timestamp())
             ORDER BY x.lead_id LIMIT max_leads
               FOR NO KEY UPDATE SKIP LOCKED),
        cleared AS (
            UPDATE aimroute.leads x SET notice_pending = false
              FROM batch b
             WHERE x.lead_id = b.lead_id
            RETURNING x.lead_id, x.dealer_number, x.send_to_dealer)
        SELECT count(*), array_agg(c.lead_id ORDER BY c.lead_id) FILTER (WHERE c.send_to_dealer),
               array_agg(c.dealer_number ORDER BY c.lead_id) FILTER (WHERE c.send_to_dealer)
          INTO taken, ids, dealers
          FROM cleared c;
        IF ids IS NOT NULL THEN
            PERFORM FROM aimroute.queue_notices(ids, dealers, 'Routed');
        END IF;
        whole := true;
    EXCEPTION WHEN OTHERS THEN
        taken := 0;
    END;
    IF NOT whole THEN
        FOR l IN SELECT x.lead_id FROM aimroute.leads x
                  WHERE x.notice_pending
                    AND NOT EXISTS (SELECT FROM aimroute.set_aside_items f
                                     WHERE f.kind = 'notice' AND f.item_id = x.lead_id
                                       AND f.retry_at > clock_timestamp())
                  ORDER BY x.lead_id LIMIT max_leads
                    FOR NO KEY UPDATE SKIP LOCKED
        LOOP
            BEGIN
                WITH cleared AS (
                    UPDATE aimroute.leads x SET notice_pending = false
                     WHERE x.lead_id = l.lead_id
                    RETURNING x.lead_id, x.dealer_number, x.send_to_dealer)
                SELECT array_agg(c.lead_id) FILTER (WHERE c.send_to_dealer),
                       array_agg(c.dealer_number) FILTER (WHERE c.send_to_dealer)
                  INTO ids, dealers
                  FROM cleared c;
                IF ids IS NOT NULL THEN
                    PERFORM FROM aimroute.queue_notices(ids, dealers, 'Routed');
                END IF;
                taken := taken + 1;
            EXCEPTION WHEN OTHERS THEN
                -- The lead keeps its mark; it is tried again at retry_at.
                GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
                    e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT,
                    e_context = PG_EXCEPTION_CONTEXT;
                PERFORM aimroute.set_aside('notice', l.lead_id, l.lead_id, 'notice', e_code, e_message,
                                           e_detail, e_hint, e_context);
            END;
        END LOOP;
    END IF;
    -- A set-aside notice whose lead lost its mark (queued now, moved, sent
    -- by send_lead, deleted) is no longer waiting.  Rows another session
    -- holds are its own to keep or remove.
    IF EXISTS (SELECT FROM aimroute.set_aside_items f WHERE f.kind = 'notice') THEN
        DELETE FROM aimroute.set_aside_items f
         WHERE f.kind = 'notice'
           AND f.item_id IN (SELECT g.item_id FROM aimroute.set_aside_items g
                              WHERE g.kind = 'notice'
                                AND NOT EXISTS (SELECT FROM aimroute.leads x
                                                 WHERE x.lead_id = g.item_id AND x.notice_pending)
                                FOR UPDATE SKIP LOCKED);
    END IF;
    RETURN taken;
END
$$;
COMMENT ON FUNCTION aimroute.delivery_expand(integer) IS
    'Queues the notices and messages of up to max_leads leads that routing marked to be sent (notice_pending), oldest first, set-based, and clears their marks in the same transaction; skips leads other transactions have locked. A lead whose notice raises keeps its mark and is set aside (aimroute.set_aside_items, kind notice) until its retry_at. Returns the leads taken. The delivery worker calls it every round; without the worker, call it to queue what routing marked.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_expand(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_expand(integer) TO aimroute_admin;

--
-- Rendering.  Emails are RFC 5322 text with CRLF line ends, the body in
-- base64 so that any text goes through any server; non-ASCII header
-- text is RFC 2047 encoded.
--
-- PL/pgSQL rather than SQL, as render_email: its plan is kept, where a SQL
-- function called from another is planned again on every call (about
-- 30 µs an email).
CREATE FUNCTION aimroute.mime_header_text(t text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF t ~ '^[ -~]*$' THEN
        RETURN t;
    END IF;
    -- The words are cut in one pass (regexp_matches), not by substr() from
    -- the start each time, which took minutes for a name of 100,000
    -- characters.
    RETURN (SELECT string_agg('=?UTF-8?B?' || encode(convert_to(w.chars[1], 'UTF8'), 'base64') || '?=',
                              E'\r\n ' ORDER BY w.n)
              FROM regexp_matches(t, '.{1,12}', 'gs') WITH ORDINALITY AS w (chars, n));
END
$$;
COMMENT ON FUNCTION aimroute.mime_header_text(text) IS
    'Header text as RFC 2047 encoded words when it is not plain ASCII (12 characters a word, so none is cut inside a character), in time linear in its length.';

-- PL/pgSQL, as mime_header_text, for its kept plan.
CREATE FUNCTION aimroute.render_email(mail_from text, rcpt text, subject text, body text,
                                      message_key text, sent_at timestamptz,
                                      content_type text DEFAULT 'text/plain')
RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN concat_ws(E'\r\n',
        'Date: ' || to_char(sent_at AT TIME ZONE 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS') || ' +0000',
        'From: ' || mail_from,
        'To: ' || rcpt,
        -- A subject sums up; the body has everything.  200 characters at
        -- most, so that a lead with a name of any length does not make a
        -- header mail servers refuse.
        'Subject: ' || aimroute.mime_header_text(left(regexp_replace(subject, '[\r\n\t]+', ' ', 'g'), 200)),
        'Message-ID: ' || message_key,
        'MIME-Version: 1.0',
        'Content-Type: ' || content_type || '; charset=UTF-8',
        'Content-Transfer-Encoding: base64',
        'X-Mailer: aimroute',
        '',
        replace(encode(convert_to(body, 'UTF8'), 'base64'), E'\n', E'\r\n'),
        '');
END
$$;
COMMENT ON FUNCTION aimroute.render_email(text, text, text, text, text, timestamptz, text) IS
    'An email as sent over SMTP: headers (the subject on one line, 200 characters at most), a blank line and the body in base64, CRLF line ends.';

CREATE FUNCTION aimroute.lead_email_subject(l aimroute.leads) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('New lead %s: %s%s%s', l.lead_id,
                  coalesce((SELECT b.name FROM aimroute.brands b WHERE b.brand_code = l.brand_code), l.brand_code, 'no brand'),
                  ' ' || l.product_code,
                  ' - ' || nullif(concat_ws(' ', l.first_name, l.last_name), ''))
$$;

--
-- lead_email_text: the text of a lead to its dealer.  A 'Leads: Emails To'
-- contact's copy has the view link; a CC copy does not (its reader cannot
-- mark the lead viewed).
--
CREATE FUNCTION aimroute.lead_email_text(l aimroute.leads, dealer_name text, view_link text)
RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT concat_ws(E'\n',
        format('A new lead for %s (%s).', dealer_name, l.dealer_number),
        '',
        'Lead:      ' || l.lead_id,
        'Received:  ' || to_char(l.received_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI') || ' ' || s.timezone,
        'Brand:     ' || coalesce((SELECT b.name FROM aimroute.brands b WHERE b.brand_code = l.brand_code), l.brand_code),
        'Product:   ' || l.product_code,
        'Name:      ' || nullif(concat_ws(' ', l.first_name, l.last_name), ''),
        'Email:     ' || l.email,
        'Phone:     ' || l.phone,
        'Address:   ' || nullif(concat_ws(', ', l.address, l.city,
                                          concat_ws(' ', l.state_code, coalesce(l.postal_code, l.postal_code_input)),
                                          l.country), ''),
        'Source:    ' || l.source,
        'Comment:   ' || l.comment,
        '',
        CASE WHEN view_link IS NOT NULL
             THEN 'Open the lead (this marks it viewed): ' || view_link
             ELSE 'You receive a copy of this lead; the dealer''s lead contacts have the link that marks it viewed.' END,
        CASE WHEN view_link IS NOT NULL AND l.reroute_due_at IS NOT NULL
             THEN 'Leads not viewed by ' || to_char(l.reroute_due_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI')
                  || ' ' || s.timezone || ' go to another dealer.' END,
        '',
        '-- ',
        s.oem_name || ' lead delivery (aimroute)')
      FROM aimroute.settings s
$$;

--
-- Notices to people (failure notices, the daily recap; docs/delivery.md,
-- Notices): the lead's key details, what failed and why in words, links to
-- the OEM's own lead pages (settings.lead_details_url, lead_list_url), and
-- the SQL for operators last.  Each is queued with a plain-text body and
-- an HTML one (outbox.body, outbox.body_html) and sent as
-- multipart/alternative (render_email_alternative).
--
CREATE FUNCTION aimroute.html_escape(t text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN replace(replace(replace(replace(replace(t, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;');
COMMENT ON FUNCTION aimroute.html_escape(text) IS
    'Text made safe for HTML content and quoted attribute values: & < > " and '' as character references.';

-- notice_line: one line of a notice, whatever the value holds: control
-- characters (CR, LF, tabs) become a space, so that a lead's name cannot
-- start a line of its own (a forged link, a forged header).
CREATE FUNCTION aimroute.notice_line(t text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN nullif(btrim(regexp_replace(t, '[[:cntrl:]]+', ' ', 'g')), '');
COMMENT ON FUNCTION aimroute.notice_line(text) IS
    'A value as one line of a notice: control characters (CR, LF, tab) as a space, trimmed; NULL when nothing is left.';

CREATE FUNCTION aimroute.notice_link(template text, lead_id bigint, day date) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN replace(replace(template, '{lead_id}', coalesce(lead_id::text, '')),
                   '{date}', coalesce(to_char(day::timestamp, 'YYYY-MM-DD'), ''));
COMMENT ON FUNCTION aimroute.notice_link(text, bigint, date) IS
    'A link of a notice from its URL template (settings.lead_details_url, settings.lead_list_url): {lead_id} and {date} (YYYY-MM-DD) replaced; NULL when the template is NULL.';

-- failure_reason: why a message was not delivered, in words, with the
-- receiver's own answer after it.
CREATE FUNCTION aimroute.failure_reason(method text, role text, recipient text, outcome text, response text)
RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('%s %s %s', w.who, aimroute.notice_line(recipient),
               CASE WHEN outcome = 'Hard Bounce' THEN 'does not exist or does not take mail'
                    WHEN outcome = 'Soft Bounce' THEN 'has a full mailbox'
                    WHEN outcome = 'Suppressed'
                        THEN 'is on the suppression list after an earlier bounce, so nothing was sent to it: correct the address, then reset the contact (aimroute.set_delivery_status_active)'
                    WHEN method = 'mobile' THEN 'could not be reached through the push gateway'
                    WHEN role = 'adf_http' THEN 'did not take the lead'
                    WHEN response LIKE '%gave up after%' THEN 'could not be reached'
                    ELSE 'refused the message' END
               || CASE WHEN response LIKE '%gave up after%' THEN ', and the last retry has run out' ELSE '' END)
           || coalesce(format(' (%s %s)',
                              CASE WHEN outcome = 'Suppressed' OR response LIKE 'not sent:%' THEN 'aimroute:'
                                   WHEN method = 'email' OR role = 'adf_email' THEN 'the mail server answered'
                                   ELSE 'the answer was' END,
                              left(aimroute.notice_line(response), 300)), '')
      FROM (SELECT CASE role WHEN 'To' THEN 'The dealer''s lead address'
                             WHEN 'CC' THEN 'The dealer''s copy (CC) address'
                             WHEN 'adf_email' THEN 'The dealer''s CRM address'
                             WHEN 'adf_http' THEN 'The dealer''s CRM endpoint'
                             WHEN 'Push' THEN 'The mobile number'
                             ELSE 'The address' END AS who) w
$$;
COMMENT ON FUNCTION aimroute.failure_reason(text, text, text, text, text) IS
    'Why a message was not delivered, in words (such as: The dealer''s lead address sales@... does not exist or does not take mail), with the receiver''s answer in brackets.';

-- lead_key_details: what a person needs to recognize a lead, as labelled
-- lines, each one line (notice_line); empty values are left out.
CREATE FUNCTION aimroute.lead_key_details(p_lead_id bigint, p_dealer_number text, s aimroute.settings)
RETURNS TABLE (label text, value text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT x.label, aimroute.notice_line(x.value)
      FROM aimroute.leads l
      LEFT JOIN aimroute.dealers d ON d.dealer_number = p_dealer_number
      LEFT JOIN aimroute.brands b ON b.brand_code = l.brand_code
     CROSS JOIN LATERAL (VALUES
            (1, 'Lead', l.lead_id::text),
            (2, 'Received', to_char(l.received_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI') || ' ' || s.timezone),
            (3, 'Name', concat_ws(' ', l.first_name, l.last_name)),
            (4, 'Email', l.email),
            (5, 'Phone', l.phone),
            (6, 'Product', concat_ws(' ', coalesce(b.name, l.brand_code), l.product_code)),
            (7, 'Place', concat_ws(', ', l.city,
                                   nullif(concat_ws(' ', l.state_code, coalesce(l.postal_code, l.postal_code_input)), ''),
                                   l.country)),
            (8, 'Dealer', coalesce(d.name || ' (' || p_dealer_number || ')', p_dealer_number)
                          || coalesce(', region ' || d.region, ''))) AS x (n, label, value)
     WHERE l.lead_id = p_lead_id AND aimroute.notice_line(x.value) IS NOT NULL
     ORDER BY x.n
$$;
COMMENT ON FUNCTION aimroute.lead_key_details(bigint, text, aimroute.settings) IS
    'A lead''s key details for a notice: lead, received, name, email, phone, product, place and dealer, as label and one-line value (empty ones left out).';

-- notice_html: the HTML page of a notice around its content: inline
-- styles only (mail clients drop style sheets), the operators' SQL in a
-- grey footer.  Every text in it is escaped by its caller or here.
CREATE FUNCTION aimroute.notice_html(title text, content text, operator_lines text[], signature text)
RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT concat(
        '<!DOCTYPE html>', E'\n',
        '<html><head><meta charset="utf-8"><title>', aimroute.html_escape(title), '</title></head>', E'\n',
        '<body style="margin:0;padding:16px;background:#f3f4f6;font-family:Helvetica,Arial,sans-serif;font-size:14px;color:#1f2328">', E'\n',
        '<div style="max-width:680px;margin:0 auto;background:#ffffff;border:1px solid #d0d7de;border-radius:6px;padding:20px 24px">', E'\n',
        content,
        '<div style="margin-top:20px;padding-top:10px;border-top:1px solid #d0d7de;font-size:12px;color:#57606a">', E'\n',
        '<p style="margin:0 0 4px">For operators:</p>', E'\n',
        (SELECT string_agg('<div><code style="font-family:Menlo,Consolas,monospace">' || aimroute.html_escape(o) || '</code></div>', E'\n')
           FROM unnest(operator_lines) AS o), E'\n',
        '<p style="margin:10px 0 0">', aimroute.html_escape(signature), '</p>', E'\n',
        '</div></div></body></html>', E'\n')
$$;
COMMENT ON FUNCTION aimroute.notice_html(text, text, text[], text) IS
    'The HTML page of a notice: its escaped title, the content (HTML), the operators'' SQL as a footer, and the signature.';

-- notice_details_html: a lead's key details as an HTML table.
CREATE FUNCTION aimroute.notice_details_html(labels text[], vals text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '<table style="border-collapse:collapse;margin:8px 0 12px">' || E'\n'
           || string_agg('<tr><th style="text-align:left;vertical-align:top;padding:2px 16px 2px 0;color:#57606a;font-weight:normal">'
                         || aimroute.html_escape(x.label) || '</th><td style="padding:2px 0">'
                         || aimroute.html_escape(x.value) || '</td></tr>', E'\n' ORDER BY x.n)
           || E'\n</table>\n'
      FROM unnest(labels, vals) WITH ORDINALITY AS x (label, value, n)
$$;
COMMENT ON FUNCTION aimroute.notice_details_html(text[], text[]) IS
    'Labelled values as an HTML table, escaped.';

CREATE FUNCTION aimroute.notice_link_html(url text, words text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN '<a href="' || aimroute.html_escape(url) || '" style="display:inline-block;padding:6px 14px;background:#0b5cad;color:#ffffff;text-decoration:none;border-radius:4px">'
           || aimroute.html_escape(words) || '</a>';
COMMENT ON FUNCTION aimroute.notice_link_html(text, text) IS
    'A link of a notice as an HTML button, URL and words escaped.';

--
-- failure_notice_content: the real-time failure notice of a notice whose
-- delivery ended in total or partial failure: subject, text and HTML.
--
CREATE FUNCTION aimroute.failure_notice_content(p_notification_id bigint, s aimroute.settings,
                                                OUT subject text, OUT text_body text, OUT html_body text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n aimroute.lead_notifications;
    dealer_name text;
    total integer;
    delivered integer;
    reasons text[];
    verdict text;
    labels text[];
    vals text[];
    link text;
    intro text;
    no_link text := 'There is no link to the lead''s page: settings.lead_details_url is not set.';
    ops text[];
    signature text := s.oem_name || ' lead delivery (aimroute)';
BEGIN
    SELECT * INTO n FROM aimroute.lead_notifications x WHERE x.notification_id = p_notification_id;
    SELECT d.name INTO dealer_name FROM aimroute.dealers d WHERE d.dealer_number = n.dealer_number;
    SELECT count(*) FILTER (WHERE o.status <> 'cancelled'),
           count(*) FILTER (WHERE o.status = 'delivered'),
           array_agg(aimroute.failure_reason(o.method, o.role, o.recipient, o.outcome, o.last_response)
                     ORDER BY o.message_id) FILTER (WHERE o.status = 'failed')
      INTO total, delivered, reasons
      FROM aimroute.outbox o
     WHERE o.notification_id = n.notification_id AND o.purpose = 'lead';
    verdict := CASE WHEN delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END;
    SELECT array_agg(k.label), array_agg(k.value) INTO labels, vals
      FROM aimroute.lead_key_details(n.lead_id, n.dealer_number, s) k;
    link := aimroute.notice_link(s.lead_details_url, n.lead_id, NULL);
    intro := format('Lead %s was sent to %s on %s %s, and its delivery ended in %s: %s of %s messages delivered.',
                    n.lead_id, coalesce(aimroute.notice_line(dealer_name) || ' (' || n.dealer_number || ')', 'dealer ' || n.dealer_number),
                    to_char(n.queued_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI'), s.timezone,
                    verdict, delivered, total);
    ops := ARRAY['What to check: SELECT * FROM aimroute.delivery_attempts WHERE lead_id = ' || n.lead_id || ';',
                 'Send it again once fixed: SELECT aimroute.send_lead(' || n.lead_id || ');'];
    subject := format('Lead %s not delivered to dealer %s (%s)', n.lead_id, n.dealer_number, verdict);
    text_body := concat_ws(E'\n',
        intro,
        '',
        (SELECT string_agg(rpad(x.label || ':', 10) || ' ' || x.value, E'\n' ORDER BY x.n)
           FROM unnest(labels, vals) WITH ORDINALITY AS x (label, value, n)),
        '',
        'Not delivered:',
        (SELECT string_agg('  - ' || r, E'\n') FROM unnest(reasons) AS r),
        '',
        coalesce('Open the lead: ' || link, no_link),
        '',
        'For operators:',
        (SELECT string_agg('  ' || o, E'\n') FROM unnest(ops) AS o),
        '',
        '-- ',
        signature);
    html_body := aimroute.notice_html(subject,
        concat('<h1 style="font-size:18px;margin:0 0 10px">', aimroute.html_escape(subject), '</h1>', E'\n',
               '<p style="margin:0 0 8px">', aimroute.html_escape(intro), '</p>', E'\n',
               aimroute.notice_details_html(labels, vals),
               '<h2 style="font-size:15px;margin:12px 0 6px">Not delivered</h2>', E'\n',
               '<ul style="margin:0 0 12px;padding-left:20px">', E'\n',
               (SELECT string_agg('<li style="margin:0 0 4px">' || aimroute.html_escape(r) || '</li>', E'\n') FROM unnest(reasons) AS r),
               E'\n</ul>\n',
               '<p style="margin:12px 0">',
               coalesce(aimroute.notice_link_html(link, 'Open the lead'), aimroute.html_escape(no_link)),
               '</p>', E'\n'),
        ops, signature);
END
$$;
COMMENT ON FUNCTION aimroute.failure_notice_content(bigint, aimroute.settings) IS
    'The real-time failure notice of a lead notice: subject, plain text and HTML with the lead''s key details, each message not delivered and why in words, the link to the lead''s page (settings.lead_details_url) and the operators'' SQL. Internal: delivery_settle queues it.';
REVOKE EXECUTE ON FUNCTION aimroute.failure_notice_content(bigint, aimroute.settings) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.failure_notice_content(bigint, aimroute.settings) TO aimroute_admin;

--
-- daily_recap_content: the daily recap of a day's failing leads for one
-- recipient (a region's, a dealer's or all): subject, text and HTML, and
-- how many leads it lists (0: nothing to send).
--
CREATE FUNCTION aimroute.daily_recap_content(p_day date, p_region text, p_dealer_number text, s aimroute.settings,
                                             OUT leads integer, OUT subject text, OUT text_body text, OUT html_body text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i record;
    list_link text := aimroute.notice_link(s.lead_list_url, NULL, p_day);
    link text;
    title text;
    reasons text[];
    statuses text;
    summary text;
    text_items text[] := '{}';
    html_items text[] := '{}';
    lead_ids bigint[] := '{}';
    ops text[];
    intro text;
    signature text := s.oem_name || ' lead delivery (aimroute)';
BEGIN
    FOR i IN
        SELECT x.* FROM aimroute.delivery_issues x
         WHERE (x.failed_at AT TIME ZONE s.timezone)::date = p_day
           AND (p_region IS NULL OR x.region = p_region)
           AND (p_dealer_number IS NULL OR x.dealer_number = p_dealer_number)
         ORDER BY x.lead_id, x.notification_id
    LOOP
        SELECT array_agg(aimroute.failure_reason(o.method, o.role, o.recipient, o.outcome, o.last_response)
                         ORDER BY o.message_id)
          INTO reasons
          FROM aimroute.outbox o
         WHERE o.notification_id = i.notification_id AND o.purpose = 'lead' AND o.status = 'failed';
        SELECT concat_ws(', ', l.lead_id::text,
                         aimroute.notice_line(concat_ws(' ', l.first_name, l.last_name)),
                         aimroute.notice_line(concat_ws(' ', coalesce(b.name, l.brand_code), l.product_code)),
                         aimroute.notice_line(concat_ws(', ', l.city, nullif(concat_ws(' ', l.state_code, l.postal_code), ''))))
          INTO title
          FROM aimroute.leads l LEFT JOIN aimroute.brands b ON b.brand_code = l.brand_code
         WHERE l.lead_id = i.lead_id;
        title := 'Lead ' || title;
        statuses := concat_ws(', ', 'email ' || i.email_status, 'mobile ' || i.mobile_status, 'CRM ' || i.crm_status);
        summary := format('%s (%s): %s (%s)', aimroute.notice_line(i.dealer_name), i.dealer_number, i.failure, statuses);
        link := aimroute.notice_link(s.lead_details_url, i.lead_id, NULL);
        lead_ids := lead_ids || i.lead_id;
        text_items := text_items || concat_ws(E'\n',
            title,
            '  Dealer:  ' || summary,
            (SELECT string_agg('  Why:     ' || r, E'\n') FROM unnest(reasons) AS r),
            '  Open:    ' || link);
        html_items := html_items || concat(
            '<li style="margin:0 0 12px"><div style="font-weight:bold">', aimroute.html_escape(title), '</div>', E'\n',
            '<div>Dealer: ', aimroute.html_escape(summary), '</div>', E'\n',
            (SELECT string_agg('<div style="color:#57606a">Why: ' || aimroute.html_escape(r) || '</div>', E'\n') FROM unnest(reasons) AS r),
            CASE WHEN link IS NOT NULL
                 THEN E'\n<div><a href="' || aimroute.html_escape(link) || '">Open the lead</a></div>' END,
            '</li>');
    END LOOP;
    leads := (SELECT count(DISTINCT x) FROM unnest(lead_ids) AS x);
    IF leads = 0 THEN
        RETURN;
    END IF;
    subject := format('Lead delivery failures on %s: %s lead%s%s', p_day, leads, CASE WHEN leads = 1 THEN '' ELSE 's' END,
                      coalesce(' (region ' || p_region || ')', ' (dealer ' || p_dealer_number || ')', ''));
    intro := format('%s lead%s whose delivery failed wholly or partly on %s (%s).', leads,
                    CASE WHEN leads = 1 THEN '' ELSE 's' END, to_char(p_day, 'YYYY-MM-DD'), s.timezone);
    ops := ARRAY[format('The details: SELECT * FROM aimroute.delivery_issues WHERE (failed_at AT TIME ZONE %L)::date = %L;',
                        s.timezone, to_char(p_day, 'YYYY-MM-DD'))];
    text_body := concat_ws(E'\n',
        intro,
        coalesce('The day''s list: ' || list_link,
                 'There is no link to the day''s list: settings.lead_list_url is not set.'),
        '',
        array_to_string(text_items, E'\n\n'),
        '',
        'For operators:',
        '  ' || ops[1],
        '',
        '-- ',
        signature);
    html_body := aimroute.notice_html(subject,
        concat('<h1 style="font-size:18px;margin:0 0 10px">', aimroute.html_escape(subject), '</h1>', E'\n',
               '<p style="margin:0 0 8px">', aimroute.html_escape(intro), '</p>', E'\n',
               '<p style="margin:0 0 14px">',
               coalesce(aimroute.notice_link_html(list_link, 'Open the day''s list'),
                        aimroute.html_escape('There is no link to the day''s list: settings.lead_list_url is not set.')),
               '</p>', E'\n',
               '<ol style="margin:0;padding-left:20px">', E'\n', array_to_string(html_items, E'\n'), E'\n</ol>\n'),
        ops, signature);
END
$$;
COMMENT ON FUNCTION aimroute.daily_recap_content(date, text, text, aimroute.settings) IS
    'The daily recap of a day''s failing leads for one recipient (p_region, p_dealer_number: NULL for all) on p_day: how many leads, subject, plain text and HTML with each lead''s key details, why it failed in words, links to its page and to the day''s list (settings.lead_details_url, lead_list_url) and the operators'' SQL. Internal: queue_daily_recap queues it.';
REVOKE EXECUTE ON FUNCTION aimroute.daily_recap_content(date, text, text, aimroute.settings) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.daily_recap_content(date, text, text, aimroute.settings) TO aimroute_admin;

-- render_email_alternative: a notice as sent: the headers of render_email,
-- then multipart/alternative with the text part first and the HTML part
-- last (the one a mail client shows when it can), each in base64.  The
-- boundary starts with =_, which base64 never holds.  PL/pgSQL, as
-- render_email, for its kept plan.
CREATE FUNCTION aimroute.render_email_alternative(mail_from text, rcpt text, subject text, text_body text,
                                                  html_body text, message_key text, sent_at timestamptz)
RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    boundary text := '=_aimroute_' || md5(coalesce(message_key, '') || sent_at::text);
BEGIN
    RETURN concat_ws(E'\r\n',
        'Date: ' || to_char(sent_at AT TIME ZONE 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS') || ' +0000',
        'From: ' || mail_from,
        'To: ' || rcpt,
        'Subject: ' || aimroute.mime_header_text(left(regexp_replace(subject, '[\r\n\t]+', ' ', 'g'), 200)),
        'Message-ID: ' || message_key,
        'MIME-Version: 1.0',
        'Content-Type: multipart/alternative; boundary="' || boundary || '"',
        'X-Mailer: aimroute',
        '',
        '--' || boundary,
        'Content-Type: text/plain; charset=UTF-8',
        'Content-Transfer-Encoding: base64',
        '',
        replace(encode(convert_to(text_body, 'UTF8'), 'base64'), E'\n', E'\r\n'),
        '--' || boundary,
        'Content-Type: text/html; charset=UTF-8',
        'Content-Transfer-Encoding: base64',
        '',
        replace(encode(convert_to(html_body, 'UTF8'), 'base64'), E'\n', E'\r\n'),
        '--' || boundary || '--',
        '');
END
$$;
COMMENT ON FUNCTION aimroute.render_email_alternative(text, text, text, text, text, text, timestamptz) IS
    'A notice as sent over SMTP: the headers of render_email, then a multipart/alternative body with a text/plain and a text/html part, each in base64, CRLF line ends.';

--
-- delivery_job: what the worker needs to send one message.
--
CREATE TYPE aimroute.delivery_job AS (
    message_id    bigint,
    attempt       integer,
    transport     text,      -- smtp or http
    url           text,      -- SMTP server or HTTP endpoint
    mail_from     text,
    recipient     text,      -- SMTP recipient (NULL for HTTP)
    username      text,
    password      text,
    content_type  text,      -- HTTP Content-Type
    message_key   text,      -- Message-ID or Idempotency-Key
    payload       text       -- the whole email, or the HTTP body
);

--
-- delivery_settle: after a lead message's final outcome, queue failure
-- notices once the notice's delivery is over and failed wholly or partly
-- (internal; the notices themselves never cause notices).
--
CREATE FUNCTION aimroute.delivery_settle(p_notification_id bigint)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n aimroute.lead_notifications;
    s aimroute.settings;
    d aimroute.dealers;
    total integer;
    delivered integer;
    open_count integer;
    notice record;
    queued integer;
BEGIN
    SELECT * INTO n FROM aimroute.lead_notifications x WHERE x.notification_id = p_notification_id FOR UPDATE;
    IF NOT FOUND OR n.failure_notice_at IS NOT NULL THEN
        RETURN 0;
    END IF;
    SELECT count(*) FILTER (WHERE o.status <> 'cancelled'),
           count(*) FILTER (WHERE o.status = 'delivered'),
           count(*) FILTER (WHERE o.status IN ('queued', 'sending'))
      INTO total, delivered, open_count
      FROM aimroute.outbox o
     WHERE o.notification_id = n.notification_id AND o.purpose = 'lead';
    IF open_count > 0 OR total = 0 OR delivered = total THEN
        RETURN 0;
    END IF;
    SELECT * INTO s FROM aimroute.settings;
    SELECT * INTO d FROM aimroute.dealers x WHERE x.dealer_number = n.dealer_number;
    SELECT * INTO notice FROM aimroute.failure_notice_content(n.notification_id, s);
    INSERT INTO aimroute.outbox (notification_id, lead_id, dealer_number, purpose, method, role,
                                 contact_id, recipient, subject, body, body_html)
    SELECT n.notification_id, n.lead_id, n.dealer_number, 'failure notice', 'email', 'Notice',
           r.contact_id, r.email, notice.subject, notice.text_body, notice.html_body
      FROM (SELECT NULL::bigint AS contact_id, c.email
              FROM aimroute.notification_contacts c
             WHERE c.contact_type = 'Dealer Lead Delivery Notification (real-time)'
               AND (c.region IS NULL OR c.region = d.region)
            UNION
            SELECT c.contact_id, c.email
              FROM aimroute.dealer_contacts c
             WHERE c.dealer_number = n.dealer_number AND c.email IS NOT NULL
               AND 'Dealer Lead Delivery Notification (real-time)' = ANY (c.contact_types)) AS r;
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM aimroute.wake_delivery_worker();
    END IF;
    UPDATE aimroute.lead_notifications x SET failure_notice_at = clock_timestamp()
     WHERE x.notification_id = n.notification_id;
    RETURN queued;
END
$$;
REVOKE EXECUTE ON FUNCTION aimroute.delivery_settle(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_settle(bigint) TO aimroute_admin;

--
-- VERP (docs/delivery.md, Bounces): with settings.bounce_address, every
-- email's envelope sender names its message, so that a DSN mailed to it
-- names the message even when the DSN's body is mangled.  The key is the
-- message's id and the UTC time it was queued, to the microsecond: the
-- left part of its Message-ID without 'aimroute.'.  record_dsn takes the
-- key back and checks both halves.
--
CREATE FUNCTION aimroute.verp_key(m aimroute.outbox) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN m.message_id || '.' || to_char(m.queued_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS');
COMMENT ON FUNCTION aimroute.verp_key(aimroute.outbox) IS
    'The key of a message in its VERP envelope sender: <message_id>.<queued_at in UTC as YYYYMMDDHHMISSUUUUUU>, as in its Message-ID.';

CREATE FUNCTION aimroute.envelope_sender(m aimroute.outbox, s aimroute.settings) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    RETURN CASE WHEN s.bounce_address IS NULL THEN s.smtp_from
                ELSE split_part(s.bounce_address, '@', 1) || '+' || aimroute.verp_key(m) || '@'
                     || split_part(s.bounce_address, '@', 2) END;
COMMENT ON FUNCTION aimroute.envelope_sender(aimroute.outbox, aimroute.settings) IS
    'The envelope sender (MAIL FROM) of an email: settings.bounce_address with +<key> (aimroute.verp_key) before its @, such as bounces+123.20260101120000000000@oem.example; settings.smtp_from when bounce_address is NULL.';

--
-- delivery_render_batch: what the worker sends for each of a set of
-- claimed messages, in one statement (internal), a row each.  Lead
-- emails and pushes are rendered when sent, so they show the lead as it is
-- then.  PL/pgSQL for its kept plan: the statement is planned once a
-- session, not once a claim.
--
CREATE FUNCTION aimroute.delivery_render_batch(messages aimroute.outbox[], s aimroute.settings)
RETURNS SETOF aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    -- A few messages, each looked up by key (as in delivery_claim).
    SET enable_hashjoin = off
    SET enable_mergejoin = off
    SET enable_seqscan = off
    -- A path turned off costs 1e10: the plan would pass every JIT
    -- threshold, and each statement would be compiled.
    SET jit = off
AS $$
BEGIN
    RETURN QUERY
    SELECT m.message_id, m.attempts,
           CASE WHEN k.http THEN 'http' ELSE 'smtp' END,
           CASE k.kind WHEN 'push' THEN s.push_gateway_url WHEN 'adf_http' THEN m.recipient ELSE s.smtp_url END,
           aimroute.envelope_sender(m, s),
           -- The SMTP login is for the SMTP server only.
           CASE WHEN NOT k.http THEN m.recipient END,
           CASE WHEN NOT k.http THEN s.smtp_username END,
           CASE WHEN NOT k.http THEN s.smtp_password END,
           CASE k.kind WHEN 'push' THEN 'application/json' WHEN 'adf_http' THEN 'application/xml' END,
           m.message_key,
           CASE k.kind
               -- A notice queued before notices had an HTML part has none.
               WHEN 'notice' THEN
                   CASE WHEN m.body_html IS NULL
                        THEN aimroute.render_email(s.smtp_from, m.recipient, m.subject, m.body, m.message_key, clock_timestamp())
                        ELSE aimroute.render_email_alternative(s.smtp_from, m.recipient, m.subject, m.body, m.body_html,
                                                               m.message_key, clock_timestamp()) END
               WHEN 'email' THEN
                   aimroute.render_email(s.smtp_from, m.recipient, aimroute.lead_email_subject(l),
                       aimroute.lead_email_text(l, d.name, CASE WHEN m.role = 'To' THEN s.view_link_url || n.view_token END),
                       m.message_key, clock_timestamp())
               WHEN 'push' THEN
                   json_build_object(
                       'to', m.recipient,
                       'title', aimroute.lead_email_subject(l),
                       'body', concat_ws(', ', nullif(concat_ws(' ', l.first_name, l.last_name), ''),
                                         nullif(concat_ws(' ', l.city, l.state_code), ''), l.phone),
                       'lead_id', l.lead_id,
                       'dealer_number', l.dealer_number,
                       'url', CASE WHEN EXISTS (SELECT FROM aimroute.dealer_contacts c
                                                 WHERE c.contact_id = m.contact_id
                                                   AND 'Leads: Emails To' = ANY (c.contact_types))
                                   THEN s.view_link_url || n.view_token END,
                       'message_key', m.message_key)::text
               WHEN 'adf_email' THEN
                   aimroute.render_email(s.smtp_from, m.recipient,
                       format('ADF lead %s for dealer %s', l.lead_id, l.dealer_number),
                       aimroute.lead_adf(l.lead_id), m.message_key, clock_timestamp())
               ELSE aimroute.lead_adf(l.lead_id) END
      FROM unnest(messages) AS m
      CROSS JOIN LATERAL (
          SELECT x.kind, x.kind IN ('push', 'adf_http') AS http
            FROM (SELECT CASE WHEN m.purpose <> 'lead' THEN 'notice'
                              WHEN m.method = 'email' THEN 'email'
                              WHEN m.method = 'mobile' THEN 'push'
                              WHEN m.role = 'adf_email' THEN 'adf_email'
                              ELSE 'adf_http' END AS kind) x) k
      LEFT JOIN aimroute.leads l ON k.kind <> 'notice' AND l.lead_id = m.lead_id
      LEFT JOIN aimroute.lead_notifications n ON k.kind <> 'notice' AND n.notification_id = m.notification_id
      LEFT JOIN aimroute.dealers d ON k.kind <> 'notice' AND d.dealer_number = m.dealer_number;
END
$$;
COMMENT ON FUNCTION aimroute.delivery_render_batch(aimroute.outbox[], aimroute.settings) IS
    'What the delivery worker sends for each of the messages given, a row each: where to, how, the envelope sender, and the whole email or HTTP body. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_render_batch(aimroute.outbox[], aimroute.settings) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_render_batch(aimroute.outbox[], aimroute.settings) TO aimroute_admin;

--
-- delivery_render: what the worker sends for one claimed message
-- (internal): delivery_render_batch for that one, so that a message
-- claimed on its own is rendered exactly as one claimed with others.
--
CREATE FUNCTION aimroute.delivery_render(m aimroute.outbox, s aimroute.settings)
RETURNS aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j aimroute.delivery_job;
BEGIN
    SELECT * INTO j FROM aimroute.delivery_render_batch(ARRAY[m], s);
    RETURN j;
END
$$;
REVOKE EXECUTE ON FUNCTION aimroute.delivery_render(aimroute.outbox, aimroute.settings) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_render(aimroute.outbox, aimroute.settings) TO aimroute_admin;

--
-- delivery_fail: record that a claimed message failed without a send
-- (internal).
--
CREATE FUNCTION aimroute.delivery_fail(m aimroute.outbox, p_outcome text, p_why text)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- A message not sent after all, though an attempt a crash cut short
    -- may have reached the receiver: say so.
    IF EXISTS (SELECT FROM aimroute.delivery_attempt_log a
                WHERE a.message_id = m.message_id AND a.outcome = 'Interrupted') THEN
        p_why := p_why || ' (an earlier attempt was interrupted and may have reached the receiver)';
    END IF;
    UPDATE aimroute.outbox o
       SET status = CASE WHEN p_outcome = 'Cancelled' THEN 'cancelled' ELSE 'failed' END,
           outcome = p_outcome, last_response = p_why, finished_at = clock_timestamp(),
           last_attempt_at = clock_timestamp()
     WHERE o.message_id = m.message_id;
    INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
    VALUES (m.message_id, m.attempts, p_outcome, p_why);
    -- Also after a cancel: it may have been the last message the notice
    -- waited for.
    IF m.purpose = 'lead' THEN
        PERFORM aimroute.delivery_settle(m.notification_id);
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION aimroute.delivery_fail(aimroute.outbox, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_fail(aimroute.outbox, text, text) TO aimroute_admin;

--
-- delivery_lease: the messages given, claimed under a lease (internal):
-- 'sending' until clock_timestamp() + lease, one attempt more, and a
-- Message-ID / Idempotency-Key from their first claim on.  Returns them as
-- they are now.
--
CREATE FUNCTION aimroute.delivery_lease(message_ids bigint[], s aimroute.settings, lease interval)
RETURNS SETOF aimroute.outbox
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    UPDATE aimroute.outbox o
       SET status = 'sending', attempts = o.attempts + 1, due_at = clock_timestamp() + lease,
           message_key = coalesce(o.message_key,
                                  format('<aimroute.%s.%s@%s>', o.message_id,
                                         to_char(o.queued_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS'),
                                         split_part(s.smtp_from, '@', 2)))
     WHERE o.message_id = ANY (message_ids)
    RETURNING o.*;
END
$$;
REVOKE EXECUTE ON FUNCTION aimroute.delivery_lease(bigint[], aimroute.settings, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_lease(bigint[], aimroute.settings, interval) TO aimroute_admin;

--
-- delivery_claim_one: claim one due message, locked by the caller, under a
-- lease, and render it (internal).  In the same transaction: a message
-- whose lease ran out (its worker stopped before recording it) is logged
-- as interrupted and sent again under the same key; a message to a
-- suppressed contact is recorded as failed without sending; a lead message
-- whose lead left the dealer is cancelled.  Returns the job to send, or
-- NULL when the message was settled without sending.  An error (one that
-- rendering raises, say) is the caller's: delivery_claim sets the message
-- aside.
--
CREATE FUNCTION aimroute.delivery_claim_one(m aimroute.outbox, s aimroute.settings, lease interval)
RETURNS aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j aimroute.delivery_job;
    contact_status text;
    holder text;
    newer bigint;
BEGIN
    IF m.status = 'sending' THEN
        INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
        VALUES (m.message_id, m.attempts, 'Interrupted',
                'the delivery worker stopped before recording the outcome of this attempt; sending again with the same key');
        UPDATE aimroute.outbox o SET last_attempt_at = clock_timestamp() WHERE o.message_id = m.message_id;
    END IF;
    IF m.purpose = 'lead' THEN
        SELECT l.dealer_number INTO holder
          FROM aimroute.leads l JOIN aimroute.lead_notifications n USING (lead_id)
         WHERE n.notification_id = m.notification_id AND l.dealer_number = n.dealer_number;
        IF NOT FOUND THEN
            SELECT l.dealer_number INTO holder FROM aimroute.leads l WHERE l.lead_id = m.lead_id;
            PERFORM aimroute.delivery_fail(m, 'Cancelled',
                CASE WHEN holder IS NULL THEN 'not sent: the lead does not exist (deleted, or its INSERT skipped by another trigger)'
                     ELSE format('not sent: the lead went to dealer %s first', holder) END);
            RETURN NULL;
        END IF;
        SELECT x.notification_id INTO newer FROM aimroute.lead_notifications x
         WHERE x.lead_id = m.lead_id AND x.dealer_number = holder AND x.notification_id > m.notification_id
         ORDER BY x.notification_id DESC LIMIT 1;
        IF FOUND THEN
            PERFORM aimroute.delivery_fail(m, 'Cancelled',
                format('not sent: notice %s sent the lead to the dealer again', newer));
            RETURN NULL;
        END IF;
    END IF;
    -- A deleted contact gets nothing; a bounce is an email address's,
    -- so a push to the contact's mobile still goes.
    IF m.contact_id IS NOT NULL THEN
        SELECT c.delivery_status INTO contact_status FROM aimroute.dealer_contacts c WHERE c.contact_id = m.contact_id;
        IF NOT FOUND THEN
            PERFORM aimroute.delivery_fail(m, 'Cancelled', format('not sent: contact %s was deleted', m.contact_id));
            RETURN NULL;
        END IF;
        IF m.method = 'email' AND contact_status <> 'Active' THEN
            PERFORM aimroute.delivery_fail(m, 'Suppressed',
                format('not sent: contact %s is on the suppression list (%s)', m.contact_id, contact_status));
            RETURN NULL;
        END IF;
    END IF;
    IF m.method = 'mobile' AND s.push_gateway_url IS NULL THEN
        PERFORM aimroute.delivery_fail(m, 'Failed', 'not sent: no push gateway is configured (settings.push_gateway_url)');
        RETURN NULL;
    END IF;

    SELECT * INTO m FROM aimroute.delivery_lease(ARRAY[m.message_id], s, lease);
    j := aimroute.delivery_render(m, s);
    IF j.url IS NULL OR j.payload IS NULL THEN
        RAISE EXCEPTION 'message % has no %', m.message_id,
                        CASE WHEN j.url IS NULL THEN 'address to send to' ELSE 'content' END
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = CASE WHEN j.url IS NULL THEN 'Check settings.smtp_url, settings.push_gateway_url and the CRM integration''s endpoint.' END;
    END IF;
    RETURN j;
END
$$;
REVOKE EXECUTE ON FUNCTION aimroute.delivery_claim_one(aimroute.outbox, aimroute.settings, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_claim_one(aimroute.outbox, aimroute.settings, interval) TO aimroute_admin;

--
-- delivery_endpoint: where a message goes, as the delivery worker counts
-- its transfers (internal): the scheme and authority of the URL it is sent
-- to (the SMTP server, the push gateway, a CRM's HTTP host and port), in
-- lower case; '' when there is none.  src/delivery_worker.c computes the
-- same key from the URL of the rendered message.
--
CREATE FUNCTION aimroute.delivery_endpoint(m aimroute.outbox, s aimroute.settings) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    RETURN coalesce(lower(substring(CASE WHEN m.method = 'mobile' THEN s.push_gateway_url
                                         WHEN m.method = 'crm' AND m.role <> 'adf_email' THEN m.recipient
                                         ELSE s.smtp_url END
                                    FROM '^[^:/?#]+://[^/?#]*')), '');
COMMENT ON FUNCTION aimroute.delivery_endpoint(aimroute.outbox, aimroute.settings) IS
    'Where the delivery worker sends a message, as it counts its transfers per endpoint (aimroute.delivery_endpoint_concurrency): the URL''s scheme and authority, in lower case. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_endpoint(aimroute.outbox, aimroute.settings) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_endpoint(aimroute.outbox, aimroute.settings) TO aimroute_admin;

--
-- delivery_claim: the worker's claim of up to max_messages due messages,
-- under a lease, rendered.  First it records again the outcomes whose
-- recording failed (set aside at step 'record': those messages were sent,
-- and are never sent again for that attempt).
--
-- The messages of full_endpoints (delivery_endpoint) are not claimed: the
-- worker's slots for those endpoints are all taken, and their messages
-- stay queued rather than hold slots of the others.  Nor are the messages
-- held: the worker's own, still being sent or waiting for a slot, whose
-- lease may have run out meanwhile (a lease shorter than
-- aimroute.delivery_timeout): they are not sent twice at once.
--
-- The common case is set-based: one statement locks the due messages,
-- one finds those with nothing to settle first (queued, not moved or
-- resent since, the contact there and not suppressed), one leases them
-- and one renders them all (delivery_render_batch).  The others -- a lease
-- that ran out (logged Interrupted), a message to cancel, one to a
-- suppressed contact, a push without a gateway -- go through
-- delivery_claim_one, one by one, in the same transaction.
--
-- A message whose claim raises does not stop the others (SPEC section 8):
-- it is set aside (aimroute.set_aside_items, 055_set_aside.sql) with its
-- error, as it was before the claim (queued, no attempt counted), and
-- skipped until its retry time.  As in reroute_overdue, the batch is tried
-- whole first, in one subtransaction, and only after a failure message by
-- message, each through delivery_claim_one in a subtransaction of its own.
-- Set-aside rows of messages no longer waiting are removed.
--
CREATE FUNCTION aimroute.delivery_claim(max_messages integer, lease interval,
                                        full_endpoints text[] DEFAULT '{}', held bigint[] DEFAULT '{}')
RETURNS SETOF aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    -- The due messages are walked in outbox_due_idx's order and the walk
    -- stops at max_messages; the few messages taken are looked up by key
    -- in the other tables.  The plans are kept from the worker's first
    -- claim, often made on a new or emptied outbox, whose statistics make
    -- a sort of every due message, or a hash join over a whole table, look
    -- cheaper: then each claim cost the whole queue (3.7 ms a claim at
    -- 5,000 due messages).  The functions it calls run with these too.
    SET enable_sort = off
    SET enable_hashjoin = off
    SET enable_mergejoin = off
    SET enable_seqscan = off
    -- A path turned off costs 1e10: the plan would pass every JIT
    -- threshold, and each statement would be compiled.
    SET jit = off
AS $$
DECLARE
    s aimroute.settings;
    m aimroute.outbox;
    f aimroute.set_aside_items;
    j aimroute.delivery_job;
    batch aimroute.outbox[];
    plain bigint[];
    bad bigint;
    jobs aimroute.delivery_job[] := '{}';
    claimed bigint[] := '{}';
    whole boolean;
    e_code text;
    e_message text;
    e_detail text;
    e_hint text;
    e_context text;
BEGIN
    SELECT * INTO s FROM aimroute.settings;
    -- delivery_record sets the message aside again when it fails again.
    FOR f IN SELECT * FROM aimroute.set_aside_items x
              WHERE x.kind = 'message' AND x.step = 'record' AND x.retry_at <= clock_timestamp()
              ORDER BY x.retry_at
              FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM aimroute.delivery_record(f.item_id, (f.send_result ->> 'attempt')::integer,
                                         (f.send_result ->> 'curl_code')::integer,
                                         (f.send_result ->> 'response_code')::integer,
                                         f.send_result ->> 'response', f.send_result ->> 'smtp_command');
    END LOOP;
    DELETE FROM aimroute.set_aside_items x
     WHERE x.kind = 'message'
       AND NOT EXISTS (SELECT FROM aimroute.outbox o
                        WHERE o.message_id = x.item_id AND o.status IN ('queued', 'sending'));

    -- Locked here, outside the subtransactions, so that a failed try
    -- leaves the same messages to try one by one.
    batch := ARRAY(SELECT o FROM aimroute.outbox o
                    WHERE o.status IN ('queued', 'sending') AND o.due_at <= clock_timestamp()
                      AND NOT EXISTS (SELECT FROM aimroute.set_aside_items x
                                       WHERE x.kind = 'message' AND x.item_id = o.message_id
                                         AND (x.retry_at > clock_timestamp() OR x.step = 'record'))
                      AND (coalesce(cardinality(full_endpoints), 0) = 0
                           OR aimroute.delivery_endpoint(o, s) <> ALL (full_endpoints))
                      AND (coalesce(cardinality(held), 0) = 0 OR o.message_id <> ALL (held))
                    ORDER BY o.due_at, o.message_id
                    LIMIT max_messages
                    FOR UPDATE SKIP LOCKED);
    IF cardinality(batch) = 0 THEN
        RETURN;
    END IF;

    BEGIN
        -- What delivery_claim_one would lease and render with nothing
        -- settled first; a condition that is not plainly true leaves the
        -- message to delivery_claim_one.
        plain := ARRAY(
            SELECT b.message_id FROM unnest(batch) WITH ORDINALITY AS b
             WHERE b.status = 'queued'
               AND (b.purpose <> 'lead'
                    OR (EXISTS (SELECT FROM aimroute.lead_notifications n
                                  JOIN aimroute.leads l ON l.lead_id = n.lead_id AND l.dealer_number = n.dealer_number
                                 WHERE n.notification_id = b.notification_id)
                        AND NOT EXISTS (SELECT FROM aimroute.lead_notifications n
                                          JOIN aimroute.lead_notifications x ON x.dealer_number = n.dealer_number
                                         WHERE n.notification_id = b.notification_id
                                           AND x.lead_id = b.lead_id AND x.notification_id > b.notification_id)))
               AND (b.contact_id IS NULL
                    OR EXISTS (SELECT FROM aimroute.dealer_contacts c
                                WHERE c.contact_id = b.contact_id
                                  AND (b.method <> 'email' OR c.delivery_status = 'Active')))
               AND (b.method <> 'mobile' OR s.push_gateway_url IS NOT NULL)
             ORDER BY b.ordinality);
        FOR m IN SELECT * FROM unnest(batch) b WHERE b.message_id <> ALL (plain) LOOP
            j := aimroute.delivery_claim_one(m, s, lease);
            IF j.message_id IS NOT NULL THEN
                jobs := jobs || j;
            END IF;
        END LOOP;
        IF cardinality(plain) > 0 THEN
            SELECT jobs || array_agg(r) INTO jobs
              FROM aimroute.delivery_render_batch(
                       ARRAY(SELECT x FROM aimroute.delivery_lease(plain, s, lease) x), s) r;
        END IF;
        SELECT r.message_id INTO bad FROM unnest(jobs) r WHERE r.url IS NULL OR r.payload IS NULL LIMIT 1;
        IF FOUND THEN
            -- delivery_claim_one raises for that message alone, which is set aside.
            RAISE EXCEPTION 'message % has no address or content', bad USING ERRCODE = 'null_value_not_allowed';
        END IF;
        claimed := ARRAY(SELECT b.message_id FROM unnest(batch) b);
        whole := true;
    EXCEPTION WHEN OTHERS THEN
        -- In the server log, as when recording together fails: a claim
        -- that keeps failing so is slower, though every message goes.
        RAISE LOG 'aimroute: claiming % messages together failed (%), claiming them one by one',
                  cardinality(batch), SQLERRM;
        whole := false;
    END;

    IF NOT whole THEN
        jobs := '{}';
        FOREACH m IN ARRAY batch LOOP
            BEGIN
                j := aimroute.delivery_claim_one(m, s, lease);
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
                    e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT,
                    e_context = PG_EXCEPTION_CONTEXT;
                PERFORM aimroute.set_aside('message', m.message_id, m.lead_id, 'claim', e_code, e_message,
                                           e_detail, e_hint, e_context);
                -- Shown in delivery_attempts, when the log takes it.
                BEGIN
                    INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
                    VALUES (m.message_id, m.attempts + 1, 'Set aside',
                            left('not sent: preparing it failed: ' || e_message, 2000));
                EXCEPTION WHEN OTHERS THEN
                    NULL;
                END;
                CONTINUE;
            END;
            claimed := claimed || m.message_id;
            IF j.message_id IS NOT NULL THEN
                jobs := jobs || j;
            END IF;
        END LOOP;
    END IF;
    IF cardinality(claimed) > 0 THEN
        DELETE FROM aimroute.set_aside_items x WHERE x.kind = 'message' AND x.item_id = ANY (claimed);
    END IF;
    -- In the order claimed.
    RETURN QUERY SELECT r.* FROM unnest(jobs) r
                  ORDER BY array_position(ARRAY(SELECT b.message_id FROM unnest(batch) b), r.message_id);
END
$$;
COMMENT ON FUNCTION aimroute.delivery_claim(integer, interval, text[], bigint[]) IS
    'The delivery worker''s claim: up to max_messages due messages, rendered, leased for the given interval, none to the endpoints listed (aimroute.delivery_endpoint) and none of the messages held (the worker''s own, still being sent); a message whose claim raises is set aside in aimroute.set_aside_items, with a WARNING, and tried again later. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_claim(integer, interval, text[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_claim(integer, interval, text[], bigint[]) TO aimroute_admin;

--
-- delivery_take_back: a delivery worker that starts takes back at once what
-- an earlier one claimed and did not record (it was killed, or the server
-- stopped at once): those messages fall due now, not when their lease runs
-- out (SPEC section 7).  delivery_claim then treats them as any lease run
-- out: the attempt is logged Interrupted and the message sent again with
-- the same Message-ID or Idempotency-Key.  A message whose outcome waits
-- to be recorded (set aside at its record step) is not sent again either
-- way.  Returns how many.  Only one delivery worker serves a database, so
-- whatever is leased when it starts is a dead worker's; a session that
-- claimed messages by hand loses them to it as well.
--
CREATE FUNCTION aimroute.delivery_take_back() RETURNS integer
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH taken AS (
        UPDATE aimroute.outbox o SET due_at = clock_timestamp()
         WHERE o.status = 'sending' AND o.due_at > clock_timestamp()
        RETURNING 1)
    SELECT count(*)::integer FROM taken
$$;
COMMENT ON FUNCTION aimroute.delivery_take_back() IS
    'What a starting delivery worker runs first: messages an earlier worker claimed and did not record fall due at once instead of when their lease runs out; returns how many. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_take_back() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_take_back() TO aimroute_admin;

--
-- delivery_give_back: a worker asked to stop gives back a claimed message
-- it has not sent (internal): due again at once, as the same attempt, not
-- when its lease runs out.  A message no longer at that attempt, or no
-- longer being sent, is left alone.
--
CREATE FUNCTION aimroute.delivery_give_back(message_id bigint, attempt integer) RETURNS void
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE aimroute.outbox o
       SET status = 'queued', attempts = o.attempts - 1, due_at = clock_timestamp()
     WHERE o.message_id = delivery_give_back.message_id
       AND o.attempts = delivery_give_back.attempt AND o.status = 'sending'
$$;
COMMENT ON FUNCTION aimroute.delivery_give_back(bigint, integer) IS
    'What a delivery worker asked to stop runs for each claimed message it has not sent: due again at once, as the same attempt. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_give_back(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_give_back(bigint, integer) TO aimroute_admin;

--
-- delivery_record: the outcome of one attempt, as the worker saw it:
-- libcurl's result code, the server's reply code (SMTP or HTTP, 0 when
-- there was none) and its text.  Decides delivered, bounce, retry or
-- failure; returns the outcome recorded.
--
-- When recording raises (SPEC section 8), the message was sent all the
-- same: it is set aside at step 'record' (aimroute.set_aside_items) with
-- what the send came to, stays 'sending', and is never claimed for
-- sending again; delivery_claim records that outcome again when its retry
-- time comes.  Returns NULL then.
--
CREATE FUNCTION aimroute.delivery_record(message_id bigint, attempt integer, curl_code integer,
                                         response_code integer, response text,
                                         smtp_command text DEFAULT NULL)
RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m aimroute.outbox;
    s aimroute.settings;
    smtp boolean;
    recipient_reply boolean;
    v_outcome text;
    detail text := left(response, 2000);
    e_code text;
    e_message text;
    e_detail text;
    e_hint text;
    e_context text;
BEGIN
    SELECT * INTO m FROM aimroute.outbox o WHERE o.message_id = delivery_record.message_id FOR UPDATE;
    IF NOT FOUND OR m.status <> 'sending' OR m.attempts <> delivery_record.attempt THEN
        -- Deleted, or recorded already: nothing to do, nothing to record again.
        DELETE FROM aimroute.set_aside_items x
         WHERE x.kind = 'message' AND x.item_id = delivery_record.message_id AND x.step = 'record'
           AND (x.send_result ->> 'attempt')::integer = delivery_record.attempt;
        RETURN NULL;
    END IF;
    BEGIN
        DELETE FROM aimroute.set_aside_items x WHERE x.kind = 'message' AND x.item_id = m.message_id;
        SELECT * INTO s FROM aimroute.settings;
        smtp := m.method = 'email' OR m.role = 'adf_email';
        IF smtp THEN
            -- Only the recipient's own replies are bounces: to RCPT, or to the
            -- end of DATA (one recipient a message).  A refusal of the sender
            -- or of the login says nothing about the contact.
            recipient_reply := coalesce(upper(smtp_command) IN ('RCPT', 'DATA'), true);
            v_outcome := CASE WHEN curl_code = 0 THEN 'Delivered'
                            WHEN recipient_reply AND response_code IN (550, 551, 553) THEN 'Hard Bounce'
                            WHEN recipient_reply AND response_code IN (452, 552) THEN 'Soft Bounce'
                            WHEN response_code BETWEEN 500 AND 599 THEN 'Failed'
                            ELSE 'Will retry' END;
        ELSE
            v_outcome := CASE WHEN curl_code = 0 AND response_code BETWEEN 200 AND 299 THEN 'Delivered'
                            ELSE 'Will retry' END;
        END IF;
        IF v_outcome = 'Will retry' AND m.attempts > cardinality(s.delivery_retry_schedule) THEN
            v_outcome := 'Failed';
            detail := format('%s (gave up after %s attempts)', detail, m.attempts);
        END IF;

        IF smtp AND curl_code <> 0 AND smtp_command IS NOT NULL THEN
            detail := format('%s (after %s)', detail, upper(smtp_command));
        END IF;
        INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response_code, response)
        VALUES (m.message_id, m.attempts, v_outcome, nullif(response_code, 0), detail);
        IF v_outcome = 'Will retry' THEN
            UPDATE aimroute.outbox o
               SET status = 'queued', outcome = 'Will retry', last_response = detail, last_attempt_at = clock_timestamp(),
                   due_at = clock_timestamp() + s.delivery_retry_schedule[m.attempts]
             WHERE o.message_id = m.message_id;
            RETURN v_outcome;
        END IF;
        UPDATE aimroute.outbox o
           SET status = CASE WHEN v_outcome = 'Delivered' THEN 'delivered' ELSE 'failed' END,
               outcome = v_outcome, last_response = detail, finished_at = clock_timestamp(),
               last_attempt_at = clock_timestamp()
         WHERE o.message_id = m.message_id;
        IF v_outcome IN ('Hard Bounce', 'Soft Bounce') THEN
            PERFORM aimroute.suppress_address(m.recipient, v_outcome);
        END IF;
        IF m.purpose = 'lead' THEN
            PERFORM aimroute.delivery_settle(m.notification_id);
        END IF;
        RETURN v_outcome;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
            e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT, e_context = PG_EXCEPTION_CONTEXT;
    END;
    PERFORM aimroute.set_aside('message', m.message_id, m.lead_id, 'record', e_code, e_message, e_detail,
                               e_hint, e_context, NULL,
                               jsonb_build_object('attempt', m.attempts, 'curl_code', curl_code,
                                                  'response_code', response_code, 'response', response,
                                                  'smtp_command', smtp_command));
    -- Shown in delivery_attempts, when the log takes it.
    BEGIN
        INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
        VALUES (m.message_id, m.attempts, 'Set aside',
                left('sent, but recording its outcome failed: ' || e_message, 2000));
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION aimroute.delivery_record(bigint, integer, integer, integer, text, text) IS
    'Records the outcome of one delivery attempt (libcurl code, server reply code and text, the SMTP command replied to): delivered, hard or soft bounce (the contact is suppressed), a retry on the schedule of settings.delivery_retry_schedule, or failure. Internal: the delivery worker calls it.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_record(bigint, integer, integer, integer, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_record(bigint, integer, integer, integer, text, text) TO aimroute_admin;

--
-- delivery_record_batch: the outcomes of several attempts, as the worker
-- saw them: delivery_record's arguments as arrays, one element a message.
-- The plain deliveries -- a message still being sent at that attempt and
-- accepted (libcurl's code 0; over HTTP a 2xx reply too) -- are recorded
-- set-based, as delivery_record records each: the attempt logged
-- Delivered, the message delivered, and each notice concerned settled
-- (delivery_settle, for the notices whose delivery is over and failed in
-- part; each notice locked first, as delivery_settle locks it).  Every
-- other outcome (a bounce, a retry, a failure, a message recorded already)
-- goes through delivery_record, one by one, and so do the deliveries when
-- recording them together raises.  Returns how many were recorded
-- together.
--
CREATE FUNCTION aimroute.delivery_record_batch(message_ids bigint[], attempts integer[], curl_codes integer[],
                                               response_codes integer[], responses text[],
                                               smtp_commands text[])
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    -- A few messages, each looked up by key (as in delivery_claim).
    SET enable_hashjoin = off
    SET enable_mergejoin = off
    SET enable_seqscan = off
    -- A path turned off costs 1e10: the plan would pass every JIT
    -- threshold, and each statement would be compiled.
    SET jit = off
AS $$
DECLARE
    delivered bigint[] := '{}';
    notices bigint[];
BEGIN
    -- A message given twice is left to delivery_record, which records it once.
    IF cardinality(message_ids) = (SELECT count(DISTINCT x) FROM unnest(message_ids) x) THEN
        BEGIN
            delivered := ARRAY(
                SELECT o.message_id
                  FROM ROWS FROM (unnest(message_ids), unnest(attempts), unnest(curl_codes), unnest(response_codes))
                       AS r (message_id, attempt, curl_code, response_code)
                  JOIN aimroute.outbox o ON o.message_id = r.message_id
                 WHERE o.status = 'sending' AND o.attempts = r.attempt AND r.curl_code = 0
                   AND (o.method = 'email' OR o.role = 'adf_email' OR r.response_code BETWEEN 200 AND 299)
                 ORDER BY o.message_id
                   FOR UPDATE OF o);
            IF cardinality(delivered) > 0 THEN
                DELETE FROM aimroute.set_aside_items x WHERE x.kind = 'message' AND x.item_id = ANY (delivered);
                INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response_code, response)
                SELECT r.message_id, r.attempt, 'Delivered', nullif(r.response_code, 0), left(r.response, 2000)
                  FROM ROWS FROM (unnest(message_ids), unnest(attempts), unnest(response_codes), unnest(responses))
                       WITH ORDINALITY AS r (message_id, attempt, response_code, response, n)
                 WHERE r.message_id = ANY (delivered)
                 ORDER BY r.n;
                WITH done AS (
                    UPDATE aimroute.outbox o
                       SET status = 'delivered', outcome = 'Delivered', last_response = left(r.response, 2000),
                           finished_at = clock_timestamp(), last_attempt_at = clock_timestamp()
                      FROM ROWS FROM (unnest(message_ids), unnest(responses)) AS r (message_id, response)
                     WHERE o.message_id = r.message_id AND o.message_id = ANY (delivered)
                    RETURNING o.notification_id, o.purpose)
                SELECT array_agg(DISTINCT d.notification_id) INTO notices FROM done d WHERE d.purpose = 'lead';
                IF cardinality(notices) > 0 THEN
                    PERFORM FROM aimroute.lead_notifications n
                      WHERE n.notification_id = ANY (notices)
                      ORDER BY n.notification_id
                        FOR UPDATE;
                    -- With the locks held, a statement of its own sees what
                    -- others committed meanwhile, as delivery_settle does;
                    -- it has something to do when no message of the notice
                    -- is left to send and one failed.  (Counted with FILTER,
                    -- as there: a condition on status would let the planner
                    -- scan outbox_due_idx, every message still queued.)
                    PERFORM aimroute.delivery_settle(n.notification_id)
                       FROM aimroute.lead_notifications n
                      CROSS JOIN LATERAL (
                          SELECT count(*) FILTER (WHERE o.status IN ('queued', 'sending')) AS open_count,
                                 count(*) FILTER (WHERE o.status = 'failed') AS failed
                            FROM aimroute.outbox o
                           WHERE o.notification_id = n.notification_id AND o.purpose = 'lead') c
                      WHERE n.notification_id = ANY (notices) AND n.failure_notice_at IS NULL
                        AND c.open_count = 0 AND c.failed > 0;
                END IF;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE LOG 'aimroute: recording % deliveries together failed (%), recording them one by one',
                      cardinality(delivered), SQLERRM;
            delivered := '{}';
        END;
    END IF;
    PERFORM aimroute.delivery_record(r.message_id, r.attempt, r.curl_code, r.response_code, r.response, r.smtp_command)
       FROM ROWS FROM (unnest(message_ids), unnest(attempts), unnest(curl_codes), unnest(response_codes),
                       unnest(responses), unnest(smtp_commands))
            WITH ORDINALITY AS r (message_id, attempt, curl_code, response_code, response, smtp_command, n)
      WHERE r.message_id <> ALL (delivered)
      ORDER BY r.n;
    RETURN cardinality(delivered);
END
$$;
COMMENT ON FUNCTION aimroute.delivery_record_batch(bigint[], integer[], integer[], integer[], text[], text[]) IS
    'Records the outcomes of several delivery attempts (delivery_record''s arguments as arrays, one element a message): the deliveries together, set-based, every other outcome through delivery_record; returns how many were recorded together. Internal: the delivery worker calls it.';
REVOKE EXECUTE ON FUNCTION aimroute.delivery_record_batch(bigint[], integer[], integer[], integer[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.delivery_record_batch(bigint[], integer[], integer[], integer[], text[], text[]) TO aimroute_admin;

--
-- delivery_next_due: seconds until the earliest due message (0 when one
-- is due, NULL when none is queued); the worker sleeps that long at most.
-- A set-aside message counts at its retry time (at its claim step, not
-- before its own due time either), so that the worker does not wake for it
-- every second.
--
CREATE FUNCTION aimroute.delivery_next_due() RETURNS double precision
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    -- Not greatest(0, ...) alone: it ignores a NULL, and no message would
    -- read as one due now.
    SELECT CASE WHEN x.next_at IS NOT NULL
                THEN greatest(0, extract(epoch FROM x.next_at - clock_timestamp()))::float8 END
      FROM (SELECT least(
                (SELECT o.due_at FROM aimroute.outbox o
                  WHERE o.status IN ('queued', 'sending')
                    AND NOT EXISTS (SELECT FROM aimroute.set_aside_items f
                                     WHERE f.kind = 'message' AND f.item_id = o.message_id)
                  ORDER BY o.due_at LIMIT 1),
                (SELECT min(CASE WHEN f.step = 'record' THEN f.retry_at ELSE greatest(o.due_at, f.retry_at) END)
                   FROM aimroute.set_aside_items f
                   JOIN aimroute.outbox o ON o.message_id = f.item_id
                  WHERE f.kind = 'message' AND o.status IN ('queued', 'sending')),
                (SELECT min(f.retry_at) FROM aimroute.set_aside_items f WHERE f.kind = 'notice')) AS next_at) x
$$;

--
-- queue_daily_recap: once a day, at or after settings.daily_recap_hour in
-- settings.timezone, one email to each daily notification contact listing
-- the leads whose delivery was found to have failed, wholly or partly, on
-- the prior day (region contacts: their region's; a dealer's contact: that
-- dealer's).  A lead is in the recap of the day its last retry ran out,
-- so one that fails late in the day is not missed.  Days the worker did
-- not run at the hour are caught up, a week back at most.  Returns the
-- messages queued; each day is recapped once, and a contact with nothing
-- to report gets no email.
--
CREATE FUNCTION aimroute.queue_daily_recap(at timestamptz DEFAULT clock_timestamp())
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s aimroute.settings;
    local_now timestamp;
    recap_day date;
    last_day date;
    queued integer;
    total integer := 0;
    lead_count integer;
BEGIN
    SELECT * INTO s FROM aimroute.settings;
    local_now := queue_daily_recap.at AT TIME ZONE s.timezone;
    IF extract(hour FROM local_now) < s.daily_recap_hour THEN
        RETURN 0;
    END IF;
    SELECT max(r.day) INTO last_day FROM aimroute.daily_recaps r;
    FOR recap_day IN
        SELECT d::date FROM generate_series(greatest(last_day + 1, local_now::date - 7),
                                            local_now::date - 1, interval '1 day') AS d
    LOOP
        INSERT INTO aimroute.daily_recaps (day) VALUES (recap_day) ON CONFLICT (day) DO NOTHING;
        CONTINUE WHEN NOT FOUND;

        INSERT INTO aimroute.outbox (purpose, method, role, contact_id, dealer_number, recipient, subject, body, body_html)
        SELECT 'daily recap', 'email', 'Recap', r.contact_id, r.dealer_number, r.email,
               x.subject, x.text_body, x.html_body
          FROM (SELECT NULL::bigint AS contact_id, n.email, n.region, NULL::text AS dealer_number
                  FROM aimroute.notification_contacts n
                 WHERE n.contact_type = 'Lead Delivery Notification Daily'
                UNION
                SELECT c.contact_id, c.email, NULL, c.dealer_number
                  FROM aimroute.dealer_contacts c
                 WHERE c.email IS NOT NULL AND 'Lead Delivery Notification Daily' = ANY (c.contact_types)) AS r
         CROSS JOIN LATERAL aimroute.daily_recap_content(recap_day, r.region, r.dealer_number, s) AS x
         WHERE x.leads > 0;
        GET DIAGNOSTICS queued = ROW_COUNT;
        SELECT count(DISTINCT i.lead_id) INTO lead_count FROM aimroute.delivery_issues i
         WHERE (i.failed_at AT TIME ZONE s.timezone)::date = recap_day;
        UPDATE aimroute.daily_recaps r SET leads = lead_count, messages = queued WHERE r.day = recap_day;
        total := total + queued;
    END LOOP;
    IF total > 0 THEN
        PERFORM aimroute.wake_delivery_worker();
    END IF;
    RETURN total;
END
$$;
COMMENT ON FUNCTION aimroute.queue_daily_recap(timestamptz) IS
    'Queues the daily recap of the prior day''s failing leads to every ''Lead Delivery Notification Daily'' contact, once a day at or after settings.daily_recap_hour (settings.timezone); returns the messages queued. The delivery worker calls it every round.';
REVOKE EXECUTE ON FUNCTION aimroute.queue_daily_recap(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.queue_daily_recap(timestamptz) TO aimroute_admin;

--
-- The contract's functions.
--

--
-- send_lead: send a lead to its dealer again (a new notice, with every
-- current contact and integration).  Returns the messages queued.
--
CREATE FUNCTION aimroute.send_lead(lead_id bigint)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l aimroute.leads;
    nid bigint;
BEGIN
    SELECT * INTO l FROM aimroute.leads x WHERE x.lead_id = send_lead.lead_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lead % does not exist', send_lead.lead_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT l.send_to_dealer THEN
        RAISE EXCEPTION 'lead % is not to be sent to its dealer (send_to_dealer is false)', l.lead_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('To send it all the same: UPDATE aimroute.leads SET send_to_dealer = true WHERE lead_id = %s; then call send_lead again.', l.lead_id);
    END IF;
    nid := aimroute.queue_lead_delivery(l.lead_id, l.dealer_number, 'Resent');
    RETURN (SELECT n.messages FROM aimroute.lead_notifications n WHERE n.notification_id = nid);
END
$$;
COMMENT ON FUNCTION aimroute.send_lead(bigint) IS
    'Sends a lead to its dealer again: queues a new notice to every current Leads contact, mobile and active CRM integration; returns how many messages were queued.';
REVOKE EXECUTE ON FUNCTION aimroute.send_lead(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.send_lead(bigint) TO aimroute_admin, aimroute_region, aimroute_dealer;

--
-- Bounces (docs/delivery.md, Bounces).  The suppression list is by
-- address: a bounce of an address, however it arrived -- the SMTP reply
-- (delivery_record), record_bounce, a DSN (record_dsn), a provider's event
-- (record_delivery_event) -- goes through suppress_address, which gives
-- every dealer contact with that address the bounce status.  The claim
-- reads only the contact's delivery_status.  Resetting one contact to
-- Active lifts it for the address (aimroute.dealer_contacts_lift_address,
-- 070_contacts.sql).
--

--
-- suppress_address: every dealer contact with this address, of any dealer
-- and in any letter case, takes the bounce status; a soft bounce does not
-- replace a hard one.  Returns the contacts changed.  Internal: every
-- bounce path calls it.
--
CREATE FUNCTION aimroute.suppress_address(address text, status text)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    changed integer;
BEGIN
    IF status IS NULL OR status NOT IN ('Hard Bounce', 'Soft Bounce') THEN
        RAISE EXCEPTION 'invalid suppression status %', coalesce(quote_literal(status), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The status is ''Hard Bounce'' or ''Soft Bounce''.';
    END IF;
    UPDATE aimroute.dealer_contacts c SET delivery_status = suppress_address.status
     WHERE lower(c.email) = lower(btrim(suppress_address.address))
       AND c.delivery_status <> 'Hard Bounce' AND c.delivery_status <> suppress_address.status;
    GET DIAGNOSTICS changed = ROW_COUNT;
    RETURN changed;
END
$$;
COMMENT ON FUNCTION aimroute.suppress_address(text, text) IS
    'The suppression list is by address: every dealer contact with this address (any dealer, any letter case) takes the status ''Hard Bounce'' or ''Soft Bounce'' (a soft bounce does not replace a hard one); returns the contacts changed. Internal: every bounce path calls it.';
REVOKE EXECUTE ON FUNCTION aimroute.suppress_address(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.suppress_address(text, text) TO aimroute_admin;

--
-- record_message_bounce: a bounce reported after the message was sent (a
-- DSN, a provider's event, record_bounce).  The message becomes failed
-- with the bounce as its outcome -- a Delivered message becomes the
-- bounce -- with an attempt row, its notice is settled (failure notices,
-- delivery_issues) and its address suppressed.  Returns false, changing
-- nothing, for a message that was cancelled, is not an email, or has that
-- bounce (or a hard one) recorded already.  Internal.
--
CREATE FUNCTION aimroute.record_message_bounce(message_id bigint, status text, detail text)
RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m aimroute.outbox;
BEGIN
    SELECT * INTO m FROM aimroute.outbox o WHERE o.message_id = record_message_bounce.message_id FOR UPDATE;
    IF NOT FOUND OR m.status = 'cancelled' OR NOT (m.method = 'email' OR m.role = 'adf_email') THEN
        RETURN false;
    END IF;
    PERFORM aimroute.suppress_address(m.recipient, status);
    IF m.status = 'failed' AND m.outcome IN ('Hard Bounce', status) THEN
        RETURN false;
    END IF;
    detail := left(coalesce(detail, 'no detail given'), 2000);
    INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
    VALUES (m.message_id, m.attempts, status, detail);
    UPDATE aimroute.outbox o
       SET status = 'failed', outcome = record_message_bounce.status, last_response = detail,
           last_attempt_at = clock_timestamp(), finished_at = coalesce(o.finished_at, clock_timestamp())
     WHERE o.message_id = m.message_id;
    IF m.purpose = 'lead' THEN
        PERFORM aimroute.delivery_settle(m.notification_id);
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION aimroute.record_message_bounce(bigint, text, text) IS
    'Records a bounce reported after the message was sent: the message becomes failed with outcome ''Hard Bounce'' or ''Soft Bounce'' (a Delivered one too), with an attempt row; its notice is settled and its address suppressed (aimroute.suppress_address). Returns false for a message cancelled, not an email, or with that bounce recorded already. Internal.';
REVOKE EXECUTE ON FUNCTION aimroute.record_message_bounce(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.record_message_bounce(bigint, text, text) TO aimroute_admin;

--
-- record_bounce: a bounce that a mail provider reported after accepting
-- the message.  Every contact with that address gets the bounce status
-- (aimroute.suppress_address); the latest message delivered to the address
-- in the last 30 days is recorded as bounced.  Returns the number of
-- contacts changed.
--
CREATE FUNCTION aimroute.record_bounce(email text, kind text, detail text)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status text;
    changed integer;
    latest bigint;
BEGIN
    v_status := CASE lower(btrim(kind))
                  WHEN 'hard' THEN 'Hard Bounce' WHEN 'hard bounce' THEN 'Hard Bounce'
                  WHEN 'soft' THEN 'Soft Bounce' WHEN 'soft bounce' THEN 'Soft Bounce' END;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'invalid bounce kind %', coalesce(quote_literal(kind), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'kind is ''hard'' (the address does not exist) or ''soft'' (a full inbox, for example).';
    END IF;
    IF email IS NULL OR btrim(email) = '' THEN
        RAISE EXCEPTION 'record_bounce needs the email address that bounced'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the recipient address the mail provider reported, such as sales@dealer.example.com.';
    END IF;
    changed := aimroute.suppress_address(record_bounce.email, v_status);

    SELECT o.message_id INTO latest FROM aimroute.outbox o
     WHERE lower(o.recipient) = lower(btrim(record_bounce.email)) AND o.status = 'delivered'
       AND o.finished_at > clock_timestamp() - interval '30 days'
     ORDER BY o.finished_at DESC LIMIT 1;
    IF FOUND THEN
        PERFORM aimroute.record_message_bounce(latest, v_status,
                                               'bounced after delivery: ' || coalesce(detail, 'no detail given'));
    END IF;
    IF changed = 0 AND latest IS NULL THEN
        RAISE NOTICE 'no contact and no recent message has the address %', btrim(record_bounce.email);
    END IF;
    RETURN changed;
END
$$;
COMMENT ON FUNCTION aimroute.record_bounce(text, text, text) IS
    'Takes a bounce reported by a mail provider (kind ''hard'' or ''soft''): every contact with the address is suppressed, and the latest message delivered to it is recorded as bounced. Returns the contacts changed.';
REVOKE EXECUTE ON FUNCTION aimroute.record_bounce(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.record_bounce(text, text, text) TO aimroute_admin;

--
-- DSNs (RFC 3464).  mime_fields: the header fields of a block of text
-- (a message's or a MIME part's headers, a group of DSN fields), folded
-- lines unfolded, names in lower case, in order.  LF line ends.
--
CREATE FUNCTION aimroute.mime_fields(block text)
RETURNS TABLE (name text, value text)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT lower(f.m[1]), btrim(f.m[2], E' \t')
      FROM regexp_matches(regexp_replace(block, E'\n[ \t]+', ' ', 'g'),
                          E'^([!-9;-~]+)[ \t]*:[ \t]*(.*)$', 'gn') AS f (m)
$$;
COMMENT ON FUNCTION aimroute.mime_fields(text) IS
    'The header fields of a block of text (LF line ends): folded lines unfolded, names in lower case. Internal: record_dsn reads DSNs with it.';

--
-- record_dsn: one raw DSN, as the mail server mailed it to the bounce
-- address.  The message it reports on is named by the VERP address it
-- was sent to (settings.bounce_address, both halves of the key checked),
-- or else by the Message-ID of the returned headers.  Per recipient
-- (message/delivery-status): Action failed with Status 5.x.x is a Hard
-- Bounce, except 5.2.2 (mailbox full), which is soft, as mail providers
-- treat it; with 4.x.x a Soft Bounce; Action delayed is an attempt row
-- 'Delayed', not a bounce; delivered, relayed and expanded change nothing.
-- Only a recipient block that names the message's own recipient
-- (Final-Recipient or Original-Recipient) counts.  Returns the bounces
-- recorded.  Not a DSN at all: an ERROR; a DSN of no message of ours, or
-- with nothing to record: 0, with a WARNING or NOTICE saying why.
--
CREATE FUNCTION aimroute.record_dsn(message text)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    raw text;
    head text;
    body text;
    ctype text;
    boundary text;
    part text;
    p_head text;
    p_body text;
    p_type text;
    status_text text;
    returned text;
    m aimroute.outbox;
    k record;
    found_by text;
    msgid text;
    blk text;
    reporter text;
    v_action text;
    v_status text;
    v_diag text;
    v_final text;
    v_original text;
    v_kind text;
    detail text;
    recorded integer := 0;
    pos integer;
BEGIN
    IF message IS NULL OR btrim(message) = '' THEN
        RAISE EXCEPTION 'record_dsn needs the DSN'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass one whole raw DSN (RFC 3464), headers included, as the mail server mailed it to the bounce address.';
    END IF;
    raw := replace(replace(message, E'\r\n', E'\n'), E'\r', E'\n');
    -- An mbox "From " line, as a pipe from a mail server may start with.
    raw := regexp_replace(raw, E'^From [^\n]*\n', '');
    pos := strpos(raw, E'\n\n');
    IF pos = 0 THEN
        head := raw;
        body := '';
    ELSE
        head := left(raw, pos - 1);
        body := substr(raw, pos + 2);
    END IF;
    SELECT f.value INTO ctype FROM aimroute.mime_fields(head) f WHERE f.name = 'content-type' LIMIT 1;
    IF ctype IS NULL OR lower(ctype) !~ '^multipart/report\M' THEN
        RAISE EXCEPTION 'not a delivery status notification: its Content-Type is %, not multipart/report',
                        coalesce(split_part(ctype, ';', 1), 'missing')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'record_dsn takes one whole raw DSN (RFC 3464: multipart/report with a message/delivery-status part), headers included, as the mail server mailed it to the bounce address.';
    END IF;
    boundary := coalesce(substring(ctype FROM '(?i)boundary[ \t]*=[ \t]*"([^"]+)"'),
                         substring(ctype FROM '(?i)boundary[ \t]*=[ \t]*([^"; \t]+)'));
    IF boundary IS NULL THEN
        RAISE EXCEPTION 'not a delivery status notification: its multipart/report Content-Type has no boundary'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the DSN as the mail server sent it, with its headers unchanged.';
    END IF;
    FOREACH part IN ARRAY regexp_split_to_array(
        body, '(^|\n)--' || regexp_replace(boundary, '([^A-Za-z0-9])', '\\\1', 'g') || E'(--)?[ \t]*(\n|$)')
    LOOP
        IF left(part, 1) = E'\n' THEN
            p_head := '';
            p_body := substr(part, 2);
        ELSE
            pos := strpos(part, E'\n\n');
            CONTINUE WHEN pos = 0;
            p_head := left(part, pos - 1);
            p_body := substr(part, pos + 2);
        END IF;
        SELECT lower(btrim(split_part(f.value, ';', 1))) INTO p_type
          FROM aimroute.mime_fields(p_head) f WHERE f.name = 'content-type' LIMIT 1;
        IF EXISTS (SELECT FROM aimroute.mime_fields(p_head) f
                    WHERE f.name = 'content-transfer-encoding' AND lower(f.value) = 'base64') THEN
            BEGIN
                p_body := convert_from(decode(regexp_replace(p_body, '[^A-Za-z0-9+/=]', '', 'g'), 'base64'), 'UTF8');
                p_body := replace(p_body, E'\r\n', E'\n');
            EXCEPTION WHEN OTHERS THEN
                CONTINUE;
            END;
        END IF;
        IF p_type IN ('message/delivery-status', 'message/global-delivery-status') AND status_text IS NULL THEN
            status_text := p_body;
        ELSIF p_type IN ('text/rfc822-headers', 'message/rfc822', 'message/global', 'message/global-headers')
              AND returned IS NULL THEN
            -- The returned message's headers, up to its first blank line.
            returned := split_part(p_body, E'\n\n', 1);
        END IF;
    END LOOP;
    IF status_text IS NULL THEN
        RAISE EXCEPTION 'not a delivery status notification: it has no message/delivery-status part'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'record_dsn takes RFC 3464 DSNs (multipart/report; report-type=delivery-status); a bounce in plain text can be recorded with aimroute.record_bounce(email, kind, detail).';
    END IF;

    -- The message: by its VERP address (in the DSN's headers, in the
    -- returned headers' Return-Path, or anywhere in the report), both
    -- halves of the key checked; else by the returned Message-ID.
    FOR k IN SELECT x.v[1]::bigint AS id, x.v[1] || '.' || x.v[2] AS key
               FROM regexp_matches(concat_ws(E'\n', head, returned, status_text),
                                   '\+([0-9]{1,18})\.([0-9]{20})@', 'g') AS x (v)
    LOOP
        SELECT * INTO m FROM aimroute.outbox o WHERE o.message_id = k.id AND aimroute.verp_key(o) = k.key;
        IF FOUND THEN
            found_by := 'VERP';
            EXIT;
        END IF;
    END LOOP;
    IF found_by IS NULL AND returned IS NOT NULL THEN
        SELECT f.value INTO msgid FROM aimroute.mime_fields(returned) f WHERE f.name = 'message-id' LIMIT 1;
        msgid := '<' || btrim(msgid, ' <>') || '>';
        IF msgid ~ '^<aimroute\.[0-9]{1,18}\.' THEN
            SELECT * INTO m FROM aimroute.outbox o
             WHERE o.message_id = substring(msgid FROM '^<aimroute\.([0-9]+)\.')::bigint
               AND lower(o.message_key) = lower(msgid);
            IF FOUND THEN
                found_by := 'Message-ID';
            END IF;
        END IF;
    END IF;
    IF found_by IS NULL THEN
        RAISE WARNING 'the DSN names no message aimroute sent: nothing recorded'
            USING DETAIL = format('No VERP address of settings.bounce_address with a key of an outbox message, and %s.',
                                  coalesce('the returned Message-ID ' || msgid || ' is no message''s key',
                                           'no returned headers with a Message-ID')),
                  HINT = 'Set settings.bounce_address so that DSNs name their message; a bounce of a known address can be recorded with aimroute.record_bounce(email, kind, detail).';
        RETURN 0;
    END IF;

    SELECT f.value INTO reporter
      FROM aimroute.mime_fields(split_part(btrim(status_text, E'\n'), E'\n\n', 1)) f
     WHERE f.name = 'reporting-mta' LIMIT 1;
    FOREACH blk IN ARRAY regexp_split_to_array(btrim(status_text, E' \t\n'), E'\n([ \t]*\n)+') LOOP
        SELECT max(f.value) FILTER (WHERE f.name = 'final-recipient'),
               max(f.value) FILTER (WHERE f.name = 'original-recipient'),
               lower(max(f.value) FILTER (WHERE f.name = 'action')),
               max(f.value) FILTER (WHERE f.name = 'status'),
               max(f.value) FILTER (WHERE f.name = 'diagnostic-code')
          INTO v_final, v_original, v_action, v_status, v_diag
          FROM aimroute.mime_fields(blk) f;
        CONTINUE WHEN v_final IS NULL;
        -- Only a report on the message's own recipient counts.
        IF lower(m.recipient) NOT IN (lower(btrim(substring(v_final FROM ';(.*)$'), ' <>')),
                                      coalesce(lower(btrim(substring(v_original FROM ';(.*)$'), ' <>')), '')) THEN
            RAISE WARNING 'the DSN reports on %, but message % went to %: not recorded', v_final, m.message_id, m.recipient;
            CONTINUE;
        END IF;
        v_status := substring(v_status FROM '^[ \t]*([245]\.[0-9]{1,3}\.[0-9]{1,3})');
        detail := concat_ws(' ', v_status, v_diag) || format(' (DSN%s, message found by %s)',
                                                             ', ' || reporter, found_by);
        IF v_action = 'delayed' THEN
            INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
            VALUES (m.message_id, m.attempts, 'Delayed', left('delayed, not a bounce: ' || detail, 2000));
            CONTINUE;
        ELSIF v_action IS DISTINCT FROM 'failed' THEN
            RAISE NOTICE 'the DSN says % for message %: nothing to record', coalesce(v_action, 'no Action'), m.message_id;
            CONTINUE;
        END IF;
        v_kind := CASE WHEN v_status IN ('5.2.2', '4.2.2') THEN 'Soft Bounce'
                       WHEN v_status LIKE '5.%' THEN 'Hard Bounce'
                       WHEN v_status LIKE '4.%' THEN 'Soft Bounce'
                       -- No usable Status: the SMTP reply code of the Diagnostic-Code.
                       WHEN v_diag ~* '^smtp[ \t]*;[ \t]*(452|552)' THEN 'Soft Bounce'
                       WHEN v_diag ~* '^smtp[ \t]*;[ \t]*5' THEN 'Hard Bounce'
                       WHEN v_diag ~* '^smtp[ \t]*;[ \t]*4' THEN 'Soft Bounce' END;
        IF v_kind IS NULL THEN
            RAISE WARNING 'the DSN reports a failure of message % with no Status: not recorded', m.message_id;
            CONTINUE;
        END IF;
        IF aimroute.record_message_bounce(m.message_id, v_kind, 'bounced after delivery: ' || detail) THEN
            recorded := recorded + 1;
        ELSE
            RAISE NOTICE 'message % has this bounce recorded already (or was cancelled)', m.message_id;
        END IF;
    END LOOP;
    RETURN recorded;
END
$$;
COMMENT ON FUNCTION aimroute.record_dsn(text) IS
    'Records one raw DSN (RFC 3464) against the message it names (its VERP address, or the returned Message-ID) and that message''s address: Action failed with Status 5.x.x is a Hard Bounce, 5.2.2 and 4.x.x a Soft Bounce; Action delayed an attempt row ''Delayed''. Returns the bounces recorded. Not a DSN: an error; a DSN of no message of ours: 0 with a WARNING.';
REVOKE EXECUTE ON FUNCTION aimroute.record_dsn(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.record_dsn(text) TO aimroute_admin;

--
-- delivery_event_reports: one provider webhook event as what it reports,
-- one row per recipient: the address, the kind ('Hard Bounce', 'Soft
-- Bounce', 'Complaint', 'Delivered', 'Delayed') and the detail in words.
-- Events that report none of these (opens, clicks, 'processed') give no
-- row.  Internal: record_delivery_event calls it; docs/delivery.md has the
-- rules of each provider.
--
CREATE FUNCTION aimroute.delivery_event_reports(provider text, event jsonb)
RETURNS TABLE (address text, kind text, detail text)
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d jsonb;
    ev text;
    code text;
BEGIN
    IF jsonb_typeof(event) IS DISTINCT FROM 'object' THEN
        RETURN;
    END IF;
    IF provider = 'sendgrid' THEN
        ev := lower(event ->> 'event');
        address := event ->> 'email';
        code := event ->> 'status';
        detail := concat_ws(' ', code, coalesce(event ->> 'reason', event ->> 'response'));
        kind := CASE WHEN ev IN ('bounce', 'blocked') AND (ev = 'blocked' OR lower(event ->> 'type') = 'blocked') THEN 'Soft Bounce'
                     WHEN ev = 'bounce' AND (code LIKE '4.%' OR code = '5.2.2') THEN 'Soft Bounce'
                     WHEN ev IN ('bounce', 'dropped') THEN 'Hard Bounce'
                     WHEN ev = 'spamreport' THEN 'Complaint'
                     WHEN ev = 'delivered' THEN 'Delivered'
                     WHEN ev = 'deferred' THEN 'Delayed' END;
        IF ev IN ('blocked') OR lower(event ->> 'type') = 'blocked' THEN
            detail := 'blocked: ' || detail;
        END IF;
        IF kind IS NOT NULL THEN
            RETURN NEXT;
        END IF;
    ELSIF provider = 'mailgun' THEN
        d := coalesce(event -> 'event-data', event);
        ev := lower(d ->> 'event');
        address := d ->> 'recipient';
        code := d -> 'delivery-status' ->> 'code';
        detail := concat_ws(' ', code, d -> 'delivery-status' ->> 'message',
                            nullif(d -> 'delivery-status' ->> 'description', ''), d ->> 'reason');
        kind := CASE WHEN ev = 'failed' AND lower(d ->> 'severity') = 'temporary' THEN 'Delayed'
                     WHEN ev = 'failed' AND (code IN ('452', '552') OR detail ~ '\m5\.2\.2\M') THEN 'Soft Bounce'
                     WHEN ev = 'failed' THEN 'Hard Bounce'
                     WHEN ev = 'complained' THEN 'Complaint'
                     WHEN ev = 'delivered' THEN 'Delivered' END;
        IF kind IS NOT NULL THEN
            RETURN NEXT;
        END IF;
    ELSIF provider = 'ses' THEN
        ev := coalesce(event ->> 'notificationType', event ->> 'eventType');
        IF ev = 'Bounce' THEN
            RETURN QUERY
                SELECT r ->> 'emailAddress',
                       CASE WHEN event -> 'bounce' ->> 'bounceType' = 'Permanent' AND r ->> 'status' IS DISTINCT FROM '5.2.2'
                            THEN 'Hard Bounce' ELSE 'Soft Bounce' END,
                       concat_ws(' ', r ->> 'status', r ->> 'diagnosticCode',
                                 format('(%s %s)', event -> 'bounce' ->> 'bounceType', event -> 'bounce' ->> 'bounceSubType'))
                  FROM jsonb_array_elements(CASE WHEN jsonb_typeof(event -> 'bounce' -> 'bouncedRecipients') = 'array'
                                                 THEN event -> 'bounce' -> 'bouncedRecipients' ELSE '[]' END) r;
        ELSIF ev = 'Complaint' THEN
            RETURN QUERY
                SELECT r ->> 'emailAddress', 'Complaint',
                       concat_ws(' ', 'complaint', event -> 'complaint' ->> 'complaintFeedbackType')
                  FROM jsonb_array_elements(CASE WHEN jsonb_typeof(event -> 'complaint' -> 'complainedRecipients') = 'array'
                                                 THEN event -> 'complaint' -> 'complainedRecipients' ELSE '[]' END) r;
        ELSIF ev = 'Delivery' THEN
            RETURN QUERY
                SELECT r #>> '{}', 'Delivered', event -> 'delivery' ->> 'smtpResponse'
                  FROM jsonb_array_elements(CASE WHEN jsonb_typeof(event -> 'delivery' -> 'recipients') = 'array'
                                                 THEN event -> 'delivery' -> 'recipients' ELSE '[]' END) r;
        ELSIF ev = 'DeliveryDelay' THEN
            RETURN QUERY
                SELECT r ->> 'emailAddress', 'Delayed',
                       concat_ws(' ', event -> 'deliveryDelay' ->> 'delayType', r ->> 'status', r ->> 'diagnosticCode')
                  FROM jsonb_array_elements(CASE WHEN jsonb_typeof(event -> 'deliveryDelay' -> 'delayedRecipients') = 'array'
                                                 THEN event -> 'deliveryDelay' -> 'delayedRecipients' ELSE '[]' END) r;
        END IF;
    ELSIF provider = 'postmark' THEN
        ev := event ->> 'RecordType';
        address := coalesce(event ->> 'Email', event ->> 'Recipient');
        detail := concat_ws(': ', event ->> 'Type', coalesce(nullif(event ->> 'Details', ''), event ->> 'Description'));
        kind := CASE WHEN ev = 'Bounce' AND event ->> 'Type' IN ('HardBounce', 'BadEmailAddress') THEN 'Hard Bounce'
                     WHEN ev = 'Bounce' AND event ->> 'Type' IN ('SoftBounce', 'Transient', 'DnsError', 'Blocked') THEN 'Soft Bounce'
                     WHEN ev = 'SpamComplaint' OR (ev = 'Bounce' AND event ->> 'Type' = 'SpamComplaint') THEN 'Complaint'
                     WHEN ev = 'Delivery' THEN 'Delivered' END;
        IF kind IS NOT NULL THEN
            RETURN NEXT;
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION aimroute.delivery_event_reports(text, jsonb) IS
    'What one webhook event of sendgrid, mailgun, ses or postmark reports, per recipient: the address, the kind (Hard Bounce, Soft Bounce, Complaint, Delivered, Delayed) and the detail. Internal: record_delivery_event calls it.';

--
-- record_delivery_event: one webhook event of a mail provider (sendgrid,
-- mailgun, ses as an SNS notification, postmark), or an array of them as
-- SendGrid posts them.  The message is the one whose key (VERP address or
-- Message-ID) the event carries and whose recipient is the address
-- reported; else the latest message delivered to the address in the last
-- 30 days.  A bounce is recorded as record_dsn records one (the address is
-- suppressed even when no message is found); a spam complaint suppresses
-- the address as a Hard Bounce and is an attempt row 'Complaint' (the
-- message stays delivered); delivered and delayed events are attempt rows.
-- Returns the reports recorded.
--
CREATE FUNCTION aimroute.record_delivery_event(provider text, event jsonb)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p text := lower(btrim(provider));
    e jsonb := event;
    r record;
    k record;
    mid bigint;
    recorded integer := 0;
    changed boolean;
BEGIN
    IF p IS NULL OR p NOT IN ('sendgrid', 'mailgun', 'ses', 'postmark') THEN
        RAISE EXCEPTION 'unknown mail provider %', coalesce(quote_literal(provider), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'record_delivery_event takes the webhook events of ''sendgrid'', ''mailgun'', ''ses'' (an SNS notification) and ''postmark''; for another provider, call aimroute.record_bounce(email, kind, detail).';
    END IF;
    IF e IS NULL THEN
        RAISE EXCEPTION 'record_delivery_event needs the event'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the JSON body the provider POSTed to the webhook.';
    END IF;
    IF jsonb_typeof(e) = 'array' THEN
        SELECT coalesce(sum(aimroute.record_delivery_event(p, x)), 0) INTO recorded FROM jsonb_array_elements(e) x;
        RETURN recorded;
    END IF;
    IF jsonb_typeof(e) <> 'object' THEN
        RAISE EXCEPTION 'a % event is a JSON object, not %', p, jsonb_typeof(e)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the JSON body the provider POSTed to the webhook (SendGrid: the array, or one of its events).';
    END IF;
    IF p = 'ses' AND e ->> 'Type' = 'SubscriptionConfirmation' THEN
        RAISE WARNING 'an SNS subscription confirmation, not an SES event: nothing recorded'
            USING HINT = format('Confirm the subscription by opening its SubscribeURL once: %s', e ->> 'SubscribeURL');
        RETURN 0;
    END IF;
    IF p = 'ses' AND e ->> 'Type' = 'Notification' THEN
        BEGIN
            e := (e ->> 'Message')::jsonb;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'the SNS notification''s Message is not an SES event in JSON'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Point the SNS topic of the SES configuration set (or identity notifications) at the webhook, without raw message delivery or with it: both are read.';
        END;
    END IF;

    FOR r IN SELECT lower(btrim(x.address, ' <>')) AS address, x.kind, x.detail
               FROM aimroute.delivery_event_reports(p, e) x
    LOOP
        IF r.address IS NULL OR r.address = '' THEN
            RAISE WARNING 'a % % event with no recipient address: not recorded', p, r.kind;
            CONTINUE;
        END IF;
        mid := NULL;
        -- The message whose key the event carries (VERP address or
        -- Message-ID, both halves checked), to this very address.
        FOR k IN SELECT x.v[1]::bigint AS id, x.v[1] || '.' || x.v[2] AS key
                   FROM regexp_matches(event::text, '(?:\+|<?aimroute\.)([0-9]{1,18})\.([0-9]{20})@', 'g') AS x (v)
        LOOP
            SELECT o.message_id INTO mid FROM aimroute.outbox o
             WHERE o.message_id = k.id AND aimroute.verp_key(o) = k.key AND lower(o.recipient) = r.address;
            EXIT WHEN mid IS NOT NULL;
        END LOOP;
        IF mid IS NULL THEN
            SELECT o.message_id INTO mid FROM aimroute.outbox o
             WHERE lower(o.recipient) = r.address AND o.status = 'delivered'
               AND (o.method = 'email' OR o.role = 'adf_email')
               AND o.finished_at > clock_timestamp() - interval '30 days'
             ORDER BY o.finished_at DESC LIMIT 1;
        END IF;
        r.detail := left(coalesce(nullif(r.detail, ''), CASE r.kind WHEN 'Complaint' THEN 'complaint' ELSE 'no detail given' END)
                         || format(' (%s)', p), 2000);

        IF r.kind IN ('Hard Bounce', 'Soft Bounce') THEN
            changed := aimroute.suppress_address(r.address, r.kind) > 0;
            IF mid IS NOT NULL THEN
                changed := aimroute.record_message_bounce(mid, r.kind, 'bounced after delivery: ' || r.detail) OR changed;
            END IF;
        ELSIF r.kind = 'Complaint' THEN
            changed := aimroute.suppress_address(r.address, 'Hard Bounce') > 0;
            IF mid IS NOT NULL AND NOT EXISTS (SELECT FROM aimroute.delivery_attempt_log a
                                                WHERE a.message_id = mid AND a.outcome = 'Complaint') THEN
                INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
                SELECT o.message_id, o.attempts, 'Complaint', 'marked as spam by its reader: ' || r.detail
                  FROM aimroute.outbox o WHERE o.message_id = mid;
                changed := true;
            END IF;
        ELSIF mid IS NOT NULL THEN
            -- Delivered or Delayed: an attempt row; the message keeps its status.
            INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
            SELECT o.message_id, o.attempts, r.kind,
                   CASE r.kind WHEN 'Delayed' THEN 'delayed, not a bounce: ' ELSE 'delivered to the mailbox: ' END || r.detail
              FROM aimroute.outbox o WHERE o.message_id = mid;
            changed := true;
        ELSE
            RAISE NOTICE 'a % % event for %, but no message of aimroute to that address: nothing recorded', p, r.kind, r.address;
            changed := false;
        END IF;
        recorded := recorded + changed::integer;
    END LOOP;
    RETURN recorded;
END
$$;
COMMENT ON FUNCTION aimroute.record_delivery_event(text, jsonb) IS
    'Records one webhook event (or an array of them) of ''sendgrid'', ''mailgun'', ''ses'' (an SNS notification) or ''postmark'': bounces and blocks as Hard or Soft Bounce of the message and its address, spam complaints suppress the address, delivered and delayed events are attempt rows. Returns the reports recorded.';
REVOKE EXECUTE ON FUNCTION aimroute.record_delivery_event(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.record_delivery_event(text, jsonb) TO aimroute_admin;

CREATE FUNCTION aimroute.set_delivery_status_active(contact_id bigint)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE aimroute.dealer_contacts c SET delivery_status = 'Active'
     WHERE c.contact_id = set_delivery_status_active.contact_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'contact % does not exist', set_delivery_status_active.contact_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Look the contact up in aimroute.dealer_contacts.';
    END IF;
END
$$;
COMMENT ON FUNCTION aimroute.set_delivery_status_active(bigint) IS
    'Takes a contact off the suppression list: its delivery_status becomes Active, and so does that of every contact with the same address (the suppression list is by address); later messages are sent to them again.';
REVOKE EXECUTE ON FUNCTION aimroute.set_delivery_status_active(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.set_delivery_status_active(bigint) TO aimroute_admin, aimroute_region, aimroute_dealer;

CREATE FUNCTION aimroute.delivery_worker_running() RETURNS boolean
    AS 'MODULE_PATHNAME', 'aimroute_delivery_worker_running'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION aimroute.delivery_worker_running() IS
    'Whether the delivery worker runs for this database (aimroute is in shared_preload_libraries and aimroute.database names it); see pg_stat_activity for the worker itself.';

-- One word at CREATE EXTENSION when neither worker will run here.
DO $$
BEGIN
    IF NOT aimroute.delivery_worker_running() THEN
        RAISE NOTICE 'the aimroute background workers are not running on this server: leads are routed, but not re-routed, and their notices are neither queued nor sent'
            USING HINT = 'Add aimroute to shared_preload_libraries, set aimroute.database to this database, and restart PostgreSQL; meanwhile SELECT aimroute.delivery_expand(1000) queues what routing marked.';
    END IF;
END
$$;
