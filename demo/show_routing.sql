--
-- demo/show_routing.sql: where the leads went, and why — leads per match
-- type, per country, the busiest dealers, the Batchawana Bay lead and one
-- lead of each other kind with its explanation, and the dealer locator.
--
--     psql -d aimroute -f demo/show_routing.sql
--
-- The counts cover every lead in aimroute.leads; the examples are demo
-- leads (comment = 'demo', from demo/leads.sql).  Distances are miles as
-- the crow flies.  docs/routing.md explains the rules and how to read an
-- explanation.
--
\set QUIET 1
\pset footer off
\pset null ''

-- One line naming a lead: where from, what, and where it went.
CREATE OR REPLACE FUNCTION pg_temp.lead_line(id bigint) RETURNS text
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce(
        (SELECT format('lead %s: %s, %s %s, brand %s%s%s (%s) -> %s, %s%s',
                       l.lead_id, coalesce(nullif(l.city, ''), '-'), l.country_input,
                       coalesce(nullif(btrim(l.postal_code_input), ''), '(blank postal code)'),
                       coalesce(l.brand_code, '-'),
                       coalesce(' ' || l.product_code, ''),
                       coalesce(', pre-assigned to ' || l.dealer_number_input, '')
                           || coalesce(', dealer group ' || l.dealer_group, ''),
                       l.source, l.dealer_number, l.match_type,
                       coalesce(' at ' || round(l.distance_miles::numeric, 1) || ' miles', ''))
           FROM aimroute.leads l WHERE l.lead_id = id),
        '(no such lead in this batch)')
    $$;

-- A lead's explanation, distances rounded.
CREATE OR REPLACE FUNCTION pg_temp.explain(id bigint)
RETURNS TABLE (step integer, rule text, message text, dealer text, miles numeric)
    LANGUAGE sql STABLE
    AS $$
    SELECT e.step, e.rule, e.message, e.dealer_number, round(e.distance_miles::numeric, 1)
      FROM aimroute.explain_lead(id) e
    $$;

\echo
\echo '== Leads by match type (miles from the lead''s postal code to its dealer) =='
SELECT l.match_type,
       count(*)                                                        AS leads,
       round(100.0 * count(*) / sum(count(*)) OVER (), 1)              AS "%",
       round(avg(l.distance_miles)::numeric, 1)                        AS avg_miles,
       round(max(l.distance_miles)::numeric, 1)                        AS max_miles,
       count(*) FILTER (WHERE l.distance_miles IS NULL)                AS no_distance
  FROM aimroute.leads l
 GROUP BY l.match_type
 ORDER BY count(*) DESC, l.match_type;

\echo '== Leads by country and match type (columns in the order the rules are tried) =='
SELECT coalesce(l.country, 'unknown')                                  AS country,
       count(*)                                                        AS leads,
       count(*) FILTER (WHERE l.match_type = 'Pre-assigned')           AS "Pre-assigned",
       count(*) FILTER (WHERE l.match_type = 'Dealer Group')           AS "Dealer Group",
       count(*) FILTER (WHERE l.match_type = 'Inventory')              AS "Inventory",
       count(*) FILTER (WHERE l.match_type = 'Territory')              AS "Territory",
       count(*) FILTER (WHERE l.match_type = 'Radius')                 AS "Radius",
       count(*) FILTER (WHERE l.match_type = 'Default')                AS "Default",
       count(*) FILTER (WHERE l.match_type IN ('Reassigned', 'Re-Route')) AS "moved later"
  FROM aimroute.leads l
 GROUP BY l.country
 ORDER BY l.country NULLS LAST;

\echo '== The dealers with the most leads =='
SELECT l.dealer_number                                                 AS dealer,
       d.name,
       d.state_code                                                    AS state,
       count(*)                                                        AS leads,
       (SELECT string_agg(format('%s %s', m.match_type, m.n), ', ' ORDER BY m.n DESC, m.match_type)
          FROM (SELECT x.match_type, count(*) AS n FROM aimroute.leads x
                 WHERE x.dealer_number = l.dealer_number GROUP BY x.match_type) m) AS how,
       round(avg(l.distance_miles)::numeric, 1)                        AS avg_miles
  FROM aimroute.leads l
  JOIN aimroute.dealers d ON d.dealer_number = l.dealer_number
 GROUP BY l.dealer_number, d.name, d.state_code
 ORDER BY count(*) DESC, l.dealer_number COLLATE "C"
 LIMIT 8;

SELECT count(*) FILTER (WHERE d.active_for_sales)                      AS active_dealers,
       count(*) FILTER (WHERE d.active_for_sales AND EXISTS
                  (SELECT FROM aimroute.leads l WHERE l.dealer_number = d.dealer_number)) AS with_leads,
       count(*) FILTER (WHERE d.active_for_sales AND NOT EXISTS
                  (SELECT FROM aimroute.leads l WHERE l.dealer_number = d.dealer_number)) AS without_leads
  FROM aimroute.dealers d;

