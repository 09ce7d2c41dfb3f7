-- test/concurrency/reassign.sql (pgbench, t/007_concurrency.pl): a person
-- moves lead :id to a random dealer by hand, the default dealer HQ
-- included.  Moving it to the dealer that holds it is a NOTICE, not an
-- error; so is moving a viewed lead.
--
-- Variables (pgbench -D): nleads, ndealers.
\set id random(1, :nleads)
\set d random(0, :ndealers)
SELECT aimroute.reassign(:id, CASE WHEN :d = 0 THEN 'HQ' ELSE 'D' || lpad((:d)::text, 2, '0') END,
                         'pgbench reassign');
