//! The query string WeChat appends to a callback URL, read without serde: the first thing the
//! [`super::envelope`] reads of a request.
//!
//! Every callback carries one (`signature` or `msg_signature`, `timestamp`, `nonce`, and
//! `encrypt_type` / `echostr` where they apply). Deserializing it with `web::Query` cost ~9,500
//! instructions a callback (callgrind, `scripts/callgrind`): six owned `String`s and serde's
//! field matching. The values are hex, digits or base64, so they are borrowed from the request
//! as they are; only a value with an escape (`%2B`, `+`) is decoded, with the same
//! `application/x-www-form-urlencoded` rules `web::Query` applies (`form_urlencoded`).

use std::borrow::Cow;

use super::envelope::EnvelopeError;

/// The parameters the envelope reads; anything else in the query is ignored.
#[derive(Debug, Default)]
pub struct CallbackQuery<'a> {
    pub signature: Option<Cow<'a, str>>,
    pub msg_signature: Option<Cow<'a, str>>,
    pub timestamp: Option<Cow<'a, str>>,
    pub nonce: Option<Cow<'a, str>>,
    pub echostr: Option<Cow<'a, str>>,
    pub encrypt_type: Option<Cow<'a, str>>,
}

impl<'a> CallbackQuery<'a> {
    /// A parameter given twice is refused: which one a signature was computed over would be
    /// ambiguous.
    pub fn parse(query: &'a str) -> Result<Self, EnvelopeError> {
        let mut q = Self::default();
        for (name, value) in pairs(query) {
            let (slot, name) = match &*name {
                "signature" => (&mut q.signature, "signature"),
                "msg_signature" => (&mut q.msg_signature, "msg_signature"),
                "timestamp" => (&mut q.timestamp, "timestamp"),
                "nonce" => (&mut q.nonce, "nonce"),
                "echostr" => (&mut q.echostr, "echostr"),
                "encrypt_type" => (&mut q.encrypt_type, "encrypt_type"),
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(EnvelopeError::DuplicateParam(name));
            }
        }
        Ok(q)
    }
}

/// The query's `name=value` pairs as `form_urlencoded::parse` reads them (empty pairs skipped,
/// a missing `=` an empty value), borrowed where nothing is escaped: its decoder copies every
/// name and value through a lossy UTF-8 check (~2.5% of a callback's CPU in `perf`), while
/// WeChat's values are hex, digits or base64 and need none. A pair with `%` or `+` is decoded
/// by `form_urlencoded` itself.
fn pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            if pair.bytes().any(|b| b == b'%' || b == b'+') {
                form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .unwrap_or((Cow::Borrowed(""), Cow::Borrowed("")))
            } else {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (Cow::Borrowed(name), Cow::Borrowed(value))
            }
        })
}

/// The parameter, or the 400 that names it.
pub fn required<'a>(
    v: &'a Option<Cow<'_, str>>,
    name: &'static str,
) -> Result<&'a str, EnvelopeError> {
    v.as_deref().ok_or(EnvelopeError::MissingParam(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wechats_parameters_are_borrowed_as_they_are() {
        let q = CallbackQuery::parse(
            "signature=a1b2&timestamp=1409304348&nonce=xxxxxx&openid=o1&encrypt_type=aes&msg_signature=ff00",
        )
        .unwrap();
        assert!(matches!(q.signature, Some(Cow::Borrowed("a1b2"))));
        assert!(matches!(q.timestamp, Some(Cow::Borrowed("1409304348"))));
        assert!(matches!(q.nonce, Some(Cow::Borrowed("xxxxxx"))));
        assert!(matches!(q.encrypt_type, Some(Cow::Borrowed("aes"))));
        assert!(matches!(q.msg_signature, Some(Cow::Borrowed("ff00"))));
        assert!(q.echostr.is_none());
    }

    #[test]
    fn escaped_values_are_decoded_as_a_form_is() {
        // A base64 echostr: `%2B` is a plus, `+` a space (the envelope turns that back on WeCom).
        let q = CallbackQuery::parse("echostr=ab%2Bc%2F%3D%3D&nonce=a+b&timestamp=%zz").unwrap();
        assert_eq!(q.echostr.as_deref(), Some("ab+c/=="));
        assert_eq!(q.nonce.as_deref(), Some("a b"));
        // An invalid escape stays as it is, as `web::Query` leaves it.
        assert_eq!(q.timestamp.as_deref(), Some("%zz"));
    }

    #[test]
    fn a_parameter_given_twice_is_refused_by_name() {
        let e = CallbackQuery::parse("timestamp=1&nonce=2&timestamp=3").unwrap_err();
        assert!(
            matches!(e, EnvelopeError::DuplicateParam("timestamp")),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "query parameter \"timestamp\" is given more than once"
        );
    }

    #[test]
    fn a_missing_parameter_is_named() {
        let q = CallbackQuery::parse("").unwrap();
        let e = required(&q.nonce, "nonce").unwrap_err();
        assert_eq!(e.to_string(), "missing query parameter \"nonce\"");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        for q in [
            "&&&",
            "=",
            "%",
            "%%%",
            "a=%ff%fe",
            "signature",
            "nonce=&nonce",
        ] {
            let _ = CallbackQuery::parse(q);
        }
    }

    proptest::proptest! {
        /// The borrowing reader gives exactly the pairs `form_urlencoded::parse` gives.
        #[test]
        fn pairs_are_what_form_urlencoded_reads(q in "([a-z_%+=&0-9A-F]|%[0-9a-fA-F]{2}|\\PC){0,40}") {
            let ours: Vec<_> = pairs(&q).collect();
            let theirs: Vec<_> = form_urlencoded::parse(q.as_bytes()).collect();
            proptest::prop_assert_eq!(ours, theirs);
        }
    }
}
