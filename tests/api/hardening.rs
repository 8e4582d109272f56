//! Exposure to the internet (issue 18): slow clients, log injection, secrets in configuration
//! errors, `nosniff`. The slow-client and log tests run the real binary, as an attacker meets
//! it, and read what it prints.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wechat_gateway::wechat::crypto;

use crate::support::app::{config_toml, now, text_xml, unique_msg_id, AppOptions, MP_TOKEN};

/// The real binary, its output kept line by line; killed when dropped.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts `serve` with `env` added; under `prlimit --nofile=N` when `nofile` is set.
    fn start(config: &Path, env: &[(&str, &str)], nofile: Option<u32>) -> Self {
        let bin = env!("CARGO_BIN_EXE_wechat-gateway");
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the gateway binary starts");
        let output: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        for (stream, tx) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                None,
            ),
            (Box::new(child.stderr.take().unwrap()), Some(tx)),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut tx = tx;
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("http_addr=").nth(1) {
                        if let Some(tx) = tx.take() {
                            let _ =
                                tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                        }
                    }
                    output.lock().unwrap().push(line);
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no address logged: {:?}", output.lock().unwrap()));
        Self {
            child,
            addr: addr.parse().unwrap(),
            output,
        }
    }

    fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }
}

/// A test configuration (embedded store in `dir`), written to `dir/gateway.toml`.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config_toml(&AppOptions::embedded(&dir.join("data")))).unwrap();
    path
}

/// The query of a correctly signed plain-mode callback to `acme-plain`.
/// A fresh nonce each time: plain mode refuses a signature seen before with another body.
fn plain_query() -> String {
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let ts = now().to_string();
    let nonce = format!(
        "n{}",
        NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let sig = crypto::signature(MP_TOKEN, &ts, &nonce);
    format!("signature={sig}&timestamp={ts}&nonce={nonce}")
}

/// What a slow or idle client saw: the status line's code (if any answer came) and how long
/// after connecting the gateway closed the connection (`None`: still open at `give_up`).
struct Seen {
    status: Option<u16>,
    closed_after: Option<Duration>,
}

#[derive(Clone, Copy)]
enum Attack {
    /// Headers and a part of a `Content-Length` body, then one byte a second.
    SlowLength,
    /// Headers and a first chunk of a chunked body, then a one-byte chunk a second.
    SlowChunked,
    /// Connects and sends nothing.
    Idle,
}

async fn attack(addr: SocketAddr, how: Attack, give_up: Duration) -> Seen {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let path = format!("/wechat/mp/acme-plain?{}", plain_query());
    let head = match how {
        Attack::SlowLength => {
            format!("POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: 4000\r\n\r\n<xml>")
        }
        Attack::SlowChunked => format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<xml>\r\n"
        ),
        Attack::Idle => String::new(),
    };
    let trickle: &[u8] = match how {
        Attack::SlowLength => b"a",
        Attack::SlowChunked => b"1\r\na\r\n",
        Attack::Idle => b"",
    };
    let (mut rd, mut wr) = stream.split();
    if !head.is_empty() {
        let _ = wr.write_all(head.as_bytes()).await;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let deadline = tokio::time::sleep(give_up);
    tokio::pin!(deadline);
    let closed_after = loop {
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) | Err(_) => break Some(started.elapsed()),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick(), if !trickle.is_empty() => {
                // A refused write means the gateway is gone from this connection already; the
                // read side reports it.
                let _ = wr.write_all(trickle).await;
            }
            _ = &mut deadline => break None,
        }
    };
    let status = std::str::from_utf8(&answer)
        .ok()
        .and_then(|a| a.strip_prefix("HTTP/1.1 "))
        .and_then(|a| a.get(..3))
        .and_then(|c| c.parse().ok());
    Seen {
        status,
        closed_after,
    }
}

