//! The inventory's certificate authority, kept on the control machine beside the secret store:
//! `NAME.pki/` holds `ca.crt`/`ca.key` and, per holder (a host, or `control` for hactl's own
//! commands), the certificates it issued (`HOLDER/NAME.crt`, `HOLDER/NAME.key`). A second apply
//! reissues nothing; a certificate near its end or whose names changed is reissued. A user's own
//! CA (`hactl_ca_cert_file`/`hactl_ca_key_file`) signs instead of the one made here.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// The holder of hactl's own client certificate (failover-test, status, tests).
pub const CONTROL: &str = "control";
/// The name of hactl's own client certificate.
pub const CONTROL_CERT: &str = "hactl";
/// How long a CA made here is valid.
const CA_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PkiError(String);

fn err(what: impl std::fmt::Display) -> PkiError {
    PkiError(what.to_string())
}

/// Where the CA comes from: made here on the first apply, or the user's own.
#[derive(Debug, Clone)]
pub enum CaSource {
    Own,
    Given { cert: PathBuf, key: PathBuf },
}

#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    source: CaSource,
    /// Held while a certificate is read, checked or issued: hosts run in parallel. Holds what
    /// this run issued, which is not issued again in the same run (two tasks share `server`).
    lock: Mutex<std::collections::HashSet<(String, String)>>,
}

/// A certificate a holder needs.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    /// A host's inventory name, or [`CONTROL`].
    pub holder: &'a str,
    /// The file stem: `server`, `patroni-etcd`, ...
    pub name: &'a str,
    /// The subject's common name; empty for none.
    pub cn: &'a str,
    /// DNS names and IP addresses it is valid for; none for a client-only certificate.
    pub sans: &'a [String],
    /// Reissued when fewer days than this are left.
    pub renew_days: i64,
    /// How long a new one is valid.
    pub days: i64,
}

/// A certificate and its key as PEM, with the CA's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub ca: String,
    pub cert: String,
    pub key: String,
    /// Why it was (re)issued by this call, if it was.
    pub reissued: Option<String>,
}

/// What a certificate says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject_cn: String,
    pub issuer: Vec<u8>,
    pub subject: Vec<u8>,
    /// Seconds since the epoch.
    pub not_after: i64,
    /// DNS names and IP addresses, sorted.
    pub sans: Vec<String>,
}

