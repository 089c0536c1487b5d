//! The WebSocket frame layer of both ends (RFC 6455), over a [`Transport`]. It is ours rather
//! than tokio-tungstenite's because of what an idle connection costs: tungstenite keeps a read
//! buffer per connection for the connection's whole life (allocated up front, `read_buffer`
//! bytes), tokio-tungstenite adds two `Arc`ed waker proxies per connection, and its stream is
//! 312 bytes inside every connection's task. Here a connection reads into a buffer its thread
//! shares and keeps only what it has not consumed yet (nothing at all between messages); its
//! write buffer exists only while something waits for the socket; the struct is 128 bytes.
//!
//! What tungstenite still provides: the types the rest of the code speaks (`Message`,
//! `CloseFrame`, `CloseCode`, `Error` and its `ProtocolError`s, `WebSocketConfig`), the frame
//! header parser, and the behaviour this follows: which broken frame is which error, pongs and
//! close replies sent without being asked, who ends the stream and when (`None` once the close
//! handshake is over; the server ends it as soon as it has replied, the client waits for the
//! server to close the TCP connection). Where this differs, on purpose:
//! - a close frame with a code no endpoint may send (1004-1006, 1015, under 1000, 1016-2999,
//!   5000 and up) is a protocol error (`InvalidCloseSequence`, so the reader closes with 1002)
//!   rather than a close tungstenite reports as 1002 "Protocol violation"; 1014 (bad gateway)
//!   is a close like any other, where tungstenite took it for a violation;
//! - the reply to a peer's close echoes its code, not its reason;
//! - frame size and message size are checked from the frame's header, before its payload is
//!   read; no frame over 4 GiB is accepted whatever the configuration says;
//! - `max_write_buffer_size` is not used: a sender is held back in `poll_ready` once
//!   `write_buffer_size` bytes wait for a socket that takes nothing, so the buffer cannot grow
//!   past that by more than one message;
//! - `read_buffer_size` is not a buffer of the connection's but the most one read takes from
//!   the socket into the thread's shared buffer (64 KiB at most); the rest of a frame longer
//!   than that is read into the frame's own room, as much at once as the socket has.

use std::cell::RefCell;
use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::stream::FusedStream;
use futures_util::{Sink, SinkExt, Stream};
use rand::Rng as _;
use rand::rngs::SmallRng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{FrameHeader, Utf8Bytes};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Error, Message};

use super::transport::Transport;

/// The read buffer a thread's connections share, and so the most one read takes.
const SCRATCH: usize = 64 * 1024;

/// The longest frame header.
const MAX_HEADER: usize = 14;

/// `pong_at` when no pong of ours waits in the write buffer.
const NO_PONG: u32 = u32::MAX;

/// The largest frame accepted whatever the configuration says: positions in a connection's
/// unread input are kept as `u32`, and that input is at most a frame and one read.
const FRAME_CAP: usize = u32::MAX as usize - 2 * SCRATCH;

thread_local! {
    /// Borrowed only within one poll of one connection, never across an await.
    static SHARED_READ: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
    /// Masks for client frames: they only have to be unpredictable to a browser's script
    /// (RFC 6455 §10.3), which a load generator has none of.
    static MASKS: RefCell<SmallRng> = RefCell::new(rand::make_rng());
}

/// Run `f` on the thread's shared read buffer (on a buffer of its own in the unlikely case
/// that the shared one is in use or gone).
fn with_shared_read<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut f = Some(f);
    let shared = SHARED_READ.try_with(|b| match b.try_borrow_mut() {
        Ok(mut b) => Some((f.take().expect("called once"))(&mut b)),
        Err(_) => None,
    });
    match shared {
        Ok(Some(r)) => r,
        _ => (f.take().expect("called once"))(&mut vec![0; SCRATCH]),
    }
}

fn random_mask() -> [u8; 4] {
    MASKS
        .try_with(|r| r.borrow_mut().next_u32())
        .unwrap_or_else(|_| rand::random())
        .to_ne_bytes()
}

/// Append a frame header (RFC 6455 §5.2): `first` is the FIN/RSV/opcode byte; with a mask,
/// its key follows the length. The compression layer writes its frames with it too.
pub(super) fn put_header(out: &mut Vec<u8>, first: u8, len: u64, mask: Option<[u8; 4]>) {
    let m = if mask.is_some() { 0x80 } else { 0 };
    out.push(first);
    match len {
        0..=125 => out.push(m | len as u8),
        126..=0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
}

/// XOR `buf` with the 4-byte mask repeated (RFC 6455 §5.3), eight bytes at a time.
pub(super) fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// The close code RFC 6455 §7.4.1 asks an endpoint to send for a read error, when the error is
/// the peer breaking the protocol rather than the connection breaking (`None`: the network's
/// doing, or the connection used after it ended).
pub fn violation_code(e: &Error) -> Option<u16> {
    match e {
        Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake
            | ProtocolError::SendAfterClosing
            | ProtocolError::ReceivedAfterClosing,
        ) => None,
        Error::Protocol(_) => Some(1002),
        Error::Utf8(_) => Some(1007),
        Error::Capacity(_) => Some(1009),
        _ => None,
    }
}

/// Close codes an endpoint may send (RFC 6455 §7.4, and 1012-1014 as IANA registered them;
/// tungstenite leaves out 1014, which the embedded target may send).
fn may_be_sent(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Active,
    /// We sent a close frame; the peer's data may still arrive, then its reply.
    ClosedByUs,
    /// The peer sent a close frame; our reply is queued or written.
    ClosedByPeer,
    /// The peer replied to our close frame.
    CloseAcknowledged,
    /// Nothing more is read or written.
    Terminated,
}

impl State {
    fn can_read(self) -> bool {
        matches!(self, State::Active | State::ClosedByUs)
    }
}

/// A fragmented message being received.
struct Partial {
    text: bool,
    /// Of `data`, the prefix known to be UTF-8 (text only).
    valid: usize,
    data: Vec<u8>,
}

