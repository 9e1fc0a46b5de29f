use trainyard_client::ClientError;
use trainyard_data::DataError;
use trainyard_engine::EngineError;

/// How a built-in task fails. The messages are what a person reads in the job's log.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Data(#[from] DataError),
    /// A training file or a task argument that does not fit the data or the model.
    #[error("{0}")]
    Invalid(String),
    /// A document (a model card, a proposed tag set) that cannot be read.
    #[error("{what}: {source}")]
    Unreadable {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The engine's thread ended without an answer (it panicked).
    #[error("the engine's thread ended: {0}")]
    Thread(#[from] tokio::task::JoinError),
    #[error("{what}: {source}")]
    Context {
        what: String,
        #[source]
        source: Box<TaskError>,
    },
}

impl TaskError {
    pub(crate) fn context(self, what: impl Into<String>) -> Self {
        Self::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }

    /// The engine's error under any context, when that is what it is.
    pub fn engine(&self) -> Option<&EngineError> {
        match self {
            Self::Engine(e) => Some(e),
            Self::Context { source, .. } => source.engine(),
            _ => None,
        }
    }
}

impl From<serde_json::Error> for TaskError {
    fn from(source: serde_json::Error) -> Self {
        Self::Unreadable {
            what: "JSON".into(),
            source,
        }
    }
}
