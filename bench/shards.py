#!/usr/bin/env python3
"""One plan as N shards on this machine against one target, merged: the figures of the merged
run, each shard's health, and what the merge cost.

  python3 bench/shards.py [--shards 4] [--clients 200000] [--server-processes 12]

Starts `wsstorm serve --processes P` (one target, P processes on one port), runs the shards of
bench/shards.yaml as separate `wsstorm run --shard I/N --start-at T` processes with a common
start, then `wsstorm merge` (timed, with its peak RSS). Release build.
"""
import argparse, datetime, json, os, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.path.join(ROOT, "target", "release", "wsstorm")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--clients", type=int, default=200000)
    ap.add_argument("--server-processes", type=int, default=12)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    out = a.out or tempfile.mkdtemp(prefix="wsstorm-shards-")
    os.makedirs(out, exist_ok=True)
    serve = subprocess.Popen([EXE, "serve", "--listen", "127.0.0.1:0", "--processes",
                              str(a.server_processes)], stdout=subprocess.PIPE, text=True)
    try:
        url = serve.stdout.readline().strip().removeprefix("wsstorm serve: listening on ")
        start = (datetime.datetime.now(datetime.timezone.utc)
                 + datetime.timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        procs = []
        for i in range(a.shards):
            d = os.path.join(out, f"shard-{i}")
            procs.append((d, subprocess.Popen(
                [EXE, "run", os.path.join(ROOT, "bench", "shards.yaml"), "--target", url,
                 "--clients", str(a.clients), "--shard", f"{i}/{a.shards}", "--start-at", start,
                 "--no-tui", "--out", d],
                stdout=subprocess.DEVNULL, stderr=open(d + ".log", "w"))))
        for d, p in procs:
            if p.wait() != 0:
                sys.exit(f"shard {d} failed: see {d}.log")
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=30)
    files = [os.path.join(d, "results.json") for d, _ in procs]
    size = sum(os.path.getsize(f) for f in files)
    t0 = time.time()
    m = subprocess.run(["/usr/bin/time", "-f", "%M", EXE, "merge", *files, "-o",
                        os.path.join(out, "merged")], capture_output=True, text=True)
    wall = time.time() - t0
    if m.returncode != 0:
        sys.exit(m.stderr)
    rss_kib = int(m.stderr.strip().splitlines()[-1])
    with open(os.path.join(out, "merged", "results.json")) as f:
        r = json.load(f)
    t = r["totals"]
    print(f"{a.shards} shards x {a.clients // a.shards:,} clients against one target "
          f"({a.server_processes} server processes), common start {start}")
    print(f"merged: {t['clients']:,} clients, {t['connect_attempts']:,} attempts, {t['opened']:,} opened, "
          f"peak connected {t['peak_connected']:,}, connected at end {t['connected_at_end']:,}, "
          f"connect errors {sum(v for k, v in t['connect_errors'].items() if isinstance(v, int))}, "
          f"handshake p50/p99 {r['latency_us']['handshake']['p50'] / 1000:.2f}/"
          f"{r['latency_us']['handshake']['p99'] / 1000:.2f} ms")
    for s in r["shards"]:
        print(f"  shard {s['shard']['index']}/{s['shard']['count']}: {s['clients']:,} clients, "
              f"{s['connected_at_end']:,} at end, lag p99 {s['schedule_lag_p99_us'] / 1000:.1f} ms, "
              f"peak rss {s['peak_rss_bytes'] / 2**20:.0f} MiB, cpu {s['cpu_s']:.1f} s"
              + (f" — {'; '.join(s['warnings'])}" if s["warnings"] else ""))
    print(f"merge: {len(files)} results.json ({size / 2**20:.1f} MiB) in {wall:.2f} s, "
          f"peak RSS {rss_kib / 1024:.0f} MiB")
    print(f"output: {out}")


if __name__ == "__main__":
    main()
