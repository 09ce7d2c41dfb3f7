-- test/concurrency/view.sql (pgbench, t/007_concurrency.pl): someone
-- opens lead :id.  pick 0 or 1: the 'Leads: Emails To' contact of the
-- dealer that holds the lead, as read just before (a move may win the
-- race, and then the view must be refused); 2: that dealer's CC contact
-- (always refused); 3: the To contact of a random dealer (refused unless
-- it is the holder).  The outcome is logged in concurrency.view_log with
-- the dealer holding the lead and the lead's last history row as seen
-- under mark_viewed's row lock, which lasts until COMMIT.
--
-- Variables (pgbench -D): nleads (leads 1..nleads exist), ndealers.
\set id random(1, :nleads)
\set pick random(0, 3)
\set other random(1, :ndealers)
BEGIN;
SELECT coalesce((SELECT c.contact_id
                   FROM aimroute.dealer_contacts c
                  WHERE c.dealer_number = CASE WHEN :pick = 3 THEN 'D' || lpad((:other)::text, 2, '0')
                                               ELSE (SELECT l.dealer_number FROM aimroute.leads l WHERE l.lead_id = :id) END
                    AND (CASE WHEN :pick = 2 THEN 'Leads: Emails CC' ELSE 'Leads: Emails To' END) = ANY (c.contact_types)
                  ORDER BY c.contact_id LIMIT 1), 0) AS cid \gset
SELECT aimroute.mark_viewed(:id, (SELECT c.email FROM aimroute.dealer_contacts c WHERE c.contact_id = :cid))::int AS ok \gset
INSERT INTO concurrency.view_log (lead_id, contact_id, ok, holder, last_history_id)
SELECT l.lead_id, :cid, :ok = 1, l.dealer_number,
       (SELECT max(h.history_id) FROM aimroute.lead_history h WHERE h.lead_id = l.lead_id)
  FROM aimroute.leads l WHERE l.lead_id = :id;
COMMIT;
