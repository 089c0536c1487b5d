//! Client worker processes: one process may hold only so many sockets (20,000 open files
//! here), so a big swarm runs in several `wsstorm worker` processes, each running one shard of
//! the same plan.
//!
//! The protocol is JSON lines over the worker's stdin and stdout (see [`crate::os::child`]):
//!
//! ```text
//! coordinator → worker:  Job (once)          Start         End
//! worker → coordinator:  Ready   Tick, Tick, … (every 100 ms)   AtEnd   Tick …   Done
//! ```
//!
//! A `Job` carries the plan's clients (already compiled: a worker parses nothing the user
//! wrote). A `Tick` carries the worker's interval data per group — counters and HdrHistograms,
//! which merge exactly — and the coordinator adds it to its own metrics as if it were one more
//! shard, with the worker's generator sample: its collector, dashboard and results see one
//! swarm. `End` asks for the exact count of open connections, then for the clients to close;
//! `Done` says they have.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Clients, Destination, Endpoints, Shard};
use crate::metrics::generator::{GeneratorSample, Sampler, cpu_times};
use crate::metrics::{GroupData, Hists, Metrics, TICK, WireGroup};
use crate::os::child::{Child, Parent};
use crate::plan::Plan;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub clients: Clients,
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
        /// Example texts of connect errors, when the worker has new ones.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        examples: std::collections::BTreeMap<String, String>,
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

/// How the workers finished.
pub struct WorkersEnd {
    /// Every worker's clients closed within the time given.
    pub all_closed: bool,
    /// CPU seconds (user, system) the workers reported.
    pub cpu: (f64, f64),
    /// Workers that ended before they were told to, and what became of their clients.
    pub died: Vec<String>,
}

/// The coordinator's handle on its workers. Each worker's stdout is read by a task of its
/// own, which puts ticks and samples straight into the metrics and answers the two
/// questions the coordinator asks at the end on oneshot channels.
pub struct Workers {
    processes: Vec<tokio::process::Child>,
    stdins: Vec<tokio::process::ChildStdin>,
    readers: TaskTracker,
    at_end: Vec<oneshot::Receiver<Vec<u64>>>,
    done: Vec<oneshot::Receiver<(f64, f64)>>,
    /// Set by a worker's reader when its worker's output ends before `Done`.
    died: Arc<Mutex<Vec<(usize, Duration)>>>,
    /// Clients each worker runs.
    clients: Vec<u64>,
    started: Instant,
}

