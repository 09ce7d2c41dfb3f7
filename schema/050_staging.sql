--
-- Bulk import: aimroute.lead_staging and aimroute.process_staging().
--
-- Rows are staged as text, exactly as they arrive (INSERT or COPY into
-- aimroute.lead_staging, one batch_id per file or feed), and
-- aimroute.process_staging(batch_id) turns every unprocessed row of the
-- batch into exactly one outcome.  Nothing is deleted or dropped: each
-- staging row ends up 'processed' (it became lead lead_id), 'rejected'
-- (reason says why) or 'duplicate' (duplicate_of and reason say of what;
-- lead_id is the lead it duplicates).
--
-- Rejected versus routed.  A row is rejected only when it cannot become a
-- lead at all:
--   * received_at is not a timestamp, or not a finite one.  It is read
--     like any timestamptz input, with the session's DateStyle and TimeZone
--     (ISO 8601 with an offset, 2024-05-01 14:30:00+00, is unambiguous); a
--     blank received_at means the time the row was staged (staged_at);
--   * send_to_dealer is not a boolean (true/false, yes/no, on/off, 1/0, t/f,
--     y/n, any case); blank means true;
--   * the customer cannot be contacted: no email and no phone (a phone
--     needs at least 5 digits to count);
--   * the email is not an address (name@domain.tld: no spaces, one @, a dot
--     in the domain, at most 254 characters);
--   * a value is too long: more than 1000 characters (comment: 10000).
-- Every problem of a row is listed in its reason, separated by "; ".
-- Everything else is lead data the routing trigger deals with, and the
-- row becomes a lead routed by the rules, with its explanation in
-- aimroute.explain_lead(): an unknown or malformed postal code or country,
-- an unknown brand, an unknown or inactive pre-assigned dealer, an unknown
-- dealer group, odd characters anywhere.  Values are stored trimmed of
-- white space, with blank values as NULL; source defaults to 'import'.
-- If inserting a lead fails for any other reason (a constraint added to
-- aimroute.leads, say), the row is rejected with the error message as its
-- reason and the other rows go through.  Errors that are not about a row --
-- no default dealer configured, missing privileges, a deadlock, a
-- cancelled query, a full disk -- abort the call instead and nothing of it
-- is kept, so that the batch can simply be processed again once fixed.
-- To retry a rejected row, correct its values and set its status, reason
-- and processed_at back to NULL; the next call processes it.
--
-- Duplicates.  input_md5 is the md5 of all input columns as staged (NULL
-- and '' differ; batch_id and staged_at are not part of it).  A row that
-- passes validation is a duplicate when an earlier row (smaller
-- staging_id, any batch) has the same input_md5, was staged within
-- settings.dedupe_window of it, and was not rejected; duplicate_of is the
-- earliest staged such row, and lead_id the lead that row became (for a
-- duplicate of a duplicate, the lead of the row both repeat).  When that
-- row has not been processed yet (it belongs to another batch), lead_id is
-- filled in when it is; should it be rejected, the duplicate is rejected
-- too, with the same reason.  dedupe_window = 0 turns deduplication off.
--
-- How it works.  The batch is processed in chunks of 10,000 rows, in
-- staging_id order, each set-based in three statements.  The first reads
-- the chunk once into a temporary table: values trimmed and parsed,
-- problems listed, the row each valid row duplicates looked up, and a
-- lead_id drawn for each row that is to become a lead.  The second inserts
-- all of the chunk's leads into aimroute.leads with one INSERT ... SELECT,
-- which routes each of them.  The third marks every row's outcome with one
-- UPDATE.  Each row's lead_id is drawn from the identity sequence of
-- aimroute.leads before the INSERT and inserted with OVERRIDING SYSTEM
-- VALUE, so the staging row -> lead mapping is exact by construction; it
-- does not depend on the order in which rows are inserted or returned.  The
-- caller therefore needs USAGE (or UPDATE) on that sequence as well as
-- INSERT on aimroute.leads.  The INSERT runs in a subtransaction: if it
-- fails because of a row, the chunk's leads are inserted again 100 at a
-- time, and those of a piece that fails one at a time, each in a
-- subtransaction of its own, so that only the rows at fault are rejected.
-- A NOTICE reports progress after each chunk.  Calls run one at a time (a
-- transaction-level advisory lock), so that two imports cannot both miss a
-- duplicate; staging new rows is never blocked.  Processing a batch again
-- only processes rows staged since, if any.  The table leaves room on each
-- page (fillfactor 45) and no index covers status, lead_id, reason or
-- processed_at, so that marking a row processed or rejected updates it in
-- place (a HOT update).
--

