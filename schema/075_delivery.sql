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
    last_response    text
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
    failures text;
    verdict text;
    queued integer;
BEGIN
    SELECT * INTO n FROM aimroute.lead_notifications x WHERE x.notification_id = p_notification_id FOR UPDATE;
    IF NOT FOUND OR n.failure_notice_at IS NOT NULL THEN
        RETURN 0;
    END IF;
    SELECT count(*) FILTER (WHERE o.status <> 'cancelled'),
           count(*) FILTER (WHERE o.status = 'delivered'),
           count(*) FILTER (WHERE o.status IN ('queued', 'sending')),
           string_agg(format('  %s %s (%s): %s%s', o.method, o.recipient, o.role, o.outcome,
                             ' - ' || left(o.last_response, 200)), E'\n' ORDER BY o.message_id)
               FILTER (WHERE o.status = 'failed')
      INTO total, delivered, open_count, failures
      FROM aimroute.outbox o
     WHERE o.notification_id = n.notification_id AND o.purpose = 'lead';
    IF open_count > 0 OR total = 0 OR delivered = total THEN
        RETURN 0;
    END IF;
    verdict := CASE WHEN delivered = 0 THEN 'Failure' ELSE 'Partial Delivery' END;
    SELECT * INTO s FROM aimroute.settings;
    SELECT * INTO d FROM aimroute.dealers x WHERE x.dealer_number = n.dealer_number;
    INSERT INTO aimroute.outbox (notification_id, lead_id, dealer_number, purpose, method, role,
                                 contact_id, recipient, subject, body)
    SELECT n.notification_id, n.lead_id, n.dealer_number, 'failure notice', 'email', 'Notice',
           r.contact_id, r.email,
           format('Lead %s not delivered to dealer %s (%s)', n.lead_id, n.dealer_number, verdict),
           concat_ws(E'\n',
               format('Lead %s was sent to dealer %s (%s) on %s %s, and its delivery ended in %s:',
                      n.lead_id, n.dealer_number, d.name,
                      to_char(n.queued_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI'), s.timezone, verdict),
               '',
               format('  %s of %s messages delivered; not delivered:', delivered, total),
               failures,
               '',
               'What to check: SELECT * FROM aimroute.delivery_attempts WHERE lead_id = ' || n.lead_id || ';',
               'Send it again once fixed: SELECT aimroute.send_lead(' || n.lead_id || ');',
               '',
               '-- ',
               s.oem_name || ' lead delivery (aimroute)')
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
-- delivery_render_batch: what the worker sends for each of a set of
-- claimed messages, in one statement (internal), in their order.  Lead
-- emails and pushes are rendered when sent, so they show the lead as it is
-- then.  PL/pgSQL for its kept plan: the statement is planned once a
-- session, not once a claim.
--
CREATE FUNCTION aimroute.delivery_render_batch(messages aimroute.outbox[], s aimroute.settings)
RETURNS SETOF aimroute.delivery_job
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT m.message_id, m.attempts,
           CASE WHEN k.http THEN 'http' ELSE 'smtp' END,
           CASE k.kind WHEN 'push' THEN s.push_gateway_url WHEN 'adf_http' THEN m.recipient ELSE s.smtp_url END,
           s.smtp_from,
           -- The SMTP login is for the SMTP server only.
           CASE WHEN NOT k.http THEN m.recipient END,
           CASE WHEN NOT k.http THEN s.smtp_username END,
           CASE WHEN NOT k.http THEN s.smtp_password END,
           CASE k.kind WHEN 'push' THEN 'application/json' WHEN 'adf_http' THEN 'application/xml' END,
           m.message_key,
           CASE k.kind
               WHEN 'notice' THEN
                   aimroute.render_email(s.smtp_from, m.recipient, m.subject, m.body, m.message_key, clock_timestamp())
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
      FROM unnest(messages) WITH ORDINALITY AS m
      CROSS JOIN LATERAL (
          SELECT x.kind, x.kind IN ('push', 'adf_http') AS http
            FROM (SELECT CASE WHEN m.purpose <> 'lead' THEN 'notice'
                              WHEN m.method = 'email' THEN 'email'
                              WHEN m.method = 'mobile' THEN 'push'
                              WHEN m.role = 'adf_email' THEN 'adf_email'
                              ELSE 'adf_http' END AS kind) x) k
      LEFT JOIN aimroute.leads l ON k.kind <> 'notice' AND l.lead_id = m.lead_id
      LEFT JOIN aimroute.lead_notifications n ON k.kind <> 'notice' AND n.notification_id = m.notification_id
      LEFT JOIN aimroute.dealers d ON k.kind <> 'notice' AND d.dealer_number = m.dealer_number
     ORDER BY m.ordinality;
END
$$;
COMMENT ON FUNCTION aimroute.delivery_render_batch(aimroute.outbox[], aimroute.settings) IS
    'What the delivery worker sends for each of the messages given, in their order: where to, how, and the whole email or HTTP body. Internal.';
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
    -- stops at max_messages.  Planned with the statistics of a new or
    -- emptied outbox (its plan is kept from the worker's first claim), a
    -- sort of every due message would be cheaper on paper, and cost each
    -- claim the whole queue: 3.7 ms a claim at 5,000 due messages.
    SET enable_sort = off
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
        IF v_outcome IN ('Hard Bounce', 'Soft Bounce') AND m.contact_id IS NOT NULL THEN
            UPDATE aimroute.dealer_contacts c SET delivery_status = v_outcome
             WHERE c.contact_id = m.contact_id AND c.delivery_status IS DISTINCT FROM 'Hard Bounce';
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

        WITH issues AS (
            SELECT i.* FROM aimroute.delivery_issues i
             WHERE (i.failed_at AT TIME ZONE s.timezone)::date = recap_day
        ), recipients AS (
            SELECT NULL::bigint AS contact_id, c.email, c.region, NULL::text AS dealer_number
              FROM aimroute.notification_contacts c
             WHERE c.contact_type = 'Lead Delivery Notification Daily'
            UNION
            SELECT c.contact_id, c.email, NULL, c.dealer_number
              FROM aimroute.dealer_contacts c
             WHERE c.email IS NOT NULL AND 'Lead Delivery Notification Daily' = ANY (c.contact_types)
        ), per_recipient AS (
            SELECT r.contact_id, r.email, r.region, r.dealer_number, count(DISTINCT i.lead_id) AS n,
                   string_agg(format('  lead %s  dealer %s (%s)  %s  email %s, mobile %s, CRM %s',
                                     i.lead_id, i.dealer_number, i.dealer_name, i.failure,
                                     coalesce(i.email_status, '-'), coalesce(i.mobile_status, '-'),
                                     coalesce(i.crm_status, '-')), E'\n' ORDER BY i.lead_id, i.notification_id) AS lines
              FROM recipients r
              JOIN issues i ON (r.region IS NULL OR i.region = r.region)
                           AND (r.dealer_number IS NULL OR i.dealer_number = r.dealer_number)
             GROUP BY 1, 2, 3, 4
        )
        INSERT INTO aimroute.outbox (purpose, method, role, contact_id, dealer_number, recipient, subject, body)
        SELECT 'daily recap', 'email', 'Recap', p.contact_id, p.dealer_number, p.email,
               format('Lead delivery failures on %s: %s lead%s%s', recap_day, p.n, CASE WHEN p.n = 1 THEN '' ELSE 's' END,
                      coalesce(' (region ' || p.region || ')', ' (dealer ' || p.dealer_number || ')', '')),
               concat_ws(E'\n',
                   format('Leads whose delivery failed wholly or partly on %s (%s):', recap_day, s.timezone),
                   '',
                   p.lines,
                   '',
                   format('The details: SELECT * FROM aimroute.delivery_issues WHERE (failed_at AT TIME ZONE %L)::date = %L;',
                          s.timezone, recap_day),
                   '',
                   '-- ',
                   s.oem_name || ' lead delivery (aimroute)')
          FROM per_recipient p;
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
-- record_bounce: a bounce that a mail provider reported after accepting
-- the message.  Every contact with that address gets the bounce status
-- (a hard bounce outranks a soft one); the latest message delivered to the
-- address in the last 30 days is recorded as bounced.  Returns the number
-- of contacts changed.
--
CREATE FUNCTION aimroute.record_bounce(email text, kind text, detail text)
RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_status text;
    changed integer;
    m aimroute.outbox;
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
    UPDATE aimroute.dealer_contacts c SET delivery_status = v_status
     WHERE lower(c.email) = lower(btrim(record_bounce.email))
       AND c.delivery_status IS DISTINCT FROM 'Hard Bounce' AND c.delivery_status IS DISTINCT FROM v_status;
    GET DIAGNOSTICS changed = ROW_COUNT;

    SELECT * INTO m FROM aimroute.outbox o
     WHERE lower(o.recipient) = lower(btrim(record_bounce.email)) AND o.status = 'delivered'
       AND o.finished_at > clock_timestamp() - interval '30 days'
     ORDER BY o.finished_at DESC LIMIT 1 FOR UPDATE;
    IF FOUND THEN
        INSERT INTO aimroute.delivery_attempt_log (message_id, attempt, outcome, response)
        VALUES (m.message_id, m.attempts, v_status, 'bounced after delivery: ' || coalesce(detail, 'no detail given'));
        UPDATE aimroute.outbox o SET status = 'failed', outcome = v_status, last_attempt_at = clock_timestamp(),
               last_response = 'bounced after delivery: ' || coalesce(detail, 'no detail given')
         WHERE o.message_id = m.message_id;
        IF m.purpose = 'lead' THEN
            PERFORM aimroute.delivery_settle(m.notification_id);
        END IF;
    END IF;
    IF changed = 0 AND NOT FOUND THEN
        RAISE NOTICE 'no contact and no recent message has the address %', btrim(record_bounce.email);
    END IF;
    RETURN changed;
END
$$;
COMMENT ON FUNCTION aimroute.record_bounce(text, text, text) IS
    'Takes a bounce reported by a mail provider (kind ''hard'' or ''soft''): every contact with the address is suppressed, and the latest message delivered to it is recorded as bounced. Returns the contacts changed.';
REVOKE EXECUTE ON FUNCTION aimroute.record_bounce(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.record_bounce(text, text, text) TO aimroute_admin;

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
    'Takes a contact off the suppression list: its delivery_status becomes Active, and later messages are sent to it again.';
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
