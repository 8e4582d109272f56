//! Callback-path load generator: measures the gateway against a ceiling in the same run.
//!
//! ```sh
//! cargo run --release --example loadgen -- --requests 20000 --concurrency 64
//! cargo run --release --example loadgen -- --redis-url redis://127.0.0.1:6379/9
//! ```
//!
//! It starts, in this process and on loopback: a ceiling (a bare actix-web server that answers
//! `success` to every POST), the gateway (embedded store in a temporary directory, or Redis),
//! and a tonic `EventSink` that accepts everything. It pre-generates distinct, correctly signed
//! and encrypted safe-mode callbacks (distinct MsgIds, so nothing is served from
//! de-duplication), drives each server at the chosen concurrency, and prints requests/s,
//! the ratio to the ceiling, p50/p99/p99.9 latency and the count of non-200 answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use wechat_gateway::pb::event_sink_server::{EventSink, EventSinkServer};
use wechat_gateway::pb::{DeliverRequest, DeliverResponse};
use wechat_gateway::startup::Application;
use wechat_gateway::wechat::crypto::{self, MsgCrypto};

const APP_ID: &str = "wxb11529c136998cb6";
const TOKEN: &str = "pamtest";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

struct Args {
    requests: usize,
    concurrency: usize,
    redis_url: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        requests: 20_000,
        concurrency: 64,
        redis_url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--requests" => args.requests = value().parse().expect("--requests N"),
            "--concurrency" => args.concurrency = value().parse().expect("--concurrency N"),
            "--redis-url" => args.redis_url = Some(value()),
            "--help" | "-h" => {
                println!("loadgen [--requests N] [--concurrency C] [--redis-url URL]");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// The CRM stand-in: accepts every batch.
struct AcceptAll;

#[tonic::async_trait]
impl EventSink for AcceptAll {
    async fn deliver(
        &self,
        _req: tonic::Request<DeliverRequest>,
    ) -> Result<tonic::Response<DeliverResponse>, tonic::Status> {
        Ok(tonic::Response::new(DeliverResponse::default()))
    }
}

async fn start_sink() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventSinkServer::new(AcceptAll))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

fn start_ceiling() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(|| {
        App::new().default_service(web::to(|_body: web::Bytes| async {
            HttpResponse::Ok().body("success")
        }))
    })
    .listen(listener)
    .unwrap()
    .disable_signals()
    .run();
    tokio::spawn(server);
    addr
}

async fn start_gateway(dir: &std::path::Path, sink: SocketAddr, redis: Option<&str>) -> SocketAddr {
    let store = match redis {
        Some(url) => format!("backend = \"redis\"\nredis_url = {url:?}"),
        None => format!("backend = \"embedded\"\npath = {:?}", dir.join("data")),
    };
    let toml = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n[store]\n{store}\n\
         [crm]\nendpoint = \"http://{sink}\"\n[log]\nlevel = \"error\"\n\
         [[accounts]]\nid = \"bench\"\nplatform = \"mp\"\napp_id = \"{APP_ID}\"\napp_secret = \"s\"\n\
         token = \"{TOKEN}\"\nencoding_aes_key = \"{KEY}\"\n"
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, toml).unwrap();
    let cfg = wechat_gateway::config::load(&path).unwrap();
    let app = Application::build(cfg).await.unwrap();
    let addr = app.http_addr();
    tokio::spawn(app.run_until_stopped());
    addr
}

/// Distinct safe-mode callbacks: (query string, body).
fn callbacks(n: usize, salt: u64) -> Vec<(String, String)> {
    let key = MsgCrypto::new(KEY).unwrap();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    (0..n)
        .map(|i| {
            let xml = format!(
                "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[oBench{}]]></FromUserName>\
                 <CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[load {i}]]></Content>\
                 <MsgId>{}</MsgId></xml>",
                i % 1000,
                salt + i as u64
            );
            let enc = key.encrypt(xml.as_bytes(), APP_ID);
            let nonce = format!("{i}");
            let sig = crypto::msg_signature(TOKEN, &ts, &nonce, &enc);
            (
                format!("timestamp={ts}&nonce={nonce}&msg_signature={sig}&encrypt_type=aes"),
                format!("<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"),
            )
        })
        .collect()
}

struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    non_200: usize,
}

async fn drive(url: String, reqs: Arc<Vec<(String, String)>>, concurrency: usize) -> Run {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, reqs, next) = (client.clone(), url.clone(), reqs.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut non_200 = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((q, body)) = reqs.get(i) else { break };
                let t = Instant::now();
                let ok = match client
                    .post(format!("{url}?{q}"))
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                lat.push(t.elapsed());
                if !ok {
                    non_200 += 1;
                }
            }
            (lat, non_200)
        }));
    }
    let mut all = Vec::new();
    let mut non_200 = 0;
    for t in tasks {
        let (l, n) = t.await.unwrap();
        all.extend(l);
        non_200 += n;
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Run {
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        p999: pct(0.999),
        non_200,
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sink = start_sink().await;
    let ceiling = start_ceiling();
    let gateway = start_gateway(dir.path(), sink, args.redis_url.as_deref()).await;
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
        * 1000;
    let reqs = Arc::new(callbacks(args.requests, salt));
    // Warm both servers (connections, allocator, store files) before measuring.
    let warm = Arc::new(callbacks(500, salt + args.requests as u64));
    drive(format!("http://{ceiling}/"), warm.clone(), args.concurrency).await;
    drive(
        format!("http://{gateway}/wechat/mp/bench"),
        warm,
        args.concurrency,
    )
    .await;

    let base = drive(format!("http://{ceiling}/"), reqs.clone(), args.concurrency).await;
    let gw = drive(
        format!("http://{gateway}/wechat/mp/bench"),
        reqs,
        args.concurrency,
    )
    .await;
    let backend = if args.redis_url.is_some() {
        "redis"
    } else {
        "embedded"
    };
    println!(
        "{} requests, concurrency {}, one process on {} cores",
        args.requests,
        args.concurrency,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("| scenario | req/s | ratio to ceiling | p50 | p99 | p99.9 | non-200 |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, r) in [
        ("ceiling (bare actix `success`)", &base),
        (&*format!("gateway safe mode, {backend} store"), &gw),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
            r.rps,
            r.rps / base.rps,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.p999.as_secs_f64() * 1e3,
            r.non_200
        );
    }
}
