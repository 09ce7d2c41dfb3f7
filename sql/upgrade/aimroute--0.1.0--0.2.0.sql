--
-- aimroute 0.1.0 -> 0.2.0
--
-- Every change that 0.2.0 makes to the schema of 0.1.0, in the order the
-- install script (schema/*.sql) makes it.  A test (t/009_upgrade.pl)
-- installs releases/aimroute--0.1.0.sql, fills it, runs ALTER EXTENSION
-- aimroute UPDATE and compares the catalogs with a fresh 0.2.0 install:
-- what is missing here shows as a difference there.  See docs/upgrading.md.
--
\echo Use "ALTER EXTENSION aimroute UPDATE TO '0.2.0'" to load this file. \quit

-- Like the install script, run with pg_catalog first and pg_temp last, so
-- that no object of the session's is taken for one of aimroute's.
DO $upgrade$
BEGIN
    PERFORM pg_catalog.set_config('search_path',
        pg_catalog.format('pg_catalog, aimroute, %I, pg_temp',
                          (SELECT n.nspname
                             FROM pg_catalog.pg_extension e
                             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                            WHERE e.extname = 'postgis')),
        true);
END
$upgrade$;

-- Re-routing with PostGIS outside schema aimroute (issue 14, defect 1): the
-- distance to the default dealer is measured by dealer_distance_miles,
-- which finds PostGIS wherever it was installed.
CREATE OR REPLACE FUNCTION aimroute.reroute_lead(lead aimroute.leads, s aimroute.settings)
RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    held text[];
    d aimroute.routing_decision;
    why text;
BEGIN
    SELECT array_agg(DISTINCT x) INTO held
      FROM (SELECT lead.dealer_number
            UNION ALL SELECT h.from_dealer FROM aimroute.lead_history h WHERE h.lead_id = lead.lead_id
            UNION ALL SELECT h.to_dealer FROM aimroute.lead_history h WHERE h.lead_id = lead.lead_id) AS t(x)
     WHERE x IS NOT NULL;
    why := format('not viewed by dealer %s by %s', lead.dealer_number,
                  to_char(lead.reroute_due_at AT TIME ZONE s.timezone, 'YYYY-MM-DD HH24:MI:SS')
                  || ' ' || s.timezone);
    IF lead.reroute_count >= s.reroute_max_dealers THEN
        PERFORM aimroute.move_lead(lead.lead_id, s.default_dealer_number, 'Default',
            aimroute.dealer_distance_miles(lead.country, lead.postal_code, s.default_dealer_number),
            'Re-Route', format('%s; re-routed %s times already (reroute_max_dealers %s): default dealer',
                               why, lead.reroute_count, s.reroute_max_dealers));
    ELSE
        d := aimroute.route(lead.country, lead.postal_code, lead.brand_code, lead.product_code,
                            NULL, lead.dealer_group, held, lead.state_code);
        PERFORM aimroute.move_lead(lead.lead_id, d.dealer_number,
            CASE WHEN d.match_type = 'Default' THEN 'Default' ELSE 'Re-Route' END::aimroute.match_type,
            d.distance_miles, 'Re-Route',
            format('%s; excluded every dealer that held it (%s)', why, array_to_string(held, ', ')),
            d.steps);
    END IF;
    UPDATE aimroute.leads l SET reroute_count = l.reroute_count + 1 WHERE l.lead_id = lead.lead_id;
END
$$;
