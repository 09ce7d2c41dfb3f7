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

set -euo pipefail

AIMROUTE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BINDIR=${AIMROUTE_PG_BINDIR:-/usr/lib/postgresql/15/bin}
PG_CONFIG=$PG_BINDIR/pg_config
[ -x "$PG_CONFIG" ] || PG_CONFIG=/usr/bin/pg_config

AIMROUTE_PACKAGES=(
	build-essential clang-format
	postgresql-15 postgresql-server-dev-15 postgresql-15-postgis-3
	postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl libipc-run-perl
	libcurl4-openssl-dev zlib1g-dev python3-aiosmtpd libxml2-utils
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
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# Debian's postgresql-common starts a "main" cluster on 5432; ours are
	# separate and do not need it, but leave it alone: it may be the user's.
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
