#!/usr/bin/env bash
# scripts/demo.sh: the main job, from a fresh Debian 12 machine to a running
# aimroute with real postal data, a demo dealer network, and demo leads
# routed and delivered by email, push and CRM to loopback servers, and a
# map of where a lead from anywhere would go (docs/coverage.md), and leads
# routed by road on a real OpenStreetMap network (docs/drive-distance.md).
#
# Run as root or with sudo (it installs Debian packages and the extension);
# the cluster and the delivery sinks run as an unprivileged user.  Running
# it again reuses the cluster, restarts the sinks and creates the demo
# database afresh.
#
# Environment: AIMROUTE_PORT (default 54330), AIMROUTE_CLUSTER_DIR (default
# <checkout>/.cluster), AIMROUTE_SMTP_PORT (default 54325) and
# AIMROUTE_HTTP_PORT (default 54326) for the SMTP and HTTP sinks,
# AIMROUTE_VIEW_LINK_PORT (default 54327) for the page behind the view link
# in lead emails (examples/view-link),
# AIMROUTE_MAP_DIR (default <cluster dir>/maps) for the coverage maps,
# AIMROUTE_USER (see scripts/lib.sh).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT=${AIMROUTE_PORT:-54330}
CLUSTER_DIR=${AIMROUTE_CLUSTER_DIR:-$AIMROUTE_ROOT/.cluster}
SMTP_PORT=${AIMROUTE_SMTP_PORT:-54325}
HTTP_PORT=${AIMROUTE_HTTP_PORT:-54326}
VIEW_LINK_PORT=${AIMROUTE_VIEW_LINK_PORT:-54327}
VIEW_LINK_URL="http://127.0.0.1:$VIEW_LINK_PORT/view?token="
SINK_DIR=$CLUSTER_DIR/sinks
MAP_DIR=${AIMROUTE_MAP_DIR:-$CLUSTER_DIR/maps}
DELIVERY_TIMEOUT=60 # seconds to wait for the delivery worker to settle the demo leads

install_packages
build_and_install
pick_run_user
make_reachable "$AIMROUTE_ROOT"
cluster_start "$CLUSTER_DIR" "$PORT"
preload_worker "$CLUSTER_DIR" aimroute
restart_on_new_library "$CLUSTER_DIR"
# The loopback mail server and HTTP endpoint (CRM, push gateway) that the
# delivery worker sends the demo leads to.
sinks_start "$SINK_DIR" "$SMTP_PORT" "$HTTP_PORT"

PSQL=(psql -X -q -v ON_ERROR_STOP=1 -d aimroute)

# view_link_start: (re)start the reference page behind the view link
# (examples/view-link) on loopback, as RUN_USER, logged in as
# aimroute_view_page: a login that is only in the role aimroute_view_link.
view_link_start() {
	local pid i
	if pid=$(cat "$SINK_DIR/view_link.pid" 2>/dev/null) && grep -qs view_link.py "/proc/$pid/cmdline"; then
		say "Stopping the view link page of an earlier run"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -f "$SINK_DIR/view_link.pid" "$SINK_DIR/view_link.log"
	psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "
		DO \$\$ BEGIN
		    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'aimroute_view_page') THEN
		        CREATE ROLE aimroute_view_page LOGIN;
		    END IF;
		END \$\$" -c "GRANT aimroute_view_link TO aimroute_view_page"
	# shellcheck disable=SC2016 # the inner shell expands $1, $@ and $!
	pid=$(as_run_user /bin/bash -c 'log=$1; shift; setsid "$@" </dev/null >"$log" 2>&1 & echo $!' \
		view_link "$SINK_DIR/view_link.log" /usr/bin/python3 "$AIMROUTE_ROOT/examples/view-link/view_link.py" \
		--port "$VIEW_LINK_PORT" --dsn "host=$PGHOST port=$PGPORT dbname=aimroute user=aimroute_view_page")
	echo "$pid" >"$SINK_DIR/view_link.pid"
	for ((i = 0; ; i++)); do
		grep -q 'listening on' "$SINK_DIR/view_link.log" 2>/dev/null && break
		if ! kill -0 "$pid" 2>/dev/null || [ "$i" -ge 150 ]; then
			cat "$SINK_DIR/view_link.log" >&2
			die "the view link page did not start on 127.0.0.1:$VIEW_LINK_PORT (a port in use? set AIMROUTE_VIEW_LINK_PORT)"
		fi
		sleep 0.1
	done
	say "The view link page: ${VIEW_LINK_URL}<token> (log: $SINK_DIR/view_link.log)"
}

