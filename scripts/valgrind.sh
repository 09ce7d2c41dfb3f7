#!/usr/bin/env bash
# scripts/valgrind.sh: aimroute's C paths under valgrind's memcheck.
#
# Builds aimroute and installs it into a private copy of the PostgreSQL 15
# installation (tmp_check/valgrind/pg; PostgreSQL finds its libraries and
# share files relative to its binary), so the system installation and the
# clusters that use it are left alone.  Starts a throw-away cluster in
# tmp_check/valgrind/ whose server runs under memcheck, every backend
# included, and runs against it:
#   1. regress   pg_regress (sql/ + expected/), without the preload, as
#                scripts/test.sh runs it (sql/settings.sql expects no worker)
#   2. pgtap     the pgTAP files that exercise the C paths (PGTAP_FILES),
#                with shared_preload_libraries = 'aimroute', so that both
#                background workers run under memcheck from here on;
#                test/valgrind/routing_workout.sql stands in for
#                test/routing_property.sql, whose checks in SQL take 10 to
#                over 20 minutes under memcheck, and
#                test/valgrind/drive_workout.sql runs Drive Distance on a
#                synthetic road network (it needs pgRouting)
#   3. delivery  real deliveries to the loopback SMTP and HTTP sinks
#                (test/valgrind/delivery_round.sql), a re-route by the
#                re-route worker and a daily recap
# Then it stops the server and sorts the errors of the valgrind logs
# (test/valgrind/scan_logs.py): aimroute's (a frame in aimroute.so),
# PostgreSQL's known false positives (test/valgrind/postgresql.supp
# suppresses those whose whole stack is PostgreSQL's), and the rest.
# docs/reliability.md, "Valgrind", says how to read the result.
#
# Exit status: 0 when no error has an aimroute frame and every step passed;
# 1 when an error has an aimroute frame; 2 when a step failed (a test, the
# delivery round) and no error is aimroute's.  Run as root or with sudo.
#
# Environment:
#   AIMROUTE_VALGRIND_PORT       port of the cluster (default 54341)
#   AIMROUTE_VALGRIND_SMTP_PORT  port of its SMTP sink (default 54343)
#   AIMROUTE_VALGRIND_HTTP_PORT  port of its HTTP sink (default 54344)
#   AIMROUTE_VALGRIND_STEPS      the steps to run, of "regress pgtap
#                                delivery" (default: all three)
#   AIMROUTE_VALGRIND_PGTAP      the pgTAP files to run, paths in the
#                                checkout without .sql (default: PGTAP_FILES)
#   AIMROUTE_USER                see scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT=${AIMROUTE_VALGRIND_PORT:-54341}
SMTP_PORT=${AIMROUTE_VALGRIND_SMTP_PORT:-54343}
HTTP_PORT=${AIMROUTE_VALGRIND_HTTP_PORT:-54344}
STEPS=" ${AIMROUTE_VALGRIND_STEPS:-regress pgtap delivery} "
VG_DIR=$AIMROUTE_ROOT/tmp_check/valgrind
LOG_DIR=$VG_DIR/logs
SUPP=$AIMROUTE_ROOT/test/valgrind/postgresql.supp
# The private installation: the system's, plus aimroute as built here.
PG_TREE=$VG_DIR/pg
SYSTEM_BINDIR=$PG_BINDIR
PG_BINDIR=$PG_TREE$SYSTEM_BINDIR
# pg_regress and each pgTAP file are cut off after this many seconds.
STEP_TIMEOUT=600
# The pgTAP files that exercise the C paths.  Left out of test/: staging.sql
# (slow, set-based SQL), postal_data.sql (checks the shipped data),
# security.sql (roles and policies, in SQL), the timing-bound
# reroute_deadline.sql and reroute_race.sql, and routing_property.sql
# (above).
PGTAP_FILES=(test/normalize_properties test/routing_rules test/routing_model test/valgrind/routing_workout
	test/valgrind/drive_workout test/adf test/delivery test/reroute)
[ -z "${AIMROUTE_VALGRIND_PGTAP:-}" ] || read -r -a PGTAP_FILES <<<"$AIMROUTE_VALGRIND_PGTAP"
# shellcheck disable=SC2054 # the commas are in one option
MEMCHECK=(
	valgrind --tool=memcheck --trace-children=yes --leak-check=no
	# A process with an error exits with 1, which the postmaster takes as
	# an ordinary exit (a higher code would restart the whole cluster in
	# the middle of the tests); the log scan gives the verdict.
	--error-exitcode=1
	--read-var-info=yes --track-origins=yes --num-callers=50
	--suppressions="$SUPP" --gen-suppressions=all --show-error-list=yes
	--error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END --time-stamp=yes
	--log-file="$LOG_DIR/%p.log"
)
POSTMASTER_PID=
step_failures=()

