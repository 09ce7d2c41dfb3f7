-- test/security.sql: the role model of SPEC section 5.  A dealer user sees
-- and acts on only its dealer's leads, contacts and deliveries; a region
-- user only its region's; SMTP credentials are the admins'; and a
-- non-superuser admin runs the whole product.  Each boundary is tried from
-- the wrong side and must fail.  Roles are created inside the transaction
-- and rolled back with it.
BEGIN;
SELECT plan(105);
SET LOCAL search_path = aimroute, public;
SET LOCAL client_min_messages = warning;

CREATE ROLE sec_admin LOGIN IN ROLE aimroute_admin;
CREATE ROLE sec_east LOGIN IN ROLE aimroute_region;
CREATE ROLE sec_d1 LOGIN IN ROLE aimroute_dealer;
CREATE ROLE sec_d3 LOGIN IN ROLE aimroute_dealer;
GRANT pg_read_server_files TO sec_admin;

-- The product, set up and run by a non-superuser admin.
SET LOCAL ROLE sec_admin;
SELECT is(current_setting('is_superuser'), 'off', 'the admin is not a superuser');
SELECT lives_ok($$
    INSERT INTO aimroute.brands VALUES ('SEC', 'Security Boats');
    INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code, region) VALUES
        ('SEC-HQ', 'HQ', 'US', '10001', NULL),
        ('SEC-1', 'East One', 'US', '10002', 'East'),
        ('SEC-2', 'East Two', 'US', '02108', 'East'),
        ('SEC-3', 'West Three', 'US', '90210', 'West');
    INSERT INTO aimroute.dealer_brands VALUES ('SEC-1', 'SEC'), ('SEC-2', 'SEC'), ('SEC-3', 'SEC');
    INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code) VALUES
        ('SEC-1', 'SEC', 'postal', 'US', '10002'), ('SEC-2', 'SEC', 'postal', 'US', '02108'),
        ('SEC-3', 'SEC', 'postal', 'US', '90210');
    INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, contact_types) VALUES
        ('SEC-1', 'One', 'sales@one.example', '{Leads: Emails To}'),
        ('SEC-2', 'Two', 'sales@two.example', '{Leads: Emails To}'),
        ('SEC-3', 'Three', 'sales@three.example', '{Leads: Emails To}');
    INSERT INTO aimroute.user_scopes (role_name, dealer_number, region) VALUES
        ('sec_d1', 'SEC-1', NULL), ('sec_d3', 'SEC-3', NULL), ('sec_east', NULL, 'East');
    UPDATE aimroute.settings SET default_dealer_number = 'SEC-HQ', smtp_password = 'secret',
           smtp_username = 'relay', reroute_enabled = false;
    INSERT INTO aimroute.leads (brand_code, country, postal_code, comment) VALUES
        ('SEC', 'US', '10002', 'one'), ('SEC', 'US', '02108', 'two'), ('SEC', 'US', '90210', 'three');
$$, 'a non-superuser admin configures the network and inserts leads');
SELECT is((SELECT string_agg(dealer_number, ',' ORDER BY comment) FROM leads WHERE comment IN ('one', 'two', 'three')),
          'SEC-1,SEC-3,SEC-2', 'the leads are routed');
SELECT lives_ok($$SELECT aimroute.delivery_expand(1000)$$,
                'the admin expands the marked leads into their messages, as the delivery worker does');
SELECT cmp_ok((SELECT count(*) FROM outbox WHERE lead_id IN (SELECT lead_id FROM leads WHERE comment IN ('one', 'two', 'three'))),
              '=', 3::bigint, 'and their emails queued');
SELECT lives_ok($$SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())$$,
                'the admin loads postal data (with pg_read_server_files)');
SELECT lives_ok($$INSERT INTO aimroute.lead_staging (batch_id, brand_code, country, postal_code) VALUES ('sec', 'SEC', 'US', '90210');
                  SELECT aimroute.process_staging('sec')$$, 'imports a staging batch');
SELECT lives_ok($$SELECT aimroute.reroute_overdue(); SELECT * FROM aimroute.delivery_claim(0, '1 minute');
                  SELECT aimroute.queue_daily_recap(); SELECT * FROM aimroute.simulate_routing(now() - interval '1 day', now() + interval '1 day');
                  SELECT * FROM aimroute.locate_dealers('US', '10002', 'SEC'); SELECT aimroute.routing_cache_info()$$,
                'runs re-routing, delivery, the recap, simulation, the locator');
