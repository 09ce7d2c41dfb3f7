--
-- The bounce mailbox (issue 17): with settings.bounce_mailbox_url, the
-- delivery worker reads the DSNs mailed to settings.bounce_address from an
-- IMAP mailbox (src/bounce_mailbox.c) and records each with record_dsn.
-- What it handled is remembered here, in one row, by the mailbox's
-- UIDVALIDITY and the highest UID handled, in the same transaction as the
-- record: nothing is read twice and, the position moving only with a
-- record, nothing is lost across a restart.  The mailbox is known by its
-- UIDVALIDITY, not its URL: the same mailbox read over imaps:// instead of
-- imap:// goes on where it was; another one starts at its first message.
--
CREATE TABLE aimroute.bounce_mailbox_state (
    singleton     boolean PRIMARY KEY DEFAULT true
        CONSTRAINT bounce_mailbox_state_one_row CHECK (singleton),
    mailbox_url   text NOT NULL,
    uidvalidity   bigint,
    last_uid      bigint NOT NULL DEFAULT 0,
    handled       bigint NOT NULL DEFAULT 0,
    bounces       bigint NOT NULL DEFAULT 0,
    failing_uid   bigint,
    failures      integer NOT NULL DEFAULT 0,
    checked_at    timestamptz,
    last_error    text
);
COMMENT ON TABLE aimroute.bounce_mailbox_state IS
    'Where the delivery worker is in the bounce mailbox (settings.bounce_mailbox_url): every message up to last_uid was handled. Delete the row to read the mailbox again from its first message (record_dsn records nothing twice).';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.singleton IS 'Always true: one row.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.mailbox_url IS 'The mailbox last read, as settings.bounce_mailbox_url named it.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.uidvalidity IS 'The mailbox''s IMAP UIDVALIDITY, which tells one mailbox from another: when it changes (another mailbox, or the same made again), the worker reads from the first message.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.last_uid IS 'The highest IMAP UID handled: recorded by record_dsn, or skipped with a WARNING.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.handled IS 'Messages handled in all.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.bounces IS 'Bounces record_dsn recorded from them.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.failing_uid IS 'A message whose record raised an error that was not about its content; failures counts its tries, and after 3 it is skipped.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.failures IS 'Tries of failing_uid that raised.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.checked_at IS 'When the worker last read the mailbox, or tried to.';
COMMENT ON COLUMN aimroute.bounce_mailbox_state.last_error IS 'Why the last try to read it failed (connection, login, TLS); NULL when it worked.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.bounce_mailbox_state', '');

--
-- bounce_mailbox_position: where to go on reading a mailbox (internal, the
-- delivery worker): the highest UID handled, 0 for a mailbox new or made
-- again (its UIDVALIDITY changed).  Notes the check.
--
CREATE FUNCTION aimroute.bounce_mailbox_position(p_mailbox_url text, p_uidvalidity bigint) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st aimroute.bounce_mailbox_state;
BEGIN
    INSERT INTO aimroute.bounce_mailbox_state (mailbox_url, uidvalidity)
    VALUES (p_mailbox_url, p_uidvalidity)
    ON CONFLICT (singleton) DO NOTHING;
    SELECT * INTO st FROM aimroute.bounce_mailbox_state s WHERE s.singleton FOR UPDATE;
    IF st.uidvalidity IS NOT NULL AND st.uidvalidity IS DISTINCT FROM p_uidvalidity THEN
        RAISE WARNING 'bounce mailbox %: its UIDVALIDITY is % where it was %, so it is read from its first message',
                      p_mailbox_url, p_uidvalidity, st.uidvalidity
            USING DETAIL = 'Another mailbox, or the same one made again; record_dsn records no DSN twice.';
        st.last_uid := 0;
    END IF;
    UPDATE aimroute.bounce_mailbox_state s
       SET mailbox_url = p_mailbox_url, uidvalidity = p_uidvalidity, last_uid = st.last_uid,
           checked_at = clock_timestamp(), last_error = NULL
     WHERE s.singleton;
    RETURN st.last_uid;
END
$$;
COMMENT ON FUNCTION aimroute.bounce_mailbox_position(text, bigint) IS
    'The highest IMAP UID of the bounce mailbox handled so far, 0 when the mailbox is new or its UIDVALIDITY changed. Internal: the delivery worker calls it.';
