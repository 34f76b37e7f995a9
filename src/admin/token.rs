//! The bearer token of mutating admin calls: `raft.admin_token` when the
//! cluster sets one, else `raft.secret` (so a cluster without one works as
//! before, and operators of one that has it need not hold the peer secret).

use tonic::Status;

use crate::config::RaftConfig;
use crate::consensus::peer::constant_time_eq;

/// What a mutating call must present as `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct AdminToken {
    token: String,
    /// `raft.admin_token` (true) or `raft.secret` (false); only the words
    /// of a refusal differ.
    separate: bool,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("separate", &self.separate)
            .finish_non_exhaustive()
    }
}

impl AdminToken {
    /// The raft secret doubles as the admin token.
    pub fn secret(secret: &str) -> AdminToken {
        AdminToken {
            token: secret.to_string(),
            separate: false,
        }
    }

    /// A separate admin token; the raft secret is then refused.
    pub fn separate(token: &str) -> AdminToken {
        AdminToken {
            token: token.to_string(),
            separate: true,
        }
    }

    /// The token a validated `raft:` section asks for; `None` only when
    /// it has no secret at all (a config that failed validation).
    pub fn from_config(raft: &RaftConfig) -> Option<AdminToken> {
        match raft.admin_token() {
            Some(token) => Some(AdminToken::separate(token)),
            None => raft.secret().map(AdminToken::secret),
        }
    }

    /// The token itself, for a node that forwards an admin call to another.
    pub fn bearer(&self) -> &str {
        &self.token
    }

    /// Checks the bearer token a call presented (`None`: no
    /// `authorization` header).
    pub fn check(&self, presented: Option<&str>) -> Result<(), Status> {
        let (setting, flags) = match self.separate {
            true => ("raft.admin_token", "--token, PGKEEL_TOKEN or -c CONFIG"),
            false => ("raft.secret", "--secret, PGKEEL_SECRET or -c CONFIG"),
        };
        match presented {
            Some(t) if constant_time_eq(t.as_bytes(), self.token.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated(format!(
                "wrong token: pass the cluster's {setting} with {flags}"
            ))),
            None => Err(Status::unauthenticated(format!(
                "this call changes the store and needs the cluster's {setting}: pass {flags}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_the_token_unless_a_separate_one_is_set() {
        let by_secret = AdminToken::secret("0123456789abcdef");
        assert!(by_secret.check(Some("0123456789abcdef")).is_ok());
        let wrong = by_secret.check(Some("0123456789abcdeX")).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(
            wrong.message().contains("raft.secret with --secret"),
            "{}",
            wrong.message()
        );
        let none = by_secret.check(None).unwrap_err();
        assert!(
            none.message().contains("needs the cluster's raft.secret"),
            "{}",
            none.message()
        );

        let separate = AdminToken::separate("admin-token-0123456789");
        assert!(separate.check(Some("admin-token-0123456789")).is_ok());
        let secret = separate.check(Some("0123456789abcdef")).unwrap_err();
        assert_eq!(secret.code(), tonic::Code::Unauthenticated);
        assert!(
            secret
                .message()
                .contains("raft.admin_token with --token, PGKEEL_TOKEN"),
            "{}",
            secret.message()
        );
        assert!(
            separate.check(Some("admin-token-012345678")).is_err(),
            "a prefix is not the token"
        );
        assert!(separate
            .check(None)
            .unwrap_err()
            .message()
            .contains("needs the cluster's raft.admin_token"));
        assert!(
            !format!("{separate:?}").contains("admin-token"),
            "Debug leaks the token"
        );
    }
}
