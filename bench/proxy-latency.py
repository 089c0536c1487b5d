#!/usr/bin/env python3
"""Latency the fault proxy adds with no fault active, at several loads.

Runs bench/proxy-latency.yaml: N clients echo 64-byte messages every T directly to the
embedded target, and N more through the proxy, in the same run (the proxy runs as a sidecar
on the embedded target's runtime). For each load it prints the echo round trip p50/p99 of both
groups and the difference, median of --repeat runs. Target: <= 100 us added at p50.

usage: bench/proxy-latency.py [--loads 10x100ms,20x50ms,50x20ms] [--repeat 3] [--duration 15s]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "wsstorm")


def run_once(clients, every, duration, out):
    with open(os.path.join(ROOT, "bench", "proxy-latency.yaml")) as f:
        profile = f.read().replace("clients: 50", f"clients: {clients}").replace("every: 20ms", f"every: {every}")
    path = out + ".yaml"
    with open(path, "w") as f:
        f.write(profile)
    subprocess.run([BIN, "run", path, "--duration", duration, "--out", out, "--no-tui"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "results.json")) as f:
        r = json.load(f)
    g = {x["name"]: x["latency_us"]["rtt"] for x in r["groups"]}
    return g["direct"], g["proxied"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", default="10x100ms,20x50ms,50x20ms")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", default="15s")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    print(f"{'load (per group)':>26} | {'direct p50/p99 us':>18} | {'proxied p50/p99 us':>19} | added p50 / p99 us")
    with tempfile.TemporaryDirectory() as tmp:
        for load in args.loads.split(","):
            clients, every = load.split("x")
            rows = [run_once(int(clients), every, args.duration, os.path.join(tmp, f"{load}-{i}"))
                    for i in range(args.repeat)]
            med = lambda xs: statistics.median(xs)
            d50, d99 = med([d["p50"] for d, _ in rows]), med([d["p99"] for d, _ in rows])
            p50, p99 = med([p["p50"] for _, p in rows]), med([p["p99"] for _, p in rows])
            a50 = med([p["p50"] - d["p50"] for d, p in rows])
            a99 = med([p["p99"] - d["p99"] for d, p in rows])
            rate = int(clients) * 1000 // int(every.rstrip("ms"))
            label = f"{clients} clients every {every} ({rate}/s)"
            print(f"{label:>26} | {d50:>8.0f} / {d99:<7.0f} | {p50:>8.0f} / {p99:<8.0f} | {a50:>5.0f} / {a99:.0f}"
                  f"   {'ok' if a50 <= 100 else 'over target'}")


if __name__ == "__main__":
    main()
