use std::path::PathBuf;

use crate::yaml::Mark;

/// An inventory that cannot be used; the message says where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The io error is the message, not a source: shown once, not again as its cause.
    #[error("{}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{mark}: {message}", path.display())]
    At {
        path: PathBuf,
        mark: Mark,
        message: String,
    },
}
