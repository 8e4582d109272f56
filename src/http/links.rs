//! Tracked links, the public side: the routes a follower opens. The operators' routes that
//! create and list links are in the admin API (`crate::http::admin`).
//!
//! - `GET /l/{account}/{code}`: inside WeChat (a `MicroMessenger` user agent) on an Official
//!   Account, a 302 into WeChat's web OAuth (`snsapi_base`: silent, no consent screen) with a
//!   signed `state`; anywhere else, an anonymous click is recorded and the answer is a 302 to
//!   the link's target.
//! - `GET /l/{account}/{code}/oauth?code=...&state=...`: where WeChat sends the browser back.
//!   The state is checked, the `code` exchanged for the openid, the click recorded, and the
//!   answer is a 302 to the target. A bad or expired state, a missing code, or an exchange that
//!   WeChat refuses still redirects (the follower came for the page), as an anonymous click. A
//!   state is good for one use (claimed in the store, so across instances): a second use, with
//!   any code, gets a 400 page before WeChat is asked anything (issue 18).
//!
//! Anonymous opens record at most one event per link and client address per
//! `links.anonymous_click_window_seconds`; the redirect happens every time.
//!
//! The target always comes from the stored link, never from the request, so no query can turn
//! these routes into an open redirect. Unknown accounts and codes get the same 404 page.
//! Recording a click never stands between the follower and the page: a store that fails is
//! logged and counted, and the redirect goes out.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::AppState;
use crate::domain::link::{new_nonce, oauth_authorize_url, sign_state, verify_state, LinkCode};
use crate::domain::{Platform, Untrusted};
use crate::services::links::{self, Click, Link};
use crate::wechat::account::Account;

/// How long the follower has to come back from WeChat's OAuth page.
const STATE_TTL: Duration = Duration::from_secs(600);

/// The public routes, outside the admin scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/l/{account}/{code}", web::get().to(open))
        .route("/l/{account}/{code}/oauth", web::get().to(oauth_callback));
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(
            "<!doctype html><meta charset=\"utf-8\"><title>Link not found</title>\
             <p>This link does not exist.</p>",
        )
}

fn unavailable() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(
            "<!doctype html><meta charset=\"utf-8\"><title>Try again</title>\
             <p>This link cannot be opened right now; please try again.</p>",
        )
}

/// A second use of an OAuth `state` (a replayed or reloaded OAuth callback): refused before
/// WeChat is asked anything, since each use would spend an API call (issue 18).
fn state_used() -> HttpResponse {
    HttpResponse::BadRequest()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(
            "<!doctype html><meta charset=\"utf-8\"><title>Link already used</title>\
             <p>This sign-in step was already used. Please open the link again.</p>",
        )
}

pub(super) fn redirect(location: &str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        // Each open is a click: no cache may answer for the gateway.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .finish()
}

/// The account and its link, or the answer to give instead.
async fn resolve(
    state: &AppState,
    account: &str,
    code: &str,
) -> Result<(std::sync::Arc<Account>, Link), HttpResponse> {
    let (Some(acct), Some(code)) = (state.accounts.get(account), LinkCode::parse(code)) else {
        return Err(not_found());
    };
    match links::find(&*state.store, &acct.id, &code).await {
        Ok(Some(link)) => Ok((acct.clone(), link)),
        Ok(None) => Err(not_found()),
        Err(e) => {
            tracing::warn!(account = %Untrusted(account), error = %e, "cannot read a tracked link");
            Err(unavailable())
        }
    }
}

async fn record(state: &AppState, account: &Account, link: &Link, click: Click) {
    if let Err(e) = links::record_click(&*state.store, account, link, click).await {
        tracing::warn!(account = %account.id, code = %link.code, error = %e,
            "cannot record a link click; redirecting anyway");
        metrics::counter!("wgw_link_click_failures_total", "account" => account.id.to_string())
            .increment(1);
    }
}

