# t/012_search_path.pl: no statement of aimroute resolves a name through
# its caller's search_path (SPEC section 5).
#
# Schema "evil" holds look-alikes of what aimroute's statements name
# without a schema: every binary operator of pg_catalog on the types they
# compare (=, <>, &&, <, ||, ~~, ...), functions (now, make_interval,
# array_to_string, PostGIS's st_distance, ...), aggregates (count,
# array_agg, min, max, string_agg, ...) and types (text, float8,
# geography, ...).  Each call of a look-alike takes a number from the
# sequence evil.calls, which survives rollbacks; "=" on text answers true
# and "<>" false, as an attacker's would.  Every session puts evil first
# (SET search_path = evil, pg_catalog, public, and ALTER ROLE / ALTER
# DATABASE for the roles and the workers' connections) and adds
# temporary tables, views and types named like aimroute's (leads,
# dealers, settings, text, geography, ...).
#
# An admin, a region user, a dealer user and the two background workers
# then use the product.  Each operation gives the answer it gives in a
# clean session (run there first, and rolled back, or read in the same
# snapshot), and no look-alike is ever called.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use DeliverySinks;

my $smtp = start_smtp_sink();
my $smtp_url = "smtp://127.0.0.1:$smtp->{port}";

my $node = PostgreSQL::Test::Cluster->new('search_path');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'sp'
aimroute.reroute_naptime = 1s
aimroute.delivery_naptime = 60s
});
$node->start;

my $hostile_path = 'evil, pg_catalog, public';
my $clean = q{SET search_path = "$user", public;};

# The owner is not a superuser (as in t/008_owner.pl); the users are
# created by the superuser, their scopes given by the owner.
$node->safe_psql(undef,
	'CREATE ROLE oem LOGIN; CREATE DATABASE sp OWNER oem; CREATE ROLE sp_admin LOGIN; CREATE ROLE sp_region LOGIN; CREATE ROLE sp_dealer LOGIN'
);
$node->safe_psql('sp', 'SET client_min_messages = warning; CREATE EXTENSION postgis');
$node->safe_psql('sp', 'CREATE EXTENSION aimroute', extra_params => [ '-U', 'oem' ]);
$node->safe_psql('sp',
	'GRANT aimroute_admin TO sp_admin; GRANT aimroute_region TO sp_region; GRANT aimroute_dealer TO sp_dealer');

# sql(role, sql): run SQL as a role (the superuser: undef) in a clean
# session, failing on an error.
sub sql
{
	my ($role, $sql) = @_;
	return $node->safe_psql('sp', "$clean $sql", extra_params => [ defined $role ? ('-U', $role) : () ]);
}

