#!/usr/bin/env bash
# bench/run.sh: the performance benchmark of SPEC section 7, in one command.
#
# Builds and installs aimroute, starts a cluster of its own (port 54340, in
# bench/.cluster) and the loopback SMTP and HTTP sinks of test/servers, and
# for each dealer count builds a deterministic network on the real postal
# table with its delivery recipients (bench/dataset.sql), then measures side
# by side: routed single-row INSERT (routing and the delivery queue), the
# same INSERT not sent (routing alone), the same INSERT with routing and the
# queue switched off, a PL/pgSQL implementation of the same rules
# (bench/baseline.sql), the plain PostGIS KNN query, bulk import (COPY and
# process_staging) and the dealer locator.  Then, with the cluster
# restarted to preload aimroute, the workers: delivery throughput to the
# SMTP sink, and re-route throughput and lag.  Prints a summary with the
# ratios against the SPEC's targets and writes bench/results/results.csv,
# machine.txt and cost_vs_dealers.svg.  docs/performance.md says what each
# figure means.
#
# Run as root or with sudo, like scripts/demo.sh; the cluster runs as an
# unprivileged user.
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
#   BENCH_SMTP_PORT, BENCH_HTTP_PORT  ports of the loopback sinks (default
#                       54341, 54342)
#   AIMROUTE_USER       see scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

BENCH_DIR=$AIMROUTE_ROOT/bench
CLUSTER_DIR=$BENCH_DIR/.cluster
RESULTS_DIR=$BENCH_DIR/results
PORT=54340
DB=aimroute_bench

SIZES=${BENCH_SIZES:-1000 10000 100000}
CLIENTS=${BENCH_CLIENTS:-2}
DURATION=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
DELIVERY_MESSAGES=${BENCH_DELIVERY_MESSAGES:-5000}
REROUTE_LEADS=${BENCH_REROUTE_LEADS:-3000}
SMTP_PORT=${BENCH_SMTP_PORT:-54341}
HTTP_PORT=${BENCH_HTTP_PORT:-54342}
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
	for n in "$SMTP_PORT" "$HTTP_PORT"; do
		[[ $n =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 65535 ] || die "BENCH_SMTP_PORT/BENCH_HTTP_PORT: \"$n\" is not a port"
	done
	[ "$SMTP_PORT" != "$HTTP_PORT" ] || die "BENCH_SMTP_PORT and BENCH_HTTP_PORT are the same port"
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
	measure_first_route "$size"
}

# measure_first_route SIZE: what the first lead of a new session costs (the
# session sets up its routing state), and the pgbench warm-up that follows
# from it: WARMUP seconds, twice that setup plus two, are left out of every
# pgbench measurement.
measure_first_route() {
	local size=$1 first next build memory
	IFS='|' read -r first next build memory < <(sql "SELECT round(first_ms::numeric, 1), round(next_ms::numeric, 3),
	                                                        round(build_ms::numeric, 1), round(memory_mb::numeric, 1)
	                                                   FROM bench.time_first_route()")
	record "$size" first_route_ms "$first" ms
	record "$size" next_route_ms "$next" ms
	record "$size" cache_build_ms "$build" ms
	record "$size" cache_memory_mb "$memory" MB
	WARMUP=$(awk -v ms="$first" 'BEGIN { w = 2 + 2 * ms / 1000; print (w == int(w) ? w : int(w) + 1) }')
	printf '  first routing in a new session %s ms, the next %s ms: pgbench warm-up %s s\n' "$first" "$next" "$WARMUP"
	printf '  the session'"'"'s copy of the configuration: built in %s ms, %s MB\n' "$build" "$memory"
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
		-D nsamples="$SAMPLES" -D npoints="$POINTS" -f "$BENCH_DIR/$script" "$DB" >"$log" 2>&1 ||
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

# run_delivery: DELIVERY_MESSAGES emails queued in one transaction, timed
# until the delivery worker has sent them all to the SMTP sink; checks that
# the sink received each exactly once.  A few emails go first, not timed,
# so that the worker's first claim (plans, connection) is not counted.
run_delivery() {
	local n=$DELIVERY_MESSAGES log=$SINK_DIR/smtp.jsonl first offset
	local messages delivered attempts seconds rate p50 p99 got ids known
	first=$(sql "SELECT bench.queue_burst($DELIVERY_WARMUP)")
	wait_until "SELECT count(*) = 0 FROM aimroute.outbox WHERE status IN ('queued', 'sending')" "the delivery warm-up"
	offset=$(sql "SELECT coalesce(bench.file_size('$log'), 0)")
	first=$(sql "SELECT bench.queue_burst($n)")
	wait_until "SELECT count(*) = 0 FROM aimroute.outbox WHERE message_id > $first AND status IN ('queued', 'sending')" \
		"delivering $n emails"
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
	printf '  %-28s %10s msgs/s  %s emails in %s s; queued to delivered p50 %s ms, p99 %s ms\n' \
		delivery "$rate" "$n" "$seconds" "$p50" "$p99"
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

# measure_workers: the worker measures, ROUNDS times, with the cluster
# restarted to preload aimroute (and restarted without it after), on
# emptied tables so that the delivery worker starts with nothing to send.
measure_workers() {
	fresh_tables
	set_workers on
	for ROUND in $(seq "$ROUNDS"); do
		say "Workers, round $ROUND of $ROUNDS: $DELIVERY_MESSAGES emails to the SMTP sink, $REROUTE_LEADS leads made overdue"
		fresh_tables
		run_delivery
		run_reroute
	done
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
		echo "             per delivery measure, $REROUTE_LEADS leads made overdue per re-route measure"
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
	trap 'sinks_stop "$SINK_DIR"' EXIT
	sinks_start "$SINK_DIR" "$SMTP_PORT" "$HTTP_PORT"
	create_database

	for size in $SIZES; do
		build_network "$size"
		check_agreement "$size"
		measure "$size"
	done

	say "Summary"
	"${PSQL[@]}" -f "$BENCH_DIR/summary.sql"
	"${PSQL[@]}" -c "\\copy (SELECT size, measure, value, unit FROM bench.results ORDER BY size, measure) TO '$RESULTS_DIR/results.csv' WITH (FORMAT csv, HEADER)"
	describe_machine
	python3 "$BENCH_DIR/plot.py" "$RESULTS_DIR/results.csv" "$RESULTS_DIR/cost_vs_dealers.svg"
	cat <<-DONE

		Results: $RESULTS_DIR/results.csv, machine.txt, cost_vs_dealers.svg
		The benchmark took $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s.
	DONE
}

main "$@"
