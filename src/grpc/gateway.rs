//! `wechat_gateway.v1.Gateway`: thin, like the admin routes. [`Authenticate`] checks the bearer
//! token from the metadata before tonic reads a byte of the message; each rpc then checks the
//! token's scope for the message's `account_id` ([`Access::Read`] for the Get*/List* rpcs,
//! [`Access::Write`] for the rest), converts its request at the door ([`super::convert`]), calls
//! the same use case as the admin API (`crate::services`), converts the answer back, and maps
//! errors through the one `ServiceError` → `Status` map in `crate::error`.

use std::sync::Arc;

use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::{Request, Response, Status};

use super::convert::{
    corp_tag_group_to_pb, custom_message, job_to_pb, menu_json, message_json, sync_to_pb,
};
use crate::config::AdminToken;
use crate::domain::access::{bearer, match_token, Access, Caller, Scope};
use crate::domain::message::TypingCommand;
use crate::domain::wecom::{MarkTags, NewCorpTagInput, NewCorpTags};
use crate::domain::{Actor, Untrusted};
use crate::error::ServiceError;
use crate::pb::gateway_server::{Gateway, GatewayServer};
use crate::pb::{
    self, CreateLinkRequest, CreateLinkResponse, CreateQrCodeRequest, CreateQrCodeResponse,
    DeleteMenuRequest, DeleteMenuResponse, GetMenuRequest, GetMenuResponse, ListLinksRequest,
    ListLinksResponse, SendMessageRequest, SendMessageResponse, SetMenuRequest, SetMenuResponse,
};
use crate::pb::{
    DeleteReplyRuleRequest, DeleteReplyRuleResponse, ListReplyRulesRequest, ListReplyRulesResponse,
    PutReplyRuleRequest, PutReplyRuleResponse,
};
use crate::services::corp_tags;
use crate::services::links;
use crate::services::message::{send_message, send_typing, Outgoing};
use crate::services::qrcode::create_qr_code;
use crate::services::{account_id, authorize, Services};
use crate::services::{autoreply, broadcast, h5, menu, sync, tags, templates};

/// The actor recorded for changes made over gRPC when no `[[grpc.tokens]]` are configured.
const ANONYMOUS: &str = "grpc";

/// The `Gateway` service as served: [`GatewayService`] behind [`Authenticate`], decoding
/// messages of at most `max_message_bytes` (`grpc.max_message_bytes`; a longer one is refused
/// with `OUT_OF_RANGE` from its 5-byte length prefix, before it is buffered).
pub fn server(
    services: Arc<Services>,
    tokens: Vec<AdminToken>,
    max_message_bytes: usize,
) -> InterceptedService<GatewayServer<GatewayService>, Authenticate> {
    InterceptedService::new(
        GatewayServer::new(GatewayService { services })
            .max_decoding_message_size(max_message_bytes),
        Authenticate {
            tokens: tokens.into(),
        },
    )
}

