//! A real `redis-server` for tests: a child process on a free loopback port, in its own temporary
//! directory (no persistence), optionally with a password, an ACL user or TLS, that a test can kill,
//! restart on the same port, pause, or read and tamper with through raw RESP commands.
//! `scripts/test` installs the `redis-server` package; without it `RedisServer::start` panics.
//!
//! The raw commands use a small blocking RESP client over `std::net`, so the harness needs no
//! Redis crate and checks the server independently of the one the proxy uses.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tempfile::TempDir;

/// The Debian package's binary (found on `PATH`).
const REDIS_SERVER: &str = "redis-server";
/// How long a started server may take to answer `PING`.
const READY: Duration = Duration::from_secs(10);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(20);
/// How long `restart` retries binding the old port (it may still be in `TIME_WAIT`).
const REBIND: Duration = Duration::from_secs(5);
/// Pause after a TLS port accepts TCP, since readiness there is not checked with a command.
const TLS_SETTLE: Duration = Duration::from_millis(100);
/// Startup attempts in `start_with` (a new port each time: the free one may be taken meanwhile).
const START_ATTEMPTS: usize = 3;
/// Read and write timeout of the raw RESP connections.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of the log a startup failure shows.
const LOG_TAIL_LINES: usize = 30;

/// How the server authenticates clients and whether it speaks TLS; `Default` is plain and open.
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// `requirepass`: the default user's password (`AUTH <password>`).
    pub password: Option<String>,
    /// An ACL user (name, password) with every permission, and the default user switched off, so
    /// only `AUTH <name> <password>` gets in. Takes precedence over `password` in `url` and in
    /// the harness's own commands.
    pub acl_user: Option<(String, String)>,
    /// Serve TLS only (`--port 0 --tls-port <port>`) with a certificate for `127.0.0.1` and
    /// `localhost` signed by a fresh CA (`ca_pem_path`); clients need no certificate.
    pub tls: bool,
}

/// A running `redis-server`; dropping it kills the process, then deletes its directory.
pub struct RedisServer {
    /// `None` after `kill`, until `restart`.
    child: Option<Child>,
    /// The PID of the latest process, kept after it is killed.
    pid: u32,
    port: u16,
    options: RedisOptions,
    /// The CA, server certificate and key when `options.tls`.
    tls: Option<TlsFiles>,
    /// Working directory, log and certificates. Declared last: removed after the process is gone.
    dir: TempDir,
}

/// PEM files written for a TLS server.
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Why a spawned server did not become ready.
enum NotReady {
    /// The port was taken (bind failed); another attempt may succeed.
    PortInUse,
    /// Anything else: the message explains, with the log's tail.
    Failed(String),
}

// === impl RedisServer ===

