//! Conversions between the auto-reply messages of `gateway.proto` (issue 8) and the domain's
//! rules and replies, at the door of the `Gateway` service: a missing or unknown field is an
//! `INVALID_ARGUMENT` naming it, like the admin API's 400.

use crate::domain::autoreply::{Matcher, Reply, Rule};
use crate::error::AdminError;
use crate::pb::{self, reply_content};
use crate::services::autoreply::StoredRule;

pub(crate) fn reply_from_pb(r: pb::ReplyContent, at: &str) -> Result<Reply, AdminError> {
    Ok(match r.content {
        Some(reply_content::Content::Text(t)) => Reply::Text { content: t.content },
        Some(reply_content::Content::Image(i)) => Reply::Image {
            media_id: i.media_id,
        },
        Some(reply_content::Content::News(n)) => Reply::News {
            title: n.title,
            description: n.description,
            pic_url: n.pic_url,
            url: n.url,
        },
        None => {
            return Err(AdminError::Validation(format!(
                "{at}: set text, image or news"
            )))
        }
    })
}

fn reply_to_pb(r: &Reply) -> pb::ReplyContent {
    let content = match r {
        Reply::Text { content } => reply_content::Content::Text(pb::TextContent {
            content: content.clone(),
        }),
        Reply::Image { media_id } => reply_content::Content::Image(pb::ImageContent {
            media_id: media_id.clone(),
        }),
        Reply::News {
            title,
            description,
            pic_url,
            url,
        } => reply_content::Content::News(pb::NewsArticle {
            title: title.clone(),
            description: description.clone(),
            pic_url: pic_url.clone(),
            url: url.clone(),
        }),
    };
    pb::ReplyContent {
        content: Some(content),
    }
}

pub(crate) fn rule_from_pb(r: pb::ReplyRule) -> Result<Rule, AdminError> {
    let value = r.match_value;
    let matcher = match r.match_kind.as_str() {
        "exact" => Matcher::Exact(value),
        "prefix" => Matcher::Prefix(value),
        "contains" => Matcher::Contains(value),
        "regex" => Matcher::Regex(value),
        "click" => Matcher::Click(value),
        other => {
            return Err(AdminError::Validation(format!(
                "rule.match_kind: {other:?} is not exact, prefix, contains, regex or click"
            )))
        }
    };
    let reply = reply_from_pb(
        r.reply
            .ok_or_else(|| AdminError::Validation("rule.reply: set text, image or news".into()))?,
        "rule.reply",
    )?;
    Ok(Rule {
        id: r.id,
        matcher,
        reply,
        priority: r.priority,
        enabled: r.enabled.unwrap_or(true),
    })
}

pub(crate) fn rule_to_pb(s: &StoredRule) -> pb::ReplyRule {
    let (kind, value) = match &s.rule.matcher {
        Matcher::Exact(v) => ("exact", v),
        Matcher::Prefix(v) => ("prefix", v),
        Matcher::Contains(v) => ("contains", v),
        Matcher::Regex(v) => ("regex", v),
        Matcher::Click(v) => ("click", v),
    };
    pb::ReplyRule {
        id: s.rule.id.clone(),
        match_kind: kind.to_owned(),
        match_value: value.clone(),
        reply: Some(reply_to_pb(&s.rule.reply)),
        priority: s.rule.priority,
        enabled: Some(s.rule.enabled),
        created_at_ms: s.created_at_ms as i64,
        updated_at_ms: s.updated_at_ms as i64,
        actor: s.actor.clone(),
    }
}
