//! Who is asking: the authenticated subject and its roles. Adapters extract an
//! [`Actor`] from the request (a bearer token, or the local operator when
//! authentication is off); the services decide what it may do.

use crate::error::{DomainError, ErrorKind};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What an actor is allowed to do, coarsely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Converses: creates, reads and messages its own sessions only.
    Client,
    /// Manages scripts, and converses like a client.
    Editor,
    /// Everything, including every user's sessions and the admin operations.
    Admin,
}

impl Role {
    /// Every role, in order of increasing power.
    pub const ALL: [Role; 3] = [Role::Client, Role::Editor, Role::Admin];

    /// The role's name as tokens and configuration spell it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Editor => "editor",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not `client`, `editor` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}` (expected client, editor or admin)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client" => Ok(Self::Client),
            "editor" => Ok(Self::Editor),
            "admin" => Ok(Self::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// The subject of a request and its roles.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor {
    subject: String,
    /// Sorted and without duplicates.
    roles: Vec<Role>,
}

/// Subject of [`Actor::local_operator`].
pub const LOCAL_OPERATOR_SUBJECT: &str = "local-operator";

impl Actor {
    /// An actor with the given subject (a user id for clients) and roles.
    #[must_use]
    pub fn new(subject: impl Into<String>, roles: impl IntoIterator<Item = Role>) -> Self {
        let mut roles: Vec<Role> = roles.into_iter().collect();
        roles.sort_unstable();
        roles.dedup();
        Self {
            subject: subject.into(),
            roles,
        }
    }

    /// A client acting for the user `subject`.
    #[must_use]
    pub fn client(subject: impl Into<String>) -> Self {
        Self::new(subject, [Role::Client])
    }

    /// A script editor.
    #[must_use]
    pub fn editor(subject: impl Into<String>) -> Self {
        Self::new(subject, [Role::Editor])
    }

    /// An administrator.
    #[must_use]
    pub fn admin(subject: impl Into<String>) -> Self {
        Self::new(subject, [Role::Admin])
    }

    /// The actor of every request when authentication is off (local use,
    /// tests, embedding): it holds every role.
    #[must_use]
    pub fn local_operator() -> Self {
        Self::new(LOCAL_OPERATOR_SUBJECT, Role::ALL)
    }

    /// Who this is: a user id for clients.
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The actor's roles, sorted.
    #[must_use]
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Whether the actor holds `role`.
    #[must_use]
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the actor is an administrator.
    #[must_use]
    pub fn is_admin(&self) -> bool {
        self.has_role(Role::Admin)
    }

    /// Whether the actor may create, change or delete scripts.
    #[must_use]
    pub fn may_manage_scripts(&self) -> bool {
        self.is_admin() || self.has_role(Role::Editor)
    }

    /// Whether the actor may see and act on the sessions of `user_id`:
    /// administrators reach everyone's, anyone else only their own.
    #[must_use]
    pub fn may_access_user(&self, user_id: &str) -> bool {
        self.is_admin() || self.subject == user_id
    }

    /// Fails with `FORBIDDEN` unless the actor is an administrator.
    pub fn require_admin(&self) -> Result<(), DomainError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(forbidden("this operation needs the admin role"))
        }
    }

    /// Fails with `FORBIDDEN` unless the actor may manage scripts.
    pub fn require_script_manager(&self) -> Result<(), DomainError> {
        if self.may_manage_scripts() {
            Ok(())
        } else {
            Err(forbidden("managing scripts needs the editor or admin role"))
        }
    }
}

fn forbidden(reason: &str) -> DomainError {
    DomainError::new(ErrorKind::Forbidden(reason.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn roles_parse_and_print_in_token_spelling() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!("root".parse::<Role>(), Err(UnknownRole("root".to_owned())));
    }

    #[test]
    fn clients_reach_only_their_own_user() {
        let alice = Actor::client("alice");
        assert!(alice.may_access_user("alice"));
        assert!(!alice.may_access_user("bob"));
        assert!(!alice.may_manage_scripts());
        assert_eq!(
            alice.require_admin().map_err(|e| e.code()),
            Err(ErrorCode::Forbidden)
        );
        assert_eq!(
            alice.require_script_manager().map_err(|e| e.code()),
            Err(ErrorCode::Forbidden)
        );
    }

    #[test]
    fn editors_manage_scripts_but_not_other_users() {
        let editor = Actor::editor("ed");
        assert!(editor.require_script_manager().is_ok());
        assert!(editor.require_admin().is_err());
        assert!(!editor.may_access_user("alice"));
        assert!(editor.may_access_user("ed"));
    }

    #[test]
    fn admins_and_the_local_operator_reach_everything() {
        for actor in [Actor::admin("root"), Actor::local_operator()] {
            assert!(actor.may_access_user("anyone"));
            assert!(actor.require_admin().is_ok());
            assert!(actor.require_script_manager().is_ok());
        }
    }

    #[test]
    fn roles_are_kept_sorted_without_duplicates() {
        let actor = Actor::new("x", [Role::Admin, Role::Client, Role::Admin]);
        assert_eq!(actor.roles(), &[Role::Client, Role::Admin]);
    }
}
