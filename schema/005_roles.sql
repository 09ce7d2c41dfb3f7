--
-- The three roles of aimroute (SPEC section 5; 080_security.sql has the
-- model).  They exist before any table, so that each table's file grants
-- them what they may do with it and gives it its row-level security.
-- A fourth, aimroute_view_link, is for the web page behind the view link
-- in lead emails: it may only open a link (open_view_link) and read the
-- lead that link shows (view_link_lead, 060_reroute.sql), and no table.
--
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['aimroute_admin', 'aimroute_region', 'aimroute_dealer', 'aimroute_view_link'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;
COMMENT ON ROLE aimroute_admin IS 'aimroute: configures everything and sees every lead.';
COMMENT ON ROLE aimroute_region IS 'aimroute: sees and acts on the leads of the dealers of its regions (aimroute.user_scopes).';
COMMENT ON ROLE aimroute_dealer IS 'aimroute: sees and acts on the leads of its dealers (aimroute.user_scopes).';
COMMENT ON ROLE aimroute_view_link IS 'aimroute: the page behind the view link; opens a link and reads the lead it shows (open_view_link, view_link_lead), nothing else.';
GRANT USAGE ON SCHEMA aimroute TO aimroute_admin, aimroute_region, aimroute_dealer, aimroute_view_link;
