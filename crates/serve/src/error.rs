//! The serving layer's one error type; `api` maps each kind to an HTTP status and a gRPC code.

/// What went wrong, by who has to act: the client (`Invalid`, `NotFound`), the operator
/// (`Unavailable`: a model that cannot load or a full memory budget) or us (`Internal`).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A bad request: shape, datatype, element count, unknown input, bad parameter.
    #[error("{0}")]
    Invalid(String),
    /// Unknown model or version.
    #[error("{0}")]
    NotFound(String),
    /// The model exists but cannot answer now (failed to load, unloaded, budget exhausted).
    #[error("{0}")]
    Unavailable(String),
    /// Something this server does not do (named repositories, in-memory model files).
    #[error("{0}")]
    Unsupported(String),
    /// A runtime or storage failure.
    #[error("{0}")]
    Internal(String),
}

impl ServeError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ServeError::Invalid(message.into())
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ServeError::NotFound(message.into())
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ServeError::Unavailable(message.into())
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ServeError::Internal(message.into())
    }
}

impl From<trainyard_tracking::TrackingError> for ServeError {
    fn from(e: trainyard_tracking::TrackingError) -> Self {
        use trainyard_tracking::TrackingError as T;
        match e {
            // The storage failing is ours; anything else is about the data asked for.
            T::Store(_) => ServeError::Internal(format!("model registry: {e}")),
            T::NotFound(_) => ServeError::NotFound(format!("model registry: {e}")),
            T::InvalidParameter(_)
            | T::AlreadyExists(_)
            | T::Forbidden(_)
            | T::NotImplemented(_) => ServeError::Unavailable(format!("model registry: {e}")),
        }
    }
}
