//! Template messages and subscription notices, checked before any call to WeChat: the fields a
//! template names (`{{name.DATA}}` in its content), the values given for them, the jump (a
//! URL, or a mini program page), and the audience.
//!
//! Value limits by the field's type, the name without its trailing number (`thing1` is a
//! `thing`), as WeChat documents them for subscription notices and the new-style template
//! keywords (developers.weixin.qq.com/doc/offiaccount/Subscription_Messages/api.html, "参数值
//! 内容限制"): thing 20 characters, number 32, letter 32, symbol 5, character_string 32,
//! phone_number 17, car_number 8, name 10 Chinese characters or 20 letters (20 here), phrase
//! 5, time/date/amount 32 (a formatted value). A legacy template field (`first`, `keyword1`,
//! `remark`) has no documented limit; 200 characters keeps a value reasonable.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::broadcast::is_open_id;

/// Which API a job sends through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateKind {
    /// `message/template/send`.
    Template,
    /// `message/subscribe/bizsend`.
    Subscribe,
}

/// Recipients of one job at most.
pub const MAX_RECIPIENTS: usize = 1_000_000;
/// A legacy field's limit (see the module documentation).
const LEGACY_LIMIT: usize = 200;

/// The fields a template's content names, in order, each once: `{{first.DATA}}` → `first`.
pub fn fields(content: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = content;
    while let Some(start) = rest.find("{{") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find("}}") else { break };
        let inner = &rest[..end];
        if let Some(name) = inner.strip_suffix(".DATA") {
            let name = name.trim();
            if !name.is_empty() && !out.iter().any(|f| f == name) {
                out.push(name.to_owned());
            }
        }
        rest = &rest[end + 2..];
    }
    out
}

/// The limit of a field's value in characters, by its type (see the module documentation).
pub fn value_limit(field: &str) -> usize {
    let kind = field.trim_end_matches(|c: char| c.is_ascii_digit());
    match kind {
        "thing" => 20,
        "number" | "letter" | "character_string" => 32,
        "symbol" | "phrase" => 5,
        "phone_number" => 17,
        "car_number" => 8,
        "name" => 20,
        "time" | "date" | "amount" => 32,
        _ => LEGACY_LIMIT,
    }
}

/// A request to send one template to many followers, as both transports parse it.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSend {
    pub kind: TemplateKind,
    pub template_id: String,
    /// Field → value (the `{"value": ...}` objects flattened; a plain string is accepted).
    pub data: BTreeMap<String, String>,
    /// `url` (template messages) or `page` (subscription notices).
    pub url: Option<String>,
    pub miniprogram: Option<(String, String)>,
    /// De-duplicated, order kept.
    pub open_ids: Vec<String>,
}

