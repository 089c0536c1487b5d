//! The embedded target's Socket.IO dialect (Socket.IO v4 over Engine.IO 4, WebSocket transport
//! only): just enough of the protocol for a `protocol: socket.io` client to hold its
//! conversation — the Engine.IO open packet, namespace connects, the server's ping (`2`) and
//! the client's pong (`3`), events echoed and acks answered (an event that asks for an ack gets
//! the ack, `43<id>[]`, and is not echoed as well: the ack is its answer).
//!
//! This module is the packets alone, without I/O: [`answer`] says what one text frame from the
//! client calls for, and the session ([`super::connection`]) sends it. The ping is not a timer
//! of its own: it replaces the WebSocket ping of the server's heartbeat, so a connection costs
//! no more than one with `heartbeat` on, and its state is the heartbeat's (an interval and a
//! pong deadline). Ids are made from the connection's number when they are sent, never kept.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `target.server.socket_io`, as the server runs it: Engine.IO's `pingInterval` and
/// `pingTimeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketIo {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
}

/// Engine.IO's ping, sent every `ping_interval`.
pub(super) const PING: &str = "2";

/// Largest message a client may send, as announced in the open packet (Engine.IO's
/// `maxPayload`; the server's own `max_message` is what is enforced).
const MAX_PAYLOAD: u64 = 1_000_000;

/// Makes the session ids of one server: unique across its connections, across the processes
/// of a multi-process server (the process id is in every id) and across servers started in
/// one process (a counter is).
#[derive(Debug)]
pub(super) struct Sids {
    /// Process id and server instance: the first 12 hex digits of every id.
    base: u64,
    /// Sockets connected to a namespace so far; each gets its own id, as in Socket.IO.
    sockets: AtomicU64,
}

impl Sids {
    pub(super) fn new() -> Sids {
        static SERVERS: AtomicU64 = AtomicU64::new(0);
        let instance = SERVERS.fetch_add(1, Ordering::Relaxed) & 0xffff;
        Sids {
            base: (u64::from(std::process::id()) << 16) | instance,
            sockets: AtomicU64::new(0),
        }
    }

    /// Engine.IO's id of connection `conn`: 20 hex digits or more.
    fn engine(&self, conn: u64) -> String {
        format!("{:012x}{conn:08x}", self.base)
    }

    /// A new Socket.IO socket id (one per namespace connect): 20 digits, unlike any
    /// connection's (an `s` in the middle).
    fn socket(&self) -> String {
        let n = self.sockets.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{:012x}s{n:07x}", self.base)
    }

    /// The open packet connection `conn` starts with.
    pub(super) fn open_packet(&self, conn: u64, dialect: &SocketIo) -> String {
        format!(
            r#"0{{"sid":"{}","upgrades":[],"pingInterval":{},"pingTimeout":{},"maxPayload":{MAX_PAYLOAD}}}"#,
            self.engine(conn),
            dialect.ping_interval.as_millis(),
            dialect.ping_timeout.as_millis(),
        )
    }
}

/// What a text frame from a client calls for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// Nothing (a packet the server has no answer for: a client's ack, a disconnect, noop).
    Nothing,
    /// The pong to the server's ping.
    Pong,
    /// A namespace connect, answered with this.
    Connected(String),
    /// An event without an ack id: send the frame back as it is.
    Echo,
    /// An event with an ack id, answered with this ack.
    Ack(String),
    /// The client closes the Engine.IO session (`1`).
    Close,
    /// Anything else to send (the probe's answer).
    Send(&'static str),
}

/// What `packet` (a text frame's content) calls for.
pub(super) fn answer(packet: &str, sids: &Sids) -> Answer {
    match packet.as_bytes().first() {
        Some(b'1') => Answer::Close,
        Some(b'2') if packet == "2probe" => Answer::Send("3probe"),
        Some(b'3') if packet == "3" => Answer::Pong,
        Some(b'4') => socket_io(&packet[1..], sids),
        _ => Answer::Nothing,
    }
}

