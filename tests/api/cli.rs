//! The binary's commands: `check-config` and `simulate`.

use std::process::Command;
use std::time::Duration;

use wechat_gateway::pb::event::Kind;

use crate::support::app::{config_toml, spawn_app, AppOptions};
use crate::support::crm::FakeCrm;

fn gateway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wechat-gateway"))
}

#[test]
fn check_config_accepts_the_example_configuration() {
    let out = gateway()
        .args(["check-config", "--config", "config/example.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid (2 account(s))"));
}

#[test]
fn check_config_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[store]\nbackend = \"mongo\"\n[[accounts]]\nid = \"a\"\nplatform = \"qq\"\ntoken = \"t0k\"\n\
         [[accounts]]\nid = \"a\"\nplatform = \"mp\"\napp_id = \"wx1\"\ntoken = \"tok\"\nencoding_aes_key = \"short\"\n",
    )
    .unwrap();
    let out = gateway()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "store.backend",
        "accounts[0].platform",
        "accounts[1].id",
        "accounts[1].encoding_aes_key",
    ] {
        assert!(err.contains(expected), "missing {expected} in {err}");
    }
}

/// The example configuration's admin token is published: copied to a server (or an image) that
/// listens beyond loopback, it is refused, not merely warned about.
#[test]
fn the_published_example_admin_token_is_refused_beyond_loopback() {
    let out = gateway()
        .args(["check-config", "--config", "config/example.toml"])
        .env("WGW_HTTP__LISTEN", "0.0.0.0:8080")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("this token is the published example one"),
        "{err}"
    );
    assert!(
        !err.contains("dev-only-admin-token"),
        "the token itself is not printed: {err}"
    );
    // On its own loopback listener the same token is fine (a laptop, the sandbox).
    let out = gateway()
        .args(["check-config", "--config", "config/example.toml"])
        .env("WGW_HTTP__LISTEN", "0.0.0.0:8080")
        .env("WGW_HTTP__ADMIN_LISTEN", "127.0.0.1:9090")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A typo in an environment override is blamed on the variable, not on the file, and does not
/// hide the other problems.
#[test]
fn an_environment_override_that_matches_no_key_is_named_as_the_variable() {
    let out = gateway()
        .args(["check-config", "--config", "config/example.toml"])
        .env("WGW_HTTP__LISTNE", "0.0.0.0:8080")
        .env("WGW_CALLBACKS__MAX_IN_FLIGHT", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "WGW_HTTP__LISTNE: this environment variable matches no configuration key (http.listne)"
        ),
        "{err}"
    );
    assert!(err.contains("callbacks.max_in_flight"), "{err}");
    assert!(!err.contains("config/example.toml: unknown"), "{err}");
}

#[test]
fn environment_overrides_and_secret_references_apply() {
    let out = gateway()
        .args(["check-config", "--config", "config/example.toml"])
        .env("WGW_HTTP__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.listen: \"not-an-address\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_sends_callbacks_that_the_gateway_turns_into_events() {
    let dir = tempfile::tempdir().unwrap();
    let crm = FakeCrm::start().await;
    let opts = AppOptions::embedded(&dir.path().join("data")).crm(&crm.endpoint());
    let app = spawn_app(opts, dir.path()).await;
    let config = dir.path().join("simulate.toml");
    std::fs::write(
        &config,
        config_toml(&AppOptions::embedded(&dir.path().join("unused"))),
    )
    .unwrap();
    let url = app.url("");
    for args in [
        vec![
            "--account",
            "acme-mp",
            "--kind",
            "subscribe-qr",
            "--scene",
            "expo",
        ],
        vec![
            "--account",
            "acme-plain",
            "--kind",
            "text",
            "--content",
            "plain hello",
        ],
        vec!["--account", "acme-compat", "--kind", "click", "--key", "K9"],
        vec![
            "--account",
            "acme-work",
            "--kind",
            "add-external-contact",
            "--scene",
            "booth-7",
        ],
        vec!["--account", "acme-work", "--verify"],
        vec!["--account", "acme-mp", "--verify"],
    ] {
        let out = tokio::task::spawn_blocking({
            let (config, url) = (config.clone(), url.clone());
            move || {
                gateway()
                    .args(["simulate", "--config"])
                    .arg(&config)
                    .args(["--url", &url])
                    .args(&args)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("200"));
    }
    let events = crm
        .wait_for(|evs| evs.len() >= 4, Duration::from_secs(20))
        .await;
    assert!(matches!(&events[0].kind, Some(Kind::Subscribe(s)) if s.scene == "expo"));
    assert!(matches!(&events[1].kind, Some(Kind::Text(t)) if t.content == "plain hello"));
    assert!(matches!(&events[2].kind, Some(Kind::MenuClick(c)) if c.key == "K9"));
    assert!(
        matches!(&events[3].kind, Some(Kind::ExternalContactChange(c)) if c.state == "booth-7")
    );
    app.stop().await;
}
