//! `wechat_gateway.v1.Gateway`: thin, like the admin routes. Each rpc converts its request at
//! the door, calls the same use case as the admin API (`crate::services`), and maps errors
//! through the one `AdminError` → `Status` map in `crate::error`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::message_json;

use crate::config::AdminToken;
use crate::domain::match_token;
use crate::domain::scene::SceneInput;
use crate::error::AdminError;
use crate::pb::gateway_server::Gateway;
use crate::pb::{
    self, create_qr_code_request, send_message_request, CreateLinkRequest, CreateLinkResponse,
    CreateQrCodeRequest, CreateQrCodeResponse, DeleteMenuRequest, DeleteMenuResponse,
    GetMenuRequest, GetMenuResponse, ListLinksRequest, ListLinksResponse, SendMessageRequest,
    SendMessageResponse, SetMenuRequest, SetMenuResponse,
};
use crate::pb::{
    DeleteReplyRuleRequest, DeleteReplyRuleResponse, ListReplyRulesRequest, ListReplyRulesResponse,
    PutReplyRuleRequest, PutReplyRuleResponse,
};
use crate::services::links;
use crate::services::message::{send_message, Outgoing};
use crate::services::qrcode::{create_qr_code, CreateQrCode};
use crate::services::Services;
use crate::services::{autoreply, broadcast, menu, tags};

/// The actor recorded for changes made over gRPC when no `[[grpc.tokens]]` are configured.
const ANONYMOUS: &str = "grpc";

pub struct GatewayService {
    services: Arc<Services>,
    /// `[[grpc.tokens]]`; empty: every caller is let in as [`ANONYMOUS`].
    tokens: Vec<AdminToken>,
}

impl GatewayService {
    pub fn new(services: Arc<Services>, tokens: Vec<AdminToken>) -> Self {
        Self { services, tokens }
    }

    /// The caller's token name, from `authorization: Bearer <token>` metadata.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<String, AdminError> {
        if self.tokens.is_empty() {
            return Ok(ANONYMOUS.to_owned());
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AdminError::MissingToken)?;
        let tokens = self.tokens.iter().map(|t| (t.name.as_str(), &t.token));
        match_token(tokens, presented)
            .map(str::to_owned)
            .ok_or(AdminError::BadToken)
    }
}

impl TryFrom<CreateQrCodeRequest> for CreateQrCode {
    type Error = AdminError;