impl TemplateSend {
    /// Parses what can be checked without the account's templates.
    pub fn parse(
        kind: TemplateKind,
        template_id: &str,
        data: &Value,
        url: Option<&str>,
        miniprogram: Option<&Value>,
        open_ids: &[String],
    ) -> Result<Self, String> {
        if template_id.is_empty()
            || template_id.len() > 128
            || !template_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(
                "template_id must be 1 to 128 characters of letters, digits, '-' and '_'".into(),
            );
        }
        let Some(fields) = data.as_object() else {
            return Err("data must be an object: {\"field\": {\"value\": \"...\"}}".into());
        };
        let mut values = BTreeMap::new();
        for (name, v) in fields {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Object(o) => match o.get("value") {
                    Some(Value::String(s)) => s.clone(),
                    _ => return Err(format!("data.{name}.value must be a string")),
                },
                _ => return Err(format!("data.{name} must be {{\"value\": \"...\"}}")),
            };
            values.insert(name.clone(), value);
        }
        let url = url.map(str::to_owned);
        if let Some(u) = &url {
            check_url(kind, u)?;
        }
        let miniprogram = match miniprogram {
            None | Some(Value::Null) => None,
            Some(mp) => {
                let appid = mp.get("appid").and_then(Value::as_str).unwrap_or_default();
                let page = mp
                    .get("pagepath")
                    .or_else(|| mp.get("page"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !(appid.len() == 18
                    && appid.starts_with("wx")
                    && appid.bytes().all(|b| b.is_ascii_alphanumeric()))
                {
                    return Err("miniprogram.appid must be a mini program appid (wx and 16 \
                                letters or digits)"
                        .into());
                }
                if page.len() > 1024 {
                    return Err("miniprogram.pagepath is over 1024 characters".into());
                }
                Some((appid.to_owned(), page.to_owned()))
            }
        };
        let mut seen = std::collections::HashSet::new();
        let mut ids = Vec::new();
        for id in open_ids {
            if !is_open_id(id) {
                return Err(format!(
                    "audience.open_ids: {id:?} is not an openid (1 to 64 characters of \
                     letters, digits, '-' and '_')"
                ));
            }
            if seen.insert(id.as_str()) {
                ids.push(id.clone());
            }
        }
        if ids.is_empty() {
            return Err("audience.open_ids must name at least one follower".into());
        }
        if ids.len() > MAX_RECIPIENTS {
            return Err(format!(
                "audience.open_ids: at most {MAX_RECIPIENTS} followers in one job"
            ));
        }
        Ok(Self {
            kind,
            template_id: template_id.to_owned(),
            data: values,
            url,
            miniprogram,
            open_ids: ids,
        })
    }

    /// Checks the values against the template's fields (from its content): every field given,
    /// none unknown, each within its limit.
    pub fn check_fields(&self, template_fields: &[String]) -> Result<(), String> {
        let missing: Vec<&str> = template_fields
            .iter()
            .filter(|f| !self.data.contains_key(*f))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "template {} needs data for {}",
                self.template_id,
                missing.join(", ")
            ));
        }
        if let Some(extra) = self.data.keys().find(|k| !template_fields.contains(k)) {
            return Err(format!(
                "template {} has no field {extra:?} (its fields: {})",
                self.template_id,
                template_fields.join(", ")
            ));
        }
        for (name, value) in &self.data {
            let limit = value_limit(name);
            let n = value.chars().count();
            if n > limit {
                return Err(format!(
                    "data.{name} is {n} characters; a {} value has at most {limit}",
                    name.trim_end_matches(|c: char| c.is_ascii_digit())
                ));
            }
            if self.kind == TemplateKind::Subscribe && value.is_empty() {
                return Err(format!("data.{name} is empty"));
            }
        }
        Ok(())
    }

    /// The message as WeChat's API takes it, without `touser` (and `client_msg_id`).
    pub fn wire(&self) -> Value {
        let mut m = Map::new();
        m.insert("template_id".into(), json!(self.template_id));
        let data: Map<String, Value> = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), json!({ "value": v })))
            .collect();
        m.insert("data".into(), Value::Object(data));
        if let Some(url) = &self.url {
            let key = match self.kind {
                TemplateKind::Template => "url",
                TemplateKind::Subscribe => "page",
            };
            m.insert(key.into(), json!(url));
        }
        if let Some((appid, page)) = &self.miniprogram {
            m.insert(
                "miniprogram".into(),
                json!({"appid": appid, "pagepath": page}),
            );
        }
        Value::Object(m)
    }
}

