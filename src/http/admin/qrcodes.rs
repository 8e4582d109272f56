//! `POST /admin/v1/accounts/{account}/qrcodes`: a parametric QR code (Official Account) or a
//! contact-me code (WeCom), through [`crate::services::qrcode`].

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Actor, JsonBody};
use super::responses::{AccountErrors, WeChatErrors};
use crate::domain::autoreply::Reply;
use crate::domain::scene::SceneInput;
use crate::error::ErrorBody;
use crate::error::ServiceError;
use crate::http::AppState;
use crate::services::account_id;
use crate::services::qrcode::{create_qr_code, CreateQrCode};

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope.route("/accounts/{account}/qrcodes", web::post().to(create))
}

/// The JSON body, as the contract shows it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateQrCodeBody)]
pub(crate) struct Body {
    /// A string (`scene_str`) or an integer (`scene_id`).
    #[schema(schema_with = scene_schema)]
    scene: serde_json::Value,
    #[serde(default)]
    permanent: bool,
    expire_seconds: Option<i64>,
    #[serde(default)]
    label: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// WeCom only: the members the contact-me code reaches.
    #[serde(default)]
    users: Vec<String>,
    /// The welcome reply of the followers this code brings: `{"text": {"content"}}`,
    /// `{"image": {"media_id"}}` or `{"news": {"title", "description", "pic_url", "url"}}`.
    #[serde(default)]
    welcome: Option<Reply>,
}

/// The code created.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedQrCode {
    /// The scene as it was sent: a number stays a number.
    #[schema(schema_with = scene_schema)]
    scene: serde_json::Value,
    ticket: String,
    /// What the code encodes.
    url: String,
    /// The code as an image (WeChat's showqrcode).
    image_url: String,
    /// RFC 3339; null for a permanent code.
    expire_at: Option<String>,
}

/// `scene` in the document: `oneOf` string or integer.
fn scene_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Integer).format(Some(
            utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64),
        )))
        .description(Some("A string (`scene_str`) or an integer (`scene_id`)."))
        .build()
        .into()
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/qrcodes",
    operation_id = "createQrCode",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = Body, content_type = "application/json"),
    responses(
        (status = 200, description = "the code created", body = CreatedQrCode),
        (status = 400, description = "invalid body", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<Body>,
) -> Result<HttpResponse, ServiceError> {
    let scene = match &body.scene {
        serde_json::Value::String(s) => SceneInput::Str(s.clone()),
        serde_json::Value::Number(n) => SceneInput::Id(n.as_i64().ok_or_else(|| {
            ServiceError::Validation(format!("scene: {n} is not an integer scene_id"))
        })?),
        other => {
            return Err(ServiceError::Validation(format!(
                "scene: must be a string (scene_str) or an integer (scene_id), got {other}"
            )))
        }
    };
    let code = create_qr_code(
        &state.services,
        &account_id(&path)?,
        &actor,
        CreateQrCode {
            scene,
            permanent: body.permanent,
            expire_seconds: body.expire_seconds,
            label: body.label,
            metadata: body.metadata,
            users: body.users,
            welcome: body.welcome,
        },
    )
    .await?;
    let expire_at = code
        .expire_at
        .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }.to_string());
    // The scene is answered as it was sent: a number stays a number.
    Ok(HttpResponse::Ok().json(CreatedQrCode {
        scene: body.scene,
        ticket: code.ticket,
        url: code.url,
        image_url: code.image_url,
        expire_at,
    }))
}
