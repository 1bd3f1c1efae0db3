//! The AEAD layer under every store backend: a record's bytes are sealed with AES-256-GCM and
//! bound to the record's name, so a value copied under another name, or written with another
//! key, fails to open instead of being misread.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use zeroize::Zeroizing;

/// Length of a store key in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// The only record layout written so far; the first byte of every sealed record.
const FORMAT_VERSION: u8 = 1;

/// `version (1) | key id (4) | nonce (12)`, then ciphertext and tag.
const KEY_ID_LEN: usize = 4;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

/// Why a record could not be sealed or opened. Never carries record contents.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The key material is not exactly [`KEY_LEN`] bytes.
    #[error("a store key must be exactly {KEY_LEN} bytes")]
    KeyLength,
    /// The record is shorter than a header plus a tag.
    #[error("record is too short to be sealed data")]
    Truncated,
    /// The record starts with a format version this build does not know.
    #[error("record has unknown format version {0}")]
    UnknownVersion(u8),
    /// The record's key id is not this key's: it was written with a different key.
    #[error("record was written with a different key")]
    DifferentKey,
    /// The tag did not verify: the bytes or the record's name were changed.
    #[error("record failed authentication")]
    Authentication,
    /// The system random generator or the cipher failed while sealing.
    #[error("sealing failed in the crypto library")]
    Crypto,
}

/// An AES-256-GCM key with its id (the first 4 bytes of the key's SHA-256).
pub struct SealingKey {
    aead_key: LessSafeKey,
    key_id: [u8; KEY_ID_LEN],
}

// === impl SealingKey ===

impl SealingKey {
    /// Builds a key from exactly [`KEY_LEN`] bytes.
    pub fn from_bytes(key_bytes: &[u8]) -> Result<Self, SealError> {
        if key_bytes.len() != KEY_LEN {
            return Err(SealError::KeyLength);
        }
        let unbound = UnboundKey::new(&AES_256_GCM, key_bytes).map_err(|_| SealError::KeyLength)?;
        let key_hash = digest(&SHA256, key_bytes);
        let mut key_id = [0u8; KEY_ID_LEN];
        key_id.copy_from_slice(&key_hash.as_ref()[..KEY_ID_LEN]);
        Ok(Self {
            aead_key: LessSafeKey::new(unbound),
            key_id,
        })
    }

    /// Fresh key material from the system random generator.
    pub fn generate_bytes() -> Result<Zeroizing<[u8; KEY_LEN]>, SealError> {
        let mut key_bytes = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(key_bytes.as_mut_slice()).map_err(|_| SealError::Crypto)?;
        Ok(key_bytes)
    }

    /// The 4-byte id written into every record sealed with this key.
    pub fn key_id(&self) -> [u8; KEY_ID_LEN] {
        self.key_id
    }

    /// Seals `plaintext` under `record_name` (the associated data) with a fresh random nonce.
    pub fn seal(&self, record_name: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce_bytes = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce_bytes).map_err(|_| SealError::Crypto)?;

        // Sized once and encrypted in place, so no plaintext copy is left behind by a reallocation.
        let mut sealed = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        sealed.push(FORMAT_VERSION);
        sealed.extend_from_slice(&self.key_id);
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(plaintext);
        let tag = self
            .aead_key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(record_name.as_bytes()),
                &mut sealed[HEADER_LEN..],
            )
            .map_err(|_| SealError::Crypto)?;
        sealed.extend_from_slice(tag.as_ref());
        Ok(sealed)
    }

    /// Opens a record sealed under `record_name`; the plaintext is wiped when dropped.
    pub fn open(&self, record_name: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(SealError::Truncated);
        }
        let (header, ciphertext) = sealed.split_at(HEADER_LEN);
        if header[0] != FORMAT_VERSION {
            return Err(SealError::UnknownVersion(header[0]));
        }
        if header[1..1 + KEY_ID_LEN] != self.key_id {
            return Err(SealError::DifferentKey);
        }
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(&header[1 + KEY_ID_LEN..]);

        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plaintext_len = self
            .aead_key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(record_name.as_bytes()),
                buffer.as_mut_slice(),
            )
            .map_err(|_| SealError::Authentication)?
            .len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("key_id", &KeyIdHex(self.key_id))
            .finish_non_exhaustive()
    }
}

/// Prints a key id as 8 hex digits.
struct KeyIdHex([u8; KEY_ID_LEN]);

impl std::fmt::Debug for KeyIdHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn key(fill: u8) -> SealingKey {
        SealingKey::from_bytes(&[fill; KEY_LEN]).unwrap()
    }

    #[test]
    fn opens_what_it_sealed_under_the_same_name() {
        let sealed = key(1).seal("cred/a/_/f", b"hello").unwrap();
        assert_eq!(sealed.len(), HEADER_LEN + 5 + TAG_LEN);
        assert_eq!(
            key(1).open("cred/a/_/f", &sealed).unwrap().as_slice(),
            b"hello"
        );
    }

    #[test]
    fn refuses_another_name_another_key_and_flipped_bytes() {
        let sealed = key(1).seal("cred/a/_/f", b"hello").unwrap();
        assert_eq!(
            key(1).open("cred/b/_/f", &sealed),
            Err(SealError::Authentication)
        );
        assert_eq!(
            key(2).open("cred/a/_/f", &sealed),
            Err(SealError::DifferentKey)
        );
        for index in [0, HEADER_LEN, sealed.len() - 1] {
            let mut flipped = sealed.clone();
            flipped[index] ^= 0x01;
            assert!(key(1).open("cred/a/_/f", &flipped).is_err(), "byte {index}");
        }
        assert_eq!(
            key(1).open("cred/a/_/f", &sealed[..20]),
            Err(SealError::Truncated)
        );
    }

    #[test]
    fn nonces_differ_between_writes_and_debug_hides_the_key() {
        let k = key(1);
        assert_ne!(k.seal("n", b"x").unwrap(), k.seal("n", b"x").unwrap());
        assert!(SealingKey::from_bytes(&[0; 31]).is_err());
        let id_hex: String = k.key_id().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            format!("{k:?}"),
            format!("SealingKey {{ key_id: {id_hex}, .. }}")
        );
    }
}
