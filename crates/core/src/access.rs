//! Who may do what: the roles a user holds in a workspace, and what a call needs. The rules
//! live here, beside no I/O, so the API, the store and the tests share one meaning.

use serde::{Deserialize, Serialize};

/// A user's role in one workspace, least to most. `Owner` is cluster-wide: every
/// workspace, its members, quotas, users and the audit trail of all of them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything in the workspace.
    Viewer,
    /// Also creates and changes runs, jobs, datasets and models.
    Editor,
    /// Also manages the workspace's members and their tokens.
    Admin,
    /// Everything, everywhere (users, workspaces, quotas).
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Editor, Role::Admin, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What a call needs of its caller, from the route it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    /// Any recognised user token, whatever its workspace role (who am I, my own tokens).
    User,
    /// Reading the acting workspace.
    Read,
    /// Changing the acting workspace's runs, jobs, datasets and models.
    Write,
    /// Managing the acting workspace's members and tokens.
    Admin,
    /// Cluster-wide changes: users, workspaces, quotas.
    Owner,
}

impl Need {
    /// The least role that meets this need (`User` needs none).
    pub fn least_role(self) -> Option<Role> {
        match self {
            Need::User => None,
            Need::Read => Some(Role::Viewer),
            Need::Write => Some(Role::Editor),
            Need::Admin => Some(Role::Admin),
            Need::Owner => Some(Role::Owner),
        }
    }
}

/// Who a call acts as, once its token is recognised and its workspace chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    /// The token's name (a job's is `job:<id>`).
    pub name: String,
    /// The user the token belongs to; `None` for a job's token.
    pub user: Option<String>,
    /// The workspace the call acts on.
    pub workspace: String,
    /// The caller's role there (`None`: no role there, so only [`Need::User`] calls).
    pub role: Option<Role>,
    /// A read-only token: whatever the role, no call that changes something.
    pub read_only: bool,
    /// The token acts only in `workspace`.
    pub narrowed: bool,
    /// When the token stops working (tokens it makes may not outlive it).
    pub expires_at_ms: Option<i64>,
    /// For a job's token: the job's id. Such a token acts only in the job's workspace and
    /// only as `compute`'s job rules allow.
    pub job: Option<String>,
}

impl Principal {
    /// Whether the caller's role meets `need`. A job's token holds no role: the API decides
    /// its calls by the job rules.
    pub fn meets(&self, need: Need) -> bool {
        match need.least_role() {
            None => self.user.is_some(),
            Some(least) => self.role.is_some_and(|r| r >= least),
        }
    }

    pub fn is_owner(&self) -> bool {
        self.role == Some(Role::Owner)
    }

    /// What the audit trail records as the role.
    pub fn role_label(&self) -> &'static str {
        match (self.job.is_some(), self.role) {
            (true, _) => "job",
            (false, Some(r)) => r.as_str(),
            (false, None) => "none",
        }
    }
}

/// A personal token as its holder lists it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    /// Whose it is.
    pub user: Option<String>,
    /// Where it acts when a call names no workspace (and the only one, when narrowed).
    pub workspace: String,
    pub narrowed: bool,
    pub read_only: bool,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// A user as `GET /api/v1/users` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
    pub owner: bool,
    /// Whether a password is set (for the UI's login); never the password.
    pub has_password: bool,
    pub created_at_ms: i64,
    /// Workspace → role.
    pub roles: std::collections::BTreeMap<String, Role>,
}

/// A workspace member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub user: String,
    pub role: Role,
}

/// Longest lifetime a personal token may be given: ten years.
pub const MAX_TOKEN_LIFETIME_S: u64 = 10 * 365 * 24 * 3600;

/// A personal token someone asks for. It acts in the workspace of the call that creates it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// A name to tell it by (1-100 characters).
    pub name: String,
    /// Whose token: the caller's when absent; another user's needs an owner.
    #[serde(default)]
    pub user: Option<String>,
    /// Acts only in this call's workspace, whatever a later call's header says.
    #[serde(default)]
    pub narrowed: bool,
    /// Only reads.
    #[serde(default)]
    pub read_only: bool,
    /// Seconds until it stops working (at most ten years); never when absent.
    #[serde(default)]
    pub expires_in_s: Option<u64>,
}

/// Why a token cannot be granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    Invalid(crate::InvalidField),
    /// The caller asks for more than its own token or role allows.
    Wider(String),
}

