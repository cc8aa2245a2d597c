use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;

use super::InventoryError;
use crate::yaml::Mark;

/// Variables by name, in the order they were first given.
pub type Vars = IndexMap<String, Var>;

/// A variable's value and where it was set.
#[derive(Debug, Clone, PartialEq)]
pub struct Var {
    pub value: serde_json::Value,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: Arc<PathBuf>,
    pub mark: Mark,
}

impl Origin {
    pub fn error(&self, message: impl Into<String>) -> InventoryError {
        InventoryError::At {
            path: self.path.as_ref().clone(),
            mark: self.mark,
            message: message.into(),
        }
    }
}

/// Whether a variable holds a secret by its name: such values are masked in every output.
/// `*_key_file` and `*_password_file` name paths, not secrets.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name.ends_with("_file") || name.ends_with("_path") {
        return false;
    }
    [
        "password",
        "passwd",
        "secret",
        "token",
        "_pass",
        "private_key",
        "api_key",
    ]
    .iter()
    .any(|word| name.contains(word))
        || name.ends_with("_key")
}

#[cfg(test)]
mod tests {
    use super::is_secret_name;

    #[test]
    fn secret_names_are_recognised() {
        for name in [
            "postgres_password",
            "ansible_become_pass",
            "telegram_bot_token",
            "patroni_api_secret",
            "ssh_private_key",
            "replication_key",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "ansible_ssh_private_key_file",
            "ansible_host",
            "work_mem",
            "password_file",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
