//! A release server on loopback for the `release` module: one tarball and its checksums file,
//! counting downloads, so tests can tell that a run fetched it once (or not at all).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sha2::Digest as _;

pub const TARBALL: &str = "hactl-hello-1.0.tar.gz";
pub const BINARY_OUTPUT: &str = "hello from hactl-hello 1.0";

pub struct ReleaseServer {
    pub port: u16,
    pub sha256: String,
    downloads: Arc<AtomicUsize>,
}

fn tarball() -> Vec<u8> {
    let script = format!("#!/bin/sh\necho '{BINARY_OUTPUT}'\n");
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (path, data, mode) in [
        ("hactl-hello-1.0/hactl-hello", script.as_bytes(), 0o755),
        (
            "hactl-hello-1.0/README",
            b"a test release\n".as_slice(),
            0o644,
        ),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        builder
            .append_data(&mut header, path, data)
            .expect("tar entry");
    }
    builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .expect("tarball")
}

impl ReleaseServer {
    pub fn start() -> ReleaseServer {
        let body = tarball();
        let sha256: String = sha2::Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let sums = format!("{sha256}  {TARBALL}\n");
        let downloads = Arc::new(AtomicUsize::new(0));
        let counter = downloads.clone();
        let port = super::http::serve(move |path| {
            if path == format!("/{TARBALL}") {
                counter.fetch_add(1, Ordering::SeqCst);
                ("200 OK", body.clone())
            } else if path == "/SHA256SUMS" {
                ("200 OK", sums.clone().into_bytes())
            } else {
                ("404 Not Found", b"not found".to_vec())
            }
        });
        ReleaseServer {
            port,
            sha256,
            downloads,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/{TARBALL}", self.port)
    }

    pub fn downloads(&self) -> usize {
        self.downloads.load(Ordering::SeqCst)
    }
}