impl RedisServer {
    /// Starts a plain server without authentication.
    pub fn start() -> RedisServer {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server configured by `options`, waiting until it is ready. Panics, with the tail
    /// of its log, when `redis-server` is missing or does not come up.
    pub fn start_with(options: RedisOptions) -> RedisServer {
        let dir = tempfile::tempdir().expect("redis temp dir");
        let tls = options.tls.then(|| TlsFiles::generate(dir.path()));
        let mut server = RedisServer {
            child: None,
            pid: 0,
            port: 0,
            options,
            tls,
            dir,
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            server.port = super::free_loopback().port();
            match server.spawn_ready() {
                Ok(()) => return server,
                Err(NotReady::PortInUse) => {
                    failures.push(format!("port {} was taken", server.port));
                }
                Err(NotReady::Failed(why)) => panic!("redis-server did not start: {why}"),
            }
        }
        panic!(
            "redis-server did not start in {START_ATTEMPTS} attempts: {}\n{}",
            failures.join("; "),
            server.log_tail()
        );
    }

    /// The URL a Redis client connects with: `redis://` (`rediss://` with TLS), the credentials
    /// when the server requires them, the port, and database 0.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        let credentials = match (&self.options.acl_user, &self.options.password) {
            (Some((user, password)), _) => {
                format!("{}:{}@", percent_encode(user), percent_encode(password))
            }
            (None, Some(password)) => format!(":{}@", percent_encode(password)),
            (None, None) => String::new(),
        };
        format!("{scheme}://{credentials}127.0.0.1:{}/0", self.port)
    }

    /// The port the server listens on (the TLS port with TLS); the same after `restart`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PID of the latest `redis-server` process (still reported after `kill`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The CA certificate (PEM) that signed the server's certificate, for a client to trust; `None`
    /// without TLS.
    pub fn ca_pem_path(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|files| files.ca.clone())
    }

    /// SIGKILLs the server and waits for it, as if Redis died; data is lost (nothing is saved).
    /// Does nothing when it is already killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means it has already exited; `wait` reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same options (killing it first if it
    /// still runs) and waits until it is ready; its data starts empty. Retries binding for up to
    /// 5 s while the port is still taken.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + REBIND;
        loop {
            match self.spawn_ready() {
                Ok(()) => return,
                Err(NotReady::PortInUse) if Instant::now() < deadline => {
                    std::thread::sleep(POLL);
                }
                Err(NotReady::PortInUse) => panic!(
                    "redis-server could not bind port {} again within {REBIND:?}\n{}",
                    self.port,
                    self.log_tail()
                ),
                Err(NotReady::Failed(why)) => panic!("redis-server did not restart: {why}"),
            }
        }
    }

    /// Stops the server from answering clients for `for_ms` milliseconds (`CLIENT PAUSE <ms> ALL`),
    /// as if Redis were slow. Plain servers only (the harness has no TLS client).
    pub fn pause(&self, for_ms: u64) {
        let reply = self
            .exchange(&[b"CLIENT", b"PAUSE", for_ms.to_string().as_bytes(), b"ALL"])
            .unwrap_or_else(|e| panic!("CLIENT PAUSE: {e}"));
        assert!(
            matches!(reply.value, Reply::Simple(ref ok) if ok == b"OK"),
            "CLIENT PAUSE answered {}",
            String::from_utf8_lossy(&reply.raw)
        );
    }

    /// Sends one command (after `AUTH` when the server needs it) and returns its reply exactly as
    /// received, CRLFs included, as text (binary bytes lossily): `+OK\r\n`, `-ERR …\r\n`, `:1\r\n`,
    /// `$5\r\nhello\r\n`, `$-1\r\n`, `*2\r\n$1\r\na\r\n…`. For inspecting and tampering with keys;
    /// `command_bytes` gives the values themselves. Plain servers only.
    pub fn command(&self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        let reply = self
            .exchange(&args)
            .unwrap_or_else(|e| panic!("redis command {args:?}: {e}"));
        String::from_utf8_lossy(&reply.raw).into_owned()
    }

    /// Sends one command (after `AUTH` when the server needs it) and returns its reply's values,
    /// byte for byte: one for a simple string, bulk string or integer (in decimal), each element of
    /// an array (nested arrays flattened), none for a nil. Panics on an error reply. Lets a test
    /// copy a binary value from one key to another. Plain servers only.
    pub fn command_bytes(&self, args: &[&[u8]]) -> Vec<Vec<u8>> {
        let reply = self
            .exchange(args)
            .unwrap_or_else(|e| panic!("redis command: {e}"));
        let mut values = Vec::new();
        reply
            .value
            .flatten_into(&mut values)
            .unwrap_or_else(|error| {
                panic!(
                    "redis answered an error: {}",
                    String::from_utf8_lossy(&error)
                )
            });
        values
    }

    /// Spawns `redis-server` on `self.port` and waits until it is ready; a process that did not
    /// come up is killed and reaped.
    fn spawn_ready(&mut self) -> Result<(), NotReady> {
        let log_start = std::fs::metadata(self.log_path()).map_or(0, |meta| meta.len());
        let child = self.spawn();
        self.pid = child.id();
        self.child = Some(child);
        let ready = self.wait_ready(log_start);
        if ready.is_err() {
            self.kill();
        }
        ready
    }

    fn spawn(&self) -> Child {
        let dir = self.dir.path();
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.output_path())
            .expect("redis output file");
        let mut command = Command::new(REDIS_SERVER);
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(files) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&files.cert)
                .arg("--tls-key-file")
                .arg(&files.key)
                .arg("--tls-ca-cert-file")
                .arg(&files.ca)
                .args(["--tls-auth-clients", "no"]),
        };
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(dir)
            .arg("--logfile")
            .arg(self.log_path());
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        if let Some((user, password)) = &self.options.acl_user {
            command
                .args([
                    "--user",
                    user,
                    "on",
                    &format!(">{password}"),
                    "~*",
                    "&*",
                    "+@all",
                ])
                .args(["--user", "default", "off"]);
        }
        command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("redis output file"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {REDIS_SERVER} ({e}); scripts/test installs the redis-server package")
            })
    }

    /// Polls until the server answers `PING` (plain) or accepts TCP (TLS), it exits, or `READY`
    /// passes. `log_start` is where this process's lines begin in the log.
    fn wait_ready(&mut self, log_start: u64) -> Result<(), NotReady> {
        let deadline = Instant::now() + READY;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().expect("redis-server status") {
                let log = read_from(&self.log_path(), log_start);
                if log.contains("Address already in use") {
                    return Err(NotReady::PortInUse);
                }
                return Err(NotReady::Failed(format!(
                    "it exited ({status}) on port {}\n{}",
                    self.port,
                    self.log_tail()
                )));
            }
            let ready = if self.options.tls {
                TcpStream::connect_timeout(&self.addr(), IO_TIMEOUT).is_ok() && {
                    std::thread::sleep(TLS_SETTLE);
                    self.child
                        .as_mut()
                        .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
                }
            } else {
                self.exchange(&[b"PING"]).is_ok_and(
                    |reply| matches!(reply.value, Reply::Simple(ref pong) if pong == b"PONG"),
                ) && self.answered_by_child()
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::Failed(format!(
                    "no answer on port {} within {READY:?}\n{}",
                    self.port,
                    self.log_tail()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether the server answering on the port is this process (`INFO server` names its PID),
    /// not another one that took the port first while this one fails to bind it.
    fn answered_by_child(&self) -> bool {
        let needle = format!("process_id:{}\r\n", self.pid);
        self.exchange(&[b"INFO", b"server"])
            .is_ok_and(|reply| matches!(reply.value, Reply::Bulk(Some(ref info)) if String::from_utf8_lossy(info).contains(&needle)))
    }

    /// One command on a fresh connection, preceded by `AUTH` when the options ask for it.
    fn exchange(&self, args: &[&[u8]]) -> Result<RawReply, String> {
        assert!(
            !self.options.tls,
            "the redis harness sends raw commands over plain TCP only; this server speaks TLS"
        );
        let stream = TcpStream::connect_timeout(&self.addr(), IO_TIMEOUT)
            .map_err(|e| format!("connect to {}: {e}", self.addr()))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let auth: Option<Vec<&[u8]>> = match (&self.options.acl_user, &self.options.password) {
            (Some((user, password)), _) => {
                Some(vec![b"AUTH", user.as_bytes(), password.as_bytes()])
            }
            (None, Some(password)) => Some(vec![b"AUTH", password.as_bytes()]),
            (None, None) => None,
        };
        if let Some(auth) = auth {
            writer
                .write_all(&encode(&auth))
                .map_err(|e| format!("send AUTH: {e}"))?;
            let reply = RawReply::read(&mut reader)?;
            if !matches!(reply.value, Reply::Simple(ref ok) if ok == b"OK") {
                return Err(format!(
                    "AUTH answered {}",
                    String::from_utf8_lossy(&reply.raw)
                ));
            }
        }
        writer
            .write_all(&encode(args))
            .map_err(|e| format!("send: {e}"))?;
        RawReply::read(&mut reader)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// stdout and stderr of the processes: what redis-server says before its log file is open.
    fn output_path(&self) -> PathBuf {
        self.dir.path().join("redis.out")
    }

    /// The last lines of the log and of the process output, for a failure message.
    fn log_tail(&self) -> String {
        let tail = |path: &Path| {
            let text = read_from(path, 0);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        };
        format!(
            "--- {} (tail) ---\n{}\n--- {} (tail) ---\n{}",
            self.log_path().display(),
            tail(&self.log_path()),
            self.output_path().display(),
            tail(&self.output_path())
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// === impl TlsFiles ===

impl TlsFiles {
    /// A fresh CA and a server certificate for `127.0.0.1` and `localhost`, as PEM files in `dir`.
    fn generate(dir: &Path) -> TlsFiles {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        };
        std::fs::write(&files.ca, ca.pem()).expect("write CA");
        std::fs::write(&files.cert, cert.pem()).expect("write server certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write server key");
        files
    }
}

// === RESP ===

/// A parsed RESP2 reply.
enum Reply {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    /// `None` is the nil bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None` is the nil array (`*-1`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Appends the reply's values to `out`; `Err` with the message of the first error reply.
    fn flatten_into(self, out: &mut Vec<Vec<u8>>) -> Result<(), Vec<u8>> {
        match self {
            Reply::Simple(value) | Reply::Bulk(Some(value)) => out.push(value),
            Reply::Integer(n) => out.push(n.to_string().into_bytes()),
            Reply::Error(message) => return Err(message),
            Reply::Bulk(None) | Reply::Array(None) => {}
            Reply::Array(Some(items)) => {
                for item in items {
                    item.flatten_into(out)?;
                }
            }
        }
        Ok(())
    }
}

/// A reply with the exact bytes it was read from.
struct RawReply {
    value: Reply,
    raw: Vec<u8>,
}

impl RawReply {
    fn read(reader: &mut impl BufRead) -> Result<RawReply, String> {
        let mut raw = Vec::new();
        let value = read_reply(reader, &mut raw)?;
        Ok(RawReply { value, raw })
    }
}

/// Reads one reply, appending every byte consumed to `raw`.
fn read_reply(reader: &mut impl BufRead, raw: &mut Vec<u8>) -> Result<Reply, String> {
    let start = raw.len();
    let read = reader
        .read_until(b'\n', raw)
        .map_err(|e| format!("read reply: {e}"))?;
    if read == 0 {
        return Err("connection closed before a reply".to_string());
    }
    let line = raw[start..]
        .strip_suffix(b"\r\n")
        .ok_or_else(|| "connection closed inside a reply line".to_string())?;
    let (&kind, rest) = line
        .split_first()
        .ok_or_else(|| "empty reply line".to_string())?;
    let rest = rest.to_vec();
    let number = || -> Result<i64, String> {
        std::str::from_utf8(&rest)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| format!("bad number in reply: {}", String::from_utf8_lossy(&rest)))
    };
    match kind {
        b'+' => Ok(Reply::Simple(rest)),
        b'-' => Ok(Reply::Error(rest)),
        b':' => Ok(Reply::Integer(number()?)),
        b'$' => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Reply::Bulk(None));
            };
            let mut body = vec![0; len + 2];
            reader
                .read_exact(&mut body)
                .map_err(|e| format!("read bulk string: {e}"))?;
            raw.extend_from_slice(&body);
            if !body.ends_with(b"\r\n") {
                return Err("bulk string without CRLF".to_string());
            }
            body.truncate(len);
            Ok(Reply::Bulk(Some(body)))
        }
        b'*' => {
            let Ok(count) = usize::try_from(number()?) else {
                return Ok(Reply::Array(None));
            };
            let items = (0..count)
                .map(|_| read_reply(reader, raw))
                .collect::<Result<_, _>>()?;
            Ok(Reply::Array(Some(items)))
        }
        other => Err(format!("unknown RESP type {:?}", char::from(other))),
    }
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `text` for a URL's userinfo: unreserved characters as they are, every other byte as `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// A file's contents from byte `offset` on, lossily as text; empty when it cannot be read.
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset));
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