impl TokenRequest {
    /// Whether `caller` may have this token made at `now_ms`: never wider than the caller's
    /// own (a read-only token makes only read-only ones, a narrowed one only narrowed ones
    /// to the same workspace, an expiring one only ones that expire no later), and for
    /// another user only when the caller is an owner.
    pub fn check(&self, caller: &Principal, now_ms: i64) -> Result<(), TokenRefusal> {
        let invalid = |field: &str, message: &str| {
            Err(TokenRefusal::Invalid(crate::InvalidField::new(
                field, message,
            )))
        };
        let name_len = self.name.chars().count();
        if name_len == 0 || name_len > 100 || self.name.chars().any(char::is_control) {
            return invalid("name", "1-100 characters, no control characters");
        }
        if self
            .expires_in_s
            .is_some_and(|s| s == 0 || s > MAX_TOKEN_LIFETIME_S)
        {
            return invalid("expires_in_s", "between 1 s and ten years");
        }
        let Some(own) = &caller.user else {
            return Err(TokenRefusal::Wider("a job's token makes no tokens".into()));
        };
        if let Some(user) = &self.user {
            if user != own && !caller.is_owner() {
                return Err(TokenRefusal::Wider(
                    "a token for another user needs an owner".into(),
                ));
            }
        }
        if caller.read_only && !self.read_only {
            return Err(TokenRefusal::Wider(
                "a read-only token makes only read-only tokens".into(),
            ));
        }
        if let Some(ends) = caller.expires_at_ms {
            let asked = self
                .expires_in_s
                .map(|s| now_ms.saturating_add((s as i64).saturating_mul(1000)));
            if asked.is_none_or(|at| at > ends) {
                return Err(TokenRefusal::Wider(
                    "a token that expires makes only tokens that expire no later".into(),
                ));
            }
        }
        if caller.narrowed && !self.narrowed {
            return Err(TokenRefusal::Wider(format!(
                "a token narrowed to `{}` makes only tokens narrowed to it",
                caller.workspace
            )));
        }
        Ok(())
    }
}

/// A workspace or user name: 1–63 of `a-z 0-9 - _ .`, starting with a letter or digit, so
/// it is safe in a header, a path segment and a file name.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Option<Role>, user: bool) -> Principal {
        Principal {
            token_id: "t".into(),
            name: "n".into(),
            user: user.then(|| "u".to_string()),
            workspace: "w".into(),
            role,
            read_only: false,
            narrowed: false,
            expires_at_ms: None,
            job: (!user).then(|| "j".to_string()),
        }
    }

    #[test]
    fn roles_meet_the_needs_at_or_below_them() {
        let viewer = caller(Some(Role::Viewer), true);
        assert!(viewer.meets(Need::User) && viewer.meets(Need::Read));
        assert!(!viewer.meets(Need::Write));
        let admin = caller(Some(Role::Admin), true);
        assert!(admin.meets(Need::Admin) && !admin.meets(Need::Owner));
        assert!(caller(Some(Role::Owner), true).meets(Need::Owner));
        let stranger = caller(None, true);
        assert!(stranger.meets(Need::User) && !stranger.meets(Need::Read));
        // A job's token has no user and no role.
        let job = caller(None, false);
        assert!(!job.meets(Need::User) && !job.meets(Need::Read));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn tokens_are_never_wider_than_their_maker() {
        let ask = |f: fn(&mut TokenRequest)| {
            let mut r = TokenRequest {
                name: "ci".into(),
                ..Default::default()
            };
            f(&mut r);
            r
        };
        let mut me = caller(Some(Role::Editor), true);
        assert_eq!(ask(|_| {}).check(&me, 0), Ok(()));
        assert!(
            matches!(ask(|r| r.name.clear()).check(&me, 0), Err(TokenRefusal::Invalid(f)) if f.field == "name")
        );
        assert!(
            matches!(ask(|r| r.expires_in_s = Some(0)).check(&me, 0), Err(TokenRefusal::Invalid(f)) if f.field == "expires_in_s")
        );
        assert!(matches!(
            ask(|r| r.user = Some("bob".into())).check(&me, 0),
            Err(TokenRefusal::Wider(_))
        ));
        assert_eq!(ask(|r| r.user = Some("u".into())).check(&me, 0), Ok(()));
        me.read_only = true;
        assert!(matches!(
            ask(|_| {}).check(&me, 0),
            Err(TokenRefusal::Wider(_))
        ));
        assert_eq!(ask(|r| r.read_only = true).check(&me, 0), Ok(()));
        me.read_only = false;
        me.narrowed = true;
        assert!(matches!(
            ask(|_| {}).check(&me, 0),
            Err(TokenRefusal::Wider(_))
        ));
        assert_eq!(ask(|r| r.narrowed = true).check(&me, 0), Ok(()));
        me.narrowed = false;
        me.expires_at_ms = Some(10_000);
        assert!(matches!(
            ask(|_| {}).check(&me, 0),
            Err(TokenRefusal::Wider(_))
        ));
        assert!(matches!(
            ask(|r| r.expires_in_s = Some(11)).check(&me, 0),
            Err(TokenRefusal::Wider(_))
        ));
        assert_eq!(ask(|r| r.expires_in_s = Some(10)).check(&me, 0), Ok(()));
        let owner = caller(Some(Role::Owner), true);
        assert_eq!(
            ask(|r| r.user = Some("bob".into())).check(&owner, 0),
            Ok(())
        );
        assert!(matches!(
            ask(|_| {}).check(&caller(None, false), 0),
            Err(TokenRefusal::Wider(_))
        ));
    }

    #[test]
    fn names_are_safe_everywhere() {
        for ok in ["default", "ml-team", "a", "t_1.b"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "A", "a/b", "a b", "..", "é", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
