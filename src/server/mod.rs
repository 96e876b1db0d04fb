//! The HTTP server: listener, optional TLS, HTTP/1.1 and HTTP/2, one task per connection,
//! and a graceful drain on shutdown. Routing and responses live in `router` and `respond`;
//! no business logic here.

mod admin;
mod body;
mod host;
mod limits;
mod respond;
mod router;
mod status_page;
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ServerConfig};
use crate::metrics::Metrics;
use crate::mirror::Mirror;
use crate::pipeline::Pipeline;
use crate::store::{Store, StoreError};
use crate::upstream::UpstreamError;

pub use tls::TlsError;

/// A TLS handshake that has not finished in this time is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot set up patching: {0}")]
    Pipeline(String),
    #[error("cannot run the sandbox for maintainer scripts: {0}")]
    Sandbox(String),
}

/// What every request handler shares.
pub struct AppState {
    pub mirror: Arc<Mirror>,
    pub pipeline: Pipeline,
    pub admin_token: Option<crate::config::Secret>,
    /// Who holds the admin token, for the log (`patch.admin_token_name`).
    pub admin_token_name: String,
    /// Configured upstreams as (name, URL), for the status page.
    pub upstreams: Vec<(String, String)>,
    /// The Kubernetes webhook's rules (`[admission]`).
    pub admission: crate::admission::Admission,
    pub metrics: Arc<Metrics>,
    /// What the start-up probe found this host allows patching.
    pub host: crate::patch::sandbox::host::HostReport,
    ready: AtomicBool,
}

impl AppState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// A running server. Dropping it without [`Server::shutdown`] leaves it running until the
/// runtime ends.
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    limits: Arc<ConnLimits>,
    max_connections: usize,
}

impl Server {
    /// Opens the store, binds the listener (port 0 picks a free one) and serves in the
    /// background.
    pub async fn start(mut config: Config) -> Result<Server, ServerError> {
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(Store::open(&config.storage, metrics.clone())?);
        let mirror = Arc::new(Mirror::new(&config, store, metrics.clone())?);
        let acceptor = config.server.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener = limits::listen(config.server.listen, config.server.listen_backlog).map_err(
            |source| ServerError::Bind {
                addr: config.server.listen,
                source,
            },
        )?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.server.listen,
            source,
        })?;
        // The address actually bound (port 0 picks one): BuildKit pulls from it.
        config.server.listen = addr;
        let pipeline = Pipeline::new(&config, mirror.clone()).map_err(ServerError::Pipeline)?;
        let host = host::probe(&config, &metrics).await?;
        let state = Arc::new(AppState {
            mirror,
            pipeline,
            admin_token: config.patch.admin_token.clone(),
            admin_token_name: config.patch.admin_token_name.clone(),
            upstreams: config
                .upstream
                .iter()
                .map(|u| (u.name.clone(), u.url.to_string()))
                .collect(),
            admission: crate::admission::Admission::new(&config),
            metrics,
            host,
            ready: AtomicBool::new(true),
        });
        let cancel = CancellationToken::new();
        let tls = acceptor.is_some();
        let max_connections = limits::fit_connections_to_file_limit(config.server.max_connections);
        let limits = Arc::new(ConnLimits {
            idle_timeout: config.server.idle_timeout,
            connections: Arc::new(Semaphore::new(max_connections)),
        });
        let task = tokio::spawn(serve(
            listener,
            acceptor,
            state,
            cancel.clone(),
            config.server.clone(),
            limits.clone(),
        ));
        Ok(Server {
            addr,
            tls,
            cancel,
            task,
            limits,
            max_connections,
        })
    }

    /// Connections being served now (accepted and not closed).
    pub fn open_connections(&self) -> usize {
        self.max_connections
            .saturating_sub(self.limits.connections.available_permits())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr` or `https://addr`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, then stops.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// How each connection is served: timeouts and limits from `[server]`.
struct ConnLimits {
    idle_timeout: Duration,
    connections: Arc<Semaphore>,
}

fn http_builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        // A peer that stops answering pings is gone; its streams' buffers are freed.
        .keep_alive_interval(config.idle_timeout / 2)
        .keep_alive_timeout(config.header_read_timeout);
    builder
}

async fn serve(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
    cancel: CancellationToken,
    config: ServerConfig,
    limits: Arc<ConnLimits>,
) {
    let grace = config.shutdown_grace;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = Arc::new(http_builder(&config));
    let mut backoff = limits::AcceptBackoff::new();
    loop {
        // At the limit, stop accepting: new connections wait in the kernel's backlog
        // instead of taking a file descriptor each.
        let permit = tokio::select! {
            p = limits.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = cancel.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff.succeeded();
                    a
                }
                Err(e) => {
                    let wait = backoff.failed(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => break,
                    }
                    continue;
                }
            },
            _ = cancel.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, std::convert::Infallible>(router::handle(state, req).await) }
        });
        let activity = limits::Activity::new();
        let idle = limits.idle_timeout;
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = limits::Tracked::new(stream, activity.clone());
            let ended = match acceptor {
                None => {
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    limits::until_idle(watcher.watch(conn), &activity, idle).await
                }
                Some(acceptor) => {
                    let tls =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let conn = builder
                        .serve_connection(TokioIo::new(tls), service)
                        .into_owned();
                    limits::until_idle(watcher.watch(conn), &activity, idle).await
                }
            };
            match ended {
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "connection ended with an error")
                }
                Some(Ok(())) => {}
                None => tracing::debug!(%peer, "idle connection closed"),
            }
        });
    }
    state.ready.store(false, Ordering::Relaxed);
    drop(listener);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining in-flight requests"
    );
    let started = std::time::Instant::now();
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
    state
        .mirror
        .shutdown(grace.saturating_sub(started.elapsed()))
        .await;
    state.mirror.store().sync();
}
