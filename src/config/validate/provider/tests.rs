use super::*;

#[test]
fn token_url_needs_https_unless_loopback() {
    assert!(parse_endpoint_url("https://auth.example.com/token").is_ok());
    assert!(parse_endpoint_url("http://127.0.0.1:8081/token").is_ok());
    assert!(parse_endpoint_url("http://127.8.9.10/token").is_ok());
    assert!(parse_endpoint_url("http://[::1]:8081/token").is_ok());
    assert!(parse_endpoint_url("http://localhost:8081/token").is_ok());
    assert!(parse_endpoint_url("http://auth.example.com/token").is_err());
    assert!(parse_endpoint_url("http://10.0.0.1/token").is_err());
    assert!(parse_endpoint_url("ftp://auth.example.com/token").is_err());
    assert!(parse_endpoint_url("https://id:pw@auth.example.com/token").is_err());
    assert!(parse_endpoint_url("https://auth.example.com/token#x").is_err());
    assert!(parse_endpoint_url("auth.example.com/token").is_err());
}

#[test]
fn scheme_is_one_word() {
    assert_eq!(parse_scheme("Token"), Ok("Token".into()));
    assert!(parse_scheme("Bearer token").is_err());
    assert!(parse_scheme("").is_err());
    assert!(parse_scheme("a:b").is_err());
}

#[test]
fn test_path_is_a_path() {
    assert_eq!(
        parse_test_path("/v0.1/users/me"),
        Ok("/v0.1/users/me".into())
    );
    assert!(parse_test_path("v0.1/users/me").is_err());
    assert!(parse_test_path("/a b").is_err());
}

#[test]
fn cultureamp_scopes_name_a_target_entity() {
    let uuid = "8ed17dce-9eca-4383-a9e1-54f82c362b6d";
    for good in [
        format!("target-entity:{uuid}:employees-read"),
        format!("target-entity:{uuid}:employees-read,performance-evaluations-read"),
    ] {
        assert_eq!(check_target_entity_scope(&good), Ok(()), "{good}");
    }
    for bad in [
        "employees-read".to_string(),
        format!("target-entity:{uuid}"),
        format!("target-entity:{uuid}:"),
        format!("target-entity:{uuid}:a,,b"),
        "target-entity:8ed17dce9eca4383a9e154f82c362b6d:employees-read".to_string(),
        "target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6z:employees-read".to_string(),
        format!("entity:{uuid}:employees-read"),
    ] {
        assert!(check_target_entity_scope(&bad).is_err(), "{bad}");
    }
}

#[test]
fn every_preset_passes_its_own_checks() {
    for name in PRESET_NAMES {
        let preset = presets::find(name).unwrap();
        // authorization_code is refused with a message until connected accounts exist.
        let grant_ok = parse_grant(preset.grant).is_ok() || preset.grant == "authorization_code";
        assert!(grant_ok, "{name}");
        for url in [preset.token_url, preset.revoke_url].into_iter().flatten() {
            assert!(parse_endpoint_url(url).is_ok(), "{name}");
        }
        if let Some(client_auth) = preset.client_auth {
            assert!(parse_client_auth(client_auth).is_ok(), "{name}");
        }
        if let Some(ttl) = preset.default_ttl {
            assert!(parse_duration(ttl).is_ok(), "{name}");
        }
        if let Some(path) = preset.test_path {
            assert!(parse_test_path(path).is_ok(), "{name}");
        }
        assert!(parse_scheme(preset.scheme).is_ok(), "{name}");
        assert!(
            preset.scopes.iter().all(|s| check_scope(s).is_ok()),
            "{name}"
        );
        assert!(
            preset
                .extra_params
                .iter()
                .all(|(k, _)| !RESERVED_PARAMS.contains(k)),
            "{name}"
        );
    }
}
