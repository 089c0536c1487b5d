//! What wsstorm asks of the operating system directly: every `unsafe` libc call lives here,
//! behind a safe function, so the rest of the tree reads as plain Rust — plus the child
//! processes a big run is spread over ([`child`]). A leaf: it imports nothing of wsstorm.
//!
//! Linux only, as the tool is: the figures come from /proc, and the socket options
//! (`IP_BIND_ADDRESS_NO_PORT`, `TCP_INFO`) are Linux's.

pub mod child;

use std::os::fd::RawFd;

/// Clock ticks per second, the unit of CPU times in /proc/*/stat.
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Bytes per memory page, the unit of /proc/*/statm.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// (soft, hard) limit on open files.
pub fn fd_limit() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        (r.rlim_cur, r.rlim_max)
    } else {
        (0, 0)
    }
}

/// Raise the soft open-file limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let (soft, hard) = fd_limit();
    if soft < hard {
        let raised = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: raised is a valid rlimit; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return hard;
        }
    }
    soft
}

/// Ids of this process's threads.
pub fn thread_ids() -> Vec<libc::id_t> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Set the nice value of thread `tid` (0: the calling thread; threads it starts later inherit
/// it) to `nice`, an absolute value as setpriority(2) takes it.
pub fn set_thread_nice(tid: libc::id_t, nice: u8) -> std::io::Result<()> {
    // SAFETY: setpriority takes plain integers. On Linux PRIO_PROCESS with a thread id sets
    // that thread's nice value only.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, libc::c_int::from(nice)) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether the peer of TCP socket `fd` has closed or reset the connection (TCP_INFO state
/// CLOSE_WAIT or CLOSE).
pub fn tcp_peer_closed(fd: RawFd) -> bool {
    // SAFETY: tcp_info is plain old data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        // Linux TCP states: 7 = CLOSE, 8 = CLOSE_WAIT.
        rc == 0 && matches!(info.tcpi_state, 7 | 8)
    }
}

/// IP_BIND_ADDRESS_NO_PORT on socket `fd`: a bind to a source address leaves the port to
/// connect(), which picks one per (source, destination) pair, so each source address gets its
/// own ~28k ports instead of sharing them.
pub fn bind_address_no_port(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: a socket fd and a c_int option value of the right size. A failure leaves the
    // kernel's default (ports shared per source address), which is still correct.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Bytes free for an unprivileged user on the file system that holds `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; statvfs(3) fills it from a NUL-terminated path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a valid statvfs to write into.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0 {
        Some(s.f_bavail.saturating_mul(s.f_frsize))
    } else {
        None
    }
}

/// Whether an I/O error says the process ran out of file descriptors (EMFILE, ENFILE).
pub fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_units_are_read() {
        let (soft, hard) = fd_limit();
        assert!(soft > 0 && soft <= hard);
        assert_eq!(raise_fd_limit(), hard);
        assert!(clock_ticks_per_second() > 0.0);
        assert!(page_size() >= 4096);
        assert!(!thread_ids().is_empty());
        assert!(free_bytes(std::path::Path::new("/")).is_some_and(|b| b > 0));
        assert_eq!(free_bytes(std::path::Path::new("/nonexistent/x")), None);
    }
}
