//! The use cases both transports call: the account's templates, create a job (checked against
//! the template before any send, persisted before the runner sends anything), read it with a
//! page of recipients, cancel it.

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::template::{fields, TemplateKind, TemplateSend};
use crate::domain::{AccountId, Actor, Platform};
use crate::error::ServiceError;
use crate::services::Services;
use crate::store::{DocWrite, StoreError};
use crate::wechat::account::Account;
use crate::wechat::api::template;

use super::model::{
    page_key, unix_now, Job, Page, PageState, PageStatus, Recipient, RecipientStatus, ACTIVE,
    CLIENT_MSG_IDS, JOBS, PAGES, PAGE_SIZE,
};
use super::persist::{load_job, new_job_id, not_found, update_job};
use super::views::{view, JobView};

const MAX_CALLER_ID: usize = 128;

/// One of the account's templates, with the fields its content names.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateView {
    pub template_id: String,
    /// `template` (template messages) or `subscribe` (subscription notices).
    pub kind: String,
    pub title: String,
    pub content: String,
    pub example: String,
    /// The names `data` must give, from `{{name.DATA}}` in the content.
    pub fields: Vec<FieldView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldView {
    pub name: String,
    /// The most characters its value may have.
    pub max_chars: usize,
}

/// A request as either transport parsed it.
#[derive(Debug, Clone)]
pub struct SendTemplate {
    pub send: TemplateSend,
    pub client_msg_id: Option<String>,
}

fn mp_only(account: &Account) -> Result<(), ServiceError> {
    match account.platform {
        Platform::Mp => Ok(()),
        Platform::Work => Err(ServiceError::Validation(format!(
            "account {:?} is a WeCom application: template messages and subscription notices \
             are Official Account features",
            account.id.as_str()
        ))),
    }
}

fn check_caller_id(id: &str) -> Result<(), ServiceError> {
    if id.is_empty()
        || id.len() > MAX_CALLER_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(ServiceError::Validation(format!(
            "client_msg_id must be 1 to {MAX_CALLER_ID} characters of letters, digits, '-', \
             '_', '.' and ':'"
        )));
    }
    Ok(())
}

/// The account's templates of one kind, as WeChat lists them, with their fields.
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn list_templates(
    svc: &Services,
    account_id: &AccountId,
    kind: TemplateKind,
) -> Result<Vec<TemplateView>, ServiceError> {
    let account = svc.account(account_id)?.clone();
    mp_only(&account)?;
    let found: Vec<(String, String, String, String)> = match kind {
        TemplateKind::Template => template::private_templates(&svc.tokens, &account)
            .await?
            .template_list
            .into_iter()
            .map(|t| (t.template_id, t.title, t.content, t.example))
            .collect(),
        TemplateKind::Subscribe => template::subscribe_templates(&svc.tokens, &account)
            .await?
            .data
            .into_iter()
            .map(|t| (t.template_id, t.title, t.content, t.example))
            .collect(),
    };
    Ok(found
        .into_iter()
        .map(|(template_id, title, content, example)| TemplateView {
            fields: fields(&content)
                .into_iter()
                .map(|name| FieldView {
                    max_chars: crate::domain::template::value_limit(&name),
                    name,
                })
                .collect(),
            kind: kind_name(kind).into(),
            template_id,
            title,
            content,
            example,
        })
        .collect())
}

pub(super) fn kind_name(kind: TemplateKind) -> &'static str {
    match kind {
        TemplateKind::Template => "template",
        TemplateKind::Subscribe => "subscribe",
    }
}

