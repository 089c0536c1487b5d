//! permessage-deflate against a server no one here wrote: the Python `websockets` echo server
//! (tests/peers/echo_server.py), whose `serve` accepts the extension by default. A
//! conversation's requests must all come back through the compression layer, with the wire
//! carrying far fewer bytes than the messages; without `compression` the same run stays plain.

use wsstorm::results::Results;

use crate::common::run_yaml;
use crate::proxy::PeerServer;

/// Ten clients sending a compressible request (padded to 2,000 bytes) every 20 ms for 3 s.
fn profile(url: &str, compression: bool) -> String {
    let compression = if compression {
        "compression: deflate"
    } else {
        ""
    };
    format!(
        r#"
name: deflate
duration: 3s
target: {{ url: '{url}' }}
groups:
  - name: req
    clients: 10
    arrival: {{ rate: 100/s }}
    {compression}
    behaviour:
      conversation:
        every:
          - name: req
            every: 20ms
            send: {{ json: {{ type: req, id: "{{{{id}}}}", pad: "{{{{pad 2000}}}}" }} }}
            reply: {{ match: {{ json: {{ "$.type": req }} }}, id: "$.id", timeout: 2s }}
"#
    )
}

/// Every request answered in time, but for the last one of each client when the run ended.
fn all_replies_matched(r: &Results) {
    let req = &r.conversation.as_ref().expect("a conversation").steps["req"];
    assert!(req.counts.sent > 500, "10 clients × 3 s / 20 ms: {req:?}");
    assert_eq!(req.counts.timeouts, 0, "{req:?}");
    assert!(req.counts.abandoned <= 10, "in flight at the end: {req:?}");
    assert_eq!(
        req.counts.matched + req.counts.abandoned,
        req.counts.sent,
        "{req:?}"
    );
    assert_eq!(r.totals.opened, 10, "no reconnects: {:?}", r.totals);
    assert!(
        r.totals.close_codes.is_empty(),
        "{:?}",
        r.totals.close_codes
    );
    assert!(r.totals.client_close_codes.is_empty(), "{:?}", r.totals);
}

#[test]
fn compressed_conversation_against_python_websockets() {
    let peer = PeerServer::start();
    let r = run_yaml(&profile(&peer.url, true), "deflate.yaml");
    all_replies_matched(&r);
    let c = r
        .totals
        .compression
        .as_ref()
        .expect("the server accepted permessage-deflate");
    assert_eq!(c.connections, 10, "{c:?}");
    let sent = r.conversation.as_ref().unwrap().steps["req"].counts.sent;
    // `pad 2000` brings each request to 2,000 bytes; the echoes come back as sent. A request
    // counted as sent as the run ended may not have reached the socket.
    assert_eq!(c.bytes_out_deflated % 2000, 0, "{c:?}");
    assert!(
        c.bytes_out_deflated.abs_diff(sent * 2000) <= 10 * 2000,
        "{sent}: {c:?}"
    );
    assert!(
        c.bytes_in_inflated.abs_diff(c.bytes_out_deflated) <= 10 * 2000,
        "{c:?}"
    );
    // The padding repeats one character: the wire carries a small fraction.
    assert!(c.bytes_out_wire * 5 < c.bytes_out_deflated, "{c:?}");
    assert!(c.bytes_in_wire * 5 < c.bytes_in_inflated, "{c:?}");
    assert!(c.ratio < 0.2, "{c:?}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["totals"]["compression"]["connections"], 10);

    // The same run without the key: plain frames, and no compression section.
    let r = run_yaml(&profile(&peer.url, false), "plain.yaml");
    all_replies_matched(&r);
    assert!(r.totals.compression.is_none(), "{:?}", r.totals.compression);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["totals"].get("compression").is_none());
}