/// A Socket.IO packet: `<type>[/namespace,][ack id][payload]`.
fn socket_io(packet: &str, sids: &Sids) -> Answer {
    let Some(kind) = packet.as_bytes().first() else {
        return Answer::Nothing;
    };
    let rest = &packet[1..];
    // The namespace runs to the first comma; a connect may end with it (`40/chat`).
    let (nsp, rest) = match rest.strip_prefix('/') {
        Some(_) => match rest.find(',') {
            Some(i) => (&rest[..=i], &rest[i + 1..]),
            None => (rest, ""),
        },
        None => ("", rest),
    };
    // The prefix answers carry: `/chat,`, or nothing for the main namespace.
    let prefix = |nsp: &str| {
        if nsp.is_empty() || nsp.ends_with(',') {
            nsp.to_string()
        } else {
            format!("{nsp},")
        }
    };
    match kind {
        b'0' => Answer::Connected(format!(r#"40{}{{"sid":"{}"}}"#, prefix(nsp), sids.socket())),
        b'2' => {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                Answer::Echo
            } else {
                Answer::Ack(format!("43{}{}[]", prefix(nsp), &rest[..digits]))
            }
        }
        _ => Answer::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sids() -> Sids {
        Sids {
            base: 0xabc,
            sockets: AtomicU64::new(0),
        }
    }

    #[test]
    fn open_packet_announces_the_intervals_in_milliseconds() {
        let dialect = SocketIo {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(200),
        };
        assert_eq!(
            sids().open_packet(0x2a, &dialect),
            r#"0{"sid":"000000000abc0000002a","upgrades":[],"pingInterval":25000,"pingTimeout":200,"maxPayload":1000000}"#
        );
        let open: serde_json::Value =
            serde_json::from_str(&sids().open_packet(7, &dialect)[1..]).unwrap();
        assert_eq!(open["pingTimeout"], 200);
    }

    #[test]
    fn namespace_connects_get_their_own_socket_ids() {
        let s = sids();
        assert_eq!(
            answer("40", &s),
            Answer::Connected(r#"40{"sid":"000000000abcs0000001"}"#.into())
        );
        assert_eq!(
            answer("40/chat,", &s),
            Answer::Connected(r#"40/chat,{"sid":"000000000abcs0000002"}"#.into())
        );
        // With an auth payload, and without the trailing comma.
        assert_eq!(
            answer(r#"40/chat,{"token":"t"}"#, &s),
            Answer::Connected(r#"40/chat,{"sid":"000000000abcs0000003"}"#.into())
        );
        assert_eq!(
            answer("40/chat", &s),
            Answer::Connected(r#"40/chat,{"sid":"000000000abcs0000004"}"#.into())
        );
        assert_eq!(
            answer(r#"40{"token":"t"}"#, &s),
            Answer::Connected(r#"40{"sid":"000000000abcs0000005"}"#.into())
        );
    }

    #[test]
    fn events_are_echoed_and_acks_answered() {
        let s = sids();
        assert_eq!(answer(r#"42["say",{"text":"hi"}]"#, &s), Answer::Echo);
        assert_eq!(answer(r#"42/chat,["say"]"#, &s), Answer::Echo);
        assert_eq!(
            answer(r#"4217["say",{"text":"hi"}]"#, &s),
            Answer::Ack("4317[]".into())
        );
        assert_eq!(
            answer(r#"42/chat,9001["say",{"text":"hi"}]"#, &s),
            Answer::Ack("43/chat,9001[]".into())
        );
        // Ids run to the payload, digits and all.
        assert_eq!(
            answer(r#"42/chat,0["7"]"#, &s),
            Answer::Ack("43/chat,0[]".into())
        );
    }

    #[test]
    fn engine_io_packets() {
        let s = sids();
        assert_eq!(answer("3", &s), Answer::Pong);
        assert_eq!(answer("1", &s), Answer::Close);
        assert_eq!(answer("2probe", &s), Answer::Send("3probe"));
        // A pong with data, a client's ack, a disconnect, noop, binary events, junk: nothing.
        for p in [
            "3x",
            "6",
            "2",
            "",
            "4",
            "431[]",
            "41/chat,",
            "451-[\"a\"]",
            "hello",
            "{}",
        ] {
            assert_eq!(answer(p, &s), Answer::Nothing, "{p:?}");
        }
        assert_eq!(s.sockets.load(Ordering::Relaxed), 0, "no socket id spent");
    }

    #[test]
    fn ids_differ_between_servers_and_connections() {
        let (a, b) = (Sids::new(), Sids::new());
        assert_ne!(a.engine(1), b.engine(1));
        assert_ne!(a.engine(1), a.engine(2));
        assert_eq!(a.engine(1).len(), 20);
        assert_eq!(a.socket().len(), 20);
        let dialect = SocketIo {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
        };
        assert!(
            a.open_packet(1, &dialect)
                .contains(r#""pingTimeout":20000,"#)
        );
    }
}