/// Checks the request against the account's template, persists the job and its pages, and
/// wakes the runner. The same `client_msg_id` again answers the job it made, and sends
/// nothing (`false`).
#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor))]
pub async fn create_job(
    svc: &Services,
    account_id: &AccountId,
    actor: &Actor,
    req: SendTemplate,
) -> Result<(JobView, bool), ServiceError> {
    let account = svc.account(account_id)?.clone();
    mp_only(&account)?;
    if let Some(id) = &req.client_msg_id {
        check_caller_id(id)?;
    }
    let store = &*svc.store;
    let id = account_id.as_str();
    // A repeat is answered before anything is asked of WeChat.
    if let Some(cmid) = &req.client_msg_id {
        if let Some(job_id) = CLIENT_MSG_IDS.get(store, id, cmid).await? {
            if let Some((job, _)) = load_job(store, id, &job_id).await? {
                return Ok((view(store, id, &job, 0, 0).await?, false));
            }
        }
    }
    let send = req.send;
    let templates = list_templates(svc, account_id, send.kind).await?;
    let Some(t) = templates.iter().find(|t| t.template_id == send.template_id) else {
        let listed_by = match send.kind {
            TemplateKind::Template => "template/get_all_private_template",
            TemplateKind::Subscribe => "wxaapi/newtmpl/gettemplate",
        };
        return Err(ServiceError::Validation(format!(
            "template {:?} is not one of the account's templates ({listed_by})",
            send.template_id
        )));
    };
    let names: Vec<String> = t.fields.iter().map(|f| f.name.clone()).collect();
    send.check_fields(&names)
        .map_err(ServiceError::Validation)?;

    let mut job_id = new_job_id();
    if let Some(cmid) = &req.client_msg_id {
        if !CLIENT_MSG_IDS
            .put(store, id, cmid, &job_id, DocWrite::IfAbsent)
            .await?
        {
            job_id = CLIENT_MSG_IDS.get(store, id, cmid).await?.ok_or_else(|| {
                ServiceError::Conflict(format!(
                    "client_msg_id {cmid:?} is being used by a request in progress; try again"
                ))
            })?;
        }
    }
    if let Some((job, _)) = load_job(store, id, &job_id).await? {
        return Ok((view(store, id, &job, 0, 0).await?, false));
    }
    let chunks: Vec<&[String]> = send.open_ids.chunks(PAGE_SIZE).collect();
    // Pages first, concurrently (the embedded store commits them together), then the job.
    let writes = chunks.iter().enumerate().map(|(i, ids)| {
        let page = Page {
            recipients: ids
                .iter()
                .map(|o| Recipient {
                    open_id: o.clone(),
                    status: RecipientStatus::Pending,
                    msgid: None,
                    errcode: None,
                    error: None,
                    attempts: 0,
                })
                .collect(),
            window: None,
        };
        let key = page_key(&job_id, i);
        async move { PAGES.put(store, id, &key, &page, DocWrite::IfAbsent).await }
    });
    for written in futures::future::join_all(writes).await {
        written?;
    }
    let job = Job {
        job_id: job_id.clone(),
        kind: send.kind,
        actor: actor.to_string(),
        created_at: unix_now(),
        client_msg_id: req.client_msg_id.clone(),
        template_id: send.template_id.clone(),
        message: send.wire(),
        total: send.open_ids.len(),
        pages: chunks
            .iter()
            .map(|c| PageState {
                size: c.len(),
                status: PageStatus::Queued,
                counts: Default::default(),
            })
            .collect(),
        cancelled_at: None,
        cancelled_by: None,
        paused: None,
        finished_at: None,
    };
    ACTIVE
        .put(store, id, &job_id, &(), DocWrite::Always)
        .await?;
    let created = JOBS
        .put(store, id, &job_id, &job, DocWrite::IfAbsent)
        .await?;
    let (job, _) = load_job(store, id, &job_id)
        .await?
        .ok_or_else(|| StoreError::Unavailable("the job just written is not there".into()))?;
    if created {
        tracing::info!(job_id = %job_id, recipients = job.total, kind = kind_name(job.kind),
            "template job created");
        svc.templates.kick.notify_one();
    }
    Ok((view(store, id, &job, 0, 0).await?, created))
}

/// The job, its counts, and `limit` recipients from `offset`.
pub async fn get_job(
    svc: &Services,
    account_id: &AccountId,
    job_id: &str,
    offset: usize,
    limit: usize,
) -> Result<JobView, ServiceError> {
    svc.account(account_id)?;
    let (job, _) = load_job(&*svc.store, account_id.as_str(), job_id)
        .await?
        .ok_or_else(|| not_found(job_id))?;
    Ok(view(
        &*svc.store,
        account_id.as_str(),
        &job,
        offset,
        limit.min(1000),
    )
    .await?)
}

/// Cancels a job: recipients not yet sent never are; a send in flight finishes. Idempotent;
/// a job with nothing left to send is a conflict.
#[tracing::instrument(skip_all, fields(account = %account_id, job_id = job_id, actor = %actor))]
pub async fn cancel_job(
    svc: &Services,
    account_id: &AccountId,
    job_id: &str,
    actor: &Actor,
) -> Result<JobView, ServiceError> {
    svc.account(account_id)?;
    let store = &*svc.store;
    let now = unix_now();
    let job = update_job(store, account_id.as_str(), job_id, |j| {
        let pending = j
            .pages
            .iter()
            .any(|p| matches!(p.status, PageStatus::Queued | PageStatus::Sending));
        if j.cancelled_at.is_none() && pending {
            j.cancelled_at = Some(now);
            j.cancelled_by = Some(actor.to_string());
            for p in &mut j.pages {
                if p.status == PageStatus::Queued {
                    p.status = PageStatus::Cancelled;
                    p.counts.cancelled = p.size;
                }
            }
        }
    })
    .await?;
    let answer = view(store, account_id.as_str(), &job, 0, 0).await?;
    if job.cancelled_at.is_none() {
        return Err(ServiceError::Precondition(format!(
            "template job {job_id:?} has nothing left to send (it is {}): only a queued or \
             sending job can be cancelled",
            answer.status
        )));
    }
    svc.templates.kick.notify_one();
    Ok(answer)
}
