//! Menu validation: every rule WeChat applies to a custom menu, checked locally and completely
//! before anything is published, each problem reported with the JSON path of the button and a
//! message that names the rule. WeChat itself answers only "invalid button" (40016..40027),
//! one problem at a time, after the fact.
//!
//! The menu stays in WeChat's own JSON shape (`{"button": [...]}`), so fields this module does
//! not know are passed through untouched.
//!
//! Sources: Official Account 自定义菜单/创建接口 (button counts, 16/60-byte names, 128-byte
//! keys, 1024-byte URLs, the twelve button types and their fields), 个性化菜单接口 (matchrule;
//! sex, country, province, city and language are no longer accepted: errcode 65320), and the
//! WeCom 应用菜单 page (16/40-byte names, its own nine types, `view_miniprogram`).

use serde::Serialize;
use serde_json::{Map, Value};

/// Which product's menu rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MenuFlavor {
    /// An Official Account menu (`menu/create`).
    Mp,
    /// A WeCom application menu (`menu/create?agentid=`).
    Work,
}

/// One broken rule, at `path` (`button[1].sub_button[4].url`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = MenuProblem)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

const MAX_TOP: usize = 3;
const MAX_SUB: usize = 5;
const MAX_TOP_NAME: usize = 16;
const MAX_KEY: usize = 128;
const MAX_URL: usize = 1024;

impl MenuFlavor {
    fn max_sub_name(self) -> usize {
        match self {
            Self::Mp => 60,
            Self::Work => 40,
        }
    }

    /// The fields a button of `kind` must carry, or `None` for a type this product lacks.
    fn required_fields(self, kind: &str) -> Option<&'static [&'static str]> {
        let common: Option<&'static [&'static str]> = match kind {
            "click" | "scancode_push" | "scancode_waitmsg" | "pic_sysphoto"
            | "pic_photo_or_album" | "pic_weixin" | "location_select" => Some(&["key"]),
            "view" => Some(&["url"]),
            _ => None,
        };
        match (self, kind) {
            (_, _) if common.is_some() => common,
            (Self::Mp, "media_id") => Some(&["media_id"]),
            (Self::Mp, "article_id" | "article_view_limited") => Some(&["article_id"]),
            (Self::Mp, "miniprogram") => Some(&["appid", "pagepath", "url"]),
            (Self::Work, "view_miniprogram") => Some(&["appid", "pagepath"]),
            _ => None,
        }
    }

    fn types(self) -> &'static str {
        match self {
            Self::Mp => {
                "click, view, scancode_push, scancode_waitmsg, pic_sysphoto, pic_photo_or_album, \
                 pic_weixin, location_select, media_id, article_id, article_view_limited, \
                 miniprogram"
            }
            Self::Work => {
                "click, view, scancode_push, scancode_waitmsg, pic_sysphoto, pic_photo_or_album, \
                 pic_weixin, location_select, view_miniprogram"
            }
        }
    }
}

struct Checker {
    flavor: MenuFlavor,
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn buttons(&mut self, menu: &Value) {
        let Some(obj) = menu.as_object() else {
            self.problem("", "a menu is a JSON object with a \"button\" array");
            return;
        };
        let Some(buttons) = obj.get("button") else {
            self.problem(
                "button",
                "a menu needs a \"button\" array of 1 to 3 buttons",
            );
            return;
        };
        let Some(buttons) = buttons.as_array() else {
            self.problem("button", "\"button\" must be an array of 1 to 3 buttons");
            return;
        };
        if buttons.is_empty() || buttons.len() > MAX_TOP {
            self.problem(
                "button",
                format!(
                    "a menu has 1 to {MAX_TOP} top-level buttons, not {}",
                    buttons.len()
                ),
            );
        }
        for (i, button) in buttons.iter().enumerate() {
            self.button(&format!("button[{i}]"), button, true);
        }
    }

