//! Pre-flight: does the run fit this machine? Two walls decide it:
//!
//! - **open files per process** (20,000 here): a client socket, a target socket and two proxy
//!   sockets per proxied connection each take one. Clients move to worker processes and the
//!   embedded target to target processes when one process cannot hold them.
//! - **ephemeral ports per (source address, destination)** (~28,000 here): clients beyond that
//!   need more source addresses. On loopback any 127.x.y.z is local, so wsstorm spreads the
//!   clients itself; towards another host the profile must say (`source_addrs`).
//!
//! - **memory**: user space and kernel socket memory per connection, against what the machine
//!   has available.
//! - **processes**: automatic sizing never starts more than [`PROCESSES_PER_CPU`] processes
//!   per CPU; more must be asked for (`--workers`).
//!
//! A plan that cannot fit is refused before anything starts, with the numbers and the fix.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::{Plan, PlanTarget};

/// Open files a process keeps for itself (stdio, epoll, timers, listeners, /proc reads).
pub const FD_RESERVE: u64 = 100;
/// Share of the ephemeral port range a run may use per source address: the rest is slack for
/// sockets still in TIME_WAIT and for other programs. Beyond it a run is refused.
const PORT_SHARE: f64 = 0.9;
/// Share of the range wsstorm fills per loopback address when it spreads clients itself. The
/// kernel's search for a free ephemeral port slows down long before the range is full:
/// measured here, 19,000 clients from one address cost 9.6 s of kernel CPU and 2.3 s of
/// generator lag; from eight addresses, 4.4 s and 9 ms.
const SPREAD_SHARE: f64 = 0.1;
/// Most client worker and server processes automatic sizing starts per CPU (the 250,000-
/// connection bench runs 15 of each on 2 CPUs).
pub const PROCESSES_PER_CPU: usize = 16;
/// Most loopback source addresses wsstorm spreads clients over by itself.
const MAX_SPREAD_ADDRESSES: u64 = 65_536;
/// Memory one connection costs, by where it is held: private memory per idle connection from
/// `bench/scale.py memory`, rounded up (client 2.6 KiB, embedded target 3.6 KiB), and the
/// kernel's slab memory for one idle loopback TCP socket, from /proc/slabinfo while 18,000
/// connections were held (`bench/scale.py kernel`): the TCP socket 2.5 KiB, its inode 0.9, its
/// dentry, file and epoll entry 0.5, and proc inodes 0.7, about 5 KiB. Idle sockets hold no
/// buffers.
const CLIENT_BYTES: u64 = 3 << 10;
const SERVER_BYTES: u64 = 4 << 10;
const KERNEL_SOCKET_BYTES: u64 = 5 << 10;
/// What a worker or target process holds of its own before its first connection (runtime,
/// thread stacks in use, metrics shards): 3.1 MiB measured, rounded up. The binary's pages
/// (~9 MiB) are shared by all of them and held once.
const PROCESS_BYTES: u64 = 4 << 20;
/// Share of the available memory a run may plan to use: the rest is for message buffers,
/// histograms, and everything else on the machine.
const MEMORY_SHARE: f64 = 0.9;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub fd_limit: u64,
    pub ports_per_address: u64,
    pub cpus: usize,
    /// Bytes of memory available to a new run (MemAvailable).
    pub memory: u64,
}

impl Limits {
    /// This machine's limits (raising the soft open-file limit to the hard one first).
    pub fn here() -> Limits {
        let fd_limit = crate::os::raise_fd_limit();
        let ports_per_address = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| {
                let mut it = s.split_whitespace().filter_map(|v| v.parse::<u64>().ok());
                Some(it.next()?..=it.next()?)
            })
            .map(|r| r.end() - r.start() + 1)
            .unwrap_or(28_232);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemAvailable:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(u64::MAX, |kib| kib * 1024);
        Limits {
            fd_limit,
            ports_per_address,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory,
        }
    }

    fn per_process(&self) -> u64 {
        self.fd_limit.saturating_sub(FD_RESERVE).max(1)
    }

    fn per_address(&self) -> u64 {
        ((self.ports_per_address as f64) * PORT_SHARE) as u64
    }

    fn spread_per_address(&self) -> u64 {
        (((self.ports_per_address as f64) * SPREAD_SHARE) as u64).max(1)
    }
}

