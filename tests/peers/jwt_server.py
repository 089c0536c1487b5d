#!/usr/bin/env python3
"""A WebSocket echo server that wants a valid JWT (PyJWT) in the handshake, for wsstorm's tests.

The token comes from `?token=<jwt>` or an `Authorization: Bearer <jwt>` header (the query wins
when both are there). It must verify with --alg and its key (--secret for HS256, --public-key PEM
file for RS256/ES256), carry `exp` and not be past it (no leeway), and, with --audience, carry
that `aud`. Without --audience a token that has an `aud` is refused (PyJWT's rule).

A refused handshake gets HTTP 401, a `WWW-Authenticate: Bearer ...` header, and a body whose first
word is the ledger's reason: `missing`, `expired` or `invalid` (e.g. "invalid: invalid signature").
An accepted connection echoes every message until it closes.

GET /ledger (plain HTTP, no token needed) -> JSON, see `ledger()`.
Prints `LISTENING <port>` once listening, then serves until killed.
"""

import argparse
import asyncio
import json
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import jwt
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

accepted = 0
rejected = {"expired": 0, "invalid": 0, "missing": 0}
subjects = set()  # distinct `sub` claims of accepted connections


def ledger():
    return {"accepted": accepted, "rejected": rejected, "subjects": sorted(subjects)}


def token_of(request):
    query = parse_qs(urlsplit(request.path).query)
    if "token" in query:
        return query["token"][0]
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def check(token, args, key):
    """(claims, None) for a good token, else (None, (reason, detail))."""
    if not token:
        return None, ("missing", "no token in ?token= or Authorization: Bearer")
    try:
        claims = jwt.decode(token, key, algorithms=[args.alg], audience=args.audience,
                            leeway=0, options={"require": ["exp"]})
        return claims, None
    except jwt.ExpiredSignatureError:
        return None, ("expired", "token expired")
    except jwt.InvalidSignatureError:
        return None, ("invalid", "invalid signature")
    except jwt.InvalidTokenError as e:  # malformed, wrong alg, no exp, wrong aud, ...
        return None, ("invalid", str(e) or type(e).__name__)


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--alg", default="HS256", choices=["HS256", "RS256", "ES256"])
    p.add_argument("--secret", help="the HMAC secret, for HS256")
    p.add_argument("--public-key", help="PEM file of the public key, for RS256 and ES256")
    p.add_argument("--audience", help="the `aud` a token must carry")
    args = p.parse_args()
    if args.alg == "HS256":
        if args.secret is None:
            p.error("HS256 needs --secret")
        key = args.secret
    else:
        if args.public_key is None:
            p.error(f"{args.alg} needs --public-key")
        with open(args.public_key) as f:
            key = f.read()

    def process_request(connection, request):
        if urlsplit(request.path).path == "/ledger":
            response = connection.respond(HTTPStatus.OK, json.dumps(ledger()) + "\n")
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        claims, refusal = check(token_of(request), args, key)
        if refusal:
            reason, detail = refusal
            rejected[reason] += 1
            response = connection.respond(HTTPStatus.UNAUTHORIZED, f"{reason}: {detail}\n")
            response.headers["WWW-Authenticate"] = (
                'Bearer' if reason == "missing"
                else 'Bearer error="invalid_token", error_description="%s"'
                % detail.replace('"', "'"))
            return response
        connection.claims = claims  # counted by echo() once the handshake is through
        return None  # go on with the WebSocket handshake

    async def echo(connection):
        global accepted
        accepted += 1
        if "sub" in connection.claims:
            subjects.add(str(connection.claims["sub"]))
        try:
            async for message in connection:
                await connection.send(message)
        except ConnectionClosed:
            pass

    async with serve(echo, args.host, args.port, process_request=process_request,
                     ping_interval=None, max_size=None,
                     backlog=4096) as server:  # asyncio's default, 100, drops SYNs in a storm
        print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
