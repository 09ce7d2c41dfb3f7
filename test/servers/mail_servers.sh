#!/usr/bin/env bash
# test/servers/mail_servers.sh: the real mail servers of t/020_mail_servers.pl,
# on loopback only, each in DIR and nowhere else.
#
#   mail_servers.sh start DIR   (as root: Postfix's master runs only as root)
#   mail_servers.sh stop DIR
#
# start writes:
#   DIR/tls/cert.pem, key.pem  a certificate for 127.0.0.1 (openssl, self-
#                              signed: the test trusts it as its CA through
#                              aimroute.tls_ca_file)
#   DIR/postfix/               Postfix (scripts/postfix.sh) as the OEM's relay:
#                              smtpd on RELAY_PORT offers STARTTLS with that
#                              certificate; every recipient outside
#                              oem.example is relayed to 127.0.0.1:DEALER_PORT,
#                              where the test runs test/servers/smtp_sink.py
#                              as the dealers' mail servers; a refusal there
#                              (550, 552: at once; 452: tried again every
#                              second or two for an hour, with a delay notice
#                              after a second) makes Postfix mail a DSN to
#                              the envelope sender; mail to
#                              bounces(+anything)@oem.example
#                              is delivered by Postfix's virtual(8) into the
#                              maildir DIR/mail/bounces/Maildir, owned by
#                              RUN_USER.
#   DIR/dovecot/               Dovecot as the bounce mailbox: IMAP on
#                              IMAP_PORT (STARTTLS offered), IMAPS on
#                              IMAPS_PORT, both on 127.0.0.1 with that
#                              certificate; one user, IMAP_USER with
#                              IMAP_PASSWORD, whose INBOX is that maildir.
#   DIR/env                    RELAY_PORT, DEALER_PORT, IMAP_PORT, IMAPS_PORT,
#                              IMAP_USER, IMAP_PASSWORD, CA_FILE, MAILDIR,
#                              POSTFIX_LOG, DOVECOT_LOG, as shell assignments.
# The ports: AIMROUTE_MAIL_BASE_PORT and the next three when set, else free
# ones.  RUN_USER as scripts/lib.sh picks it.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
source "$AIMROUTE_ROOT/scripts/postfix.sh"

# dovecot_stop: stops the Dovecot of DIR, by the pid file it wrote.
dovecot_stop() {
	local pid i
	[ -f "$DIR/dovecot/run/master.pid" ] || return 0
	pid=$(tr -d ' ' <"$DIR/dovecot/run/master.pid")
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	rm -f "$DIR/dovecot/run/master.pid"
}

[ $# -eq 2 ] || die "usage: $0 start|stop DIR"
action=$1
DIR=$2

case $action in
stop)
	postfix_stop "$DIR/postfix"
	dovecot_stop
	exit 0
	;;
start) ;;
*) die "usage: $0 start|stop DIR" ;;
esac

[ "$(id -u)" = 0 ] || die "$0 start must run as root: Postfix's master refuses any other user"
pick_run_user
if [ -n "${AIMROUTE_MAIL_BASE_PORT:-}" ]; then
	RELAY_PORT=$AIMROUTE_MAIL_BASE_PORT
	DEALER_PORT=$((AIMROUTE_MAIL_BASE_PORT + 1))
	IMAP_PORT=$((AIMROUTE_MAIL_BASE_PORT + 2))
	IMAPS_PORT=$((AIMROUTE_MAIL_BASE_PORT + 3))
else
	RELAY_PORT=$(free_port)
	DEALER_PORT=$(free_port)
	IMAP_PORT=$(free_port)
	IMAPS_PORT=$(free_port)
fi
IMAP_USER=bounces
IMAP_PASSWORD=test-only-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')

postfix_stop "$DIR/postfix"
dovecot_stop
rm -rf "$DIR"
mkdir -p "$DIR/tls" "$DIR/mail"
chmod 755 "$DIR" "$DIR/tls"

# The certificate: for the IP address the worker connects to.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
	-addext "subjectAltName = IP:127.0.0.1" \
	-keyout "$DIR/tls/key.pem" -out "$DIR/tls/cert.pem" 2>/dev/null
chmod 644 "$DIR/tls/cert.pem"
chmod 600 "$DIR/tls/key.pem"

# The bounce mailbox's maildir, RUN_USER's: virtual(8) delivers as that user.
install -d -o "$RUN_USER" -g "$(id -gn "$RUN_USER")" -m 755 "$DIR/mail/bounces"
uid=$(id -u "$RUN_USER")
gid=$(id -g "$RUN_USER")

