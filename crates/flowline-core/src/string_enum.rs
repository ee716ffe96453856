//! `string_enum!`: a closed set of snake_case names, stored as text behind a CHECK constraint.

/// Declares an enum whose variants have stable snake_case names used on the wire and in the
/// database, with `as_str`, `ALL`, `index`, `Display` and `FromStr`.
macro_rules! string_enum {
    (
        $(#[$doc:meta])*
        $name:ident, $what:literal {
            $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Its position in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }

            /// The stored and wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::string_enum::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::string_enum::UnknownName {
                        what: $what,
                        given: s.to_owned(),
                        expected: Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                    })
            }
        }
    };
}

pub(crate) use string_enum;

/// A string that names no variant of a `string_enum!`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {what} `{given}`: expected one of {expected}")]
pub struct UnknownName {
    /// What kind of name was expected.
    pub what: &'static str,
    /// The name given.
    pub given: String,
    /// The names accepted.
    pub expected: String,
}
