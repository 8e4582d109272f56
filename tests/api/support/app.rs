//! `spawn_app`: the real application (same wiring as `main`) on random loopback ports, with a
//! configuration written as TOML and loaded through `config::load`, plus one helper per endpoint
//! that signs and encrypts like the WeChat platform.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wechat_gateway::config::{self, Config};
use wechat_gateway::startup::Application;
use wechat_gateway::wechat::account::Account;
use wechat_gateway::wechat::crypto;

use super::crm::FakeCrm;

/// Tencent's Official Account sample values (WXBizMsgCrypt sample: appid, Token,
/// EncodingAESKey), so a callback our tests build is one the real platform could send.
pub const MP_APP_ID: &str = "wxb11529c136998cb6";
pub const MP_TOKEN: &str = "pamtest";
pub const MP_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// Tencent's WeCom sample values (WXBizMsgCrypt for 企业微信: corpid, Token, EncodingAESKey).
pub const WORK_CORP_ID: &str = "wx5823bf96d3bd56c7";
pub const WORK_TOKEN: &str = "QDG6eK";
pub const WORK_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
/// A second key, for the rotation account.
pub const NEW_KEY: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

/// Where the app keeps its state.
#[derive(Clone, Debug)]
pub enum Backend {
    Embedded(PathBuf),
    Redis(String),
}

pub struct AppOptions {
    pub backend: Backend,
    pub crm_endpoint: Option<String>,
    /// `crm.batch_size`, when not the default.
    pub crm_batch_size: Option<usize>,
    pub max_body_bytes: usize,
    /// `wechat.mp_api_base` and `wechat.work_api_base` (a fake WeChat); WeChat's own if `None`.
    pub wechat_base: Option<String>,
    /// `wechat.timeout_ms` when `wechat_base` is set.
    pub wechat_timeout_ms: u64,
    /// Require [`GRPC_TOKEN`] (name `crm`) on gRPC `Gateway` calls.
    pub grpc_auth: bool,
    /// Appended to the configuration (whole sections, e.g. `[broadcasts]`).
    pub extra_toml: String,
    /// Appended to its `[store]` section (keys, e.g. `sweep_interval_seconds = 1`).
    pub store_toml: String,
    /// Appended to its `[grpc]` section (keys, e.g. `tls_cert_file = "..."`).
    pub grpc_toml: String,
}

/// The bearer token of the one `admin.tokens` entry (name `ops`) of every test app.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// `links.public_base_url` of every test app (tests map it to the app's real address).
pub const LINKS_BASE: &str = "https://gw.example.com";

/// The gRPC bearer token of apps spawned with `grpc_auth`.
pub const GRPC_TOKEN: &str = "test-grpc-token-0123456789";

impl AppOptions {
    pub fn embedded(dir: &Path) -> Self {
        Self {
            backend: Backend::Embedded(dir.to_path_buf()),
            crm_endpoint: None,
            crm_batch_size: None,
            max_body_bytes: 65536,
            wechat_base: None,
            wechat_timeout_ms: 2000,
            grpc_auth: false,
            extra_toml: String::new(),
            store_toml: String::new(),
            grpc_toml: String::new(),
        }
    }

    pub fn redis(url: &str) -> Self {
        Self {
            backend: Backend::Redis(url.to_owned()),
            crm_endpoint: None,
            crm_batch_size: None,
            max_body_bytes: 65536,
            wechat_base: None,
            wechat_timeout_ms: 2000,
            grpc_auth: false,
            extra_toml: String::new(),
            store_toml: String::new(),
            grpc_toml: String::new(),
        }
    }

    pub fn crm(mut self, endpoint: &str) -> Self {
        self.crm_endpoint = Some(endpoint.to_owned());
        self
    }

    pub fn wechat(mut self, base: &str) -> Self {
        self.wechat_base = Some(base.to_owned());
        self
    }
}

