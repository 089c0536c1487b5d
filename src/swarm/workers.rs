//! Client worker processes: one process may hold only so many sockets (20,000 open files
//! here), so a big swarm runs in several `wsstorm worker` processes, each running one shard of
//! the same plan.
//!
//! The protocol is JSON lines over the worker's stdin and stdout:
//!
//! ```text
//! coordinator → worker:  Job (once)          Start         End
//! worker → coordinator:  Ready   Tick, Tick, … (every 100 ms)   AtEnd   Tick …   Done
//! ```
//!
//! A `Tick` carries the worker's interval data per group — counters and HdrHistograms, which
//! merge exactly — and the coordinator adds it to its own metrics as if it were one more shard:
//! its collector, dashboard and results see one swarm. `End` asks for the exact count of open
//! connections, then for the clients to close; `Done` says they have.

use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::generator::{GeneratorSample, Sampler, cpu_times};
use crate::metrics::{Collector, GroupData, Hists, Metrics, TICK, WireGroup};
use crate::plan::Plan;
use crate::profile::Profile;
use crate::swarm::{Destination, Shard, Targets, spawn_clients};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub profile: Profile,
    pub shard: Shard,
    pub destination: Destination,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToWorker {
    Start,
    End,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FromWorker {
    Ready,
    Tick {
        groups: Vec<WireGroup>,
        #[serde(default)]
        sample: Option<GeneratorSample>,
    },
    /// Open connections per group when `End` arrived.
    AtEnd {
        connected: Vec<u64>,
    },
    Done {
        cpu_user_s: f64,
        cpu_sys_s: f64,
    },
    Error(String),
}

/// What the coordinator knows of each worker besides its metrics.
#[derive(Default)]
struct State {
    samples: Vec<Option<GeneratorSample>>,
    at_end: Vec<Option<oneshot::Sender<Vec<u64>>>>,
    done: Vec<Option<oneshot::Sender<(f64, f64)>>>,
}

pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    state: Arc<Mutex<State>>,
    readers: TaskTracker,
    at_end: Vec<oneshot::Receiver<Vec<u64>>>,
    done: Vec<oneshot::Receiver<(f64, f64)>>,
    /// CPU seconds (user, system) the workers reported when they finished.
    pub cpu: Arc<Mutex<(f64, f64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One message of the coordinator–child protocol: a JSON line, flushed.
pub(crate) async fn send<W, T>(out: &mut W, msg: &T) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
    T: Serialize,
{
    let mut line = serde_json::to_string(msg).expect("messages serialize");
    line.push('\n');
    out.write_all(line.as_bytes()).await?;
    out.flush().await
}

/// Start `exe SUBCOMMAND` as a child that is killed with its handle; its stdin and stdout carry
/// the protocol, its stderr is ours.
pub(crate) fn spawn_child(
    exe: &std::path::Path,
    subcommand: &str,
) -> Result<(Child, ChildStdin, tokio::process::ChildStdout), String> {
    let mut child = Command::new(exe)
        .arg(subcommand)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    Ok((child, stdin, stdout))
}

impl Workers {
    /// Start `plan.workers` processes, each with its shard, and let them go once all are
    /// ready. Their ticks go into `metrics`; their generator samples into the collector's.
    pub async fn start(
        plan: &Plan,
        destination: &Destination,
        metrics: &Arc<Metrics>,
        collector: &Arc<Mutex<Collector>>,
    ) -> Result<Workers, String> {
        let exe = match &plan.worker_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find the wsstorm executable: {e}"))?,
        };
        let n = plan.workers;
        let state = Arc::new(Mutex::new(State {
            samples: vec![None; n],
            at_end: Vec::new(),
            done: Vec::new(),
        }));
        let readers = TaskTracker::new();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        let mut at_end = Vec::new();
        let mut done = Vec::new();
        let mut ready = Vec::new();
        for index in 0..n {
            let (child, mut stdin, stdout) = spawn_child(&exe, "worker")?;
            let job = Job {
                profile: plan.profile.clone(),
                shard: Shard {
                    index: index as u32,
                    count: n as u32,
                },
                destination: destination.clone(),
            };
            send(&mut stdin, &job)
                .await
                .map_err(|e| format!("worker {index}: {e}"))?;
            let (end_tx, end_rx) = oneshot::channel();
            let (done_tx, done_rx) = oneshot::channel();
            let (ready_tx, ready_rx) = oneshot::channel();
            {
                let mut s = lock(&state);
                s.at_end.push(Some(end_tx));
                s.done.push(Some(done_tx));
            }
            readers.spawn(read_worker(
                index,
                stdout,
                metrics.clone(),
                state.clone(),
                ready_tx,
            ));
            children.push(child);
            stdins.push(stdin);
            at_end.push(end_rx);
            done.push(done_rx);
            ready.push(ready_rx);
        }
        for (i, r) in ready.into_iter().enumerate() {
            match tokio::time::timeout(Duration::from_secs(20), r).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(format!("worker {i}: {e}")),
                _ => return Err(format!("worker {i} did not get ready")),
            }
        }
        // All set up: start every shard together (their clocks start within a pipe write).
        for (i, stdin) in stdins.iter_mut().enumerate() {
            send(stdin, &ToWorker::Start)
                .await
                .map_err(|e| format!("worker {i}: {e}"))?;
        }
        let samples = state.clone();
        lock(collector).set_external_samples(Box::new(move || {
            lock(&samples).samples.iter().flatten().copied().collect()
        }));
        Ok(Workers {
            children,
            stdins,
            state,
            readers,
            at_end,
            done,
            cpu: Arc::new(Mutex::new((0.0, 0.0))),
        })
    }

    /// Ask every worker how many connections are open, per group, and add them up.
    pub async fn connected_at_end(&mut self, groups: usize) -> Vec<u64> {
        for stdin in &mut self.stdins {
            let _ = send(stdin, &ToWorker::End).await;
        }
        let mut total = vec![0u64; groups];
        for rx in std::mem::take(&mut self.at_end) {
            if let Ok(Ok(counts)) = tokio::time::timeout(Duration::from_secs(10), rx).await {
                for (t, c) in total.iter_mut().zip(counts) {
                    *t += c;
                }
            }
        }
        total
    }

    /// Wait for the workers' clients to close (up to `limit`); false if some did not.
    pub async fn finish(mut self, limit: Duration) -> bool {
        let mut all = true;
        let deadline = Instant::now() + limit;
        for rx in std::mem::take(&mut self.done) {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok((user, sys))) => {
                    let mut cpu = lock(&self.cpu);
                    cpu.0 += user;
                    cpu.1 += sys;
                }
                _ => all = false,
            }
        }
        self.readers.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.readers.wait()).await;
        for child in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        }
        let _ = &self.state;
        all
    }
}

