//! Configuration: TOML file, then `WGW_`-prefixed environment overrides (`__` between levels),
//! then `${NAME}` secrets read from the environment; then checked into domain types once.
//!
//! [`load`] collects every problem before failing, so `check-config` can list them all at once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::access::Scope;
use crate::domain::{AccountId, Platform, Secret};
use crate::tls::{self, ClientTls, IdentityFiles, ServerTls};
use crate::wechat::account::{Account, CallbackMode};
use crate::wechat::api::WechatConfig;
use crate::wechat::crypto::MsgCrypto;

/// The validated configuration the application runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub grpc_listen: SocketAddr,
    /// Largest gRPC `Gateway` request message (`grpc.max_message_bytes`), checked before it is
    /// buffered; callers are authenticated before any of it is read.
    pub grpc_max_message_bytes: usize,
    /// `grpc.tls_*`: the Gateway server speaks TLS (and may demand client certificates).
    pub grpc_tls: Option<ServerTls>,
    pub store: StoreConfig,
    pub crm: CrmConfig,
    pub wechat: WechatConfig,
    /// `None` when `callbacks.max_clock_skew_seconds = 0` (check off).
    pub max_clock_skew: Option<Duration>,
    /// Concurrency limits of the callback path (`callbacks.max_in_flight*`).
    pub callback_limits: CallbackLimitsConfig,
    pub admin_tokens: Vec<AdminToken>,
    /// Bearer tokens the gRPC `Gateway` service demands (`[[grpc.tokens]]`); none: no check.
    pub grpc_tokens: Vec<AdminToken>,
    pub log: LogConfig,
    pub accounts: Vec<Account>,
    /// Tracked links (`[links]`).
    pub links: LinksConfig,
    /// Identity enrichment in the forwarder (`[enrichment]`).
    pub enrichment: EnrichmentConfig,
    /// `[broadcasts]`: how broadcast jobs are paced and checked.
    pub broadcasts: BroadcastConfig,
    /// `[syncs]`: how audience syncs are paced.
    pub syncs: SyncConfig,
    /// `[template_sends]`: how template and subscription-notice jobs are paced.
    pub template_sends: TemplateSendConfig,
}

impl Config {
    /// What is valid but risky, for `check-config` to print and `serve` to log at WARN: the
    /// admin API (and `/metrics`) on a non-loopback address, and a gRPC `Gateway` that anyone
    /// who reaches it may call.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let admin = self.http.admin_addr();
        if !is_loopback(admin) {
            let key = if self.http.admin_listen.is_some() {
                "http.admin_listen"
            } else {
                "http.listen (http.admin_listen is not set)"
            };
            warnings.push(format!(
                "the admin API (/admin/v1) and /metrics listen on {admin} ({key}), which is not a loopback address: whoever reaches it may try admin tokens. Set http.admin_listen to a loopback or private address and expose only http.listen"
            ));
        }
        if self.grpc_tokens.is_empty() && !is_loopback(self.grpc_listen) {
            warnings.push(format!(
                "the gRPC Gateway service listens on {} (grpc.listen), which is not a loopback address, and no [[grpc.tokens]] are configured: whoever reaches it may publish menus and send broadcasts. Add [[grpc.tokens]] or listen on 127.0.0.1",
                self.grpc_listen
            ));
        }
        warnings
    }
}

/// Admin tokens printed in this repository (config/example.toml, the docs): anyone may know them.
const PUBLISHED_ADMIN_TOKENS: &[&str] = &["dev-only-admin-token-change-me"];

/// A published admin token is refused when the admin API listens beyond loopback: the example
/// configuration, copied to a server or baked into an image with `0.0.0.0`, would otherwise
/// serve the admin API to whoever reads the README.
fn refuse_published_tokens(tokens: &[AdminToken], http: &RawHttp, problems: &mut Vec<String>) {
    let admin = http.admin_listen.as_deref().unwrap_or(&http.listen);
    let Ok(addr) = admin.parse::<SocketAddr>() else {
        return; // reported where the address is parsed
    };
    if is_loopback(addr) {
        return;
    }
    for t in tokens {
        if PUBLISHED_ADMIN_TOKENS.contains(&t.token.expose()) {
            problems.push(format!(
                "admin.tokens ({:?}): this token is the published example one and the admin API \
                 listens on {addr}, beyond loopback; set token = \"${{ADMIN_TOKEN}}\" with a long \
                 random value",
                t.name
            ));
        }
    }
}

/// 127.0.0.0/8 and ::1 (also written as ::ffff:127.x.y.z). The unspecified address (0.0.0.0,
/// `::`) is every interface, so it is not loopback.
fn is_loopback(addr: SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// `[links]`: where tracked links may lead, and the gateway's public address.
#[derive(Debug, Clone, Default)]
pub struct LinksConfig {
    /// The gateway as followers reach it (`https://gw.example.com`, no trailing slash): the
    /// short URLs and the OAuth `redirect_uri` start with it. `None`: links cannot be created.
    pub public_base_url: Option<String>,
    /// Hosts a link may lead to (exact host or a subdomain), lowercase ASCII (punycode).
    pub allowed_domains: Vec<String>,
    /// `wechat.oauth_base`, kept here for the redirect into WeChat's web OAuth.
    pub oauth_base: String,
    /// At most one anonymous click event per link and client address in this window
    /// (`anonymous_click_window_seconds`, default 60; 0: no bound). The redirect happens always.
    pub anonymous_click_window: Duration,
    /// `identity_secret`: the HMAC-SHA256 key of the identity token the `/oauth/{account}`
    /// entry hands to H5 pages (at least 32 bytes). `None`: the entry is off.
    pub identity_secret: Option<Secret>,
}

/// `[enrichment]`: the forwarder's user lookups.
#[derive(Debug, Clone)]
pub struct EnrichmentConfig {
    pub enabled: bool,
    /// How long a looked-up user is not looked up again.
    pub user_ttl: Duration,
}

/// `[broadcasts]`. WeChat allows about 60 mass-send calls a minute per account; tests run with
/// a faster pace and shorter delays.
#[derive(Debug, Clone)]
pub struct BroadcastConfig {
    /// Mass-send calls per minute (`calls_per_minute`, default 60).
    pub calls_per_minute: u32,
    /// First wait after a quota answer (45009/45011) or a transient failure; doubles up to
    /// `backoff_max` (`backoff_min_ms`, default 1000; `backoff_max_seconds`, default 300).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A sent batch with no MASSSENDJOBFINISH after this long is checked with `mass/get`, and
    /// again every time this passes (`check_after_seconds`, default 1800).
    pub check_after: Duration,
    /// How long one instance's hold on a job lasts unless renewed (`lease_seconds`, default 30).
    pub lease: Duration,
    /// Largest admin request body of the broadcast routes, whose openid lists run into the
    /// hundreds of thousands (`max_body_bytes`, default 16 MiB).
    pub max_body_bytes: usize,
}

/// `[syncs]`: the pace of audience syncs (`crate::services::sync`). `user/get`,
/// `user/info/batchget` and the WeCom customer lists share the account's daily API quota with
/// everything else the account does, so a sync is paced, and a quota answer pauses it.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// WeChat calls per minute of this instance's syncs, all accounts together
    /// (`calls_per_minute`, default 600).
    pub calls_per_minute: u32,
    /// First pause after a quota answer (45009, 45011, 45033), a busy WeChat (-1) or a network
    /// failure; doubles up to `backoff_max` (`backoff_min_ms`, default 1000;
    /// `backoff_max_seconds`, default 300).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long one instance's hold on a sync lasts unless renewed: another instance resumes
    /// a sync this long after its runner died (`lease_seconds`, default 30).
    pub lease: Duration,
}

/// `[template_sends]`: template messages (`message/template/send`) and subscription notices
/// (`message/subscribe/bizsend`) go one recipient per call, so their pace is in calls a second.
#[derive(Debug, Clone)]
pub struct TemplateSendConfig {
    /// Calls a second per instance (`sends_per_second`, default 20).
    pub sends_per_second: u32,
    /// First wait after a quota answer (45009/45011) or a transient failure; doubles up to
    /// `backoff_max` (`backoff_min_ms`, default 1000; `backoff_max_seconds`, default 300).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long one instance's hold on a job lasts unless renewed (`lease_seconds`, default 30).
    pub lease: Duration,
}

/// How many callbacks may be in flight at once (see [`crate::http::limits`]).
#[derive(Debug, Clone, Copy)]
pub struct CallbackLimitsConfig {
    pub max_in_flight: usize,
    pub max_in_flight_per_account: usize,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// `http.admin_listen`: when set, `/admin/v1` and `/metrics` are served only here and
    /// `listen` keeps the public routes (callbacks, `/l/`, `/oauth/`, `/healthz`, `/readyz`).
    pub admin_listen: Option<SocketAddr>,
    pub max_body_bytes: usize,
    /// How long a client has to send a request's body after its headers (`body_timeout_ms`,
    /// default 5000: WeChat gives up on an answer after 5 s anyway); also the deadline for the
    /// headers themselves. See `crate::http::body`.
    pub body_timeout: Duration,
    /// Open connections at most, across every HTTP worker (`max_connections`); further clients
    /// wait in the listen backlog. `None`: half the process's open-file limit, at most 10000
    /// (see `crate::startup`).
    pub max_connections: Option<usize>,
}

