#!/usr/bin/env python3
"""bench/hang_listener.py: a loopback endpoint that never answers.

Usage: hang_listener.py --port N [--pidfile FILE]

Listens on 127.0.0.1:N, accepts every connection, reads and discards what
the client sends, and never writes a byte back, until the client hangs up
or the listener is stopped (SIGTERM or SIGINT).  It stands for a dealer's
CRM endpoint that hangs: bench/run.sh points one CRM integration at it to
measure how long the other messages wait meanwhile.  Prints "ready <port>"
once listening.  Standard library only.
"""

import argparse
import os
import selectors
import signal
import socket
import sys


def main():
    """main runs the listener until it is stopped."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pidfile")
    args = parser.parse_args()

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", args.port))
    except OSError as e:
        print(f"hang_listener: cannot listen on 127.0.0.1:{args.port}: {e}", file=sys.stderr)
        sys.exit(2)
    server.listen(128)
    server.setblocking(False)
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")

    def stop(signum, frame):
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except OSError:
                pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)
    print(f"ready {server.getsockname()[1]}", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is server:
                try:
                    conn, _ = server.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(conn)
                conn.close()


if __name__ == "__main__":
    main()
