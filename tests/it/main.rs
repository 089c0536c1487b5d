//! The integration tests, as one test binary (one link instead of eight). Each module runs the
//! real `wsstorm` binary or the library against real sockets; `common` is what they share.

mod apps;
mod backoff;
mod cli;
mod common;
mod conversation;
mod dashboard;
mod deflate;
mod deploy;
mod effects;
mod fleet;
mod map;
mod metrics_http;
mod model;
mod peers;
mod proxy;
mod report;
mod scenarios;
mod schema;
mod server_data;
mod server_faults;
mod shard;
mod socketio_embedded;
mod swarm;
mod thresholds;
mod tls;
mod until;
