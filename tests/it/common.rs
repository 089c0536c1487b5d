//! What the integration tests share: running a plan in-process, as `wsstorm run` does.

use std::sync::Arc;

use tokio::sync::watch;
use wsstorm::metrics::Snapshot;
use wsstorm::plan::Plan;
use wsstorm::results::Results;
use wsstorm::swarm::Stop;

/// Run `plan` to its end on a fresh two-thread runtime.
pub fn run_plan(plan: &Plan) -> Results {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, _rx) = watch::channel(Arc::new(Snapshot::default()));
    rt.block_on(wsstorm::swarm::run(plan, Stop::new(), tx))
        .expect("run starts")
}

/// Parse `yaml` (named `file` in errors) and run it.
pub fn run_yaml(yaml: &str, file: &str) -> Results {
    run_plan(&Plan::from_yaml(yaml, file).unwrap_or_else(|e| panic!("{e}")))
}

/// The repository's root.
pub fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The YAML files in `dir`, sorted.
pub fn yaml_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// Start `wsstorm serve` on a free loopback port; its URL is the first line it prints. The
/// caller owns the child (its stdout stays piped for what it prints at the end).
pub fn start_server(extra: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wsstorm"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("wsstorm serve: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    (child, url)
}

/// A test server of the test's own making: listens on 127.0.0.1:0 on a thread of its own (a
/// current-thread runtime, so the run under test never shares its scheduler) and hands each
/// accepted connection and its peer address to `serve`, on a task of its own. Returns the
/// `ws://…/ws` URL to point a profile at. It lives until the test process ends.
pub fn tcp_server<F, Fut>(serve: F) -> String
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                match listener.accept().await {
                    Ok((tcp, peer)) => drop(tokio::spawn(serve(tcp, peer))),
                    // Out of files for a moment (a big run beside it): try again, not die.
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                }
            }
        });
    });
    url
}
