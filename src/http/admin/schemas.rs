//! Named schemas of the OpenAPI document for the JSON the admin API passes through rather than
//! models: WeChat's own menu and mass-send shapes (WeChat defines them, the gateway checks
//! them in `crate::domain`), the document itself, and `Event`, whose schema is generated from
//! the proto's descriptors so that it states the proto3 JSON mapping field by field.
//!
//! Each is a type only to be named in `#[utoipa::path]` and `#[schema(value_type = ..)]`:
//! nothing builds one.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type as ProtoType};
use prost_types::{DescriptorProto, FileDescriptorSet};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// A free-form JSON object under a name of its own, described where WeChat defines it.
macro_rules! free_form {
    ($(#[doc = $doc:literal])+ $name:ident) => {
        $(#[doc = $doc])+
        pub(crate) enum $name {}

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .additional_properties(Some(AdditionalProperties::FreeForm(true)))
                    .description(Some([$($doc.trim()),+].join(" ")))
                    .into()
            }
        }

        impl ToSchema for $name {}
    };
}

free_form! {
    /// WeChat's menu JSON (`{"button": [...]}`; from `GET .../menu` also `conditionalmenu`, with
    /// `menuid` and `matchrule` each), as WeChat's 自定义菜单 pages define it: the gateway
    /// passes it through after checking WeChat's limits.
    WeChatMenu
}

free_form! {
    /// A conditional menu in WeChat's shape: `{"button": [...], "matchrule": {...}}`.
    ConditionalMenu
}

free_form! {
    /// A broadcast audience: `{"tag_id": 2}`, `{"open_ids": [...]}` or `{"all": true}` on an
    /// Official Account. On WeCom (`externalcontact/add_msg_template`): `{"external_user_ids":
    /// [...], "sender": "userid"}` (batches of 10,000), optionally with `"tag_filter":
    /// {"group_list": [{"tag_list": ["corp tag id", ...]}]}` (at most 100 tags a group; it may
    /// stand alone) and `"allow_select": true`; or `{"chat_type": "group", "sender": "owner
    /// userid"}` to the sender's customer groups, optionally `"chat_ids": [...]` (batches of
    /// 2,000). A job shows it with counts instead of lists: `{"open_ids": <count>}`.
    BroadcastAudience
}

free_form! {
    /// A WeChat mass message: `{"text": {"content"}}`, `{"mpnews": {"media_id"}}`, image, voice,
    /// mpvideo or wxcard, in WeChat's mass-send shape; optionally `"send_ignore_reprint": 1`.
    /// On WeCom a group message: `{"text": {"content"}, "attachments": [...]}` (text at most
    /// 4,000 bytes; at most 9 attachments, each `{"msgtype": T, T: {...}}` with T image
    /// (`media_id` or `pic_url`), link (`title`, `url`, `picurl`, `desc`), miniprogram
    /// (`title`, `pic_media_id`, `appid`, `page`), video or file (`media_id`)); in place of a
    /// media id, `"sha256"` (`"pic_sha256"` in a miniprogram) names an upload of `POST
    /// .../media`, uploaded again when its 3-day media id lapses.
    BroadcastMessage
}

free_form! {
    /// An OpenAPI 3.1 document (this one).
    OpenApiDocument
}

/// `wechat_gateway.v1.Event` in the proto3 JSON mapping: the schema is built from the
/// descriptors compiled from `proto/` (the ones gRPC reflection serves), so it follows the proto.
pub(crate) enum Event {}

impl PartialSchema for Event {
    fn schema() -> RefOr<Schema> {
        let set = FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("the build's descriptor set decodes");
        message_schema(&set, ".wechat_gateway.v1.Event")
    }
}

impl ToSchema for Event {}

/// The message named `full_name` (`.package.Name`), its fields under their JSON names.
fn message_schema(set: &FileDescriptorSet, full_name: &str) -> RefOr<Schema> {
    let message = find_message(set, full_name)
        .unwrap_or_else(|| panic!("{full_name} is in the descriptor set"));
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!(
            "`{}` in the proto3 JSON mapping (fields at their default value are left out).",
            &full_name[1..]
        )));
    for field in &message.field {
        let json_name = field
            .json_name
            .clone()
            .unwrap_or_else(|| field.name().into());
        let one = field_schema(set, field);
        let schema = if field.label() == Label::Repeated {
            ArrayBuilder::new().items(one).into()
        } else {
            one
        };
        object = object.property(json_name, schema);
    }
    object.into()
}

