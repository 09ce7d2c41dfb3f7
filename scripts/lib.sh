# scripts/lib.sh: what scripts/demo.sh and scripts/test.sh share.
#
# Installs the Debian packages aimroute needs, builds and installs the
# extension, and runs PostgreSQL clusters inside the checkout as an
# unprivileged user (PostgreSQL refuses to run as root).  Sourced, not run.
#
# Environment (all optional):
#   AIMROUTE_USER         the unprivileged user that owns the clusters
#                         (default: $SUDO_USER when run with sudo, else a
#                         system user "aimroute" created on first use)
#   AIMROUTE_PG_BINDIR    PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#
# The loopback delivery sinks (test/servers/README.md) run as daemons of
# RUN_USER through sinks_start / sinks_stop; their ports are the caller's.

set -euo pipefail

AIMROUTE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BINDIR=${AIMROUTE_PG_BINDIR:-/usr/lib/postgresql/15/bin}
PG_CONFIG=$PG_BINDIR/pg_config
[ -x "$PG_CONFIG" ] || PG_CONFIG=/usr/bin/pg_config

AIMROUTE_PACKAGES=(
	build-essential clang-format
	postgresql-15 postgresql-server-dev-15 postgresql-15-postgis-3
	postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl libipc-run-perl
	libcurl4-openssl-dev zlib1g-dev python3-aiosmtpd pgbouncer
	clang libclang-rt-14-dev libxml2-utils
	gdal-bin python3-matplotlib
	postfix dovecot-imapd openssl iproute2
	chromium python3-psycopg2 # the view link page (examples/view-link) and t/021_view_link.pl
	# Drive Distance (docs/drive-distance.md), optional for users: pgRouting,
	# the OpenStreetMap importer, and the real OpenStreetMap extract of West
	# Oakland (c) OpenStreetMap contributors, ODbL, that t/025_drive_distance.pl
	# imports (python-osmnx-doc ships it among its examples).
	postgresql-15-pgrouting osm2pgrouting python-osmnx-doc
)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# as_root CMD...: run CMD as root (directly, or through sudo).
as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"
	elif command -v sudo >/dev/null; then sudo "$@"
	else die "this step needs root: run the command as root or with sudo"
	fi
}

# install_packages: install the Debian packages that are missing.
install_packages() {
	local missing=() p
	for p in "${AIMROUTE_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		say "Debian packages: all present"
		return
	fi
	say "Installing Debian packages: ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	# Postfix and Dovecot are for t/020_mail_servers.pl, which runs its own
	# instances in directories of their own (test/servers/mail_servers.sh):
	# the system's Postfix gets no configuration, so it does not start.
	echo 'postfix postfix/main_mailer_type select No configuration' | as_root debconf-set-selections
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# Debian's postgresql-common starts a "main" cluster on 5432, and the
	# pgbouncer package its service on 127.0.0.1:6432; ours are separate
	# (t/010_pgbouncer.pl runs its own on a free port) and do not need
	# them, but leave them alone: they may be the user's.
	# The Dovecot service this install may have started is not needed
	# either (the test runs its own, on loopback): stop it.
	case " ${missing[*]} " in
	*" dovecot-imapd "*) as_root invoke-rc.d dovecot stop >/dev/null 2>&1 || true ;;
	esac
}

# build_and_install: compile with -Werror and install into PostgreSQL.
build_and_install() {
	say "Building aimroute"
	make -C "$AIMROUTE_ROOT" -s PG_CONFIG="$PG_CONFIG"
	say "Installing aimroute into $("$PG_CONFIG" --pkglibdir)"
	as_root make -C "$AIMROUTE_ROOT" -s PG_CONFIG="$PG_CONFIG" install
}

