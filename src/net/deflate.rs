//! permessage-deflate (RFC 7692) for the clients, as a byte-stream layer between the socket and
//! the frame layer ([`super::ws`]), which has no extension support (a frame with RSV1 set is a
//! protocol error to it). Reading, the layer parses the server's frames, inflates each
//! compressed message into one plain frame and passes everything else through; writing, it
//! parses the frame layer's masked frames, deflates data messages, sets RSV1 and masks them
//! again. The frame layer never learns that the connection is compressed.
//!
//! A connection carries this layer only when the server accepted the offer; the compressor
//! and the decompressor are made on first use, so a connection that stays idle pays only for
//! the layer's small struct. Failures the layer detects are turned into frames the frame layer
//! rejects with the right close code: an inflated message over the limit into a frame header
//! that claims more than the limit (message too long, the client closes with 1009); a broken
//! compressed stream or a frame that breaks RFC 7692 into a frame with all reserved bits set
//! (a protocol error, 1002).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::ws::{apply_mask, put_header};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the client offers: no `client_max_window_bits`, because the deflate backend
/// (miniz_oxide) always compresses with a 32 KiB window and could not honour a smaller one.
pub const OFFER: &str = "permessage-deflate";

/// The tail every sync flush ends with; stripped from sent messages, added to received ones.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest inflated message when the group sets no limit of its own.
pub const DEFAULT_LIMIT: usize = 64 << 20;

/// Transformed bytes waiting for the socket past which a write waits for the socket.
const WRITE_HIGH_WATER: usize = 64 << 10;

/// What the server accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// The server starts every message with a fresh compressor: reset the inflater per message.
    pub server_no_context_takeover: bool,
    /// The client must start every message with a fresh compressor.
    pub client_no_context_takeover: bool,
}

/// The server's `Sec-WebSocket-Extensions` answer to [`OFFER`] (all its values joined with
/// `,`): `None` if it declined (a plain connection), an error in words if it answered with
/// something the client did not offer or cannot do.
pub fn parse_answer(value: &str) -> Result<Option<Negotiated>, String> {
    let mut found = None;
    for ext in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = ext.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        if !name.eq_ignore_ascii_case("permessage-deflate") {
            return Err(format!("an extension the client did not offer: `{name}`"));
        }
        if found.is_some() {
            return Err("permessage-deflate accepted twice".into());
        }
        let mut n = Negotiated::default();
        let mut seen: Vec<String> = Vec::new();
        for p in parts.filter(|p| !p.is_empty()) {
            let (key, val) = match p.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                None => (p, None),
            };
            let key = key.to_ascii_lowercase();
            if seen.contains(&key) {
                return Err(format!("permessage-deflate with `{key}` twice"));
            }
            seen.push(key.clone());
            let bits = || -> Result<u8, String> {
                val.and_then(|v| v.parse::<u8>().ok())
                    .filter(|b| (8..=15).contains(b))
                    .ok_or_else(|| format!("permessage-deflate with `{p}`: not 8 to 15 bits"))
            };
            match (key.as_str(), val) {
                ("server_no_context_takeover", None) => n.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => n.client_no_context_takeover = true,
                // Any server window is fine: the inflater's 32 KiB window reads smaller ones.
                ("server_max_window_bits", _) => {
                    bits()?;
                }
                // Not offered (the compressor cannot use a smaller window); 15 changes nothing.
                ("client_max_window_bits", _) => {
                    if bits()? < 15 {
                        return Err(format!(
                            "permessage-deflate with `{p}`: the client compresses with a \
                             15-bit window only (and did not offer client_max_window_bits)"
                        ));
                    }
                }
                _ => {
                    return Err(format!(
                        "permessage-deflate with an unknown parameter `{p}`"
                    ));
                }
            }
        }
        found = Some(n);
    }
    Ok(found)
}

/// Compressed and uncompressed payload bytes of one connection's data messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Received, as on the wire.
    pub in_wire: u64,
    /// Received, as handed to the client.
    pub in_inflated: u64,
    /// Sent, as on the wire.
    pub out_wire: u64,
    /// Sent, as the client wrote them.
    pub out_deflated: u64,
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    rsv1: bool,
    /// RSV2 or RSV3.
    rsv23: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    /// Bytes the header takes.
    size: usize,
}

