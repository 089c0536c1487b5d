//! Command line: raw arguments become a validated plan before anything runs, and every outcome
//! maps to one exit code in `main`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::plan::{Overrides, Plan};
use crate::profile::{self, ProfileError};
use crate::results::{EndReason, Results};
use crate::server::Server;
use crate::units::{Dur, Rate};

const EXAMPLES: &str = "\
Examples:
  wsstorm run profiles/quickstart.yaml
      1,000 clients against the embedded server; drop-all at 10s; results in reports/
  wsstorm run profiles/quickstart.yaml --clients 200 --duration 15s --out /tmp/qs
  wsstorm serve --listen 127.0.0.1:9001
  wsstorm run profiles/quickstart.yaml --target ws://127.0.0.1:9001/ws
      (timeline actions of the embedded server need `target: embedded`)
  wsstorm proxy --listen 127.0.0.1:9100 --upstream 127.0.0.1:9001
  wsstorm run profiles/quickstart.yaml --threshold 'rtt.p99 < 50ms' --threshold 'gave_up == 0'
      exit 1 when a threshold fails (CI gate)
  wsstorm capacity profiles/capacity-connection-rate.yaml
      step the load up until the profile's thresholds break
  wsstorm compare profiles/backoff-jitter.yaml --strategy full-jitter --strategy exponential
  wsstorm report reports/quickstart-20261125T220520Z/results.json
  wsstorm validate profiles/quickstart.yaml

Exit codes: 0 ok (also stopped with q in the dashboard), 1 a threshold failed (or a
capacity search fell short of `expect`), 2 bad profile or arguments, 3 could not run
(target, output), 130 interrupted (Ctrl-C, SIGTERM).";

