--
-- aimroute.tie_turns: whose turn it is among equally near dealers
-- (settings.tie_break = 'round_robin', SPEC section 10).  One row per brand
-- and dealer that has been in a tie: the leads it received by a turn and
-- when it received the last one.  Routing (src/ties.c) reads the rows only
-- when it finds a tie, and a new lead that takes a turn locks the tied
-- dealers' turns (a lock of its own, not the rows) and counts itself in the
-- winner's row, in the inserting transaction.  The counters are not configuration: changing them gives no
-- new config_version.
--
CREATE TABLE aimroute.tie_turns (
    brand_code     text NOT NULL REFERENCES aimroute.brands ON UPDATE CASCADE ON DELETE CASCADE,
    dealer_number  text NOT NULL REFERENCES aimroute.dealers ON UPDATE CASCADE ON DELETE CASCADE,
    leads          bigint NOT NULL DEFAULT 0
        CONSTRAINT tie_turns_leads_check CHECK (leads >= 0),
    last_at        timestamptz,
    PRIMARY KEY (brand_code, dealer_number)
);
COMMENT ON TABLE aimroute.tie_turns IS
    'Round robin among equally near dealers (settings.tie_break = ''round_robin''): per brand and dealer, the leads received by a turn and when the last one came. Written by routing; reset a brand''s turns with DELETE.';
COMMENT ON COLUMN aimroute.tie_turns.leads IS 'Leads of the brand the dealer received by a round robin turn.';
COMMENT ON COLUMN aimroute.tie_turns.last_at IS 'When it received the last one; NULL: none yet.';
SELECT pg_catalog.pg_extension_config_dump('aimroute.tie_turns', '');
