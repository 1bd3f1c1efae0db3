//! The admin page's CSRF tokens: `<issued-at seconds>.<HMAC-SHA256 of it>` under a key made at
//! start-up. Stateless, so every page render gets its own token and none is stored; a restart
//! invalidates the pages open before it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How long a rendered page's forms keep working.
const TOKEN_LIFETIME: Duration = Duration::from_secs(2 * 3600);

pub(super) struct CsrfKey {
    key: hmac::Key,
}

impl CsrfKey {
    pub(super) fn generate() -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // The system RNG failing leaves no safe way to protect the forms.
        #[allow(
            clippy::expect_used,
            reason = "no safe fallback for a failing system RNG"
        )]
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system random generator");
        Self { key }
    }

    /// A token for a page rendered now.
    pub(super) fn issue(&self) -> String {
        self.issue_at(now_seconds())
    }

    fn issue_at(&self, seconds: u64) -> String {
        let issued = seconds.to_string();
        let tag = hmac::sign(&self.key, issued.as_bytes());
        format!("{issued}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// True for a token this key issued within [`TOKEN_LIFETIME`].
    pub(super) fn verify(&self, token: &str) -> bool {
        let Some((issued, tag)) = token.split_once('.') else {
            return false;
        };
        let (Ok(seconds), Ok(tag)) = (issued.parse::<u64>(), URL_SAFE_NO_PAD.decode(tag)) else {
            return false;
        };
        let fresh = now_seconds().saturating_sub(seconds) <= TOKEN_LIFETIME.as_secs();
        fresh && hmac::verify(&self.key, issued.as_bytes(), &tag).is_ok()
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_under_their_key_and_while_fresh() {
        let key = CsrfKey::generate();
        assert!(key.verify(&key.issue()));
        assert!(!CsrfKey::generate().verify(&key.issue()));
        let old = key.issue_at(now_seconds() - TOKEN_LIFETIME.as_secs() - 1);
        assert!(!key.verify(&old));
        assert!(!key.verify("123.abc"));
        assert!(!key.verify(""));
        let forged_time = key.issue().replacen(|c: char| c.is_ascii_digit(), "9", 1);
        assert!(!key.verify(&forged_time));
    }
}