sql('oem', 'SET client_min_messages = error; SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');
sql(
	'oem', qq{
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('SP', 'Search Path Boats');
	INSERT INTO dealers (dealer_number, name, country, postal_code, region) VALUES
	  ('HQ', 'Corporate', 'US', '10001', NULL),
	  ('N1', 'Chicago Marine', 'US', '60601', 'North'),
	  ('N2', 'Milwaukee Marine', 'US', '53202', 'North'),
	  ('N3', 'Rockford Marine', 'US', '61101', 'North'),
	  ('S1', 'Miami Marine', 'US', '33101', 'South');
	INSERT INTO dealer_brands VALUES ('N1', 'SP'), ('N2', 'SP'), ('N3', 'SP'), ('S1', 'SP');
	INSERT INTO territories (dealer_number, brand_code, kind, country, code) VALUES
	  ('N1', NULL, 'postal', 'US', '60601'), ('S1', 'SP', 'state', 'US', 'FL');
	INSERT INTO dealer_contacts (dealer_number, name, email, contact_types) VALUES
	  ('N1', 'Sales', 'sales\@n1.example', '{Leads: Emails To}'),
	  ('N1', 'Boss', 'boss\@n1.example', '{Leads: Emails CC}'),
	  ('N2', 'Sales', 'sales\@n2.example', '{Leads: Emails To}'),
	  ('N3', 'Sales', 'sales\@n3.example', '{Leads: Emails To}'),
	  ('S1', 'Sales', 'sales\@s1.example', '{Leads: Emails To,Leads: Emails CC}');
	UPDATE settings SET default_dealer_number = 'HQ', radius_enabled = true, radius_miles = 150,
	       smtp_url = '$smtp_url', smtp_from = 'leads\@oem.example',
	       reroute_enabled = true, reroute_after = '24 hours', reroute_max_dealers = 3;
	-- mark_viewed counts a dealer or region user's own address only
	-- (user_scopes.email): both users are N1's To contact here, so that
	-- the view is recorded, in the clean and in the hostile session.
	INSERT INTO user_scopes (role_name, dealer_number, region, email) VALUES
	  ('sp_region', NULL, 'North', 'sales\@n1.example'), ('sp_dealer', 'N1', NULL, 'sales\@n1.example');
});
my $evil_sql = <<'EVIL';
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE SEQUENCE evil.calls;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE evil.calls TO PUBLIC;
CREATE FUNCTION evil.hit(what pg_catalog.text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    IF pg_catalog.nextval('evil.calls') OPERATOR(pg_catalog.<=) 20 THEN
        RAISE WARNING 'look-alike evil.% called', what;
    END IF;
END
$f$;
DO $do$
DECLARE
    o record;
    n integer := 0;
    body pg_catalog.text;
BEGIN
    -- Operators: every binary operator of pg_catalog on the types aimroute's
    -- statements compare, the same signature in schema evil.
    FOR o IN
        SELECT p.oprname, p.oprleft::pg_catalog.regtype AS l, p.oprright::pg_catalog.regtype AS r,
               p.oprresult::pg_catalog.regtype AS res
          FROM pg_catalog.pg_operator p
         WHERE p.oprnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
           AND p.oprkind OPERATOR(pg_catalog.=) 'b'
           AND p.oprleft::pg_catalog.regtype::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['text', 'text[]', 'name', 'smallint', 'integer', 'bigint', 'boolean', 'double precision', 'numeric', 'timestamp with time zone', 'interval', 'date', 'anyarray', 'anyenum', 'anycompatiblearray', 'anycompatible', 'anyelement', 'anynonarray'])
           AND p.oprright::pg_catalog.regtype::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['text', 'text[]', 'name', 'smallint', 'integer', 'bigint', 'boolean', 'double precision', 'numeric', 'timestamp with time zone', 'interval', 'date', 'anyarray', 'anyenum', 'anycompatiblearray', 'anycompatible', 'anyelement', 'anynonarray'])
    LOOP
        n := n OPERATOR(pg_catalog.+) 1;
        -- "=" and "<>" on text lie, as the issue's attacker would.
        body := CASE WHEN o.oprname OPERATOR(pg_catalog.=) '=' AND o.l OPERATOR(pg_catalog.=) 'text'::pg_catalog.regtype THEN 'true'
                     WHEN o.oprname OPERATOR(pg_catalog.=) '<>' AND o.l OPERATOR(pg_catalog.=) 'text'::pg_catalog.regtype THEN 'false'
                     ELSE pg_catalog.format('a OPERATOR(pg_catalog.%s) b', o.oprname) END;
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION evil.op%s(a %s, b %s) RETURNS %s LANGUAGE plpgsql AS $b$ BEGIN PERFORM evil.hit(%L); RETURN %s; END $b$',
            n, o.l, o.r, o.res, pg_catalog.format('%s(%s, %s)', o.oprname, o.l, o.r), body);
        EXECUTE pg_catalog.format('CREATE OPERATOR evil.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = evil.op%s)',
                                  o.oprname, o.l, o.r, n);
    END LOOP;
    RAISE NOTICE '% look-alike operators', n;
    -- Functions: the same signature as pg_catalog's (and PostGIS's) in schema evil.
    n := 0;
    FOR o IN
        SELECT p.oid, pg_catalog.format('%I.%I', p.pronamespace::pg_catalog.regnamespace, p.proname) AS qualified,
               p.proname, p.proretset, pg_catalog.pg_get_function_arguments(p.oid) AS args,
               pg_catalog.pg_get_function_result(p.oid) AS res, p.pronargs
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) ANY (ARRAY['pg_catalog'::pg_catalog.regnamespace,
                   (SELECT e.extnamespace FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'postgis')])
           AND p.prokind OPERATOR(pg_catalog.=) 'f' AND p.provariadic OPERATOR(pg_catalog.=) 0
           AND p.proname OPERATOR(pg_catalog.=) ANY (ARRAY['now', 'clock_timestamp', 'statement_timestamp', 'transaction_timestamp',
               'lower', 'upper', 'btrim', 'ltrim', 'rtrim', 'length', 'char_length', 'format', 'array_to_string',
               'string_to_array', 'cardinality', 'array_length', 'array_position', 'array_append', 'array_cat',
               'array_remove', 'make_interval', 'date_trunc', 'to_char', 'md5', 'substr', 'replace', 'split_part',
               'regexp_replace', 'regexp_match', 'left', 'right', 'abs', 'round', 'floor', 'ceil', 'unnest',
               'current_setting', 'encode', 'sha256', 'random', 'greatest_dummy', 'to_jsonb', 'jsonb_build_object',
               'st_distance', 'st_dwithin', 'st_setsrid', 'st_makepoint', 'st_x', 'st_y', 'geography', 'geometry'])
           AND NOT EXISTS (SELECT FROM pg_catalog.unnest(p.proargtypes::pg_catalog.oid[]) t(oid)
                            WHERE t.oid::pg_catalog.regtype::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY['internal', '"any"', 'cstring']))
           AND pg_catalog.pg_get_function_result(p.oid) OPERATOR(pg_catalog.<>) ALL (ARRAY['internal', 'cstring'])
    LOOP
        n := n OPERATOR(pg_catalog.+) 1;
        IF o.proretset THEN
            body := pg_catalog.format('RETURN QUERY SELECT * FROM %s(%s)', o.qualified,
                        COALESCE((SELECT pg_catalog.string_agg('$' OPERATOR(pg_catalog.||) i, ', ') FROM pg_catalog.generate_series(1, o.pronargs) i), ''));
        ELSE
            body := pg_catalog.format('RETURN %s(%s)', o.qualified,
                        COALESCE((SELECT pg_catalog.string_agg('$' OPERATOR(pg_catalog.||) i, ', ') FROM pg_catalog.generate_series(1, o.pronargs) i), ''));
        END IF;
        BEGIN
            EXECUTE pg_catalog.format(
                'CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE plpgsql AS $b$ BEGIN PERFORM evil.hit(%L); %s; END $b$',
                o.proname, o.args, o.res, o.oid::pg_catalog.regprocedure::pg_catalog.text, body);
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'no look-alike of %: %', o.oid::pg_catalog.regprocedure, SQLERRM;
            n := n OPERATOR(pg_catalog.-) 1;
        END;
    END LOOP;
    RAISE NOTICE '% look-alike functions', n;
