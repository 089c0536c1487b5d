//! Running plans: `wsstorm run`, `compare` and `capacity` all load a profile the same way
//! (the profile, then the command line's overrides, compiled once into a plan, then fitted to
//! this machine) and run each plan through one routine, [`Runner::run`], which owns the live
//! view, Ctrl-C and writing what the run produced.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::watch;

use super::{Failure, runtime, stop_on_signal};
use crate::backoff::Strategy;
use crate::plan::Plan;
use crate::plan::budget::{Limits, fit};
use crate::profile::{Document, Profile};
use crate::results::threshold::{Threshold, caret};
use crate::results::{EndReason, Results};
use crate::swarm::Stop;
use crate::units::Dur;

/// Flags every command that runs a profile takes.
#[derive(Args, Debug, Clone, Default)]
pub struct PlanFlags {
    /// Connect here instead of the profile's target (ws:// or wss:// URL, or `embedded`).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Seed for every random choice (arrivals, jitter, phases).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// A pass/fail condition, e.g. 'rtt.p99 < 50ms' or 'errors.rate < 1%' (repeat it; added
    /// to the profile's `thresholds`). Any failure exits 1.
    #[arg(long = "threshold", value_name = "EXPR")]
    pub thresholds: Vec<String>,
    /// Directory for what the command writes (default: reports/<name>-<time>/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Client worker processes (default: as many as the open-file limit needs; 0 runs the
    /// clients in this process).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

/// How big and how long: for commands that run the profile as it is sized.
#[derive(Args, Debug, Clone, Default)]
pub struct SizeFlags {
    /// Total clients (spread over the groups in their proportions).
    #[arg(long, value_name = "N")]
    pub clients: Option<u32>,
    /// Run time, e.g. 30s or 2m.
    #[arg(long, value_name = "D")]
    pub duration: Option<Dur>,
}

/// How long a run lasts when not the profile's duration.
#[derive(Args, Debug, Clone, Default)]
pub struct UntilFlags {
    /// `recovered`: end the run once every client has settled — connected or given up, none
    /// attempting or in backoff — after the timeline's last action, rather than after the
    /// profile's duration.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<UntilMode>,
    /// With --until: the longest a run may last (default 5m); a run that has not settled by
    /// then ends there, and its results say `max-reached`.
    #[arg(long, value_name = "D")]
    pub max: Option<Dur>,
}

/// When a run `--until` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UntilMode {
    // Every client connected or gave up. (A plain comment: a doc comment here would turn
    // `--help` into clap's long layout, every description on its own line.)
    Recovered,
}

/// `--max` when `--until` gives none.
pub const DEFAULT_MAX: Duration = Duration::from_secs(300);

impl UntilFlags {
    /// Make `plan` last until it settles, when `--until` says so; `--max` alone, or one that
    /// would end the run before its timeline does, is a usage error.
    pub(super) fn apply(&self, plan: &mut Plan) -> Result<(), Failure> {
        let max = match (self.until, self.max) {
            (None, None) => return Ok(()),
            (None, Some(m)) => {
                return Err(Failure::usage(format!(
                    "--max {m} is the cap of a run that lasts --until its clients settle: add --until recovered, or drop --max (without --until a run lasts the profile's duration, which --duration changes)"
                )));
            }
            (Some(UntilMode::Recovered), m) => m.map_or(DEFAULT_MAX, |d| d.0),
        };
        plan.until_recovered(max).map_err(Failure::usage)?;
        plan.source.push_str(&format!(
            "\n# --until recovered --max {}: the run lasts until every client is connected or gave up, at most --max; `duration` does not end it\n",
            Dur(max)
        ));
        Ok(())
    }
}

