//! Menus: checked locally before anything reaches WeChat, published, versioned,
//! restored, deleted, conditional menus, WeCom application menus, drift, serialized changes, and
//! the gRPC `GetMenu`/`SetMenu`/`DeleteMenu`. WeChat is the fake of `support::fake_wechat`,
//! which keeps the menu as WeChat does.

use std::time::Duration;

use serde_json::{json, Value};
use wechat_gateway::pb::gateway_client::GatewayClient;
use wechat_gateway::pb::{DeleteMenuRequest, GetMenuRequest, SetMenuRequest};

use crate::support::app::{spawn_app, AppOptions, TestApp, MP_APP_ID, WORK_CORP_ID};
use crate::support::fake_wechat::{FakeWeChat, Injected};
use crate::support::redis::fresh_db_url;

const MENU_CREATE: &str = "/cgi-bin/menu/create";

/// An admin API call under `/admin/v1/accounts/`; status and JSON body.
async fn call(app: &TestApp, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    app.admin(method, &format!("/accounts/{path}"), body).await
}

async fn put_menu(app: &TestApp, account: &str, menu: &Value) -> (u16, Value) {
    call(app, "PUT", &format!("{account}/menu"), Some(menu)).await
}

async fn get_menu(app: &TestApp, account: &str) -> (u16, Value) {
    call(app, "GET", &format!("{account}/menu"), None).await
}

async fn versions(app: &TestApp, account: &str) -> Vec<Value> {
    let (status, body) = call(app, "GET", &format!("{account}/menu/versions"), None).await;
    assert_eq!(status, 200, "{body}");
    body["versions"].as_array().unwrap().clone()
}

async fn app_with_wechat(wechat: &FakeWeChat) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    (spawn_app(opts, dir.path()).await, dir)
}