#[derive(Parser, Debug)]
#[command(
    name = "wsstorm",
    version,
    about = "WebSocket load and reconnect-storm simulator",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a behaviour profile and write results.json.
    #[command(after_help = EXAMPLES)]
    Run(RunArgs),
    /// Run the embedded target server on its own (echo, accept-rate capacity).
    Serve(ServeArgs),
    /// Run the TCP fault proxy on its own, with an HTTP control API.
    #[command(after_help = PROXY_HELP)]
    Proxy(ProxyArgs),
    /// Render report.html again from a results.json.
    Report {
        /// The results.json of a run.
        results: PathBuf,
        /// Where to write the report (default: report.html beside the results).
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Run a profile once per backoff strategy (same seed) and compare them.
    #[command(after_help = COMPARE_HELP)]
    Compare(CompareArgs),
    /// Step the load up, one run per step, until the thresholds break; report the knee.
    #[command(after_help = CAPACITY_HELP)]
    Capacity(CapacityArgs),
    /// Run one shard of a plan for a coordinating `wsstorm run` (started by it, not by hand).
    #[command(hide = true)]
    Worker,
    /// One process of a multi-process embedded server (started by `wsstorm run`).
    #[command(hide = true)]
    ServerWorker,
    /// Check a profile and print its plan without running it.
    Validate {
        /// The YAML profile.
        profile: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The YAML profile to run.
    pub profile: PathBuf,
    /// Connect here instead of the profile's target (ws:// or wss:// URL, or `embedded`).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Total clients (spread over the groups in their proportions).
    #[arg(long, value_name = "N")]
    pub clients: Option<u32>,
    /// Run time, e.g. 30s or 2m.
    #[arg(long, value_name = "D")]
    pub duration: Option<Dur>,
    /// Seed for every random choice (arrivals, jitter, phases).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Directory for results.json (default: reports/<name>-<time>/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Client worker processes (default: as many as the open-file limit needs; 0 runs the
    /// clients in this process).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Print progress lines instead of the live dashboard (also when stdout is not a
    /// terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// A pass/fail condition, e.g. 'rtt.p99 < 50ms' or 'errors.rate < 1%' (repeat it; added
    /// to the profile's `thresholds`). Any failure exits 1.
    #[arg(long = "threshold", value_name = "EXPR")]
    pub thresholds: Vec<String>,
}

const CAPACITY_HELP: &str = "\
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
threshold broke and whether the limit was the server's or the generator's.";

#[derive(Args, Debug)]
pub struct CapacityArgs {
    pub profile: PathBuf,
    /// Add a threshold to the SLO (repeat it).
    #[arg(long = "threshold", value_name = "EXPR")]
    pub thresholds: Vec<String>,
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Directory for the steps and the summary (default: reports/<name>-capacity-<time>/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Client worker processes (default: as many as the open-file limit needs).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

const PROXY_HELP: &str = "\
Control API (JSON over HTTP, loopback by default):
  GET    /connections   open connections
  GET    /faults        faults in force
  POST   /faults        add one, e.g. {\"kind\":\"latency\",\"delay\":\"100ms\",\"jitter\":\"10ms\"}
                        kinds: cut, blackhole, latency, bandwidth, slicer, idle-timeout,
                        refuse, partition; common fields: share, direction, duration
  DELETE /faults/ID     remove one;  DELETE /faults  remove all
  GET    /stats         counters

Example:
  wsstorm proxy --listen 127.0.0.1:9100 --upstream 127.0.0.1:9001
  curl -X POST localhost:9101/faults -d '{\"kind\":\"cut\",\"mode\":\"reset\",\"share\":\"30%\"}'";

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:9100", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Where connections are forwarded (host:port).
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream: String,
    /// Address of the control API (default: the listen port + 1).
    #[arg(long, value_name = "ADDR")]
    pub control: Option<std::net::SocketAddr>,
    /// Bytes read per chunk.
    #[arg(long, default_value = "16KiB")]
    pub buffer: crate::units::ByteSize,
}

const COMPARE_HELP: &str = "\
Every group's backoff strategy is replaced by each one in turn (base, cap and max_attempts
stay as the profile has them). Without --strategy, the profile's `compare: { strategies: [...] }`
is used. Writes <out>/<strategy>/{results.json,report.html}, <out>/compare.json and
<out>/compare.html.

Example:
  wsstorm compare profiles/backoff-jitter.yaml --strategy full-jitter --strategy exponential --strategy fixed";

#[derive(Args, Debug)]
pub struct CompareArgs {
    pub profile: PathBuf,
    /// A backoff strategy to run (repeat it): none, fixed, exponential, full-jitter,
    /// equal-jitter, decorrelated-jitter.
    #[arg(long = "strategy", value_name = "NAME")]
    pub strategies: Vec<crate::backoff::Strategy>,
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    #[arg(long, value_name = "N")]
    pub clients: Option<u32>,
    #[arg(long, value_name = "D")]
    pub duration: Option<Dur>,
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Directory for the runs and the comparison (default: reports/<name>-compare-<time>/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Client worker processes (default: as many as the open-file limit needs).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Serve the embedded target a profile describes (its `target.server` section: stream,
    /// auth, limits, TLS, ...). The flags below override it.
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<PathBuf>,
    /// The upgrade path; other paths get 404 (default /ws).
    #[arg(long)]
    pub path: Option<String>,
    /// Handshakes admitted per second (e.g. 500/s); the rest get 503 with Retry-After.
    #[arg(long, value_name = "RATE")]
    pub accept_rate: Option<Rate>,
    /// Token-bucket burst for --accept-rate.
    #[arg(long, value_name = "N")]
    pub accept_burst: Option<u32>,
    /// Retry-After sent with a 503 (default 1s).
    #[arg(long)]
    pub retry_after: Option<Dur>,
    /// Listen backlog (default 4096).
    #[arg(long)]
    pub backlog: Option<u32>,
}

/// An error and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            code: 3,
            message: message.into(),
        }
    }
}

impl From<ProfileError> for Failure {
    fn from(e: ProfileError) -> Failure {
        Failure::usage(e.to_string())
    }
}

pub fn main() -> Result<ExitCode, Failure> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Serve(args) => serve(args),
        Command::Proxy(args) => proxy(args),
        Command::Report { results, out } => {
            let r = Results::read(&results).map_err(|e| Failure::usage(e.to_string()))?;
            let out = out.unwrap_or_else(|| {
                results
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("report.html")
            });
            std::fs::write(&out, crate::report::render(&r)).map_err(|e| {
                Failure::runtime(format!("{}: cannot write the report: {e}", out.display()))
            })?;
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare(args) => compare(args),
        Command::Capacity(args) => capacity(args),
        Command::ServerWorker => {
            let rt = runtime()?;
            rt.block_on(crate::server::processes::server_worker_main())
                .map_err(|e| Failure::runtime(format!("server worker: {e}")))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker => {
            let rt = runtime()?;
            rt.block_on(crate::swarm::workers::worker_main())
                .map_err(|e| Failure::runtime(format!("worker: {e}")))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { profile } => {
            let plan = load_plan(&profile, &Overrides::default())?;
            print!("{}", describe(&plan));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Load, apply overrides, validate again (an override can make a profile invalid, e.g.
/// `--target ws://…` with an embedded-server timeline action), and plan.
pub fn load_plan(path: &Path, overrides: &Overrides) -> Result<Plan, Failure> {
    let (p, text) = load_profile(path, overrides)?;
    Ok(Plan::new(&p, text))
}

/// Check the run fits this machine (open files, ports) and lay it out over processes.
fn fit_plan(
    profile: &mut profile::Profile,
    workers: Option<usize>,
) -> Result<crate::plan::budget::Fit, Failure> {
    let fit = crate::plan::budget::fit(profile, workers, &crate::plan::budget::Limits::here())
        .map_err(|e| Failure::usage(format!("this run does not fit: {e}")))?;
    for note in &fit.notes {
        eprintln!("wsstorm: {note}");
    }
    Ok(fit)
}

fn plan_with(profile: &profile::Profile, text: String, fit: &crate::plan::budget::Fit) -> Plan {
    let mut plan = Plan::new(profile, text);
    plan.workers = fit.workers;
    plan.target_processes = fit.target_processes;
    plan
}

/// The profile with command-line overrides applied and checked again, and its text for the
/// results (overrides noted at the end).
pub fn load_profile(
    path: &Path,
    overrides: &Overrides,
) -> Result<(profile::Profile, String), Failure> {
    let (mut p, text) = profile::load(path)?;
    if overrides.is_empty() {
        return Ok((p, text));
    }
    overrides.apply(&mut p);
    let file = path.display().to_string();
    let problems: Vec<String> = profile::validate(&p)
        .into_iter()
        .map(|(path_in_doc, msg)| {
            let at = profile::locate(&text, &path_in_doc)
                .map(|(l, c)| format!(":{l}:{c}"))
                .unwrap_or_default();
            format!("{file}{at}: {path_in_doc}: {msg} (after command-line overrides)")
        })
        .collect();
    if !problems.is_empty() {
        return Err(Failure::usage(problems.join("\n")));
    }
    let yaml = format!(
        "{text}\n# command-line overrides: target={:?} clients={:?} duration={:?} seed={:?}\n",
        overrides.target, overrides.clients, overrides.duration, overrides.seed
    );
    Ok((p, yaml))
}

fn describe(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {} clients over {:?}, seed {}",
        plan.name,
        plan.total_clients(),
        plan.duration,
        plan.seed
    );
    match &plan.target {
        crate::plan::PlanTarget::Embedded { config, .. } => {
            let _ = writeln!(
                o,
                "  target: embedded server on {}{}",
                config.listen, config.path
            );
        }
        crate::plan::PlanTarget::External { url } => {
            let _ = writeln!(o, "  target: {url}");
        }
    }
    for g in &plan.groups {
        let _ = writeln!(
            o,
            "  group {}: {} clients at {}/s from {:?}, backoff {} {:?}..{:?}",
            g.name,
            g.clients,
            g.rate,
            g.start,
            g.behaviour.backoff.strategy.name(),
            g.behaviour.backoff.base,
            g.behaviour.backoff.cap
        );
    }
    for a in &plan.timeline {
        let _ = writeln!(o, "  at {:?}: {}", a.at, a.action);
    }
    o
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
}

/// Cancel `stop` on Ctrl-C or SIGTERM.
async fn stop_on_signal(stop: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    eprintln!("wsstorm: stopping — writing the results gathered so far");
    stop.cancel();
}

fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    let overrides = Overrides {
        target: args.target.clone(),
        clients: args.clients,
        duration: args.duration.map(|d| d.0),
        seed: args.seed,
    };
    let extra = parse_thresholds(&args.thresholds)?;
    let (mut profile, mut text) = load_profile(&args.profile, &overrides)?;
    let fit = fit_plan(&mut profile, args.workers)?;
    if !args.thresholds.is_empty() {
        text.push_str(&format!(
            "\n# command-line thresholds: {:?}\n",
            args.thresholds
        ));
    }
    let mut plan = plan_with(&profile, text, &fit);
    plan.thresholds.extend(extra);
    let rt = runtime()?;
    let stop = CancellationToken::new();
    let (tx, mut rx) = watch::channel(Arc::new(crate::metrics::Snapshot::default()));
    // The dashboard when a person is watching; progress lines for logs and pipes.
    let ui = if !args.no_tui && std::io::stdout().is_terminal() {
        let info = crate::dashboard::RunInfo {
            name: plan.name.clone(),
            target: match &plan.target {
                crate::plan::PlanTarget::Embedded { .. } => "embedded target".into(),
                crate::plan::PlanTarget::External { url } => url.clone(),
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
        };
        match crate::dashboard::Ui::start(info, rx.clone(), stop.clone()) {
            Ok(ui) => Some(ui),
            Err(e) => {
                eprintln!("wsstorm: no dashboard ({e}); printing progress lines");
                None
            }
        }
    } else {
        None
    };
    let lines = ui.is_none();
    let results = rt.block_on(async {
        tokio::spawn(stop_on_signal(stop.clone()));
        let (duration, clients) = (plan.duration, plan.total_clients());
        let progress = tokio::spawn(async move {
            let mut next = Duration::from_secs(1);
            while rx.changed().await.is_ok() {
                let snap = rx.borrow_and_update().clone();
                if lines && snap.elapsed >= next {
                    eprintln!(
                        "{}",
                        crate::report::text::progress_line(&snap, duration, clients)
                    );
                    next += Duration::from_secs(1);
                }
            }
        });
        let r = crate::swarm::run(&plan, stop.clone(), tx).await;
        let _ = progress.await;
        r
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    // Give the terminal back before anything is printed.
    let mut results = results;
    if let Some(ui) = ui {
        let exit = ui.exit.clone();
        if let Err(e) = ui.finish() {
            eprintln!("wsstorm: the dashboard failed: {e}");
        }
        if let Ok(r) = &mut results
            && exit.stopped()
            && !exit.interrupted()
        {
            r.end_reason = EndReason::Stopped;
        }
    }
    let results = results.map_err(|e| Failure::runtime(e.to_string()))?;
    print!("{}", crate::report::text::summary(&results));
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(&results));
    let path = write_results(&results, &dir)?;
    println!("  results      {}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    match crate::report::write(&results, dir) {
        Ok(report) => println!("  report       {}", report.display()),
        Err(e) => eprintln!("wsstorm: cannot write the report in {}: {e}", dir.display()),
    }
    Ok(match results.end_reason {
        EndReason::Interrupted => ExitCode::from(130),
        _ if results.thresholds_passed() == Some(false) => ExitCode::from(1),
        EndReason::Aborted => ExitCode::from(1),
        EndReason::Completed | EndReason::Stopped => ExitCode::SUCCESS,
    })
}

/// `--threshold` expressions, or a usage error that points at the offending character.
fn parse_thresholds(
    exprs: &[String],
) -> Result<Vec<crate::results::threshold::Threshold>, Failure> {
    exprs
        .iter()
        .map(|e| {
            crate::results::threshold::Threshold::parse(e).map_err(|err| {
                Failure::usage(format!(
                    "--threshold `{e}`: {err}\n{}",
                    crate::results::threshold::caret(e, &err)
                ))
            })
        })
        .collect()
}

fn capacity(args: CapacityArgs) -> Result<ExitCode, Failure> {
    use crate::plan::capacity as cap;
    use crate::results::capacity::{Capacity, CapacityStep, fmt_load};
    let overrides = Overrides {
        target: args.target.clone(),
        seed: args.seed,
        ..Overrides::default()
    };
    let extra = parse_thresholds(&args.thresholds)?;
    let (profile, text) = load_profile(&args.profile, &overrides)?;
    let Some(settings) = profile.capacity.clone() else {
        return Err(Failure::usage(format!(
            "{}: no `capacity:` section, so nothing says what to step (see `wsstorm capacity --help`)",
            args.profile.display()
        )));
    };
    if profile.thresholds.is_empty() && extra.is_empty() {
        return Err(Failure::usage(format!(
            "{}: a capacity search needs thresholds (the SLO each step must meet): add `thresholds:` to the profile or give --threshold, e.g. --threshold 'errors.rate < 1%'",
            args.profile.display()
        )));
    }
    let group = settings
        .group
        .clone()
        .unwrap_or_else(|| profile.groups[0].name.clone());
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| stamped_dir(&profile.name, "-capacity", &started_at));
    let rt = runtime()?;
    let stop = CancellationToken::new();
    rt.block_on(async {
        tokio::spawn(stop_on_signal(stop.clone()));
    });
    let loads = cap::steps(&settings);
    let mut steps: Vec<CapacityStep> = Vec::new();
    for (i, &load) in loads.iter().enumerate() {
        if stop.is_cancelled() {
            break;
        }
        let mut p = cap::step_profile(&profile, &settings, load);
        let problems = profile::validate(&p);
        if !problems.is_empty() {
            return Err(Failure::usage(format!(
                "{}: the step at {} {} is not a valid run: {}",
                args.profile.display(),
                fmt_load(load),
                settings.vary.unit(),
                problems
                    .iter()
                    .map(|(path, m)| format!("{path}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        let fit = fit_plan(&mut p, args.workers)?;
        let mut plan = plan_with(
            &p,
            format!(
                "{text}\n# capacity step {}: {} = {} {} (group {group}), duration {}\n",
                i + 1,
                settings.vary.name(),
                fmt_load(load),
                settings.vary.unit(),
                p.duration
            ),
            &fit,
        );
        plan.thresholds.extend(extra.iter().cloned());
        eprintln!(
            "wsstorm capacity: step {}/{}: {} {} for {}",
            i + 1,
            loads.len(),
            fmt_load(load),
            settings.vary.unit(),
            p.duration
        );
        let (tx, _rx) = watch::channel(Arc::new(crate::metrics::Snapshot::default()));
        let results = rt
            .block_on(crate::swarm::run(&plan, stop.clone(), tx))
            .map_err(|e| Failure::runtime(e.to_string()))?;
        let name = format!("step-{:02}-{}", i + 1, fmt_load(load));
        let run_dir = dir.join(&name);
        write_results(&results, &run_dir)?;
        let _ = crate::report::write(&results, &run_dir);
        let step = CapacityStep::from_results(load, format!("{name}/results.json"), &results);
        eprintln!(
            "wsstorm capacity:   {} {}",
            if step.passed { "pass" } else { "FAIL" },
            if step.passed {
                String::new()
            } else {
                step.why()
            }
        );
        let passed = step.passed;
        steps.push(step);
        if !passed {
            break;
        }
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    let c = Capacity::conclude(
        profile.name.clone(),
        profile.seed.unwrap_or(crate::plan::DEFAULT_SEED),
        started_at,
        &settings,
        group,
        steps,
        stop.is_cancelled(),
    );
    let json = serde_json::to_string_pretty(&c).expect("capacity serializes");
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("capacity.json"), json + "\n"))
        .and_then(|_| {
            std::fs::write(
                dir.join("capacity.html"),
                crate::report::capacity::render(&c),
            )
        })
        .map_err(|e| Failure::runtime(format!("{}: {e}", dir.display())))?;
    print!("{}", crate::report::text::capacity_summary(&c));
    println!("  capacity     {}", dir.join("capacity.json").display());
    println!("  report       {}", dir.join("capacity.html").display());
    Ok(if stop.is_cancelled() {
        ExitCode::from(130)
    } else if c.expect_met == Some(false) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn compare(args: CompareArgs) -> Result<ExitCode, Failure> {
    use crate::report::compare::{self as cmp, CompareRow, CompareRun, Comparison};
    let overrides = Overrides {
        target: args.target.clone(),
        clients: args.clients,
        duration: args.duration.map(|d| d.0),
        seed: args.seed,
    };
    let (mut profile, text) = load_profile(&args.profile, &overrides)?;
    let fit = fit_plan(&mut profile, args.workers)?;
    let strategies = if !args.strategies.is_empty() {
        args.strategies.clone()
    } else if let Some(c) = &profile.compare {
        c.strategies.clone()
    } else {
        return Err(Failure::usage(
            "nothing to compare: give --strategy two or more times, or add `compare: { strategies: [...] }` to the profile",
        ));
    };
    if strategies.len() < 2 {
        return Err(Failure::usage("compare needs at least two strategies"));
    }
    let rt = runtime()?;
    let stop = CancellationToken::new();
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| stamped_dir(&profile.name, "-compare", &started_at));
    let mut runs = Vec::new();
    let mut all = Vec::new();
    rt.block_on(async {
        tokio::spawn(stop_on_signal(stop.clone()));
    });
    for strategy in &strategies {
        if stop.is_cancelled() {
            break;
        }
        let mut p = profile.clone();
        for g in &mut p.groups {
            g.behaviour.reconnect.backoff.strategy = *strategy;
        }
        let plan = plan_with(
            &p,
            format!("{text}\n# compare: every group's backoff strategy = {strategy}\n"),
            &fit,
        );
        eprintln!("wsstorm compare: running {} with {strategy}", plan.name);
        let (tx, _rx) = watch::channel(Arc::new(crate::metrics::Snapshot::default()));
        let results = rt
            .block_on(crate::swarm::run(&plan, stop.clone(), tx))
            .map_err(|e| Failure::runtime(e.to_string()))?;
        let run_dir = dir.join(strategy.name());
        write_results(&results, &run_dir)?;
        let _ = crate::report::write(&results, &run_dir);
        runs.push(CompareRun {
            strategy: strategy.name().to_string(),
            results: format!("{}/results.json", strategy.name()),
            row: CompareRow::from_results(&results),
        });
        all.push(results);
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    let comparison = Comparison {
        schema: cmp::SCHEMA.to_string(),
        name: profile.name.clone(),
        seed: profile.seed.unwrap_or(crate::plan::DEFAULT_SEED),
        started_at,
        winners: cmp::winners(&runs),
        runs,
    };
    let json = serde_json::to_string_pretty(&comparison).expect("comparison serializes");
    std::fs::write(dir.join("compare.json"), json + "\n")
        .and_then(|_| std::fs::write(dir.join("compare.html"), cmp::render(&comparison, &all)))
        .map_err(|e| Failure::runtime(format!("{}: {e}", dir.display())))?;
    print!("{}", crate::report::text::comparison(&comparison));
    println!("  comparison   {}", dir.join("compare.html").display());
    Ok(if stop.is_cancelled() {
        ExitCode::from(130)
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
fn default_out_dir(r: &Results) -> PathBuf {
    stamped_dir(&r.name, "", &r.started_at)
}

/// `reports/<name><kind>-<UTC time to the second>Z/` from an RFC 3339 start time.
fn stamped_dir(name: &str, kind: &str, started_at: &str) -> PathBuf {
    let stamp: String = started_at
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    PathBuf::from("reports").join(format!("{}{kind}-{stamp}Z", safe_name(name)))
}

/// Write results; if the chosen directory fails, keep them in the temp directory rather than
/// lose a run.
fn write_results(r: &Results, dir: &Path) -> Result<PathBuf, Failure> {
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

fn proxy(args: ProxyArgs) -> Result<ExitCode, Failure> {
    use crate::proxy::{Proxy, ProxyConfig, bind_control, serve_control};
    crate::os::raise_fd_limit();
    let upstream = std::net::ToSocketAddrs::to_socket_addrs(&args.upstream)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            Failure::usage(format!(
                "--upstream `{}` is not a reachable host:port",
                args.upstream
            ))
        })?;
    if !(512..=16 << 20).contains(&args.buffer.0) {
        return Err(Failure::usage("--buffer must be between 512B and 16MiB"));
    }
    let control = args.control.unwrap_or_else(|| {
        let mut c = args.listen;
        if c.port() != 0 {
            c.set_port(c.port().wrapping_add(1));
        }
        c
    });
    let mut config = ProxyConfig::new(args.listen, upstream);
    config.buffer = args.buffer.0 as usize;
    let rt = runtime()?;
    rt.block_on(async {
        let proxy = Proxy::bind(config)
            .await
            .map_err(|e| Failure::runtime(format!("cannot listen on {}: {e}", args.listen)))?;
        let control_listener = bind_control(control)
            .await
            .map_err(|e| Failure::runtime(format!("cannot listen on {control}: {e}")))?;
        let handle = proxy.handle();
        println!(
            "wsstorm proxy: listening on {}, forwarding to {upstream}; control API on http://{}",
            handle.local_addr(),
            control_listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        let stop = CancellationToken::new();
        tokio::spawn(stop_on_signal(stop.clone()));
        tokio::spawn(serve_control(
            control_listener,
            handle.clone(),
            stop.clone(),
        ));
        proxy.run(stop).await;
        let s = handle.stats();
        println!(
            "wsstorm proxy: stopped; accepted {}, cut {}, idle timeouts {}, bytes up {}, down {}",
            s.accepted, s.cut, s.idle_timeouts, s.bytes_upstream, s.bytes_downstream
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn serve(args: ServeArgs) -> Result<ExitCode, Failure> {
    let mut config = match &args.profile {
        Some(p) => crate::plan::server_config(&profile::load(p)?.0.target.server),
        None => crate::plan::server_config(&Default::default()),
    };
    config.listen = args.listen;
    if let Some(path) = args.path {
        if !path.starts_with('/') {
            return Err(Failure::usage(format!("--path `{path}` must start with /")));
        }
        config.path = path;
    }
    if let Some(r) = args.accept_rate {
        config.accept_rate = Some(r.0);
    }
    if let Some(b) = args.accept_burst {
        config.accept_burst = Some(b);
    }
    if let Some(r) = args.retry_after {
        config.retry_after = r.0;
    }
    if let Some(b) = args.backlog {
        config.backlog = b;
    }
    crate::os::raise_fd_limit();
    let rt = runtime()?;
    rt.block_on(async {
        let server = Server::bind(config.clone())
            .await
            .map_err(|e| Failure::runtime(format!("cannot listen on {}: {e}", config.listen)))?;
        let handle = server.handle();
        println!("wsstorm serve: listening on {}", handle.url());
        if let Some(ca) = handle.ca_pem() {
            let path =
                std::env::temp_dir().join(format!("wsstorm-serve-{}-ca.pem", std::process::id()));
            match std::fs::write(&path, ca) {
                Ok(()) => println!(
                    "wsstorm serve: CA of the generated certificate: {}",
                    path.display()
                ),
                Err(e) => eprintln!("wsstorm serve: cannot write the CA file: {e}"),
            }
        }
        let stop = CancellationToken::new();
        tokio::spawn(stop_on_signal(stop.clone()));
        server.run(stop).await;
        let s = handle.stats.summary();
        println!(
            "wsstorm serve: stopped; accepted {}, upgraded {}, 503 {}, 404 {}, echoed {}",
            s.accepted, s.upgraded, s.rejected_503, s.rejected_404, s.messages_echoed
        );
        Ok(ExitCode::SUCCESS)
    })
}
