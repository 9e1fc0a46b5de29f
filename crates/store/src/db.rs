use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor};

use crate::error::redact_url;
use crate::StoreError;

/// The metadata database: one pool over SQLite or PostgreSQL, chosen by URL.
#[derive(Clone)]
pub struct Db {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Db {
    /// Opens the database (creating a SQLite file when missing) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadUrl {
                what: "database",
                url: redact_url(url),
                message: "use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB".into(),
            });
        };
        let unreachable = |source| StoreError::DatabaseUnreachable {
            url: redact_url(url),
            source,
        };
        let options: AnyConnectOptions = url.parse().map_err(unreachable)?;
        let options = options.disable_statement_logging();
        // SQLite has one writer: a small pool avoids lock convoys; PostgreSQL takes more.
        let max = match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            // A SQLite file does not drop connections: skip the ping before every use
            // (each statement is a round trip to the connection's worker thread).
            .test_before_acquire(backend == Backend::Postgres)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; FULL makes every
                        // acknowledged commit survive a crash of the process and the machine.
                        conn.execute(
                            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                             PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        {
            let mut conn = pool.acquire().await.map_err(unreachable)?;
            conn.ping().await.map_err(unreachable)?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, backend })
    }

    /// The SQLite URL for a file inside the data directory.
    pub fn sqlite_url(path: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    /// Whether the database answers a trivial query (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The pool, for layers that keep their own tables (tracking); they follow this
    /// crate's rules: `$N` placeholders and SQL that SQLite and PostgreSQL both accept.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that holds SQLite's write lock from its first statement (`BEGIN
    /// IMMEDIATE`), so a read-then-write inside it can never fail to upgrade its lock.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Runs a script of several statements that brings its own `BEGIN … COMMIT`, in one
    /// round trip to the database; when a statement fails, the transaction is rolled back
    /// before the connection goes back to the pool.
    /// It runs in a task of its own, so a caller that goes away (a client timing out)
    /// cannot leave the connection inside an open transaction.
    pub async fn run_script(&self, script: String) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        let task = tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            let result = conn.execute(script.as_str()).await;
            if let Err(e) = result {
                let _ = conn.execute("ROLLBACK").await;
                return Err(e);
            }
            Ok(())
        });
        match task.await {
            Ok(result) => Ok(result?),
            Err(e) => Err(StoreError::Database(sqlx::Error::WorkerCrashed)).inspect_err(|_| {
                tracing::error!(error = %e, "a database script task failed");
            }),
        }
    }

    /// Whether an error is a unique-constraint violation (a concurrent insert won).
    pub fn is_unique_violation(e: &sqlx::Error) -> bool {
        match e {
            sqlx::Error::Database(db) => {
                db.is_unique_violation()
                    || db
                        .code()
                        .is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
            }
            _ => false,
        }
    }

    /// SQLite allows one writer: callers serialise multi-statement writes on it.
    pub fn is_sqlite(&self) -> bool {
        self.backend == Backend::Sqlite
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