# elapsed SINCE: the seconds from SINCE (a date +%s) to now, as "Ns".
elapsed() { echo "$(($(date +%s) - $1))s"; }

# step NAME CMD...: run one step unless it is left out; record a failure.
step() {
	local name=$1 t0
	shift
	case $STEPS in *" $name "*) ;; *) return 0 ;; esac
	say "Under valgrind: $name"
	t0=$(date +%s)
	if "$@"; then
		say "$name passed in $(elapsed "$t0")"
	else
		say "$name FAILED after $(elapsed "$t0")"
		step_failures+=("$name")
	fi
}

# wants STEP: whether STEP is to run.
wants() { case $STEPS in *" $1 "*) return 0 ;; *) return 1 ;; esac }

# private_install: copy PostgreSQL's installation to PG_TREE and install
# aimroute into the copy.
private_install() {
	local share
	share=$("$PG_CONFIG" --sharedir)
	say "Building aimroute, installing it into a copy of PostgreSQL in $PG_TREE"
	make -C "$AIMROUTE_ROOT" -s PG_CONFIG="$PG_CONFIG"
	mkdir -p "$PG_TREE$(dirname "$(dirname "$SYSTEM_BINDIR")")" "$PG_TREE$(dirname "$share")"
	cp -a "$(dirname "$SYSTEM_BINDIR")" "$PG_TREE$(dirname "$(dirname "$SYSTEM_BINDIR")")/"
	cp -a "$share" "$PG_TREE$(dirname "$share")/"
	make -C "$AIMROUTE_ROOT" -s PG_CONFIG="$PG_CONFIG" DESTDIR="$PG_TREE" install
	cmp -s "$AIMROUTE_ROOT/aimroute.so" "$PG_TREE$("$PG_CONFIG" --pkglibdir)/aimroute.so" ||
		die "aimroute.so was not installed into $PG_TREE"
}

# port_in_use PORT: whether something listens on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pg_is_up: whether the cluster accepts connections.
pg_is_up() { "$PG_BINDIR/pg_isready" -q -h "$PGHOST" -p "$PORT"; }

# start_under_valgrind: start the postmaster under memcheck, as RUN_USER.
start_under_valgrind() {
	local i t0
	t0=$(date +%s)
	say "Starting PostgreSQL under valgrind on 127.0.0.1:$PORT (logs: $LOG_DIR)"
	# Runs directly (no fork) in the background job, so $! is the postmaster.
	# shellcheck disable=SC2016 # the inner shell expands $1, $@ and $!
	POSTMASTER_PID=$(as_run_user /bin/bash -c 'log=$1; shift; setsid "$@" </dev/null >>"$log" 2>&1 & echo $!' \
		vg "$VG_DIR/server.log" "${MEMCHECK[@]}" "$PG_BINDIR/postgres" -D "$VG_DIR/data")
	for ((i = 0; i < 600; i++)); do # 5 minutes
		if pg_is_up; then
			say "Started in $(elapsed "$t0")"
			return 0
		fi
		kill -0 "$POSTMASTER_PID" 2>/dev/null || break
		sleep 0.5
	done
	tail -20 "$VG_DIR/server.log" >&2
	die "PostgreSQL under valgrind did not start (logs: $VG_DIR/server.log, $LOG_DIR)"
}