/// Opens `slow` slow-body connections (half `Content-Length`, half chunked) and `idle` idle
/// ones, then sends valid callbacks while they are held: each valid callback must be answered
/// 200 inside WeChat's 5-second window; each slow one 408 and closed, each idle one closed,
/// soon after the 1-second deadline.
async fn valid_callbacks_are_answered_while_slow_clients_hold_connections(
    gw: &Gateway,
    slow: usize,
    idle: usize,
) {
    let give_up = Duration::from_secs(15);
    let mut attackers = Vec::new();
    for i in 0..slow + idle {
        let how = if i >= slow {
            Attack::Idle
        } else if i % 2 == 0 {
            Attack::SlowLength
        } else {
            Attack::SlowChunked
        };
        attackers.push((how, tokio::spawn(attack(gw.addr, how, give_up))));
    }
    // Let the attack take its connections before the valid callbacks come.
    tokio::time::sleep(Duration::from_millis(300)).await;

    wechat_gateway::wechat::api::install_tls_provider();
    let http = reqwest::Client::new();
    let mut valid = Vec::new();
    for i in 0..20 {
        let http = http.clone();
        let url = format!("http://{}/wechat/mp/acme-plain?{}", gw.addr, plain_query());
        let xml = text_xml(&format!("oValid{i}"), "hello", unique_msg_id());
        valid.push(tokio::spawn(async move {
            let started = Instant::now();
            let resp = http.post(url).body(xml).send().await;
            (resp.map(|r| r.status().as_u16()), started.elapsed())
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for v in valid {
        let (status, took) = v.await.unwrap();
        assert_eq!(
            status.as_ref().ok(),
            Some(&200),
            "a valid callback during the attack: {status:?} after {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "a valid callback took {took:?}, past WeChat's 5 s window"
        );
    }
    // Every attacker is cut off: the deadline is 1 s after its headers, and a connection still
    // waiting in the backlog gets its own second once accepted; 8 s bounds it with room.
    for (how, a) in attackers {
        let seen = a.await.unwrap();
        let closed = seen.closed_after.unwrap_or_else(|| {
            panic!(
                "a {} connection was still open after {give_up:?}",
                name(how)
            )
        });
        assert!(
            closed < Duration::from_secs(8),
            "a {} connection closed only after {closed:?}",
            name(how)
        );
        match how {
            Attack::SlowLength | Attack::SlowChunked => assert_eq!(
                seen.status,
                Some(408),
                "a {} body is answered 408",
                name(how)
            ),
            Attack::Idle => {}
        }
    }
}

fn name(how: Attack) -> &'static str {
    match how {
        Attack::SlowLength => "slow Content-Length",
        Attack::SlowChunked => "slow chunked",
        Attack::Idle => "idle",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_get_408_and_lose_their_connection_while_valid_callbacks_get_200() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let gw = Gateway::start(&config, &[("WGW_HTTP__BODY_TIMEOUT_MS", "1000")], None);
    valid_callbacks_are_answered_while_slow_clients_hold_connections(&gw, 300, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_few_file_descriptors_max_connections_keeps_valid_callbacks_answered() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    // 256 descriptors; 200 slow and 100 idle clients would take every one that is left (and do,
    // without the bound: actix logs "Too many open files").
    let gw = Gateway::start(
        &config,
        &[
            ("WGW_HTTP__BODY_TIMEOUT_MS", "1000"),
            ("WGW_HTTP__MAX_CONNECTIONS", "160"),
        ],
        Some(256),
    );
    valid_callbacks_are_answered_while_slow_clients_hold_connections(&gw, 200, 100).await;
    let output = gw.output();
    let exhausted: Vec<_> = output
        .iter()
        .filter(|l| l.contains("Too many open files"))
        .collect();
    assert!(
        exhausted.is_empty(),
        "the gateway ran out of file descriptors: {exhausted:?}"
    );
}

#[test]
fn check_config_names_the_place_of_an_error_but_never_prints_a_secret() {
    const SECRET: &str = "Sup3rSecretAppSecretValue";
    let dir = tempfile::tempdir().unwrap();
    for (name, text, expected) in [
        // A syntax error on the secret's own line: toml would quote the line.
        (
            "syntax.toml",
            format!("[http]\nlisten = \"127.0.0.1:0\"\n\n[[accounts]]\nid = \"a\"\nplatform = \"mp\"\napp_secret = \"{SECRET}\" oops\n"),
            "syntax.toml:7:",
        ),
        // An unterminated string: the rest of the file is the "value".
        (
            "unterminated.toml",
            format!("[[accounts]]\nid = \"a\"\ntoken = \"{SECRET}\n"),
            "unterminated.toml:3:",
        ),
        // The wrong type: serde quotes the value it got.
        (
            "type.toml",
            "[[accounts]]\nid = \"a\"\nplatform = \"mp\"\ntoken = 98765432109876543\n".to_owned(),
            "accounts[0].token",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wechat-gateway"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} is refused");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(printed.contains(expected), "{name}: {printed:?} does not say {expected:?}");
        for secret in [SECRET, "98765432109876543", "oops"] {
            assert!(!printed.contains(secret), "{name}: {printed:?} prints {secret:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_break_in_request_text_cannot_forge_a_log_line_and_is_not_echoed_at_length() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let gw = Gateway::start(&config, &[], None);
    wechat_gateway::wechat::api::install_tls_provider();
    let http = reqwest::Client::new();
    let forged = "x%0a2026-01-01T00:00:00Z%20ERROR%20FORGED%0d%1b[31m";
    let long = "a".repeat(2000);
    for path in [
        format!("/wechat/mp/{forged}?{}", plain_query()),
        format!("/wechat/work/{forged}?{}", plain_query()),
        format!("/wechat/mp/acme-plain?signature=s&nonce=n&timestamp={forged}"),
        format!("/l/{forged}/abc"),
        format!("/wechat/mp/{long}?{}", plain_query()),
    ] {
        let resp = http
            .post(format!("http://{}{path}", gw.addr))
            .body(text_xml("oForger", "hi", unique_msg_id()))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(
            body.len() < 300,
            "{path}: the answer echoes {} bytes",
            body.len()
        );
        assert!(
            !body.contains('\n') && !body.contains('\u{1b}'),
            "{path}: {body:?}"
        );
    }
    // The refusals are logged (one line each); wait for the last one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.output().iter().any(|l| l.contains("aaaaaaaa")) {
        assert!(
            Instant::now() < deadline,
            "no refusal logged: {:?}",
            gw.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = gw.output();
    let refusals: Vec<_> = output.iter().filter(|l| l.contains("FORGED")).collect();
    assert!(
        !refusals.is_empty(),
        "the forged id is logged, escaped: {output:?}"
    );
    for line in &output {
        assert!(
            !line.starts_with("2026-01-01") && !line.contains('\u{1b}') && !line.contains('\r'),
            "a forged log line: {line:?}"
        );
        assert!(
            !line.contains(&"a".repeat(100)),
            "the long id is logged at length: {line:?}"
        );
    }
}

#[tokio::test]
async fn every_answer_says_nosniff() {
    let dir = tempfile::tempdir().unwrap();
    let app =
        crate::support::app::spawn_app(AppOptions::embedded(&dir.path().join("data")), dir.path())
            .await;
    let ts = now().to_string();
    let sig = crypto::signature(MP_TOKEN, &ts, "n1");
    let echo = format!(
        "/wechat/mp/acme-plain?signature={sig}&timestamp={ts}&nonce=n1&echostr=%3Cscript%3E"
    );
    let signed = format!("/wechat/mp/acme-plain?{}", plain_query());
    let cases = [
        ("GET", echo.as_str(), 200),
        ("POST", signed.as_str(), 200),
        (
            "GET",
            "/wechat/mp/acme-plain?signature=bad&timestamp=1&nonce=n",
            400,
        ),
        (
            "GET",
            "/wechat/mp/nobody?signature=bad&timestamp=1&nonce=n",
            404,
        ),
        ("GET", "/l/acme-mp/nolink", 404),
        ("GET", "/healthz", 200),
        ("GET", "/metrics", 200),
        ("GET", "/admin/v1/accounts/acme-mp/menu/versions", 401),
        ("GET", "/no/such/route", 404),
    ];
    for (method, path, status) in cases {
        let req = match method {
            "GET" => app.http.get(app.url(path)),
            _ => app
                .http
                .post(app.url(path))
                .body(text_xml("oSniff", "hi", unique_msg_id())),
        };
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            resp.headers()
                .get("x-content-type-options")
                .and_then(|v| v.to_str().ok()),
            Some("nosniff"),
            "{method} {path}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_slow_admin_body_gets_a_408_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut config) = crate::support::app::load_config(
        dir.path(),
        &AppOptions::embedded(&dir.path().join("data")),
    );
    config.http.body_timeout = Duration::from_millis(300);
    let app = crate::support::app::spawn_configured(config).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /admin/v1/accounts/acme-mp/links HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"target\":",
        crate::support::app::ADMIN_TOKEN
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("the connection is closed after the answer")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    app.stop().await;
}
