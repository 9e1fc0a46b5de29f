//! API tokens. Only a SHA-256 of each token is stored: a leaked database leaks no token.
//! A token is a user's (personal) or a job's (minted per attempt, deleted when it ends).

use sha2::{Digest, Sha256};
use sqlx::Row;

use trainyard_core::access::TokenInfo;

use crate::{Db, StoreError};

/// What a token carries, whatever workspace a call names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub token_id: String,
    pub name: String,
    /// The token's workspace: where it acts when a call names none, and the only one
    /// where it acts when `narrowed`.
    pub workspace: String,
    pub narrowed: bool,
    pub read_only: bool,
    pub expires_at_ms: Option<i64>,
    pub holder: Holder,
}

/// Whose token it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    User {
        id: String,
        name: String,
        owner: bool,
    },
    /// A job's attempt; the token is named `job:<job id>`.
    Job { job_id: String },
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub workspace: &'a str,
    /// `Some(user id)` for a personal token; `None` for a job's (named `job:<id>`).
    pub user_id: Option<&'a str>,
    pub narrowed: bool,
    pub read_only: bool,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
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

const TOKEN_COLUMNS: &str = "t.id, t.name, t.workspace_id, t.narrowed, t.read_only, \
     t.expires_at_ms, t.created_at_ms, t.user_id, u.name AS user_name, u.owner";

impl Db {
    /// Stores a token's hash; false when that token was already known.
    pub async fn insert_token(&self, new: &NewToken<'_>, token: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO api_tokens (id, workspace_id, name, role, token_sha256, created_at_ms, \
             user_id, narrowed, read_only, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (token_sha256) DO NOTHING",
        )
        .bind(new.id)
        .bind(new.workspace)
        .bind(new.name)
        .bind(if new.user_id.is_some() { "user" } else { "job" })
        .bind(hash_token(token))
        .bind(new.created_at_ms)
        .bind(new.user_id)
        .bind(i64::from(new.narrowed))
        .bind(i64::from(new.read_only))
        .bind(new.expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The token with this value, with its holder; `None` when unknown (or its user is gone).
    pub async fn find_token(&self, token: &str) -> Result<Option<TokenGrant>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS}, t.role FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id \
             WHERE t.token_sha256 = $1"
        ))
        .bind(hash_token(token))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role")?;
        let name: String = row.try_get("name")?;
        let holder = if role == "job" {
            Holder::Job {
                job_id: name.strip_prefix("job:").unwrap_or_default().to_string(),
            }
        } else {
            let (Some(id), Some(user_name), Some(owner)) = (
                row.try_get::<Option<String>, _>("user_id")?,
                row.try_get::<Option<String>, _>("user_name")?,
                row.try_get::<Option<i64>, _>("owner")?,
            ) else {
                // A user token whose user was removed.
                return Ok(None);
            };
            Holder::User {
                id,
                name: user_name,
                owner: owner != 0,
            }
        };
        Ok(Some(TokenGrant {
            token_id: row.try_get("id")?,
            name,
            workspace: row.try_get("workspace_id")?,
            narrowed: row.try_get::<i64, _>("narrowed")? != 0,
            read_only: row.try_get::<i64, _>("read_only")? != 0,
            expires_at_ms: row.try_get("expires_at_ms")?,
            holder,
        }))
    }

    /// Personal tokens: one user's (`Some`), or everyone's.
    pub async fn list_tokens(&self, user_id: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        let select =
            format!("SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id");
        let rows = match user_id {
            Some(user) => {
                sqlx::query(&format!(
                    "{select} WHERE t.user_id = $1 ORDER BY t.created_at_ms, t.id"
                ))
                .bind(user)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!("{select} ORDER BY t.created_at_ms, t.id"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(token_row).collect()
    }

    /// One personal token by id.
    pub async fn get_token(&self, id: &str) -> Result<Option<TokenInfo>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token_row).transpose()
    }

    /// Deletes a personal token; false when there is none with that id.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND role = 'user'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        crate::access_revision::bump(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// How many personal tokens owners hold (start-up mints the first when none).
    pub async fn count_owner_tokens(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE u.owner = 1",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}

fn token_row(row: &sqlx::any::AnyRow) -> Result<TokenInfo, StoreError> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        user: row.try_get("user_name")?,
        workspace: row.try_get("workspace_id")?,
        narrowed: row.try_get::<i64, _>("narrowed")? != 0,
        read_only: row.try_get::<i64, _>("read_only")? != 0,
        expires_at_ms: row.try_get("expires_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
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
