//! One plan over several processes: `run --shard I/N --start-at T` against one standalone
//! target, then `wsstorm merge`. The shards together are the plan: the merged totals equal an
//! unsharded run's, exactly, and merged percentiles are those of the shards' histograms added
//! up. What cannot be a shard, or a merge, is refused with exit 2.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use wsstorm::metrics::{decode_histogram, summarize};
use wsstorm::results::Results;

fn wsstorm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wsstorm"))
}

/// A standalone target, stopped when dropped.
struct Target(Child, String);

impl Target {
    fn start() -> Target {
        let (child, url) = crate::common::start_server(&[]);
        Target(child, url)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two groups (Poisson and uniform arrivals, one with heartbeats) that connect and hold.
const PLAN: &str = "
name: sharded
seed: 5
duration: 2500ms
target: ws://127.0.0.1:9/ws
groups:
  - name: a
    clients: 101
    arrival: { rate: 200/s, pattern: poisson }
  - name: b
    clients: 50
    arrival: { rate: 100/s }
    behaviour:
      heartbeat: { ping_every: 500ms, timeout: 1s }
";

fn out(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(profile: &Path, url: &str, extra: &[&str], dir: &Path) -> Command {
    let mut c = wsstorm();
    c.arg("run")
        .arg(profile)
        .args(["--target", url, "--no-tui", "--out"])
        .arg(dir)
        .args(extra);
    c
}

fn start_in(secs: u64) -> String {
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Run `n` shards at once, with a common start, and merge them.
fn sharded(profile: &Path, url: &str, n: u32, dir: &Path) -> Results {
    let start = start_in(3);
    let children: Vec<(PathBuf, Child)> = (0..n)
        .map(|i| {
            let d = dir.join(format!("shard-{i}"));
            let child = run(
                profile,
                url,
                &["--shard", &format!("{i}/{n}"), "--start-at", &start],
                &d,
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
            (d, child)
        })
        .collect();
    let mut files = Vec::new();
    for (d, child) in children {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", out(&o));
        files.push(d.join("results.json"));
    }
    let merged = dir.join("merged");
    let o = wsstorm()
        .arg("merge")
        .args(&files)
        .arg("-o")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let m = Results::read(&merged.join("results.json")).unwrap();
    let report = std::fs::read_to_string(merged.join("report.html")).unwrap();
    assert!(
        report.contains("Each part of the merged run")
            && report.contains(&format!("shard {}/{n}", n - 1)),
        "the report lists every shard's health"
    );
    // The merged percentiles are those of the shards' histograms added up, exactly.
    // Auto-resizing, like the merge's own accumulators.
    let mut combined = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for f in &files {
        let r = Results::read(f).unwrap();
        let shard = r.shard.as_ref().expect("a shard says which");
        assert_eq!(shard.count, n);
        for g in &r.groups {
            let raw = g.raw.as_ref().expect("raw data");
            if let Some(h) = raw.hists.get("connect") {
                combined.add(decode_histogram(h).unwrap()).unwrap();
            }
        }
    }
    assert_eq!(combined.len(), 151, "every connect timed once");
    let expected = summarize(&combined, false);
    let got = &m.latency_us.connect;
    assert_eq!(
        (got.count, got.p50, got.p99, got.max),
        (expected.count, expected.p50, expected.p99, expected.max)
    );
    assert_eq!(m.shards.len(), n as usize, "each shard's health is kept");
    m
}

#[test]
fn two_and_three_shards_merge_to_the_unsharded_run() {
    let target = Target::start();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("plan.yaml");
    std::fs::write(&profile, PLAN).unwrap();
    let o = run(&profile, &target.1, &[], &dir.path().join("whole"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let whole = Results::read(&dir.path().join("whole/results.json")).unwrap();
    assert_eq!(whole.totals.opened, 151);
    for n in [2, 3] {
        let m = sharded(&profile, &target.1, n, &dir.path().join(format!("n{n}")));
        let (w, t) = (&whole.totals, &m.totals);
        assert_eq!(
            (t.clients, t.connect_attempts, t.opened, t.connected_at_end),
            (w.clients, w.connect_attempts, w.opened, w.connected_at_end),
            "{n} shards"
        );
        assert_eq!(t.close_codes, w.close_codes);
        assert_eq!(t.client_closes, w.client_closes);
        for (g, wg) in m.groups.iter().zip(&whole.groups) {
            assert_eq!(g.totals.clients, wg.totals.clients, "group {}", g.name);
            assert_eq!(g.totals.opened, wg.totals.opened, "group {}", g.name);
        }
        assert_eq!(
            m.storm.attempts_per_client.count, whole.storm.attempts_per_client.count,
            "attempts per client merge from their histograms"
        );
        assert_eq!(
            m.timeline.points.iter().map(|p| p.attempts).sum::<u64>(),
            151
        );
        assert_eq!(m.totals.peak_connected, 151, "the aligned timelines add up");
    }
}

#[test]
fn what_cannot_be_a_shard_or_a_merge_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("plan.yaml");
    std::fs::write(&profile, PLAN).unwrap();
    let url = "ws://127.0.0.1:9/ws";
    let refused = |extra: &[&str], env: &[(&str, &str)], says: &str| {
        let mut c = run(&profile, url, extra, &dir.path().join("never"));
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", out(&o));
        assert!(
            out(&o).contains(says),
            "{extra:?} should say `{says}`: {}",
            out(&o)
        );
    };
    refused(&["--shard", "2/2"], &[], "below the count");
    refused(&["--shard", "0/500"], &[], "a shard would have none");
    refused(&["--shard", "x"], &[], "expected I/N");
    refused(
        &["--shards", "4"],
        &[("JOB_COMPLETION_INDEX", "")],
        "JOB_COMPLETION_INDEX",
    );
    refused(
        &["--shards", "4"],
        &[("JOB_COMPLETION_INDEX", "9")],
        "below the count",
    );
    refused(
        &["--shard", "0/2", "--start-at", "2020-01-01T00:00:00Z"],
        &[],
        "in the past",
    );
    refused(
        &["--shard", "0/2", "--start-at", &start_in(3 * 86400)],
        &[],
        "more than a day ahead",
    );
    // The embedded target cannot be sharded.
    let mut c = wsstorm();
    let o = c
        .arg("run")
        .arg(&profile)
        .args(["--target", "embedded", "--shard", "0/2", "--no-tui"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(out(&o).contains("external target"), "{}", out(&o));

    // Merging runs of different plans (another seed) is refused.
    let target = Target::start();
    let mut files = Vec::new();
    for (i, seed) in [(0, "5"), (1, "6")] {
        let d = dir.path().join(format!("s{i}"));
        let o = run(
            &profile,
            &target.1,
            &[
                "--shard",
                &format!("{i}/2"),
                "--seed",
                seed,
                "--duration",
                "1s",
            ],
            &d,
        )
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", out(&o));
        files.push(d.join("results.json"));
    }
    let o = wsstorm()
        .arg("merge")
        .args(&files)
        .args(["-o"])
        .arg(dir.path().join("m"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(out(&o).contains("not parts of one plan"), "{}", out(&o));
    // A shard alone merges, and the result says the others are missing.
    let o = wsstorm()
        .arg("merge")
        .arg(&files[0])
        .args(["-o"])
        .arg(dir.path().join("partial"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let partial = Results::read(&dir.path().join("partial/results.json")).unwrap();
    assert!(
        partial
            .warnings
            .iter()
            .any(|w| w.contains("shards 1 of 2 are missing")),
        "{:?}",
        partial.warnings
    );
    // Whole runs are not shards, unless --sum asks to add them up.
    let o = wsstorm()
        .arg("merge")
        .args([&files[0], &files[0]])
        .args(["-o"])
        .arg(dir.path().join("m2"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(out(&o).contains("both shard 0/2"), "{}", out(&o));
}
