//! One caller or admin connection: the TLS handshake (bounded by the header-read timeout), the
//! HTTP/1.1 or HTTP/2 session with the listener's limits, and its end: closed when idle, asked
//! to finish on shutdown, dropped when the shutdown grace runs out.

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::upstream::{BoxError, ProxyBody};

/// hyper refuses a smaller read buffer; it also bounds a request head.
const MIN_BUF: usize = 8192;
/// Room for the request line and framing beyond the configured header and target sizes, so
/// that the proxy's own checks (with their clear codes) see everything up to the limits.
const HEAD_SLACK: usize = 1024;
/// After closing an idle connection gracefully, how long the client has to go (an HTTP/2
/// client that never answers the GOAWAY's PING would otherwise hold it forever).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// hyper's own HTTP/1 header field limit (`DEFAULT_MAX_HEADERS` in hyper's h1 parser).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;
/// Concurrent HTTP/2 streams per connection.
const MAX_STREAMS: u32 = 256;

/// Signals every connection of the process watches.
#[derive(Clone, Default)]
pub struct Lifecycle {
    /// Finish the request in progress, then close.
    pub drain: CancellationToken,
    /// The grace period is over: close now.
    pub abort: CancellationToken,
}

/// Whether a connection has a request in flight, and since when it has not.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` of the last request's start or end.
    last_change_ms: AtomicU64,
    /// A first request has begun.
    begun: AtomicBool,
}

/// Held while one request is being answered.
pub struct InFlight(Arc<Activity>);

// === impl Activity ===

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(0),
            begun: AtomicBool::new(false),
        })
    }

    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.begun.store(true, Ordering::Release);
        self.touch();
        InFlight(Arc::clone(self))
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_change_ms.store(ms, Ordering::Release);
    }

    /// When the connection counts as idle if nothing starts before then; `None` while busy.
    /// Before its first request, a connection has no longer than the header-read timeout
    /// (counted from accept, the TLS handshake included): hyper's HTTP/1 header timer only
    /// starts once a first byte has told HTTP/1 from HTTP/2, and HTTP/2 has none, so a
    /// connection that sends nothing, or half an HTTP/2 preface, would otherwise stay open
    /// for the whole idle timeout.
    fn idle_deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_change_ms.load(Ordering::Acquire));
        let idle = self.started + last + limits.idle_timeout;
        if self.begun.load(Ordering::Acquire) {
            Some(idle)
        } else {
            Some(idle.min(self.started + limits.header_read_timeout))
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// hyper's read buffer, which bounds a request head: the configured header and target sizes
/// and some room for the request line.
pub fn head_buffer(limits: &Limits) -> usize {
    (limits.max_header_bytes + limits.max_target_bytes + HEAD_SLACK).max(MIN_BUF)
}

/// Serves HTTP on `io` until the client leaves, the connection idles out or the process
/// shuts down.
pub async fn serve<I, S>(
    io: I,
    service: S,
    limits: &Limits,
    activity: &Activity,
    lifecycle: &Lifecycle,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Incoming>, Response = http::Response<ProxyBody>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(head_buffer(limits));
    // hyper parses up to 100 fields in a stack array; a configured cap, even of 100, makes it
    // build a fresh array per request.
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_STREAMS);
    // Upgrades are refused unless a route opts in (proxy/gate.rs); this only makes them possible.
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = pin!(connection);
    let mut draining = false;
    let mut hard_stop: Option<Instant> = None;
    loop {
        let idle_deadline = activity.idle_deadline(limits);
        // While busy, look again after a full idle period.
        let wake = idle_deadline.unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        tokio::select! {
            () = sleep_until_some(hard_stop) => {
                tracing::debug!("closing an idle connection that did not go");
                return;
            }
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = lifecycle.drain.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = lifecycle.abort.cancelled() => return,
            () = tokio::time::sleep_until(wake), if !draining => {
                if activity.idle_deadline(limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("closing an idle connection");
                    draining = true;
                    hard_stop = Some(Instant::now() + IDLE_CLOSE_GRACE);
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `body`, keeping `guard` until it has been sent whole or dropped: a long download is a
/// request in flight, not an idle connection.
pub fn hold_until_end(body: ProxyBody, guard: InFlight) -> ProxyBody {
    HeldBody {
        inner: body,
        _guard: guard,
    }
    .boxed()
}

struct HeldBody {
    inner: ProxyBody,
    _guard: InFlight,
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
