#!/usr/bin/env bash
# bench/run.sh: the performance benchmark of SPEC section 7 and of the
# targets of issue 16, in one command.
#
# Builds and installs aimroute, starts a cluster of its own (port 54340, in
# bench/.cluster) and the loopback SMTP and HTTP sinks of test/servers, and
# for each dealer count builds a deterministic network on the real postal
# table with its delivery recipients (bench/dataset.sql), then measures side
# by side: routed single-row INSERT (routing and the delivery queue), the
# same for leads whose dealer has a To contact, a CC contact and a CRM (the
# insert as applications make it), the same INSERT not sent (routing
# alone), the same INSERT with routing and the queue switched off, a
# PL/pgSQL implementation of the same rules (bench/baseline.sql), the plain
# PostGIS KNN query, bulk import (COPY and process_staging) and the dealer
# locator, and coverage() of every postal code for one brand.  Then, with the cluster restarted to preload aimroute, the
# workers: delivery throughput to the SMTP sink (with the sink's and the
# worker's CPU), re-route throughput and lag, the delay of other messages
# while one CRM endpoint hangs (bench/hang_listener.py), whether the
# queue's expansion keeps up with inserts, how long a crash holds messages
# back, and the first lead of a session with aimroute preloaded; last,
# issue 20's four routing features side by side (bench/features.sql).  Prints a
# summary with the ratios against the SPEC's targets and every row of issue
# 16's target table, and writes results.csv, machine.txt and
# cost_vs_dealers.svg.  docs/performance.md says what each figure means.
#
# Run as root or with sudo, like scripts/demo.sh; the cluster runs as an
# unprivileged user.  With AIMROUTE_PG_BINDIR set, every PostgreSQL program
# (pg_ctl, psql, pgbench) and the installation come from there.
#
# Environment:
#   BENCH_SIZES         dealer counts to measure (default "1000 10000 100000")
#   BENCH_CLIENTS       pgbench clients, one thread each (default 2)
#   BENCH_SECONDS       seconds per pgbench run (default 10)
#   BENCH_ROUNDS        rounds of all measurements per dealer count; the
#                       median is reported (default 3)
#   BENCH_SKIP_INSTALL  1: use the aimroute already installed (no package
#                       installation, no build)
#   BENCH_DELIVERY_MESSAGES  emails queued at once for the delivery measure
#                       (default 5000)
#   BENCH_REROUTE_LEADS leads made overdue at once for the re-route measure
#                       (default 3000)
#   BENCH_HOL_EMAILS    emails queued behind a hanging endpoint (default 500)
#   BENCH_HANG_TIMEOUT  aimroute.delivery_timeout, in seconds, during that
#                       measure (default 10)
#   BENCH_EXPAND_SECONDS seconds of inserts for the expansion measure
#                       (default 5)
#   BENCH_CRASH_RATE    leads a second inserted during the crash measures
#                       (default 100)
#   BENCH_CRASH_WAIT    seconds a crash measure waits for the claimed
#                       messages after the restart (default 90)
#   BENCH_FIRST_LEAD_SIZE  dealers of the first-lead measure with and
#                       without aimroute preloaded (default 100000; a network
#                       of its own when not in BENCH_SIZES; empty: none)
#   BENCH_PORT          port of the cluster (default 54340)
#   BENCH_SMTP_PORT, BENCH_HTTP_PORT, BENCH_HANG_PORT  ports of the
#                       loopback sinks and of the hanging listener (default
#                       54341, 54342, 54343)
#   BENCH_SMTP_SINK     fast: bench/fast_smtp_sink.py (default), aiosmtpd:
#                       test/servers/smtp_sink.py
#   BENCH_RESULTS_DIR   where the results go (default bench/results)
#   BENCH_FEATURES      0: leave out issue 20's features (bench/features.sql,
#                       about 3 minutes; default 1)
#   BENCH_STOP_CLUSTER  1: stop the cluster at the end (default: left running)
#   AIMROUTE_USER, AIMROUTE_PG_BINDIR  see scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

# Every PostgreSQL program (pg_ctl, psql, pgbench) from PG_BINDIR: the
# installation AIMROUTE_PG_BINDIR names when it is set (scripts/lib.sh),
# so that a private copy of PostgreSQL is used for all of the run.
PATH=$PG_BINDIR:$PATH

BENCH_DIR=$AIMROUTE_ROOT/bench
CLUSTER_DIR=$BENCH_DIR/.cluster
RESULTS_DIR=${BENCH_RESULTS_DIR:-$BENCH_DIR/results}
PORT=${BENCH_PORT:-54340}
DB=aimroute_bench

SIZES=${BENCH_SIZES:-1000 10000 100000}
CLIENTS=${BENCH_CLIENTS:-2}
DURATION=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
DELIVERY_MESSAGES=${BENCH_DELIVERY_MESSAGES:-5000}
REROUTE_LEADS=${BENCH_REROUTE_LEADS:-3000}
SMTP_PORT=${BENCH_SMTP_PORT:-54341}
HTTP_PORT=${BENCH_HTTP_PORT:-54342}
HANG_PORT=${BENCH_HANG_PORT:-54343}
SMTP_SINK=${BENCH_SMTP_SINK:-fast}
FIRST_LEAD_SIZE=${BENCH_FIRST_LEAD_SIZE-100000}
HOL_EMAILS=${BENCH_HOL_EMAILS:-500}
HANG_TIMEOUT=${BENCH_HANG_TIMEOUT:-10}
EXPAND_SECONDS=${BENCH_EXPAND_SECONDS:-5}
CRASH_RATE=${BENCH_CRASH_RATE:-100}
CRASH_WAIT=${BENCH_CRASH_WAIT:-90}
SINK_DIR=$RESULTS_DIR/sinks
CRM_URL=http://127.0.0.1:$HTTP_PORT/adf
WORKER_WAIT=180         # seconds a worker measure may take before run.sh gives up
DELIVERY_WARMUP=20      # emails sent, not timed, before each delivery measure
REROUTE_WARMUP=20       # leads re-routed, not timed, before each re-route measure
SAMPLES=20000           # sample lead inputs drawn per network
BULK_ROWS=50000         # rows per bulk-import measurement
LOCATE_CALLS=2000       # timed locate_dealers() calls per max_results
# The agreement check routes min(SAMPLES, CHECK_BUDGET / dealers) sample
# leads both ways: all of them at 1,000 dealers, fewer where the PL/pgSQL
# baseline is slower, so that the check stays under half a minute.
CHECK_BUDGET=20000000

PSQL=(psql -X -q -v ON_ERROR_STOP=1 -d "$DB")

