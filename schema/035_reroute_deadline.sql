--
-- Re-route deadlines (src/reroute.c; docs/rerouting.md has the rules and
-- examples).  The routing trigger computes the deadline in C with the same
-- code; these functions give SQL, the tests and the re-route worker the
-- same answer.  With settings.reroute_clock = 'business_hours' the
-- deadline counts the open time of the dealer holding the lead
-- (dealers.business_hours, src/opening_hours.c).
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

CREATE FUNCTION aimroute.business_hours_deadline(assigned_at timestamptz, reroute_after interval,
                                                 business_hours text, timezone text,
                                                 skip_days integer[])
RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'aimroute_business_hours_deadline'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.business_hours_deadline(timestamptz, interval, text, text, integer[]) IS
    'The moment reroute_after of open time (business_hours, an OpenStreetMap opening_hours value, in time zone timezone; days of 24 hours) has passed since assigned_at, skip days (ISO weekdays) counting none; NULL when no day that is not skipped is open.';

CREATE FUNCTION aimroute.reroute_due_at(assigned_at timestamptz, dealer_number text)
RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN s.reroute_enabled
                THEN coalesce(CASE WHEN s.reroute_clock = 'business_hours'
                                   THEN (SELECT aimroute.business_hours_deadline(
                                                    assigned_at, s.reroute_after, d.business_hours,
                                                    coalesce(d.timezone, s.timezone), s.reroute_skip_days)
                                           FROM aimroute.dealers d
                                          WHERE d.dealer_number = reroute_due_at.dealer_number) END,
                              aimroute.reroute_deadline(assigned_at, s.reroute_after, s.reroute_skip_days, s.timezone))
           END
      FROM aimroute.settings s
$$;
COMMENT ON FUNCTION aimroute.reroute_due_at(timestamptz, text) IS
    'The re-route deadline of a lead assigned to dealer dealer_number at assigned_at under the current settings (settings.reroute_clock); NULL when re-routing is off.';
