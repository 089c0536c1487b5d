//! Listening sockets for the embedded target and the proxy, and the trick that lets them
//! refuse connections for a while without losing their port.
//!
//! Closing a listener makes the kernel answer new SYNs with RST — exactly what clients of a
//! server that is down see. But a closed port is free: the next outgoing connection on the
//! machine may get it as its ephemeral port, and the listener cannot come back. A socket that
//! is bound but not listening ([`Reservation`]) keeps the port out of the ephemeral pool while
//! connections are still refused; the listener is re-created beside it before it is released
//! (two sockets may share a port with SO_REUSEADDR as long as neither listens).

use std::net::SocketAddr;

use tokio::net::TcpListener;

fn socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // Both the listener and its reservation set SO_REUSEADDR so they can share the port
    // while neither listens, and so a restarted listener ignores TIME_WAIT leftovers.
    socket.set_reuse_address(true)?;
    if reuse_port {
        // Several target processes listen on one port; the kernel spreads connections.
        socket.set_reuse_port(true)?;
    }
    // Accepted connections inherit it from the listener: one setsockopt per listener
    // instead of one per connection.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Bind and listen with the given backlog (the kernel caps it at net.core.somaxconn).
pub fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    listen_shared(addr, backlog, false)
}

/// Like [`listen`]; with `reuse_port`, other processes may listen on the same port.
pub fn listen_shared(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
) -> std::io::Result<TcpListener> {
    let socket = socket(addr, reuse_port)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

/// A port held without listening: connections to it are refused, and no other socket on the
/// machine gets it as an ephemeral port.
pub struct Reservation {
    _socket: socket2::Socket,
}

impl Reservation {
    /// Replace `listener` by a reservation of its address (refusing starts now).
    pub fn take(listener: TcpListener, reuse_port: bool) -> std::io::Result<Reservation> {
        let addr = listener.local_addr()?;
        let socket = socket(addr, reuse_port)?;
        // A listening socket cannot share its port, so the port is free for the few
        // microseconds between these two lines.
        drop(listener);
        socket.bind(&addr.into())?;
        Ok(Reservation { _socket: socket })
    }

    /// Listen again on the reserved address (refusing ends).
    pub fn release(
        self,
        addr: SocketAddr,
        backlog: u32,
        reuse_port: bool,
    ) -> std::io::Result<TcpListener> {
        let listener = listen_shared(addr, backlog, reuse_port)?;
        drop(self);
        Ok(listener)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reserved_port_refuses_and_comes_back() {
        let l = listen("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = l.local_addr().unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
        let r = Reservation::take(l, false).unwrap();
        let e = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        let l = r.release(addr, 16, false).unwrap();
        let (c, a) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        assert!(c.is_ok() && a.is_ok());
        // The target and the proxy set no TCP_NODELAY of their own on what they accept.
        assert!(
            a.unwrap().0.nodelay().unwrap(),
            "inherited from the listener"
        );
    }
}
