//! Secrets in the library's own types and errors: a key value that is neither a path nor a
//! whole key is refused without being shown; `Debug` of credentials shows no secret; text
//! echoed by a server is scrubbed of every secret made.

use std::path::{Path, PathBuf};

use flatfhir_fetch::{Credentials, Error, Secret, SigningKey, scrub};

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/keys")
}

fn body_lines() -> Vec<String> {
    std::fs::read_to_string(keys().join("rsa.pkcs8.pem"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn key_text_without_armour_is_not_taken_for_a_path() {
    let lines = body_lines();
    for value in [lines.join("\n"), lines.concat(), lines[0].clone()] {
        let err =
            SigningKey::from_source(&value, "FLATFHIR_PRIVATE_KEY", Some("k"), None).unwrap_err();
        assert!(matches!(err, Error::KeyText { .. }), "{err}");
        let shown = format!("{err} {err:?}");
        for l in &lines {
            assert!(!shown.contains(l.as_str()), "{shown}");
        }
    }
}

#[test]
fn key_sources_that_are_paths_or_keys_still_work() {
    let path = keys().join("ec.pkcs8.pem");
    let (key, from) =
        SigningKey::from_source(path.to_str().unwrap(), "--private-key", Some("k"), None).unwrap();
    assert_eq!(from.as_deref(), Some(path.as_path()));
    assert_eq!(key.kid(), "k");
    let pem = std::fs::read_to_string(&path).unwrap();
    let (_, from) = SigningKey::from_source(&pem, "--private-key", Some("k"), None).unwrap();
    assert_eq!(from, None);
    // A path that does not exist is named (it is not key text).
    let err =
        SigningKey::from_source("/no/such/key.pem", "--private-key", Some("k"), None).unwrap_err();
    assert!(err.to_string().contains("/no/such/key.pem"), "{err}");
}

#[test]
fn debug_of_credentials_and_keys_shows_no_secret() {
    let pem = std::fs::read_to_string(keys().join("rsa.pkcs8.pem")).unwrap();
    let key = SigningKey::from_text(&pem, Path::new("env"), Some("k"), None).unwrap();
    let creds = [
        Credentials::PrivateKey {
            client_id: "c".into(),
            key,
        },
        Credentials::ClientSecret {
            client_id: "c".into(),
            secret: Secret::new("client-secret-value"),
            form_post: true,
        },
        Credentials::Bearer(Secret::new("bearer-token-value")),
    ];
    let shown = format!("{creds:?} {creds:#?}");
    assert!(!shown.contains("client-secret-value"), "{shown}");
    assert!(!shown.contains("bearer-token-value"), "{shown}");
    for l in body_lines() {
        assert!(!shown.contains(l.as_str()), "{shown}");
    }
    // Key material loaded from text is scrubbed from any message that quotes it.
    let line = body_lines()[1].clone();
    assert_eq!(scrub(&format!("bad key {line}")), "bad key [redacted]");
}
