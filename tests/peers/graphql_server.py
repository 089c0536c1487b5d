#!/usr/bin/env python3
"""A GraphQL subscription server on strawberry-graphql (ASGI) under uvicorn, for wsstorm's tests.

    ws://HOST:PORT/graphql   subprotocol graphql-transport-ws (or the older graphql-ws)
    subscription { counter(upTo: 5, intervalMs: 10) }   -> next 1, next 2, ..., next 5, complete
    query { hello }                                      -> "world" (also over HTTP POST /graphql)

GET /ledger on the same port (plain HTTP) -> JSON, see `ledger`.
Prints `LISTENING <port>` once uvicorn serves, then runs until killed.
"""

import argparse
import asyncio
import json
import socket
from typing import AsyncGenerator

import strawberry
import uvicorn
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

ledger = {
    "subscriptions": 0,  # counter subscriptions started
    "completed": 0,  # ran to upTo (the client is then sent `complete`)
    "cancelled": 0,  # stopped early: the client sent `complete`, or went away
    "yielded": 0,  # values handed on and taken: the consumer came back for the next one
}


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def counter(self, up_to: int, interval_ms: int = 10) -> AsyncGenerator[int, None]:
        ledger["subscriptions"] += 1
        done = False
        try:
            for i in range(1, up_to + 1):
                if i > 1:
                    await asyncio.sleep(interval_ms / 1000)
                yield i
                # Back here only once strawberry has sent `next` for i and asks for more: i is
                # counted as sent, not merely produced.
                ledger["yielded"] += 1
            done = True
        finally:
            ledger["completed" if done else "cancelled"] += 1


schema = strawberry.Schema(query=Query, subscription=Subscription)
graphql = GraphQL(
    schema,
    subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL],
    allowed_origins=["*"],  # the tests may send any Origin
    graphql_ide=None,
)


async def app(scope, receive, send):
    """A tiny router: /graphql to strawberry, GET /ledger here, 404 otherwise."""
    if scope["type"] in ("http", "websocket") and scope["path"] == "/graphql":
        return await graphql(scope, receive, send)
    if scope["type"] != "http":
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        return
    if scope["path"] == "/ledger":
        status, body = 200, json.dumps(ledger).encode()
    else:
        status, body = 404, b'{"error":"not found"}'
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    args = p.parse_args()
    # Bound here so port 0 works; IPPROTO_TCP spelled out, or asyncio leaves Nagle on.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise SystemExit("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
