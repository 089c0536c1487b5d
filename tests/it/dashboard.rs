//! `wsstorm run` under a real pseudo-terminal: the dashboard appears, `q` stops the run, the
//! process exits 0 with its results written, and the terminal is given back as it was.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wsstorm::results::{EndReason, Results};

struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
}

fn openpty(rows: u16, cols: u16) -> Pty {
    let mut master = -1;
    let mut slave = -1;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fds; the name and termios arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    // SAFETY: both fds were just opened and are owned here.
    unsafe {
        Pty {
            master: std::fs::File::from_raw_fd(master),
            slave: OwnedFd::from_raw_fd(slave),
        }
    }
}

fn cooked(fd: i32) -> bool {
    // SAFETY: tcgetattr fills a termios for a valid terminal fd.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd, &mut t), 0);
        t.c_lflag & libc::ICANON != 0 && t.c_lflag & libc::ECHO != 0
    }
}

/// What a terminal showing everything written so far would display (plus what scrolled off).
fn screen(output: &Mutex<Vec<u8>>) -> String {
    let size = |n| std::num::NonZero::new(n).expect("non-zero");
    let mut term = vt100::Parser::new(size(24), size(80), 1000);
    term.process(&output.lock().unwrap_or_else(|e| e.into_inner()));
    term.screen().contents()
}

fn wait_for(output: &Mutex<Vec<u8>>, needle: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if screen(output).contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn dashboard_under_a_pty_stops_on_q_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("tui.yaml");
    std::fs::write(
        &profile,
        "
name: tui
duration: 60s
target: embedded
groups:
  - name: g
    clients: 50
    arrival: { rate: 500/s }
    behaviour:
      send: { every: 200ms, bytes: 64 }
timeline:
  - { at: 2s, action: drop-all, mode: close, code: 1012 }
",
    )
    .unwrap();
    let out = dir.path().join("out");
    let (pty, mut child, output) = run_in_pty(&profile, &out);
    for panel in [
        "wsstorm · tui · embedded target · seed 1",
        "connected clients",
        "connect attempts/s",
        "latency ms · last 1s",
        "close codes",
        "storm",
        "generator",
        "q stop · ? help",
    ] {
        assert!(
            wait_for(&output, panel, Duration::from_secs(20)),
            "panel `{panel}` never appeared:\n{}",
            screen(&output)
        );
    }
    // The drop at 2s shows in the close-code panel, with its name.
    assert!(
        wait_for(&output, "1012 service restart", Duration::from_secs(10)),
        "{}",
        screen(&output)
    );
    assert!(wait_for(
        &output,
        "connected 50/50",
        Duration::from_secs(10)
    ));
    let mut master = pty.master.try_clone().unwrap();
    master.write_all(b"q").unwrap();

    let status = exit_within(
        &mut child,
        Duration::from_secs(20),
        "wsstorm did not stop on q",
    );
    assert_eq!(status.code(), Some(0));
    assert!(
        wait_for(&output, "results ", Duration::from_secs(5)),
        "{}",
        screen(&output)
    );

    let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    // On the normal screen after the dashboard: the summary, not the panels. Its first line
    // may have scrolled off a 24-line terminal (a run with many figures prints more); that
    // it was printed after the alternate screen was left is checked below, on the raw output.
    let after = screen(&output);
    assert!(after.contains("results "), "{after}");
    assert!(!after.contains("connect attempts/s"), "{after}");
    let entered = text
        .find("\x1b[?1049h")
        .expect("entered the alternate screen");
    let left = text
        .rfind("\x1b[?1049l")
        .expect("left the alternate screen");
    assert!(left > entered);
    let mut term = vt100::Parser::new(
        std::num::NonZero::new(24).unwrap(),
        std::num::NonZero::new(80).unwrap(),
        0,
    );
    term.process(text.as_bytes());
    assert!(!term.screen().hide_cursor(), "the cursor is visible again");
    assert!(
        !term.screen().alternate_screen(),
        "back on the normal screen"
    );
    let summary = text
        .rfind("wsstorm: tui — stopped")
        .expect("summary after the dashboard");
    assert!(
        summary > left,
        "the summary is printed on the normal screen"
    );
    assert!(cooked(pty.slave.as_raw_fd()), "raw mode was switched off");

    let r = Results::read(&out.join("results.json")).unwrap();
    assert_eq!(r.end_reason, EndReason::Stopped);
    assert!(r.duration_ms < 30_000);
    assert_eq!(r.totals.close_codes.get("1012"), Some(&50));
}

