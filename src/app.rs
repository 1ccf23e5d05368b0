//! One running teal: listeners bound, state built, reload watching, serving until shut down.
//!
//! [`start`] is used by `teal run`, `teal demo` and the in-process integration tests alike. The
//! proxy runs on `proxy.workers` threads, each with a single-threaded runtime, its own listener on
//! the shared port (`SO_REUSEPORT`) and its own upstream pool, so nothing on the request path wakes
//! another thread; the admin API, reloads, health checks and resolution run on the caller's
//! runtime. [`start`] returns a [`Running`] with the bound addresses (tests bind port 0) and the
//! shutdown sequence:
//!
//! 1. [`Running::shutdown`] (on SIGTERM/SIGINT) stops both listeners: new connections are refused.
//! 2. HTTP/1 connections finish their current request and close; HTTP/2 gets GOAWAY.
//! 3. Upgraded tunnels, which hyper no longer tracks, are waited for on their `TaskTracker`.
//! 4. Steps 2 and 3 share one deadline, `grace_period` from now; [`Running::wait`] reports whether
//!    everything finished within it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use futures_util::future::OptionFuture;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::Admin;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::resolve::Resolver;
use crate::rollout::Rollouts;
use crate::state::State;
use crate::{h1, probe, reload, server};

/// A started teal. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    /// Where the proxy accepts clients.
    pub proxy_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// Where HTTPS is served, when `[tls]` is configured.
    pub tls_addr: Option<SocketAddr>,
    /// The live state (for tests and the demo).
    pub state: Arc<State>,
    /// The rollout controller.
    pub rollouts: Arc<Rollouts>,
    stop: CancellationToken,
    done: JoinHandle<bool>,
}

impl Running {
    /// Starts the graceful shutdown sequence (see the module doc).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Waits for shutdown to complete. `true` when all work finished within the grace period.
    pub async fn wait(self) -> bool {
        self.done.await.unwrap_or(false)
    }
}

/// Binds `workers` listening sockets on `addr` with SO_REUSEPORT, so the kernel spreads new
/// connections over them; the first may pick the port (port 0) and the rest share it.
fn bind_proxy(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(workers);
    let mut addr = addr;
    for _ in 0..workers {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        addr = listener.local_addr()?;
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
}

/// One proxy worker: a thread with its own single-threaded runtime, its own listener (sharing
/// the port), its own upstream connection pool and its own tunnels. Nothing on the request path
/// wakes another thread. Returns whether its connections and tunnels finished within the grace
/// period.
fn spawn_worker(
    n: usize,
    (listener, tls_listener): (std::net::TcpListener, Option<std::net::TcpListener>),
    state: Arc<State>,
    resolver: Arc<Resolver>,
    options: server::ServeOptions,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<bool>> {
    // The worker holds its access lines and writes them whenever it runs out of work (see
    // `access::hold_lines`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(crate::access::flush_lines)
        .build()?;
    std::thread::Builder::new()
        .name(format!("teal-worker-{n}"))
        .spawn(move || {
            crate::access::hold_lines();
            let _flush = FlushOnExit;
            // Dropped before `_flush`: lines of tasks the runtime drops are written too.
            let runtime = runtime;
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    return false;
                };
                let tls_listener = match tls_listener.map(TcpListener::from_std).transpose() {
                    Ok(l) => l,
                    Err(_) => return false,
                };
                let tunnels = TaskTracker::new();
                let proxy = Proxy::new(state.clone(), resolver, tunnels.clone());
                let plain = h1::serve(listener, options.clone(), proxy.clone(), stop.cancelled());
                let secure =
                    tls_listener.map(|l| h1::serve_tls(l, options, proxy, stop.cancelled()));
                let (plain, secure) = tokio::join!(plain, OptionFuture::from(secure));
                let deadline = Instant::now() + state.load().config.proxy.grace_period;
                let secure = OptionFuture::from(secure.map(|drain| drain.finish(deadline)));
                let (plain_done, secure_done) = tokio::join!(plain.finish(deadline), secure);
                let connections = plain_done && secure_done.unwrap_or(true);
                // Tunnels run on this thread's runtime: wait for them here, or they would end
                // with it.
                tunnels.close();
                let tunnels_done = tokio::time::timeout_at(deadline, tunnels.wait())
                    .await
                    .is_ok();
                connections && tunnels_done
            })
        })
}

