#!/usr/bin/env python3
"""A WebSocket echo server no one on this project wrote: the Python `websockets` library.

Tests start it as a third-party target. It prints the port it listens on, then echoes every
message until it is killed. Usage: echo_server.py [PORT]   (0 or nothing: a free port)
"""

import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(connection):
    # Cut and reset connections are the point of the tests, not errors worth a traceback.
    try:
        async for message in connection:
            await connection.send(message)
    except ConnectionClosed:
        pass


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    # No server-side pings: the tests decide who pings.
    async with serve(echo, "127.0.0.1", port, ping_interval=None, max_size=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
