//! The load generator's own health: CPU, memory and open files of this process, read from
//! /proc. A generator that is out of CPU or file descriptors reports its own limits as the
//! server's latency, so these figures travel with every result.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorSample {
    pub t_ms: u64,
    /// Resident set size of this process.
    pub rss_bytes: u64,
    /// CPU used since the previous sample, in percent of one core.
    pub cpu_percent: f64,
    pub open_fds: u64,
    /// Connections open when the sample was taken.
    pub connected: u64,
}

/// Cumulative CPU time of this process in seconds (user, system).
pub fn cpu_times() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return (0.0, 0.0);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = clock_ticks_per_second();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / tick
    };
    (get(11), get(12))
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

pub fn rss_bytes() -> u64 {
    let page = {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 { p as u64 } else { 4096 }
    };
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * page)
        .unwrap_or(0)
}

pub fn open_fds() -> u64 {
    // Since Linux 6.2 the size of /proc/self/fd is the number of open files: one stat rather
    // than listing them, which at 20,000 sockets held a runtime thread for ~25 ms a second.
    if let Ok(m) = std::fs::metadata("/proc/self/fd")
        && m.len() > 0
    {
        return m.len();
    }
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0)
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
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit; setrlimit only reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return r.rlim_max;
            }
        }
    }
    r.rlim_cur
}

/// Takes a sample every call, computing CPU use since the previous one.
pub struct Sampler {
    last_cpu: f64,
    last_at: std::time::Instant,
}

impl Sampler {
    pub fn new() -> Sampler {
        let (u, s) = cpu_times();
        Sampler {
            last_cpu: u + s,
            last_at: std::time::Instant::now(),
        }
    }

    pub fn sample(&mut self, t_ms: u64, connected: u64) -> GeneratorSample {
        let (u, s) = cpu_times();
        let now = std::time::Instant::now();
        let wall = now.duration_since(self.last_at).as_secs_f64();
        let cpu = if wall > 0.0 {
            (u + s - self.last_cpu) / wall * 100.0
        } else {
            0.0
        };
        self.last_cpu = u + s;
        self.last_at = now;
        GeneratorSample {
            t_ms,
            rss_bytes: rss_bytes(),
            cpu_percent: (cpu * 10.0).round() / 10.0,
            open_fds: open_fds(),
            connected,
        }
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(rss_bytes() > 0);
        assert!(open_fds() >= 3);
        let (soft, hard) = fd_limit();
        assert!(soft > 0 && soft <= hard);
        let mut s = Sampler::new();
        let x = s.sample(1000, 5);
        assert_eq!(x.t_ms, 1000);
        assert_eq!(x.connected, 5);
        assert!(x.cpu_percent >= 0.0);
    }
}
