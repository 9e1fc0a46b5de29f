use reqwest::StatusCode;

/// What a call to the server can end in, typed so callers branch on the server's stable
/// code (`already_exists`, MLflow's `RESOURCE_ALREADY_EXISTS`) instead of its message.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the Trainyard server at {base}: {source}")]
    Unreachable {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{message} (set TRAINYARD_TOKEN, or run next to the server's data dir so the CLI finds admin-token)")]
    Unauthorized { message: String },
    /// The server answered with an error: its status, its stable code when the body had
    /// one (REST v1 `error.code`, MLflow `error_code`), and its message.
    #[error("{message} (HTTP {})", status.as_u16())]
    Api {
        status: StatusCode,
        code: Option<String>,
        message: String,
    },
    #[error("reading the server's answer: {0}")]
    Body(#[from] reqwest::Error),
    /// The answer was well-formed but not what the call expects.
    #[error("{0}")]
    Unexpected(String),
    /// A failed call, with what it was for.
    #[error("{what}: {source}")]
    Context {
        what: String,
        #[source]
        source: Box<ClientError>,
    },
}

impl ClientError {
    /// Wraps the error with what the call was for (`dataset digits:latest`).
    pub fn context(self, what: impl Into<String>) -> Self {
        Self::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }

    /// The server's stable code, through any context.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => code.as_deref(),
            Self::Context { source, .. } => source.code(),
            _ => None,
        }
    }

    /// The HTTP status the server answered with, through any context.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Unauthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            Self::Context { source, .. } => source.status(),
            _ => None,
        }
    }
}

/// Adds what a call was for to its error.
pub trait Context<T> {
    fn context_with(self, what: impl FnOnce() -> String) -> Result<T, ClientError>;
}

impl<T> Context<T> for Result<T, ClientError> {
    fn context_with(self, what: impl FnOnce() -> String) -> Result<T, ClientError> {
        self.map_err(|e| e.context(what()))
    }
}
