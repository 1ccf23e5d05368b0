//! The command line: `teal run | check | switch | canary | mirror | status | rollout | demo | upstream`.
//!
//! Exit codes: 0 on success; 1 when a config is invalid (`check`, `run`), a switch or canary is refused, or
//! the admin API cannot be reached; 2 when `switch`, `status` or `health` were given a config
//! (`-c`, `$TEAL_CONFIG`, or an existing `config/teal.toml`) that cannot be read or parsed. Errors
//! go to stderr, results to stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat};
use crate::shutdown::Signals;
use crate::{app, demo, server};

mod canary;
mod cluster;
mod mirror;
mod rollout;

/// The default config file when neither `-c` nor `$TEAL_CONFIG` says otherwise.
pub const DEFAULT_CONFIG: &str = "config/teal.toml";
/// The admin API address used when neither `--admin` nor a readable config names one.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:9900";

/// teal: a blue/green reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "teal", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        /// Config file.
        #[arg(short, long, env = "TEAL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file like `nginx -t`: prints `ok`, or the error and exits 1. With
    /// `[tls]`, also loads each certificate pair and prints its names and expiry.
    Check {
        /// Config file.
        #[arg(short, long, env = "TEAL_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Make POOL active through the admin API (no POOL: flip between blue and green).
    Switch {
        /// The pool to switch to.
        pool: Option<String>,
        /// After switching, wait this long (like `30s`) for the old pool to finish its requests
        /// and tunnels; exit 0 only if it did.
        #[arg(long, value_parser = humantime::parse_duration)]
        wait_drain: Option<std::time::Duration>,
        /// Switch even if the pool has no healthy server.
        #[arg(long)]
        force: bool,
        /// With `[cluster]`: wait until every instance serves the switch (up to 10 s); exit 0
        /// only if they all do.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Send PERCENT of default-route clients to POOL (`teal canary green 25`); `teal canary off`
    /// ends the split.
    Canary {
        /// The canary pool, or `off`.
        pool: String,
        /// 0-100: the share of clients sent to POOL (0 ends the split).
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: Option<u8>,
        /// How a client keeps its side: a cookie (default), its address, or none (per request).
        #[arg(long, value_parser = ["cookie", "ip", "none"])]
        sticky: Option<String>,
        /// Set it even if the pool has no healthy server.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Copy default-route requests to POOL through the admin API (`off` ends mirroring).
    Mirror {
        /// The pool to copy requests to, or `off`.
        pool: String,
        /// Share of eligible requests copied, 0-100 (default 100).
        #[arg(long)]
        percent: Option<u8>,
        /// Methods copied, comma-separated (default GET,HEAD).
        #[arg(long, value_delimiter = ',')]
        methods: Option<Vec<String>>,
        /// Requests with larger bodies are not copied (like 64KiB; the default).
        #[arg(long)]
        max_body: Option<String>,
        /// Copies under way at once; more are dropped (default 100).
        #[arg(long)]
        max_in_flight: Option<u32>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print the active pool and every server's in-flight count.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Roll POOL out through canary steps judged on its error rate and p99, rolling back by
    /// itself (`teal rollout green --steps 5,25,50,100 --interval 60s --max-error-rate 1%`);
    /// `teal rollout status`, `teal rollout abort`.
    Rollout(rollout::RolloutArgs),
    /// Check that teal answers: GET the admin API's /healthz (or --url); exit 0 on 2xx, else 1.
    /// Made for container HEALTHCHECKs, where there is no curl.
    Health {
        /// URL to GET instead of the admin API's /healthz.
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Run an embedded demo: proxy on 127.0.0.1:8080, admin on 127.0.0.1:9900, four upstreams.
    Demo,
    /// Run one demo upstream, a stand-in for an app server.
    Upstream {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// The pool name it answers on `GET /`.
        #[arg(long)]
        pool: String,
        /// Its server name (default: the pool name).
        #[arg(long)]
        name: Option<String>,
        /// The version it reports.
        #[arg(long = "version", default_value = "0.0.1")]
        app_version: String,
    },
}

/// How to reach the admin API.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Admin API URL (default: the config's admin.listen, else http://127.0.0.1:9900).
    #[arg(long)]
    admin: Option<String>,
    /// Bearer token (default: $TEAL_ADMIN_TOKEN, else the config's token).
    #[arg(long, env = "TEAL_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Config file to take the admin address and token from (default: $TEAL_CONFIG, else
    /// config/teal.toml if it exists). A named file that cannot be used is an error (exit 2).
    #[arg(short, long, env = "TEAL_CONFIG")]
    config: Option<PathBuf>,
}

/// A config file the admin commands were told to use (or found at the default path) that cannot
/// be read or parsed: exit 2, the reason on stderr.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UnusableConfig(crate::config::ConfigError);

/// Exit code for an admin command whose config cannot be used.
const EXIT_BAD_CONFIG: u8 = 2;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Run { config } => run_proxy(&config),
        Command::Switch {
            pool,
            wait_drain,
            force,
            wait,
            admin,
        } => block_on(switch(pool, wait_drain, force, wait, admin)),
        Command::Canary {
            pool,
            percent,
            sticky,
            force,
            admin,
        } => block_on(canary::canary(pool, percent, sticky, force, admin)),
        Command::Mirror {
            pool,
            percent,
            methods,
            max_body,
            max_in_flight,
            admin,
        } => {
            let m = mirror::MirrorArgs {
                pool,
                percent,
                methods,
                max_body,
                max_in_flight,
            };
            block_on(mirror::mirror(m, admin))
        }
        Command::Status { admin } => block_on(status(admin)),
        Command::Rollout(args) => block_on(rollout::run(args)),
        Command::Health { url, admin } => block_on(health(url, admin)),
        Command::Demo => run_demo(),
        Command::Upstream {
            listen,
            pool,
            name,
            app_version,
        } => run_upstream(listen, pool, name, app_version),
    };
    match result {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<UnusableConfig>() {
            Some(bad) => {
                eprintln!("{bad}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            if let Some(tls) = &config.tls {
                let report = crate::tls::check(tls);
                for line in &report.lines {
                    println!("{line}");
                }
                if !report.problems.is_empty() {
                    for problem in &report.problems {
                        eprintln!("{problem}");
                    }
                    return ExitCode::FAILURE;
                }
            }
            // The password and TLS files of [cluster] are read as `teal run` reads them.
            if let Some(cluster) = &config.cluster {
                if let Err(e) = crate::cluster::etcd::Etcd::new(cluster) {
                    eprintln!("{}: {e}", config.display_path());
                    return ExitCode::FAILURE;
                }
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the tracing subscriber: filter from `TEAL_LOG`, else `RUST_LOG`, else `info`.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("TEAL_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("warning: bad log filter {filter:?} ({e}); using info");
        EnvFilter::new("info")
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() {
        crate::access::init_line(format, ansi);
    }
}

fn run_proxy(path: &Path) -> anyhow::Result<ExitCode> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let format = config.log.format;
    init_tracing(format);
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let mut signals = Signals::install()?;
            let running = app::start(config).await?;
            signals.shutdown().await;
            running.shutdown();
            running.wait().await;
            Ok(ExitCode::SUCCESS)
        })
    });
    match result {
        // From here on the config's log format is known: a JSON log stays JSON to its end.
        Err(e) if format == LogFormat::Json => {
            tracing::error!("{e:#}");
            Ok(ExitCode::FAILURE)
        }
        other => other,
    }
}

fn run_demo() -> anyhow::Result<ExitCode> {
    init_tracing(LogFormat::Text);
    runtime()?.block_on(async {
        let mut signals = Signals::install()?;
        let stop = CancellationToken::new();
        let mut addrs = Vec::new();
        for (pool, n) in [("blue", 1), ("blue", 2), ("green", 1), ("green", 2)] {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(listener.local_addr()?);
            spawn_upstream(listener, pool, &format!("server{n}-{pool}"), "0.0.1", &stop);
        }
        let running = app::start(demo::config(&addrs[..2], &addrs[2..])).await?;
        eprintln!("{}", demo::banner(running.proxy_addr, running.admin_addr));
        signals.shutdown().await;
        running.shutdown();
        running.wait().await;
        stop.cancel();
        Ok(ExitCode::SUCCESS)
    })
}

fn spawn_upstream(
    listener: TcpListener,
    pool: &str,
    name: &str,
    version: &str,
    stop: &CancellationToken,
) {
    let id = Arc::new(demo::Identity {
        pool: pool.into(),
        name: name.into(),
        version: version.into(),
    });
    let stop = stop.clone();
    tokio::spawn(async move {
        let drain = server::serve(
            listener,
            server::Timeouts {
                header: std::time::Duration::from_secs(10),
                idle: std::time::Duration::from_secs(60),
                send: std::time::Duration::from_secs(60),
            },
            move |req, peer| demo::handle(id.clone(), req, peer),
            stop.cancelled_owned(),
        )
        .await;
        drain
            .finish(tokio::time::Instant::now() + std::time::Duration::from_secs(5))
            .await;
    });
}

fn run_upstream(
    listen: SocketAddr,
    pool: String,
    name: Option<String>,
    version: String,
) -> anyhow::Result<ExitCode> {
    init_tracing(LogFormat::Text);
    runtime()?.block_on(async {
        let mut signals = Signals::install()?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let name = name.unwrap_or_else(|| pool.clone());
        tracing::info!(addr = %listener.local_addr()?, %pool, %name, %version, "demo upstream serving");
        let stop = CancellationToken::new();
        spawn_upstream(listener, &pool, &name, &version, &stop);
        signals.shutdown().await;
        stop.cancel();
        Ok(ExitCode::SUCCESS)
    })
}

/// The config the admin commands take the address and token from: the named one (`-c` or
/// `$TEAL_CONFIG`), which must load; else `config/teal.toml` when it exists, which must load too
/// unless `--admin` makes it unnecessary; else none.
fn admin_config(args: &AdminArgs) -> Result<Option<Config>, UnusableConfig> {
    if let Some(path) = &args.config {
        return Config::load(path).map(Some).map_err(UnusableConfig);
    }
    let default = Path::new(DEFAULT_CONFIG);
    if !default.exists() {
        return Ok(None);
    }
    match Config::load(default) {
        Ok(c) => Ok(Some(c)),
        Err(e) if args.admin.is_some() => {
            eprintln!("warning: {e}; ignored, as --admin names the admin API");
            Ok(None)
        }
        Err(e) => Err(UnusableConfig(e)),
    }
}

/// The admin base URL and token from flags, environment and config, in that order.
fn admin_target(args: &AdminArgs) -> Result<(String, Option<String>), UnusableConfig> {
    let config = admin_config(args)?;
    let url = args.admin.clone().unwrap_or_else(|| match &config {
        Some(c) => {
            let mut addr = c.admin.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}")
        }
        None => DEFAULT_ADMIN.into(),
    });
    let url = if url.contains("://") {
        url
    } else {
        format!("http://{url}")
    };
    let token = args.token.clone().or_else(|| {
        config
            .and_then(|c| c.admin.token)
            .map(|t| t.expose().to_string())
    });
    Ok((url.trim_end_matches('/').to_string(), token))
}