/// A conversation against the embedded (echo) target: at 80x24 its steps panel shows each
/// sample live, in place of the attempts chart.
#[test]
fn a_conversation_shows_its_steps_live() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("conv.yaml");
    std::fs::write(
        &profile,
        r#"
name: conv
duration: 60s
target: embedded
groups:
  - name: g
    clients: 20
    arrival: { rate: 200/s }
    behaviour:
      conversation:
        steps:
          - send: { json: { type: hello, id: "{{id}}" } }
          - expect: { name: hello, match: { json: { "$.type": hello } }, id: "$.id", timeout: 2s }
        every:
          - name: req
            every: 50ms
            send: { json: { type: req, id: "{{id}}" } }
            reply: { match: { json: { "$.type": req } }, id: "$.id", timeout: 1s }
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let (pty, mut child, output) = run_in_pty(&profile, &out);
    for expect in [
        "steps · ms last 1s",
        "step         ok/s      ok   tmo    p99",
        "│hello           0      20     0",
        "connected 20 · attempts/s",
        "latency ms · last 1s",
    ] {
        assert!(
            wait_for(&output, expect, Duration::from_secs(20)),
            "`{expect}` never appeared:\n{}",
            screen(&output)
        );
    }
    // 20 clients asking every 50 ms: about 400 answers a second, well below the total once a
    // few seconds have gone.
    let req = || {
        let shown = screen(&output);
        let row = shown.lines().rev().find_map(|l| l.split("│req").nth(1))?;
        let mut cells = row.split_whitespace().map(|c| c.parse::<u64>().ok());
        Some((cells.next()??, cells.next()??))
    };
    let start = Instant::now();
    let (rate, total) = loop {
        match req() {
            Some((rate, total)) if total > 1200 => break (rate, total),
            _ if start.elapsed() > Duration::from_secs(20) => {
                panic!("req never passed 1200 answers:\n{}", screen(&output))
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert!(
        (200..=600).contains(&rate),
        "req at {rate}/s, {total} in all:\n{}",
        screen(&output)
    );
    let mut master = pty.master.try_clone().unwrap();
    master.write_all(b"q").unwrap();
    let status = exit_within(&mut child, Duration::from_secs(20), "no stop on q");
    assert_eq!(status.code(), Some(0));
    let r = Results::read(&out.join("results.json")).unwrap();
    let steps = &r.conversation.expect("a conversation section").steps;
    assert_eq!(steps["hello"].counts.matched, 20);
    assert!(steps["req"].counts.matched > 100);
}

/// `wsstorm run PROFILE --out OUT` with a new pty as its controlling terminal, as a shell
/// would start it; what it writes to the terminal is gathered in the returned buffer.
fn run_in_pty(
    profile: &std::path::Path,
    out: &std::path::Path,
) -> (Pty, std::process::Child, Arc<Mutex<Vec<u8>>>) {
    let pty = openpty(24, 80);
    let slave = pty.slave.as_raw_fd();
    assert!(cooked(slave), "a fresh pty starts in cooked mode");
    let io = || Stdio::from(pty.slave.try_clone().unwrap());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsstorm"));
    cmd.arg("run")
        .arg(profile)
        .arg("--out")
        .arg(out)
        .env("TERM", "xterm-256color")
        .stdin(io())
        .stdout(io())
        .stderr(io());
    // SAFETY: only async-signal-safe calls between fork and exec: a new session with the pty
    // as its controlling terminal, as a shell would give it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("wsstorm starts");

    let output = Arc::new(Mutex::new(Vec::new()));
    let mut reader = pty.master.try_clone().unwrap();
    let sink = output.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&buf[..n]);
        }
    });
    (pty, child, output)
}

/// SIGTERM while the dashboard owns the terminal: the run stops as interrupted (exit 130,
/// results written) and nothing is printed over the dashboard.
#[test]
fn sigterm_under_the_dashboard_stops_quietly_and_writes_the_results() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("term.yaml");
    std::fs::write(
        &profile,
        "name: term\nduration: 60s\ntarget: embedded\ngroups:\n  - name: g\n    clients: 10\n    arrival: { rate: 100/s }\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let (_pty, mut child, output) = run_in_pty(&profile, &out);
    assert!(
        wait_for(&output, "connected 10/10", Duration::from_secs(20)),
        "{}",
        screen(&output)
    );
    // SAFETY: kill(2) on the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = exit_within(&mut child, Duration::from_secs(20), "no stop on SIGTERM");
    assert_eq!(status.code(), Some(130));
    let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    assert!(
        !text.contains("stopping"),
        "printed over the dashboard: {text}"
    );
    let r = Results::read(&out.join("results.json")).unwrap();
    assert_eq!(r.end_reason, EndReason::Interrupted);
}

/// The child's exit status, once it has exited; fails the test with `why` after `limit`.
fn exit_within(
    child: &mut std::process::Child,
    limit: Duration,
    why: &str,
) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < limit, "{why}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
