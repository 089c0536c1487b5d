#!/usr/bin/env python3
"""A Socket.IO chat app on python-socketio (AsyncServer, ASGI) under uvicorn, for wsstorm's tests.

Socket.IO v4 / Engine.IO v4 at the usual path:
    ws://HOST:PORT/socket.io/?EIO=4&transport=websocket
Namespace /chat:
    emit "join" {"room": "r1"}   -> ack {"ok": true, "room": "r1"}   (the client enters the room)
    emit "say"  {"text": "hi"}   -> ack {"ok": true, "n": <says so far, this one included>},
                                    and "message" {"text": "hi", "from": <sender's sid>} to every
                                    member of the sender's rooms (the sender too; once each, even
                                    in several) -- sent before the ack
    every --tick-ms the server emits "tick" {"n": i, "ts": <epoch ms>} to room r1 (i from 1)
Engine.IO heartbeats: the server sends "2" every --ping-interval s and drops (close 1000, no
Engine.IO close packet) a client whose "3" is not back within --ping-timeout s.

GET /ledger on the same port (plain HTTP) -> JSON, see `ledger()`.
Prints `LISTENING <port>` once uvicorn serves, then runs until killed.
"""

import argparse
import asyncio
import json
import socket
import time

import socketio
import uvicorn

NS = "/chat"

counts = {
    "connects": 0,
    "disconnects": 0,
    "joins": 0,
    "says": 0,  # say events handled (each acked when the client asked for an ack)
    "broadcasts": 0,  # "message" emits (one per say from a client in at least one room)
    "broadcast_recipients": 0,  # members the "message" emits were addressed to, summed
    "ticks": 0,  # "tick" emits to r1
    "tick_recipients": 0,  # members of r1 at each tick, summed
}
open_sids = set()


def ledger():
    return {**counts, "open": len(open_sids)}


def make_sio(args):
    sio = socketio.AsyncServer(
        async_mode="asgi",
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        cors_allowed_origins="*",  # the tests may send any Origin
    )

    @sio.on("connect", namespace=NS)
    async def connect(sid, environ, auth=None):
        counts["connects"] += 1
        open_sids.add(sid)

    @sio.on("disconnect", namespace=NS)
    async def disconnect(sid, *reason):
        counts["disconnects"] += 1
        open_sids.discard(sid)

    @sio.on("join", namespace=NS)
    async def join(sid, data):
        room = (data or {}).get("room", "r1")
        await sio.enter_room(sid, room, namespace=NS)
        counts["joins"] += 1
        return {"ok": True, "room": room}  # becomes the ack, if the client asked for one

    @sio.on("say", namespace=NS)
    async def say(sid, data):
        counts["says"] += 1
        n = counts["says"]
        rooms = [r for r in sio.rooms(sid, namespace=NS) if r != sid]  # not its own sid room
        if rooms:
            counts["broadcasts"] += 1
            counts["broadcast_recipients"] += len(dict(sio.manager.get_participants(NS, rooms)))
            await sio.emit("message", {"text": (data or {}).get("text"), "from": sid},
                           to=rooms, namespace=NS)
        return {"ok": True, "n": n}

    async def ticker():
        i = 0
        while True:
            await sio.sleep(args.tick_ms / 1000)
            i += 1
            counts["ticks"] += 1
            counts["tick_recipients"] += len(dict(sio.manager.get_participants(NS, "r1")))
            await sio.emit("tick", {"n": i, "ts": time.time_ns() // 1_000_000},
                           to="r1", namespace=NS)

    return sio, ticker


async def ledger_app(scope, receive, send):
    """The plain-HTTP side: GET /ledger, 404 for anything else."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/ledger":
        status, body = 200, json.dumps(ledger()).encode()
    else:
        status, body = 404, b'{"error":"not found"}'
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def serve(app, args):
    """Run `app` under uvicorn on a socket bound here (so port 0 works), print LISTENING."""
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # with proto 0 Nagle's algorithm holds a reply written right after another (a broadcast, then
    # the ack) for the peer's delayed ACK, ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise SystemExit("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    return task


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--tick-ms", type=float, default=200)
    p.add_argument("--ping-interval", type=float, default=1, help="Engine.IO ping interval, s")
    p.add_argument("--ping-timeout", type=float, default=2, help="Engine.IO pong timeout, s")
    args = p.parse_args()
    sio, ticker = make_sio(args)
    app = socketio.ASGIApp(sio, other_asgi_app=ledger_app)
    task = await serve(app, args)
    sio.start_background_task(ticker)
    await task


if __name__ == "__main__":
    asyncio.run(main())