END
$do$;
CREATE FUNCTION evil.count_star(s bigint) RETURNS bigint LANGUAGE plpgsql AS $f$
BEGIN PERFORM evil.hit('count(*)'); RETURN s OPERATOR(pg_catalog.+) 1; END
$f$;
CREATE AGGREGATE evil.count(*) (SFUNC = evil.count_star, STYPE = bigint, INITCOND = '0');
DO $do$
DECLARE
    t pg_catalog.text;
    a pg_catalog.text;
    n integer := 0;
BEGIN
    FOREACH t IN ARRAY ARRAY['text', 'bigint', 'integer', 'double precision', 'numeric', 'timestamp with time zone', 'boolean']
    LOOP
        FOREACH a IN ARRAY ARRAY['count', 'min', 'max', 'array_agg', 'sum', 'bool_or', 'bool_and', 'every', 'string_agg']
        LOOP
            CONTINUE WHEN a OPERATOR(pg_catalog.=) 'sum' AND t OPERATOR(pg_catalog.=) ANY (ARRAY['text', 'timestamp with time zone', 'boolean']);
            CONTINUE WHEN a OPERATOR(pg_catalog.=) ANY (ARRAY['bool_or', 'bool_and', 'every']) AND t OPERATOR(pg_catalog.<>) 'boolean';
            CONTINUE WHEN a OPERATOR(pg_catalog.=) 'string_agg' AND t OPERATOR(pg_catalog.<>) 'text';
            CONTINUE WHEN a OPERATOR(pg_catalog.=) ANY (ARRAY['min', 'max']) AND t OPERATOR(pg_catalog.=) 'boolean';
            n := n OPERATOR(pg_catalog.+) 1;
            EXECUTE pg_catalog.format(
                'CREATE FUNCTION evil.agg%s(s %s, v %s%s) RETURNS %s LANGUAGE plpgsql AS $b$ BEGIN PERFORM evil.hit(%L); RETURN %s; END $b$',
                n,
                CASE a WHEN 'count' THEN 'bigint' WHEN 'array_agg' THEN t OPERATOR(pg_catalog.||) '[]' ELSE t END,
                t, CASE a WHEN 'string_agg' THEN ', d text' ELSE '' END,
                CASE a WHEN 'count' THEN 'bigint' WHEN 'array_agg' THEN t OPERATOR(pg_catalog.||) '[]' ELSE t END,
                pg_catalog.format('%s(%s)', a, t),
                CASE a
                    WHEN 'count' THEN 's OPERATOR(pg_catalog.+) CASE WHEN v IS NULL THEN 0 ELSE 1 END'
                    WHEN 'min' THEN 'CASE WHEN s IS NULL OR v OPERATOR(pg_catalog.<) s THEN v ELSE s END'
                    WHEN 'max' THEN 'CASE WHEN s IS NULL OR v OPERATOR(pg_catalog.>) s THEN v ELSE s END'
                    WHEN 'array_agg' THEN 'pg_catalog.array_append(s, v)'
                    WHEN 'sum' THEN 'CASE WHEN s IS NULL THEN v ELSE s OPERATOR(pg_catalog.+) v END'
                    WHEN 'bool_or' THEN 'CASE WHEN s IS NULL THEN v ELSE s OR v END'
                    WHEN 'string_agg' THEN 'CASE WHEN s IS NULL THEN v ELSE s OPERATOR(pg_catalog.||) d OPERATOR(pg_catalog.||) v END'
                    ELSE 'CASE WHEN s IS NULL THEN v ELSE s AND v END' END);
            EXECUTE pg_catalog.format('CREATE AGGREGATE evil.%s(%s%s) (SFUNC = evil.agg%s, STYPE = %s%s)',
                a, t, CASE a WHEN 'string_agg' THEN ', text' ELSE '' END, n,
                CASE a WHEN 'count' THEN 'bigint' WHEN 'array_agg' THEN t OPERATOR(pg_catalog.||) '[]' ELSE t END,
                CASE a WHEN 'count' THEN ', INITCOND = ''0''' ELSE '' END);
        END LOOP;
    END LOOP;
    RAISE NOTICE '% look-alike aggregates', n;
