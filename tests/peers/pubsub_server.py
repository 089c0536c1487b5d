#!/usr/bin/env python3
"""A JSON pub/sub app on the Python `websockets` library (asyncio server), for wsstorm's tests.

Topics publish on their own from the start. A client connects to

    ws://HOST:PORT/ws?client=<id>&from=<seq>          (both optional)

and sends JSON text messages:

    {"type":"subscribe","topic":"prices","id":X}  -> {"type":"ack","topic":"prices","id":X},
                                                     then live events
    {"type":"subscribe","topic":"prices","id":X,"from":N}
                                                  -> the ack, then the events with seq > N still
                                                     in the history, then live ones (`from` in
                                                     the URL counts when the message has none)
    {"type":"subscribe","topic":"nope","id":X}    -> {"type":"error","code":"unknown_topic","id":X}
    {"type":"req","id":X}                         -> {"type":"res","id":X} after --reply-delay-ms
    {"type":"ping"}                               -> {"type":"pong"}

Events: {"type":"event","topic":T,"seq":N,"ts":<epoch ms>,"ts_us":<epoch µs>,"data":"..."}, where
seq counts from 1 per topic and ts is when the server published it. Subscribing again to a topic on
the same connection replaces that subscription. A client reading too slowly is not buffered for: it
is sent the history in order, and skips what fell out of the ring (--history) meanwhile.

Requests not answered, on purpose: with --answer-every K and K > 1, a request whose id is an
integer (or a string of one) that is a multiple of K gets no reply; every other request is answered.
So ids 1..=100 with K = 10 leave exactly 10 unanswered (10, 20, ..., 100). K = 1 (default) answers
all.

Plain HTTP on the same port (HTTP/1.1 only, as `websockets` parses it):
    GET /ledger                       what the server did (JSON, see `ledger()`)
    GET /control/drop-all?code=1012   close every open connection with that code; {"closed": n}

Prints `LISTENING <port>` once listening, then serves until killed.
"""

import argparse
import asyncio
import json
import time
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