/// The example of WeChat's 自定义菜单/创建接口 page.
fn spring_menu() -> Value {
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

fn summer_menu() -> Value {
    json!({"button": [
        {"type": "view", "name": "夏季活动", "url": "https://example.com/summer"},
        {"type": "scancode_push", "name": "扫一扫", "key": "SCAN"}
    ]})
}

fn button(kind: &str, name: &str, extra: Value) -> Value {
    let mut b = json!({"type": kind, "name": name});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn click(name: &str) -> Value {
    button("click", name, json!({"key": "K"}))
}

#[tokio::test]
async fn a_menu_breaking_any_rule_is_refused_with_every_problem_and_its_path_and_nothing_reaches_wechat(
) {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat).await;
    let subs = |n: usize| json!({"button": [{"name": "m", "sub_button": vec![click("s"); n]}]});
    // (menu, the path of the problem, words of its message)
    let cases = [
        (json!({"button": []}), "button", "1 to 3 top-level buttons"),
        (json!({"button": vec![click("x"); 4]}), "button", "not 4"),
        (subs(6), "button[0].sub_button", "1 to 5 sub-buttons"),
        (
            json!({"button": [click("一二三四五六")]}),
            "button[0].name",
            "16 bytes",
        ),
        (
            json!({"button": [{"name": "m", "sub_button": [click(&"菜".repeat(21))]}]}),
            "button[0].sub_button[0].name",
            "60 bytes",
        ),
        (
            json!({"button": [button("click", "k", json!({"key": "k".repeat(129)}))]}),
            "button[0].key",
            "128 bytes",
        ),
        (
            json!({"button": [button("view", "u", json!({"url": format!("https://x/{}", "a".repeat(1016))}))]}),
            "button[0].url",
            "1024 bytes",
        ),
        (
            json!({"button": [button("view", "u", json!({"url": "ftp://x"}))]}),
            "button[0].url",
            "http:// or https://",
        ),
        (
            json!({"button": [button("teleport", "t", json!({}))]}),
            "button[0].type",
            "unknown button type",
        ),
        (
            json!({"button": [button("click", "c", json!({}))]}),
            "button[0].key",
            "needs key",
        ),
        (
            json!({"button": [button("view", "v", json!({}))]}),
            "button[0].url",
            "needs url",
        ),
        (
            json!({"button": [button("media_id", "m", json!({}))]}),
            "button[0].media_id",
            "needs media_id",
        ),
        (
            json!({"button": [button("article_id", "a", json!({}))]}),
            "button[0].article_id",
            "needs article_id",
        ),
        (
            json!({"button": [button("miniprogram", "w", json!({"appid": "wx1", "pagepath": "p"}))]}),
            "button[0].url",
            "needs url",
        ),
        (
            json!({"button": [{"name": "m", "type": "click", "key": "k", "sub_button": [click("s")]}]}),
            "button[0].type",
            "carries no type",
        ),
        (
            json!({"button": [{"name": "m"}]}),
            "button[0].type",
            "needs a type",
        ),
        (
            json!({"button": [click("x")], "matchrule": {"tag_id": "2"}}),
            "matchrule",
            "conditional",
        ),
    ];
    for (menu, path, words) in &cases {
        let (status, body) = call(&app, "POST", "acme-mp/menu/validate", Some(menu)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["valid"], false, "{menu}");
        let problems = body["problems"].as_array().unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p["path"] == *path && p["message"].as_str().unwrap().contains(words)),
            "{menu}: want {path} / {words:?} in {problems:?}"
        );
        let (status, body) = put_menu(&app, "acme-mp", menu).await;
        assert_eq!(status, 400, "{menu}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("{path}: ")), "{message}");
    }

    // Every problem of one menu at once, each with its path.
    let menu = json!({"button": [
        click("一二三四五六"),
        {"name": "m", "sub_button": [
            button("view", "a", json!({"url": "ftp://example.com"})),
            button("click", "b", json!({})),
        ]}
    ]});
    let (_, body) = call(&app, "POST", "acme-mp/menu/validate", Some(&menu)).await;
    let paths: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "button[0].name",
            "button[1].sub_button[0].url",
            "button[1].sub_button[1].key"
        ]
    );
    let (status, body) = put_menu(&app, "acme-mp", &menu).await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap();
    for path in paths {
        assert!(message.contains(path), "{message}");
    }

    // Conditional menus: a matchrule on sex/region/language is refused as WeChat does (65320).
    let mut conditional = spring_menu();
    conditional["matchrule"] = json!({"sex": "1", "country": "中国"});
    let (status, body) = call(&app, "POST", "acme-mp/menu/conditional", Some(&conditional)).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("matchrule.sex") && message.contains("65320"),
        "{message}"
    );
    conditional["matchrule"] = json!({});
    let (status, _) = call(&app, "POST", "acme-mp/menu/conditional", Some(&conditional)).await;
    assert_eq!(status, 400);

    let (_, body) = call(&app, "POST", "acme-mp/menu/validate", Some(&spring_menu())).await;
    assert_eq!(body, json!({"valid": true, "problems": []}));
    assert_eq!(
        wechat.requests().len(),
        0,
        "nothing reached WeChat, not even a token fetch"
    );
    assert!(versions(&app, "acme-mp").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn publish_publish_restore_and_delete_are_versions_and_wechat_receives_exactly_the_menu() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat).await;
    let (status, body) = put_menu(&app, "acme-mp", &spring_menu()).await;
    assert_eq!((status, &body), (200, &json!({"version": 1})));
    assert_eq!(wechat.requests_to(MENU_CREATE)[0].body, spring_menu());
    let (status, body) = put_menu(&app, "acme-mp", &summer_menu()).await;
    assert_eq!((status, &body), (200, &json!({"version": 2})));
    assert_eq!(wechat.live_menu(MP_APP_ID), Some(summer_menu()));

    let (status, body) = call(&app, "POST", "acme-mp/menu/versions/1/restore", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"version": 3, "restored_from": 1}));
    let creates = wechat.requests_to(MENU_CREATE);
    assert_eq!(creates.len(), 3);
    assert_eq!(creates[2].body, spring_menu(), "version 1, exactly");
    assert_eq!(wechat.live_menu(MP_APP_ID), Some(spring_menu()));

    let listed = versions(&app, "acme-mp").await;
    let numbers: Vec<_> = listed
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(listed[0]["menu"], spring_menu());
    assert_eq!(listed[1]["menu"], summer_menu());
    assert_eq!(listed[2]["menu"], listed[0]["menu"]);
    assert_eq!(listed[2]["restored_from"], 1);
    for v in &listed {
        assert_eq!(v["actor"], "ops");
        let created_at = v["created_at"].as_str().unwrap();
        assert!(
            created_at.ends_with('Z') && created_at.contains('T'),
            "{created_at}"
        );
    }

    let (status, live) = get_menu(&app, "acme-mp").await;
    assert_eq!(status, 200, "{live}");
    assert_eq!(live["button"], spring_menu()["button"]);
    assert_eq!(live["conditionalmenu"], json!([]));
    assert_eq!(live["version"], 3);
    assert_eq!(live["drift"], false);

    let (status, body) = call(&app, "DELETE", "acme-mp/menu", None).await;
    assert_eq!((status, &body), (200, &json!({"version": 4})));
    assert_eq!(wechat.count("/cgi-bin/menu/delete"), 1);
    assert_eq!(wechat.live_menu(MP_APP_ID), None);
    let listed = versions(&app, "acme-mp").await;
    assert_eq!(listed[3]["menu"], Value::Null, "a deletion is a version");
    let (_, live) = get_menu(&app, "acme-mp").await;
    assert_eq!(live["button"], json!([]));
    assert_eq!(
        (&live["version"], &live["drift"]),
        (&json!(4), &json!(false))
    );

    // Restoring the deletion deletes again; restoring an unknown version is a 404.
    let (status, body) = call(&app, "POST", "acme-mp/menu/versions/2/restore", None).await;
    assert_eq!((status, &body["version"]), (200, &json!(5)));
    assert_eq!(wechat.live_menu(MP_APP_ID), Some(summer_menu()));
    let (status, _) = call(&app, "POST", "acme-mp/menu/versions/4/restore", None).await;
    assert_eq!(status, 200);
    assert_eq!(wechat.live_menu(MP_APP_ID), None);
    let (status, body) = call(&app, "POST", "acme-mp/menu/versions/99/restore", None).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let (status, _) = call(&app, "POST", "acme-mp/menu/versions/x/restore", None).await;
    assert_eq!(status, 400);
    let (status, _) = put_menu(&app, "nobody", &spring_menu()).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn a_menu_wechat_refuses_is_a_502_with_its_errcode_and_errmsg_and_creates_no_version() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat).await;
    wechat.inject(MENU_CREATE, Injected::Errcode(40016), 1);
    let (status, body) = put_menu(&app, "acme-mp", &spring_menu()).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "wechat_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("40016") && message.contains("injected"),
        "{message}"
    );
    assert!(versions(&app, "acme-mp").await.is_empty());
    assert_eq!(wechat.live_menu(MP_APP_ID), None);

    // The next publish is version 1.
    let (status, body) = put_menu(&app, "acme-mp", &spring_menu()).await;
    assert_eq!((status, &body), (200, &json!({"version": 1})));
    app.stop().await;
}