/// The configuration every test app runs with: one account per callback mode and platform.
pub fn config_toml(opts: &AppOptions) -> String {
    let store = match &opts.backend {
        Backend::Embedded(path) => format!(
            "backend = \"embedded\"\npath = {:?}",
            path.to_string_lossy()
        ),
        Backend::Redis(url) => format!("backend = \"redis\"\nredis_url = {url:?}"),
    };
    let store = format!("{store}\n{}", opts.store_toml);
    let crm = match &opts.crm_endpoint {
        Some(e) => format!(
            "[crm]\nendpoint = {e:?}\ntimeout_ms = 2000\n{}",
            opts.crm_batch_size
                .map_or(String::new(), |n| format!("batch_size = {n}\n"))
        ),
        None => String::new(),
    };
    let wechat = match &opts.wechat_base {
        Some(base) => format!(
            "[wechat]\nmp_api_base = {base:?}\nwork_api_base = {base:?}\noauth_base = {base:?}\ntimeout_ms = {}\n",
            opts.wechat_timeout_ms
        ),
        // No fake WeChat to look users up in: the forwarder must not call the real one.
        None => "[enrichment]\nenabled = false\n".into(),
    };
    let grpc_tokens = if opts.grpc_auth {
        format!("[[grpc.tokens]]\nname = \"crm\"\ntoken = \"{GRPC_TOKEN}\"\n")
    } else {
        String::new()
    };
    format!(
        r#"
[http]
listen = "127.0.0.1:0"
max_body_bytes = {max_body}

[grpc]
listen = "127.0.0.1:0"
{grpc_toml}
{grpc_tokens}

[store]
{store}

{crm}

{wechat}

[callbacks]
max_clock_skew_seconds = 300

[links]
public_base_url = "{LINKS_BASE}"
allowed_domains = ["acme.com", "shop.example.cn"]

[log]
level = "warn"

[[admin.tokens]]
name = "ops"
token = "{ADMIN_TOKEN}"

[[accounts]]
id = "acme-mp"
platform = "mp"
app_id = "{MP_APP_ID}"
app_secret = "mp-secret"
token = "{MP_TOKEN}"
encoding_aes_key = "{MP_KEY}"

[[accounts]]
id = "acme-plain"
platform = "mp"
app_id = "{MP_APP_ID}"
app_secret = "mp-secret"
token = "{MP_TOKEN}"

[[accounts]]
id = "acme-compat"
platform = "mp"
app_id = "{MP_APP_ID}"
app_secret = "mp-secret"
token = "{MP_TOKEN}"
encoding_aes_key = "{MP_KEY}"
mode = "compatible"

[[accounts]]
id = "acme-rotated"
platform = "mp"
app_id = "{MP_APP_ID}"
app_secret = "mp-secret"
token = "{MP_TOKEN}"
encoding_aes_key = "{NEW_KEY}"
previous_encoding_aes_key = "{MP_KEY}"

[[accounts]]
id = "acme-work"
platform = "work"
corp_id = "{WORK_CORP_ID}"
agent_id = 1000002
secret = "work-secret"
token = "{WORK_TOKEN}"
encoding_aes_key = "{WORK_KEY}"

{extra}
"#,
        max_body = opts.max_body_bytes,
        grpc_toml = opts.grpc_toml,
        extra = opts.extra_toml,
    )
}

/// Writes the TOML to `dir/gateway.toml` and loads it like `main` does.
pub fn load_config(dir: &Path, opts: &AppOptions) -> (PathBuf, Config) {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config_toml(opts)).unwrap();
    let cfg = config::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
    (path, cfg)
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where the admin API and `/metrics` answer: `addr` unless `http.admin_listen` is set.
    pub admin_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub http: reqwest::Client,
    pub config: Config,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app(opts: AppOptions, config_dir: &Path) -> TestApp {
    let (_, config) = load_config(config_dir, &opts);
    spawn_configured(config).await
}

/// [`spawn_app`] with a configuration of the test's own (e.g. [`config_toml`] with keys added).
pub async fn spawn_configured(config: Config) -> TestApp {
    let app = Application::build(config.clone())
        .await
        .expect("application builds");
    let addr = app.http_addr();
    let admin_addr = app.admin_addr();
    let grpc_addr = app.grpc_addr();
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        admin_addr,
        grpc_addr,
        http: reqwest::Client::new(),
        config,
        shutdown,
        handle: Some(handle),
    }
}

/// An embedded app whose forwarder delivers to a fresh fake CRM.
pub async fn app_with_crm() -> (TestApp, FakeCrm, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let crm = FakeCrm::start().await;
    let app = spawn_app(
        AppOptions::embedded(&dir.path().join("data")).crm(&crm.endpoint()),
        dir.path(),
    )
    .await;
    (app, crm, dir)
}

/// A text message as WeChat's 接收普通消息 page shows it (the body of a plain-mode callback, or
/// what safe mode encrypts).
pub fn text_xml(from: &str, content: &str, msg_id: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>\
         <MsgId>{msg_id}</MsgId></xml>",
        now()
    )
}

