# t/010_pgbouncer.pl: aimroute behind a real PgBouncer in transaction mode.
#
# PgBouncer (the Debian package pgbouncer; scripts/lib.sh installs it) runs
# on a free loopback port in front of this test's cluster, with
# pool_mode = transaction and two server connections per pool, so that
# clients take turns on the same server connections, as in production.
#
# Users (docs/security.md, "Connection poolers"): a NOINHERIT pool login
# role, member of eight dealer roles.  Eight clients, one per dealer, each
# run many transactions BEGIN; SET LOCAL ROLE dealer (or set_config('role',
# dealer, true)); read aimroute.leads and the delivery views; COMMIT, and
# must see only their dealer's rows, on server connections they share.  A
# ninth client forgets to switch and must get "permission denied for schema
# aimroute" and no row, every time.  A pool of one server connection shows
# the hazard the pattern avoids: a session SET ROLE outlives its client.
#
# Routing: sixteen clients insert leads through PgBouncer while an admin
# deactivates a dealer through it: no error, and no lead begun after the
# deactivation committed goes to that dealer.
#
# Skipped, with the reason, only when pgbouncer is not installed.
#
# PostGIS placement: public (t/lib/Placement.pm).
use strict;
use warnings;

use File::Spec;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Placement;

my ($pgbouncer) = grep { -x $_ } map { File::Spec->catfile($_, 'pgbouncer') } (split(/:/, $ENV{PATH}), '/usr/sbin');
plan skip_all => 'pgbouncer is not installed (Debian package pgbouncer, which scripts/lib.sh installs)'
  unless defined $pgbouncer;

my $ndealers = 8;        # dealer clients, one per dealer
my $rounds = 60;         # transactions of each dealer client
my $inserters = 16;      # routing clients
my $inserts = 20;        # leads each routing client inserts before, and after, the deactivation
my $leaver = 'D3';       # the dealer deactivated mid-run

my $node = PostgreSQL::Test::Cluster->new('pgbouncer');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
max_connections = 40
track_commit_timestamp = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', Placement::pick('public'));

my $dealers_sql = join(",\n", map { "('D$_', 'Dealer $_', 'US', '" . (10000 + $_) . "')" } 1 .. $ndealers);
$node->safe_psql(
	'app', qq{
	SET client_min_messages = warning;
	SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path());
	INSERT INTO aimroute.brands VALUES ('PB', 'Pooled Boats');
	INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code) VALUES
	  ('HQ', 'Corporate', 'US', '10001'),
	  $dealers_sql;
	INSERT INTO aimroute.dealer_brands SELECT dealer_number, 'PB' FROM aimroute.dealers WHERE dealer_number <> 'HQ';
	INSERT INTO aimroute.territories (dealer_number, brand_code, kind, country, code)
	  SELECT dealer_number, 'PB', 'postal', 'US', postal_code FROM aimroute.dealers WHERE dealer_number <> 'HQ';
	INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, contact_types)
	  SELECT dealer_number, 'Sales', lower(dealer_number) || '\@dealers.example', '{Leads: Emails To}'
	    FROM aimroute.dealers WHERE dealer_number <> 'HQ';
	UPDATE aimroute.settings SET default_dealer_number = 'HQ', radius_enabled = false;
	-- Ten leads for each dealer to start with.
	INSERT INTO aimroute.leads (brand_code, country, postal_code, comment)
	  SELECT 'PB', 'US', (10000 + 1 + i % $ndealers)::text, 'seed' FROM generate_series(0, 10 * $ndealers - 1) i;

	-- The pool's login role: member of each dealer role, inheriting none.
	CREATE ROLE app_pool LOGIN NOINHERIT;
	CREATE ROLE app_admin LOGIN IN ROLE aimroute_admin;
	CREATE ROLE app_ops LOGIN IN ROLE aimroute_admin;
	DO \$\$
	BEGIN
	    FOR k IN 1..$ndealers LOOP
	        EXECUTE format('CREATE ROLE dealer_%s NOLOGIN IN ROLE aimroute_dealer', k);
	        EXECUTE format('GRANT dealer_%s TO app_pool', k);
	        INSERT INTO aimroute.user_scopes (role_name, dealer_number) VALUES ('dealer_' || k, 'D' || k);
	    END LOOP;
	END
	\$\$;
});
is( $node->safe_psql('app',
		"SELECT string_agg(dealer_number || ':' || n, ' ' ORDER BY dealer_number) FROM (SELECT dealer_number, count(*) n FROM aimroute.leads GROUP BY 1) x"),
	join(' ', map { "D$_:10" } 1 .. $ndealers),
	'ten leads routed to each dealer');