impl Partial {
    /// Fail as soon as the text so far cannot be the start of UTF-8, as tungstenite does.
    fn check_utf8(&mut self) -> Result<(), Error> {
        match std::str::from_utf8(&self.data[self.valid..]) {
            Ok(_) => self.valid = self.data.len(),
            // Cut inside a character: the rest of it is in a later fragment.
            Err(e) if e.error_len().is_none() => self.valid += e.valid_up_to(),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

fn data_message(text: bool, payload: Bytes) -> Result<Message, Error> {
    Ok(if text {
        Message::Text(Utf8Bytes::try_from(payload)?)
    } else {
        Message::Binary(payload)
    })
}

/// What parsing the input held found.
enum Parsed {
    Message(Message),
    /// More input is needed: this many bytes from the start of the incomplete frame, when its
    /// header says (0 when the header itself is incomplete).
    More(usize),
}

/// A WebSocket, client or server side, over a [`Transport`] (or any other byte stream, for
/// tests). A `Stream` of messages and a `Sink` for them, as tokio-tungstenite's is.
pub struct WsStream<S = Transport> {
    io: S,
    /// Input read but not consumed yet, from `tail_at` on: an incomplete frame, or whole frames
    /// not handed out yet. Without an allocation whenever it is empty.
    tail: Vec<u8>,
    /// Frames waiting for the socket; without an allocation once they are written.
    out: Vec<u8>,
    partial: Option<Box<Partial>>,
    max_message: usize,
    max_frame: usize,
    tail_at: u32,
    /// Where the automatic pong waiting last in `out` starts ([`NO_PONG`] if none): the pong
    /// of a newer ping replaces it.
    pong_at: u32,
    /// Bytes in `out` past which they are written without waiting for a flush.
    write_batch: u32,
    /// The most one read takes.
    read_max: u32,
    state: State,
    server: bool,
    accept_unmasked: bool,
    /// The stream returned `None` or an error: it returns `None` from then on.
    ended: bool,
    /// A pong or close reply waits in `out`: written out by the next read as well.
    reply: bool,
}

impl<S> WsStream<S> {
    /// A WebSocket over a socket whose handshake is done.
    pub fn from_raw_socket(io: S, role: Role, config: Option<WebSocketConfig>) -> Self {
        Self::from_partially_read(io, Vec::new(), role, config)
    }

    /// A WebSocket over a socket whose handshake is done, `part` being what was read after
    /// the handshake.
    pub fn from_partially_read(
        io: S,
        part: Vec<u8>,
        role: Role,
        config: Option<WebSocketConfig>,
    ) -> Self {
        let c = config.unwrap_or_default();
        WsStream {
            io,
            tail: if part.is_empty() { Vec::new() } else { part },
            out: Vec::new(),
            partial: None,
            max_message: c.max_message_size.unwrap_or(usize::MAX),
            max_frame: c.max_frame_size.unwrap_or(usize::MAX).min(FRAME_CAP),
            tail_at: 0,
            pong_at: NO_PONG,
            write_batch: u32::try_from(c.write_buffer_size).unwrap_or(u32::MAX),
            read_max: c.read_buffer_size.clamp(MAX_HEADER, SCRATCH) as u32,
            state: State::Active,
            server: role == Role::Server,
            accept_unmasked: c.accept_unmasked_frames,
            ended: false,
            reply: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Append one frame: `first` is its FIN/RSV/opcode byte, its payload `prefix` then
    /// `payload` (a close frame's code, then its reason). Client frames are masked.
    fn put_frame(&mut self, first: u8, prefix: &[u8], payload: &[u8]) {
        self.pong_at = NO_PONG;
        let len = prefix.len() + payload.len();
        let out = &mut self.out;
        out.reserve(MAX_HEADER + len);
        let mask = (!self.server).then(random_mask);
        put_header(out, first, len as u64, mask);
        let start = out.len();
        out.extend_from_slice(prefix);
        out.extend_from_slice(payload);
        if let Some(mask) = mask {
            apply_mask(&mut out[start..], mask);
        }
    }

    /// Queue a pong, in place of the one still waiting whole at the end of the buffer if there
    /// is one: only the latest ping needs an answer (RFC 6455 §5.5.3).
    fn put_pong(&mut self, payload: &[u8]) {
        if self.pong_at != NO_PONG {
            self.out.truncate(self.pong_at as usize);
        }
        let at = self.out.len();
        self.put_frame(0x8A, &[], payload);
        self.pong_at = u32::try_from(at).unwrap_or(NO_PONG);
    }

    fn put_close(&mut self, code: Option<CloseCode>, reason: &str) {
        match code {
            Some(code) => self.put_frame(0x88, &u16::from(code).to_be_bytes(), reason.as_bytes()),
            None => self.put_frame(0x88, &[], &[]),
        }
    }

    /// The checks a frame's header allows, before its payload is read; in tungstenite's order.
    fn check(&self, h: &FrameHeader, len: u64) -> Result<(), Error> {
        let too_long = |size: u64, max_size: usize| {
            Error::Capacity(CapacityError::MessageTooLong {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                max_size,
            })
        };
        if len > self.max_frame as u64 {
            return Err(too_long(len, self.max_frame));
        }
        let protocol = |e| Err(Error::Protocol(e));
        if self.server && h.mask.is_none() && !self.accept_unmasked {
            return protocol(ProtocolError::UnmaskedFrameFromClient);
        }
        if !self.state.can_read() {
            return protocol(ProtocolError::ReceivedAfterClosing);
        }
        if h.rsv1 || h.rsv2 || h.rsv3 {
            return protocol(ProtocolError::NonZeroReservedBits);
        }
        if !self.server && h.mask.is_some() {
            return protocol(ProtocolError::MaskedFrameFromServer);
        }
        match h.opcode {
            OpCode::Control(_) if !h.is_final => protocol(ProtocolError::FragmentedControlFrame),
            OpCode::Control(_) if len > 125 => protocol(ProtocolError::ControlFrameTooBig),
            // Reserved opcodes never get here: `FrameHeader::parse` refuses them
            // (`InvalidOpcode`, as the tests hold).
            OpCode::Control(_) => Ok(()),
            OpCode::Data(d) => match (d, self.partial.as_deref()) {
                (Data::Continue, None) => protocol(ProtocolError::UnexpectedContinueFrame),
                (Data::Continue, Some(p)) => {
                    let size = p.data.len() as u64 + len;
                    if size > self.max_message as u64 {
                        return Err(too_long(size, self.max_message));
                    }
                    Ok(())
                }
                (d, Some(_)) => protocol(ProtocolError::ExpectedFragment(d)),
                (_, None) if len > self.max_message as u64 => Err(too_long(len, self.max_message)),
                (_, None) => Ok(()),
            },
        }
    }

    /// Take frames from `buf` starting at `at` (moved past each frame taken) until one makes a
    /// message or the input ends inside a frame.
    fn parse(&mut self, buf: &mut [u8], at: &mut usize) -> Result<Parsed, Error> {
        loop {
            let rest = &buf[*at..];
            let mut cursor = Cursor::new(rest);
            let Some((header, len)) = FrameHeader::parse(&mut cursor)? else {
                return Ok(Parsed::More(0));
            };
            self.check(&header, len)?;
            let start = cursor.position() as usize;
            // No overflow: `check` held `len` to the frame limit.
            let end = start + len as usize;
            if rest.len() < end {
                return Ok(Parsed::More(end));
            }
            let payload = &mut buf[*at + start..*at + end];
            *at += end;
            if let Some(m) = self.on_frame(&header, payload)? {
                return Ok(Parsed::Message(m));
            }
        }
    }

    /// One whole frame, its header checked: the message it completes, if any.
    fn on_frame(&mut self, h: &FrameHeader, payload: &mut [u8]) -> Result<Option<Message>, Error> {
        if let Some(mask) = h.mask {
            apply_mask(payload, mask);
        }
        match h.opcode {
            OpCode::Control(Control::Close) => Ok(self.on_close(payload)?.map(Message::Close)),
            OpCode::Control(Control::Ping) => {
                let data = Bytes::copy_from_slice(payload);
                // No answers once a close frame went either way.
                if self.state == State::Active {
                    self.put_pong(&data);
                    self.reply = true;
                }
                Ok(Some(Message::Ping(data)))
            }
            OpCode::Control(Control::Pong) => {
                Ok(Some(Message::Pong(Bytes::copy_from_slice(payload))))
            }
            OpCode::Control(Control::Reserved(i)) => {
                Err(Error::Protocol(ProtocolError::UnknownControlFrameType(i)))
            }
            OpCode::Data(Data::Continue) => {
                let Some(p) = self.partial.as_deref_mut() else {
                    return Err(Error::Protocol(ProtocolError::UnexpectedContinueFrame));
                };
                p.data.extend_from_slice(payload);
                if p.text {
                    p.check_utf8()?;
                }
                if !h.is_final {
                    return Ok(None);
                }
                let p = self.partial.take().expect("checked above");
                data_message(p.text, Bytes::from(p.data)).map(Some)
            }
            OpCode::Data(d) => {
                let text = matches!(d, Data::Text);
                if h.is_final {
                    return data_message(text, Bytes::copy_from_slice(payload)).map(Some);
                }
                let mut p = Box::new(Partial {
                    text,
                    valid: 0,
                    data: payload.to_vec(),
                });
                if text {
                    p.check_utf8()?;
                }
                self.partial = Some(p);
                Ok(None)
            }
        }
    }

    /// A close frame's payload: what to hand out (`None`: nothing, the handshake was over).
    #[allow(clippy::option_option)]
    fn on_close(&mut self, payload: &[u8]) -> Result<Option<Option<CloseFrame>>, Error> {
        let close = match payload {
            [] => None,
            [_] => return Err(Error::Protocol(ProtocolError::InvalidCloseSequence)),
            [hi, lo, reason @ ..] => Some(CloseFrame {
                code: CloseCode::from(u16::from_be_bytes([*hi, *lo])),
                reason: Utf8Bytes::try_from(Bytes::copy_from_slice(reason))?,
            }),
        };
        match self.state {
            State::Active => {
                if close
                    .as_ref()
                    .is_some_and(|f| !may_be_sent(u16::from(f.code)))
                {
                    return Err(Error::Protocol(ProtocolError::InvalidCloseSequence));
                }
                self.state = State::ClosedByPeer;
                self.put_close(close.as_ref().map(|f| f.code), "");
                self.reply = true;
                Ok(Some(close))
            }
            State::ClosedByUs => {
                self.state = State::CloseAcknowledged;
                Ok(Some(close))
            }
            _ => Ok(None),
        }
    }

    /// Drop what was consumed of the input held, and the allocation with it once it is all.
    fn consumed(&mut self, at: usize) {
        if at >= self.tail.len() {
            self.tail = Vec::new();
            self.tail_at = 0;
        } else {
            self.tail_at = at as u32;
        }
    }

    /// The socket ended: cleanly if the close handshake was done.
    fn eof(&mut self) -> Error {
        match std::mem::replace(&mut self.state, State::Terminated) {
            State::ClosedByPeer | State::CloseAcknowledged => Error::ConnectionClosed,
            _ => Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
        }
    }

    /// A reset after the close handshake is how a connection may end; before, it is an error.
    fn io_error(&self, e: io::Error) -> Error {
        if !self.state.can_read() && e.kind() == io::ErrorKind::ConnectionReset {
            Error::ConnectionClosed
        } else {
            Error::Io(e)
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Send a close frame (1005, no code, for `None`) and write it out.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        self.send(Message::Close(frame)).await
    }

    /// Write out all of `out`, releasing its allocation when done.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while !self.out.is_empty() {
            let n = match ready!(Pin::new(&mut self.io).poll_write(cx, &self.out)) {
                Ok(0) => {
                    let e = io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "Connection reset while sending",
                    );
                    return Poll::Ready(Err(self.io_error(e)));
                }
                Ok(n) => n,
                Err(e) => return Poll::Ready(Err(self.io_error(e))),
            };
            if self.pong_at != NO_PONG {
                self.pong_at = match u32::try_from(n) {
                    Ok(n) if n <= self.pong_at => self.pong_at - n,
                    _ => NO_PONG,
                };
            }
            if n >= self.out.len() {
                self.out = Vec::new();
            } else {
                self.out.drain(..n);
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Write out everything and flush the transport (TLS, compression) under it.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.poll_write_out(cx))?;
        if let Err(e) = ready!(Pin::new(&mut self.io).poll_flush(cx)) {
            return Poll::Ready(Err(self.io_error(e)));
        }
        self.reply = false;
        Poll::Ready(Ok(()))
    }

    /// Read more input after the incomplete frame held, `need` bytes of it in all if its
    /// header is in. Ok(0) at the end of the stream.
    fn poll_read_more(&mut self, cx: &mut Context<'_>, need: usize) -> Poll<io::Result<usize>> {
        if self.tail_at > 0 {
            self.tail.drain(..self.tail_at as usize);
            self.tail_at = 0;
        }
        // Room for the whole frame at once (its size is within the limit: `check` saw its
        // header), or for one read's worth; the read takes what there is room for.
        let want = need
            .saturating_sub(self.tail.len())
            .max(self.read_max as usize);
        self.tail.reserve_exact(want);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.tail)
    }

    /// The next message; `Err(ConnectionClosed)` when the stream ends cleanly.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, Error>> {
        if self.state == State::Terminated {
            return Poll::Ready(Err(Error::AlreadyClosed));
        }
        // Replies to the peer (a pong, a close) go out on a read as well, as tungstenite's do;
        // a socket that takes nothing now does not stop the reading.
        if self.reply || self.out.len() > self.write_batch as usize {
            match self.poll_flush_out(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        // The server ends the connection once the close handshake is over and its reply out.
        if self.server && !self.state.can_read() && !self.reply {
            self.state = State::Terminated;
            return Poll::Ready(Err(Error::ConnectionClosed));
        }
        loop {
            if !self.tail.is_empty() {
                let mut tail = std::mem::take(&mut self.tail);
                let mut at = self.tail_at as usize;
                let parsed = self.parse(&mut tail, &mut at);
                self.tail = tail;
                self.consumed(at);
                let need = match parsed? {
                    Parsed::Message(m) => return Poll::Ready(Ok(m)),
                    Parsed::More(need) => need,
                };
                match ready!(self.poll_read_more(cx, need)) {
                    Ok(0) => return Poll::Ready(Err(self.eof())),
                    Ok(_) => continue,
                    Err(e) => return Poll::Ready(Err(self.io_error(e))),
                }
            }
            // Nothing held: read into the thread's buffer, take what is whole from there and
            // keep only the rest.
            let read_max = self.read_max as usize;
            let got = with_shared_read(|shared| {
                let mut buf = ReadBuf::new(&mut shared[..read_max]);
                match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(self.io_error(e))),
                    Poll::Ready(Ok(())) => {}
                }
                let n = buf.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(self.eof()));
                }
                let mut at = 0;
                let parsed = self.parse(&mut shared[..n], &mut at)?;
                if at < n {
                    self.tail = shared[at..n].to_vec();
                    self.tail_at = 0;
                }
                Poll::Ready(Ok(match parsed {
                    Parsed::Message(m) => Some(m),
                    Parsed::More(_) => None,
                }))
            });
            if let Some(m) = ready!(got)? {
                return Poll::Ready(Ok(m));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WsStream<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match ready!(this.poll_message(cx)) {
            Ok(m) => Poll::Ready(Some(Ok(m))),
            Err(e) => {
                this.ended = true;
                match e {
                    Error::ConnectionClosed | Error::AlreadyClosed => Poll::Ready(None),
                    e => Poll::Ready(Some(Err(e))),
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> FusedStream for WsStream<S> {
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WsStream<S> {
    type Error = Error;

    /// Ready unless more than `write_batch` bytes wait for a socket that takes nothing now.
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        let r = if this.out.len() > this.write_batch as usize {
            ready!(this.poll_flush_out(cx))
        } else if this.reply {
            // Replies go out with any write; the socket may take them later.
            match this.poll_flush_out(cx) {
                Poll::Ready(r) => r,
                Poll::Pending => Ok(()),
            }
        } else {
            Ok(())
        };
        Poll::Ready(match r {
            Err(Error::ConnectionClosed) => Ok(()),
            r => r,
        })
    }

    /// Buffer a message; it is written by `poll_flush`, or by `poll_ready` (or a read) once
    /// the buffer is past `write_buffer_size`.
    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), Error> {
        let this = self.get_mut();
        match this.state {
            State::Active => {}
            State::Terminated => return Err(Error::AlreadyClosed),
            _ => return Err(Error::Protocol(ProtocolError::SendAfterClosing)),
        }
        match msg {
            Message::Text(t) => this.put_frame(0x81, &[], t.as_bytes()),
            Message::Binary(b) => this.put_frame(0x82, &[], &b),
            Message::Ping(p) => this.put_frame(0x89, &[], &p),
            // Ours replaces an automatic one still waiting, as with tungstenite.
            Message::Pong(p) => this.put_pong(&p),
            Message::Close(frame) => {
                this.state = State::ClosedByUs;
                match &frame {
                    Some(f) => this.put_close(Some(f.code), &f.reason),
                    None => this.put_close(None, ""),
                }
                this.reply = true;
            }
            Message::Frame(f) => {
                let h = f.header();
                let first = u8::from(h.is_final) << 7
                    | u8::from(h.rsv1) << 6
                    | u8::from(h.rsv2) << 5
                    | u8::from(h.rsv3) << 4
                    | u8::from(h.opcode);
                this.put_frame(first, &[], f.payload());
            }
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        let r = ready!(this.poll_flush_out(cx));
        // The server's side of a finished close handshake: nothing more to do.
        if r.is_ok() && this.server && !this.state.can_read() {
            this.state = State::Terminated;
        }
        Poll::Ready(match r {
            Err(Error::ConnectionClosed) => Ok(()),
            r => r,
        })
    }

    /// Send a close frame without a code unless one went already, and write it out. The
    /// socket stays open: the peer's reply is read as any message.
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.state == State::Active {
            self.state = State::ClosedByUs;
            self.put_close(None, "");
            self.reply = true;
        }
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// The two ends of a loopback TCP connection: (the accepted one, the connecting one).
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        c.set_nodelay(true).unwrap();
        s.set_nodelay(true).unwrap();
        (s, c)
    }

    /// Our WebSocket of `role` on one end, the raw socket of its peer on the other.
    async fn ours_and_raw(role: Role, config: Option<WebSocketConfig>) -> (WsStream, TcpStream) {
        let (s, c) = tcp_pair().await;
        match role {
            Role::Server => (
                WsStream::from_raw_socket(Transport::Plain(s), role, config),
                c,
            ),
            Role::Client => (
                WsStream::from_raw_socket(Transport::Plain(c), role, config),
                s,
            ),
        }
    }

    /// A frame as a peer writes it, masked with `mask` if given.
    fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let bit = if mask.is_some() { 0x80 } else { 0 };
        let mut f = vec![first];
        match payload.len() {
            n @ 0..=125 => f.push(bit | n as u8),
            n @ 126..=0xFFFF => {
                f.push(bit | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(bit | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let start = f.len() + if mask.is_some() { 4 } else { 0 };
        if let Some(m) = mask {
            f.extend_from_slice(&m);
        }
        f.extend_from_slice(payload);
        if let Some(m) = mask {
            apply_mask(&mut f[start..], m);
        }
        f
    }

    const MASK: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

    /// One frame off a raw socket: (first byte, whether it was masked, unmasked payload).
    async fn read_frame(s: &mut TcpStream) -> (u8, bool, Vec<u8>) {
        tokio::time::timeout(Duration::from_secs(5), read_frame_now(s))
            .await
            .expect("a frame in time")
    }

    async fn read_frame_now(s: &mut TcpStream) -> (u8, bool, Vec<u8>) {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await.unwrap();
        let len = match head[1] & 0x7f {
            126 => u64::from(s.read_u16().await.unwrap()),
            127 => s.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let masked = head[1] & 0x80 != 0;
        let mut mask = [0u8; 4];
        if masked {
            s.read_exact(&mut mask).await.unwrap();
        }
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).await.unwrap();
        if masked {
            apply_mask(&mut payload, mask);
        }
        (head[0], masked, payload)
    }

    async fn next(ws: &mut WsStream) -> Option<Result<Message, Error>> {
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an answer in time")
    }

    async fn next_msg(ws: &mut WsStream) -> Message {
        next(ws).await.expect("a message").expect("not an error")
    }

    /// Whether `next` is still waiting after a moment.
    async fn waits(ws: &mut WsStream) -> bool {
        tokio::time::timeout(Duration::from_millis(100), ws.next())
            .await
            .is_err()
    }

    /// Nothing held for reading: no unread input, no message in progress.
    fn holds_nothing(ws: &WsStream) -> bool {
        ws.tail.capacity() == 0 && ws.partial.is_none()
    }

    #[test]
    fn the_struct_is_small() {
        let size = std::mem::size_of::<WsStream>();
        let transport = std::mem::size_of::<Transport>();
        println!("WsStream: {size} bytes, of which the transport {transport}");
        // 128 in all in release, where a Transport is 32 bytes (40 in a debug build: tokio's
        // TcpStream is bigger there); tokio-tungstenite's WebSocketStream<Transport> was 312.
        assert!(
            size - transport <= 96,
            "WsStream grew to {size} bytes ({transport} of them the transport)"
        );
    }

    #[test]
    fn masks_round_trip_at_any_length() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut masked = data.clone();
            apply_mask(&mut masked, [1, 2, 3, 4]);
            let naive: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
                .collect();
            assert_eq!(masked, naive, "length {len}");
            apply_mask(&mut masked, [1, 2, 3, 4]);
            assert_eq!(masked, data);
        }
    }

    /// A text message in three fragments, a ping between them and a character split across
    /// two: the ping is handed out first and answered with its payload, the message whole.
    #[tokio::test]
    async fn a_fragmented_message_with_a_ping_between_its_fragments() {
        for role in [Role::Client, Role::Server] {
            let (mut ws, mut raw) = ours_and_raw(role, None).await;
            let mask = if role == Role::Server { MASK } else { None };
            let text = "Hello, wörld";
            let bytes = text.as_bytes();
            // "ö" is two bytes, at 8 and 9: the second fragment ends between them.
            let mut wire = frame(0x01, &bytes[..5], mask);
            wire.extend(frame(0x89, b"ping!", mask));
            wire.extend(frame(0x00, &bytes[5..9], mask));
            wire.extend(frame(0x80, &bytes[9..], mask));
            raw.write_all(&wire).await.unwrap();
            assert_eq!(next_msg(&mut ws).await, Message::Ping("ping!".into()));
            assert!(ws.partial.is_some(), "the message is in progress");
            assert_eq!(next_msg(&mut ws).await, Message::text(text));
            let (first, masked, payload) = read_frame(&mut raw).await;
            assert_eq!(first, 0x8A, "a pong");
            assert_eq!(
                masked,
                role == Role::Client,
                "{role:?} masks only as a client"
            );
            assert_eq!(payload, b"ping!");
            assert!(holds_nothing(&ws));
            assert_eq!(
                ws.out.capacity(),
                0,
                "the pong is written and its buffer gone"
            );
        }
    }

    /// A message that arrives a byte at a time is put together from the pieces.
    #[tokio::test]
    async fn a_message_written_a_byte_at_a_time() {
        let (mut ws, mut raw) = ours_and_raw(Role::Server, None).await;
        let big: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut wire = frame(0x82, &big, MASK);
        wire.extend(frame(0x81, b"and then", MASK));
        let writer = tokio::spawn(async move {
            for b in wire {
                raw.write_all(&[b]).await.unwrap();
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
            raw
        });
        assert_eq!(next_msg(&mut ws).await, Message::binary(big));
        assert_eq!(next_msg(&mut ws).await, Message::text("and then"));
        assert!(holds_nothing(&ws));
        let _raw = writer.await.unwrap();
    }

    /// Several frames read at once are handed out one at a time; what is not handed out yet
    /// is kept only until it is.
    #[tokio::test]
    async fn several_frames_in_one_read() {
        let (mut ws, mut raw) = ours_and_raw(Role::Client, None).await;
        let mut wire = frame(0x81, b"one", None);
        wire.extend(frame(0x82, &[2, 2], None));
        wire.extend(frame(0x8A, b"pong", None));
        wire.extend(frame(0x81, b"four", None));
        // Half of a fifth.
        let fifth = frame(0x81, b"fifth", None);
        wire.extend(&fifth[..3]);
        raw.write_all(&wire).await.unwrap();
        assert_eq!(next_msg(&mut ws).await, Message::text("one"));
        assert!(ws.tail.capacity() > 0, "the rest is held");
        assert_eq!(next_msg(&mut ws).await, Message::binary(vec![2, 2]));
        assert_eq!(next_msg(&mut ws).await, Message::Pong("pong".into()));
        assert_eq!(next_msg(&mut ws).await, Message::text("four"));
        assert!(waits(&mut ws).await, "the fifth is not whole");
        assert_eq!(&ws.tail[ws.tail_at as usize..], &fifth[..3]);
        raw.write_all(&fifth[3..]).await.unwrap();
        assert_eq!(next_msg(&mut ws).await, Message::text("fifth"));
        // An idle connection holds no read buffer at all.
        assert!(holds_nothing(&ws));
        assert_eq!(ws.tail.capacity(), 0);
        assert_eq!(ws.out.capacity(), 0);
    }

    /// Bytes that came with the handshake are read first.
    #[tokio::test]
    async fn input_read_with_the_handshake_comes_first() {
        let (s, mut c) = tcp_pair().await;
        let mut part = frame(0x81, b"early", MASK);
        part.extend(&frame(0x81, b"later", MASK)[..4]);
        let mut ws = WsStream::from_partially_read(Transport::Plain(s), part, Role::Server, None);
        assert_eq!(next_msg(&mut ws).await, Message::text("early"));
        c.write_all(&frame(0x81, b"later", MASK)[4..])
            .await
            .unwrap();
        assert_eq!(next_msg(&mut ws).await, Message::text("later"));
        assert!(holds_nothing(&ws));
    }

    /// Each way of breaking the protocol, the error it is, and the close code it earns.
    #[tokio::test]
    async fn broken_frames_are_the_errors_tungstenite_makes_them() {
        type Check = fn(&Error) -> bool;
        /// What breaks, on which side, with what limits, the bytes, the error, the close code.
        type Case = (
            &'static str,
            Role,
            Option<WebSocketConfig>,
            Vec<u8>,
            Check,
            Option<u16>,
        );
        let small = WebSocketConfig::default()
            .max_frame_size(Some(10))
            .max_message_size(Some(10));
        let cases: Vec<Case> = vec![
            (
                "reserved bits",
                Role::Client,
                None,
                frame(0xC1, b"a", None),
                |e| matches!(e, Error::Protocol(ProtocolError::NonZeroReservedBits)),
                Some(1002),
            ),
            (
                "a reserved data opcode",
                Role::Client,
                None,
                frame(0x83, b"", None),
                |e| matches!(e, Error::Protocol(ProtocolError::InvalidOpcode(3))),
                Some(1002),
            ),
            (
                "a reserved control opcode",
                Role::Client,
                None,
                frame(0x8B, b"", None),
                |e| matches!(e, Error::Protocol(ProtocolError::InvalidOpcode(11))),
                Some(1002),
            ),
            (
                "a masked frame from the server",
                Role::Client,
                None,
                frame(0x81, b"hi", MASK),
                |e| matches!(e, Error::Protocol(ProtocolError::MaskedFrameFromServer)),
                Some(1002),
            ),
            (
                "an unmasked frame from the client",
                Role::Server,
                None,
                frame(0x81, b"hi", None),
                |e| matches!(e, Error::Protocol(ProtocolError::UnmaskedFrameFromClient)),
                Some(1002),
            ),
            (
                "a control frame over 125 bytes",
                Role::Client,
                None,
                frame(0x89, &[0; 126], None),
                |e| matches!(e, Error::Protocol(ProtocolError::ControlFrameTooBig)),
                Some(1002),
            ),
            (
                "a fragmented control frame",
                Role::Server,
                None,
                frame(0x09, b"p", MASK),
                |e| matches!(e, Error::Protocol(ProtocolError::FragmentedControlFrame)),
                Some(1002),
            ),
            (
                "a continuation of nothing",
                Role::Client,
                None,
                frame(0x80, b"a", None),
                |e| matches!(e, Error::Protocol(ProtocolError::UnexpectedContinueFrame)),
                Some(1002),
            ),
            (
                "a new message inside a fragmented one",
                Role::Client,
                None,
                [frame(0x01, b"a", None), frame(0x82, b"b", None)].concat(),
                |e| {
                    matches!(
                        e,
                        Error::Protocol(ProtocolError::ExpectedFragment(Data::Binary))
                    )
                },
                Some(1002),
            ),
            (
                "text that is not UTF-8",
                Role::Client,
                None,
                frame(0x81, &[0xC3, 0x28], None),
                |e| matches!(e, Error::Utf8(_)),
                Some(1007),
            ),
            // Found at the first fragment: the rest never comes.
            (
                "a first fragment that cannot start UTF-8",
                Role::Server,
                None,
                frame(0x01, &[b'a', 0xFF], MASK),
                |e| matches!(e, Error::Utf8(_)),
                Some(1007),
            ),
            (
                // Found at the second fragment, which is not the last.
                "fragments whose joint is not UTF-8",
                Role::Client,
                None,
                [frame(0x01, &[b'a', 0xC3], None), frame(0x00, &[0x28], None)].concat(),
                |e| matches!(e, Error::Utf8(_)),
                Some(1007),
            ),
            (
                "a text message that ends inside a character",
                Role::Client,
                None,
                [frame(0x01, b"a", None), frame(0x80, &[0xC3], None)].concat(),
                |e| matches!(e, Error::Utf8(_)),
                Some(1007),
            ),
            // Only the header is sent: the frame is refused before its payload is read.
            (
                "a frame over the limit",
                Role::Client,
                Some(small),
                frame(0x82, &[0; 11], None)[..2].to_vec(),
                |e| {
                    matches!(
                        e,
                        Error::Capacity(CapacityError::MessageTooLong {
                            size: 11,
                            max_size: 10
                        })
                    )
                },
                Some(1009),
            ),
            (
                "fragments over the message limit",
                Role::Server,
                Some(small),
                [frame(0x02, &[0; 6], MASK), frame(0x80, &[0; 6], MASK)].concat(),
                |e| {
                    matches!(
                        e,
                        Error::Capacity(CapacityError::MessageTooLong {
                            size: 12,
                            max_size: 10
                        })
                    )
                },
                Some(1009),
            ),
            (
                "a close frame of one byte",
                Role::Client,
                None,
                frame(0x88, &[3], None),
                |e| matches!(e, Error::Protocol(ProtocolError::InvalidCloseSequence)),
                Some(1002),
            ),
            (
                "a close reason that is not UTF-8",
                Role::Server,
                None,
                frame(0x88, &[3, 0xE8, 0xC3, 0x28], MASK),
                |e| matches!(e, Error::Utf8(_)),
                Some(1007),
            ),
            (
                "the end of the stream without a close",
                Role::Client,
                None,
                Vec::new(),
                |e| {
                    matches!(
                        e,
                        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
                    )
                },
                None,
            ),
        ];
        for (what, role, config, wire, check, code) in cases {
            let (mut ws, mut raw) = ours_and_raw(role, config).await;
            raw.write_all(&wire).await.unwrap();
            if wire.is_empty() {
                drop(raw);
                let e = next(&mut ws).await.expect("an error").unwrap_err();
                assert!(check(&e), "{what}: {e:?}");
                assert_eq!(violation_code(&e), code, "{what}");
                assert!(next(&mut ws).await.is_none(), "{what}: then the end");
                continue;
            }
            let e = next(&mut ws).await.expect("an error").unwrap_err();
            assert!(check(&e), "{what}: {e:?}");
            assert_eq!(violation_code(&e), code, "{what}: {e:?}");
            assert!(
                next(&mut ws).await.is_none(),
                "{what}: the stream ends after an error"
            );
            // The connection still takes the close that says why.
            let code = code.expect("a close code");
            let frame = CloseFrame {
                code: code.into(),
                reason: "".into(),
            };
            ws.close(Some(frame)).await.unwrap();
            let (first, _, payload) = read_frame(&mut raw).await;
            assert_eq!(
                (first, payload),
                (0x88, code.to_be_bytes().to_vec()),
                "{what}"
            );
        }
    }

    /// A close frame's code must be one an endpoint may send.
    #[tokio::test]
    async fn close_codes_no_endpoint_may_send_are_protocol_errors() {
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let (mut ws, mut raw) = ours_and_raw(Role::Client, None).await;
            raw.write_all(&frame(0x88, &code.to_be_bytes(), None))
                .await
                .unwrap();
            let e = next(&mut ws).await.expect("an error").unwrap_err();
            assert!(
                matches!(e, Error::Protocol(ProtocolError::InvalidCloseSequence)),
                "{code}: {e:?}"
            );
            assert_eq!(violation_code(&e), Some(1002));
        }
        for code in [
            1000u16, 1001, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4000, 4999,
        ] {
            let (mut ws, mut raw) = ours_and_raw(Role::Client, None).await;
            raw.write_all(&frame(0x88, &code.to_be_bytes(), None))
                .await
                .unwrap();
            let Message::Close(Some(f)) = next_msg(&mut ws).await else {
                panic!("{code}: a close with its code")
            };
            assert_eq!(u16::from(f.code), code);
        }
    }

    #[tokio::test]
    async fn unmasked_client_frames_are_accepted_when_configured() {
        let config = WebSocketConfig::default().accept_unmasked_frames(true);
        let (mut ws, mut raw) = ours_and_raw(Role::Server, Some(config)).await;
        raw.write_all(&frame(0x81, b"bare", None)).await.unwrap();
        raw.write_all(&frame(0x81, b"masked", MASK)).await.unwrap();
        assert_eq!(next_msg(&mut ws).await, Message::text("bare"));
        assert_eq!(next_msg(&mut ws).await, Message::text("masked"));
    }

    /// A client masks every frame (with a fresh mask), a server none.
    #[tokio::test]
    async fn clients_mask_and_servers_do_not() {
        for role in [Role::Client, Role::Server] {
            let (mut ws, mut raw) = ours_and_raw(role, None).await;
            let long = vec![b'x'; 70_000];
            ws.send(Message::text("hello")).await.unwrap();
            ws.feed(Message::binary(long.clone())).await.unwrap();
            ws.feed(Message::Ping("p".into())).await.unwrap();
            ws.send(Message::Pong("q".into())).await.unwrap();
            let mut wire = Vec::new();
            for _ in 0..4 {
                let (first, masked, payload) = read_frame(&mut raw).await;
                assert_eq!(masked, role == Role::Client, "{role:?}");
                wire.push((first, payload));
            }
            assert_eq!(
                wire,
                [
                    (0x81, b"hello".to_vec()),
                    (0x82, long),
                    (0x89, b"p".to_vec()),
                    (0x8A, b"q".to_vec())
                ]
            );
            assert_eq!(ws.out.capacity(), 0, "written out, the buffer is gone");
        }
    }

    /// Pongs waiting to be written: a newer one replaces the older, other frames stay.
    #[tokio::test]
    async fn only_the_latest_pong_waits() {
        let (mut ws, _raw) = ours_and_raw(Role::Server, None).await;
        ws.put_pong(b"1");
        ws.put_pong(b"22");
        assert_eq!(ws.out, [0x8A, 2, b'2', b'2']);
        ws.put_frame(0x81, &[], b"t");
        ws.put_pong(b"3");
        assert_eq!(ws.out, [0x8A, 2, b'2', b'2', 0x81, 1, b't', 0x8A, 1, b'3']);
    }

    /// The peer closes first: its close is handed out, our reply (its code) goes out with the
    /// next read, and the stream ends — at once on a server, when the server closes the
    /// connection on a client.
    #[tokio::test]
    async fn the_peer_closes_first() {
        for role in [Role::Client, Role::Server] {
            let (mut ws, mut raw) = ours_and_raw(role, None).await;
            let mask = if role == Role::Server { MASK } else { None };
            let mut payload = 1001u16.to_be_bytes().to_vec();
            payload.extend_from_slice(b"going away");
            raw.write_all(&frame(0x88, &payload, mask)).await.unwrap();
            assert_eq!(
                next_msg(&mut ws).await,
                Message::Close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "going away".into()
                }))
            );
            assert!(matches!(
                ws.send(Message::text("late")).await,
                Err(Error::Protocol(ProtocolError::SendAfterClosing))
            ));
            match role {
                Role::Server => assert!(next(&mut ws).await.is_none(), "the server is done"),
                Role::Client => assert!(waits(&mut ws).await, "until the server closes"),
            }
            let (first, masked, payload) = read_frame(&mut raw).await;
            assert_eq!(
                (first, payload),
                (0x88, vec![0x03, 0xE9]),
                "its code echoed"
            );
            assert_eq!(masked, role == Role::Client);
            drop(raw);
            assert!(next(&mut ws).await.is_none());
            assert!(next(&mut ws).await.is_none(), "and stays ended");
        }
    }

    /// We close first: our close goes out, data the peer sent meanwhile is still handed out,
    /// then its reply, then the end (a server's at once, a client's when the server closes).
    #[tokio::test]
    async fn we_close_first() {
        for role in [Role::Client, Role::Server] {
            let (mut ws, mut raw) = ours_and_raw(role, None).await;
            let mask = if role == Role::Server { MASK } else { None };
            let close = CloseFrame {
                code: CloseCode::from(4000),
                reason: "stalled".into(),
            };
            ws.close(Some(close.clone())).await.unwrap();
            let (first, masked, payload) = read_frame(&mut raw).await;
            assert_eq!(first, 0x88);
            assert_eq!(masked, role == Role::Client);
            assert_eq!(payload, b"\x0f\xa0stalled");
            assert!(matches!(
                ws.send(Message::text("more")).await,
                Err(Error::Protocol(ProtocolError::SendAfterClosing))
            ));
            let mut wire = frame(0x81, b"in flight", mask);
            wire.extend(frame(0x89, b"no pong", mask));
            wire.extend(frame(0x88, &4000u16.to_be_bytes(), mask));
            raw.write_all(&wire).await.unwrap();
            assert_eq!(next_msg(&mut ws).await, Message::text("in flight"));
            assert_eq!(next_msg(&mut ws).await, Message::Ping("no pong".into()));
            let Message::Close(Some(f)) = next_msg(&mut ws).await else {
                panic!("the reply")
            };
            assert_eq!(f.code, CloseCode::from(4000));
            if role == Role::Client {
                assert!(waits(&mut ws).await, "until the server closes");
                drop(raw);
                assert!(next(&mut ws).await.is_none());
            } else {
                assert!(next(&mut ws).await.is_none(), "the server is done");
                // Nothing more was written: no pong after a close.
                let mut rest = Vec::new();
                drop(ws);
                raw.read_to_end(&mut rest).await.unwrap();
                assert!(rest.is_empty(), "{rest:?}");
            }
        }
    }

    /// The sink's own close: an empty close frame.
    #[tokio::test]
    async fn sink_close_sends_an_empty_close() {
        let (mut ws, mut raw) = ours_and_raw(Role::Server, None).await;
        SinkExt::close(&mut ws).await.unwrap();
        assert_eq!(read_frame(&mut raw).await, (0x88, false, Vec::new()));
        raw.write_all(&frame(0x88, &[], MASK)).await.unwrap();
        assert_eq!(next_msg(&mut ws).await, Message::Close(None));
        assert!(next(&mut ws).await.is_none());
    }

    /// 1 MiB each way between our client and our server, and no buffer left behind.
    #[tokio::test]
    async fn a_big_message_through() {
        let (s, c) = tcp_pair().await;
        let mut server = WsStream::from_raw_socket(Transport::Plain(s), Role::Server, None);
        let mut client = WsStream::from_raw_socket(Transport::Plain(c), Role::Client, None);
        let big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        let sent = big.clone();
        let sender = tokio::spawn(async move {
            client.send(Message::binary(sent)).await.unwrap();
            client
        });
        let got = next_msg(&mut server).await;
        assert_eq!(got, Message::binary(big.clone()));
        let mut client = sender.await.unwrap();
        let echo = tokio::spawn(async move {
            server.send(got).await.unwrap();
            server
        });
        assert_eq!(next_msg(&mut client).await, Message::binary(big));
        let server = echo.await.unwrap();
        for ws in [&client, &server] {
            assert!(holds_nothing(ws));
            assert_eq!(ws.out.capacity(), 0);
        }
    }

    async fn theirs_next(t: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> Message {
        let next = tokio::time::timeout(Duration::from_secs(5), t.next()).await;
        next.expect("in time").expect("a message").unwrap()
    }

    /// Against tokio-tungstenite's WebSocket, an implementation of its own: our client with
    /// its server, our server with its client; text, binary, pings both ways, a close.
    #[tokio::test]
    async fn interop_with_tokio_tungstenite() {
        use tokio_tungstenite::WebSocketStream as Theirs;
        for our_role in [Role::Client, Role::Server] {
            let (s, c) = tcp_pair().await;
            let (mut ours, mut theirs) = match our_role {
                Role::Client => (
                    WsStream::from_raw_socket(Transport::Plain(c), Role::Client, None),
                    Theirs::from_raw_socket(s, Role::Server, None).await,
                ),
                Role::Server => (
                    WsStream::from_raw_socket(Transport::Plain(s), Role::Server, None),
                    Theirs::from_raw_socket(c, Role::Client, None).await,
                ),
            };
            ours.send(Message::text("hi")).await.unwrap();
            assert_eq!(theirs_next(&mut theirs).await, Message::text("hi"));
            let bin: Vec<u8> = (0..=255).collect();
            theirs.send(Message::binary(bin.clone())).await.unwrap();
            assert_eq!(next_msg(&mut ours).await, Message::binary(bin));
            // Our ping, their automatic pong.
            ours.send(Message::Ping("ours".into())).await.unwrap();
            assert_eq!(theirs_next(&mut theirs).await, Message::Ping("ours".into()));
            theirs.flush().await.unwrap();
            assert_eq!(next_msg(&mut ours).await, Message::Pong("ours".into()));
            // Their ping, our automatic pong.
            theirs.send(Message::Ping("theirs".into())).await.unwrap();
            assert_eq!(next_msg(&mut ours).await, Message::Ping("theirs".into()));
            ours.flush().await.unwrap();
            assert_eq!(
                theirs_next(&mut theirs).await,
                Message::Pong("theirs".into())
            );
            // We close; they answer.
            let bye = CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            };
            ours.close(Some(bye.clone())).await.unwrap();
            assert_eq!(
                theirs_next(&mut theirs).await,
                Message::Close(Some(bye.clone()))
            );
            match our_role {
                Role::Client => {
                    // Their server replies and is done; the client ends when it closes.
                    assert!(theirs.next().await.is_none());
                    let Message::Close(Some(f)) = next_msg(&mut ours).await else {
                        panic!("their reply")
                    };
                    assert_eq!(f.code, CloseCode::Normal);
                    drop(theirs);
                    assert!(next(&mut ours).await.is_none());
                }
                Role::Server => {
                    // Their client replies (with its next read), our server is done at once.
                    let reader =
                        tokio::spawn(async move { while let Some(Ok(_)) = theirs.next().await {} });
                    let Message::Close(Some(f)) = next_msg(&mut ours).await else {
                        panic!("their reply")
                    };
                    assert_eq!(f.code, CloseCode::Normal);
                    assert!(next(&mut ours).await.is_none());
                    drop(ours);
                    reader.await.unwrap();
                }
            }
        }
    }

    /// Their client closes our server: our reply is what they get back, then the end.
    #[tokio::test]
    async fn interop_their_client_closes() {
        use tokio_tungstenite::WebSocketStream as Theirs;
        let (s, c) = tcp_pair().await;
        let mut ours = WsStream::from_raw_socket(Transport::Plain(s), Role::Server, None);
        let mut theirs = Theirs::from_raw_socket(c, Role::Client, None).await;
        let frame = CloseFrame {
            code: CloseCode::Away,
            reason: "leaving".into(),
        };
        theirs.close(Some(frame.clone())).await.unwrap();
        assert_eq!(next_msg(&mut ours).await, Message::Close(Some(frame)));
        assert!(next(&mut ours).await.is_none(), "replied and done");
        drop(ours);
        let reply = theirs.next().await.unwrap().unwrap();
        assert_eq!(
            reply,
            Message::Close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: "".into()
            }))
        );
        assert!(theirs.next().await.is_none());
    }
}