CREATE TABLE aimroute.lead_staging (
    staging_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id        text NOT NULL,
    staged_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    received_at     text,
    source          text,
    brand_code      text,
    product_code    text,
    first_name      text,
    last_name       text,
    email           text,
    phone           text,
    address         text,
    city            text,
    state_code      text,
    country         text,
    postal_code     text,
    dealer_number   text,
    dealer_group    text,
    send_to_dealer  text,
    comment         text,
    status          text
        CONSTRAINT lead_staging_status_check
        CHECK (status IN ('processed', 'rejected', 'duplicate')),
    lead_id         bigint,
    duplicate_of    bigint,
    reason          text,
    processed_at    timestamptz,
    input_md5       text NOT NULL GENERATED ALWAYS AS (pg_catalog.md5(
        pg_catalog.quote_nullable(received_at) || ',' || pg_catalog.quote_nullable(source) || ',' ||
        pg_catalog.quote_nullable(brand_code) || ',' || pg_catalog.quote_nullable(product_code) || ',' ||
        pg_catalog.quote_nullable(first_name) || ',' || pg_catalog.quote_nullable(last_name) || ',' ||
        pg_catalog.quote_nullable(email) || ',' || pg_catalog.quote_nullable(phone) || ',' ||
        pg_catalog.quote_nullable(address) || ',' || pg_catalog.quote_nullable(city) || ',' ||
        pg_catalog.quote_nullable(state_code) || ',' || pg_catalog.quote_nullable(country) || ',' ||
        pg_catalog.quote_nullable(postal_code) || ',' || pg_catalog.quote_nullable(dealer_number) || ',' ||
        pg_catalog.quote_nullable(dealer_group) || ',' || pg_catalog.quote_nullable(send_to_dealer) || ',' ||
        pg_catalog.quote_nullable(comment))) STORED,
    CONSTRAINT lead_staging_outcome_check CHECK (
        (status <> 'processed' OR lead_id IS NOT NULL)
        AND (status <> 'rejected' OR reason IS NOT NULL)
        AND (status <> 'duplicate' OR duplicate_of IS NOT NULL))
)
-- Room on each page for the next version of its rows: process_staging()
-- marks each row's outcome in place (a HOT update, no index entry added)
-- instead of moving the row to another page.
WITH (fillfactor = 45);
-- The unprocessed rows of a batch, in order; and a batch's rows for reports.
CREATE INDEX lead_staging_batch_idx ON aimroute.lead_staging (batch_id, staging_id);
-- The duplicate lookup: the same input_md5, staged within the window, the
-- earliest first.  input_md5 is hex digits: compared byte by byte ("C"),
-- whatever the database's collation.
CREATE INDEX lead_staging_dedupe_idx ON aimroute.lead_staging (input_md5 COLLATE "C", staged_at, staging_id);
-- The duplicates of a row, to give them its lead (or its rejection) once it
-- has one.  No index covers status, lead_id, reason or processed_at, so
-- that marking a row processed or rejected can be a HOT update.
CREATE INDEX lead_staging_duplicates_idx ON aimroute.lead_staging (duplicate_of)
    WHERE duplicate_of IS NOT NULL;

COMMENT ON TABLE aimroute.lead_staging IS
    'Bulk import: raw lead rows as text, one batch_id per file or feed; aimroute.process_staging(batch_id) turns each into a lead (processed), a rejection or a duplicate. Rows are never deleted.';
