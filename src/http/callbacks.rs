//! The callback URL of every account: `/wechat/mp/{account}` and `/wechat/work/{account}`, a thin
//! adapter from actix to the envelope and the callback use case.
//!
//! A POST is opened by [`envelope::open`] (query, clock, signature, decryption, in one order for
//! every kind of request), normalized, and accepted by [`callbacks::accept`] (the auto-reply
//! chosen, the event de-duplicated and appended to the outbox, atomically) before it is
//! answered: a 200 means the event is durable. The path never waits on the CRM, so the answer
//! leaves well inside WeChat's 5-second window. A GET, WeChat's URL verification, goes through
//! the same [`envelope::open`] and answers the `echostr`.
//!
//! When an auto-reply rule or a welcome answers the callback, the 200 carries the passive reply
//! instead of `success`, sealed by the envelope as the request was: encrypted with the key that
//! decrypted it, or plain.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix_web::http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::AppState;
use crate::domain::{Platform, Untrusted};
use crate::error::CallbackError;
use crate::services::callbacks;
use crate::services::plain_signatures::{self, Seen};
use crate::store::Recorded;
use crate::wechat::account::Account;
use crate::wechat::envelope::{self, Entry, EnvelopeError};
use crate::wechat::normalize::normalize;
use crate::wechat::query::CallbackQuery;
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
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, actix_web::Error> {
    Ok(entry(Platform::Mp, &req, &state, &read(body)?).await?)
}

async fn work(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, actix_web::Error> {
    Ok(entry(Platform::Work, &req, &state, &read(body)?).await?)
}

/// The body as read within `http.max_body_bytes` and `http.body_timeout_ms`: a body cut off at
/// the deadline is a [`CallbackError::BodyTimeout`] (408); any other failure (413 over the size
/// limit) is actix's own answer.
fn read(body: Result<web::Bytes, actix_web::Error>) -> Result<web::Bytes, actix_web::Error> {
    body.map_err(|e| match e.as_error::<actix_web::error::PayloadError>() {
        Some(p) if super::body::is_timeout(p) => CallbackError::BodyTimeout.into(),
        _ => e,
    })
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
    match *req.method() {
        Method::POST => Ok(callback(platform, state, account, &q, body).await),
        Method::GET => verify(platform, state, account, &q),
        _ => Ok(method_not_allowed()),
    }
}

/// A POST, within the concurrency limits, counted and timed. The span is at debug level: at
/// `info` it is never built (~5,000 instructions a callback); a refusal's log line names the
/// account itself.
#[tracing::instrument(level = "debug", skip_all, fields(account = %Untrusted(account_id)))]
async fn callback(
    platform: Platform,
    state: &AppState,
    account_id: &str,
    q: &CallbackQuery<'_>,
    body: &[u8],
) -> HttpResponse {
    let started = Instant::now();
    let result = match state.callback_limits.try_acquire(account_id) {
        Ok(_permit) => handle(platform, state, account_id, q, body).await,
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
}

/// A recorded callback: its kind label, and the passive reply (sealed) if an auto-reply rule or
/// a welcome answers it.
struct Handled {
    kind: &'static str,
    reply: Option<String>,
}

/// One POST: open, normalize, accept; the reply sealed as the request was.
async fn handle(
    platform: Platform,
    state: &AppState,
    account_id: &str,
    q: &CallbackQuery<'_>,
    body: &[u8],
) -> Result<Handled, CallbackError> {
    let account = state.account(account_id, platform)?;
    let opened = envelope::open(&account, q, Entry::Callback(body), state.max_clock_skew)?;
    let received = Instant::now();
    let encrypted = opened.encrypted();
    let mut event = match to_event(&account, opened.content) {
        Ok(event) => event,
        // A decrypted message that does not read is answered like one that does not decrypt:
        // naming its XML error would say something of the plaintext (no oracle, issue 18).
        Err(_) if encrypted => return Err(EnvelopeError::Undecryptable.into()),
        Err(e) => return Err(e),
    };
    if !encrypted {
        // Plain mode: a signature does not cover the body, so a reused one is refused.
        let signature = q.signature.as_deref().unwrap_or_default();
        let seen = plain_signatures::remember(
            state.services.store.as_ref(),
            account.id.as_str(),
            signature,
            body,
            state.max_clock_skew,
        )
        .await?;
        if seen == Seen::OtherBody {
            return Err(CallbackError::SignatureReused);
        }
    }
    let kind = kind_label(&event);
    let accepted = callbacks::accept(&state.services, &mut event, received).await?;
    match accepted.recorded {
        Recorded::New => tracing::debug!(event_id = %event.id, kind, "event recorded"),
        Recorded::Duplicate => {
            metrics::counter!("wgw_callback_duplicates_total", "account" => account.id.to_string())
                .increment(1);
            tracing::debug!(event_id = %event.id, kind, "retry of a recorded event");
        }
    }
    let reply = accepted.reply.map(|r| opened.seal.reply(&event, &r));
    Ok(Handled { kind, reply })
}

/// Parses and normalizes an opened message (taken by value: it is not kept past this).
fn to_event(account: &Account, xml: Cow<'_, [u8]>) -> Result<crate::pb::Event, CallbackError> {
    let doc = Document::parse(&xml)?;
    let raw = std::str::from_utf8(&xml).map_err(|_| XmlError::Utf8)?;
    Ok(normalize(
        &account.id,
        account.platform,
        &doc,
        raw,
        SystemTime::now(),
    )?)
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
        Some(Kind::CorpTagChange(_)) => "corp_tag_change",
        Some(Kind::GroupMemberJoined(_)) => "group_member_joined",
        Some(Kind::GroupMemberLeft(_)) => "group_member_left",
        Some(Kind::FollowerSnapshot(_)) => "follower_snapshot",
        Some(Kind::ExternalContactSnapshot(_)) => "external_contact_snapshot",
        Some(Kind::H5Identified(_)) => "h5_identified",
        Some(Kind::SubscribeNoticePopup(_)) => "subscribe_notice_popup",
        Some(Kind::SubscribeNoticeChange(_)) => "subscribe_notice_change",
        Some(Kind::SubscribeNoticeSent(_)) => "subscribe_notice_sent",
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
            tracing::debug!(account = %Untrusted(account), error = %e, "callback refused");
            ("unknown", e.outcome())
        }
        Err(e) => {
            tracing::warn!(account = %Untrusted(account), platform = platform.as_str(),
                reason = e.outcome(), error = %e, "callback refused");
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

/// `GET`: WeChat's URL verification. An Official Account's `echostr` is echoed when
/// `signature` holds; WeCom's is answered decrypted.
fn verify(
    platform: Platform,
    state: &AppState,
    account_id: &str,
    q: &CallbackQuery<'_>,
) -> Result<HttpResponse, CallbackError> {
    let account = state.account(account_id, platform)?;
    let opened = envelope::open(&account, q, Entry::Verification, state.max_clock_skew)
        .map_err(|e| {
            let e = CallbackError::from(e);
            tracing::warn!(account = account_id, platform = platform.as_str(), reason = e.outcome(), error = %e, "URL verification refused");
            e
        })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(opened.content.into_owned()))
}