    fn button(&mut self, path: &str, button: &Value, top: bool) {
        let Some(b) = button.as_object() else {
            self.problem(path, "a button is a JSON object");
            return;
        };
        let max_name = if top {
            MAX_TOP_NAME
        } else {
            self.flavor.max_sub_name()
        };
        match b.get("name").map(|n| n.as_str()) {
            None => self.problem(format!("{path}.name"), "every button needs a name"),
            Some(None) => self.problem(format!("{path}.name"), "name must be a string"),
            Some(Some("")) => self.problem(format!("{path}.name"), "name must not be empty"),
            Some(Some(name)) if name.len() > max_name => self.problem(
                format!("{path}.name"),
                format!(
                    "{} names are at most {max_name} bytes in UTF-8 (a Chinese character is 3); \
                     {name:?} is {} bytes",
                    if top { "top-level" } else { "sub-button" },
                    name.len()
                ),
            ),
            Some(Some(_)) => {}
        }
        let subs = b.get("sub_button");
        // WeChat's own `menu/get` answers carry `"sub_button": []` on leaf buttons.
        let has_subs = subs
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty());
        if has_subs && !top {
            self.problem(
                format!("{path}.sub_button"),
                "menus have two levels: a sub-button cannot have sub-buttons",
            );
            return;
        }
        if let Some(subs) = subs {
            if !subs.is_array() {
                self.problem(
                    format!("{path}.sub_button"),
                    "sub_button must be an array of 1 to 5 buttons",
                );
                return;
            }
        }
        if has_subs {
            let subs = subs.and_then(Value::as_array).expect("checked above");
            if subs.len() > MAX_SUB {
                self.problem(
                    format!("{path}.sub_button"),
                    format!(
                        "a button has 1 to {MAX_SUB} sub-buttons, not {}",
                        subs.len()
                    ),
                );
            }
            if b.contains_key("type") {
                self.problem(
                    format!("{path}.type"),
                    "a button with sub-buttons opens them and carries no type",
                );
            }
            for (i, sub) in subs.iter().enumerate() {
                self.button(&format!("{path}.sub_button[{i}]"), sub, false);
            }
            return;
        }
        self.leaf(path, b);
    }

    fn leaf(&mut self, path: &str, b: &Map<String, Value>) {
        let Some(kind) = b.get("type") else {
            self.problem(
                format!("{path}.type"),
                "a button without sub-buttons needs a type",
            );
            return;
        };
        let Some(kind) = kind.as_str() else {
            self.problem(format!("{path}.type"), "type must be a string");
            return;
        };
        let Some(required) = self.flavor.required_fields(kind) else {
            let types = self.flavor.types();
            self.problem(
                format!("{path}.type"),
                format!("unknown button type {kind:?}; the types are: {types}"),
            );
            return;
        };
        for field in required {
            match b.get(*field).map(Value::as_str) {
                None => self.problem(
                    format!("{path}.{field}"),
                    format!("a {kind} button needs {field}"),
                ),
                Some(None) | Some(Some("")) => self.problem(
                    format!("{path}.{field}"),
                    format!("{field} must be a non-empty string"),
                ),
                Some(Some(_)) => {}
            }
        }
        if let Some(key) = b.get("key").and_then(Value::as_str) {
            if key.len() > MAX_KEY {
                self.problem(
                    format!("{path}.key"),
                    format!("key is at most {MAX_KEY} bytes, not {}", key.len()),
                );
            }
        }
        if let Some(url) = b.get("url").and_then(Value::as_str) {
            if url.len() > MAX_URL {
                self.problem(
                    format!("{path}.url"),
                    format!("url is at most {MAX_URL} bytes, not {}", url.len()),
                );
            }
            let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
            let http = lower.starts_with("http://") || lower.starts_with("https://");
            if !url.is_empty() && !http {
                self.problem(
                    format!("{path}.url"),
                    format!("url must start with http:// or https://, not {url:?}"),
                );
            }
        }
    }

    fn matchrule(&mut self, rule: Option<&Value>) {
        let Some(rule) = rule else {
            self.problem(
                "matchrule",
                "a conditional menu needs a matchrule (tag_id and/or client_platform_type)",
            );
            return;
        };
        let Some(rule) = rule.as_object() else {
            self.problem("matchrule", "matchrule must be a JSON object");
            return;
        };
        let mut fields = 0;
        for (name, value) in rule {
            let path = format!("matchrule.{name}");
            let blank = value.is_null() || value.as_str() == Some("");
            match name.as_str() {
                "tag_id" | "group_id" | "client_platform_type" if !blank => {
                    fields += 1;
                    let ok = match value {
                        Value::String(s) => !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()),
                        Value::Number(n) => n.as_u64().is_some(),
                        _ => false,
                    };
                    if !ok {
                        self.problem(path, format!("{name} must be a number, not {value}"));
                    } else if name == "client_platform_type" {
                        let n = value
                            .as_u64()
                            .or_else(|| value.as_str().and_then(|s| s.parse().ok()));
                        if !matches!(n, Some(1..=3)) {
                            self.problem(
                                path,
                                "client_platform_type is 1 (iOS), 2 (Android) or 3 (others)",
                            );
                        }
                    }
                }
                "tag_id" | "group_id" | "client_platform_type" => {}
                "sex" | "country" | "province" | "city" | "language" if !blank => {
                    self.problem(
                        path,
                        format!(
                            "WeChat no longer accepts {name} in a matchrule (errcode 65320); \
                             match on tag_id or client_platform_type instead"
                        ),
                    );
                }
                "sex" | "country" | "province" | "city" | "language" => {}
                _ => self.problem(
                    path,
                    format!("unknown matchrule field {name:?}; use tag_id or client_platform_type"),
                ),
            }
        }
        if fields == 0
            && !self
                .problems
                .iter()
                .any(|p| p.path.starts_with("matchrule."))
        {
            self.problem(
                "matchrule",
                "a matchrule needs at least one of tag_id and client_platform_type",
            );
        }
    }
}