/// A `MsgId` no other callback of this test run has, so that dedup never merges two.
pub fn unique_msg_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    (now() << 20) + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A nonce no other request of this test run has.
pub fn fresh_nonce() -> String {
    format!("n{}", unique_msg_id())
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn account(&self, id: &str) -> &Account {
        self.config
            .accounts
            .iter()
            .find(|a| a.id.as_str() == id)
            .expect("test account exists")
    }

    /// Stops the app gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }

    /// A plain-mode POST (signature over token, timestamp, nonce), as WeChat sends it.
    pub async fn post_plain(&self, account: &str, xml: &str) -> reqwest::Response {
        self.post_plain_at(account, xml, now()).await
    }

    /// A plain-mode POST at `ts`, with a fresh nonce as WeChat's (a signature seen with one body
    /// is refused with another).
    pub async fn post_plain_at(&self, account: &str, xml: &str, ts: u64) -> reqwest::Response {
        self.post_plain_signed(account, xml, ts, &fresh_nonce())
            .await
    }

    /// A plain-mode POST signed over `ts` and `nonce`.
    pub async fn post_plain_signed(
        &self,
        account: &str,
        xml: &str,
        ts: u64,
        nonce: &str,
    ) -> reqwest::Response {
        let ts = ts.to_string();
        let sig = crypto::signature(MP_TOKEN, &ts, nonce);
        self.http
            .post(self.url(&format!("/wechat/mp/{account}")))
            .query(&[
                ("signature", sig.as_str()),
                ("timestamp", &ts),
                ("nonce", nonce),
            ])
            .body(xml.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// Encrypts `xml` with the account's key (or `key`) as WeChat does; returns the Encrypt value.
    pub fn encrypt_for(&self, account: &str, xml: &str, key: Option<&str>) -> String {
        let a = self.account(account);
        let crypto = match key {
            Some(k) => crypto::MsgCrypto::new(k).unwrap(),
            None => a.keys[0].clone(),
        };
        crypto.encrypt(xml.as_bytes(), &a.receiver_id)
    }

    /// A safe-mode POST: `<xml><Encrypt>` envelope with `msg_signature`.
    pub async fn post_safe(&self, account: &str, xml: &str) -> reqwest::Response {
        let encrypt = self.encrypt_for(account, xml, None);
        self.post_encrypted(account, &encrypt, now()).await
    }

    /// POSTs an already encrypted value, correctly signed, to the account's endpoint.
    pub async fn post_encrypted(&self, account: &str, encrypt: &str, ts: u64) -> reqwest::Response {
        let a = self.account(account);
        let ts = ts.to_string();
        let token = a.token.expose();
        let msg_sig = crypto::msg_signature(token, &ts, "nonce2", encrypt);
        let envelope = format!(
            "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        );
        self.post_envelope(account, &envelope, &msg_sig, &ts).await
    }

    /// POSTs an envelope with the given `msg_signature` and timestamp.
    pub async fn post_envelope(
        &self,
        account: &str,
        body: &str,
        msg_signature: &str,
        ts: &str,
    ) -> reqwest::Response {
        let a = self.account(account);
        let platform = a.platform.as_str();
        let sig = crypto::signature(a.token.expose(), ts, "nonce2");
        let mut q = vec![
            ("timestamp", ts.to_owned()),
            ("nonce", "nonce2".to_owned()),
            ("msg_signature", msg_signature.to_owned()),
        ];
        if platform == "mp" {
            q.push(("signature", sig));
            q.push(("encrypt_type", "aes".to_owned()));
        }
        self.http
            .post(self.url(&format!("/wechat/{platform}/{account}")))
            .query(&q)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// A GET with a query, as WeChat's URL verification sends it.
    pub async fn get_query<Q: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
    ) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .query(query)
            .send()
            .await
            .unwrap()
    }

    /// A URL verification, as WeChat sends it when the callback URL is configured: signed in
    /// `signature` (Official Account) or in `msg_signature` over the encrypted echostr (WeCom).
    pub async fn verify_url(
        &self,
        account: &str,
        signature: &str,
        ts: &str,
        nonce: &str,
        echostr: &str,
    ) -> reqwest::Response {
        let platform = self.account(account).platform.as_str();
        let signed_in = if platform == "mp" {
            "signature"
        } else {
            "msg_signature"
        };
        let query = [
            (signed_in, signature),
            ("timestamp", ts),
            ("nonce", nonce),
            ("echostr", echostr),
        ];
        self.get_query(&format!("/wechat/{platform}/{account}"), &query)
            .await
    }

    /// A POST with a query and a body, signed (or not) by the caller.
    pub async fn post_query<Q: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .query(query)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// An admin API call (`path` from `/admin/v1`) with [`ADMIN_TOKEN`]: the status and the
    /// JSON body (`Null` when the body is not JSON).
    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.admin_as(ADMIN_TOKEN, method, path, body).await
    }

    /// [`Self::admin`] with another token (sent as `Authorization: Bearer <token>`).
    pub async fn admin_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("http://{}/admin/v1{path}", self.admin_addr))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let resp = request.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}
