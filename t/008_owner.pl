# t/008_owner.pl: the whole product run by its owner, a role that is not a
# superuser.
#
# A superuser creates the database's PostGIS and nothing else of aimroute.
# The role "oem" (LOGIN, CREATE on its database, no other attribute)
# creates aimroute, a trusted extension, and runs everything: the postal
# data shipped with it, the network, routing on INSERT and from staging,
# re-routing and delivery by the background workers to a real SMTP server,
# a dealer user's scope (it cannot stop its re-route clock; its view,
# with its own address, is recorded as oem), a backup with pg_dump and its
# restore, and DROP EXTENSION.  It also checks what oem must not gain: a temporary type in
# its session does not replace one the install script uses, it cannot read
# a server file, cannot redeclare a C function, and code it attaches to
# its own tables runs as oem, never as the superuser the workers connect
# as, in the workers and when a dealer user sends a lead again.
#
# PostGIS placement: public (t/lib/Placement.pm), created beforehand by the
# superuser, whatever AIMROUTE_POSTGIS_PLACEMENT says: oem may not create
# PostGIS, and the backup names public.spatial_ref_sys.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use DeliverySinks;
use Placement;

my $placement = 'public';

my $smtp = start_smtp_sink();
my $smtp_url = "smtp://127.0.0.1:$smtp->{port}";

my $node = PostgreSQL::Test::Cluster->new('owner');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'oem'
aimroute.reroute_naptime = 1s
aimroute.delivery_naptime = 60s
});
$node->start;

my $superuser = $node->safe_psql('postgres', 'SELECT rolname FROM pg_roles WHERE oid = 10');
$node->safe_psql('postgres', 'CREATE ROLE oem LOGIN; CREATE DATABASE oem OWNER oem');
$node->safe_psql('oem', Placement::postgis_sql($placement));

# as(role, sql): run SQL as a role, failing the test on an error.
sub as
{
	my ($role, $sql) = @_;
	return $node->safe_psql('oem', $sql, extra_params => [ '-U', $role ]);
}

# try(role, sql): run SQL as a role; returns (exit code, stdout, stderr).
sub try
{
	my ($role, $sql) = @_;
	my ($out, $err);
	my $rc = $node->psql('oem', $sql, stdout => \$out, stderr => \$err,
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=verbose' ]);
	return ($rc, $out, $err);
}

is(as('oem', 'SELECT rolsuper OR rolcreaterole OR rolbypassrls FROM pg_roles WHERE rolname = current_user'),
	'f', 'oem is neither superuser, nor CREATEROLE, nor BYPASSRLS');

# Installing, with hostile temporary types in the installing session.
as(
	'oem', q{
	CREATE TYPE pg_temp.geography AS (x int);
	CREATE TYPE pg_temp.text AS (x int);
	CREATE EXTENSION aimroute;
});
$node->safe_psql('oem', Placement::check_sql($placement));
is(as('oem', "SELECT pg_get_userbyid(extowner) FROM pg_extension WHERE extname = 'aimroute'"),
	'oem', 'oem created aimroute and owns the extension');
is( as(
		'oem', q{
	SELECT string_agg(a.attname || ' ' || t.typnamespace::regnamespace || '.' || t.typname, ', ' ORDER BY a.attname)
	  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
	 WHERE a.attrelid = 'aimroute.postal_codes'::regclass AND a.attname IN ('centroid', 'postal_code')}
	),
	'centroid public.geography, postal_code pg_catalog.text',
	'temporary types of the installing session were not taken for PostGIS\'s and PostgreSQL\'s');
is(as('oem', 'SHOW search_path'), '"$user", public', 'the install script left search_path as it was');

# Who owns what.
is( as(
		'oem', q{
	SELECT count(*) FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
	 WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
	   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'aimroute')
	   AND c.relkind IN ('r', 'v', 'S') AND c.relowner <> 'oem'::regrole}
	),
	'0',
	'every table, view and sequence of aimroute is oem\'s');
is( as(
		'oem', q{
	SELECT string_agg(DISTINCT l.lanname || ':' || pg_get_userbyid(p.proowner), ' ' ORDER BY l.lanname || ':' || pg_get_userbyid(p.proowner))
	  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
	 WHERE p.pronamespace = 'aimroute'::regnamespace}
	),
	"c:$superuser plpgsql:oem sql:oem",
	'SQL functions are oem\'s, C functions stay the bootstrap superuser\'s');