/// Checks a default menu. Empty when it is valid.
pub fn validate_menu(menu: &Value, flavor: MenuFlavor) -> Vec<Problem> {
    let mut c = Checker {
        flavor,
        problems: Vec::new(),
    };
    c.buttons(menu);
    c.problems
}

/// Checks a conditional (personalised) menu: the buttons and its `matchrule`. Official
/// Accounts only: WeCom applications have no conditional menus.
pub fn validate_conditional_menu(menu: &Value) -> Vec<Problem> {
    let mut c = Checker {
        flavor: MenuFlavor::Mp,
        problems: Vec::new(),
    };
    c.buttons(menu);
    c.matchrule(menu.get("matchrule"));
    c.problems
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    /// The example of WeChat's 自定义菜单/创建接口 page (as also reproduced in many SDK docs).
    fn documented_example() -> Value {
        json!({"button": [
            {"type": "click", "name": "今日歌曲", "key": "V1001_TODAY_MUSIC"},
            {"name": "菜单", "sub_button": [
                {"type": "view", "name": "搜索", "url": "http://www.soso.com/"},
                {"type": "miniprogram", "name": "wxa", "url": "http://mp.weixin.qq.com",
                 "appid": "wx286b93c14bbf93aa", "pagepath": "pages/lunar/index"},
                {"type": "click", "name": "赞一下我们", "key": "V1001_GOOD"}
            ]}
        ]})
    }

    #[test]
    fn the_documented_example_menu_is_valid() {
        assert_eq!(validate_menu(&documented_example(), MenuFlavor::Mp), []);
    }

    #[test]
    fn every_documented_button_type_with_its_fields_is_valid() {
        let menu = json!({"button": [
            {"name": "a", "sub_button": [
                {"type": "scancode_push", "name": "1", "key": "k1", "sub_button": []},
                {"type": "scancode_waitmsg", "name": "2", "key": "k2"},
                {"type": "pic_sysphoto", "name": "3", "key": "k3"},
                {"type": "pic_photo_or_album", "name": "4", "key": "k4"},
                {"type": "pic_weixin", "name": "5", "key": "k5"}
            ]},
            {"name": "b", "sub_button": [
                {"type": "location_select", "name": "1", "key": "k6"},
                {"type": "media_id", "name": "2", "media_id": "MEDIA"},
                {"type": "article_id", "name": "3", "article_id": "ART"},
                {"type": "article_view_limited", "name": "4", "article_id": "ART2"}
            ]},
            {"type": "view", "name": "c", "url": "https://example.com/x"}
        ]});
        assert_eq!(validate_menu(&menu, MenuFlavor::Mp), []);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path() {
        let menu = json!({"button": [
            {"type": "click", "name": "一二三四五六", "key": "k"},
            {"name": "m", "type": "click", "sub_button": [
                {"type": "view", "name": "a", "url": "ftp://example.com"},
                {"type": "click", "name": "b"},
                {"type": "miniprogram", "name": "c", "appid": "wx1", "pagepath": "p"},
                {"type": "teleport", "name": "d"},
                {"type": "click", "name": "e", "key": "k".repeat(129)},
                {"type": "view", "name": "f", "url": format!("https://x/{}", "a".repeat(1020))}
            ]},
            {"type": "click", "key": "k"},
            {"type": "view", "name": "x", "url": "https://x"}
        ]});
        let problems = validate_menu(&menu, MenuFlavor::Mp);
        assert_eq!(
            paths(&problems),
            [
                "button",
                "button[0].name",
                "button[1].sub_button",
                "button[1].type",
                "button[1].sub_button[0].url",
                "button[1].sub_button[1].key",
                "button[1].sub_button[2].url",
                "button[1].sub_button[3].type",
                "button[1].sub_button[4].key",
                "button[1].sub_button[5].url",
                "button[2].name",
            ],
            "{problems:#?}"
        );
        assert!(problems[1].message.contains("16 bytes"));
        assert!(problems[1].message.contains("18 bytes"));
        assert!(problems[7].message.contains("teleport"));
    }

    #[test]
    fn names_are_measured_in_utf8_bytes_with_the_sub_button_limit_per_product() {
        // 20 Chinese characters = 60 bytes: the Official Account's sub-button limit exactly.
        let sixty = "菜".repeat(20);
        let menu = json!({"button": [{"name": "m", "sub_button": [
            {"type": "click", "name": sixty, "key": "k"}
        ]}]});
        assert_eq!(validate_menu(&menu, MenuFlavor::Mp), []);
        let problems = validate_menu(&menu, MenuFlavor::Work);
        assert_eq!(paths(&problems), ["button[0].sub_button[0].name"]);
        assert!(problems[0].message.contains("40 bytes"));
        // 6 characters = 18 bytes > 16 for a top-level button; 5 = 15 is fine.
        let top =
            |n: usize| json!({"button": [{"type": "click", "name": "菜".repeat(n), "key": "k"}]});
        assert_eq!(validate_menu(&top(5), MenuFlavor::Mp), []);
        assert_eq!(validate_menu(&top(6), MenuFlavor::Mp).len(), 1);
    }

    #[test]
    fn wecom_menus_have_their_own_types() {
        let menu = json!({"button": [
            {"type": "view_miniprogram", "name": "a", "appid": "wx1", "pagepath": "p"},
            {"type": "media_id", "name": "b", "media_id": "M"}
        ]});
        let problems = validate_menu(&menu, MenuFlavor::Work);
        assert_eq!(paths(&problems), ["button[1].type"]);
        let problems = validate_menu(&menu, MenuFlavor::Mp);
        assert_eq!(paths(&problems), ["button[0].type"]);
    }

    #[test]
    fn counts_and_shapes_are_checked() {
        let four = json!({"button": [
            {"type": "click", "name": "1", "key": "k"}, {"type": "click", "name": "2", "key": "k"},
            {"type": "click", "name": "3", "key": "k"}, {"type": "click", "name": "4", "key": "k"}
        ]});
        assert_eq!(paths(&validate_menu(&four, MenuFlavor::Mp)), ["button"]);
        assert_eq!(
            paths(&validate_menu(&json!({"button": []}), MenuFlavor::Mp)),
            ["button"]
        );
        assert_eq!(
            paths(&validate_menu(&json!({}), MenuFlavor::Mp)),
            ["button"]
        );
        assert_eq!(paths(&validate_menu(&json!([1]), MenuFlavor::Mp)), [""]);
        assert_eq!(
            paths(&validate_menu(
                &json!({"button": [{"name": "x"}]}),
                MenuFlavor::Mp
            )),
            ["button[0].type"]
        );
        let nested = json!({"button": [{"name": "m", "sub_button": [
            {"name": "n", "sub_button": [{"type": "click", "name": "x", "key": "k"}]}
        ]}]});
        assert_eq!(
            paths(&validate_menu(&nested, MenuFlavor::Mp)),
            ["button[0].sub_button[0].sub_button"]
        );
    }

    #[test]
    fn a_matchrule_accepts_tag_and_platform_and_refuses_what_wechat_no_longer_does() {
        let mut menu = documented_example();
        menu["matchrule"] = json!({"tag_id": "2", "client_platform_type": "2"});
        assert_eq!(validate_conditional_menu(&menu), []);
        menu["matchrule"] = json!({"tag_id": 2, "sex": "", "language": ""});
        assert_eq!(validate_conditional_menu(&menu), []);

        menu["matchrule"] = json!({"sex": "1", "city": "广州"});
        let problems = validate_conditional_menu(&menu);
        assert_eq!(paths(&problems), ["matchrule.city", "matchrule.sex"]);
        assert!(problems.iter().all(|p| p.message.contains("65320")));

        menu["matchrule"] = json!({});
        assert_eq!(paths(&validate_conditional_menu(&menu)), ["matchrule"]);
        menu["matchrule"] = json!({"client_platform_type": "7", "colour": "red"});
        assert_eq!(
            paths(&validate_conditional_menu(&menu)),
            ["matchrule.client_platform_type", "matchrule.colour"]
        );
        menu.as_object_mut().unwrap().remove("matchrule");
        assert_eq!(paths(&validate_conditional_menu(&menu)), ["matchrule"]);
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    /// Arbitrary JSON, biased towards the keys a menu has so that the checker goes deep.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("button".to_owned()),
            Just("sub_button".to_owned()),
            Just("name".to_owned()),
            Just("type".to_owned()),
            Just("key".to_owned()),
            Just("url".to_owned()),
            Just("appid".to_owned()),
            Just("pagepath".to_owned()),
            Just("matchrule".to_owned()),
            Just("tag_id".to_owned()),
            Just("client_platform_type".to_owned()),
            Just("sex".to_owned()),
            "\\PC{0,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            prop_oneof![
                Just("click".to_owned()),
                Just("view".to_owned()),
                Just("miniprogram".to_owned()),
                Just("https://example.com".to_owned()),
                "\\PC{0,70}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..7).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn validation_never_panics_and_every_problem_has_a_message(v in json_value()) {
            for problems in [
                validate_menu(&v, MenuFlavor::Mp),
                validate_menu(&v, MenuFlavor::Work),
                validate_conditional_menu(&v),
            ] {
                for p in problems {
                    prop_assert!(!p.message.is_empty());
                }
            }
        }

        #[test]
        fn a_valid_menu_stays_valid_inside_a_button_array(name in "[a-z0-9\u{4e00}-\u{9fa5}]{1,5}", key in "[A-Za-z0-9_]{1,128}") {
            let menu = json!({"button": [{"type": "click", "name": name, "key": key}]});
            prop_assert_eq!(validate_menu(&menu, MenuFlavor::Mp), vec![]);
        }
    }
}