impl Workers {
    /// Start `plan.layout.workers` processes of `exe`, each with its shard, and let them go
    /// once all are ready. Their ticks go into `metrics`.
    pub async fn start(
        exe: &Path,
        plan: &Plan,
        destination: &Destination,
        metrics: &Arc<Metrics>,
    ) -> Result<Workers, String> {
        let n = plan.layout.workers;
        let readers = TaskTracker::new();
        let mut w = Workers {
            processes: Vec::with_capacity(n),
            stdins: Vec::with_capacity(n),
            readers: readers.clone(),
            at_end: Vec::with_capacity(n),
            done: Vec::with_capacity(n),
            died: Arc::new(Mutex::new(Vec::new())),
            clients: (0..n)
                .map(|i| {
                    let shard = Shard {
                        index: i as u32,
                        count: n as u32,
                    };
                    plan.groups
                        .iter()
                        .map(|g| shard.clients_of(g.clients))
                        .sum()
                })
                .collect(),
            started: Instant::now(),
        };
        let mut ready = Vec::with_capacity(n);
        for index in 0..n {
            let mut child = Child::spawn(exe, "worker")?;
            let job = Job {
                clients: Clients::of(
                    plan,
                    Shard {
                        index: index as u32,
                        count: n as u32,
                    },
                ),
                destination: destination.clone(),
            };
            child
                .send(&job)
                .await
                .map_err(|e| format!("worker {index}: {e}"))?;
            let (end_tx, end_rx) = oneshot::channel();
            let (done_tx, done_rx) = oneshot::channel();
            let (ready_tx, ready_rx) = oneshot::channel();
            let Child {
                process,
                stdin,
                stdout,
            } = child;
            readers.spawn(read_worker(
                index,
                stdout,
                metrics.clone(),
                Replies {
                    ready: Some(ready_tx),
                    at_end: Some(end_tx),
                    done: Some(done_tx),
                    died: w.died.clone(),
                    started: w.started,
                },
            ));
            w.processes.push(process);
            w.stdins.push(stdin);
            w.at_end.push(end_rx);
            w.done.push(done_rx);
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
        w.started = Instant::now();
        for (i, stdin) in w.stdins.iter_mut().enumerate() {
            crate::os::child::send(stdin, &ToWorker::Start)
                .await
                .map_err(|e| format!("worker {i}: {e}"))?;
        }
        Ok(w)
    }

    /// Ask every worker how many connections are open, per group, and add them up.
    pub async fn connected_at_end(&mut self, groups: usize) -> Vec<u64> {
        for stdin in &mut self.stdins {
            let _ = crate::os::child::send(stdin, &ToWorker::End).await;
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

    /// Wait for the workers' clients to close (up to `limit`) and the workers to exit.
    pub async fn finish(mut self, limit: Duration) -> WorkersEnd {
        let mut end = WorkersEnd {
            all_closed: true,
            cpu: (0.0, 0.0),
            died: Vec::new(),
        };
        let deadline = Instant::now() + limit;
        for rx in std::mem::take(&mut self.done) {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok((user, sys))) => {
                    end.cpu.0 += user;
                    end.cpu.1 += sys;
                }
                _ => end.all_closed = false,
            }
        }
        self.readers.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.readers.wait()).await;
        let mut statuses = Vec::with_capacity(self.processes.len());
        for p in &mut self.processes {
            statuses.push(tokio::time::timeout(Duration::from_secs(2), p.wait()).await);
        }
        let died = self
            .died
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (index, at) in died {
            let how = match statuses.get(index) {
                Some(Ok(Ok(status))) => status.to_string(),
                _ => "still running".to_string(),
            };
            end.died.push(format!(
                "worker process {index} ended at {:.1} s ({how}); its {} clients are in the figures only until then",
                at.as_secs_f64(),
                self.clients.get(index).copied().unwrap_or(0)
            ));
        }
        end
    }
}

/// Where a worker's reader answers the coordinator's questions, each once, and says when its
/// worker ended before it was told to.
struct Replies {
    ready: Option<oneshot::Sender<Result<(), String>>>,
    at_end: Option<oneshot::Sender<Vec<u64>>>,
    done: Option<oneshot::Sender<(f64, f64)>>,
    died: Arc<Mutex<Vec<(usize, Duration)>>>,
    started: Instant,
}

async fn read_worker(
    index: usize,
    mut stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    metrics: Arc<Metrics>,
    mut replies: Replies,
) {
    while let Some(msg) = crate::os::child::recv::<_, FromWorker>(&mut stdout).await {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                metrics.warn(format!("worker {index} sent something unexpected: {e}"));
                continue;
            }
        };
        match msg {
            FromWorker::Ready => {
                if let Some(r) = replies.ready.take() {
                    let _ = r.send(Ok(()));
                }
            }
            FromWorker::Error(e) => match replies.ready.take() {
                Some(r) => {
                    let _ = r.send(Err(e));
                }
                None => metrics.warn(format!("worker {index}: {e}")),
            },
            FromWorker::Tick {
                groups,
                sample,
                examples,
            } => {
                for (kind, text) in examples {
                    if let Some(k) = crate::metrics::ConnectError::from_name(&kind) {
                        metrics.connect_error_example(k, || text);
                    }
                }
                for (g, wire) in groups.iter().enumerate() {
                    match GroupData::from_wire(wire) {
                        Ok(data) => metrics.absorb(g, &data),
                        Err(e) => metrics.warn(format!("worker {index}: bad histogram: {e}")),
                    }
                }
                if let Some(s) = sample {
                    metrics.worker_sample(index, s);
                }
            }
            FromWorker::AtEnd { connected } => {
                if let Some(tx) = replies.at_end.take() {
                    let _ = tx.send(connected);
                }
            }
            FromWorker::Done {
                cpu_user_s,
                cpu_sys_s,
            } => {
                if let Some(tx) = replies.done.take() {
                    let _ = tx.send((cpu_user_s, cpu_sys_s));
                }
            }
        }
    }
    // The pipe closed. Before `Done` (and once started), the worker died under the run: say
    // so now, while the run goes on without its clients. Dropping `replies` answers the
    // coordinator's questions at once instead of after their timeouts.
    if replies.done.is_some() && replies.ready.is_none() {
        let at = replies.started.elapsed();
        metrics.warn(format!(
            "worker process {index} ended unexpectedly {:.1} s into the run; its clients stopped with it",
            at.as_secs_f64()
        ));
        replies
            .died
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((index, at));
    }
}

