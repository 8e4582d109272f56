//! The sandbox's WeChat as an HTTP server: an actix-web server with one worker on a loopback
//! port chosen by the system, Official Account APIs under `/mp`, WeCom's under `/work`. Each
//! request is decoded into a [`Call`] and answered by the [`FakeWeChat`] model; a mass send is
//! followed by its MASSSENDJOBFINISH callback to the gateway, signed and sealed as WeChat does
//! (through [`crate::simulate::post_callback`], the code `simulate` sends with).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::domain::Platform;
use crate::wechat::account::Account;

use super::model::{Answer, Call, Credential, FakeWeChat, MassFinished};

/// How long after a mass send its MASSSENDJOBFINISH is sent (WeChat takes minutes; the sandbox
/// keeps the order: the answer first, the callback after).
const FINISH_AFTER: Duration = Duration::from_millis(300);
/// WeChat tries a callback three times, about 5 s apart; the sandbox the same, 1 s apart.
const CALLBACK_ATTEMPTS: u32 = 3;
const CALLBACK_SPACING: Duration = Duration::from_secs(1);

struct Shared {
    model: Mutex<FakeWeChat>,
    accounts: HashMap<String, Account>,
    /// The gateway's base URL, known once it listens.
    gateway: OnceLock<String>,
    client: reqwest::Client,
}

