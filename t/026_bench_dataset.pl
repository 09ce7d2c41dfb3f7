# t/026_bench_dataset.pl: the benchmark's own SQL still fits the schema.
#
# bench/run.sh is not part of the test command (it takes minutes and its
# figures are not assertions), so a change of the schema can break it
# unnoticed: issue 20's tables referencing brands and dealers made
# bench.clear_network()'s TRUNCATE fail, and the benchmark stopped at its
# first network.  This test loads bench/dataset.sql, bench/baseline.sql and
# bench/measure.sql as bench/run.sh does, builds a small network twice (the
# second build clears the first), and checks what the benchmark relies on:
# the C trigger and the PL/pgSQL baseline route the sample leads alike, a
# routed COPY and process_staging() make every row a lead, and the sample
# leads for dealers with To, CC and a CRM exist.  Nothing here is timed.
#
# PostGIS placement: public (t/lib/Placement.pm).
use strict;
use warnings;

use FindBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Placement;

my $root = "$FindBin::RealBin/..";
my $node = PostgreSQL::Test::Cluster->new('bench');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
my $postgis = Placement::install($node, 'app', Placement::pick('public'));
$node->safe_psql('app',
	"SET client_min_messages = error; SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())");
# As bench/run.sh: the baseline calls PostGIS unqualified.
$node->safe_psql('app', "ALTER DATABASE app SET search_path = public, $postgis");

my $sql = join("\n", map { slurp_file("$root/bench/$_") } qw(dataset.sql baseline.sql measure.sql));
my ($rc, $out, $err) = $node->psql('app', $sql, on_error_stop => 1);
is($rc, 0, 'bench/dataset.sql, baseline.sql and measure.sql load') or diag $err;

for my $dealers (300, 200)
{
	($rc, $out, $err) = $node->psql(
		'app', qq{
		SET client_min_messages = warning;
		SELECT bench.clear_network();
		SELECT bench.build_network($dealers);
		SELECT bench.build_samples(400);
		SELECT bench.build_full_samples() > 0;
	}, on_error_stop => 1);
	is($rc, 0, "a network of $dealers dealers is built over the previous one") or diag $err;
	like($out, qr/t\s*$/, 'some sample leads go to a dealer with To, CC and a CRM');
	is($node->safe_psql('app', "SELECT count(*) FROM aimroute.dealers WHERE dealer_number <> 'D000000'"),
		$dealers, "$dealers dealers besides the headquarters (D000000, the default dealer)");
}

$node->safe_psql('app', "SET client_min_messages = warning; SELECT bench.check_agreement(400)");
is( $node->safe_psql(
		'app', q{
		SELECT count(*) || ' checked, ' ||
		       count(*) FILTER (WHERE c_dealer IS DISTINCT FROM plpgsql_dealer) || ' dealers, ' ||
		       count(*) FILTER (WHERE c_match IS DISTINCT FROM plpgsql_match) || ' match types, ' ||
		       count(*) FILTER (WHERE abs(c_miles - plpgsql_miles) > 1e-6
		                           OR (c_miles IS NULL) <> (plpgsql_miles IS NULL)) || ' distances differ'
		  FROM bench.agreement}),
	'400 checked, 0 dealers, 0 match types, 0 distances differ',
	'the C trigger and the PL/pgSQL baseline route the sample leads alike');

my $dir = PostgreSQL::Test::Utils::tempdir;
chmod 0777, $dir;
for my $mode (qw(routed unsent bare))
{
	$node->safe_psql('app', "TRUNCATE aimroute.leads CASCADE");
	cmp_ok($node->safe_psql('app', "SELECT bench.time_copy('$dir/bulk-$mode.tsv', 200, '$mode')"),
		'>', 0, "bench.time_copy in mode $mode runs");
	is($node->safe_psql('app', "SELECT count(*) FROM aimroute.leads"), 200, "and copies its 200 rows");
}
# time_staging raises unless every staged row became a lead.
cmp_ok($node->safe_psql('app', "SET client_min_messages = warning; SELECT bench.time_staging('smoke', 200)"),
	'>', 0, 'bench.time_staging makes a lead of every staged row');

$node->stop;
done_testing();
