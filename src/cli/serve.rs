//! `wsstorm serve` and `wsstorm proxy`: the embedded server and the fault proxy on their own,
//! for runs from other machines or other tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{Failure, runtime, stop_on_signal};
use crate::server::Server;
use crate::swarm::Stop;
use crate::units::{Dur, Rate};

pub const SERVE_HELP: &str = "\
Examples:
  wsstorm serve --listen 127.0.0.1:9001
  wsstorm serve --profile profiles/resume-after-reconnect.yaml --listen 127.0.0.1:9001
      the embedded server that profile describes (its stream), for runs from elsewhere
  wsstorm serve --accept-rate 500/s --retry-after 2s
      a server that sheds handshakes beyond 500/s with 503 and Retry-After

Ctrl-C or SIGTERM stops it and prints its counters.";

pub const PROXY_HELP: &str = "\
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
    #[command(flatten)]
    pub export: super::ExportFlags,
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
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Handshakes admitted per second (e.g. 500/s); the rest get 503 with Retry-After.
    #[arg(long, value_name = "RATE")]
    pub accept_rate: Option<Rate>,
    /// Token-bucket burst for --accept-rate.
    #[arg(long, value_name = "N")]
    pub accept_burst: Option<u32>,
    /// Retry-After sent with a 503 (default 1s).
    #[arg(long, value_name = "D")]
    pub retry_after: Option<Dur>,
    /// Listen backlog (default 4096).
    #[arg(long, value_name = "N")]
    pub backlog: Option<u32>,
    /// Server processes sharing the port (the kernel spreads connections over them): one
    /// process holds at most as many connections as its open-file limit allows.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub processes: usize,
    #[command(flatten)]
    pub export: super::ExportFlags,
}