/// The running fake; stopped by [`FakeServer::stop`].
pub struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl FakeServer {
    /// Binds 127.0.0.1:0 and serves the fake of these accounts.
    pub fn start(accounts: &[Account]) -> anyhow::Result<Self> {
        let credentials = accounts
            .iter()
            .map(|a| Credential {
                account: a.id.to_string(),
                platform: a.platform,
                receiver_id: a.receiver_id.clone(),
                secret: a.secret.expose().to_owned(),
                agent_id: a.agent_id,
            })
            .collect();
        let shared = Arc::new(Shared {
            model: Mutex::new(FakeWeChat::new(credentials)),
            accounts: accounts
                .iter()
                .map(|a| (a.id.to_string(), a.clone()))
                .collect(),
            gateway: OnceLock::new(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(dispatch))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        Ok(Self {
            addr,
            shared,
            handle,
            task: tokio::spawn(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the MASSSENDJOBFINISH callbacks go: the gateway's HTTP listener.
    pub fn callbacks_to(&self, gateway: SocketAddr) {
        let host = if gateway.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], gateway.port()))
        } else {
            gateway
        };
        let _ = self.shared.gateway.set(format!("http://{host}"));
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

async fn dispatch(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let full = req.path();
    let (platform, path) = if let Some(p) = full.strip_prefix("/mp/") {
        (Platform::Mp, p)
    } else if let Some(p) = full.strip_prefix("/work/") {
        (Platform::Work, p)
    } else {
        return HttpResponse::NotFound().finish();
    };
    let path = format!("/{path}");
    let query: HashMap<String, String> = form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body: Value = if body.is_empty() {
        Value::Null
    } else if content_type.starts_with("multipart/form-data") {
        match super::media::form_summary(content_type, &body) {
            Some(form) => form,
            // 41005: "media data missing" (缺少多媒体文件数据).
            None => {
                return HttpResponse::Ok()
                    .json(json!({"errcode": 41005, "errmsg": "media data missing"}))
            }
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            // 47001: "data format error" (解析 JSON/XML 内容错误).
            Err(_) => {
                return HttpResponse::Ok()
                    .json(json!({"errcode": 47001, "errmsg": "data format error"}))
            }
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let answer = shared
        .model
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .handle(&Call {
            platform,
            path: &path,
            query: &query,
            body: &body,
            now,
        });
    let errcode = |v: &Value| v.get("errcode").and_then(Value::as_i64).unwrap_or(0);
    match answer {
        Answer::Json(v) => {
            tracing::debug!(platform = platform.as_str(), api = %path, errcode = errcode(&v), "sandbox WeChat call");
            HttpResponse::Ok().json(v)
        }
        Answer::JsonThenCallback(v, finished) => {
            tracing::info!(account = %finished.account, msg_id = finished.msg_id,
                total = finished.total, "sandbox: mass send accepted; MASSSENDJOBFINISH follows");
            let shared = shared.into_inner();
            tokio::spawn(send_finished(shared, finished));
            HttpResponse::Ok().json(v)
        }
        Answer::JsonThenTemplateFinished(v, finished) => {
            let shared = shared.into_inner();
            tokio::spawn(send_template_finished(shared, finished));
            HttpResponse::Ok().json(v)
        }
        Answer::Redirect(to) => HttpResponse::Found()
            .insert_header(("Location", to))
            .finish(),
        Answer::Unknown => {
            tracing::warn!(platform = platform.as_str(), api = %path,
                "the sandbox does not fake this WeChat API; answering 404");
            HttpResponse::NotFound().finish()
        }
    }
}

/// The MASSSENDJOBFINISH event of a send, as WeChat posts it ("事件推送群发结果"): every
/// recipient reached, none filtered, no errors.
fn finished_xml(f: &MassFinished, now: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_simulated0000]]></ToUserName>\
         <FromUserName><![CDATA[oSandboxMassSender000000000]]></FromUserName>\
         <CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[MASSSENDJOBFINISH]]></Event><MsgID>{}</MsgID>\
         <Status><![CDATA[send success]]></Status><TotalCount>{t}</TotalCount>\
         <FilterCount>{t}</FilterCount><SentCount>{t}</SentCount><ErrorCount>0</ErrorCount></xml>",
        f.msg_id,
        t = f.total
    )
}

async fn send_finished(shared: Arc<Shared>, finished: MassFinished) {
    tokio::time::sleep(FINISH_AFTER).await;
    let (Some(base), Some(account)) =
        (shared.gateway.get(), shared.accounts.get(&finished.account))
    else {
        tracing::warn!(account = %finished.account, "sandbox: no gateway to send MASSSENDJOBFINISH to");
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let xml = finished_xml(&finished, now);
    for attempt in 1..=CALLBACK_ATTEMPTS {
        match crate::simulate::post_callback(
            &shared.client,
            base,
            account,
            account.mode,
            &xml,
            "oSandboxMassSender000000000",
        )
        .await
        {
            Ok((status, _)) if status.is_success() => {
                shared
                    .model
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .finished(&finished);
                tracing::info!(account = %finished.account, msg_id = finished.msg_id,
                    "sandbox: MASSSENDJOBFINISH delivered");
                return;
            }
            Ok((status, _)) => tracing::warn!(account = %finished.account, %status, attempt,
                "sandbox: the gateway refused MASSSENDJOBFINISH"),
            Err(e) => tracing::warn!(account = %finished.account, error = %format!("{e:#}"),
                attempt, "sandbox: cannot send MASSSENDJOBFINISH"),
        }
        tokio::time::sleep(CALLBACK_SPACING).await;
    }
}

/// The TEMPLATESENDJOBFINISH of a template message, as WeChat posts it (the template message
/// page, "事件推送"): from the recipient, `Status` success.
async fn send_template_finished(shared: Arc<Shared>, finished: super::templates::TemplateFinished) {
    tokio::time::sleep(FINISH_AFTER).await;
    let (Some(base), Some(account)) =
        (shared.gateway.get(), shared.accounts.get(&finished.account))
    else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_simulated0000]]></ToUserName>\
         <FromUserName><![CDATA[{}]]></FromUserName><CreateTime>{now}</CreateTime>\
         <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>\
         <MsgID>{}</MsgID><Status><![CDATA[success]]></Status></xml>",
        finished.open_id, finished.msg_id
    );
    for attempt in 1..=CALLBACK_ATTEMPTS {
        match crate::simulate::post_callback(
            &shared.client,
            base,
            account,
            account.mode,
            &xml,
            &finished.open_id,
        )
        .await
        {
            Ok((status, _)) if status.is_success() => return,
            Ok((status, _)) => tracing::warn!(account = %finished.account, %status, attempt,
                "sandbox: the gateway refused TEMPLATESENDJOBFINISH"),
            Err(e) => tracing::warn!(account = %finished.account, error = %format!("{e:#}"),
                attempt, "sandbox: cannot send TEMPLATESENDJOBFINISH"),
        }
        tokio::time::sleep(CALLBACK_SPACING).await;
    }
}