SELECT is((SELECT smtp_password FROM settings), 'secret', 'reads the SMTP credentials');
SELECT is((SELECT count(*) FROM lead_delivery_status WHERE lead_id IN (SELECT lead_id FROM leads WHERE comment IN ('one', 'two', 'three'))),
          3::bigint, 'sees every lead''s delivery');
SELECT lives_ok($$UPDATE aimroute.user_scopes SET email = ' sales@one.example ' WHERE role_name = 'sec_d1'$$,
                'gives a dealer user its own address (user_scopes.email)');
SELECT throws_ok($$UPDATE aimroute.user_scopes SET email = 'not an address' WHERE role_name = 'sec_d3'$$,
                 '23514', NULL, 'but not an invalid one');
SELECT lives_ok($$SELECT view_token FROM aimroute.lead_notifications$$, 'reads view tokens');
RESET ROLE;
SELECT is((SELECT email FROM user_scopes WHERE role_name = 'sec_d1'), 'sales@one.example', 'the address is stored trimmed');
-- Re-routing on, a deadline on each lead, and a second To contact at SEC-1.
UPDATE aimroute.settings SET reroute_enabled = true;
UPDATE aimroute.leads SET reroute_due_at = now() + interval '1 day' WHERE comment IN ('one', 'two', 'three');
INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, contact_types)
    VALUES ('SEC-1', 'Boss', 'boss@one.example', '{Leads: Emails To}');
-- Ids as the superuser sees them, for the calls from the wrong side.
CREATE TEMP TABLE ids AS
    SELECT comment AS tag, lead_id AS id FROM aimroute.leads WHERE comment IN ('one', 'two', 'three')
    UNION ALL SELECT email, contact_id FROM aimroute.dealer_contacts WHERE dealer_number LIKE 'SEC-%';
GRANT SELECT ON ids TO PUBLIC;
CREATE FUNCTION pg_temp.id(t text) RETURNS bigint LANGUAGE sql AS $$ SELECT id FROM ids WHERE tag = t $$;

-- A dealer user.
SET LOCAL ROLE sec_d1;
SELECT is((SELECT string_agg(comment, ',') FROM leads), 'one', 'a dealer user sees only its dealer''s leads');
SELECT is((SELECT string_agg(DISTINCT dealer_number, ',') FROM lead_delivery_status), 'SEC-1', 'and their delivery statuses');
SELECT is((SELECT string_agg(DISTINCT dealer_number, ',') FROM outbox), 'SEC-1', 'its messages');
SELECT is((SELECT count(*) FROM delivery_attempts WHERE dealer_number <> 'SEC-1'), 0::bigint, 'its attempts');
SELECT is((SELECT string_agg(email, ',' ORDER BY email) FROM dealer_contacts), 'boss@one.example,sales@one.example', 'its contacts');
SELECT is((SELECT count(*) FROM lead_notifications WHERE dealer_number <> 'SEC-1'), 0::bigint, 'its notices');
SELECT is((SELECT count(*) FROM dealers), 4::bigint, 'the dealer network itself is reference data, readable');
SELECT throws_ok($$SELECT smtp_password FROM aimroute.settings$$, '42501', NULL, 'the SMTP password is not readable');
SELECT throws_ok($$SELECT smtp_username FROM aimroute.settings$$, '42501', NULL, 'nor the user name');
SELECT throws_ok($$SELECT bounce_mailbox_password FROM aimroute.settings$$, '42501', NULL,
                 'nor the bounce mailbox''s password');
SELECT throws_ok($$SELECT bounce_mailbox_username FROM aimroute.settings$$, '42501', NULL, 'its login');
SELECT throws_ok($$SELECT bounce_mailbox_url FROM aimroute.settings$$, '42501', NULL, 'or its URL');
SELECT throws_ok($$SELECT * FROM aimroute.bounce_mailbox_state$$, '42501', NULL,
                 'nor where the worker is in the bounce mailbox');
SELECT is((SELECT timezone FROM settings), 'UTC', 'the other settings are');
SELECT throws_ok($$SELECT view_token FROM aimroute.lead_notifications$$, '42501', NULL,
                 'a dealer user does not read view tokens (a token marks the lead viewed)');