impl Header {
    fn parse(b: &[u8]) -> Option<Header> {
        let (&b0, &b1) = (b.first()?, b.get(1)?);
        let (len, mut size) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)),
                4,
            ),
            127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
            n => (u64::from(n), 2),
        };
        let mask = if b1 & 0x80 != 0 {
            let m = b.get(size..size + 4)?.try_into().ok()?;
            size += 4;
            Some(m)
        } else {
            None
        };
        Some(Header {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            rsv23: b0 & 0x30 != 0,
            opcode: b0 & 0x0f,
            mask,
            len,
            size,
        })
    }

    fn is_control(&self) -> bool {
        self.opcode & 0x08 != 0
    }
}

/// Why an inflate failed.
enum Refused {
    TooBig,
    Corrupt,
}

/// Inflate `input` onto `out`, which may not grow past `limit`. Capacity is reserved by
/// doubling up to `limit + 1`, so a bomb costs at most the limit in memory.
fn inflate(
    d: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), Refused> {
    loop {
        if out.len() > limit {
            return Err(Refused::TooBig);
        }
        if out.capacity() - out.len() < 256 {
            let want = (out.len() * 2).max(4096).min(limit + 1);
            out.reserve_exact(want.saturating_sub(out.len()).max(1));
        }
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|_| Refused::Corrupt)?;
        let used = (d.total_in() - in0) as usize;
        let made = d.total_out() - out0;
        input = &input[used..];
        if out.len() > limit {
            return Err(Refused::TooBig);
        }
        // A final block: whatever follows it (the sync tail) is not part of this stream.
        if status == Status::StreamEnd {
            return Ok(());
        }
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
        if used == 0 && made == 0 && out.len() < out.capacity() {
            return Err(Refused::Corrupt);
        }
    }
}

/// The message being received, as far as the layer is concerned.
#[derive(Debug, Default, PartialEq, Eq)]
enum Receiving {
    #[default]
    Nothing,
    /// A fragmented uncompressed message: its continuations pass through.
    Plain,
    /// A compressed message of this opcode: its payload is inflated into `ReadSide::message`.
    Compressed { opcode: u8 },
}

#[derive(Default)]
struct ReadSide {
    /// Bytes from the socket not yet parsed.
    raw: Vec<u8>,
    /// Bytes for the frame layer, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    /// Payload bytes of a frame passing through still to come.
    pass: u64,
    receiving: Receiving,
    /// Inside a compressed frame's payload: how many bytes are still to come, and whether the
    /// frame is the message's last.
    inflating: bool,
    compressed_left: u64,
    compressed_fin: bool,
    /// The inflated message so far.
    message: Vec<u8>,
    /// Its compressed size so far.
    message_wire: u64,
    inflater: Option<Box<Decompress>>,
    /// A failure was handed to the frame layer: nothing more is read.
    failed: bool,
}

#[derive(Default)]
struct WriteSide {
    /// The frame layer's bytes not yet a complete frame.
    raw: Vec<u8>,
    /// Bytes for the socket, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    /// A fragmented message is being compressed: its continuations are compressed too.
    compressing: bool,
    deflater: Option<Box<Compress>>,
    /// Scratch space for one frame's compressed payload.
    scratch: Vec<u8>,
}

/// A stream with permessage-deflate between it and the frame layer (see the module header).
pub struct Deflate<S> {
    inner: S,
    params: Negotiated,
    /// The largest inflated message; the frame layer's frame and message limits are set to it.
    limit: usize,
    read: ReadSide,
    write: WriteSide,
    counts: Counts,
}

