//! QR-scene attribution, run by the forwarder on each batch before delivery (a
//! [`Decorate`] step): every event that carries a QR scene (subscribe through a code, SCAN) or a
//! contact-me `state` (WeCom `add_external_contact`, also `add_half_external_contact`, and a
//! customer group join through a group join code, `group_member_joined`) gets the
//! label of that scene from the store's scene registry, which the QR-code and contact-me use cases
//! ([`super::qrcode`]) fill. A lookup that fails only leaves the label empty (and is logged and
//! counted in `wgw_attribution_failures_total`): delivery never waits or fails because of it.

use std::sync::Arc;

use async_trait::async_trait;

use crate::outbox::Decorate;
use crate::pb::{self, event::Kind};
use crate::store::Store;

/// The attribution step, given to the forwarder at start-up.
pub struct Attribution {
    store: Arc<dyn Store>,
}

impl Attribution {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

/// The scene an event was brought by, if any: the registry key of [`Attribution`].
fn scene_of(event: &pb::Event) -> Option<&str> {
    let scene = match event.kind.as_ref()? {
        Kind::Subscribe(s) => &s.scene,
        Kind::Scan(s) => &s.scene,
        // A half-added customer (add_half_external_contact) came through the code as well.
        Kind::ExternalContactChange(c)
            if c.change_type == "add_external_contact"
                || c.change_type == "add_half_external_contact" =>
        {
            &c.state
        }
        // A customer group join through a group join code (`group-chat-join-ways`).
        Kind::GroupMemberJoined(j) => &j.state,
        _ => return None,
    };
    (!scene.is_empty()).then_some(scene.as_str())
}

/// Sets the label of every event whose scene the gateway created (see the module comment).
#[async_trait]
impl Decorate for Attribution {
    async fn decorate(&self, events: &mut [pb::Event]) {
        for event in events.iter_mut() {
            if !event.label.is_empty() {
                continue;
            }
            let Some(scene) = scene_of(event) else {
                continue;
            };
            match self.store.scene(&event.account_id, scene).await {
                Ok(Some(record)) => event.label = record.label,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(event_id = %event.id, error = %e,
                        "cannot look up the scene's label; delivering without it");
                    metrics::counter!("wgw_attribution_failures_total").increment(1);
                }
            }
        }
    }
}
