//! Value checks that types cannot express. Each problem is `(path, message)`; the caller turns
//! the path into a file position with [`super::locate`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Uri};

use super::{ActionKind, DropMode, Profile};
use crate::backoff::Strategy;

/// Smallest echo message: the header that carries client id, sequence and send time.
pub const MIN_MESSAGE_BYTES: u64 = 48;
const MAX_MESSAGE_BYTES: u64 = 16 << 20;

pub fn validate(p: &Profile) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |path: String, msg: String| out.push((path, msg));

    if p.name.trim().is_empty() {
        bad("name".into(), "must not be empty".into());
    }
    if p.duration.0.is_zero() {
        bad("duration".into(), "must be longer than 0s".into());
    }
    if let Some(g) = p.grace
        && g.0 > Duration::from_secs(300)
    {
        bad("grace".into(), format!("{g} is more than the 5m allowed"));
    }

    check_target(p, &mut bad);

    if p.groups.is_empty() {
        bad("groups".into(), "needs at least one group".into());
    }
    for (i, g) in p.groups.iter().enumerate() {
        let at = |field: &str| format!("groups[{i}].{field}");
        if g.name.trim().is_empty() {
            bad(at("name"), "must not be empty".into());
        }
        if p.groups[..i].iter().any(|o| o.name == g.name) {
            bad(at("name"), format!("`{}` is used by another group", g.name));
        }
        if g.clients == 0 {
            bad(at("clients"), "must be at least 1".into());
        }
        if g.arrival.start.0 >= p.duration.0 && !p.duration.0.is_zero() {
            bad(
                at("arrival.start"),
                format!(
                    "{} is not before the end of the run ({})",
                    g.arrival.start, p.duration
                ),
            );
        }
        for (field, d) in [
            ("connect_timeout", g.connect_timeout),
            ("handshake_timeout", g.handshake_timeout),
        ] {
            if d.0.is_zero() {
                bad(at(field), "must be longer than 0s".into());
            }
        }
        for (name, value) in &g.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                bad(
                    at(&format!("headers.{name}")),
                    format!("`{name}` is not a valid HTTP header name"),
                );
            } else if HeaderValue::from_str(value).is_err() {
                bad(
                    at(&format!("headers.{name}")),
                    "the value is not a valid HTTP header value".into(),
                );
            }
            let lower = name.to_ascii_lowercase();
            if [
                "sec-websocket-key",
                "sec-websocket-version",
                "upgrade",
                "connection",
                "host",
            ]
            .contains(&lower.as_str())
            {
                bad(
                    at(&format!("headers.{name}")),
                    format!("`{name}` is set by the WebSocket handshake itself"),
                );
            }
        }
        for (j, proto) in g.subprotocols.iter().enumerate() {
            if proto.is_empty() || !proto.bytes().all(is_token_char) {
                bad(
                    at(&format!("subprotocols[{j}]")),
                    format!("`{proto}` is not a valid subprotocol token"),
                );
            }
        }
        if !(256..=16 << 20).contains(&g.read_buffer.0) {
            bad(at("read_buffer"), "must be between 256B and 16MiB".into());
        }
        let b = &g.behaviour;
        if let Some(s) = &b.send {
            if s.every.0.is_zero() {
                bad(at("behaviour.send.every"), "must be longer than 0s".into());
            }
            if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&s.bytes.0) {
                bad(
                    at("behaviour.send.bytes"),
                    format!(
                        "must be between {MIN_MESSAGE_BYTES}B (the timing header) and 16MiB, got {}",
                        s.bytes
                    ),
                );
            }
        }
        if let Some(h) = &b.heartbeat {
            if h.ping_every.0.is_zero() {
                bad(
                    at("behaviour.heartbeat.ping_every"),
                    "must be longer than 0s".into(),
                );
            }
            if h.timeout.0.is_zero() {
                bad(
                    at("behaviour.heartbeat.timeout"),
                    "must be longer than 0s".into(),
                );
            }
        }
        let r = &b.reconnect;
        let bo = &r.backoff;
        if bo.strategy != Strategy::None && bo.base.0.is_zero() {
            bad(
                at("behaviour.reconnect.backoff.base"),
                format!("must be longer than 0s for {}", bo.strategy.name()),
            );
        }
        if bo.cap.0 < bo.base.0 {
            bad(
                at("behaviour.reconnect.backoff.cap"),
                format!("{} is shorter than base ({})", bo.cap, bo.base),
            );
        }
        if !(1.0..=100.0).contains(&bo.multiplier) {
            bad(
                at("behaviour.reconnect.backoff.multiplier"),
                format!("must be between 1 and 100, got {}", bo.multiplier),
            );
        }
        if bo.max_attempts == Some(0) {
            bad(
                at("behaviour.reconnect.backoff.max_attempts"),
                "must be at least 1 (leave it out for no limit)".into(),
            );
        }
        for key in r.on_close.keys() {
            if crate::plan::CodeSet::parse_close(key).is_none() {
                bad(
                    at(&format!("behaviour.reconnect.on_close.{key}")),
                    format!(
                        "`{key}` is not a close code: expected 1000-4999, a range like 4000-4999, or `default`"
                    ),
                );
            }
        }
        for key in r.on_status.keys() {
            if crate::plan::CodeSet::parse_status(key).is_none() {
                bad(
                    at(&format!("behaviour.reconnect.on_status.{key}")),
                    format!(
                        "`{key}` is not an HTTP status: expected 100-599, a class like 5xx, or `default`"
                    ),
                );
            }
        }
    }

    for (i, e) in p.timeline.iter().enumerate() {
        let at = |field: &str| format!("timeline[{i}].{field}");
        if e.at.0 >= p.duration.0 {
            bad(
                at("at"),
                format!(
                    "{} is not before the end of the run ({}); the action would never fire",
                    e.at, p.duration
                ),
            );
        }
        if !p.target.is_embedded() {
            bad(
                at("action"),
                format!(
                    "`{}` is an action of the embedded target server; the target is {}",
                    action_name(e.action),
                    p.target.url
                ),
            );
        }
        match e.action {
            ActionKind::DropAll => {
                if e.down_for.is_some() {
                    bad(
                        at("down_for"),
                        "drop-all does not take `down_for` (use `action: restart`)".into(),
                    );
                }
                match (e.mode.unwrap_or(DropMode::Abrupt), e.code) {
                    (DropMode::Close, None) => bad(
                        at("mode"),
                        "mode `close` needs a `code` (e.g. 1001 going away, 1012 service restart)"
                            .into(),
                    ),
                    (DropMode::Close, Some(c)) if !sendable_close_code(c) => bad(
                        at("code"),
                        format!(
                            "{c} cannot be sent in a close frame: use 1000-1003, 1007-1014 or 3000-4999"
                        ),
                    ),
                    (DropMode::Abrupt | DropMode::Reset, Some(_)) => {
                        bad(at("code"), "only `mode: close` sends a close code".into())
                    }
                    _ => {}
                }
            }
            ActionKind::Restart => {
                match e.down_for {
                    None => bad(
                        at("action"),
                        "restart needs `down_for` (how long new connections are refused)".into(),
                    ),
                    Some(d) if d.0.is_zero() => {
                        bad(at("down_for"), "must be longer than 0s".into())
                    }
                    _ => {}
                }
                for (field, set) in [
                    ("mode", e.mode.is_some()),
                    ("code", e.code.is_some()),
                    ("share", e.share.is_some()),
                ] {
                    if set {
                        bad(
                            at(field),
                            format!(
                                "restart does not take `{field}`: it drops every connection abruptly"
                            ),
                        );
                    }
                }
            }
        }
    }
    out
}