fn field_schema(
    set: &FileDescriptorSet,
    field: &prost_types::FieldDescriptorProto,
) -> RefOr<Schema> {
    let scalar = |t: Type, format: Option<KnownFormat>| -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(t)
            .format(format.map(SchemaFormat::KnownFormat))
            .into()
    };
    match field.r#type() {
        ProtoType::Double | ProtoType::Float => scalar(Type::Number, Some(KnownFormat::Double)),
        ProtoType::Int32 | ProtoType::Sint32 | ProtoType::Sfixed32 => {
            scalar(Type::Integer, Some(KnownFormat::Int32))
        }
        ProtoType::Uint32 | ProtoType::Fixed32 => scalar(Type::Integer, None),
        // The mapping writes 64-bit integers as strings (JavaScript's numbers stop at 2^53).
        ProtoType::Int64 | ProtoType::Sint64 | ProtoType::Sfixed64 => ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("int64".into())))
            .into(),
        ProtoType::Uint64 | ProtoType::Fixed64 => ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uint64".into())))
            .into(),
        ProtoType::Bool => scalar(Type::Boolean, None),
        ProtoType::String => scalar(Type::String, None),
        ProtoType::Bytes => scalar(Type::String, Some(KnownFormat::Byte)),
        ProtoType::Enum => {
            let values = find_enum(set, field.type_name())
                .map(|e| {
                    e.value
                        .iter()
                        .map(|v| v.name().to_owned())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(values))
                .into()
        }
        ProtoType::Message if field.type_name() == ".google.protobuf.Timestamp" => {
            scalar(Type::String, Some(KnownFormat::DateTime))
        }
        ProtoType::Message | ProtoType::Group => message_schema(set, field.type_name()),
    }
}

/// Every message of the set under its full name, nested ones included.
fn messages(set: &FileDescriptorSet) -> Vec<(String, &DescriptorProto)> {
    fn walk<'a>(
        prefix: &str,
        m: &'a DescriptorProto,
        out: &mut Vec<(String, &'a DescriptorProto)>,
    ) {
        let name = format!("{prefix}.{}", m.name());
        for nested in &m.nested_type {
            walk(&name, nested, out);
        }
        out.push((name, m));
    }
    let mut out = Vec::new();
    for file in &set.file {
        let prefix = format!(".{}", file.package());
        for m in &file.message_type {
            walk(&prefix, m, &mut out);
        }
    }
    out
}

fn find_message<'a>(set: &'a FileDescriptorSet, full_name: &str) -> Option<&'a DescriptorProto> {
    messages(set)
        .into_iter()
        .find(|(name, _)| name == full_name)
        .map(|(_, m)| m)
}

fn find_enum<'a>(
    set: &'a FileDescriptorSet,
    full_name: &str,
) -> Option<&'a prost_types::EnumDescriptorProto> {
    let top = set.file.iter().flat_map(|f| {
        f.enum_type
            .iter()
            .map(move |e| (format!(".{}.{}", f.package(), e.name()), e))
    });
    let nested = messages(set).into_iter().flat_map(|(prefix, m)| {
        m.enum_type
            .iter()
            .map(move |e| (format!("{prefix}.{}", e.name()), e))
    });
    top.chain(nested)
        .find(|(name, _)| name == full_name)
        .map(|(_, e)| e)
}

free_form! {
    /// A customer-service message, one type named by its key, with WeChat's fields for that
    /// type (客服接口-发消息): `{"text": {"content"}}`, `{"image": {"media_id"}}`, voice, video
    /// (`media_id`, `thumb_media_id`, `title`, `description`), music, news (one article),
    /// mpnews, mpnewsarticle (`article_id`), msgmenu (`head_content`, `list`: `[{"id",
    /// "content"}]`, `tail_content`), miniprogrampage, wxcard. On WeCom: text, image, voice, file.
    CustomMessageBody
}
