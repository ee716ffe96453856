//! Member roles, ordered from least to most powerful.

use crate::string_enum::string_enum;

string_enum! {
    /// What a member (and every token of that member) may do in its workspace.
    Role, "role" {
        /// Reads everything, changes nothing.
        Viewer = "viewer",
        /// Edits flows, actions and contacts, and runs flows.
        Editor = "editor",
        /// Also manages secrets, tokens and restricted action types.
        Admin = "admin",
        /// Also manages members.
        Owner = "owner",
    }
}

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Editor => 1,
            Role::Admin => 2,
            Role::Owner => 3,
        }
    }

    /// Whether this role is strictly more powerful than `other`.
    pub fn outranks(self, other: Role) -> bool {
        self.rank() > other.rank()
    }

    /// Whether this role includes everything `required` may do.
    pub fn allows(self, required: Role) -> bool {
        self.rank() >= required.rank()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse_by_name() {
        assert!(Role::Owner.allows(Role::Admin));
        assert!(Role::Editor.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Editor));
        assert!(!Role::Admin.allows(Role::Owner));
        assert_eq!("admin".parse::<Role>().unwrap(), Role::Admin);
        assert!("root".parse::<Role>().is_err());
    }
}
