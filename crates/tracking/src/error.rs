use trainyard_store::StoreError;

/// What tracking operations refuse, in MLflow's vocabulary (the API maps each to its code).
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    /// `INVALID_PARAMETER_VALUE` (400): bad input, a refused state change, a bad filter.
    #[error("{0}")]
    InvalidParameter(String),
    /// `RESOURCE_ALREADY_EXISTS` (400).
    #[error("{0}")]
    AlreadyExists(String),
    /// `RESOURCE_DOES_NOT_EXIST` (404).
    #[error("{0}")]
    NotFound(String),
    /// `PERMISSION_DENIED` (403): the caller's token may not make this change (a job's
    /// token writing outside what its job owns).
    #[error("{0}")]
    Forbidden(String),
    /// `NOT_IMPLEMENTED` (501): an optional protocol feature this server leaves out.
    #[error("{0}")]
    NotImplemented(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for TrackingError {
    fn from(e: sqlx::Error) -> Self {
        TrackingError::Store(StoreError::Database(e))
    }
}

impl From<object_store::Error> for TrackingError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => {
                TrackingError::NotFound(format!("No such artifact: '{path}'"))
            }
            other => TrackingError::Store(StoreError::Blob(other)),
        }
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> TrackingError {
    TrackingError::InvalidParameter(message.into())
}

pub(crate) fn not_found(message: impl Into<String>) -> TrackingError {
    TrackingError::NotFound(message.into())
}