impl<S> Deflate<S> {
    /// `tail`: bytes already read past the upgrade response (frames the server sent at once).
    pub fn new(inner: S, params: Negotiated, limit: usize, tail: Vec<u8>) -> Deflate<S> {
        let mut d = Deflate {
            inner,
            params,
            limit,
            read: ReadSide {
                raw: tail,
                ..ReadSide::default()
            },
            write: WriteSide::default(),
            counts: Counts::default(),
        };
        d.transform_read();
        d
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream underneath, for bytes that must not be transformed (abusive frames); only
    /// after a flush, so nothing transformed is still waiting.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }
}

impl<S> Deflate<S> {
    /// Parse what the socket gave into bytes for the frame layer, as far as it goes.
    fn transform_read(&mut self) {
        let r = &mut self.read;
        let mut at = 0;
        while !r.failed {
            let rest = &r.raw[at..];
            if r.pass > 0 {
                let n = rest.len().min(r.pass as usize);
                if n == 0 {
                    break;
                }
                r.out.extend_from_slice(&rest[..n]);
                r.pass -= n as u64;
                at += n;
                continue;
            }
            if r.inflating {
                let n = rest
                    .len()
                    .min(usize::try_from(r.compressed_left).unwrap_or(usize::MAX));
                if n == 0 && r.compressed_left > 0 {
                    break;
                }
                let inflater = r
                    .inflater
                    .get_or_insert_with(|| Box::new(Decompress::new(false)));
                let mut result = inflate(inflater, &rest[..n], &mut r.message, self.limit);
                r.compressed_left -= n as u64;
                r.message_wire += n as u64;
                at += n;
                if result.is_ok() && r.compressed_left == 0 && r.compressed_fin {
                    result = inflate(inflater, &TAIL, &mut r.message, self.limit);
                }
                if let Err(e) = result {
                    Self::fail(r, e, self.limit);
                    continue;
                }
                if r.compressed_left > 0 {
                    continue;
                }
                r.inflating = false;
                if r.compressed_fin {
                    let Receiving::Compressed { opcode } = std::mem::take(&mut r.receiving) else {
                        unreachable!("inflating a compressed message")
                    };
                    put_header(&mut r.out, 0x80 | opcode, r.message.len() as u64, None);
                    r.out.extend_from_slice(&r.message);
                    self.counts.in_wire += r.message_wire;
                    self.counts.in_inflated += r.message.len() as u64;
                    r.message_wire = 0;
                    r.message.clear();
                    if r.message.capacity() > 64 << 10 {
                        r.message = Vec::new();
                    }
                    if self.params.server_no_context_takeover
                        && let Some(d) = r.inflater.as_deref_mut()
                    {
                        d.reset(false);
                    }
                }
                continue;
            }
            let Some(h) = Header::parse(rest) else {
                break;
            };
            let data = !h.is_control() && h.mask.is_none();
            let compressed = matches!(r.receiving, Receiving::Compressed { .. });
            if data && compressed {
                // A continuation of the compressed message, or a frame that breaks it.
                if h.opcode != 0 || h.rsv1 || h.rsv23 {
                    Self::fail(r, Refused::Corrupt, self.limit);
                    continue;
                }
            } else if data
                && h.rsv1
                && !h.rsv23
                && h.opcode != 0
                && r.receiving == Receiving::Nothing
            {
                r.receiving = Receiving::Compressed { opcode: h.opcode };
            } else {
                // Control frames, uncompressed messages, and anything the frame layer should
                // judge for itself pass through untouched.
                r.out.extend_from_slice(&rest[..h.size]);
                at += h.size;
                r.pass = h.len;
                if !h.is_control() {
                    self.counts.in_wire += h.len;
                    self.counts.in_inflated += h.len;
                    r.receiving = if h.fin {
                        Receiving::Nothing
                    } else {
                        Receiving::Plain
                    };
                }
                continue;
            }
            at += h.size;
            r.inflating = true;
            r.compressed_left = h.len;
            r.compressed_fin = h.fin;
        }
        r.raw.drain(..at);
    }

    /// Hand the frame layer a frame it refuses with the right close code, and stop reading.
    fn fail(r: &mut ReadSide, why: Refused, limit: usize) {
        match why {
            // A frame that claims more than the frame layer's limit: message too long, 1009.
            Refused::TooBig => put_header(&mut r.out, 0x82, limit as u64 + 1, None),
            // Reserved bits set: a protocol error, 1002.
            Refused::Corrupt => r.out.extend_from_slice(&[0xf2, 0x00]),
        }
        r.failed = true;
        r.message = Vec::new();
        r.inflater = None;
    }

