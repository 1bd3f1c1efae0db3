use super::*;

fn grant(vendor: Vendor, scope: Option<&str>, family: Option<FamilyId>) -> TokenGrant<'_> {
    TokenGrant {
        vendor,
        client_id: "client-a",
        scope,
        family,
    }
}

#[tokio::test]
async fn jwt_payload_carries_sub_and_exp() {
    let mut registry = TokenRegistry::new().unwrap();
    let token = registry.issue(
        grant(Vendor::Generic, None, None),
        Duration::from_secs(60),
        TokenFormat::Jwt,
    );
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload["sub"], "client-a");
    assert_eq!(
        payload["exp"].as_u64().unwrap() - payload["iat"].as_u64().unwrap(),
        60
    );
    assert_eq!(registry.check(Vendor::Generic, &token, None), Ok(()));
    assert_eq!(
        registry.check(Vendor::CrossRiver, &token, None),
        Err(TokenRejection::OtherVendor)
    );
}

#[tokio::test]
async fn opaque_tokens_are_unique_and_revocable() {
    let mut registry = TokenRegistry::new().unwrap();
    let ttl = Duration::from_secs(60);
    let first = registry.issue(grant(Vendor::Generic, None, None), ttl, TokenFormat::Opaque);
    let second = registry.issue(grant(Vendor::Generic, None, None), ttl, TokenFormat::Opaque);
    assert_ne!(first, second);
    assert!(!first.contains('.'));
    assert_eq!(registry.revoke_all(), 2);
    assert_eq!(
        registry.check(Vendor::Generic, &first, None),
        Err(TokenRejection::Unknown)
    );
}

#[tokio::test]
async fn required_scope_must_be_one_of_the_granted_words() {
    let mut registry = TokenRegistry::new().unwrap();
    let ttl = Duration::from_secs(60);
    let read = Some("payments.read");
    let token = registry.issue(grant(Vendor::CrossRiver, read, None), ttl, TokenFormat::Jwt);
    assert_eq!(registry.check(Vendor::CrossRiver, &token, read), Ok(()));
    assert_eq!(
        registry.check(Vendor::CrossRiver, &token, Some("payments.write")),
        Err(TokenRejection::InsufficientScope)
    );
    assert_eq!(
        registry.check(Vendor::CrossRiver, &token, Some("payments")),
        Err(TokenRejection::InsufficientScope)
    );
}

#[tokio::test]
async fn reusing_a_retired_refresh_token_revokes_the_family() {
    let mut registry = TokenRegistry::new().unwrap();
    let ttl = Duration::from_secs(60);
    let (family, first) =
        registry.open_offline_family(Vendor::Crossbeam, "client-a", "openid offline_access");
    let access = registry.issue(
        grant(Vendor::Crossbeam, None, Some(family)),
        ttl,
        TokenFormat::Jwt,
    );
    let rotation = registry
        .rotate(Vendor::Crossbeam, "client-a", &first)
        .unwrap();
    assert_eq!(rotation.family, family);
    assert_ne!(rotation.refresh_token, first);
    assert_eq!(
        registry
            .rotate(Vendor::Crossbeam, "client-b", &rotation.refresh_token)
            .unwrap_err(),
        RefreshRejection::OtherClient
    );

    assert_eq!(
        registry
            .rotate(Vendor::Crossbeam, "client-a", &first)
            .unwrap_err(),
        RefreshRejection::Reused
    );
    assert_eq!(
        registry.check(Vendor::Crossbeam, &access, None),
        Err(TokenRejection::FamilyRevoked)
    );
    assert_eq!(
        registry
            .rotate(Vendor::Crossbeam, "client-a", &rotation.refresh_token)
            .unwrap_err(),
        RefreshRejection::Revoked
    );
    let online = registry.open_family(Vendor::Crossbeam, "client-a", "openid");
    assert_ne!(online, family);
}

#[tokio::test]
async fn another_vendor_neither_honours_nor_burns_a_refresh_token() {
    let mut registry = TokenRegistry::new().unwrap();
    let (_, first) = registry.open_offline_family(Vendor::Generic, "client-a", "read");
    assert_eq!(
        registry
            .rotate(Vendor::Crossbeam, "client-a", &first)
            .unwrap_err(),
        RefreshRejection::Unknown
    );
    let rotation = registry
        .rotate(Vendor::Generic, "client-a", &first)
        .unwrap();
    assert_eq!(rotation.scope, "read");
}

#[tokio::test]
async fn revoke_names_the_client_of_its_vendor_only() {
    let mut registry = TokenRegistry::new().unwrap();
    let ttl = Duration::from_secs(60);
    let token = registry.issue(grant(Vendor::Xref, None, None), ttl, TokenFormat::Opaque);
    assert_eq!(registry.revoke(Vendor::Generic, &token), None);
    assert_eq!(
        registry.revoke(Vendor::Xref, &token).as_deref(),
        Some("client-a")
    );
    assert_eq!(registry.revoke(Vendor::Xref, &token), None);
}
