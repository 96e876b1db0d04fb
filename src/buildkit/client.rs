//! A hand-written client of BuildKit's `moby.buildkit.v1.Control` service: what the daemon
//! can do (`Info`, `ListWorkers`) and `Solve` with its `Status` stream turned into simple
//! events. No session: docker-image sources, execs, cache mounts and the `moby` exporter
//! need none.

mod status;

use std::time::Duration;

use http::uri::PathAndQuery;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::proto::control::{
    InfoRequest, InfoResponse, ListWorkersRequest, ListWorkersResponse, SolveRequest,
    SolveResponse, StatusRequest, StatusResponse,
};
use super::transport::{self, BuildkitAddress, TlsFiles};
use super::BuildkitError;

pub use status::StatusEvent;
use status::StatusMapper;

const SOLVE: &str = "/moby.buildkit.v1.Control/Solve";
const STATUS: &str = "/moby.buildkit.v1.Control/Status";
const LIST_WORKERS: &str = "/moby.buildkit.v1.Control/ListWorkers";
const INFO: &str = "/moby.buildkit.v1.Control/Info";

/// Definitions with inline files and big status batches exceed gRPC's 4 MiB default.
const MAX_MESSAGE: usize = 64 << 20;
/// After Solve answers, the Status stream still delivers the last vertex and log updates;
/// wait this long at most for it to end.
const STATUS_DRAIN: Duration = Duration::from_secs(3);

/// What the connected daemon supports, for choosing how to build the patch layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// BuildKit's version from `Info` (BuildKit 0.11 and later); `None` from older daemons,
    /// dockerd 20.10's built-in BuildKit among them.
    pub version: Option<String>,
    /// The workers' platforms as `os/arch[/variant]`, without duplicates.
    pub platforms: Vec<String>,
    /// MergeOp and DiffOp (BuildKit 0.10 and later); only claimed when the version is known.
    pub diff_merge: bool,
}

/// A connection to one BuildKit daemon. Cheap to share: calls multiplex on one HTTP/2
/// connection.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    address: BuildkitAddress,
    capabilities: Capabilities,
}

impl Client {
    /// Connects and asks the daemon what it supports, so a wrong address or a daemon
    /// without BuildKit fails here rather than in the first build.
    pub async fn connect(
        address: &BuildkitAddress,
        tls: &TlsFiles,
        timeout: Duration,
    ) -> Result<Client, BuildkitError> {
        let channel = transport::connect(address, tls, timeout).await?;
        let mut client = Client {
            channel,
            address: address.clone(),
            capabilities: Capabilities::default(),
        };
        let capabilities = tokio::time::timeout(timeout, client.capabilities())
            .await
            .map_err(|_| BuildkitError::Connect {
                address: address.to_string(),
                cause: "connected, but Info/ListWorkers got no answer in time".into(),
            })??;
        tracing::debug!(%address, ?capabilities, "connected to BuildKit");
        client.capabilities = capabilities;
        Ok(client)
    }

    pub fn address(&self) -> &BuildkitAddress {
        &self.address
    }

    /// What [`Client::capabilities`] answered when the client connected.
    pub fn detected_capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Asks the daemon now: `Info` for the version, `ListWorkers` for the platforms.
    pub async fn capabilities(&self) -> Result<Capabilities, BuildkitError> {
        let version = match self.unary::<_, InfoResponse>(INFO, InfoRequest {}).await {
            Ok(info) => info
                .buildkit_version
                .map(|v| v.version)
                .filter(|v| !v.is_empty()),
            Err(status) if status.code() == tonic::Code::Unimplemented => None,
            Err(status) => return Err(BuildkitError::grpc("Control/Info", &status)),
        };
        let workers: ListWorkersResponse = self
            .unary(LIST_WORKERS, ListWorkersRequest::default())
            .await
            .map_err(|s| BuildkitError::grpc("Control/ListWorkers", &s))?;
        let mut platforms = Vec::new();
        for platform in workers.record.iter().flat_map(|w| &w.platforms) {
            let mut name = format!("{}/{}", platform.os, platform.architecture);
            if !platform.variant.is_empty() {
                name.push('/');
                name.push_str(&platform.variant);
            }
            if !platforms.contains(&name) {
                platforms.push(name);
            }
        }
        // Workers report the version too since BuildKit 0.11, like Info.
        let version = version.or_else(|| {
            workers
                .record
                .iter()
                .filter_map(|w| w.buildkit_version.as_ref())
                .map(|v| v.version.clone())
                .find(|v| !v.is_empty())
        });
        let diff_merge = version.as_deref().is_some_and(has_diff_merge);
        Ok(Capabilities {
            version,
            platforms,
            diff_merge,
        })
    }

