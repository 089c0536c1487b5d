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
    let tick = crate::os::clock_ticks_per_second();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / tick
    };
    (get(11), get(12))
}

pub fn rss_bytes() -> u64 {
    let page = crate::os::page_size();
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
        let mut s = Sampler::new();
        let x = s.sample(1000, 5);
        assert_eq!(x.t_ms, 1000);
        assert_eq!(x.connected, 5);
        assert!(x.cpu_percent >= 0.0);
    }
}