# stop_server: stop the cluster; wait until the postmaster has exited, so
# that every process has written its error summary.
stop_server() {
	local i
	if as_run_user "$PG_BINDIR/pg_ctl" -D "$VG_DIR/data" status >/dev/null 2>&1; then
		as_run_user "$PG_BINDIR/pg_ctl" -D "$VG_DIR/data" -m fast -w -t 600 stop >/dev/null ||
			say "warning: the server did not stop within 10 minutes"
	fi
	# pg_ctl returns once postmaster.pid is gone, a moment before valgrind
	# writes the postmaster's summary.
	for ((i = 0; i < 300 && ${#POSTMASTER_PID} > 0; i++)); do
		kill -0 "$POSTMASTER_PID" 2>/dev/null || break
		sleep 0.2
	done
	POSTMASTER_PID=
}

cleanup() {
	stop_server
	sinks_stop "$VG_DIR/sinks"
}

run_pg_regress() {
	owned_dir "$VG_DIR/regress"
	# The results go to tmp_check/valgrind/regress, not the checkout's results/.
	if timeout "$STEP_TIMEOUT" make -C "$AIMROUTE_ROOT" -s PG_CONFIG="$PG_CONFIG" installcheck \
		EXTRA_REGRESS_OPTS="--outputdir=$VG_DIR/regress"; then
		return 0
	fi
	[ -f "$VG_DIR/regress/regression.diffs" ] && cat "$VG_DIR/regress/regression.diffs"
	return 1
}

# run_pgtap: each file on its own, named in the server log by application_name.
run_pgtap() {
	local f rc ok=0 sample=$VG_DIR/postal_sample.tsv.gz
	# routing_workout.sql loads this sample of the shipped postal codes again.
	gzip -dc "$AIMROUTE_ROOT/data/aimroute_postal_codes.tsv.gz" | awk 'NR % 20 == 1' | gzip >"$sample"
	chmod 644 "$sample"
	for f in "${PGTAP_FILES[@]}"; do
		rc=0
		PGAPPNAME=pgtap/${f##*/} timeout "$STEP_TIMEOUT" pg_prove --timer -d aimroute_tap --set sample="$sample" \
			"$AIMROUTE_ROOT/$f.sql" || rc=$?
		if [ "$rc" -eq 124 ]; then
			# The server would go on running the file's statement.
			say "$f.sql: cut off after ${STEP_TIMEOUT}s"
			psql -X -q -d postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE application_name = 'pgtap/${f##*/}'" >/dev/null
		fi
		[ "$rc" -eq 0 ] || ok=1
	done
	return $ok
}

# wait_for SECONDS WHAT SQL: poll until SQL (in aimroute_vg) returns t.
wait_for() {
	local limit=$1 what=$2 sql=$3 t0
	t0=$(date +%s)
	until [ "$(psql -X -d aimroute_vg -tAc "$sql")" = t ]; do
		if [ $(($(date +%s) - t0)) -ge "$limit" ]; then
			say "gave up waiting for $what after ${limit}s"
			return 1
		fi
		sleep 2
	done
	say "$what after $(elapsed "$t0")"
}

run_delivery() {
	local psql=(psql -X -q -v ON_ERROR_STOP=1 -d aimroute_vg) drained
	drained="SELECT NOT EXISTS (SELECT FROM aimroute.outbox WHERE status IN ('queued', 'sending'))"
	sinks_start "$VG_DIR/sinks" "$SMTP_PORT" "$HTTP_PORT"
	PGAPPNAME=delivery_round "${psql[@]}" -v smtp_port="$SMTP_PORT" -v http_port="$HTTP_PORT" \
		-f "$AIMROUTE_ROOT/test/valgrind/delivery_round.sql" || return 1
	wait_for 600 "every message sent or given up" "$drained" || return 1
	# The re-route worker moves the marked lead; its new dealer's messages follow.
	"${psql[@]}" -c "UPDATE aimroute.leads SET reroute_due_at = clock_timestamp() WHERE comment = 'vg: reroute'"
	wait_for 300 "the re-route worker moved the lead" \
		"SELECT reroute_count = 1 FROM aimroute.leads WHERE comment = 'vg: reroute'" || return 1
	# The recap of today's failures, queued now rather than tomorrow morning.
	"${psql[@]}" -tAc "SELECT 'daily recap emails queued: ' || aimroute.queue_daily_recap(clock_timestamp() + interval '1 day')"
	wait_for 300 "every message sent or given up" "$drained" || return 1
	"${psql[@]}" -P pager=off -c "
		SELECT l.comment, s.dealer_number, s.email_status, s.mobile_status, s.crm_status, s.delivery_pending
		  FROM aimroute.lead_delivery_status s JOIN aimroute.leads l USING (lead_id)
		 ORDER BY l.lead_id" \
		-c "SELECT purpose, method, status, outcome, count(*) FROM aimroute.outbox GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
	# What the sinks answer decides each outcome: check one lead of each path.
	[ "$("${psql[@]}" -tAc "
		SELECT count(*) = 5
		   AND count(*) FILTER (WHERE l.comment = 'vg: accepted' AND s.email_status = 'Delivered'
		                          AND s.mobile_status = 'Delivered' AND s.crm_status = 'Delivered') = 1
		   AND count(*) FILTER (WHERE l.comment = 'vg: bounced, flaky CRM' AND s.email_status = 'Failure'
		                          AND s.crm_status = 'Delivered') = 1
		   AND count(*) FILTER (WHERE l.comment = 'vg: default dealer' AND s.dealer_number = 'VG-HQ'
		                          AND s.email_status = 'Delivered') = 1
		   AND count(*) FILTER (WHERE s.delivery_pending) = 0
		   AND (SELECT count(*) FROM aimroute.outbox WHERE purpose = 'daily recap' AND status = 'delivered') > 0
		  FROM aimroute.lead_delivery_status s JOIN aimroute.leads l USING (lead_id)")" = t ] ||
		{
			say "the delivery statuses are not the expected ones"
			return 1
		}
}

pick_run_user
AIMROUTE_PACKAGES+=(valgrind)
install_packages
make_reachable "$AIMROUTE_ROOT"
t_start=$(date +%s)

owned_dir "$AIMROUTE_ROOT/tmp_check"
if [ -d "$VG_DIR/data" ]; then
	stop_server
	sinks_stop "$VG_DIR/sinks"
fi
for port in "$PORT" "$SMTP_PORT" "$HTTP_PORT"; do
	! port_in_use "$port" ||
		die "127.0.0.1:$port is in use: choose free ports with AIMROUTE_VALGRIND_PORT, AIMROUTE_VALGRIND_SMTP_PORT and AIMROUTE_VALGRIND_HTTP_PORT"
done
rm -rf "$VG_DIR"
owned_dir "$VG_DIR"
private_install
trap cleanup EXIT

# Set up without valgrind (quick): the pgTAP database, and the database of
# the workers and the delivery round, both with the shipped postal codes.
cluster_start "$VG_DIR" "$PORT"
say "Creating the test databases (without valgrind)"
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE aimroute_tap"
psql -X -q -v ON_ERROR_STOP=1 -d aimroute_tap \
	-c "SET client_min_messages = error" \
	-c "CREATE EXTENSION pgtap" \
	-c "CREATE EXTENSION dblink" \
	-c "CREATE EXTENSION aimroute CASCADE" \
	-c "SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())" \
	-c "ANALYZE" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE aimroute_vg TEMPLATE aimroute_tap"
cluster_stop "$VG_DIR"
cat >>"$VG_DIR/data/postgresql.conf" <<EOF
# scripts/valgrind.sh: the server runs under memcheck
shared_buffers = 64MB
max_connections = 30
autovacuum = off
jit = off
log_min_messages = warning
log_connections = on
log_line_prefix = '%m [%p] <%b|%a> '
EOF
owned_dir "$LOG_DIR"
say "Set up in $(elapsed "$t_start")"

if wants regress; then
	start_under_valgrind
	step regress run_pg_regress
	stop_server
fi
cat >>"$VG_DIR/data/postgresql.conf" <<EOF
shared_preload_libraries = 'aimroute'
aimroute.database = 'aimroute_vg'
aimroute.reroute_naptime = 2s
aimroute.delivery_timeout = 120s
EOF
if wants pgtap || wants delivery; then
	start_under_valgrind
	step pgtap run_pgtap
	step delivery run_delivery
	sinks_stop "$VG_DIR/sinks"
	say "Stopping the server (each process writes its error summary)"
	stop_server
fi
say "Set-up, tests and shutdown took $(elapsed "$t_start")"

say "Valgrind errors"
scan=0
/usr/bin/python3 "$AIMROUTE_ROOT/test/valgrind/scan_logs.py" "$LOG_DIR" "$AIMROUTE_ROOT/src" \
	"$VG_DIR/server.log" "$VG_DIR/report.txt" || scan=$?
echo
if [ ${#step_failures[@]} -gt 0 ]; then
	echo "failed steps: ${step_failures[*]}"
fi
if [ "$scan" -ne 0 ]; then
	echo "result: memcheck errors in aimroute (above, and in $VG_DIR/report.txt)"
	exit 1
fi
if [ ${#step_failures[@]} -gt 0 ]; then
	echo "result: no memcheck error in aimroute, but steps failed"
	exit 2
fi
echo "result: no memcheck error in aimroute; every step passed ($(elapsed "$t_start"))"
