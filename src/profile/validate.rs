//! Value checks that types cannot express. Each problem is `(path, message)`; the caller turns
//! the path into a file position with [`super::locate`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Uri};

use super::{AbuseKind, ActionKind, Decision, DropMode, Profile};
use crate::backoff::Strategy;
use crate::units::ByteSize;

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
    if let Some(c) = &p.compare
        && c.strategies.len() < 2
    {
        bad(
            "compare.strategies".into(),
            "needs at least two strategies to compare".into(),
        );
    }

    for (i, t) in p.thresholds.iter().enumerate() {
        if let Err(e) = t.parse() {
            let path = match t {
                crate::results::threshold::ThresholdSpec::Expr(_) => format!("thresholds[{i}]"),
                crate::results::threshold::ThresholdSpec::Full(_) => {
                    format!("thresholds[{i}].expr")
                }
            };
            bad(path, format!("`{}`: {e}", t.expr()));
        }
    }
    if let Some(c) = &p.capacity {
        check_capacity(p, c, &mut bad);
    }

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
            match (s.every, s.in_flight) {
                (Some(e), None) if e.0.is_zero() => {
                    bad(at("behaviour.send.every"), "must be longer than 0s".into())
                }
                (None, Some(n)) if !(1..=1000).contains(&n) => bad(
                    at("behaviour.send.in_flight"),
                    "must be between 1 and 1000".into(),
                ),
                (Some(_), Some(_)) | (None, None) => bad(
                    at("behaviour.send"),
                    "needs either `every` (open loop) or `in_flight` (closed loop)".into(),
                ),
                _ => {}
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
        for (j, a) in g.source_addrs.iter().enumerate() {
            if let Err(e) = crate::plan::parse_addr_range(a) {
                bad(at(&format!("source_addrs[{j}]")), e);
            }
        }
        let server = p.target.is_embedded().then_some(&p.target.server);
        if let Some(s) = &b.sleep {
            for (field, d) in [("after", s.after), ("duration", s.duration)] {
                if d.0.is_zero() && field == "duration" {
                    bad(
                        at(&format!("behaviour.sleep.{field}")),
                        "must be longer than 0s".into(),
                    );
                }
            }
        }
        if let Some(a) = &b.auth {
            if a.lifetime.0.is_zero() {
                bad(
                    at("behaviour.auth.lifetime"),
                    "must be longer than 0s".into(),
                );
            }
            if a.secret.is_none() && server.is_none_or(|s| s.auth.is_none()) {
                bad(
                    at("behaviour.auth"),
                    "needs a `secret`, or an embedded target with `server.auth`".into(),
                );
            }
        }
        if let Some(sub) = &b.subscribe {
            if let Some(s) = server
                && s.stream.is_none()
            {
                bad(
                    at("behaviour.subscribe"),
                    "the embedded target publishes no stream: add `target.server.stream`".into(),
                );
            }
            if let Some(n) = sub.checkpoint_every
                && !(1..=1000).contains(&n)
            {
                bad(
                    at("behaviour.subscribe.checkpoint_every"),
                    "must be between 1 and 1000".into(),
                );
            }
        }
        if let Some(a) = &b.abuse
            && a.kind == AbuseKind::Oversized
            && let (Some(s), Some(size)) = (server, a.bytes)
            && size.0 <= s.max_message.0
        {
            bad(
                at("behaviour.abuse.bytes"),
                format!(
                    "{} is not over the target's max_message ({})",
                    size, s.max_message
                ),
            );
        }
        let r = &b.reconnect;
        for (table, map) in [("on_close", &r.on_close), ("on_status", &r.on_status)] {
            for (key, d) in map {
                match d {
                    Decision::RefreshAuth if b.auth.is_none() => bad(
                        at(&format!("behaviour.reconnect.{table}.{key}")),
                        "refresh-auth needs `behaviour.auth`".into(),
                    ),
                    Decision::RetryAfter(d) if d.0.is_zero() => bad(
                        at(&format!("behaviour.reconnect.{table}.{key}")),
                        "retry-after must be longer than 0s".into(),
                    ),
                    _ => {}
                }
            }
        }
        let bo = &r.backoff;
        if bo.align.is_some_and(|a| a.0.is_zero()) {
            bad(
                at("behaviour.reconnect.backoff.align"),
                "must be longer than 0s".into(),
            );
        }
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

    let proxied = p.target.via_proxy || p.groups.iter().any(|g| g.via_proxy == Some(true));
    for (i, e) in p.timeline.iter().enumerate() {
        let at = |field: &str| format!("timeline[{i}].{field}");
        let name = e.action.name();
        if e.at.0 >= p.duration.0 {
            bad(
                at("at"),
                format!(
                    "{} is not before the end of the run ({}); the action would never fire",
                    e.at, p.duration
                ),
            );
        }
        if e.action.is_proxy() {
            if !proxied {
                bad(
                    at("action"),
                    format!(
                        "`{name}` is a fault of the proxy: set `target.via_proxy: true`{}",
                        if e.action == ActionKind::Blackhole {
                            " (or use `hang` to make the embedded server stop answering)"
                        } else {
                            ""
                        }
                    ),
                );
            }
        } else if !p.target.is_embedded() {
            bad(
                at("action"),
                format!(
                    "`{name}` is an action of the embedded target server; the target is {}",
                    p.target.url
                ),
            );
        }
        let set: [(&str, bool); 12] = [
            ("mode", e.mode.is_some()),
            ("code", e.code.is_some()),
            ("share", e.share.is_some()),
            ("down_for", e.down_for.is_some()),
            ("delay", e.delay.is_some()),
            ("jitter", e.jitter.is_some()),
            ("rate", e.rate.is_some()),
            ("bytes", e.bytes.is_some()),
            ("after", e.after.is_some()),
            ("duration", e.duration.is_some()),
            ("direction", e.direction.is_some()),
            ("cut_existing", e.cut_existing.is_some()),
        ];
        let (takes, needs): (&[&str], &[&str]) = match e.action {
            ActionKind::DropAll => (&["mode", "code", "share"], &[]),
            ActionKind::Restart => (&["down_for"], &["down_for"]),
            ActionKind::Hang => (&["share"], &[]),
            ActionKind::Cut => (&["mode", "share"], &[]),
            ActionKind::Blackhole => (&["share", "direction", "duration"], &[]),
            ActionKind::Latency => (
                &["delay", "jitter", "share", "direction", "duration"],
                &["delay"],
            ),
            ActionKind::Bandwidth => (&["rate", "share", "direction", "duration"], &["rate"]),
            ActionKind::Slicer => (
                &["bytes", "delay", "share", "direction", "duration"],
                &["bytes", "delay"],
            ),
            ActionKind::IdleTimeout => (&["after", "mode", "share", "duration"], &["after"]),
            ActionKind::Refuse => (&["cut_existing", "duration"], &[]),
            ActionKind::Partition => (&["share", "duration"], &["share"]),
            ActionKind::Heal => (&[], &[]),
        };
        for (field, present) in set {
            if present && !takes.contains(&field) {
                bad(
                    at(field),
                    if takes.is_empty() {
                        format!("{name} takes no `{field}`")
                    } else {
                        format!(
                            "{name} does not take `{field}` (it takes: {})",
                            takes.join(", ")
                        )
                    },
                );
            }
            if !present && needs.contains(&field) {
                bad(at("action"), format!("{name} needs `{field}`"));
            }
        }
        for (field, d) in [
            ("down_for", e.down_for),
            ("delay", e.delay.filter(|_| e.action == ActionKind::Slicer)),
            ("after", e.after),
            ("duration", e.duration),
        ] {
            if d.is_some_and(|d| d.0.is_zero()) {
                bad(at(field), "must be longer than 0s".into());
            }
        }
        if let (Some(d), Some(j)) = (e.delay, e.jitter)
            && j.0 > d.0
        {
            bad(at("jitter"), format!("{j} is larger than the delay ({d})"));
        }
        if e.bytes == Some(ByteSize(0)) {
            bad(at("bytes"), "must be at least 1".into());
        }
        match (e.action, e.mode) {
            (ActionKind::DropAll, mode) => match (mode.unwrap_or(DropMode::Abrupt), e.code) {
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
            },
            (ActionKind::Cut | ActionKind::IdleTimeout, Some(DropMode::Close)) => bad(
                at("mode"),
                format!("the proxy cannot send close frames: {name} takes `reset` or `fin`"),
            ),
            _ => {}
        }
    }
    out
}

