//! Checksum algorithms as Ansible names them (`stat`'s `checksum_algorithm`, `get_url`'s
//! `checksum: sha256:...`): computed on the host with coreutils, or here on downloaded bytes.

use serde::Deserialize;
use sha2::Digest as _;

use crate::template::hex;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Algorithm {
    Md5,
    #[default]
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

const NAMES: [(&str, Algorithm); 6] = [
    ("md5", Algorithm::Md5),
    ("sha1", Algorithm::Sha1),
    ("sha224", Algorithm::Sha224),
    ("sha256", Algorithm::Sha256),
    ("sha384", Algorithm::Sha384),
    ("sha512", Algorithm::Sha512),
];

impl TryFrom<String> for Algorithm {
    type Error = String;

    fn try_from(name: String) -> Result<Algorithm, String> {
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                format!("checksum algorithm: expected one of md5, sha1, sha224, sha256, sha384, sha512, got {name:?}")
            })
    }
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("sha1", |(n, _)| n)
    }

    /// The coreutils command that prints a file's digest first (`sha1sum`).
    pub fn command(self) -> String {
        format!("{}sum", self.name())
    }

    /// The hex digest of `bytes`.
    pub fn of(self, bytes: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex(&md5::Md5::digest(bytes)),
            Algorithm::Sha1 => hex(&sha1::Sha1::digest(bytes)),
            Algorithm::Sha224 => hex(&sha2::Sha224::digest(bytes)),
            Algorithm::Sha256 => hex(&sha2::Sha256::digest(bytes)),
            Algorithm::Sha384 => hex(&sha2::Sha384::digest(bytes)),
            Algorithm::Sha512 => hex(&sha2::Sha512::digest(bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_are_named_as_ansible_names_them() {
        assert_eq!(
            Algorithm::Sha1.of(b"hello\n"),
            "f572d396fae9206628714fb2ce00f72e94f2258f"
        );
        assert_eq!(
            Algorithm::Md5.of(b"hello\n"),
            "b1946ac92492d2347c6235b4d2611184"
        );
        assert_eq!(Algorithm::Sha256.command(), "sha256sum");
        let bad = serde_json::from_value::<Algorithm>(serde_json::json!("crc32")).unwrap_err();
        assert!(bad.to_string().contains("expected one of md5"), "{bad}");
    }
}
