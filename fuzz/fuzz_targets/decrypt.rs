//! The AES envelope: arbitrary Encrypt strings, arbitrary ciphertexts, and arbitrary plaintexts
//! under the right key (so the fuzzer controls the padding, the length field and the receiver
//! id directly). `MsgCrypto::decrypt` must never panic, must agree with a reference reading of
//! the frame, and must round-trip what `encrypt` produced.

#![no_main]

use aes::Aes256;
use arbitrary::Arbitrary;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use cbc::cipher::array::Array;
use cbc::cipher::consts::U16;
use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
use libfuzzer_sys::fuzz_target;

mod common;

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any string as the `Encrypt` value.
    Text { encrypt: String, receiver: String },
    /// Any bytes as the ciphertext (so base64 always decodes).
    Ciphertext { bytes: Vec<u8>, receiver: String },
    /// Any bytes (zero-filled to whole AES blocks) as the plaintext under the account's key.
    Plaintext { bytes: Vec<u8>, receiver: String },
    /// A message sealed by `encrypt_with_prefix`: it must decrypt to itself.
    RoundTrip {
        prefix: [u8; 16],
        msg: Vec<u8>,
        receiver: String,
    },
}

/// The frame as WXBizMsgCrypt defines it, read independently of `src/wechat/crypto.rs`:
/// `random16 ‖ be32(len) ‖ msg ‖ receiver_id ‖ pkcs7 pad (1..=32 bytes of its own length)`.
fn reference(plain: &[u8], receiver: &str) -> Option<Vec<u8>> {
    let pad = usize::from(*plain.last()?);
    if pad == 0 || pad > 32 || pad > plain.len() {
        return None;
    }
    let (content, padding) = plain.split_at(plain.len() - pad);
    if padding.iter().any(|&b| usize::from(b) != pad) || content.len() < 20 {
        return None;
    }
    let declared = u32::from_be_bytes(content[16..20].try_into().unwrap()) as usize;
    let rest = &content[20..];
    if declared > rest.len() || &rest[declared..] != receiver.as_bytes() {
        return None;
    }
    Some(rest[..declared].to_vec())
}

/// The account's raw key: the EncodingAESKey plus "=", base64 with trailing bits allowed.
fn raw_key(encoding_aes_key: &str) -> [u8; 32] {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    engine
        .decode(format!("{encoding_aes_key}="))
        .unwrap()
        .try_into()
        .unwrap()
}

/// AES-256-CBC with iv = key[..16], no padding added: `plain` is already whole blocks.
fn seal_raw(key: &[u8; 32], mut plain: Vec<u8>) -> String {
    let iv: [u8; 16] = key[..16].try_into().unwrap();
    let (blocks, tail) = Array::<u8, U16>::slice_as_chunks_mut(&mut plain);
    assert!(tail.is_empty());
    cbc::Encryptor::<Aes256>::new(&(*key).into(), &iv.into()).encrypt_blocks(blocks);
    STANDARD.encode(&plain)
}

fuzz_target!(|input: Input| {
    let account = &common::ACCOUNTS[1];
    let c = &account.crypto;
    match input {
        Input::Text { encrypt, receiver } => {
            let _ = c.decrypt(&encrypt, &receiver);
            let _ = c.decrypt(&encrypt, account.receiver_id);
        }
        Input::Ciphertext { bytes, receiver } => {
            let encrypt = STANDARD.encode(&bytes);
            let _ = c.decrypt(&encrypt, &receiver);
        }
        Input::Plaintext {
            mut bytes,
            receiver,
        } => {
            if bytes.is_empty() {
                return;
            }
            bytes.resize(bytes.len().div_ceil(16) * 16, 0);
            let expected = reference(&bytes, &receiver);
            let encrypt = seal_raw(&raw_key(account.key), bytes);
            assert_eq!(c.decrypt(&encrypt, &receiver).ok(), expected);
        }
        Input::RoundTrip {
            prefix,
            msg,
            receiver,
        } => {
            let encrypt = c.encrypt_with_prefix(&prefix, &msg, &receiver);
            assert_eq!(c.decrypt(&encrypt, &receiver), Ok(msg));
        }
    }
});
