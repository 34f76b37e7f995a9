//! One sentence for a TLS failure, on either side of a connection.

use std::error::Error as StdError;

use tokio_rustls::rustls::{AlertDescription, CertificateError, Error};

/// What a failed connection to `addr` says about TLS, in one sentence,
/// when its cause is a TLS error; `None` otherwise.
pub fn describe(addr: &str, err: &(dyn StdError + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = as_rustls(e) {
            return Some(sentence(addr, tls));
        }
        // h2 keeps only the text of an I/O error that ended a connection,
        // which is how a TLS 1.3 server's verdict on our client certificate
        // arrives (after the handshake, on the first read).
        if let Some(alert) = e.to_string().split("received fatal alert: ").nth(1) {
            if let Some(s) = alert_sentence(addr, alert) {
                return Some(s);
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof
                && io.to_string().contains("tls handshake")
            {
                return Some(format!("{addr} closed the connection during the TLS handshake: it serves plain-text gRPC (no raft.tls there) — set the same raft.tls on every node, or connect without TLS"));
            }
        }
        cur = e.source();
    }
    None
}

fn as_rustls<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a Error> {
    if let Some(tls) = e.downcast_ref::<Error>() {
        return Some(tls);
    }
    e.downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<Error>())
}

fn sentence(addr: &str, e: &Error) -> String {
    match e {
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!("the certificate of {addr} is not signed by the trusted CA — pass the cluster's CA with --cacert (raft.tls.cafile on a node)"),
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("the certificate of {addr} does not name that address — dial the name or IP its certificate was issued for, or reissue it"),
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("the certificate of {addr} has expired — renew it"),
        Error::InvalidCertificate(c) => {
            format!("the certificate of {addr} was refused ({c:?}) — check it against the cluster's CA")
        }
        Error::AlertReceived(alert) => alert_sentence(addr, &format!("{alert:?}"))
            .unwrap_or_else(|| format!("TLS with {addr} failed: {e}")),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => format!("{addr} does not answer in TLS: it serves plain-text gRPC (no raft.tls there) — set the same raft.tls on every node, or connect without TLS"),
        e => format!("TLS with {addr} failed: {e}"),
    }
}

/// The sentence for a TLS alert the server sent, by the alert's name
/// (`CertificateRequired`, `UnknownCA`, ...).
fn alert_sentence(addr: &str, alert: &str) -> Option<String> {
    let name = |a: AlertDescription| alert.starts_with(&format!("{a:?}"));
    if name(AlertDescription::CertificateRequired) {
        return Some(format!("{addr} demands a client certificate (raft.tls.verify_client) — pass --cert and --key (raft.tls.certfile and keyfile on a node)"));
    }
    let refused = [
        AlertDescription::UnknownCA,
        AlertDescription::BadCertificate,
        AlertDescription::CertificateUnknown,
        AlertDescription::DecryptError,
    ];
    refused.into_iter().any(name).then(|| {
        format!("{addr} refused this client's certificate (alert {alert}) — present a certificate signed by the cluster's CA")
    })
}

/// Why this server refused a client's TLS handshake: a short kind (to log
/// each kind once per period) and the sentence.
pub fn describe_refused_client(err: &std::io::Error) -> (&'static str, String) {
    let Some(e) = as_rustls(err) else {
        return ("io", format!("the TLS handshake failed: {err}"));
    };
    match e {
        Error::NoCertificatesPresented => ("no-client-cert", "the client presented no certificate, and raft.tls.verify_client demands one signed by raft.tls.cafile — a peer: give it the same raft.tls; pgkeelctl: pass --cert and --key".to_string()),
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => ("client-cert-issuer", "the client's certificate is not signed by raft.tls.cafile — issue it from the cluster's CA".to_string()),
        Error::InvalidCertificate(c) => ("client-cert", format!("the client's certificate was refused ({c:?}) — issue it from the cluster's CA with extendedKeyUsage clientAuth")),
        Error::AlertReceived(alert) => ("alert", format!("the client refused this node's certificate ({alert:?}) — it trusts another CA than raft.tls.cafile, or this certificate does not name the address it dialed")),
        e => ("tls", format!("the TLS handshake failed: {e}")),
    }
}