impl HttpConfig {
    /// Where the admin API and `/metrics` are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listen.unwrap_or(self.listen)
    }
}

#[derive(Debug, Clone)]
pub enum StoreBackend {
    Embedded { path: PathBuf },
    Redis { url: Secret },
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// How long a callback id is remembered for de-duplication. WeChat retries within seconds;
    /// a day also covers a CRM-side replay of the same callback by an operator.
    pub dedup_ttl: Duration,
    /// Redis only: how long an instance holds an account's delivery lease without renewing it
    /// (`store.redis_lease_seconds`), i.e. how soon another instance takes over a dead one's work.
    pub redis_lease: Duration,
    /// Embedded only: redb's own page cache (`store.cache_mib`, default 8). redb holds what is off
    /// the callback path (cold marks, dead letters, documents); in a soak whose callbacks all
    /// needed a cold look-up, 32 MiB held the process at ~116 MiB where 8 held it at ~66 MiB.
    /// Misses are served from the OS page cache, which does not count against the process.
    pub cache_bytes: usize,
    /// How often lapsed documents (the user cache, link clicks, leases) are removed
    /// (`store.sweep_interval_seconds`, default 600).
    pub sweep_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct CrmConfig {
    /// The CRM's `EventSink`; `None` writes events as JSON lines to stdout.
    pub endpoint: Option<String>,
    pub timeout: Duration,
    pub batch_size: usize,
    /// `crm.token`: sent as `authorization: Bearer <token>` on every `Deliver`.
    pub token: Option<Secret>,
    /// Set exactly when the endpoint is `https://`.
    pub tls: Option<ClientTls>,
}

/// A bearer token of `[[admin.tokens]]` or `[[grpc.tokens]]`: its name (the actor recorded),
/// the secret, and what it may do (`accounts`, `read_only`).
#[derive(Debug, Clone)]
pub struct AdminToken {
    pub name: String,
    pub token: Secret,
    pub scope: Scope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

// --- the raw shape of the file -------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Raw {
    http: RawHttp,
    grpc: RawGrpc,
    store: RawStore,
    crm: RawCrm,
    wechat: RawWechat,
    callbacks: RawCallbacks,
    admin: RawAdmin,
    log: RawLog,
    accounts: Vec<RawAccount>,
    links: RawLinks,
    enrichment: RawEnrichment,
    broadcasts: RawBroadcasts,
    syncs: RawSyncs,
    template_sends: RawTemplateSends,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawTemplateSends {
    sends_per_second: u32,
    backoff_min_ms: u64,
    backoff_max_seconds: u64,
    lease_seconds: u64,
}

impl Default for RawTemplateSends {
    fn default() -> Self {
        Self {
            sends_per_second: 20,
            backoff_min_ms: 1000,
            backoff_max_seconds: 300,
            lease_seconds: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawLinks {
    public_base_url: Option<String>,
    allowed_domains: Vec<String>,
    anonymous_click_window_seconds: u64,
    identity_secret: Option<Secret>,
}

impl Default for RawLinks {
    fn default() -> Self {
        Self {
            public_base_url: None,
            allowed_domains: Vec::new(),
            anonymous_click_window_seconds: 60,
            identity_secret: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawEnrichment {
    enabled: bool,
    user_ttl_seconds: u64,
}

impl Default for RawEnrichment {
    fn default() -> Self {
        Self {
            enabled: true,
            user_ttl_seconds: 86_400,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawBroadcasts {
    calls_per_minute: u32,
    backoff_min_ms: u64,
    backoff_max_seconds: u64,
    check_after_seconds: u64,
    lease_seconds: u64,
    max_body_bytes: u64,
}

impl Default for RawBroadcasts {
    fn default() -> Self {
        Self {
            calls_per_minute: 60,
            backoff_min_ms: 1000,
            backoff_max_seconds: 300,
            check_after_seconds: 1800,
            lease_seconds: 30,
            max_body_bytes: 16 << 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawSyncs {
    calls_per_minute: u32,
    backoff_min_ms: u64,
    backoff_max_seconds: u64,
    lease_seconds: u64,
}

impl Default for RawSyncs {
    fn default() -> Self {
        Self {
            calls_per_minute: 600,
            backoff_min_ms: 1000,
            backoff_max_seconds: 300,
            lease_seconds: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawHttp {
    listen: String,
    admin_listen: Option<String>,
    max_body_bytes: u64,
    body_timeout_ms: u64,
    max_connections: Option<u64>,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: None,
            max_body_bytes: 65536,
            body_timeout_ms: 5_000,
            max_connections: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawGrpc {
    listen: String,
    tokens: Vec<RawAdminToken>,
    max_message_bytes: u64,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
}

/// `grpc.max_message_bytes` by default: the biggest legitimate request is a `SendBroadcast` with
/// an openid list, as long as the admin route's (`broadcasts.max_body_bytes`, 16 MiB: some
/// 550,000 openids).
const GRPC_MAX_MESSAGE_BYTES: u64 = 16 << 20;

impl Default for RawGrpc {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            tokens: Vec::new(),
            max_message_bytes: GRPC_MAX_MESSAGE_BYTES,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawStore {
    backend: String,
    path: String,
    redis_url: Option<Secret>,
    dedup_ttl_seconds: u64,
    redis_lease_seconds: u64,
    cache_mib: u64,
    sweep_interval_seconds: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            backend: "embedded".into(),
            path: "./data".into(),
            redis_url: None,
            dedup_ttl_seconds: 86_400,
            redis_lease_seconds: 30,
            cache_mib: 8,
            sweep_interval_seconds: 600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawCrm {
    endpoint: Option<String>,
    timeout_ms: u64,
    batch_size: u64,
    token: Option<Secret>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_server_name: Option<String>,
}

impl Default for RawCrm {
    fn default() -> Self {
        Self {
            endpoint: None,
            timeout_ms: 5_000,
            batch_size: 100,
            token: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawWechat {
    mp_api_base: String,
    work_api_base: String,
    timeout_ms: u64,
    oauth_base: String,
}

impl Default for RawWechat {
    fn default() -> Self {
        Self {
            mp_api_base: "https://api.weixin.qq.com".into(),
            work_api_base: "https://qyapi.weixin.qq.com".into(),
            timeout_ms: 5_000,
            oauth_base: "https://open.weixin.qq.com".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawCallbacks {
    max_clock_skew_seconds: u64,
    max_in_flight: u64,
    max_in_flight_per_account: u64,
}

impl Default for RawCallbacks {
    fn default() -> Self {
        Self {
            max_clock_skew_seconds: 300,
            max_in_flight: 512,
            max_in_flight_per_account: 128,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawAdmin {
    tokens: Vec<RawAdminToken>,
}

#[derive(Debug, Deserialize)]
struct RawAdminToken {
    name: String,
    token: Secret,
    /// Absent: every account.
    #[serde(default)]
    accounts: Option<Vec<String>>,
    #[serde(default)]
    read_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RawLog {
    format: String,
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawAccount {
    id: String,
    platform: String,
    app_id: Option<String>,
    app_secret: Option<Secret>,
    corp_id: Option<String>,
    agent_id: Option<i64>,
    secret: Option<Secret>,
    token: Option<Secret>,
    encoding_aes_key: Option<Secret>,
    previous_encoding_aes_key: Option<Secret>,
    mode: Option<String>,
}

/// Every problem found in a configuration, one line each.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

/// Loads and checks the configuration file (plus environment overrides).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let mut problems = Vec::new();
    let raw = read_raw(path, &mut problems);
    match raw {
        Some(raw) => {
            let cfg = check(raw, &mut problems);
            if problems.is_empty() {
                Ok(cfg.expect("a configuration with no problems is complete"))
            } else {
                Err(ConfigErrors(problems))
            }
        }
        None => Err(ConfigErrors(problems)),
    }
}

/// Reads TOML + `WGW_` environment, expands `${NAME}` in every string, and deserializes.
///
/// A problem is reported with the file, line and column (or the key's path) and what is wrong,
/// never with the text of the line or a value: the line may hold a secret (issue 18).
fn read_raw(path: &Path, problems: &mut Vec<String>) -> Option<Raw> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("{}: cannot read: {e}", path.display()));
            return None;
        }
    };
    // The file's syntax first, for an error that names the place but not the text there.
    if let Err(e) = toml::from_str::<toml::Table>(&text) {
        let at = e.span().map_or(String::new(), |span| {
            let (line, column) = line_column(&text, span.start);
            format!(":{line}:{column}")
        });
        problems.push(format!(
            "{}{at}: invalid TOML: {}",
            path.display(),
            redact_values(e.message().trim())
        ));
        return None;
    }
    let built = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("WGW")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .and_then(|b| b.try_deserialize::<serde_json::Value>());
    let mut value = match built {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!(
                "{}: {}",
                path.display(),
                redact_values(&e.to_string())
            ));
            return None;
        }
    };
    expand_env(&mut value, "", problems);
    // Unknown keys are collected, not fatal at the first one, so that one run of check-config
    // lists every problem; each is named with its section (and account), or as the environment
    // variable it came from. A value of the wrong type is named by its path, never quoted.
    let mut unknown = Vec::new();
    let mut on_unknown = |p: serde_ignored::Path<'_>| unknown.push(key_path(&p));
    let raw: Raw = match serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        value,
        &mut on_unknown,
    )) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(format!(
                "{}: {}: {}",
                path.display(),
                e.path(),
                redact_values(&e.inner().to_string())
            ));
            return None;
        }
    };
    report_unknown_keys(&raw, unknown, path, problems);
    Some(raw)
}

/// `accounts[1].tokne` from serde_ignored's path.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => match key_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

fn report_unknown_keys(raw: &Raw, unknown: Vec<String>, file: &Path, problems: &mut Vec<String>) {
    // WGW_HTTP__LISTNE → http.listne, the key the config crate made of it.
    let from_env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter_map(|k| {
            let rest = k.strip_prefix("WGW_")?;
            Some((rest.to_lowercase().replace("__", "."), k))
        })
        .collect();
    for key in unknown {
        if let Some((_, var)) = from_env.iter().find(|(path, _)| *path == key) {
            problems.push(format!(
                "{var}: this environment variable matches no configuration key ({key})"
            ));
            continue;
        }
        let section = match key.split_once('.') {
            None => format!(
                "{key}: unknown section or key at the top level of {}",
                file.display()
            ),
            Some((head, _)) => match head.strip_prefix("accounts[") {
                Some(rest) => {
                    let index: usize = rest.trim_end_matches(']').parse().unwrap_or(0);
                    let id = raw.accounts.get(index).map_or("", |a| a.id.as_str());
                    format!(
                        "{key}: unknown key in [[accounts]] number {} (id {id:?})",
                        index + 1
                    )
                }
                None => format!(
                    "{key}: unknown key in [{}]",
                    head.split('[').next().unwrap_or(head)
                ),
            },
        };
        problems.push(section);
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Removes the values that serde and TOML quote in their messages (`invalid type: string
/// "hunter2", expected u64`, ``integer `12` ``), keeping what kind of value it was: a value of a
/// secret key must not reach a terminal or a log. Key names (``unknown field `appsecret` ``) stay.
fn redact_values(message: &str) -> String {
    static VALUE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let value = VALUE.get_or_init(|| {
        regex::Regex::new(
            r#"(string|integer|floating point|boolean|character|bytes|char|unit variant|newtype variant|tuple variant|struct variant|map|sequence|value) ("(?:[^"\\]|\\.)*"|`[^`]*`|'[^']*')"#,
        )
        .expect("a valid pattern")
    });
    value.replace_all(message, "$1").into_owned()
}

/// Replaces `${NAME}` with the environment variable NAME in every string value.
fn expand_env(value: &mut serde_json::Value, at: &str, problems: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => {
            if let Some(expanded) = expand_str(s, at, problems) {
                *s = expanded;
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(item, &format!("{at}[{i}]"), problems);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                expand_env(v, &path, problems);
            }
        }
        _ => {}
    }
}

fn expand_str(s: &str, at: &str, problems: &mut Vec<String>) -> Option<String> {
    if !s.contains("${") {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            problems.push(format!("{at}: unterminated ${{...}} reference"));
            return None;
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => problems.push(format!("{at}: environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn parse_addr(s: &str, at: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(format!(
                "{at}: {s:?} is not an address of the form IP:PORT (e.g. 127.0.0.1:8080)"
            ));
            None
        }
    }
}

fn check_url(s: &str, at: &str, schemes: &[&str], problems: &mut Vec<String>) {
    let ok = schemes.iter().any(|scheme| {
        s.strip_prefix(scheme)
            .and_then(|r| r.strip_prefix("://"))
            .is_some_and(|rest| !rest.is_empty())
    });
    if !ok {
        problems.push(format!(
            "{at}: {s:?} must be a URL starting with {}",
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
}

/// Bearer tokens (`[[admin.tokens]]`, `[[grpc.tokens]]`): named uniquely, long enough, and
/// limited (if at all) to accounts that exist.
fn check_tokens(
    raw: Vec<RawAdminToken>,
    at: &str,
    account_ids: &HashSet<String>,
    problems: &mut Vec<String>,
) -> Vec<AdminToken> {
    let mut tokens = Vec::new();
    let mut names = HashSet::new();
    for (i, t) in raw.into_iter().enumerate() {
        if t.name.is_empty() {
            problems.push(format!("{at}[{i}].name: must not be empty"));
        } else if !names.insert(t.name.clone()) {
            problems.push(format!("{at}[{i}].name: {:?} is used twice", t.name));
        }
        if t.token.expose().len() < 16 {
            problems.push(format!("{at}[{i}].token: must be at least 16 characters"));
        }
        let accounts = t.accounts.map(|list| {
            if list.is_empty() {
                problems.push(format!(
                    "{at}[{i}].accounts: must name at least one account (leave it out for all)"
                ));
            }
            list.iter()
                .filter_map(|id| {
                    if !account_ids.contains(id) {
                        problems.push(format!(
                            "{at}[{i}].accounts: {id:?} is not the id of an [[accounts]] entry"
                        ));
                        return None;
                    }
                    AccountId::parse(id).ok()
                })
                .collect()
        });
        tokens.push(AdminToken {
            name: t.name,
            token: t.token,
            scope: Scope::new(accounts, t.read_only),
        });
    }
    tokens
}

fn check(raw: Raw, problems: &mut Vec<String>) -> Option<Config> {
    let http_listen = parse_addr(&raw.http.listen, "http.listen", problems);
    if raw.http.max_body_bytes < 1024 {
        problems.push(format!(
            "http.max_body_bytes: {} is too small for a WeChat callback (at least 1024)",
            raw.http.max_body_bytes
        ));
    }
    if !(100..=300_000).contains(&raw.http.body_timeout_ms) {
        problems.push(format!(
            "http.body_timeout_ms: {} must be between 100 and 300000",
            raw.http.body_timeout_ms
        ));
    }
    if let Some(n) = raw
        .http
        .max_connections
        .filter(|n| !(1..=1_000_000).contains(n))
    {
        problems.push(format!(
            "http.max_connections: {n} must be between 1 and 1000000"
        ));
    }
    let admin_listen = raw
        .http
        .admin_listen
        .as_deref()
        .map(|a| parse_addr(a, "http.admin_listen", problems));
    if let (Some(Some(admin)), Some(public)) = (admin_listen, http_listen) {
        if admin == public && admin.port() != 0 {
            problems.push(format!(
                "http.admin_listen: {admin} is http.listen too; leave it out to serve both there"
            ));
        }
    }
    let grpc_listen = parse_addr(&raw.grpc.listen, "grpc.listen", problems);
    if !(1024..=(1 << 30)).contains(&raw.grpc.max_message_bytes) {
        problems.push(format!(
            "grpc.max_message_bytes: {} must be between 1024 and 1073741824",
            raw.grpc.max_message_bytes
        ));
    }

    let backend = match raw.store.backend.as_str() {
        "embedded" => {
            if raw.store.path.is_empty() {
                problems.push("store.path: must not be empty for the embedded store".into());
            }
            Some(StoreBackend::Embedded {
                path: PathBuf::from(&raw.store.path),
            })
        }
        "redis" => match raw.store.redis_url {
            Some(url) => {
                // A comma-separated list names the nodes of a Redis Cluster. The value is not
                // echoed: it may carry a password.
                let valid = |node: &str| {
                    ["redis://", "rediss://"]
                        .iter()
                        .any(|scheme| node.len() > scheme.len() && node.starts_with(scheme))
                };
                if !url.expose().split(',').map(str::trim).all(valid) {
                    problems.push(
                        "store.redis_url: every node must be a URL starting with redis:// or \
                         rediss:// (the nodes of a Redis Cluster: comma-separated)"
                            .into(),
                    );
                }
                Some(StoreBackend::Redis { url })
            }
            None => {
                problems.push("store.redis_url: required when store.backend = \"redis\"".into());
                None
            }
        },
        other => {
            problems.push(format!(
                "store.backend: unknown backend {other:?}: expected \"embedded\" or \"redis\""
            ));
            None
        }
    };
    if raw.store.dedup_ttl_seconds < 60 {
        problems.push(format!(
            "store.dedup_ttl_seconds: {} is shorter than WeChat's retry window (at least 60)",
            raw.store.dedup_ttl_seconds
        ));
    }

    if !(1..=3600).contains(&raw.store.redis_lease_seconds) {
        problems.push(format!(
            "store.redis_lease_seconds: {} must be between 1 and 3600",
            raw.store.redis_lease_seconds
        ));
    }
    if !(1..=86_400).contains(&raw.store.sweep_interval_seconds) {
        problems.push(format!(
            "store.sweep_interval_seconds: {} must be between 1 and 86400",
            raw.store.sweep_interval_seconds
        ));
    }
    let max_in_flight = raw.callbacks.max_in_flight;
    let per_account = raw.callbacks.max_in_flight_per_account;
    if !(1..=1_000_000).contains(&max_in_flight) {
        problems.push(format!(
            "callbacks.max_in_flight: {max_in_flight} must be between 1 and 1000000"
        ));
    }
    if per_account == 0 || per_account > max_in_flight {
        problems.push(format!(
            "callbacks.max_in_flight_per_account: {per_account} must be between 1 and \
             callbacks.max_in_flight ({max_in_flight})"
        ));
    }

    let grpc_tls = check_grpc_tls(&raw.grpc, problems);
    let crm = check_crm(raw.crm, problems);
    check_url(
        &raw.wechat.mp_api_base,
        "wechat.mp_api_base",
        &["http", "https"],
        problems,
    );
    check_url(
        &raw.wechat.work_api_base,
        "wechat.work_api_base",
        &["http", "https"],
        problems,
    );

    check_url(
        &raw.wechat.oauth_base,
        "wechat.oauth_base",
        &["http", "https"],
        problems,
    );
    let links = check_links(raw.links, problems);
    if raw.enrichment.user_ttl_seconds < 60 {
        problems.push(format!(
            "enrichment.user_ttl_seconds: {} is too short (at least 60)",
            raw.enrichment.user_ttl_seconds
        ));
    }

    if !(100..=60_000).contains(&raw.wechat.timeout_ms) {
        problems.push(format!(
            "wechat.timeout_ms: {} must be between 100 and 60000",
            raw.wechat.timeout_ms
        ));
    }

    let b = &raw.broadcasts;
    if !(1..=6000).contains(&b.calls_per_minute) {
        problems.push(format!(
            "broadcasts.calls_per_minute: {} must be between 1 and 6000",
            b.calls_per_minute
        ));
    }
    if b.backoff_min_ms == 0 || b.backoff_max_seconds * 1000 < b.backoff_min_ms {
        problems.push(
            "broadcasts.backoff_min_ms must be positive and at most backoff_max_seconds".into(),
        );
    }
    if b.check_after_seconds == 0 || b.lease_seconds < 2 {
        problems.push(
            "broadcasts.check_after_seconds must be positive and lease_seconds at least 2".into(),
        );
    }

    let y = &raw.syncs;
    if !(1..=60_000).contains(&y.calls_per_minute) {
        problems.push(format!(
            "syncs.calls_per_minute: {} must be between 1 and 60000",
            y.calls_per_minute
        ));
    }
    if y.backoff_min_ms == 0 || y.backoff_max_seconds * 1000 < y.backoff_min_ms {
        problems
            .push("syncs.backoff_min_ms must be positive and at most backoff_max_seconds".into());
    }
    if y.lease_seconds < 2 {
        problems.push(format!(
            "syncs.lease_seconds: {} must be at least 2",
            y.lease_seconds
        ));
    }
    let t = &raw.template_sends;
    if !(1..=1000).contains(&t.sends_per_second) {
        problems.push(format!(
            "template_sends.sends_per_second: {} must be between 1 and 1000",
            t.sends_per_second
        ));
    }
    if t.backoff_min_ms == 0 || t.backoff_max_seconds * 1000 < t.backoff_min_ms {
        problems.push(
            "template_sends.backoff_min_ms must be positive and at most backoff_max_seconds".into(),
        );
    }
    if t.lease_seconds < 2 {
        problems.push("template_sends.lease_seconds must be at least 2".into());
    }

    let format = match raw.log.format.as_str() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        other => {
            problems.push(format!(
                "log.format: {other:?} must be \"text\" or \"json\""
            ));
            None
        }
    };

    let mut accounts = Vec::new();
    let mut ids = HashSet::new();
    if raw.accounts.is_empty() {
        problems.push("accounts: at least one [[accounts]] entry is needed".into());
    }
    for (i, a) in raw.accounts.into_iter().enumerate() {
        let at = format!("accounts[{i}]");
        if !ids.insert(a.id.clone()) {
            problems.push(format!("{at}.id: {:?} is used by another account", a.id));
        }
        if let Some(acc) = check_account(a, &at, problems) {
            accounts.push(acc);
        }
    }
    let admin_tokens = check_tokens(raw.admin.tokens, "admin.tokens", &ids, problems);
    refuse_published_tokens(&admin_tokens, &raw.http, problems);
    let grpc_tokens = check_tokens(raw.grpc.tokens, "grpc.tokens", &ids, problems);

    let admin_listen = match admin_listen {
        Some(parsed) => Some(parsed?),
        None => None,
    };
    Some(Config {
        http: HttpConfig {
            listen: http_listen?,
            admin_listen,
            max_body_bytes: raw.http.max_body_bytes as usize,
            body_timeout: Duration::from_millis(raw.http.body_timeout_ms),
            max_connections: raw.http.max_connections.map(|n| n as usize),
        },
        grpc_listen: grpc_listen?,
        grpc_max_message_bytes: raw.grpc.max_message_bytes as usize,
        grpc_tls,
        store: StoreConfig {
            backend: backend?,
            dedup_ttl: Duration::from_secs(raw.store.dedup_ttl_seconds),
            redis_lease: Duration::from_secs(raw.store.redis_lease_seconds),
            cache_bytes: (raw.store.cache_mib.clamp(1, 65_536) as usize) << 20,
            sweep_interval: Duration::from_secs(raw.store.sweep_interval_seconds),
        },
        crm,
        wechat: WechatConfig {
            mp_api_base: raw.wechat.mp_api_base.trim_end_matches('/').to_owned(),
            work_api_base: raw.wechat.work_api_base.trim_end_matches('/').to_owned(),
            timeout: Duration::from_millis(raw.wechat.timeout_ms),
            oauth_base: raw.wechat.oauth_base.trim_end_matches('/').to_owned(),
        },
        max_clock_skew: match raw.callbacks.max_clock_skew_seconds {
            0 => None,
            s => Some(Duration::from_secs(s)),
        },
        callback_limits: CallbackLimitsConfig {
            max_in_flight: max_in_flight as usize,
            max_in_flight_per_account: per_account as usize,
        },
        admin_tokens,
        grpc_tokens,
        log: LogConfig {
            format: format?,
            level: raw.log.level,
        },
        accounts,
        links: LinksConfig {
            oauth_base: raw.wechat.oauth_base.trim_end_matches('/').to_owned(),
            ..links
        },
        enrichment: EnrichmentConfig {
            enabled: raw.enrichment.enabled,
            user_ttl: Duration::from_secs(raw.enrichment.user_ttl_seconds),
        },
        broadcasts: BroadcastConfig {
            calls_per_minute: raw.broadcasts.calls_per_minute,
            backoff_min: Duration::from_millis(raw.broadcasts.backoff_min_ms),
            backoff_max: Duration::from_secs(raw.broadcasts.backoff_max_seconds),
            check_after: Duration::from_secs(raw.broadcasts.check_after_seconds),
            lease: Duration::from_secs(raw.broadcasts.lease_seconds),
            max_body_bytes: raw.broadcasts.max_body_bytes as usize,
        },
        syncs: SyncConfig {
            calls_per_minute: raw.syncs.calls_per_minute,
            backoff_min: Duration::from_millis(raw.syncs.backoff_min_ms),
            backoff_max: Duration::from_secs(raw.syncs.backoff_max_seconds),
            lease: Duration::from_secs(raw.syncs.lease_seconds),
        },
        template_sends: TemplateSendConfig {
            sends_per_second: raw.template_sends.sends_per_second,
            backoff_min: Duration::from_millis(raw.template_sends.backoff_min_ms),
            backoff_max: Duration::from_secs(raw.template_sends.backoff_max_seconds),
            lease: Duration::from_secs(raw.template_sends.lease_seconds),
        },
    })
}

/// `[crm]`: the endpoint's scheme decides TLS; `tls_*` and `token` make sense only with an
/// endpoint, and `tls_*` only over `https://` (a CA file on a plaintext endpoint would give a
/// false sense of security).
fn check_crm(raw: RawCrm, problems: &mut Vec<String>) -> CrmConfig {
    if raw.batch_size == 0 || raw.batch_size > 10_000 {
        problems.push(format!(
            "crm.batch_size: {} must be between 1 and 10000",
            raw.batch_size
        ));
    }
    let tls_keys = [
        ("tls_ca_file", raw.tls_ca_file.is_some()),
        ("tls_cert_file", raw.tls_cert_file.is_some()),
        ("tls_key_file", raw.tls_key_file.is_some()),
        ("tls_server_name", raw.tls_server_name.is_some()),
    ];
    let https = match &raw.endpoint {
        Some(endpoint) => {
            check_url(endpoint, "crm.endpoint", &["http", "https"], problems);
            endpoint.starts_with("https://")
        }
        None => false,
    };
    if !https {
        let why = if raw.endpoint.is_some() {
            "crm.endpoint is http:// (plaintext); TLS needs https://"
        } else {
            "there is no crm.endpoint"
        };
        for (key, _) in tls_keys.iter().filter(|(_, set)| *set) {
            problems.push(format!("crm.{key}: set, but {why}"));
        }
    }
    if let Some(token) = &raw.token {
        // Sent as gRPC metadata, which is visible ASCII; the value is not echoed.
        if token.is_empty() || !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
            problems.push(
                "crm.token: must be printable ASCII with no spaces (it is sent as \
                 `authorization: Bearer <token>`)"
                    .into(),
            );
        }
        if raw.endpoint.is_none() {
            problems.push("crm.token: set, but there is no crm.endpoint".into());
        }
    }
    let tls = https.then(|| {
        if let Some(ca) = &raw.tls_ca_file {
            if let Err(e) = tls::read_certificates(ca) {
                problems.push(format!("crm.tls_ca_file: {e}"));
            }
        }
        let identity = check_identity(
            raw.tls_cert_file,
            raw.tls_key_file,
            "crm.tls_cert_file",
            "crm.tls_key_file",
            problems,
        );
        if let Some(name) = &raw.tls_server_name {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                problems.push(format!(
                    "crm.tls_server_name: {name:?} is not a DNS name or an IP address"
                ));
            }
        }
        ClientTls {
            ca_file: raw.tls_ca_file,
            identity,
            server_name: raw.tls_server_name,
        }
    });
    CrmConfig {
        endpoint: raw.endpoint,
        timeout: Duration::from_millis(raw.timeout_ms),
        batch_size: raw.batch_size as usize,
        token: raw.token,
        tls,
    }
}

/// `grpc.tls_*`: a certificate and its key turn TLS on; a client CA needs them.
fn check_grpc_tls(raw: &RawGrpc, problems: &mut Vec<String>) -> Option<ServerTls> {
    let identity = check_identity(
        raw.tls_cert_file.clone(),
        raw.tls_key_file.clone(),
        "grpc.tls_cert_file",
        "grpc.tls_key_file",
        problems,
    );
    if let Some(ca) = &raw.tls_client_ca_file {
        if identity.is_none() && raw.tls_cert_file.is_none() {
            problems.push(
                "grpc.tls_client_ca_file: set without grpc.tls_cert_file and grpc.tls_key_file \
                 (client certificates are checked only over TLS)"
                    .into(),
            );
        }
        if let Err(e) = tls::read_certificates(ca) {
            problems.push(format!("grpc.tls_client_ca_file: {e}"));
        }
    }
    Some(ServerTls {
        identity: identity?,
        client_ca_file: raw.tls_client_ca_file.clone(),
    })
}

/// A `*_cert_file` and `*_key_file` pair: both or neither, readable, and belonging together.
fn check_identity(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    cert_at: &str,
    key_at: &str,
    problems: &mut Vec<String>,
) -> Option<IdentityFiles> {
    let (cert_file, key_file) = match (cert, key) {
        (None, None) => return None,
        (Some(_), None) => {
            problems.push(format!("{cert_at}: set without {key_at} (both are needed)"));
            return None;
        }
        (None, Some(_)) => {
            problems.push(format!("{key_at}: set without {cert_at} (both are needed)"));
            return None;
        }
        (Some(cert), Some(key)) => (cert, key),
    };
    // The certificate first, so that a key error is reported against the key.
    if let Err(e) = tls::read_certificates(&cert_file) {
        problems.push(format!("{cert_at}: {e}"));
        return None;
    }
    let files = IdentityFiles {
        cert_file,
        key_file,
    };
    if let Err(e) = tls::read_identity(&files) {
        problems.push(format!("{key_at}: {e}"));
        return None;
    }
    Some(files)
}

/// `[links]`: the base URL is an origin (no path, query or trailing slash) and every allowed
/// domain a lowercase ASCII host name with at least one dot, so that matching a target's host
/// against it is a plain string comparison (see `crate::domain::link`).
fn check_links(raw: RawLinks, problems: &mut Vec<String>) -> LinksConfig {
    if let Some(base) = &raw.public_base_url {
        check_url(base, "links.public_base_url", &["http", "https"], problems);
        let rest = base
            .split_once("://")
            .map_or("", |(_, r)| r)
            .trim_end_matches('/');
        if rest.contains(['/', '?', '#', '@']) {
            problems.push(format!(
                "links.public_base_url: {base:?} must be an origin such as \"https://gw.example.com\" (no path, query or user)"
            ));
        }
    }
    for (i, d) in raw.allowed_domains.iter().enumerate() {
        if !crate::domain::link::is_host_name(d) {
            problems.push(format!(
                "links.allowed_domains[{i}]: {d:?} must be a lowercase host name such as \"acme.com\" (punycode for IDN, no scheme, port or path)"
            ));
        }
    }
    if raw.anonymous_click_window_seconds > 86_400 {
        problems.push(format!(
            "links.anonymous_click_window_seconds: {} must be between 0 and 86400",
            raw.anonymous_click_window_seconds
        ));
    }
    if let Some(secret) = &raw.identity_secret {
        // HMAC-SHA256 keys shorter than the hash output weaken it (RFC 2104, section 3).
        if secret.expose().len() < 32 {
            problems.push(format!(
                "links.identity_secret: at least 32 bytes (it keys HMAC-SHA256), got {}",
                secret.expose().len()
            ));
        }
    }
    LinksConfig {
        public_base_url: raw
            .public_base_url
            .map(|b| b.trim_end_matches('/').to_owned()),
        allowed_domains: raw.allowed_domains,
        oauth_base: String::new(),
        anonymous_click_window: Duration::from_secs(raw.anonymous_click_window_seconds),
        identity_secret: raw.identity_secret,
    }
}

/// WeChat's rule for the callback Token: 3 to 32 letters or digits.
fn check_token(token: &Secret, at: &str, problems: &mut Vec<String>) {
    let t = token.expose();
    if !(3..=32).contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_alphanumeric()) {
        problems.push(format!(
            "{at}.token: must be 3 to 32 letters or digits (WeChat's rule for the callback Token)"
        ));
    }
}

fn check_key(key: &Secret, at: &str, problems: &mut Vec<String>) -> Option<MsgCrypto> {
    let k = key.expose();
    if k.len() != 43 || !k.bytes().all(|b| b.is_ascii_alphanumeric()) {
        problems.push(format!(
            "{at}: must be 43 letters or digits (WeChat's EncodingAESKey), got {} characters",
            k.chars().count()
        ));
        return None;
    }
    match MsgCrypto::new(k) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            None
        }
    }
}

fn check_receiver(value: Option<String>, at: &str, problems: &mut Vec<String>) -> String {
    match value {
        Some(v)
            if !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            v
        }
        Some(v) => {
            problems.push(format!("{at}: {v:?} must be 1 to 64 letters or digits"));
            v
        }
        None => {
            problems.push(format!("{at}: required"));
            String::new()
        }
    }
}

/// A secret that must be set and not empty (an unset `${NAME}` is reported where it is expanded).
fn required_secret(
    value: Option<Secret>,
    problem: impl FnOnce() -> String,
    problems: &mut Vec<String>,
) -> Secret {
    match value {
        Some(s) if !s.expose().is_empty() => s,
        _ => {
            problems.push(problem());
            Secret::default()
        }
    }
}

fn check_account(a: RawAccount, at: &str, problems: &mut Vec<String>) -> Option<Account> {
    let before = problems.len();
    let id = AccountId::parse(&a.id)
        .map_err(|e| problems.push(format!("{at}.id: {e}")))
        .ok();
    let platform = Platform::parse(&a.platform)
        .map_err(|e| problems.push(format!("{at}.platform: {e}")))
        .ok()?;
    let named =
        |field: &str, why: &str| format!("{at}.{field}: required for account {:?}: {why}", a.id);
    let token = match a.token.clone() {
        Some(t) => {
            check_token(&t, at, problems);
            t
        }
        None => {
            problems.push(named("token", "WeChat signs every callback with it"));
            Secret::default()
        }
    };

    let mut keys = Vec::new();
    if let Some(k) = &a.encoding_aes_key {
        keys.extend(check_key(k, &format!("{at}.encoding_aes_key"), problems));
    }
    if let Some(k) = &a.previous_encoding_aes_key {
        if a.encoding_aes_key.is_none() {
            problems.push(format!(
                "{at}.previous_encoding_aes_key: set without encoding_aes_key"
            ));
        }
        keys.extend(check_key(
            k,
            &format!("{at}.previous_encoding_aes_key"),
            problems,
        ));
    }

    let (receiver_id, secret, agent_id, mode) = match platform {
        Platform::Mp => {
            for (field, set) in [
                ("corp_id", a.corp_id.is_some()),
                ("agent_id", a.agent_id.is_some()),
                ("secret", a.secret.is_some()),
            ] {
                if set {
                    problems.push(format!(
                        "{at}.{field}: belongs to a WeCom (\"work\") account, not \"mp\""
                    ));
                }
            }
            let receiver = check_receiver(a.app_id, &format!("{at}.app_id"), problems);
            let secret = required_secret(
                a.app_secret.clone(),
                || named("app_secret", "the WeChat API needs it for an access token"),
                problems,
            );
            let default_mode = if a.encoding_aes_key.is_some() {
                "safe"
            } else {
                "plain"
            };
            let mode = match a.mode.as_deref().unwrap_or(default_mode) {
                "plain" => CallbackMode::Plain,
                "compatible" => CallbackMode::Compatible,
                "safe" => CallbackMode::Safe,
                other => {
                    problems.push(format!(
                        "{at}.mode: {other:?} must be \"plain\", \"compatible\" or \"safe\""
                    ));
                    CallbackMode::Safe
                }
            };
            if mode != CallbackMode::Plain && a.encoding_aes_key.is_none() {
                problems.push(format!(
                    "{at}.encoding_aes_key: required for compatible and safe mode"
                ));
            }
            (receiver, secret, 0, mode)
        }
        Platform::Work => {
            for (field, set) in [
                ("app_id", a.app_id.is_some()),
                ("app_secret", a.app_secret.is_some()),
                ("mode", a.mode.is_some()),
            ] {
                if set {
                    problems.push(format!(
                        "{at}.{field}: belongs to an Official Account (\"mp\"), not \"work\""
                    ));
                }
            }
            let receiver = check_receiver(a.corp_id, &format!("{at}.corp_id"), problems);
            if a.encoding_aes_key.is_none() {
                problems.push(format!(
                    "{at}.encoding_aes_key: required (WeCom callbacks are always encrypted)"
                ));
            }
            let agent_id = a.agent_id.unwrap_or(0);
            if agent_id < 0 {
                problems.push(format!("{at}.agent_id: must not be negative"));
            }
            let secret = required_secret(
                a.secret.clone(),
                || named("secret", "the WeCom API needs it for an access token"),
                problems,
            );
            (receiver, secret, agent_id, CallbackMode::Safe)
        }
    };
    if problems.len() > before {
        return None;
    }
    Some(Account {
        id: id?,
        platform,
        receiver_id,
        secret,
        token,
        mode,
        keys,
        encoding_aes_key: a.encoding_aes_key,
        agent_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_taken_out_of_parse_messages_but_key_names_stay() {
        for (message, expected) in [
            (
                r#"invalid type: string "hunter2", expected u64"#,
                "invalid type: string, expected u64",
            ),
            (
                "invalid type: integer `1234`, expected a string",
                "invalid type: integer, expected a string",
            ),
            (
                r#"invalid value: string "a\"b", expected x"#,
                "invalid value: string, expected x",
            ),
            (
                "unknown field `appsecret`, expected one of `id`",
                "unknown field `appsecret`, expected one of `id`",
            ),
        ] {
            assert_eq!(redact_values(message), expected);
        }
        assert_eq!(line_column("a\nbcd\ne", 4), (2, 3), "the d");
    }

    #[test]
    fn slow_client_settings_have_defaults_and_bounds() {
        let cfg = load_str(GOOD_MP).unwrap();
        assert_eq!(cfg.http.body_timeout, Duration::from_secs(5));
        assert_eq!(cfg.http.max_connections, None);
        assert_eq!(cfg.links.anonymous_click_window, Duration::from_secs(60));
        let bad = format!(
            "[http]\nbody_timeout_ms = 10\nmax_connections = 0\n[links]\nanonymous_click_window_seconds = 90000\n{GOOD_MP}"
        );
        let problems = load_str(&bad).unwrap_err().0.join("\n");
        for key in [
            "http.body_timeout_ms",
            "http.max_connections",
            "links.anonymous_click_window_seconds",
        ] {
            assert!(problems.contains(key), "{key} not in {problems}");
        }
    }

    fn load_str(toml: &str) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        load(&path)
    }

    const GOOD_MP: &str = r#"
[[accounts]]
id = "acme-mp"
platform = "mp"
app_id = "wxb11529c136998cb6"
app_secret = "s"
token = "pamtest"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
"#;

    #[test]
    fn broadcast_pacing_has_defaults_and_bounds() {
        let cfg = load_str(GOOD_MP).unwrap();
        assert_eq!(cfg.broadcasts.calls_per_minute, 60);
        assert_eq!(cfg.broadcasts.check_after, Duration::from_secs(1800));
        assert_eq!(cfg.broadcasts.lease, Duration::from_secs(30));
        let fast = load_str(&format!(
            "[broadcasts]\ncalls_per_minute = 600\ncheck_after_seconds = 5\n{GOOD_MP}"
        ))
        .unwrap();
        assert_eq!(fast.broadcasts.calls_per_minute, 600);
        let err = load_str(&format!(
            "[broadcasts]\ncalls_per_minute = 0\nlease_seconds = 1\n{GOOD_MP}"
        ))
        .unwrap_err();
        let all = err.0.join("\n");
        assert!(all.contains("broadcasts.calls_per_minute"), "{all}");
        assert!(all.contains("lease_seconds"), "{all}");
    }

    #[test]
    fn a_minimal_configuration_gets_the_documented_defaults() {
        let cfg = load_str(GOOD_MP).unwrap();
        assert_eq!(cfg.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.http.max_body_bytes, 65536);
        assert_eq!(cfg.max_clock_skew, Some(Duration::from_secs(300)));
        assert!(matches!(cfg.store.backend, StoreBackend::Embedded { .. }));
        assert_eq!(cfg.accounts[0].mode, CallbackMode::Safe);
        assert_eq!(cfg.accounts[0].receiver_id, "wxb11529c136998cb6");
    }

    #[test]
    fn check_config_lists_every_problem_at_once() {
        let toml = r#"
[http]
listen = "localhost-no-port"
[grpc]
listen = "300.1.1.1:50051"
[store]
backend = "cassandra"
[[accounts]]
id = "dup"
platform = "weibo"
token = "abc"
[[accounts]]
id = "dup"
platform = "mp"
app_id = "wx1"
token = "tok"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF"
[[accounts]]
id = "w"
platform = "work"
corp_id = "ww1"
token = "x"
"#;
        let problems = load_str(toml).unwrap_err().0.join("\n");
        for expected in [
            "http.listen",
            "grpc.listen",
            "store.backend: unknown backend \"cassandra\"",
            "accounts[0].platform: unknown platform \"weibo\"",
            "accounts[1].id: \"dup\" is used by another account",
            "accounts[1].encoding_aes_key: must be 43 letters or digits (WeChat's EncodingAESKey), got 42 characters",
            "accounts[2].token: must be 3 to 32 letters or digits",
            "accounts[2].encoding_aes_key: required",
        ] {
            assert!(problems.contains(expected), "missing {expected:?} in:\n{problems}");
        }
    }

    #[test]
    fn secrets_come_from_the_environment_and_missing_ones_are_named() {
        std::env::set_var("GWTEST_SECRET_A1", "from-the-environment-123");
        let toml = format!(
            "[[admin.tokens]]\nname = \"ops\"\ntoken = \"${{GWTEST_SECRET_A1}}\"\n{GOOD_MP}"
        );
        let cfg = load_str(&toml).unwrap();
        assert_eq!(
            cfg.admin_tokens[0].token.expose(),
            "from-the-environment-123"
        );
        assert!(!format!("{:?}", cfg.admin_tokens[0]).contains("from-the"));

        let toml = format!(
            "[[admin.tokens]]\nname = \"ops\"\ntoken = \"${{GWTEST_SECRET_UNSET_9}}\"\n{GOOD_MP}"
        );
        let problems = load_str(&toml).unwrap_err().0.join("\n");
        assert!(
            problems.contains(
                "admin.tokens[0].token: environment variable GWTEST_SECRET_UNSET_9 is not set"
            ),
            "{problems}"
        );
    }

    #[test]
    fn grpc_tokens_are_checked_like_admin_tokens_and_the_wechat_timeout_is_bounded() {
        let toml = format!(
            "[wechat]\ntimeout_ms = 10\n[[grpc.tokens]]\nname = \"crm\"\ntoken = \"short\"\n\
             [[grpc.tokens]]\nname = \"crm\"\ntoken = \"long-enough-token-123\"\n{GOOD_MP}"
        );
        let problems = load_str(&toml).unwrap_err().0.join("\n");
        for expected in [
            "grpc.tokens[0].token: must be at least 16 characters",
            "grpc.tokens[1].name: \"crm\" is used twice",
            "wechat.timeout_ms: 10 must be between 100 and 60000",
        ] {
            assert!(
                problems.contains(expected),
                "missing {expected:?} in:\n{problems}"
            );
        }
        let cfg = load_str(GOOD_MP).unwrap();
        assert!(
            cfg.grpc_tokens.is_empty(),
            "no gRPC tokens: the service is open"
        );
        assert_eq!(cfg.wechat.timeout, Duration::from_secs(5));
    }

    #[test]
    fn token_scopes_must_name_configured_accounts() {
        let toml = format!(
            "[[admin.tokens]]\nname = \"ro\"\ntoken = \"long-enough-token-123\"\n\
             accounts = [\"acme-mp\"]\nread_only = true\n{GOOD_MP}"
        );
        let cfg = load_str(&toml).unwrap();
        let scope = &cfg.admin_tokens[0].scope;
        assert!(scope.read_only());
        assert_eq!(scope.accounts().unwrap()[0].as_str(), "acme-mp");
        assert!(load_str(GOOD_MP).unwrap().grpc_tokens.is_empty());

        let toml = format!(
            "[[admin.tokens]]\nname = \"a\"\ntoken = \"long-enough-token-123\"\n\
             accounts = [\"acme-mp\", \"nope\"]\n\
             [[grpc.tokens]]\nname = \"b\"\ntoken = \"long-enough-token-456\"\naccounts = []\n{GOOD_MP}"
        );
        let problems = load_str(&toml).unwrap_err().0.join("\n");
        for expected in [
            "admin.tokens[0].accounts: \"nope\" is not the id of an [[accounts]] entry",
            "grpc.tokens[0].accounts: must name at least one account",
        ] {
            assert!(
                problems.contains(expected),
                "missing {expected:?} in:\n{problems}"
            );
        }
    }

    #[test]
    fn admin_listen_and_the_grpc_message_limit_are_parsed_and_bounded() {
        let cfg = load_str(GOOD_MP).unwrap();
        assert_eq!(cfg.http.admin_listen, None);
        assert_eq!(cfg.http.admin_addr(), cfg.http.listen);
        assert_eq!(cfg.grpc_max_message_bytes, 16 << 20);
        let cfg = load_str(&format!(
            "[http]\nadmin_listen = \"127.0.0.1:9090\"\n[grpc]\nmax_message_bytes = 4194304\n{GOOD_MP}"
        ))
        .unwrap();
        assert_eq!(cfg.http.admin_addr().to_string(), "127.0.0.1:9090");
        assert_eq!(cfg.grpc_max_message_bytes, 4 << 20);
        let problems = load_str(&format!(
            "[http]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:8080\"\n\
             [grpc]\nmax_message_bytes = 10\n{GOOD_MP}"
        ))
        .unwrap_err()
        .0
        .join("\n");
        assert!(
            problems.contains("http.admin_listen: 127.0.0.1:8080 is http.listen too"),
            "{problems}"
        );
        assert!(
            problems.contains("grpc.max_message_bytes: 10 must be between"),
            "{problems}"
        );
        assert!(load_str(&format!("[http]\nadmin_listen = \"nowhere\"\n{GOOD_MP}")).is_err());
    }

    #[test]
    fn warnings_name_a_public_admin_api_and_an_open_public_grpc_service() {
        assert!(load_str(GOOD_MP).unwrap().warnings().is_empty());
        let public = load_str(&format!(
            "[http]\nlisten = \"0.0.0.0:8080\"\n[grpc]\nlisten = \"[::]:50051\"\n{GOOD_MP}"
        ))
        .unwrap()
        .warnings();
        assert_eq!(public.len(), 2, "{public:?}");
        assert!(
            public[0].contains("0.0.0.0:8080 (http.listen"),
            "{public:?}"
        );
        assert!(public[1].contains("no [[grpc.tokens]]"), "{public:?}");
        // The admin API on its own loopback listener and a gRPC service with tokens: quiet.
        let split = load_str(&format!(
            "[http]\nlisten = \"0.0.0.0:8080\"\nadmin_listen = \"[::1]:9090\"\n\
             [grpc]\nlisten = \"10.0.0.5:50051\"\n\
             [[grpc.tokens]]\nname = \"crm\"\ntoken = \"long-enough-token-123\"\n{GOOD_MP}"
        ))
        .unwrap()
        .warnings();
        assert!(split.is_empty(), "{split:?}");
        let admin = load_str(&format!(
            "[http]\nadmin_listen = \"192.168.1.2:9090\"\n{GOOD_MP}"
        ))
        .unwrap()
        .warnings();
        assert!(
            admin[0].contains("192.168.1.2:9090 (http.admin_listen)"),
            "{admin:?}"
        );
    }

    #[test]
    fn callback_limits_default_to_512_and_128_and_must_nest() {
        let cfg = load_str(GOOD_MP).unwrap();
        assert_eq!(cfg.callback_limits.max_in_flight, 512);
        assert_eq!(cfg.callback_limits.max_in_flight_per_account, 128);
        assert_eq!(cfg.store.redis_lease, Duration::from_secs(30));
        assert_eq!(cfg.store.sweep_interval, Duration::from_secs(600));
        let toml = format!(
            "[callbacks]\nmax_in_flight = 4\nmax_in_flight_per_account = 5\n\
             [store]\nredis_lease_seconds = 0\nsweep_interval_seconds = 0\n{GOOD_MP}"
        );
        let problems = load_str(&toml).unwrap_err().0.join("\n");
        for expected in [
            "callbacks.max_in_flight_per_account: 5 must be between 1 and callbacks.max_in_flight (4)",
            "store.redis_lease_seconds: 0 must be between 1 and 3600",
            "store.sweep_interval_seconds: 0 must be between 1 and 86400",
        ] {
            assert!(problems.contains(expected), "missing {expected:?} in:\n{problems}");
        }
        let problems = load_str(&format!("[callbacks]\nmax_in_flight = 0\n{GOOD_MP}"))
            .unwrap_err()
            .0
            .join("\n");
        assert!(
            problems.contains("callbacks.max_in_flight: 0 must be between"),
            "{problems}"
        );
    }

    #[test]
    fn a_redis_url_may_list_the_nodes_of_a_cluster_and_each_is_checked() {
        let cluster = format!(
            "[store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:7000, redis://127.0.0.1:7001\"\n{GOOD_MP}"
        );
        assert!(load_str(&cluster).is_ok());
        let bad = cluster.replace("redis://127.0.0.1:7001", "http://:pw-4e8c1a@127.0.0.1:7001");
        let problems = load_str(&bad).unwrap_err().0.join("\n");
        assert!(
            problems.contains("store.redis_url: every node must be a URL"),
            "{problems}"
        );
        assert!(
            !problems.contains("pw-4e8c1a"),
            "a password is never echoed: {problems}"
        );
    }

    /// A self-signed certificate and its key, and a second key that does not match it, as PEM
    /// files in `dir`: (cert, key, other key).
    fn pem_files(dir: &Path) -> (String, String, String) {
        let a = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path.to_string_lossy().into_owned()
        };
        (
            write("cert.pem", a.cert.pem()),
            write("key.pem", a.signing_key.serialize_pem()),
            write("other.key", b.signing_key.serialize_pem()),
        )
    }

    #[test]
    fn crm_tls_and_token_are_read_when_the_endpoint_is_https() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = pem_files(dir.path());
        let toml = format!(
            "[crm]\nendpoint = \"https://crm.internal:50052\"\ntoken = \"tok-123\"\n\
             tls_ca_file = {cert:?}\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\n\
             tls_server_name = \"crm.example.com\"\n{GOOD_MP}"
        );
        let cfg = load_str(&toml).unwrap();
        let tls = cfg.crm.tls.clone().expect("https means TLS");
        assert_eq!(tls.ca_file, Some(PathBuf::from(&cert)));
        assert_eq!(tls.identity.unwrap().key_file, PathBuf::from(&key));
        assert_eq!(tls.server_name.as_deref(), Some("crm.example.com"));
        assert_eq!(cfg.crm.token.unwrap().expose(), "tok-123");
        assert!(!format!("{:?}", cfg.crm.tls).contains("BEGIN"));

        let https = "[crm]\nendpoint = \"https://crm.internal:50052\"\n";
        let cfg = load_str(&format!("{https}{GOOD_MP}")).unwrap();
        assert_eq!(
            cfg.crm.tls,
            Some(tls::ClientTls::default()),
            "the platform's roots"
        );
        let cfg = load_str(&format!("[crm]\nendpoint = \"http://crm:1\"\n{GOOD_MP}")).unwrap();
        assert_eq!(cfg.crm.tls, None);
    }

    #[test]
    fn check_config_names_every_crm_tls_problem() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, other) = pem_files(dir.path());
        let missing = dir.path().join("missing.pem");
        let missing = missing.to_string_lossy();
        let problems = |toml: String| {
            load_str(&format!("{toml}{GOOD_MP}"))
                .unwrap_err()
                .0
                .join("\n")
        };
        let https = "[crm]\nendpoint = \"https://crm.internal:50052\"\n";
        for (toml, expected) in [
            (
                format!("{https}tls_ca_file = {missing:?}\n"),
                format!("crm.tls_ca_file: cannot read {missing}"),
            ),
            (
                format!("{https}tls_ca_file = {key:?}\n"),
                "crm.tls_ca_file: ".to_owned() + &key + " holds no PEM certificate",
            ),
            (
                format!("{https}tls_cert_file = {cert:?}\n"),
                "crm.tls_cert_file: set without crm.tls_key_file".into(),
            ),
            (
                format!("{https}tls_key_file = {key:?}\n"),
                "crm.tls_key_file: set without crm.tls_cert_file".into(),
            ),
            (
                format!("{https}tls_cert_file = {cert:?}\ntls_key_file = {missing:?}\n"),
                format!("crm.tls_key_file: cannot read {missing}"),
            ),
            (
                format!("{https}tls_cert_file = {cert:?}\ntls_key_file = {cert:?}\n"),
                "crm.tls_key_file: ".to_owned() + &cert + " holds no PEM private key",
            ),
            (
                format!("{https}tls_cert_file = {cert:?}\ntls_key_file = {other:?}\n"),
                format!("crm.tls_key_file: the key in {other} cannot serve the certificate in {cert}"),
            ),
            (
                format!("{https}tls_server_name = \"not a name\"\n"),
                "crm.tls_server_name: \"not a name\" is not a DNS name".into(),
            ),
            (
                format!("[crm]\nendpoint = \"http://crm:1\"\ntls_ca_file = {cert:?}\ntls_server_name = \"crm\"\n"),
                "crm.tls_ca_file: set, but crm.endpoint is http:// (plaintext)".into(),
            ),
            (
                format!("[crm]\ntls_cert_file = {cert:?}\n"),
                "crm.tls_cert_file: set, but there is no crm.endpoint".into(),
            ),
            (
                format!("{https}token = \"has a space-9f3a\"\n"),
                "crm.token: must be printable ASCII with no spaces".into(),
            ),
            (
                "[crm]\ntoken = \"tok\"\n".into(),
                "crm.token: set, but there is no crm.endpoint".into(),
            ),
        ] {
            let all = problems(toml.clone());
            assert!(all.contains(&expected), "{toml}\nmissing {expected:?} in:\n{all}");
            assert!(!all.contains("9f3a"), "a token is never echoed: {all}");
        }
        let all = problems(format!(
            "[crm]\nendpoint = \"http://crm:1\"\ntls_ca_file = {cert:?}\ntls_server_name = \"crm\"\n"
        ));
        assert!(
            all.contains("crm.tls_server_name: set, but crm.endpoint is http://"),
            "{all}"
        );
    }

    #[test]
    fn grpc_server_tls_needs_a_certificate_and_its_key_and_a_client_ca_needs_both() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, other) = pem_files(dir.path());
        let cfg = load_str(&format!(
            "[grpc]\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\ntls_client_ca_file = {cert:?}\n{GOOD_MP}"
        ))
        .unwrap();
        let tls = cfg.grpc_tls.expect("TLS on");
        assert_eq!(tls.client_ca_file, Some(PathBuf::from(&cert)));
        assert!(load_str(GOOD_MP).unwrap().grpc_tls.is_none());
        for (toml, expected) in [
            (
                format!("[grpc]\ntls_cert_file = {cert:?}\n"),
                "grpc.tls_cert_file: set without grpc.tls_key_file".to_owned(),
            ),
            (
                format!("[grpc]\ntls_client_ca_file = {cert:?}\n"),
                "grpc.tls_client_ca_file: set without grpc.tls_cert_file and grpc.tls_key_file".into(),
            ),
            (
                format!("[grpc]\ntls_cert_file = {cert:?}\ntls_key_file = {other:?}\n"),
                "grpc.tls_key_file: the key in".into(),
            ),
            (
                format!("[grpc]\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\ntls_client_ca_file = {key:?}\n"),
                "grpc.tls_client_ca_file: ".to_owned() + &key + " holds no PEM certificate",
            ),
        ] {
            let all = load_str(&format!("{toml}{GOOD_MP}")).unwrap_err().0.join("\n");
            assert!(all.contains(&expected), "{toml}\nmissing {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_so_typos_do_not_pass_silently() {
        let problems = load_str(&format!("[http]\nlisten_addr = \"127.0.0.1:1\"\n{GOOD_MP}"))
            .unwrap_err()
            .0
            .join("\n");
        assert!(
            problems.contains("http.listen_addr: unknown key in [http]"),
            "{problems}"
        );
    }

    /// An unknown key is one problem among the others, named with its section and account;
    /// a missing secret names its account.
    #[test]
    fn unknown_keys_and_missing_secrets_are_listed_with_every_other_problem() {
        let toml = format!(
            "{}\n[[accounts]]\nid = \"acme-work\"\nplatform = \"work\"\ncorp_id = \"ww1\"\n\
             agent_id = 1\nencoding_aes_key = \"{}\"\ntokne = \"abc\"\n\
             [store]\nbackend = \"embedded\"\npth = \"x\"\n",
            GOOD_MP.replace("app_secret = \"s\"\n", ""),
            "a".repeat(43),
        );
        let problems = load_str(&toml).unwrap_err().0;
        let all = problems.join("\n");
        for expected in [
            "accounts[0].app_secret: required for account \"acme-mp\"",
            "accounts[1].secret: required for account \"acme-work\"",
            "accounts[1].token: required for account \"acme-work\"",
            "accounts[1].tokne: unknown key in [[accounts]] number 2 (id \"acme-work\")",
            "store.pth: unknown key in [store]",
        ] {
            assert!(all.contains(expected), "no {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn a_mp_account_without_a_key_is_plain_mode_and_cannot_claim_safe_mode() {
        let plain = GOOD_MP.replace(
            "encoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n",
            "",
        );
        assert_eq!(
            load_str(&plain).unwrap().accounts[0].mode,
            CallbackMode::Plain
        );
        let problems = load_str(&format!("{plain}mode = \"safe\"\n"))
            .unwrap_err()
            .0
            .join("\n");
        assert!(
            problems.contains("required for compatible and safe mode"),
            "{problems}"
        );
    }

    #[test]
    fn the_identity_secret_is_optional_and_at_least_32_bytes() {
        let cfg = load_str(GOOD_MP).unwrap();
        assert!(cfg.links.identity_secret.is_none());
        let long = "k".repeat(32);
        let cfg = load_str(&format!("[links]\nidentity_secret = \"{long}\"\n{GOOD_MP}")).unwrap();
        assert_eq!(cfg.links.identity_secret.unwrap().expose(), long);
        let problems = load_str(&format!("[links]\nidentity_secret = \"short\"\n{GOOD_MP}"))
            .unwrap_err()
            .0
            .join("\n");
        assert!(
            problems.contains("links.identity_secret: at least 32 bytes"),
            "{problems}"
        );
    }

    #[test]
    fn links_and_enrichment_keys_are_checked_and_defaulted() {
        let cfg = load_str(GOOD_MP).unwrap();
        assert!(cfg.enrichment.enabled);
        assert_eq!(cfg.enrichment.user_ttl, Duration::from_secs(86_400));
        assert_eq!(cfg.links.public_base_url, None);
        assert_eq!(cfg.links.oauth_base, "https://open.weixin.qq.com");
        let toml = format!(
            "[links]\npublic_base_url = \"https://gw.example.com/\"\nallowed_domains = [\"acme.com\"]\n{GOOD_MP}"
        );
        let cfg = load_str(&toml).unwrap();
        assert_eq!(
            cfg.links.public_base_url.as_deref(),
            Some("https://gw.example.com")
        );
        let toml = format!(
            "[links]\npublic_base_url = \"https://gw.example.com/l?x=1\"\n\
             allowed_domains = [\"https://acme.com\", \"Acme.com\", \"acme\"]\n\
             [enrichment]\nuser_ttl_seconds = 5\n{GOOD_MP}"
        );
        let problems = load_str(&toml).unwrap_err().0.join("\n");
        for expected in [
            "links.public_base_url: \"https://gw.example.com/l?x=1\" must be an origin",
            "links.allowed_domains[0]",
            "links.allowed_domains[1]",
            "links.allowed_domains[2]",
            "enrichment.user_ttl_seconds: 5 is too short",
        ] {
            assert!(
                problems.contains(expected),
                "missing {expected:?} in:\n{problems}"
            );
        }
    }
}
