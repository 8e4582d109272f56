//! The JS-SDK permission signature (JS-SDK使用权限签名算法), for `wx.config` and WeCom's
//! `wx.agentConfig`: the hex SHA-1 of `jsapi_ticket=T&noncestr=N&timestamp=S&url=U`, the four
//! fields sorted by name (ASCII), values as they are (no URL escaping), the URL without its
//! `#fragment`. Official Account doc, 附录1:
//! https://developers.weixin.qq.com/doc/offiaccount/OA_Web_Apps/JS-SDK.html; WeCom uses the same
//! algorithm (https://developer.work.weixin.qq.com/document/path/90506).

use sha1::{Digest, Sha1};

/// The page URL as signed: everything before the first `#`.
pub fn signed_url(url: &str) -> &str {
    url.split_once('#').map_or(url, |(before, _)| before)
}

/// The signature of `url` (its fragment dropped) under `ticket`.
pub fn signature(ticket: &str, nonce_str: &str, timestamp: i64, url: &str) -> String {
    let string1 = format!(
        "jsapi_ticket={ticket}&noncestr={nonce_str}&timestamp={timestamp}&url={}",
        signed_url(url)
    );
    hex::encode(Sha1::digest(string1.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the JS-SDK document, 附录1 (JS-SDK使用权限签名算法): noncestr
    /// `Wm3WZYTPz0wzccnW`, timestamp 1414587457, url `http://mp.weixin.qq.com?params=value`,
    /// signature `0f9de62fce790f9a083d5c99e95740ceb90c27ed`.
    const TICKET: &str =
        "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg";

    #[test]
    fn the_published_example_signs_as_documented() {
        assert_eq!(
            signature(
                TICKET,
                "Wm3WZYTPz0wzccnW",
                1414587457,
                "http://mp.weixin.qq.com?params=value"
            ),
            "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
        );
    }

    #[test]
    fn the_fragment_is_not_signed() {
        let url = "http://mp.weixin.qq.com?params=value";
        assert_eq!(
            signature(
                TICKET,
                "Wm3WZYTPz0wzccnW",
                1414587457,
                &format!("{url}#/page?x=1")
            ),
            signature(TICKET, "Wm3WZYTPz0wzccnW", 1414587457, url)
        );
        assert_eq!(signed_url("https://a.com/p?q=1#x#y"), "https://a.com/p?q=1");
    }
}
