//! `wsstorm model` against real runs: the shipped storm profiles, as shipped, run over sockets
//! and in virtual time with the same plan and seed. The figures a user reads off a storm must
//! agree within 15 % (or a stated slack for small values), and what stays down must stay down.

use crate::common;

use wsstorm::backoff::Strategy;
use wsstorm::model::{Options, run};
use wsstorm::plan::Plan;
use wsstorm::results::Results;

fn plan(name: &str) -> Plan {
    Plan::load(&common::root().join("profiles").join(format!("{name}.yaml")))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn model(plan: &Plan) -> Results {
    let r = run(plan, &Options::default(), &mut |_| false).unwrap_or_else(|e| panic!("{e}"));
    assert!(r.modelled);
    r
}

/// Times within 15 % or 150 ms plus what a busy machine adds to every real reconnect and the
/// model does not have: the generator's worst lateness, the slowest connect and handshake
/// (see `compare`); counts within 15 % or 5 % of the clients.
fn close(what: &str, real: Option<f64>, model: Option<f64>, slack: f64, errors: &mut Vec<String>) {
    let ok = match (real, model) {
        (None, None) => true,
        (Some(r), Some(m)) => (m - r).abs() <= (0.15 * r.abs()).max(slack),
        _ => false,
    };
    if !ok {
        errors.push(format!("{what}: real {real:?}, model {model:?}"));
    }
}

fn compare(name: &str, real: &Results, model: &Results) {
    let mut errors = Vec::new();
    let clients = real.totals.clients as f64;
    let (r, m) = (&real.storm.recovery_ms, &model.storm.recovery_ms);
    // A real recovery is the backoff delay plus how late the generator started the attempt,
    // plus the connect and the handshake on this machine as busy as it was; the model's is the
    // delay plus two round trips. Their difference is bounded by what the real run recorded.
    let ms = |us: u64| us as f64 / 1000.0;
    let slack = 150.0
        + ms(real.generator.schedule_lag_us.max)
        + ms(real.latency_us.connect.max)
        + ms(real.latency_us.handshake.max);
    close("recovery p50", r.p50, m.p50, slack, &mut errors);
    close("recovery p95", r.p95, m.p95, slack, &mut errors);
    close("recovery p99", r.p99, m.p99, slack, &mut errors);
    let count = |f: fn(&Results) -> u64, what: &str, errors: &mut Vec<String>| {
        close(
            what,
            Some(f(real) as f64),
            Some(f(model) as f64),
            0.05 * clients,
            errors,
        )
    };
    count(|r| r.totals.connect_attempts, "total attempts", &mut errors);
    count(
        |r| r.totals.handshake_status.get("503").copied().unwrap_or(0),
        "503 answers",
        &mut errors,
    );
    count(
        |r| r.storm.peak_attempts_per_s,
        "peak attempts/s",
        &mut errors,
    );
    count(|r| r.storm.losses, "connections lost", &mut errors);
    assert!(
        errors.is_empty(),
        "{name}: the model is off:\n  {}",
        errors.join("\n  ")
    );
}

#[test]
fn the_model_agrees_with_real_runs_of_the_storm_profiles() {
    for name in [
        "mass-drop-reconnect",
        "synchronized-retry",
        "metastable-retry-storm",
        "backoff-contention",
    ] {
        let p = plan(name);
        let (real, modelled) = (common::run_plan(&p), model(&p));
        compare(name, &real, &modelled);
        if name == "metastable-retry-storm" {
            // Stays down in both: a tenth or fewer of the lost clients are back.
            for r in [&real, &modelled] {
                assert!(
                    r.storm.recovered * 10 <= r.storm.losses,
                    "{name} recovered: {:?}",
                    r.storm
                );
            }
        }
    }
}

#[test]
fn the_model_is_deterministic_and_ranks_jitter_first_on_contention() {
    let p = plan("backoff-contention");
    let a = model(&p);
    let b = model(&p);
    assert_eq!(a.totals, b.totals, "same plan and seed, same figures");
    assert_eq!(a.storm, b.storm);
    let p99 = |s: Strategy| model(&p.with_strategy(s)).storm.recovery_ms.p99;
    let full = p99(Strategy::FullJitter).expect("full jitter gets 99 % back");
    for lockstep in [Strategy::None, Strategy::Fixed, Strategy::Exponential] {
        assert!(
            p99(lockstep).is_none_or(|t| t > full * 1.5),
            "{lockstep} vs full jitter {full}"
        );
    }
}

#[test]
fn what_cannot_be_modelled_is_refused_and_what_is_left_out_is_listed() {
    let external = Plan::from_yaml(
        "name: x\nduration: 1s\ntarget: ws://127.0.0.1:9/ws\ngroups:\n  - { name: g, clients: 1, arrival: { rate: 1/s } }\n",
        "x.yaml",
    )
    .unwrap();
    let e = run(&external, &Options::default(), &mut |_| false).unwrap_err();
    assert!(e.to_string().contains("embedded"), "{e}");
    let r = model(&plan("mass-drop-reconnect"));
    let info = r.model.as_ref().expect("model info");
    assert!(
        info.not_modelled.iter().any(|n| n.contains("messages")),
        "{:?}",
        info.not_modelled
    );
    assert!(info.events > 0);
}

fn wsstorm(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wsstorm"))
        .args(args)
        .output()
        .expect("wsstorm runs")
}

#[test]
fn the_model_command_writes_results_and_compares_strategies() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("one");
    let profile = common::root().join("profiles/backoff-contention.yaml");
    let o = wsstorm(&[
        "model",
        profile.to_str().unwrap(),
        "--clients",
        "30000",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out.join("results.json")).unwrap();
    let r: Results = serde_json::from_str(&text).unwrap();
    assert!(r.modelled && text.contains("\"modelled\": true"));
    assert_eq!(r.totals.clients, 30_000);
    assert!(out.join("report.html").exists());
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(summary.contains("modelled"), "{summary}");

    // Two strategies: a comparison, ranked, in virtual time, each until it settled.
    let cmp = dir.path().join("cmp");
    let o = wsstorm(&[
        "compare",
        profile.to_str().unwrap(),
        "--model",
        "--strategy",
        "exponential",
        "--strategy",
        "full-jitter",
        "--until",
        "recovered",
        "--max",
        "2m",
        "--out",
        cmp.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cmp.join("compare.json")).unwrap()).unwrap();
    assert_eq!(c["ranking"][0], "full-jitter", "{c}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout
            .lines()
            .nth(3)
            .is_some_and(|l| l.contains("full-jitter ranks first")),
        "the ordering is in the first lines:\n{stdout}"
    );

    // What cannot be modelled exits 2 with the reason: a profile that compiles against an
    // external target (no timeline actions of the embedded one), refused by the model itself.
    let external = dir.path().join("external.yaml");
    std::fs::write(
        &external,
        "name: x\nduration: 1s\ntarget: ws://127.0.0.1:9/ws\ngroups:\n  - { name: g, clients: 1, arrival: { rate: 1/s } }\n",
    )
    .unwrap();
    let o = wsstorm(&["model", external.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("capacity model"), "{stderr}");
}

/// Ctrl-C ends a long model with the results gathered so far, as it ends a run.
#[test]
fn an_interrupted_model_writes_what_it_modelled() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let profile = common::root().join("bench/model-10m.yaml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wsstorm"))
        .args([
            "model",
            profile.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for its first progress line: the model is under way.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0
        && !line.contains("virtual time)")
    {
        line.clear();
    }
    // SAFETY: kill(2) on the pid of a child we started and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let r = Results::read(&out.join("results.json")).unwrap();
    assert!(r.modelled);
    assert_eq!(
        serde_json::to_value(r.end_reason).unwrap(),
        "interrupted",
        "the results say the model was stopped"
    );
    assert!(r.duration_ms < 20_000, "stopped before the end of its 20s");
    assert!(r.totals.connect_attempts > 0);
}
