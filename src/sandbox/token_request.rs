//! Reading a token request, whatever shape it takes: a form or JSON body, and the client
//! authenticated by `Authorization: Basic` or by `client_secret` in the body. Which shapes and
//! grants a vendor accepts is the vendor's decision (`cross_river.rs`, `crossbeam.rs`, ...).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::{AUTHORIZATION, CONTENT_TYPE};

use super::ClientAuth;
use super::token_endpoint::OAuthError;
use crate::secret::Secret;

/// Body parameters that carry a credential, kept apart from `params` as `client_secret` is.
const SECRET_PARAMS: [&str; 3] = ["code", "code_verifier", "refresh_token"];

/// How the token request body was encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyFormat {
    Form,
    Json,
}

/// A parsed token request. `client_secret` and the [`SECRET_PARAMS`] are kept apart from
/// `params` so that recording the params can never record a credential.
#[derive(Debug)]
pub(super) struct TokenRequest {
    pub body_format: BodyFormat,
    /// `None` when no secret came with the request at all.
    pub client_auth: Option<ClientAuth>,
    /// From the Basic header when there is one, else the body's `client_id`.
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// Every body parameter but the secret ones: grant_type, scope, client_id, audience, ...
    pub params: BTreeMap<String, String>,
    /// `code`, `code_verifier`, `refresh_token` when sent.
    pub secret_params: BTreeMap<String, Secret>,
}

// === impl TokenRequest ===

impl TokenRequest {
    /// Reads the headers and whole body of a token request.
    pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        let basic = basic_credentials(headers)?;
        let (body_format, mut params) = body_params(headers, body)?;
        let body_secret = params.remove("client_secret").map(Secret::new);
        let secret_params = SECRET_PARAMS
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), Secret::new(params.remove(*name)?))))
            .collect();

        let (client_auth, client_id, client_secret) = match (basic, body_secret) {
            // RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
            (Some(_), Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "client authenticated both by Basic header and body",
                ));
            }
            (Some((id, secret)), None) => (Some(ClientAuth::Basic), Some(id), Some(secret)),
            (None, Some(secret)) => {
                let shape = match body_format {
                    BodyFormat::Form => ClientAuth::Post,
                    BodyFormat::Json => ClientAuth::Json,
                };
                (Some(shape), params.get("client_id").cloned(), Some(secret))
            }
            (None, None) => (None, params.get("client_id").cloned(), None),
        };
        Ok(Self {
            body_format,
            client_auth,
            client_id,
            client_secret,
            params,
            secret_params,
        })
    }

    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub(super) fn scope(&self) -> Option<&str> {
        self.param("scope")
    }

    /// The plain text of `code`, `code_verifier` or `refresh_token`, for checking it.
    pub(super) fn secret_param(&self, name: &str) -> Option<&str> {
        self.secret_params.get(name).map(Secret::expose)
    }
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))`, RFC 6749 §2.3.1: both parts
/// are form-urlencoded before base64, so both are decoded here. Other schemes are ignored.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, Secret)>, OAuthError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || OAuthError::invalid_basic_client("malformed Basic credentials");
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let id = form_decode(id).ok_or_else(malformed)?;
    let secret = form_decode(secret).ok_or_else(malformed)?;
    Ok(Some((id, Secret::new(secret))))
}

/// The body as name -> value, from a form or a JSON object (non-string JSON values as JSON text).
fn body_params(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(BodyFormat, BTreeMap<String, String>), OAuthError> {
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let mut params = BTreeMap::new();
    match media_type.as_str() {
        "application/x-www-form-urlencoded" => {
            for (name, value) in form_urlencoded::parse(body) {
                // RFC 6749 §3.2: parameters MUST NOT be included more than once.
                if params
                    .insert(name.into_owned(), value.into_owned())
                    .is_some()
                {
                    return Err(OAuthError::invalid_request("repeated parameter"));
                }
            }
            Ok((BodyFormat::Form, params))
        }
        "application/json" => {
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(body)
                    .map_err(|_| OAuthError::invalid_request("body is not a JSON object"))?;
            for (name, value) in object {
                let text = match value {
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                };
                params.insert(name, text);
            }
            Ok((BodyFormat::Json, params))
        }
        _ => Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded or JSON",
        )),
    }
}

/// Decodes one `application/x-www-form-urlencoded` value: `+` is a space, `%XX` a byte.
fn form_decode(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut input = encoded.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let high = char::from(input.next()?).to_digit(16)?;
                let low = char::from(input.next()?).to_digit(16)?;
                bytes.push(u8::try_from(high * 16 + low).ok()?);
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decode_handles_plus_and_percent() {
        assert_eq!(form_decode("a+b%3A%2Fc").as_deref(), Some("a b:/c"));
        assert_eq!(form_decode("%C3%BC").as_deref(), Some("ü"));
        assert_eq!(form_decode("%4"), None);
    }

    #[test]
    fn secret_is_never_among_params() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let request = TokenRequest::parse(
            &headers,
            b"grant_type=refresh_token&client_id=a&client_secret=s&audience=x&refresh_token=r",
        )
        .unwrap();
        assert!(!request.params.contains_key("refresh_token"));
        assert_eq!(request.secret_param("refresh_token"), Some("r"));
        assert_eq!(request.client_auth, Some(ClientAuth::Post));
        assert_eq!(request.client_id.as_deref(), Some("a"));
        assert!(!request.params.contains_key("client_secret"));
        assert_eq!(request.param("audience"), Some("x"));
    }
}
