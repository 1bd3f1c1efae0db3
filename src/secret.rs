//! Secrets as a type: a value that can be handed around but never printed.
//!
//! `Secret` has a redacting `Debug`, no `Display` and no `Serialize`; the plain text is reachable
//! only through [`Secret::expose`], at the places that build a header or a token request.

use secrecy::{ExposeSecret, SecretString};

/// A credential (client secret, token, personal access token) that must never be logged.
#[derive(Clone)]
pub struct Secret(SecretString);

// === impl Secret ===

impl Secret {
    /// Wraps a plain value; the caller's copy should be dropped right after.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The plain text. Call this only where the value is put on the wire.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// True when two secrets hold the same text, compared without an early exit.
    pub fn same_as(&self, other: &Secret) -> bool {
        let (a, b) = (self.expose().as_bytes(), other.expose().as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn same_as_compares_whole_values() {
        assert!(Secret::new("abc").same_as(&Secret::new("abc")));
        assert!(!Secret::new("abc").same_as(&Secret::new("abd")));
        assert!(!Secret::new("abc").same_as(&Secret::new("abcd")));
    }
}