# check_settings: refuse malformed environment values before any work.
check_settings() {
	local n
	[ -n "$SIZES" ] || die "BENCH_SIZES is empty"
	for n in $SIZES; do
		[[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZES: \"$n\" is not a positive whole number"
	done
	[[ $CLIENTS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CLIENTS: \"$CLIENTS\" is not a positive whole number"
	[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS: \"$DURATION\" is not a positive whole number"
	[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS: \"$ROUNDS\" is not a positive whole number"
	[[ $DELIVERY_MESSAGES =~ ^[1-9][0-9]*$ ]] ||
		die "BENCH_DELIVERY_MESSAGES: \"$DELIVERY_MESSAGES\" is not a positive whole number"
	[[ $REROUTE_LEADS =~ ^[1-9][0-9]*$ ]] && [ "$REROUTE_LEADS" -le "$SAMPLES" ] ||
		die "BENCH_REROUTE_LEADS: \"$REROUTE_LEADS\" is not a whole number from 1 to $SAMPLES"
	[ "$REROUTE_LEADS" -ge 100 ] ||
		die "BENCH_REROUTE_LEADS: give at least 100 (the first $REROUTE_WARMUP are a warm-up)"
	for n in "$PORT" "$SMTP_PORT" "$HTTP_PORT" "$HANG_PORT"; do
		[[ $n =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 65535 ] ||
			die "BENCH_PORT/BENCH_SMTP_PORT/BENCH_HTTP_PORT/BENCH_HANG_PORT: \"$n\" is not a port"
	done
	[ "$(printf '%s\n' "$PORT" "$SMTP_PORT" "$HTTP_PORT" "$HANG_PORT" | sort -u | wc -l)" = 4 ] ||
		die "BENCH_PORT, BENCH_SMTP_PORT, BENCH_HTTP_PORT and BENCH_HANG_PORT must be four different ports"
	[ "$SMTP_SINK" = fast ] || [ "$SMTP_SINK" = aiosmtpd ] ||
		die "BENCH_SMTP_SINK: \"$SMTP_SINK\" is neither fast nor aiosmtpd"
	[ -z "$FIRST_LEAD_SIZE" ] || [[ $FIRST_LEAD_SIZE =~ ^[1-9][0-9]*$ ]] ||
		die "BENCH_FIRST_LEAD_SIZE: \"$FIRST_LEAD_SIZE\" is not a positive whole number (or empty: no such measure)"
	for n in "$HOL_EMAILS" "$HANG_TIMEOUT" "$EXPAND_SECONDS" "$CRASH_RATE" "$CRASH_WAIT"; do
		[[ $n =~ ^[1-9][0-9]*$ ]] ||
			die "BENCH_HOL_EMAILS/BENCH_HANG_TIMEOUT/BENCH_EXPAND_SECONDS/BENCH_CRASH_RATE/BENCH_CRASH_WAIT: \"$n\" is not a positive whole number"
	done
}

# The server settings of the benchmark.  synchronous_commit off: a commit
# does not wait for its WAL flush, so the figures measure routing rather
# than this machine's fsync latency (fsync stays on: a crash can lose the
# last few commits, nothing else).  jit off: JIT compilation, which
# PostgreSQL 15 starts by plan cost, would add milliseconds to the PL/pgSQL
# baseline's larger queries.  Large WAL and checkpoint limits keep
# checkpoints out of the timed runs (run.sh issues a CHECKPOINT before
# each).  Values are spelled as current_setting() shows them.
BENCH_SETTINGS=(
	shared_buffers=1GB max_connections=100 synchronous_commit=off fsync=on jit=off
	max_wal_size=8GB checkpoint_timeout=30min maintenance_work_mem=256MB
)

# server_settings: the running server's values of BENCH_SETTINGS, in the
# same form.
server_settings() {
	psql -X -d postgres -tAc "SELECT string_agg(t.name || '=' || current_setting(t.name), ' ' ORDER BY t.n)
	                            FROM unnest(string_to_array('${BENCH_SETTINGS[*]%%=*}', ' ')) WITH ORDINALITY AS t(name, n)"
}

# preloaded: the running server's shared_preload_libraries.
preloaded() {
	psql -X -d postgres -tAc "SELECT current_setting('shared_preload_libraries')"
}

# restart_cluster WHY: restart the server, saying why.
restart_cluster() {
	say "Restarting PostgreSQL $1"
	as_run_user "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w -t 120 restart >/dev/null ||
		{ tail -20 "$CLUSTER_DIR/server.log" >&2; die "PostgreSQL did not restart"; }
}

# write_workers_conf on|off: bench_workers.conf, included by postgresql.conf
# after bench.conf.  on: aimroute preloaded, its re-route and delivery
# workers running in the benchmark database.  off (the pgbench and
# in-server measures): nothing preloaded, no worker.  With the library
# preloaded, every commit that queues messages sets the delivery worker's
# latch, so a worker in any database would wake for each routed lead of a
# pgbench run; only a server without it keeps the workers out of those
# figures.
write_workers_conf() {
	local data=$CLUSTER_DIR/data
	{
		echo "# Written by bench/run.sh: the aimroute workers run only during the worker measures."
		if [ "$1" = on ]; then
			echo "shared_preload_libraries = 'aimroute'"
			echo "aimroute.database = '$DB'"
		fi
	} >"$data/bench_workers.conf"
	chown "$RUN_USER:" "$data/bench_workers.conf"
	grep -q "^include_if_exists = 'bench_workers.conf'" "$data/postgresql.conf" ||
		echo "include_if_exists = 'bench_workers.conf'" >>"$data/postgresql.conf"
}

# configure_cluster: BENCH_SETTINGS in bench.conf and no preloaded
# library, both included by postgresql.conf; restarts the server unless it
# runs with them already.
configure_cluster() {
	local data=$CLUSTER_DIR/data setting
	{
		echo "# Written by bench/run.sh; see docs/performance.md."
		for setting in "${BENCH_SETTINGS[@]}"; do
			echo "${setting%%=*} = '${setting#*=}'"
		done
	} >"$data/bench.conf"
	chown "$RUN_USER:" "$data/bench.conf"
	grep -q "^include_if_exists = 'bench.conf'" "$data/postgresql.conf" ||
		echo "include_if_exists = 'bench.conf'" >>"$data/postgresql.conf"
	write_workers_conf off
	[ "$(server_settings)" = "${BENCH_SETTINGS[*]}" ] && [ -z "$(preloaded)" ] && return
	restart_cluster "with the benchmark settings"
	[ "$(server_settings)" = "${BENCH_SETTINGS[*]}" ] ||
		die "the server runs with $(server_settings), not ${BENCH_SETTINGS[*]}: is a setting overridden after the include of bench.conf?"
	[ -z "$(preloaded)" ] ||
		die "the server preloads \"$(preloaded)\": is shared_preload_libraries set after the include of bench_workers.conf?"
}

# set_workers on|off: restart the server with or without the aimroute
# workers (write_workers_conf); on waits until both workers run.
set_workers() {
	local want i
	[ "$1" = on ] && want=aimroute || want=
	write_workers_conf "$1"
	[ "$(preloaded)" = "$want" ] && return
	if [ "$1" = on ]; then
		restart_cluster "with aimroute preloaded: its workers run in $DB"
	else
		restart_cluster "without the aimroute workers"
	fi
	[ "$(preloaded)" = "$want" ] || die "the server preloads \"$(preloaded)\", not \"$want\""
	[ "$1" = on ] || return 0
	for ((i = 0; ; i++)); do
		[ "$(sql "SELECT count(*) FROM pg_stat_activity
		           WHERE backend_type IN ('aimroute delivery worker', 'aimroute re-route worker')")" = 2 ] && break
		[ "$i" -lt 300 ] || { tail -20 "$CLUSTER_DIR/server.log" >&2; die "the aimroute workers did not start within 30 s"; }
		sleep 0.1
	done
}

# create_database: a fresh database on every run, so that it holds the
# extension as installed now; postal codes and the bench schema loaded.
create_database() {
	say "Creating database $DB with the installed aimroute and the shipped postal codes"
	psql -X -q -d postgres -c "SET client_min_messages = warning" \
		-c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
	"${PSQL[@]}" -c "SET client_min_messages = warning" -c "CREATE EXTENSION aimroute CASCADE"
	"${PSQL[@]}" -c "SET client_min_messages = error" \
		-c "SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())" >/dev/null
	# The baseline and the KNN query call PostGIS unqualified, as an
	# application would; PostGIS lives where CREATE EXTENSION put it.
	"${PSQL[@]}" -c "DO \$\$ BEGIN EXECUTE format('ALTER DATABASE $DB SET search_path = public, %I',
		(SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'postgis')); END \$\$"
	"${PSQL[@]}" -f "$BENCH_DIR/dataset.sql" -f "$BENCH_DIR/baseline.sql" -f "$BENCH_DIR/measure.sql"
	# Email goes to the loopback SMTP sink (sent only while the workers
	# run); CRM integrations post to the HTTP sink (CRM_URL, given to
	# build_network).  push_gateway_url stays NULL: no push is queued.
	"${PSQL[@]}" -c "UPDATE aimroute.settings SET smtp_url = 'smtp://127.0.0.1:$SMTP_PORT'"
}

# sql QUERY: run QUERY in the benchmark database and print its result
# unaligned (the notices of routing and import are left out).
sql() {
	"${PSQL[@]}" -tA -c "SET client_min_messages = warning" -c "$1"
}

# record SIZE MEASURE VALUE UNIT: keep one result.
record() {
	sql "INSERT INTO bench.results VALUES ($1, '$2', $3, '$4')
	     ON CONFLICT (size, measure) DO UPDATE SET value = excluded.value, unit = excluded.unit" >/dev/null
}

# build_network SIZE: the network of SIZE dealers and its sample leads.
build_network() {
	local size=$1 t0=$SECONDS
	say "Building a network of $size dealers and $SAMPLES sample leads"
	sql "SELECT bench.clear_network()" >/dev/null
	sql "VACUUM aimroute.dealers" >/dev/null
	sql "SELECT bench.build_network($size, '$CRM_URL')" >/dev/null
	sql "SELECT bench.build_samples($SAMPLES)" >/dev/null
	FULL_SAMPLES=$(sql "SELECT bench.build_full_samples()")
	sql "VACUUM ANALYZE" >/dev/null
	record "$size" build_seconds $((SECONDS - t0)) s
	sql "SELECT format('  %s dealers (%s active), %s dealer_brands, %s territories (%s), %s product assignments, %s inventory rows',
	            (SELECT count(*) FROM aimroute.dealers), (SELECT count(*) FILTER (WHERE active_for_sales) FROM aimroute.dealers),
	            (SELECT count(*) FROM aimroute.dealer_brands), (SELECT count(*) FROM aimroute.territories),
	            (SELECT string_agg(format('%s %s', n, kind), ', ' ORDER BY kind)
	               FROM (SELECT kind, count(*) AS n FROM aimroute.territories GROUP BY kind) k),
	            (SELECT count(*) FROM aimroute.product_assignments), (SELECT count(*) FROM aimroute.inventory))"
	sql "SELECT format('  delivery: %s contacts (%s To, %s CC, %s with a mobile), %s CRM integrations (adf_http)',
	            count(*), count(*) FILTER (WHERE 'Leads: Emails To' = ANY (contact_types)),
	            count(*) FILTER (WHERE 'Leads: Emails CC' = ANY (contact_types)), count(mobile),
	            (SELECT count(*) FROM aimroute.crm_integrations WHERE active))
	       FROM aimroute.dealer_contacts"
	printf '  %s of the %s sample leads go to a dealer with a To contact, a CC contact and a CRM (bench.sample_full)\n' \
		"$FULL_SAMPLES" "$SAMPLES"
	measure_first_route "$size"
}

# FIRST_SESSIONS: new sessions measured by first_route_sessions.
FIRST_SESSIONS=3

# first_route_sessions SIZE PREFIX: FIRST_SESSIONS new sessions, one after
# the other, each timing its first and next routing and reading its memory
# (bench.time_first_route); records the medians as PREFIX_ms,
# PREFIX_next_ms, PREFIX_pss_mb (the backend's PSS after its first lead) and
# PREFIX_anon_mb (its heap: anonymous memory), and prints each session.  With aimroute preloaded and
# a model in shared memory, the first session may build the model that the
# others attach to: the median is the figure of a session that finds it.
first_route_sessions() {
	local size=$1 prefix=$2 i first next build memory before pss heap
	local firsts=() nexts=() psses=() heaps=()
	for ((i = 1; i <= FIRST_SESSIONS; i++)); do
		IFS='|' read -r first next build memory before pss heap < <(sql "
			SELECT round(first_ms::numeric, 1), round(next_ms::numeric, 3), round(build_ms::numeric, 1),
			       round(memory_mb::numeric, 1), coalesce(round(pss_before_kb / 1024.0, 1)::text, '?'),
			       coalesce(round(pss_kb / 1024.0, 1)::text, '?'), coalesce(round(anon_kb / 1024.0, 1)::text, '?')
			  FROM bench.time_first_route()")
		printf '  session %s: first lead %s ms, the next %s ms; copy built in %s ms, %s MB; backend PSS %s MB before, %s MB after (heap %s MB)\n' \
			"$i" "$first" "$next" "$build" "$memory" "$before" "$pss" "$heap"
		firsts+=("$first") nexts+=("$next") psses+=("$pss") heaps+=("$heap")
	done
	FIRST_MS=$(median "${firsts[@]}")
	record "$size" "${prefix}_ms" "$FIRST_MS" ms
	record "$size" "${prefix}_next_ms" "$(median "${nexts[@]}")" ms
	[[ ${psses[0]} == '?' ]] || record "$size" "${prefix}_pss_mb" "$(median "${psses[@]}")" MB
	[[ ${heaps[0]} == '?' ]] || record "$size" "${prefix}_anon_mb" "$(median "${heaps[@]}")" MB
	LAST_BUILD_MS=$build LAST_MEMORY_MB=$memory
}

# median VALUE...: the median of the values.
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# measure_first_route SIZE: what the first lead of a new session costs (the
# session sets up its routing state), without aimroute preloaded, and the
# pgbench warm-up that follows from it: WARMUP seconds, twice that setup
# plus two, are left out of every pgbench measurement.
measure_first_route() {
	local size=$1
	say "First lead of a session, $size dealers, aimroute not preloaded"
	first_route_sessions "$size" first_route
	record "$size" cache_build_ms "$LAST_BUILD_MS" ms
	record "$size" cache_memory_mb "$LAST_MEMORY_MB" MB
	WARMUP=$(awk -v ms="$FIRST_MS" 'BEGIN { w = 2 + 2 * ms / 1000; print (w == int(w) ? w : int(w) + 1) }')
	printf '  first routing in a new session %s ms (median): pgbench warm-up %s s\n' "$FIRST_MS" "$WARMUP"
}

# measure_first_route_preloaded SIZE: the same with aimroute preloaded (the
# workers running): where the configuration model can be built once, in
# shared memory, for every backend.
measure_first_route_preloaded() {
	say "First lead of a session, $1 dealers, aimroute preloaded"
	first_route_sessions "$1" first_route_preloaded
}

# check_agreement SIZE: route sample leads through the C trigger and the
# PL/pgSQL baseline and count where they disagree.
check_agreement() {
	local size=$1 rows checked differ
	rows=$((CHECK_BUDGET / size))
	[ "$rows" -le "$SAMPLES" ] || rows=$SAMPLES
	[ "$rows" -ge 1 ] || rows=1
	say "Agreement check: $rows sample leads routed by the C trigger and by the PL/pgSQL baseline"
	sql "SELECT bench.check_agreement($rows)" >/dev/null
	checked=$(sql "SELECT count(*) FROM bench.agreement")
	differ=$(sql "SELECT count(*) FROM bench.agreement WHERE c_dealer IS DISTINCT FROM plpgsql_dealer")
	record "$size" agreement_checked "$checked" leads
	record "$size" agreement_disagreements "$differ" leads
	sql "SELECT format('  %s leads checked: %s disagree on dealer_number, %s on match_type, %s on distance_miles (> 1e-6 mile)',
	            count(*), count(*) FILTER (WHERE c_dealer IS DISTINCT FROM plpgsql_dealer),
	            count(*) FILTER (WHERE c_match IS DISTINCT FROM plpgsql_match),
	            count(*) FILTER (WHERE abs(c_miles - plpgsql_miles) > 1e-6 OR (c_miles IS NULL) <> (plpgsql_miles IS NULL)))
	       FROM bench.agreement"
	sql "SELECT format('  match types (C routing): %s', string_agg(format('%s %s%%', m, round(100.0 * n / t, 1)), ', ' ORDER BY n DESC))
	       FROM (SELECT c_match AS m, count(*) AS n, sum(count(*)) OVER () AS t FROM bench.agreement GROUP BY c_match) x"
	sql "SELECT format('  disagreement: sample %s (%s %s, brand %s, product %s, group %s, pre-assigned %s): C %s %s %s mi, PL/pgSQL %s %s %s mi',
	            s.id, s.country, s.postal_code, s.brand_code, coalesce(s.product_code, '-'), coalesce(s.dealer_group, '-'),
	            coalesce(s.dealer_number, '-'), a.c_dealer, a.c_match, round(a.c_miles::numeric, 3),
	            a.plpgsql_dealer, a.plpgsql_match, round(a.plpgsql_miles::numeric, 3))
	       FROM bench.agreement a JOIN bench.sample_leads s ON s.id = a.sample_id
	      WHERE a.c_dealer IS DISTINCT FROM a.plpgsql_dealer
	      ORDER BY a.sample_id LIMIT 5"
}

# fresh_tables: empty the lead tables (with the leads' notices and history,
# and the outbox with its attempts) and checkpoint, so that every timed run
# starts from the same state.
fresh_tables() {
	sql "TRUNCATE aimroute.leads, aimroute.lead_staging, aimroute.outbox, bench.leads_plpgsql CASCADE" >/dev/null
	sql "CHECKPOINT" >/dev/null
}

# keep MEASURE VALUE UNIT: one round's value of a measure, for
# record_medians.
declare -A ROUND_VALUES=() ROUND_UNITS=()
keep() {
	ROUND_VALUES[$1]+="$2"$'\n'
	ROUND_UNITS[$1]=$3
}

# record_medians SIZE: record each kept measure's median over the rounds,
# and for throughputs their spread, (max - min) / median in percent.
record_medians() {
	local size=$1 m stats
	for m in "${!ROUND_VALUES[@]}"; do
		stats=$(printf '%s' "${ROUND_VALUES[$m]}" | sort -g | awk '
			{ v[NR] = $1 }
			END {
				med = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
				printf "%.6g %.1f\n", med, (med > 0 ? 100 * (v[NR] - v[1]) / med : 0)
			}')
		record "$size" "$m" "${stats% *}" "${ROUND_UNITS[$m]}"
		case ${ROUND_UNITS[$m]} in
		tps | rows/s | msgs/s | leads/s) record "$size" "${m}_spread" "${stats#* }" % ;;
		esac
	done
	ROUND_VALUES=() ROUND_UNITS=()
}

# run_pgbench NAME SCRIPT [PGOPTIONS]: one timed pgbench run of SCRIPT on
# fresh tables; keeps NAME_tps.  The run lasts WARMUP + DURATION + 1
# seconds, and tps counts the transactions of the DURATION whole seconds
# after the warm-up (per-second aggregates of each pgbench thread), so that
# each connection's first leads, which set up its routing state, are left
# out: measure_first_route reports that cost.
run_pgbench() {
	local name=$1 script=$2 options=${3:-} log aggs tps
	log=$RESULTS_DIR/pgbench-$name-$SIZE-$ROUND.log
	aggs=$RESULTS_DIR/aggregates.tmp
	rm -rf "$aggs" && mkdir "$aggs"
	fresh_tables
	PGOPTIONS=$options "$PG_BINDIR/pgbench" -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T $((WARMUP + DURATION + 1)) \
		--log --aggregate-interval=1 --log-prefix="$aggs/thread" \
		-D nsamples="$SAMPLES" -D npoints="$POINTS" -D nfull="$FULL_SAMPLES" -f "$BENCH_DIR/$script" "$DB" >"$log" 2>&1 ||
		{ cat "$log" >&2; die "pgbench $script failed (log: $log)"; }
	tps=$(awk -v w="$WARMUP" -v d="$DURATION" '
		FNR == 1 { if (NR > 1 && k < w + d) short = 1; k = 0 }
		{ if (k >= w && k < w + d) n += $2; k++ }
		END { if (short || k < w + d) print "short"; else printf "%.3f\n", n / d }' "$aggs"/thread.*)
	rm -rf "$aggs"
	[ "$tps" != short ] || die "pgbench $script logged fewer than $((WARMUP + DURATION)) seconds (log: $log)"
	keep "${name}_tps" "$tps" tps
	printf '  %-28s %10.1f tps  %9.1f µs per lead\n' "$name" "$tps" \
		"$(awk -v c="$CLIENTS" -v t="$tps" 'BEGIN { print 1e6 * c / t }')"
}

# run_bulk NAME QUERY: one bulk-import measurement on fresh tables; QUERY
# returns rows per second.
run_bulk() {
	local name=$1 rate
	fresh_tables
	rate=$(sql "SELECT round(($2)::numeric, 1)")
	keep "$name" "$rate" rows/s
	printf '  %-28s %10s rows/s\n' "$name" "$rate"
}

# run_locator MAX_RESULTS: locate_dealers() latency per call.
run_locator() {
	local k=$1 p50 p99 mean
	IFS='|' read -r p50 p99 mean < <(sql "SELECT round(p50_us::numeric, 1), round(p99_us::numeric, 1), round(mean_us::numeric, 1)
	                                      FROM bench.time_locate($k, $LOCATE_CALLS)")
	keep "locate${k}_p50" "$p50" us
	keep "locate${k}_p99" "$p99" us
	keep "locate${k}_mean" "$mean" us
	printf '  %-28s p50 %7s µs  p99 %7s µs  mean %7s µs\n' "locate_dealers max_results $k" "$p50" "$p99" "$mean"
}

# run_coverage: aimroute.coverage() of the US and Canada for one brand
# (bench.time_coverage), in a new session and again in it.
run_coverage() {
	local brand first again n white
	IFS='|' read -r brand first again n white < <(sql "SELECT brand, round(first_ms::numeric), round(again_ms::numeric),
	                                                   postal_codes, white_space FROM bench.time_coverage()")
	keep coverage_first_ms "$first" ms
	keep coverage_again_ms "$again" ms
	printf '  %-28s %7s ms in a new session, %s ms again (%s postal codes, %s white space)\n' \
		"coverage $brand" "$first" "$again" "$n" "$white"
}

# wait_until CONDITION WHAT: wait (bench.wait_for) until the boolean query
# CONDITION holds; after WORKER_WAIT seconds, show where the outbox and the
# workers stand and give up.
wait_until() {
	[ "$(sql "CALL bench.wait_for(\$q\$$1\$q\$, $WORKER_WAIT)")" = t ] && return
	echo "error: $2 took more than $WORKER_WAIT s" >&2
	sql "SELECT format('  outbox: %s %s (%s)', count(*), status, string_agg(DISTINCT left(coalesce(outcome, '-') || ': ' || coalesce(last_response, '-'), 120), '; '))
	       FROM aimroute.outbox GROUP BY status" >&2
	sql "SELECT format('  %s: %s %s', backend_type, state, query) FROM pg_stat_activity WHERE backend_type LIKE 'aimroute%'" >&2
	tail -5 "$CLUSTER_DIR/server.log" >&2
	die "$2 did not finish (sinks: $SINK_DIR)"
}

# CLK_TCK: the kernel's clock ticks per second, the unit of /proc/PID/stat.
CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks PID: the user + system CPU time of process PID so far, in
# clock ticks (fields 14 and 15 of /proc/PID/stat, counted after the
# command name, which may hold spaces).
cpu_ticks() {
	local stat
	stat=$(cat "/proc/$1/stat") || die "no process $1"
	stat=${stat##*) }
	awk '{ print $12 + $13 }' <<<"$stat"
}

# expanded FIRST N: with a deferred queue, waits until the delivery worker
# has expanded every lead (bench.unexpanded_leads), then checks that the
# messages above FIRST are N To emails (a queue_burst of N); with a
# synchronous queue queue_burst checked that already.
expanded() {
	[ "$QUEUE_MODE" = deferred ] || return 0
	wait_until "SELECT bench.unexpanded_leads() = 0" "expanding the queued leads"
	[ -z "${2:-}" ] || sql "SELECT bench.check_burst($1, $2)" >/dev/null
}

# run_delivery: DELIVERY_MESSAGES emails queued in one transaction, timed
# until the delivery worker has sent them all to the SMTP sink; checks that
# the sink received each exactly once.  A few emails go first, not timed,
# so that the worker's first claim (plans, connection) is not counted.
run_delivery() {
	local n=$DELIVERY_MESSAGES log=$SINK_DIR/smtp.jsonl first offset
	local messages delivered attempts seconds rate p50 p99 got ids known sink worker sink_ticks worker_ticks
	local sink_cpu worker_cpu
	first=$(sql "SELECT bench.queue_burst($DELIVERY_WARMUP)")
	expanded "$first" "$DELIVERY_WARMUP"
	wait_until "SELECT count(*) = 0 FROM aimroute.outbox WHERE status IN ('queued', 'sending')" "the delivery warm-up"
	offset=$(sql "SELECT coalesce(bench.file_size('$log'), 0)")
	sink=$(smtp_sink_pid) || die "the SMTP sink is not running"
	worker=$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'aimroute delivery worker'")
	sink_ticks=$(cpu_ticks "$sink") worker_ticks=$(cpu_ticks "$worker")
	first=$(sql "SELECT bench.queue_burst($n)")
	expanded "$first" "$n"
	wait_until "SELECT count(*) = 0 FROM aimroute.outbox WHERE message_id > $first AND status IN ('queued', 'sending')" \
		"delivering $n emails"
	sink_ticks=$(($(cpu_ticks "$sink") - sink_ticks))
	worker_ticks=$(($(cpu_ticks "$worker") - worker_ticks))
	IFS='|' read -r messages delivered attempts seconds rate p50 p99 < <(sql "
		SELECT messages, delivered, attempts, round(seconds::numeric, 2), round(per_second::numeric, 1),
		       round(p50_ms::numeric, 1), round(p99_ms::numeric, 1)
		  FROM bench.delivery_stats($first)")
	IFS='|' read -r got ids known < <(sql "SELECT * FROM bench.sink_check('$log', $offset, $first)")
	[ "$messages" = "$n" ] && [ "$delivered" = "$n" ] ||
		die "delivery: $delivered of $messages messages delivered, $n emails expected (SELECT * FROM aimroute.outbox WHERE status <> 'delivered')"
	[ "$got" = "$n" ] && [ "$ids" = "$n" ] && [ "$known" = "$n" ] ||
		die "delivery: the SMTP sink logged $got messages with $ids distinct Message-IDs ($known of the burst's) for $n emails (log: $log)"
	keep delivery_msgs_per_s "$rate" msgs/s
	keep delivery_p50_ms "$p50" ms
	keep delivery_p99_ms "$p99" ms
	keep delivery_attempts_per_msg "$(awk -v a="$attempts" -v n="$n" 'BEGIN { printf "%.3f", a / n }')" ratio
	# CPU the SMTP sink and the delivery worker used during the burst, in %
	# of one core over the burst's seconds, and per message.  A sink near
	# 100% is saturated.  A worker that sends one message at a time waits
	# for the sink's reply before the next one, so then the sink's share is
	# also its part of each message's time: a sink busier than the worker
	# is what bounds the rate, even far below 100%.
	sink_cpu=$(awk -v t="$sink_ticks" -v hz="$CLK_TCK" -v s="$seconds" 'BEGIN { printf "%.1f", 100 * t / hz / s }')
	worker_cpu=$(awk -v t="$worker_ticks" -v hz="$CLK_TCK" -v s="$seconds" 'BEGIN { printf "%.1f", 100 * t / hz / s }')
	keep delivery_sink_cpu_pct "$sink_cpu" %
	keep delivery_worker_cpu_pct "$worker_cpu" %
	printf '  %-28s %10s msgs/s  %s emails in %s s; sent to delivered p50 %s ms, p99 %s ms\n' \
		delivery "$rate" "$n" "$seconds" "$p50" "$p99"
	printf '  %-28s SMTP sink (pid %s) busy %s%% of a core, %.0f µs of CPU a message; delivery worker %s%%, %.0f µs a message%s\n' '' \
		"$sink" "$sink_cpu" "$(awk -v t="$sink_ticks" -v hz="$CLK_TCK" -v n="$n" 'BEGIN { print 1e6 * t / hz / n }')" \
		"$worker_cpu" "$(awk -v t="$worker_ticks" -v hz="$CLK_TCK" -v n="$n" 'BEGIN { print 1e6 * t / hz / n }')" \
		"$(awk -v c="$sink_cpu" -v w="$worker_cpu" 'BEGIN { if (c >= 85) print ": the sink is saturated"; else if (c >= w) print ": the sink is busier than the worker" }')"
	printf '  %-28s %s messages, %s distinct Message-IDs, all of this burst; %s attempts\n' "SMTP sink" "$got" "$ids" "$attempts"
}

# run_reroute: REROUTE_LEADS sample leads routed with re-routing on, their
# deadlines moved to one second from now, timed until the re-route worker
# has moved them all.  pg_reload_conf() wakes the worker (SIGHUP sets its
# latch) so that it learns the new deadline and sleeps until it, as it does
# in production, where a deadline is at least a minute away when set.  A
# few leads go first, not timed, so that the worker's copy of the
# configuration (rebuilt after reroute_enabled changed) is in place.  Then
# waits until the delivery worker has sent the moved leads' notices, so
# that the next measure starts quiet.
run_reroute() {
	local due deadline n late leads seconds rate first p50 p99
	sql "UPDATE aimroute.settings SET reroute_enabled = true" >/dev/null
	due=$(sql "SELECT bench.reroute_leads($REROUTE_LEADS)")
	sql "SELECT bench.set_deadlines($REROUTE_WARMUP, 0)" >/dev/null
	sql "SELECT pg_reload_conf()" >/dev/null
	wait_until "SELECT count(*) >= $REROUTE_WARMUP FROM aimroute.leads WHERE reroute_count >= 1" "the re-route warm-up"
	IFS='|' read -r deadline n < <(sql "SELECT deadline, leads FROM bench.set_deadlines($due, 1)")
	late=$(sql "SELECT pg_reload_conf() AND clock_timestamp() > '$deadline'")
	wait_until "SELECT count(*) >= $due FROM aimroute.leads WHERE reroute_count >= 1" "re-routing $n leads"
	IFS='|' read -r leads seconds rate first p50 p99 < <(sql "
		SELECT leads, round(seconds::numeric, 2), round(per_second::numeric, 1), round(first_ms::numeric, 1),
		       round(p50_ms::numeric, 1), round(p99_ms::numeric, 1)
		  FROM bench.reroute_stats('$deadline')")
	[ "$leads" = "$n" ] || die "re-route: $leads leads re-routed after the deadline, $n expected"
	keep reroute_leads_per_s "$rate" leads/s
	keep reroute_lag_first_ms "$first" ms
	keep reroute_lag_p50_ms "$p50" ms
	keep reroute_lag_p99_ms "$p99" ms
	printf '  %-28s %10s leads/s  %s overdue leads in %s s; lag first %s ms, p50 %s ms, p99 %s ms%s\n' \
		re-route "$rate" "$n" "$seconds" "$first" "$p50" "$p99" \
		"$([ "$late" = t ] && echo " (the deadline passed before the worker was woken: lag overstated)")"
	sql "UPDATE aimroute.settings SET reroute_enabled = false" >/dev/null
	wait_until "SELECT count(*) = 0 FROM aimroute.outbox WHERE status IN ('queued', 'sending')" "sending the re-routed leads' notices"
	sql "SELECT format('  %-28s %s messages of the moved leads (%s) sent; the last %s s after the deadline', '', count(*),
	            string_agg(DISTINCT method || ' ' || role, ', '), round(extract(epoch FROM max(finished_at) - '$deadline')::numeric, 1))
	       FROM aimroute.outbox WHERE queued_at >= '$deadline'"
}

# start_fast_smtp_sink: with BENCH_SMTP_SINK=fast (the default), replaces
# the aiosmtpd SMTP sink that sinks_start started by bench/fast_smtp_sink.py
# on the same port and log (FAST_SINK_PID): a sink that accepts and
# discards at a small fraction of the CPU, so that it is not what bounds
# the delivery measure.  The HTTP sink stays.
start_fast_smtp_sink() {
	local pid out=$SINK_DIR/fast_smtp.out i
	[ "$SMTP_SINK" = fast ] || return 0
	if pid=$(sink_pid "$SINK_DIR" smtp); then
		kill -TERM "$pid"
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	rm -f "$SINK_DIR/smtp.jsonl" "$SINK_DIR/smtp.pid"
	/usr/bin/python3 "$BENCH_DIR/fast_smtp_sink.py" --port "$SMTP_PORT" --log "$SINK_DIR/smtp.jsonl" >"$out" 2>&1 &
	FAST_SINK_PID=$!
	for ((i = 0; ; i++)); do
		grep -q '^ready ' "$out" 2>/dev/null && break
		kill -0 "$FAST_SINK_PID" 2>/dev/null || { cat "$out" >&2; die "the fast SMTP sink did not start on 127.0.0.1:$SMTP_PORT"; }
		[ "$i" -lt 100 ] || die "the fast SMTP sink was not ready within 10 s"
		sleep 0.1
	done
	say "SMTP sink: bench/fast_smtp_sink.py on 127.0.0.1:$SMTP_PORT (BENCH_SMTP_SINK=aiosmtpd for the sink of test/servers)"
}

# stop_fast_smtp_sink: stops the sink start_fast_smtp_sink started.
stop_fast_smtp_sink() {
	[ -n "${FAST_SINK_PID:-}" ] || return 0
	kill -TERM "$FAST_SINK_PID" 2>/dev/null || true
	wait "$FAST_SINK_PID" 2>/dev/null || true
	FAST_SINK_PID=
}

# smtp_sink_pid: the pid of the SMTP sink in use.
smtp_sink_pid() {
	if [ -n "${FAST_SINK_PID:-}" ]; then echo "$FAST_SINK_PID"; else sink_pid "$SINK_DIR" smtp; fi
}

# start_hang_listener: bench/hang_listener.py on 127.0.0.1:HANG_PORT, in
# the background (HANG_PID), ready when it returns.
start_hang_listener() {
	local out=$RESULTS_DIR/hang_listener.out i
	/usr/bin/python3 "$BENCH_DIR/hang_listener.py" --port "$HANG_PORT" >"$out" 2>&1 &
	HANG_PID=$!
	for ((i = 0; ; i++)); do
		grep -q '^ready ' "$out" 2>/dev/null && return
		kill -0 "$HANG_PID" 2>/dev/null || { cat "$out" >&2; die "the hanging listener did not start on 127.0.0.1:$HANG_PORT (set BENCH_HANG_PORT)"; }
		[ "$i" -lt 100 ] || die "the hanging listener was not ready within 10 s"
		sleep 0.1
	done
}

# stop_hang_listener: stops the listener start_hang_listener started.
stop_hang_listener() {
	[ -n "${HANG_PID:-}" ] || return 0
	kill -TERM "$HANG_PID" 2>/dev/null || true
	wait "$HANG_PID" 2>/dev/null || true
	HANG_PID=
}

# run_head_of_line: how long other messages wait while one endpoint hangs.
# First HOL_EMAILS emails (queue_burst) alone: the delay of each, queued to
# delivered.  Then one dealer's CRM integration is pointed at the hanging
# listener (accepts, reads, never answers), aimroute.delivery_timeout set to
# HANG_TIMEOUT, a lead queued for that dealer, and once the worker is
# sending its CRM message, HOL_EMAILS emails again.  The extra delay is the
# difference of the two p99s; the target is at most 1 s.  Then waits until
# the hanging attempt has timed out and puts everything back.
run_head_of_line() {
	local n=$HOL_EMAILS first hang_first dealer emails delivered p50 p99 last base50 base99 hung extra
	first=$(sql "SELECT bench.queue_burst($n)")
	expanded "$first" "$n"
	wait_until "SELECT count(*) = 0 FROM aimroute.outbox WHERE message_id > $first AND status IN ('queued', 'sending')" \
		"delivering $n emails"
	IFS='|' read -r emails delivered base50 base99 last < <(sql "
		SELECT emails, delivered, round(p50_ms::numeric, 1), round(p99_ms::numeric, 1), last_at
		  FROM bench.email_delays($first, NULL)")
	[ "$delivered" = "$n" ] || die "head-of-line: $delivered of $n emails delivered without the hanging endpoint"

	start_hang_listener
	sql "ALTER SYSTEM SET aimroute.delivery_timeout = $HANG_TIMEOUT" >/dev/null
	sql "SELECT pg_reload_conf()" >/dev/null
	dealer=$(sql "SELECT min(dealer_number) FROM aimroute.crm_integrations WHERE active AND kind = 'adf_http'")
	[ -n "$dealer" ] || die "head-of-line: no dealer has an active adf_http CRM integration"
	sql "UPDATE aimroute.crm_integrations SET endpoint = 'http://127.0.0.1:$HANG_PORT/adf'
	      WHERE dealer_number = '$dealer' AND active AND kind = 'adf_http'" >/dev/null
	hang_first=$(sql "SELECT coalesce(max(message_id), 0) FROM aimroute.outbox")
	sql "INSERT INTO aimroute.leads (brand_code, first_name, last_name, email, country, postal_code, dealer_number, comment)
	     SELECT (SELECT min(b.brand_code) FROM aimroute.dealer_brands b WHERE b.dealer_number = d.dealer_number),
	            'Hanging', 'Endpoint', 'hanging@example.com', d.country, d.postal_code, d.dealer_number,
	            'bench head-of-line: the CRM endpoint never answers'
	       FROM aimroute.dealers d WHERE d.dealer_number = '$dealer'" >/dev/null
	expanded
	wait_until "SELECT EXISTS (SELECT FROM aimroute.outbox WHERE message_id > $hang_first AND dealer_number = '$dealer'
	                            AND method = 'crm' AND status = 'sending')" "claiming the message to the hanging endpoint"
	first=$(sql "SELECT bench.queue_burst($n)")
	expanded "$first" "$n"
	wait_until "SELECT count(*) = 0 FROM aimroute.outbox WHERE message_id > $first AND status IN ('queued', 'sending')
	                AND dealer_number <> '$dealer'" "delivering $n emails while an endpoint hangs"
	IFS='|' read -r emails delivered p50 p99 last < <(sql "
		SELECT emails, delivered, round(p50_ms::numeric, 1), round(p99_ms::numeric, 1), last_at
		  FROM bench.email_delays($first, '$dealer')")
	# Was the endpoint still hanging when the last email went?  (Its
	# attempt is recorded when the timeout ends it.)
	hung=$(sql "SELECT count(*) > 0 FROM aimroute.outbox WHERE message_id > $hang_first AND dealer_number = '$dealer'
	             AND method = 'crm' AND (status = 'sending' OR last_attempt_at > '$last')")
	wait_until "SELECT NOT EXISTS (SELECT FROM aimroute.outbox WHERE message_id > $hang_first AND dealer_number = '$dealer'
	                                AND method = 'crm' AND status = 'sending')" "timing out the hanging endpoint"
	sql "UPDATE aimroute.crm_integrations SET endpoint = '$CRM_URL/' || lower(dealer_number)
	      WHERE dealer_number = '$dealer' AND active AND kind = 'adf_http'" >/dev/null
	sql "ALTER SYSTEM RESET aimroute.delivery_timeout" >/dev/null
	sql "SELECT pg_reload_conf()" >/dev/null
	stop_hang_listener
	[ "$delivered" = "$n" ] || die "head-of-line: $delivered of $n emails delivered while an endpoint hung"
	extra=$(awk -v a="$p99" -v b="$base99" 'BEGIN { printf "%.1f", a - b }')
	keep hol_base_p50_ms "$base50" ms
	keep hol_base_p99_ms "$base99" ms
	keep hol_p50_ms "$p50" ms
	keep hol_p99_ms "$p99" ms
	keep hol_extra_p99_ms "$extra" ms
	keep hol_timeout_s "$HANG_TIMEOUT" s
	keep hol_hung_throughout "$([ "$hung" = t ] && echo 1 || echo 0)" boolean
	printf '  %-28s %s emails, sent to delivered p50 %s ms, p99 %s ms alone; p50 %s ms, p99 %s ms behind a hanging CRM (timeout %s s): %s ms more at p99%s\n' \
		head-of-line "$n" "$base50" "$base99" "$p50" "$p99" "$HANG_TIMEOUT" "$extra" \
		"$([ "$hung" = t ] && echo "; the endpoint still hung when the last email went" || echo "; the endpoint had timed out before the last email went")"
}

# run_copy_expansion: the routed COPY of BULK_ROWS leads (the sample mix,
# sent) with the workers running, then the time from its commit until the
# delivery worker has made all their messages (0 with a synchronous queue),
# and the COPY's rate counting that time: what a bulk import costs until
# its leads are really queued.
run_copy_expansion() {
	local file=$CLUSTER_DIR/bulk.tmp rate done_at lag effective
	rate=$(sql "SELECT round(bench.time_copy('$file', $BULK_ROWS, 'routed')::numeric, 1)")
	done_at=$(sql "SELECT clock_timestamp()")
	rm -f "$file"
	wait_until "SELECT bench.unexpanded_leads() = 0" "expanding the leads of the COPY"
	lag=$(sql "SELECT round(extract(epoch FROM greatest(max(queued_at) - '$done_at', interval '0'))::numeric, 3)
	             FROM aimroute.outbox")
	effective=$(awk -v n="$BULK_ROWS" -v r="$rate" -v l="$lag" 'BEGIN { printf "%.1f", n / (n / r + l) }')
	record "$SIZE" copy_expand_lag_s "$lag" s
	record "$SIZE" copy_routed_expanded "$effective" rows/s
	printf '  %-28s %s rows/s (workers running); all their messages existed %s s after the commit: %s rows/s counting that (%s queue)\n' \
		"COPY, then expansion" "$rate" "$lag" "$effective" "$QUEUE_MODE"
}

# run_expansion: leads inserted as applications insert them (the routed
# INSERT of bench.sample_full: To, CC, CRM) for EXPAND_SECONDS with the
# workers running, then the time from the last lead's commit until all
# its messages exist.  With a synchronous queue the messages are committed
# with their lead; with a deferred one the delivery worker makes them, and
# this says whether it keeps up with the inserts, so that the cost taken
# off the INSERT is not just moved out of sight.
run_expansion() {
	local since log leads messages seconds lag rate
	log=$RESULTS_DIR/pgbench-expansion-$SIZE.log
	since=$(sql "SELECT clock_timestamp()")
	pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$EXPAND_SECONDS" -D nfull="$FULL_SAMPLES" \
		-f "$BENCH_DIR/pgbench_routed_full_insert.sql" "$DB" >"$log" 2>&1 ||
		{ cat "$log" >&2; die "pgbench of the expansion measure failed (log: $log)"; }
	wait_until "SELECT bench.unexpanded_leads() = 0" "expanding the inserted leads"
	IFS='|' read -r leads messages seconds lag < <(sql "
		SELECT leads, messages, round(insert_seconds::numeric, 2), round(lag_seconds::numeric, 3)
		  FROM bench.expansion_stats('$since')")
	rate=$(awk -v l="$leads" -v s="$seconds" 'BEGIN { printf "%.1f", (s > 0 ? l / s : 0) }')
	record "$SIZE" expand_leads_per_s "$rate" leads/s
	record "$SIZE" expand_messages_per_lead "$(awk -v m="$messages" -v l="$leads" 'BEGIN { printf "%.3f", m / l }')" ratio
	record "$SIZE" expand_lag_s "$lag" s
	printf '  %-28s %s leads in %s s (%s leads/s, workers running), %s messages; all existed %s s after the last lead (%s queue)\n' \
		expansion "$leads" "$seconds" "$rate" "$messages" "$lag" "$QUEUE_MODE"
}

# psql_quiet QUERY: the query's result, or nothing while the server is
# down or recovering.
psql_quiet() {
	"${PSQL[@]}" -tA -c "$1" 2>/dev/null || true
}

# run_crash kill|immediate: while leads are inserted (CRASH_RATE a second,
# the routed INSERT of the sample mix) with the workers running, the
# delivery worker is killed with SIGKILL (the postmaster then restarts
# every process) or the server stopped with "pg_ctl stop -m immediate" and
# started again.  The messages the worker had claimed (status 'sending') at
# that moment are followed until they are delivered: how long after the
# new delivery worker started the last of them went.  Target: seconds,
# not the lease (aimroute.delivery_lease, 300 s).
run_crash() {
	local kind=$1 log bg ids noted pid postmaster crashed restarted tries n exist delivered after_restart after_kill before
	log=$RESULTS_DIR/pgbench-crash-$kind-$SIZE.log
	pgbench -n -c 1 -j 1 -R "$CRASH_RATE" -T $((CRASH_WAIT + 60)) -D nsamples="$SAMPLES" \
		-f "$BENCH_DIR/pgbench_routed_insert.sql" "$DB" >"$log" 2>&1 &
	bg=$!
	for ((tries = 0; ; tries++)); do
		[ "$(sql "CALL bench.wait_for(\$q\$SELECT EXISTS (SELECT FROM aimroute.outbox WHERE status = 'sending')\$q\$, 10)")" = t ] ||
			die "crash ($kind): no message was being sent within 10 s of inserting $CRASH_RATE leads a second"
		IFS='|' read -r ids noted pid < <(sql "
			SELECT string_agg(message_id::text, ',' ORDER BY message_id), clock_timestamp(),
			       (SELECT a.pid FROM pg_stat_activity a WHERE a.backend_type = 'aimroute delivery worker')
			  FROM aimroute.outbox WHERE status = 'sending'")
		[ -n "$ids" ] && [ -n "$pid" ] && break
		[ "$tries" -lt 20 ] || die "crash ($kind): found no claimed message to follow"
	done
	# crashed: the moment the worker is dead (the server's clock is this
	# machine's); a message recorded between noted and crashed was not
	# held back.
	if [ "$kind" = kill ]; then
		kill -KILL "$pid"
		crashed=$(date -u '+%Y-%m-%d %H:%M:%S.%6N+00')
	else
		# What "pg_ctl stop -m immediate" does, without the time pg_ctl
		# takes to start (during which the worker would record what it
		# had claimed): SIGQUIT to the postmaster, then wait until it is
		# gone.
		postmaster=$(head -1 "$CLUSTER_DIR/data/postmaster.pid")
		kill -QUIT "$postmaster"
		crashed=$(date -u '+%Y-%m-%d %H:%M:%S.%6N+00')
		for ((tries = 0; tries < 600; tries++)); do
			kill -0 "$postmaster" 2>/dev/null || break
			sleep 0.1
		done
		! kill -0 "$postmaster" 2>/dev/null || die "crash ($kind): the postmaster did not stop within 60 s of SIGQUIT"
		as_run_user "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w -t 120 start >/dev/null ||
			{ tail -20 "$CLUSTER_DIR/server.log" >&2; die "PostgreSQL did not start after the immediate stop"; }
	fi
	for ((tries = 0; ; tries++)); do
		restarted=$(psql_quiet "SELECT backend_start FROM pg_stat_activity
		                         WHERE backend_type = 'aimroute delivery worker' AND backend_start > '$crashed'")
		[ -z "$restarted" ] || break
		[ "$tries" -lt 1200 ] || die "crash ($kind): the delivery worker did not come back within 120 s"
		sleep 0.1
	done
	n=$(tr ',' '\n' <<<"$ids" | wc -l)
	[ "$(sql "CALL bench.wait_for(\$q\$SELECT NOT EXISTS (SELECT FROM aimroute.outbox WHERE message_id IN ($ids)
	                                                       AND status IN ('queued', 'sending'))\$q\$, $CRASH_WAIT)")" = t ] ||
		echo "  (not all of them were sent within $CRASH_WAIT s of the restart)"
	kill -TERM "$bg" 2>/dev/null || true
	wait "$bg" 2>/dev/null || true
	IFS='|' read -r exist delivered before after_restart after_kill < <(sql "
		SELECT count(*), count(*) FILTER (WHERE status = 'delivered'), count(*) FILTER (WHERE finished_at < '$crashed'),
		       CASE WHEN bool_and(status NOT IN ('queued', 'sending'))
		            THEN round(extract(epoch FROM greatest(max(finished_at) - '$restarted', interval '0'))::numeric, 2) END,
		       CASE WHEN bool_and(status NOT IN ('queued', 'sending'))
		            THEN round(extract(epoch FROM max(finished_at) - '$crashed')::numeric, 2) END
		  FROM aimroute.outbox WHERE message_id IN ($ids)")
	if [ "$exist" = "$before" ]; then
		# Every message noted was recorded before the crash: nothing was
		# held back, and nothing was measured.
		after_restart="- (none was still claimed at the crash: not measured)" after_kill="-"
	elif [ -n "$after_restart" ]; then
		record "$SIZE" "crash_${kind}_held_s" "$after_restart" s
	else
		record "$SIZE" "crash_${kind}_held_s" "'Infinity'" s
		after_restart=">$CRASH_WAIT" after_kill="-"
	fi
	record "$SIZE" "crash_${kind}_restart_s" "$(sql "SELECT round(extract(epoch FROM '$restarted'::timestamptz - '$crashed')::numeric, 2)")" s
	record "$SIZE" "crash_${kind}_messages" "$n" messages
	printf '  %-28s %s messages being sent just before the crash (%s still exist, %s of them recorded before it, %s delivered); the delivery worker was back %s s after the crash;\n  %-28s the last of them delivered %s s after it started (%s s after the crash)\n' \
		"crash ($kind)" "$n" "$exist" "$before" "$delivered" \
		"$(sql "SELECT round(extract(epoch FROM '$restarted'::timestamptz - '$crashed')::numeric, 2)")" '' "$after_restart" "$after_kill"
	wait_until "SELECT count(*) = 0 FROM aimroute.outbox WHERE status IN ('queued', 'sending')" "sending the last leads of the crash measure"
}

# measure_workers: the worker measures, ROUNDS times, with the cluster
# restarted to preload aimroute (and restarted without it after), on
# emptied tables so that the delivery worker starts with nothing to send.
# Then, once per size: the first lead of a session with aimroute preloaded
# (at FIRST_LEAD_SIZE dealers), the expansion of the queue while leads are
# inserted, and the two crashes, each on emptied tables.
measure_workers() {
	fresh_tables
	set_workers on
	for ROUND in $(seq "$ROUNDS"); do
		say "Workers, round $ROUND of $ROUNDS: $DELIVERY_MESSAGES emails to the SMTP sink, $REROUTE_LEADS leads made overdue, $HOL_EMAILS emails behind a hanging endpoint"
		fresh_tables
		run_delivery
		run_reroute
		run_head_of_line
	done
	[ "$SIZE" != "$FIRST_LEAD_SIZE" ] || measure_first_route_preloaded "$SIZE"
	# Each expansion measure leaves a backlog of messages: a restart
	# without the workers drops it.
	say "Workers: the queue's expansion after a COPY of $BULK_ROWS leads"
	fresh_tables
	run_copy_expansion
	set_workers off
	fresh_tables
	set_workers on
	say "Workers: the queue's expansion while $CLIENTS clients insert leads for ${EXPAND_SECONDS}s (To, CC, CRM)"
	run_expansion
	set_workers off
	fresh_tables
	set_workers on
	say "Workers: crashes while $CRASH_RATE leads a second are inserted"
	run_crash kill
	fresh_tables
	run_crash immediate
	fresh_tables
	set_workers off
}

# measure SIZE: every measure, ROUNDS times.  The measures of one round run
# back to back and the rounds follow each other, so that a change of
# background load affects every measure alike; the medians are recorded.
measure() {
	local file=$CLUSTER_DIR/bulk.tmp
	# Globals read by the run_* functions.
	SIZE=$1
	POINTS=$(sql "SELECT count(*) FROM bench.sample_points")
	for ROUND in $(seq "$ROUNDS"); do
		say "Round $ROUND of $ROUNDS: pgbench ${DURATION}s each with $CLIENTS clients, bulk import of $BULK_ROWS rows, $LOCATE_CALLS locator calls"
		# Routed and sent (routing and the delivery queue), then routed
		# and not sent (routing alone).
		run_pgbench routed_insert pgbench_routed_insert.sql
		# Routed and sent for dealers with To, CC and a CRM: the insert
		# as applications make it (bench.sample_full).
		run_pgbench routed_full_insert pgbench_routed_full_insert.sql
		run_pgbench routed_unsent_insert pgbench_routed_unsent_insert.sql
		# Routing and the queue switched off: both triggers disabled,
		# everything else of the table (identity, defaults, indexes, the
		# foreign key check to dealers) still at work.
		sql "ALTER TABLE aimroute.leads DISABLE TRIGGER route_lead" >/dev/null
		run_pgbench bare_insert pgbench_bare_insert.sql
		sql "ALTER TABLE aimroute.leads ENABLE TRIGGER route_lead" >/dev/null
		run_pgbench plpgsql_insert pgbench_plpgsql_insert.sql
		run_pgbench knn pgbench_knn.sql
		run_bulk copy_routed "bench.time_copy('$file', $BULK_ROWS, 'routed')"
		run_bulk copy_routed_unsent "bench.time_copy('$file', $BULK_ROWS, 'unsent')"
		run_bulk copy_bare "bench.time_copy('$file', $BULK_ROWS, 'bare')"
		run_bulk staging "bench.time_staging('bench-$SIZE-$ROUND', $BULK_ROWS)"
		run_bulk staging_unsent "bench.time_staging('bench-$SIZE-$ROUND-unsent', $BULK_ROWS, false)"
		run_locator 10
		run_locator 1
		run_coverage
	done
	rm -f "$file"
	measure_workers
	record_medians "$SIZE"
	# Cost per lead: the mean time a client waits for one transaction,
	# clients / tps (what pgbench prints as "latency average").
	sql "INSERT INTO bench.results
	     SELECT size, replace(measure, '_tps', '_us'), 1e6 * $CLIENTS / value, 'us'
	       FROM bench.results WHERE size = $SIZE AND unit = 'tps'
	     ON CONFLICT (size, measure) DO UPDATE SET value = excluded.value" >/dev/null
}

# run_features: issue 20's features (round robin, daily caps, the
# business-hours clock, dated territories) against the same network and
# leads without them (bench/features.sql), in a scratch database of its
# own, dropped after; the output goes to results/features.txt.
run_features() {
	local db=aimroute_features
	say "Issue 20's features side by side (bench/features.sql, database $db)"
	psql -X -q -d postgres -c "SET client_min_messages = warning" \
		-c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
	psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c "SET client_min_messages = warning" \
		-c "CREATE EXTENSION aimroute CASCADE" \
		-c "SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path())" >/dev/null
	psql -X -q -v ON_ERROR_STOP=1 -d "$db" -f "$BENCH_DIR/features.sql" | tee "$RESULTS_DIR/features.txt"
	psql -X -q -d postgres -c "DROP DATABASE $db WITH (FORCE)"
}

# describe_machine: what the figures were measured on.
describe_machine() {
	{
		echo "date:        $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo "cpus:        $(nproc)"
		echo "cpu model:   $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
		echo "ram:         $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
		echo "kernel:      $(uname -sr)"
		echo "postgresql:  $(sql "SELECT version()")"
		echo "postgis:     $(sql "SELECT postgis_full_version()")"
		echo "aimroute:    extension $(sql "SELECT extversion FROM pg_extension WHERE extname = 'aimroute'"), library $(sql "SELECT aimroute.library_version()"), checkout $(git -C "$AIMROUTE_ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
		echo "server:      $(server_settings)"
		echo "benchmark:   sizes $SIZES; $ROUNDS rounds (medians reported); $CLIENTS pgbench clients, ${DURATION}s measured per pgbench run after a warm-up;"
		echo "             $SAMPLES sample leads; $BULK_ROWS rows per bulk import; $LOCATE_CALLS timed locator calls;"
		echo "             workers (aimroute preloaded, restarted around them): $DELIVERY_MESSAGES emails to the loopback SMTP sink"
		echo "             per delivery measure, $REROUTE_LEADS leads made overdue per re-route measure, $HOL_EMAILS emails"
		echo "             behind a hanging endpoint (timeout ${HANG_TIMEOUT}s), ${EXPAND_SECONDS}s of inserts for the expansion measure,"
		echo "             crashes at $CRASH_RATE leads/s; first lead with aimroute preloaded at ${FIRST_LEAD_SIZE:-no} dealers"
		echo "queue:       $QUEUE_MODE (bench.queue_mode()); SMTP sink: $SMTP_SINK"
	} >"$RESULTS_DIR/machine.txt"
}

main() {
	local size started=$SECONDS
	check_settings
	if [ "${BENCH_SKIP_INSTALL:-}" = 1 ]; then
		say "BENCH_SKIP_INSTALL=1: using the aimroute installed in $("$PG_CONFIG" --pkglibdir)"
	else
		install_packages
		build_and_install
	fi
	command -v python3 >/dev/null || die "python3 is needed to draw the plot"
	pick_run_user
	make_reachable "$AIMROUTE_ROOT"
	cluster_start "$CLUSTER_DIR" "$PORT"
	configure_cluster
	mkdir -p "$RESULTS_DIR"
	rm -f "$RESULTS_DIR"/pgbench-*.log
	declare -F sinks_start >/dev/null || die "scripts/lib.sh has no sinks_start: the loopback sinks cannot be started"
	trap 'stop_hang_listener; stop_fast_smtp_sink; sinks_stop "$SINK_DIR"; [ "${BENCH_STOP_CLUSTER:-}" != 1 ] || cluster_stop "$CLUSTER_DIR"' EXIT
	sinks_start "$SINK_DIR" "$SMTP_PORT" "$HTTP_PORT"
	start_fast_smtp_sink
	create_database
	QUEUE_MODE=$(sql "SELECT bench.queue_mode()")
	record 0 queue_deferred "$([ "$QUEUE_MODE" = deferred ] && echo 1 || echo 0)" boolean
	say "The delivery queue is $QUEUE_MODE (bench.queue_mode(), bench/measure.sql)"

	for size in $SIZES; do
		build_network "$size"
		check_agreement "$size"
		measure "$size"
	done
	# The first lead of a session at FIRST_LEAD_SIZE dealers, with and
	# without aimroute preloaded, when that size was not measured whole.
	if [ -n "$FIRST_LEAD_SIZE" ] && ! [[ " $SIZES " == *" $FIRST_LEAD_SIZE "* ]]; then
		build_network "$FIRST_LEAD_SIZE"
		set_workers on
		measure_first_route_preloaded "$FIRST_LEAD_SIZE"
		set_workers off
	fi

	[ "${BENCH_FEATURES:-1}" = 0 ] || run_features

	say "Summary"
	"${PSQL[@]}" -v first_lead_size="${FIRST_LEAD_SIZE:-0}" -f "$BENCH_DIR/summary.sql"
	"${PSQL[@]}" -c "\\copy (SELECT size, measure, value, unit FROM bench.results ORDER BY size, measure) TO '$RESULTS_DIR/results.csv' WITH (FORMAT csv, HEADER)"
	describe_machine
	python3 "$BENCH_DIR/plot.py" "$RESULTS_DIR/results.csv" "$RESULTS_DIR/cost_vs_dealers.svg"
	cat <<-DONE

		Results: $RESULTS_DIR/results.csv, machine.txt, cost_vs_dealers.svg
		The benchmark took $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s.
	DONE
}

main "$@"
