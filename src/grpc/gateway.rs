//! `wechat_gateway.v1.Gateway`: thin, like the admin routes. Each rpc authenticates, converts
//! its request at the door ([`super::convert`]), calls the same use case as the admin API
//! (`crate::services`), converts the answer back, and maps errors through the one
//! `ServiceError` → `Status` map in `crate::error`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{job_to_pb, menu_json, message_json};
use crate::config::AdminToken;
use crate::domain::{match_token, Actor, Untrusted};
use crate::error::ServiceError;
use crate::pb::gateway_server::Gateway;
use crate::pb::{
    self, CreateLinkRequest, CreateLinkResponse, CreateQrCodeRequest, CreateQrCodeResponse,
    DeleteMenuRequest, DeleteMenuResponse, GetMenuRequest, GetMenuResponse, ListLinksRequest,
    ListLinksResponse, SendMessageRequest, SendMessageResponse, SetMenuRequest, SetMenuResponse,
};
use crate::pb::{
    DeleteReplyRuleRequest, DeleteReplyRuleResponse, ListReplyRulesRequest, ListReplyRulesResponse,
    PutReplyRuleRequest, PutReplyRuleResponse,
};
use crate::services::links;
use crate::services::message::send_message;
use crate::services::qrcode::create_qr_code;
use crate::services::{account_id, Services};
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

    /// The caller: its token's name, from `authorization: Bearer <token>` metadata.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<Actor, ServiceError> {
        if self.tokens.is_empty() {
            return Ok(Actor::new(ANONYMOUS));
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ServiceError::MissingToken)?;
        let tokens = self.tokens.iter().map(|t| (t.name.as_str(), &t.token));
        match_token(tokens, presented)
            .map(Actor::new)
            .ok_or(ServiceError::BadToken)
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
        let req = request.try_into()?;
        let code = create_qr_code(&self.services, &account_id(&account)?, &actor, req).await?;
        Ok(Response::new(code.into()))
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        tracing::info!(actor = %actor, account = %Untrusted(&r.account_id), "SendMessage");
        let message = r.message.try_into()?;
        let msg_id = send_message(
            &self.services,
            &account_id(&r.account_id)?,
            &r.to_user,
            message,
        )
        .await?;
        Ok(Response::new(SendMessageResponse { msg_id }))
    }

    async fn get_menu(
        &self,
        request: Request<GetMenuRequest>,
    ) -> Result<Response<GetMenuResponse>, Status> {
        self.authenticate(&request)?;
        let r = request.into_inner();
        let live = menu::live_menu(&self.services, &account_id(&r.account_id)?).await?;
        Ok(Response::new(live.into()))
    }

    async fn set_menu(
        &self,
        request: Request<SetMenuRequest>,
    ) -> Result<Response<SetMenuResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        let body = menu_json(&r.menu_json)?;
        let answer = if r.conditional {
            let menuid =
                menu::add_conditional(&self.services, &account_id(&r.account_id)?, &actor, body)
                    .await?;
            SetMenuResponse { version: 0, menuid }
        } else {
            let version =
                menu::publish(&self.services, &account_id(&r.account_id)?, &actor, body).await?;
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
            menu::delete(&self.services, &account_id(&r.account_id)?, &actor).await?
        } else {
            menu::delete_conditional(
                &self.services,
                &account_id(&r.account_id)?,
                &actor,
                &r.menuid,
            )
            .await?;
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
        let rules = autoreply::list_rules(&self.services, &account_id(&r.account_id)?).await?;
        Ok(Response::new(ListReplyRulesResponse {
            rules: rules.iter().map(Into::into).collect(),
        }))
    }

    async fn put_reply_rule(
        &self,
        request: Request<PutReplyRuleRequest>,
    ) -> Result<Response<PutReplyRuleResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        let rule = r.rule.try_into()?;
        let (stored, created) =
            autoreply::put_rule(&self.services, &account_id(&r.account_id)?, &actor, rule).await?;
        Ok(Response::new(PutReplyRuleResponse {
            rule: Some((&stored).into()),
            created,
        }))
    }

    async fn delete_reply_rule(
        &self,
        request: Request<DeleteReplyRuleRequest>,
    ) -> Result<Response<DeleteReplyRuleResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        autoreply::delete_rule(
            &self.services,
            &account_id(&r.account_id)?,
            &actor,
            &r.rule_id,
        )
        .await?;
        Ok(Response::new(DeleteReplyRuleResponse {}))
    }

    async fn create_link(
        &self,
        request: Request<CreateLinkRequest>,
    ) -> Result<Response<CreateLinkResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        let link = links::create_link(
            &self.services,
            &account_id(&r.account_id)?,
            &actor,
            &r.target,
            &r.label,
        )
        .await?;
        Ok(Response::new(link.into()))
    }

    async fn list_links(
        &self,
        request: Request<ListLinksRequest>,
    ) -> Result<Response<ListLinksResponse>, Status> {
        self.authenticate(&request)?;
        let r = request.into_inner();
        let all = links::list_links(&self.services, &account_id(&r.account_id)?).await?;
        Ok(Response::new(ListLinksResponse {
            links: all.into_iter().map(Into::into).collect(),
        }))
    }

    async fn send_broadcast(
        &self,
        request: Request<pb::SendBroadcastRequest>,
    ) -> Result<Response<pb::BroadcastJob>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        let account = r.account_id.clone();
        let req = broadcast::SendBroadcast::try_from(r)?;
        let (job, created) =
            broadcast::create_job(&self.services, &account_id(&account)?, &actor, req).await?;
        Ok(Response::new(job_to_pb(job, created)))
    }

    async fn get_broadcast(
        &self,
        request: Request<pb::GetBroadcastRequest>,
    ) -> Result<Response<pb::BroadcastJob>, Status> {
        self.authenticate(&request)?;
        let r = request.into_inner();
        let job =
            broadcast::get_job(&self.services, &account_id(&r.account_id)?, &r.job_id).await?;
        Ok(Response::new(job_to_pb(job, false)))
    }

    async fn preview_broadcast(
        &self,
        request: Request<pb::PreviewBroadcastRequest>,
    ) -> Result<Response<pb::PreviewBroadcastResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        tracing::info!(actor = %actor, account = %Untrusted(&r.account_id), "PreviewBroadcast");
        let message = message_json(&r.message_json)?;
        let msg_id = broadcast::preview(
            &self.services,
            &account_id(&r.account_id)?,
            &r.open_id,
            &message,
        )
        .await?;
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
        tracing::info!(actor = %actor, account = %Untrusted(&r.account_id), job_id = %Untrusted(&r.job_id), "DeleteBroadcast");
        let job =
            broadcast::delete_job(&self.services, &account_id(&r.account_id)?, &r.job_id).await?;
        Ok(Response::new(job_to_pb(job, false)))
    }

    async fn cancel_broadcast(
        &self,
        request: Request<pb::GetBroadcastRequest>,
    ) -> Result<Response<pb::BroadcastJob>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        let job = broadcast::cancel_job(
            &self.services,
            &account_id(&r.account_id)?,
            &r.job_id,
            &actor,
        )
        .await?;
        Ok(Response::new(job_to_pb(job, false)))
    }

    async fn create_tag(
        &self,
        request: Request<pb::CreateTagRequest>,
    ) -> Result<Response<pb::CreateTagResponse>, Status> {
        let actor = self.authenticate(&request)?;
        let r = request.into_inner();
        tracing::info!(actor = %actor, account = %Untrusted(&r.account_id), "CreateTag");
        let tag_id = tags::create_tag(&self.services, &account_id(&r.account_id)?, &r.name).await?;
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
        tracing::info!(actor = %actor, account = %Untrusted(&r.account_id), untag, "TagUsers");
        let done = tags::tag_users(
            &self.services,
            &account_id(&r.account_id)?,
            r.tag_id,
            &r.open_ids,
            untag,
        )
        .await?;
        Ok(Response::new(done.into()))
    }
}
