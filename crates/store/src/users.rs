//! Users and their roles per workspace. Removing a user removes their tokens and roles in
//! the same transaction, so a removed user's token is unknown at its next lookup.

use std::collections::BTreeMap;

use sqlx::Row;
use trainyard_core::access::{Member, Role, UserInfo};

use crate::{Db, StoreError};

/// A user's row, as auth needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub name: String,
    pub owner: bool,
    pub password_hash: Option<String>,
}

/// What [`Db::change_member`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Done,
    /// Asked to remove a role the user does not have.
    NotMember,
    /// The user is the workspace's last admin; nothing changed.
    LastAdmin,
}

/// Shortest and longest password accepted.
pub const PASSWORD_LENGTH: std::ops::RangeInclusive<usize> = 12..=1024;

/// An argon2id hash (PHC string, with its own random salt) of `password`. Slow on purpose:
/// run it off the async threads.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password of the accepted length")
        .to_string()
}

/// Whether `password` matches the PHC string `hash` (a malformed hash matches nothing).
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

fn role_of(text: &str) -> Result<Role, StoreError> {
    Role::parse(text)
        .ok_or_else(|| StoreError::corrupt("workspace_members", format!("unknown role {text:?}")))
}

impl Db {
    /// Adds a user; false when the name is taken.
    pub async fn create_user(
        &self,
        id: &str,
        name: &str,
        owner: bool,
        password_hash: Option<&str>,
        created_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO users (id, name, owner, password_hash, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(i64::from(owner))
        .bind(password_hash)
        .bind(created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn find_user(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query("SELECT id, name, owner, password_hash FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(UserRow {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                owner: row.try_get::<i64, _>("owner")? != 0,
                password_hash: row.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    /// Every user with their roles, by name.
    pub async fn users(&self) -> Result<Vec<UserInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, owner, password_hash, created_at_ms FROM users ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        let roles = sqlx::query("SELECT user_id, workspace_id, role FROM workspace_members")
            .fetch_all(&self.pool)
            .await?;
        let mut by_user: BTreeMap<String, BTreeMap<String, Role>> = BTreeMap::new();
        for row in &roles {
            by_user
                .entry(row.try_get("user_id")?)
                .or_default()
                .insert(row.try_get("workspace_id")?, role_of(row.try_get("role")?)?);
        }
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                Ok(UserInfo {
                    roles: by_user.remove(&id).unwrap_or_default(),
                    id,
                    name: row.try_get("name")?,
                    owner: row.try_get::<i64, _>("owner")? != 0,
                    has_password: row.try_get::<Option<String>, _>("password_hash")?.is_some(),
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect()
    }

    /// Removes a user with their tokens and roles; false when there is none by that name.
    pub async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query("SELECT id FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(false);
        };
        let id: String = row.try_get("id")?;
        for sql in [
            "DELETE FROM api_tokens WHERE user_id = $1",
            "DELETE FROM workspace_members WHERE user_id = $1",
            "DELETE FROM users WHERE id = $1",
        ] {
            sqlx::query(sql).bind(&id).execute(&mut *tx).await?;
        }
        crate::access_revision::bump(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Sets (or with `None` clears) a user's password hash; false when there is no such user.
    pub async fn set_password_hash(
        &self,
        name: &str,
        hash: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE name = $2")
            .bind(hash)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many owners there are (the last one cannot be removed).
    pub async fn count_owners(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE owner = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// The user's role in a workspace, if any.
    pub async fn member_role(
        &self,
        workspace: &str,
        user_id: &str,
    ) -> Result<Option<Role>, StoreError> {
        let row = sqlx::query(
            "SELECT role FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(workspace)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| role_of(row.try_get("role")?)).transpose()
    }

    /// Gives a user a role in a workspace (replacing the one they had, which may have been
    /// wider: the access revision moves).
    pub async fn set_member(
        &self,
        workspace: &str,
        user_id: &str,
        role: Role,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $2, $3) \
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(workspace)
        .bind(user_id)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
        crate::access_revision::bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes a user's role in a workspace away; false when they had none.
    pub async fn remove_member(&self, workspace: &str, user_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done =
            sqlx::query("DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2")
                .bind(workspace)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        crate::access_revision::bump(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Gives a user a role in a workspace (`Some`) or takes theirs away (`None`), in one
    /// transaction that, with `keep_an_admin`, refuses to leave the workspace without an
    /// admin: the last admin is neither removed nor given a lesser role. Two admins removing
    /// each other at once cannot both succeed (the workspace's row is locked on Postgres;
    /// SQLite has one writer).
    pub async fn change_member(
        &self,
        workspace: &str,
        user_id: &str,
        role: Option<Role>,
        keep_an_admin: bool,
    ) -> Result<MemberChange, StoreError> {
        let mut tx = self.begin_write().await?;
        if !self.is_sqlite() {
            sqlx::query("SELECT id FROM workspaces WHERE id = $1 FOR UPDATE")
                .bind(workspace)
                .fetch_optional(&mut *tx)
                .await?;
        }
        let had = sqlx::query(
            "SELECT role FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
        )
        .bind(workspace)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| role_of(row.try_get("role")?))
        .transpose()?;
        if had.is_none() && role.is_none() {
            return Ok(MemberChange::NotMember);
        }
        if keep_an_admin && had == Some(Role::Admin) && role != Some(Role::Admin) {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n FROM workspace_members \
                 WHERE workspace_id = $1 AND role = $2",
            )
            .bind(workspace)
            .bind(Role::Admin.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if row.try_get::<i64, _>("n")? <= 1 {
                return Ok(MemberChange::LastAdmin);
            }
        }
        match role {
            Some(role) => {
                sqlx::query(
                    "INSERT INTO workspace_members (workspace_id, user_id, role) \
                     VALUES ($1, $2, $3) \
                     ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
                )
                .bind(workspace)
                .bind(user_id)
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2",
                )
                .bind(workspace)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        crate::access_revision::bump(&mut tx).await?;
        tx.commit().await?;
        Ok(MemberChange::Done)
    }

    /// The workspaces a user (by name) has a role in.
    pub async fn roles_of(&self, user_name: &str) -> Result<BTreeMap<String, Role>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.workspace_id, m.role FROM workspace_members m \
             JOIN users u ON u.id = m.user_id WHERE u.name = $1",
        )
        .bind(user_name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("workspace_id")?, role_of(row.try_get("role")?)?)))
            .collect()
    }

    /// A workspace's members, by name.
    pub async fn members(&self, workspace: &str) -> Result<Vec<Member>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.name, m.role FROM workspace_members m JOIN users u ON u.id = m.user_id \
             WHERE m.workspace_id = $1 ORDER BY u.name",
        )
        .bind(workspace)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Member {
                    user: row.try_get("name")?,
                    role: role_of(row.try_get("role")?)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_verify_only_themselves() {
        let hash = super::hash_password("correct horse battery");
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("correct"));
        assert!(super::verify_password("correct horse battery", &hash));
        assert!(!super::verify_password("correct horse batterY", &hash));
        assert!(!super::verify_password(
            "correct horse battery",
            "not a hash"
        ));
        assert_ne!(
            hash,
            super::hash_password("correct horse battery"),
            "salted"
        );
    }
}
