#!/usr/bin/python3
"""A next-hop SMTP server for the end-to-end tests: Debian's aiosmtpd on loopback.

Run it with Debian's interpreter (/usr/bin/python3), which is where python3-aiosmtpd
lives; the pyenv python3 on PATH does not have it.

    /usr/bin/python3 tests/peers/sink.py --dir DIR [--host 127.0.0.1] [--port 0]
        [--bind-timeout SECONDS] [--reply-mail "..."] [--reply-rcpt "..."]
        [--reply-data "..."] [--delay-data SECONDS]

It binds before printing `SINK_PORT <port>` (flushed), so a test that has read that line
can connect. Port 0 (the default) takes any free port; the tests pass a port reserved for
them, so that a restart gets the same one back. SO_REUSEADDR lets a restart bind while
connections of the stopped sink are in TIME_WAIT; if the port is in use, the bind is
retried for --bind-timeout seconds (default 0), and then the sink prints
`SINK_BIND_FAILED <error>` (flushed) and exits with status 2, so the test can try another.

Storage, one message = two files, written so that a reader never sees half a message:
    DIR/new/<name>.env   the envelope: `MAIL FROM:<addr>` then one `RCPT TO:<addr>` a line
    DIR/new/<name>.eml   the message data exactly as received, dot-unstuffed
The .env is renamed into place before the .eml, so counting `*.eml` counts whole messages.
Names sort in arrival order.

Fault modes: DIR/faults/{mail,rcpt,data}, if present, hold the reply to give instead of
accepting (e.g. `450 4.3.0 try later`); at start the --reply-* options write those files
(and remove the ones not given, so a restart without options is a normal sink). A test switches the sink back to normal by deleting them, without a restart and so
without giving up the port. A data fault is given after the whole message was read.

DIR/events.log gets one line per MAIL, RCPT and DATA reply the sink gives (`DATA 450 ...`),
so a test can wait until a delivery attempt has happened.
"""

import argparse
import asyncio
import errno
import itertools
import logging
import os
import socket
import sys
import time

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, directory, delay_data):
        self.dir = directory
        self.new = os.path.join(directory, "new")
        self.tmp = os.path.join(directory, "tmp")
        self.faults = os.path.join(directory, "faults")
        for d in (self.new, self.tmp, self.faults):
            os.makedirs(d, exist_ok=True)
        self.delay_data = delay_data
        self.seq = itertools.count(1)
        self.events = open(os.path.join(directory, "events.log"), "a", buffering=1)

    def fault(self, verb):
        """The reply configured for this verb, or None to accept."""
        try:
            with open(os.path.join(self.faults, verb)) as f:
                reply = f.read().strip()
        except FileNotFoundError:
            return None
        return reply or None

    def event(self, verb, reply):
        self.events.write(f"{verb} {reply}\n")

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self.fault("mail")
        if reply is None:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            reply = "250 OK"
        self.event("MAIL", reply)
        return reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.fault("rcpt")
        if reply is None:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            reply = "250 OK"
        self.event("RCPT", reply)
        return reply

    async def handle_DATA(self, server, session, envelope):
        if self.delay_data:
            await asyncio.sleep(self.delay_data)
        reply = self.fault("data")
        if reply is not None:
            self.event("DATA", reply)
            return reply
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self.seq):08d}"
        # aiosmtpd gives the null sender as "<>".
        sender = "" if envelope.mail_from in ("<>", None) else envelope.mail_from
        env = "".join(
            [f"MAIL FROM:<{sender}>\n"]
            + [f"RCPT TO:<{r}>\n" for r in envelope.rcpt_tos]
        )
        self._write(name + ".env", env.encode("utf-8", "surrogateescape"))
        self._write(name + ".eml", envelope.original_content)
        reply = "250 OK stored as " + name
        self.event("DATA", reply)
        return reply

    def _write(self, name, data):
        tmp = os.path.join(self.tmp, name)
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(self.new, name))


def bind(host, port, timeout):
    """A listening socket on host:port; exits with SINK_BIND_FAILED if it stays in use."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(512)
            return sock
        except OSError as e:
            sock.close()
            if e.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                print(f"SINK_BIND_FAILED {host}:{port}: {e}", flush=True)
                sys.exit(2)
        time.sleep(0.05)


async def serve(args):
    sink = Sink(args.dir, args.delay_data)
    for verb, reply in (("mail", args.reply_mail), ("rcpt", args.reply_rcpt), ("data", args.reply_data)):
        path = os.path.join(sink.faults, verb)
        if reply:
            with open(path, "w") as f:
                f.write(reply + "\n")
        elif os.path.exists(path):
            os.remove(path)

    sock = bind(args.host, args.port, args.bind_timeout)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        # A fixed hostname: aiosmtpd would otherwise call getfqdn(), slow without DNS.
        lambda: SMTP(
            sink,
            hostname="sink.test",
            decode_data=False,
            data_size_limit=args.max_size,
            enable_SMTPUTF8=True,
        ),
        sock=sock,
    )
    print(f"SINK_PORT {sock.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--bind-timeout", type=float, default=0.0, help="seconds to retry a bind to a port in use")
    p.add_argument("--reply-mail", help='reply to every MAIL, e.g. "451 4.3.0 try later"')
    p.add_argument("--reply-rcpt", help='reply to every RCPT, e.g. "550 5.1.1 no such user"')
    p.add_argument("--reply-data", help='reply after every DATA, e.g. "554 5.7.1 rejected"')
    p.add_argument("--delay-data", type=float, default=0.0, help="seconds to wait before answering DATA")
    p.add_argument("--max-size", type=int, default=64 * 1024 * 1024)
    args = p.parse_args()
    if not args.host.startswith("127."):
        sys.exit("sink.py: refusing to listen outside 127.0.0.0/8")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