\echo '== A Loonwater Boats lead from Batchawana Bay, Ontario: never across the border =='
SELECT l.lead_id                                                       AS lead,
       l.postal_code_input                                             AS postal_code,
       l.brand_code                                                    AS brand,
       l.dealer_number || ' ' || d.name                                AS routed_to,
       l.match_type,
       round(l.distance_miles::numeric, 1)                             AS miles,
       (SELECT format('US-0001 Mackinac Island Marine, %s miles', round(aimroute.dealer_distance_miles(p.country, p.postal_code, u.dealer_number)::numeric, 1))
          FROM aimroute.dealers u, aimroute.postal_codes p
         WHERE u.dealer_number = 'US-0001' AND p.country = l.country AND p.postal_code = l.postal_code)
                                                                       AS closer_but_in_the_us
  FROM aimroute.leads l
  JOIN aimroute.dealers d ON d.dealer_number = l.dealer_number
 WHERE l.comment = 'demo' AND l.city = 'Batchawana Bay'
 ORDER BY l.lead_id
 LIMIT 1;

SELECT e.step, e.rule, e.message, e.dealer_number AS dealer, round(e.distance_miles::numeric, 1) AS miles
  FROM aimroute.explain_lead((SELECT min(lead_id) FROM aimroute.leads
                               WHERE comment = 'demo' AND city = 'Batchawana Bay')) e;

\echo '== One lead of each other kind, explained: SELECT * FROM aimroute.explain_lead(lead_id) =='
\echo

SELECT pg_temp.lead_line(min(l.lead_id)) AS line, coalesce(min(l.lead_id), 0) AS example
  FROM aimroute.leads l
 WHERE l.comment = 'demo' AND l.match_type = 'Territory' AND l.country = 'US' \gset
\echo 'Territory. The closest dealer holding a territory that contains the lead:'
\echo :line
SELECT * FROM pg_temp.explain(:example);

SELECT pg_temp.lead_line(min(l.lead_id)) AS line, coalesce(min(l.lead_id), 0) AS example
  FROM aimroute.leads l
 WHERE l.comment = 'demo' AND l.match_type = 'Radius' AND l.dealer_number_input IS NULL
   AND (SELECT count(*) FROM aimroute.explain_lead(l.lead_id) e WHERE e.message LIKE 'candidate%') >= 2 \gset
\echo 'Radius. No territory: the closest dealer of the same country within the radius:'
\echo :line
SELECT * FROM pg_temp.explain(:example);

SELECT pg_temp.lead_line(min(l.lead_id)) AS line, coalesce(min(l.lead_id), 0) AS example
  FROM aimroute.leads l
 WHERE l.comment = 'demo' AND l.match_type = 'Dealer Group' \gset
\echo 'Dealer Group. The closest dealer of the lead''s group in its country:'
\echo :line
SELECT * FROM pg_temp.explain(:example);

SELECT pg_temp.lead_line(min(l.lead_id)) AS line, coalesce(min(l.lead_id), 0) AS example
  FROM aimroute.leads l
 WHERE l.comment = 'demo' AND l.match_type = 'Pre-assigned' AND l.distance_miles < 100 \gset
\echo 'Pre-assigned. The lead named an active dealer that sells its brand:'
\echo :line
SELECT * FROM pg_temp.explain(:example);

SELECT pg_temp.lead_line(min(l.lead_id)) AS line, coalesce(min(l.lead_id), 0) AS example
  FROM aimroute.leads l
 WHERE l.comment = 'demo' AND l.dealer_number_input IS NOT NULL
   AND NOT EXISTS (SELECT FROM aimroute.dealers d WHERE d.dealer_number = l.dealer_number_input) \gset
\echo 'Pre-assigned to a dealer that does not exist: logged, then routed by the rules:'
\echo :line
SELECT * FROM pg_temp.explain(:example);

SELECT pg_temp.lead_line(min(l.lead_id)) AS line, coalesce(min(l.lead_id), 0) AS example
  FROM aimroute.leads l
 WHERE l.comment = 'demo' AND l.match_type = 'Default' AND l.postal_code_input = '1234X' \gset
\echo 'Default. A bad postal code: no centre point, so no distance to any dealer:'
\echo :line
SELECT * FROM pg_temp.explain(:example);

\echo '== Find a Dealer: SELECT * FROM aimroute.locate_dealers(''US'', ''49757'', ''LWB'') =='
\echo '   Rank 1 is the dealer a Loonwater lead from Mackinac Island gets; ranks 2.. the order of re-routing.'
SELECT f.rank, f.dealer_number, f.name, round(f.distance_miles::numeric, 1) AS miles, f.match_type
  FROM aimroute.locate_dealers('US', '49757', 'LWB') f
 ORDER BY f.rank;
