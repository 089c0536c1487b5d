//! Child processes that speak JSON lines: a run spreads its clients (`wsstorm worker`) and its
//! embedded server (`wsstorm server-worker`) over processes of the same executable, and talks
//! to each over its stdin and stdout, one JSON message per line. Both ends live here: the
//! parent's [`Child`] and the child's [`Parent`]. What the messages mean is the business of
//! the modules that send them.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout, Command};

/// The wsstorm executable children are started from: `exe` when given (tests point at the
/// built binary), else this one.
pub fn executable(exe: Option<&Path>) -> Result<PathBuf, String> {
    match exe {
        Some(p) => Ok(p.to_path_buf()),
        None => {
            std::env::current_exe().map_err(|e| format!("cannot find the wsstorm executable: {e}"))
        }
    }
}

/// One message: a JSON line, flushed.
pub async fn send<W, T>(out: &mut W, msg: &T) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut line = serde_json::to_string(msg).map_err(std::io::Error::other)?;
    line.push('\n');
    out.write_all(line.as_bytes()).await?;
    out.flush().await
}

/// The next message on `lines`: `None` when the other end closed the pipe, `Some(Err)` for a
/// line that is not the message expected.
pub async fn recv<R, T>(lines: &mut Lines<R>) -> Option<Result<T, String>>
where
    R: tokio::io::AsyncBufRead + Unpin,
    T: DeserializeOwned,
{
    match lines.next_line().await {
        Ok(Some(line)) => Some(serde_json::from_str(&line).map_err(|e| format!("{e}: `{line}`"))),
        Ok(None) | Err(_) => None,
    }
}

/// A child process as its parent sees it. Killed when dropped, so a parent that fails cannot
/// leave children behind.
pub struct Child {
    pub process: tokio::process::Child,
    pub stdin: ChildStdin,
    pub stdout: Lines<BufReader<ChildStdout>>,
}

impl Child {
    /// Start `exe SUBCOMMAND`; its stderr is ours, so what it says reaches the user.
    pub fn spawn(exe: &Path, subcommand: &str) -> Result<Child, String> {
        let mut process = Command::new(exe)
            .arg(subcommand)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let (Some(stdin), Some(stdout)) = (process.stdin.take(), process.stdout.take()) else {
            return Err(format!("{}: no pipes to the child", exe.display()));
        };
        Ok(Child {
            process,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        })
    }

    pub async fn send<T: Serialize>(&mut self, msg: &T) -> std::io::Result<()> {
        send(&mut self.stdin, msg).await
    }

    pub async fn recv<T: DeserializeOwned>(&mut self) -> Option<Result<T, String>> {
        recv(&mut self.stdout).await
    }
}

/// The parent as a child process sees it: messages arrive on stdin, go out on stdout.
///
/// Over the pipes themselves, non-blocking and polled like a socket: tokio's `stdout()` hands
/// every write to a blocking thread and waits for it to come back, a round of thread wake-ups
/// for each of a worker's ten ticks a second. At a million connections that is 60 workers
/// doing it for nothing while the connections are idle, on two cores. A stdin or stdout that is
/// not a pipe (a person trying `wsstorm worker` at a terminal) falls back to tokio's.
pub struct Parent {
    stdin: Lines<BufReader<Pin<Box<dyn AsyncRead + Send>>>>,
    stdout: Pin<Box<dyn AsyncWrite + Send>>,
}

impl Default for Parent {
    fn default() -> Self {
        use std::os::fd::AsFd;
        use tokio::net::unix::pipe;
        let pipe_of =
            |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().ok().map(std::fs::File::from);
        let stdin: Pin<Box<dyn AsyncRead + Send>> = match pipe_of(std::io::stdin().as_fd())
            .and_then(|f| pipe::Receiver::from_file(f).ok())
        {
            Some(r) => Box::pin(r),
            None => Box::pin(tokio::io::stdin()),
        };
        let stdout: Pin<Box<dyn AsyncWrite + Send>> = match pipe_of(std::io::stdout().as_fd())
            .and_then(|f| pipe::Sender::from_file(f).ok())
        {
            Some(w) => Box::pin(w),
            None => Box::pin(tokio::io::stdout()),
        };
        Parent {
            stdin: BufReader::new(stdin).lines(),
            stdout,
        }
    }
}

impl Parent {
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> std::io::Result<()> {
        send(&mut self.stdout, msg).await
    }

    pub async fn recv<T: DeserializeOwned>(&mut self) -> Option<Result<T, String>> {
        recv(&mut self.stdin).await
    }
}
