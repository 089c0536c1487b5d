//! `--metrics-listen ADDR` of `run`, `serve` and `proxy`: the live figures at
//! `http://ADDR/metrics` for Prometheus (see [`crate::export`]), and `--metrics-linger D` to
//! keep the final ones there a while after the command is done.

use std::net::SocketAddr;

use clap::Args;

use super::Failure;
use crate::export::{Exporter, Labels};
use crate::units::Dur;

#[derive(Args, Debug, Clone, Default)]
pub struct ExportFlags {
    /// Serve the live figures to Prometheus at http://ADDR/metrics (OpenMetrics text), e.g.
    /// 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// With --metrics-listen: once done, keep serving the final figures this long before
    /// exiting, so that a scrape sees them (default 0s; Ctrl-C ends the wait).
    #[arg(long, value_name = "D", requires = "metrics_listen")]
    pub metrics_linger: Option<Dur>,
}

impl ExportFlags {
    /// Listen now, before anything runs — or say why not (exit 3). `None` without the flag.
    /// `run` is the profile's name, `shard` the part of a split run this process is: labels
    /// of every series.
    pub(super) fn start(
        &self,
        run: Option<&str>,
        shard: Option<&str>,
    ) -> Result<Option<Exporter>, Failure> {
        let Some(addr) = self.metrics_listen else {
            return Ok(None);
        };
        let labels = Labels {
            run: run.map(str::to_string),
            shard: shard.map(str::to_string),
        };
        let exporter = Exporter::start(addr, labels).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    " (another process listens there: choose another port)"
                }
                std::io::ErrorKind::AddrNotAvailable => " (not an address of this machine)",
                _ => "",
            };
            Failure::runtime(format!(
                "--metrics-listen {addr}: cannot listen there: {e}{hint}"
            ))
        })?;
        errln!(
            "wsstorm: metrics on http://{}/metrics",
            exporter.local_addr()
        );
        Ok(Some(exporter))
    }

    /// Keep `exporter` serving for --metrics-linger, or until Ctrl-C or SIGTERM; then drop it.
    /// Call it outside any async runtime.
    pub(super) fn linger(&self, exporter: Option<Exporter>) {
        let (Some(exporter), Some(Dur(d))) = (exporter, self.metrics_linger) else {
            return;
        };
        if d.is_zero() {
            return;
        }
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            std::thread::sleep(d);
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            // Listening before saying so: a signal sent on reading the line is not lost.
            let mut int = signal(SignalKind::interrupt()).ok();
            let mut term = signal(SignalKind::terminate()).ok();
            errln!(
                "wsstorm: serving the final figures on http://{}/metrics for {} (Ctrl-C to exit now)",
                exporter.local_addr(),
                Dur(d)
            );
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = recv(&mut int) => {}
                _ = recv(&mut term) => {}
            }
        });
    }
}

/// The next signal, or never without a listener.
async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
