//! Command line: raw arguments become a compiled plan before anything runs, every command runs
//! plans through one routine ([`run`]), and every outcome maps to one exit code in `main`.

// Output to the terminal that does not panic when the reader has gone (`wsstorm run … | head`,
// a closed terminal): `println!` and friends panic on a broken pipe, which lost the results of
// a finished run. What was measured is written to files regardless; losing the terminal's
// copy of it is no reason to stop. Defined before the modules so they can use them.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

mod export;
mod model;
mod run;
mod serve;
mod shard;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::plan::Plan;
use crate::profile::ProfileError;
use crate::results::Results;
use crate::swarm::{Stop, StopReason};

pub use export::ExportFlags;
pub use model::ModelArgs;
pub use run::{
    CapacityArgs, CompareArgs, Overrides, PlanFlags, RunArgs, SizeFlags, UntilFlags, UntilMode,
};
pub use serve::{ProxyArgs, ServeArgs};
pub use shard::{MergeArgs, ShardFlags};

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
  wsstorm run fleet.yaml --target ws://edge:8080/ws --shard 3/20 --start-at 2026-12-01T10:00:00Z
      shard 3 of 20 of one plan, started with the others (on Kubernetes: --shards 20 and the
      index from JOB_COMPLETION_INDEX; WSSTORM_SHARDS and WSSTORM_START_AT work too)
  wsstorm merge results/shard-*/results.json -o results/merged
  wsstorm report reports/quickstart-20261125T220520Z/results.json
  wsstorm validate profiles/quickstart.yaml

Exit codes: 0 ok (also stopped with q in the dashboard), 1 a threshold failed, nothing ever
connected, or a capacity search fell short of `expect`, 2 bad profile or arguments or a run
too big for this machine, 3 could not run (target, output), 130 interrupted (Ctrl-C, SIGTERM).";

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
    #[command(after_help = serve::SERVE_HELP)]
    Serve(ServeArgs),
    /// Run the TCP fault proxy on its own, with an HTTP control API.
    #[command(after_help = serve::PROXY_HELP)]
    Proxy(ProxyArgs),
    /// Render report.html again from a results.json.
    #[command(
        after_help = "Example:\n  wsstorm report reports/quickstart-20261125T220520Z/results.json -o /tmp/report.html"
    )]
    Report {
        /// The results.json of a run.
        results: PathBuf,
        /// Where to write the report (default: report.html beside the results).
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Run a profile once per backoff strategy (same seed) and compare them.
    #[command(after_help = run::COMPARE_HELP)]
    Compare(CompareArgs),
    /// Merge the results of a plan's shards (or of runs of one profile) into one, exactly.
    #[command(after_help = shard::MERGE_HELP)]
    Merge(MergeArgs),
    /// Run a profile in virtual time (no sockets): millions of clients against the embedded
    /// target's capacity model, in seconds.
    #[command(after_help = model::MODEL_HELP)]
    Model(ModelArgs),
    /// Step the load up, one run per step, until the thresholds break; report the knee.
    #[command(after_help = run::CAPACITY_HELP)]
    Capacity(CapacityArgs),
    /// Run one shard of a plan for a coordinating `wsstorm run` (started by it, not by hand).
    #[command(hide = true)]
    Worker,
    /// One process of a multi-process embedded server (started by `wsstorm run`).
    #[command(hide = true)]
    ServerWorker,
    /// Check a profile (and that it fits this machine) and print its plan without running it.
    #[command(
        after_help = "Example:\n  wsstorm validate profiles/quickstart.yaml\n\nExit 0 when it would run; 2 with file:line:column and what was expected when it would not."
    )]
    Validate {
        /// The YAML profile.
        profile: PathBuf,
    },
    /// Print the JSON Schema of the profile format, for editors that complete and check YAML.
    Schema,
    /// Print shell completions of these commands and their flags.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
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
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Proxy(args) => serve::proxy(args),
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
            outln!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare(args) => run::compare(args),
        Command::Model(args) => model::model(args),
        Command::Merge(args) => shard::merge(args),
        Command::Capacity(args) => run::capacity(args),
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
            // Checked as `run` would check it: the profile, then whether it fits this machine.
            let mut plan = Plan::load(&profile)?;
            run::fit_here(&mut plan, None)?;
            out!("{}", describe(&plan));
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&crate::profile::schema())
                .map_err(|e| Failure::runtime(format!("cannot write the schema: {e}")))?;
            outln!("{schema}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut cli = visible_commands();
            clap_complete::generate(shell, &mut cli, "wsstorm", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The command line without the hidden subcommands that `wsstorm run` starts itself:
/// clap_complete would offer them at every Tab.
fn visible_commands() -> clap::Command {
    let full = Cli::command();
    let visible = full.get_subcommands().filter(|c| !c.is_hide_set()).cloned();
    clap::Command::new("wsstorm")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .subcommands(visible)
}

/// What `wsstorm validate` prints: the plan in a few lines.
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
    let _ = writeln!(o, "  target: {}", plan.target.describe());
    for g in &plan.groups {
        let arrival = if g.stages.is_empty() {
            format!("at {}/s from {:?}", g.rate, g.start)
        } else {
            let stages: Vec<String> = g
                .stages
                .iter()
                .map(|s| format!("{} in {:?}", s.target, s.duration))
                .collect();
            format!("in stages {}", stages.join(", "))
        };
        let _ = writeln!(
            o,
            "  group {}: {} clients {arrival}, backoff {} {:?}..{:?}",
            g.name,
            g.clients,
            g.behaviour.backoff.strategy.name(),
            g.behaviour.backoff.base,
            g.behaviour.backoff.cap
        );
    }
    for a in &plan.timeline {
        let _ = writeln!(o, "  at {:?}: {}", a.at, a.action);
    }
    let l = &plan.layout;
    if l.workers + l.server_processes > 0 {
        let _ = writeln!(
            o,
            "  processes: {} client workers, {} server processes",
            l.workers, l.server_processes
        );
    }
    o
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
}

/// Stop on Ctrl-C or SIGTERM, as an interruption, saying `what` happens next — unless `quiet`
/// (the dashboard owns the terminal then, and the summary after it says INTERRUPTED).
async fn stop_on_signal(
    stop: Stop,
    what: &'static str,
    quiet: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
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
    if !quiet.load(std::sync::atomic::Ordering::Relaxed) {
        errln!("wsstorm: {what}");
    }
    stop.request(StopReason::Interrupted);
}
