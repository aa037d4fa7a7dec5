#!/usr/bin/python3
"""An SMTP server with STARTTLS and a real certificate, for the `tlsverify` tests.

Debian's aiosmtpd on loopback; run it with /usr/bin/python3 (where python3-aiosmtpd lives).

    /usr/bin/python3 tests/peers/tls_smtp.py --cert LEAF.pem --key LEAF.key
        [--host 127.0.0.1] [--port 0] [--hostname mx.test]

The certificate is whatever the test made (usually a leaf signed by a throwaway test CA,
made with the `openssl` command line). TLS 1.2
and 1.3 with OpenSSL's default ciphers: a normal, well-configured mail server whose only
possible fault is the certificate itself.

It binds before printing `TLS_SMTP_PORT <port>` (flushed), so a test that has read that
line can connect. Mail is accepted and thrown away.
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


async def serve(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)

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
    print(f"TLS_SMTP_PORT {sock.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--hostname", default="mx.test")
    args = p.parse_args()
    if not args.host.startswith("127."):
        sys.exit("tls_smtp.py: refusing to listen outside 127.0.0.0/8")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
