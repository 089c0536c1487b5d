//! A service (the embedded server, the fault proxy) on a tokio runtime of its own, in a thread
//! of its own, inside `wsstorm run`: the clients' runtime and the service's must not silently
//! share worker threads, or a busy swarm would show up as server latency. A service can also
//! ride on another service's runtime ([`Background::start_on`]): the proxy in front of the
//! embedded server shares its threads, so a hop through it costs no extra thread wake-up.
//!
//! The service itself knows nothing of this: it is bound, then `run` until its shutdown token
//! fires, as mini-redis's `server::run(listener, shutdown)` is.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// What can run in the background: bound already, it hands out a handle and runs until told
/// to stop.
pub trait Service: Send + 'static {
    type Handle: Clone + Send + 'static;
    fn handle(&self) -> Self::Handle;
    fn run(self, shutdown: CancellationToken) -> impl Future<Output = ()> + Send;
}

/// The threads a background runtime gets.
#[derive(Clone, Copy, Debug)]
pub struct Threads {
    pub name: &'static str,
    /// Worker threads; 0 runs everything on the runtime's own thread (no work stealing, for a
    /// service whose work is short and I/O bound).
    pub workers: usize,
    /// Absolute nice value for the threads (0: the caller's priority).
    pub nice: u8,
}

/// A running service and the runtime it runs on.
pub struct Background<H> {
    pub handle: H,
    /// What went wrong starting it that it runs despite (a priority not lowered), for the
    /// run's warnings.
    pub warnings: Vec<String>,
    /// The service's runtime: for timers the handle starts from another runtime, and for a
    /// sidecar service to share.
    pub runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<H: Clone + Send + 'static> Background<H> {
    /// Start a runtime in a new thread, bind the service on it and run it there. Bound (and so
    /// reachable) when this returns.
    pub async fn start<S, B, F>(threads: Threads, bind: B) -> std::io::Result<Background<H>>
    where
        S: Service<Handle = H>,
        B: FnOnce() -> F + Send + 'static,
        F: Future<Output = std::io::Result<S>>,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(threads.name.into())
            .spawn(move || {
                // Before the runtime starts: its threads inherit this thread's priority.
                let warning = lower_priority(&[0], threads.nice).err();
                let mut builder = if threads.workers == 0 {
                    tokio::runtime::Builder::new_current_thread()
                } else {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(threads.workers);
                    b
                };
                let runtime = match builder.thread_name(threads.name).enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let service = match runtime.block_on(bind()) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok((service.handle(), runtime.handle().clone(), warning)));
                runtime.block_on(service.run(token));
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        let (handle, runtime, warning) = rx.await.map_err(|_| {
            std::io::Error::other(format!("the {} thread ended early", threads.name))
        })??;
        Ok(Background {
            handle,
            warnings: warning.into_iter().collect(),
            runtime,
            shutdown,
            thread: Some(thread),
        })
    }

    /// Bind and run the service on a runtime that already exists.
    pub async fn start_on<S, F>(
        runtime: tokio::runtime::Handle,
        bind: F,
    ) -> std::io::Result<Background<H>>
    where
        S: Service<Handle = H>,
        F: Future<Output = std::io::Result<S>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let service = runtime
            .spawn(bind)
            .await
            .map_err(|_| std::io::Error::other("the service's task ended early"))??;
        let handle = service.handle();
        runtime.spawn(service.run(shutdown.clone()));
        Ok(Background {
            handle,
            warnings: Vec::new(),
            runtime,
            shutdown,
            thread: None,
        })
    }

    /// Stop the service and wait for its thread. Blocks: call it where blocking is allowed
    /// (e.g. `spawn_blocking`).
    pub fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<H> Drop for Background<H> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Lower the CPU priority of threads `tids` (0: the calling thread; threads it starts later
/// inherit it) to the absolute nice value `nice`. A failure (e.g. asking for less than wsstorm
/// already runs at, which needs privileges) comes back as a warning: the run goes on.
pub fn lower_priority(tids: &[libc::id_t], nice: u8) -> Result<(), String> {
    if nice == 0 {
        return Ok(());
    }
    for &tid in tids {
        crate::os::set_thread_nice(tid, nice).map_err(|e| {
            format!("cannot lower the embedded target's CPU priority to nice {nice}: {e}")
        })?;
    }
    Ok(())
}
