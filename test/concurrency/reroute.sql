-- test/concurrency/reroute.sql (pgbench, t/007_concurrency.pl): the
-- deadline of lead :id passes now (reroute_after is a minute at least, so
-- the test moves deadlines rather than waiting for them), and this client
-- re-routes overdue leads itself, racing the re-route worker: both claim
-- leads with FOR UPDATE SKIP LOCKED.
--
-- Variables (pgbench -D): nleads.
\set id random(1, :nleads)
UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() - interval '1 second'
 WHERE lead_id = :id AND viewed_at IS NULL AND reroute_due_at IS NOT NULL;
SELECT aimroute.reroute_overdue(5);
