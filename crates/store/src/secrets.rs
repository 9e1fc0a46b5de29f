//! Per-workspace named secrets, encrypted at rest: AES-256-GCM under the server's secrets
//! key, a fresh random nonce per value, and the workspace and name as associated data, so a
//! sealed value copied to another row (or workspace) does not open. Values leave the store
//! only to a job's environment; listings carry names and times.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::Row;

use crate::{Db, StoreError};

/// Longest secret value.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The key secrets are sealed with: 32 bytes, given as 64 hex digits or base64.
#[derive(Clone)]
pub struct SecretKey(std::sync::Arc<LessSafeKey>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Why a secrets key or a sealed value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretKeyError {
    #[error("a secrets key is 32 bytes written as 64 hex digits or in base64")]
    Malformed,
    #[error("the secret does not open with this key (another key sealed it, or it was altered)")]
    DoesNotOpen,
}

impl SecretKey {
    pub fn parse(text: &str) -> Result<Self, SecretKeyError> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .filter(|b| b.len() == 32)
            .or_else(|| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()
                    .filter(|b| b.len() == 32)
            })
            .ok_or(SecretKeyError::Malformed)?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SecretKeyError::Malformed)?;
        Ok(Self(std::sync::Arc::new(LessSafeKey::new(key))))
    }

    /// A fresh random key, as the 64 hex digits to keep it in.
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system's random source");
        hex::encode(bytes)
    }

    fn aad(workspace: &str, name: &str) -> Vec<u8> {
        format!("{workspace}\0{name}").into_bytes()
    }

    /// `value` sealed for (workspace, name): base64 of nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, workspace: &str, name: &str, value: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source");
        let mut data = value.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(workspace, name)),
                &mut data,
            )
            .expect("AES-GCM seals any length we allow");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    pub fn open(
        &self,
        workspace: &str,
        name: &str,
        sealed: &str,
    ) -> Result<String, SecretKeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SecretKeyError::DoesNotOpen)?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretKeyError::DoesNotOpen);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretKeyError::DoesNotOpen)?;
        let mut data = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(Self::aad(workspace, name)), &mut data)
            .map_err(|_| SecretKeyError::DoesNotOpen)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretKeyError::DoesNotOpen)
    }
}

impl Db {
    /// Sets a secret (replacing its value); true when it was new.
    pub async fn put_secret(
        &self,
        key: &SecretKey,
        workspace: &str,
        name: &str,
        value: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let sealed = key.seal(workspace, name, value);
        let existed =
            sqlx::query("SELECT name FROM workspace_secrets WHERE workspace_id = $1 AND name = $2")
                .bind(workspace)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .is_some();
        sqlx::query(
            "INSERT INTO workspace_secrets (workspace_id, name, sealed, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (workspace_id, name) \
             DO UPDATE SET sealed = excluded.sealed, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(workspace)
        .bind(name)
        .bind(sealed)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(!existed)
    }

    /// A workspace's secrets by name: (name, created, updated), never values.
    pub async fn secrets(&self, workspace: &str) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, created_at_ms, updated_at_ms FROM workspace_secrets \
             WHERE workspace_id = $1 ORDER BY name",
        )
        .bind(workspace)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("name")?,
                    r.try_get("created_at_ms")?,
                    r.try_get("updated_at_ms")?,
                ))
            })
            .collect()
    }

    pub async fn delete_secret(&self, workspace: &str, name: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("DELETE FROM workspace_secrets WHERE workspace_id = $1 AND name = $2")
                .bind(workspace)
                .bind(name)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A secret's value, opened with `key`; `Ok(None)` when there is no such secret.
    pub async fn open_secret(
        &self,
        key: &SecretKey,
        workspace: &str,
        name: &str,
    ) -> Result<Option<Result<String, SecretKeyError>>, StoreError> {
        let row = sqlx::query(
            "SELECT sealed FROM workspace_secrets WHERE workspace_id = $1 AND name = $2",
        )
        .bind(workspace)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => None,
            Some(row) => Some(key.open(workspace, name, &row.try_get::<String, _>("sealed")?)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_where_they_were_sealed() {
        let key = SecretKey::parse(&SecretKey::generate()).unwrap();
        let sealed = key.seal("a", "hf", "the value");
        assert!(!sealed.contains("the value"));
        assert_ne!(
            sealed,
            key.seal("a", "hf", "the value"),
            "a fresh nonce each time"
        );
        assert_eq!(key.open("a", "hf", &sealed).unwrap(), "the value");
        // Moved to another workspace or name, it does not open.
        assert_eq!(
            key.open("b", "hf", &sealed),
            Err(SecretKeyError::DoesNotOpen)
        );
        assert_eq!(
            key.open("a", "other", &sealed),
            Err(SecretKeyError::DoesNotOpen)
        );
        // Nor under another key, nor altered.
        let other = SecretKey::parse(&SecretKey::generate()).unwrap();
        assert_eq!(
            other.open("a", "hf", &sealed),
            Err(SecretKeyError::DoesNotOpen)
        );
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let altered = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(
            key.open("a", "hf", &altered),
            Err(SecretKeyError::DoesNotOpen)
        );
        assert_eq!(key.open("a", "hf", "!!"), Err(SecretKeyError::DoesNotOpen));
        // Keys: 64 hex digits or base64 of 32 bytes, nothing else.
        assert!(SecretKey::parse(&"ab".repeat(32)).is_ok());
        assert!(
            SecretKey::parse(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).is_ok()
        );
        for bad in ["", "abc", &"ab".repeat(31)] {
            assert!(SecretKey::parse(bad).is_err(), "{bad}");
        }
    }
}
