//! How hactl's commands and the prober reach the stack's TLS services: the inventory's CA (the
//! only one trusted, names checked) and a client certificate, for reqwest (Patroni's REST API),
//! tonic (etcd) and tokio-postgres (PostgreSQL with verify-full), all on rustls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Every server certificate a client of this process verified: the server's name and when its
/// certificate ends (seconds since the epoch), for the prober's expiry gauge.
static SEEN: LazyLock<Mutex<BTreeMap<String, i64>>> = LazyLock::new(Default::default);

/// The certificates met so far: (server name, end of validity in seconds since the epoch).
pub fn certificates_seen() -> Vec<(String, i64)> {
    let seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    seen.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

/// Verifies as webpki does (chain to the CA, the name), and notes when the certificate ends.
#[derive(Debug)]
struct Recording {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(info) = crate::pki::CertInfo::from_der(end_entity.as_ref()) {
            let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
            seen.insert(server_name.to_str().to_string(), info.not_after);
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A CA, certificate or key that cannot be read or used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// Where a client's CA, certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A client's CA, certificate and key, read; with the PostgreSQL connector made from them once.
#[derive(Clone)]
pub struct ClientTls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    pg: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls(********)")
    }
}

fn read(path: &Path, what: &str, hint: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("{what} {}: {e}{hint}", path.display())))
}

impl TlsFiles {
    /// Reads the three files; `hint` says what to do when one is missing.
    pub fn load(&self, hint: &str) -> Result<ClientTls, TlsError> {
        let mut tls = ClientTls {
            ca: read(&self.ca, "the CA certificate", hint)?,
            cert: read(&self.cert, "the client certificate", hint)?,
            key: read(&self.key, "the client key", hint)?,
            pg: None,
        };
        tls.pg = Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls.rustls()?));
        Ok(tls)
    }
}

impl ClientTls {
    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&self.ca) {
            let cert = cert.map_err(|e| TlsError(format!("the CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| TlsError(format!("the CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(TlsError(
                "the CA certificate: no PEM certificate in it".into(),
            ));
        }
        Ok(roots)
    }

    /// A rustls client that trusts only the CA and shows the certificate.
    pub fn rustls(&self) -> Result<rustls::ClientConfig, TlsError> {
        use rustls::pki_types::pem::PemObject as _;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError(format!("the client certificate: {e}")))?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| TlsError(format!("the client key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError(format!("the CA certificate: {e}")))?;
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Recording { inner }))
            .with_client_auth_cert(certs, key)
            .map_err(|e| TlsError(format!("the client certificate and key: {e}")))
    }

    /// reqwest trusting only the CA, showing the certificate.
    pub fn reqwest(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        Ok(builder.use_preconfigured_tls(self.rustls()?))
    }

    /// etcd's client (tonic) trusting the CA, showing the certificate.
    pub fn etcd(&self) -> etcd_client::TlsOptions {
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca))
            .identity(etcd_client::Identity::from_pem(&self.cert, &self.key))
    }

    /// tokio-postgres over rustls: the server's certificate must chain to the CA and name the
    /// address connected to (libpq's verify-full).
    pub fn postgres(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, TlsError> {
        match &self.pg {
            Some(pg) => Ok(pg.clone()),
            None => Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
                self.rustls()?,
            )),
        }
    }
}