    /// Turn the frame layer's complete frames into frames for the socket.
    fn transform_write(&mut self) {
        let w = &mut self.write;
        let mut at = 0;
        while let Some(h) = Header::parse(&w.raw[at..]) {
            let end =
                usize::try_from(h.len).map_or(usize::MAX, |len| (at + h.size).saturating_add(len));
            if w.raw.len() < end {
                break;
            }
            let compress = match h.opcode {
                1 | 2 => true,
                0 => w.compressing,
                _ => false,
            };
            let (Some(key), true, false) = (h.mask, compress, h.rsv1 || h.rsv23) else {
                w.out.extend_from_slice(&w.raw[at..end]);
                at = end;
                continue;
            };
            let payload = &mut w.raw[at + h.size..end];
            apply_mask(payload, key);
            let deflater = w
                .deflater
                .get_or_insert_with(|| Box::new(Compress::new(Compression::fast(), false)));
            w.scratch.clear();
            w.scratch.reserve(payload.len() / 2 + 64);
            let mut input: &[u8] = payload;
            loop {
                if w.scratch.capacity() - w.scratch.len() < 64 {
                    w.scratch.reserve(w.scratch.capacity().max(256));
                }
                let before = deflater.total_in();
                deflater
                    .compress_vec(input, &mut w.scratch, FlushCompress::Sync)
                    .expect("deflate of a buffer cannot fail");
                input = &input[(deflater.total_in() - before) as usize..];
                // Done once all input is in and the flush did not fill the output.
                if input.is_empty() && w.scratch.len() < w.scratch.capacity() {
                    break;
                }
            }
            if h.fin && w.scratch.ends_with(&TAIL) {
                w.scratch.truncate(w.scratch.len() - TAIL.len());
            }
            let first = (u8::from(h.fin) << 7) | if h.opcode != 0 { 0x40 } else { 0 } | h.opcode;
            let key: [u8; 4] = rand::random();
            put_header(&mut w.out, first, w.scratch.len() as u64, Some(key));
            let start = w.out.len();
            w.out.extend_from_slice(&w.scratch);
            apply_mask(&mut w.out[start..], key);
            self.counts.out_deflated += h.len;
            self.counts.out_wire += w.scratch.len() as u64;
            w.compressing = !h.fin;
            if h.fin && self.params.client_no_context_takeover {
                deflater.reset();
            }
            at = end;
        }
        w.raw.drain(..at);
        if w.raw.is_empty() && w.raw.capacity() > 64 << 10 {
            w.raw = Vec::new();
        }
        if w.scratch.capacity() > 64 << 10 {
            w.scratch = Vec::new();
        }
    }
}

impl<S: AsyncWrite + Unpin> Deflate<S> {
    /// Write transformed bytes to the socket until none are left or it would block.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let w = &mut self.write;
        while w.out_at < w.out.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &w.out[w.out_at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => w.out_at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        w.out.clear();
        w.out_at = 0;
        if w.out.capacity() > 64 << 10 {
            w.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deflate<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let r = &mut this.read;
            if r.out_at < r.out.len() {
                let n = buf.remaining().min(r.out.len() - r.out_at);
                buf.put_slice(&r.out[r.out_at..r.out_at + n]);
                r.out_at += n;
                if r.out_at == r.out.len() {
                    r.out.clear();
                    r.out_at = 0;
                    if r.out.capacity() > 64 << 10 {
                        r.out = Vec::new();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if r.failed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "permessage-deflate: the connection already failed",
                )));
            }
            let mut chunk = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut chunk);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            if got.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let r = &mut this.read;
            // A frame passing through with nothing buffered goes straight to the frame layer.
            if r.pass > 0 && r.raw.is_empty() && !r.failed {
                let n = got
                    .len()
                    .min(buf.remaining())
                    .min(usize::try_from(r.pass).unwrap_or(usize::MAX));
                buf.put_slice(&got[..n]);
                r.pass -= n as u64;
                r.raw.extend_from_slice(&got[n..]);
                if n > 0 {
                    this.transform_read();
                    return Poll::Ready(Ok(()));
                }
            } else {
                r.raw.extend_from_slice(got);
            }
            this.transform_read();
            if this.read.raw.is_empty() && this.read.raw.capacity() > 64 << 10 {
                this.read.raw = Vec::new();
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deflate<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write.out.len() - this.write.out_at >= WRITE_HIGH_WATER {
            match this.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if this.write.out.len() - this.write.out_at >= WRITE_HIGH_WATER => {
                    return Poll::Pending;
                }
                Poll::Pending => {}
            }
        }
        this.write.raw.extend_from_slice(buf);
        this.transform_write();
        // Out at once if the socket takes it, as an untransformed write would be.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ws::WsStream;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncWriteExt, DuplexStream, duplex};
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    /// An unmasked (server) frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        put_header(&mut f, first, payload.len() as u64, None);
        f.extend_from_slice(payload);
        f
    }

