//! A look at each HTTP/1 request head as it arrives, before hyper reads it: hyper resolves a
//! `Content-Length` beside a `Transfer-Encoding` on its own (the latter wins, the former is
//! dropped), but a request that carries both is refused outright, as smuggling attempts do.
//!
//! The sniffer follows the message framing itself (heads, `Content-Length` bodies, chunked
//! bodies) so that every head hyper parses, pipelined or not, gets a verdict, in order. Anything
//! it cannot follow, hyper refuses anyway (and closes the connection); the sniffer then stops.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Verdicts not yet taken by a request; more means the heads are not requests hyper serves
/// (an upgraded tunnel), and the sniffer stops.
const MAX_PENDING: usize = 64;
/// Header fields parsed on the stack; a head with more gets a heap array.
const STACK_FIELDS: usize = 32;
/// A chunk-size line longer than this is not one hyper accepts.
const MAX_CHUNK_LINE: usize = 4096;

/// The verdicts on one connection's request heads, oldest first: true for a head with
/// conflicting or repeated length fields.
#[derive(Debug, Default)]
pub struct HeadWatch {
    verdicts: Mutex<VecDeque<bool>>,
}

/// A connection's stream, read through the sniffer.
pub struct Sniffed<T> {
    inner: T,
    watch: Arc<HeadWatch>,
    framing: Framing,
    /// Heads longer than this, or with more fields, are hyper's to refuse (431).
    max_head: usize,
    max_fields: usize,
}

#[derive(Debug)]
enum Framing {
    /// The bytes so far of a request head, up to its blank line.
    Head(Vec<u8>),
    /// This many body bytes to pass.
    Body(u64),
    /// A chunked body: the chunk-size line read so far.
    ChunkSize(Vec<u8>),
    /// Chunk data, then its CRLF.
    ChunkData(u64),
    /// The trailer section after the last chunk, up to its blank line.
    Trailers(Vec<u8>),
    /// HTTP/2, an upgrade, or bytes hyper will refuse: nothing more to look at.
    Off,
}

/// What a complete head says about what follows it.
struct HeadVerdict {
    anomaly: bool,
    next: Framing,
}

// === impl HeadWatch ===

impl HeadWatch {
    /// True when the oldest head not yet taken had conflicting or repeated length fields.
    pub fn take_anomaly(&self) -> bool {
        let mut verdicts = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        verdicts.pop_front().unwrap_or(false)
    }

    /// Records a head's verdict; false when too many are pending to keep them in step.
    fn push(&self, anomaly: bool) -> bool {
        let mut verdicts = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        if verdicts.len() >= MAX_PENDING {
            verdicts.clear();
            return false;
        }
        verdicts.push_back(anomaly);
        true
    }
}

// === impl Sniffed ===