/// Writes the worker's held access lines when its thread ends, also by a panic.
struct FlushOnExit;

impl Drop for FlushOnExit {
    fn drop(&mut self) {
        crate::access::flush_lines();
    }
}

/// Binds the configured listeners and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let workers = config.proxy.workers;
    let (proxy_listeners, admin_listener) = bind(&config).await?;
    let tls_listeners = bind_tls(&config)?;
    let proxy_addr = proxy_listeners[0].local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let tls_addr = match &tls_listeners {
        Some(l) => Some(l[0].local_addr()?),
        None => None,
    };
    let mut metrics = Metrics::new();
    if config.cluster.is_some() {
        metrics.register_cluster();
    }
    let metrics = Arc::new(metrics);
    let cluster = config
        .cluster
        .as_ref()
        .map(|c| crate::cluster::Cluster::new(c, admin_addr, metrics.clone()).map(Arc::new))
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let options = server::ServeOptions::from_config(&config, metrics.clone());
    let stop = CancellationToken::new();
    let tls_files = config.tls.as_ref().map(crate::tls::load_files).transpose();
    let tls_files = tls_files.map_err(|e| anyhow::anyhow!("{e}"))?;
    let acme = config.tls.as_ref().and_then(|t| t.acme.clone());
    let (state, resolver) = start_state(config, metrics, cluster.clone(), &stop)?;
    let cluster_task = match cluster {
        Some(cluster) => Some(crate::cluster::start(state.clone(), cluster, stop.clone()).await),
        None => None,
    };
    if let Some(addr) = tls_addr {
        state.tls().set_port(addr.port());
        state.tls().certs.set_files(tls_files.unwrap_or_default());
        crate::tls::watch::spawn(state.clone(), stop.clone())?;
    }
    if let Some(acme) = acme {
        // On this (the admin) runtime: issuance never runs on a proxy worker.
        crate::acme::start(state.clone(), acme, stop.clone()).inspect_err(|_| stop.cancel())?;
    }
    let mut tls_listeners = tls_listeners.map(Vec::into_iter);
    let listeners = proxy_listeners
        .into_iter()
        .map(|l| (l, tls_listeners.as_mut().and_then(Iterator::next)))
        .collect();
    let worker_threads = spawn_workers(listeners, &state, &resolver, &options, &stop)?;
    let rollouts = Rollouts::spawn(state.clone());
    let history = crate::history::spawn(state.clone(), stop.clone());
    let admin =
        Admin::new(state.clone(), admin_addr, rollouts.clone()).with_feed(history, stop.clone());
    let admin_task = spawn_admin(admin_listener, admin, &options, &stop);
    info!(proxy = %proxy_addr, admin = %admin_addr, tls = ?tls_addr, workers, active = %state.load().active.name, "teal is serving");
    let state_for_drain = state.clone();
    let done = tokio::spawn(async move {
        let drained = drain(state_for_drain, admin_task, worker_threads).await;
        // The cluster session leaves the fleet (revokes its lease) as the stop begins; let it
        // finish before the process ends, or a fast drain would cut it short.
        if let Some(task) = cluster_task {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
        }
        drained
    });
    Ok(Running {
        proxy_addr,
        admin_addr,
        tls_addr,
        state,
        rollouts,
        stop,
        done,
    })
}

/// Binds the proxy's listeners (one per worker) and the admin API's, naming the key of an
/// address that cannot be bound.
async fn bind(config: &Config) -> anyhow::Result<(Vec<std::net::TcpListener>, TcpListener)> {
    let proxy = bind_proxy(config.proxy.listen, config.proxy.workers)
        .with_context(|| format!("cannot listen on {} (proxy.listen)", config.proxy.listen))?;
    let admin = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin.listen)", config.admin.listen))?;
    Ok((proxy, admin))
}

