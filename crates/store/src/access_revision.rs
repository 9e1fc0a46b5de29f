//! The access revision: one number that grows at every change that takes access away, so
//! servers sharing the database can tell, with one small read, that what they cached about
//! tokens and roles may be stale (see `migrations/0018_access_revision.sql`).

use sqlx::Row;

use crate::{Db, StoreError};

impl Db {
    /// The current access revision.
    pub async fn access_revision(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT revision FROM access_revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("revision")?)
    }
}

/// Moves the access revision on, inside the transaction that takes access away (so the
/// change and the signal commit together).
pub(crate) async fn bump(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<(), StoreError> {
    sqlx::query("UPDATE access_revision SET revision = revision + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}
