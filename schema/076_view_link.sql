--
-- The page behind the view link (docs/delivery.md, "The view link"):
-- open_view_link (060_reroute.sql) marks the lead viewed, view_link_lead
-- shows it.  Both are what the role aimroute_view_link may run.
--

--
-- view_link_lead: what the page behind a view link shows, the lead's key
-- details as the email that carried the link gave them, while that
-- notice's dealer holds the lead; no row otherwise (an unknown token, or
-- the link of a dealer that lost the lead), so that a stale link shows
-- nothing of the lead's new dealer.  Changes nothing: open_view_link
-- marks the lead viewed.
--
-- SECURITY DEFINER for the same reason as open_view_link: the token is
-- the capability, and aimroute_view_link, the role of that page, reads no
-- table.
CREATE FUNCTION aimroute.view_link_lead(token text)
RETURNS TABLE (lead_id bigint, dealer_number text, dealer_name text, received_at timestamptz,
               timezone text, brand text, product_code text, first_name text, last_name text,
               email text, phone text, address text, city text, state_code text,
               postal_code text, country text, comment text, viewed_at timestamptz,
               reroute_due_at timestamptz)
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.lead_id, l.dealer_number, d.name, l.received_at, s.timezone,
           coalesce(b.name, l.brand_code), l.product_code, l.first_name, l.last_name,
           l.email, l.phone, l.address, l.city, l.state_code,
           coalesce(l.postal_code, l.postal_code_input), coalesce(l.country, l.country_input),
           l.comment, l.viewed_at, l.reroute_due_at
      FROM aimroute.lead_notifications n
      JOIN aimroute.leads l ON l.lead_id = n.lead_id AND l.dealer_number = n.dealer_number
      JOIN aimroute.dealers d ON d.dealer_number = l.dealer_number
      LEFT JOIN aimroute.brands b ON b.brand_code = l.brand_code
      CROSS JOIN aimroute.settings s
     WHERE n.view_token = view_link_lead.token
$$;
COMMENT ON FUNCTION aimroute.view_link_lead(text) IS
    'The lead a notification''s view link shows: its key details while that notification''s dealer holds it; no row for an unknown token or the link of a dealer that lost the lead. Changes nothing (open_view_link marks it viewed).';
REVOKE EXECUTE ON FUNCTION aimroute.view_link_lead(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aimroute.view_link_lead(text) TO aimroute_admin, aimroute_region, aimroute_dealer, aimroute_view_link;
