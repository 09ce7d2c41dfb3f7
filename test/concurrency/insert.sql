-- test/concurrency/insert.sql (pgbench, t/007_concurrency.pl): a new lead
-- arrives and is routed in its INSERT, as a web form sends it.  One lead
-- in ten is kept from its dealer (send_to_dealer false).
--
-- Variables (pgbench -D): none.
\set zip random(1, 12)
\set keep random(1, 10)
INSERT INTO aimroute.leads (source, brand_code, country, postal_code, first_name, email, comment, send_to_dealer)
VALUES ('api', 'CC', 'US',
        (ARRAY['60601', '53202', '53703', '48201', '46204', '43215',
               '63101', '55401', '50309', '44113', '45202', '40202'])[:zip],
        'Pat', 'pat@example.com', 'pgbench insert', :keep <> 1);
