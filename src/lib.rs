//! teal: a blue/green reverse proxy.
//!
//! Two (or more) pools of upstream servers sit behind one atomically swapped snapshot. `/` goes
//! to the active pool; `/<pool>/...` previews a pool with the prefix stripped, for addresses on
//! `preview.allow`. The active pool flips by `POST /switch` on the admin API, by editing the config
//! file, or by SIGHUP after an edit, without dropping a connection.
//!
//! # Layout
//! One package, flat role modules; `main.rs` only parses the command line.
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | the commands: run, check, switch, status, demo, upstream |
//! | [`config`] | TOML parsing and validation with file:line:col errors |
//! | [`state`] | the `ArcSwap<Snapshot>`, the one writer path, persistence of `active` |
//! | [`reload`] | config directory watch and SIGHUP |
//! | [`watched`] | the directories and names a file watch follows (config, certificates) |
//! | [`resolve`] | server name resolution that follows recreated containers |
//! | [`route`] | the pure routing decision |
//! | [`policy`] | which requests teal refuses, one rule for both paths |
//! | [`pool`] | servers, round robin, in-flight guards |
//! | [`health`] | what is known of each server's health (no I/O) |
//! | [`probe`] | the active health check tasks |
//! | [`forward`] | the pool walk both paths forward with: order, connect, retry, 502/504, passive health |
//! | [`framing`] | response body framing: the relay's state machine without I/O, the chunked scanner |
//! | [`h1`] | the HTTP/1.1 path for plain requests (most traffic); hands anything else to [`proxy`] |
//! | [`proxy`] | the general request handler (hyper) and its error boundary |
//! | [`error`] | why teal answered itself: the error, its status and body |
//! | [`headers`] | hop-by-hop and forwarding header rules |
//! | [`preview`] | a preview route's redirects and cookie paths kept under its prefix |
//! | [`request_body`] | the client's body on its way upstream (hyper path): limits, timeouts, progress |
//! | [`body`] | the response body sent to the client (hyper path) |
//! | [`access`] | the per-request record: access log, metrics |
//! | [`tally`] | per-pool request, error and latency counters the rollout judges by |
//! | [`upgrade`] | WebSocket and other upgrade tunnels |
//! | [`upstream`] | each worker's keep-alive connections to upstream servers |
//! | [`clock`] | a process-wide millisecond clock for deadlines kept in atomics |
//! | [`server`] | the accept loop, hyper's server side, graceful drain |
//! | [`app`] | wiring one running instance, shutdown order |
//! | [`acme`] | certificates ordered and renewed over ACME (HTTP-01), kept in `state_dir` |
//! | [`rollout`] | the automated rollout: canary steps, verdicts, rollback |
//! | [`admin`] | the admin API |
//! | [`metrics`] | Prometheus families |
//! | [`demo`] | demo upstreams and the embedded demo config |
//! | [`shutdown`] | SIGTERM/SIGINT |
//! | [`testing`] | builders for tests, benches and fuzz targets (not part of the API) |
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::print_stdout, clippy::dbg_macro))]

pub mod access;
pub mod acme;
pub mod admin;
pub mod app;
pub mod body;
pub mod canary;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod events;
pub mod forward;
pub mod framing;
pub mod h1;
pub mod headers;
pub mod health;
pub mod history;
pub mod metrics;
pub mod mirror;
pub mod plain;
pub mod policy;
pub mod pool;
pub mod preview;
pub mod probe;
pub mod proxy;
pub mod reload;
pub mod request_body;
pub mod resolve;
pub mod rollout;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod socket;
pub mod state;
pub(crate) mod sync;
pub mod tally;
pub mod testing;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod watched;
