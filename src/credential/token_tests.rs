use super::*;

const DEFAULT_TTL: Duration = Duration::from_secs(3600);

fn jwt_expiring_in(secs: u64) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    let encode = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.sig",
        encode(r#"{"alg":"HS256"}"#),
        encode(&format!(r#"{{"exp":{exp}}}"#))
    )
}

fn parse(body: &str) -> (AccessToken, LifetimeSource) {
    let token = AccessToken::from_response(body.as_bytes(), "Bearer", DEFAULT_TTL)
        .unwrap()
        .token;
    let source = token.lifetime_source;
    (token, source)
}

#[test]
fn expires_in_as_number_or_string() {
    let (token, source) =
        parse(r#"{"access_token":"abc","expires_in":3599,"token_type":"bearer"}"#);
    assert_eq!(
        (token.lifetime, source),
        (Duration::from_secs(3599), LifetimeSource::ExpiresIn)
    );
    let (token, _) = parse(r#"{"access_token":"abc","expires_in":"120"}"#);
    assert_eq!(token.lifetime, Duration::from_secs(120));
    assert_eq!(token.authorization(), "Bearer abc");
    assert!(token.authorization().is_sensitive());
}

#[test]
fn lifetime_falls_back_to_jwt_exp_then_default() {
    let (token, source) = parse(&format!(r#"{{"access_token":"{}"}}"#, jwt_expiring_in(600)));
    assert_eq!(source, LifetimeSource::JwtExp);
    assert!(
        token.lifetime <= Duration::from_secs(600) && token.lifetime > Duration::from_secs(590)
    );
    let (token, source) = parse(r#"{"access_token":"opaque"}"#);
    assert_eq!(
        (token.lifetime, source),
        (DEFAULT_TTL, LifetimeSource::Default)
    );
}

#[test]
fn absurd_lifetimes_are_clamped() {
    let (token, _) = parse(r#"{"access_token":"a","expires_in":0.001}"#);
    assert_eq!(token.lifetime, MIN_LIFETIME);
    let (token, _) = parse(r#"{"access_token":"a","expires_in":1e15}"#);
    assert_eq!(token.lifetime, MAX_LIFETIME);
    let (token, source) = parse(r#"{"access_token":"a","expires_in":-5}"#);
    assert_eq!(
        (token.lifetime, source),
        (DEFAULT_TTL, LifetimeSource::Default)
    );
}

#[test]
fn refresh_token_is_returned_apart() {
    let issued = AccessToken::from_response(
        br#"{"access_token":"t","refresh_token":"r2"}"#,
        "Bearer",
        DEFAULT_TTL,
    )
    .unwrap();
    assert_eq!(issued.refresh_token.unwrap().expose(), "r2");
    let issued =
        AccessToken::from_response(br#"{"access_token":"t"}"#, "Bearer", DEFAULT_TTL).unwrap();
    assert!(issued.refresh_token.is_none());
}

#[test]
fn extra_fields_are_kept_but_not_the_refresh_token() {
    let (token, _) =
        parse(r#"{"access_token":"t","xref_account_id":"acct-7","n":5,"refresh_token":"r"}"#);
    assert_eq!(token.field("xref_account_id"), Some("acct-7"));
    assert_eq!(token.field("n"), Some("5"));
    assert_eq!(token.field("token"), Some("t"));
    assert_eq!(token.field("refresh_token"), None);
}

#[test]
fn unusable_responses_are_errors() {
    let parse_err = |body: &str| {
        AccessToken::from_response(body.as_bytes(), "Bearer", DEFAULT_TTL).unwrap_err()
    };
    assert!(matches!(parse_err("not json"), TokenResponseError::NotJson));
    assert!(matches!(parse_err("[1]"), TokenResponseError::NotJson));
    assert!(matches!(
        parse_err(r#"{"token_type":"Bearer"}"#),
        TokenResponseError::NoAccessToken
    ));
    assert!(matches!(
        parse_err(r#"{"access_token":""}"#),
        TokenResponseError::NoAccessToken
    ));
    assert!(matches!(
        parse_err(r#"{"access_token":"a\r\nb"}"#),
        TokenResponseError::UnsendableToken
    ));
}

#[test]
fn debug_shows_no_token() {
    let (token, _) = parse(r#"{"access_token":"s3cr3t-token","scope":"x"}"#);
    let printed = format!("{token:?}");
    assert!(!printed.contains("s3cr3t-token"), "{printed}");
}
