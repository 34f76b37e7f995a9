//! `raft.tls` and `raft.admin_token` at load: certificates made at test
//! time (rcgen), each flaw reported at its key with the fix.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::tests::DATA;
use super::*;
use crate::admin::AdminToken;

/// A CA writing its certificate and the certificates it issues into a
/// temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn cafile(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Issues `name.crt`/`name.key` for `sans` with the given key usages.
    fn issue(
        &self,
        name: &str,
        sans: &[&str],
        usages: &[ExtendedKeyUsagePurpose],
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.extended_key_usages = usages.to_vec();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (crt, pem_key) = (
            self.dir.path().join(format!("{name}.crt")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&pem_key, key.serialize_pem()).unwrap();
        (crt, pem_key)
    }

    /// A certificate for 127.0.0.1 good for server and client use.
    fn node(&self, name: &str) -> (PathBuf, PathBuf) {
        self.issue(
            name,
            &["127.0.0.1", "localhost"],
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }
}

fn with_tls(cert: &Path, key: &Path, ca: &Path, verify_client: bool) -> String {
    DATA.replace(
        "  peers:\n",
        &format!(
            "  tls: {{ certfile: {}, keyfile: {}, cafile: {}, verify_client: {verify_client} }}\n  peers:\n",
            cert.display(),
            key.display(),
            ca.display()
        ),
    )
}

/// The one problem `text` has, which must be at `path` and contain `fix`.
fn problem(text: &str, path: &str, fix: &str) {
    match parse(text, "node1.yaml", NodeKind::Data) {
        Ok(_) => panic!("expected a problem at {path}, the config loaded:\n{text}"),
        Err(e) => {
            let found = e.problems.iter().find(|p| p.path == path);
            assert!(
                found.is_some_and(|p| p.message.contains(fix)),
                "wanted {path}: …{fix}…, got:\n{e}"
            );
        }
    }
}

#[test]
fn a_valid_tls_section_loads() {
    let pki = Pki::new();
    let (cert, key) = pki.node("node1");
    let config = parse(
        &with_tls(&cert, &key, &pki.cafile(), true),
        "node1.yaml",
        NodeKind::Data,
    )
    .expect("valid");
    let tls = config.raft.tls.as_ref().expect("raft.tls");
    assert!(tls.verify_client);
    assert_eq!(tls.cafile, pki.cafile());
    // verify_client is off unless set.
    let text = with_tls(&cert, &key, &pki.cafile(), true).replace(", verify_client: true", "");
    let config = parse(&text, "node1.yaml", NodeKind::Data).expect("valid");
    assert!(!config.raft.tls.unwrap().verify_client);
}

#[test]
fn each_tls_flaw_is_named_at_its_key() {
    let pki = Pki::new();
    let other = Pki::new();
    let (cert, key) = pki.node("node1");
    let (_, other_key) = pki.node("node2");
    let (foreign_cert, foreign_key) = other.node("node1");
    let (named_cert, named_key) = pki.issue(
        "db9",
        &["db9.example.com"],
        &[ExtendedKeyUsagePurpose::ServerAuth],
    );
    let (server_cert, server_key) = pki.issue(
        "server-only",
        &["127.0.0.1"],
        &[ExtendedKeyUsagePurpose::ServerAuth],
    );
    let ca = pki.cafile();
    let missing = Path::new("/nonexistent/pgkeel-node1.crt");

    problem(
        &DATA.replace(
            "  peers:\n",
            &format!(
                "  tls: {{ certfile: {}, keyfile: {} }}\n  peers:\n",
                cert.display(),
                key.display()
            ),
        ),
        "raft.tls.cafile",
        "is required — add it to this file, e.g. cafile: /etc/pgkeel/tls/ca.crt",
    );
    problem(
        &with_tls(&cert, &key, &ca, false).replace("cafile:", "ca_file:"),
        "raft.tls.ca_file",
        "did you mean `cafile`",
    );
    problem(
        &with_tls(missing, &key, &ca, false),
        "raft.tls.certfile",
        "cannot read /nonexistent/pgkeel-node1.crt",
    );
    problem(
        &with_tls(&cert, &key, Path::new(""), false),
        "raft.tls.cafile",
        "is empty",
    );
    problem(
        &with_tls(&foreign_cert, &foreign_key, &ca, false),
        "raft.tls.certfile",
        "is not signed by the CA in raft.tls.cafile",
    );
    problem(&with_tls(&named_cert, &named_key, &ca, false), "raft.tls.certfile", "does not name 127.0.0.1, the host peers dial to reach this node (its raft.peers address) — reissue it with subjectAltName IP:127.0.0.1");
    problem(
        &with_tls(&cert, &other_key, &ca, false),
        "raft.tls.keyfile",
        "does not belong to the certificate",
    );
    problem(
        &with_tls(&cert, &key, &key, false),
        "raft.tls.cafile",
        "holds no PEM certificate",
    );
    problem(
        &with_tls(&key, &key, &ca, false),
        "raft.tls.certfile",
        "holds no PEM certificate",
    );
    // A server-only certificate serves, but cannot be a peer's client
    // certificate once client certificates are demanded.
    parse(
        &with_tls(&server_cert, &server_key, &ca, false),
        "node1.yaml",
        NodeKind::Data,
    )
    .expect("server-only certificate without verify_client");
    problem(
        &with_tls(&server_cert, &server_key, &ca, true),
        "raft.tls.certfile",
        "extendedKeyUsage serverAuth and clientAuth",
    );
}

#[test]
fn the_admin_token_is_separate_or_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-token");
    std::fs::write(&file, "admin-token-from-a-file\n").unwrap();
    let text = DATA.replace(
        "  peers:\n",
        &format!("  admin_token_file: {}\n  peers:\n", file.display()),
    );
    let config = parse(&text, "node1.yaml", NodeKind::Data).expect("valid");
    assert_eq!(config.raft.admin_token(), Some("admin-token-from-a-file"));
    let token = AdminToken::from_config(&config.raft).expect("a token");
    assert!(token.check(Some("admin-token-from-a-file")).is_ok());
    assert!(token.check(Some("0123456789abcdef-secret")).is_err());

    let plain = parse(DATA, "node1.yaml", NodeKind::Data).expect("valid");
    assert_eq!(plain.raft.admin_token(), None);
    let token = AdminToken::from_config(&plain.raft).expect("the secret");
    assert!(token.check(Some("0123456789abcdef-secret")).is_ok());
}
