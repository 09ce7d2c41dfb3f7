#!/usr/bin/env bash
# bench/delivery.sh: the delivery worker's throughput, before and after a
# change, against real SMTP servers on loopback, with each server's own CPU
# time printed next to the rate (issue 16: "a loopback SMTP server that is
# not the bottleneck").
#
# For each build (BENCH_DELIVERY_BEFORE, a git revision, then the checkout)
# and each sink, one cluster (bench/.delivery/cluster, aimroute preloaded),
# a fresh database, 50 dealers with one 'Leads: Emails To' contact each;
# then a burst of BENCH_DELIVERY_MESSAGES leads, pre-assigned to those
# dealers, in one transaction: one email each.  The rate is delivered
# messages / (last finished_at - the burst's commit), and the delays
# finished_at - the commit: a build that makes the messages in the worker
# (the lead as the queue) is measured from the same moment.  The sinks:
#   aiosmtpd  test/servers/smtp_sink.py (Python, one process, JSON log);
#   fast      bench/fast_smtp_sink.py (the sink of bench/run.sh: Python,
#             one process, parses only the Message-ID; about a tenth of a
#             millisecond of CPU a message);
#   postfix   Debian's Postfix (apt-get install postfix), configured in
#             bench/.delivery/postfix-* by scripts/postfix.sh (its own config_directory and
#             queue_directory; the queue on /dev/shm when there is room):
#             listening on 127.0.0.1 only, on a free port, every message
#             accepted and discarded (discard transport).  Its CPU time is
#             that of its master and all its processes (smtpd, cleanup, qmgr,
#             discard, ...), reaped ones included.
# The CPU times are /proc's user + system seconds over the burst; a sink
# near 1 CPU second per second is the bottleneck, not the worker.
#
# Run as root (like bench/run.sh): PostgreSQL and aiosmtpd run as the
# unprivileged RUN_USER, Postfix drops to its own user.
#
# Environment:
#   AIMROUTE_PG_BINDIR         the PostgreSQL to install into (scripts/lib.sh)
#   BENCH_DELIVERY_MESSAGES    emails per burst (default 5000)
#   BENCH_DELIVERY_ROUNDS      bursts per build and sink; the median rate is
#                              printed (default 3)
#   BENCH_DELIVERY_BEFORE      git revision measured first ("before"; default
#                              main; empty: only the checkout)
#   BENCH_DELIVERY_SINKS       default "aiosmtpd postfix"; also "fast"
#   BENCH_DELIVERY_PORT        PostgreSQL's port (default 54343)
#   BENCH_DELIVERY_SETTINGS    extra postgresql.conf lines for the "after"
#                              build, e.g. "aimroute.delivery_endpoint_concurrency = 16"
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/postfix.sh"

MESSAGES=${BENCH_DELIVERY_MESSAGES:-5000}
ROUNDS=${BENCH_DELIVERY_ROUNDS:-3}
BEFORE=${BENCH_DELIVERY_BEFORE-main}
SINKS=${BENCH_DELIVERY_SINKS:-aiosmtpd postfix}
PORT=${BENCH_DELIVERY_PORT:-54343}
EXTRA_SETTINGS=${BENCH_DELIVERY_SETTINGS:-}
TARGET=2000 # msgs/s (issue 16)
WORK=$AIMROUTE_ROOT/bench/.delivery
CLUSTER=$WORK/cluster
DB=delivery_bench
TICKS=$(getconf CLK_TCK)
RESULTS=()
SINK_PID=
SINK_URL=
POSTFIX_DIR=

[[ $MESSAGES =~ ^[1-9][0-9]*$ ]] || die "BENCH_DELIVERY_MESSAGES: \"$MESSAGES\" is not a positive whole number"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_DELIVERY_ROUNDS: \"$ROUNDS\" is not a positive whole number"
for s in $SINKS; do
	case $s in aiosmtpd | fast | postfix) ;; *) die "BENCH_DELIVERY_SINKS: unknown sink \"$s\" (aiosmtpd, fast, postfix)" ;; esac
done
[ "$(id -u)" = 0 ] || die "run bench/delivery.sh as root (PostgreSQL runs as an unprivileged user)"

sql() { psql -X -q -tA -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }

# cpu_seconds PID...: user + system CPU seconds of the processes, with
# their reaped children's.
cpu_seconds() {
	local pid total=0 t
	for pid in "$@"; do
		t=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pid/stat" 2>/dev/null) || continue
		total=$((total + t))
	done
	awk -v t="$total" -v hz="$TICKS" 'BEGIN { printf "%.2f", t / hz }'
}

# sink_pids: the sink's processes (Postfix: its master and the master's children).
sink_pids() {
	echo "$SINK_PID"
	[ -z "$POSTFIX_DIR" ] || pgrep -P "$SINK_PID" || true
}

# worker_pid: the delivery worker's pid.
worker_pid() {
	sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'aimroute delivery worker' AND datname = '$DB'"
}

# install_build REV: install aimroute built from git revision REV ("" : the checkout).
install_build() {
	local src=$AIMROUTE_ROOT
	if [ -n "$1" ]; then
		src=$WORK/src-before
		rm -rf "$src"
		git -C "$AIMROUTE_ROOT" worktree prune
		git -C "$AIMROUTE_ROOT" worktree add --detach --force "$src" "$1" >/dev/null 2>&1 ||
			die "cannot check out $1"
		say "Building and installing aimroute at $1 ($(git -C "$src" log -1 --format=%h))"
	else
		say "Building and installing aimroute from the checkout ($(git -C "$src" log -1 --format=%h), $(git -C "$src" status --porcelain | wc -l) files changed)"
	fi
	make -C "$src" -s PG_CONFIG="$PG_CONFIG" >/dev/null
	make -C "$src" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
	if [ -n "$1" ]; then
		git -C "$AIMROUTE_ROOT" worktree remove --force "$src"
	fi
}

# start_cluster SETTINGS: the cluster, restarted with aimroute preloaded in $DB and SETTINGS.
start_cluster() {
	cluster_start "$CLUSTER" "$PORT" >/dev/null
	{
		echo "# Written by bench/delivery.sh."
		echo "shared_preload_libraries = 'aimroute'"
		echo "aimroute.database = '$DB'"
		echo "synchronous_commit = off" # as bench/run.sh measures
		echo "jit = off"
		printf '%s\n' "$1"
	} >"$CLUSTER/data/aimroute.conf"
	chown "$RUN_USER:" "$CLUSTER/data/aimroute.conf"
	grep -q "^include_if_exists = 'aimroute.conf'" "$CLUSTER/data/postgresql.conf" ||
		echo "include_if_exists = 'aimroute.conf'" >>"$CLUSTER/data/postgresql.conf"
	as_run_user "$PG_BINDIR/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/server.log" -w -t 60 restart >/dev/null ||
		{ tail -20 "$CLUSTER/server.log" >&2; die "PostgreSQL did not restart"; }
}

# create_database: a fresh database, 50 dealers with one To contact each.
create_database() {
	psql -X -q -d postgres -c "SET client_min_messages = warning" \
		-c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
	sql "SET client_min_messages = warning; CREATE EXTENSION aimroute CASCADE" >/dev/null
	sql "SET client_min_messages = error; SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())" >/dev/null
	sql "
		INSERT INTO aimroute.brands VALUES ('DB', 'Delivery Bench Boats');
		INSERT INTO aimroute.dealers (dealer_number, name, country, postal_code)
		SELECT 'D' || i, 'Dealer ' || i, 'US', '60601' FROM generate_series(1, 50) i;
		INSERT INTO aimroute.dealer_brands SELECT dealer_number, 'DB' FROM aimroute.dealers;
		INSERT INTO aimroute.dealer_contacts (dealer_number, name, email, contact_types)
		SELECT dealer_number, 'Sales', lower(dealer_number) || '@dealers.example', '{Leads: Emails To}'
		  FROM aimroute.dealers;
		UPDATE aimroute.settings SET default_dealer_number = 'D1', smtp_from = 'leads@oem.example';" >/dev/null
	local i
	for ((i = 0; ; i++)); do
		[ "$(worker_pid)" != "" ] && break
		[ "$i" -lt 300 ] || die "the delivery worker did not start in $DB within 30 s"
		sleep 0.1
	done
}

