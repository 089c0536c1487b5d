//! What a simulated client says to a real application: message [`template`]s, the
//! [`matcher`]s and fields that read what the server sends, JSON Web Tokens ([`jwt`]) and data
//! [`feeder`]s. Each is compiled once from the text a user wrote (with the offset of any
//! problem, which the plan turns into a line and column) and then run by every client of a
//! group without parsing again.
//!
//! A leaf: it imports no stage, so the plan can compile with it and the clients can run it.

pub mod feeder;
pub mod jwt;
pub mod matcher;
pub mod template;
