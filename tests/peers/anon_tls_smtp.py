#!/usr/bin/python3
"""An SMTP server whose STARTTLS offers only anonymous ciphers and has no certificate.

This is scenario 4 of docs/appliance.md ("no certificate from server"): the peer a `tlsverify` must
explain. Debian's aiosmtpd; run it with /usr/bin/python3 (where python3-aiosmtpd lives).

    /usr/bin/python3 tests/peers/anon_tls_smtp.py [--host 127.0.0.1] [--port 0]
        [--hostname anon.test]

The TLS context loads no certificate, allows at most TLS 1.2 (TLS 1.3 has no anonymous
suites) and only `aNULL:@SECLEVEL=0`. `openssl s_client -starttls smtp -tls1_2 -cipher
'aNULL:@SECLEVEL=0'` then negotiates AECDH-AES256-SHA with "No peer certificate
available"; a client that requires a certificate (every rustls client) shares no cipher
with it, and the handshake fails. (OpenSSL queues a handshake_failure alert, but asyncio
closes the connection without sending it: the client sees the connection close right
after its ClientHello.)

It binds before printing `ANON_TLS_SMTP_PORT <port>` (flushed), so a test that has read
that line can connect. Mail is accepted and thrown away.

It listens on loopback, or on an address of the tests' private network namespaces
(10.213.0.0/16, a veth pair that ends inside the machine), never on a real network.
"""

import argparse
import asyncio
import logging
import socket
import ssl
import sys

from aiosmtpd.smtp import SMTP


class Discard:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK discarded"


def anonymous_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("aNULL:@SECLEVEL=0")
    return ctx


async def serve(args):
    ctx = anonymous_context()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(64)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        # A fixed hostname: aiosmtpd would otherwise call getfqdn(), slow without DNS.
        lambda: SMTP(Discard(), hostname=args.hostname, tls_context=ctx, require_starttls=False),
        sock=sock,
    )
    print(f"ANON_TLS_SMTP_PORT {sock.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--hostname", default="anon.test")
    args = p.parse_args()
    if not (args.host.startswith("127.") or args.host.startswith("10.213.")):
        sys.exit("anon_tls_smtp.py: refusing to listen outside 127.0.0.0/8 and 10.213.0.0/16")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
