//! Keyword auto-replies: rules per account, evaluated in-process on the callback path so that
//! the answer can carry the reply (WeChat waits at most 5 seconds, and a passive reply is free:
//! it costs no customer-service message quota). No I/O here.
//!
//! A rule matches a text message (exact, prefix, contains or a regular expression) or a menu
//! CLICK key, and answers with a text, an image or a news reply. The enabled rule with the
//! highest priority wins; equal priorities go to the rule given first (the service hands them
//! over oldest first, so the rule created first). Regular expressions use
//! the `regex` crate: linear time, so no rule can stall a callback, with a size limit on
//! compilation.

use serde::{Deserialize, Serialize};

use crate::pb;
use crate::pb::event::Kind;

/// Longest text reply content, in bytes (WeChat's passive reply limit is 2048 bytes).
pub const MAX_TEXT_REPLY: usize = 2048;
/// Longest pattern, in bytes.
pub const MAX_PATTERN: usize = 512;
/// Longest media_id WeChat issues is 64 characters; leave room.
pub const MAX_MEDIA_ID: usize = 128;
/// Longest rule id: it travels in `Event.reply_rule_id` and in the admin URL.
pub const MAX_RULE_ID: usize = 64;

/// How a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Matcher {
    /// The whole text, trimmed, equals the value (trimmed), ignoring case.
    Exact(String),
    /// The trimmed text starts with the value (trimmed), ignoring case.
    Prefix(String),
    /// The text contains the value, ignoring case.
    Contains(String),
    /// The text matches this regular expression (`regex` syntax).
    Regex(String),
    /// A menu CLICK (or WeCom click) with this key.
    Click(String),
}

/// What a rule answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Text {
        content: String,
    },
    Image {
        media_id: String,
    },
    /// One article (WeChat shows one article for a passive news reply to a message since 2018).
    News {
        title: String,
        #[serde(default)]
        description: String,
        #[serde(default)]
        pic_url: String,
        url: String,
    },
}

/// One rule as stored and as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rule {
    pub id: String,
    #[serde(rename = "match")]
    pub matcher: Matcher,
    pub reply: Reply,
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

impl Rule {
    /// Every problem with this rule, for the admin API's 400 answer.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = check_rule_id(&self.id) {
            problems.push(e);
        }
        let pattern = match &self.matcher {
            Matcher::Exact(p) | Matcher::Prefix(p) | Matcher::Contains(p) | Matcher::Click(p) => p,
            Matcher::Regex(p) => {
                if let Err(e) = compile(p) {
                    problems.push(format!(
                        "match.value is not a usable regular expression: {e}"
                    ));
                }
                p
            }
        };
        if pattern.trim().is_empty() {
            problems.push("match.value must not be empty".to_owned());
        }
        if pattern.len() > MAX_PATTERN {
            problems.push(format!("match.value is at most {MAX_PATTERN} bytes"));
        }
        problems.extend(self.reply.problems("reply"));
        problems
    }
}

