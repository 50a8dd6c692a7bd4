//! TLS: verification is on; a private CA is trusted only through `ca_cert`.

use flatfhir_bulk_server::{TestServer, Tls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::support::*;

/// A private CA and a leaf certificate for 127.0.0.1 signed by it: (CA PEM, leaf PEM, leaf key PEM).
fn private_ca() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_ca_is_trusted_only_with_ca_cert() {
    let (ca_pem, leaf_pem, key_pem) = private_ca();
    let data = data_dir();
    let mut cfg = config(data.path());
    cfg.tls = Some(Tls::new(leaf_pem, key_pem));
    let server = TestServer::start(cfg).await.unwrap();
    assert!(server.base_url().starts_with("https://127.0.0.1:"));

    let out = tempfile::tempdir().unwrap();
    let mut o = options(&server, out.path());
    o.conn.timing.retries = 0;
    o.conn.token_url = Some(server.token_url().parse().unwrap());
    let err = run(o).await.unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(
        chain.contains("invalid peer certificate: UnknownIssuer"),
        "{chain}"
    );
    assert!(
        server.requests().is_empty(),
        "a request got through an untrusted TLS connection"
    );

    let ca_file = out.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let out2 = tempfile::tempdir().unwrap();
    let mut o = options(&server, out2.path());
    o.conn.ca_cert = Some(ca_file);
    let s = run(o).await.unwrap();
    assert_eq!(s.resources, 15);
    assert_standard_output(out2.path());
}