END
$do$;
-- Types named as the ones aimroute's statements name, last: from here on,
-- an unqualified "text" in a session with evil first is evil.text.
CREATE TYPE evil.text AS (x integer);
CREATE TYPE evil.float8 AS (x integer);
CREATE TYPE evil.int8 AS (x integer);
CREATE TYPE evil.int4 AS (x integer);
CREATE TYPE evil.bool AS (x integer);
CREATE TYPE evil.timestamptz AS (x integer);
CREATE TYPE evil.name AS (x integer);
CREATE TYPE evil.regclass AS (x integer);
CREATE TYPE evil.geography AS (x integer);
CREATE TYPE evil.geometry AS (x integer);
CREATE TYPE evil.match_type AS (x integer);
CREATE TYPE evil.routing_step AS (x integer);
EVIL
$node->safe_psql('sp', "SET client_min_messages = warning; $evil_sql");

# Every session from now on starts with evil first: the roles', and the
# database's, which the background workers connect with.  Restarting
# starts the workers again with it.
for my $role (qw(oem sp_admin sp_region sp_dealer))
{
	$node->safe_psql('sp', "ALTER ROLE $role SET search_path = $hostile_path");
}
$node->safe_psql('sp', "ALTER DATABASE sp SET search_path = $hostile_path");
$node->restart;

# poll(sql): poll a clean query as the superuser until it answers t.
sub poll
{
	my ($sql) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		my ($out, $err) = ('', '');
		$node->psql('sp', "$clean $sql", stdout => \$out, stderr => \$err);
		return 1 if $out eq 't';
		usleep(100_000);
	}
	return 0;
}
ok(poll("SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type IN ('aimroute re-route worker', 'aimroute delivery worker')"),
	'both workers run, connected with the hostile search_path');

