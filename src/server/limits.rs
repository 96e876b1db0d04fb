//! What keeps one client, or many, from exhausting the server: the open-file limit raised
//! at start and the connection limit kept below it, accept errors backed off and logged in
//! summary, and an idle clock on every connection (no byte moved for `idle_timeout`: the
//! connection is dropped, also mid-response to a client that stopped reading).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::Instant;

use crate::config::defaults;

/// Raises the open-file soft limit to the hard limit and returns the connection limit that
/// fits under it (`wanted`, or less, leaving [`defaults::RESERVED_FILES`] for everything
/// else). Both are logged.
pub fn fit_connections_to_file_limit(wanted: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum) {
        if soft < hard {
            let raised = rustix::process::Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    tracing::info!(from = soft, to = hard, "raised the open-file soft limit");
                    limit.current = Some(hard);
                }
                Err(e) => {
                    tracing::warn!(soft, hard, error = %e, "cannot raise the open-file soft limit")
                }
            }
        }
    }
    let files = limit.current.unwrap_or(u64::MAX);
    let fits = usize::try_from(files.saturating_sub(defaults::RESERVED_FILES).max(1))
        .unwrap_or(usize::MAX);
    if wanted > fits {
        tracing::warn!(
            max_connections = wanted,
            open_file_limit = files,
            lowered_to = fits,
            "server.max_connections does not fit the open-file limit; lowered"
        );
        fits
    } else {
        tracing::info!(
            max_connections = wanted,
            open_file_limit = files,
            "connection limit"
        );
        wanted
    }
}

/// Binds `addr` with room for `backlog` connections waiting for accept (the kernel caps it
/// at `net.core.somaxconn`). `TcpListener::bind` asks for 128, which 1,000 clients
/// connecting at once overflow: the kernel falls back to SYN cookies, and an HTTP/2
/// client whose handshake ACK was dropped sends its next segment, which fails the cookie
/// check and is answered with a reset (`TcpExtSyncookiesFailed` counts them).
pub fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accept errors (EMFILE, ENFILE, ENOBUFS) mean the process or the host is out of a
/// resource; retrying at once only spins. Waits grow from 10 ms to 1 s, and the log gets
/// one line when errors start and one summary per 10 s while they last.
pub struct AcceptBackoff {
    failures: u32,
    unlogged: u64,
    last_log: Option<Instant>,
}

const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

impl AcceptBackoff {
    pub fn new() -> AcceptBackoff {
        AcceptBackoff {
            failures: 0,
            unlogged: 0,
            last_log: None,
        }
    }

    /// How long to wait after `error`; logs as described above.
    pub fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let now = Instant::now();
        match self.last_log {
            Some(at) if now.duration_since(at) < ACCEPT_LOG_EVERY => self.unlogged += 1,
            _ => {
                tracing::warn!(error = %error, also_failed = self.unlogged, "accept failed; backing off");
                self.unlogged = 0;
                self.last_log = Some(now);
            }
        }
        let exp = self.failures.min(8) - 1;
        Duration::from_millis((10u64 << exp).min(1000))
    }

    pub fn succeeded(&mut self) {
        if self.failures > 0 && self.unlogged > 0 {
            tracing::warn!(
                also_failed = self.unlogged,
                "accept works again after failures"
            );
        }
        self.failures = 0;
        self.unlogged = 0;
    }
}

/// When a connection last moved a byte, in milliseconds since `epoch`.
#[derive(Clone)]
pub struct Activity {
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// The instant at which the connection counts as idle unless a byte moves before.
    pub fn idle_deadline(&self, idle: Duration) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

/// A socket that records its activity in an [`Activity`].
pub struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Activity) -> Tracked<S> {
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs `conn` until it ends or no byte moved for `idle`; then drops it (closing the
/// socket). Returns the connection's own result, or `None` when it was idle.
pub async fn until_idle<F: std::future::Future>(
    conn: F,
    activity: &Activity,
    idle: Duration,
) -> Option<F::Output> {
    tokio::pin!(conn);
    loop {
        let deadline = activity.idle_deadline(idle);
        tokio::select! {
            out = &mut conn => return Some(out),
            _ = tokio::time::sleep_until(deadline) => {
                if activity.idle_deadline(idle) <= Instant::now() {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time, but short: the idle clock is tokio's, and a few hundred milliseconds
    // bound the whole test.
    #[tokio::test]
    async fn a_silent_connection_is_dropped_after_the_idle_time_and_a_busy_one_is_not() {
        let idle = Duration::from_millis(150);
        let activity = Activity::new();
        let started = Instant::now();
        let never = std::future::pending::<()>();
        assert!(until_idle(never, &activity, idle).await.is_none());
        assert!(started.elapsed() >= idle);

        let activity = Activity::new();
        let busy = {
            let activity = activity.clone();
            async move {
                for _ in 0..8 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    activity.touch();
                }
            }
        };
        assert!(until_idle(busy, &activity, idle).await.is_some());
    }

    #[test]
    fn accept_backoff_grows_to_a_second() {
        let mut b = AcceptBackoff::new();
        let e = std::io::Error::from_raw_os_error(24);
        let waits: Vec<u64> = (0..9).map(|_| b.failed(&e).as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(&e), Duration::from_millis(10));
    }
}
