//! API token material: generation, parsing and hashing.
//!
//! A token is `flw_` followed by 32 random bytes in unpadded base64url. Only its SHA-256 hash is
//! ever stored; the clear token is shown once, when it is created.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The prefix every Flowline token starts with.
pub const TOKEN_PREFIX: &str = "flw_";
const TOKEN_BYTES: usize = 32;

/// The SHA-256 hash of a token: what storage keeps and looks tokens up by.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// A clear token, as handed to its owner once.
pub struct ClearToken(String);

impl ClearToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Parses a presented token; `None` when it cannot be a Flowline token.
    pub fn parse(presented: &str) -> Option<Self> {
        let body = presented.strip_prefix(TOKEN_PREFIX)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
        (bytes.len() == TOKEN_BYTES).then(|| Self(presented.to_owned()))
    }

    /// The hash storage keeps.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The clear text, to show once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClearToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClearToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_hash_stably() {
        let token = ClearToken::generate();
        assert!(token.expose().starts_with("flw_"));
        let parsed = ClearToken::parse(token.expose()).expect("a generated token parses");
        assert_eq!(parsed.hash(), token.hash());
        assert_ne!(ClearToken::generate().hash(), token.hash());
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        for bad in [
            "",
            "flw_",
            "flw_short",
            "abc_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "flw_!!!",
        ] {
            assert!(ClearToken::parse(bad).is_none(), "{bad:?} parsed");
        }
    }
}