# What a hostile session adds to the role's search_path: temporary tables,
# views and types named like aimroute's.
my $hostile = qq{
SET search_path = $hostile_path;
CREATE TEMP TABLE leads (lead_id bigint, dealer_number pg_catalog.text, comment pg_catalog.text);
CREATE TEMP TABLE dealers (dealer_number pg_catalog.text, name pg_catalog.text, active_for_sales boolean);
CREATE TEMP TABLE settings (default_dealer_number pg_catalog.text, radius_enabled boolean);
CREATE TEMP TABLE dealer_contacts (dealer_number pg_catalog.text, email pg_catalog.text);
CREATE TEMP TABLE outbox (message_id bigint, status pg_catalog.text);
CREATE TEMP TABLE lead_notifications (notification_id bigint);
CREATE TEMP TABLE postal_codes (country pg_catalog.text, postal_code pg_catalog.text);
CREATE TEMP VIEW user_scopes AS SELECT NULL::pg_catalog.name AS role_name;
CREATE TEMP VIEW territories AS SELECT NULL::pg_catalog.text AS dealer_number;
CREATE TYPE pg_temp.text AS (x integer);
CREATE TYPE pg_temp.geography AS (x integer);
CREATE TYPE pg_temp.float8 AS (x integer);
CREATE TYPE pg_temp.match_type AS (x integer);
};

# The clean path for reading what an operation did, in a hostile session:
# pg_catalog first, the temporary schema last, evil left out.
my $reader = 'SET LOCAL search_path = pg_catalog, public, pg_temp;';

# run(role, sql): the output of SQL run as a role, with the errors it raised.
sub run
{
	my ($role, $sql) = @_;
	my ($out, $err) = ('', '');
	$node->psql('sp', $sql, stdout => \$out, stderr => \$err, extra_params => [ '-U', $role ]);
	return join("\n", $out, grep { /ERROR/ } split /\n/, $err);
}

# calls: how many times look-alikes were called so far.
sub calls
{
	return sql(undef, 'SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM evil.calls');
}

# same_change(role, name, op, check): op, then check, as a role: first in a
# clean session, rolled back, then in a hostile one, committed.  Both give
# the same output, and no look-alike is called.
sub same_change
{
	my ($role, $name, $op, $check) = @_;
	my $before = calls();
	my $want = run($role, "$clean BEGIN; $op\n$reader $check; ROLLBACK;");
	my $got = run($role, "$hostile BEGIN; $op\n$reader $check; COMMIT;");
	like($want, qr/\S/, "$name: the clean session has an answer");
	unlike($want, qr/ERROR/, "$name: without an error");
	is($got, $want, "$name: the same in a hostile session");
	is(calls() - $before, 0, "$name: no look-alike called");
}

