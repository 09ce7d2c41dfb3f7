#!/usr/bin/python3
# test/servers/smtp_sink.py: a loopback SMTP server for aimroute's tests and demo.
#
# It accepts every message the delivery worker sends and appends one JSON
# line per event to a log file, so a test can check what arrived.  The
# recipient's local part picks the reply to RCPT (see README.md beside this
# file): "hardbounce" 550, "full552" 552, "full" 452, "tempfail" 451, anything
# else 250.  A message to a local part containing "stall" is logged, then the
# reply to DATA waits --stall-seconds, once per Message-ID.
#
# Usage: /usr/bin/python3 smtp_sink.py --port N --log FILE [--pidfile F]
#                                      [--stall-seconds S]
# --port 0 lets the kernel choose; "ready <port>" on stdout says which.

import argparse
import asyncio
import datetime
import email.parser
import email.policy
import json
import os
import signal
import sys
import threading

from aiosmtpd.smtp import SMTP

# Reply to RCPT per local-part marker, in the order they are checked.
RCPT_RULES = [
    ("hardbounce", 550, "550 5.1.1 recipient not found"),
    ("full552", 552, "552 5.2.2 mailbox full"),
    ("full", 452, "452 4.2.2 mailbox full"),
    ("tempfail", 451, "451 4.3.0 temporary failure"),
]


def now_iso():
    """now_iso returns the current UTC time in ISO 8601."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def clean(value):
    """clean makes a value JSON-safe, turning escaped raw bytes back into UTF-8 text."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


class JsonLog:
    """JsonLog appends one JSON object per line to a file, flushed at once."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8")

    def write(self, event, **fields):
        """write logs one event with the current time."""
        record = {"event": event, "time": now_iso()}
        record.update(fields)
        line = json.dumps(clean(record), ensure_ascii=False)
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()


def part_text(part):
    """part_text returns a MIME part's content as text: its charset, else UTF-8."""
    raw = part.get_payload(decode=True) or b""
    charset = part.get_content_charset()
    for candidate in (charset, "utf-8"):
        if candidate:
            try:
                return raw.decode(candidate)
            except (LookupError, UnicodeDecodeError):
                pass
    return raw.decode("utf-8", "replace")


def describe_message(raw):
    """describe_message parses raw message bytes into the fields the log records."""
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    headers = {}
    for name, value in msg.items():
        headers.setdefault(name, str(value))
    parts = []
    body = None
    if msg.is_multipart():
        for part in msg.walk():
            if part.is_multipart():
                continue
            ctype = part.get_content_type()
            info = {"content_type": ctype,
                    "filename": part.get_filename(),
                    "disposition": part.get_content_disposition()}
            if part.get_content_maintype() == "text" or ctype.endswith(("xml", "json")):
                info["content"] = part_text(part)
                if body is None and part.get_content_maintype() == "text" \
                        and info["disposition"] != "attachment":
                    body = info["content"]
            else:
                info["size"] = len(part.get_payload(decode=True) or b"")
            parts.append(info)
    else:
        body = part_text(msg)
    message_id = msg.get("Message-ID")
    return {
        "message_id": str(message_id).strip() if message_id is not None else None,
        "subject": str(msg.get("Subject", "")),
        "headers": headers,
        "body": body,
        "content_type": msg.get_content_type(),
        "parts": parts,
        "size": len(raw),
    }


class SinkHandler:
    """SinkHandler is the aiosmtpd handler: it answers RCPT by address and logs messages."""

    def __init__(self, log, stall_seconds):
        self.log = log
        self.stall_seconds = stall_seconds
        self.stalled_ids = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        """handle_RCPT accepts or refuses one recipient by its local part."""
        local = address.rsplit("@", 1)[0].lower()
        for marker, code, reply in RCPT_RULES:
            if marker in local:
                self.log.write("rcpt_refused", mail_from=envelope.mail_from,
                               rcpt=address, code=code, reply=reply)
                return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        """handle_DATA logs the message, then stalls the reply if a recipient asks for it."""
        try:
            fields = describe_message(envelope.original_content or envelope.content)
        except Exception as exc:  # never let a strange message kill the sink
            fields = {"message_id": None, "subject": None, "headers": {},
                      "body": (envelope.original_content or b"").decode("utf-8", "replace"),
                      "content_type": None, "parts": [], "parse_error": repr(exc)}
        wants_stall = any("stall" in r.rsplit("@", 1)[0].lower() for r in envelope.rcpt_tos)
        message_id = fields["message_id"]
        stall = wants_stall and (message_id is None or message_id not in self.stalled_ids)
        self.log.write("message", mail_from=envelope.mail_from,
                       rcpt_tos=list(envelope.rcpt_tos), smtputf8=envelope.smtp_utf8,
                       stalled=stall, **fields)
        if stall:
            if message_id is not None:
                self.stalled_ids.add(message_id)
            self.log.write("stall", message_id=message_id, seconds=self.stall_seconds,
                           rcpt_tos=list(envelope.rcpt_tos))
            try:
                await asyncio.sleep(self.stall_seconds)
            except asyncio.CancelledError:
                self.log.write("stall_aborted", message_id=message_id)
                raise
        return "250 OK message accepted"


async def serve(args):
    """serve listens on 127.0.0.1 until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    handler = SinkHandler(JsonLog(args.log), args.stall_seconds)

    def factory():
        return SMTP(handler, hostname="smtp-sink.localhost", enable_SMTPUTF8=True,
                    decode_data=False, loop=loop)

    server = await loop.create_server(factory, host="127.0.0.1", port=args.port)
    port = server.sockets[0].getsockname()[1]
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready %d" % port, flush=True)
    await stop.wait()
    server.close()
    if args.pidfile:
        try:
            os.unlink(args.pidfile)
        except OSError:
            pass


def main():
    """main parses the command line and runs the server."""
    parser = argparse.ArgumentParser(description="Loopback SMTP sink for aimroute tests.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--pidfile")
    parser.add_argument("--stall-seconds", type=float, default=60.0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print("smtp_sink: cannot start on 127.0.0.1:%d: %s" % (args.port, exc),
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
