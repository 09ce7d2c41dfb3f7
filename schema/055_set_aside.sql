--
-- Set-aside items (SPEC section 8): a worker never stalls on one bad item.
-- A lead whose re-route raises, a lead whose notice cannot be queued, or a
-- message whose claim or record raises, is set aside here with its error,
-- and tried again later with a backoff; the worker goes on with the
-- others.  The re-route worker (aimroute.reroute_overdue, 060_reroute.sql)
-- and the delivery worker (aimroute.delivery_expand, delivery_claim and
-- delivery_record, 075_delivery.sql) write and skip these rows.
-- docs/reliability.md.
--
CREATE TABLE aimroute.set_aside_items (
    kind             text NOT NULL
        CONSTRAINT set_aside_items_kind_check CHECK (kind IN ('lead', 'notice', 'message')),
    item_id          bigint NOT NULL,
    lead_id          bigint,
    step             text NOT NULL
        CONSTRAINT set_aside_items_step_check CHECK (step IN ('re-route', 'notice', 'claim', 'record')),
    error_code       text NOT NULL,
    error            text NOT NULL,
    detail           text,
    hint             text,
    context          text,
    failures         integer NOT NULL DEFAULT 1,
    first_failed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    failed_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    retry_at         timestamptz NOT NULL,
    reroute_due_at   timestamptz,
    send_result      jsonb,
    PRIMARY KEY (kind, item_id)
);
COMMENT ON TABLE aimroute.set_aside_items IS
    'Leads and messages a background worker set aside because processing them raised an error: the error, how often, and when they are tried next. The worker goes on with the others meanwhile. To try one again now, set its retry_at to clock_timestamp().';
COMMENT ON COLUMN aimroute.set_aside_items.kind IS '''lead'' (the re-route worker), ''notice'' (a lead''s notice, the delivery worker) or ''message'' (the delivery worker).';
COMMENT ON COLUMN aimroute.set_aside_items.item_id IS 'The lead_id of a lead or of a lead whose notice it is, the message_id (aimroute.outbox) of a message.';
COMMENT ON COLUMN aimroute.set_aside_items.lead_id IS 'The lead concerned (NULL for a message that is not about a lead, such as a daily recap).';
COMMENT ON COLUMN aimroute.set_aside_items.step IS
    '''re-route'' (re-routing an overdue lead), ''notice'' (queueing the notice and messages of a lead routing marked to be sent; the lead keeps its mark, nothing was queued), ''claim'' (preparing a message to send: the checks, the claim and the rendering; nothing was sent) or ''record'' (recording the outcome of a message that was sent; it is recorded again, never sent again).';
COMMENT ON COLUMN aimroute.set_aside_items.error_code IS 'The SQLSTATE of the latest error.';
COMMENT ON COLUMN aimroute.set_aside_items.error IS 'The message of the latest error.';
COMMENT ON COLUMN aimroute.set_aside_items.detail IS 'Its detail, if any.';
COMMENT ON COLUMN aimroute.set_aside_items.hint IS 'Its hint, if any.';
COMMENT ON COLUMN aimroute.set_aside_items.context IS 'Where it was raised: the PL/pgSQL call stack.';
COMMENT ON COLUMN aimroute.set_aside_items.failures IS 'Tries that failed in a row (for a lead: for its current deadline).';
COMMENT ON COLUMN aimroute.set_aside_items.first_failed_at IS 'When the first of those failed.';
COMMENT ON COLUMN aimroute.set_aside_items.failed_at IS 'When the latest failed.';
COMMENT ON COLUMN aimroute.set_aside_items.retry_at IS
    'When the worker tries it again: 1 minute after the first failure, then 2, 4, 8 ... minutes, 1 hour at most. Set it to clock_timestamp() to try now.';
COMMENT ON COLUMN aimroute.set_aside_items.reroute_due_at IS
    'A lead''s deadline when it was set aside. The lead still counts as overdue; a new deadline (a reassignment) or a view makes the row moot, and the worker removes it.';