# pick_run_user: set RUN_USER, the unprivileged owner of the clusters.
pick_run_user() {
	if [ "$(id -u)" != 0 ]; then
		RUN_USER=$(id -un)
	elif [ -n "${AIMROUTE_USER:-}" ]; then
		RUN_USER=$AIMROUTE_USER
	elif [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
		RUN_USER=$SUDO_USER
	else
		RUN_USER=aimroute
		if ! id "$RUN_USER" >/dev/null 2>&1; then
			say "Creating system user $RUN_USER to run PostgreSQL (it refuses to run as root)"
			useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "$RUN_USER"
		fi
	fi
	[ "$(id -u "$RUN_USER")" != 0 ] || die "AIMROUTE_USER must not be root: PostgreSQL refuses to run as root"
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# as_run_user CMD...: run CMD as RUN_USER.
as_run_user() {
	if [ "$(id -un)" = "$RUN_USER" ]; then "$@"
	elif [ "$(id -u)" = 0 ]; then runuser -u "$RUN_USER" -- "$@"
	else sudo -u "$RUN_USER" -- "$@"
	fi
}

# make_reachable DIR: let RUN_USER reach DIR (search permission on every
# parent, as the server reads the shipped data and test files from here).
make_reachable() {
	local d=$1
	as_run_user test -x "$d" 2>/dev/null && return
	while [ "$d" != / ]; do
		if ! as_run_user test -x "$d" 2>/dev/null; then
			say "Granting search permission on $d so that $RUN_USER can reach the checkout"
			as_root chmod o+x "$d"
		fi
		d=$(dirname "$d")
	done
}

# owned_dir DIR: create DIR owned by RUN_USER.
owned_dir() {
	mkdir -p "$1"
	[ "$(id -u)" = 0 ] && chown "$RUN_USER:" "$1"
	return 0
}

# cluster_start DIR PORT: start (initializing when new) the cluster in DIR
# listening on 127.0.0.1:PORT; reuse it when it is running already.  Sets
# PGHOST, PGPORT, PGUSER for the clients of the calling script.
cluster_start() {
	local dir=$1 port=$2 sock
	owned_dir "$dir"
	# Unix socket paths are limited to 107 bytes; fall back to /tmp.
	sock=$dir/run
	[ ${#sock} -lt 90 ] || sock=/tmp/aimroute-$port
	owned_dir "$sock"
	if [ ! -s "$dir/data/PG_VERSION" ]; then
		say "Initializing a PostgreSQL cluster in $dir/data (owner $RUN_USER)"
		as_run_user "$PG_BINDIR/initdb" -D "$dir/data" -U aimroute --auth=trust \
			--encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
			{ cat "$dir/initdb.log" >&2; die "initdb failed"; }
		cat >>"$dir/data/postgresql.conf" <<-EOF
			# aimroute: a local cluster inside the checkout
			listen_addresses = '127.0.0.1'
			unix_socket_directories = '$sock'
			max_connections = 50
			shared_buffers = 256MB
			log_min_messages = warning
		EOF
	fi
	# The port may change between runs.
	sed -i "/^port = /d" "$dir/data/postgresql.conf"
	echo "port = $port" >>"$dir/data/postgresql.conf"
	export PGHOST=$sock PGPORT=$port PGUSER=aimroute
	if as_run_user "$PG_BINDIR/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
		say "Reusing the running cluster in $dir (port $port)"
	else
		say "Starting PostgreSQL in $dir on 127.0.0.1:$port"
		as_run_user "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
			{ tail -20 "$dir/server.log" >&2; die "PostgreSQL did not start (log: $dir/server.log)"; }
	fi
}

# preload_worker DIR DATABASE: run the re-route worker in DATABASE of the
# cluster in DIR (shared_preload_libraries, in aimroute.conf included by
# postgresql.conf); restarts the server when it runs without it.
preload_worker() {
	local dir=$1 db=$2
	cat >"$dir/data/aimroute.conf" <<-EOF
		# Written by scripts/lib.sh: the aimroute re-route worker (docs/rerouting.md).
		shared_preload_libraries = 'aimroute'
		aimroute.database = '$db'
	EOF
	chown "$RUN_USER:" "$dir/data/aimroute.conf" 2>/dev/null || true
	grep -q "^include_if_exists = 'aimroute.conf'" "$dir/data/postgresql.conf" ||
		echo "include_if_exists = 'aimroute.conf'" >>"$dir/data/postgresql.conf"
	[ "$(psql -X -d postgres -tAc "SELECT current_setting('shared_preload_libraries') || '|' || coalesce(current_setting('aimroute.database', true), '')")" = "aimroute|$db" ] &&
		return 0
	say "Restarting PostgreSQL with the aimroute re-route worker (database $db)"
	as_run_user "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 restart >/dev/null ||
		{ tail -20 "$dir/server.log" >&2; die "PostgreSQL did not restart (log: $dir/server.log)"; }
}

# cluster_stop DIR: stop the cluster in DIR if it runs.
cluster_stop() {
	as_run_user "$PG_BINDIR/pg_ctl" -D "$1/data" status >/dev/null 2>&1 &&
		as_run_user "$PG_BINDIR/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null
	return 0
}

# restart_on_new_library DIR: restart DIR's cluster if aimroute.so changed since it preloaded it.
restart_on_new_library() {
	# DIR/preloaded.sha256 holds the checksum of the library it preloaded.
	local dir=$1 so sum started installed record=$1/preloaded.sha256
	so=$("$PG_CONFIG" --pkglibdir)/aimroute.so
	sum=$(sha256sum <"$so")
	sum=${sum%% *}
	started=$(psql -X -d postgres -tAc "SELECT floor(extract(epoch FROM pg_postmaster_start_time()))::bigint")
	installed=$(stat -c %Y "$so")
	# "make install" rewrites the file on every run: a newer file with the
	# bytes recorded since this postmaster started is the same library.
	if [ "$installed" -ge "$started" ] &&
		! { [ -f "$record" ] && [ "$(stat -c %Y "$record")" -ge "$started" ] && [ "$(cat "$record")" = "$sum" ]; }; then
		say "Restarting PostgreSQL to preload the aimroute.so installed since it started"
		as_run_user "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 restart >/dev/null ||
			{ tail -20 "$dir/server.log" >&2; die "PostgreSQL did not restart (log: $dir/server.log)"; }
	fi
	echo "$sum" >"$record"
}

# sink_pid DIR NAME: print the pid of sink NAME (smtp or http) if DIR/NAME.pid names a live one.
sink_pid() {
	local pid
	pid=$(cat "$1/$2.pid" 2>/dev/null) || return 1
	case $pid in '' | *[!0-9]*) return 1 ;; esac
	# A stale pidfile may name a pid that another process now has.
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "test/servers/$2_sink.py" || return 1
	echo "$pid"
}

# sinks_stop DIR: stop the loopback SMTP and HTTP sinks whose pidfiles are in DIR.
sinks_stop() {
	local dir=$1 name pid pids=() i
	for name in smtp http; do
		if pid=$(sink_pid "$dir" "$name"); then
			kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
		fi
	done
	# Each takes a second or two to close; wait for both at once.
	for ((i = 0; i < 100 && ${#pids[@]} > 0; i++)); do # up to 10 s
		kill -0 "${pids[@]}" 2>/dev/null || break
		sleep 0.1
	done
	for pid in "${pids[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
	done
	rm -f "$dir/smtp.pid" "$dir/http.pid"
}

# sinks_start DIR SMTP_PORT HTTP_PORT: (re)start the loopback SMTP and HTTP sinks as RUN_USER.
sinks_start() {
	# Daemons on 127.0.0.1, fresh logs DIR/smtp.jsonl and DIR/http.jsonl,
	# pidfiles DIR/*.pid; ready once each prints "ready <port>".
	local dir=$1 name port pid i
	owned_dir "$dir"
	if sink_pid "$dir" smtp >/dev/null || sink_pid "$dir" http >/dev/null; then
		say "Stopping the delivery sinks of an earlier run"
	fi
	sinks_stop "$dir"
	for name in smtp http; do
		if [ "$name" = smtp ]; then port=$2; else port=$3; fi
		rm -f "$dir/$name.jsonl" "$dir/$name.out" "$dir/$name.err"
		# setsid: a session of its own, so the sink outlives this script;
		# it runs directly (no fork) in the background job, so $! is its pid.
		# shellcheck disable=SC2016 # the inner shell expands $1, $@ and $!
		pid=$(as_run_user /bin/bash -c 'out=$1; shift; setsid "$@" </dev/null >"$out.out" 2>"$out.err" & echo $!' \
			sink "$dir/$name" /usr/bin/python3 "$AIMROUTE_ROOT/test/servers/${name}_sink.py" \
			--port "$port" --log "$dir/$name.jsonl" --pidfile "$dir/$name.pid")
		for ((i = 0; ; i++)); do
			grep -q '^ready ' "$dir/$name.out" 2>/dev/null && break
			if ! kill -0 "$pid" 2>/dev/null; then
				cat "$dir/$name.err" >&2
				die "the $name sink did not start on 127.0.0.1:$port (a port in use? set AIMROUTE_${name^^}_PORT)"
			fi
			if [ "$i" -ge 150 ]; then # 15 s
				kill -TERM "$pid" 2>/dev/null || true
				die "the $name sink was not ready within 15 s (log: $dir/$name.err)"
			fi
			sleep 0.1
		done
	done
	say "Delivery sinks: SMTP on 127.0.0.1:$2, HTTP on 127.0.0.1:$3 (logs in $dir)"
}