# same_read(role, name, sql): sql as a role, clean then hostile, in one
# snapshot of one session; the same rows, and no look-alike called.
sub same_read
{
	my ($role, $name, $sql) = @_;
	my $before = calls();
	my $out = run($role,
		"BEGIN ISOLATION LEVEL REPEATABLE READ; SET LOCAL search_path = \"\$user\", public; SELECT 'clean'; $sql;\n"
		  . ($hostile =~ s/SET search_path/SET LOCAL search_path/r)
		  . "SELECT 'hostile'; $sql; COMMIT;");
	my ($want, $got) = $out =~ /\Aclean$(.*)^hostile$(.*)\z/sm;
	$want //= "(no answer)\n$out";
	like($want, qr/\S/, "$name: the clean session has an answer");
	unlike($want, qr/ERROR/, "$name: without an error");
	is(join("\n", sort split /\n/, $got // $out), join("\n", sort split /\n/, $want), "$name: the same in a hostile session");
	is(calls() - $before, 0, "$name: no look-alike called");
}

# A lead, as the clean reader of an operation's check sees it, by comment.
my $leads = q{
SELECT l.comment, l.dealer_number, l.match_type, round(l.distance_miles::numeric, 1), l.viewed_at IS NOT NULL,
       l.viewed_by, l.reroute_due_at IS NOT NULL, l.reroute_count, l.country, l.postal_code,
       (SELECT string_agg(s.rule || ': ' || s.message, ' / ' ORDER BY s.step) FROM unnest(l.routing_log) s),
       (SELECT string_agg(n.dealer_number || ' ' || n.event || ' ' || n.no_contacts || ' ' || n.messages, ', '
                          ORDER BY n.notification_id) FROM aimroute.lead_notifications n WHERE n.lead_id = l.lead_id),
       (SELECT string_agg(o.method || ' ' || o.role || ' ' || o.recipient, ', ' ORDER BY o.recipient, o.message_id)
          FROM aimroute.outbox o WHERE o.lead_id = l.lead_id),
       (SELECT string_agg(h.event || ' ' || coalesce(h.from_dealer, '-') || '>' || h.to_dealer || ' ' || h.match_type, ', '
                          ORDER BY h.history_id) FROM aimroute.lead_history h WHERE h.lead_id = l.lead_id)
  FROM aimroute.leads l WHERE l.comment LIKE 'TAG%' ORDER BY l.comment};

# leads_check(tag): that query for the leads whose comment starts with tag.
sub leads_check
{
	my ($tag) = @_;
	return $leads =~ s/TAG/$tag/r;
}

# Inserting leads, as an admin: one row, several rows, COPY.
same_change('sp_admin', 'INSERT of one lead',
	"INSERT INTO aimroute.leads (brand_code, country, postal_code, first_name, email, comment)"
	  . " VALUES ('SP', 'US', '60601', 'Ann', 'ann\@example.com', 'single');",
	leads_check('single'));
same_change('sp_admin', 'INSERT of several leads',
	"INSERT INTO aimroute.leads (brand_code, country, postal_code, first_name, comment) VALUES"
	  . " ('SP', 'US', '60614', 'Bo', 'multi a'), ('SP', 'US', '33139', 'Cy', 'multi b'),"
	  . " ('SP', 'US', 'nowhere', 'Di', 'multi c'), ('SP', 'CA', 'M5V 3L9', 'Ed', 'multi d'),"
	  . " ('SP', 'US', '60601', 'Flo', 'multi e'), ('SP', 'US', '61101', 'Gus', 'multi f');",
	leads_check('multi'));
# COPY FROM is not supported under row-level security: the owner imports.
same_change('oem', 'COPY of leads',
	"COPY aimroute.leads (brand_code, country, postal_code, dealer_number, first_name, comment) FROM STDIN;\n"
	  . "SP\tUS\t60601\t\\N\tHal\tcopy a\n"
	  . "SP\tus\t 33101 \t\\N\tIda\tcopy b\n"
	  . "SP\tUS\t53202\tN3\tJo\tcopy c\n"
	  . "XX\tUS\t60601\t\\N\tKay\tcopy d\n"
	  . "\\.\n",
	leads_check('copy'));
same_change('sp_admin', 'process_staging',
	"INSERT INTO aimroute.lead_staging (batch_id, brand_code, country, postal_code, first_name, email, comment) VALUES"
	  . " ('b1', 'SP', 'US', '60601', 'Lu', 'lu\@example.com', 'staged a'),"
	  . " ('b1', 'SP', 'US', '33101', 'Mo', 'mo\@example.com', 'staged b'),"
	  . " ('b1', 'SP', 'US', 'junk', 'Ned', 'ned\@example.com', 'staged c'),"
	  . " ('b1', 'SP', 'US', '60601', 'Lu', 'lu\@example.com', 'staged a again'), ('b1', 'SP', 'US', '60601', 'Oz', NULL, 'staged d');"
	  . " SELECT * FROM aimroute.process_staging('b1');",
	leads_check('staged'));

my %id = map { split /\|/ } split /\n/,
  sql(undef, "SELECT comment, lead_id FROM aimroute.leads WHERE comment IS NOT NULL");
is(join(', ', sort keys %id),
	'copy a, copy b, copy c, copy d, multi a, multi b, multi c, multi d, multi e, multi f, single, staged a, staged a again, staged b, staged c',
	'the hostile sessions\' leads are there');

# The locator, simulation and explanation, for each kind of user; the
# views, read by each.
for my $role (qw(sp_admin sp_region sp_dealer))
{
	same_read($role, "locate_dealers as $role",
		"SELECT * FROM aimroute.locate_dealers('US', '60614', 'SP'); SELECT * FROM aimroute.locate_dealers('US', '33139', 'SP', NULL, 3)");
	same_read($role, "route as $role",
		"SELECT * FROM aimroute.route('US', '60601', 'SP'); SELECT * FROM aimroute.route('CA', 'M5V3L9', 'SP', NULL, 'N2');"
		  . " SELECT * FROM aimroute.route('US', '53202', 'SP', NULL, NULL, NULL, ARRAY['N2'])");
	same_read($role, "explain_lead as $role",
		"SELECT * FROM aimroute.explain_lead($id{'multi a'}); SELECT * FROM aimroute.explain_lead($id{'copy b'})");
	for my $view (qw(lead_delivery_status unsent_leads delivery_attempts delivery_issues))
	{
		same_read($role, "view $view read by $role",
			"SELECT * FROM aimroute.$view; SELECT 'rows'");
	}
}
same_read('sp_admin', 'simulate_routing',
	"SELECT * FROM aimroute.simulate_routing('2000-01-01', '2100-01-01')");

# Coverage, by the roles that may run it (Canada: the GeoJSON as a digest).
for my $role (qw(sp_admin sp_region))
{
	same_read($role, "coverage as $role",
		"SELECT * FROM aimroute.coverage('SP', 'CA');"
		  . " SELECT pg_catalog.md5(aimroute.coverage_geojson('SP', 'CA')::pg_catalog.text);"
		  . " SELECT * FROM aimroute.white_space('SP', 'US'); SELECT * FROM aimroute.dealer_areas('SP')");
}

# Acting on leads: a dealer user, a region user, an admin.
same_change('sp_dealer', 'mark_viewed by a dealer user',
	"SELECT aimroute.mark_viewed($id{'single'}, 'sales\@n1.example');", leads_check('single'));
same_change('sp_region', 'mark_viewed by a region user',
	"SELECT aimroute.mark_viewed($id{'multi e'}, 'sales\@n1.example');", leads_check('multi e'));
same_change('sp_dealer', 'send_lead by a dealer user',
	"SELECT aimroute.send_lead($id{'copy a'});", leads_check('copy a'));
same_change('sp_region', 'reassign by a region user',
	"SELECT aimroute.reassign($id{'multi a'}, 'N2', 'closer to the customer');", leads_check('multi a'));
same_change('sp_admin', 'reassign_dealer_leads by an admin',
	"SELECT * FROM aimroute.reassign_dealer_leads('S1', 'closing');", leads_check(''));
my $token = sql(undef,
	"SELECT view_token FROM aimroute.lead_notifications WHERE lead_id = $id{'copy a'} ORDER BY notification_id LIMIT 1");
same_change('sp_dealer', 'open_view_link', "SELECT aimroute.open_view_link('$token');", leads_check('copy a'));

# The workers, whose connection has the hostile search_path too: the
# delivery worker sends the leads the hostile sessions inserted, and the
# re-route worker moves an overdue one to the dealer the locator ranks
# next.
ok(poll("SELECT count(*) = 2 AND bool_and(status = 'delivered') FROM aimroute.outbox WHERE lead_id = $id{'single'}"),
	'the delivery worker sends the messages of a lead a hostile session inserted');
ok(wait_for_log($smtp, sub { grep { grep { $_ eq 'boss@n1.example' } @{ $_->{rcpt_tos} // [] } } @{ $_[0] } }),
	'the SMTP server got them');
my $before = calls();
is( run('sp_admin',
		"$hostile INSERT INTO aimroute.leads (brand_code, country, postal_code, comment) VALUES ('SP', 'US', '61101', 'overdue')"
		  . " RETURNING dealer_number"),
	'N3', 'a hostile session inserts a lead for the re-route worker');
my $overdue = sql(undef, "SELECT lead_id FROM aimroute.leads WHERE comment = 'overdue'");
my $next = sql(undef, "SELECT dealer_number FROM aimroute.locate_dealers('US', '61101', 'SP') WHERE rank = 2");
sql(undef, "UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE lead_id = $overdue");
ok(poll("SELECT dealer_number = '$next' AND match_type = 'Re-Route' FROM aimroute.leads WHERE lead_id = $overdue"),
	"the re-route worker re-routes an overdue lead to the next dealer ($next)");
ok(poll("SELECT count(*) = 1 AND bool_and(status = 'delivered') FROM aimroute.outbox WHERE lead_id = $overdue AND dealer_number = '$next'"),
	'and the delivery worker sends it to that dealer');
is(calls() - $before, 0, 'the workers called no look-alike');
is(calls(), 0, 'no look-alike was called at all');

my $log = slurp_file($node->logfile);
my %seen = map { $_ => 1 } $log =~ /WARNING:  (look-alike evil\.[^\n]*? called)/g;
is(join("\n", sort keys %seen), '', 'the server log names no look-alike call');

$node->stop;
done_testing();
