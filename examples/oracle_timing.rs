//! How long the gateway takes to refuse a correctly signed callback that fails after the
//! signature, per failure class: the measurement behind "no decryption oracle" (issue 18,
//! SECURITY.md). Whoever holds the Token can sign any ciphertext; if the answer time said which
//! check failed (padding, length field, appid), timing would be the oracle the one fixed answer
//! removed.
//!
//! ```sh
//! cargo run --release --example oracle_timing -- 2000 2>/dev/null
//! ```
//!
//! The real gateway (`Application::build`, embedded store in a temporary directory, logging at
//! `warn` as configured, so each refusal writes its log line; run with `2>/dev/null`) in this
//! process, and one keep-alive loopback connection that sends N requests of each class, the
//! classes interleaved (round i starts at class i mod k, so no class always follows another),
//! after 200 unrecorded warm-up rounds. Each request is timed from the first byte written to
//! the last byte of the answer read. The classes whose ciphertext depends on the plaintext
//! (padding, length field, appid, not XML, not a message) have ciphertexts of one length; base64
//! and block length depend only on what the sender wrote. A forged signature (401) is the
//! reference: the cheapest refusal after the query is read.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use aes::Aes256;
use anyhow::{bail, Context};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::Engine as _;
use cbc::cipher::array::Array;
use cbc::cipher::consts::U16;
use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
use wechat_gateway::config::Config;
use wechat_gateway::startup::Application;
use wechat_gateway::wechat::crypto::{self, MsgCrypto};

const APP_ID: &str = "wxb11529c136998cb6";
const TOKEN: &str = "pamtest";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const WARM_UP: usize = 200;

fn main() -> anyhow::Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().context("usage: oracle_timing [N]")?,
        None => 2000,
    };
    let dir = tempfile::tempdir()?;
    let cfg = write_config(dir.path())?;
    wechat_gateway::telemetry::init_logging(&cfg.log);
    let rt = tokio::runtime::Runtime::new()?;
    let app = rt.block_on(Application::build(cfg))?;
    let addr = app.http_addr();
    let stop = app.shutdown_token();
    let running = rt.spawn(app.run_until_stopped());

    let classes = classes(&addr.to_string());
    let mut conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut times: Vec<Vec<u64>> = vec![Vec::with_capacity(n); classes.len()];
    let mut statuses = vec![0u16; classes.len()];
    for round in 0..WARM_UP + n {
        for k in 0..classes.len() {
            let c = (round + k) % classes.len();
            let started = Instant::now();
            conn.write_all(&classes[c].1)?;
            let status = read_response(&mut conn, &mut buf)?;
            let took = started.elapsed().as_nanos() as u64;
            statuses[c] = status;
            if round >= WARM_UP {
                times[c].push(took);
            }
        }
    }
    stop.cancel();
    rt.block_on(running)??;

    println!("{n} requests per class, interleaved; answer time in µs");
    println!("| class | status | median | p90 | p99 |");
    println!("| --- | --- | --- | --- | --- |");
    let mut medians = Vec::new();
    for ((name, _), (t, status)) in classes.iter().zip(times.iter_mut().zip(&statuses)) {
        t.sort_unstable();
        let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        println!(
            "| {name} | {status} | {:.1} | {:.1} | {:.1} |",
            at(0.5),
            at(0.9),
            at(0.99)
        );
        if *status == 400 {
            medians.push(at(0.5));
        }
    }
    let lo = medians.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = medians.iter().copied().fold(0.0, f64::max);
    println!(
        "spread of the medians across the 400 classes: {:.1} µs ({:.1}–{:.1})",
        hi - lo,
        lo,
        hi
    );
    Ok(())
}