is( as(
		'oem', q{
	SELECT count(*) FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
	 WHERE p.pronamespace = 'aimroute'::regnamespace AND p.prosecdef AND r.rolsuper}
	),
	'0',
	'no SECURITY DEFINER function of aimroute runs as a superuser');
my ($rc, $out, $err) = try('oem', 'ALTER FUNCTION aimroute.normalize_country(text) CALLED ON NULL INPUT');
like($err, qr/42501.*must be owner of function/, 'oem cannot redeclare a C function');

# Postal data: the shipped file, not any other server file.
cmp_ok(as('oem', 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())'),
	'>', 40000, 'oem loads the postal data shipped with aimroute');
($rc, $out, $err) = try('oem', "SELECT aimroute.load_postal_codes('/etc/passwd')");
like($err, qr/42501.*permission denied to load postal codes from a server file/,
	'oem cannot read another server file through the loader');

# The network, and spies: code oem attaches to its own tables records whom
# it runs as, whether that is a superuser, and what SET ROLE to the
# superuser does.
as(
	'oem', qq{
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('OWN', 'Owner Boats');
	INSERT INTO dealers (dealer_number, name, country, postal_code) VALUES
	  ('HQ', 'Corporate', 'US', '10001'), ('CHI', 'Chicago Marine', 'US', '60601'),
	  ('MKE', 'Milwaukee Marine', 'US', '53202');
	INSERT INTO dealer_brands VALUES ('CHI', 'OWN'), ('MKE', 'OWN');
	INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
	  ('CHI', NULL, 'postal', 'US', '60601');
	INSERT INTO dealer_contacts (dealer_number, name, email, contact_types) VALUES
	  ('CHI', 'Sales', 'sales\@chi.example', '{Leads: Emails To}'),
	  ('MKE', 'Sales', 'sales\@mke.example', '{Leads: Emails To}');
	UPDATE settings SET default_dealer_number = 'HQ', smtp_url = '$smtp_url',
	       smtp_from = 'leads\@oem.example', reroute_enabled = true, reroute_after = '24 hours',
	       reroute_max_dealers = 3;

	CREATE TABLE public.spy (seen_in text, who text, tried text);
	CREATE FUNCTION public.spy() RETURNS trigger LANGUAGE plpgsql AS \$\$
	DECLARE
	    tried text[];
	    attempt text;
	BEGIN
	    FOREACH attempt IN ARRAY ARRAY[format('SET ROLE %I', '$superuser'),
	                                   'CREATE TEMP TABLE spy_tmp (x int)',
	                                   'SELECT count(*) FROM pg_catalog.pg_authid'] LOOP
	        BEGIN
	            EXECUTE attempt;
	            tried := tried || (attempt || ': allowed');
	        EXCEPTION WHEN OTHERS THEN
	            tried := tried || (attempt || ': ' || SQLERRM);
	        END;
	    END LOOP;
	    INSERT INTO public.spy VALUES (TG_TABLE_NAME || ' ' || TG_OP || ' by ' || session_user,
	                                   current_user, array_to_string(tried, '; '));
	    RETURN NULL;
	END
	\$\$;
	CREATE TRIGGER spy AFTER INSERT OR UPDATE ON aimroute.outbox FOR EACH ROW EXECUTE FUNCTION public.spy();
	CREATE TRIGGER spy AFTER UPDATE ON aimroute.leads FOR EACH ROW EXECUTE FUNCTION public.spy();
});

# Routing on INSERT and from staging.
my $lead = as('oem',
	"INSERT INTO aimroute.leads (brand_code, country, postal_code, first_name, email, comment)"
	  . " VALUES ('OWN', 'US', '60601', 'Ann', 'ann\@example.com', 'inserted') RETURNING lead_id");
is(as('oem', "SELECT dealer_number || ' ' || match_type FROM aimroute.leads WHERE lead_id = $lead"),
	'CHI Territory', 'oem inserts a lead and it is routed');
