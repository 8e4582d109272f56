//! Text that came from a request (an account path segment, a query value, a header), on its way
//! into a log line or an error message (issue 18). [`Untrusted`]'s `Display` escapes control
//! characters (a `%0a` in a URL must not start a forged log line), quotes and backslashes, and
//! caps the text at [`MAX_CHARS`] characters with an ellipsis, so that neither a text log nor an
//! answer carries an attacker's text at length.

use std::fmt;

/// The most characters of untrusted text written; the rest becomes `…`.
pub const MAX_CHARS: usize = 64;

/// Request-derived text, written escaped and capped. Wrap it at the log macro or error message
/// that prints it: `tracing::warn!(account = %Untrusted(id), ...)`.
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX_CHARS {
                return f.write_str("…");
            }
            if c.is_control() || c == '"' || c == '\\' || is_line_break(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Unicode's line and paragraph separators are not control characters, but some log viewers
/// break lines at them.
fn is_line_break(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_quotes_are_escaped() {
        assert_eq!(
            Untrusted("a\nb\r\"c\\\u{1b}[31m\u{2028}").to_string(),
            r#"a\nb\r\"c\\\u{1b}[31m\u{2028}"#
        );
        assert_eq!(format!("{:?}", Untrusted("x\n")), r#""x\n""#);
    }

    #[test]
    fn long_text_is_capped_with_an_ellipsis() {
        let long = "é".repeat(200);
        let shown = Untrusted(&long).to_string();
        assert_eq!(shown.chars().count(), MAX_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(Untrusted("acme-mp").to_string(), "acme-mp");
    }

    proptest::proptest! {
        #[test]
        fn nothing_written_can_break_a_line(s in ".*") {
            let shown = Untrusted(&s).to_string();
            proptest::prop_assert!(!shown.chars().any(|c| c.is_control() || is_line_break(c)));
        }
    }
}