/// The per-connection event log of `wsstorm run`.
#[derive(Args, Debug, Clone, Default)]
pub struct EventsFlags {
    /// Write a JSON line for each event of the picked clients' connections (attempt, open,
    /// close with code, reason and who closed, error, dead, backoff, give-up) to FILE.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// With --events: the share of clients to log, picked by the seed, e.g. 1% (default: all,
    /// unless --events-clients names some).
    #[arg(long, value_name = "SHARE", requires = "events")]
    pub events_sample: Option<crate::units::Percent>,
    /// With --events: log these client ids, e.g. 1,5,9 (with --events-sample: these too).
    #[arg(long, value_name = "IDS", value_delimiter = ',', requires = "events")]
    pub events_clients: Vec<u32>,
    /// With --events: stop writing past this size, e.g. 10MiB (default 100MiB); the results
    /// and a warning say how many events were not written.
    #[arg(long, value_name = "SIZE", requires = "events")]
    pub events_max: Option<crate::units::ByteSize>,
}

impl EventsFlags {
    /// What to log, if --events asks for a log.
    pub fn spec(&self) -> Option<crate::metrics::events::EventsSpec> {
        let path = self.events.clone()?;
        let sample = match (self.events_sample, self.events_clients.is_empty()) {
            (Some(p), _) => p.0,
            (None, true) => 1.0,
            (None, false) => 0.0,
        };
        Some(crate::metrics::events::EventsSpec {
            path,
            sample,
            clients: self.events_clients.clone(),
            max_bytes: self
                .events_max
                .map_or(crate::metrics::events::DEFAULT_MAX_BYTES, |b| b.0),
        })
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The YAML profile to run.
    pub profile: PathBuf,
    #[command(flatten)]
    pub plan: PlanFlags,
    #[command(flatten)]
    pub size: SizeFlags,
    #[command(flatten)]
    pub until: UntilFlags,
    #[command(flatten)]
    pub shard: super::ShardFlags,
    #[command(flatten)]
    pub events: EventsFlags,
    /// Print progress lines instead of the live dashboard (also when stdout is not a
    /// terminal).
    #[arg(long)]
    pub no_tui: bool,
    #[command(flatten)]
    pub export: super::ExportFlags,
}

pub const COMPARE_HELP: &str = "\
Every group's backoff strategy is replaced by each one in turn (base, cap and max_attempts
stay as the profile has them). Without --strategy, the profile's `compare: { strategies: [...] }`
is used. Writes <out>/<strategy>/{results.json,report.html}, <out>/compare.json and
<out>/compare.html.

Every run lasts the profile's duration, which flatters a slow strategy: its clients still
waiting at the end never make their next attempts. With --until recovered each run lasts until
every client is connected or gave up (after the timeline's last action), at most --max (5m).

Examples:
  wsstorm compare profiles/backoff-jitter.yaml --strategy full-jitter --strategy exponential --strategy fixed
  wsstorm compare profiles/backoff-jitter.yaml --until recovered --max 2m --strategy full-jitter --strategy fixed";

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The YAML profile to run once per strategy.
    pub profile: PathBuf,
    /// A backoff strategy to run (repeat it): none, fixed, exponential, full-jitter,
    /// equal-jitter, decorrelated-jitter.
    #[arg(long = "strategy", value_name = "NAME")]
    pub strategies: Vec<Strategy>,
    #[command(flatten)]
    pub plan: PlanFlags,
    #[command(flatten)]
    pub size: SizeFlags,
    #[command(flatten)]
    pub until: UntilFlags,
    /// Run each strategy in virtual time (`wsstorm model`) instead of over sockets: the
    /// same comparison at any number of clients.
    #[arg(long)]
    pub model: bool,
    /// With --model: the network round trip every connect and upgrade pays (default 100us).
    #[arg(long, value_name = "D", requires = "model")]
    pub rtt: Option<Dur>,
}

pub const CAPACITY_HELP: &str = "\
The profile's `capacity:` section says what to step and how far, its `thresholds:` (and any
--threshold) are the SLO each step must meet:

  capacity:
    vary: connection-rate     # or connections (clients held), message-rate (msg/s)
    start: 100                # first step's load
    step: 100                 # added each step (or `factor: 2`)
    max: 2000                 # ceiling
    hold: 10s                 # each step holds its load this long
    expect: 500               # optional: exit 1 when the last good step is below it
  thresholds:
    - errors.rate < 1%
    - handshake.p99 < 200ms

