//! HTTPS on a loopback port with a certificate made at test time, and the
//! start-up errors of bad certificate and key files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::{primary, state_with, FakeSource, NOW, PASSWORD, TOKEN, USER};
use crate::rest::{Credentials, RestServer, RestTls};

/// Bound on every exchange with the server under test.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A self-signed certificate for `localhost` and its key, as PEM files in a
/// directory removed on drop.
struct Identity {
    dir: tempfile::TempDir,
    cert: rcgen::Certificate,
}

impl Identity {
    fn new() -> Identity {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rest.crt"), made.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("rest.key"),
            made.signing_key.serialize_pem(),
        )
        .unwrap();
        Identity {
            dir,
            cert: made.cert,
        }
    }

    fn certfile(&self) -> PathBuf {
        self.dir.path().join("rest.crt")
    }

    fn keyfile(&self) -> PathBuf {
        self.dir.path().join("rest.key")
    }

    /// A client that trusts only this certificate.
    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

/// Sends one `Connection: close` request and reads until the server closes.
/// An I/O error (e.g. a reset) is returned as such.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
) -> std::io::Result<String> {
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let io = async {
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(IO_TIMEOUT, io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
}

/// The status line of an HTTP answer.
fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[tokio::test]
async fn https_serves_the_api_and_plain_http_gets_no_answer() {
    let id = Identity::new();
    let tls = RestTls::load(&id.certfile(), &id.keyfile()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (state, _source, _tx) = state_with(
        primary(),
        BTreeMap::new(),
        FakeSource::with(&[]),
        Credentials::new(Some((USER, PASSWORD)), Some(TOKEN)),
        NOW,
    );
    let server = RestServer::start_tls(listener, state, tls);

    let https = |path: &'static str| {
        let connector = id.connector();
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let stream = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
                .await
                .expect("TLS handshake in time")
                .expect("TLS handshake with the server's certificate");
            exchange(stream, "GET", path).await.unwrap()
        }
    };
    let health = https("/health").await;
    assert_eq!(status_line(&health), "HTTP/1.1 200 OK", "{health}");
    assert!(health.contains("\"role\":\"primary\""), "{health}");
    // The routes are the API's own: a primary is no replica.
    let replica = https("/replica").await;
    assert_eq!(
        status_line(&replica),
        "HTTP/1.1 503 Service Unavailable",
        "{replica}"
    );

    // Clear text to the HTTPS port: the handshake fails and the server
    // closes (or resets) without an HTTP answer.
    let tcp = TcpStream::connect(addr).await.unwrap();
    match exchange(tcp, "GET", "/health").await {
        Ok(answer) => assert!(
            !answer.starts_with("HTTP/"),
            "a plain-HTTP request got an HTTP answer: {answer}"
        ),
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "{e}"),
    }

    // A client that does not trust the certificate is refused.
    let other = Identity::new();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let refused = tokio::time::timeout(IO_TIMEOUT, other.connector().connect(name, tcp))
        .await
        .expect("handshake outcome in time");
    assert!(refused.is_err(), "an untrusted certificate was accepted");

    // Still serving after the failed handshakes, then a clean stop.
    let again = https("/health").await;
    assert_eq!(status_line(&again), "HTTP/1.1 200 OK", "{again}");
    server.stop().await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

fn load_error(cert: &Path, key: &Path) -> String {
    match RestTls::load(cert, key) {
        Ok(_) => panic!("{} and {} loaded", cert.display(), key.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_certificate_and_key_files_are_named_with_the_fix() {
    let id = Identity::new();
    let other = Identity::new();
    let missing = id.dir.path().join("missing.pem");
    let garbage = id.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let broken = id.dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----BEGIN PRIVATE KEY-----\n",
    )
    .unwrap();

    let cases = [
        (
            &missing,
            &id.keyfile(),
            "restapi.certfile: cannot read",
            &missing,
        ),
        (
            &id.certfile(),
            &missing,
            "restapi.keyfile: cannot read",
            &missing,
        ),
        (
            &garbage,
            &id.keyfile(),
            "holds no PEM certificate",
            &garbage,
        ),
        (&broken, &id.keyfile(), "is not valid PEM", &broken),
        // The two swapped: the key file holds no certificate.
        (
            &id.keyfile(),
            &id.certfile(),
            "holds no PEM certificate",
            &id.keyfile(),
        ),
        (
            &id.certfile(),
            &garbage,
            "holds no PEM private key",
            &garbage,
        ),
        (
            &id.certfile(),
            &other.keyfile(),
            "check that the key belongs",
            &other.keyfile(),
        ),
    ];
    for (cert, key, wanted, named) in cases {
        let e = load_error(cert, key);
        assert!(e.contains(wanted), "{wanted}: got {e}");
        assert!(
            e.contains(&named.display().to_string()),
            "{named:?} not named: {e}"
        );
    }
    RestTls::load(&id.certfile(), &id.keyfile()).unwrap();
}
