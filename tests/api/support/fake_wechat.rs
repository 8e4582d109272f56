//! A fake WeChat HTTP API (Official Accounts and WeCom on one server): a real actix-web server on
//! a random loopback port that behaves as WeChat documents for the APIs the gateway calls.
//!
//! - It records every request (path, query, JSON body) in arrival order.
//! - It issues a new access token on every token fetch (`stable_token`, `gettoken`), and only
//!   the newest token of a credential is valid: any other answers 40001, as a token replaced by
//!   a `force_refresh` or by another system would.
//! - Errors can be injected per path (an errcode, or an HTTP status, for the next N calls, before
//!   the token is looked at), and every answer of a path can be delayed, or held until the
//!   test releases it ([`FakeWeChat::hold`]): a call in flight for as long as a test needs.
//! - It keeps each account's menu as WeChat does ([`menu`]), and counts the calls of each path
//!   in flight at once; WeCom's `send_welcome_msg` honours each welcome code once ([`welcome`]).
//! - It serves web OAuth and the user lookups of identity enrichment ([`oauth`]).
//! - It sends broadcasts, keeps tags and WeCom group messages as WeChat does ([`mass`]).
//! - It keeps WeCom corp tags, customer tags and customer groups ([`profile`]).
//! - It lists followers and WeCom customers page by page, for audience syncs ([`audience`]).
//! - It issues JS-SDK tickets ([`ticket`]).
//! - It sends template messages and subscription notices ([`templates`]).

pub mod audience;
mod mass;
mod media;
mod menu;
mod oauth;
mod profile;
pub mod templates;
mod ticket;
mod welcome;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub query: HashMap<String, String>,
    pub body: Value,
}

impl Recorded {
    pub fn token(&self) -> &str {
        self.query.get("access_token").map_or("", String::as_str)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Injected {
    /// `{"errcode": N, "errmsg": "injected"}` with HTTP 200, as WeChat answers errors.
    Errcode(i64),
    /// An HTTP status with an empty body.
    Status(u16),
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    /// Credential (appid or corpid) → its one valid token.
    current: HashMap<String, String>,
    issued: u64,
    injected: HashMap<String, VecDeque<Injected>>,
    delays: HashMap<String, Duration>,
    /// Path → calls still let through, and the gate the others wait at until released.
    holds: HashMap<String, (usize, tokio::sync::watch::Sender<bool>)>,
    /// `expires_in` of the tokens issued (WeChat's 7200 unless set).
    expires_in: Option<u64>,
    /// Path → calls being answered now, and the most ever at once.
    in_flight: HashMap<String, (usize, usize)>,
    menus: menu::Menus,
    welcomes: welcome::Welcomes,
    identity: oauth::Identity,
    mass: mass::Mass,
    /// Corp id → its corp tags and customer groups ([`profile`]).
    profiles: HashMap<String, wechat_gateway::sandbox::wecom_profile::Profile>,
    audience: audience::Audience,
    tickets: ticket::Tickets,
    templates: templates::Templates,
    media: media::Media,
}

pub struct FakeWeChat {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: actix_web::dev::ServerHandle,
}

impl FakeWeChat {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            addr,
            state,
            server: handle,
        }
    }