#[tokio::test]
async fn a_wecom_application_menu_goes_to_its_agentid_with_wecoms_limits() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat).await;
    let key = format!("{WORK_CORP_ID}/1000002");
    // 14 Chinese characters: 42 bytes, over WeCom's 40 for a sub-button, under the Official
    // Account's 60.
    let long_sub = json!({"button": [{"name": "应用", "sub_button": [click(&"菜".repeat(14))]}]});
    let (status, body) = put_menu(&app, "acme-work", &long_sub).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("button[0].sub_button[0].name") && message.contains("40 bytes"),
        "{message}"
    );
    let (_, verdict) = call(&app, "POST", "acme-mp/menu/validate", Some(&long_sub)).await;
    assert_eq!(verdict["valid"], true, "fine on an Official Account");
    // Types of the other product are refused.
    let (status, _) = put_menu(&app, "acme-work", &spring_menu()).await;
    assert_eq!(status, 400, "miniprogram is not a WeCom type");
    assert_eq!(wechat.requests().len(), 0);

    let menu = json!({"button": [
        click("打卡"),
        {"name": "应用", "sub_button": [
            button("view_miniprogram", "小程序", json!({"appid": "wx1", "pagepath": "pages/index"})),
            button("view", "审批", json!({"url": "https://example.com/approve"}))
        ]}
    ]});
    let (status, body) = put_menu(&app, "acme-work", &menu).await;
    assert_eq!((status, &body), (200, &json!({"version": 1})), "{body}");
    let create = &wechat.requests_to(MENU_CREATE)[0];
    assert_eq!(
        create.query.get("agentid").map(String::as_str),
        Some("1000002")
    );
    assert_eq!(create.body, menu);
    assert_eq!(wechat.live_menu(&key), Some(menu.clone()));

    let (status, live) = get_menu(&app, "acme-work").await;
    assert_eq!(status, 200, "{live}");
    assert_eq!(live["button"], menu["button"]);
    assert_eq!(live["drift"], false);
    assert!(live.get("conditionalmenu").is_none());
    let get = &wechat.requests_to("/cgi-bin/menu/get")[0];
    assert_eq!(
        get.query.get("agentid").map(String::as_str),
        Some("1000002")
    );

    let (status, body) = call(&app, "DELETE", "acme-work/menu", None).await;
    assert_eq!((status, &body), (200, &json!({"version": 2})));
    let delete = &wechat.requests_to("/cgi-bin/menu/delete")[0];
    assert_eq!(
        delete.query.get("agentid").map(String::as_str),
        Some("1000002")
    );
    assert_eq!(wechat.live_menu(&key), None);

    let mut conditional = menu.clone();
    conditional["matchrule"] = json!({"tag_id": "2"});
    let (status, body) = call(
        &app,
        "POST",
        "acme-work/menu/conditional",
        Some(&conditional),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Official Account"));
    app.stop().await;
}

