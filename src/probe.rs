//! Active health checks: a task per checked server probes `GET path` every `interval` and feeds
//! the result into the server's [`Health`](crate::health::Health); the set of tasks follows the
//! live snapshot (a reload that changes which servers or settings are checked restarts them).
//! Each probe connects anew within its pool's connect timeout, read from the live snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use tokio::task::JoinHandle;

use crate::config::HealthConfig;
use crate::pool::Upstream;
use crate::resolve::Resolver;
use crate::state::State;
use crate::upstream::ProbeClient;

/// A running probe loop: its settings, its server, its task.
type Check = (HealthConfig, Arc<Upstream>, JoinHandle<()>);

/// Runs the active health checks of the current snapshot, restarting them when a reload changes
/// which servers or which settings are checked.
pub fn spawn_checks(state: Arc<State>, resolver: Arc<Resolver>) {
    tokio::spawn(async move {
        let mut changes = state.subscribe();
        let mut running: HashMap<(String, String), Check> = HashMap::new();
        loop {
            let snap = state.load();
            let mut wanted = HashMap::new();
            for pool in &snap.pools {
                let Some(cfg) = &snap.config.pools[&*pool.name].health else {
                    continue;
                };
                for server in &pool.servers {
                    wanted.insert(
                        (pool.name.to_string(), server.authority.to_string()),
                        (cfg.clone(), server.clone()),
                    );
                }
            }
            running.retain(|key, (cfg, server, task)| {
                let keep = wanted
                    .get(key)
                    .is_some_and(|(c, s)| c == cfg && Arc::ptr_eq(s, server));
                if !keep {
                    task.abort();
                }
                keep
            });
            for (key, (cfg, server)) in wanted {
                if running.contains_key(&key) {
                    continue;
                }
                let task = tokio::spawn(probe_loop(
                    cfg.clone(),
                    key.0.clone(),
                    server.clone(),
                    state.clone(),
                    resolver.clone(),
                ));
                running.insert(key, (cfg, server, task));
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Probes `server` of `pool` every `cfg.interval`, on a client of its own.
async fn probe_loop(
    cfg: HealthConfig,
    pool: String,
    server: Arc<Upstream>,
    state: Arc<State>,
    resolver: Arc<Resolver>,
) {
    let client = ProbeClient::new(connect_timeout(&state, &pool));
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let connect_timeout = connect_timeout(&state, &pool);
        let started = std::time::Instant::now();
        let result = probe(&cfg, &server, &resolver, &client, connect_timeout).await;
        let took = started.elapsed().as_millis();
        let result = result.map(|status| format!("{status} in {took} ms"));
        if let Some(change) = server.health.probe(result, &cfg) {
            state.events().record(crate::events::Kind::Health, change);
        }
    }
}

/// `pool`'s connect timeout under the live snapshot.
fn connect_timeout(state: &State, pool: &str) -> std::time::Duration {
    let snap = state.load();
    snap.pool(pool)
        .map_or(snap.config.proxy.connect_timeout, |p| p.timeouts.connect)
}

/// One `GET` of the health path at the server's next address; success is a status in
/// `expect_status` within `timeout` (which it returns).
async fn probe(
    cfg: &HealthConfig,
    server: &Upstream,
    resolver: &Resolver,
    client: &ProbeClient,
    connect_timeout: std::time::Duration,
) -> Result<u16, String> {
    let targets = resolver.addresses_of(server).await?;
    let target = server
        .rotate(&targets)
        .next()
        .ok_or("no address to probe")?;
    let uri = Uri::builder()
        .scheme("http")
        .authority(target.authority.clone())
        .path_and_query(cfg.path.as_str())
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = Request::new(crate::request_body::RequestBody::empty());
    *req.uri_mut() = uri;
    let host = HeaderValue::from_str(server.authority.as_str()).map_err(|e| e.to_string())?;
    req.headers_mut().insert(header::HOST, host);
    req.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static("teal-health-check"),
    );
    let answer = tokio::time::timeout(cfg.timeout, async {
        let res = client
            .request(req, connect_timeout)
            .await
            .map_err(|e| crate::error::error_chain(&e))?;
        let status = res.status();
        // Read the (small) body so the probe is complete; its content does not matter.
        let _ = res.into_body().collect().await;
        Ok::<_, String>(status)
    })
    .await;
    match answer {
        Err(_) => Err(format!("health check timed out after {:?}", cfg.timeout)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(status)) if cfg.expect_status.contains(&status.as_u16()) => Ok(status.as_u16()),
        Ok(Ok(status)) => Err(format!("health check answered {status}")),
    }
}
