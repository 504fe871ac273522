#!/usr/bin/env python3
"""A logging Postgres wire-protocol proxy: see exactly what a client sends.

    wirelog.py LISTEN_PORT UPSTREAM_PORT [--log FILE] [--server-version 14.13] [--verbose]

Listens on 127.0.0.1:LISTEN_PORT, forwards every connection to
127.0.0.1:UPSTREAM_PORT (Weir or a real Postgres), and writes one line per
interesting message to FILE (default stdout):

    c3 Q  <sql>                     simple query
    c3 P  name=<stmt> types=[..] <sql>  Parse (extended protocol)
    c3 B  portal=<p> stmt=<s> nparams=N formats=..  Bind
    c3 C< <tag>                      CommandComplete from the server
    c3 E! <SQLSTATE> <message>       ErrorResponse from the server

SSL/GSS encryption requests are answered 'N' by the proxy itself, so the
client falls back to plain TCP.  --verbose also logs every other message
(type and length from the client, type and first bytes from the server).  --server-version rewrites the server_version
ParameterStatus (e.g. to make a real Postgres 15 look like 14.13 to pgJDBC,
which picks its catalog queries by that version).  Used to collect the
catalog queries drivers send (see README.md in this directory); not a test.
"""

import argparse
import asyncio
import itertools
import struct
import sys

_ids = itertools.count(1)
VERBOSE = False  # --verbose: also log every other message type (except DataRow)


def cstrings(payload):
    return payload.split(b"\0")


class Logger:
    def __init__(self, path):
        self.out = open(path, "a", buffering=1) if path else sys.stdout

    def __call__(self, cid, tag, text):
        self.out.write(f"c{cid} {tag:2} {text}\n")


async def read_exact(reader, n):
    return await reader.readexactly(n)


async def pump_frontend(cid, reader, writer, log):
    """Client -> server.  First the startup phase (untyped messages)."""
    while True:
        head = await read_exact(reader, 4)
        (length,) = struct.unpack("!i", head)
        body = await read_exact(reader, length - 4)
        code = struct.unpack("!i", body[:4])[0]
        if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: refuse, wait for the real startup
            yield ("reply", b"N")
            continue
        if code == 196608:  # protocol 3.0 StartupMessage
            parts = cstrings(body[4:])
            params = dict(zip(parts[0::2], parts[1::2]))
            log(cid, "S", " ".join(f"{k.decode()}={v.decode()}" for k, v in params.items() if k))
        writer.write(head + body)
        await writer.drain()
        break
    while True:
        tag = await read_exact(reader, 1)
        (length,) = struct.unpack("!i", await read_exact(reader, 4))
        payload = await read_exact(reader, length - 4)
        t = tag.decode()
        if t == "Q":
            log(cid, "Q", payload.rstrip(b"\0").decode(errors="replace"))
        elif t == "P":
            name, rest = payload.split(b"\0", 1)
            query, rest = rest.split(b"\0", 1)
            (n,) = struct.unpack("!h", rest[:2])
            types = list(struct.unpack(f"!{n}i", rest[2:2 + 4 * n]))
            log(cid, "P", f"name={name.decode()!r} types={types} {query.decode(errors='replace')}")
        elif t == "B":
            portal, rest = payload.split(b"\0", 1)
            stmt, rest = rest.split(b"\0", 1)
            (nf,) = struct.unpack("!h", rest[:2])
            formats = list(struct.unpack(f"!{nf}h", rest[2:2 + 2 * nf]))
            (np,) = struct.unpack("!h", rest[2 + 2 * nf:4 + 2 * nf])
            log(cid, "B", f"portal={portal.decode()!r} stmt={stmt.decode()!r} nparams={np} param_formats={formats}")
        elif VERBOSE:
            log(cid, t + ">", f"len={length - 4}")
        writer.write(tag + struct.pack("!i", length) + payload)
        await writer.drain()
        if t == "X":
            return


async def pump_backend(cid, reader, writer, log, server_version):
    while True:
        tag = await read_exact(reader, 1)
        (length,) = struct.unpack("!i", await read_exact(reader, 4))
        payload = await read_exact(reader, length - 4)
        if tag == b"C":
            log(cid, "C<", payload.rstrip(b"\0").decode(errors="replace"))
        elif tag == b"E":
            fields = {}
            for f in payload.split(b"\0"):
                if f:
                    fields[chr(f[0])] = f[1:].decode(errors="replace")
            log(cid, "E!", f"{fields.get('C')} {fields.get('M')}")
        elif VERBOSE and tag != b"D":
            log(cid, tag.decode() + "<", payload[:60])
        if tag == b"S" and server_version:
            name, _value, _ = payload.split(b"\0")
            if name == b"server_version":
                payload = b"server_version\0" + server_version.encode() + b"\0"
                length = len(payload) + 4
        writer.write(tag + struct.pack("!i", length) + payload)
        await writer.drain()


async def handle(client_reader, client_writer, upstream_port, log, server_version):
    cid = next(_ids)
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)

    async def frontend():
        gen = pump_frontend(cid, client_reader, up_writer, log)
        # pump_frontend is an async generator only during the startup phase.
        async for action, data in gen:
            if action == "reply":
                client_writer.write(data)
                await client_writer.drain()

    tasks = [asyncio.ensure_future(frontend()),
             asyncio.ensure_future(pump_backend(cid, up_reader, client_writer, log, server_version))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for w in (client_writer, up_writer):
            w.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("listen_port", type=int)
    ap.add_argument("upstream_port", type=int)
    ap.add_argument("--log")
    ap.add_argument("--server-version")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    log = Logger(args.log)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.upstream_port, log, args.server_version), "127.0.0.1", args.listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
