/// Everything that can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach the database at {url}: {source}")]
    DatabaseUnreachable {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database schema migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot use the blob store at {url}: {message}")]
    BlobsUnreachable { url: String, message: String },
    #[error("unsupported {what} URL `{url}`: {message}")]
    BadUrl {
        what: &'static str,
        url: String,
        message: String,
    },
    #[error("blob store error: {0}")]
    Blob(#[from] object_store::Error),
    #[error("corrupt row for {what}: {message}")]
    Corrupt { what: String, message: String },
}

impl StoreError {
    pub(crate) fn corrupt(what: impl Into<String>, message: impl ToString) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            message: message.to_string(),
        }
    }
}

/// A URL with its password replaced, safe to print in logs and error messages.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact_url("sqlite:///x.db"), "sqlite:///x.db");
    }
}