###
### PgBouncer in transaction mode, on a free loopback port.
###
my $dir = PostgreSQL::Test::Utils::tempdir();
my $bport = PostgreSQL::Test::Cluster::get_free_port();
my $server = 'host=' . $node->host . ' port=' . $node->port;
open(my $users, '>', "$dir/userlist.txt") or die "userlist.txt: $!";
print $users qq{"app_pool" ""\n"app_admin" ""\n"app_ops" ""\n};
close $users;
open(my $ini, '>', "$dir/pgbouncer.ini") or die "pgbouncer.ini: $!";
print $ini qq{[databases]
app = $server dbname=app
; One server connection: shows what a session SET ROLE does to the next client.
leaky = $server dbname=app pool_size=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 2
reserve_pool_size = 0
min_pool_size = 0
max_client_conn = 100
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
};
close $ini;
my ($bouncer_out, $bouncer_err) = ('', '');
my $bouncer = IPC::Run::start([ $pgbouncer, "$dir/pgbouncer.ini" ], '<', \undef, '>', \$bouncer_out, '2>', \$bouncer_err);

# Stop pgbouncer however the test ends.
END
{
	if ($bouncer && $bouncer->pumpable)
	{
		$bouncer->signal('TERM');
		$bouncer->finish;
	}
}

# bouncer_psql(user, db, sql): run psql through pgbouncer; returns (exit
# code, stdout, stderr).
sub bouncer_psql
{
	my ($user, $db, $sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-X', '-q', '-At', '-h', '127.0.0.1', '-p', $bport, '-U', $user, '-d', $db, '-c', $sql ],
		'<', \undef, '>', \$out, '2>', \$err);
	chomp $out;
	return ($? >> 8, $out, $err);
}

# start_client(user, name, sql, stop_on_error): a psql session through
# pgbouncer running sql in the background, from a file and into files, so
# that it runs on without this script pumping it; returns the harness and
# the names of its output files.
sub start_client
{
	my ($user, $name, $sql, $stop) = @_;
	my $file = "$dir/$name";
	open(my $fh, '>', "$file.sql") or die "$file.sql: $!";
	print $fh $sql;
	close $fh;
	my $h = IPC::Run::start(
		[
			'psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=' . ($stop ? 1 : 0), '-h', '127.0.0.1', '-p', $bport,
			'-U', $user, '-d', 'app', '-f', "$file.sql"
		],
		'<', \undef, '>', "$file.out", '2>', "$file.err",
		IPC::Run::timeout(3 * $PostgreSQL::Test::Utils::timeout_default));
	return [ $h, "$file.out", "$file.err" ];
}

# finish_client(client): waits for a client's end; returns its wait
# status (0: it exited with code 0), stdout and stderr.
sub finish_client
{
	my ($h, $out, $err) = @{ $_[0] };
	$h->finish;
	return ($h->full_result(0), slurp_file($out), slurp_file($err));
}

my $up = 0;
for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
{
	my ($rc, $out) = bouncer_psql('app_admin', 'app', 'SELECT 1');
	if ($rc == 0 && $out eq '1')
	{
		$up = 1;
		last;
	}
	last unless $bouncer->pumpable;
	select(undef, undef, undef, 0.1);
}
ok($up, 'pgbouncer accepts connections in transaction mode') or diag "pgbouncer: $bouncer_out $bouncer_err";

###
### The hazard: a session SET ROLE stays on the server connection.
###
my ($rc, $out, $err) = bouncer_psql('app_pool', 'leaky', 'SET ROLE dealer_1');
is($rc, 0, 'a client sets a session role through the pool of one server connection, and leaves');
($rc, $out, $err) =
  bouncer_psql('app_pool', 'leaky', "SELECT current_user || ' ' || string_agg(DISTINCT dealer_number, ',') FROM aimroute.leads");
