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

/// What output shows instead of a secret.
pub const MASK: &str = "********";

/// Whether a variable, or a key at any depth of one, holds a secret by its name: such values
/// are masked in every output. `*_key_file` and `*_password_file` name paths, not secrets.
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
        || name == "key"
}

/// The secrets in variable `name`: its whole value if the name is secret-like, else what is
/// under secret-named keys at any depth of its maps and lists (`receivers: [{bot_token: …}]`).
/// Strings and numbers, as output would print them.
pub fn secret_values(name: &str, value: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    let mut out = vec![];
    match value {
        _ if is_secret_name(name) => leaves(value, &mut out),
        Value::Object(map) => {
            for (k, v) in map {
                out.extend(secret_values(k, v));
            }
        }
        Value::Array(items) => {
            for item in items {
                out.extend(secret_values(name, item));
            }
        }
        _ => {}
    }
    out
}

fn leaves(value: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

/// Variable `name`'s value as output may show it: what is under a secret-named key, at any
/// depth, and any vault-encrypted value, replaced by `********`.
pub fn masked(name: &str, value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    if is_secret_name(name) || value.get("__ansible_vault").is_some() {
        return Value::String(MASK.into());
    }
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = masked(&k, v);
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| masked(name, v)).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn receivers() -> serde_json::Value {
        json!([
            {"name": "ops", "telegram_configs": [{"bot_token": "123:tg-tok3n", "chat_id": 42}]},
            {"name": "mail", "email_configs": [{"to": "a@b", "auth_password": "m4il-pw"}]},
            {"name": "hook", "webhook_configs": [{"http_config": {"authorization": {"credentials": "x"}, "basic_auth": {"password": "h00k-pw"}}}]},
        ])
    }

    #[test]
    fn secrets_are_found_under_secret_named_keys_at_any_depth() {
        let found = secret_values("alertmanager_receivers", &receivers());
        assert_eq!(found, ["123:tg-tok3n", "m4il-pw", "h00k-pw"]);
        let nested =
            json!({"api": {"key": "k3y", "secret": {"a": "s1", "b": 7}, "token_file": "/t"}});
        assert_eq!(secret_values("settings", &nested), ["k3y", "s1", "7"]);
        assert_eq!(
            secret_values("db_password", &json!(["p1", "p2"])),
            ["p1", "p2"]
        );
        assert!(secret_values("work_mem", &json!("4MB")).is_empty());
    }

    #[test]
    fn masking_hides_secret_values_at_any_depth_and_keeps_the_rest() {
        assert_eq!(
            masked("alertmanager_receivers", receivers()),
            json!([
                {"name": "ops", "telegram_configs": [{"bot_token": MASK, "chat_id": 42}]},
                {"name": "mail", "email_configs": [{"to": "a@b", "auth_password": MASK}]},
                {"name": "hook", "webhook_configs": [{"http_config": {"authorization": {"credentials": "x"}, "basic_auth": {"password": MASK}}}]},
            ])
        );
        assert_eq!(masked("api_token", json!({"a": 1})), json!(MASK));
        assert_eq!(
            masked("x", json!({"y": {"__ansible_vault": "$ANSIBLE_VAULT;1.1"}})),
            json!({"y": MASK})
        );
    }

    #[test]
    fn secret_names_are_recognised() {
        for name in [
            "postgres_password",
            "ansible_become_pass",
            "telegram_bot_token",
            "patroni_api_secret",
            "ssh_private_key",
            "replication_key",
            "bot_token",
            "auth_password",
            "key",
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
