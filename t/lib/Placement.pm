# t/lib/Placement.pm: where PostGIS lives in a test database.  The one home
# of the three PostGIS placements the test command covers
# (docs/installation.md, "Testing"):
#
#   public   an administrator created PostGIS beforehand, in public
#            (CREATE EXTENSION postgis), then aimroute;
#   gis      an administrator created PostGIS beforehand in a schema of its
#            own (CREATE SCHEMA gis; CREATE EXTENSION postgis SCHEMA gis),
#            let every role use it (GRANT USAGE ON SCHEMA gis TO PUBLIC:
#            PostGIS reads gis.spatial_ref_sys as whoever measures a
#            distance) and set the database's search_path to "$user",
#            public, gis; then aimroute;
#   cascade  CREATE EXTENSION aimroute CASCADE created PostGIS; PostgreSQL
#            puts it in the schema of aimroute's control file, aimroute.
#
# Each script ends by checking where PostGIS landed, so a test never runs
# in a placement other than the one it names.
#
# In a Perl TAP test (each file names its placement; the environment
# variable AIMROUTE_POSTGIS_PLACEMENT runs it in another one):
#
#   use Placement;
#   my $placement = Placement::pick('public');
#   Placement::install($node, 'app', $placement);
#
# scripts/test.sh makes its pgTAP databases with the same scripts:
#
#   perl -I t/lib -MPlacement -e 'print Placement::sql($ARGV[0])' gis | psql -d db
package Placement;

use strict;
use warnings;

use Carp qw(croak);

# The placements, in the order scripts/test.sh runs them.
our @PLACEMENTS = qw(public gis cascade);

# The schema PostGIS lands in, for each placement.
our %SCHEMA = (public => 'public', gis => 'gis', cascade => 'aimroute');

# What the administrator runs before aimroute is created, for each placement.
my %BEFORE = (
	public => q{CREATE EXTENSION postgis;
},
	gis => q{CREATE SCHEMA gis;
CREATE EXTENSION postgis SCHEMA gis;
GRANT USAGE ON SCHEMA gis TO PUBLIC;
DO $placement$ BEGIN
    EXECUTE format('ALTER DATABASE %I SET search_path = "$user", public, gis', current_database());
END $placement$;
SET search_path = "$user", public, gis;
},
	cascade => '');

# pick(default): the placement a test runs in: AIMROUTE_POSTGIS_PLACEMENT
# when it is set, otherwise the test's own default.
sub pick
{
	my ($default) = @_;
	my $placement = $ENV{AIMROUTE_POSTGIS_PLACEMENT} || $default;
	croak "unknown PostGIS placement \"$placement\" (one of: @PLACEMENTS)"
	  unless exists $SCHEMA{$placement};
	return $placement;
}

# schema(placement): the schema PostGIS lives in under that placement.
sub schema
{
	my ($placement) = @_;
	croak "unknown PostGIS placement \"$placement\" (one of: @PLACEMENTS)"
	  unless exists $SCHEMA{$placement};
	return $SCHEMA{$placement};
}

# postgis_sql(placement): the administrator's part, run before aimroute is created.
sub postgis_sql
{
	my ($placement) = @_;
	schema($placement);
	return "SET client_min_messages = warning;\n" . $BEFORE{$placement};
}

# aimroute_sql(placement): CREATE EXTENSION aimroute, with CASCADE only
# where the placement wants PostgreSQL to create PostGIS.
sub aimroute_sql
{
	my ($placement) = @_;
	schema($placement);
	return 'CREATE EXTENSION aimroute' . ($placement eq 'cascade' ? ' CASCADE' : '') . ";\n";
}

# check_sql(placement): fails unless PostGIS is where the placement puts it.
sub check_sql
{
	my ($placement) = @_;
	my $want = schema($placement);
	return qq{DO \$placement\$
DECLARE
    got text := (SELECT n.nspname FROM pg_catalog.pg_extension e
                   JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                  WHERE e.extname = 'postgis');
BEGIN
    IF got IS DISTINCT FROM '$want' THEN
        RAISE EXCEPTION 'PostGIS placement $placement: PostGIS is in schema %, not $want', got;
    END IF;
END \$placement\$;
};
}

# sql(placement): the whole script: PostGIS, aimroute, the check.
sub sql
{
	my ($placement) = @_;
	return postgis_sql($placement) . aimroute_sql($placement) . check_sql($placement);
}

# install(node, dbname, placement): runs sql(placement) in the database
# dbname of the PostgreSQL::Test::Cluster node; returns PostGIS's schema.
sub install
{
	my ($node, $dbname, $placement) = @_;
	$node->safe_psql($dbname, sql($placement));
	return schema($placement);
}

1;