/// A rule id: 1 to 64 of `[A-Za-z0-9_-]`, so that it is safe in a URL path and can never be
/// mistaken for a welcome (`welcome:<scene>`) in `Event.reply_rule_id`.
pub fn check_rule_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_RULE_ID {
        return Err(format!("id must be 1 to {MAX_RULE_ID} characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "id {id:?} may contain only letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

impl Reply {
    /// Every problem with this reply; `at` names it in the messages (`reply`, `welcome`).
    pub fn problems(&self, at: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match self {
            Self::Text { content } if content.trim().is_empty() => {
                problems.push(format!("{at}.text.content must not be empty"))
            }
            Self::Text { content } if content.len() > MAX_TEXT_REPLY => problems.push(format!(
                "{at}.text.content is at most {MAX_TEXT_REPLY} bytes, not {}",
                content.len()
            )),
            Self::Image { media_id } if media_id.is_empty() || media_id.len() > MAX_MEDIA_ID => {
                problems.push(format!(
                    "{at}.image.media_id must be 1 to {MAX_MEDIA_ID} characters"
                ))
            }
            Self::News {
                title,
                url,
                pic_url,
                ..
            } => {
                if title.is_empty() || url.is_empty() {
                    problems.push(format!("{at}.news needs a title and a url"));
                }
                if !url.is_empty() && !is_web_url(url) {
                    problems.push(format!("{at}.news.url must start with http:// or https://"));
                }
                if !pic_url.is_empty() && !is_web_url(pic_url) {
                    problems.push(format!(
                        "{at}.news.pic_url must start with http:// or https://"
                    ));
                }
            }
            _ => {}
        }
        problems
    }
}

fn is_web_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

fn compile(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
}

enum Compiled {
    Exact(String),
    Prefix(String),
    Contains(String),
    Regex(regex::Regex),
    Click(String),
}

/// The rules of one account, compiled once when they change; evaluation allocates only to
/// lower-case the message text.
pub struct RuleSet {
    /// Enabled rules, highest priority first.
    rules: Vec<(Compiled, Rule)>,
}

impl RuleSet {
    /// Compiles the enabled rules. A rule that does not compile (it could only come from a
    /// store written by another version) is skipped with a warning: a broken rule never breaks
    /// the callback.
    pub fn new(mut rules: Vec<Rule>) -> Self {
        // Stable sort: equal priorities keep the order given (oldest first).
        rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
        let rules = rules
            .into_iter()
            .filter(|r| r.enabled)
            .filter_map(|r| {
                let compiled = match &r.matcher {
                    Matcher::Exact(p) => Compiled::Exact(p.trim().to_lowercase()),
                    Matcher::Prefix(p) => Compiled::Prefix(p.trim().to_lowercase()),
                    Matcher::Contains(p) => Compiled::Contains(p.to_lowercase()),
                    Matcher::Click(k) => Compiled::Click(k.clone()),
                    Matcher::Regex(p) => match compile(p) {
                        Ok(re) => Compiled::Regex(re),
                        Err(e) => {
                            tracing::warn!(rule = %r.id, error = %e, "auto-reply rule skipped");
                            return None;
                        }
                    },
                };
                Some((compiled, r))
            })
            .collect();
        Self { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule that answers this event, if any.
    pub fn evaluate(&self, event: &pb::Event) -> Option<&Rule> {
        if self.rules.is_empty() {
            // Every account has a snapshot, most with no rule: no lowercase copy for them.
            return None;
        }
        match &event.kind {
            Some(Kind::Text(t)) => {
                let text = t.content.to_lowercase();
                let trimmed = text.trim();
                self.rules.iter().find_map(|(c, r)| {
                    let hit = match c {
                        Compiled::Exact(p) => trimmed == p,
                        Compiled::Prefix(p) => trimmed.starts_with(p.as_str()),
                        Compiled::Contains(p) => text.contains(p.as_str()),
                        // Case as written: a pattern can say (?i) itself.
                        Compiled::Regex(re) => re.is_match(&t.content),
                        Compiled::Click(_) => false,
                    };
                    hit.then_some(r)
                })
            }
            Some(Kind::MenuClick(click)) => self.rules.iter().find_map(|(c, r)| match c {
                Compiled::Click(k) if *k == click.key => Some(r),
                _ => None,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, matcher: Matcher, priority: i32) -> Rule {
        Rule {
            id: id.into(),
            matcher,
            reply: Reply::Text {
                content: format!("reply {id}"),
            },
            priority,
            enabled: true,
        }
    }

    fn text(content: &str) -> pb::Event {
        pb::Event {
            kind: Some(Kind::Text(pb::TextMessage {
                msg_id: 1,
                content: content.into(),
            })),
            ..Default::default()
        }
    }

    fn click(key: &str) -> pb::Event {
        pb::Event {
            kind: Some(Kind::MenuClick(pb::MenuClick { key: key.into() })),
            ..Default::default()
        }
    }

    fn answer<'a>(set: &'a RuleSet, e: &pb::Event) -> Option<&'a str> {
        set.evaluate(e).map(|r| r.id.as_str())
    }

    #[test]
    fn each_matcher_matches_what_it_says() {
        let set = RuleSet::new(vec![
            rule("exact", Matcher::Exact("报价".into()), 0),
            rule("prefix", Matcher::Prefix("demo".into()), 0),
            rule("contains", Matcher::Contains("白皮书".into()), 0),
            rule("regex", Matcher::Regex(r"^\d{11}$".into()), 0),
            rule("click", Matcher::Click("V1001_GOOD".into()), 0),
        ]);
        assert_eq!(answer(&set, &text(" 报价 ")), Some("exact"));
        assert_eq!(answer(&set, &text("报价多少")), None);
        assert_eq!(answer(&set, &text("DEMO please")), Some("prefix"));
        assert_eq!(answer(&set, &text("想下载白皮书，谢谢")), Some("contains"));
        assert_eq!(answer(&set, &text("13800138000")), Some("regex"));
        assert_eq!(answer(&set, &text("1380013800")), None);
        assert_eq!(answer(&set, &click("V1001_GOOD")), Some("click"));
        assert_eq!(answer(&set, &click("OTHER")), None);
        // A click key never answers a text, and a keyword never answers a click.
        assert_eq!(answer(&set, &text("V1001_GOOD")), None);
        assert_eq!(answer(&set, &pb::Event::default()), None);
    }

    #[test]
    fn the_highest_priority_enabled_rule_wins_and_ties_go_to_the_first() {
        let mut off = rule("off", Matcher::Contains("hi".into()), 100);
        off.enabled = false;
        let set = RuleSet::new(vec![
            rule("low", Matcher::Contains("hi".into()), 1),
            off,
            rule("first", Matcher::Contains("hi".into()), 5),
            rule("second", Matcher::Contains("hi".into()), 5),
        ]);
        assert_eq!(answer(&set, &text("hi there")), Some("first"));
    }

    #[test]
    fn a_broken_rule_is_reported_and_skipped_never_fatal() {
        let bad = rule("bad", Matcher::Regex("(unclosed".into()), 10);
        assert!(bad.problems()[0].contains("regular expression"));
        let set = RuleSet::new(vec![bad, rule("good", Matcher::Contains("x".into()), 0)]);
        assert_eq!(answer(&set, &text("x")), Some("good"));
    }

    #[test]
    fn rule_problems_name_the_rule_broken() {
        let mut r = rule("", Matcher::Exact(" ".into()), 0);
        r.reply = Reply::Text {
            content: "长".repeat(700),
        };
        let problems = r.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[2].contains("2048 bytes"));
        let mut news = rule("n", Matcher::Click("K".into()), 0);
        news.reply = Reply::News {
            title: "t".into(),
            description: String::new(),
            pic_url: String::new(),
            url: "javascript:alert(1)".into(),
        };
        assert_eq!(
            news.problems(),
            ["reply.news.url must start with http:// or https://"]
        );
        // An id never looks like a welcome's origin, and stays URL-safe.
        let mut r = rule("welcome:spring", Matcher::Click("K".into()), 0);
        assert!(
            r.problems()[0].contains("only letters"),
            "{:?}",
            r.problems()
        );
        r.id = "spring-2026_a".into();
        assert!(r.problems().is_empty());
        r.reply = Reply::Image {
            media_id: String::new(),
        };
        assert_eq!(
            r.problems(),
            ["reply.image.media_id must be 1 to 128 characters"]
        );
    }

    #[test]
    fn rules_round_trip_through_their_json_shape() {
        let json = serde_json::json!({
            "id": "r1", "match": {"kind": "prefix", "value": "价格"},
            "reply": {"text": {"content": "请留下电话"}}, "priority": 3
        });
        let r: Rule = serde_json::from_value(json.clone()).unwrap();
        assert!(r.enabled);
        assert_eq!(r.matcher, Matcher::Prefix("价格".into()));
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["match"], json["match"]);
        assert_eq!(back["reply"], json["reply"]);
    }
}