/// One safe-mode account, the embedded store in `dir`, refusals logged at `warn`.
fn write_config(dir: &std::path::Path) -> anyhow::Result<Config> {
    let toml = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n[store]\n\
         backend = \"embedded\"\npath = {:?}\n[enrichment]\nenabled = false\n\
         [log]\nlevel = \"warn\"\n[[accounts]]\nid = \"bench\"\nplatform = \"mp\"\n\
         app_id = \"{APP_ID}\"\napp_secret = \"s\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{KEY}\"\n",
        dir.join("data")
    );
    let path = dir.join("oracle.toml");
    std::fs::write(&path, toml)?;
    wechat_gateway::config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Each class's name and its complete HTTP request, correctly signed (but for `signature`).
fn classes(host: &str) -> Vec<(&'static str, Vec<u8>)> {
    let key = MsgCrypto::new(KEY).unwrap();
    let msg = format!(
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[oOracleFollower000000000000]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[我想了解一下你们的产品报价]]></Content>\
         <MsgId>1</MsgId></xml>",
        unix_now()
    );
    let msg = msg.as_bytes();
    // Same length as `msg`: valid XML that is no message, and bytes that are no XML.
    let mut not_a_message = b"<xml><Content>".to_vec();
    not_a_message.resize(msg.len() - b"</Content></xml>".len(), b'x');
    not_a_message.extend_from_slice(b"</Content></xml>");
    let not_xml = vec![b'x'; msg.len()];
    let good = frame(msg.len() as u32, msg, None);
    let sealed = STANDARD.decode(seal_raw(&good)).unwrap();
    let mut bad_base64 = seal_raw(&good);
    bad_base64.replace_range(10..11, "!");
    let cases: Vec<(&'static str, String, bool)> = vec![
        (
            "forged signature (reference)",
            key.encrypt(msg, APP_ID),
            false,
        ),
        ("bad base64", bad_base64, true),
        (
            "length not a multiple of 16",
            STANDARD.encode(&sealed[..sealed.len() - 5]),
            true,
        ),
        (
            "bad padding",
            seal_raw(&frame(msg.len() as u32, msg, Some(0))),
            true,
        ),
        (
            "length field too big",
            seal_raw(&frame(4242, msg, None)),
            true,
        ),
        ("wrong appid", key.encrypt(msg, "wx0000000000000000"), true),
        ("not XML", key.encrypt(&not_xml, APP_ID), true),
        ("XML, no message", key.encrypt(&not_a_message, APP_ID), true),
    ];
    let ts = unix_now().to_string();
    cases
        .into_iter()
        .map(|(name, encrypt, signed)| {
            let sig = match signed {
                true => crypto::msg_signature(TOKEN, &ts, "nonce", &encrypt),
                false => "0".repeat(40),
            };
            let body = format!(
                "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
            );
            let request = format!(
                "POST /wechat/mp/bench?timestamp={ts}&nonce=nonce&encrypt_type=aes&msg_signature={sig} HTTP/1.1\r\n\
                 Host: {host}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            (name, request.into_bytes())
        })
        .collect()
}

/// `prefix ‖ be32(declared) ‖ msg ‖ appid ‖ pad` (pad bytes `pad_byte`, or the pad length).
fn frame(declared: u32, msg: &[u8], pad_byte: Option<u8>) -> Vec<u8> {
    let mut plain = b"0123456789abcdef".to_vec();
    plain.extend_from_slice(&declared.to_be_bytes());
    plain.extend_from_slice(msg);
    plain.extend_from_slice(APP_ID.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad_byte.unwrap_or(pad as u8), pad));
    plain
}

/// AES-256-CBC of whole blocks under [`KEY`] (iv = key[..16]), no framing added; base64.
fn seal_raw(plain: &[u8]) -> String {
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let key: [u8; 32] = engine
        .decode(format!("{KEY}="))
        .unwrap()
        .try_into()
        .unwrap();
    let iv: [u8; 16] = key[..16].try_into().unwrap();
    let mut buf = plain.to_vec();
    let (blocks, _) = Array::<u8, U16>::slice_as_chunks_mut(&mut buf);
    cbc::Encryptor::<Aes256>::new(&key.into(), &iv.into()).encrypt_blocks(blocks);
    STANDARD.encode(&buf)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
