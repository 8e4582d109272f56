//! Where the forwarder delivers: the CRM's gRPC `EventSink`, or JSON lines on stdout when no
//! CRM endpoint is configured.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use thiserror::Error;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use crate::domain::Secret;
use crate::pb;
use crate::pb::event_sink_client::EventSinkClient;

/// A delivery that did not happen: nothing of the batch counts as delivered.
#[derive(Debug, Error)]
pub enum SinkError {
    /// The CRM is away or failed: the whole batch is retried later, nothing is lost.
    #[error("delivery failed: {0}")]
    Failed(String),
    /// The CRM refused the whole request as invalid (`INVALID_ARGUMENT`): the forwarder retries
    /// the events one by one to find the culprit, which goes to the dead letters.
    #[error("the CRM refused the batch as invalid: {0}")]
    Invalid(String),
}

/// The sink's verdict on a delivered batch: every event not in `rejected` was accepted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// (event id, reason) of events the CRM will never accept: they go to the dead letters.
    pub rejected: Vec<(String, String)>,
}

#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Delivers one batch, in order. `Err` means none of it counts as delivered.
    async fn deliver(&self, events: &[pb::Event]) -> Result<Delivered, SinkError>;
}

/// The CRM's `EventSink.Deliver` over gRPC. The channel connects lazily and reconnects by
/// itself, so a CRM that is down at start-up or restarts later only delays delivery. A TLS
/// handshake that fails (a certificate the gateway does not trust) is a failed delivery like
/// any other: the batch stays in the outbox.
pub struct GrpcSink {
    client: EventSinkClient<Channel>,
    /// `authorization: Bearer <crm.token>`, marked sensitive so that it is never printed.
    authorization: Option<AsciiMetadataValue>,
}

impl GrpcSink {
    /// `tls` is set for an `https://` endpoint (see [`crate::tls::client_config`]).
    pub fn new(
        endpoint: &str,
        timeout: Duration,
        tls: Option<ClientTlsConfig>,
        token: Option<&Secret>,
    ) -> anyhow::Result<Self> {
        let mut endpoint = Endpoint::from_shared(endpoint.to_owned())?
            .timeout(timeout)
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls.timeout(timeout))
                .context("cannot set up TLS towards the CRM (are there root certificates?)")?;
        }
        let authorization = match token {
            Some(token) => {
                let mut value: AsciiMetadataValue =
                    MetadataValue::try_from(format!("Bearer {}", token.expose()))
                        .map_err(|_| anyhow::anyhow!("crm.token is not valid gRPC metadata"))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Self {
            client: EventSinkClient::new(endpoint.connect_lazy()),
            authorization,
        })
    }
}

#[async_trait]
impl Sink for GrpcSink {
    async fn deliver(&self, events: &[pb::Event]) -> Result<Delivered, SinkError> {
        let mut request = tonic::Request::new(pb::DeliverRequest {
            events: events.to_vec(),
        });
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        match self.client.clone().deliver(request).await {
            Ok(response) => Ok(Delivered {
                rejected: response
                    .into_inner()
                    .rejected
                    .into_iter()
                    .map(|r| (r.event_id, r.reason))
                    .collect(),
            }),
            Err(status) if status.code() == Code::InvalidArgument => {
                Err(SinkError::Invalid(status.message().to_owned()))
            }
            // Any other status is a failed batch (the proto's contract): retried, never dropped.
            Err(status) => Err(SinkError::Failed(format!(
                "CRM answered {:?}: {}",
                status.code(),
                status.message()
            ))),
        }
    }
}

/// Writes each event as one JSON line to stdout (logs go to stderr), for a gateway run without
/// a CRM: `cargo run` shows what the CRM would receive.
pub struct StdoutSink;

#[async_trait]
impl Sink for StdoutSink {
    async fn deliver(&self, events: &[pb::Event]) -> Result<Delivered, SinkError> {
        let mut out = Vec::with_capacity(events.len() * 256);
        for event in events {
            serde_json::to_writer(&mut out, event).map_err(|e| SinkError::Failed(e.to_string()))?;
            out.push(b'\n');
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&out)
            .and_then(|()| stdout.flush())
            .map_err(|e| SinkError::Failed(format!("cannot write to stdout: {e}")))?;
        Ok(Delivered::default())
    }
}
