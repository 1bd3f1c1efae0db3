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

    /// True when two secrets hold the same text. SHA-256 digests are compared without an early
    /// exit, so neither the position of a difference nor the lengths show in the timing.
    pub fn same_as(&self, other: &Secret) -> bool {
        same_text(self.expose(), other.expose())
    }
}

/// Compares a presented value (a caller's or operator's token) with a secret in constant time.
pub fn same_text(a: &str, b: &str) -> bool {
    let digest =
        |text: &str| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let (a, b) = (digest(a), digest(b));
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The first 16 bytes of the SHA-256 of `material`, in hex: a name for settings that may hold
/// secrets (fingerprints, lineages), safe to store and compare.
pub fn digest_name(material: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, material);
    hex(&digest.as_ref()[..16])
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
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
