--
-- Coverage and white space (SPEC section 9, docs/coverage.md): where a
-- lead from every postal code with a centre point would go, computed by
-- the routing core itself (C, src/coverage.c), and what it says about the
-- dealer network: the white space (postal codes that fall to the default
-- dealer) by state or province, and each dealer's effective area.
--
-- Who may run them: admins and region users.  Coverage shows nothing a
-- region user cannot already read (dealers, territories, postal codes and
-- settings are readable by both scoped roles), and a region manager plans
-- the network of its region; the leads counted by white_space() are those
-- row-level security lets the caller see (SECURITY INVOKER).  Dealer users
-- are left out: a whole-network computation of a second or two per call
-- is not what a dealer's login needs.
--

CREATE FUNCTION aimroute.coverage(brand_code text, country text DEFAULT NULL)
RETURNS TABLE (country text, postal_code text, state_code text, county text,
               dealer_number text, match_type aimroute.match_type,
               distance_miles double precision)
    AS 'MODULE_PATHNAME', 'aimroute_coverage'
    LANGUAGE C STABLE PARALLEL SAFE ROWS 50000;
COMMENT ON FUNCTION aimroute.coverage(text, text) IS
    'For every postal code with a centre point (of the country, or of every country when NULL), where a lead of the brand from there would go under the current configuration -- no product, no dealer group, no pre-assigned dealer -- routed by the routing core itself: dealer, match type (Default is white space) and miles. Inside BEGIN ... ROLLBACK after a configuration change it answers "what if".';
REVOKE EXECUTE ON FUNCTION aimroute.coverage(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.coverage(text, text) TO aimroute_admin, aimroute_region;

CREATE FUNCTION aimroute.coverage_geojson(brand_code text, country text DEFAULT NULL)
RETURNS json
    AS 'MODULE_PATHNAME', 'aimroute_coverage_geojson'
    LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION aimroute.coverage_geojson(text, text) IS
    'aimroute.coverage() as a GeoJSON FeatureCollection (RFC 7946, json, one feature per line): a Point at each postal centre (longitude, latitude) with properties country, postal_code, state_code, county, dealer_number, match_type, distance_miles and white_space.';
REVOKE EXECUTE ON FUNCTION aimroute.coverage_geojson(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.coverage_geojson(text, text) TO aimroute_admin, aimroute_region;

--
-- white_space: by state or province, the postal codes that fall to the
-- default dealer, and the stored leads of the last 30 days that went to it.
--
CREATE FUNCTION aimroute.white_space(brand_code text, country text DEFAULT NULL)
RETURNS TABLE (country text, state_code text, postal_codes bigint,
               white_space_postal_codes bigint, white_space_percent numeric,
               leads_30_days bigint, default_dealer_leads_30_days bigint)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH areas AS (
        SELECT c.country, c.state_code, count(*) AS postal_codes,
               count(*) FILTER (WHERE c.match_type = 'Default') AS white
          FROM aimroute.coverage(white_space.brand_code, white_space.country) c
         GROUP BY c.country, c.state_code
    ), leads AS (
        SELECT l.country, coalesce(p.state_code, upper(btrim(l.state_code))) AS state_code,
               count(*) AS leads,
               count(*) FILTER (WHERE l.dealer_number = s.default_dealer_number) AS defaulted
          FROM aimroute.leads l
          CROSS JOIN aimroute.settings s
          LEFT JOIN aimroute.postal_codes p ON p.country = l.country AND p.postal_code = l.postal_code
         WHERE l.brand_code = white_space.brand_code
           AND l.received_at >= now() - interval '30 days'
           AND (white_space.country IS NULL
                OR l.country = aimroute.normalize_country(white_space.country))
         GROUP BY 1, 2
    )
    SELECT coalesce(a.country, l.country), coalesce(a.state_code, l.state_code),
           coalesce(a.postal_codes, 0), coalesce(a.white, 0),
           CASE WHEN a.postal_codes > 0 THEN round(100.0 * a.white / a.postal_codes, 1) END,
           coalesce(l.leads, 0), coalesce(l.defaulted, 0)
      FROM areas a
      -- NULL (an unknown country or state) meets NULL: the keys are coalesced.
      FULL JOIN leads l ON coalesce(l.country, '') = coalesce(a.country, '')
                       AND coalesce(l.state_code, '') = coalesce(a.state_code, '')
     ORDER BY 1, 2
$$;
COMMENT ON FUNCTION aimroute.white_space(text, text) IS
    'White space of a brand by country and state or province: postal codes with a centre point, those that fall to the default dealer (count and percent, from aimroute.coverage()), and the stored leads of the brand received in the last 30 days, all and those whose dealer is the default dealer (the leads the caller may see).';
REVOKE EXECUTE ON FUNCTION aimroute.white_space(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.white_space(text, text) TO aimroute_admin, aimroute_region;

--
-- dealer_areas: each dealer's effective area, the postal codes it wins
-- and by which rule.
--
CREATE FUNCTION aimroute.dealer_areas(brand_code text, country text DEFAULT NULL)
RETURNS TABLE (dealer_number text, name text, match_type aimroute.match_type,
               postal_codes bigint, states text[], max_distance_miles double precision)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.dealer_number, d.name, c.match_type, count(*),
           array_agg(DISTINCT c.state_code ORDER BY c.state_code) FILTER (WHERE c.state_code IS NOT NULL),
           max(c.distance_miles)
      FROM aimroute.coverage(dealer_areas.brand_code, dealer_areas.country) c
      LEFT JOIN aimroute.dealers d ON d.dealer_number = c.dealer_number
     GROUP BY c.dealer_number, d.name, c.match_type
     ORDER BY c.dealer_number, c.match_type
$$;
COMMENT ON FUNCTION aimroute.dealer_areas(text, text) IS
    'Each dealer''s effective area for a brand, from aimroute.coverage(): per dealer and winning rule (match type), the postal codes it would get, their states or provinces and the farthest of them in miles; the default dealer''s Default row is the white space.';
REVOKE EXECUTE ON FUNCTION aimroute.dealer_areas(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.dealer_areas(text, text) TO aimroute_admin, aimroute_region;
