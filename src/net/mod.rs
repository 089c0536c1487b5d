//! Sockets shared by the clients, the embedded server and the proxy: the transport under a
//! WebSocket (plain TCP or TLS), listeners that can refuse connections without losing their
//! port, and services that run on a runtime of their own.

pub mod background;
pub mod listener;
pub mod transport;