/// `wsstorm worker`: run one shard of a plan, reporting on stdout, until told to end.
pub async fn worker_main() -> Result<(), String> {
    let mut parent = Parent::default();
    let job: Job = match parent.recv().await {
        Some(Ok(job)) => job,
        Some(Err(e)) => return Err(format!("bad job: {e}")),
        None => return Err("no job on stdin".into()),
    };
    let endpoints = match Endpoints::new(&job.destination, &job.clients.tls) {
        Ok(t) => t,
        Err(e) => {
            let _ = parent.send(&FromWorker::Error(e.clone())).await;
            return Err(e);
        }
    };
    crate::os::raise_fd_limit();
    let groups = job.clients.groups.len();
    let metrics = Arc::new(Metrics::new(groups));
    parent
        .send(&FromWorker::Ready)
        .await
        .map_err(|e| e.to_string())?;
    match parent.recv::<ToWorker>().await {
        Some(Ok(ToWorker::Start)) => {}
        _ => return Err("expected Start".into()),
    }
    let epoch = Instant::now();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    job.clients
        .spawn(&endpoints, &metrics, epoch, &cancel, &tracker);

    // Running totals, for the exact open count at the end.
    let mut totals = vec![GroupData::default(); groups];
    let mut sampler = Sampler::new();
    let mut ticks = 0u64;
    let mut interval = tokio::time::interval_at(epoch + TICK, TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut examples_sent = 0;
    // Kept from tick to tick, emptied after each: a fresh set of histograms is allocated and
    // zeroed whole (16 KiB and more each), ten times a second in every worker process.
    let mut out = vec![GroupData::default(); groups];
    let mut spare = Hists::default();
    let mut tick = |totals: &mut Vec<GroupData>, sample: bool, sampler: &mut Sampler| {
        let mut examples = metrics.connect_error_examples();
        if examples.len() == examples_sent {
            examples.clear();
        } else {
            examples_sent = examples.len();
        }
        metrics.drain_into(&mut out, &mut spare);
        for (t, o) in totals.iter_mut().zip(&out) {
            t.counters.add(&o.counters);
        }
        let connected: u64 = totals.iter().map(|t| t.counters.connected()).sum();
        let groups = out.iter().map(GroupData::to_wire).collect();
        out.iter_mut().for_each(GroupData::clear);
        FromWorker::Tick {
            groups,
            sample: sample.then(|| sampler.sample(epoch.elapsed().as_millis() as u64, connected)),
            examples,
        }
    };
    loop {
        tokio::select! {
            _ = interval.tick() => {
                ticks += 1;
                let msg = tick(&mut totals, ticks.is_multiple_of(10), &mut sampler);
                if parent.send(&msg).await.is_err() {
                    // The coordinator is gone: nobody to report to.
                    cancel.cancel();
                    return Err("the coordinator went away".into());
                }
            }
            msg = parent.recv::<ToWorker>() => match msg {
                Some(Ok(ToWorker::End)) => break,
                Some(_) => {}
                None => {
                    cancel.cancel();
                    return Err("the coordinator went away".into());
                }
            }
        }
    }
    // End: the exact open count first, then let the clients close.
    let msg = tick(&mut totals, false, &mut sampler);
    let _ = parent.send(&msg).await;
    let connected = totals.iter().map(|t| t.counters.connected()).collect();
    let _ = parent.send(&FromWorker::AtEnd { connected }).await;
    cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout(job.clients.grace + Duration::from_secs(2), tracker.wait()).await;
    let msg = tick(&mut totals, true, &mut sampler);
    let _ = parent.send(&msg).await;
    let (cpu_user_s, cpu_sys_s) = cpu_times();
    let _ = parent
        .send(&FromWorker::Done {
            cpu_user_s,
            cpu_sys_s,
        })
        .await;
    Ok(())
}
