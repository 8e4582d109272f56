//! CPU cost of the callback path's steps for one safe-mode text message, from the envelope to
//! the encoded event the store writes. The baseline (measured in the same run) is the signature
//! check alone, the cheapest step every callback needs; BENCHMARKS.md reports the rest as ratios.
//!
//! `cargo bench --bench callback_path`

use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use prost::Message;
use wechat_gateway::domain::{AccountId, Platform, Secret};
use wechat_gateway::wechat::account::{Account, CallbackMode};
use wechat_gateway::wechat::crypto::{self, MsgCrypto};
use wechat_gateway::wechat::envelope::{self, Entry};
use wechat_gateway::wechat::normalize::normalize;
use wechat_gateway::wechat::query::CallbackQuery;
use wechat_gateway::wechat::xml::Document;

const APP_ID: &str = "wxb11529c136998cb6";
const TOKEN: &str = "pamtest";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn bench(c: &mut Criterion) {
    let key = MsgCrypto::new(KEY).unwrap();
    let account = AccountId::parse("bench").unwrap();
    let xml = "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[oBenchUser000000000000000000]]></FromUserName>\
               <CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[我想了解一下你们的产品报价]]></Content>\
               <MsgId>23456789012345678</MsgId></xml>";
    let enc = key.encrypt(xml.as_bytes(), APP_ID);
    let envelope = format!("<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>");
    let sig = crypto::msg_signature(TOKEN, "1700000000", "nonce", &enc);
    let doc = Document::parse(xml.as_bytes()).unwrap();
    let event = normalize(&account, Platform::Mp, &doc, xml, SystemTime::now()).unwrap();

    let mut g = c.benchmark_group("callback_path");
    g.bench_function("baseline: verify msg_signature", |b| {
        b.iter(|| {
            assert!(crypto::msg_signature_holds(
                &sig,
                TOKEN,
                "1700000000",
                "nonce",
                &enc
            ));
        })
    });
    g.bench_function("decrypt", |b| b.iter(|| key.decrypt(&enc, APP_ID).unwrap()));
    g.bench_function("encrypt (passive reply)", |b| {
        b.iter(|| key.encrypt(xml.as_bytes(), APP_ID))
    });
    g.bench_function("parse envelope + message", |b| {
        b.iter(|| {
            Document::parse(envelope.as_bytes()).unwrap();
            Document::parse(xml.as_bytes()).unwrap()
        })
    });
    g.bench_function("normalize", |b| {
        b.iter(|| normalize(&account, Platform::Mp, &doc, xml, SystemTime::now()).unwrap())
    });
    g.bench_function("encode event", |b| b.iter(|| event.encode_to_vec()));
    // What the callback handler runs: the envelope's open (query, clock, envelope XML,
    // signature, AES), then the message's parse and normalize, then the store's encoding.
    let mp = Account {
        id: account.clone(),
        platform: Platform::Mp,
        receiver_id: APP_ID.into(),
        secret: Secret::new("bench"),
        token: Secret::new(TOKEN),
        mode: CallbackMode::Safe,
        keys: vec![key.clone()],
        encoding_aes_key: Some(Secret::new(KEY)),
        agent_id: 0,
    };
    let query = format!("signature=x&timestamp=1700000000&nonce=nonce&openid=oBenchUser000000000000000000&encrypt_type=aes&msg_signature={sig}");
    g.bench_function("full: verify, decrypt, parse, normalize, encode", |b| {
        b.iter(|| {
            let q = CallbackQuery::parse(&query).unwrap();
            let opened =
                envelope::open(&mp, &q, Entry::Callback(envelope.as_bytes()), None).unwrap();
            let doc = Document::parse(&opened.content).unwrap();
            let raw = std::str::from_utf8(&opened.content).unwrap();
            normalize(&account, Platform::Mp, &doc, raw, SystemTime::now())
                .unwrap()
                .encode_to_vec()
        })
    });
    g.finish();
}

/// Auto-replies: choosing the passive reply in-process. 100 rules of every kind, the only match the
/// lowest-priority one, so every rule is tried; then the reply XML is written.
fn auto_reply(c: &mut Criterion) {
    use wechat_gateway::domain::autoreply::{Matcher, Reply, Rule, RuleSet};
    use wechat_gateway::wechat::xml::text_reply;
    let account = AccountId::parse("bench").unwrap();
    let xml = "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[oBenchUser000000000000000000]]></FromUserName>\
               <CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[我想了解一下你们的产品报价]]></Content>\
               <MsgId>23456789012345678</MsgId></xml>";
    let doc = Document::parse(xml.as_bytes()).unwrap();
    let event = normalize(&account, Platform::Mp, &doc, xml, SystemTime::now()).unwrap();
    let mut rules: Vec<Rule> = (0..99)
        .map(|i| Rule {
            id: format!("r{i}"),
            matcher: match i % 4 {
                0 => Matcher::Exact(format!("关键词{i}")),
                1 => Matcher::Prefix(format!("前缀{i}")),
                2 => Matcher::Contains(format!("包含{i}")),
                _ => Matcher::Regex(format!(r"^\d{{{}}}$", i % 20 + 1)),
            },
            reply: Reply::Text {
                content: format!("reply {i}"),
            },
            priority: 100 - i,
            enabled: true,
        })
        .collect();
    rules.push(Rule {
        id: "price".into(),
        matcher: Matcher::Contains("报价".into()),
        reply: Reply::Text {
            content: "请留下电话，顾问会联系您".into(),
        },
        priority: -1,
        enabled: true,
    });
    let set = RuleSet::new(rules);
    c.bench_function("auto_reply: evaluate 100 rules + write the reply", |b| {
        b.iter(|| {
            let rule = set.evaluate(&event).unwrap();
            let Reply::Text { content } = &rule.reply else {
                unreachable!()
            };
            text_reply(&event.open_id, &event.to_user_name, 1_700_000_000, content)
        })
    });
}

criterion_group!(benches, bench, auto_reply);
criterion_main!(benches);