SELECT lives_ok($$SELECT * FROM aimroute.lead_delivery_status; SELECT * FROM aimroute.unsent_leads;
                  SELECT * FROM aimroute.delivery_attempts; SELECT * FROM aimroute.delivery_issues$$,
                'but reads all four delivery views');
-- Its re-route clock is aimroute's (SPEC section 3).
SELECT throws_ok(format('UPDATE aimroute.leads SET reroute_due_at = NULL WHERE lead_id = %s', pg_temp.id('one')),
                 '42501', NULL, 'a dealer cannot stop its re-route clock by UPDATE');
SELECT throws_ok(format('UPDATE aimroute.leads SET reroute_due_at = now() + interval ''10 years'' WHERE lead_id = %s', pg_temp.id('one')),
                 '42501', NULL, 'nor move it ten years on');
SELECT throws_ok(format('UPDATE aimroute.leads SET viewed_at = now() WHERE lead_id = %s', pg_temp.id('one')),
                 '42501', NULL, 'nor set viewed_at');
SELECT throws_ok(format('UPDATE aimroute.leads SET viewed_by = ''sales@one.example'' WHERE lead_id = %s', pg_temp.id('one')),
                 '42501', NULL, 'nor viewed_by');
SELECT throws_ok(format('UPDATE aimroute.leads SET reroute_count = 99 WHERE lead_id = %s', pg_temp.id('one')),
                 '42501', NULL, 'nor reroute_count');
SELECT is(mark_viewed(pg_temp.id('one'), 'boss@one.example'), false,
          'mark_viewed with another To contact''s address, even of its own dealer, is refused');
SELECT is(mark_viewed(pg_temp.id('one'), NULL), false, 'and with no address');
RESET ROLE;
SELECT is((SELECT viewed_at IS NULL AND viewed_by IS NULL AND reroute_due_at > now() + interval '23 hours'
             FROM leads WHERE comment = 'one'), true, 'its lead is unviewed and its clock runs');
SET LOCAL ROLE sec_d1;
SELECT is(mark_viewed(pg_temp.id('one'), ' Sales@One.example'), true,
          'mark_viewed of its own lead by its own address, a To contact');
RESET ROLE;
SELECT is((SELECT viewed_by || ' ' || (viewed_at IS NOT NULL) || ' ' || coalesce(reroute_due_at::text, 'no deadline')
             FROM leads WHERE comment = 'one'), 'sales@one.example true no deadline', 'the view is recorded');
SET LOCAL ROLE sec_d1;
SELECT is(mark_viewed(pg_temp.id('two'), 'sales@two.example'), false,
          'mark_viewed of another dealer''s lead fails, even with that dealer''s contact');
RESET ROLE;
SELECT is((SELECT viewed_at FROM leads WHERE comment = 'two'), NULL, 'and changes nothing');
SET LOCAL ROLE sec_d1;
SELECT throws_ok($$UPDATE aimroute.leads SET dealer_number = 'SEC-2' WHERE comment = 'one'$$, '42501', NULL,
                 'a dealer cannot move its lead by UPDATE');
UPDATE leads SET viewed_at = now() WHERE lead_id = pg_temp.id('two');
RESET ROLE;
SELECT is((SELECT viewed_at FROM leads WHERE comment = 'two'), NULL, 'nor touch another dealer''s lead by UPDATE');
SET LOCAL ROLE sec_d1;
SELECT throws_ok($$SELECT aimroute.reassign((SELECT lead_id FROM aimroute.leads WHERE comment = 'one'), 'SEC-2', 'x')$$,
                 '42501', NULL, 'a dealer cannot reassign');
SELECT throws_ok(format('SELECT aimroute.send_lead(%s)', pg_temp.id('two')),
                 'P0002', NULL, 'send_lead of another dealer''s lead: no such lead');
SELECT is(send_lead((SELECT lead_id FROM leads WHERE comment = 'one')), 2, 'send_lead of its own lead (to its two To contacts)');
SELECT throws_ok(format('SELECT aimroute.queue_lead_delivery(%s, ''SEC-2'', ''x'')', pg_temp.id('one')),
                 '22023', NULL, 'its lead cannot be queued to a dealer that does not hold it');
SELECT throws_ok(format('SELECT aimroute.queue_lead_delivery(%s, ''SEC-2'', ''x'')', pg_temp.id('two')),
                 'P0002', NULL, 'another dealer''s lead cannot be queued, not even to the dealer holding it');
