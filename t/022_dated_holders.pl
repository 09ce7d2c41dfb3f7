# t/022_dated_holders.pl: two sessions give one postal code to two dealers
# for overlapping periods at once (issue 20, part 3).
#
# The periods start apart, so the unique index (which compares valid_from)
# cannot refuse the second; the trigger's advisory lock makes the second
# writer wait for the first to commit, see its row and refuse the overlap
# with the holder's name.  Periods that follow each other are both
# accepted, written at once as well.  At SERIALIZABLE the second writer
# cannot see the first's row, and fails with a serialization failure, and
# so at REPEATABLE READ.
#
# PostGIS placement: public (t/lib/Placement.pm).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Placement;

my $node = PostgreSQL::Test::Cluster->new('dated');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', Placement::pick('public'));
$node->safe_psql(
	'app', q{
	SET client_min_messages = warning;
	SET search_path = aimroute, public;
	INSERT INTO dealers (dealer_number, name, country, postal_code)
	VALUES ('D1', 'One', 'US', '49757'), ('D2', 'Two', 'US', '49757');
});

my $dir = PostgreSQL::Test::Utils::tempdir;

# client(name, sql...): psql on database app in the background, one
# session running each sql in turn, its output and errors in files.
sub client
{
	my ($name, @sql) = @_;
	my @cmd = ('psql', '-X', '-Atq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('app'), map { ('-c', $_) } @sql);
	return IPC::Run::start(\@cmd, '<', \undef, '>', "$dir/$name.out", '2>', "$dir/$name.err");
}

# race(code, first period, second period): D1 takes the code for the first
# period in a transaction it keeps open; D2 asks for the second meanwhile.
# Returns the second's errors.
sub race
{
	my ($code, $first_period, $second_period, $begin) = @_;
	$begin //= 'BEGIN';
	my $first = client("first$code", $begin,
		"INSERT INTO aimroute.territories (dealer_number, kind, country, code, valid_from, valid_to) VALUES ('D1', 'postal', 'US', '$code', $first_period)",
		'SELECT pg_sleep(3) IS NULL', 'COMMIT');
	ok( $node->poll_query_until(
			'app', "SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = 'app'"),
		"$code: the first writer holds its transaction open");
	my $second = client("second$code", $begin,
		"INSERT INTO aimroute.territories (dealer_number, kind, country, code, valid_from, valid_to) VALUES ('D2', 'postal', 'US', '$code', $second_period)",
		'COMMIT');
	ok( $node->poll_query_until(
			'app',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE datname = 'app' AND query LIKE '%''D2''%'"
			  . " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"),
		"$code: the second writer waits for the first");
	$first->finish;
	$second->finish;
	return slurp_file("$dir/second$code.err");
}

my $err = race('49781', "'2025-01-01', '2026-01-01'", "'2025-06-01', NULL");
like($err, qr/postal code US 49781 is already held by dealer D1 for all brands from 2025-01-01/,
	'overlapping periods written at once: the second is refused, naming the holder and its period');
is( $node->safe_psql('app', "SELECT string_agg(dealer_number, ',') FROM aimroute.territories WHERE code = '49781'"),
	'D1', 'one holder of 49781 at any moment');

$err = race('49782', "'2025-01-01', '2026-01-01'", "'2026-01-01', NULL");
unlike($err, qr/ERROR/, 'periods that follow each other, written at once: both accepted');
is( $node->safe_psql('app',
		"SELECT string_agg(dealer_number, ',' ORDER BY valid_from) FROM aimroute.territories WHERE code = '49782'"),
	'D1,D2', 'two holders of 49782, one after the other');

# SERIALIZABLE: the second writer's snapshot is older than the first's
# commit, so it cannot see the row; it fails with a serialization failure
# instead (the client retries, and then sees it).
$err = race('49783', "'2025-01-01', '2026-01-01'", "'2025-06-01', NULL",
	'BEGIN ISOLATION LEVEL SERIALIZABLE');
like($err, qr/could not serialize access/, 'overlapping periods written at once at SERIALIZABLE: the second is refused');
is( $node->safe_psql('app', "SELECT string_agg(dealer_number, ',') FROM aimroute.territories WHERE code = '49783'"),
	'D1', 'one holder of 49783 at any moment');

# REPEATABLE READ: the same, through the row of aimroute.config_version
# that every change of the configuration updates.
$err = race('49784', "'2025-01-01', '2026-01-01'", "'2025-06-01', NULL",
	'BEGIN ISOLATION LEVEL REPEATABLE READ');
like($err, qr/could not serialize access/, 'overlapping periods written at once at REPEATABLE READ: the second is refused');
is( $node->safe_psql('app', "SELECT string_agg(dealer_number, ',') FROM aimroute.territories WHERE code = '49784'"),
	'D1', 'one holder of 49784 at any moment');

$node->stop;
done_testing();
