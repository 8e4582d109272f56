//! The fake's WeCom corp tags, customer tags, customer groups and group join codes: the
//! sandbox's model of them ([`wechat_gateway::sandbox::wecom_profile`], written from WeCom's
//! documentation: its shapes, paging and errcodes), one per corp, starting empty. Tests set up
//! who is whose customer and who is in which group through [`FakeWeChat::profile`].

use wechat_gateway::sandbox::wecom_profile::Profile;

use super::FakeWeChat;
use crate::support::app::WORK_CORP_ID;

impl FakeWeChat {
    /// Reads or changes the test corp's (`acme-work`'s) tags and groups.
    pub fn profile<R>(&self, f: impl FnOnce(&mut Profile) -> R) -> R {
        f(self
            .state()
            .profiles
            .entry(WORK_CORP_ID.to_owned())
            .or_default())
    }
}
