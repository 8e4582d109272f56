//! The callback URL of every account: `/wechat/mp/{account}` and `/wechat/work/{account}`.
//!
//! Each POST is verified, decrypted, normalized and recorded (de-duplicated and appended to the
//! outbox, atomically) before it is answered: a 200 means the event is durable. The path never
//! waits on the CRM, so the answer leaves well inside WeChat's 5-second window.
//!
//! When an auto-reply rule or a welcome answers the callback (issue 8,
//! [`crate::services::autoreply`]), the 200 carries the passive reply instead of `success`,
//! encrypted with the key that decrypted the request when it was encrypted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::query::{required, CallbackQuery};
use super::AppState;
use crate::config::{Account, CallbackMode};
use crate::domain::Platform;
use crate::error::CallbackError;
use crate::services::autoreply::{self, Answer};
use crate::store::Recorded;
use crate::wechat::crypto::{self, CryptoError};
use crate::wechat::normalize::normalize;
use crate::wechat::xml::{Document, XmlError};

/// One scope per platform, with a static prefix: actix matches a `{account}` segment with a
/// regex capture (~13,000 instructions a callback, callgrind), while a static prefix is a string
/// comparison; the account is the rest of the path, one segment. GET is WeChat's URL
/// verification, POST a callback; another method gets 405.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/wechat/mp").default_service(web::to(mp)))
        .service(web::scope("/wechat/work").default_service(web::to(work)));
}

/// The account id of `/wechat/{platform}/{account}`: the one segment after the prefix.
fn account_segment(req: &HttpRequest) -> Option<&str> {
    let rest = req.match_info().unprocessed().strip_prefix('/')?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("no such route: a callback URL is /wechat/mp/{account} or /wechat/work/{account}")
}

fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((ALLOW, HeaderValue::from_static("GET, POST")))
        .content_type("text/plain; charset=utf-8")
        .body("a callback URL takes GET (URL verification) and POST (callbacks)")
}

