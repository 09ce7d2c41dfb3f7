--
-- Re-route deadlines (src/reroute.c; docs/rerouting.md has the rules and
-- examples).  The routing trigger computes the deadline in C with the same
-- code; these functions give SQL, the tests and the re-route worker the
-- same answer.
--

CREATE FUNCTION aimroute.reroute_deadline(assigned_at timestamptz, reroute_after interval,
                                          skip_days integer[], timezone text)
RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'aimroute_reroute_deadline'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.reroute_deadline(timestamptz, interval, integer[], text) IS
    'assigned_at + reroute_after in time zone timezone, moved to the same local time of the next day that is not a skip day (ISO weekdays).';

CREATE FUNCTION aimroute.reroute_due_at(assigned_at timestamptz)
RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN s.reroute_enabled
                THEN aimroute.reroute_deadline(assigned_at, s.reroute_after, s.reroute_skip_days, s.timezone)
           END
      FROM aimroute.settings s
$$;
COMMENT ON FUNCTION aimroute.reroute_due_at(timestamptz) IS
    'The re-route deadline of a lead assigned at assigned_at under the current settings; NULL when re-routing is off.';
