//! The callback URL's routing: the account segment, methods other than GET and POST, and a
//! query whose parameters are ambiguous.

use crate::support::app::{now, spawn_app, AppOptions};

#[tokio::test]
async fn callback_urls_route_one_account_segment_and_refuse_other_shapes_and_methods() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions::embedded(&dir.path().join("data")), dir.path()).await;

    // A safe-mode callback through the static-prefix route still lands (and is stored).
    let xml = format!(
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>o1</FromUserName><CreateTime>{}</CreateTime>\
         <MsgType>text</MsgType><Content>hi</Content><MsgId>{}</MsgId></xml>",
        now(),
        now() << 8
    );
    let ok = app.post_safe("acme-mp", &xml).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "success");

    for path in [
        "/wechat/mp",
        "/wechat/mp/",
        "/wechat/mp/acme-mp/extra",
        "/wechat/work/acme-work/",
    ] {
        let r = app
            .http
            .post(app.url(path))
            .body("<xml/>")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains("/wechat/mp/{account}"), "{path}: {body}");
    }
    // The segment after the prefix must be the whole prefix: /wechat/mpx is no callback URL.
    let r = app
        .http
        .post(app.url("/wechat/mpx/acme-mp"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    for method in [
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let r = app
            .http
            .request(method.clone(), app.url("/wechat/mp/acme-mp"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method}");
        assert_eq!(r.headers()["allow"], "GET, POST", "{method}");
    }
}

#[tokio::test]
async fn a_query_parameter_given_twice_is_a_400_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(AppOptions::embedded(&dir.path().join("data")), dir.path()).await;
    let ts = now().to_string();
    let sig = wechat_gateway::wechat::crypto::signature("pamtest", &ts, "n1");
    let r = app
        .http
        .post(app.url("/wechat/mp/acme-plain"))
        .query(&[
            ("signature", sig.as_str()),
            ("timestamp", &ts),
            ("nonce", "n1"),
            ("nonce", "n2"),
        ])
        .body("<xml/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.unwrap(),
        "query parameter \"nonce\" is given more than once"
    );
}