/// Calls the admin API; returns the status and the JSON body.
async fn call(
    args: &AdminArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let (base, token) = admin_target(args)?;
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body_bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body_bytes)))
        .with_context(|| format!("bad admin URL {base:?}"))?;
    let res = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .with_context(|| format!("the admin API at {base} did not answer in 30s"))?
        .with_context(|| format!("cannot reach the admin API at {base}"))?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(
        |_| serde_json::json!({ "error": String::from_utf8_lossy(&bytes).trim().to_string() }),
    );
    Ok((status, value))
}

async fn switch(
    pool: Option<String>,
    wait_drain: Option<std::time::Duration>,
    force: bool,
    wait: bool,
    args: AdminArgs,
) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::json!({ "force": force });
    if wait {
        body["wait"] = "applied".into();
    }
    if let Some(p) = pool {
        body["to"] = p.into();
    }
    let (status, v) = call(&args, Method::POST, "/switch", Some(body)).await?;
    if status != StatusCode::OK {
        let reason = v["error"].as_str().unwrap_or("no reason given");
        let mut why = String::new();
        for (server, h) in v["servers"].as_object().into_iter().flatten() {
            why.push_str(&format!(
                "\n  {server}: {}{}",
                h["state"].as_str().unwrap_or("?"),
                h["last_error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        if let Some(by) = v["instance"].as_str() {
            why.push_str(&format!("\n  (judged by instance {by})"));
        }
        if let Some(active) = v["current"]["active"].as_str() {
            why.push_str(&format!(
                "\n  now: {active} active at revision {}",
                v["current"]["revision"]
            ));
        }
        bail!("switch refused ({}): {reason}{why}", status.as_u16());
    }
    let applied = v["applied"]
        .is_object()
        .then(|| cluster::print_applied(&v["applied"]));
    if v["changed"] == false {
        println!(
            "{} is already active; nothing to do",
            v["active"].as_str().unwrap_or("?")
        );
        return Ok(exit(applied != Some(false)));
    }
    let persisted = match v["persisted"].as_str() {
        Some("cluster") => "committed to the cluster's store",
        Some("config") => "saved in the config file",
        Some("state_file") => "saved in the state file beside the config",
        Some("no_file") => "not saved (no config file)",
        _ => "NOT saved: it holds until teal restarts (see teal's log)",
    };
    println!(
        "switched: {} -> {} (generation {}, {persisted})",
        v["previous"].as_str().unwrap_or("?"),
        v["active"].as_str().unwrap_or("?"),
        v["generation"]
    );
    let (Some(wait), Some(previous)) = (wait_drain, v["previous"].as_str()) else {
        return Ok(exit(applied != Some(false)));
    };
    wait_for_drain(&args, previous, wait).await
}

/// Polls `GET /drain` in one-second steps, printing what is still open whenever it changes.
async fn wait_for_drain(
    args: &AdminArgs,
    pool: &str,
    wait: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let start = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let left = wait.saturating_sub(start.elapsed());
        let step = left.min(std::time::Duration::from_secs(1));
        let path = format!("/drain?pool={pool}&timeout={}ms", step.as_millis());
        let (status, v) = call(args, Method::GET, &path, None).await?;
        if status != StatusCode::OK {
            let reason = v["error"].as_str().unwrap_or("no reason given");
            bail!("drain check refused ({}): {reason}", status.as_u16());
        }
        let open = format!(
            "{} in flight, {} tunnels",
            v["open"]["in_flight"], v["open"]["tunnels"]
        );
        if v["drained"] == true {
            println!("{pool} drained after {:.1}s", start.elapsed().as_secs_f64());
            return Ok(ExitCode::SUCCESS);
        }
        if left.is_zero() {
            println!(
                "{pool} did not drain within {}: {open} still open",
                humantime::format_duration(wait)
            );
            return Ok(ExitCode::FAILURE);
        }
        if open != last {
            println!(
                "waiting for {pool} to drain: {open} ({:.0}s)",
                start.elapsed().as_secs_f64()
            );
            last = open;
        }
    }
}

async fn health(url: Option<String>, args: AdminArgs) -> anyhow::Result<ExitCode> {
    // --url needs no config: the compose file's upstream containers run `teal health --url`
    // with the image's $TEAL_CONFIG set but no config mounted.
    let url = match url {
        Some(url) => url,
        None => format!("{}/healthz", admin_target(&args)?.0),
    };
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(&url)
        .body(Full::new(Bytes::new()))
        .with_context(|| format!("bad URL {url:?}"))?;
    let res = tokio::time::timeout(std::time::Duration::from_secs(5), client.request(req))
        .await
        .with_context(|| format!("{url} did not answer in 5s"))?
        .with_context(|| format!("cannot reach {url}"))?;
    println!("{url}: {}", res.status());
    Ok(if res.status().is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn status(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let (status, v) = call(&args, Method::GET, "/status", None).await?;
    if status != StatusCode::OK {
        let reason = v["error"].as_str().unwrap_or("no reason given");
        bail!("status refused ({}): {reason}", status.as_u16());
    }
    println!(
        "active: {} (generation {})",
        v["active"].as_str().unwrap_or("?"),
        v["generation"]
    );
    if let Some(path) = v["config"].as_str() {
        println!("config: {path}");
    }
    if v["canary"].is_object() {
        println!("{}", canary::describe(&v["canary"]));
    }
    if v["rollout"]["state"].as_str().is_some_and(|s| s != "idle") {
        println!("{}", rollout::summary(&v["rollout"]));
    }
    if let Some(pools) = v["pools"].as_object() {
        for (name, pool) in pools {
            let mark = if pool["active"].as_bool() == Some(true) {
                "  (active)"
            } else {
                ""
            };
            let draining = match pool["draining_since"].as_str() {
                Some(since) => format!("  draining since {since}"),
                None => String::new(),
            };
            println!(
                "\npool {name}{mark}  in-flight {}  tunnels {}{draining}",
                pool["in_flight"], pool["tunnels"]
            );
            for s in pool["servers"].as_array().into_iter().flatten() {
                let resolved: Vec<&str> = s["resolved"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str())
                    .collect();
                println!(
                    "  {:<32} {:<10} in-flight {}  tunnels {}  since {}  -> {}",
                    s["address"].as_str().unwrap_or("?"),
                    s["health"].as_str().unwrap_or("?"),
                    s["in_flight"],
                    s["tunnels"],
                    s["since"].as_str().unwrap_or("?"),
                    if resolved.is_empty() {
                        "-".to_string()
                    } else {
                        resolved.join(", ")
                    },
                );
                if let Some(e) = s["last_error"].as_str() {
                    println!("  {:<32} last error: {e}", "");
                }
            }
        }
    }
    mirror::print_status(&v["mirror"]);
    cluster::print_status(&v["cluster"]);
    Ok(ExitCode::SUCCESS)
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
