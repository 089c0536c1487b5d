//! `run --shard I/N --start-at T` and `wsstorm merge`: one plan over many machines, each
//! started by an orchestrator users already have (Kubernetes Indexed Jobs, ssh), merged
//! exactly afterwards.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;

use super::Failure;
use crate::plan::{Plan, PlanTarget};
use crate::results::Results;
use crate::results::merge::{self, Mode, ShardInfo};

/// The furthest ahead a common start may be: beyond it, a typo (a wrong day) is likelier than
/// a plan.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Kubernetes Indexed Jobs give each pod its index here.
const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
const COUNT_ENV: &str = "WSSTORM_SHARDS";
const START_ENV: &str = "WSSTORM_START_AT";

#[derive(Args, Debug, Clone, Default)]
pub struct ShardFlags {
    /// Run shard I of N of the plan (I counts from 0), e.g. `--shard 3/20`: every group's
    /// clients whose index is I modulo N, with their ids, arrival times and seeds.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Run one of N shards, its index taken from the environment as a Kubernetes Indexed Job
    /// gives it (see the examples below); N may come from the environment too.
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Wait for this wall-clock time (RFC 3339, e.g. 2026-12-01T10:00:00Z) before starting,
    /// so the shards on many machines start together (also from the environment).
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,
}

/// What the flags (and the environment) ask for: a shard, and a start time.
pub struct Sharding {
    pub shard: Option<(u32, u32)>,
    pub start_at: Option<(SystemTime, String)>,
}

impl ShardFlags {
    /// Read the flags, then the environment for what they leave out.
    pub fn resolve(&self) -> Result<Sharding, Failure> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let count = match (self.shards, env(COUNT_ENV)) {
            (Some(n), _) => Some(n),
            (None, Some(v)) => Some(v.trim().parse::<u32>().map_err(|_| {
                Failure::usage(format!("{COUNT_ENV}={v}: expected a number of shards"))
            })?),
            (None, None) => None,
        };
        let shard = match (&self.shard, count) {
            (Some(spec), count) => {
                let (i, n) = parse_spec(spec)?;
                if count.is_some_and(|c| c != n) {
                    return Err(Failure::usage(format!(
                        "--shard {spec} says {n} shards but --shards (or {COUNT_ENV}) says {}",
                        count.unwrap_or(0)
                    )));
                }
                Some((i, n))
            }
            (None, Some(n)) => {
                let Some(v) = env(INDEX_ENV) else {
                    return Err(Failure::usage(format!(
                        "--shards {n} needs this shard's index: {INDEX_ENV} is not set (Kubernetes Indexed Jobs set it); give --shard I/{n} instead"
                    )));
                };
                let i = v.trim().parse::<u32>().map_err(|_| {
                    Failure::usage(format!("{INDEX_ENV}={v}: expected a shard index"))
                })?;
                Some((i, n))
            }
            (None, None) => None,
        };
        let start_at = match self.start_at.clone().or_else(|| env(START_ENV)) {
            Some(text) => Some((parse_start(&text, SystemTime::now())?, text)),
            None => None,
        };
        Ok(Sharding { shard, start_at })
    }
}

fn parse_spec(spec: &str) -> Result<(u32, u32), Failure> {
    let bad = || {
        Failure::usage(format!(
            "--shard {spec}: expected I/N, this shard's index from 0 and the number of shards (e.g. 3/20)"
        ))
    };
    let (i, n) = spec.split_once('/').ok_or_else(bad)?;
    let (i, n) = (
        i.trim().parse::<u32>().map_err(|_| bad())?,
        n.trim().parse::<u32>().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(Failure::usage(format!(
            "--shard {spec}: the index counts from 0 and must be below the count (0/{n} … {}/{n})",
            n.saturating_sub(1)
        )));
    }
    Ok((i, n))
}

/// A common start time: not in the past (a shard started late would not line up), not more
/// than a day ahead.
fn parse_start(text: &str, now: SystemTime) -> Result<SystemTime, Failure> {
    let at = humantime::parse_rfc3339_weak(text.trim()).map_err(|e| {
        Failure::usage(format!(
            "--start-at {text}: {e}; expected an RFC 3339 time such as 2026-12-01T10:00:00Z"
        ))
    })?;
    let now_text = humantime::format_rfc3339_seconds(now);
    if at < now {
        return Err(Failure::usage(format!(
            "--start-at {text} is in the past (now {now_text}): start every shard before the common start"
        )));
    }
    if at.duration_since(now).unwrap_or_default() > MAX_WAIT {
        return Err(Failure::usage(format!(
            "--start-at {text} is more than a day ahead (now {now_text}): a wrong date?"
        )));
    }
    Ok(at)
}

impl Sharding {
    /// The plan's shard, or a refusal of what cannot be sharded, with the reason.
    pub fn apply(&self, mut plan: Plan) -> Result<Plan, Failure> {
        // Shards of one run started together carry one run id in their identity headers.
        if let Some((_, text)) = &self.start_at {
            plan.run_id = Some(crate::plan::run_id(&plan.name, plan.seed, text));
        }
        let Some((i, n)) = self.shard else {
            return Ok(plan);
        };
        if let PlanTarget::Embedded { .. } = plan.target {
            return Err(Failure::usage(format!(
                "--shard {i}/{n}: each shard would start its own embedded target, and its timeline actions (drop-all, restart) would hit only that shard's clients: a sharded run needs one external target every shard connects to (`wsstorm serve`, or your server) — give --target ws://HOST:PORT/PATH"
            )));
        }
        plan.shard(i, n)
            .map_err(|e| Failure::usage(format!("--shard {i}/{n}: {e}")))
    }

