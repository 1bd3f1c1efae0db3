//! The `redis-server` harness itself, against a real server: commands with and without
//! authentication, kill and restart on the same port, pause, binary values, and TLS.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test"
)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use support::redis::{RedisOptions, RedisServer};

/// Sends `PING` on a fresh plain connection without authenticating; returns the reply line.
fn unauthenticated_ping(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

#[test]
fn plain_server_answers_commands() {
    let redis = RedisServer::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/0", redis.port()));
    assert!(redis.pid() > 0);
    assert_eq!(redis.ca_pem_path(), None);
    assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
    assert_eq!(unauthenticated_ping(redis.port()), "+PONG\r\n");
    assert_eq!(redis.command(&["SET", "greeting", "hello"]), "+OK\r\n");
    assert_eq!(redis.command(&["GET", "greeting"]), "$5\r\nhello\r\n");
    assert_eq!(redis.command(&["GET", "missing"]), "$-1\r\n");
    assert_eq!(redis.command(&["DEL", "greeting"]), ":1\r\n");
    assert!(
        redis.command(&["NO-SUCH-COMMAND"]).starts_with("-ERR"),
        "errors come back as text"
    );
    assert_eq!(redis.command(&["RPUSH", "list", "a", "b"]), ":2\r\n");
    assert_eq!(
        redis.command(&["LRANGE", "list", "0", "-1"]),
        "*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
    // No persistence: nothing to write, and the data directory stays empty of dumps.
    assert_eq!(
        redis.command(&["CONFIG", "GET", "save"]),
        "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    );
}

#[test]
fn password_server_needs_auth_and_the_harness_sends_it() {
    let redis = RedisServer::start_with(RedisOptions {
        password: Some("p@ss:w/rd".to_string()),
        ..RedisOptions::default()
    });
    assert_eq!(
        redis.url(),
        format!("redis://:p%40ss%3Aw%2Frd@127.0.0.1:{}/0", redis.port())
    );
    let refused = unauthenticated_ping(redis.port());
    assert!(refused.starts_with("-NOAUTH"), "{refused:?}");
    assert_eq!(redis.command(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(redis.command_bytes(&[b"GET", b"k"]), vec![b"v".to_vec()]);
}

#[test]
fn acl_user_gets_in_and_the_default_user_is_off() {
    let redis = RedisServer::start_with(RedisOptions {
        acl_user: Some(("relay".to_string(), "relay-secret".to_string())),
        ..RedisOptions::default()
    });
    assert_eq!(
        redis.url(),
        format!("redis://relay:relay-secret@127.0.0.1:{}/0", redis.port())
    );
    assert_eq!(redis.command(&["ACL", "WHOAMI"]), "$5\r\nrelay\r\n");
    assert_eq!(redis.command(&["SET", "k", "v"]), "+OK\r\n");
    let refused = unauthenticated_ping(redis.port());
    assert!(refused.starts_with("-NOAUTH"), "{refused:?}");
    let users = redis.command_bytes(&[b"ACL", b"LIST"]);
    let default = users
        .iter()
        .find(|user| user.starts_with(b"user default "))
        .expect("default user listed");
    assert!(
        String::from_utf8_lossy(default).contains(" off "),
        "{}",
        String::from_utf8_lossy(default)
    );
}

#[test]
fn kill_refuses_connections_and_restart_brings_the_port_back_empty() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    let first_pid = redis.pid();
    assert_eq!(redis.command(&["SET", "k", "v"]), "+OK\r\n");

    redis.kill();
    let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    redis.kill(); // idempotent
    assert_eq!(redis.pid(), first_pid, "the PID stays known after kill");

    redis.restart();
    assert_eq!(redis.port(), port);
    assert_ne!(redis.pid(), first_pid);
    assert_eq!(redis.command(&["GET", "k"]), "$-1\r\n");
    assert_eq!(redis.command(&["DBSIZE"]), ":0\r\n");

    // A restart of a live server kills it first.
    assert_eq!(redis.command(&["SET", "k", "v"]), "+OK\r\n");
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.command(&["DBSIZE"]), ":0\r\n");
}

#[test]
fn restart_keeps_authentication() {
    let mut redis = RedisServer::start_with(RedisOptions {
        password: Some("pw".to_string()),
        ..RedisOptions::default()
    });
    redis.kill();
    redis.restart();
    assert!(unauthenticated_ping(redis.port()).starts_with("-NOAUTH"));
    assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
}

#[test]
fn command_bytes_round_trips_binary_values() {
    let redis = RedisServer::start();
    let value: &[u8] = &[0x00, 0xff, b'\r', b'\n', 0x80, b'$', b'a', 0x00];
    assert_eq!(
        redis.command_bytes(&[b"HSET", b"h1", b"field", value]),
        vec![b"1".to_vec()]
    );
    let read = redis.command_bytes(&[b"HGET", b"h1", b"field"]);
    assert_eq!(read, vec![value.to_vec()]);

    // Copy it, as a test tampering with stored entries would.
    redis.command_bytes(&[b"HSET", b"h2", b"field", &read[0]]);
    assert_eq!(
        redis.command_bytes(&[b"HGETALL", b"h2"]),
        vec![b"field".to_vec(), value.to_vec()]
    );
    // A nil is no value at all; an empty string is one empty value.
    assert!(
        redis
            .command_bytes(&[b"HGET", b"h2", b"missing"])
            .is_empty()
    );
    redis.command_bytes(&[b"SET", b"empty", b""]);
    assert_eq!(
        redis.command_bytes(&[b"GET", b"empty"]),
        vec![Vec::<u8>::new()]
    );
    // The text form shows the length header and the bytes, lossily.
    assert!(
        redis
            .command(&["HGET", "h1", "field"])
            .starts_with("$8\r\n\0")
    );
    let mut keys = redis.command_bytes(&[b"KEYS", b"*"]);
    keys.sort();
    assert_eq!(
        keys,
        vec![b"empty".to_vec(), b"h1".to_vec(), b"h2".to_vec()]
    );
}

#[test]
#[should_panic(expected = "redis answered an error")]
fn command_bytes_panics_on_an_error_reply() {
    let redis = RedisServer::start();
    redis.command_bytes(&[b"NO-SUCH-COMMAND"]);
}

#[test]
fn pause_holds_commands() {
    let redis = RedisServer::start();
    redis.pause(400);
    let started = Instant::now();
    assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "PING answered after {waited:?}"
    );
}

/// PING over TLS, trusting only the server's CA and checking its certificate for `127.0.0.1`.
fn tls_ping(redis: &RedisServer) -> String {
    let ca = CertificateDer::from_pem_file(redis.ca_pem_path().unwrap()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    tls.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(tls).read_line(&mut line).unwrap();
    line
}

#[test]
fn tls_server_accepts_connections_with_its_ca() {
    let mut redis = RedisServer::start_with(RedisOptions {
        tls: true,
        ..RedisOptions::default()
    });
    assert_eq!(
        redis.url(),
        format!("rediss://127.0.0.1:{}/0", redis.port())
    );
    assert!(redis.ca_pem_path().unwrap().is_file());
    TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    assert_eq!(tls_ping(&redis), "+PONG\r\n");

    let port = redis.port();
    redis.kill();
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(tls_ping(&redis), "+PONG\r\n");
}

#[test]
fn tls_with_acl_user_embeds_the_credentials() {
    let redis = RedisServer::start_with(RedisOptions {
        acl_user: Some(("relay".to_string(), "pw".to_string())),
        tls: true,
        ..RedisOptions::default()
    });
    assert_eq!(
        redis.url(),
        format!("rediss://relay:pw@127.0.0.1:{}/0", redis.port())
    );
    assert!(tls_ping(&redis).starts_with("-NOAUTH"));
}

#[test]
#[should_panic(expected = "plain TCP only")]
fn raw_commands_refuse_a_tls_server() {
    let redis = RedisServer::start_with(RedisOptions {
        tls: true,
        ..RedisOptions::default()
    });
    redis.command(&["PING"]);
}

#[test]
fn restart_waits_while_the_port_is_taken() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    redis.kill();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(squatter);
    });
    redis.restart();
    release.join().unwrap();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.command(&["PING"]), "+PONG\r\n");
}