PF=$DIR/postfix
postfix_setup "$PF" "$RELAY_PORT"
printf 'bounces@oem.example bounces/Maildir/\n' >"$PF/etc/vmailbox"
postfix_set "$PF" \
	"relayhost = [127.0.0.1]:$DEALER_PORT" \
	'smtpd_relay_restrictions = permit_mynetworks, reject' \
	"smtpd_tls_cert_file = $DIR/tls/cert.pem" \
	"smtpd_tls_key_file = $DIR/tls/key.pem" \
	'smtpd_tls_security_level = may' \
	'smtpd_tls_received_header = yes' \
	'smtpd_tls_loglevel = 1' \
	'smtp_tls_security_level = none' \
	'maximal_queue_lifetime = 1h' \
	'bounce_queue_lifetime = 1h' \
	'delay_warning_time = 1s' \
	'queue_run_delay = 1s' \
	'minimal_backoff_time = 1s' \
	'maximal_backoff_time = 2s' \
	'recipient_delimiter = +' \
	'virtual_mailbox_domains = oem.example' \
	"virtual_mailbox_base = $DIR/mail" \
	"virtual_mailbox_maps = texthash:$PF/etc/vmailbox" \
	"virtual_uid_maps = static:$uid" \
	"virtual_gid_maps = static:$gid" \
	'virtual_minimum_uid = 1'
postfix_start "$PF" "$RELAY_PORT"
# postfix_start's POSTFIX_PID is the master's; stop finds it by its pid file.

# Dovecot: the bounce mailbox over IMAP and IMAPS, loopback only.
command -v /usr/sbin/dovecot >/dev/null ||
	die "Dovecot is not installed: apt-get install -y dovecot-imapd (its own service is not used)"
DC=$DIR/dovecot
mkdir -p "$DC/run"
chmod 755 "$DC"
printf '%s:{PLAIN}%s::::::\n' "$IMAP_USER" "$IMAP_PASSWORD" >"$DC/users"
chown dovecot "$DC/users"
chmod 600 "$DC/users"
cat >"$DC/dovecot.conf" <<-CONF
	# Written by test/servers/mail_servers.sh: the bounce mailbox of the tests.
	base_dir = $DC/run
	state_dir = $DC/run
	log_path = $DC/dovecot.log
	info_log_path = $DC/dovecot.log
	protocols = imap
	listen = 127.0.0.1
	ssl = yes
	ssl_cert = <$DIR/tls/cert.pem
	ssl_key = <$DIR/tls/key.pem
	disable_plaintext_auth = no
	auth_mechanisms = plain login
	first_valid_uid = $uid
	last_valid_uid = $uid
	mail_location = maildir:$DIR/mail/bounces/Maildir
	passdb {
	  driver = passwd-file
	  args = scheme=PLAIN username_format=%u $DC/users
	}
	userdb {
	  driver = static
	  args = uid=$uid gid=$gid home=$DIR/mail/bounces
	}
	service imap-login {
	  inet_listener imap {
	    address = 127.0.0.1
	    port = $IMAP_PORT
	  }
	  inet_listener imaps {
	    address = 127.0.0.1
	    port = $IMAPS_PORT
	    ssl = yes
	  }
	}
	service auth {
	  unix_listener auth-userdb {
	    mode = 0600
	  }
	}
CONF
/usr/sbin/dovecot -c "$DC/dovecot.conf"
for ((i = 0; ; i++)); do
	ss -ltn "sport = :$IMAPS_PORT" | grep -q LISTEN && ss -ltn "sport = :$IMAP_PORT" | grep -q LISTEN && break
	[ "$i" -lt 100 ] || die "Dovecot did not start: $(tail -5 "$DC/dovecot.log")"
	sleep 0.1
done

cat >"$DIR/env" <<-ENV
	RELAY_PORT=$RELAY_PORT
	DEALER_PORT=$DEALER_PORT
	IMAP_PORT=$IMAP_PORT
	IMAPS_PORT=$IMAPS_PORT
	IMAP_USER=$IMAP_USER
	IMAP_PASSWORD=$IMAP_PASSWORD
	CA_FILE=$DIR/tls/cert.pem
	MAILDIR=$DIR/mail/bounces/Maildir
	POSTFIX_LOG=$PF/maillog
	DOVECOT_LOG=$DC/dovecot.log
ENV
# The password is the test's: for RUN_USER, who runs the test, only.
chown "$RUN_USER" "$DIR/env"
chmod 600 "$DIR/env"
chmod 755 "$PF"
chmod 644 "$PF/maillog" "$DC/dovecot.log"
echo "mail servers: Postfix on 127.0.0.1:$RELAY_PORT (STARTTLS), dealers' server expected on 127.0.0.1:$DEALER_PORT," \
	"Dovecot on 127.0.0.1:$IMAP_PORT (IMAP) and :$IMAPS_PORT (IMAPS); $DIR/env"