pub fn proxy(args: ProxyArgs) -> Result<ExitCode, Failure> {
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
    let export = args.export.start(None, None)?;
    let rt = runtime()?;
    let code = rt.block_on(async {
        let proxy = Proxy::bind(config)
            .await
            .map_err(|e| Failure::runtime(format!("cannot listen on {}: {e}", args.listen)))?;
        let control_listener = bind_control(control)
            .await
            .map_err(|e| Failure::runtime(format!("cannot listen on {control}: {e}")))?;
        let handle = proxy.handle();
        if let Some(e) = &export {
            let h = handle.clone();
            e.show_proxy(move || h.stats());
        }
        outln!(
            "wsstorm proxy: listening on {}, forwarding to {upstream}; control API on http://{}",
            handle.local_addr(),
            control_listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        let stop = Stop::new();
        tokio::spawn(stop_on_signal(stop.clone(), "stopping", Default::default()));
        tokio::spawn(serve_control(
            control_listener,
            handle.clone(),
            stop.token(),
        ));
        proxy.run(stop.token()).await;
        let s = handle.stats();
        outln!(
            "wsstorm proxy: stopped; accepted {}, cut {}, idle timeouts {}, bytes up {}, down {}",
            s.accepted,
            s.cut,
            s.idle_timeouts,
            s.bytes_upstream,
            s.bytes_downstream
        );
        Ok::<_, Failure>(ExitCode::SUCCESS)
    })?;
    drop(rt);
    args.export.linger(export);
    Ok(code)
}

pub fn serve(args: ServeArgs) -> Result<ExitCode, Failure> {
    // The profile is checked as `validate` and `run` check it (every rule, errors at their
    // line and column); its embedded target is what is served.
    let mut config = match &args.profile {
        Some(p) => {
            let doc = crate::profile::load(p)?;
            let plan = crate::plan::Plan::compile(&doc)?;
            match plan.target {
                crate::plan::PlanTarget::Embedded { config, .. } => *config,
                // A profile aimed at another server: its `target.server` section, if any.
                crate::plan::PlanTarget::External { .. } => {
                    crate::plan::server_config(&doc.profile.target.server)
                        .map_err(|e| Failure::usage(format!("{}: {e}", p.display())))?
                }
            }
        }
        None => crate::plan::server_config(&Default::default()).map_err(Failure::usage)?,
    };
    // Clients from elsewhere send the default identity header, besides the profile's groups'.
    let default = crate::server::identity::DEFAULT_HEADER;
    if !config.identity_headers.iter().any(|h| h == default) {
        config.identity_headers.push(default.into());
    }
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
    if args.processes > 1 && args.export.metrics_listen.is_some() {
        // Each process keeps its own counters; they are added up only when they stop.
        return Err(Failure::usage(
            "--metrics-listen with --processes: not supported yet (each server process keeps its own counters); serve one process, or scrape `wsstorm run --metrics-listen` on the client side",
        ));
    }
    let export = args.export.start(None, None)?;
    let rt = runtime()?;
    if args.processes > 1 {
        return rt.block_on(serve_processes(config, args.processes));
    }
    let code = rt.block_on(async {
        let server = Server::bind(config.clone())
            .await
            .map_err(|e| Failure::runtime(format!("cannot listen on {}: {e}", config.listen)))?;
        let handle = server.handle();
        if let Some(e) = &export {
            let stats = handle.stats.clone();
            e.show_server(move || stats.summary());
        }
        outln!("wsstorm serve: listening on {}", handle.url());
        if let Some(ca) = handle.ca_pem() {
            let path =
                std::env::temp_dir().join(format!("wsstorm-serve-{}-ca.pem", std::process::id()));
            match std::fs::write(&path, ca) {
                Ok(()) => outln!(
                    "wsstorm serve: CA of the generated certificate: {}",
                    path.display()
                ),
                Err(e) => errln!("wsstorm serve: cannot write the CA file: {e}"),
            }
        }
        let stop = Stop::new();
        tokio::spawn(stop_on_signal(stop.clone(), "stopping", Default::default()));
        server.run(stop.token()).await;
        let s = handle.stats.summary();
        stopped(&s);
        Ok::<_, Failure>(ExitCode::SUCCESS)
    })?;
    drop(rt);
    args.export.linger(export);
    Ok(code)
}

/// What the target saw of its clients' identity headers, once it saw any.
fn identities(s: &crate::server::ServerSummary) {
    if s.identified > 0 {
        outln!(
            "wsstorm serve: {} upgrades carried a client identity; {} from a client already connected",
            s.identified,
            s.duplicate_connections
        );
    }
}

/// What `serve` prints when it stops, in one process or added up over several.
fn stopped(s: &crate::server::ServerSummary) {
    outln!(
        "wsstorm serve: stopped; accepted {}, upgraded {}, 503 {}, 404 {}, echoed {}{}",
        s.accepted,
        s.upgraded,
        s.rejected_503,
        s.rejected_404,
        s.messages_echoed,
        limits_line(s)
    );
    identities(s);
}

/// The counters of the caps, lifetime and Origin check, when any counted something.
fn limits_line(s: &crate::server::ServerSummary) -> String {
    [
        ("403", s.rejected_403),
        ("refused at max_connections", s.refused_max_connections),
        ("refused per IP", s.refused_per_ip),
        ("lifetime closes", s.lifetime_closes),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(name, n)| format!(", {name} {n}"))
    .collect()
}

/// `serve --processes N`: the same target in N processes on one port, each with its share of
/// the accept rate; Ctrl-C stops them all and prints their counters added up.
async fn serve_processes(
    mut config: crate::server::ServerConfig,
    n: usize,
) -> Result<ExitCode, Failure> {
    if n > 256 {
        return Err(Failure::usage(format!("--processes {n}: at most 256")));
    }
    config.reuse_port = true;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::runtime(format!("cannot find this executable: {e}")))?;
    let procs = crate::server::processes::ServerProcesses::start(&exe, &config, n)
        .await
        .map_err(|e| Failure::runtime(format!("cannot start {n} server processes: {e}")))?;
    outln!("wsstorm serve: listening on {}", procs.url);
    outln!("wsstorm serve: {n} processes share the port");
    let stop = Stop::new();
    tokio::spawn(stop_on_signal(stop.clone(), "stopping", Default::default()));
    stop.token().cancelled().await;
    let s = procs.stop().await;
    stopped(&s);
    Ok(ExitCode::SUCCESS)
}
