# t/018_shared_model.pl: one routing model per configuration version, in
# shared memory, for every session of the database.
#
# With aimroute preloaded, the first session that routes under a committed
# configuration version builds the model into a shared memory segment and
# the others map it (src/model_share.c).  What is checked: a new session
# maps the model another built (same version, same build time); a
# transaction that changes the configuration routes by its own copy while
# the others keep the shared one; a committed change is built once and
# shared again; an older snapshot keeps routing by its older version; a
# session waiting for another's build maps what it built; a build that
# fails leaves nothing published, and the next one succeeds; a superseded
# version's segment is freed once no session maps it; a crash frees every
# segment.  dynamic_shared_memory_type = mmap puts each segment in a file
# of pg_dynshmem, so that the test can count them.  PostGIS placement:
# public (t/lib/Placement.pm).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use Placement;

my $placement = Placement::pick('public');

my $node = PostgreSQL::Test::Cluster->new('shared_model');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'aimroute'
aimroute.database = 'app'
dynamic_shared_memory_type = mmap
max_parallel_workers_per_gather = 0
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
Placement::install($node, 'app', $placement);
$node->psql('app', 'SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())');
$node->safe_psql(
	'app', q{
	INSERT INTO aimroute.brands VALUES ('BT', 'Boats');
	INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code) VALUES
	  ('HQ', 'HQ', 'US', '10001'), ('CHI', 'Chicago', 'US', '60601'), ('MKE', 'Milwaukee', 'US', '53202');
	INSERT INTO aimroute.dealer_brands VALUES ('CHI', 'BT'), ('MKE', 'BT');
	UPDATE aimroute.settings SET default_dealer_number = 'HQ';
});

my $route = q{SELECT dealer_number FROM aimroute.route('US', '60601', 'BT')};
my $info = q{SELECT version || ' ' || location || ' ' || built_at FROM aimroute.routing_cache_info()};

# segments(): the dynamic shared memory segments of the cluster.
sub segments
{
	my @files = glob($node->data_dir . '/pg_dynshmem/mmap.*');
	return scalar(@files);
}

# session(): a new session of app.
sub session
{
	my $s = $node->background_psql('app', on_error_stop => 0);
	$s->set_query_timer_restart;
	return $s;
}

my $before = segments();
my $s1 = session();
is($s1->query_safe($route), 'CHI', 'a session routes');
my $first = $s1->query_safe($info);
like($first, qr/^\d+ shared /, '... by a model in shared memory');
is(segments(), $before + 1, '... one segment');

my $s2 = session();
is($s2->query_safe($route), 'CHI', 'a new session routes the same');
is($s2->query_safe($info), $first, '... by the model the first built: same version, same build time');
is(segments(), $before + 1, '... and no second segment');

# A transaction that changes the configuration sees its change at once,
# by a copy of its own; the others keep the shared model.
$s1->query_safe(q{BEGIN; UPDATE aimroute.dealers SET active_for_sales = false WHERE dealer_number = 'CHI'});
is($s1->query_safe($route), 'MKE', 'a transaction that deactivated CHI routes to MKE');
like($s1->query_safe($info), qr/^\d+ local /, '... by a copy of its own');
is($s2->query_safe($route), 'CHI', 'another session still routes to CHI');
is($s2->query_safe($info), $first, '... by the shared model');
$s1->query_safe('ROLLBACK');
is($s1->query_safe($route), 'CHI', 'rolled back: CHI again');
is($s1->query_safe($info), $first, '... by the shared model again');

# A committed change: built once, then shared.
$node->safe_psql('app', q{UPDATE aimroute.dealers SET active_for_sales = false WHERE dealer_number = 'CHI'});
is($s2->query_safe($route), 'MKE', 'after a committed change, MKE');
my $second = $s2->query_safe($info);
like($second, qr/^\d+ shared /, '... by a shared model');
isnt($second, $first, '... of the new version');
is($s1->query_safe($route), 'MKE', 'the other session routes to MKE too');
is($s1->query_safe($info), $second, '... by the same model, not one of its own');
is(segments(), $before + 1, 'the old version is freed once no session maps it');

# A snapshot taken before a change routes by the version it sees.
$s1->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
is($s1->query_safe($route), 'MKE', 'a repeatable-read transaction routes to MKE');
$node->safe_psql('app', q{UPDATE aimroute.dealers SET active_for_sales = true WHERE dealer_number = 'CHI'});
is($s2->query_safe($route), 'CHI', 'CHI active again, committed: CHI');
my $third = $s2->query_safe($info);
is($s1->query_safe($route), 'MKE', 'the repeatable-read transaction still routes by what it sees: MKE');
is($s1->query_safe($info), $second, '... by the version it sees');
is(segments(), $before + 2, 'two versions in use: two segments');
$s1->query_safe('COMMIT');
is($s1->query_safe($route), 'CHI', 'committed: CHI');
is($s1->query_safe($info), $third, '... by the newest model');
is(segments(), $before + 1, 'the older version is freed with its last session');

# A build that fails publishes nothing; the next one builds it.  A session
# holds a lock on territories, so that a build waits for it.
$node->safe_psql('app', q{UPDATE aimroute.dealers SET name = 'Chicago Boats' WHERE dealer_number = 'CHI'});
$s1->query_safe('BEGIN; LOCK TABLE aimroute.territories IN ACCESS EXCLUSIVE MODE');
my ($out, $failed) = $s2->query(qq{SET lock_timeout = '300ms'; $route});
ok($failed, 'a build that cannot read territories fails');
like($s2->{stderr}, qr/lock timeout/, '... on the lock timeout');
$s2->{stderr} = '';
is(segments(), $before + 1, '... and publishes nothing');
$s2->query_safe('RESET lock_timeout');

# Meanwhile another session builds it, and a third waits for that build.
my $s3 = session();
$s3->query_until(qr/building/, "\\echo building\n$info;\n");
ok( $node->poll_query_until(
		'app', q{SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'relation' AND NOT granted
			AND relation = 'aimroute.territories'::regclass}),
	'a session builds the new version, waiting for territories');
my $s4 = session();
$s4->query_until(qr/waiting/, "\\echo waiting\n$info;\n");
ok( $node->poll_query_until(
		'app', q{SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 16722}),
	'another waits for that build');
$s1->query_safe('COMMIT');
my $built = $s3->query_safe(q{SELECT 'done'});
my $waited = $s4->query_safe(q{SELECT 'done'});
$built =~ s/\ndone$//;
$waited =~ s/\ndone$//;
like($built, qr/^\d+ shared /, 'the build finishes, shared');
is($waited, $built, '... and the waiting session maps what it built');
is($s2->query_safe($info), $built, 'the session whose build failed maps it too');
is($s2->query_safe($route), 'CHI', '... and routes');

# A crash starts shared memory afresh: no segment is left.
$s1->quit;
$s2->quit;
$s3->quit;
$s4->quit;
my $s5 = session();
my $victim = $s5->query_safe(q{SELECT pg_backend_pid()});
$s5->query_safe($route);
kill 'KILL', $victim;
eval { $s5->quit };
ok($node->poll_query_until('app', 'SELECT true', 't'), 'the server restarts after a backend was killed');
is(segments(), $before, 'no segment is left from before the crash');
is($node->safe_psql('app', $route), 'CHI', 'routing works after the restart');
like($node->safe_psql('app', $info), qr/^\d+ shared /, '... by a new shared model');

$node->stop;
done_testing();
