//! The embedded store: one redb database `<dir>/tokens.redb` whose values are sealed records.
//! Opening authenticates every record through a read-only handle first, so a wrong key or a
//! modified file is refused before redb's writable open touches a byte of it.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::BoxFuture;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError,
};
use zeroize::Zeroizing;

use super::record::{
    CREDENTIAL_PREFIX, KEY_CHECK_NAME, RecordError, open_key_check, open_record, record_name,
    seal_key_check, seal_record,
};
use super::seal::{SealError, SealingKey};
use super::{CredentialKey, CredentialRecord, StoreError, TokenStore};
use crate::secret::Secret;

const DB_FILE_NAME: &str = "tokens.redb";
const KEY_FILE_NAME: &str = "store.key";

/// Record name -> sealed record bytes.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

/// The encrypted redb store in one directory. Holds redb's exclusive file lock while alive.
#[derive(Clone)]
pub struct FileStore {
    shared: Arc<OpenDatabase>,
}

/// What every blocking task needs: the database, its key and its path for error messages.
struct OpenDatabase {
    database: Database,
    sealing_key: SealingKey,
    db_path: PathBuf,
}

/// One authenticated credential record with the name it is stored under.
struct StoredRecord {
    name: String,
    key: CredentialKey,
    record: CredentialRecord,
}

// === impl FileStore ===

impl FileStore {
    /// Opens (or creates) the store in `dir`, with `configured_key` or else `<dir>/store.key`.
    /// Refuses, leaving every file unchanged, a store that is in use, sealed with another key,
    /// modified or truncated. Blocking.
    pub fn open(dir: &Path, configured_key: Option<&Secret>) -> Result<Self, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::CreateDir {
                dir: dir.to_owned(),
                source,
            })?;
        let db_path = dir.join(DB_FILE_NAME);
        let db_has_data = fs::metadata(&db_path).is_ok_and(|meta| meta.len() > 0);

        let sealing_key = match configured_key {
            Some(key) => {
                parse_key(key.expose()).ok_or_else(|| StoreError::InvalidConfiguredKey {
                    dir: dir.to_owned(),
                })?
            }
            None => load_or_create_key_file(dir, &db_path, db_has_data)?,
        };

        if db_has_data {
            without_panic(&db_path, || verify_existing(dir, &db_path, &sealing_key))?;
        }
        let database = without_panic(&db_path, || {
            Database::builder()
                .create(&db_path)
                .map_err(|err| classify(err.into(), dir, &db_path))
        })?;
        write_key_check_if_absent(&database, &db_path, &sealing_key)?;

        Ok(Self {
            shared: Arc::new(OpenDatabase {
                database,
                sealing_key,
                db_path,
            }),
        })
    }

    /// Runs blocking redb work off the async workers.
    async fn run_blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&OpenDatabase) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || work(&shared))
            .await
            .map_err(|_| StoreError::TaskStopped {
                path: self.shared.db_path.clone(),
            })?
    }
}