fn check_url(kind: TemplateKind, url: &str) -> Result<(), String> {
    let what = match kind {
        TemplateKind::Template => "url",
        TemplateKind::Subscribe => "page",
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
    match host {
        Some(h) if !h.is_empty() && url.len() <= 1024 && !url.chars().any(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(format!(
            "{what} must be an http:// or https:// URL with a host, at most 1024 characters"
        )),
    }
}

/// The `client_msg_id` of one recipient's `template/send`: WeChat de-duplicates on openid and
/// client_msg_id for 10 minutes, so each recipient of a job gets its own stable id, derived
/// from the job (its caller's `client_msg_id`, or its id) and the openid. 40 hex characters.
pub fn recipient_client_msg_id(job_key: &str, open_id: &str) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(job_key.as_bytes());
    h.update(b"\n");
    h.update(open_id.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_the_content() {
        // The shape of the documented get_all_private_template example (Template_Message_
        // Interface.html, "获取模板列表"): a title line, labelled keywords, a remark.
        let content = "{{result.DATA}}\n\n领奖金额:{{withdrawMoney.DATA}}\n领奖时间:{{withdrawTime.DATA}}\n银行信息:{{cardInfo.DATA}}\n到账时间:{{arrivedTime.DATA}}\n{{remark.DATA}}";
        assert_eq!(
            fields(content),
            [
                "result",
                "withdrawMoney",
                "withdrawTime",
                "cardInfo",
                "arrivedTime",
                "remark"
            ]
        );
        assert_eq!(fields("{{thing1.DATA}} {{thing1.DATA}} {{x}}"), ["thing1"]);
    }

    #[test]
    fn values_are_checked_by_their_type() {
        let send = |data: Value| {
            TemplateSend::parse(
                TemplateKind::Subscribe,
                "tmpl-1",
                &data,
                None,
                None,
                &["o1".to_owned()],
            )
            .unwrap()
        };
        let fields = vec!["thing1".to_owned(), "time2".to_owned()];
        assert!(
            send(json!({"thing1": {"value": "a"}, "time2": {"value": "12:00"}}))
                .check_fields(&fields)
                .is_ok()
        );
        let long = send(json!({"thing1": {"value": "一".repeat(21)}, "time2": "12:00"}));
        assert!(long
            .check_fields(&fields)
            .unwrap_err()
            .contains("at most 20"));
        let missing = send(json!({"thing1": "a"}));
        assert!(missing.check_fields(&fields).unwrap_err().contains("time2"));
        let extra = send(json!({"thing1": "a", "time2": "b", "x": "c"}));
        assert!(extra.check_fields(&fields).is_err());
    }

    #[test]
    fn urls_miniprograms_and_audiences_are_checked() {
        let ids = vec!["o1".to_owned(), "o1".to_owned(), "o2".to_owned()];
        let ok = TemplateSend::parse(
            TemplateKind::Template,
            "t",
            &json!({}),
            Some("https://example.com/a?b=1"),
            Some(&json!({"appid": "wx0123456789abcdef", "pagepath": "index?x=1"})),
            &ids,
        )
        .unwrap();
        assert_eq!(ok.open_ids, ["o1", "o2"]);
        assert_eq!(ok.wire()["miniprogram"]["appid"], "wx0123456789abcdef");
        assert_eq!(ok.wire()["url"], "https://example.com/a?b=1");
        for url in ["ftp://x", "https://", "example.com", "https://a b"] {
            assert!(
                TemplateSend::parse(
                    TemplateKind::Template,
                    "t",
                    &json!({}),
                    Some(url),
                    None,
                    &ids
                )
                .is_err(),
                "{url}"
            );
        }
        assert!(TemplateSend::parse(
            TemplateKind::Template,
            "t",
            &json!({}),
            None,
            Some(&json!({"appid": "nope"})),
            &ids
        )
        .is_err());
        assert!(
            TemplateSend::parse(TemplateKind::Template, "t", &json!({}), None, None, &[]).is_err()
        );
        assert!(TemplateSend::parse(
            TemplateKind::Template,
            "t",
            &json!({}),
            None,
            None,
            &["bad id".to_owned()]
        )
        .is_err());
    }

    #[test]
    fn each_recipient_has_its_own_stable_client_msg_id() {
        let a = recipient_client_msg_id("job", "o1");
        assert_eq!(a, recipient_client_msg_id("job", "o1"));
        assert_ne!(a, recipient_client_msg_id("job", "o2"));
        assert_ne!(a, recipient_client_msg_id("job2", "o1"));
        assert_eq!(a.len(), 40);
    }
}