async fn mp(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, CallbackError> {
    entry(Platform::Mp, &req, &state, &body).await
}

async fn work(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, CallbackError> {
    entry(Platform::Work, &req, &state, &body).await
}

/// `/wechat/{platform}/{account}`: GET verifies the URL, POST is a callback.
async fn entry(
    platform: Platform,
    req: &HttpRequest,
    state: &AppState,
    body: &[u8],
) -> Result<HttpResponse, CallbackError> {
    let Some(account) = account_segment(req) else {
        return Ok(not_found());
    };
    let q = CallbackQuery::parse(req.query_string())?;
    match (req.method(), platform) {
        (&Method::POST, _) => Ok(callback(platform, state, account, &q, body).await),
        (&Method::GET, Platform::Mp) => mp_verify(state, account, &q),
        (&Method::GET, Platform::Work) => work_verify(state, account, &q),
        _ => Ok(method_not_allowed()),
    }
}

/// A POST, within the concurrency limits, counted and timed. The span is at debug level: at
/// `info` it is never built (~5,000 instructions a callback); a refusal's log line names the
/// account itself.
#[tracing::instrument(level = "debug", skip_all, fields(account = %account_id))]
async fn callback(
    platform: Platform,
    state: &AppState,
    account_id: &str,
    q: &CallbackQuery<'_>,
    body: &[u8],
) -> HttpResponse {
    let started = Instant::now();
    let result = match state.callback_limits.try_acquire(account_id) {
        Ok(_permit) => match platform {
            Platform::Mp => mp_callback(state, account_id, q, body).await,
            Platform::Work => work_callback(state, account_id, q, body).await,
        },
        Err(scope) => Err(CallbackError::Overloaded(scope)),
    };
    observe(
        platform,
        account_id,
        started,
        result.as_ref().map(|h| h.kind),
    );
    match result {
        Ok(handled) => answer(handled),
        Err(e) => actix_web::ResponseError::error_response(&e),
    }
}

impl AppState {
    fn account(&self, id: &str, platform: Platform) -> Result<Arc<Account>, CallbackError> {
        let account = self
            .accounts
            .get(id)
            .ok_or_else(|| CallbackError::UnknownAccount(id.to_owned()))?;
        if account.platform != platform {
            return Err(CallbackError::WrongPlatform {
                account: id.to_owned(),
                expected: platform.as_str(),
            });
        }
        Ok(account.clone())
    }

    /// Refuses a timestamp further from now than `callbacks.max_clock_skew_seconds`, so a
    /// captured request cannot be replayed later.
    fn check_timestamp(&self, timestamp: &str) -> Result<(), CallbackError> {
        let ts: u64 = timestamp
            .parse()
            .map_err(|_| CallbackError::BadTimestamp(timestamp.to_owned()))?;
        let Some(max) = self.max_clock_skew else {
            return Ok(());
        };
        let now = unix_now();
        let skew = now.abs_diff(ts);
        if skew > max.as_secs() {
            return Err(CallbackError::StaleTimestamp {
                skew_seconds: skew,
                max_seconds: max.as_secs(),
            });
        }
        Ok(())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks `msg_signature` over the encrypted value and decrypts it with the current key, then
/// the previous one (key rotation). Returns the plaintext and the index of the key that worked,
/// so that a reply is encrypted with the same key.
fn verify_and_decrypt(
    account: &Account,
    q: &CallbackQuery<'_>,
    encrypted: &str,
) -> Result<(Vec<u8>, usize), CallbackError> {
    let msg_signature = required(&q.msg_signature, "msg_signature")?;
    let timestamp = required(&q.timestamp, "timestamp")?;
    let nonce = required(&q.nonce, "nonce")?;
    let expected = crypto::msg_signature(account.token.expose(), timestamp, nonce, encrypted);
    if !crypto::signatures_match(&expected, msg_signature) {
        return Err(CallbackError::BadSignature);
    }
    if account.keys.is_empty() {
        return Err(CallbackError::ModeRefused(
            "encrypted callback, but no encoding_aes_key is configured for this account",
        ));
    }
    let mut first_err: Option<CryptoError> = None;
    for (i, key) in account.keys.iter().enumerate() {
        match key.decrypt(encrypted, &account.receiver_id) {
            Ok(plain) => return Ok((plain, i)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.expect("at least one key was tried").into())
}

/// A recorded callback: its kind label, and the passive reply XML (not yet encrypted) if an
/// auto-reply rule or a welcome answers it (issue 8).
struct Handled {
    kind: &'static str,
    reply: Option<String>,
}

/// Parses, normalizes and durably records one decrypted callback body. The reply is chosen
/// before the write, so that the recorded event names it (`reply_rule_id`) and a WeChat retry
/// (a duplicate) gets the same reply again; it leaves only after the write.
async fn record(state: &AppState, account: &Account, xml: &[u8]) -> Result<Handled, CallbackError> {
    let received = Instant::now();
    let doc = Document::parse(xml)?;
    let raw = std::str::from_utf8(xml).map_err(|_| XmlError::Utf8)?;
    let mut event = normalize(&account.id, account.platform, &doc, raw, SystemTime::now())?;
    let kind = kind_label(&event);
    let answer = autoreply::decide(&state.services, &mut event).await;
    let recorded = state.store.record(&event).await?;
    match recorded {
        Recorded::New => tracing::debug!(event_id = %event.id, kind, "event recorded"),
        Recorded::Duplicate => {
            metrics::counter!("wgw_callback_duplicates_total", "account" => account.id.to_string())
                .increment(1);
            tracing::debug!(event_id = %event.id, kind, "retry of a recorded event");
        }
    }
    let reply = match answer {
        Some(Answer::Passive(reply)) => Some(autoreply::passive_xml(&event, &reply)),
        Some(Answer::WelcomeMsg {
            welcome_code,
            reply,
        }) => {
            // A WelcomeCode works once: a retry of the event sends nothing more.
            if recorded == Recorded::New {
                autoreply::send_welcome_soon(
                    state.services.clone(),
                    account.id.to_string(),
                    welcome_code,
                    reply,
                    received,
                );
            }
            None
        }
        None => None,
    };
    Ok(Handled { kind, reply })
}

/// Encrypts the reply of a decrypted callback with the key that decrypted it.
fn sealed(
    account: &Account,
    key: usize,
    q: &CallbackQuery<'_>,
    mut handled: Handled,
) -> Result<Handled, CallbackError> {
    if let Some(reply) = handled.reply.take() {
        let timestamp = required(&q.timestamp, "timestamp")?;
        let nonce = required(&q.nonce, "nonce")?;
        handled.reply = Some(autoreply::seal(account, key, timestamp, nonce, &reply));
    }
    Ok(handled)
}

/// The metrics label of an event's kind (bounded set: the oneof's names).
fn kind_label(event: &crate::pb::Event) -> &'static str {
    use crate::pb::event::Kind;
    match &event.kind {
        Some(Kind::Text(_)) => "text",
        Some(Kind::Image(_)) => "image",
        Some(Kind::Voice(_)) => "voice",
        Some(Kind::Video(_)) => "video",
        Some(Kind::Location(_)) => "location",
        Some(Kind::Link(_)) => "link",
        Some(Kind::Subscribe(_)) => "subscribe",
        Some(Kind::Unsubscribe(_)) => "unsubscribe",
        Some(Kind::Scan(_)) => "scan",
        Some(Kind::LocationReport(_)) => "location_report",
        Some(Kind::MenuClick(_)) => "menu_click",
        Some(Kind::MenuView(_)) => "menu_view",
        Some(Kind::ScanCode(_)) => "scan_code",
        Some(Kind::Pictures(_)) => "pictures",
        Some(Kind::LocationSelected(_)) => "location_selected",
        Some(Kind::MassSendFinished(_)) => "mass_send_finished",
        Some(Kind::TemplateSendFinished(_)) => "template_send_finished",
        Some(Kind::EnterAgent(_)) => "enter_agent",
        Some(Kind::ContactChange(_)) => "contact_change",
        Some(Kind::ExternalContactChange(_)) => "external_contact_change",
        Some(Kind::ExternalChatChange(_)) => "external_chat_change",
        Some(Kind::TagChange(_)) => "tag_change",
        Some(Kind::LinkClick(_)) => "link_click",
        Some(Kind::Unknown(_)) | None => "unknown",
    }
}

/// Counts and times one callback, and logs refusals with their reason.
fn observe(
    platform: Platform,
    account: &str,
    started: Instant,
    result: Result<&'static str, &CallbackError>,
) {
    let (kind, outcome) = match result {
        Ok(kind) => (kind, "ok"),
        // A flood's refusals are counted, not logged one by one: logging them would add work
        // exactly when the instance has too much.
        Err(e @ CallbackError::Overloaded(_)) => {
            tracing::debug!(account, error = %e, "callback refused");
            ("unknown", e.outcome())
        }
        Err(e) => {
            tracing::warn!(account, platform = platform.as_str(), error = %e, "callback refused");
            ("unknown", e.outcome())
        }
    };
    if outcome == "ok" {
        return ANSWERED.with(|h| h.borrow_mut().record(platform, account, kind, started));
    }
    // An unknown account id comes from the URL: keep it out of the labels (unbounded).
    let account_label = match result {
        Err(CallbackError::UnknownAccount(_)) => "_unknown".to_owned(),
        _ => account.to_owned(),
    };
    metrics::counter!("wgw_callbacks_total",
        "platform" => platform.as_str(), "account" => account_label, "kind" => kind, "outcome" => outcome)
    .increment(1);
    metrics::histogram!("wgw_callback_seconds", "platform" => platform.as_str())
        .record(started.elapsed().as_secs_f64());
}

thread_local! {
    /// The metric handles of answered callbacks, per worker thread: looking a metric up by name
    /// and labels hashes every label and allocates the account's, ~4,000 instructions a
    /// callback (callgrind). Bounded: configured accounts × event kinds × two platforms.
    static ANSWERED: RefCell<AnsweredMetrics> = RefCell::default();
}

#[derive(Default)]
struct AnsweredMetrics {
    counters: HashMap<Box<str>, HashMap<&'static str, metrics::Counter>>,
    seconds: [Option<metrics::Histogram>; 2],
}

impl AnsweredMetrics {
    fn record(&mut self, platform: Platform, account: &str, kind: &'static str, started: Instant) {
        let by_kind = match self.counters.get_mut(account) {
            Some(by_kind) => by_kind,
            None => self.counters.entry(account.into()).or_default(),
        };
        by_kind
            .entry(kind)
            .or_insert_with(|| {
                metrics::counter!("wgw_callbacks_total", "platform" => platform.as_str(),
                    "account" => account.to_owned(), "kind" => kind, "outcome" => "ok")
            })
            .increment(1);
        let slot = match platform {
            Platform::Mp => 0,
            Platform::Work => 1,
        };
        self.seconds[slot]
            .get_or_insert_with(
                || metrics::histogram!("wgw_callback_seconds", "platform" => platform.as_str()),
            )
            .record(started.elapsed().as_secs_f64());
    }
}

fn success() -> HttpResponse {
    // A static header value: no parsing or copying per answer.
    HttpResponse::Ok()
        .insert_header((
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        ))
        .body("success")
}

/// `success`, or the passive reply.
fn answer(handled: Handled) -> HttpResponse {
    match handled.reply {
        None => success(),
        Some(xml) => HttpResponse::Ok()
            .insert_header((
                CONTENT_TYPE,
                HeaderValue::from_static("application/xml; charset=utf-8"),
            ))
            .body(xml),
    }
}

/// `GET /wechat/mp/{account}`: WeChat's URL verification; echo `echostr` when `signature` holds.
fn mp_verify(
    state: &AppState,
    account_id: &str,
    q: &CallbackQuery<'_>,
) -> Result<HttpResponse, CallbackError> {
    let account = state.account(account_id, Platform::Mp)?;
    let signature = required(&q.signature, "signature")?;
    let timestamp = required(&q.timestamp, "timestamp")?;
    let nonce = required(&q.nonce, "nonce")?;
    let echostr = required(&q.echostr, "echostr")?;
    let expected = crypto::signature(account.token.expose(), timestamp, nonce);
    if !crypto::signatures_match(&expected, signature) {
        return Err(CallbackError::BadSignature);
    }
    state.check_timestamp(timestamp)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(echostr.to_owned()))
}

/// `POST /wechat/mp/{account}`: a message or event, plain or encrypted.
async fn mp_callback(
    state: &AppState,
    account_id: &str,
    q: &CallbackQuery<'_>,
    body: &[u8],
) -> Result<Handled, CallbackError> {
    let account = state.account(account_id, Platform::Mp)?;
    let encrypted = q.encrypt_type.as_deref() == Some("aes");
    match (encrypted, account.mode) {
        (true, CallbackMode::Plain) => {
            return Err(CallbackError::ModeRefused(
                "encrypted callback, but this account is configured for plain mode",
            ))
        }
        (false, CallbackMode::Safe) => {
            return Err(CallbackError::ModeRefused(
                "plain callback, but this account is configured for safe mode (encrypt_type=aes)",
            ))
        }
        _ => {}
    }
    if encrypted {
        let timestamp = required(&q.timestamp, "timestamp")?;
        let envelope = Document::parse(body)?;
        let encrypt = envelope
            .get("Encrypt")
            .ok_or(XmlError::Missing("Encrypt"))?;
        let (plain, key) = verify_and_decrypt(&account, q, encrypt)?;
        state.check_timestamp(timestamp)?;
        // Compatible mode too: an encrypted request gets an encrypted reply, a plain one a
        // plain reply (WeChat reads either there).
        let handled = record(state, &account, &plain).await?;
        sealed(&account, key, q, handled)
    } else {
        let signature = required(&q.signature, "signature")?;
        let timestamp = required(&q.timestamp, "timestamp")?;
        let nonce = required(&q.nonce, "nonce")?;
        let expected = crypto::signature(account.token.expose(), timestamp, nonce);
        if !crypto::signatures_match(&expected, signature) {
            return Err(CallbackError::BadSignature);
        }
        state.check_timestamp(timestamp)?;
        record(state, &account, body).await
    }
}

/// `GET /wechat/work/{account}`: WeCom's URL verification; answer the decrypted `echostr`.
fn work_verify(
    state: &AppState,
    account_id: &str,
    q: &CallbackQuery<'_>,
) -> Result<HttpResponse, CallbackError> {
    let account = state.account(account_id, Platform::Work)?;
    let timestamp = required(&q.timestamp, "timestamp")?;
    let echostr = required(&q.echostr, "echostr")?;
    // A `+` of the base64 echostr that reached us unescaped was decoded as a space.
    let echostr = echostr.replace(' ', "+");
    let (plain, _key) = verify_and_decrypt(&account, q, &echostr)?;
    state.check_timestamp(timestamp)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(plain))
}

/// `POST /wechat/work/{account}`: an encrypted WeCom message or event.
async fn work_callback(
    state: &AppState,
    account_id: &str,
    q: &CallbackQuery<'_>,
    body: &[u8],
) -> Result<Handled, CallbackError> {
    let account = state.account(account_id, Platform::Work)?;
    let timestamp = required(&q.timestamp, "timestamp")?;
    let envelope = Document::parse(body)?;
    let encrypt = envelope
        .get("Encrypt")
        .ok_or(XmlError::Missing("Encrypt"))?;
    let (plain, key) = verify_and_decrypt(&account, q, encrypt)?;
    state.check_timestamp(timestamp)?;
    let handled = record(state, &account, &plain).await?;
    sealed(&account, key, q, handled)
}