impl TokenStore for FileStore {
    fn load<'a>(
        &'a self,
        key: &'a CredentialKey,
    ) -> BoxFuture<'a, Result<Option<CredentialRecord>, StoreError>> {
        let name = record_name(key);
        Box::pin(self.run_blocking(move |open_db| {
            let read = open_db
                .database
                .begin_read()
                .map_err(|e| open_db.error(e))?;
            let table = match read.open_table(RECORDS) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(err) => return Err(open_db.error(err)),
            };
            let Some(sealed) = table.get(name.as_str()).map_err(|e| open_db.error(e))? else {
                return Ok(None);
            };
            let (_, record) = open_record(&open_db.sealing_key, &name, sealed.value())
                .map_err(|err| open_db.record_error(err))?;
            Ok(Some(record))
        }))
    }

    fn save<'a>(
        &'a self,
        key: &'a CredentialKey,
        record: &'a CredentialRecord,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        // Sealed here so the plaintext never crosses into the blocking task.
        let sealed = seal_record(&self.shared.sealing_key, key, record);
        let name = record_name(key);
        Box::pin(async move {
            let sealed = sealed.map_err(|err| self.shared.record_error(err))?;
            self.run_blocking(move |open_db| {
                let write = open_db
                    .database
                    .begin_write()
                    .map_err(|e| open_db.error(e))?;
                {
                    let mut table = write.open_table(RECORDS).map_err(|e| open_db.error(e))?;
                    table
                        .insert(name.as_str(), sealed.as_slice())
                        .map_err(|e| open_db.error(e))?;
                }
                // redb's default durability fsyncs before commit returns.
                write.commit().map_err(|e| open_db.error(e))
            })
            .await
        })
    }

    fn clear_rejections<'a>(
        &'a self,
        provider: &'a str,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        let provider = provider.to_owned();
        Box::pin(self.run_blocking(move |open_db| {
            let write = open_db
                .database
                .begin_write()
                .map_err(|e| open_db.error(e))?;
            let cleared = {
                let mut table = write.open_table(RECORDS).map_err(|e| open_db.error(e))?;
                let mut resealed = Vec::new();
                for stored in open_db.credential_records(&table)? {
                    let StoredRecord {
                        name,
                        key,
                        mut record,
                    } = stored;
                    let blocked = record.rejected.is_some() || record.unconfirmed_attempts > 0;
                    if key.provider == provider && blocked {
                        record.rejected = None;
                        record.unconfirmed_attempts = 0;
                        let sealed = seal_record(&open_db.sealing_key, &key, &record)
                            .map_err(|err| open_db.record_error(err))?;
                        resealed.push((name, sealed));
                    }
                }
                for (name, sealed) in &resealed {
                    table
                        .insert(name.as_str(), sealed.as_slice())
                        .map_err(|e| open_db.error(e))?;
                }
                resealed.len()
            };
            write.commit().map_err(|e| open_db.error(e))?;
            Ok(cleared)
        }))
    }

    fn delete<'a>(&'a self, key: &'a CredentialKey) -> BoxFuture<'a, Result<bool, StoreError>> {
        let name = record_name(key);
        Box::pin(self.run_blocking(move |open_db| {
            let write = open_db
                .database
                .begin_write()
                .map_err(|e| open_db.error(e))?;
            let removed = {
                let mut table = write.open_table(RECORDS).map_err(|e| open_db.error(e))?;
                table
                    .remove(name.as_str())
                    .map_err(|e| open_db.error(e))?
                    .is_some()
            };
            write.commit().map_err(|e| open_db.error(e))?;
            Ok(removed)
        }))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<(CredentialKey, CredentialRecord)>, StoreError>> {
        Box::pin(self.run_blocking(|open_db| {
            let read = open_db
                .database
                .begin_read()
                .map_err(|e| open_db.error(e))?;
            let table = match read.open_table(RECORDS) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(err) => return Err(open_db.error(err)),
            };
            let records = open_db.credential_records(&table)?;
            Ok(records
                .into_iter()
                .map(|stored| (stored.key, stored.record))
                .collect())
        }))
    }
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("db_path", &self.shared.db_path)
            .finish_non_exhaustive()
    }
}

// === impl OpenDatabase ===

impl OpenDatabase {
    /// Every credential record in `table`, authenticated, with its name.
    fn credential_records(
        &self,
        table: &impl ReadableTable<&'static str, &'static [u8]>,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let mut records = Vec::new();
        for entry in table
            .range(CREDENTIAL_PREFIX..)
            .map_err(|e| self.error(e))?
        {
            let (name, sealed) = entry.map_err(|e| self.error(e))?;
            let name = name.value();
            if !name.starts_with(CREDENTIAL_PREFIX) {
                break;
            }
            let opened = open_record(&self.sealing_key, name, sealed.value())
                .map_err(|err| self.record_error(err))?;
            let (key, record) = opened;
            records.push(StoredRecord {
                name: name.to_owned(),
                key,
                record,
            });
        }
        Ok(records)
    }

    fn error(&self, err: impl Into<redb::Error>) -> StoreError {
        classify_open(err.into(), &self.db_path)
    }

    fn record_error(&self, err: RecordError) -> StoreError {
        record_failure(err, &self.db_path)
    }
}

/// Authenticates every record of an existing database without writing to it.
fn verify_existing(dir: &Path, db_path: &Path, sealing_key: &SealingKey) -> Result<(), StoreError> {
    match Database::builder().open_read_only(db_path) {
        Ok(read_only) => verify_records(&read_only, db_path, sealing_key),
        // Left by a crash: redb repairs only through a writable open, so verify a repaired copy
        // and leave the original alone until the key is known to be right.
        Err(redb::DatabaseError::RepairAborted) => verify_repaired_copy(dir, db_path, sealing_key),
        Err(err) => Err(classify(err.into(), dir, db_path)),
    }
}