as(
	'oem', q{
	INSERT INTO aimroute.lead_staging (batch_id, brand_code, country, postal_code, first_name, email, comment)
	VALUES ('b1', 'OWN', 'US', '53202', 'Bo', 'bo@example.com', 'staged'),
	       ('b1', 'OWN', 'US', 'junk', 'Cy', 'cy@example.com', 'staged');
	SELECT * FROM aimroute.process_staging('b1');
});
is( as(
		'oem',
		"SELECT string_agg(dealer_number, ' ' ORDER BY lead_id) FROM aimroute.leads WHERE comment = 'staged'"),
	'MKE HQ',
	'oem imports a batch from staging: a bad postal code goes to the default dealer');

my $restricted = join('; ',
	"SET ROLE $superuser: cannot set parameter \"role\" within security-definer function",
	'CREATE TEMP TABLE spy_tmp (x int): cannot create temporary table within security-restricted operation',
	'SELECT count(*) FROM pg_catalog.pg_authid: permission denied for table pg_authid');

# Delivery, by the worker, acting as oem.
ok( $node->poll_query_until(
		'oem',
		"SELECT count(*) = 2 FROM aimroute.lead_delivery_status WHERE NOT delivery_pending AND email_status = 'Delivered'"
	),
	'the delivery worker delivers the leads of oem');
ok(wait_for_log($smtp, sub { grep { grep { $_ eq 'sales@chi.example' } @{ $_->{rcpt_tos} } } @{ $_[0] } }),
	'the SMTP server got the Chicago dealer\'s email');
is( as('oem', "SELECT string_agg(DISTINCT who || ' | ' || tried, E'\\n') FROM public.spy WHERE seen_in = 'outbox UPDATE by $superuser'"),
	"oem | $restricted",
	'the delivery worker runs oem\'s trigger as oem, in a security-restricted operation');

# Re-routing, by the worker, acting as oem.
as('oem', "UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE lead_id = $lead");
ok( $node->poll_query_until(
		'oem', "SELECT dealer_number <> 'CHI' FROM aimroute.leads WHERE lead_id = $lead"),
	'the re-route worker re-routes oem\'s overdue lead');
is( as('oem', "SELECT string_agg(DISTINCT who || ' | ' || tried, E'\\n') FROM public.spy WHERE seen_in = 'leads UPDATE by $superuser'"),
	"oem | $restricted",
	'the re-route worker runs oem\'s trigger as oem, in a security-restricted operation');

# A dealer user: the login is the superuser's to create (oem has no
# CREATEROLE); its scope is oem's to give.
$node->safe_psql('postgres', 'CREATE ROLE ann LOGIN IN ROLE aimroute_dealer');
as('oem', "INSERT INTO aimroute.user_scopes (role_name, dealer_number) VALUES ('ann', 'MKE')");
is(as('ann', "SELECT string_agg(DISTINCT dealer_number, ' ') FROM aimroute.leads"),
	'MKE', 'oem\'s dealer user sees only its dealer\'s leads');
my $mke_lead = as('ann', 'SELECT lead_id FROM aimroute.leads ORDER BY lead_id LIMIT 1');
as('oem', 'TRUNCATE public.spy');
is(as('ann', "SELECT aimroute.send_lead($mke_lead)"), '1', 'the dealer user sends its lead again');
is(as('oem', "SELECT string_agg(DISTINCT who || ' | ' || tried, E'\\n') FROM public.spy WHERE seen_in = 'outbox INSERT by ann'"),
	"oem | $restricted",
	'the message the dealer user asked for is queued as oem, in a restricted operation');
my $hq_lead = as('oem', "SELECT lead_id FROM aimroute.leads WHERE dealer_number = 'HQ'");
($rc, $out, $err) = try('ann', "SELECT aimroute.queue_lead_delivery($hq_lead, 'HQ', 'Resent')");
like($err, qr/P0002.*lead $hq_lead does not exist/,
	'the dealer user cannot queue another dealer\'s lead, even to the dealer holding it');
is(as('ann', 'SELECT current_user'), 'ann', 'the dealer user is itself again after queueing');

# The dealer user's re-route clock is aimroute's: oem's trigger refuses
# the dealer's UPDATE; mark_viewed with the dealer user's own address
# records the view as oem.
my $mke_open = as('oem',
	"SELECT lead_id FROM aimroute.leads WHERE dealer_number = 'MKE' AND viewed_at IS NULL ORDER BY lead_id LIMIT 1");