is($out, 'dealer_1 D1',
	'the next client of that server connection runs as that role and sees its leads: why the pool must not SET ROLE');
bouncer_psql('app_pool', 'leaky', 'RESET ROLE');

###
### The safe pattern, eight dealers and one forgetful client at once.
###
my $read = q{SELECT 'R|%d|' || pg_backend_pid() || '|' || current_user || '|'
       || coalesce((SELECT string_agg(DISTINCT dealer_number, ',') FROM aimroute.leads), '') || '|'
       || (SELECT count(*) FROM aimroute.leads) || '|'
       || coalesce((SELECT string_agg(DISTINCT dealer_number, ',') FROM aimroute.lead_delivery_status), '') || '|'
       || coalesce((SELECT string_agg(DISTINCT dealer_number, ',') FROM aimroute.unsent_leads), '') || '|'
       || (SELECT count(*) FROM aimroute.delivery_issues WHERE dealer_number <> '%s');
};
my @clients;
for my $k (1 .. $ndealers)
{
	my $switch =
	  $k % 2
	  ? "SET LOCAL ROLE dealer_$k;\n"
	  : "SELECT set_config('role', 'dealer_$k', true) IS NULL;\n";
	my $sql = ("BEGIN;\n" . $switch . sprintf($read, $k, "D$k") . "COMMIT;\n") x $rounds;
	push @clients, start_client('app_pool', "dealer_$k", $sql, 1);
}
my $forgetful_sql = ("BEGIN;\nSELECT 'F|' || count(*) FROM aimroute.leads;\nCOMMIT;\n"
	  . "BEGIN;\nSELECT 'F|' || count(*) FROM aimroute.lead_delivery_status;\nCOMMIT;\n") x $rounds;
my $forgetful = start_client('app_pool', 'forgetful', $forgetful_sql, 0);