fn verify_repaired_copy(
    dir: &Path,
    db_path: &Path,
    sealing_key: &SealingKey,
) -> Result<(), StoreError> {
    let copy_path = dir.join(format!("{DB_FILE_NAME}.verify-{}", std::process::id()));
    let verified = fs::copy(db_path, &copy_path)
        .map_err(|err| classify(err.into(), dir, db_path))
        .and_then(|_| {
            let copy = Database::builder()
                .open(&copy_path)
                .map_err(|err| classify(err.into(), dir, db_path))?;
            verify_records(&copy, db_path, sealing_key)
        });
    // Best effort: a leftover copy holds only sealed bytes and is overwritten next time.
    let _ = fs::remove_file(&copy_path);
    verified
}

/// Opens the key-check record and every credential record; the first failure is the answer.
fn verify_records(
    database: &impl ReadableDatabase,
    db_path: &Path,
    sealing_key: &SealingKey,
) -> Result<(), StoreError> {
    let read = database
        .begin_read()
        .map_err(|err| classify_open(err.into(), db_path))?;
    let table = match read.open_table(RECORDS) {
        Ok(table) => table,
        // Created but never written (a crash right after creation): nothing to verify.
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(err) => return Err(classify_open(err.into(), db_path)),
    };
    let tampered = || StoreError::Tampered {
        path: db_path.to_owned(),
    };
    match table
        .get(KEY_CHECK_NAME)
        .map_err(|err| classify_open(err.into(), db_path))?
    {
        Some(sealed) => open_key_check(sealing_key, sealed.value())
            .map_err(|err| record_failure(err, db_path))?,
        // Records without the check record mean the file was edited.
        None if !table
            .is_empty()
            .map_err(|err| classify_open(err.into(), db_path))? =>
        {
            return Err(tampered());
        }
        None => {}
    }
    for entry in table
        .iter()
        .map_err(|err| classify_open(err.into(), db_path))?
    {
        let (name, sealed) = entry.map_err(|err| classify_open(err.into(), db_path))?;
        let name = name.value();
        if name.starts_with(CREDENTIAL_PREFIX) {
            open_record(sealing_key, name, sealed.value())
                .map_err(|err| record_failure(err, db_path))?;
        } else if name != KEY_CHECK_NAME {
            return Err(tampered());
        }
    }
    Ok(())
}

/// Seals the key-check record into a store that has none yet (new, or never written).
fn write_key_check_if_absent(
    database: &Database,
    db_path: &Path,
    sealing_key: &SealingKey,
) -> Result<(), StoreError> {
    let to_store_error = |err: redb::Error| classify_open(err, db_path);
    let write = database
        .begin_write()
        .map_err(|e| to_store_error(e.into()))?;
    {
        let mut table = write
            .open_table(RECORDS)
            .map_err(|e| to_store_error(e.into()))?;
        if table
            .get(KEY_CHECK_NAME)
            .map_err(|e| to_store_error(e.into()))?
            .is_some()
        {
            return Ok(());
        }
        let sealed = seal_key_check(sealing_key).map_err(|_| StoreError::Seal {
            path: db_path.to_owned(),
        })?;
        table
            .insert(KEY_CHECK_NAME, sealed.as_slice())
            .map_err(|e| to_store_error(e.into()))?;
    }
    write.commit().map_err(|e| to_store_error(e.into()))
}

/// A 32-byte key from standard base64 (surrounding whitespace ignored).
fn parse_key(encoded: &str) -> Option<SealingKey> {
    let key_bytes = Zeroizing::new(STANDARD.decode(encoded.trim()).ok()?);
    SealingKey::from_bytes(&key_bytes).ok()
}

