//! HTTP/1.1 with std only, enough for the tests: a GET, and a server on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A GET: (status, body), or None when the connection fails.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Reads a request's head; returns its path.
fn request_path(reader: &mut impl BufRead) -> Option<String> {
    let mut request = String::new();
    reader.read_line(&mut request).ok()?;
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    Some(request.split_whitespace().nth(1).unwrap_or("/").to_string())
}

/// Serves every request on a loopback port, in a thread, with what `respond` gives for its
/// path: a status line's tail ("200 OK") and a body. Returns the port.
pub fn serve(respond: impl Fn(&str) -> (&'static str, Vec<u8>) + Send + 'static) -> u16 {
    serve_on("127.0.0.1", respond)
}

/// As [`serve`], on `ip` (the lab bridge's address, for the lab hosts to reach).
pub fn serve_on(
    ip: &str,
    respond: impl Fn(&str) -> (&'static str, Vec<u8>) + Send + 'static,
) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Some(path) = request_path(&mut BufReader::new(&stream)) else {
                continue;
            };
            let (status, content) = respond(&path);
            let mut stream = &stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                content.len()
            );
            let _ = stream.write_all(&content);
        }
    });
    port
}

/// As [`serve`], over TLS with the PEM certificate and key at `cert` and `key`.
pub fn serve_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
    respond: impl Fn(&str) -> (&'static str, Vec<u8>) + Send + 'static,
) -> u16 {
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .expect("the server certificate");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("the server key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("the certificate and key"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let Some(path) = request_path(&mut BufReader::new(&mut tls)) else {
                continue;
            };
            let (status, content) = respond(&path);
            let _ = write!(
                tls,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                content.len()
            );
            let _ = tls.write_all(&content);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    port
}