SELECT throws_ok(format('SELECT aimroute.set_delivery_status_active(%s)', pg_temp.id('sales@two.example')),
                 'P0002', NULL, 'set_delivery_status_active of another dealer''s contact: no such contact');
SELECT throws_ok($$INSERT INTO aimroute.dealer_contacts (dealer_number, email) VALUES ('SEC-2', 'x@two.example')$$,
                 '42501', NULL, 'a dealer cannot add a contact to another dealer');
SELECT lives_ok($$INSERT INTO aimroute.dealer_contacts (dealer_number, email) VALUES ('SEC-1', 'new@one.example')$$,
                'but keeps its own');
SELECT throws_ok($$SELECT aimroute.record_bounce('sales@two.example', 'hard', 'x')$$, '42501', NULL,
                 'record_bounce is the admins''');
SELECT throws_ok($$SELECT aimroute.suppress_address('sales@two.example', 'Hard Bounce')$$, '42501', NULL,
                 'suppress_address is the admins''');
SELECT throws_ok($$SELECT aimroute.record_dsn('x')$$, '42501', NULL, 'record_dsn is the admins''');
SELECT throws_ok($$SELECT aimroute.record_delivery_event('sendgrid', '{}')$$, '42501', NULL, 'record_delivery_event is the admins''');
-- The suppression list is by address: a dealer that resets its contact
-- lifts it for another dealer's contact with the same address, and
-- changes nothing else there.
RESET ROLE;
INSERT INTO aimroute.dealer_contacts (dealer_number, email, contact_types) VALUES
    ('SEC-1', 'shared@both.example', '{Leads: Emails CC}'), ('SEC-2', 'Shared@Both.example', '{Leads: Emails CC}');
SELECT aimroute.suppress_address('shared@both.example', 'Hard Bounce');
SET LOCAL ROLE sec_d1;
SELECT lives_ok($$SELECT aimroute.set_delivery_status_active(contact_id) FROM aimroute.dealer_contacts
                   WHERE email = 'shared@both.example'$$, 'a dealer resets its own contact');
RESET ROLE;
SELECT is((SELECT string_agg(dealer_number || '=' || delivery_status || ':' || contact_types::text, ' ' ORDER BY dealer_number)
             FROM aimroute.dealer_contacts WHERE lower(email) = 'shared@both.example'),
          'SEC-1=Active:{"Leads: Emails CC"} SEC-2=Active:{"Leads: Emails CC"}',
          'and the other dealer''s contact with the address is Active again, and nothing else changed');
DELETE FROM aimroute.dealer_contacts WHERE lower(email) = 'shared@both.example';
SET LOCAL ROLE sec_d1;
SELECT throws_ok($$SELECT aimroute.delivery_claim(10, '1 minute')$$, '42501', NULL, 'the worker''s functions are not callable');
SELECT throws_ok($$UPDATE aimroute.settings SET radius_miles = 1$$, '42501', NULL, 'settings are not writable');
SELECT throws_ok($$INSERT INTO aimroute.user_scopes (role_name, dealer_number) VALUES ('sec_d1', 'SEC-2')$$, '42501', NULL,
                 'nor its own scopes');
RESET ROLE;

-- Another dealer's user sees nothing of SEC-1.
SET LOCAL ROLE sec_d3;
SELECT is((SELECT string_agg(comment, ',') FROM leads), 'three', 'the other dealer sees only its lead');
SELECT is((SELECT count(*) FROM unsent_leads WHERE dealer_number <> 'SEC-3'), 0::bigint, 'and its unsent leads only');
SELECT is(mark_viewed(pg_temp.id('three'), 'sales@three.example'), false,
          'a dealer user without an address of its own cannot mark viewed by naming its dealer''s To contact');
RESET ROLE;
SELECT is((SELECT viewed_at IS NULL AND reroute_due_at IS NOT NULL FROM leads WHERE comment = 'three'), true,
          'and changes nothing');

-- A region user: its region's dealers, reassignments within them.
SET LOCAL ROLE sec_east;
SELECT is((SELECT string_agg(comment, ',' ORDER BY comment) FROM leads), 'one,two', 'a region user sees its region''s leads');
SELECT is((SELECT count(*) FROM delivery_issues WHERE region <> 'East'), 0::bigint, 'and its issues only');
SELECT throws_ok($$SELECT view_token FROM aimroute.lead_notifications$$, '42501', NULL,
                 'a region user does not read view tokens');
