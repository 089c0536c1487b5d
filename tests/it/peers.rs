//! Third-party peers the tests run against — software no one on this project wrote:
//!
//! - Python packages (the `websockets` server, the client the browser check drives Chromium
//!   with, and `prometheus_client`'s parsers of what `/metrics` serves), pinned in
//!   `tests/peers/requirements.txt` and installed by the tests themselves into a virtualenv
//!   under `target/`, so `cargo test` needs only Python 3 on the machine. The virtualenv is
//!   made once and remade when the requirements change. It also holds the checkers deploy/'s
//!   tests run: `kubernetes-validate` (the Kubernetes API's schemas, bundled) and ShellCheck
//!   (a binary inside its wheel).
//! - A headless browser, which cannot be installed from here: found as `$CHROME`, or under its
//!   usual names. Without one, the tests that need it skip with a loud message — unless
//!   `WSSTORM_REQUIRE_PEERS` is set (CI sets it), which turns every skip into a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Set (to anything) where a missing peer must fail the test instead of skipping it.
const REQUIRE: &str = "WSSTORM_REQUIRE_PEERS";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv's Python, with the pinned requirements installed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| make_venv().unwrap_or_else(|e| panic!("{e}")))
}

fn make_venv() -> Result<PathBuf, String> {
    let requirements = root().join("tests/peers/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("{}: {e}", requirements.display()))?;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("peers-venv");
    let python = dir.join("bin/python");
    let stamp = dir.join("requirements.installed");
    std::fs::create_dir_all(dir.parent().unwrap_or(Path::new("."))).map_err(|e| e.to_string())?;
    // Several test processes may start at once (cargo test runs the unit and integration
    // binaries in turn, but a user may run two): one makes the virtualenv, the others wait.
    let lock_path = dir.with_extension("lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    let _ = writeln!(
        std::io::stderr(),
        "tests: making the peers' virtualenv in {} ({})",
        dir.display(),
        wanted.split_whitespace().collect::<Vec<_>>().join(", ")
    );
    let _ = std::fs::remove_dir_all(&dir);
    run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))?;
    let mut f = std::fs::File::create(&stamp).map_err(|e| e.to_string())?;
    f.write_all(wanted.as_bytes()).map_err(|e| e.to_string())?;
    Ok(python)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?} (Python 3 with venv is needed): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A headless-capable Chromium or Chrome: `$CHROME`, or the first of the usual names on the
/// PATH. `None` after saying loudly that the test is skipped; a failure instead when
/// `WSSTORM_REQUIRE_PEERS` is set.
pub fn browser(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("CHROME")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .or_else(|| {
            [
                "chromium",
                "chromium-browser",
                "google-chrome",
                "google-chrome-stable",
            ]
            .iter()
            .find_map(|name| which(name))
        });
    if found.is_none() {
        let why = "no Chromium or Chrome found (set $CHROME, or install one: \
                   apt-get install chromium)";
        if std::env::var_os(REQUIRE).is_some() {
            panic!("{test}: {why}, and {REQUIRE} is set");
        }
        // Straight to the process's stderr: the test harness captures eprintln! of passing
        // tests, and a skip nobody sees is a pass.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPED {test}: {why}. The HTML report was not checked in a browser.\n"
        );
    }
    found
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
