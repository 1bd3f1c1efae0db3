//! A raw HTTP/1 client for hostile requests: the exact bytes go on the wire (no client library
//! repairs them), and responses are read back one by one, so a test can also see whether the
//! connection stayed open or a hidden request got an answer of its own.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest wait for any byte from authrelay: a safety net so a broken case fails instead of
/// hanging the suite, never a timing assertion.
const READ_DEADLINE: Duration = Duration::from_secs(10);

/// One response as it came off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Status line and header lines, as received (CRLFs included).
    pub head: String,
    /// The body, de-chunked when it came chunked.
    pub body: Vec<u8>,
}

/// A client connection to authrelay.
pub struct RawConnection {
    stream: BufReader<TcpStream>,
}

// === impl RawResponse ===

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    /// Head and body as text, for searching and for failure messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.head, String::from_utf8_lossy(&self.body))
    }

    /// The body as JSON (an echo of the sandbox, or authrelay's own error).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("JSON body expected ({error}): {}", self.text()))
    }
}

// === impl RawConnection ===

impl RawConnection {
    pub async fn open(addr: SocketAddr) -> RawConnection {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to authrelay");
        RawConnection {
            stream: BufReader::new(stream),
        }
    }

    /// Writes `bytes` exactly as given.
    pub async fn send(&mut self, bytes: &[u8]) {
        // A server may answer and close before reading everything: that is not the test's error.
        let _ = self.stream.get_mut().write_all(bytes).await;
        let _ = self.stream.get_mut().flush().await;
    }

    /// The next response, or `None` when the server closed the connection first.
    pub async fn response(&mut self) -> Option<RawResponse> {
        tokio::time::timeout(READ_DEADLINE, self.read_response())
            .await
            .expect("authrelay neither answered nor closed the connection")
    }

    /// True when the server has closed the connection (after any responses already read).
    pub async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(READ_DEADLINE, self.stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    async fn read_response(&mut self) -> Option<RawResponse> {
        let mut head = String::new();
        loop {
            let mut line = Vec::new();
            let read = self.stream.read_until(b'\n', &mut line).await.ok()?;
            if read == 0 {
                assert!(head.is_empty(), "connection closed mid-head: {head}");
                return None;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let end = line == "\r\n" || line == "\n";
            head.push_str(&line);
            if end && head.len() > line.len() {
                break;
            }
        }
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {head}"));
        let mut response = RawResponse {
            status,
            head,
            body: Vec::new(),
        };
        if status < 200 {
            // An interim answer (100 Continue): the real one follows.
            return Box::pin(self.read_response()).await;
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let length = response
            .header("content-length")
            .and_then(|length| length.parse::<usize>().ok());
        let bodiless = status == 204 || status == 304;
        match (bodiless, chunked, length) {
            (true, _, _) => {}
            (false, true, _) => response.body = self.read_chunked().await,
            (false, false, Some(length)) => {
                response.body = vec![0; length];
                self.stream
                    .read_exact(&mut response.body)
                    .await
                    .expect("body shorter than its Content-Length");
            }
            (false, false, None) => {
                let _ = self.stream.read_to_end(&mut response.body).await;
            }
        }
        Some(response)
    }

    async fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.expect("chunk size");
            let size = line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let mut trailer = String::new();
                    self.stream.read_line(&mut trailer).await.expect("trailer");
                    if trailer.trim().is_empty() {
                        return body;
                    }
                }
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.stream
                .read_exact(&mut body[start..])
                .await
                .expect("chunk data");
            let mut crlf = String::new();
            self.stream.read_line(&mut crlf).await.expect("chunk CRLF");
        }
    }
}

/// Opens a connection, sends `request` as is and reads one response.
pub async fn exchange(addr: SocketAddr, request: impl AsRef<[u8]>) -> RawResponse {
    let mut connection = RawConnection::open(addr).await;
    connection.send(request.as_ref()).await;
    connection
        .response()
        .await
        .expect("authrelay closed the connection without answering")
}

/// Opens a connection, sends `request` as is and reads every response until the server closes.
pub async fn exchange_all(addr: SocketAddr, request: impl AsRef<[u8]>) -> Vec<RawResponse> {
    let mut connection = RawConnection::open(addr).await;
    connection.send(request.as_ref()).await;
    let mut responses = Vec::new();
    while let Some(response) = connection.response().await {
        responses.push(response);
    }
    responses
}