SELECT lives_ok($$SELECT * FROM aimroute.lead_delivery_status$$, 'reads lead_delivery_status');
SELECT lives_ok($$SELECT * FROM aimroute.unsent_leads$$, 'reads unsent_leads');
SELECT lives_ok($$SELECT * FROM aimroute.delivery_attempts; SELECT * FROM aimroute.delivery_issues$$,
                'reads delivery_attempts and delivery_issues');
SELECT is((SELECT string_agg(dealer_number, ',' ORDER BY dealer_number) FROM lead_delivery_status
            WHERE lead_id IN (pg_temp.id('one'), pg_temp.id('two'), pg_temp.id('three'))),
          'SEC-1,SEC-2', 'the statuses of its region''s leads');
SELECT is((SELECT count(*) FROM unsent_leads WHERE region IS DISTINCT FROM 'East'), 0::bigint, 'its unsent leads only');
SELECT throws_ok(format('UPDATE aimroute.leads SET reroute_due_at = NULL WHERE lead_id = %s', pg_temp.id('two')),
                 '42501', NULL, 'a region user cannot stop a re-route clock by UPDATE');
SELECT throws_ok(format('UPDATE aimroute.leads SET viewed_at = now(), viewed_by = ''x'' WHERE lead_id = %s', pg_temp.id('two')),
                 '42501', NULL, 'nor set a lead viewed');
SELECT is(mark_viewed(pg_temp.id('two'), 'sales@two.example'), false,
          'a region user''s mark_viewed counts only its own address, not the dealer''s contact');
SELECT lives_ok($$SELECT aimroute.reassign((SELECT lead_id FROM aimroute.leads WHERE comment = 'two'), 'SEC-1', 'within the region')$$,
                'reassigns within its region');
SELECT throws_ok($$SELECT aimroute.reassign((SELECT lead_id FROM aimroute.leads WHERE comment = 'two'), 'SEC-3', 'out of the region')$$,
                 '42501', NULL, 'not to a dealer of another region');
SELECT throws_ok(format('SELECT aimroute.reassign(%s, ''SEC-1'', ''x'')', pg_temp.id('three')), 'P0002', NULL,
                 'nor a lead it cannot see');
RESET ROLE;
SELECT is((SELECT dealer_number || ' ' || match_type FROM leads WHERE comment = 'two'), 'SEC-1 Reassigned',
          'the reassignment within the region took');
SELECT is((SELECT count(*) FROM lead_history h JOIN leads l USING (lead_id) WHERE l.comment = 'two'), 1::bigint,
          'recorded in lead_history');
SELECT is((SELECT viewed_at IS NULL AND reroute_due_at > now() FROM leads WHERE comment = 'two'), true,
          'the new dealer''s clock was set by aimroute');
-- A move by a region user's UPDATE cannot take the clock along with it.
UPDATE leads SET reroute_due_at = now() - interval '1 day' WHERE comment = 'two';
SET LOCAL ROLE sec_east;
SELECT lives_ok($$UPDATE aimroute.leads SET dealer_number = 'SEC-2', match_type = 'Default', reroute_due_at = NULL,
                         viewed_at = now() WHERE comment = 'two'$$,
                'a region user moves a lead by UPDATE, naming the clock too');
RESET ROLE;
SELECT is((SELECT dealer_number || ' ' || (viewed_at IS NULL) || ' ' || (reroute_due_at > now()) FROM leads WHERE comment = 'two'),
          'SEC-2 true true', 'the lead moved, unviewed, with the deadline aimroute gave it');

-- An admin records any To contact's view (a web app's page for the contact).
SET LOCAL ROLE sec_admin;
SELECT is(mark_viewed(pg_temp.id('three'), 'sales@three.example'), true, 'an admin records a To contact''s view');
SELECT is(mark_viewed(pg_temp.id('three'), 'sales@three.example'), true, 'viewing again is harmless');
SELECT is(mark_viewed(pg_temp.id('three'), 'stranger@example.com'), false, 'an address that is no To contact is refused');
RESET ROLE;

