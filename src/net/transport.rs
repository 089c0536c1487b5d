//! The socket under a WebSocket, for clients and the embedded target alike: plain TCP, or TLS
//! over TCP (boxed: it is large, and plain connections should not pay for it); for a client
//! whose server accepted permessage-deflate, either of those under the compression layer
//! (boxed too: only compressed connections carry it).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::deflate::{Counts, Deflate};

/// The socket under a WebSocket: plain TCP, or TLS over TCP (boxed: it is large and rarer).
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// permessage-deflate between the socket and the WebSocket (clients only).
    Deflate(Box<Deflate<Transport>>),
}

impl Transport {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => s.get_ref().0,
            Transport::Deflate(d) => d.get_ref().tcp(),
        }
    }

    /// The transport under any compression layer, for bytes written as they are (abusive
    /// frames); flush first, so nothing transformed is left waiting above it.
    pub fn untransformed(&mut self) -> &mut Transport {
        match self {
            Transport::Deflate(d) => d.get_mut().untransformed(),
            t => t,
        }
    }

    /// The payload bytes the compression layer counted, if the connection has one.
    pub fn compression_counts(&self) -> Option<Counts> {
        match self {
            Transport::Deflate(d) => Some(d.counts()),
            _ => None,
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Deflate(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Deflate(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Deflate(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Deflate(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Close with a FIN and nothing after it. Dropping a socket whose receive buffer still holds
/// data makes Linux send RST instead, so: shut down the sending side (FIN), then read and
/// discard what the peer still sends for a moment, then let the socket go.
pub async fn close_with_fin(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(250), async {
        // On the heap, for the moment of the close only: an array here would make every
        // session that may close this way (every server connection) 4 KiB bigger for its
        // whole life.
        let mut sink = vec![0u8; 4096];
        loop {
            if tcp.readable().await.is_err() {
                return;
            }
            match tcp.try_read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// A WebSocket over a [`Transport`], as both ends use it.
pub use super::ws::WsStream;

/// Bytes of messages a connection buffers before it writes them without a flush: both ends
/// write a batch of messages that became due together with one write.
pub const WRITE_BATCH: usize = 16 * 1024;

/// Reads in a row after which buffered messages are written even though more input is ready,
/// so a peer that never pauses cannot hold our answers back.
const MAX_READS_PER_FLUSH: u8 = 16;

/// Messages fed to a WebSocket's write buffer and not yet written out.
#[derive(Debug, Default)]
pub struct WriteBatch {
    pending: bool,
    reads: u8,
}

impl WriteBatch {
    /// Something was fed since the last flush.
    pub fn fed(&mut self) {
        self.pending = true;
    }

    pub fn is_pending(&self) -> bool {
        self.pending
    }
}

/// The next message; write out what was fed since the last flush when there is nothing more
/// to read right now (one write for a whole batch), or after [`MAX_READS_PER_FLUSH`] reads. A
/// flush the socket cannot take yet stays pending (woken when it is writable) while reads go
/// on, so a peer that stopped reading does not stall its connection's timers.
pub fn poll_next_flushing(
    ws: &mut WsStream,
    batch: &mut WriteBatch,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Message, WsError>>> {
    let next = ws.poll_next_unpin(cx);
    if !batch.pending {
        return next;
    }
    batch.reads = batch.reads.saturating_add(1);
    if next.is_ready() && batch.reads < MAX_READS_PER_FLUSH {
        return next;
    }
    match Pin::new(&mut *ws).poll_flush(cx) {
        Poll::Ready(Ok(())) => *batch = WriteBatch::default(),
        Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
        Poll::Pending => {}
    }
    next
}

/// Write out what is buffered if the socket takes it now, without waiting: for a connection
/// about to stop serving (answers already made still go out) or not reading for a while.
/// True if everything went out.
pub fn flush_now(ws: &mut WsStream) -> bool {
    matches!(ws.flush().now_or_never(), Some(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

    /// Two connected WebSockets, `a` with the batching write buffer both ends use.
    async fn ws_pair() -> (WsStream, WsStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let config = WebSocketConfig::default().write_buffer_size(WRITE_BATCH);
        let a = WsStream::from_raw_socket(Transport::Plain(s), Role::Server, Some(config));
        let b = WsStream::from_raw_socket(Transport::Plain(c), Role::Client, None);
        (a, b)
    }

    /// What `b` receives within 200 ms.
    async fn received(b: &mut WsStream) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(200), b.next()).await
        {
            got.push(m.into_text().unwrap().to_string());
        }
        got
    }

    #[tokio::test]
    async fn a_batch_goes_out_when_there_is_nothing_to_read() {
        let (mut a, mut b) = ws_pair().await;
        let mut batch = WriteBatch::default();
        for i in 0..10 {
            a.feed(Message::text(format!("m{i}"))).await.unwrap();
            batch.fed();
        }
        assert!(received(&mut b).await.is_empty(), "fed, not yet written");
        // Nothing to read: the read is pending, and the batch is written out.
        let polled = poll_fn(|cx| Poll::Ready(poll_next_flushing(&mut a, &mut batch, cx))).await;
        assert!(polled.is_pending());
        assert!(!batch.is_pending());
        let want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        assert_eq!(received(&mut b).await, want);
    }

    #[tokio::test]
    async fn a_peer_that_never_pauses_does_not_hold_the_batch_back() {
        let (mut a, mut b) = ws_pair().await;
        for i in 0..40 {
            b.send(Message::text(format!("in{i}"))).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut batch = WriteBatch::default();
        a.feed(Message::text("answer")).await.unwrap();
        batch.fed();
        // Input is always ready; the answer goes out after MAX_READS_PER_FLUSH reads anyway.
        for i in 0..MAX_READS_PER_FLUSH {
            let m = poll_fn(|cx| poll_next_flushing(&mut a, &mut batch, cx)).await;
            assert_eq!(m.unwrap().unwrap().into_text().unwrap(), format!("in{i}"));
            assert_eq!(batch.is_pending(), i + 1 < MAX_READS_PER_FLUSH, "read {i}");
        }
        assert_eq!(received(&mut b).await, vec!["answer".to_string()]);
    }

    /// With unread data in its receive buffer, a plainly dropped socket sends RST; the peer of
    /// `close_with_fin` must see a clean end of stream instead.
    #[tokio::test]
    async fn fin_close_is_a_fin_even_with_unread_data() {
        for fin in [true, false] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let (server, _) = l.accept().await.unwrap();
            client.write_all(b"unread by the server").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if fin {
                close_with_fin(&server).await;
            }
            drop(server);
            let mut buf = [0u8; 64];
            let r = client.read(&mut buf).await;
            if fin {
                assert_eq!(r.unwrap(), 0, "a clean end of stream");
            } else {
                assert_eq!(
                    r.unwrap_err().kind(),
                    std::io::ErrorKind::ConnectionReset,
                    "a plain drop resets"
                );
            }
        }
    }
}
