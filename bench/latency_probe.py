#!/usr/bin/python3
"""Time-to-250 probe for bench/relay.

smtp-source reports no per-message latency, so while it loads a server this probe sends
one small message every --interval seconds over one connection (reconnecting every
--per-connection messages) and records, for each, the time from writing the final
".\\r\\n" to reading the 250: the time the server takes to make the message durable and
say so. Runs until SIGTERM/SIGINT or until --stop-file exists, then writes one latency
(seconds) per line to --out and prints a summary line:

    PROBE sent=N failed=F p50_ms=.. p99_ms=.. max_ms=..

Standard library only; loopback only.
"""

import argparse
import os
import signal
import socket
import sys
import time

stop = False


def on_signal(signum, frame):
    global stop
    stop = True


class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.expect(220)
        self.cmd(b"EHLO probe.test", 250)

    def reply(self):
        """Reads one (possibly multi-line) reply; returns its code."""
        while True:
            while b"\r\n" not in self.buf:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("connection closed")
                self.buf += data
            line, self.buf = self.buf.split(b"\r\n", 1)
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), line

    def expect(self, code):
        got, line = self.reply()
        if got != code:
            raise RuntimeError(f"want {code}, got {line!r}")

    def cmd(self, line, code):
        self.sock.sendall(line + b"\r\n")
        self.expect(code)

    def send(self, sender, rcpt, body):
        self.cmd(b"MAIL FROM:<" + sender + b">", 250)
        self.cmd(b"RCPT TO:<" + rcpt + b">", 250)
        self.cmd(b"DATA", 354)
        self.sock.sendall(body)
        t0 = time.perf_counter()
        self.sock.sendall(b".\r\n")
        self.expect(250)
        return time.perf_counter() - t0

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.sock.close()
        except OSError:
            pass


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--from", dest="sender", default="probe@example.com")
    p.add_argument("--to", default="probe@example.com")
    p.add_argument("--interval", type=float, default=0.005, help="seconds between messages")
    p.add_argument("--per-connection", type=int, default=200)
    p.add_argument("--out", required=True)
    p.add_argument("--stop-file")
    args = p.parse_args()
    if not args.host.startswith("127."):
        sys.exit("latency_probe.py: loopback only")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    latencies = []
    failed = 0
    conn = None
    n_on_conn = 0
    seq = 0
    while not stop and not (args.stop_file and os.path.exists(args.stop_file)):
        seq += 1
        body = (
            f"From: <{args.sender}>\r\nTo: <{args.to}>\r\nSubject: latency probe {seq}\r\n"
            f"Message-ID: <probe-{os.getpid()}-{seq}@probe.test>\r\n\r\nprobe {seq}\r\n"
        ).encode()
        try:
            if conn is None or n_on_conn >= args.per_connection:
                if conn is not None:
                    conn.close()
                conn = Conn(args.host, args.port)
                n_on_conn = 0
            latencies.append(conn.send(args.sender.encode(), args.to.encode(), body))
            n_on_conn += 1
        except (OSError, RuntimeError, ConnectionError) as e:
            failed += 1
            print(f"probe: {e}", file=sys.stderr)
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.1)
        time.sleep(args.interval)
    if conn is not None:
        conn.close()

    with open(args.out, "w") as f:
        f.writelines(f"{v:.6f}\n" for v in latencies)
    s = sorted(latencies)
    print(
        f"PROBE sent={len(latencies)} failed={failed} "
        f"p50_ms={percentile(s, 50) * 1000:.2f} p99_ms={percentile(s, 99) * 1000:.2f} "
        f"max_ms={(s[-1] if s else float('nan')) * 1000:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