# burst N: N leads in one transaction, one email each; prints the largest
# message_id before them and, after a "|", the time the transaction
# committed (a build that makes the messages later, in the worker, gives
# them a later queued_at: the rate and delays count from the commit).
burst() {
	local first
	first=$(sql "SELECT coalesce(max(message_id), 0) FROM aimroute.outbox")
	sql "INSERT INTO aimroute.leads (brand_code, first_name, last_name, email, country, postal_code, dealer_number)
	     SELECT 'DB', 'Burst', 'Lead ' || g, 'burst' || g || '@example.com', 'US', '60601', 'D' || (1 + g % 50)
	       FROM generate_series(1, $1) g" >/dev/null
	echo "$first|$(sql "SELECT clock_timestamp()")"
}

# wait_sent FIRST N: wait until N messages above FIRST are delivered and none is queued or being sent.
wait_sent() {
	local i
	for ((i = 0; ; i++)); do
		[ "$(sql "SELECT count(*) FILTER (WHERE status IN ('queued', 'sending')) = 0
		                AND count(*) FILTER (WHERE status = 'delivered') >= $2
		           FROM aimroute.outbox WHERE message_id > $1")" = t ] && return
		[ "$i" -lt 3000 ] || die "the burst was not sent within 300 s (SELECT status, count(*) FROM aimroute.outbox GROUP BY 1)"
		sleep 0.1
	done
}

# start_python_sink SCRIPT NAME: the Python SMTP sink SCRIPT on a free port,
# logging to $WORK/NAME.jsonl.
start_python_sink() {
	local script=$1 log=$WORK/$2.jsonl out=$WORK/$2.out i
	rm -f "$log" "$out"
	touch "$log" "$out"
	chown "$RUN_USER:" "$log" "$out"
	as_run_user /usr/bin/python3 "$script" --port 0 --log "$log" >"$out" 2>&1 &
	for ((i = 0; ; i++)); do
		grep -q '^ready ' "$out" && break
		[ "$i" -lt 100 ] || die "the $2 sink did not start: $(cat "$out")"
		sleep 0.1
	done
	SINK_PID=$(pgrep -f -n "^/usr/bin/python3 $script --port 0 --log $log")
	SINK_URL="smtp://127.0.0.1:$(awk '/^ready / { print $2 }' "$out")"
	POSTFIX_DIR=
}

# start_aiosmtpd: test/servers/smtp_sink.py on a free port.
start_aiosmtpd() {
	start_python_sink "$AIMROUTE_ROOT/test/servers/smtp_sink.py" aiosmtpd
}

# start_fast: bench/fast_smtp_sink.py on a free port.
start_fast() {
	start_python_sink "$AIMROUTE_ROOT/bench/fast_smtp_sink.py" fast
}

# start_postfix: Debian's Postfix in a directory of its own, loopback only,
# on a free port, discarding every message.
start_postfix() {
	local port base=$WORK
	# The queue is written and fsynced for every message: on /dev/shm it
	# costs the sink CPU time only, not a disk's latency.
	[ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }')" -gt 1000000 ] && base=/dev/shm
	POSTFIX_DIR=$(mktemp -d "$base/aimroute-postfix-XXXX")
	chmod 755 "$POSTFIX_DIR"
	port=$(free_port)
	postfix_setup "$POSTFIX_DIR" "$port"
	# A sink that accepts every message and discards it.
	postfix_set "$POSTFIX_DIR" 'myhostname = sink.invalid' \
		'default_transport = discard:bench sink' 'relay_transport = discard:bench sink'
	postfix_start "$POSTFIX_DIR" "$port"
	SINK_PID=$POSTFIX_PID
	SINK_URL="smtp://127.0.0.1:$port"
}

# stop_sink: stop the sink this script started.
stop_sink() {
	[ -n "$SINK_PID" ] || return 0
	kill -TERM "$SINK_PID" 2>/dev/null || true
	local i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$SINK_PID" 2>/dev/null || break
		sleep 0.1
	done
	[ -z "$POSTFIX_DIR" ] || rm -rf "$POSTFIX_DIR"
	SINK_PID=
	POSTFIX_DIR=
}

# stop_all: what is left running when the script ends.
stop_all() {
	stop_sink
	cluster_stop "$CLUSTER"
}

