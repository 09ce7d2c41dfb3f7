# t/023_ties.pl: round robin among equally near dealers under concurrent
# inserts (settings.tie_break = 'round_robin', SPEC section 10).
#
# Four dealers sit at the centre of one ZIP code and sell two brands.
# pgbench clients insert leads of both brands there at once, each lead in
# a transaction of its own, and some in transactions of three leads.  A
# new lead locks the tied dealers' counters (aimroute.tie_turns) in dealer
# number order and takes the turn in its transaction, so no two sessions
# give the same turn: per brand, the leads are spread evenly (the most and
# the fewest leads of a dealer differ by at most one), the counters equal
# the leads each dealer holds, and no transaction failed.
#
# PostGIS placement: public (t/lib/Placement.pm).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Placement;

my $clients = 6;
my $transactions = 40;    # per client

my $node = PostgreSQL::Test::Cluster->new('ties');
$node->init;
$node->append_conf('postgresql.conf', "max_connections = 40\nlog_lock_waits = off");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', Placement::pick('public'));
$node->safe_psql(
	'app', q{
	SET client_min_messages = warning;
	SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path());
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('TA', 'Ties A'), ('TB', 'Ties B');
	INSERT INTO dealers (dealer_number, name, country, postal_code)
	VALUES ('HQ', 'Corporate', 'US', '10001'),
	       ('T1', 'Tie One', 'US', '60601'), ('T2', 'Tie Two', 'US', '60601'),
	       ('T3', 'Tie Three', 'US', '60601'), ('T4', 'Tie Four', 'US', '60601');
	INSERT INTO dealer_brands SELECT d, b FROM unnest('{T1,T2,T3,T4}'::text[]) d, unnest('{TA,TB}'::text[]) b;
	UPDATE settings SET default_dealer_number = 'HQ', tie_break = 'round_robin';
},
	on_error_die => 1);

my $dir = PostgreSQL::Test::Utils::tempdir;
open(my $one, '>', "$dir/one.sql") or die;
print $one <<'SQL';
\set b random(1, 2)
INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer)
VALUES (CASE :b WHEN 1 THEN 'TA' ELSE 'TB' END, 'US', '60601', false);
SQL
close $one;
open(my $three, '>', "$dir/three.sql") or die;
print $three <<'SQL';
BEGIN;
INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer) VALUES ('TB', 'US', '60601', false);
INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer) VALUES ('TB', 'US', '60601', false);
INSERT INTO aimroute.leads (brand_code, country, postal_code, send_to_dealer) VALUES ('TB', 'US', '60601', false);
COMMIT;
SQL
close $three;

my ($out, $err) = ('', '');
my @cmd = (
	'pgbench', '-n', '-h', $node->host, '-p', $node->port, '-c', $clients, '-j', 2,
	'-t', $transactions, '-f', "$dir/one.sql\@3", '-f', "$dir/three.sql\@1", 'app');
IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err);
my $rc = $? >> 8;
note $out;
diag "pgbench stderr:\n$err" if $err ne '';
is($rc, 0, 'pgbench exits 0: no client ended on an error');
like($out, qr/number of transactions actually processed: @{[ $clients * $transactions ]}\//,
	'every transaction was processed');

my $leads = $node->safe_psql('app', "SELECT count(*) FROM aimroute.leads WHERE brand_code IN ('TA', 'TB')");
cmp_ok($leads, '>=', $clients * $transactions, "$leads leads inserted");
is($node->safe_psql('app', "SELECT count(*) FROM aimroute.leads WHERE dealer_number NOT IN ('T1', 'T2', 'T3', 'T4')"),
	0, 'every lead went to one of the tied dealers');

for my $brand ('TA', 'TB')
{
	my $spread = $node->safe_psql(
		'app', qq{
		SELECT string_agg(d || ' ' || coalesce(n, 0), ', ' ORDER BY d)
		  FROM unnest('{T1,T2,T3,T4}'::text[]) d
		  LEFT JOIN (SELECT dealer_number, count(*) AS n FROM aimroute.leads
		              WHERE brand_code = '$brand' GROUP BY 1) l ON l.dealer_number = d});
	my @counts = map { (split / /)[1] } split /, /, $spread;
	my ($min, $max) = (sort { $a <=> $b } @counts)[ 0, -1 ];
	note "brand $brand: $spread";
	cmp_ok($max - $min, '<=', 1, "brand $brand: the tied dealers' leads differ by at most one ($spread)");
	is( $node->safe_psql(
			'app', qq{
			SELECT count(*) FROM aimroute.tie_turns t
			 WHERE t.brand_code = '$brand'
			   AND t.leads <> (SELECT count(*) FROM aimroute.leads l
			                    WHERE l.brand_code = t.brand_code AND l.dealer_number = t.dealer_number)}),
		0, "brand $brand: each dealer's counter equals the leads it holds");
}
is($node->safe_psql('app', 'SELECT count(*) FROM aimroute.tie_turns'), 8, 'one counter per brand and dealer');
unlike(slurp_file($node->logfile), qr/deadlock detected/, 'no deadlock');

$node->stop;
done_testing();
