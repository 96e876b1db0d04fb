//! The HTTP server: listener, optional TLS, HTTP/1.1 and HTTP/2, one task per connection,
//! and a graceful drain on shutdown. Routing and responses live in `router` and `respond`;
//! no business logic here.

mod admin;
mod body;
mod respond;
mod router;
mod status_page;
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
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
}

impl Server {
    /// Opens the store, binds the listener (port 0 picks a free one) and serves in the
    /// background.
    pub async fn start(mut config: Config) -> Result<Server, ServerError> {
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(Store::open(&config.storage, metrics.clone())?);
        let mirror = Arc::new(Mirror::new(&config, store, metrics.clone())?);
        let acceptor = config.server.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.server.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.server.listen,
            source,
        })?;
        // The address actually bound (port 0 picks one): BuildKit pulls from it.
        config.server.listen = addr;
        let pipeline = Pipeline::new(&config, mirror.clone()).map_err(ServerError::Pipeline)?;
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
            ready: AtomicBool::new(true),
        });
        let cancel = CancellationToken::new();
        let tls = acceptor.is_some();
        let task = tokio::spawn(serve(
            listener,
            acceptor,
            state,
            cancel.clone(),
            config.server.shutdown_grace,
        ));
        Ok(Server {
            addr,
            tls,
            cancel,
            task,
        })
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

async fn serve(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
    cancel: CancellationToken,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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
        match &acceptor {
            None => {
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
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
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
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