impl CertInfo {
    /// The first certificate in `pem`.
    pub fn from_pem(pem: &str) -> Result<CertInfo, PkiError> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| err(format!("not a PEM certificate: {e}")))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| err(format!("not an X.509 certificate: {e}")))?;
        Ok(CertInfo::of(&cert))
    }

    pub fn from_der(der: &[u8]) -> Result<CertInfo, PkiError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| err(format!("not an X.509 certificate: {e}")))?;
        Ok(CertInfo::of(&cert))
    }

    fn of(cert: &x509_parser::certificate::X509Certificate<'_>) -> CertInfo {
        use x509_parser::extensions::GeneralName;
        let mut sans: Vec<String> = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    // An address written as a DNS name (see normalise_san).
                    GeneralName::DNSName(n) if n.parse::<std::net::IpAddr>().is_ok() => {
                        sans.push(format!("{DNS_PREFIX}{n}"))
                    }
                    GeneralName::DNSName(n) => sans.push(n.to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            sans.push(std::net::Ipv4Addr::from(a).to_string());
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            sans.push(std::net::Ipv6Addr::from(a).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        sans.sort();
        sans.dedup();
        let subject_cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or_default()
            .to_string();
        CertInfo {
            subject_cn,
            issuer: cert.issuer().as_raw().to_vec(),
            subject: cert.subject().as_raw().to_vec(),
            not_after: cert.validity().not_after.timestamp(),
            sans,
        }
    }

    /// Whole days left until it expires (negative once it has).
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl Pki {
    /// The PKI of an inventory: `NAME.pki/` beside `NAME.yml`, or where `hactl_pki_dir` says;
    /// signed by the CA in `hactl_ca_cert_file`/`hactl_ca_key_file` when both are given.
    pub fn of(inventory: &crate::inventory::Inventory) -> Pki {
        let var = |name: &str| inventory.all_var(name).and_then(serde_json::Value::as_str);
        let base = inventory.path.parent().unwrap_or(Path::new("."));
        let dir = match var("hactl_pki_dir") {
            Some(d) => base.join(d),
            None => {
                let stem = inventory
                    .path
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_else(|| "inventory".into());
                inventory.path.with_file_name(format!("{stem}.pki"))
            }
        };
        let source = match (var("hactl_ca_cert_file"), var("hactl_ca_key_file")) {
            (Some(cert), Some(key)) => CaSource::Given {
                cert: base.join(cert),
                key: base.join(key),
            },
            _ => CaSource::Own,
        };
        Pki::new(dir, source)
    }

    pub fn new(dir: PathBuf, source: CaSource) -> Pki {
        Pki {
            dir,
            source,
            lock: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Where the CA's certificate is, as clients on this machine read it.
    pub fn ca_path(&self) -> PathBuf {
        match &self.source {
            CaSource::Own => self.dir.join("ca.crt"),
            CaSource::Given { cert, .. } => cert.clone(),
        }
    }

    /// Where a holder's certificate and key are kept.
    pub fn paths(&self, holder: &str, name: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.join(holder);
        (d.join(format!("{name}.crt")), d.join(format!("{name}.key")))
    }

    /// The certificate `w` asks for: the one kept, or a new one when there is none, when it
    /// ends within `renew_days`, or when its names, common name or CA changed.
    pub fn issue(&self, w: &Wanted<'_>) -> Result<Issued, PkiError> {
        check_name(w.holder)?;
        check_name(w.name)?;
        let mut issued_now = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let this_run = issued_now.contains(&(w.holder.to_string(), w.name.to_string()));
        let (ca_pem, ca_key) = self.ca()?;
        let ca_info = CertInfo::from_pem(&ca_pem)
            .map_err(|e| err(format!("{}: {e}", self.ca_path().display())))?;
        let (cert_path, key_path) = self.paths(w.holder, w.name);
        let mut want_sans: Vec<String> = w
            .sans
            .iter()
            .map(|s| normalise_san(s))
            .filter(|s| !s.is_empty())
            .collect();
        want_sans.sort();
        want_sans.dedup();
        let kept = match (read_private(&cert_path)?, read_private(&key_path)?) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        };
        let why = match &kept {
            None => Some("new".to_string()),
            Some(_) if this_run => None,
            Some((cert, _)) => match CertInfo::from_pem(cert) {
                Err(e) => Some(format!("unreadable ({e})")),
                Ok(info) => {
                    let left = info.days_left(now());
                    if left < w.renew_days {
                        Some(format!(
                            "{left} days left, fewer than {} (hactl_cert_renew_days)",
                            w.renew_days
                        ))
                    } else if info.sans != want_sans {
                        Some(format!(
                            "names changed: [{}] -> [{}]",
                            info.sans.join(", "),
                            want_sans.join(", ")
                        ))
                    } else if info.subject_cn != w.cn {
                        Some(format!(
                            "common name changed: {} -> {}",
                            info.subject_cn, w.cn
                        ))
                    } else if info.issuer != ca_info.subject {
                        Some("signed by another CA".to_string())
                    } else {
                        None
                    }
                }
            },
        };
        let Some(why) = why else {
            let (cert, key) = kept.unwrap_or_default();
            return Ok(Issued {
                ca: ca_pem,
                cert,
                key,
                reissued: None,
            });
        };
        let key = KeyPair::generate().map_err(|e| err(format!("making a key: {e}")))?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = san_types(&want_sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "hactl");
        // No common name at all for a client of etcd's JSON gateway (Patroni): with auth on,
        // etcd refuses a gateway request whose certificate names one.
        if !w.cn.is_empty() {
            dn.push(DnType::CommonName, w.cn);
        }
        params.distinguished_name = dn;
        params.serial_number = Some(serial()?);
        let start = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_before = start;
        params.not_after = start + Duration::days(w.days);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        // Servers also connect to each other (etcd peers, Patroni members): both uses.
        params.extended_key_usages = if w.sans.is_empty() {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        };
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
            .map_err(|e| err(format!("{}: {e}", self.ca_path().display())))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| err(format!("signing {} for {}: {e}", w.name, w.holder)))?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        private_dir(&self.dir)?;
        private_dir(&self.dir.join(w.holder))?;
        write_private(&key_path, key_pem.as_bytes())?;
        write_private(&cert_path, cert_pem.as_bytes())?;
        issued_now.insert((w.holder.to_string(), w.name.to_string()));
        Ok(Issued {
            ca: ca_pem,
            cert: cert_pem,
            key: key_pem,
            reissued: Some(why),
        })
    }

    /// The CA's certificate (PEM) and key: the user's, or the one kept here (made the first
    /// time).
    fn ca(&self) -> Result<(String, KeyPair), PkiError> {
        let (cert_path, key_path) = match &self.source {
            CaSource::Given { cert, key } => (cert.clone(), key.clone()),
            CaSource::Own => (self.dir.join("ca.crt"), self.dir.join("ca.key")),
        };
        if let (Some(cert), Some(key)) = (read_private(&cert_path)?, read_private(&key_path)?) {
            let key = KeyPair::from_pem(&key)
                .map_err(|e| err(format!("{}: not a usable key: {e}", key_path.display())))?;
            return Ok((cert, key));
        }
        if let CaSource::Given { .. } = self.source {
            return Err(err(format!(
                "hactl_ca_cert_file/hactl_ca_key_file: cannot read {} and {}",
                cert_path.display(),
                key_path.display()
            )));
        }
        let key = KeyPair::generate().map_err(|e| err(format!("making the CA's key: {e}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        dn.push(DnType::CommonName, format!("hactl CA {name}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(serial()?);
        let start = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_before = start;
        params.not_after = start + Duration::days(CA_DAYS);
        let cert = params
            .self_signed(&key)
            .map_err(|e| err(format!("making the CA: {e}")))?;
        private_dir(&self.dir)?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        write_private(&cert_path, cert.pem().as_bytes())?;
        Ok((cert.pem(), key))
    }
}

/// `192.168.0.1` and `ptrn-1` as they are; anything else is a DNS name, lower-cased.
///
/// `dns:ADDRESS` asks for an IP address as a DNS name too: some clients (pgBackRest 2.45) match
/// the host they connect to against DNS names only. `dns:` before a name is just the name.
fn normalise_san(s: &str) -> String {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix(DNS_PREFIX) {
        return match rest.trim().parse::<std::net::IpAddr>() {
            Ok(ip) => format!("{DNS_PREFIX}{ip}"),
            Err(_) => rest.trim().to_ascii_lowercase(),
        };
    }
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => s.to_ascii_lowercase(),
    }
}

const DNS_PREFIX: &str = "dns:";

/// The certificate's names for rcgen: addresses as IP addresses, `dns:ADDRESS` as a DNS name.
fn san_types(sans: &[String]) -> Result<Vec<rcgen::SanType>, PkiError> {
    sans.iter()
        .map(|s| {
            let bad = |e: rcgen::Error| err(format!("certificate name {s}: {e}"));
            if let Some(name) = s.strip_prefix(DNS_PREFIX) {
                return Ok(rcgen::SanType::DnsName(
                    name.to_string().try_into().map_err(bad)?,
                ));
            }
            match s.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
                Err(_) => Ok(rcgen::SanType::DnsName(
                    s.to_string().try_into().map_err(bad)?,
                )),
            }
        })
        .collect()
}

/// Holders and names become file names: no paths, no dots in front.
fn check_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "`{name}` cannot name a certificate: letters, digits, -, _ and . only"
        )))
    }
}

