//! Authorization codes between a vendor's authorize page and its token endpoint (Crossbeam,
//! Xref): what the user approved, kept until the code is presented once. Single use (RFC 6749
//! §4.1.2), ten minutes at most, and bound to the client, the redirect URI and a PKCE challenge.

use std::collections::HashMap;
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::time::Instant;

use super::Vendor;

/// RFC 6749 §4.1.2 recommends at most ten minutes.
const CODE_LIFETIME: Duration = Duration::from_secs(600);

/// What the user approved, remembered under the code.
#[derive(Clone, Debug)]
pub(super) struct ApprovedCode {
    pub vendor: Vendor,
    pub client_id: String,
    /// The token request must repeat it exactly (Crossbeam); Xref has none.
    pub redirect_uri: Option<String>,
    /// An S256 challenge: `base64url(sha256(code_verifier))`.
    pub code_challenge: Option<String>,
    pub scope: Option<String>,
}

/// What the token request presented along with the code.
#[derive(Clone, Copy, Debug)]
pub(super) struct CodeExchange<'a> {
    pub vendor: Vendor,
    pub client_id: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
}

/// Why a code was refused: all are `invalid_grant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CodeRejection {
    /// Never issued, already used or expired.
    Unknown,
    OtherClient,
    RedirectMismatch,
    VerifierMissing,
    VerifierWrong,
    VerifierUnexpected,
}

/// Codes issued and not yet presented.
#[derive(Debug, Default)]
pub(super) struct CodeRegistry {
    pending: HashMap<String, (ApprovedCode, Instant)>,
}

// === impl CodeRejection ===

impl CodeRejection {
    pub(super) fn description(self) -> &'static str {
        match self {
            CodeRejection::Unknown => "authorization code unknown, used or expired",
            CodeRejection::OtherClient => "authorization code issued to another client",
            CodeRejection::RedirectMismatch => "redirect_uri differs from the authorize request",
            CodeRejection::VerifierMissing => "code_verifier missing",
            CodeRejection::VerifierWrong => "code_verifier does not match the code_challenge",
            CodeRejection::VerifierUnexpected => "code_verifier sent without a code_challenge",
        }
    }
}

// === impl CodeRegistry ===

impl CodeRegistry {
    pub(super) fn insert(&mut self, code: String, approved: ApprovedCode) {
        let now = Instant::now();
        self.pending.retain(|_, (_, expires_at)| *expires_at > now);
        self.pending.insert(code, (approved, now + CODE_LIFETIME));
    }

    /// Consumes `code` whatever the outcome: a code is presented once, right or wrong.
    pub(super) fn redeem(
        &mut self,
        code: &str,
        exchange: CodeExchange<'_>,
    ) -> Result<ApprovedCode, CodeRejection> {
        let (approved, expires_at) = self.pending.remove(code).ok_or(CodeRejection::Unknown)?;
        if Instant::now() >= expires_at || approved.vendor != exchange.vendor {
            return Err(CodeRejection::Unknown);
        }
        if approved.client_id != exchange.client_id {
            return Err(CodeRejection::OtherClient);
        }
        if approved.redirect_uri.is_some()
            && approved.redirect_uri.as_deref() != exchange.redirect_uri
        {
            return Err(CodeRejection::RedirectMismatch);
        }
        match (&approved.code_challenge, exchange.code_verifier) {
            (None, None) => {}
            (None, Some(_)) => return Err(CodeRejection::VerifierUnexpected),
            (Some(_), None) => return Err(CodeRejection::VerifierMissing),
            (Some(challenge), Some(verifier)) => {
                if s256_challenge(verifier) != *challenge {
                    return Err(CodeRejection::VerifierWrong);
                }
            }
        }
        Ok(approved)
    }
}

/// RFC 7636 §4.2: `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`.
pub(super) fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref())
}

/// RFC 7636 §4.1/§4.2: 43 to 128 characters of `[A-Za-z0-9-._~]`.
pub(super) fn is_pkce_text(text: &str) -> bool {
    (43..=128).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(is_pkce_text("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!is_pkce_text("short"));
    }
}