# wait_for_delivery: poll until no lead and no message waits for the
# delivery worker, DELIVERY_TIMEOUT seconds at most; says what is left.
wait_for_delivery() {
	local start=$SECONDS next=0 state leads messages
	while :; do
		state=$("${PSQL[@]}" -tA -F ' ' -c "
			SELECT (SELECT count(*) FROM aimroute.lead_delivery_status WHERE delivery_pending),
			       (SELECT count(*) FROM aimroute.outbox WHERE status IN ('queued', 'sending'))")
		read -r leads messages <<<"$state"
		if [ "$leads" = 0 ] && [ "$messages" = 0 ]; then
			say "Delivery settled after $((SECONDS - start)) s"
			return 0
		fi
		if [ $((SECONDS - start)) -ge "$DELIVERY_TIMEOUT" ]; then
			printf 'warning: after %s s, %s leads (%s messages) still wait for the delivery worker;\n' \
				"$DELIVERY_TIMEOUT" "$leads" "$messages" >&2
			printf '         is it running? SELECT * FROM pg_stat_activity WHERE backend_type = %s; log: %s\n' \
				"'aimroute delivery worker'" "$CLUSTER_DIR/server.log" >&2
			return 0
		fi
		if [ "$SECONDS" -ge "$next" ]; then
			echo "   $leads leads ($messages messages) still to send or retry ..."
			next=$((SECONDS + 5))
		fi
		sleep 0.5
	done
}

# A fresh demo database on every run, so that it always holds the extension
# as built now and the demo's own data (an existing database would be
# upgraded with ALTER EXTENSION aimroute UPDATE: docs/upgrading.md).
say "Creating the demo database aimroute (dropped first if it exists)"
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
	-c "DROP DATABASE IF EXISTS aimroute WITH (FORCE)" -c "CREATE DATABASE aimroute"
"${PSQL[@]}" -c "SET client_min_messages = warning" -c "CREATE EXTENSION aimroute CASCADE"

say "Loading the shipped postal codes (US ZIP codes, Canadian FSAs)"
"${PSQL[@]}" -c "SELECT aimroute.load_postal_codes(aimroute.bundled_postal_codes_path()) AS rows_loaded"

say "Loading the demo dealer network"
"${PSQL[@]}" -f "$AIMROUTE_ROOT/demo/network.sql"

say "The demo network"
"${PSQL[@]}" -f "$AIMROUTE_ROOT/demo/show.sql"

say "Starting the page behind the view link in lead emails (examples/view-link)"
view_link_start

say "Setting up lead delivery: dealer contacts, CRMs, notification contacts, the sinks as servers"
"${PSQL[@]}" -v smtp_port="$SMTP_PORT" -v http_port="$HTTP_PORT" -v view_link_url="$VIEW_LINK_URL" \
	-f "$AIMROUTE_ROOT/demo/delivery.sql"

say "Routing a batch of demo leads"
"${PSQL[@]}" -f "$AIMROUTE_ROOT/demo/leads.sql"

say "Where the leads went, and why"
"${PSQL[@]}" -f "$AIMROUTE_ROOT/demo/show_routing.sql"

say "Waiting for the delivery worker to send the leads (retries come 5 and 10 s after a failure)"
wait_for_delivery
# The daily recap of failures goes out at settings.daily_recap_hour (07:00)
# for the day before; the demo queues today's now, as tomorrow would.
"${PSQL[@]}" -tA -c "
	SELECT 'Queued the daily recap of today''s failures early: ' || aimroute.queue_daily_recap(
	           ((now() AT TIME ZONE s.timezone)::date + 1 + make_interval(hours => s.daily_recap_hour))
	           AT TIME ZONE s.timezone) || ' emails'
	  FROM aimroute.settings s"
wait_for_delivery

say "How the leads were delivered"
"${PSQL[@]}" -v smtp_log="$SINK_DIR/smtp.jsonl" -v http_log="$SINK_DIR/http.jsonl" \
	-f "$AIMROUTE_ROOT/demo/show_delivery.sql"

say "Coverage of Loonwater Boats: white space, dealers' areas, what if (docs/coverage.md)"
mkdir -p "$MAP_DIR"
"${PSQL[@]}" -v geojson="$MAP_DIR/coverage_lwb.geojson" -v dealers="$MAP_DIR/dealers_lwb.csv" \
	-f "$AIMROUTE_ROOT/demo/coverage.sql"
say "Drawing the coverage maps (matplotlib)"
/usr/bin/python3 "$AIMROUTE_ROOT/demo/coverage_map.py" "$MAP_DIR/coverage_lwb.geojson" "$MAP_DIR/dealers_lwb.csv" \
	"$MAP_DIR" "Loonwater Boats (LWB), if the radius were 100 miles"

say "Drive Distance: leads routed by road on OpenStreetMap's West Oakland, next to crow flies (docs/drive-distance.md)"
# The extract Debian ships in python-osmnx-doc, (c) OpenStreetMap
# contributors, ODbL; imported as docs/drive-distance.md shows.
bunzip2 -c /usr/share/doc/python-osmnx-doc/examples/tests/input_data/West-Oakland.osm.bz2 \
	>"$CLUSTER_DIR/West-Oakland.osm"
"${PSQL[@]}" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pgrouting"
osm2pgrouting --file "$CLUSTER_DIR/West-Oakland.osm" --conf /usr/share/osm2pgrouting/mapconfig_for_cars.xml \
	--dbname aimroute --username aimroute --host "$PGHOST" --port "$PGPORT" --schema public --clean \
	>"$CLUSTER_DIR/osm2pgrouting.log" 2>&1 || { cat "$CLUSTER_DIR/osm2pgrouting.log" >&2; die "osm2pgrouting failed"; }
"${PSQL[@]}" -f "$AIMROUTE_ROOT/demo/drive.sql"

# One view link, as a dealer's To contact received it: opening it marks
# that lead viewed and stops its re-routing.
VIEW_LINK=$(grep -o "${VIEW_LINK_URL}[A-Za-z0-9_-]*" "$SINK_DIR/smtp.jsonl" | head -n 1 || true)

cat <<DONE

aimroute is running: psql -h $PGHOST -p $PGPORT -U aimroute aimroute
The delivery sinks are running: SMTP on 127.0.0.1:$SMTP_PORT, HTTP on 127.0.0.1:$HTTP_PORT;
  what they received: $SINK_DIR/smtp.jsonl and http.jsonl (one JSON object a line)
The coverage maps: $MAP_DIR/coverage_us_ca.png and coverage_great_lakes.png
  (red is white space; docs/coverage.md says how to read them)
The view link page is running on 127.0.0.1:$VIEW_LINK_PORT (examples/view-link); a link from an email:
  ${VIEW_LINK:-(none: no email with a view link reached the SMTP sink)}
  (opening it marks that lead viewed and stops its re-routing)
Stop the sinks and the page with: kill \$(cat $SINK_DIR/smtp.pid $SINK_DIR/http.pid $SINK_DIR/view_link.pid)
Stop the cluster with: $PG_BINDIR/pg_ctl -D $CLUSTER_DIR/data stop  (as $RUN_USER)
DONE