fn serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| err(format!("/dev/urandom: {e}")))?;
    // Positive, and never starting with a zero byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A directory only its owner may enter; never a symlink.
fn private_dir(dir: &Path) -> Result<(), PkiError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(err(format!(
            "{}: is a symlink; hactl keeps keys only in a real directory",
            dir.display()
        ))),
        Ok(m) if !m.is_dir() => Err(err(format!("{}: not a directory", dir.display()))),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => Err(err(format!(
            "{}: group or others may enter it (mode {:o}): chmod 700 {}",
            dir.display(),
            m.permissions().mode() & 0o777,
            dir.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(format!("{}: {e}", dir.display()))),
        Err(e) => Err(err(format!("{}: {e}", dir.display()))),
    }
}

/// A file's text, read without following a symlink; None when there is none. A key others may
/// read is refused, as ssh refuses such a key.
fn read_private(path: &Path) -> Result<Option<String>, PkiError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("{}: {e}", path.display()))),
    };
    let meta = file
        .metadata()
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    let is_key = path.extension().is_some_and(|e| e == "key");
    if is_key && meta.permissions().mode() & 0o077 != 0 {
        return Err(err(format!(
            "{}: group or others may read this key (mode {:o}): chmod 600 {}",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        )));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    Ok(Some(text))
}