/// The bearer-token check of every `Gateway` call. An interceptor sees only the metadata: tonic
/// runs it before the message is read, so an unauthenticated caller is answered
/// `UNAUTHENTICATED` without the gateway buffering (or HTTP/2 flow control granting more than a
/// window of) its message (issue 18). The [`Caller`] it finds travels to the rpc in the request's
/// extensions, where the scope is checked against the decoded `account_id`.
#[derive(Clone)]
pub struct Authenticate {
    /// `[[grpc.tokens]]`; empty: every caller is let in as [`ANONYMOUS`], with every right.
    tokens: Arc<[AdminToken]>,
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = if self.tokens.is_empty() {
            Caller::new(ANONYMOUS, Scope::everything())
        } else {
            let presented = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(bearer)
                .ok_or(ServiceError::MissingToken)?;
            let tokens = self.tokens.iter().map(|t| (t, &t.token));
            match_token(tokens, presented)
                .map(|t| Caller::new(&t.name, t.scope.clone()))
                .ok_or(ServiceError::BadToken)?
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// A `Gateway` request message: every one names the account it acts on.
pub trait ForAccount {
    fn account_id(&self) -> &str;
}

macro_rules! for_account {
    ($($t:ty),* $(,)?) => {
        $(impl ForAccount for $t {
            fn account_id(&self) -> &str {
                &self.account_id
            }
        })*
    };
}

for_account!(
    CreateQrCodeRequest,
    SendMessageRequest,
    GetMenuRequest,
    SetMenuRequest,
    DeleteMenuRequest,
    ListReplyRulesRequest,
    PutReplyRuleRequest,
    DeleteReplyRuleRequest,
    CreateLinkRequest,
    ListLinksRequest,
    pb::SendBroadcastRequest,
    pb::GetBroadcastRequest,
    pb::PreviewBroadcastRequest,
    pb::CreateTagRequest,
    pb::TagUsersRequest,
    pb::ListCorpTagsRequest,
    pb::CreateCorpTagRequest,
    pb::EditCorpTagRequest,
    pb::DeleteCorpTagRequest,
    pb::MarkTagsRequest,
    pb::StartSyncRequest,
    pb::GetSyncRequest,
    pb::ListTagsRequest,
    pb::UpdateTagRequest,
    pb::DeleteTagRequest,
    pb::GetUserTagsRequest,
    pb::GetJsapiSignatureRequest,
    pb::SendTemplateRequest,
    pb::GetTemplateSendRequest,
    pb::SendTypingRequest,
);

pub struct GatewayService {
    services: Arc<Services>,
}

impl GatewayService {
    /// The actor and the message, when the caller's token (found by [`Authenticate`]) may do
    /// `access` on the message's account; `rpc` names the call in the log of a refusal.
    fn authorize<T: ForAccount>(
        &self,
        request: Request<T>,
        access: Access,
        rpc: &str,
    ) -> Result<(Actor, T), Status> {
        // Absent only if the service were served without its interceptor: refuse, not open.
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or(ServiceError::MissingToken)?;
        let message = request.into_inner();
        let actor = authorize(&caller, Some(message.account_id()), access, rpc)?;
        Ok((actor, message))
    }
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn create_qr_code(
        &self,
        request: Request<CreateQrCodeRequest>,
    ) -> Result<Response<CreateQrCodeResponse>, Status> {
        let (actor, request) = self.authorize(request, Access::Write, "CreateQrCode")?;
        let account = request.account_id.clone();
        let req = request.try_into()?;
        let code = create_qr_code(&self.services, &account_id(&account)?, &actor, req).await?;
        Ok(Response::new(code.into()))
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "SendMessage")?;
        tracing::info!(actor = %actor, account = %Untrusted(&r.account_id), "SendMessage");
        let account = account_id(&r.account_id)?;
        let platform = self.services.account(&account)?.platform;
        let message = custom_message(platform, r.message, &r.message_json)?;
        let msg_id = send_message(
            &self.services,
            &account,
            &r.to_user,
            Outgoing {
                message,
                ignore_window: r.ignore_window,
            },
        )
        .await?;
        Ok(Response::new(SendMessageResponse { msg_id }))
    }

    async fn get_menu(
        &self,
        request: Request<GetMenuRequest>,
    ) -> Result<Response<GetMenuResponse>, Status> {
        let (_actor, r) = self.authorize(request, Access::Read, "GetMenu")?;
        let live = menu::live_menu(&self.services, &account_id(&r.account_id)?).await?;
        Ok(Response::new(live.into()))
    }

    async fn set_menu(
        &self,
        request: Request<SetMenuRequest>,
    ) -> Result<Response<SetMenuResponse>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "SetMenu")?;
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
        let (actor, r) = self.authorize(request, Access::Write, "DeleteMenu")?;
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
        let (_actor, r) = self.authorize(request, Access::Read, "ListReplyRules")?;
        let rules = autoreply::list_rules(&self.services, &account_id(&r.account_id)?).await?;
        Ok(Response::new(ListReplyRulesResponse {
            rules: rules.iter().map(Into::into).collect(),
        }))
    }

    async fn put_reply_rule(
        &self,
        request: Request<PutReplyRuleRequest>,
    ) -> Result<Response<PutReplyRuleResponse>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "PutReplyRule")?;
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
        let (actor, r) = self.authorize(request, Access::Write, "DeleteReplyRule")?;
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
        let (actor, r) = self.authorize(request, Access::Write, "CreateLink")?;
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
        let (_actor, r) = self.authorize(request, Access::Read, "ListLinks")?;
        let all = links::list_links(&self.services, &account_id(&r.account_id)?).await?;
        Ok(Response::new(ListLinksResponse {
            links: all.into_iter().map(Into::into).collect(),
        }))
    }

    async fn send_broadcast(
        &self,
        request: Request<pb::SendBroadcastRequest>,
    ) -> Result<Response<pb::BroadcastJob>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "SendBroadcast")?;
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
        let (_actor, r) = self.authorize(request, Access::Read, "GetBroadcast")?;
        let job =
            broadcast::get_job(&self.services, &account_id(&r.account_id)?, &r.job_id).await?;
        Ok(Response::new(job_to_pb(job, false)))
    }

    async fn preview_broadcast(
        &self,
        request: Request<pb::PreviewBroadcastRequest>,
    ) -> Result<Response<pb::PreviewBroadcastResponse>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "PreviewBroadcast")?;
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
        let (actor, r) = self.authorize(request, Access::Write, "DeleteBroadcast")?;
        tracing::info!(actor = %actor, account = %Untrusted(&r.account_id), job_id = %Untrusted(&r.job_id), "DeleteBroadcast");
        let job =
            broadcast::delete_job(&self.services, &account_id(&r.account_id)?, &r.job_id).await?;
        Ok(Response::new(job_to_pb(job, false)))
    }

    async fn cancel_broadcast(
        &self,
        request: Request<pb::GetBroadcastRequest>,
    ) -> Result<Response<pb::BroadcastJob>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "CancelBroadcast")?;
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
        let (actor, r) = self.authorize(request, Access::Write, "CreateTag")?;
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

    async fn start_sync(
        &self,
        request: Request<pb::StartSyncRequest>,
    ) -> Result<Response<pb::Sync>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "StartSync")?;
        let view =
            sync::start_sync(&self.services, &account_id(&r.account_id)?, &actor, &r.kind).await?;
        Ok(Response::new(sync_to_pb(view)))
    }

    async fn get_sync(
        &self,
        request: Request<pb::GetSyncRequest>,
    ) -> Result<Response<pb::Sync>, Status> {
        let (_actor, r) = self.authorize(request, Access::Read, "GetSync")?;
        let view = sync::get_sync(&self.services, &account_id(&r.account_id)?, &r.sync_id).await?;
        Ok(Response::new(sync_to_pb(view)))
    }

    async fn list_corp_tags(
        &self,
        request: Request<pb::ListCorpTagsRequest>,
    ) -> Result<Response<pb::ListCorpTagsResponse>, Status> {
        let (_, r) = self.authorize(request, Access::Read, "ListCorpTags")?;
        let groups = corp_tags::list(
            &self.services,
            &account_id(&r.account_id)?,
            &r.tag_ids,
            &r.group_ids,
        )
        .await?;
        Ok(Response::new(pb::ListCorpTagsResponse {
            groups: groups.into_iter().map(corp_tag_group_to_pb).collect(),
        }))
    }

    async fn create_corp_tag(
        &self,
        request: Request<pb::CreateCorpTagRequest>,
    ) -> Result<Response<pb::CorpTagGroup>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "CreateCorpTag")?;
        let account = account_id(&r.account_id)?;
        let tags: Vec<NewCorpTagInput> = r
            .tags
            .into_iter()
            .map(|t| NewCorpTagInput {
                name: t.name,
                order: (t.order != 0).then_some(t.order),
            })
            .collect();
        let req = NewCorpTags::parse(
            Some(r.group_id.as_str()),
            Some(r.group_name.as_str()),
            (r.group_order != 0).then_some(r.group_order),
            &tags,
        )
        .map_err(ServiceError::Validation)?;
        let group = corp_tags::create(&self.services, &account, &actor, req).await?;
        Ok(Response::new(corp_tag_group_to_pb(group)))
    }

    async fn edit_corp_tag(
        &self,
        request: Request<pb::EditCorpTagRequest>,
    ) -> Result<Response<pb::EditCorpTagResponse>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "EditCorpTag")?;
        corp_tags::edit(
            &self.services,
            &account_id(&r.account_id)?,
            &actor,
            &r.id,
            (!r.name.is_empty()).then_some(r.name.as_str()),
            r.order,
        )
        .await?;
        Ok(Response::new(pb::EditCorpTagResponse {}))
    }

    async fn delete_corp_tag(
        &self,
        request: Request<pb::DeleteCorpTagRequest>,
    ) -> Result<Response<pb::DeleteCorpTagResponse>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "DeleteCorpTag")?;
        let deleted =
            corp_tags::delete(&self.services, &account_id(&r.account_id)?, &actor, &r.id).await?;
        Ok(Response::new(pb::DeleteCorpTagResponse {
            deleted: deleted.as_str().to_owned(),
        }))
    }

    async fn mark_tags(
        &self,
        request: Request<pb::MarkTagsRequest>,
    ) -> Result<Response<pb::MarkTagsResponse>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "MarkTags")?;
        let account = account_id(&r.account_id)?;
        let req = MarkTags::parse(&r.external_user_id, &r.user_id, &r.add, &r.remove)
            .map_err(ServiceError::Validation)?;
        corp_tags::mark(&self.services, &account, &actor, &req).await?;
        Ok(Response::new(pb::MarkTagsResponse {}))
    }

    async fn list_tags(
        &self,
        request: Request<pb::ListTagsRequest>,
    ) -> Result<Response<pb::ListTagsResponse>, Status> {
        let (_, r) = self.authorize(request, Access::Read, "ListTags")?;
        let list = tags::list_tags(&self.services, &account_id(&r.account_id)?).await?;
        Ok(Response::new(list.into()))
    }

    async fn update_tag(
        &self,
        request: Request<pb::UpdateTagRequest>,
    ) -> Result<Response<pb::UpdateTagResponse>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "UpdateTag")?;
        tracing::info!(actor = %actor, account = %Untrusted(&r.account_id), tag_id = r.tag_id, "UpdateTag");
        tags::rename_tag(
            &self.services,
            &account_id(&r.account_id)?,
            r.tag_id,
            &r.name,
        )
        .await?;
        Ok(Response::new(pb::UpdateTagResponse {}))
    }

    async fn delete_tag(
        &self,
        request: Request<pb::DeleteTagRequest>,
    ) -> Result<Response<pb::DeleteTagResponse>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "DeleteTag")?;
        tracing::info!(actor = %actor, account = %Untrusted(&r.account_id), tag_id = r.tag_id, "DeleteTag");
        tags::delete_tag(&self.services, &account_id(&r.account_id)?, r.tag_id).await?;
        Ok(Response::new(pb::DeleteTagResponse {}))
    }

    async fn get_user_tags(
        &self,
        request: Request<pb::GetUserTagsRequest>,
    ) -> Result<Response<pb::GetUserTagsResponse>, Status> {
        let (_, r) = self.authorize(request, Access::Read, "GetUserTags")?;
        let tag_ids =
            tags::user_tags(&self.services, &account_id(&r.account_id)?, &r.open_id).await?;
        Ok(Response::new(pb::GetUserTagsResponse { tag_ids }))
    }

    async fn get_jsapi_signature(
        &self,
        request: Request<pb::GetJsapiSignatureRequest>,
    ) -> Result<Response<pb::GetJsapiSignatureResponse>, Status> {
        // Read access: a signature changes nothing in WeChat (the ticket is a cache).
        let (_, r) = self.authorize(request, Access::Read, "GetJsapiSignature")?;
        let signed =
            h5::jsapi_signature(&self.services, &account_id(&r.account_id)?, &r.url).await?;
        Ok(Response::new(signed.into()))
    }

    async fn cancel_sync(
        &self,
        request: Request<pb::GetSyncRequest>,
    ) -> Result<Response<pb::Sync>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "CancelSync")?;
        let view = sync::cancel_sync(
            &self.services,
            &account_id(&r.account_id)?,
            &actor,
            &r.sync_id,
        )
        .await?;
        Ok(Response::new(sync_to_pb(view)))
    }

    async fn send_template(
        &self,
        request: Request<pb::SendTemplateRequest>,
    ) -> Result<Response<pb::TemplateSendJob>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "SendTemplate")?;
        let account = r.account_id.clone();
        let req = super::templates::send_request(r)?;
        let (job, created) =
            templates::create_job(&self.services, &account_id(&account)?, &actor, req).await?;
        Ok(Response::new(super::templates::job_to_pb(job, created)))
    }

    async fn get_template_send(
        &self,
        request: Request<pb::GetTemplateSendRequest>,
    ) -> Result<Response<pb::TemplateSendJob>, Status> {
        let (_actor, r) = self.authorize(request, Access::Read, "GetTemplateSend")?;
        let job = templates::get_job(
            &self.services,
            &account_id(&r.account_id)?,
            &r.job_id,
            usize::try_from(r.offset).unwrap_or(usize::MAX),
            usize::try_from(r.limit).unwrap_or(usize::MAX),
        )
        .await?;
        Ok(Response::new(super::templates::job_to_pb(job, false)))
    }

    async fn cancel_template_send(
        &self,
        request: Request<pb::GetTemplateSendRequest>,
    ) -> Result<Response<pb::TemplateSendJob>, Status> {
        let (actor, r) = self.authorize(request, Access::Write, "CancelTemplateSend")?;
        let job = templates::cancel_job(
            &self.services,
            &account_id(&r.account_id)?,
            &r.job_id,
            &actor,
        )
        .await?;
        Ok(Response::new(super::templates::job_to_pb(job, false)))
    }

    async fn send_typing(
        &self,
        request: Request<pb::SendTypingRequest>,
    ) -> Result<Response<pb::SendTypingResponse>, Status> {
        let (_actor, r) = self.authorize(request, Access::Write, "SendTyping")?;
        let command = if r.typing {
            TypingCommand::Typing
        } else {
            TypingCommand::CancelTyping
        };
        send_typing(
            &self.services,
            &account_id(&r.account_id)?,
            &r.to_user,
            command,
            r.ignore_window,
        )
        .await?;
        Ok(Response::new(pb::SendTypingResponse {}))
    }

    async fn upload_media(
        &self,
        request: Request<tonic::Streaming<pb::UploadMediaRequest>>,
    ) -> Result<Response<pb::UploadMediaResponse>, Status> {
        super::media::upload_media(&self.services, request).await
    }
}

impl GatewayService {
    async fn change_tag(
        &self,
        request: Request<pb::TagUsersRequest>,
        untag: bool,
    ) -> Result<Response<pb::TagUsersResponse>, Status> {
        let rpc = if untag { "UntagUsers" } else { "TagUsers" };
        let (actor, r) = self.authorize(request, Access::Write, rpc)?;
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
