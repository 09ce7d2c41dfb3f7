#!/usr/bin/env bash
# scripts/test.sh: every test layer of aimroute, on a fresh machine or not.
#
# Installs what is missing, checks formatting, builds with -Werror, installs,
# starts a throw-away cluster inside the checkout (tmp_check/cluster, as an
# unprivileged user), and runs:
#   1. pg_regress  (sql/ + expected/)        the SQL surface, outputs and errors
#   2. pgTAP       (test/*.sql, pg_prove)    invariants and rules, on real data,
#                                            once per PostGIS placement (public,
#                                            gis, cascade: t/lib/Placement.pm)
#   3. Perl TAP    (t/*.pl, prove)           fresh clusters, restarts, dumps,
#                                            faults, concurrency, SQL fuzzing,
#                                            standby; each file in the placement
#                                            it names
#   4. libFuzzer   (test/fuzz/run.sh)        the C normalizers and parsers,
#                                            AIMROUTE_FUZZ_SECONDS each (20)
# Exits non-zero when any layer fails.  Run as root or with sudo.
#
# Environment: AIMROUTE_TEST_PORT (default 54331), AIMROUTE_USER (see lib.sh);
# while working on one thing, AIMROUTE_TEST_LAYERS picks layers (any of
# "format regress pgtap perl fuzz"; default all), AIMROUTE_PGTAP_FILES and
# AIMROUTE_TAP_FILES pick files (e.g. "t/002_reroute_worker.pl"), and
# AIMROUTE_POSTGIS_PLACEMENT runs pgTAP and every Perl TAP file in one
# placement (public, gis or cascade).  CI sets none of them.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT=${AIMROUTE_TEST_PORT:-54331}
CHECK_DIR=$AIMROUTE_ROOT/tmp_check
CLUSTER_DIR=$CHECK_DIR/cluster
passed=0
failed=0
failures=()

LAYERS=" ${AIMROUTE_TEST_LAYERS:-format regress pgtap perl fuzz} "
PGTAP_FILES=${AIMROUTE_PGTAP_FILES:-test/*.sql}
TAP_FILES=${AIMROUTE_TAP_FILES:-t/*.pl}
# The PostGIS placements of the pgTAP layer: all three (t/lib/Placement.pm),
# or the one AIMROUTE_POSTGIS_PLACEMENT names, which then applies to every
# Perl TAP file too.
PLACEMENTS=${AIMROUTE_POSTGIS_PLACEMENT:-$(perl -I "$AIMROUTE_ROOT/t/lib" -MPlacement -e 'print "@Placement::PLACEMENTS"')}

# layer KEY NAME CMD...: run one test layer, unless AIMROUTE_TEST_LAYERS
# leaves KEY out, and count its outcome.
layer() {
	local key=$1 name=$2
	shift 2
	case $LAYERS in *" $key "*) ;; *) return 0 ;; esac
	say "Test layer: $name"
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$name")
	fi
}

run_pg_regress() {
	if make -C "$AIMROUTE_ROOT" -s PG_CONFIG="$PG_CONFIG" installcheck; then
		return 0
	fi
	[ -f "$AIMROUTE_ROOT/regression.diffs" ] && cat "$AIMROUTE_ROOT/regression.diffs"
	return 1
}

# run_pgtap PLACEMENT: the pgTAP files in a database of their own where
# PostGIS is placed as PLACEMENT says (t/lib/Placement.pm).
run_pgtap() {
	local placement=$1 db=aimroute_tap_$1
	# (set -e does not apply inside "if": every step is chained.)
	# pgTAP and dblink go to public by name: once schema aimroute exists,
	# "$user" of the default search_path finds it for the test superuser
	# (named aimroute too).
	psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" &&
		psql -X -q -v ON_ERROR_STOP=1 -d "$db" \
			-c "CREATE EXTENSION pgtap SCHEMA public" \
			-c "CREATE EXTENSION dblink SCHEMA public" &&
		perl -I "$AIMROUTE_ROOT/t/lib" -MPlacement -e 'print Placement::sql($ARGV[0])' "$placement" |
		psql -X -q -v ON_ERROR_STOP=1 -d "$db" >/dev/null &&
		psql -X -q -v ON_ERROR_STOP=1 -d "$db" \
			-c "SET client_min_messages = error" \
			-c "SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())" >/dev/null &&
		(cd "$AIMROUTE_ROOT" && pg_prove -d "$db" $PGTAP_FILES)
}

# mail_servers_start: the mail servers of t/020_mail_servers.pl (Postfix
# runs only as root), when that file is among those to run and this script
# runs as root; sets MAIL_ENV to their env file.
MAIL_DIR=$CHECK_DIR/mail
MAIL_ENV=
mail_servers_start() {
	# shellcheck disable=SC2086 # TAP_FILES is a list of globs
	ls $TAP_FILES 2>/dev/null | grep -q 020_mail_servers || return 0
	if [ "$(id -u)" != 0 ]; then
		say "t/020_mail_servers.pl needs root to start Postfix: it will be skipped"
		return 0
	fi
	bash "$AIMROUTE_ROOT/test/servers/mail_servers.sh" start "$MAIL_DIR" && MAIL_ENV=$MAIL_DIR/env
}

run_perl_tap() {
	mail_servers_start || return 1
	as_run_user env PGHOST= PGPORT= PGUSER= \
		AIMROUTE_POSTGIS_PLACEMENT="${AIMROUTE_POSTGIS_PLACEMENT:-}" AIMROUTE_MAIL_SERVERS="$MAIL_ENV" \
		make -C "$AIMROUTE_ROOT" -s PG_CONFIG="$PG_CONFIG" prove_installcheck PROVE_TESTS="$TAP_FILES"
}

install_packages
layer format "C formatting (clang-format)" make -C "$AIMROUTE_ROOT" -s format-check
build_and_install
pick_run_user
make_reachable "$AIMROUTE_ROOT"

owned_dir "$CHECK_DIR"
cluster_stop "$CLUSTER_DIR"
rm -rf "$CLUSTER_DIR"
cluster_start "$CLUSTER_DIR" "$PORT"
trap 'cluster_stop "$CLUSTER_DIR"; [ ! -d "$MAIL_DIR" ] || bash "$AIMROUTE_ROOT/test/servers/mail_servers.sh" stop "$MAIL_DIR"' EXIT

layer regress "pg_regress (sql/, expected/)" run_pg_regress
for placement in $PLACEMENTS; do
	layer pgtap "pgTAP (test/*.sql), PostGIS placement $placement" run_pgtap "$placement"
done
layer perl "Perl TAP (t/*.pl)" run_perl_tap
layer fuzz "libFuzzer (test/fuzz/run.sh)" env FUZZ_SECONDS="${AIMROUTE_FUZZ_SECONDS:-20}" \
	PG_CONFIG="$PG_CONFIG" bash "$AIMROUTE_ROOT/test/fuzz/run.sh"

echo
if [ "$failed" -gt 0 ]; then
	printf 'failed layers: %s\n' "${failures[@]}"
fi
echo "layers: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