    /// Runs one build. `on_status` gets the build's progress in order while it runs; a
    /// failed build's error carries the failing step and its last output lines.
    pub async fn solve(
        &self,
        mut request: SolveRequest,
        mut on_status: impl FnMut(StatusEvent) + Send,
    ) -> Result<SolveResponse, BuildkitError> {
        if request.r#ref.is_empty() {
            request.r#ref = random_ref();
        }
        let (tx, mut rx) = mpsc::channel(1024);
        let status_task = AbortOnDrop(tokio::spawn(stream_status(
            self.clone(),
            request.r#ref.clone(),
            tx,
        )));
        let solve = self.unary::<_, SolveResponse>(SOLVE, request);
        tokio::pin!(solve);
        let mut mapper = StatusMapper::default();
        let mut status_open = true;
        let result = loop {
            tokio::select! {
                // Status first: events already received belong before the result.
                biased;
                update = rx.recv(), if status_open => match update {
                    Some(update) => mapper.push(update, &mut on_status),
                    None => status_open = false,
                },
                result = &mut solve => break result,
            }
        };
        let deadline = tokio::time::Instant::now() + STATUS_DRAIN;
        while status_open {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(update)) => mapper.push(update, &mut on_status),
                Ok(None) | Err(_) => status_open = false,
            }
        }
        drop(status_task);
        mapper.finish(&mut on_status);
        result.map_err(|status| match status.code() {
            tonic::Code::Unavailable
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::ResourceExhausted => BuildkitError::grpc("Control/Solve", &status),
            _ => {
                let (vertex, log_tail) = mapper.failure();
                BuildkitError::SolveFailed {
                    message: status.message().to_string(),
                    vertex,
                    log_tail,
                }
            }
        })
    }

    fn grpc(&self) -> tonic::client::Grpc<Channel> {
        tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    async fn unary<Req, Resp>(
        &self,
        path: &'static str,
        request: Req,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc();
        grpc.ready().await.map_err(not_ready)?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let response = grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await?;
        Ok(response.into_inner())
    }
}

/// Forwards `Control/Status{ref}` to `tx` until the stream ends. Its failures only cost
/// progress output, never the build, so they are logged and end the stream.
async fn stream_status(client: Client, r#ref: String, tx: mpsc::Sender<StatusResponse>) {
    let mut grpc = client.grpc();
    if let Err(e) = grpc.ready().await {
        tracing::debug!(error = %transport::error_chain(&e), "BuildKit status stream not ready");
        return;
    }
    let codec = tonic_prost::ProstCodec::<StatusRequest, StatusResponse>::default();
    let response = grpc
        .server_streaming(
            tonic::Request::new(StatusRequest { r#ref }),
            PathAndQuery::from_static(STATUS),
            codec,
        )
        .await;
    let mut stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::debug!(code = ?status.code(), message = status.message(), "BuildKit status stream refused");
            return;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(update)) => {
                if tx.send(update).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "BuildKit status stream ended");
                return;
            }
        }
    }
}

fn not_ready(e: tonic::transport::Error) -> tonic::Status {
    tonic::Status::unavailable(format!(
        "BuildKit connection not ready: {}",
        transport::error_chain(&e)
    ))
}

/// Stops the status task when `solve` returns or its future is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A build reference unique enough to tell concurrent builds apart in the daemon.
fn random_ref() -> String {
    format!("patchpull-{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// True for `v0.10` and later: MergeOp and DiffOp arrived in BuildKit 0.10. Versions that
/// do not parse (development builds) count as too old.
fn has_diff_merge(version: &str) -> bool {
    let v = version.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let Some((major, rest)) = v.split_once('.') else {
        return false;
    };
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    match (major.parse::<u64>(), minor.parse::<u64>()) {
        (Ok(major), Ok(minor)) => (major, minor) >= (0, 10),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