my (%pids, %dealers_of_pid, @wrong);
my ($rows, $failed) = (0, 0);
for my $k (1 .. $ndealers)
{
	my ($result, $o, $e) = finish_client($clients[ $k - 1 ]);
	$failed++ if $result != 0 || $e ne '';
	diag "dealer client $k: $e" if $e ne '';
	for my $line (grep { /^R\|/ } split /\n/, $o)
	{
		my (undef, $client, $pid, $user, $leads, $count, $status, $unsent, $others) = split /\|/, $line, -1;
		$rows++;
		$pids{$pid} = 1;
		$dealers_of_pid{$pid}{$client} = 1;
		push @wrong, $line
		  unless $user eq "dealer_$k"
		  && $leads eq "D$k"
		  && $count >= 10
		  && $status eq "D$k"
		  && ($unsent eq '' || $unsent eq "D$k")
		  && $others == 0;
	}
}
is($failed, 0, 'every dealer client ran without an error');
is($rows, $ndealers * $rounds, "$ndealers dealer clients ran $rounds transactions each");
is(join("\n", @wrong[ 0 .. ($#wrong < 4 ? $#wrong : 4) ]), '',
	'in every transaction, each saw only its own dealer\'s leads, statuses, unsent leads and issues');
cmp_ok(scalar(keys %pids), '<=', 2, 'on at most two server connections');
ok((grep { keys %{ $dealers_of_pid{$_} } > 1 } keys %pids), 'which the dealers\' transactions shared');
note 'dealers served by each server connection: '
  . join('; ', map { "$_: " . join(',', sort keys %{ $dealers_of_pid{$_} }) } sort keys %pids);

my ($fresult, $fo, $fe) = finish_client($forgetful);
my @denied = $fe =~ /ERROR:  permission denied for schema aimroute/g;
is(scalar(grep { /^F\|/ } split /\n/, $fo), 0, 'the client that forgets to switch sees no row');
is(scalar(@denied), 2 * $rounds, 'each of its reads is refused: permission denied for schema aimroute')
  or diag "forgetful client: wait status $fresult, stdout $fo, stderr $fe";

###
### Routing through the pooler while a dealer leaves.
###
my $leaver_code = 10000 + substr($leaver, 1);
# Each routing client inserts $inserts leads, the first for the leaver's
# postal code; then it waits (in a DO block, holding one of the two server
# connections of its pool) until the deactivation has committed, and
# inserts as many again.  So some leads are routed before the deactivation,
# some while it commits, and every client inserts after it.
my $insert = sub {
	my ($c, $from) = @_;
	return join('',
		map { "INSERT INTO aimroute.leads (brand_code, country, postal_code, comment) VALUES ('PB', 'US', '"
			  . ($_ == 1 ? $leaver_code : 10000 + 1 + ($c + $_) % $ndealers) . "', 'pooled $c " . ($from + $_) . "');\n" }
		  1 .. $inserts);
};
my @routers;
for my $c (1 .. $inserters)
{
	my $sql = $insert->($c, 0) . qq{DO \$\$
BEGIN
    WHILE (SELECT d.active_for_sales FROM aimroute.dealers d WHERE d.dealer_number = '$leaver') LOOP
        PERFORM pg_sleep(0.01);
    END LOOP;
END
\$\$;
} . $insert->($c, $inserts);
	push @routers, start_client('app_admin', "router_$c", $sql, 1);
}
ok( $node->poll_query_until(
		'app', "SELECT count(*) >= $inserts FROM aimroute.leads WHERE comment LIKE 'pooled %'"),
	'the routing clients are under way');
# As another admin login, whose pool the waiting clients do not hold.
($rc, $out, $err) = bouncer_psql('app_ops', 'app',
	"UPDATE aimroute.dealers SET active_for_sales = false WHERE dealer_number = '$leaver'");
is($rc, 0, "an admin deactivates dealer $leaver through the pooler mid-run") or diag $err;
my @router_errors;
for my $r (@routers)
{
	my ($result, $o, $e) = finish_client($r);
	push @router_errors, "wait status $result: $e" if $result != 0 || $e ne '';
}
is(join('', @router_errors), '', "the $inserters routing clients inserted every lead without an error");

my $left_at = $node->safe_psql('app',
	"SELECT pg_xact_commit_timestamp(xmin) FROM aimroute.dealers WHERE dealer_number = '$leaver'");
is($node->safe_psql('app', "SELECT count(*) FROM aimroute.leads WHERE comment LIKE 'pooled %'"),
	2 * $inserters * $inserts, 'every lead is stored');
cmp_ok(
	$node->safe_psql('app',
		"SELECT count(*) FROM aimroute.leads WHERE comment LIKE 'pooled %' AND dealer_number = '$leaver'"),
	'>', 0, "leads went to dealer $leaver before it left");
# The second half of each client's leads began after its DO block saw the
# deactivation.  (received_at against the deactivation's commit timestamp
# is no such mark: the timestamp is taken before the commit is flushed and
# becomes visible, and a lead that began in between rightly routed by the
# configuration it saw.)
my $second = "comment LIKE 'pooled %' AND split_part(comment, ' ', 3)::integer > $inserts";
cmp_ok($node->safe_psql('app', "SELECT count(DISTINCT split_part(comment, ' ', 2)) FROM aimroute.leads WHERE $second AND postal_code = '$leaver_code'"),
	'==', $inserters, "each client sent leads for the postal code of dealer $leaver after it saw it leave");
is($node->safe_psql('app', "SELECT count(*) FROM aimroute.leads WHERE $second AND dealer_number = '$leaver'"),
	'0', "none begun after the deactivation was seen went to dealer $leaver");
note 'leads committed after the deactivation but begun before it, at dealer ' . $leaver . ': '
  . $node->safe_psql('app',
	"SELECT count(*) FROM aimroute.leads WHERE dealer_number = '$leaver' AND comment LIKE 'pooled %'"
	  . " AND received_at <= '$left_at' AND pg_xact_commit_timestamp(xmin) > '$left_at'");

# Stop pgbouncer.
$bouncer->signal('TERM');
$bouncer->finish;
ok(!$bouncer->pumpable, 'pgbouncer stopped');
$node->stop;
done_testing();
