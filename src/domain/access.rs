//! Who may do what through the admin API and the gRPC `Gateway` service (issue 18, least
//! privilege). A bearer token (`[[admin.tokens]]`, `[[grpc.tokens]]`) names its holder and a
//! [`Scope`]: the accounts it may act on (all when `accounts` is absent) and whether it may
//! only read (`read_only = true`). Both doors authenticate with [`bearer`] and [`match_token`],
//! then ask the [`Caller`] for an [`Actor`] for one account and one kind of [`Access`].
//!
//! Routes that span every account (the dead letters under `/admin/v1/dead-letters`) are only for
//! tokens without an `accounts` list: a token limited to some accounts would otherwise see or
//! replay the events of the others.

use std::fmt;

use super::{AccountId, Actor, Secret};

/// What a request does: reads (HTTP GET/HEAD, the gRPC Get*/List* rpcs) or changes something,
/// or asks WeChat to send something (everything else).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// What a token may do: which accounts, and whether it may write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// `None`: every account, and the routes that span all of them.
    accounts: Option<Vec<AccountId>>,
    read_only: bool,
}

impl Scope {
    /// A token's scope as configured; `accounts: None` is every account.
    pub fn new(accounts: Option<Vec<AccountId>>, read_only: bool) -> Self {
        Self {
            accounts,
            read_only,
        }
    }

    /// Every account, read and write: a token with no `accounts` and no `read_only`, or the
    /// anonymous gRPC caller when no `[[grpc.tokens]]` are configured.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn accounts(&self) -> Option<&[AccountId]> {
        self.accounts.as_deref()
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether this scope allows `access` on `account` (`None`: a route that spans every
    /// account). The account is compared as the caller wrote it, before it is parsed: an id that
    /// is not in the list is refused whether or not it exists, so a refusal reveals nothing.
    pub fn check(&self, account: Option<&str>, access: Access) -> Result<(), Denial> {
        if self.read_only && access == Access::Write {
            return Err(Denial::ReadOnly);
        }
        match (&self.accounts, account) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(Denial::AllAccounts),
            (Some(list), Some(id)) if list.iter().any(|a| a.as_str() == id) => Ok(()),
            (Some(_), Some(_)) => Err(Denial::OtherAccount),
        }
    }
}

/// Why a [`Scope`] refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// A write with a `read_only` token.
    ReadOnly,
    /// An account not in the token's `accounts`.
    OtherAccount,
    /// A route over every account with a token limited to some.
    AllAccounts,
}

impl Denial {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "the token is read-only",
            Self::OtherAccount => "the token may not act on this account",
            Self::AllAccounts => {
                "the token is limited to some accounts and this route spans all of them"
            }
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller: the token's name and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub actor: Actor,
    pub scope: Scope,
}

impl Caller {
    pub fn new(name: impl Into<String>, scope: Scope) -> Self {
        Self {
            actor: Actor::new(name),
            scope,
        }
    }

    /// The actor to record, when the scope allows `access` on `account`.
    pub fn authorize(&self, account: Option<&str>, access: Access) -> Result<Actor, Denial> {
        self.scope.check(account, access)?;
        Ok(self.actor.clone())
    }
}

/// The token of an `Authorization` value (HTTP header, gRPC metadata) in the `Bearer` scheme,
/// whose name is case-insensitive (RFC 6750 §2.1 via RFC 7235 §2.1: `bearer` is `Bearer`).
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The entry of `tokens` whose secret `presented` is, if any. Every token is compared (in
/// constant time each), so timing does not tell which one matched.
pub fn match_token<'t, T>(
    tokens: impl IntoIterator<Item = (&'t T, &'t Secret)>,
    presented: &str,
) -> Option<&'t T> {
    let mut found = None;
    for (entry, token) in tokens {
        if token.matches(presented) && found.is_none() {
            found = Some(entry);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Option<Vec<AccountId>> {
        Some(list.iter().map(|a| AccountId::parse(a).unwrap()).collect())
    }

    #[test]
    fn a_scope_limits_accounts_and_writes() {
        let all = Scope::everything();
        assert_eq!(all.check(Some("any"), Access::Write), Ok(()));
        assert_eq!(all.check(None, Access::Write), Ok(()));

        let some = Scope::new(ids(&["a", "b"]), false);
        assert_eq!(some.check(Some("b"), Access::Write), Ok(()));
        assert_eq!(
            some.check(Some("c"), Access::Read),
            Err(Denial::OtherAccount)
        );
        assert_eq!(
            some.check(Some("a "), Access::Read),
            Err(Denial::OtherAccount)
        );
        assert_eq!(some.check(None, Access::Read), Err(Denial::AllAccounts));

        let ro = Scope::new(None, true);
        assert_eq!(ro.check(Some("a"), Access::Read), Ok(()));
        assert_eq!(ro.check(None, Access::Read), Ok(()));
        assert_eq!(ro.check(Some("a"), Access::Write), Err(Denial::ReadOnly));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn token_matching_is_exact_and_names_the_entry() {
        let (a, b) = (Secret::new("token-a"), Secret::new("token-b"));
        let tokens = [("ops", &a), ("crm", &b)];
        let found = match_token(tokens.iter().map(|(n, s)| (n, *s)), "token-b");
        assert_eq!(found, Some(&"crm"));
        assert_eq!(
            match_token(tokens.iter().map(|(n, s)| (n, *s)), "token-c"),
            None
        );
    }
}
