//! The file store against real files: records survive a restart, nothing readable lands on disk,
//! and a wrong key, an edited, truncated or busy file is refused without being changed.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authrelay::secret::Secret;
use authrelay::store::{
    self, AccountInfo, CredentialKey, CredentialRecord, Rejection, StoreConfig, StoreError,
    StoredToken, TokenStore,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use redb::{ReadableTable, TableDefinition};

const ACCESS_TOKEN: &str = "access-PLAINTEXT-5f1c9a";
const REFRESH_TOKEN: &str = "refresh-PLAINTEXT-77e0b2";
const FIELD_SECRET: &str = "idtoken-PLAINTEXT-0c3d4e";

/// The table the file store writes (format knowledge the tamper tests need).
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

fn key(provider: &str, account: Option<&str>) -> CredentialKey {
    CredentialKey {
        provider: provider.to_owned(),
        account: account.map(str::to_owned),
        fingerprint: "9f86d081884c7d65".to_owned(),
    }
}

fn full_record() -> CredentialRecord {
    CredentialRecord {
        access_token: Some(StoredToken {
            value: Secret::new(ACCESS_TOKEN),
            expires_at: UNIX_EPOCH + Duration::new(1_900_000_000, 123_456_789),
            lifetime: Duration::from_secs(3600),
            fields: BTreeMap::from([
                ("id_token".to_owned(), FIELD_SECRET.to_owned()),
                ("scope".to_owned(), "read write".to_owned()),
            ]),
        }),
        refresh_token: Some(Secret::new(REFRESH_TOKEN)),
        rejected: Some(Rejection {
            status: 401,
            oauth_error: Some("invalid_client".to_owned()),
            at: UNIX_EPOCH + Duration::new(1_800_000_000, 42),
        }),
        unconfirmed_attempts: 1,
        lineage: Some("chain-1".to_owned()),
        account: Some(AccountInfo {
            connected_at: UNIX_EPOCH + Duration::from_secs(1_850_000_000),
            scopes: vec!["openid".to_owned(), "offline_access".to_owned()],
            fields: BTreeMap::from([("xref_account_id".to_owned(), "acct-7".to_owned())]),
            reauthorization_required: true,
            last_error: Some("invalid_grant".to_owned()),
        }),
    }
}

fn rejected() -> CredentialRecord {
    CredentialRecord {
        rejected: Some(Rejection {
            status: 400,
            oauth_error: None,
            at: SystemTime::now(),
        }),
        ..CredentialRecord::default()
    }
}

fn config_with_key(dir: &Path, key_bytes: [u8; 32]) -> StoreConfig {
    StoreConfig::File {
        path: dir.to_owned(),
        key: Some(Secret::new(STANDARD.encode(key_bytes))),
    }
}

fn config_with_key_file(dir: &Path) -> StoreConfig {
    StoreConfig::File {
        path: dir.to_owned(),
        key: None,
    }
}

async fn open_err(config: &StoreConfig) -> StoreError {
    match store::open(config).await {
        Ok(_) => panic!("open should have failed"),
        Err(err) => err,
    }
}

/// Every file in `dir` with the SHA-256 of its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let bytes = std::fs::read(entry.path()).unwrap();
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
            (
                entry.file_name().to_string_lossy().into_owned(),
                digest.as_ref().to_vec(),
            )
        })
        .collect()
}

async fn store_with_one_record(config: &StoreConfig) {
    let store = store::open(config).await.unwrap();
    store
        .save(&key("cross-river", None), &full_record())
        .await
        .unwrap();
}

/// Rewrites the database directly with redb, as an attacker or a careless tool would.
fn edit_records(dir: &Path, edit: impl FnOnce(&mut redb::Table<&str, &[u8]>)) {
    let db = redb::Database::open(dir.join("tokens.redb")).unwrap();
    let write = db.begin_write().unwrap();
    {
        let mut table = write.open_table(RECORDS).unwrap();
        edit(&mut table);
    }
    write.commit().unwrap();
}

fn credential_names(table: &redb::Table<&str, &[u8]>) -> Vec<String> {
    table
        .iter()
        .unwrap()
        .map(|entry| entry.unwrap().0.value().to_owned())
        .filter(|name| name.starts_with("cred/"))
        .collect()
}

