//! The scheduler lease: which server schedules jobs, until when, and the epoch that fences
//! its job starts. Servers take it when it has expired, renew it well before it does, and
//! check it inside the write that starts a job (`Db::mark_running`), so two servers never
//! start the same attempt, even when a paused leader wakes up after losing the lease.

use sqlx::Row;

use crate::{Db, StoreError};

/// The one lease there is.
const LEASE: &str = "scheduler";

/// Who holds the lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub holder: String,
    /// The holder's API URL (for `status` and the log of a server that is refused).
    pub address: String,
    pub epoch: i64,
    pub expires_at_ms: i64,
}

/// What a server holds while it leads: presented with every job start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub epoch: i64,
}

impl Db {
    /// Takes the lease for `holder` when it is free or expired (a new epoch) or already
    /// `holder`'s (the same epoch, renewed); `None` when another server holds it.
    pub async fn acquire_lease(
        &self,
        holder: &str,
        address: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Fence>, StoreError> {
        let mut tx = self.begin_write().await?;
        let current =
            sqlx::query("SELECT holder, epoch, expires_at_ms FROM scheduler_lease WHERE name = $1")
                .bind(LEASE)
                .fetch_optional(&mut *tx)
                .await?;
        let epoch = match current {
            None => {
                sqlx::query(
                    "INSERT INTO scheduler_lease (name, holder, address, epoch, expires_at_ms) \
                     VALUES ($1, $2, $3, 1, $4)",
                )
                .bind(LEASE)
                .bind(holder)
                .bind(address)
                .bind(now_ms + ttl_ms)
                .execute(&mut *tx)
                .await?;
                1
            }
            Some(row) => {
                let current_holder: String = row.try_get("holder")?;
                let epoch: i64 = row.try_get("epoch")?;
                let expires: i64 = row.try_get("expires_at_ms")?;
                let epoch = if current_holder == holder {
                    epoch
                } else if expires < now_ms {
                    epoch + 1
                } else {
                    return Ok(None);
                };
                // Conditional on what was read: a racing server's takeover wins once.
                let done = sqlx::query(
                    "UPDATE scheduler_lease SET holder = $1, address = $2, epoch = $3, \
                     expires_at_ms = $4 WHERE name = $5 AND holder = $6 AND expires_at_ms = $7",
                )
                .bind(holder)
                .bind(address)
                .bind(epoch)
                .bind(now_ms + ttl_ms)
                .bind(LEASE)
                .bind(&current_holder)
                .bind(expires)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(None);
                }
                epoch
            }
        };
        tx.commit().await?;
        Ok(Some(Fence {
            holder: holder.to_string(),
            epoch,
        }))
    }

    /// Extends a held lease; false when it is no longer `fence`'s (another server took it).
    pub async fn renew_lease(
        &self,
        fence: &Fence,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE scheduler_lease SET expires_at_ms = $1 \
             WHERE name = $2 AND holder = $3 AND epoch = $4",
        )
        .bind(now_ms + ttl_ms)
        .bind(LEASE)
        .bind(&fence.holder)
        .bind(fence.epoch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease up at once (a clean shutdown), so the next server need not wait.
    pub async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE scheduler_lease SET expires_at_ms = 0 \
             WHERE name = $1 AND holder = $2 AND epoch = $3",
        )
        .bind(LEASE)
        .bind(&fence.holder)
        .bind(fence.epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Who holds the lease now, if anyone ever did.
    pub async fn lease_holder(&self) -> Result<Option<LeaseHolder>, StoreError> {
        let row = sqlx::query(
            "SELECT holder, address, epoch, expires_at_ms FROM scheduler_lease WHERE name = $1",
        )
        .bind(LEASE)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(LeaseHolder {
                holder: row.try_get("holder")?,
                address: row.try_get("address")?,
                epoch: row.try_get("epoch")?,
                expires_at_ms: row.try_get("expires_at_ms")?,
            })
        })
        .transpose()
    }
}
