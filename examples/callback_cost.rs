//! The instruction cost of one callback, for `valgrind --tool=callgrind` (which counts
//! instructions, so the figure holds on a busy machine).
//!
//! ```sh
//! cargo build --release --example callback_cost
//! for n in 200 1200; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.http.$n target/release/examples/callback_cost http $n
//! done
//! ```
//!
//! - `http N`: the real gateway (`Application::build`, embedded store in a temporary directory,
//!   no CRM listening) in this process, and N distinct safe-mode callbacks sent one after the
//!   other on one keep-alive loopback connection, logging at `info` as `serve` sets it up: HTTP
//!   parsing, routing, verify, decrypt, parse, normalize, metrics, spans, the store's commit (one per callback here; under concurrent load
//!   callbacks share commits) and the client's few instructions.
//! - `ceiling N`: the same requests to a bare actix-web server in this process (as
//!   `examples/ceiling.rs`), so that the gateway's count can be read as a multiple of it.
//! - `steps N`: N times the CPU steps alone, as `benches/callback_path.rs` runs them: parse the
//!   envelope, verify `msg_signature`, decrypt, parse, normalize, encode the event.
//!
//! The callbacks are generated before the measured part, always 1,200 of them, so generation
//! costs the same in every run: the cost of one callback is the difference between the totals
//! of two runs divided by the difference of their N (start-up and generation cancel out).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::SystemTime;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::{bail, Context};
use prost::Message;
use wechat_gateway::config::Config;
use wechat_gateway::domain::{AccountId, Platform};
use wechat_gateway::startup::Application;
use wechat_gateway::wechat::account::Account;
use wechat_gateway::wechat::crypto::{self, MsgCrypto};
use wechat_gateway::wechat::normalize::normalize;
use wechat_gateway::wechat::xml::Document;

#[path = "common/callbacks.rs"]
mod callbacks;

/// Callbacks generated in every run, whatever N.
const POOL: usize = 1200;
const APP_ID: &str = "wxb11529c136998cb6";
const TOKEN: &str = "pamtest";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: callback_cost (http | ceiling | steps) N";
    let what = args.next().context(usage)?;
    let n: usize = args.next().context(usage)?.parse().context(usage)?;
    if n > POOL {
        bail!("N is at most {POOL}");
    }
    match what.as_str() {
        "http" => http(n),
        "ceiling" => ceiling(n),
        "steps" => {
            steps(n);
            Ok(())
        }
        _ => bail!(usage),
    }
}

fn http(n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = write_config(dir.path())?;
    // As `serve` does: the handler's span is then recorded, as in production.
    wechat_gateway::telemetry::init_logging(&cfg.log);
    let rt = tokio::runtime::Runtime::new()?;
    let app = rt.block_on(Application::build(cfg.clone()))?;
    let addr = app.http_addr();
    let stop = app.shutdown_token();
    let running = rt.spawn(app.run_until_stopped());
    drive(&cfg, addr, n)?;
    stop.cancel();
    rt.block_on(running)??;
    Ok(())
}

/// The gateway's configuration: one safe-mode account, the embedded store in `dir`. Nothing
/// listens on the CRM port (the forwarder holds one failed batch and backs off).
fn write_config(dir: &std::path::Path) -> anyhow::Result<Config> {
    let toml = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n[store]\n\
         backend = \"embedded\"\npath = {:?}\n[crm]\nendpoint = \"http://127.0.0.1:9\"\n\
         [log]\nlevel = \"info\"\n[[accounts]]\nid = \"bench\"\nplatform = \"mp\"\n\
         app_id = \"{APP_ID}\"\napp_secret = \"s\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{KEY}\"\n",
        dir.join("data")
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, toml)?;
    wechat_gateway::config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn ceiling(n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = write_config(dir.path())?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let rt = tokio::runtime::Runtime::new()?;
    let server = rt.block_on(async {
        anyhow::Ok(
            HttpServer::new(|| {
                App::new().default_service(web::to(|_body: web::Bytes| async {
                    HttpResponse::Ok().body("success")
                }))
            })
            .listen(listener)?
            .disable_signals()
            .run(),
        )
    })?;
    let handle = server.handle();
    let running = rt.spawn(server);
    drive(&cfg, addr, n)?;
    rt.block_on(handle.stop(true));
    rt.block_on(running)??;
    Ok(())
}

/// Sends the first `n` of the pool, one after the other on one keep-alive connection.
fn drive(cfg: &Config, addr: SocketAddr, n: usize) -> anyhow::Result<()> {
    let accounts: Vec<&Account> = cfg.accounts.iter().collect();
    let pool = callbacks::generate(&accounts, callbacks::Mode::Safe, &addr.to_string(), POOL)?;
    let mut conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    for req in &pool[..n] {
        conn.write_all(req)?;
        let status = read_response(&mut conn, &mut buf)?;
        if status != 200 {
            bail!("the server answered {status}");
        }
    }
    Ok(())
}

/// Reads one response (Content-Length framed); returns its status code.
fn read_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let got = conn.read(&mut chunk)?;
        if got == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..got]);
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buf[..head_end])?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .context("no Content-Length")?;
        if buf.len() >= head_end + 4 + len {
            return head
                .get(9..12)
                .context("no status")?
                .parse()
                .map_err(Into::into);
        }
    }
}

fn steps(n: usize) {
    let key = MsgCrypto::new(KEY).unwrap();
    let account = AccountId::parse("bench").unwrap();
    let inputs: Vec<(String, String)> = (0..POOL)
        .map(|i| {
            let xml = format!(
                "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[oBenchUser000000000000000000]]></FromUserName>\
                 <CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[我想了解一下你们的产品报价]]></Content>\
                 <MsgId>{}</MsgId></xml>",
                23_456_789_012_345_678u64 + i as u64
            );
            let enc = key.encrypt(xml.as_bytes(), APP_ID);
            let sig = crypto::msg_signature(TOKEN, "1700000000", "nonce", &enc);
            (
                format!("<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"),
                sig,
            )
        })
        .collect();
    let mut total = 0usize;
    for (envelope, sig) in &inputs[..n] {
        let env = Document::parse(envelope.as_bytes()).unwrap();
        let e = env.get("Encrypt").unwrap();
        let s = crypto::msg_signature(TOKEN, "1700000000", "nonce", e);
        assert!(crypto::signatures_match(&s, sig));
        let plain = key.decrypt(e, APP_ID).unwrap();
        let doc = Document::parse(&plain).unwrap();
        let raw = std::str::from_utf8(&plain).unwrap();
        let event = normalize(&account, Platform::Mp, &doc, raw, SystemTime::now()).unwrap();
        total += std::hint::black_box(event.encode_to_vec()).len();
    }
    eprintln!("{n} callbacks, {total} bytes of events");
}
