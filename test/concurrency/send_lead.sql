-- test/concurrency/send_lead.sql (pgbench, t/007_concurrency.pl): lead
-- :id is sent to its dealer again.  send_lead refuses a lead kept from its
-- dealer, so only those with send_to_dealer are asked.
--
-- Variables (pgbench -D): nleads.
\set id random(1, :nleads)
SELECT aimroute.send_lead(l.lead_id) FROM aimroute.leads l WHERE l.lead_id = :id AND l.send_to_dealer;