async fn read_worker(
    index: usize,
    stdout: tokio::process::ChildStdout,
    metrics: Arc<Metrics>,
    state: Arc<Mutex<State>>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let msg: FromWorker = match serde_json::from_str(&line) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("wsstorm: worker {index} sent something unexpected: {e}");
                continue;
            }
        };
        match msg {
            FromWorker::Ready => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
            }
            FromWorker::Error(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                } else {
                    eprintln!("wsstorm: worker {index}: {e}");
                }
            }
            FromWorker::Tick { groups, sample } => {
                for (g, wire) in groups.iter().enumerate() {
                    match GroupData::from_wire(wire) {
                        Ok(data) => metrics.absorb(g, &data),
                        Err(e) => eprintln!("wsstorm: worker {index}: bad histogram: {e}"),
                    }
                }
                if let Some(s) = sample {
                    lock(&state).samples[index] = Some(s);
                }
            }
            FromWorker::AtEnd { connected } => {
                if let Some(tx) = lock(&state).at_end[index].take() {
                    let _ = tx.send(connected);
                }
            }
            FromWorker::Done {
                cpu_user_s,
                cpu_sys_s,
            } => {
                if let Some(tx) = lock(&state).done[index].take() {
                    let _ = tx.send((cpu_user_s, cpu_sys_s));
                }
            }
        }
    }
}

