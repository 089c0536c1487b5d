#!/usr/bin/env python3
"""Open an HTML file in headless Chromium and report what a browser saw, as JSON on stdout.

Drives Chromium over the DevTools protocol (a WebSocket, through the `websockets` library the
proxy tests already need), so nothing else has to be installed. Reports:
  console      console errors, warnings and uncaught exceptions
  requests     every URL the page asked for (the page itself included)
  svgs         for each <svg>: how many drawn elements it has, and its size on screen
  values       the text of every element with a data-key attribute, by key

usage: browser_check.py CHROMIUM FILE.html
"""

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from websockets.asyncio.client import connect

PROBE = """
(() => {
  const svgs = [...document.querySelectorAll('svg')].map(s => {
    const r = s.getBoundingClientRect();
    return {
      drawn: s.querySelectorAll('polyline, rect, path, line, circle').length,
      points: [...s.querySelectorAll('polyline')].reduce((n, p) => n + p.points.length, 0),
      width: r.width, height: r.height,
    };
  });
  const values = {};
  for (const e of document.querySelectorAll('[data-key]')) values[e.dataset.key] = e.textContent.trim();
  return JSON.stringify({ svgs, values, title: document.title });
})()
"""


async def check(chromium, path):
    profile = tempfile.mkdtemp(prefix="wsstorm-chromium-")
    proc = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ws_url = None
        for line in proc.stderr:
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                ws_url = m.group(1)
                break
        if not ws_url:
            raise SystemExit("chromium did not start its DevTools endpoint")
        async with connect(ws_url, max_size=None) as ws:
            ids = iter(range(1, 1_000_000))
            events = []

            async def call(method, params=None, session=None):
                mid = next(ids)
                msg = {"id": mid, "method": method, "params": params or {}}
                if session:
                    msg["sessionId"] = session
                await ws.send(json.dumps(msg))
                while True:
                    reply = json.loads(await ws.recv())
                    if reply.get("id") == mid:
                        if "error" in reply:
                            raise SystemExit(f"{method}: {reply['error']}")
                        return reply.get("result", {})
                    events.append(reply)

            target = (await call("Target.createTarget", {"url": "about:blank"}))["targetId"]
            session = (await call("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                await call(f"{domain}.enable", session=session)
            url = "file://" + os.path.abspath(path)
            await call("Page.navigate", {"url": url}, session=session)
            # Wait for the load event (and a little more for late requests).
            loaded = False
            deadline = asyncio.get_event_loop().time() + 20
            while not loaded and asyncio.get_event_loop().time() < deadline:
                if any(e.get("method") == "Page.loadEventFired" for e in events):
                    loaded = True
                    break
                try:
                    events.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=1)))
                except asyncio.TimeoutError:
                    pass
            await asyncio.sleep(0.5)
            probe = await call("Runtime.evaluate", {"expression": PROBE, "returnByValue": True}, session=session)
            page = json.loads(probe["result"]["value"])
            console = []
            requests = []
            for e in events:
                m, p = e.get("method"), e.get("params", {})
                if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                    console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
                elif m == "Runtime.exceptionThrown":
                    console.append(p.get("exceptionDetails", {}).get("text", "exception"))
                elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                    console.append(p["entry"].get("text", ""))
                elif m == "Network.requestWillBeSent":
                    requests.append(p["request"]["url"])
            return {"loaded": loaded, "url": url, "console": console, "requests": requests, **page}
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(check(sys.argv[1], sys.argv[2]))))
