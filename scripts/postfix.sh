# scripts/postfix.sh: Debian's Postfix in a directory of its own, for the
# benchmark (bench/delivery.sh: a sink that discards) and the tests
# (test/servers/mail_servers.sh: the OEM's relay, with STARTTLS, that
# bounces).  Sourced after scripts/lib.sh; run as root: Postfix's master
# refuses to run as any other user (it drops to mail_owner itself).
#
#   postfix_setup DIR PORT   config_directory DIR/etc, queue_directory
#                            DIR/spool, data_directory DIR/data; smtpd on
#                            127.0.0.1:PORT only; no local delivery, no
#                            relaying for anyone outside 127.0.0.0/8.
#   postfix_set DIR 'name = value' ...   more main.cf settings (postconf -e)
#   postfix_start DIR PORT   the master in the foreground of a background
#                            process (its log in DIR/maillog); sets
#                            POSTFIX_PID and waits until PORT listens.
#   postfix_stop DIR         stops the master postfix_start started.
# The system's Postfix (/etc/postfix, its service) is neither used nor
# needed.

POSTFIX_PID=

postfix_setup() {
	local dir=$1 port=$2 d
	command -v /usr/lib/postfix/sbin/master >/dev/null ||
		die "Postfix is not installed: apt-get install -y postfix (its own service is not used)"
	mkdir -p "$dir/etc" "$dir/data" "$dir/spool"
	chmod 755 "$dir" "$dir/etc"
	cat >"$dir/etc/main.cf" <<-CF
		# Written by scripts/postfix.sh: a loopback Postfix of its own.
		compatibility_level = 3.6
		config_directory = $dir/etc
		queue_directory = $dir/spool
		data_directory = $dir/data
		mail_owner = postfix
		setgid_group = postdrop
		myhostname = relay.aimroute.test
		inet_interfaces = loopback-only
		inet_protocols = ipv4
		mynetworks = 127.0.0.0/8
		mydestination =
		local_recipient_maps =
		relay_domains =
		alias_maps =
		alias_database =
		smtpd_relay_restrictions = permit_mynetworks, reject
		smtpd_recipient_restrictions = permit_mynetworks, reject
		smtpd_peername_lookup = no
		smtp_dns_support_level = disabled
		in_flow_delay = 0
		smtpd_error_sleep_time = 0
		maillog_file = /dev/stdout
	CF
	cat >"$dir/etc/master.cf" <<-CF
		127.0.0.1:$port inet n - n - - smtpd
		pickup    unix  n - n 60 1 pickup
		cleanup   unix  n - n - 0 cleanup
		qmgr      unix  n - n 300 1 qmgr
		rewrite   unix  - - n - - trivial-rewrite
		bounce    unix  - - n - 0 bounce
		defer     unix  - - n - 0 bounce
		trace     unix  - - n - 0 bounce
		verify    unix  - - n - 1 verify
		flush     unix  n - n 1000 0 flush
		proxymap  unix  - - n - - proxymap
		showq     unix  n - n - - showq
		error     unix  - - n - - error
		retry     unix  - - n - - error
		discard   unix  - - n - - discard
		smtp      unix  - - n - - smtp
		relay     unix  - - n - - smtp
		virtual   unix  - n n - - virtual
		tlsmgr    unix  - - n 1000? 1 tlsmgr
		anvil     unix  - - n - 1 anvil
		scache    unix  - - n - 1 scache
		postlog   unix-dgram n - n - 1 postlogd
	CF
	# The queue's directories, as postfix-script would make them.
	for d in active bounce corrupt defer deferred flush hold incoming private saved trace pid; do
		install -d -o postfix -m 700 "$dir/spool/$d"
	done
	install -d -o postfix -g postdrop -m 730 "$dir/spool/maildrop"
	install -d -o postfix -g postdrop -m 710 "$dir/spool/public"
	chown postfix "$dir/data"
}

postfix_set() {
	local dir=$1
	shift
	/usr/sbin/postconf -c "$dir/etc" -e "$@"
}

postfix_start() {
	local dir=$1 port=$2 i
	# The master in the foreground (-d): no syslog needed, its log on stdout.
	setsid /usr/lib/postfix/sbin/master -c "$dir/etc" -d >"$dir/maillog" 2>&1 &
	POSTFIX_PID=$!
	for ((i = 0; ; i++)); do
		ss -ltn "sport = :$port" | grep -q LISTEN && break
		[ "$i" -lt 100 ] || die "Postfix did not start: $(tail -5 "$dir/maillog")"
		sleep 0.1
	done
}

postfix_stop() {
	local dir=$1 pid i
	pid=$POSTFIX_PID
	[ -n "$pid" ] || [ ! -f "$dir/spool/pid/master.pid" ] || pid=$(tr -d ' ' <"$dir/spool/pid/master.pid")
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	POSTFIX_PID=
}
