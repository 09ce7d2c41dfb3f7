--
-- demo/show.sql: what was set up — the postal data, the brands, the dealer
-- network, territories, the default dealer, the dealers nearest to a sample
-- ZIP code, and the last postal-code load.
--
--     psql -d aimroute -f demo/show.sql
--     psql -d aimroute -v sample_zip=80202 -f demo/show.sql   (another ZIP)
--     psql -d aimroute -v sample_country=CA -v sample_zip=K1A -f demo/show.sql
--
\set QUIET 1
\pset footer off
\pset null '-'
\if :{?sample_country}
\else
\set sample_country US
\endif
\if :{?sample_zip}
\else
\set sample_zip 49757
\endif

\echo
\echo '== Postal codes =='
SELECT country,
       count(*)                                        AS postal_codes,
       count(*) FILTER (WHERE centroid IS NULL)        AS without_centre_point,
       count(*) FILTER (WHERE state_code IS NULL)      AS without_state_code,
       count(DISTINCT state_code)                      AS states_or_provinces
  FROM aimroute.postal_codes
 GROUP BY country
 ORDER BY country;

\echo '== Brands =='
SELECT b.brand_code                                                   AS brand,
       b.name,
       count(DISTINCT db.dealer_number)                               AS dealers,
       (SELECT count(DISTINCT pa.product_code)
          FROM aimroute.product_assignments pa
         WHERE pa.product_code LIKE b.brand_code || '-%')             AS products,
       (SELECT coalesce(sum(i.quantity), 0)
          FROM aimroute.inventory i
         WHERE i.product_code LIKE b.brand_code || '-%')              AS units_in_stock
  FROM aimroute.brands b
  LEFT JOIN aimroute.dealer_brands db ON db.brand_code = b.brand_code
 GROUP BY b.brand_code, b.name
 ORDER BY b.brand_code;

\echo '== Dealers by country and brand =='
SELECT d.country,
       CASE WHEN grouping(db.brand_code) = 1 THEN 'all dealers'
            ELSE coalesce(db.brand_code, 'sells none') END                          AS brand,
       count(DISTINCT d.dealer_number) FILTER (WHERE d.active_for_sales)          AS active,
       count(DISTINCT d.dealer_number) FILTER (WHERE NOT d.active_for_sales)      AS inactive,
       count(DISTINCT d.dealer_number) FILTER (WHERE d.dealer_group IS NOT NULL)  AS in_a_group,
       count(DISTINCT d.dealer_number)                                            AS total
  FROM aimroute.dealers d
  LEFT JOIN aimroute.dealer_brands db ON db.dealer_number = d.dealer_number
 GROUP BY GROUPING SETS ((d.country, db.brand_code), (d.country))
 ORDER BY d.country, grouping(db.brand_code), db.brand_code NULLS LAST;

\echo '== Dealer groups =='
SELECT dealer_group,
       string_agg(DISTINCT country, ', ')                      AS countries,
       count(*)                                                AS dealers,
       string_agg(DISTINCT state_code, ' ' ORDER BY state_code) AS states
  FROM aimroute.dealers
 WHERE dealer_group IS NOT NULL
 GROUP BY dealer_group
 ORDER BY dealer_group;

\echo '== Territories =='
SELECT t.kind,
       CASE WHEN t.brand_code IS NULL THEN 'all brands' ELSE 'one brand' END AS scope,
       count(*)                                                            AS territories,
       count(DISTINCT t.dealer_number)                                     AS dealers,
       array_to_string((array_agg(t.country || ' ' || t.code
                                  || coalesce(' (' || t.brand_code || ')', '')
                                  ORDER BY t.country DESC, t.code))[1:3], ', ')
           || CASE WHEN count(*) > 3 THEN ', ...' ELSE '' END              AS for_example
  FROM aimroute.territories t
 GROUP BY t.kind, t.brand_code IS NULL
 ORDER BY array_position(ARRAY['postal', 'county', 'state', 'country'], t.kind),
          t.brand_code IS NULL DESC;

\echo '== Default dealer (settings.default_dealer_number) =='
SELECT s.default_dealer_number AS dealer_number,
       d.name,
       d.country,
       d.postal_code,
       d.state_code,
       d.active_for_sales
  FROM aimroute.settings s
  LEFT JOIN aimroute.dealers d ON d.dealer_number = s.default_dealer_number;

\echo '== The ten dealers nearest to' :sample_country :sample_zip '(as the crow flies; routing never crosses a country line) =='
SELECT row_number() OVER (ORDER BY n.miles, n.dealer_number)   AS "#",
       n.dealer_number,
       n.name,
       n.country,
       n.postal_code,
       n.state_code                                              AS state,
       (SELECT string_agg(db.brand_code, ' ' ORDER BY db.brand_code)
          FROM aimroute.dealer_brands db
         WHERE db.dealer_number = n.dealer_number)                AS brands,
       CASE WHEN n.active_for_sales THEN 'yes' ELSE 'no' END      AS active,
       round(n.miles::numeric, 1)                                 AS miles
  FROM (SELECT d.*,
               aimroute.dealer_distance_miles(p.country, p.postal_code, d.dealer_number) AS miles
          FROM aimroute.postal_codes p
          JOIN aimroute.dealers d ON d.location IS NOT NULL
         WHERE p.country = aimroute.normalize_country(:'sample_country')
           AND p.postal_code = aimroute.normalize_postal_code(
                                   aimroute.normalize_country(:'sample_country'), :'sample_zip')
         ORDER BY miles, d.dealer_number
         LIMIT 10) n
 ORDER BY n.miles, n.dealer_number;

\echo '== Latest postal-code load (aimroute.postal_code_loads) =='
\x on
SELECT l.load_id,
       regexp_replace(l.path, '^.*/', '')                                   AS file,
       l.format,
       date_trunc('second', l.finished_at)                                  AS finished_at,
       round(extract(epoch FROM l.finished_at - l.started_at)::numeric, 1)  AS seconds,
       l.rows_loaded,
       l.rows_flawed                                                        AS loaded_with_a_flaw,
       l.rows_rejected                                                      AS rejected,
       (SELECT array_to_string((array_agg(coalesce(i.postal_code, 'line ' || i.line_number)
                                          ORDER BY i.line_number))[1:12], ' ')
               || CASE WHEN count(*) > 12 THEN format(' ... (%s in all)', count(*)) ELSE '' END
          FROM aimroute.postal_code_load_issues i
         WHERE i.load_id = l.load_id AND NOT i.rejected)                    AS flawed_codes,
       (SELECT array_to_string((array_agg(coalesce(i.postal_code, 'line ' || i.line_number)
                                          ORDER BY i.line_number))[1:12], ' ')
               || CASE WHEN count(*) > 12 THEN format(' ... (%s in all)', count(*)) ELSE '' END
          FROM aimroute.postal_code_load_issues i
         WHERE i.load_id = l.load_id AND i.rejected)                        AS rejected_codes,
       'SELECT * FROM aimroute.postal_code_load_issues WHERE load_id = ' || l.load_id AS details
  FROM aimroute.postal_code_loads l
 ORDER BY l.load_id DESC
 LIMIT 1;
\x off