/// Lay the run out (`plan.layout`, with what was decided in `layout.notes`), or say why it
/// cannot be. Gives loopback source addresses to groups that have none when one address would
/// not do. `workers`: what `--workers` asked for.
pub fn fit(plan: &mut Plan, workers: Option<usize>, limits: &Limits) -> Result<(), String> {
    let cap = limits.per_process();
    let asked_for_workers = workers.is_some();
    let clients: u64 = plan.groups.iter().map(|g| u64::from(g.clients)).sum();
    let proxied: u64 = plan
        .groups
        .iter()
        .filter(|g| g.via_proxy)
        .map(|g| u64::from(g.clients))
        .sum();
    let server = match &plan.target {
        PlanTarget::Embedded { config, .. } => Some(&**config),
        PlanTarget::External { .. } => None,
    };
    // Sockets: a client holds more than one when its fleet behaviour leaves one open.
    let connections: u64 = plan
        .groups
        .iter()
        .map(|g| u64::from(g.clients) * connections_per_client(g))
        .sum();
    let server_fds = if server.is_some() { connections } else { 0 };
    let proxy_fds = 2 * proxied;
    let mut notes = Vec::new();
    let limit_note = format!(
        "open-file limit {} per process, {} ephemeral ports per source address",
        limits.fd_limit, limits.ports_per_address
    );

    // What automatic sizing fills a process to: room below the point where the generator
    // warns that it is near its open-file limit (90 %), for reconnects and stray descriptors.
    let comfortable = (cap * 85 / 100).max(1);

    // Clients.
    let workers = match workers {
        Some(n) => {
            let per = connections.div_ceil(n.max(1) as u64);
            if n > 0 && per > cap {
                let need = connections.div_ceil(cap);
                return Err(format!(
                    "{clients} clients over --workers {n} is {per} sockets per process, but a process may hold {cap} ({limit_note}). Fix: --workers {need} or more, or leave --workers out"
                ));
            }
            if n == 0 && connections + server_fds + proxy_fds > cap {
                return Err(format!(
                    "{clients} clients in one process need {} open files with the target and proxy, more than the {cap} a process may hold ({limit_note}). Fix: leave --workers out",
                    connections + server_fds + proxy_fds
                ));
            }
            n
        }
        None if connections + server_fds + proxy_fds <= comfortable => 0,
        None => connections.div_ceil(comfortable).max(1) as usize,
    };
    let most = limits.cpus * PROCESSES_PER_CPU;

    // The server, and the proxy (which stays in this process).
    let mut server_processes = 0;
    if proxy_fds > cap {
        return Err(format!(
            "{proxied} clients through the proxy need {proxy_fds} open files in the proxy's process (two per connection), more than the {cap} a process may hold ({limit_note}). Fix: at most {} clients through the proxy",
            cap / 2
        ));
    }
    let local = if workers == 0 { connections } else { 0 } + proxy_fds;
    if let Some(s) = server
        && server_fds + local > comfortable
    {
        server_processes = server_fds.div_ceil(comfortable).max(1) as usize;
        if server_processes > 1 {
            let why = if s.stream.is_some() {
                Some("a sequenced stream (each process would number its own)")
            } else if s.tls.is_some() {
                Some("generated TLS certificates (each process would make its own CA)")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(format!(
                    "{clients} connections need {server_processes} embedded-target processes, but {why} needs one: at most {cap} clients with this target ({limit_note})"
                ));
            }
        }
    }

    // Memory: every connection's user-space and kernel cost, on both ends when both are here,
    // and each process's own.
    let sockets = connections + server_fds + proxy_fds;
    let processes = (1 + workers + server_processes) as u64;
    let per_client = CLIENT_BYTES
        + if server_fds > 0 { SERVER_BYTES } else { 0 }
        + KERNEL_SOCKET_BYTES * sockets.div_ceil(clients.max(1));
    let need = clients * CLIENT_BYTES
        + server_fds * SERVER_BYTES
        + sockets * KERNEL_SOCKET_BYTES
        + processes * PROCESS_BYTES;
    let have = (limits.memory as f64 * MEMORY_SHARE) as u64;
    let breakdown = format!(
        "{} client, {}{} kernel per socket, {} per process",
        kib(CLIENT_BYTES),
        if server_fds > 0 {
            format!("{} embedded target, ", kib(SERVER_BYTES))
        } else {
            String::new()
        },
        kib(KERNEL_SOCKET_BYTES),
        mib(PROCESS_BYTES),
    );
    if need > have {
        return Err(format!(
            "{clients} clients need about {} of memory ({breakdown}; {sockets} sockets in {processes} processes), more than the {} this machine has available ({:.0} % of {} free). Fix: at most {} clients on this machine, or run shards on several machines",
            gib(need),
            gib(have),
            MEMORY_SHARE * 100.0,
            gib(limits.memory),
            have.saturating_sub(processes * PROCESS_BYTES) / per_client.max(1)
        ));
    }
    if workers > 0 || server_processes > 0 {
        notes.push(format!(
            "memory: about {} expected ({breakdown}), of {} available",
            gib(need),
            gib(limits.memory)
        ));
    }

    if !asked_for_workers && workers + server_processes > most {
        return Err(format!(
            "{clients} clients would need {workers} client worker and {server_processes} server processes, more than the {most} this machine's {} CPUs should run ({PROCESSES_PER_CPU} per CPU). Fix: fewer clients, shards on several machines, or ask for it with --workers",
            limits.cpus
        ));
    }

    // Ports: clients per source address towards the one destination.
    let per_address = limits.per_address();
    let mut load: BTreeMap<Option<IpAddr>, u64> = BTreeMap::new();
    for g in &plan.groups {
        let addrs = &g.behaviour.source_addrs;
        if addrs.is_empty() {
            *load.entry(None).or_default() += u64::from(g.clients) * connections_per_client(g);
            continue;
        }
        let n = addrs.len() as u64;
        for (i, a) in addrs.iter().enumerate() {
            // Client k of the group uses address k mod n.
            let share = u64::from(g.clients) / n + u64::from((i as u64) < u64::from(g.clients) % n);
            *load.entry(Some(*a)).or_default() += share * connections_per_client(g);
        }
    }
    let spread = limits.spread_per_address();
    let loopback = plan.target.is_loopback();
    // Shards of one plan on one machine share its loopback ports: each takes its own range of
    // source addresses, even when its own clients would fit one.
    let shard = plan.groups.first().map(|g| g.slice).filter(|s| s.count > 1);
    for (addr, n) in &load {
        if addr.is_none() && loopback && (*n > spread || shard.is_some()) {
            // Any 127.x.y.z is local: spread the clients that gave no address, thinly.
            let count = n.div_ceil(spread).max(1);
            if count > MAX_SPREAD_ADDRESSES {
                return Err(format!(
                    "{n} clients would need {count} loopback source addresses, more than the {MAX_SPREAD_ADDRESSES} wsstorm spreads clients over ({limit_note}). Fix: fewer clients, or give the groups `source_addrs`"
                ));
            }
            let offset = shard.map_or(0, |s| s.index * count as u32);
            let first = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 1, 1)) + offset);
            let last = Ipv4Addr::from(u32::from(first) + count as u32 - 1);
            let range: Vec<IpAddr> = (u32::from(first)..=u32::from(last))
                .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .collect();
            for g in plan
                .groups
                .iter_mut()
                .filter(|g| g.behaviour.source_addrs.is_empty())
            {
                Arc::make_mut(&mut g.behaviour).source_addrs = range.clone();
            }
            notes.push(format!(
                "{n} clients from {count} loopback source addresses ({first}-{last}), about {spread} each: the kernel's port search slows down as an address's ports fill"
            ));
            continue;
        }
        if *n <= per_address {
            continue;
        }
        match addr {
            Some(a) => {
                return Err(format!(
                    "{n} clients connect from {a}, but one source address has about {per_address} usable ports towards one destination ({limit_note}). Fix: add addresses to source_addrs (at least {})",
                    n.div_ceil(per_address)
                ));
            }
            None => {
                return Err(format!(
                    "{n} clients connect to {} from one source address, which has about {per_address} usable ports ({limit_note}). Fix: give the groups `source_addrs` (at least {} addresses of this machine)",
                    plan.target.describe(),
                    n.div_ceil(per_address)
                ));
            }
        }
    }
    if workers > 0 {
        notes.push(format!(
            "{clients} clients in {workers} worker processes ({limit_note})"
        ));
    }
    if server_processes > 0 {
        notes.push(format!(
            "the embedded target in {server_processes} processes sharing one port"
        ));
    }
    plan.layout.workers = workers;
    plan.layout.server_processes = server_processes;
    plan.layout.notes = notes;
    plan.layout.memory = need;
    Ok(())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn kib(bytes: u64) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