impl<T> Sniffed<T> {
    /// `max_head` and `max_fields` should be at least hyper's own limits.
    pub fn new(inner: T, max_head: usize, max_fields: usize) -> (Sniffed<T>, Arc<HeadWatch>) {
        let watch = Arc::new(HeadWatch::default());
        let sniffed = Sniffed {
            inner,
            watch: Arc::clone(&watch),
            framing: Framing::Head(Vec::new()),
            max_head,
            max_fields,
        };
        (sniffed, watch)
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (used, next) = self.step(bytes);
            bytes = &bytes[used..];
            if let Some(next) = next {
                self.framing = next;
            }
        }
    }

    /// Consumes a prefix of `bytes`; how much, and the state that follows when it changes.
    fn step(&mut self, bytes: &[u8]) -> (usize, Option<Framing>) {
        match &mut self.framing {
            Framing::Off => (bytes.len(), None),
            Framing::Body(left) => {
                let used = pass(left, bytes);
                (used, (*left == 0).then(|| Framing::Head(Vec::new())))
            }
            Framing::ChunkData(left) => {
                let used = pass(left, bytes);
                (used, (*left == 0).then(|| Framing::ChunkSize(Vec::new())))
            }
            Framing::Head(head) => {
                if head.is_empty() {
                    // Empty lines before a request line, which the parser skips too. Byte by
                    // byte, so that where reads split them does not matter.
                    let blank = bytes
                        .iter()
                        .take_while(|b| matches!(b, b'\r' | b'\n'))
                        .count();
                    if blank > 0 {
                        return (blank, None);
                    }
                }
                if head.is_empty() {
                    // The usual case: a whole head in one read, judged where it lies.
                    if let Some(end) = find_blank_line(bytes, 0) {
                        let next = match end > self.max_head {
                            true => Framing::Off,
                            false => self.judged(&bytes[..end]),
                        };
                        return (end, Some(next));
                    }
                }
                let (used, line_end) = take_until_blank_line(head, bytes);
                if head.starts_with(b"PRI * HTTP/2.0") {
                    return (bytes.len(), Some(Framing::Off));
                }
                let Some(end) = line_end else {
                    let next = (head.len() > self.max_head).then_some(Framing::Off);
                    return (used, next);
                };
                let head = std::mem::take(head);
                let next = match end > self.max_head {
                    true => Framing::Off,
                    false => self.judged(&head[..end]),
                };
                (used, Some(next))
            }
            Framing::ChunkSize(line) => {
                let Some(newline) = bytes.iter().position(|b| *b == b'\n') else {
                    line.extend_from_slice(bytes);
                    let next = (line.len() > MAX_CHUNK_LINE).then_some(Framing::Off);
                    return (bytes.len(), next);
                };
                line.extend_from_slice(&bytes[..newline]);
                let next = match chunk_size(line).filter(|_| line.len() <= MAX_CHUNK_LINE) {
                    // The last chunk: then trailers, up to a blank line.
                    Some(0) => Framing::Trailers(b"\r\n".to_vec()),
                    // Data, then the CRLF that ends it.
                    Some(size) => Framing::ChunkData(size.saturating_add(2)),
                    None => Framing::Off,
                };
                (newline + 1, Some(next))
            }
            Framing::Trailers(trailers) => {
                let (used, line_end) = take_until_blank_line(trailers, bytes);
                let next = match line_end {
                    Some(end) if end <= self.max_head => Some(Framing::Head(Vec::new())),
                    Some(_) => Some(Framing::Off),
                    None => (trailers.len() > self.max_head).then_some(Framing::Off),
                };
                (used, next)
            }
        }
    }
}

impl<T> Sniffed<T> {
    /// Records the verdict on a complete head; what follows it.
    fn judged(&self, head: &[u8]) -> Framing {
        if head.starts_with(b"PRI * HTTP/2.0") {
            return Framing::Off;
        }
        match judge_head(head, self.max_fields) {
            Some(verdict) if self.watch.push(verdict.anomaly) => verdict.next,
            _ => Framing::Off,
        }
    }
}

/// Takes up to `left` bytes of `bytes` as body; how many.
fn pass(left: &mut u64, bytes: &[u8]) -> usize {
    let used = usize::try_from(*left)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    *left -= used as u64;
    used
}

/// Where the first CRLF CRLF at or after `from` ends.
fn find_blank_line(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| from + at + 4)
}

/// Appends bytes to `buffer` up to and including its first CRLF CRLF; how many were taken,
/// and where the blank line ends in `buffer` when it was found. Only the new bytes (and the
/// three before them) are searched: a head sent a byte at a time costs linear time.
fn take_until_blank_line(buffer: &mut Vec<u8>, bytes: &[u8]) -> (usize, Option<usize>) {
    let start = buffer.len().saturating_sub(3);
    buffer.extend_from_slice(bytes);
    match find_blank_line(buffer, start) {
        Some(end) => {
            let used = bytes.len() - (buffer.len() - end);
            buffer.truncate(end);
            (used, Some(end))
        }
        None => (bytes.len(), None),
    }
}

