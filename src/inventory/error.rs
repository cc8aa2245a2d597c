use std::path::PathBuf;

use crate::yaml::Mark;

/// An inventory that cannot be used; the message says where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{mark}: {message}", path.display())]
    At {
        path: PathBuf,
        mark: Mark,
        message: String,
    },
}