#[tracing::instrument(skip_all, fields(account = %Untrusted(&path.0)))]
async fn open(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (account_id, code) = path.into_inner();
    let (account, link) = match resolve(&state, &account_id, &code).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let in_wechat = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.contains("MicroMessenger"));
    let cfg = &state.services.links;
    match (&cfg.public_base_url, account.platform) {
        (Some(base), Platform::Mp) if in_wechat => {
            let nonce = new_nonce();
            let expires_at = unix_now() + STATE_TTL.as_secs();
            let signed = sign_state(
                account.secret.expose().as_bytes(),
                &account_id,
                &link.code,
                &nonce,
                expires_at,
            );
            let callback = format!("{base}/l/{account_id}/{}/oauth", link.code);
            let location = oauth_authorize_url(
                &cfg.oauth_base,
                &account.receiver_id,
                &callback,
                "snsapi_base",
                &signed,
            );
            redirect(&location)
        }
        _ => {
            if first_anonymous_click(&state, &req, &account, &link).await {
                let click = Click {
                    open_id: None,
                    union_id: String::new(),
                    nonce: new_nonce(),
                };
                record(&state, &account, &link, click).await;
            }
            redirect(&link.target)
        }
    }
}

#[tracing::instrument(skip_all, fields(account = %Untrusted(&path.0)))]
async fn oauth_callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (account_id, code) = path.into_inner();
    let (account, link) = match resolve(&state, &account_id, &code).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let query: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let verified = verify_state(
        account.secret.expose().as_bytes(),
        &account_id,
        &link.code,
        query.get("state").map_or("", String::as_str),
        unix_now(),
    );
    let anonymous = |nonce: String| Click {
        open_id: None,
        union_id: String::new(),
        nonce,
    };
    // A valid state is good for one use, across instances, before any WeChat call. A store that
    // cannot say whether it was used means no WeChat call either: an anonymous click.
    let claimed = match &verified {
        Ok(nonce) => links::claim_oauth_state(&*state.store, &account.id, nonce, STATE_TTL).await,
        Err(_) => Ok(true),
    };
    let verified = match claimed {
        Ok(true) => verified,
        Ok(false) => {
            tracing::info!("a link's OAuth state used a second time; refused");
            metrics::counter!("wgw_link_oauth_state_reused_total", "account" => account.id.to_string())
                .increment(1);
            return state_used();
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a link's OAuth state; an anonymous click");
            Err("the store could not check the state")
        }
    };
    let click = match (verified, query.get("code").filter(|c| !c.is_empty())) {
        (Err(why), _) => {
            tracing::info!(
                why,
                "a link's OAuth callback with a state the gateway did not sign"
            );
            anonymous(new_nonce())
        }
        (Ok(nonce), None) => anonymous(nonce.to_owned()),
        (Ok(nonce), Some(oauth_code)) => match state
            .services
            .tokens
            .api()
            .oauth_identity(
                &account_id,
                &account.receiver_id,
                &account.secret,
                oauth_code,
            )
            .await
        {
            Ok(identity) if !identity.openid.is_empty() => Click {
                open_id: Some(identity.openid),
                union_id: identity.unionid,
                nonce: nonce.to_owned(),
            },
            Ok(_) => anonymous(nonce.to_owned()),
            Err(e) => {
                tracing::warn!(error = %e, "WeChat refused the OAuth code; an anonymous click");
                metrics::counter!("wgw_link_oauth_failures_total", "account" => account_id.clone())
                    .increment(1);
                anonymous(nonce.to_owned())
            }
        },
    };
    record(&state, &account, &link, click).await;
    redirect(&link.target)
}

/// Whether this anonymous open may record an event: one per link and client address in
/// `links.anonymous_click_window_seconds`. The client is the peer address: the gateway has no
/// trusted-proxy setting, so a forwarded-for header (which anyone can write) is not read.
/// A store that cannot tell lets the event through (a click is not lost for it).
async fn first_anonymous_click(
    state: &AppState,
    req: &HttpRequest,
    account: &Account,
    link: &Link,
) -> bool {
    let window = state.services.links.anonymous_click_window;
    let Some(peer) = req.peer_addr().filter(|_| !window.is_zero()) else {
        return true;
    };
    match links::claim_anonymous_click(&*state.store, &account.id, &link.code, peer.ip(), window)
        .await
    {
        Ok(true) => true,
        Ok(false) => {
            metrics::counter!("wgw_link_anonymous_clicks_suppressed_total",
                "account" => account.id.to_string())
            .increment(1);
            false
        }
        Err(e) => {
            tracing::warn!(account = %account.id, error = %e,
                "cannot bound anonymous link clicks; recording this one");
            true
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