-- The page behind the view link: a login in aimroute_view_link opens a
-- link and reads the lead it shows, and nothing else.
CREATE ROLE sec_page LOGIN IN ROLE aimroute_view_link;
SELECT lives_ok($$
    INSERT INTO aimroute.leads (brand_code, country, postal_code, first_name, comment)
    VALUES ('SEC', 'US', '10002', 'Pat', 'page');
    SELECT aimroute.delivery_expand(1000);
    SELECT set_config('sec.stale', n.view_token, true)
      FROM aimroute.lead_notifications n JOIN aimroute.leads l USING (lead_id) WHERE l.comment = 'page';
    SELECT aimroute.reassign(l.lead_id, 'SEC-2', 'moved') FROM aimroute.leads l WHERE l.comment = 'page';
    SELECT aimroute.delivery_expand(1000);
    SELECT set_config('sec.token', n.view_token, true)
      FROM aimroute.lead_notifications n JOIN aimroute.leads l USING (lead_id)
     WHERE l.comment = 'page' AND n.dealer_number = 'SEC-2';
$$, 'a lead emailed to SEC-1, then moved to SEC-2 and emailed there');
SET LOCAL ROLE sec_page;
SELECT is((SELECT count(*) FROM aimroute.view_link_lead(current_setting('sec.stale'))), 0::bigint,
          'the page reads nothing through the link of the dealer that lost the lead');
SELECT is(aimroute.open_view_link(current_setting('sec.stale')), false, 'and that link opens nothing');
SELECT is((SELECT count(*) FROM aimroute.view_link_lead(repeat('A', 40))), 0::bigint, 'nor through an unknown token');
SELECT is((SELECT first_name || ' ' || dealer_number || ' ' || dealer_name || ' ' || (viewed_at IS NULL)
             FROM aimroute.view_link_lead(current_setting('sec.token'))),
          'Pat SEC-2 East Two true', 'the page reads the lead through the link of the dealer that holds it');
SELECT is(aimroute.open_view_link(current_setting('sec.token')), true, 'and opens that link');
SELECT is((SELECT viewed_at IS NOT NULL FROM aimroute.view_link_lead(current_setting('sec.token'))), true,
          'which marks the lead viewed');
SELECT throws_ok($$SELECT * FROM aimroute.leads$$, '42501', NULL, 'the page''s login reads no lead');
SELECT throws_ok($$SELECT view_token FROM aimroute.lead_notifications$$, '42501', NULL, 'no view token');
SELECT throws_ok($$SELECT * FROM aimroute.settings$$, '42501', NULL, 'no settings');
SELECT throws_ok($$SELECT aimroute.mark_viewed(1, 'sales@one.example')$$, '42501', NULL, 'and runs no mark_viewed');
RESET ROLE;
SELECT is((SELECT viewed_by FROM leads WHERE comment = 'page'),
          (SELECT 'view link ' || n.notification_id FROM lead_notifications n
            WHERE n.view_token = current_setting('sec.token')), 'the view is the link''s');
SELECT is(has_function_privilege('public', 'aimroute.view_link_lead(text)', 'EXECUTE'), false,
          'PUBLIC may not run view_link_lead');

-- Drive Distance: putting a trigger on the road network is the admins' call.
SELECT is(has_function_privilege('public', 'aimroute.drive_network_watch(text)', 'EXECUTE'), false,
          'PUBLIC may not run drive_network_watch');

-- Every SECURITY DEFINER function pins its search_path.
SELECT is((SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_proc p
            JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
            JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'aimroute'
            WHERE p.prosecdef
              AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')),
          NULL, 'every SECURITY DEFINER function pins its search_path');
-- So does queue_lead_delivery, which queues as the extension's owner.
SELECT is((SELECT proconfig FROM pg_proc WHERE oid = 'aimroute.queue_lead_delivery(bigint, text, text)'::regprocedure),
          '{"search_path=pg_catalog, pg_temp"}'::text[], 'queue_lead_delivery, which switches to the owner, pins it too');
SELECT is((SELECT proconfig FROM pg_proc WHERE oid = 'aimroute.mark_viewed(bigint, text)'::regprocedure),
          '{"search_path=pg_catalog, pg_temp"}'::text[], 'and so does mark_viewed');
SELECT is((SELECT count(*) FROM pg_proc p
            JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
            JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'aimroute'
           WHERE p.prosecdef AND p.proowner <> e.extowner),
          0::bigint, 'every SECURITY DEFINER function runs as the extension''s owner');

SELECT * FROM finish();
ROLLBACK;