fn check_target(p: &Profile, bad: &mut impl FnMut(String, String)) {
    let t = &p.target;
    if t.is_embedded() {
        let s = &t.server;
        if s.listen.parse::<SocketAddr>().is_err() {
            bad(
                "target.server.listen".into(),
                format!(
                    "`{}` is not an address such as 127.0.0.1:0 or 127.0.0.1:9001",
                    s.listen
                ),
            );
        }
        if !s.path.starts_with('/') {
            bad(
                "target.server.path".into(),
                format!("`{}` must start with /", s.path),
            );
        }
        if s.backlog == 0 {
            bad("target.server.backlog".into(), "must be at least 1".into());
        }
        if !(1..=64).contains(&s.threads) {
            bad(
                "target.server.threads".into(),
                "must be between 1 and 64".into(),
            );
        }
        if s.accept_burst == Some(0) {
            bad(
                "target.server.accept_burst".into(),
                "must be at least 1".into(),
            );
        }
        return;
    }
    match t.url.parse::<Uri>() {
        Ok(u) => {
            let scheme = u.scheme_str().unwrap_or("");
            if scheme != "ws" && scheme != "wss" {
                bad(
                    "target.url".into(),
                    format!("`{}` is not `embedded` or a ws:// or wss:// URL", t.url),
                );
            } else if u.host().is_none_or(str::is_empty) {
                bad("target.url".into(), format!("`{}` has no host", t.url));
            }
        }
        Err(e) => bad(
            "target.url".into(),
            format!(
                "`{}` is not `embedded` or a ws:// or wss:// URL ({e})",
                t.url
            ),
        ),
    }
    if t.tls.ca_file.is_some() && t.tls.insecure_skip_verify {
        bad(
            "target.tls".into(),
            "set either `ca_file` or `insecure_skip_verify`, not both".into(),
        );
    }
}

fn action_name(a: ActionKind) -> &'static str {
    match a {
        ActionKind::DropAll => "drop-all",
        ActionKind::Restart => "restart",
    }
}

/// RFC 6455 §7.4: 1004-1006 and 1015 are reserved and must never be sent on the wire.
fn sendable_close_code(c: u16) -> bool {
    matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
