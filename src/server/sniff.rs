//! A look at each HTTP/1 request head as it arrives, before hyper reads it: hyper resolves a
//! `Content-Length` beside a `Transfer-Encoding` on its own (the latter wins, the former is
//! dropped), but a request that carries both is refused outright, as smuggling attempts do.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Heads longer than this are left to hyper's own limit (431).
const MAX_HEAD: usize = 64 * 1024;
/// More header fields than this are left to hyper's own limit (431).
const MAX_FIELDS: usize = 256;

/// What the sniffer saw of the last request head on one connection.
#[derive(Debug, Default)]
pub struct HeadWatch {
    anomaly: AtomicBool,
}

/// A connection's stream, read through the sniffer.
pub struct Sniffed<T> {
    inner: T,
    watch: Arc<HeadWatch>,
    state: State,
}

enum State {
    /// The next bytes read start a request head (connection start, or after a response).
    Fresh,
    /// Collecting a head until its blank line.
    InHead(Vec<u8>),
    /// Reading a body, or the head was judged: nothing to look at until the next write.
    Passing,
    /// HTTP/2: no heads in text.
    Off,
}

// === impl HeadWatch ===

impl HeadWatch {
    /// True (once) when the last head had conflicting or repeated length fields.
    pub fn take_anomaly(&self) -> bool {
        self.anomaly.swap(false, Ordering::AcqRel)
    }
}

// === impl Sniffed ===

impl<T> Sniffed<T> {
    pub fn new(inner: T) -> (Sniffed<T>, Arc<HeadWatch>) {
        let watch = Arc::new(HeadWatch::default());
        let sniffed = Sniffed {
            inner,
            watch: Arc::clone(&watch),
            state: State::Fresh,
        };
        (sniffed, watch)
    }

    fn observe(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let head = match &mut self.state {
            State::Passing | State::Off => return,
            State::Fresh => {
                if bytes.starts_with(b"PRI * HTTP/2.0") {
                    self.state = State::Off;
                    return;
                }
                self.state = State::InHead(Vec::new());
                let State::InHead(head) = &mut self.state else {
                    return;
                };
                head
            }
            State::InHead(head) => head,
        };
        head.extend_from_slice(bytes);
        if let Some(end) = find_blank_line(head) {
            if has_length_anomaly(&head[..end]) {
                self.watch.anomaly.store(true, Ordering::Release);
            }
            self.state = State::Passing;
        } else if head.len() > MAX_HEAD {
            self.state = State::Passing;
        }
    }
}

fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Both `Content-Length` and `Transfer-Encoding`, or either one twice.
fn has_length_anomaly(head: &[u8]) -> bool {
    let mut fields = vec![httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut fields);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return false; // hyper answers what it cannot parse
    }
    let count = |name: &str| {
        request
            .headers
            .iter()
            .filter(|field| field.name.eq_ignore_ascii_case(name))
            .count()
    };
    let (lengths, encodings) = (count("content-length"), count("transfer-encoding"));
    (lengths > 0 && encodings > 0) || lengths > 1 || encodings > 1
}

impl<T: AsyncRead + Unpin> AsyncRead for Sniffed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let this = &mut *self;
            this.observe(&buf.filled()[before..]);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Sniffed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) && matches!(self.state, State::Passing) {
            // A response is going out: what is read next starts another request.
            self.state = State::Fresh;
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) && matches!(self.state, State::Passing) {
            self.state = State::Fresh;
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_anomalies() {
        let head = |fields: &str| format!("POST / HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
        assert!(!has_length_anomaly(
            head("Content-Length: 5\r\n").as_bytes()
        ));
        assert!(!has_length_anomaly(
            head("Transfer-Encoding: chunked\r\n").as_bytes()
        ));
        for fields in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "content-length: 0\r\nTRANSFER-ENCODING: identity\r\n",
        ] {
            assert!(has_length_anomaly(head(fields).as_bytes()), "{fields}");
        }
    }
}
