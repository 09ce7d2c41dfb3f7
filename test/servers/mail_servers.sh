#!/usr/bin/env bash
# test/servers/mail_servers.sh: the real mail servers of t/019_mail_servers.pl,
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
#                              (550, or 452: tried once, maximal_queue_lifetime
#                              = 0) makes Postfix mail a DSN to the envelope
#                              sender; mail to bounces(+anything)@oem.example
#                              is delivered by Postfix's virtual(8) into the
#                              maildir DIR/mail/bounces/Maildir, owned by
#                              RUN_USER.
#   DIR/env                    RELAY_PORT, DEALER_PORT, CA_FILE, MAILDIR,
#                              POSTFIX_LOG, as shell assignments.
# The ports: AIMROUTE_MAIL_BASE_PORT and the next one when set, else free
# ones.  RUN_USER as scripts/lib.sh picks it.
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
source "$AIMROUTE_ROOT/scripts/postfix.sh"

[ $# -eq 2 ] || die "usage: $0 start|stop DIR"
action=$1
DIR=$2

case $action in
stop)
	postfix_stop "$DIR/postfix"
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
else
	RELAY_PORT=$(free_port)
	DEALER_PORT=$(free_port)
fi

postfix_stop "$DIR/postfix"
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
	'maximal_queue_lifetime = 0' \
	'bounce_queue_lifetime = 0' \
	'delay_warning_time = 0' \
	'recipient_delimiter = +' \
	'virtual_mailbox_domains = oem.example' \
	"virtual_mailbox_base = $DIR/mail" \
	"virtual_mailbox_maps = texthash:$PF/etc/vmailbox" \
	"virtual_uid_maps = static:$uid" \
	"virtual_gid_maps = static:$gid" \
	'virtual_minimum_uid = 1'
postfix_start "$PF" "$RELAY_PORT"
# postfix_start's POSTFIX_PID is the master's; stop finds it by its pid file.

cat >"$DIR/env" <<-ENV
	RELAY_PORT=$RELAY_PORT
	DEALER_PORT=$DEALER_PORT
	CA_FILE=$DIR/tls/cert.pem
	MAILDIR=$DIR/mail/bounces/Maildir
	POSTFIX_LOG=$PF/maillog
ENV
chmod 644 "$DIR/env"
chmod 755 "$PF"
chmod 644 "$PF/maillog"
echo "mail servers: Postfix on 127.0.0.1:$RELAY_PORT (STARTTLS), dealers' server expected on 127.0.0.1:$DEALER_PORT; $DIR/env"
