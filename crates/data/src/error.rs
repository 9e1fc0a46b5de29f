//! The crate's single error type.
//!
//! Variants have stable meanings so callers (the API, the CLI) can map them to
//! status codes without parsing messages; messages name the file, line, row or
//! column involved so users can fix their data without a debugger.

use std::path::PathBuf;

/// Every fallible operation in this crate returns this error.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A text input (CSV, JSONL) could not be parsed; `line` is 1-based.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: u64,
        message: String,
    },
    /// Tables, columns or schemas do not fit together.
    #[error("schema error: {0}")]
    Schema(String),
    /// Stored bytes are damaged: bad shard encoding, checksum mismatch,
    /// undecodable image, truncated IDX file.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A shard, file or directory that should exist does not.
    #[error("not found: {0}")]
    NotFound(String),
    /// A caller-supplied option or step parameter is wrong; `field` names the
    /// column or option.
    #[error("invalid `{field}`: {message}")]
    Invalid { field: String, message: String },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DataError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