COMMENT ON COLUMN aimroute.lead_staging.staging_id IS 'Order of staging; rows are processed in this order.';
COMMENT ON COLUMN aimroute.lead_staging.batch_id IS 'The batch (file, feed, upload) the row belongs to; aimroute.process_staging() takes it.';
COMMENT ON COLUMN aimroute.lead_staging.staged_at IS 'When the row was staged; the dedupe window is measured on it, and it is the lead''s received_at when received_at is blank.';
COMMENT ON COLUMN aimroute.lead_staging.received_at IS 'Input: when the lead was received, as a timestamp (ISO 8601 with an offset is unambiguous); blank: staged_at.';
COMMENT ON COLUMN aimroute.lead_staging.source IS 'Input: where the lead comes from; blank: import.';
COMMENT ON COLUMN aimroute.lead_staging.brand_code IS 'Input: the brand; an unknown brand is routed to the default dealer, not rejected.';
COMMENT ON COLUMN aimroute.lead_staging.product_code IS 'Input: the product, optional.';
COMMENT ON COLUMN aimroute.lead_staging.first_name IS 'Input: the customer''s first name.';
COMMENT ON COLUMN aimroute.lead_staging.last_name IS 'Input: the customer''s last name.';
COMMENT ON COLUMN aimroute.lead_staging.email IS 'Input: the customer''s email; when given it must be an address. A row needs an email or a phone.';
COMMENT ON COLUMN aimroute.lead_staging.phone IS 'Input: the customer''s phone; counts as a way to contact the customer with at least 5 digits.';
COMMENT ON COLUMN aimroute.lead_staging.address IS 'Input: the customer''s street address.';
COMMENT ON COLUMN aimroute.lead_staging.city IS 'Input: the customer''s city.';
COMMENT ON COLUMN aimroute.lead_staging.state_code IS 'Input: the customer''s state or province code.';
COMMENT ON COLUMN aimroute.lead_staging.country IS 'Input: the customer''s country (alpha-2, alpha-3); an unknown country is routed to the default dealer, not rejected.';
COMMENT ON COLUMN aimroute.lead_staging.postal_code IS 'Input: the customer''s postal code; an unknown or malformed one is routed by the rules, not rejected.';
COMMENT ON COLUMN aimroute.lead_staging.dealer_number IS 'Input: a pre-assigned dealer, optional; an unknown one is routed by the rules, not rejected.';
COMMENT ON COLUMN aimroute.lead_staging.dealer_group IS 'Input: a dealer group, optional.';
COMMENT ON COLUMN aimroute.lead_staging.send_to_dealer IS 'Input: whether to notify the dealer, as a boolean (true/false, yes/no, on/off, 1/0); blank: true.';
COMMENT ON COLUMN aimroute.lead_staging.comment IS 'Input: the customer''s comment (up to 10000 characters; every other input up to 1000).';
COMMENT ON COLUMN aimroute.lead_staging.status IS 'NULL: not processed yet; processed: became lead lead_id; rejected: see reason; duplicate: see duplicate_of and reason.';
COMMENT ON COLUMN aimroute.lead_staging.lead_id IS 'processed: the lead the row became; duplicate: the lead it duplicates (NULL while that row is not processed yet). Not a foreign key: it outlives a deleted lead.';
COMMENT ON COLUMN aimroute.lead_staging.duplicate_of IS 'duplicate: the earliest staged of the earlier identical rows staged within the dedupe window.';
COMMENT ON COLUMN aimroute.lead_staging.reason IS 'rejected: every problem of the row; duplicate: the row it repeats.';
COMMENT ON COLUMN aimroute.lead_staging.processed_at IS 'When aimroute.process_staging() decided the row''s status.';
COMMENT ON COLUMN aimroute.lead_staging.input_md5 IS 'md5 of all input columns as staged (NULL and '''' differ): the duplicate key.';

SELECT pg_catalog.pg_extension_config_dump('aimroute.lead_staging', '');
-- The identity sequence too: marking the table does not dump the sequence's position.
SELECT pg_catalog.pg_extension_config_dump('aimroute.lead_staging_staging_id_seq', '');

--
-- staging_value: a staged value as process_staging() reads it, trimmed of
-- white space (space, tab, CR, LF, form feed, vertical tab), NULL when
-- blank: nullif(btrim(value, E' \t\r\n\f\x0B'), ''), in C (src/staging.c),
-- which does not measure every character of the value first.
--
CREATE FUNCTION aimroute.staging_value(value text) RETURNS text
    AS 'MODULE_PATHNAME', 'aimroute_staging_value'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.staging_value(text) IS
    'A staged value trimmed of white space (space, tab, CR, LF, form feed, vertical tab), NULL when blank (internal to aimroute.process_staging).';

--
-- staging_timestamptz: a staged received_at as a timestamptz, or NULL when
-- it is not one (internal; the session's DateStyle and TimeZone apply).
--
CREATE FUNCTION aimroute.staging_timestamptz(value text) RETURNS timestamptz
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION aimroute.staging_timestamptz(text) IS
    'A staged received_at as timestamptz, NULL when it is not a timestamp (internal to aimroute.process_staging).';

--
-- staging_error_is_row_level: whether an error raised while inserting one
-- lead is about that row (reject it) or about the environment (abort).
--
CREATE FUNCTION aimroute.staging_error_is_row_level(sqlstate text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT NOT (left(sqlstate, 2) IN ('08', '25', '40', '42', '53', '55', '57', '58', 'F0')
                OR sqlstate IN ('XX001', 'XX002'))
$$;
COMMENT ON FUNCTION aimroute.staging_error_is_row_level(text) IS
    'Whether an error (SQLSTATE) inserting a staged lead rejects that row rather than aborting the import: connection, transaction state, deadlock or serialization, privilege, resource, prerequisite, operator and system errors abort.';

--
-- staging_quote: a value quoted for a rejection reason, cut to 60 characters.
--
CREATE FUNCTION aimroute.staging_quote(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '"' || left(value, 60) || CASE WHEN length(value) > 60 THEN '..."' ELSE '"' END
$$;
COMMENT ON FUNCTION aimroute.staging_quote(text) IS
    'A value in double quotes for a rejection reason, cut to 60 characters (internal).';

--
-- process_staging: validates, deduplicates and inserts one batch.
--
CREATE FUNCTION aimroute.process_staging(batch_id text)
RETURNS TABLE (status text, rows bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    chunk_size      constant integer := 10000;
    piece_size      constant integer := 100;    -- rows per INSERT once a chunk's INSERT failed
    max_length      constant integer := 1000;
    max_comment     constant integer := 10000;
    min_phone_digits constant integer := 5;
    email_pattern   constant text :=
        '^[^[:space:]@<>(),;:"\[\]\\]+@[^[:space:]@<>(),;:"\[\]\\.]+(\.[^[:space:]@<>(),;:"\[\]\\.]+)+$';
    v_batch         text := process_staging.batch_id;
    v_started       timestamptz := clock_timestamp();
    v_now           timestamptz;
    v_window        interval;
    v_default       text;
    v_seq           regclass;
    v_total         bigint;
    v_last          bigint := 0;    -- the chunks so far reached this staging_id
    v_lo            bigint;         -- the chunk's first and last staging_id
    v_hi            bigint;
    v_step          integer;        -- leads per INSERT: 0 the whole chunk, then piece_size, then 1
    v_rows          bigint;
    v_done          bigint := 0;
    v_leads         bigint := 0;
    v_rejected      bigint := 0;
    v_duplicates    bigint := 0;
    v_settled       bigint[];       -- step 4: the staging_ids settled in the last round, in order
    v_failed        boolean;
    v_parse_each    boolean;        -- step 1: each received_at parsed on its own, catching errors
    r               record;
BEGIN
    IF v_batch IS NULL THEN
        RAISE EXCEPTION 'batch_id must not be null'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the batch_id the rows were staged with, as in SELECT * FROM aimroute.process_staging(''feed-2024-05-01'').';
    END IF;

    -- One import at a time: a duplicate is judged against rows another
    -- call might be processing.
    PERFORM pg_advisory_xact_lock('aimroute.lead_staging'::regclass::oid::bigint);

    SELECT count(*) INTO v_total
      FROM aimroute.lead_staging s
     WHERE s.batch_id = v_batch AND s.status IS NULL;

    IF v_total = 0 THEN
        IF EXISTS (SELECT FROM aimroute.lead_staging s WHERE s.batch_id = v_batch) THEN
            RAISE NOTICE 'batch %: every row is already processed; nothing to do', v_batch;
        ELSE
            RAISE NOTICE 'batch % has no staged rows', pg_catalog.quote_literal(v_batch)
                USING HINT = 'Stage rows with INSERT or COPY INTO aimroute.lead_staging (batch_id, ...) first; the batch_id must match exactly, case and spaces included.';
        END IF;
    ELSE
        SELECT s.dedupe_window, s.default_dealer_number INTO v_window, v_default
          FROM aimroute.settings s;
        IF v_default IS NULL THEN
            RAISE EXCEPTION 'no default dealer is configured'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'An imported lead that no rule places goes to the default dealer.',
                      HINT = 'UPDATE aimroute.settings SET default_dealer_number = ''...'' (a dealer of aimroute.dealers), then process the batch again.';
        END IF;
        v_seq := pg_get_serial_sequence('aimroute.leads', 'lead_id')::regclass;
        IF NOT has_sequence_privilege(v_seq, 'USAGE, UPDATE') THEN
            RAISE EXCEPTION 'permission denied for sequence %', v_seq
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'aimroute.process_staging() draws each new lead''s lead_id from it.',
                      HINT = format('GRANT USAGE ON SEQUENCE %s TO %I, together with INSERT ON aimroute.leads.',
                                    v_seq, current_user);
        END IF;

        -- One row per staging row of the chunk: the lead it becomes
        -- (lead_id), or its problems, or the row it duplicates
        -- (duplicate_of; duplicate_lead_id is that row's lead if it has one
        -- yet, duplicate_reason the reason to record).
        CREATE TEMPORARY TABLE aimroute_staging_chunk (
            staging_id      bigint NOT NULL,
            received_at     timestamptz,
            source          text,
            brand_code      text,
            product_code    text,
            first_name      text,
            last_name       text,
            email           text,
            phone           text,
            address         text,
            city            text,
            state_code      text,
            country         text,
            postal_code     text,
            dealer_number   text,
            dealer_group    text,
            send_to_dealer  boolean,
            comment         text,
            problems        text,
            duplicate_of    bigint,
            duplicate_lead_id bigint,
            duplicate_reason text,
            lead_id         bigint,
            inserted        boolean NOT NULL DEFAULT false  -- only kept up to date once an INSERT failed
        ) ON COMMIT DROP;
    END IF;

    WHILE v_done < v_total LOOP
        v_now := clock_timestamp();

        -- 1. The chunk: the next chunk_size unprocessed rows, read once.
        --    Values are trimmed and parsed and problems listed; a row
        --    without problems is looked up among the earlier rows (the
        --    earliest staged identical row within the window that was not
        --    rejected: the rows of this chunk have not been marked yet, but
        --    an identical row has the same problems, none); a row that
        --    becomes a lead has its lead_id drawn, in staging order, so that
        --    the mapping is exact whatever order the INSERT works in.
        --    (The lookup is written so that only lead_staging_dedupe_idx
        --    can serve it: ORDER BY staging_id, or staging_id < ... as an
        --    index condition, tempts the planner into walking the primary
        --    key, every earlier row for every row, when the statistics say
        --    the table is empty, as after a TRUNCATE.)  The received_at
        --    values are cast all at once; should one not be a timestamp,
        --    the chunk is read again with each parsed on its own
        --    (staging_timestamptz: an exception block, a subtransaction,
        --    for every value).
        v_parse_each := false;
        LOOP
            BEGIN
                INSERT INTO pg_temp.aimroute_staging_chunk
                SELECT v.staging_id, v.received_at, v.source, v.brand_code, v.product_code, v.first_name,
                       v.last_name, v.email, v.phone, v.address, v.city, v.state_code, v.country,
                       v.postal_code, v.dealer_number, v.dealer_group, v.send_to_dealer, v.comment,
                       v.problems, v.duplicate_of, v.duplicate_lead_id, v.duplicate_reason,
                       CASE WHEN v.problems IS NULL AND v.duplicate_of IS NULL THEN nextval(v_seq) END
                  FROM (SELECT c.*, d.staging_id AS duplicate_of, d.lead_id AS duplicate_lead_id,
                               CASE WHEN d.staging_id IS NOT NULL THEN
                                   format('identical to staging row %s of batch %s, staged within the dedupe window of %s seconds',
                                          d.staging_id, pg_catalog.quote_literal(d.batch_id),
                                          round(extract(epoch FROM v_window)))
                               END AS duplicate_reason
                          FROM (SELECT t.staging_id, t.staged_at, t.input_md5,
                                       coalesce(t.parsed_received_at, t.staged_at) AS received_at,
                                       coalesce(t.source, 'import') AS source,
                                       t.brand_code, t.product_code, t.first_name, t.last_name, t.email, t.phone,
                                       t.address, t.city, t.state_code, t.country, t.postal_code, t.dealer_number,
                                       t.dealer_group, coalesce(t.parsed_send_to_dealer, true) AS send_to_dealer, t.comment,
                                       nullif(concat_ws('; ',
                                           CASE WHEN t.received_at IS NOT NULL AND t.parsed_received_at IS NULL THEN
                                               format('received_at %s is not a timestamp (write it as 2024-05-01 14:30:00+00)',
                                                      aimroute.staging_quote(t.received_at))
                                                WHEN t.parsed_received_at IN ('infinity', '-infinity') THEN
                                               format('received_at %s is not a finite timestamp', aimroute.staging_quote(t.received_at))
                                           END,
                                           CASE WHEN t.send_to_dealer IS NOT NULL AND t.parsed_send_to_dealer IS NULL THEN
                                               format('send_to_dealer %s is not a boolean (write true or false)',
                                                      aimroute.staging_quote(t.send_to_dealer))
                                           END,
                                           CASE WHEN t.email IS NOT NULL AND (length(t.email) > 254 OR t.email !~ email_pattern) THEN
                                               format('email %s is not an address (such as name@example.com)',
                                                      aimroute.staging_quote(t.email))
                                           END,
                                           CASE WHEN t.email IS NULL AND t.phone IS NULL THEN
                                               'no way to contact the customer: no email and no phone'
                                                WHEN t.email IS NULL
                                                     AND length(regexp_replace(t.phone, '[^0-9]', '', 'g')) < min_phone_digits THEN
                                               format('no way to contact the customer: no email, and phone %s has fewer than %s digits',
                                                      aimroute.staging_quote(t.phone), min_phone_digits)
                                           END,
                                           -- A value has at most as many characters as bytes:
                                           -- only a row with a value that long in bytes is
                                           -- measured in characters (the list below, NULL
                                           -- when none is too long).
                                           CASE WHEN octet_length(t.comment) > max_comment
                                                     OR greatest(octet_length(t.received_at), octet_length(t.source), octet_length(t.brand_code),
                                                                 octet_length(t.product_code), octet_length(t.first_name), octet_length(t.last_name),
                                                                 octet_length(t.email), octet_length(t.phone), octet_length(t.address), octet_length(t.city),
                                                                 octet_length(t.state_code), octet_length(t.country), octet_length(t.postal_code),
                                                                 octet_length(t.dealer_number), octet_length(t.dealer_group),
                                                                 octet_length(t.send_to_dealer)) > max_length THEN
                                               (SELECT string_agg(format('%s is too long (%s characters; at most %s)',
                                                                         f.name, length(f.value), f.max), '; ' ORDER BY f.n)
                                                  FROM (VALUES (1, 'received_at', t.received_at, max_length),
                                                               (2, 'source', t.source, max_length),
                                                               (3, 'brand_code', t.brand_code, max_length),
                                                               (4, 'product_code', t.product_code, max_length),
                                                               (5, 'first_name', t.first_name, max_length),
                                                               (6, 'last_name', t.last_name, max_length),
                                                               (7, 'email', t.email, max_length),
                                                               (8, 'phone', t.phone, max_length),
                                                               (9, 'address', t.address, max_length),
                                                               (10, 'city', t.city, max_length),
                                                               (11, 'state_code', t.state_code, max_length),
                                                               (12, 'country', t.country, max_length),
                                                               (13, 'postal_code', t.postal_code, max_length),
                                                               (14, 'dealer_number', t.dealer_number, max_length),
                                                               (15, 'dealer_group', t.dealer_group, max_length),
                                                               (16, 'send_to_dealer', t.send_to_dealer, max_length),
                                                               (17, 'comment', t.comment, max_comment)) AS f(n, name, value, max)
                                                 WHERE length(f.value) > f.max)
                                           END), '') AS problems
                                  FROM (SELECT t.*,
                                               CASE WHEN t.received_at IS NULL THEN NULL
                                                    WHEN v_parse_each THEN aimroute.staging_timestamptz(t.received_at)
                                                    ELSE t.received_at::timestamptz END AS parsed_received_at,
                                               CASE WHEN lower(t.send_to_dealer)
                                                         ~ '^(t|tr|tru|true|y|ye|yes|on|1|f|fa|fal|fals|false|n|no|of|off|0)$'
                                                    THEN t.send_to_dealer::boolean END AS parsed_send_to_dealer
                                          FROM (SELECT s.staging_id, s.staged_at, s.input_md5,
                                                       aimroute.staging_value(s.received_at) AS received_at,
                                                       aimroute.staging_value(s.source) AS source,
                                                       aimroute.staging_value(s.brand_code) AS brand_code,
                                                       aimroute.staging_value(s.product_code) AS product_code,
                                                       aimroute.staging_value(s.first_name) AS first_name,
                                                       aimroute.staging_value(s.last_name) AS last_name,
                                                       aimroute.staging_value(s.email) AS email,
                                                       aimroute.staging_value(s.phone) AS phone,
                                                       aimroute.staging_value(s.address) AS address,
                                                       aimroute.staging_value(s.city) AS city,
                                                       aimroute.staging_value(s.state_code) AS state_code,
                                                       aimroute.staging_value(s.country) AS country,
                                                       aimroute.staging_value(s.postal_code) AS postal_code,
                                                       aimroute.staging_value(s.dealer_number) AS dealer_number,
                                                       aimroute.staging_value(s.dealer_group) AS dealer_group,
                                                       aimroute.staging_value(s.send_to_dealer) AS send_to_dealer,
                                                       aimroute.staging_value(s.comment) AS comment
                                                  FROM aimroute.lead_staging s
                                                 WHERE s.batch_id = v_batch AND s.status IS NULL AND s.staging_id > v_last
                                                 ORDER BY s.staging_id
                                                 LIMIT chunk_size) AS t
                                          OFFSET 0) AS t
                                OFFSET 0) AS c
                          LEFT JOIN LATERAL (SELECT e.staging_id, e.batch_id, e.lead_id
                                               FROM aimroute.lead_staging e
                                              WHERE c.problems IS NULL AND v_window > '0'
                                                AND e.input_md5 COLLATE "C" = c.input_md5
                                                AND e.staged_at >= c.staged_at - v_window
                                                AND e.staged_at <= c.staged_at + v_window
                                                AND e.staging_id + 0 < c.staging_id
                                                AND e.status IS DISTINCT FROM 'rejected'
                                              ORDER BY e.staged_at, e.staging_id
                                              LIMIT 1) AS d ON true
                         ORDER BY c.staging_id
                        OFFSET 0) AS v;
                GET DIAGNOSTICS v_rows = ROW_COUNT;
                EXIT;
            EXCEPTION WHEN data_exception THEN
                -- A received_at that is not a timestamp: read the chunk
                -- again, each received_at on its own.
                IF v_parse_each THEN
                    RAISE;
                END IF;
                v_parse_each := true;
            END;
        END LOOP;
        EXIT WHEN v_rows = 0;   -- someone changed status by hand meanwhile
        SELECT min(c.staging_id), max(c.staging_id) INTO v_lo, v_hi
          FROM pg_temp.aimroute_staging_chunk c;

        -- 2. The leads: the whole chunk in one INSERT ... SELECT, which
        --    routes each row.  Should it fail because of a row, it is
        --    tried again in pieces of piece_size leads, and the leads of a
        --    piece that fails one at a time, each in its own
        --    subtransaction; a lead that cannot be inserted rejects its row.
        v_failed := false;
        FOREACH v_step IN ARRAY ARRAY[0, piece_size, 1] LOOP
            FOR r IN SELECT coalesce(c.lead_id / nullif(v_step, 0), 0) AS piece
                       FROM pg_temp.aimroute_staging_chunk c
                      WHERE c.lead_id IS NOT NULL AND NOT c.inserted
                      GROUP BY 1 ORDER BY 1
            LOOP
                BEGIN
                    INSERT INTO aimroute.leads (lead_id, received_at, source, brand_code, product_code,
                                                first_name, last_name, email, phone, address, city,
                                                state_code, country, postal_code, dealer_number,
                                                dealer_group, send_to_dealer, comment)
                    OVERRIDING SYSTEM VALUE
                    SELECT c.lead_id, c.received_at, c.source, c.brand_code, c.product_code,
                           c.first_name, c.last_name, c.email, c.phone, c.address, c.city,
                           c.state_code, c.country, c.postal_code, c.dealer_number,
                           c.dealer_group, c.send_to_dealer, c.comment
                      FROM pg_temp.aimroute_staging_chunk c
                     WHERE c.lead_id IS NOT NULL AND NOT c.inserted
                       AND (v_step = 0 OR c.lead_id / nullif(v_step, 0) = r.piece)
                     ORDER BY c.staging_id;
                    IF v_failed THEN
                        UPDATE pg_temp.aimroute_staging_chunk c SET inserted = true
                         WHERE c.lead_id IS NOT NULL AND c.lead_id / v_step = r.piece;
                    END IF;
                EXCEPTION WHEN OTHERS THEN
                    IF NOT aimroute.staging_error_is_row_level(SQLSTATE) THEN
                        RAISE;
                    END IF;
                    IF v_step = 0 THEN
                        v_failed := true;
                        RAISE WARNING 'batch %: inserting a chunk of % leads failed: %', v_batch,
                            (SELECT count(*) FROM pg_temp.aimroute_staging_chunk c WHERE c.lead_id IS NOT NULL),
                            SQLERRM
                            USING DETAIL = format('The leads of the chunk (staging_id %s to %s) are inserted again %s at a time, and those of a piece that fails one at a time; a lead that fails rejects its row, with the error as reason.',
                                                  v_lo, v_hi, piece_size);
                    ELSIF v_step = 1 THEN
                        UPDATE pg_temp.aimroute_staging_chunk c
                           SET lead_id = NULL,
                               problems = format('could not become a lead: %s (SQLSTATE %s)', SQLERRM, SQLSTATE)
                         WHERE c.lead_id = r.piece;
                    END IF;
                END;
            END LOOP;
            EXIT WHEN NOT v_failed;
        END LOOP;

        -- 3. Every row's outcome, in one UPDATE.  A duplicate of a row of
        --    this chunk gets that row's lead here; one of a row still
        --    waiting, or rejected in step 2, is settled in step 4.
        WITH outcome AS (
            UPDATE aimroute.lead_staging s
               SET status = CASE WHEN c.problems IS NOT NULL THEN 'rejected'
                                 WHEN c.duplicate_of IS NOT NULL THEN 'duplicate'
                                 ELSE 'processed' END,
                   lead_id = CASE WHEN c.problems IS NULL
                                  THEN coalesce(c.lead_id, c.duplicate_lead_id, o.lead_id, o.duplicate_lead_id) END,
                   duplicate_of = c.duplicate_of,
                   reason = coalesce(c.problems, c.duplicate_reason),
                   processed_at = v_now
              FROM pg_temp.aimroute_staging_chunk c
              LEFT JOIN pg_temp.aimroute_staging_chunk o ON o.staging_id = c.duplicate_of
             WHERE s.staging_id = c.staging_id AND s.staging_id >= v_lo AND s.staging_id <= v_hi
            RETURNING s.status)
        SELECT v_leads + count(*) FILTER (WHERE o.status = 'processed'),
               v_rejected + count(*) FILTER (WHERE o.status = 'rejected'),
               v_duplicates + count(*) FILTER (WHERE o.status = 'duplicate')
          INTO v_leads, v_rejected, v_duplicates
          FROM outcome o;
        v_done := v_done + v_rows;

        -- 4. Duplicates waiting for a lead, in any batch, of a row of
        --    this chunk: they get the lead of the row they duplicate, or
        --    its rejection.  Then those waiting for one of them, and so on:
        --    chains take one round per link.
        v_settled := NULL;
        LOOP
            WITH settled AS (
                UPDATE aimroute.lead_staging d
                   SET lead_id = o.lead_id,
                       status = CASE WHEN o.lead_id IS NULL THEN 'rejected' ELSE d.status END,
                       reason = CASE WHEN o.lead_id IS NULL
                                     THEN format('identical to staging row %s, which was rejected: %s', o.staging_id, o.reason)
                                     ELSE d.reason END
                  FROM aimroute.lead_staging o
                 WHERE d.duplicate_of >= coalesce(v_settled[1], v_lo)
                   AND d.duplicate_of <= coalesce(v_settled[cardinality(v_settled)], v_hi)
                   AND (v_settled IS NULL OR d.duplicate_of = ANY (v_settled))
                   AND d.status = 'duplicate' AND d.lead_id IS NULL
                   AND o.staging_id = d.duplicate_of AND (o.lead_id IS NOT NULL OR o.status = 'rejected')
                RETURNING d.staging_id, d.status)
            SELECT array_agg(x.staging_id ORDER BY x.staging_id), count(*) FILTER (WHERE x.status = 'rejected')
              INTO v_settled, v_rows
              FROM settled x;
            EXIT WHEN v_settled IS NULL;
            IF v_rows > 0 THEN
                -- Rejected with the row they duplicate (rejected in step 2):
                -- the counts below are taken again.
                v_failed := true;
            END IF;
        END LOOP;

        -- Progress.
        IF v_failed THEN
            SELECT count(*) FILTER (WHERE s.status = 'processed'),
                   count(*) FILTER (WHERE s.status = 'rejected'),
                   count(*) FILTER (WHERE s.status = 'duplicate')
              INTO v_leads, v_rejected, v_duplicates
              FROM aimroute.lead_staging s
             WHERE s.batch_id = v_batch AND s.staging_id <= v_hi AND s.processed_at >= v_started;
        END IF;
        RAISE NOTICE 'batch %: % of % rows, % leads, % rejected, % duplicates',
            v_batch, v_done, v_total, v_leads, v_rejected, v_duplicates;

        v_last := v_hi;
        TRUNCATE pg_temp.aimroute_staging_chunk;
    END LOOP;

    IF v_total > 0 THEN
        DROP TABLE pg_temp.aimroute_staging_chunk;
    END IF;

    -- The counts of the chunks: what step 3 marked, taken again after a
    -- chunk where step 4 rejected some of those rows.  (Step 4 of a later
    -- chunk cannot change them: a row only duplicates earlier rows.)
    RETURN QUERY VALUES ('processed', v_leads), ('rejected', v_rejected), ('duplicate', v_duplicates);
END
$$;
COMMENT ON FUNCTION aimroute.process_staging(text) IS
    'Bulk import: validates every unprocessed row of a batch of aimroute.lead_staging, inserts the valid ones into aimroute.leads (routing them) and marks each row processed, rejected or duplicate; returns how many rows of this call ended in each status.';
REVOKE EXECUTE ON FUNCTION aimroute.process_staging(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.process_staging(text) TO aimroute_admin;