#[tokio::test]
async fn records_survive_a_restart_with_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_key(dir.path(), [7; 32]);
    let account_key = key("cultureamp", Some("acme@example.com"));
    {
        let store = store::open(&config).await.unwrap();
        store
            .save(&key("cross-river", None), &full_record())
            .await
            .unwrap();
        store
            .save(&account_key, &CredentialRecord::default())
            .await
            .unwrap();
    }

    let store = store::open(&config).await.unwrap();
    let loaded = store
        .load(&key("cross-river", None))
        .await
        .unwrap()
        .unwrap();
    let expected = full_record();
    let (token, expected_token) = (loaded.access_token.unwrap(), expected.access_token.unwrap());
    assert_eq!(token.value.expose(), ACCESS_TOKEN);
    assert_eq!(token.expires_at, expected_token.expires_at);
    assert_eq!(token.lifetime, expected_token.lifetime);
    assert_eq!(token.fields, expected_token.fields);
    assert_eq!(loaded.refresh_token.unwrap().expose(), REFRESH_TOKEN);
    assert_eq!(loaded.rejected, expected.rejected);
    assert_eq!(loaded.account, expected.account);

    let empty = store.load(&account_key).await.unwrap().unwrap();
    assert!(empty.access_token.is_none() && empty.refresh_token.is_none());
    assert!(store.load(&key("xref", None)).await.unwrap().is_none());
    assert_eq!(store.list().await.unwrap().len(), 2);

    assert!(store.delete(&account_key).await.unwrap());
    assert!(!store.delete(&account_key).await.unwrap());
    assert!(store.load(&account_key).await.unwrap().is_none());
    assert_eq!(store.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn no_file_holds_a_secret_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_key_file(dir.path());
    store_with_one_record(&config).await;

    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 2, "tokens.redb and store.key");
    for entry in files {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for secret in [ACCESS_TOKEN, REFRESH_TOKEN, FIELD_SECRET, "read write"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found on disk"
            );
        }
    }
}

#[tokio::test]
async fn debug_output_redacts_tokens() {
    let printed = format!("{:?}", full_record());
    assert!(!printed.contains(ACCESS_TOKEN) && !printed.contains(REFRESH_TOKEN));
}

#[tokio::test]
async fn wrong_key_is_refused_and_leaves_the_file_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    store_with_one_record(&config_with_key(dir.path(), [7; 32])).await;
    let before = snapshot(dir.path());

    let message = open_err(&config_with_key(dir.path(), [8; 32]))
        .await
        .to_string();

    let db_path = dir.path().join("tokens.redb");
    assert!(
        message.contains(&db_path.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("written with a different key"),
        "{message}"
    );
    assert_eq!(snapshot(dir.path()), before);
    // The right key still opens it.
    store::open(&config_with_key(dir.path(), [7; 32]))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_malformed_configured_key_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    for bad_key in ["not base64 at all!", "c2hvcnQta2V5"] {
        let config = StoreConfig::File {
            path: dir.path().to_owned(),
            key: Some(Secret::new(bad_key)),
        };
        let message = open_err(&config).await.to_string();
        assert!(message.contains("exactly 32 bytes"), "{message}");
        assert!(!message.contains(bad_key), "{message}");
    }
}

#[tokio::test]
async fn an_edited_value_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_key(dir.path(), [7; 32]);
    store_with_one_record(&config).await;
    edit_records(dir.path(), |table| {
        let name = credential_names(table).remove(0);
        let mut sealed = table.get(name.as_str()).unwrap().unwrap().value().to_vec();
        let last = sealed.len() - 1;
        sealed[last] ^= 0x01;
        table.insert(name.as_str(), sealed.as_slice()).unwrap();
    });
    let before = snapshot(dir.path());

    let message = open_err(&config).await.to_string();

    assert!(
        message.contains("wrong key, or the file was modified"),
        "{message}"
    );
    assert!(message.contains("tokens.redb"), "{message}");
    assert_eq!(snapshot(dir.path()), before);
}

#[tokio::test]
async fn a_record_moved_under_another_name_fails_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_key(dir.path(), [7; 32]);
    store_with_one_record(&config).await;
    edit_records(dir.path(), |table| {
        let name = credential_names(table).remove(0);
        let sealed = table.get(name.as_str()).unwrap().unwrap().value().to_vec();
        let moved_name = name.replace("cross-river", "xref");
        table
            .insert(moved_name.as_str(), sealed.as_slice())
            .unwrap();
    });

    let message = open_err(&config).await.to_string();

    assert!(
        message.contains("wrong key, or the file was modified"),
        "{message}"
    );
}

