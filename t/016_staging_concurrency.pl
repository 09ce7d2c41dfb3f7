# t/016_staging_concurrency.pl: two process_staging() calls on the same
# batch at once, and staging while a batch is processed.
#
# The first call holds the import lock until its transaction ends; the
# second waits for it, then processes what the first left: nothing of the
# rows the first processed, and the rows staged into the batch meanwhile
# (staging is never blocked).  Afterwards every row has exactly one
# outcome, no row became two leads, and a row staged meanwhile that repeats
# one of the first call's rows is its duplicate.
#
# PostGIS placement: public (t/lib/Placement.pm).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use Placement;

my $node = PostgreSQL::Test::Cluster->new('staging');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE imports');
Placement::install($node, 'imports', Placement::pick('public'));
$node->safe_psql(
	'imports', q{
	SET client_min_messages = warning;
	SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path());
	SET search_path = aimroute, public;
	INSERT INTO brands VALUES ('CC', 'Concurrent Canoes');
	INSERT INTO dealers (dealer_number, name, country, postal_code)
	VALUES ('HQ', 'Corporate', 'US', '10001'), ('CHI', 'Chicago', 'US', '60601');
	INSERT INTO dealer_brands VALUES ('CHI', 'CC');
	UPDATE settings SET default_dealer_number = 'HQ', dedupe_window = '1 hour';
	-- 15,000 rows (two chunks), every 50th without a way to contact the customer.
	INSERT INTO lead_staging (batch_id, brand_code, country, postal_code, email, comment)
	SELECT 'twice', 'CC', 'US', '60601', CASE WHEN i % 50 <> 0 THEN 'c' || i || '@example.com' END, 'row ' || i
	  FROM generate_series(1, 15000) i;
});

my $dir = PostgreSQL::Test::Utils::tempdir;

# client(name, sql...): psql on database imports in the background, one
# session running each sql in turn, its output and errors in files.
sub client
{
	my ($name, @sql) = @_;
	my @cmd = ('psql', '-X', '-Atq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('imports'), map { ('-c', $_) } @sql);
	return IPC::Run::start(\@cmd, '<', \undef, '>', "$dir/$name.out", '2>', "$dir/$name.err");
}

# The first call keeps its transaction (and the lock) open for a while
# after processing; the second starts meanwhile.
my $first = client('first', 'BEGIN', "SELECT status || ' ' || rows FROM aimroute.process_staging('twice')",
	'SELECT pg_sleep(4) IS NULL', 'COMMIT');
ok( $node->poll_query_until(
		'imports', "SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = 'imports'"),
	'the first call has processed the batch and holds its transaction open');
my $second = client('second', "SELECT status || ' ' || rows FROM aimroute.process_staging('twice')");
ok( $node->poll_query_until(
		'imports',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%process_staging%' AND query NOT LIKE '%pg_sleep%'"
		  . " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"),
	'the second call on the same batch waits for the first');

# Staging is not blocked: two rows into the batch, one of them repeating a
# row the first call processed (not committed yet).
my $t0 = time;
$node->safe_psql(
	'imports', q{
	INSERT INTO aimroute.lead_staging (batch_id, brand_code, country, postal_code, email, comment)
	VALUES ('twice', 'CC', 'US', '60601', 'late@example.com', 'late'),
	       ('twice', 'CC', 'US', '60601', 'c7@example.com', 'row 7');
});
cmp_ok(time - $t0, '<', 3, 'staging into the batch meanwhile is not blocked');

$first->finish;
$second->finish;
like(slurp_file("$dir/first.out"), qr/^processed 14700\nrejected 300\nduplicate 0\n/,
	'the first call: 14,700 leads and 300 rejections');
is(slurp_file("$dir/second.out"), "processed 1\nrejected 0\nduplicate 1\n",
	'the second call: only the two rows staged meanwhile, one of them a duplicate');
like(slurp_file("$dir/second.err"), qr/batch twice: 2 of 2 rows, 1 leads, 0 rejected, 1 duplicates/,
	'its progress counts those two rows');

is( $node->safe_psql(
		'imports', q{
	SELECT count(*) FILTER (WHERE status IS NULL) || ' pending, '
	       || count(*) FILTER (WHERE status = 'processed') || ' processed, '
	       || count(DISTINCT lead_id) FILTER (WHERE status = 'processed') || ' distinct leads, '
	       || (SELECT count(*) FROM aimroute.leads) || ' leads in all'
	  FROM aimroute.lead_staging WHERE batch_id = 'twice'}),
	'0 pending, 14701 processed, 14701 distinct leads, 14701 leads in all',
	'every row has one outcome, and no row became two leads');
is( $node->safe_psql(
		'imports', q{
	SELECT d.status || ' of ' || o.comment || ', same lead: ' || (d.lead_id = o.lead_id)
	  FROM aimroute.lead_staging d JOIN aimroute.lead_staging o ON o.staging_id = d.duplicate_of
	 WHERE d.batch_id = 'twice'}),
	'duplicate of row 7, same lead: true',
	'the repeat staged meanwhile is a duplicate of the row the first call made a lead');

$node->stop;
done_testing();