# measure BUILD SINK: ROUNDS bursts; keeps the median round's figures.
measure() {
	local build=$1 sink=$2 r first rate p50 p99 seconds sink0 sink1 worker0 worker1 wpid rows=()
	"start_$sink"
	sql "UPDATE aimroute.settings SET smtp_url = '$SINK_URL'" >/dev/null
	IFS='|' read -r first committed < <(burst 20) # warm-up: plans, connections
	wait_sent "$first" 20
	wpid=$(worker_pid)
	for ((r = 1; r <= ROUNDS; r++)); do
		sink0=$(cpu_seconds $(sink_pids))
		worker0=$(cpu_seconds "$wpid")
		IFS='|' read -r first committed < <(burst "$MESSAGES")
		wait_sent "$first" "$MESSAGES"
		sink1=$(cpu_seconds $(sink_pids))
		worker1=$(cpu_seconds "$wpid")
		IFS='|' read -r rate seconds p50 p99 < <(sql "
			SELECT round(count(*) FILTER (WHERE status = 'delivered')
			             / extract(epoch FROM max(finished_at) - '$committed'::timestamptz)::numeric, 1),
			       round(extract(epoch FROM max(finished_at) - '$committed'::timestamptz)::numeric, 2),
			       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - '$committed'::timestamptz) * 1000)::numeric),
			       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - '$committed'::timestamptz) * 1000)::numeric)
			  FROM aimroute.outbox WHERE message_id > $first")
		[ "$(sql "SELECT count(*) FROM aimroute.outbox WHERE message_id > $first AND status = 'delivered'")" = "$MESSAGES" ] ||
			die "$build/$sink: not every message was delivered: $(sql "SELECT string_agg(DISTINCT coalesce(last_response, status), '; ') FROM aimroute.outbox WHERE message_id > $first AND status <> 'delivered'")"
		rows+=("$rate|$seconds|$p50|$p99|$(awk -v a="$sink0" -v b="$sink1" 'BEGIN { printf "%.2f", b - a }')|$(awk -v a="$worker0" -v b="$worker1" 'BEGIN { printf "%.2f", b - a }')")
		printf '  %-7s %-9s round %d: %8s msgs/s, %s emails in %s s\n' "$build" "$sink" "$r" "$rate" "$MESSAGES" "$seconds"
	done
	stop_sink
	# The median round by rate.
	RESULTS+=("$build|$sink|$(printf '%s\n' "${rows[@]}" | sort -t'|' -k1,1g | sed -n "$(((ROUNDS + 1) / 2))p")")
}

pick_run_user
make_reachable "$AIMROUTE_ROOT"
owned_dir "$WORK"
trap stop_all EXIT
builds=()
[ -z "$BEFORE" ] || builds+=(before)
builds+=(after)
for build in "${builds[@]}"; do
	if [ "$build" = before ]; then
		install_build "$BEFORE"
		start_cluster ""
	else
		install_build ""
		start_cluster "$EXTRA_SETTINGS"
	fi
	for sink in $SINKS; do
		create_database
		measure "$build" "$sink"
	done
done

say "Delivery: $MESSAGES emails a burst, median of $ROUNDS bursts; target $TARGET msgs/s (issue 16)"
printf '%-7s %-9s %9s %9s %8s %8s %12s %10s %12s %12s\n' build sink msgs/s "/target" "p50 ms" "p99 ms" "sink CPU s" "sink CPU" "worker CPU s" "worker µs/msg"
for row in "${RESULTS[@]}"; do
	IFS='|' read -r build sink rate seconds p50 p99 sink_cpu worker_cpu <<<"$row"
	printf '%-7s %-9s %9s %9s %8s %8s %12s %9s%% %12s %12s\n' "$build" "$sink" "$rate" \
		"$(awk -v r="$rate" -v t="$TARGET" 'BEGIN { printf "%.2f", r / t }')" "$p50" "$p99" "$sink_cpu" \
		"$(awk -v c="$sink_cpu" -v s="$seconds" 'BEGIN { printf "%.0f", 100 * c / s }')" "$worker_cpu" \
		"$(awk -v c="$worker_cpu" -v n="$MESSAGES" 'BEGIN { printf "%.0f", 1e6 * c / n }')"
done
echo "msgs/s: delivered / (last finished_at - the burst's commit); p50/p99: finished_at - the commit; sink CPU %: the sink's CPU seconds over those seconds"
echo "(100% = one core busy all along: that sink is the bottleneck); worker µs/msg: the delivery worker's CPU over the burst, a message"
echo "(it also expands the burst's leads into their messages).  Machine: $(nproc) cores, $(uname -r); load average now $(cut -d' ' -f1-3 /proc/loadavg)."
