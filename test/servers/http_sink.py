#!/usr/bin/python3
# test/servers/http_sink.py: a loopback HTTP receiver for aimroute's tests and demo.
#
# It stands in for a CRM or webhook endpoint.  Every request (but GET
# /health) is appended to a log file as one JSON line before it is answered.
# The first path segment picks the answer (see README.md beside this file):
# /fail 500, /notfound 404, /slow waits --stall-seconds then 200, /hang
# never answers (until the client hangs up), /flaky 500 twice per
# Idempotency-Key then 200, /status/NNN answers NNN, anything else 200
# "accepted".  Each request's log line also says how many connections and
# requests the sink had open at that moment.
#
# Usage: /usr/bin/python3 http_sink.py --port N --log FILE [--pidfile F]
#                                      [--stall-seconds S]
# --port 0 lets the kernel choose; "ready <port>" on stdout says which.

import argparse
import datetime
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def now_iso():
    """now_iso returns the current UTC time in ISO 8601."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class SinkServer(ThreadingHTTPServer):
    """SinkServer holds the log and the per-key state the handlers share."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, log_path, stall_seconds):
        super().__init__(address, SinkRequestHandler)
        self.stall_seconds = stall_seconds
        self.lock = threading.Lock()
        self.log_file = open(log_path, "a", encoding="utf-8")
        self.flaky_counts = {}
        self.connections = 0
        self.requests = 0

    def process_request_thread(self, request, client_address):
        """process_request_thread serves one connection, counted while it is open."""
        with self.lock:
            self.connections += 1
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.lock:
                self.connections -= 1

    def open_now(self, change):
        """open_now adds change to the requests in progress and returns (connections, requests)."""
        with self.lock:
            self.requests += change
            return self.connections, self.requests

    def log_event(self, record):
        """log_event appends one JSON line to the log, flushed at once."""
        line = json.dumps(record, ensure_ascii=False)
        with self.lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def flaky_seen(self, key):
        """flaky_seen counts one more request with this Idempotency-Key and returns the count."""
        with self.lock:
            self.flaky_counts[key] = self.flaky_counts.get(key, 0) + 1
            return self.flaky_counts[key]


class SinkRequestHandler(BaseHTTPRequestHandler):
    """SinkRequestHandler logs each request and answers by its path."""

    protocol_version = "HTTP/1.1"
    server_version = "aimroute-http-sink/1"

    def log_message(self, format, *args):
        """log_message is silenced: the JSON log is the record."""

    def read_body(self):
        """read_body returns the request body, by Content-Length or chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def reply(self, status, text):
        """reply sends a plain-text answer; a client that has gone away is ignored."""
        data = text.encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def decide(self, segment):
        """decide returns the status and text to answer for a first path segment."""
        if segment == "fail":
            return 500, "simulated failure"
        if segment == "notfound":
            return 404, "not found"
        if segment == "flaky":
            key = self.headers.get("Idempotency-Key", "")
            if self.server.flaky_seen(key) <= 2:
                return 500, "simulated flaky failure"
            return 200, "accepted"
        return 200, "accepted"

    def handle_any(self):
        """handle_any logs the request, then answers it (after a stall for /slow)."""
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.reply(400, "bad request body")
            self.close_connection = True
            return
        path = urlsplit(self.path).path
        segments = [s for s in path.split("/") if s]
        segment = segments[0] if segments else ""
        if self.command == "GET" and path == "/health":
            self.reply(200, "ok")
            return
        if segment == "status" and len(segments) > 1 and segments[1].isdigit() \
                and 200 <= int(segments[1]) <= 599:
            status, text = int(segments[1]), "status %s" % segments[1]
        else:
            status, text = self.decide(segment)
        text_body = body.decode("utf-8", "replace")
        try:
            parsed = json.loads(text_body) if text_body else None
        except ValueError:
            parsed = None
        connections, requests = self.server.open_now(1)
        try:
            self.server.log_event({
                "event": "request", "time": now_iso(), "method": self.command,
                "path": self.path, "headers": dict(self.headers.items()),
                "body": text_body, "json": parsed, "status": status,
                "connections": connections, "requests_open": requests,
            })
            if segment == "slow":
                time.sleep(self.server.stall_seconds)
            if segment == "hang":
                self.hang()
                return
            self.reply(status, text)
        finally:
            self.server.open_now(-1)

    def hang(self):
        """hang never answers: it waits until the client hangs up, then logs it."""
        started = time.monotonic()
        try:
            while self.connection.recv(4096):
                pass
        except OSError:
            pass
        self.close_connection = True
        self.server.log_event({
            "event": "hang_closed", "time": now_iso(), "path": self.path,
            "seconds": round(time.monotonic() - started, 3),
        })

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = handle_any


def main():
    """main parses the command line, listens on 127.0.0.1 and serves until SIGTERM."""
    parser = argparse.ArgumentParser(description="Loopback HTTP sink for aimroute tests.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--pidfile")
    parser.add_argument("--stall-seconds", type=float, default=60.0)
    args = parser.parse_args()

    try:
        server = SinkServer(("127.0.0.1", args.port), args.log, args.stall_seconds)
    except OSError as exc:
        print("http_sink: cannot start on 127.0.0.1:%d: %s" % (args.port, exc),
              file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    print("ready %d" % server.server_address[1], flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    if args.pidfile:
        try:
            os.unlink(args.pidfile)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