    /// What results.json records of it.
    pub fn info(&self) -> Option<ShardInfo> {
        self.shard.map(|(index, count)| ShardInfo {
            index,
            count,
            start_at: self.start_at.as_ref().map(|(_, t)| t.clone()),
        })
    }

    /// Sleep until the common start, saying so; `interrupted` ends the wait (Ctrl-C).
    pub fn wait(&self, interrupted: &dyn Fn() -> bool) -> Result<(), Failure> {
        let Some((at, text)) = &self.start_at else {
            return Ok(());
        };
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        errln!(
            "wsstorm: {}waiting {:.1}s for the common start {text}",
            self.shard
                .map(|(i, n)| format!("shard {i}/{n}: "))
                .unwrap_or_default(),
            left.as_secs_f64()
        );
        while let Ok(left) = at.duration_since(SystemTime::now()) {
            if interrupted() {
                return Err(Failure {
                    code: 130,
                    message: "interrupted before the common start: nothing ran".into(),
                });
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The results.json of each shard (or run).
    #[arg(required = true, value_name = "RESULTS")]
    pub results: Vec<PathBuf>,
    /// Where to write the merged results.json and report.html.
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    /// Add up whole runs of the same profile (run without --shard) instead of shards of one.
    #[arg(long)]
    pub sum: bool,
}

pub const MERGE_HELP: &str = "\
Every shard's results.json carries its counters and HdrHistograms whole, so the merge adds
them up exactly: counts summed, histograms merged, timelines aligned on the common start,
storm figures and thresholds recomputed from the merged data. Each shard's generator health
is kept under `shards` (which one was late or saturated). Results of different profiles,
seeds or schema versions are refused.

Examples:
  wsstorm merge results/shard-*/results.json -o results/merged
  wsstorm merge run-a/results.json run-b/results.json --sum -o both";

pub fn merge(args: MergeArgs) -> Result<ExitCode, Failure> {
    let mut inputs = Vec::new();
    for p in &args.results {
        let r = Results::read(p).map_err(|e| Failure::usage(e.to_string()))?;
        inputs.push((p.display().to_string(), r));
    }
    let mode = if args.sum { Mode::Sum } else { Mode::Shards };
    // The profile the results carry, compiled, for what results.json does not hold.
    let facts = inputs
        .first()
        .and_then(|(path, r)| Plan::from_yaml(&r.profile, path).ok())
        .map(|p| merge::PlanFacts {
            conversation_names: p.conversation_names(),
            expect_failures: p.expect_failures,
        })
        .unwrap_or_default();
    let merged = merge::merge(&inputs, mode, &facts).map_err(Failure::usage)?;
    out!("{}", crate::report::text::summary(&merged));
    for s in &merged.shards {
        outln!(
            "  part         {}: {} clients, {} connected at end, lag p99 {:.1} ms, {}{}",
            s.shard
                .as_ref()
                .map(|i| format!("shard {}/{}", i.index, i.count))
                .unwrap_or_else(|| s.file.clone()),
            s.clients,
            s.connected_at_end,
            s.schedule_lag_p99_us as f64 / 1000.0,
            serde_json::to_value(s.end_reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            if s.warnings.is_empty() {
                String::new()
            } else {
                format!(" — {}", s.warnings.join("; "))
            }
        );
    }
    let path = super::run::write_results(&merged, &args.out)?;
    outln!("  results      {}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    match crate::report::write(&merged, dir) {
        Ok(report) => outln!("  report       {}", report.display()),
        Err(e) => errln!("wsstorm: cannot write the report in {}: {e}", dir.display()),
    }
    Ok(if merged.thresholds_passed() == Some(false) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_specs_and_start_times() {
        assert_eq!(parse_spec("3/20").ok(), Some((3, 20)));
        assert!(parse_spec("20/20").is_err());
        assert!(parse_spec("0/0").is_err());
        assert!(parse_spec("3").is_err());
        assert!(parse_spec("a/b").is_err());
        let now = humantime::parse_rfc3339("2026-12-01T10:00:00Z").unwrap();
        assert!(parse_start("2026-12-01T10:00:05Z", now).is_ok());
        assert!(parse_start("2026-12-01T09:59:59Z", now).is_err(), "past");
        assert!(
            parse_start("2026-12-03T10:00:00Z", now).is_err(),
            "two days ahead"
        );
        assert!(parse_start("tomorrow", now).is_err());
    }

    /// Shards of one run given the same common start carry one run id in their identity
    /// headers; another start (another run) gets another.
    #[test]
    fn shards_with_one_start_share_the_run_id() {
        let yaml = "
name: t
duration: 1s
target: ws://127.0.0.1:9/ws
groups: [ { name: g, clients: 10, arrival: { rate: 10/s } } ]
";
        let at = |text: &str| Sharding {
            shard: None,
            start_at: Some((SystemTime::now(), text.to_string())),
        };
        let id = |s: &Sharding, i: u32| {
            let s = Sharding {
                shard: Some((i, 2)),
                start_at: s.start_at.clone(),
            };
            s.apply(Plan::from_yaml(yaml, "t").unwrap())
                .ok()
                .and_then(|p| p.run_id)
                .unwrap()
        };
        let one = at("2026-12-01T10:00:00Z");
        assert_eq!(id(&one, 0), id(&one, 1));
        assert_ne!(id(&one, 0), id(&at("2026-12-01T10:00:01Z"), 0));
        // Without a common start the run fixes its id when it starts.
        let alone = Sharding {
            shard: None,
            start_at: None,
        };
        assert_eq!(
            alone
                .apply(Plan::from_yaml(yaml, "t").unwrap())
                .ok()
                .unwrap()
                .run_id,
            None
        );
    }
}