#[tokio::test]
async fn conditional_menus_are_added_matched_for_a_user_and_deleted() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat).await;
    assert_eq!(put_menu(&app, "acme-mp", &spring_menu()).await.0, 200);
    let mut vip = summer_menu();
    vip["matchrule"] = json!({"tag_id": "2", "client_platform_type": "2"});
    let (status, body) = call(&app, "POST", "acme-mp/menu/conditional", Some(&vip)).await;
    assert_eq!(status, 200, "{body}");
    let menuid = body["menuid"].as_str().unwrap().to_owned();
    assert!(menuid.bytes().all(|b| b.is_ascii_digit()), "{menuid}");
    assert_eq!(
        wechat.requests_to("/cgi-bin/menu/addconditional")[0].body,
        vip
    );

    wechat.tag_user("oVip", 2);
    let (status, matched) = call(
        &app,
        "POST",
        "acme-mp/menu/trymatch",
        Some(&json!({"user_id": "oVip"})),
    )
    .await;
    assert_eq!(status, 200, "{matched}");
    assert_eq!(matched["button"][0]["name"], "夏季活动");
    assert!(matched.get("errcode").is_none());
    let (_, matched) = call(
        &app,
        "POST",
        "acme-mp/menu/trymatch",
        Some(&json!({"user_id": "oOther"})),
    )
    .await;
    assert_eq!(matched["button"][0]["name"], "今日歌曲");
    assert_eq!(
        wechat.requests_to("/cgi-bin/menu/trymatch")[0].body,
        json!({"user_id": "oVip"})
    );

    let (_, live) = get_menu(&app, "acme-mp").await;
    let conditional = live["conditionalmenu"].as_array().unwrap();
    assert_eq!(conditional.len(), 1, "{live}");
    assert_eq!(conditional[0]["menuid"].to_string(), menuid);
    assert_eq!(conditional[0]["matchrule"], vip["matchrule"]);
    assert_eq!(live["drift"], false, "conditional menus are not versioned");

    let (status, body) = call(
        &app,
        "DELETE",
        &format!("acme-mp/menu/conditional/{menuid}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        wechat.requests_to("/cgi-bin/menu/delconditional")[0].body,
        json!({"menuid": menuid})
    );
    let (_, live) = get_menu(&app, "acme-mp").await;
    assert_eq!(live["conditionalmenu"], json!([]));
    // A menuid WeChat does not know is its refusal, mapped to 502.
    let (status, body) = call(
        &app,
        "DELETE",
        &format!("acme-mp/menu/conditional/{menuid}"),
        None,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("65301"));
    let (status, _) = call(&app, "DELETE", "acme-mp/menu/conditional/abc", None).await;
    assert_eq!(status, 400);
    assert_eq!(versions(&app, "acme-mp").await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_menu_changed_in_wechats_console_shows_as_drift_until_a_version_is_published_again() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat).await;
    // acme-rotated shares the appid of acme-mp; no other test reads its menu, so its drift
    // gauge is this test's alone.
    let account = "acme-rotated";
    let (_, live) = get_menu(&app, account).await;
    assert_eq!(
        (&live["drift"], &live["version"]),
        (&json!(false), &Value::Null)
    );
    assert_eq!(put_menu(&app, account, &spring_menu()).await.0, 200);
    let (_, live) = get_menu(&app, account).await;
    assert_eq!(live["drift"], false, "{live}");

    wechat.edit_menu_in_console(MP_APP_ID, json!({"button": [click("改过了")]}));
    let (status, live) = get_menu(&app, account).await;
    assert_eq!(status, 200);
    assert_eq!(live["drift"], true, "{live}");
    assert_eq!(live["version"], 1);
    assert_eq!(
        live["button"][0]["name"], "改过了",
        "the live menu is shown"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wgw_menu_drift{") && l.contains(account) && l.ends_with(" 1")),
        "{metrics}"
    );

    let (status, _) = call(
        &app,
        "POST",
        &format!("{account}/menu/versions/1/restore"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, live) = get_menu(&app, account).await;
    assert_eq!(
        (&live["drift"], &live["version"]),
        (&json!(false), &json!(2))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_publishes_on_one_account_are_serialized() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat).await;
    wechat.delay(MENU_CREATE, Duration::from_millis(300));
    let (spring, summer) = (spring_menu(), summer_menu());
    let (a, b) = tokio::join!(
        put_menu(&app, "acme-mp", &spring),
        put_menu(&app, "acme-mp", &summer)
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    let mut numbers = [
        a.1["version"].as_u64().unwrap(),
        b.1["version"].as_u64().unwrap(),
    ];
    numbers.sort();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(
        wechat.max_in_flight(MENU_CREATE),
        1,
        "one publish at a time"
    );
    let listed = versions(&app, "acme-mp").await;
    assert_eq!(
        wechat.live_menu(MP_APP_ID).as_ref(),
        Some(&listed[1]["menu"]),
        "the latest version is the live menu"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_publish_one_accounts_menu_one_at_a_time() {
    let wechat = FakeWeChat::start().await;
    wechat.delay(MENU_CREATE, Duration::from_millis(300));
    let url = fresh_db_url().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let first = spawn_app(
        AppOptions::redis(&url).wechat(&wechat.base()),
        dirs[0].path(),
    )
    .await;
    let second = spawn_app(
        AppOptions::redis(&url).wechat(&wechat.base()),
        dirs[1].path(),
    )
    .await;
    let (spring, summer) = (spring_menu(), summer_menu());
    let (a, b, c) = tokio::join!(
        put_menu(&first, "acme-mp", &spring),
        put_menu(&second, "acme-mp", &summer),
        put_menu(&first, "acme-mp", &summer),
    );
    for (status, body) in [&a, &b, &c] {
        assert_eq!(*status, 200, "{body}");
    }
    assert_eq!(
        wechat.max_in_flight(MENU_CREATE),
        1,
        "one publish at a time"
    );
    let listed = versions(&second, "acme-mp").await;
    let numbers: Vec<_> = listed
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(
        wechat.live_menu(MP_APP_ID).as_ref(),
        Some(&listed[2]["menu"])
    );
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn grpc_set_menu_get_menu_and_delete_menu_use_the_same_rules_and_versions() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut gateway = GatewayClient::new(channel);
    let refused = gateway
        .set_menu(SetMenuRequest {
            account_id: "acme-mp".into(),
            menu_json: json!({"button": [click("一二三四五六"), button("view", "v", json!({}))]})
                .to_string(),
            conditional: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("button[0].name") && refused.message().contains("button[1].url"),
        "{}",
        refused.message()
    );
    assert_eq!(wechat.requests().len(), 0);

    let set = gateway
        .set_menu(SetMenuRequest {
            account_id: "acme-mp".into(),
            menu_json: spring_menu().to_string(),
            conditional: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((set.version, set.menuid.as_str()), (1, ""));
    assert_eq!(wechat.live_menu(MP_APP_ID), Some(spring_menu()));
    let got = gateway
        .get_menu(GetMenuRequest {
            account_id: "acme-mp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let menu: Value = serde_json::from_str(&got.menu_json).unwrap();
    assert_eq!(menu["button"], spring_menu()["button"]);
    assert_eq!((got.version, got.drift), (1, false));

    let mut vip = summer_menu();
    vip["matchrule"] = json!({"tag_id": 2});
    let set = gateway
        .set_menu(SetMenuRequest {
            account_id: "acme-mp".into(),
            menu_json: vip.to_string(),
            conditional: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.version, 0);
    let deleted = gateway
        .delete_menu(DeleteMenuRequest {
            account_id: "acme-mp".into(),
            menuid: set.menuid,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.version, 0);
    let deleted = gateway
        .delete_menu(DeleteMenuRequest {
            account_id: "acme-mp".into(),
            menuid: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.version, 2);
    assert_eq!(wechat.live_menu(MP_APP_ID), None);
    let listed = versions(&app, "acme-mp").await;
    assert!(listed.iter().all(|v| v["actor"] == "grpc"), "{listed:?}");
    app.stop().await;
}

#[tokio::test]
async fn every_menu_route_demands_an_admin_token() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_wechat(&wechat).await;
    let routes = [
        ("GET", "acme-mp/menu"),
        ("PUT", "acme-mp/menu"),
        ("DELETE", "acme-mp/menu"),
        ("POST", "acme-mp/menu/validate"),
        ("GET", "acme-mp/menu/versions"),
        ("POST", "acme-mp/menu/versions/1/restore"),
        ("POST", "acme-mp/menu/conditional"),
        ("DELETE", "acme-mp/menu/conditional/1"),
        ("POST", "acme-mp/menu/trymatch"),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong-token-0123456789")] {
            let mut request = app.http.request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(&format!("/admin/v1/accounts/{path}")),
            );
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            let resp = request.json(&spring_menu()).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{method} {path} {token:?}");
        }
    }
    assert_eq!(wechat.requests().len(), 0);
    app.stop().await;
}