async fn write_line(out: &mut tokio::io::Stdout, line: String) -> std::io::Result<()> {
    out.write_all(line.as_bytes()).await?;
    out.flush().await
}

/// `wsstorm worker`: run one shard of a plan, reporting on stdout, until told to end.
pub async fn worker_main() -> Result<(), String> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let say = |msg: FromWorker| {
        let mut line = serde_json::to_string(&msg).expect("messages serialize");
        line.push('\n');
        line
    };
    let first = stdin
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no job on stdin")?;
    let job: Job = serde_json::from_str(&first).map_err(|e| format!("bad job: {e}"))?;
    let plan = Plan::new(&job.profile, String::new());
    let targets = match Targets::new(&job.destination, &plan.tls) {
        Ok(t) => t,
        Err(e) => {
            let _ = stdout
                .write_all(say(FromWorker::Error(e.clone())).as_bytes())
                .await;
            return Err(e);
        }
    };
    crate::os::raise_fd_limit();
    let groups = plan.groups.len();
    let metrics = Arc::new(Metrics::new(groups));
    write_line(&mut stdout, say(FromWorker::Ready))
        .await
        .map_err(|e| e.to_string())?;
    match stdin.next_line().await {
        Ok(Some(l)) if matches!(serde_json::from_str(&l), Ok(ToWorker::Start)) => {}
        _ => return Err("expected Start".into()),
    }
    let epoch = Instant::now();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    spawn_clients(
        &plan, job.shard, &targets, &metrics, epoch, &cancel, &tracker,
    );

    // Running totals, for the exact open count at the end.
    let mut totals = vec![GroupData::default(); groups];
    let mut sampler = Sampler::new();
    let mut ticks = 0u64;
    let mut interval = tokio::time::interval_at(epoch + TICK, TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let tick = |totals: &mut Vec<GroupData>, sample: bool, sampler: &mut Sampler| {
        let mut out = vec![GroupData::default(); groups];
        metrics.drain_into(&mut out, &mut Hists::default());
        for (t, o) in totals.iter_mut().zip(&out) {
            t.counters.add(&o.counters);
        }
        let connected: u64 = totals.iter().map(|t| t.counters.connected()).sum();
        say(FromWorker::Tick {
            groups: out.iter().map(GroupData::to_wire).collect(),
            sample: sample.then(|| sampler.sample(epoch.elapsed().as_millis() as u64, connected)),
        })
    };
    loop {
        tokio::select! {
            _ = interval.tick() => {
                ticks += 1;
                let line = tick(&mut totals, ticks.is_multiple_of(10), &mut sampler);
                if write_line(&mut stdout, line).await.is_err() {
                    // The coordinator is gone: nobody to report to.
                    cancel.cancel();
                    return Err("the coordinator went away".into());
                }
            }
            line = stdin.next_line() => match line {
                Ok(Some(l)) if matches!(serde_json::from_str(&l), Ok(ToWorker::End)) => break,
                Ok(Some(_)) => {}
                _ => {
                    cancel.cancel();
                    return Err("the coordinator went away".into());
                }
            }
        }
    }
    // End: the exact open count first, then let the clients close.
    let line = tick(&mut totals, false, &mut sampler);
    let _ = write_line(&mut stdout, line).await;
    let connected = totals.iter().map(|t| t.counters.connected()).collect();
    let _ = write_line(&mut stdout, say(FromWorker::AtEnd { connected })).await;
    cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout(plan.grace + Duration::from_secs(2), tracker.wait()).await;
    let line = tick(&mut totals, true, &mut sampler);
    let _ = write_line(&mut stdout, line).await;
    let (cpu_user_s, cpu_sys_s) = cpu_times();
    let _ = write_line(
        &mut stdout,
        say(FromWorker::Done {
            cpu_user_s,
            cpu_sys_s,
        }),
    )
    .await;
    Ok(())
}
