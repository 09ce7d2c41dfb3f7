#!/usr/bin/env python3
"""bench/fast_smtp_sink.py: a loopback SMTP server that accepts and discards, fast.

Usage: fast_smtp_sink.py --port N --log FILE [--pidfile FILE]

The delivery measure of bench/run.sh needs a mail server that is not the
bottleneck.  test/servers/smtp_sink.py (aiosmtpd, and a full parse of each
message for the tests) uses more than a millisecond of CPU a message, so
it saturates one core below 1,000 messages a second.  This one speaks just
the SMTP a client needs (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT),
accepts every recipient, and parses nothing but the Message-ID header.  It
appends one JSON line per message to the log, in the fields of
test/servers/smtp_sink.py that the benchmark reads: {"event": "message",
"mail_from", "rcpt_tos", "message_id", "size"}.

Listens on 127.0.0.1 only; prints "ready <port>" once listening; SIGTERM or
SIGINT stops it.  Standard library only.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import sys

MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*?)\r\n(?![ \t])", re.IGNORECASE | re.MULTILINE | re.DOTALL)
EHLO_REPLY = b"250-fast-sink.localhost\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 104857600\r\n"


class SinkProtocol(asyncio.Protocol):
    """SinkProtocol is one SMTP session: commands line by line, then the message data."""

    def __init__(self, log_fd):
        self.log_fd = log_fd
        self.transport = None
        self.buffer = b""
        self.in_data = False
        self.mail_from = None
        self.rcpt_tos = []

    def connection_made(self, transport):
        """connection_made greets the client."""
        self.transport = transport
        transport.write(b"220 fast-sink.localhost ESMTP\r\n")

    def data_received(self, data):
        """data_received handles every complete command or message in the buffer."""
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            if self.in_data:
                if not self.take_message():
                    return
            else:
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    return
                line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
                self.command(line)

    def take_message(self):
        """take_message logs and acknowledges a message once its final dot has come."""
        if self.buffer.startswith(b".\r\n"):
            raw, rest = b"", self.buffer[3:]
        else:
            end = self.buffer.find(b"\r\n.\r\n")
            if end < 0:
                return False
            raw, rest = self.buffer[:end + 2], self.buffer[end + 5:]
        self.buffer = rest
        self.in_data = False
        headers = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        found = MESSAGE_ID.search(headers)
        entry = {
            "event": "message",
            "mail_from": self.mail_from,
            "rcpt_tos": self.rcpt_tos,
            "message_id": found.group(1).strip().decode("utf-8", "replace") if found else None,
            "size": len(raw),
        }
        os.write(self.log_fd, (json.dumps(entry) + "\n").encode())
        self.mail_from, self.rcpt_tos = None, []
        self.transport.write(b"250 OK message accepted\r\n")
        return True

    def command(self, line):
        """command answers one SMTP command."""
        verb = line[:4].upper()
        if verb == b"EHLO":
            self.transport.write(EHLO_REPLY)
        elif verb == b"HELO":
            self.transport.write(b"250 fast-sink.localhost\r\n")
        elif verb == b"MAIL":
            self.mail_from = address(line)
            self.rcpt_tos = []
            self.transport.write(b"250 OK\r\n")
        elif verb == b"RCPT":
            self.rcpt_tos.append(address(line))
            self.transport.write(b"250 OK\r\n")
        elif verb == b"DATA":
            self.in_data = True
            self.transport.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        elif verb == b"RSET":
            self.mail_from, self.rcpt_tos = None, []
            self.transport.write(b"250 OK\r\n")
        elif verb == b"NOOP":
            self.transport.write(b"250 OK\r\n")
        elif verb == b"QUIT":
            self.transport.write(b"221 Bye\r\n")
            self.transport.close()
        else:
            self.transport.write(b"502 Command not implemented\r\n")

    def connection_lost(self, exc):
        """connection_lost forgets the transport."""
        self.transport = None


def address(line):
    """address returns the <...> of a MAIL FROM or RCPT TO line, as text."""
    start, end = line.find(b"<"), line.find(b">")
    if start < 0 or end < start:
        return line.split(b":", 1)[-1].strip().decode("utf-8", "replace")
    return line[start + 1:end].decode("utf-8", "replace")


async def serve(args):
    """serve listens on 127.0.0.1 until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    log_fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    server = await loop.create_server(lambda: SinkProtocol(log_fd), host="127.0.0.1", port=args.port)
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready %d" % server.sockets[0].getsockname()[1], flush=True)
    await stop.wait()
    server.close()
    os.close(log_fd)
    if args.pidfile:
        try:
            os.unlink(args.pidfile)
        except OSError:
            pass


def main():
    """main parses the command line and runs the server."""
    parser = argparse.ArgumentParser(description="Fast loopback SMTP sink for bench/run.sh.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--pidfile")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except OSError as e:
        print(f"fast_smtp_sink: cannot listen on 127.0.0.1:{args.port}: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
