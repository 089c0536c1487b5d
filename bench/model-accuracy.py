#!/usr/bin/env python3
"""The model against real runs: each shipped storm profile run over sockets and in virtual
time with the same plan and seed, figure by figure.

  python3 bench/model-accuracy.py [--clients N] [--profiles a,b,...] [--out DIR]

Prints, per profile, the real and the modelled value of recovery p50/p95/p99, total attempts,
503 answers and peak attempts/s, and the model's error. A figure is within tolerance when it
is within 15 % or within the stated absolute slack (small counts and times near the clock's
tick: 150 ms, 5 % of clients for counts).
"""
import argparse, json, os, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.path.join(ROOT, "target", "release", "wsstorm")
PROFILES = ["mass-drop-reconnect", "synchronized-retry", "metastable-retry-storm", "backoff-contention"]


def figures(r):
    s = r["storm"]
    t = r["totals"]
    return {
        "recovery p50 ms": s["recovery_ms"]["p50"],
        "recovery p95 ms": s["recovery_ms"]["p95"],
        "recovery p99 ms": s["recovery_ms"]["p99"],
        "back": s["recovered"],
        "total attempts": t["connect_attempts"],
        "503 answers": t["handshake_status"].get("503", 0),
        "peak attempts/s": s["peak_attempts_per_s"],
        "connected at end": t["connected_at_end"],
    }


def within(name, real, model, clients):
    if real is None or model is None:
        return real is None and model is None
    slack = 150.0 if name.endswith("ms") else max(5.0, 0.05 * clients)
    return abs(model - real) <= max(0.15 * abs(real), slack)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=None)
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--out", default="/tmp/wsstorm-model-accuracy")
    a = ap.parse_args()
    if not os.path.exists(EXE):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    bad = 0
    for p in a.profiles.split(","):
        prof = os.path.join(ROOT, "profiles", p + ".yaml")
        size = ["--clients", str(a.clients)] if a.clients else []
        out = {}
        for kind in ("run", "model"):
            d = os.path.join(a.out, p, kind)
            extra = ["--no-tui"] if kind == "run" else []
            t0 = time.time()
            r = subprocess.run([EXE, kind, prof, "--out", d] + size + extra,
                               capture_output=True, text=True)
            if r.returncode not in (0, 1):
                print(r.stderr, file=sys.stderr)
                sys.exit(f"{kind} {p} failed: exit {r.returncode}")
            with open(os.path.join(d, "results.json")) as f:
                res = json.load(f)
            out[kind] = (figures(res), time.time() - t0, res["totals"]["clients"])
        real, rt, clients = out["run"]
        model, mt, _ = out["model"]
        print(f"\n{p}: {clients} clients (real {rt:.1f}s wall, model {mt:.2f}s wall)")
        print(f"  {'figure':<18} {'real':>10} {'model':>10} {'error':>8}")
        for k in real:
            rv, mv = real[k], model[k]
            err = "" if rv in (None, 0) or mv is None else f"{(mv - rv) / rv * 100:+.1f}%"
            ok = within(k, rv, mv, clients)
            bad += 0 if ok else 1
            print(f"  {k:<18} {str(rv):>10} {str(mv):>10} {err:>8} {'' if ok else '  <-- outside tolerance'}")
    print(f"\n{bad} figure(s) outside tolerance")


if __name__ == "__main__":
    main()
