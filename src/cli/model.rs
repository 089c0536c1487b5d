//! `wsstorm model`: the profile in virtual time ([`crate::model`]), written like a run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::Failure;
use super::run::{
    Overrides, PlanFlags, Runner, SizeFlags, UntilFlags, check_out, compile, load,
    parse_thresholds, stamped_dir, write_results,
};
use crate::backoff::Strategy;
use crate::results::{EndReason, Results};
use crate::units::Dur;

pub const MODEL_HELP: &str = "\
The model runs the profile's clients and the embedded target's capacity model (accept_rate,
handshake service time, workers and queue, retry_after, restart/drop-all/hang) on a virtual
clock: no sockets, no machine limits, millions of clients in seconds. Backoff, close-code
decisions and Retry-After are the code real runs use. What it leaves out (messages, TLS cost,
conversations, the network beyond a fixed round trip, CPU and kernel queues) is listed in
results.json under model.not_modelled. Writes <out>/results.json and report.html, marked
\"modelled\": true. With two or more --strategy, runs each and compares them (like
`wsstorm compare --model`).

Examples:
  wsstorm model profiles/mass-drop-reconnect.yaml --clients 10000000
  wsstorm model profiles/backoff-contention.yaml --strategy full-jitter --strategy exponential";

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// The YAML profile to model (its target must be the embedded server).
    pub profile: PathBuf,
    /// Replace every group's backoff strategy (repeat it to compare strategies).
    #[arg(long = "strategy", value_name = "NAME")]
    pub strategies: Vec<Strategy>,
    /// The network round trip every connect and upgrade pays (default 100us).
    #[arg(long, value_name = "D")]
    pub rtt: Option<Dur>,
    #[command(flatten)]
    pub plan: PlanFlags,
    #[command(flatten)]
    pub size: SizeFlags,
    #[command(flatten)]
    pub until: UntilFlags,
}

/// The options the flags ask for.
pub fn options(rtt: Option<Dur>) -> crate::model::Options {
    crate::model::Options {
        rtt: rtt.map_or(crate::model::DEFAULT_RTT, |d| d.0),
    }
}

pub fn model(args: ModelArgs) -> Result<ExitCode, Failure> {
    if args.strategies.len() >= 2 {
        return super::run::compare(super::run::CompareArgs {
            profile: args.profile,
            strategies: args.strategies,
            plan: args.plan,
            size: args.size,
            model: true,
            rtt: args.rtt,
            until: args.until,
        });
    }
    if args.plan.workers.is_some() {
        return Err(Failure::usage(
            "--workers has no meaning for a model: it runs in one process",
        ));
    }
    let overrides = Overrides::new(&args.plan, Some(&args.size));
    let extra = parse_thresholds(&args.plan.thresholds)?;
    let doc = load(&args.profile, &overrides)?;
    let mut plan = compile(&doc, &overrides, &extra)?;
    args.until.apply(&mut plan)?;
    if let Some(s) = args.strategies.first() {
        plan = plan.with_strategy(*s);
        plan.source.push_str(&format!(
            "\n# model: every group's backoff strategy = {s}\n"
        ));
    }
    crate::model::check(&plan).map_err(|e| Failure::usage(e.to_string()))?;
    check_out(args.plan.out.as_deref().unwrap_or(Path::new("reports")))?;
    let runner = Runner::new()?;
    errln!(
        "wsstorm model: {} clients of {} in virtual time",
        plan.total_clients(),
        plan.name
    );
    let results = modelled(&plan, args.rtt, &runner, true)?;
    out!("{}", crate::report::text::summary(&results));
    let dir = args
        .plan
        .out
        .clone()
        .unwrap_or_else(|| stamped_dir(&results.name, "-model", &results.started_at));
    let path = write_results(&results, &dir)?;
    outln!("  results      {}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    match crate::report::write(&results, dir) {
        Ok(report) => outln!("  report       {}", report.display()),
        Err(e) => errln!("wsstorm: cannot write the report in {}: {e}", dir.display()),
    }
    Ok(exit(&results))
}

/// Model `plan`; with `progress`, a line on stderr every second of wall time (a big fleet
/// takes a while), in virtual time. Ctrl-C ends it with the results so far.
pub(super) fn modelled(
    plan: &crate::plan::Plan,
    rtt: Option<Dur>,
    runner: &Runner,
    progress: bool,
) -> Result<Results, Failure> {
    let mut next = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut watch = |snap: &crate::metrics::Snapshot| {
        if progress && std::time::Instant::now() >= next {
            next += std::time::Duration::from_secs(1);
            errln!(
                "{} (virtual time)",
                crate::report::text::progress_line(snap, plan.duration, plan.total_clients())
            );
        }
        runner.interrupted()
    };
    crate::model::run(plan, &options(rtt), &mut watch).map_err(|e| Failure::usage(e.to_string()))
}

fn exit(results: &Results) -> ExitCode {
    match results.end_reason {
        EndReason::Interrupted => ExitCode::from(130),
        _ if results.thresholds_passed() == Some(false) => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}
