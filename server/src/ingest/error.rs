//! Why a snapshot, delta or release was not applied: the ingest path's own error, which the
//! API maps to an HTTP status (`api::ApiError::Ingest`). No HTTP here.

/// Why ingesting failed; the previous maps stay in force in every case.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Malformed body (bad JSON or binary, unknown encoding).
    #[error("{0}")]
    BadRequest(String),
    /// A domain the agent may not speak for.
    #[error("{0}")]
    Forbidden(String),
    /// A version not above the applied one.
    #[error("{message}")]
    Conflict {
        /// Explanation.
        message: String,
        /// What the server holds.
        applied_version: u64,
    },
    /// A body type the endpoint does not read.
    #[error("{0}")]
    UnsupportedMedia(String),
    /// Body too large, compressed or not.
    #[error("{0}")]
    TooLarge(String),
    /// The snapshot is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A delta against content this receiver does not hold applied.
    #[error("{0}")]
    UnknownBase(String),
    /// The shrink guard holds the snapshot.
    #[error("{0}")]
    Held(String),
    /// Writing the maps failed.
    #[error("the maps could not be written; the previous maps stay in force")]
    ApplyFailed,
    /// Anything else (a database write, a task); never shown to the client.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl IngestError {
    /// The stable `error` code clients and the history see.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::BadRequest(_) => "bad_request",
            IngestError::Forbidden(_) => "forbidden",
            IngestError::Conflict { .. } => "version_conflict",
            IngestError::UnsupportedMedia(_) => "unsupported_media_type",
            IngestError::TooLarge(_) => "too_large",
            IngestError::Invalid(_) => "invalid_snapshot",
            IngestError::UnknownBase(_) => "unknown_base",
            IngestError::Held(_) => "held",
            IngestError::ApplyFailed => "apply_failed",
            IngestError::Internal(_) => "internal",
        }
    }
}
