//! The socket under a WebSocket, for clients and the embedded target alike: plain TCP, or TLS
//! over TCP (boxed: it is large, and plain connections should not pay for it).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// The socket under a WebSocket: plain TCP, or TLS over TCP (boxed: it is large and rarer).
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => s.get_ref().0,
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
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Close with a FIN and nothing after it. Dropping a socket whose receive buffer still holds
/// data makes Linux send RST instead, so: shut down the sending side (FIN), then read and
/// discard what the peer still sends for a moment, then let the socket go.
pub async fn close_with_fin(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(250), async {
        let mut sink = [0u8; 4096];
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
