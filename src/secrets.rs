//! Secrets generated once and kept beside the inventory, in a file only its owner can read:
//! `lookup('password', 'postgres_superuser')` in a role default. An inventory or `-e` value
//! for the same variable wins; the store only fills in what nobody gave.

use std::io::Read as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use indexmap::IndexMap;

/// Characters of generated secrets: safe in YAML, URLs, connection strings and shells.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
const DEFAULT_LENGTH: usize = 32;
const NO_FOLLOW: i32 = nix::libc::O_NOFOLLOW;

/// A secret that cannot be read, made or kept, and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(String);

#[derive(Debug)]
pub struct SecretStore {
    path: PathBuf,
    values: Mutex<Option<IndexMap<String, String>>>,
}

impl SecretStore {
    /// The store of an inventory, as its `hactl_secrets_file` var (group all) says.
    pub fn of(inventory: &crate::inventory::Inventory) -> SecretStore {
        let configured = inventory
            .all_var("hactl_secrets_file")
            .and_then(serde_json::Value::as_str);
        SecretStore::for_inventory(&inventory.path, configured)
    }

    /// The store of an inventory: `NAME.secrets.yml` beside `NAME.yml`, or the file its
    /// `hactl_secrets_file` var names (relative to the inventory's folder).
    pub fn for_inventory(inventory: &Path, configured: Option<&str>) -> SecretStore {
        let path = match configured {
            Some(p) => inventory
                .parent()
                .map(|dir| dir.join(p))
                .unwrap_or_else(|| PathBuf::from(p)),
            None => {
                let stem = inventory
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_else(|| "inventory".into());
                inventory.with_file_name(format!("{stem}.secrets.yml"))
            }
        };
        SecretStore {
            path,
            values: Mutex::new(None),
        }
    }

    /// The secret `name`, generated (`length` characters) and saved the first time.
    pub fn get_or_create(&self, name: &str, length: Option<usize>) -> Result<String, SecretError> {
        let mut guard = self.values.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.read()?);
        }
        let values = guard.get_or_insert_with(IndexMap::new);
        if let Some(v) = values.get(name) {
            return Ok(v.clone());
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
            return Err(SecretError(format!(
                "secret names are letters, digits and _ (got `{name}`)"
            )));
        }
        let value = generate(length.unwrap_or(DEFAULT_LENGTH))?;
        values.insert(name.to_string(), value.clone());
        self.write(values)?;
        Ok(value)
    }

    /// Every secret read or made so far, to keep them out of the output.
    pub fn values(&self) -> Vec<String> {
        let guard = self.values.lock().unwrap_or_else(|p| p.into_inner());
        guard.iter().flat_map(|m| m.values().cloned()).collect()
    }

    fn read(&self) -> Result<IndexMap<String, String>, SecretError> {
        let shown = self.path.display();
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(NO_FOLLOW)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(IndexMap::new()),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(SecretError(format!(
                    "{shown}: the secret store is a symbolic link, which hactl does not follow \
                     — put the file itself there"
                )))
            }
            Err(e) => return Err(SecretError(format!("{shown}: {e}"))),
        };
        let mode = file
            .metadata()
            .map_err(|e| SecretError(format!("{shown}: {e}")))?
            .permissions()
            .mode();
        // Like ssh with a private key: secrets others can read are no longer secret.
        if mode & 0o077 != 0 {
            return Err(SecretError(format!(
                "{shown}: the secret store is readable or writable by group or others \
                 (mode {:04o}) — run `chmod 600 {shown}`",
                mode & 0o7777
            )));
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| SecretError(format!("{shown}: {e}")))?;
        let node = crate::yaml::parse(&text).map_err(|e| {
            SecretError(format!("{}:{}: {}", self.path.display(), e.mark, e.message))
        })?;
        let mut out = IndexMap::new();
        if let serde_json::Value::Object(map) = node.to_json() {
            for (k, v) in map {
                if let Some(s) = v.as_str() {
                    out.insert(k, s.to_string());
                }
            }
        }
        Ok(out)
    }

    fn write(&self, values: &IndexMap<String, String>) -> Result<(), SecretError> {
        let mut text =
            String::from("# Secrets hactl generated for this inventory. Keep this file private.\n");
        for (k, v) in values {
            text.push_str(&format!("{k}: \"{v}\"\n"));
        }
        write_private(
            &self.path,
            &self.path.with_extension("yml.tmp"),
            text.as_bytes(),
        )
        .map_err(|e| {
            SecretError(format!(
                "cannot save secrets to {}: {e}",
                self.path.display()
            ))
        })
    }
}

/// Writes `bytes` to `path` through `tmp`, created 0600, exclusively and without following a
/// symlink (a file or link left at the temporary path is removed, never written through), then
/// renamed over `path`. The secret store and the PKI's keys are written so.
pub(crate) fn write_private(
    path: &std::path::Path,
    tmp: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    match std::fs::remove_file(tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(NO_FOLLOW)
        .mode(0o600)
        .open(tmp)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

/// `n` bytes from the kernel's random source.
pub(crate) fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn generate(length: usize) -> Result<String, SecretError> {
    let bytes = random_bytes(length * 2).map_err(|e| SecretError(format!("/dev/urandom: {e}")))?;
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    let chosen: String = bytes
        .iter()
        .filter(|b| (**b as usize) < limit)
        .take(length)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    if chosen.len() < length {
        return generate(length);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_made_once_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::for_inventory(&dir.path().join("prod.yml"), None);
        let a = store.get_or_create("pg_superuser", None).unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(store.get_or_create("pg_superuser", None).unwrap(), a);
        let path = dir.path().join("prod.secrets.yml");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = SecretStore::for_inventory(&dir.path().join("prod.yml"), None);
        assert_eq!(again.get_or_create("pg_superuser", Some(8)).unwrap(), a);
        assert_ne!(again.get_or_create("replication", Some(8)).unwrap(), a);
    }

    #[test]
    fn a_store_group_or_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prod.secrets.yml");
        std::fs::write(&path, "pg_superuser: \"x\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SecretStore::for_inventory(&dir.path().join("prod.yml"), None);
        let err = store.get_or_create("pg_superuser", None).unwrap_err();
        let shown = path.display();
        assert_eq!(
            err.to_string(),
            format!(
                "{shown}: the secret store is readable or writable by group or others \
                 (mode 0644) — run `chmod 600 {shown}`"
            )
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(store.get_or_create("pg_superuser", None).unwrap(), "x");
    }

    #[test]
    fn a_store_that_is_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere.yml");
        std::fs::write(&elsewhere, "pg_superuser: \"planted\"\n").unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("prod.secrets.yml");
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let store = SecretStore::for_inventory(&dir.path().join("prod.yml"), None);
        let err = store.get_or_create("pg_superuser", None).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_symlink_at_the_temporary_path_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("prod.secrets.yml.tmp")).unwrap();
        let store = SecretStore::for_inventory(&dir.path().join("prod.yml"), None);
        store.get_or_create("pg_superuser", None).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
        let saved = std::fs::symlink_metadata(dir.path().join("prod.secrets.yml")).unwrap();
        assert!(saved.file_type().is_file());
        assert_eq!(saved.permissions().mode() & 0o777, 0o600);
    }
}