/// The HTTPS listeners (one per worker, like the proxy's), when `[tls]` is configured.
fn bind_tls(config: &Config) -> anyhow::Result<Option<Vec<std::net::TcpListener>>> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let listeners = bind_proxy(tls.listen, config.proxy.workers)
        .with_context(|| format!("cannot listen on {} (tls.listen)", tls.listen))?;
    Ok(Some(listeners))
}

/// The live state, and the tasks that keep it current on the caller's runtime: reloads of the
/// config file, name resolution and the active health checks.
fn start_state(
    config: Config,
    metrics: Arc<Metrics>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    stop: &CancellationToken,
) -> anyhow::Result<(Arc<State>, Arc<Resolver>)> {
    let path = config.path.clone();
    let mut state = State::new(config, metrics);
    if let Some(cluster) = cluster {
        state = state.with_store(cluster);
    }
    let state = Arc::new(state);
    match &path {
        Some(p) => reload::spawn(state.clone(), p, stop.clone())?,
        None => reload::no_file(),
    }
    let resolver = Resolver::new(state.clone());
    resolver.spawn();
    probe::spawn_checks(state.clone(), resolver.clone());
    Ok((state, resolver))
}

/// One worker thread per proxy listener (see [`spawn_worker`]).
fn spawn_workers(
    listeners: Vec<(std::net::TcpListener, Option<std::net::TcpListener>)>,
    state: &Arc<State>,
    resolver: &Arc<Resolver>,
    options: &server::ServeOptions,
    stop: &CancellationToken,
) -> std::io::Result<Vec<std::thread::JoinHandle<bool>>> {
    let mut worker_threads = Vec::with_capacity(listeners.len());
    for (n, listener) in listeners.into_iter().enumerate() {
        worker_threads.push(spawn_worker(
            n,
            listener,
            state.clone(),
            resolver.clone(),
            options.clone(),
            stop.clone(),
        )?);
    }
    Ok(worker_threads)
}

/// Serves the admin API on the caller's runtime, with a connection limit of its own, until `stop`.
fn spawn_admin(
    listener: TcpListener,
    admin: Admin,
    options: &server::ServeOptions,
    stop: &CancellationToken,
) -> JoinHandle<server::Drain> {
    tokio::spawn(server::serve(
        listener,
        options.with_own_limit(),
        move |req, peer| admin.clone().handle(req, peer),
        stop.clone().cancelled_owned(),
    ))
}

/// Once the admin API has stopped accepting (shutdown began), drains it and the workers within
/// one `grace_period`; reports the pools with work still open if that ran out. `true` when
/// everything finished in time.
async fn drain(
    state: Arc<State>,
    admin_task: JoinHandle<server::Drain>,
    worker_threads: Vec<std::thread::JoinHandle<bool>>,
) -> bool {
    let Ok(admin) = admin_task.await else {
        return false;
    };
    let grace = state.load().config.proxy.grace_period;
    info!(?grace, "stopped accepting; draining");
    let deadline = Instant::now() + grace;
    let workers = tokio::task::spawn_blocking(move || {
        // Join every worker (no short-circuit): each finishes its own drain.
        let mut all_done = true;
        for worker in worker_threads {
            all_done &= worker.join().unwrap_or(false);
        }
        all_done
    });
    let (workers_done, _) = tokio::join!(workers, admin.finish(deadline));
    let proxy_done = workers_done.unwrap_or(false);
    if proxy_done {
        info!("drained; exiting");
    } else {
        let snap = state.load();
        for pool in snap.pools.iter() {
            let open = pool.open();
            if !open.is_idle() {
                warn!(pool = %pool.name, in_flight = open.in_flight, tunnels = open.tunnels, "still open when the grace period ran out");
            }
        }
        warn!("grace period ran out; closing what is still open");
    }
    proxy_done
}
