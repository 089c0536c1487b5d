#!/usr/bin/env python3
"""Client memory per idle WebSocket connection.

Starts `wsstorm serve` (a separate process, so client and server memory are not mixed), then
runs bench/idle.yaml against it with N idle clients for several N. For each run it takes the
client process's RSS while all N connections are held (the median of the per-second generator
samples once connected == N) and reports:

  - the slope of RSS against N (bytes per connection: what one more idle client costs), and
  - the server's RSS per connection at the largest N, for reference.

Kernel socket memory is not in either figure; /proc/net/sockstat is printed separately.

usage: bench/idle-rss.py [--sizes 2000,5000,10000] [--hold 12s] [--repeat 3]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "wsstorm")


def rss_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def sockstat():
    with open("/proc/net/sockstat") as f:
        return " | ".join(l.strip() for l in f if l.startswith(("TCP", "sockets")))


def run_once(url, n, hold, out):
    cmd = [BIN, "run", os.path.join(ROOT, "bench", "idle.yaml"), "--target", url,
           "--clients", str(n), "--duration", hold, "--out", out, "--no-tui"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "results.json")) as f:
        r = json.load(f)
    held = [s["rss_bytes"] for s in r["generator"]["samples"] if s["connected"] == n]
    if len(held) < 3:
        sys.exit(f"only {len(held)} samples with all {n} connected; raise --hold")
    return statistics.median(held), r["totals"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,5000,10000")
    ap.add_argument("--hold", default="12s")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    server = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"listening on (\S+)", server.stdout.readline()).group(1)
        server_rss_idle = rss_of(server.pid)
        slopes = []
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(args.repeat):
                points = []
                for n in sizes:
                    rss, totals = run_once(url, n, args.hold, os.path.join(tmp, f"{rep}-{n}"))
                    errors = sum(totals["connect_errors"].values()) + sum(totals["handshake_status"].values())
                    print(f"  run {rep + 1}: {n:>6} idle clients  client rss {rss / 2**20:7.1f} MiB  "
                          f"opened {totals['opened']}  errors {errors}")
                    points.append((n, rss))
                xs, ys = zip(*points)
                mx, my = statistics.mean(xs), statistics.mean(ys)
                slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
                base = my - slope * mx
                slopes.append((slope, base))
                print(f"  run {rep + 1}: slope {slope / 1024:.2f} KiB per connection, base {base / 2**20:.1f} MiB")
            # Server memory with the largest N held, measured from outside while a run holds it.
            n = sizes[-1]
            probe = subprocess.Popen([BIN, "run", os.path.join(ROOT, "bench", "idle.yaml"), "--target", url,
                                      "--clients", str(n), "--duration", args.hold,
                                      "--out", os.path.join(tmp, "probe"), "--no-tui"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            server_rss_full = 0
            for line in probe.stderr:
                if f"connected {n}/{n}" in line:
                    server_rss_full = max(server_rss_full, rss_of(server.pid))
                    kernel = sockstat()
            probe.wait()
        slope, base = sorted(slopes)[len(slopes) // 2]
        print()
        print(f"client RSS per idle connection (median of {args.repeat} slopes over N={sizes}): "
              f"{slope / 1024:.2f} KiB   (base {base / 2**20:.1f} MiB; target <= 8 KiB)")
        if server_rss_full:
            print(f"server RSS per connection at N={n}: {(server_rss_full - server_rss_idle) / n / 1024:.2f} KiB "
                  f"(idle server {server_rss_idle / 2**20:.1f} MiB)")
            print(f"kernel sockets at N={n} (both ends, not in the figures above): {kernel}")
    finally:
        server.send_signal(2)
        server.wait()


if __name__ == "__main__":
    main()
