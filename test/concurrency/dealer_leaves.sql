-- test/concurrency/dealer_leaves.sql (pgbench, t/007_concurrency.pl): a
-- dealer leaves the network -- it stops taking leads, and its open leads
-- go to the next best dealers, in one transaction -- then comes back.
-- Never the default dealer, which reassign_dealer_leads refuses.
--
-- Variables (pgbench -D): ndealers.
\set d random(1, :ndealers)
BEGIN;
UPDATE aimroute.dealers SET active_for_sales = false WHERE dealer_number = 'D' || lpad((:d)::text, 2, '0');
SELECT sum(leads) AS moved FROM aimroute.reassign_dealer_leads('D' || lpad((:d)::text, 2, '0'), 'pgbench: dealer leaves');
COMMIT;
UPDATE aimroute.dealers SET active_for_sales = true WHERE dealer_number = 'D' || lpad((:d)::text, 2, '0');
