//! End to end: an encrypted callback body and its query parameters, through envelope parsing,
//! signature verification, decryption, parsing and normalization. Nothing may panic; a forged
//! signature or a message sealed for another appid/corpid never yields an event; a correctly
//! signed and sealed message yields exactly the event its XML normalizes to.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wechat_gateway::wechat::crypto;

mod common;

#[derive(Arbitrary, Debug)]
struct Input {
    work: bool,
    body: Body,
    signature: Signature,
    timestamp: String,
    nonce: String,
}

#[derive(Arbitrary, Debug)]
enum Body {
    /// Any bytes as the envelope.
    Bytes(Vec<u8>),
    /// `<xml>{before}<Encrypt><![CDATA[..]]></Encrypt>{after}</xml>`.
    Envelope {
        before: String,
        encrypt: Encrypt,
        after: String,
    },
}

#[derive(Arbitrary, Debug)]
enum Encrypt {
    /// Any string as the Encrypt value.
    Text(String),
    /// A message sealed with the account's key, for the account or for someone else.
    Sealed {
        xml: Vec<u8>,
        for_account: bool,
        other_receiver: String,
    },
}

#[derive(Arbitrary, Debug)]
enum Signature {
    /// The correct msg_signature over the Encrypt value placed in the envelope.
    Correct,
    /// Whatever the fuzzer says.
    Given(String),
}

fuzz_target!(|input: Input| {
    let account = &common::ACCOUNTS[usize::from(input.work)];
    let mut sealed = None;
    let (body, placed) = match &input.body {
        Body::Bytes(b) => (b.clone(), String::new()),
        Body::Envelope {
            before,
            encrypt,
            after,
        } => {
            let value = match encrypt {
                Encrypt::Text(t) => t.clone(),
                Encrypt::Sealed {
                    xml,
                    for_account,
                    other_receiver,
                } => {
                    let receiver = if *for_account {
                        account.receiver_id
                    } else {
                        other_receiver.as_str()
                    };
                    sealed = Some((xml, receiver));
                    account.crypto.encrypt(xml, receiver)
                }
            };
            let body = format!("<xml>{before}<Encrypt><![CDATA[{value}]]></Encrypt>{after}</xml>");
            (body.into_bytes(), value)
        }
    };
    let msg_signature = match &input.signature {
        Signature::Correct => {
            crypto::msg_signature(account.token, &input.timestamp, &input.nonce, &placed)
        }
        Signature::Given(s) => s.clone(),
    };

    let result = common::open_callback(
        account,
        &body,
        &input.timestamp,
        &input.nonce,
        &msg_signature,
    );

    if let Ok(event) = &result {
        // Nothing unverified gets in: the signature held for the Encrypt value that was read,
        // and the message was sealed for this account.
        if let Some((_, receiver)) = sealed {
            assert_eq!(
                receiver, account.receiver_id,
                "an event from a message for {receiver:?}"
            );
        }
        assert_eq!(event.account_id, "fuzz");
    }
    // A clean envelope, correctly signed, around a message for this account: the outcome is
    // exactly that of the message alone.
    if let (Body::Envelope { before, after, .. }, Signature::Correct, Some((xml, receiver))) =
        (&input.body, &input.signature, sealed)
    {
        if before.is_empty() && after.is_empty() && receiver == account.receiver_id {
            let direct = common::parse_and_normalize(account, xml);
            assert_eq!(result.ok(), direct.ok());
        }
    }
});
