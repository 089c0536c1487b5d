#!/usr/bin/env python3
"""How fast `wsstorm model` runs a fleet: wall time, events per second and peak memory.

  python3 bench/model-speed.py [profile.yaml ...]

Default: bench/model-10m.yaml (10M clients, a mass drop with full jitter, no capacity limit) and
bench/model-fleet.yaml (10M clients, a mass drop against 200k handshakes/s with 503 and
Retry-After). Each is run once in release mode; the figures are the model's own (results.json
model.events) and the OS's (peak RSS of the child).
"""
import json, os, resource, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.path.join(ROOT, "target", "release", "wsstorm")


def main():
    profiles = sys.argv[1:] or [os.path.join(ROOT, "bench", "model-10m.yaml"),
                                os.path.join(ROOT, "bench", "model-fleet.yaml")]
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    for p in profiles:
        out = tempfile.mkdtemp(prefix="wsstorm-model-")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.time()
        subprocess.run([EXE, "model", p, "--out", out], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.time() - t0
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with open(os.path.join(out, "results.json")) as f:
            r = json.load(f)
        m, s, t = r["model"], r["storm"], r["totals"]
        rec = s["recovery_ms"]
        print(f"{os.path.basename(p)}: {t['clients']:,} clients, {t['connect_attempts']:,} attempts, "
              f"{m['events']:,} events in {wall:.1f} s wall ({m['events'] / wall / 1e6:.2f} M events/s), "
              f"peak RSS {max(rss, before) / 1024 / 1024:.2f} GiB; "
              f"{s['recovered']:,} of {s['losses']:,} back, p50/p95/p99 {rec['p50']}/{rec['p95']}/{rec['p99']} ms "
              f"({r['duration_ms'] / 1000:.0f} s virtual)")


if __name__ == "__main__":
    main()
