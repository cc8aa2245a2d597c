//! `--web-config FILE`: TLS and basic auth for the prober's own endpoints, in the file format
//! of Prometheus's exporters (`tls_server_config`, `basic_auth_users` with bcrypt hashes), so
//! one file shape serves node_exporter, Prometheus, Alertmanager and the prober. The
//! certificate is read again when its file changes: a renewed one is served without a restart.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Deserialize;
use sha2::Digest as _;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// A web configuration that cannot be used: the file and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct WebConfigError {
    file: String,
    message: String,
}

/// What the server does with each connection and request.
pub struct Web {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    users: BTreeMap<String, String>,
    /// `user` + sha256 of passwords that matched their hash: bcrypt once, not per scrape.
    verified: Mutex<HashSet<(String, [u8; 32])>>,
}

impl Web {
    /// No TLS, no auth (no `--web-config`).
    pub fn open() -> Web {
        Web {
            tls: None,
            users: BTreeMap::new(),
            verified: Mutex::new(HashSet::new()),
        }
    }

    pub fn load(path: &Path) -> Result<Web, WebConfigError> {
        let file = path.display().to_string();
        let bad = |message: String| WebConfigError {
            file: file.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let node = crate::yaml::parse(&text)
            .map_err(|e| bad(format!("{}: {}", e.mark.line, e.message)))?;
        let raw: RawConfig =
            serde_json::from_value(node.to_json()).map_err(|e| bad(e.to_string()))?;
        for (user, hash) in &raw.basic_auth_users {
            if !hash.starts_with("$2") {
                return Err(bad(format!(
                    "basic_auth_users: {user}: not a bcrypt hash (it starts with $2)"
                )));
            }
        }
        let tls = match raw.tls_server_config {
            None => None,
            Some(t) => {
                let resolver = Arc::new(Reloading::new(t.cert_file, t.key_file));
                resolver.current().map_err(bad)?;
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| bad(e.to_string()))?
                    .with_no_client_auth()
                    .with_cert_resolver(resolver);
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
            }
        };
        Ok(Web {
            tls,
            users: raw.basic_auth_users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Whether a request with this `Authorization` header may be answered.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(basic) else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            return false;
        };
        let key = (user, sha2::Sha256::digest(password.as_bytes()).into());
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.contains(&key) {
            return true;
        }
        let ok = bcrypt::verify(&password, hash).unwrap_or(false);
        if ok {
            verified.insert(key);
        }
        ok
    }
}

/// `Basic base64(user:password)`.
fn basic(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The certificate and key, read again when either file changed.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    cache: Mutex<Option<(SystemTime, SystemTime, Arc<rustls::sign::CertifiedKey>)>>,
}

impl Reloading {
    fn new(cert: PathBuf, key: PathBuf) -> Reloading {
        Reloading {
            cert,
            key,
            cache: Mutex::new(None),
        }
    }

    fn current(&self) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
        use rustls::pki_types::pem::PemObject as _;
        let modified = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        let (c, k) = (modified(&self.cert)?, modified(&self.key)?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cm, km, key)) = cache.as_ref() {
            if *cm == c && *km == k {
                return Ok(key.clone());
            }
        }
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(&self.cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", self.cert.display()))?;
        let der = rustls::pki_types::PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        let key = Arc::new(rustls::sign::CertifiedKey::new(certs, signing));
        *cache = Some((c, k, key.clone()));
        Ok(key)
    }
}

impl rustls::server::ResolvesServerCert for Reloading {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        match self.current() {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(error = %e, "the web certificate cannot be read");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> String {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn basic_auth_takes_only_the_right_user_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(
            &path,
            format!("basic_auth_users:\n  prometheus: '{hash}'\n"),
        )
        .unwrap();
        let web = Web::load(&path).unwrap();
        assert!(web.allows(Some(&header("prometheus", "s3cret"))));
        assert!(web.allows(Some(&header("prometheus", "s3cret"))), "cached");
        assert!(!web.allows(Some(&header("prometheus", "wrong"))));
        assert!(!web.allows(Some(&header("other", "s3cret"))));
        assert!(!web.allows(None));
        assert!(Web::open().allows(None));
    }

    #[test]
    fn a_plain_password_where_a_hash_belongs_is_refused_naming_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, "basic_auth_users:\n  prometheus: s3cret\n").unwrap();
        let e = Web::load(&path).err().unwrap().to_string();
        assert!(e.contains("prometheus: not a bcrypt hash"), "{e}");
    }
}