/// Reads `<dir>/store.key`, or creates it (0600) for a new store.
fn load_or_create_key_file(
    dir: &Path,
    db_path: &Path,
    db_has_data: bool,
) -> Result<SealingKey, StoreError> {
    let key_path = dir.join(KEY_FILE_NAME);
    let key_file_error = |source| StoreError::KeyFile {
        path: key_path.clone(),
        source,
    };
    match fs::metadata(&key_path) {
        Ok(_) => read_key_file(&key_path),
        // A fresh key would only fail to open the existing records, and leave a stray file.
        Err(err) if err.kind() == ErrorKind::NotFound && db_has_data => {
            Err(StoreError::KeyFileMissing {
                key_path: key_path.clone(),
                db_path: db_path.to_owned(),
            })
        }
        Err(err) if err.kind() == ErrorKind::NotFound => create_key_file(dir, &key_path),
        Err(err) => Err(key_file_error(err)),
    }
}

fn read_key_file(key_path: &Path) -> Result<SealingKey, StoreError> {
    let key_file_error = |source| StoreError::KeyFile {
        path: key_path.to_owned(),
        source,
    };
    let mode = fs::metadata(key_path).map_err(key_file_error)?.mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %key_path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "store key file is readable by other users; restrict it with chmod 600"
        );
    }
    let encoded = Zeroizing::new(fs::read_to_string(key_path).map_err(key_file_error)?);
    parse_key(&encoded).ok_or_else(|| StoreError::InvalidKeyFile {
        path: key_path.to_owned(),
    })
}

fn create_key_file(dir: &Path, key_path: &Path) -> Result<SealingKey, StoreError> {
    let key_file_error = |source| StoreError::KeyFile {
        path: key_path.to_owned(),
        source,
    };
    let key_bytes = SealingKey::generate_bytes().map_err(|_| StoreError::Seal {
        path: key_path.to_owned(),
    })?;
    let mut encoded = Zeroizing::new(STANDARD.encode(key_bytes.as_slice()));
    encoded.push('\n');
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_path)
    {
        Ok(file) => file,
        // Another process created it first: use theirs.
        Err(err) if err.kind() == ErrorKind::AlreadyExists => return read_key_file(key_path),
        Err(err) => return Err(key_file_error(err)),
    };
    let written = file
        .write_all(encoded.as_bytes())
        .and_then(|()| file.sync_all())
        // The new directory entry must be durable too, or a crash could lose the key.
        .and_then(|()| fs::File::open(dir)?.sync_all());
    if let Err(err) = written {
        let _ = fs::remove_file(key_path);
        return Err(key_file_error(err));
    }
    tracing::info!(path = %key_path.display(), "generated a new store key file; back it up");
    SealingKey::from_bytes(key_bytes.as_slice()).map_err(|_| StoreError::InvalidKeyFile {
        path: key_path.to_owned(),
    })
}

/// Runs a redb open, turning a panic into [`StoreError::Corrupt`]: redb 3 asserts, rather than
/// reports, some damage (a file shorter than its header says, as after truncation).
fn without_panic<T>(
    db_path: &Path,
    open: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    std::panic::catch_unwind(AssertUnwindSafe(open)).unwrap_or_else(|_| {
        Err(StoreError::Corrupt {
            path: db_path.to_owned(),
            detail: "redb cannot read it (is it truncated?)".to_owned(),
        })
    })
}

/// Maps a redb error met while opening `db_path` in `dir`.
fn classify(err: redb::Error, dir: &Path, db_path: &Path) -> StoreError {
    match err {
        redb::Error::DatabaseAlreadyOpen => StoreError::InUse {
            dir: dir.to_owned(),
        },
        other => classify_open(other, db_path),
    }
}

/// Maps a redb error: damage is reported as such, anything else as a database error.
fn classify_open(err: redb::Error, db_path: &Path) -> StoreError {
    let damaged = match &err {
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::RepairAborted
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. } => true,
        redb::Error::Io(io) => {
            matches!(io.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof)
        }
        _ => false,
    };
    if damaged {
        StoreError::Corrupt {
            path: db_path.to_owned(),
            detail: err.to_string(),
        }
    } else {
        StoreError::Database {
            path: db_path.to_owned(),
            source: Box::new(err),
        }
    }
}

/// Maps a record that failed to seal or open.
fn record_failure(err: RecordError, db_path: &Path) -> StoreError {
    let path = db_path.to_owned();
    match err {
        RecordError::Seal(SealError::DifferentKey) => StoreError::DifferentKey { path },
        RecordError::Seal(SealError::Crypto) | RecordError::Encode => StoreError::Seal { path },
        RecordError::Seal(_) | RecordError::Decode => StoreError::Tampered { path },
    }
}
