//! The machine's ceiling for new connections per second, without wsstorm: what the kernel
//! alone costs for the TCP part of a WebSocket handshake on loopback.
//!
//! `cargo run --release --example handshake-floor [SECONDS] [PAIRS] [pin]`
//!
//! PAIRS client processes (default 2) each connect, send a 200-byte request and read a
//! 129-byte response, like an upgrade, and keep the connection; PAIRS server processes share
//! the port (SO_REUSEPORT) and each accept, read the request and answer. Plain blocking
//! sockets, no event loop, no parsing, no allocation per connection: whatever wsstorm reaches
//! against the embedded target is below this figure, because it also runs the WebSocket work,
//! the metrics and an event loop on the same cores. `bench/scale.py handshakes` prints both.
//!
//! With `pin`, client and server process i run on CPU i (mod the CPUs) and server i's listener
//! asks for the connections whose packets that CPU handles (SO_INCOMING_CPU): each connection
//! then stays on one CPU, with no cross-CPU wake-ups. That is the best case for this machine.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Connections each process keeps open before it resets them all, at most (see [`hold`]).
const HOLD: usize = 15_000;
const REQUEST: usize = 200;
const RESPONSE: usize = 129;

/// Raise the open-file limit to the hard limit and say how many connections to keep: HOLD, or
/// fewer under a lower limit.
fn hold() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit to read into and from.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
    }
    HOLD.min((r.rlim_cur as usize).saturating_sub(100)).max(1)
}

/// Run this process on `cpu` only.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it; the call reads it.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if !ok {
        eprintln!(
            "cannot pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
}

/// An integer socket option socket2 has no setter for; best effort, like wsstorm's own.
fn set_int_option(s: &Socket, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: a valid socket and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn listener(addr: SocketAddr, cpu: Option<usize>) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_port(true)?;
    if let Some(cpu) = cpu {
        set_int_option(
            &s,
            libc::SOL_SOCKET,
            libc::SO_INCOMING_CPU,
            cpu as libc::c_int,
        );
    }
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

fn serve(l: TcpListener) {
    let hold = hold();
    let mut held = Vec::with_capacity(hold);
    let mut buf = [0u8; 512];
    let answer = [b'r'; RESPONSE];
    loop {
        let mut c = match l.accept() {
            Ok((c, _)) => c,
            Err(e) => {
                eprintln!("server: accept: {e}");
                return;
            }
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let mut got = 0;
        while got < REQUEST {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        let _ = c.write_all(&answer);
        if held.len() == hold {
            held.clear();
        }
        held.push(c);
    }
}

/// Connect from `source` (any port) to `to`, as wsstorm's clients do.
fn connect(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    set_int_option(&s, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1);
    s.set_tcp_nodelay(true)?;
    s.bind(&SocketAddr::from((source, 0)).into())?;
    s.connect(&to.into())?;
    Ok(s.into())
}

fn client(id: u8, to: SocketAddr, until: Instant) -> u64 {
    let hold = hold();
    let mut held: Vec<TcpStream> = Vec::with_capacity(hold);
    let request = [b'q'; REQUEST];
    let mut buf = [0u8; 512];
    let mut done = 0u64;
    while Instant::now() < until {
        // 2,000 connections per source address, as wsstorm spreads them.
        let source = Ipv4Addr::new(127, 0, 3 + id, 1 + ((done / 2000) % 250) as u8);
        let mut c = match connect(source, to) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("client {id}: connect: {e}");
                break;
            }
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = c.write_all(&request);
        let mut got = 0;
        while got < RESPONSE {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        if held.len() == hold {
            // Reset rather than close: no TIME_WAIT left behind to slow the port search.
            for h in &held {
                let _ = socket2::SockRef::from(h).set_linger(Some(Duration::ZERO));
            }
            held.clear();
        }
        held.push(c);
        done += 1;
    }
    done
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Roles of the child processes this program starts: one process per thread of work, as
    // wsstorm spreads clients and target over processes (threads of one process contend on
    // its file table: ~14k/s here with 2 + 2 threads in one process).
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let addr: SocketAddr = args[2].parse().expect("address");
            let cpu: Option<usize> = args.get(3).and_then(|c| c.parse().ok());
            if let Some(c) = cpu {
                pin_to(c);
            }
            serve(listener(addr, cpu).expect("listen on the shared port"));
        }
        Some("client") => {
            let id: u8 = args[2].parse().expect("id");
            let to: SocketAddr = args[3].parse().expect("address");
            let seconds: f64 = args[4].parse().expect("seconds");
            if let Some(c) = args.get(5).and_then(|c| c.parse().ok()) {
                pin_to(c);
            }
            let until = Instant::now() + Duration::from_secs_f64(seconds);
            println!("{}", client(id, to, until));
        }
        _ => coordinate(&args),
    }
}

fn coordinate(args: &[String]) {
    let seconds: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let pairs: u8 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2)
        .clamp(1, 8);
    let pin = args.get(3).is_some_and(|a| a == "pin");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The CPU argument of process i: none unless pinned.
    let cpu_of = |i: u8| {
        if pin {
            (usize::from(i) % cpus).to_string()
        } else {
            String::new()
        }
    };
    let exe = std::env::current_exe().expect("own executable");
    // Bound here so the port is known; the servers bind it again with SO_REUSEPORT.
    let probe = listener("127.0.0.1:0".parse().expect("literal"), None).expect("listen");
    let addr = probe.local_addr().expect("bound").to_string();
    let run = |a: &[&str]| {
        Command::new(&exe)
            .args(a.iter().filter(|a| !a.is_empty()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a child")
    };
    let mut servers: Vec<_> = (0..pairs)
        .map(|i| run(&["serve", &addr, &cpu_of(i)]))
        .collect();
    drop(probe);
    // Let the servers listen before the first connect.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let clients: Vec<_> = (0..pairs)
        .map(|i| {
            let (id, secs) = (i.to_string(), seconds.to_string());
            run(&["client", &id, &addr, &secs, &cpu_of(i)])
        })
        .collect();
    let total: u64 = clients
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("client output");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0)
        })
        .sum();
    let elapsed = started.elapsed().as_secs_f64();
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    println!(
        "{total} connections (connect, {REQUEST} B request, {RESPONSE} B response, kept) in \
         {elapsed:.1} s = {:.0}/s with {pairs} client and {pairs} server processes, blocking sockets{}",
        total as f64 / elapsed,
        if pin {
            ", each pair pinned to one CPU"
        } else {
            ""
        }
    );
}