    /// What a server's compressor makes of one message: sync flush, tail stripped.
    fn compressed(c: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - TAIL.len());
        out
    }

    /// A client reading `bytes` from a server through the layer. The server's end is returned
    /// so the connection stays open.
    async fn client_reading(
        bytes: &[u8],
        params: Negotiated,
        limit: usize,
    ) -> (WsStream<Deflate<DuplexStream>>, DuplexStream) {
        let (client, mut server) = duplex(1 << 20);
        server.write_all(bytes).await.unwrap();
        let config = WebSocketConfig::default()
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit));
        let ws = WsStream::from_raw_socket(
            Deflate::new(client, params, limit, Vec::new()),
            Role::Client,
            Some(config),
        );
        (ws, server)
    }

    async fn next(ws: &mut WsStream<Deflate<DuplexStream>>) -> Result<Message, WsError> {
        tokio::time::timeout(std::time::Duration::from_secs(2), ws.next())
            .await
            .expect("a message in time")
            .expect("the stream goes on")
    }

    /// All an idle compressed connection carries beyond a plain one: the layer, boxed, with no
    /// (de)compressor and empty buffers until the first message.
    #[test]
    fn an_idle_layer_is_small() {
        let size = std::mem::size_of::<Deflate<crate::net::transport::Transport>>();
        println!("deflate layer: {size} bytes");
        assert!(size <= 384, "the layer grew to {size} bytes");
    }

    #[test]
    fn answers_are_parsed() {
        let ok = |s: &str| parse_answer(s).unwrap();
        assert_eq!(ok(""), None, "declined: a plain connection");
        assert_eq!(ok("permessage-deflate"), Some(Negotiated::default()));
        // What Python websockets answers by default.
        assert_eq!(
            ok("permessage-deflate; server_max_window_bits=12"),
            Some(Negotiated::default())
        );
        assert_eq!(
            ok("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            Some(Negotiated {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
            })
        );
        assert_eq!(
            ok("permessage-deflate; client_max_window_bits=15"),
            Some(Negotiated::default())
        );
        let bad = |s: &str| parse_answer(s).unwrap_err();
        assert!(bad("permessage-deflate; client_max_window_bits=10").contains("15-bit window"));
        assert!(bad("permessage-deflate; server_max_window_bits=7").contains("not 8 to 15"));
        assert!(bad("permessage-deflate; server_max_window_bits").contains("not 8 to 15"));
        assert!(bad("permessage-deflate; mystery").contains("unknown parameter"));
        assert!(bad("x-webkit-deflate-frame").contains("did not offer"));
        assert!(bad("permessage-deflate, permessage-deflate").contains("twice"));
        assert!(
            bad("permessage-deflate; server_no_context_takeover; server_no_context_takeover")
                .contains("twice")
        );
    }

    #[tokio::test]
    async fn a_fragmented_message_with_a_ping_between_its_fragments() {
        let text = "a compressible message, a compressible message, a compressible message";
        let mut server = Compress::new(Compression::default(), false);
        let z = compressed(&mut server, text.as_bytes());
        let (a, rest) = z.split_at(z.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        let mut wire = frame(0x41, a); // text, RSV1, not final
        wire.extend(frame(0x89, b"ping")); // a ping between fragments
        wire.extend(frame(0x00, b));
        wire.extend(frame(0x80, c));
        wire.extend(frame(0x82, b"plain")); // an uncompressed message after it
        let (mut ws, _server) = client_reading(&wire, Negotiated::default(), DEFAULT_LIMIT).await;
        assert_eq!(next(&mut ws).await.unwrap(), Message::Ping("ping".into()));
        assert_eq!(next(&mut ws).await.unwrap(), Message::text(text));
        assert_eq!(next(&mut ws).await.unwrap(), Message::binary(&b"plain"[..]));
        let counts = ws.get_ref().counts();
        assert_eq!(counts.in_inflated, (text.len() + 5) as u64);
        assert_eq!(counts.in_wire, (z.len() + 5) as u64);
    }

    #[tokio::test]
    async fn frames_that_came_with_the_upgrade_response_are_read() {
        let mut server = Compress::new(Compression::default(), false);
        let wire = frame(0xc1, &compressed(&mut server, b"early"));
        let (client, _server) = duplex(1024);
        let mut ws = WsStream::from_raw_socket(
            Deflate::new(client, Negotiated::default(), DEFAULT_LIMIT, wire),
            Role::Client,
            None,
        );
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("early"));
    }

    /// With context takeover a message may refer back to the one before it; without, the
    /// inflater is reset and such a message does not read back (the server promised not to
    /// send one; miniz_oxide reads the missing history as zeros rather than failing), which is
    /// how the test sees that the reset happened.
    #[tokio::test]
    async fn server_context_takeover_on_and_off() {
        let text = "the same sentence, sent twice over one connection";
        let mut server = Compress::new(Compression::default(), false);
        let first = compressed(&mut server, text.as_bytes());
        let second = compressed(&mut server, text.as_bytes());
        assert!(
            second.len() < first.len() / 2,
            "the second refers to the first"
        );
        let mut wire = frame(0xc1, &first);
        wire.extend(frame(0xc1, &second));

        let (mut ws, _s) = client_reading(&wire, Negotiated::default(), DEFAULT_LIMIT).await;
        assert_eq!(next(&mut ws).await.unwrap(), Message::text(text));
        assert_eq!(next(&mut ws).await.unwrap(), Message::text(text));

        let reset = Negotiated {
            server_no_context_takeover: true,
            ..Negotiated::default()
        };
        let (mut ws, _s) = client_reading(&wire, reset, DEFAULT_LIMIT).await;
        assert_eq!(next(&mut ws).await.unwrap(), Message::text(text));
        assert_ne!(next(&mut ws).await.ok(), Some(Message::text(text)));

        // A server that keeps its promise (a fresh compressor per message) reads fine.
        let mut wire = Vec::new();
        for _ in 0..2 {
            let mut fresh = Compress::new(Compression::default(), false);
            wire.extend(frame(0xc1, &compressed(&mut fresh, text.as_bytes())));
        }
        let (mut ws, _s) = client_reading(&wire, reset, DEFAULT_LIMIT).await;
        assert_eq!(next(&mut ws).await.unwrap(), Message::text(text));
        assert_eq!(next(&mut ws).await.unwrap(), Message::text(text));
    }

    /// 16 MiB of zeros compress to ~16 KiB; with a 1 MiB limit the client refuses the message
    /// as too big (the frame layer's capacity error: the session closes with 1009) without ever
    /// holding more than the limit.
    #[tokio::test]
    async fn a_decompression_bomb_is_refused() {
        let mut server = Compress::new(Compression::best(), false);
        let bomb = compressed(&mut server, &vec![0u8; 16 << 20]);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let limit = 1 << 20;
        let (mut ws, _s) = client_reading(&frame(0xc2, &bomb), Negotiated::default(), limit).await;
        let e = next(&mut ws).await.unwrap_err();
        assert!(
            matches!(e, WsError::Capacity(_)),
            "a capacity error, closed with 1009: {e:?}"
        );
        assert!(ws.get_ref().read.message.capacity() <= limit + 1);
    }

    #[tokio::test]
    async fn a_broken_compressed_stream_is_a_protocol_error() {
        let (mut ws, _s) = client_reading(
            &frame(0xc1, &[0xff, 0xff, 0xff, 0xff]),
            Negotiated::default(),
            DEFAULT_LIMIT,
        )
        .await;
        let e = next(&mut ws).await.unwrap_err();
        assert!(matches!(e, WsError::Protocol(_)), "{e:?}");
    }

    /// One client frame as the server reads it: (first byte, unmasked payload).
    fn server_reads(wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let h = Header::parse(&wire[at..]).expect("a whole frame");
            let mut payload = wire[at + h.size..at + h.size + h.len as usize].to_vec();
            apply_mask(&mut payload, h.mask.expect("client frames are masked"));
            frames.push((wire[at], payload));
            at += h.size + h.len as usize;
        }
        frames
    }

    /// What a server's inflater makes of a compressed message.
    fn inflated(d: &mut Decompress, payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::new();
        inflate(d, &input, &mut out, usize::MAX - 1).ok().unwrap();
        out
    }

    /// The frame layer's frames, written to the layer a few bytes at a time, come out compressed,
    /// with RSV1 and a mask; a ping passes through as it is.
    #[tokio::test]
    async fn partial_writes_are_gathered_into_frames() {
        let mut frames = Vec::new();
        {
            let (a, mut b) = duplex(1 << 20);
            let mut ws = WsStream::from_raw_socket(a, Role::Client, None);
            ws.send(Message::text("hello hello hello hello hello"))
                .await
                .unwrap();
            ws.send(Message::Ping("p".into())).await.unwrap();
            ws.send(Message::binary(vec![7u8; 3000])).await.unwrap();
            drop(ws);
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut frames)
                .await
                .unwrap();
        }
        let mut layer = Deflate::new(Vec::new(), Negotiated::default(), DEFAULT_LIMIT, Vec::new());
        for chunk in frames.chunks(3) {
            layer.write_all(chunk).await.unwrap();
        }
        layer.flush().await.unwrap();
        let sent = server_reads(layer.get_ref());
        assert_eq!(sent.len(), 3, "{sent:?}");
        let mut d = Decompress::new(false);
        assert_eq!(sent[0].0, 0xc1, "FIN, RSV1, text");
        assert_eq!(
            inflated(&mut d, &sent[0].1),
            b"hello hello hello hello hello"
        );
        assert_eq!(sent[1], (0x89, b"p".to_vec()), "the ping as it was");
        assert_eq!(sent[2].0, 0xc2, "FIN, RSV1, binary");
        assert!(
            sent[2].1.len() < 100,
            "3000 sevens compress: {}",
            sent[2].1.len()
        );
        assert_eq!(inflated(&mut d, &sent[2].1), vec![7u8; 3000]);
        let c = layer.counts();
        assert_eq!(c.out_deflated, 29 + 3000);
        assert_eq!(c.out_wire, (sent[0].1.len() + sent[2].1.len()) as u64);
    }

    /// With client context takeover the second of two equal messages is a back-reference;
    /// with `client_no_context_takeover` both are compressed alike.
    #[tokio::test]
    async fn client_context_takeover_on_and_off() {
        let text = "the same sentence, sent twice over one connection";
        for reset in [false, true] {
            let (a, mut b) = duplex(1 << 20);
            let params = Negotiated {
                client_no_context_takeover: reset,
                ..Negotiated::default()
            };
            let layer = Deflate::new(a, params, DEFAULT_LIMIT, Vec::new());
            let mut ws = WsStream::from_raw_socket(layer, Role::Client, None);
            ws.send(Message::text(text)).await.unwrap();
            ws.send(Message::text(text)).await.unwrap();
            drop(ws);
            let mut wire = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut wire)
                .await
                .unwrap();
            let sent = server_reads(&wire);
            let mut d = Decompress::new(false);
            assert_eq!(inflated(&mut d, &sent[0].1), text.as_bytes());
            if reset {
                assert_eq!(sent[0].1, sent[1].1, "a fresh compressor for each");
                d.reset(false);
            } else {
                assert!(sent[1].1.len() < sent[0].1.len() / 2, "{sent:?}");
            }
            assert_eq!(inflated(&mut d, &sent[1].1), text.as_bytes());
        }
    }
}