    fn try_from(r: CreateQrCodeRequest) -> Result<Self, AdminError> {
        let scene = match r.scene {
            Some(create_qr_code_request::Scene::SceneId(id)) => SceneInput::Id(id.into()),
            Some(create_qr_code_request::Scene::SceneStr(s)) => SceneInput::Str(s),
            None => {
                return Err(AdminError::Validation(
                    "scene: set scene_id or scene_str".into(),
                ))
            }
        };
        Ok(Self {
            scene,
            permanent: r.permanent,
            expire_seconds: (r.expire_seconds != 0).then_some(r.expire_seconds.into()),
            label: r.label,
            metadata: r.metadata.into_iter().collect(),
            users: r.users,
            welcome: r
                .welcome
                .map(|w| super::replies::reply_from_pb(w, "welcome"))
                .transpose()?,
        })
    }
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn create_qr_code(
        &self,
        request: Request<CreateQrCodeRequest>,
    ) -> Result<Response<CreateQrCodeResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let request = request.into_inner();
        let account = request.account_id.clone();
        let code = create_qr_code(&self.services, &account, &actor, request.try_into()?).await?;
        Ok(Response::new(CreateQrCodeResponse {
            scene: code.scene,
            ticket: code.ticket,
            url: code.url,
            image_url: code.image_url,
            expire_at: code
                .expire_at
                .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        }))
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        tracing::info!(actor = %actor, account = %r.account_id, "SendMessage");
        let message = match r.message {
            Some(send_message_request::Message::Text(t)) => Outgoing::Text(t.content),
            Some(send_message_request::Message::Image(i)) => Outgoing::Image {
                media_id: i.media_id,
            },
            None => return Err(AdminError::Validation("message: set text or image".into()).into()),
        };
        let msg_id = send_message(&self.services, &r.account_id, &r.to_user, message).await?;
        Ok(Response::new(SendMessageResponse { msg_id }))
    }

    async fn get_menu(
        &self,
        request: Request<GetMenuRequest>,
    ) -> Result<Response<GetMenuResponse>, Status> {
        self.authenticate(&request)?;
        let r = request.into_inner();
        let live = menu::live_menu(&self.services, &r.account_id).await?;
        Ok(Response::new(GetMenuResponse {
            menu_json: live.menu.to_string(),
            version: live.version.unwrap_or(0),
            drift: live.drift,
        }))
    }

    async fn set_menu(
        &self,
        request: Request<SetMenuRequest>,
    ) -> Result<Response<SetMenuResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        let body: serde_json::Value = serde_json::from_str(&r.menu_json)
            .map_err(|e| AdminError::Validation(format!("menu_json: not JSON: {e}")))?;
        let answer = if r.conditional {
            let menuid = menu::add_conditional(&self.services, &r.account_id, &actor, body).await?;
            SetMenuResponse { version: 0, menuid }
        } else {
            let version = menu::publish(&self.services, &r.account_id, &actor, body).await?;
            SetMenuResponse {
                version,
                menuid: String::new(),
            }
        };
        Ok(Response::new(answer))
    }

    async fn delete_menu(
        &self,
        request: Request<DeleteMenuRequest>,
    ) -> Result<Response<DeleteMenuResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        let version = if r.menuid.is_empty() {
            menu::delete(&self.services, &r.account_id, &actor).await?
        } else {
            menu::delete_conditional(&self.services, &r.account_id, &actor, &r.menuid).await?;
            0
        };
        Ok(Response::new(DeleteMenuResponse { version }))
    }

    async fn list_reply_rules(
        &self,
        request: Request<ListReplyRulesRequest>,
    ) -> Result<Response<ListReplyRulesResponse>, Status> {
        self.authenticate(&request)?;
        let r = request.into_inner();
        let rules = autoreply::list_rules(&self.services, &r.account_id).await?;
        Ok(Response::new(ListReplyRulesResponse {
            rules: rules.iter().map(super::replies::rule_to_pb).collect(),
        }))
    }

    async fn put_reply_rule(
        &self,
        request: Request<PutReplyRuleRequest>,
    ) -> Result<Response<PutReplyRuleResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        let rule = super::replies::rule_from_pb(
            r.rule
                .ok_or_else(|| AdminError::Validation("rule: required".into()))?,
        )?;
        let (stored, created) =
            autoreply::put_rule(&self.services, &r.account_id, &actor, rule).await?;
        Ok(Response::new(PutReplyRuleResponse {
            rule: Some(super::replies::rule_to_pb(&stored)),
            created,
        }))
    }

    async fn delete_reply_rule(
        &self,
        request: Request<DeleteReplyRuleRequest>,
    ) -> Result<Response<DeleteReplyRuleResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        autoreply::delete_rule(&self.services, &r.account_id, &actor, &r.rule_id).await?;
        Ok(Response::new(DeleteReplyRuleResponse {}))
    }

    async fn create_link(
        &self,
        request: Request<CreateLinkRequest>,
    ) -> Result<Response<CreateLinkResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        let link =
            links::create_link(&self.services, &r.account_id, &actor, &r.target, &r.label).await?;
        Ok(Response::new(link_response(link)))
    }

    async fn list_links(
        &self,
        request: Request<ListLinksRequest>,
    ) -> Result<Response<ListLinksResponse>, Status> {
        self.authenticate(&request)?;
        let r = request.into_inner();
        let all = links::list_links(&self.services, &r.account_id).await?;
        Ok(Response::new(ListLinksResponse {
            links: all.into_iter().map(link_response).collect(),
        }))
    }

    async fn send_broadcast(
        &self,
        request: Request<pb::SendBroadcastRequest>,
    ) -> Result<Response<pb::BroadcastJob>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        let account_id = r.account_id.clone();
        let req = broadcast::SendBroadcast::try_from(r)?;
        let (job, created) =
            broadcast::create_job(&self.services, &account_id, &actor, req).await?;
        Ok(Response::new(job_to_pb(job, created)))
    }

    async fn get_broadcast(
        &self,
        request: Request<pb::GetBroadcastRequest>,
    ) -> Result<Response<pb::BroadcastJob>, Status> {
        self.authenticate(&request)?;
        let r = request.into_inner();
        let job = broadcast::get_job(&self.services, &r.account_id, &r.job_id).await?;
        Ok(Response::new(job_to_pb(job, false)))
    }

    async fn preview_broadcast(
        &self,
        request: Request<pb::PreviewBroadcastRequest>,
    ) -> Result<Response<pb::PreviewBroadcastResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        tracing::info!(actor = %actor, account = %r.account_id, "PreviewBroadcast");
        let message = message_json(&r.message_json)?;
        let msg_id =
            broadcast::preview(&self.services, &r.account_id, &r.open_id, &message).await?;
        Ok(Response::new(pb::PreviewBroadcastResponse {
            msg_id: msg_id.unwrap_or(0),
        }))
    }

    async fn delete_broadcast(
        &self,
        request: Request<pb::GetBroadcastRequest>,
    ) -> Result<Response<pb::BroadcastJob>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        tracing::info!(actor = %actor, account = %r.account_id, job_id = %r.job_id, "DeleteBroadcast");
        let job = broadcast::delete_job(&self.services, &r.account_id, &r.job_id).await?;
        Ok(Response::new(job_to_pb(job, false)))
    }

    async fn cancel_broadcast(
        &self,
        request: Request<pb::GetBroadcastRequest>,
    ) -> Result<Response<pb::BroadcastJob>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        let job = broadcast::cancel_job(&self.services, &r.account_id, &r.job_id, &actor).await?;
        Ok(Response::new(job_to_pb(job, false)))
    }

    async fn create_tag(
        &self,
        request: Request<pb::CreateTagRequest>,
    ) -> Result<Response<pb::CreateTagResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        tracing::info!(actor = %actor, account = %r.account_id, "CreateTag");
        let tag_id = tags::create_tag(&self.services, &r.account_id, &r.name).await?;
        Ok(Response::new(pb::CreateTagResponse { tag_id }))
    }

    async fn tag_users(
        &self,
        request: Request<pb::TagUsersRequest>,
    ) -> Result<Response<pb::TagUsersResponse>, Status> {
        self.change_tag(request, false).await
    }

    async fn untag_users(
        &self,
        request: Request<pb::TagUsersRequest>,
    ) -> Result<Response<pb::TagUsersResponse>, Status> {
        self.change_tag(request, true).await
    }
}