/// `1a;ext=x\r` -> 26. `None` for anything hyper would refuse.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r")?;
    let digits = line.split(|b| *b == b';').next()?.trim_ascii();
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// The verdict on a complete head, and how its body is framed; `None` when it does not parse
/// (hyper refuses it too) or asks to switch protocols.
fn judge_head(head: &[u8], max_fields: usize) -> Option<HeadVerdict> {
    // Most heads fit the stack; a larger array only for those that do not.
    let mut few = [httparse::EMPTY_HEADER; STACK_FIELDS];
    let mut many;
    let mut request = httparse::Request::new(&mut few);
    let parsed = match request.parse(head) {
        Err(httparse::Error::TooManyHeaders) if max_fields > STACK_FIELDS => {
            many = vec![httparse::EMPTY_HEADER; max_fields];
            request = httparse::Request::new(&mut many);
            request.parse(head)
        }
        parsed => parsed,
    };
    if !matches!(parsed, Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let headers: &[httparse::Header<'_>] = request.headers;
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |field| field.name.eq_ignore_ascii_case(name))
    };
    let lengths = named("content-length").count();
    let encodings = named("transfer-encoding").count();
    let anomaly = (lengths > 0 && encodings > 0) || lengths > 1 || encodings > 1;
    if named("upgrade").next().is_some() || request.method == Some("CONNECT") {
        // After a 101 the bytes are a tunnel's; a refused upgrade closes the connection.
        return Some(HeadVerdict {
            anomaly,
            next: Framing::Off,
        });
    }
    // RFC 9112 section 6.3: Transfer-Encoding wins over Content-Length.
    let next = if encodings > 0 {
        Framing::ChunkSize(Vec::new())
    } else if let Some(field) = named("content-length").next() {
        let length = std::str::from_utf8(field.value).ok()?.trim().parse().ok()?;
        match length {
            0 => Framing::Head(Vec::new()),
            length => Framing::Body(length),
        }
    } else {
        Framing::Head(Vec::new())
    };
    Some(HeadVerdict { anomaly, next })
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// Feeds `stream` to a sniffer in pieces of `piece` bytes; its verdicts, and whether it
/// stopped looking. For the fuzz target and the tests.
pub fn sniff_stream(stream: &[u8], piece: usize, max_fields: usize) -> (Vec<bool>, bool) {
    let (mut sniffed, watch) = Sniffed::new((), 64 * 1024, max_fields);
    for piece in stream.chunks(piece.max(1)) {
        sniffed.observe(piece);
    }
    let off = matches!(sniffed.framing, Framing::Off);
    let verdicts = watch
        .verdicts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .copied()
        .collect();
    (verdicts, off)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(stream: &[u8], split: usize) -> (Vec<bool>, bool) {
        sniff_stream(stream, split, 100)
    }

    #[test]
    fn every_pipelined_head_gets_a_verdict_in_order() {
        let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
            POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n\
            5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n\
            POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
            GET /e HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nz";
        for split in [1, 3, 7, stream.len()] {
            let (verdicts, off) = verdicts(stream, split);
            assert_eq!(verdicts, [false, false, true, false, true], "split {split}");
            assert!(!off);
        }
    }

    #[test]
    fn a_body_that_looks_like_a_head_is_not_judged() {
        let body = b"X / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = format!(
            "POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(verdicts(&stream, 5).0, [false, false]);
    }

    #[test]
    fn http2_upgrades_and_garbage_stop_the_sniffer() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(verdicts(preface, 1), (vec![], true));
        let upgrade = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(verdicts(upgrade, 4), (vec![false], true));
        assert!(verdicts(b"\x16\x03\x01garbage\r\n\r\n", 3).1);
        let bad_chunk = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(verdicts(bad_chunk, 2), (vec![false], true));
    }

    #[test]
    fn heads_with_more_fields_than_the_stack_array_are_judged() {
        let fields: String = (0..40).map(|i| format!("X-F{i}: v\r\n")).collect();
        let head = format!(
            "POST / HTTP/1.1\r\n{fields}Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        );
        assert_eq!(verdicts(head.as_bytes(), head.len()), (vec![true], false));
    }

    #[test]
    fn verdicts_do_not_depend_on_where_reads_split() {
        // Found by the `sniff` fuzz target: a stray CRLF was skipped only when it arrived
        // at the start of a read.
        let stream = b"\r\nPRI * HTTP/2.0PR*,\x00\xbc\r\n PR*,\x00I\r\x05!";
        let whole = verdicts(stream, stream.len());
        for split in 1..stream.len() {
            assert_eq!(verdicts(stream, split), whole, "split {split}");
        }
        let pipelined = b"\r\n\nGET /a HTTP/1.1\r\n\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        for split in 1..=pipelined.len() {
            assert_eq!(verdicts(pipelined, split), (vec![false, false], false));
        }
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a\r"), Some(26));
        assert_eq!(chunk_size(b"1A;name=value\r"), Some(26));
        assert_eq!(chunk_size(b"0\r"), Some(0));
        assert_eq!(chunk_size(b"ffffffffffffffffff\r"), None);
        assert_eq!(chunk_size(b"1a"), None);
        assert_eq!(chunk_size(b"\r"), None);
    }
}