as('oem', "UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() + interval '1 day' WHERE lead_id = $mke_open");
($rc, $out, $err) = try('ann', "UPDATE aimroute.leads SET reroute_due_at = NULL WHERE lead_id = $mke_open");
like($err, qr/42501.*permission denied to change the view or re-route deadline of lead $mke_open/,
	'the dealer user cannot stop its re-route clock on oem\'s tables');
is(as('ann', "SELECT aimroute.mark_viewed($mke_open, 'sales\@mke.example')"),
	'f', 'nor mark its lead viewed by its dealer\'s address when it has none of its own');
as('oem', "UPDATE aimroute.user_scopes SET email = 'sales\@mke.example' WHERE role_name = 'ann'");
as('oem', 'TRUNCATE public.spy');
is(as('ann', "SELECT aimroute.mark_viewed($mke_open, 'sales\@mke.example')"),
	't', 'with its own address, a To contact of its dealer, it marks its lead viewed');
is( as('oem', "SELECT viewed_by || ' ' || (reroute_due_at IS NULL) FROM aimroute.leads WHERE lead_id = $mke_open"),
	'sales@mke.example true', 'the view is recorded and the deadline gone');
is(as('oem', "SELECT string_agg(DISTINCT who || ' | ' || tried, E'\\n') FROM public.spy WHERE seen_in = 'leads UPDATE by ann'"),
	"oem | $restricted",
	'the view is written as oem, in a restricted operation');

# Errors caught in oem's trigger, inside the worker's transactions that
# hold off a shutdown, do not leave the delivery worker deaf to SIGTERM.
my $delivery_pid =
  $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'aimroute delivery worker'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($delivery_pid)");
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $delivery_pid"),
	'the delivery worker still stops on SIGTERM after oem\'s trigger caught errors in it');

# Backup and restore, by oem, into a database a superuser prepared with
# PostGIS.
# PostGIS's spatial_ref_sys takes no rows from oem, not even none.
my $dump = $node->basedir . '/oem.dump';
$node->command_ok(
	[ 'pg_dump', '-Fc', '-U', 'oem', '--exclude-table-data=public.spatial_ref_sys', '-f', $dump, '-d', 'oem' ],
	'oem backs up its database with pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE oem_restored OWNER oem');
$node->safe_psql('oem_restored', 'SET client_min_messages = warning; CREATE EXTENSION postgis');
my ($restore_out, $restore_err) = ('', '');
IPC::Run::run([ 'pg_restore', '-U', 'oem', '-d', $node->connstr('oem_restored'), $dump ],
	'>', \$restore_out, '2>', \$restore_err);
my @restore_errors = grep { /error:/ && !/extension postgis/ } split /\n/, $restore_err;
is(join("\n", @restore_errors), '', 'oem restores it with pg_restore (no error but about PostGIS\'s comment)');
is( $node->safe_psql(
		'oem_restored',
		"SELECT count(*) || ' ' || count(*) FILTER (WHERE dealer_number IS NOT NULL) FROM aimroute.leads",
		extra_params => [ '-U', 'oem' ]),
	as('oem', "SELECT count(*) || ' ' || count(*) FROM aimroute.leads"),
	'the restored database has every lead, each with its dealer');
is( $node->safe_psql(
		'oem_restored', "SELECT pg_get_userbyid(extowner) FROM pg_extension WHERE extname = 'aimroute'",
		extra_params => [ '-U', 'oem' ]),
	'oem',
	'oem owns aimroute in the restored database');

# And removing it: the schema, which CREATE EXTENSION made for oem, stays
# oem's until it drops it too.
as('oem', 'DROP EXTENSION aimroute');
is( as(
		'oem',
		"SELECT count(*) FROM pg_extension WHERE extname = 'aimroute'"
		  . " UNION ALL SELECT count(*) FROM pg_class WHERE relnamespace = 'aimroute'::regnamespace"),
	"0\n0", 'oem drops aimroute, and every table of it');
as('oem', 'DROP SCHEMA aimroute');

$node->stop;
done_testing();