impl GatewayService {
    async fn change_tag(
        &self,
        request: Request<pb::TagUsersRequest>,
        untag: bool,
    ) -> Result<Response<pb::TagUsersResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        tracing::info!(actor = %actor, account = %r.account_id, untag, "TagUsers");
        let done =
            tags::tag_users(&self.services, &r.account_id, r.tag_id, &r.open_ids, untag).await?;
        Ok(Response::new(pb::TagUsersResponse {
            users: done.users as u64,
            batches: done.batches as u64,
        }))
    }
}

fn link_response(l: links::CreatedLink) -> CreateLinkResponse {
    CreateLinkResponse {
        code: l.code,
        url: l.url,
        target: l.target,
        label: l.label,
    }
}

fn job_to_pb(job: broadcast::JobView, created: bool) -> pb::BroadcastJob {
    let count = |v: Option<i64>| v.unwrap_or(-1);
    pb::BroadcastJob {
        job_id: job.job_id,
        status: job.status.to_owned(),
        created,
        msgtype: job.msgtype,
        client_msg_id: job.client_msg_id.unwrap_or_default(),
        cancelled_at: job.cancelled_at.unwrap_or(0),
        batches: job
            .batches
            .into_iter()
            .map(|b| pb::BroadcastBatch {
                index: b.index as u32,
                status: b.status.to_owned(),
                msg_id: match b.msg_id {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                },
                client_msg_id: b.client_msg_id,
                size: b.size as u64,
                total: count(b.total),
                filtered: count(b.filtered),
                sent: count(b.sent),
                errors: count(b.errors),
                wechat_status: b.wechat_status.unwrap_or_default(),
                already_sent: b.already_sent,
                reconciled: b.reconciled,
                error: b.error.unwrap_or_default(),
                fail_list: b.fail_list,
                pending_confirmation: b.pending_confirmation,
                deleted: b.deleted,
                attempts: b.attempts,
            })
            .collect(),
    }
}