REVOKE EXECUTE ON FUNCTION aimroute.bounce_mailbox_position(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.bounce_mailbox_position(text, bigint) TO aimroute_admin;

--
-- bounce_mailbox_failed: a try to read the mailbox failed (internal).
--
CREATE FUNCTION aimroute.bounce_mailbox_failed(p_mailbox_url text, p_error text) RETURNS void
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO aimroute.bounce_mailbox_state (mailbox_url, checked_at, last_error)
    VALUES (p_mailbox_url, clock_timestamp(), left(p_error, 1000))
    ON CONFLICT (singleton) DO UPDATE SET checked_at = excluded.checked_at, last_error = excluded.last_error;
END;
COMMENT ON FUNCTION aimroute.bounce_mailbox_failed(text, text) IS
    'Notes why reading the bounce mailbox failed (bounce_mailbox_state.last_error). Internal: the delivery worker calls it.';
REVOKE EXECUTE ON FUNCTION aimroute.bounce_mailbox_failed(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.bounce_mailbox_failed(text, text) TO aimroute_admin;

--
-- bounce_mailbox_record: records one message of the mailbox (internal, the
-- delivery worker), and moves the position past it in the same
-- transaction.  A message already handled records nothing.  Not a DSN (or
-- a DSN record_dsn refuses, SQLSTATE class 22): a WARNING, and it is
-- skipped; so is a message too large to fetch (p_message NULL).  Any
-- other error (a lock, the server): a WARNING and NULL, the
-- position stays and the worker stops reading until its next look; the
-- third try of the same message that raises skips it, so that one message
-- never stops the mailbox.  Returns the bounces recorded.
--
CREATE FUNCTION aimroute.bounce_mailbox_record(p_mailbox_url text, p_uidvalidity bigint, p_uid bigint,
                                               p_message text) RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st aimroute.bounce_mailbox_state;
    recorded integer := 0;
    e_code text;
    e_message text;
BEGIN
    SELECT * INTO st FROM aimroute.bounce_mailbox_state s WHERE s.singleton FOR UPDATE;
    IF NOT FOUND OR st.uidvalidity IS DISTINCT FROM p_uidvalidity OR p_uid <= st.last_uid THEN
        RETURN 0;   -- handled already, or the mailbox changed meanwhile
    END IF;
    IF p_message IS NULL THEN
        RAISE WARNING 'bounce mailbox %: message UID % is larger than the worker reads (16 MB), skipped',
                      p_mailbox_url, p_uid
            USING HINT = 'It stays in the mailbox; a DSN is rarely that large: look at it in a mail client.';
    ELSE
    BEGIN
        recorded := aimroute.record_dsn(p_message);
    EXCEPTION
        WHEN data_exception THEN
            GET STACKED DIAGNOSTICS e_message = MESSAGE_TEXT;
            RAISE WARNING 'bounce mailbox %: message UID % is not a DSN aimroute can read, skipped: %',
                          p_mailbox_url, p_uid, e_message
                USING HINT = 'It stays in the mailbox, marked \Seen; a bounce it reports can be recorded with aimroute.record_bounce(email, kind, detail).';
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT;
            st.failures := CASE WHEN st.failing_uid = p_uid THEN st.failures + 1 ELSE 1 END;
            IF st.failures < 3 THEN
                RAISE WARNING 'bounce mailbox %: recording message UID % failed (try %), tried again later: %',
                              p_mailbox_url, p_uid, st.failures, e_message
                    USING DETAIL = format('SQLSTATE %s.', e_code);
                UPDATE aimroute.bounce_mailbox_state s
                   SET failing_uid = p_uid, failures = st.failures, last_error = left(e_message, 1000)
                 WHERE s.singleton;
                RETURN NULL;
            END IF;
            RAISE WARNING 'bounce mailbox %: recording message UID % failed 3 times, skipped: %',
                          p_mailbox_url, p_uid, e_message
                USING DETAIL = format('SQLSTATE %s.', e_code),
                      HINT = 'It stays in the mailbox, marked \Seen; record it by hand with aimroute.record_dsn once the cause is fixed.';
    END;
    END IF;
    UPDATE aimroute.bounce_mailbox_state s
       SET last_uid = p_uid, handled = s.handled + 1, bounces = s.bounces + coalesce(recorded, 0),
           failing_uid = NULL, failures = 0
     WHERE s.singleton;
    RETURN coalesce(recorded, 0);
END
$$;
COMMENT ON FUNCTION aimroute.bounce_mailbox_record(text, bigint, bigint, text) IS
    'Records one message of the bounce mailbox with record_dsn and moves bounce_mailbox_state.last_uid past it, in one transaction; a message handled already records nothing, one that is not a DSN is skipped with a WARNING. Internal: the delivery worker calls it.';
REVOKE EXECUTE ON FUNCTION aimroute.bounce_mailbox_record(text, bigint, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.bounce_mailbox_record(text, bigint, bigint, text) TO aimroute_admin;