fn check_target(p: &Profile, bad: &mut impl FnMut(String, String)) {
    let t = &p.target;
    if t.proxy.listen.parse::<SocketAddr>().is_err() {
        bad(
            "target.proxy.listen".into(),
            format!("`{}` is not an address such as 127.0.0.1:0", t.proxy.listen),
        );
    }
    if !(512..=(16 << 20)).contains(&t.proxy.buffer.0) {
        bad(
            "target.proxy.buffer".into(),
            "must be between 512B and 16MiB".into(),
        );
    }
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
        if s.nice > 19 {
            bad(
                "target.server.nice".into(),
                format!(
                    "{} is out of range: 0 to 19 (only a lower priority than the clients' can be \
                     asked for)",
                    s.nice
                ),
            );
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
        if !(128..=(1 << 30)).contains(&s.max_message.0) {
            bad(
                "target.server.max_message".into(),
                "must be between 128B and 1GiB".into(),
            );
        }
        if let Some(h) = &s.heartbeat
            && (h.ping_every.0.is_zero() || h.timeout.0.is_zero())
        {
            bad(
                "target.server.heartbeat".into(),
                "ping_every and timeout must be longer than 0s".into(),
            );
        }
        if let Some(i) = &s.idle_timeout
            && i.after.0.is_zero()
        {
            bad(
                "target.server.idle_timeout.after".into(),
                "must be longer than 0s".into(),
            );
        }
        if let Some(h) = &s.handshake {
            if h.service_time.0.is_zero() {
                bad(
                    "target.server.handshake.service_time".into(),
                    "must be longer than 0s".into(),
                );
            }
            if h.workers == 0 {
                bad(
                    "target.server.handshake.workers".into(),
                    "must be at least 1".into(),
                );
            }
            if h.queue == 0 {
                bad(
                    "target.server.handshake.queue".into(),
                    "must be at least 1".into(),
                );
            }
        }
        if let Some(a) = &s.auth
            && a.secret.is_empty()
        {
            bad(
                "target.server.auth.secret".into(),
                "must not be empty".into(),
            );
        }
        if let Some(st) = &s.stream {
            if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&st.bytes.0) {
                bad(
                    "target.server.stream.bytes".into(),
                    format!("must be between {MIN_MESSAGE_BYTES}B and 16MiB"),
                );
            }
            if st.history == 0 {
                bad(
                    "target.server.stream.history".into(),
                    "must be at least 1".into(),
                );
            }
        }
        if s.backpressure.buffer.0 < 1024 {
            bad(
                "target.server.backpressure.buffer".into(),
                "must be at least 1KiB".into(),
            );
        }
        if t.tls.trust_embedded_ca && s.tls.is_none() {
            bad(
                "target.tls.trust_embedded_ca".into(),
                "the embedded target serves no TLS: add `target.server.tls`".into(),
            );
        }
        return;
    }
    if t.tls.trust_embedded_ca {
        bad(
            "target.tls.trust_embedded_ca".into(),
            "only an embedded target has a generated CA".into(),
        );
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

/// RFC 6455 §7.4: 1004-1006 and 1015 are reserved and must never be sent on the wire.
fn check_capacity(p: &Profile, c: &super::CapacitySettings, bad: &mut impl FnMut(String, String)) {
    use super::CapacityVary;
    if !(c.start > 0.0 && c.start.is_finite()) {
        bad("capacity.start".into(), "must be more than 0".into());
    }
    if !(c.max >= c.start && c.max.is_finite()) {
        bad(
            "capacity.max".into(),
            format!("must be at least `start` ({})", c.start),
        );
    }
    match (c.step, c.factor) {
        (Some(_), Some(_)) => bad(
            "capacity.factor".into(),
            "give `step` (added each step) or `factor` (multiplied each step), not both".into(),
        ),
        (Some(s), None) if !(s > 0.0 && s.is_finite()) => {
            bad("capacity.step".into(), "must be more than 0".into())
        }
        (None, Some(f)) if !(f > 1.0 && f.is_finite()) => {
            bad("capacity.factor".into(), "must be more than 1".into())
        }
        _ => {}
    }
    if c.hold.0 < Duration::from_secs(1) {
        bad("capacity.hold".into(), "must be at least 1s".into());
    }
    let steps = crate::plan::capacity::steps(c).len();
    if steps > crate::plan::capacity::MAX_STEPS {
        bad(
            "capacity".into(),
            format!(
                "{steps} steps from {} to {} is more than the {} allowed; use a bigger `step` or a `factor`",
                c.start,
                c.max,
                crate::plan::capacity::MAX_STEPS
            ),
        );
    }
    let group = match &c.group {
        Some(name) => match p.groups.iter().find(|g| &g.name == name) {
            Some(g) => Some(g),
            None => {
                bad(
                    "capacity.group".into(),
                    format!(
                        "no group is named `{name}`; groups: {}",
                        p.groups
                            .iter()
                            .map(|g| g.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                None
            }
        },
        None if p.groups.len() > 1 => {
            bad(
                "capacity.group".into(),
                "the profile has several groups: name the one whose load is stepped".into(),
            );
            None
        }
        None => p.groups.first(),
    };
    if c.vary == CapacityVary::MessageRate
        && let Some(g) = group
        && g.behaviour.send.as_ref().is_none_or(|s| s.every.is_none())
    {
        bad(
            "capacity.vary".into(),
            format!(
                "message-rate steps set `send.every` of group `{}`: give it `behaviour.send: {{ every: …, bytes: … }}`",
                g.name
            ),
        );
    }
}

fn sendable_close_code(c: u16) -> bool {
    matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