class Topic:
    """One topic: a global sequence, and a ring of the last `size` events (as sent, JSON text)."""

    def __init__(self, name, size, data_bytes):
        self.name = name
        self.size = size
        self.data_bytes = data_bytes
        self.seq = 0  # last published
        self.ring = [None] * size  # ring[seq % size] = JSON text of event seq
        self.published = asyncio.Event()  # set (and replaced) on every publish

    def publish(self):
        self.seq += 1
        now_us = time.time_ns() // 1000
        data = f"{self.name}#{self.seq}"
        if self.data_bytes > len(data):
            data = data.ljust(self.data_bytes, "x")
        event = {"type": "event", "topic": self.name, "seq": self.seq,
                 "ts": now_us // 1000, "ts_us": now_us, "data": data}
        self.ring[self.seq % self.size] = dumps(event)
        # Wake every subscriber waiting for the next event, and arm a fresh Event for the one after.
        self.published.set()
        self.published = asyncio.Event()

    def oldest(self):
        """The oldest seq still in the ring."""
        return max(1, self.seq - self.size + 1)

    async def run(self, rate):
        """Publish `rate` events per second, on a fixed schedule (catching up if late)."""
        if rate <= 0:
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            due = int((loop.time() - start) * rate)
            while self.seq < due:
                self.publish()
            await asyncio.sleep(max(0.0, start + (self.seq + 1) / rate - loop.time()))


class Client:
    """The ledger's record of one client id, over all its connections."""

    def __init__(self):
        self.connections = 0
        self.subscribes = 0
        self.delivered = 0  # event messages whose send() returned
        self.seen = {}  # topic -> set of seqs delivered

    def record(self, topic, seq):
        self.delivered += 1
        self.seen.setdefault(topic, set()).add(seq)

    def summary(self):
        every = [s for seqs in self.seen.values() for s in seqs]
        return {
            "delivered": self.delivered,
            "unique": len(every),  # distinct (topic, seq) pairs
            "min_seq": min(every, default=None),
            "max_seq": max(every, default=None),
            "connections": self.connections,
            "subscribes": self.subscribes,
            "topics": {t: {"unique": len(s), "min_seq": min(s), "max_seq": max(s)}
                       for t, s in self.seen.items() if s},
        }


class App:
    def __init__(self, args):
        self.args = args
        self.topics = {name: Topic(name, args.history, args.data_bytes)
                       for name in args.topics.split(",") if name}
        self.open = set()  # open connections
        self.connections = 0
        self.requests = 0
        self.answered = 0
        self.unanswered = 0  # dropped on purpose (--answer-every)
        self.answer_failed = 0  # the reply could not be sent (connection gone)
        self.pings = 0
        self.clients = {}  # client id -> Client
        self.anonymous = 0

    def ledger(self):
        """connections: accepted so far; open: now; published: topic -> last seq; requests =
        answered + unanswered (on purpose) + answer_failed (connection gone) + those still
        waiting out --reply-delay-ms; clients: id (from ?client=, else anon-<n>) -> summary(),
        where an event counts as delivered once `await send()` returned for it."""
        return {
            "connections": self.connections,
            "open": len(self.open),
            "published": {name: t.seq for name, t in self.topics.items()},
            "requests": self.requests,
            "answered": self.answered,
            "unanswered": self.unanswered,
            "answer_failed": self.answer_failed,
            "pings": self.pings,
            "clients": {cid: c.summary() for cid, c in self.clients.items()},
        }

    # ---- plain HTTP, before any WebSocket handshake ----

    async def process_request(self, connection, request):
        url = urlsplit(request.path)
        if url.path == "/ledger":
            return json_response(connection, self.ledger())
        if url.path == "/control/drop-all":
            code = int(parse_qs(url.query).get("code", ["1012"])[0])
            victims = list(self.open)
            # Returns once every closing handshake is done (or timed out): then "open" is 0.
            await asyncio.gather(*(ws.close(code, "drop-all") for ws in victims),
                                 return_exceptions=True)
            self.open.difference_update(victims)  # closed now, even if their handlers lag
            return json_response(connection, {"closed": len(victims)})
        return None  # go on with the WebSocket handshake

    # ---- one WebSocket connection ----

    async def handler(self, ws):
        query = parse_qs(urlsplit(ws.request.path).query)
        client_id = query.get("client", [None])[0]
        if client_id is None:
            self.anonymous += 1
            client_id = f"anon-{self.anonymous}"
        url_from = query.get("from", [None])[0]
        client = self.clients.setdefault(client_id, Client())
        client.connections += 1
        self.connections += 1
        self.open.add(ws)
        subscriptions = {}  # topic -> task streaming it
        tasks = set()  # delayed replies
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                    kind = msg.get("type")
                except (ValueError, AttributeError):
                    await ws.send(dumps({"type": "error", "code": "bad_json"}))
                    continue
                if kind == "subscribe":
                    topic = self.topics.get(msg.get("topic"))
                    if topic is None:
                        await ws.send(dumps(
                            {"type": "error", "code": "unknown_topic", "id": msg.get("id")}))
                        continue
                    start = msg.get("from", url_from)
                    # The cursor is fixed now, before the ack: live events published while the
                    # ack is in flight are not lost.
                    cursor = topic.seq if start is None else int(start)
                    client.subscribes += 1
                    old = subscriptions.pop(topic.name, None)
                    if old:
                        old.cancel()
                    await ws.send(dumps({"type": "ack", "topic": topic.name, "id": msg.get("id")}))
                    subscriptions[topic.name] = asyncio.create_task(
                        self.stream(ws, client, topic, cursor))
                elif kind == "req":
                    self.requests += 1
                    if not self.answers(msg.get("id")):
                        self.unanswered += 1
                    elif self.args.reply_delay_ms > 0:
                        task = asyncio.create_task(self.reply(ws, msg.get("id")))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    else:
                        await self.reply(ws, msg.get("id"))
                elif kind == "ping":
                    self.pings += 1
                    await ws.send('{"type":"pong"}')
                else:
                    await ws.send(dumps(
                        {"type": "error", "code": "unknown_type", "id": msg.get("id")}))
        except ConnectionClosed:
            pass  # cut and reset connections are the point of the tests
        finally:
            self.open.discard(ws)
            for task in [*subscriptions.values(), *tasks]:
                task.cancel()

    def answers(self, req_id):
        k = self.args.answer_every
        try:
            n = int(req_id)
        except (TypeError, ValueError):
            return True  # not a number: always answered
        return k <= 1 or n % k != 0

    async def reply(self, ws, req_id):
        if self.args.reply_delay_ms > 0:
            await asyncio.sleep(self.args.reply_delay_ms / 1000)
        try:
            await ws.send(dumps({"type": "res", "id": req_id}))
            self.answered += 1
        except ConnectionClosed:
            self.answer_failed += 1

    async def stream(self, ws, client, topic, cursor):
        """Send `topic`'s events after seq `cursor`: the history first, then live ones."""
        try:
            while True:
                while cursor < topic.seq:
                    cursor = max(cursor + 1, topic.oldest())  # skip what left the ring
                    await ws.send(topic.ring[cursor % topic.size])
                    client.record(topic.name, cursor)  # only once send() returned
                await topic.published.wait()
        except ConnectionClosed:
            pass


def dumps(value):
    return json.dumps(value, separators=(",", ":"))


def json_response(connection, value):
    response = connection.respond(HTTPStatus.OK, dumps(value) + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--topics", default="prices", help="comma-separated topic names")
    p.add_argument("--rate", type=float, default=100, help="events per second per topic (0: none)")
    p.add_argument("--history", type=int, default=100000, help="events kept per topic for resume")
    p.add_argument("--data-bytes", type=int, default=0, help="pad each event's data to this length")
    p.add_argument("--reply-delay-ms", type=float, default=0)
    p.add_argument("--answer-every", type=int, default=1,
                   help="K > 1: requests whose integer id is a multiple of K get no reply")
    p.add_argument("--ws-ping-interval", type=float, default=0,
                   help="protocol-level server pings, seconds (0: none, the default)")
    args = p.parse_args()
    app = App(args)
    async with serve(app.handler, args.host, args.port, process_request=app.process_request,
                     ping_interval=args.ws_ping_interval or None, max_size=None,
                     close_timeout=2, open_timeout=60,  # drop-all answers inside the handshake
                     backlog=4096) as server:  # asyncio's default, 100, drops SYNs in a storm
        publishers = [asyncio.create_task(t.run(args.rate)) for t in app.topics.values()]
        print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.gather(*publishers, asyncio.Future())


if __name__ == "__main__":
    asyncio.run(main())