COMMENT ON COLUMN aimroute.set_aside_items.send_result IS
    'Step record: what the send came to (attempt, curl_code, response_code, response, smtp_command), recorded as the outcome when recording works again.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.set_aside_items', '');

--
-- set_aside: set an item aside after the error that processing it raised
-- (internal; the workers' functions call it from an exception handler,
-- after the item's own work was rolled back).  Counts the failures in a
-- row, puts the next try 1, 2, 4 ... minutes away (an hour at most), and
-- says so in a WARNING, which the server log keeps.
--
CREATE FUNCTION aimroute.set_aside(p_kind text, p_item_id bigint, p_lead_id bigint, p_step text,
                                   p_error_code text, p_error text, p_detail text, p_hint text,
                                   p_context text, p_reroute_due_at timestamptz DEFAULT NULL,
                                   p_send_result jsonb DEFAULT NULL)
RETURNS aimroute.set_aside_items
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f aimroute.set_aside_items;
    at_time timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO f FROM aimroute.set_aside_items x
     WHERE x.kind = p_kind AND x.item_id = p_item_id FOR UPDATE;
    -- A lead's failures count for one deadline; a message's for one step.
    IF NOT FOUND OR f.step IS DISTINCT FROM p_step OR f.reroute_due_at IS DISTINCT FROM p_reroute_due_at THEN
        f.failures := 1;
        f.first_failed_at := at_time;
    ELSE
        f.failures := f.failures + 1;
    END IF;
    INSERT INTO aimroute.set_aside_items AS x
           (kind, item_id, lead_id, step, error_code, error, detail, hint, context, failures,
            first_failed_at, failed_at, retry_at, reroute_due_at, send_result)
    VALUES (p_kind, p_item_id, p_lead_id, p_step, p_error_code, p_error, nullif(p_detail, ''),
            nullif(p_hint, ''), nullif(p_context, ''), f.failures, f.first_failed_at, at_time,
            at_time + least(interval '1 minute' * power(2, least(f.failures - 1, 6)), interval '1 hour'),
            p_reroute_due_at, p_send_result)
    ON CONFLICT (kind, item_id) DO UPDATE
       SET lead_id = excluded.lead_id, step = excluded.step, error_code = excluded.error_code,
           error = excluded.error, detail = excluded.detail, hint = excluded.hint,
           context = excluded.context, failures = excluded.failures,
           first_failed_at = excluded.first_failed_at, failed_at = excluded.failed_at,
           retry_at = excluded.retry_at, reroute_due_at = excluded.reroute_due_at,
           send_result = excluded.send_result
    RETURNING * INTO f;
    RAISE WARNING 'aimroute: % % set aside: % failed: %',
                  CASE p_kind WHEN 'notice' THEN 'the notice of lead' ELSE p_kind END, p_item_id,
                  CASE p_step WHEN 're-route' THEN 're-routing it' WHEN 'notice' THEN 'queueing it'
                              WHEN 'claim' THEN 'preparing it' ELSE 'recording its outcome' END,
                  p_error
        USING DETAIL = format('Failure %s in a row (SQLSTATE %s); next try at %s.%s', f.failures, p_error_code,
                              f.retry_at, ' The error''s detail: ' || nullif(p_detail, '')),
              HINT = format('See aimroute.set_aside_items; to try it again now: UPDATE aimroute.set_aside_items SET retry_at = clock_timestamp() WHERE kind = %L AND item_id = %s;',
                            p_kind, p_item_id);
    RETURN f;
END
$$;
COMMENT ON FUNCTION aimroute.set_aside(text, bigint, bigint, text, text, text, text, text, text, timestamptz, jsonb) IS
    'Sets a lead or message aside after an error: records the error in aimroute.set_aside_items, puts its next try 1, 2, 4 ... minutes away (an hour at most), and raises a WARNING. Internal: the workers'' functions call it.';
REVOKE EXECUTE ON FUNCTION aimroute.set_aside(text, bigint, bigint, text, text, text, text, text, text, timestamptz, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.set_aside(text, bigint, bigint, text, text, text, text, text, text, timestamptz, jsonb) TO aimroute_admin;
