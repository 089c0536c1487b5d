#!/usr/bin/env python3
"""The model against real runs: each shipped storm profile run over sockets and in virtual
time with the same plan and seed, figure by figure.

  python3 bench/model-accuracy.py [--clients N] [--profiles a,b,...] [--out DIR]

With --clients N the profile is scaled to N clients the way a bigger fleet would be: clients,
arrival rates and the target's capacity (handshake workers and queue, accept rate and burst)
all grow by N / (the profile's clients), so the storm keeps its shape. Timings stay.

Prints, per profile, the real and the modelled value of recovery p50/p95/p99, total attempts,
503 answers and peak attempts/s, and the model's error. A figure is within tolerance when it
is within 15 % or within the stated absolute slack: 5 % of the clients for counts; for times
150 ms plus the real run's own worst schedule lag, connect and handshake (the model has none
of them; a busy machine adds them to every real reconnect). A real run whose generator warned that this machine
limited it (lag, CPU, file descriptors) measured the machine as much as the storm: its
figures are printed, and counted apart as "machine-bound".
"""
import argparse, json, os, re, subprocess, sys, time

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


def scaled(text, clients):
    """The profile text with its fleet and its target's capacity scaled to `clients`."""
    shipped = sum(int(n) for n in re.findall(r"^\s+clients: (\d+)", text, re.M))
    k = clients / shipped
    def mul(m, key):
        return f"{key}: {max(1, round(float(m.group(2)) * k))}{m.group(3) or ''}"
    for key in ("clients", "rate", "workers", "queue", "accept_rate", "accept_burst"):
        text = re.sub(rf"(?<![\w_])({key}): (\d+(?:\.\d+)?)(/s)?",
                      lambda m, key=key: mul(m, key), text)
    return text


def within(name, real, model, clients, lag_ms):
    if real is None or model is None:
        return real is None and model is None
    slack = 150.0 + lag_ms if name.endswith("ms") else max(5.0, 0.05 * clients)
    return abs(model - real) <= max(0.15 * abs(real), slack)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=None)
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--out", default="/tmp/wsstorm-model-accuracy")
    a = ap.parse_args()
    if not os.path.exists(EXE):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    bad = machine = 0
    for p in a.profiles.split(","):
        prof = os.path.join(ROOT, "profiles", p + ".yaml")
        if a.clients:
            os.makedirs(os.path.join(a.out, p), exist_ok=True)
            with open(prof) as f:
                text = scaled(f.read(), a.clients)
            prof = os.path.join(a.out, p, "profile.yaml")
            with open(prof, "w") as f:
                f.write(text)
        size = []
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
            out[kind] = (figures(res), time.time() - t0, res["totals"]["clients"], res)
        real, rt, clients, rres = out["run"]
        model, mt, _, _ = out["model"]
        # What a busy machine adds to every real reconnect: the generator's lateness and the
        # slowest connect and handshake (the model has none of them).
        lag_ms = (rres["generator"]["schedule_lag_us"]["max"] + rres["latency_us"]["connect"]["max"]
                  + rres["latency_us"]["handshake"]["max"]) / 1000
        bound = rres["generator"]["warnings"]
        print(f"\n{p}: {clients} clients (real {rt:.1f}s wall, lag + connect + handshake max {lag_ms:.0f} ms; model {mt:.2f}s wall)")
        for w in bound:
            print(f"  machine-bound real run: {w}")
        print(f"  {'figure':<18} {'real':>10} {'model':>10} {'error':>8}")
        for k in real:
            rv, mv = real[k], model[k]
            err = "" if rv in (None, 0) or mv is None else f"{(mv - rv) / rv * 100:+.1f}%"
            ok = within(k, rv, mv, clients, lag_ms)
            if not ok and bound:
                machine += 1
                mark = "  <-- outside (machine-bound real run)"
            elif not ok:
                bad += 1
                mark = "  <-- outside tolerance"
            else:
                mark = ""
            print(f"  {k:<18} {str(rv):>10} {str(mv):>10} {err:>8} {mark}")
    print(f"\n{bad} figure(s) outside tolerance; {machine} more where the real run was machine-bound")


if __name__ == "__main__":
    main()
