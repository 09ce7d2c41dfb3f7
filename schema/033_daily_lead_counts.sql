--
-- aimroute.daily_lead_counts: the new leads routing gave each dealer with a
-- daily_lead_cap, per day of the OEM's time zone (SPEC section 10).  Only
-- dealers with a cap have rows.  A new lead routed by a rule to a capped
-- dealer counts itself in the dealer's row of the day the lead was received
-- (src/caps.c), in the inserting transaction, and only while the count is
-- below the cap; otherwise routing skips the dealer.  The counts are not
-- configuration: changing them gives no new config_version.
--
CREATE TABLE aimroute.daily_lead_counts (
    dealer_number  text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    day            date NOT NULL,
    leads          integer NOT NULL
        CONSTRAINT daily_lead_counts_leads_check CHECK (leads >= 0),
    PRIMARY KEY (dealer_number, day)
);
COMMENT ON TABLE aimroute.daily_lead_counts IS
    'Daily lead caps (dealers.daily_lead_cap): per capped dealer and day of settings.timezone, the new leads routing gave it. Written by routing; old days may be deleted.';
COMMENT ON COLUMN aimroute.daily_lead_counts.day IS 'The day the leads were received, in settings.timezone.';
COMMENT ON COLUMN aimroute.daily_lead_counts.leads IS 'New leads a rule routed to the dealer that day (pre-assigned and default-dealer leads, moves and re-routes are not counted).';
SELECT pg_catalog.pg_extension_config_dump('aimroute.daily_lead_counts', '');