#[tokio::test]
async fn a_truncated_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_key(dir.path(), [7; 32]);
    store_with_one_record(&config).await;
    let db_path = dir.path().join("tokens.redb");
    let full_len = std::fs::metadata(&db_path).unwrap().len();

    for truncated_len in [full_len / 2, 100, 3] {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&db_path)
            .unwrap();
        file.set_len(truncated_len).unwrap();
        drop(file);
        let before = snapshot(dir.path());

        let message = open_err(&config).await.to_string();

        assert!(
            message.contains(&db_path.display().to_string()),
            "{message}"
        );
        assert_eq!(
            snapshot(dir.path()),
            before,
            "after truncating to {truncated_len}"
        );
    }
}

#[tokio::test]
async fn a_second_open_of_one_directory_is_refused_as_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_key_file(dir.path());
    let first = store::open(&config).await.unwrap();
    first
        .save(&key("cross-river", None), &rejected())
        .await
        .unwrap();

    let message = open_err(&config).await.to_string();

    assert_eq!(
        message,
        format!(
            "store {} is in use by another authrelay process",
            dir.path().display()
        )
    );
    // The first handle is unaffected.
    assert!(
        first
            .load(&key("cross-river", None))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_generated_key_file_is_private_and_reused() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("authrelay-data");
    let config = config_with_key_file(&dir);
    store_with_one_record(&config).await;

    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let key_path = dir.join("store.key");
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key_text = std::fs::read_to_string(&key_path).unwrap();
    assert_eq!(STANDARD.decode(key_text.trim()).unwrap().len(), 32);

    let store = store::open(&config).await.unwrap();
    assert!(
        store
            .load(&key("cross-river", None))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), key_text);
}

#[tokio::test]
async fn a_missing_key_file_next_to_data_is_refused_not_regenerated() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_key_file(dir.path());
    store_with_one_record(&config).await;
    std::fs::remove_file(dir.path().join("store.key")).unwrap();

    let message = open_err(&config).await.to_string();

    assert!(message.contains("store.key is missing"), "{message}");
    assert!(!dir.path().join("store.key").exists());
}

#[tokio::test]
async fn clear_rejections_touches_only_that_provider() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn TokenStore> = store::open(&config_with_key_file(dir.path()))
        .await
        .unwrap();
    let cross_river = [key("cross-river", None), key("cross-river", Some("acme"))];
    for credential in &cross_river {
        store.save(credential, &full_record()).await.unwrap();
    }
    store.save(&key("xref", None), &rejected()).await.unwrap();

    assert_eq!(store.clear_rejections("cross-river").await.unwrap(), 2);
    assert_eq!(store.clear_rejections("cross-river").await.unwrap(), 0);

    for credential in &cross_river {
        let record = store.load(credential).await.unwrap().unwrap();
        assert!(record.rejected.is_none());
        assert_eq!(record.refresh_token.unwrap().expose(), REFRESH_TOKEN);
    }
    let other = store.load(&key("xref", None)).await.unwrap().unwrap();
    assert!(other.rejected.is_some());
}

#[tokio::test]
async fn a_store_left_by_a_crash_is_verified_before_repair() {
    let live = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let config = config_with_key(live.path(), [7; 32]);
    let store = store::open(&config).await.unwrap();
    store
        .save(&key("cross-river", None), &full_record())
        .await
        .unwrap();
    // A copy taken while the store is open looks like one left by a killed process.
    std::fs::copy(
        live.path().join("tokens.redb"),
        crashed.path().join("tokens.redb"),
    )
    .unwrap();
    let before = snapshot(crashed.path());

    let message = open_err(&config_with_key(crashed.path(), [8; 32]))
        .await
        .to_string();
    assert!(
        message.contains("written with a different key"),
        "{message}"
    );
    assert_eq!(snapshot(crashed.path()), before);

    let recovered = store::open(&config_with_key(crashed.path(), [7; 32]))
        .await
        .unwrap();
    let record = recovered
        .load(&key("cross-river", None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.refresh_token.unwrap().expose(), REFRESH_TOKEN);
}