/// Writes 0600 through a temporary file created exclusively, then renamed into place.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    crate::secrets::write_private(path, &path.with_extension("tmp"), bytes)
        .map_err(|e| err(format!("cannot save {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted<'a>(sans: &'a [String]) -> Wanted<'a> {
        Wanted {
            holder: "ptrn-1",
            name: "server",
            cn: "ptrn-1",
            sans,
            renew_days: 30,
            days: 365,
        }
    }

    #[test]
    fn an_address_asked_for_as_a_dns_name_is_both_and_is_not_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path().join("lab.pki"), CaSource::Own);
        let sans = vec![
            "ptrn-1".to_string(),
            "10.0.0.11".to_string(),
            "dns:10.0.0.11".to_string(),
            "dns:Name".to_string(),
        ];
        let first = pki.issue(&wanted(&sans)).unwrap();
        let info = CertInfo::from_pem(&first.cert).unwrap();
        assert_eq!(info.sans, ["10.0.0.11", "dns:10.0.0.11", "name", "ptrn-1"]);
        let again = Pki::new(dir.path().join("lab.pki"), CaSource::Own);
        assert!(again.issue(&wanted(&sans)).unwrap().reissued.is_none());
    }

    #[test]
    fn a_certificate_is_issued_once_kept_private_and_reissued_when_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path().join("lab.pki"), CaSource::Own);
        let sans = vec!["ptrn-1".to_string(), "10.0.0.11".to_string()];
        let first = pki.issue(&wanted(&sans)).unwrap();
        assert_eq!(first.reissued.as_deref(), Some("new"));
        let info = CertInfo::from_pem(&first.cert).unwrap();
        assert_eq!(info.sans, ["10.0.0.11", "ptrn-1"]);
        assert_eq!(info.subject_cn, "ptrn-1");
        assert!((364..=365).contains(&info.days_left(now())));
        assert_eq!(info.issuer, CertInfo::from_pem(&first.ca).unwrap().subject);

        let again = Pki::new(dir.path().join("lab.pki"), CaSource::Own);
        let second = again.issue(&wanted(&sans)).unwrap();
        assert_eq!(second.reissued, None);
        assert_eq!((&second.cert, &second.key), (&first.cert, &first.key));

        for p in ["lab.pki", "lab.pki/ptrn-1"] {
            let mode = std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{p}");
        }
        for p in ["lab.pki/ca.key", "lab.pki/ptrn-1/server.key"] {
            let mode = std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{p}");
        }

        let more = vec!["ptrn-1".into(), "10.0.0.11".into(), "10.0.0.100".into()];
        let third = again.issue(&wanted(&more)).unwrap();
        assert!(third.reissued.unwrap().starts_with("names changed"));
        assert_ne!(third.key, first.key);
    }

    #[test]
    fn a_certificate_within_the_renewal_window_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path().join("lab.pki"), CaSource::Own);
        let first = pki.issue(&wanted(&[])).unwrap();
        let renew = Wanted {
            renew_days: 400,
            ..wanted(&[])
        };
        let second = Pki::new(dir.path().join("lab.pki"), CaSource::Own)
            .issue(&renew)
            .unwrap();
        assert!(second.reissued.unwrap().contains("fewer than 400"));
        assert_ne!(second.cert, first.cert);
        assert_eq!(second.ca, first.ca);
        // Issued once per run: a second task asking for the same one gets the same one.
        assert_eq!(pki.issue(&renew).unwrap().reissued, None);
    }

    #[test]
    fn a_key_others_can_read_or_a_symlinked_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path().join("lab.pki"), CaSource::Own);
        pki.issue(&wanted(&[])).unwrap();
        let key = dir.path().join("lab.pki/ca.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = pki.issue(&wanted(&[])).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");

        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("link.pki")).unwrap();
        let linked = Pki::new(dir.path().join("link.pki"), CaSource::Own);
        let e = linked.issue(&wanted(&[])).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_users_own_ca_signs_instead() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = Pki::new(dir.path().join("theirs.pki"), CaSource::Own);
        theirs.issue(&wanted(&[])).unwrap();
        let given = CaSource::Given {
            cert: dir.path().join("theirs.pki/ca.crt"),
            key: dir.path().join("theirs.pki/ca.key"),
        };
        let pki = Pki::new(dir.path().join("lab.pki"), given);
        let issued = pki.issue(&wanted(&["db.example".into()])).unwrap();
        let ca = std::fs::read_to_string(dir.path().join("theirs.pki/ca.crt")).unwrap();
        assert_eq!(issued.ca, ca);
        assert!(!dir.path().join("lab.pki/ca.key").exists());
    }
}
