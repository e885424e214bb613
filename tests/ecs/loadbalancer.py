"""The load balancer's stand-in: each listener port forwards TCP to its target, LISTENERS=port=host:port,...

Run with `python -c` in a service image (tests/ecs/boot.py). It forwards bytes only: no health checks, no
X-Forwarded-For, no TLS (the template's listeners are plain HTTP too).
"""

import asyncio
import os


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


def forward(host, port):
    async def handle(reader, writer):
        try:
            target_reader, target_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, target_writer), pipe(target_reader, writer))
        for w in (writer, target_writer):
            w.close()

    return handle


async def main():
    servers = []
    for listener in os.environ["LISTENERS"].split(","):
        port, target = listener.split("=")
        host, target_port = target.rsplit(":", 1)
        servers.append(await asyncio.start_server(forward(host, int(target_port)), "0.0.0.0", int(port)))
        print(f"listener {port} -> {target}", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


asyncio.run(main())
