//! API tokens. Only a SHA-256 of each token is stored: a leaked database leaks no token.

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{Db, StoreError};

/// Who a request acts as, once its token is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub workspace: String,
    pub name: String,
    pub role: String,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token: `ty_` and 43 characters of base62 (256 bits).
pub fn generate_token() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rngs::OsRng;
    let body: String = (0..43)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("ty_{body}")
}

impl Db {
    /// Stores a token's hash; returns false when that token was already known.
    pub async fn insert_token(
        &self,
        id: &str,
        workspace: &str,
        name: &str,
        role: &str,
        token: &str,
        created_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let hash = hash_token(token);
        if self.find_token(token).await?.is_some() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO api_tokens (id, workspace_id, name, role, token_sha256, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(workspace)
        .bind(name)
        .bind(role)
        .bind(hash)
        .bind(created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    pub async fn find_token(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        let row = sqlx::query(
            "SELECT id, workspace_id, name, role FROM api_tokens WHERE token_sha256 = $1",
        )
        .bind(hash_token(token))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Principal {
                token_id: row.try_get("id")?,
                workspace: row.try_get("workspace_id")?,
                name: row.try_get("name")?,
                role: row.try_get("role")?,
            })
        })
        .transpose()
    }

    /// How many tokens with `role` exist (so start-up knows whether to mint an admin token).
    pub async fn count_tokens(&self, role: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens WHERE role = $1")
            .bind(role)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_long_and_distinct() {
        let a = super::generate_token();
        let b = super::generate_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 46);
        assert_eq!(super::hash_token(&a).len(), 64);
    }
}
