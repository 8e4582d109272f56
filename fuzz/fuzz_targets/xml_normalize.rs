//! Arbitrary bytes as a decrypted callback body: the hardened XML reader, then normalization for
//! both platforms. Nothing may panic; every event must encode and serialize; every parsed value
//! must survive a passive reply.

#![no_main]

use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    for account in common::ACCOUNTS.iter() {
        let _ = common::parse_and_normalize(account, data);
    }
    if let Ok(doc) = wechat_gateway::wechat::xml::Document::parse(data) {
        for (_name, value) in doc.iter().take(4) {
            common::check_text_reply(value);
        }
    }
});