/// Most connections each client of group `g` holds at once (see
/// [`super::fleet::FleetPlan::most_connections`]).
fn connections_per_client(g: &super::PlanGroup) -> u64 {
    g.behaviour
        .fleet
        .as_deref()
        .map_or(1, super::fleet::FleetPlan::most_connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        fd_limit: 20_000,
        ports_per_address: 28_232,
        cpus: 2,
        memory: 24 << 30,
    };

    fn profile(clients: u32, target: &str, extra: &str) -> Plan {
        Plan::from_yaml(
            &format!(
                "name: t\nduration: 10s\ntarget: {target}\ngroups:\n  - name: g\n    clients: {clients}\n    arrival: {{ rate: 1000/s }}\n{extra}"
            ),
            "t.yaml",
        )
        .unwrap()
    }

    /// 127.0.1.x for x in `last_octets`.
    fn addrs(last_octets: std::ops::RangeInclusive<u8>) -> Vec<IpAddr> {
        last_octets
            .map(|x| IpAddr::V4(Ipv4Addr::new(127, 0, 1, x)))
            .collect()
    }

    #[test]
    fn small_runs_stay_in_one_process() {
        let mut p = profile(2_000, "embedded", "");
        fit(&mut p, None, &LIMITS).unwrap();
        assert_eq!((p.layout.workers, p.layout.server_processes), (0, 0));
        assert!(p.groups[0].behaviour.source_addrs.is_empty());
        // 5,000 still fit one process, but spread over two loopback addresses.
        let mut p = profile(5_000, "embedded", "");
        fit(&mut p, None, &LIMITS).unwrap();
        assert_eq!((p.layout.workers, p.layout.server_processes), (0, 0));
        assert_eq!(p.groups[0].behaviour.source_addrs, addrs(1..=2));
    }

    #[test]
    fn connections_a_fleet_behaviour_leaves_open_count_as_sockets() {
        // 6,000 clients and their 6,000 server ends fit one process (16,915 at 85 %)...
        let mut p = profile(6_000, "embedded", "");
        fit(&mut p, None, &LIMITS).unwrap();
        assert_eq!((p.layout.workers, p.layout.server_processes), (0, 0));
        // ...but not when each leaves a duplicate open: 12,000 + 12,000 files.
        let dup = "    behaviour: { duplicate_connections: { after: 1s } }\n";
        let mut p = profile(6_000, "embedded", dup);
        fit(&mut p, None, &LIMITS).unwrap();
        assert_eq!((p.layout.workers, p.layout.server_processes), (1, 0));
        // A silent network switch abandons one more.
        let both = "    source_addrs: [127.0.1.1, 127.0.1.2]\n    behaviour: { duplicate_connections: { after: 1s }, network_switch: { after: 2s, share: 50%, mode: silent } }\n";
        let e = fit(&mut profile(6_000, "embedded", both), Some(0), &LIMITS).unwrap_err();
        assert!(e.contains("need 36000 open files"), "{e}");
    }

    #[test]
    fn big_runs_spread_over_processes_and_addresses() {
        let mut p = profile(250_000, "embedded", "");
        fit(&mut p, None, &LIMITS).unwrap();
        // Filled to 85 % of the 19,900 a process may hold: 16,915 each.
        assert_eq!(p.layout.workers, 15, "250000 / 16915");
        assert_eq!(p.layout.server_processes, 15);
        // 250000 / (28232 * 0.1) -> 89 addresses.
        assert_eq!(p.groups[0].behaviour.source_addrs, addrs(1..=89));
        assert_eq!(p.layout.notes.len(), 4, "kept for the user and the results");
        // 250,000 × (3 + 4 KiB) + 500,000 sockets × 5 KiB + 31 processes × 4 MiB.
        assert_eq!(
            p.layout.memory,
            250_000 * 7168 + 500_000 * 5120 + 31 * (4 << 20)
        );
        assert!(
            p.layout
                .notes
                .iter()
                .any(|n| n.starts_with("memory: about 4.2 GiB expected")),
            "{:?}",
            p.layout.notes
        );
    }

    #[test]
    fn absurd_sizes_are_refused_by_memory_and_process_count() {
        let e = fit(&mut profile(4_000_000_000, "embedded", ""), None, &LIMITS).unwrap_err();
        assert!(e.contains("4000000000 clients need about"), "{e}");
        assert!(e.contains("21.6 GiB this machine has available"), "{e}");
        // 1,000,000 with the server here: 17 KiB a client (3 + 4 + 2 kernel sockets of 5),
        // 16.2 GiB, and 121 processes of 4 MiB: it fits 90 % of 24 GiB...
        let e = fit(&mut profile(1_000_000, "embedded", ""), None, &LIMITS).unwrap_err();
        assert!(
            e.contains("more than the 32 this machine's 2 CPUs should run"),
            "{e}"
        );
        assert!(e.contains("--workers"), "{e}");
        // Asked for, it is laid out.
        let mut p = profile(1_000_000, "embedded", "");
        fit(&mut p, Some(60), &LIMITS).unwrap();
        assert_eq!(p.layout.workers, 60);
        assert_eq!(
            p.layout.memory,
            1_000_000 * 7168 + 2_000_000 * 5120 + 121 * (4 << 20)
        );
        // ...but not 90 % of 16 GiB.
        let e = fit(
            &mut profile(1_000_000, "embedded", ""),
            Some(60),
            &Limits {
                memory: 16 << 30,
                ..LIMITS
            },
        )
        .unwrap_err();
        assert!(e.contains("1000000 clients need about 16.7 GiB"), "{e}");
        assert!(e.contains("2000000 sockets in 121 processes"), "{e}");
        // A machine with 2 GiB free takes 105,002 of these: 17 KiB each in 90 % of 2 GiB,
        // less 25 processes' 4 MiB.
        let small = Limits {
            memory: 2 << 30,
            ..LIMITS
        };
        let e = fit(&mut profile(200_000, "embedded", ""), None, &small).unwrap_err();
        assert!(e.contains("at most 105002 clients"), "{e}");
    }

    #[test]
    fn refusals_name_the_numbers_and_the_fix() {
        let e = fit(&mut profile(100_000, "embedded", ""), Some(2), &LIMITS).unwrap_err();
        assert!(e.contains("50000 sockets per process"), "{e}");
        assert!(e.contains("--workers 6"), "{e}");

        let e = fit(
            &mut profile(60_000, "ws://10.1.2.3:9000/ws", ""),
            None,
            &LIMITS,
        )
        .unwrap_err();
        assert!(
            e.contains("60000 clients connect to ws://10.1.2.3:9000/ws"),
            "{e}"
        );
        assert!(e.contains("source_addrs"), "{e}");

        let e = fit(
            &mut profile(60_000, "embedded", "    source_addrs: [127.0.0.2]\n"),
            None,
            &LIMITS,
        )
        .unwrap_err();
        assert!(e.contains("60000 clients connect from 127.0.0.2"), "{e}");

        let e = fit(
            &mut profile(
                40_000,
                "{ url: embedded, server: { stream: { rate: 1/s } } }",
                "",
            ),
            None,
            &LIMITS,
        )
        .unwrap_err();
        assert!(e.contains("sequenced stream"), "{e}");

        let e = fit(
            &mut profile(12_000, "{ url: embedded, via_proxy: true }", ""),
            None,
            &LIMITS,
        )
        .unwrap_err();
        assert!(e.contains("through the proxy"), "{e}");
    }
}
