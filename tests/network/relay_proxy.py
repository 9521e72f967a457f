"""A small HTTP proxy for tests: CONNECT tunnels and plain forwarding, one line per request.

    python -m tests.network.relay_proxy > proxy.log

prints `relay proxy listening on http://127.0.0.1:PORT`, then for every request it relays
`CONNECT host:port` (a tunnel, for https:// targets) or `POST http://host:port/path` (absolute
form, for http:// targets; forwarded with `Connection: close`, so each line is one request).
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import urlsplit

LISTENING = "relay proxy listening on "
# Hop-by-hop headers are the proxy's own; the origin server must not see them.
HOP_BY_HOP = ("proxy-", "connection:", "keep-alive:")


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def relay(client: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    try:
        head = (await client.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        method, target, version = request_line.split(" ")
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream, upstream_writer = await asyncio.open_connection(host, int(port))
            client_writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urlsplit(target)
            upstream, upstream_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            path = url.path + (f"?{url.query}" if url.query else "")
            kept = [h for h in header_lines if h and not h.lower().startswith(HOP_BY_HOP)]
            lines = [f"{method} {path} {version}", *kept, "Connection: close", "", ""]
            upstream_writer.write("\r\n".join(lines).encode("latin-1"))
    except (OSError, ValueError, asyncio.IncompleteReadError):
        client_writer.close()
        return
    print(method, target, flush=True)
    await asyncio.gather(pipe(client, upstream_writer), pipe(upstream, client_writer))


async def main() -> None:
    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"{LISTENING}http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