Each step is a fresh run written to <out>/step-NN-<load>/; <out>/capacity.json and
<out>/capacity.html hold the per-step table, the last good and first bad step, which
threshold broke and whether the limit was the server's or the generator's.

Example:
  wsstorm capacity profiles/capacity-connection-rate.yaml --threshold 'handshake.p99 < 100ms'";

#[derive(Args, Debug)]
pub struct CapacityArgs {
    /// The YAML profile with a `capacity:` section.
    pub profile: PathBuf,
    #[command(flatten)]
    pub plan: PlanFlags,
}

/// Command-line values that replace the profile's own, applied to what the user wrote so the
/// plan is compiled (and checked) once with them.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub target: Option<String>,
    pub clients: Option<u32>,
    pub duration: Option<Duration>,
    pub seed: Option<u64>,
}

impl Overrides {
    pub fn new(plan: &PlanFlags, size: Option<&SizeFlags>) -> Overrides {
        Overrides {
            target: plan.target.clone(),
            clients: size.and_then(|s| s.clients),
            duration: size.and_then(|s| s.duration.map(|d| d.0)),
            seed: plan.seed,
        }
    }

    /// Apply to a parsed profile. `--clients` with several groups keeps their proportions.
    pub fn apply(&self, p: &mut Profile) {
        if let Some(t) = &self.target {
            p.target.url = t.clone();
        }
        if let Some(d) = self.duration {
            p.duration = Dur(d);
        }
        if let Some(s) = self.seed {
            p.seed = Some(s);
        }
        if let Some(n) = self.clients {
            let total: u64 = p.groups.iter().map(|g| u64::from(g.clients)).sum();
            let mut left = n;
            let count = p.groups.len();
            for (i, g) in p.groups.iter_mut().enumerate() {
                let share = if i + 1 == count {
                    left
                } else {
                    (u64::from(n) * u64::from(g.clients))
                        .checked_div(total)
                        .map_or(n / count as u32, |s| s as u32)
                };
                let before = g.clients;
                g.clients = share.min(left);
                left -= g.clients;
                // A staged group's stages reach its `clients` at their peak: scaled with it,
                // each stage keeps its share of the peak.
                if before > 0 {
                    for s in &mut g.stages {
                        let scaled = (u64::from(s.target) * u64::from(g.clients)
                            + u64::from(before) / 2)
                            / u64::from(before);
                        s.target = (scaled as u32).min(g.clients);
                    }
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.target.is_none()
            && self.clients.is_none()
            && self.duration.is_none()
            && self.seed.is_none()
    }

    /// The note results keep of what the command line changed.
    fn note(&self) -> String {
        format!(
            "# command-line overrides: target={:?} clients={:?} duration={:?} seed={:?}\n",
            self.target, self.clients, self.duration, self.seed
        )
    }
}

/// Read a profile and apply the command line to it: the document a plan is compiled from.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Document, Failure> {
    let mut doc = crate::profile::load(path)?;
    if let Some(url) = &overrides.target
        && url != "embedded"
        && doc.profile.target.is_embedded()
    {
        let ignored = configured_server_settings(&doc.profile);
        if !ignored.is_empty() {
            errln!(
                "wsstorm: warning: --target {url} replaces the profile's embedded target; its settings {} are not used (they configure the embedded server), so what they would show is not measured",
                ignored
                    .iter()
                    .map(|k| format!("`target.server.{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if !overrides.is_empty() {
        overrides.apply(&mut doc.profile);
    }
    Ok(doc)
}

/// The `target.server` settings a profile gives other than their defaults.
fn configured_server_settings(p: &Profile) -> Vec<String> {
    let given = serde_json::to_value(&p.target.server).unwrap_or_default();
    let default =
        serde_json::to_value(crate::profile::ServerSettings::default()).unwrap_or_default();
    match (given, default) {
        (serde_json::Value::Object(g), serde_json::Value::Object(d)) => g
            .into_iter()
            .filter(|(k, v)| d.get(k) != Some(v))
            .map(|(k, _)| k)
            .collect(),
        _ => Vec::new(),
    }
}

/// Make sure results can be written to `dir` before a run starts, rather than lose a run at
/// its end: the directory is made, a file written and removed, and the free space checked.
pub(super) fn check_out(dir: &Path) -> Result<(), Failure> {
    let cannot = |e: &dyn std::fmt::Display| {
        Failure::runtime(format!(
            "{}: cannot write results there: {e} (choose another --out)",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| cannot(&e))?;
    let probe = dir.join(".wsstorm-write-check");
    std::fs::write(&probe, b"ok").map_err(|e| cannot(&e))?;
    let _ = std::fs::remove_file(&probe);
    if let Some(free) = crate::os::free_bytes(dir)
        && free < MIN_FREE_BYTES
    {
        return Err(cannot(&format!(
            "only {} KiB free, and a run's results and report take up to {} MiB",
            free >> 10,
            MIN_FREE_BYTES >> 20
        )));
    }
    Ok(())
}

/// Room a run's results.json and report.html may need (histograms, a timeline point every
/// 100 ms, the samples).
const MIN_FREE_BYTES: u64 = 64 << 20;

/// Compile `doc` with the command line's thresholds added; problems an override caused say
/// so.
pub(super) fn compile(
    doc: &Document,
    overrides: &Overrides,
    thresholds: &[(String, Threshold)],
) -> Result<Plan, Failure> {
    let mut plan = Plan::compile(doc).map_err(|e| {
        if overrides.is_empty() {
            Failure::from(e)
        } else {
            Failure::usage(
                e.to_string()
                    .lines()
                    .map(|l| format!("{l} (after command-line overrides)"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        }
    })?;
    if !overrides.is_empty() {
        plan.source = format!("{}\n{}", plan.source, overrides.note());
    }
    if !thresholds.is_empty() {
        let exprs: Vec<&str> = thresholds.iter().map(|(e, _)| e.as_str()).collect();
        plan.source
            .push_str(&format!("\n# command-line thresholds: {exprs:?}\n"));
        plan.thresholds
            .extend(thresholds.iter().map(|(_, t)| t.clone()));
    }
    Ok(plan)
}

/// Lay the plan out over this machine's processes and addresses, or refuse it.
pub(super) fn fit_here(plan: &mut Plan, workers: Option<usize>) -> Result<(), Failure> {
    fit(plan, workers, &Limits::here())
        .map_err(|e| Failure::usage(format!("this run does not fit: {e}")))?;
    for note in &plan.layout.notes {
        errln!("wsstorm: {note}");
    }
    Ok(())
}

/// `--threshold` expressions, or a usage error that points at the offending character.
pub(super) fn parse_thresholds(exprs: &[String]) -> Result<Vec<(String, Threshold)>, Failure> {
    exprs
        .iter()
        .map(|e| {
            Threshold::parse(e).map(|t| (e.clone(), t)).map_err(|err| {
                Failure::usage(format!("--threshold `{e}`: {err}\n{}", caret(e, &err)))
            })
        })
        .collect()
}

/// How a person watches a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum View {
    /// The live dashboard.
    Dashboard,
    /// A progress line a second on stderr.
    Lines,
    /// Nothing while it runs (the steps of a comparison or a capacity search say their own).
    Quiet,
}

/// Runs plans, one after another, on one runtime; Ctrl-C stops the run under way and every
/// later one.
pub(super) struct Runner {
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
    stop: Stop,
    /// While the dashboard owns the terminal, nothing else writes to it.
    dashboard_up: Arc<std::sync::atomic::AtomicBool>,
    /// `--metrics-listen`: shows every run's snapshots.
    export: Option<crate::export::Exporter>,
}

impl Runner {
    pub(super) fn new() -> Result<Runner, Failure> {
        let rt = runtime()?;
        let stop = Stop::new();
        let dashboard_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        rt.spawn(stop_on_signal(
            stop.clone(),
            "stopping — writing the results gathered so far",
            dashboard_up.clone(),
        ));
        Ok(Runner {
            rt: Some(rt),
            stop,
            dashboard_up,
            export: None,
        })
    }

    pub(super) fn interrupted(&self) -> bool {
        self.stop.is_stopped()
    }

    /// Run `plan` to its end, watched as `view` says.
    fn run(&self, plan: &Plan, view: View) -> Result<Results, Failure> {
        let stop = self.stop.child();
        let (tx, mut rx) = watch::channel(Arc::new(crate::metrics::Snapshot::default()));
        if let Some(e) = &self.export {
            e.follow_run(rx.clone(), u64::from(plan.total_clients()));
        }
        let ui = match view {
            View::Dashboard => {
                let info = crate::dashboard::RunInfo {
                    name: plan.name.clone(),
                    target: match &plan.target {
                        crate::plan::PlanTarget::Embedded { .. } => "embedded target".into(),
                        crate::plan::PlanTarget::External { url, .. } => url.clone(),
                    } + if plan.proxy.is_some() {
                        " via proxy"
                    } else {
                        ""
                    },
                    seed: plan.seed,
                    duration: plan.duration,
                    clients: plan.total_clients(),
                    timeline: plan
                        .timeline
                        .iter()
                        .map(|a| (a.at, a.action.to_string()))
                        .collect(),
                    fd_limit: crate::os::raise_fd_limit(),
                    conversations: crate::dashboard::conversation::names(plan),
                };
                match crate::dashboard::Ui::start(info, rx.clone(), stop.clone()) {
                    Ok(ui) => Some(ui),
                    Err(e) => {
                        errln!("wsstorm: no dashboard ({e}); printing progress lines");
                        None
                    }
                }
            }
            View::Lines | View::Quiet => None,
        };
        let lines = view == View::Lines || (view == View::Dashboard && ui.is_none());
        self.dashboard_up
            .store(ui.is_some(), std::sync::atomic::Ordering::Relaxed);
        let (duration, clients) = (plan.duration, plan.total_clients());
        let Some(rt) = &self.rt else {
            return Err(Failure::runtime("the async runtime is gone"));
        };
        let results = rt.block_on(async {
            let progress = tokio::spawn(async move {
                let mut next = Duration::from_secs(1);
                while rx.changed().await.is_ok() {
                    let snap = rx.borrow_and_update().clone();
                    if lines && !snap.finished && snap.elapsed >= next {
                        errln!(
                            "{}",
                            crate::report::text::progress_line(&snap, duration, clients)
                        );
                        next += Duration::from_secs(1);
                    }
                }
            });
            let r = crate::swarm::run(plan, stop, tx).await;
            let _ = progress.await;
            r
        });
        // Give the terminal back before anything is printed.
        if let Some(ui) = ui
            && let Err(e) = ui.finish()
        {
            errln!("wsstorm: the dashboard failed: {e}");
        }
        self.dashboard_up
            .store(false, std::sync::atomic::Ordering::Relaxed);
        results.map_err(|e| Failure::runtime(e.to_string()))
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // Tasks still running (the signal handler) need not hold the exit up.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Write results.json and report.html into `dir`; returns the results' path.
fn write_run(results: &Results, dir: &Path) -> Result<PathBuf, Failure> {
    let path = write_results(results, dir)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Err(e) = crate::report::write(results, dir) {
        errln!("wsstorm: cannot write the report in {}: {e}", dir.display());
    }
    Ok(path)
}

pub fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    let overrides = Overrides::new(&args.plan, Some(&args.size));
    let extra = parse_thresholds(&args.plan.thresholds)?;
    let doc = load(&args.profile, &overrides)?;
    let plan = compile(&doc, &overrides, &extra)?;
    let sharding = args.shard.resolve()?;
    let mut plan = sharding.apply(plan)?;
    args.until.apply(&mut plan)?;
    fit_here(&mut plan, args.plan.workers)?;
    plan.events = args.events.spec();
    check_out(args.plan.out.as_deref().unwrap_or(Path::new("reports")))?;
    let shard_label = sharding.shard.map(|(i, n)| format!("{i}/{n}"));
    let export = args
        .export
        .start(Some(&plan.name), shard_label.as_deref())?;
    let mut runner = Runner::new()?;
    runner.export = export;
    sharding.wait(&|| runner.interrupted())?;
    let view = if !args.no_tui && std::io::stdout().is_terminal() {
        View::Dashboard
    } else {
        View::Lines
    };
    let mut results = runner.run(&plan, view)?;
    results.shard = sharding.info();
    out!("{}", crate::report::text::summary(&results));
    let dir = args
        .plan
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(&results));
    let path = write_results(&results, &dir)?;
    outln!("  results      {}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    match crate::report::write(&results, dir) {
        Ok(report) => outln!("  report       {}", report.display()),
        Err(e) => errln!("wsstorm: cannot write the report in {}: {e}", dir.display()),
    }
    // The runner's Ctrl-C would say it is writing results: the wait has its own.
    let export = runner.export.take();
    drop(runner);
    args.export.linger(export);
    Ok(match results.end_reason {
        EndReason::Interrupted => ExitCode::from(130),
        _ if results.thresholds_passed() == Some(false) => ExitCode::from(1),
        _ if results.failed.is_some() => ExitCode::from(1),
        EndReason::Aborted => ExitCode::from(1),
        EndReason::Completed | EndReason::Stopped | EndReason::Settled | EndReason::MaxReached => {
            ExitCode::SUCCESS
        }
    })
}

pub fn compare(args: CompareArgs) -> Result<ExitCode, Failure> {
    use crate::report::compare::{self as cmp, CompareRow, CompareRun, Comparison};
    let overrides = Overrides::new(&args.plan, Some(&args.size));
    let extra = parse_thresholds(&args.plan.thresholds)?;
    let doc = load(&args.profile, &overrides)?;
    let mut plan = compile(&doc, &overrides, &extra)?;
    args.until.apply(&mut plan)?;
    if args.model {
        crate::model::check(&plan).map_err(|e| Failure::usage(e.to_string()))?;
    } else {
        fit_here(&mut plan, args.plan.workers)?;
    }
    let strategies = if !args.strategies.is_empty() {
        args.strategies.clone()
    } else if !plan.compare.is_empty() {
        plan.compare.clone()
    } else {
        return Err(Failure::usage(
            "nothing to compare: give --strategy two or more times, or add `compare: { strategies: [...] }` to the profile",
        ));
    };
    if strategies.len() < 2 {
        return Err(Failure::usage("compare needs at least two strategies"));
    }
    let runner = Runner::new()?;
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let dir = args
        .plan
        .out
        .clone()
        .unwrap_or_else(|| stamped_dir(&plan.name, "-compare", &started_at));
    check_out(&dir)?;
    let mut runs = Vec::new();
    let mut all = Vec::new();
    for strategy in &strategies {
        if runner.interrupted() {
            break;
        }
        let mut run = plan.with_strategy(*strategy);
        run.source = format!(
            "{}\n# compare: every group's backoff strategy = {strategy}\n",
            plan.source
        );
        errln!(
            "wsstorm compare: {} {} with {strategy}",
            if args.model { "modelling" } else { "running" },
            plan.name
        );
        let results = if args.model {
            super::model::modelled(&run, args.rtt, &runner, false)?
        } else {
            runner.run(&run, View::Quiet)?
        };
        let path = write_run(&results, &dir.join(strategy.name()))?;
        let t = &results.totals;
        errln!(
            "wsstorm compare:   {strategy}: {} attempts, {} of {} connected at the end, {} gave up{}; {}",
            t.connect_attempts,
            t.connected_at_end,
            t.clients,
            t.gave_up,
            results
                .until
                .as_ref()
                .map_or(String::new(), |u| format!(", {}", u.describe())),
            path.display()
        );
        runs.push(CompareRun {
            strategy: strategy.name().to_string(),
            results: format!("{}/results.json", strategy.name()),
            row: CompareRow::from_results(&results),
        });
        all.push(results);
    }
    let comparison = Comparison {
        schema: cmp::SCHEMA.to_string(),
        name: plan.name.clone(),
        seed: plan.seed,
        started_at,
        until: plan.until.map(|u| cmp::CompareUntil {
            mode: crate::results::UNTIL_RECOVERED.to_string(),
            max_ms: u.max.as_millis() as u64,
        }),
        winners: cmp::winners(&runs),
        ranking: Vec::new(),
        verdict: String::new(),
        runs,
    };
    let (ranking, verdict) = cmp::rank(&comparison.runs);
    let comparison = Comparison {
        ranking,
        verdict,
        ..comparison
    };
    let json = serde_json::to_string_pretty(&comparison)
        .map_err(|e| Failure::runtime(format!("compare.json: {e}")))?;
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("compare.json"), json + "\n"))
        .and_then(|_| std::fs::write(dir.join("compare.html"), cmp::render(&comparison, &all)))
        .map_err(|e| Failure::runtime(format!("{}: {e}", dir.display())))?;
    out!("{}", crate::report::text::comparison(&comparison));
    outln!("  comparison   {}", dir.join("compare.json").display());
    outln!("  report       {}", dir.join("compare.html").display());
    for run in &comparison.runs {
        outln!(
            "  {:<12} {}",
            run.strategy,
            dir.join(&run.results).display()
        );
    }
    Ok(if runner.interrupted() {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn capacity(args: CapacityArgs) -> Result<ExitCode, Failure> {
    use crate::plan::capacity as cap;
    use crate::results::capacity::{Capacity, CapacityStep, fmt_load};
    let overrides = Overrides::new(&args.plan, None);
    let extra = parse_thresholds(&args.plan.thresholds)?;
    let doc = load(&args.profile, &overrides)?;
    // The profile as given must compile: its capacity section is checked there.
    let base = compile(&doc, &overrides, &extra)?;
    let Some(settings) = base.capacity.clone() else {
        return Err(Failure::usage(format!(
            "{}: no `capacity:` section, so nothing says what to step (see `wsstorm capacity --help`)",
            args.profile.display()
        )));
    };
    if base.thresholds.is_empty() {
        return Err(Failure::usage(format!(
            "{}: a capacity search needs thresholds (the SLO each step must meet): add `thresholds:` to the profile or give --threshold, e.g. --threshold 'errors.rate < 1%'",
            args.profile.display()
        )));
    }
    let group = settings
        .group
        .clone()
        .unwrap_or_else(|| base.groups[0].name.clone());
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let dir = args
        .plan
        .out
        .clone()
        .unwrap_or_else(|| stamped_dir(&base.name, "-capacity", &started_at));
    check_out(&dir)?;
    let runner = Runner::new()?;
    let loads = cap::steps(&settings);
    let mut steps: Vec<CapacityStep> = Vec::new();
    for (i, &load) in loads.iter().enumerate() {
        if runner.interrupted() {
            break;
        }
        let step = Document {
            profile: cap::step_profile(&doc.profile, &settings, load),
            ..doc.clone()
        };
        let mut plan = compile(&step, &overrides, &extra).map_err(|e| {
            Failure::usage(format!(
                "{}: the step at {} {} is not a valid run: {}",
                args.profile.display(),
                fmt_load(load),
                settings.vary.unit(),
                e.message
            ))
        })?;
        plan.source = format!(
            "{}\n# capacity step {}: {} = {} {} (group {group}), duration {}\n",
            plan.source,
            i + 1,
            settings.vary.name(),
            fmt_load(load),
            settings.vary.unit(),
            step.profile.duration
        );
        fit_here(&mut plan, args.plan.workers)?;
        errln!(
            "wsstorm capacity: step {}/{}: {} {} for {}",
            i + 1,
            loads.len(),
            fmt_load(load),
            settings.vary.unit(),
            step.profile.duration
        );
        let results = runner.run(&plan, View::Quiet)?;
        let name = format!("step-{:02}-{}", i + 1, fmt_load(load));
        write_run(&results, &dir.join(&name))?;
        let step = CapacityStep::from_results(load, format!("{name}/results.json"), &results);
        if step.passed {
            errln!("wsstorm capacity:   pass");
        } else {
            errln!("wsstorm capacity:   FAIL {}", step.why());
        }
        let passed = step.passed;
        steps.push(step);
        if !passed {
            break;
        }
    }
    let c = Capacity::conclude(
        base.name.clone(),
        base.seed,
        started_at,
        &settings,
        group,
        steps,
        runner.interrupted(),
    );
    let json = serde_json::to_string_pretty(&c)
        .map_err(|e| Failure::runtime(format!("capacity.json: {e}")))?;
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("capacity.json"), json + "\n"))
        .and_then(|_| {
            std::fs::write(
                dir.join("capacity.html"),
                crate::report::capacity::render(&c),
            )
        })
        .map_err(|e| Failure::runtime(format!("{}: {e}", dir.display())))?;
    out!("{}", crate::report::text::capacity_summary(&c));
    outln!("  capacity     {}", dir.join("capacity.json").display());
    outln!("  report       {}", dir.join("capacity.html").display());
    Ok(if runner.interrupted() {
        ExitCode::from(130)
    } else if c.expect_met == Some(false) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `reports/<name>-<UTC time>/`, the name made safe for a directory.
pub(super) fn default_out_dir(r: &Results) -> PathBuf {
    stamped_dir(&r.name, "", &r.started_at)
}

/// `reports/<name><kind>-<UTC time to the second>Z/` from an RFC 3339 start time.
pub(super) fn stamped_dir(name: &str, kind: &str, started_at: &str) -> PathBuf {
    let stamp: String = started_at
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    PathBuf::from("reports").join(format!("{}{kind}-{stamp}Z", safe_name(name)))
}

/// Write results; if the chosen directory fails, keep them in the temp directory rather than
/// lose a run.
pub(super) fn write_results(r: &Results, dir: &Path) -> Result<PathBuf, Failure> {
    match r.write(dir) {
        Ok(p) => Ok(p),
        Err(e) => {
            let fallback = std::env::temp_dir().join(format!(
                "wsstorm-{}-{}",
                std::process::id(),
                r.started_at.replace(':', "")
            ));
            match r.write(&fallback) {
                Ok(p) => Err(Failure::runtime(format!(
                    "cannot write results: {e}\nresults saved instead to {}",
                    p.display()
                ))),
                Err(e2) => Err(Failure::runtime(format!(
                    "cannot write results: {e}; nor to {}: {e2}",
                    fallback.display()
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--clients` keeps the groups' proportions, and a staged group's stages keep theirs of
    /// its peak: the profile still compiles.
    #[test]
    fn clients_scale_a_staged_groups_stages() {
        let yaml = "
name: t
duration: 5s
target: embedded
groups:
  - name: ramp
    clients: 200
    stages:
      - { duration: 1s, target: 200 }
      - { duration: 1s, target: 50 }
      - { duration: 1s, target: 0 }
  - name: steady
    clients: 200
    arrival: { rate: 100/s }
";
        let mut doc = crate::profile::parse(yaml, "t.yaml").unwrap();
        let o = Overrides {
            clients: Some(50),
            ..Overrides::default()
        };
        o.apply(&mut doc.profile);
        let targets: Vec<u32> = doc.profile.groups[0]
            .stages
            .iter()
            .map(|s| s.target)
            .collect();
        assert_eq!(doc.profile.groups[0].clients, 25);
        assert_eq!(targets, [25, 6, 0]);
        let plan = crate::plan::Plan::compile(&doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.groups[0].clients, 25);
    }
}