    /// The base URL for `wechat.mp_api_base` and `wechat.work_api_base`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The requests to one path (e.g. `/cgi-bin/qrcode/create`).
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn count(&self, path: &str) -> usize {
        // Counted in place: tests poll this while thousands of bodies are recorded.
        self.state()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// The next `times` calls to `path` answer `what`, whatever their token.
    pub fn inject(&self, path: &str, what: Injected, times: usize) {
        let mut state = self.state();
        let queue = state.injected.entry(path.to_owned()).or_default();
        queue.extend(std::iter::repeat_n(what, times));
    }

    /// Every answer of `path` waits `delay` first.
    pub fn delay(&self, path: &str, delay: Duration) {
        self.state().delays.insert(path.to_owned(), delay);
    }

    /// Calls of `path` after the next `pass` are received (and recorded) but wait for
    /// [`Self::release`] before WeChat acts on them and answers.
    pub fn hold(&self, path: &str, pass: usize) {
        let (gate, _) = tokio::sync::watch::channel(false);
        self.state().holds.insert(path.to_owned(), (pass, gate));
    }

    /// The calls of `path` held by [`Self::hold`] go on, and later ones are not held.
    pub fn release(&self, path: &str) {
        if let Some((_, gate)) = self.state().holds.remove(path) {
            gate.send_replace(true);
        }
    }

    /// Every token handed out so far stops working, as when another system holding the same
    /// credential forced a refresh.
    pub fn invalidate_tokens(&self) {
        let mut state = self.state();
        for token in state.current.values_mut() {
            *token = format!("{token}-invalidated");
        }
    }

    /// Tokens issued from now on say they expire after `seconds`.
    pub fn set_expires_in(&self, seconds: u64) {
        self.state().expires_in = Some(seconds);
    }

    /// The most calls of `path` ever answered at the same time.
    pub fn max_in_flight(&self, path: &str) -> usize {
        self.state().in_flight.get(path).map_or(0, |&(_, max)| max)
    }

    /// The newest token of a credential.
    pub fn current_token(&self, credential: &str) -> Option<String> {
        self.state().current.get(credential).cloned()
    }
}

impl Drop for FakeWeChat {
    fn drop(&mut self) {
        // Not awaited: the runtime of the test ends right after.
        drop(self.server.stop(false));
    }
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let path = req.path().to_owned();
    {
        let mut s = state.lock().unwrap();
        let (now, max) = s.in_flight.entry(path.clone()).or_default();
        *now += 1;
        *max = (*max).max(*now);
    }
    let response = respond(req, body, &state).await;
    if let Some((now, _)) = state.lock().unwrap().in_flight.get_mut(&path) {
        *now -= 1;
    }
    response
}

async fn respond(req: HttpRequest, body: web::Bytes, state: &Mutex<State>) -> HttpResponse {
    let path = req.path().to_owned();
    let query: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let json_body: Value = if content_type.starts_with("multipart/form-data") {
        media::form(&content_type, &body).unwrap_or(Value::Null)
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let (delay, injected) = {
        let mut s = state.lock().unwrap();
        s.requests.push(Recorded {
            path: path.clone(),
            query: query.clone(),
            body: json_body.clone(),
        });
        let injected = s.injected.get_mut(&path).and_then(VecDeque::pop_front);
        (s.delays.get(&path).copied(), injected)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let gate = match state.lock().unwrap().holds.get_mut(&path) {
        Some((pass, _)) if *pass > 0 => {
            *pass -= 1;
            None
        }
        Some((_, gate)) => Some(gate.subscribe()),
        None => None,
    };
    if let Some(mut released) = gate {
        // Ends when released (or when the gate is dropped with the fake).
        let _ = released.wait_for(|r| *r).await;
    }
    match injected {
        Some(Injected::Errcode(code)) => {
            return HttpResponse::Ok().json(json!({"errcode": code, "errmsg": "injected"}))
        }
        Some(Injected::Status(status)) => {
            return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                .finish()
        }
        None => {}
    }
    if templates::handles(&path) {
        let answer = {
            let mut s = state.lock().unwrap();
            let token = query.get("access_token").map_or("", String::as_str);
            let credential = s
                .current
                .iter()
                .find(|(_, t)| !token.is_empty() && *t == token)
                .map(|(credential, _)| credential.clone());
            credential.map(|c| templates::answer(&mut s.templates, &c, &path, &json_body))
        };
        if let Some((answer, delay)) = answer {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            return HttpResponse::Ok().json(answer);
        }
    }
    if mass::handles(&path) {
        let answer = {
            let mut s = state.lock().unwrap();
            let token = query.get("access_token").map_or("", String::as_str);
            let credential = s
                .current
                .iter()
                .find(|(_, t)| !token.is_empty() && *t == token)
                .map(|(credential, _)| credential.clone());
            let s = &mut *s;
            credential.map(|c| {
                let profile = s.profiles.get(&c);
                mass::answer(&mut s.mass, profile, &c, &path, &json_body)
            })
        };
        if let Some((answer, delay)) = answer {
            if let Some(d) = delay.filter(|d| !d.is_zero()) {
                tokio::time::sleep(d).await;
            }
            return HttpResponse::Ok().json(answer);
        }
    }
    let mut s = state.lock().unwrap();
    if oauth::handles_public(&path) {
        return oauth::answer_public(&mut s.identity, &path, &query);
    }
    let answer = match path.as_str() {
        "/cgi-bin/stable_token" => {
            let appid = json_body["appid"].as_str().unwrap_or_default();
            if appid.is_empty() || json_body["secret"].as_str().unwrap_or_default().is_empty() {
                json!({"errcode": 40013, "errmsg": "invalid appid"})
            } else {
                issue(&mut s, appid)
            }
        }
        "/cgi-bin/gettoken" => match (query.get("corpid"), query.get("corpsecret")) {
            (Some(corp), Some(secret)) if !secret.is_empty() => {
                let corp = corp.clone();
                issue(&mut s, &corp)
            }
            _ => json!({"errcode": 40013, "errmsg": "invalid corpid"}),
        },
        _ => {
            let token = query.get("access_token").map_or("", String::as_str);
            let credential = s
                .current
                .iter()
                .find(|(_, t)| !token.is_empty() && *t == token)
                .map(|(credential, _)| credential.clone());
            if credential.is_some() && oauth::handles(&path) {
                return HttpResponse::Ok().json(oauth::answer(
                    &s.identity,
                    &path,
                    &query,
                    &json_body,
                ));
            }
            if let Some(credential) = credential.as_ref().filter(|_| ticket::handles(&path)) {
                let credential = credential.clone();
                let answer = ticket::answer(&mut s.tickets, &credential, &path, &query);
                return HttpResponse::Ok().json(answer);
            }
            if let Some(credential) = credential
                .clone()
                .filter(|_| wechat_gateway::sandbox::wecom_profile::handles(&path))
            {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let answer = s
                    .profiles
                    .entry(credential)
                    .or_default()
                    .answer(&path, &json_body, now);
                return HttpResponse::Ok().json(answer);
            }
            if credential.is_some() && audience::handles(&path) {
                let answer = audience::answer(&s.audience, &path, &query, &json_body);
                return HttpResponse::Ok().json(answer);
            }
            if credential.is_some() && media::handles(&path) {
                return HttpResponse::Ok().json(media::answer(
                    &mut s.media,
                    &path,
                    &query,
                    &json_body,
                ));
            }
            if let Some(credential) = credential.filter(|_| menu::handles(&path)) {
                let answer = menu::answer(&mut s.menus, &credential, &path, &query, &json_body);
                return HttpResponse::Ok().json(answer);
            }
            if token.is_empty() || !s.current.values().any(|t| t == token) {
                json!({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"})
            } else {
                s.issued += 1;
                let n = s.issued;
                match path.as_str() {
                    "/cgi-bin/qrcode/create" => {
                        let mut answer = json!({
                            // Base64-like, so that URL encoding shows.
                            "ticket": format!("gQH{n}8DwAAAAAAAAAASxo+dHRw/Oi8v=="),
                            "url": format!("http://weixin.qq.com/q/fake{n}"),
                        });
                        if let Some(e) = json_body.get("expire_seconds") {
                            answer["expire_seconds"] = e.clone();
                        }
                        answer
                    }
                    "/cgi-bin/externalcontact/add_contact_way" => json!({
                        "errcode": 0, "errmsg": "ok",
                        "config_id": format!("cfg{n}"),
                        "qr_code": format!("https://wework.qpic.cn/wwpic/fake{n}/0"),
                    }),
                    "/cgi-bin/message/custom/send" | "/cgi-bin/message/custom/typing" => {
                        json!({"errcode": 0, "errmsg": "ok"})
                    }
                    welcome::PATH => welcome::answer(&mut s.welcomes, &json_body),
                    "/cgi-bin/message/send" => json!({
                        "errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": format!("msg{n}")
                    }),
                    _ => json!({"errcode": 48001, "errmsg": "api unauthorized"}),
                }
            }
        }
    };
    HttpResponse::Ok().json(answer)
}

/// A new token for the credential; the previous one stops working.
fn issue(s: &mut State, credential: &str) -> Value {
    s.issued += 1;
    let token = format!("token-{credential}-{}", s.issued);
    s.current.insert(credential.to_owned(), token.clone());
    json!({"access_token": token, "expires_in": s.expires_in.unwrap_or(7200)})
}
