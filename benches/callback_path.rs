//! CPU cost of the callback path's steps for one safe-mode text message, from the envelope to
//! the encoded event the store writes. The baseline (measured in the same run) is the signature
//! check alone, the cheapest step every callback needs; BENCHMARKS.md reports the rest as ratios.
//!
//! `cargo bench --bench callback_path`

use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use prost::Message;
use wechat_gateway::domain::{AccountId, Platform};
use wechat_gateway::wechat::crypto::{self, MsgCrypto};
use wechat_gateway::wechat::normalize::normalize;
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
            let s = crypto::msg_signature(TOKEN, "1700000000", "nonce", &enc);
            assert!(crypto::signatures_match(&s, &sig));
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
    g.bench_function("full: verify, decrypt, parse, normalize, encode", |b| {
        b.iter(|| {
            let env = Document::parse(envelope.as_bytes()).unwrap();
            let e = env.get("Encrypt").unwrap();
            let s = crypto::msg_signature(TOKEN, "1700000000", "nonce", e);
            assert!(crypto::signatures_match(&s, &sig));
            let plain = key.decrypt(e, APP_ID).unwrap();
            let doc = Document::parse(&plain).unwrap();
            let raw = std::str::from_utf8(&plain).unwrap();
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
