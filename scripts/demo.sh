#!/usr/bin/env bash
# scripts/demo.sh: the main job, from a fresh Debian 12 machine to a running
# aimroute with real postal data and a demo dealer network.
#
# Run as root or with sudo (it installs Debian packages and the extension);
# the cluster itself runs as an unprivileged user.  Running it again reuses
# the cluster and creates the demo database afresh.
#
# Environment: AIMROUTE_PORT (default 54330), AIMROUTE_CLUSTER_DIR (default
# <checkout>/.cluster), AIMROUTE_USER (see scripts/lib.sh).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT=${AIMROUTE_PORT:-54330}
CLUSTER_DIR=${AIMROUTE_CLUSTER_DIR:-$AIMROUTE_ROOT/.cluster}

install_packages
build_and_install
pick_run_user
make_reachable "$AIMROUTE_ROOT"
cluster_start "$CLUSTER_DIR" "$PORT"
preload_worker "$CLUSTER_DIR" aimroute

PSQL=(psql -X -q -v ON_ERROR_STOP=1 -d aimroute)
# A fresh demo database on every run, so that it always holds the extension
# as built now (0.1.0 has no upgrade path yet) and the demo's own data.
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

say "Routing a batch of demo leads"
"${PSQL[@]}" -f "$AIMROUTE_ROOT/demo/leads.sql"

say "Where the leads went, and why"
"${PSQL[@]}" -f "$AIMROUTE_ROOT/demo/show_routing.sql"

cat <<DONE

aimroute is running: psql -h $PGHOST -p $PGPORT -U aimroute aimroute
Stop the cluster with: $PG_BINDIR/pg_ctl -D $CLUSTER_DIR/data stop  (as $RUN_USER)
DONE
