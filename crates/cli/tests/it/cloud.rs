//! `convert` with object-store input and output, against a real S3-compatible server (moto's
//! server mode on 127.0.0.1; skipped with the reason printed when moto is not installed).

use std::path::Path;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use crate::support::{flatfhir, shared};

#[path = "../../../cloud/tests/moto/mod.rs"]
mod moto;

/// The test's own client of the server (explicit configuration: the test process's
/// environment is left alone).
struct Bucket {
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    fn new(moto: &moto::Moto, name: &str) -> Self {
        moto.create_bucket(name);
        let store = AmazonS3Builder::new()
            .with_endpoint(moto.endpoint())
            .with_allow_http(true)
            .with_bucket_name(name)
            .with_region("us-east-1")
            .with_access_key_id(moto::KEY_ID)
            .with_secret_access_key(moto::SECRET)
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Self {
            store: Arc::new(store),
            rt,
        }
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        self.rt
            .block_on(
                self.store
                    .put(&ObjectPath::from(key), PutPayload::from(bytes)),
            )
            .unwrap();
    }

    fn get(&self, key: &str) -> Vec<u8> {
        self.rt.block_on(async {
            let r = self.store.get(&ObjectPath::from(key)).await.unwrap();
            r.bytes().await.unwrap().to_vec()
        })
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        use futures_util::StreamExt as _;
        let mut keys: Vec<String> = self.rt.block_on(async {
            let p = ObjectPath::from(prefix);
            self.store
                .list(Some(&p))
                .map(|m| m.unwrap().location.to_string())
                .collect()
                .await
        });
        keys.sort();
        keys
    }
}

fn convert(moto: &moto::Moto, args: &[&str]) -> std::process::Output {
    let mut cmd = flatfhir();
    cmd.arg("convert").args(args);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A Parquet file's bytes before its footer, and its footer's key-value metadata.
fn parts(bytes: &[u8]) -> (&[u8], Vec<(String, Option<String>)>) {
    use parquet::file::reader::{FileReader as _, SerializedFileReader};
    let n = bytes.len();
    let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    let reader = SerializedFileReader::new(bytes::Bytes::copy_from_slice(bytes)).unwrap();
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    (&bytes[..n - 8 - footer], kv)
}

#[test]
fn s3_to_s3_convert_equals_local_convert() {
    let Some(shared) = shared() else { return };
    let Some(moto) = moto::Moto::start("s3_to_s3_convert_equals_local_convert") else {
        return;
    };
    let export = shared.join("fixtures/bds-r4");
    let bucket = Bucket::new(&moto, "exports");
    let mut names: Vec<String> = std::fs::read_dir(&export)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in &names {
        bucket.put(
            &format!("export/{n}"),
            std::fs::read(export.join(n)).unwrap(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let out = convert(
        &moto,
        &[
            export.to_str().unwrap(),
            "--out",
            local.to_str().unwrap(),
            "-q",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = convert(
        &moto,
        &[
            "s3://exports/export/",
            "--out",
            "s3://exports/tables/",
            "--json",
            "-q",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let mut tables: Vec<String> = crate::support::listing(&local)
        .into_iter()
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    tables.sort();
    assert!(tables.len() >= 10, "{tables:?}");
    let mut expected: Vec<String> = tables.iter().map(|t| format!("tables/{t}")).collect();
    expected.insert(0, "tables/.flatfhir-tables.json".into());
    assert_eq!(bucket.keys("tables"), expected);
    for t in &tables {
        let mine = std::fs::read(local.join(t)).unwrap();
        let theirs = bucket.get(&format!("tables/{t}"));
        let (data_a, kv_a) = parts(&mine);
        let (data_b, kv_b) = parts(&theirs);
        // Every data page and column chunk byte for byte; the footer differs only by the
        // source files' names (local paths there, URLs here).
        assert!(data_a == data_b, "{t}: the data differ");
        for ((ka, va), (kb, vb)) in kv_a.iter().zip(&kv_b) {
            assert_eq!(ka, kb);
            if ka == "flatfhir.source_files" {
                let stem = t.trim_end_matches(".parquet");
                assert_eq!(
                    vb.as_deref(),
                    Some(format!("[\"s3://exports/export/{stem}.ndjson\"]").as_str())
                );
            } else {
                assert_eq!(va, vb, "{t}: {ka}");
            }
        }
        assert_eq!(kv_a.len(), kv_b.len());
    }
    let outputs: Vec<&str> = summary["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["output"].as_str().unwrap())
        .collect();
    assert!(
        outputs
            .iter()
            .all(|o| o.starts_with("s3://exports/tables/")),
        "{outputs:?}"
    );
}

fn small_export(dir: &Path, observation: &str) -> std::path::PathBuf {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(
        input.join("Patient.ndjson"),
        "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n",
    )
    .unwrap();
    std::fs::write(input.join("Observation.ndjson"), observation).unwrap();
    input
}

#[test]
fn object_store_prefix_with_tables_is_refused_unless_overwrite() {
    let Some(moto) =
        moto::Moto::start("object_store_prefix_with_tables_is_refused_unless_overwrite")
    else {
        return;
    };
    let bucket = Bucket::new(&moto, "refuse");
    bucket.put("t/notes.txt", b"someone else's".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let input = small_export(
        dir.path(),
        "{\"resourceType\":\"Observation\",\"id\":\"o1\"}\n",
    );
    let input = input.to_str().unwrap();
    let out = convert(&moto, &[input, "--out", "s3://refuse/t/", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = bucket.get("t/Patient.parquet");

    // Again: refused before anything is read or written, naming the prefix and the tables.
    let out = convert(&moto, &[input, "--out", "s3://refuse/t"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("s3://refuse/t/ already holds tables"), "{err}");
    assert!(
        err.contains("Observation.parquet") && err.contains("--overwrite"),
        "{err}"
    );
    assert!(!err.contains(moto::SECRET), "{err}");
    assert_eq!(bucket.get("t/Patient.parquet"), first);

    // With --overwrite: replaced; an object flatfhir did not write is kept.
    std::fs::remove_file(Path::new(input).join("Observation.ndjson")).unwrap();
    let out = convert(&moto, &[input, "--out", "s3://refuse/t/", "--overwrite"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("replaced 1 file(s) (s3://refuse/t/Patient.parquet)"),
        "{err}"
    );
    assert!(
        err.contains("removed 1 file(s) of the earlier run that this run did not produce (s3://refuse/t/Observation.parquet)"),
        "{err}"
    );
    assert_eq!(
        bucket.keys("t"),
        [
            "t/.flatfhir-tables.json",
            "t/Patient.parquet",
            "t/notes.txt"
        ]
    );

    // A bucket that does not exist: the URL and the store's reason, no secret, nothing read.
    let out = convert(&moto, &[input, "--out", "s3://no-such-bucket/t/"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("s3://no-such-bucket/t"), "{err}");
    assert!(!err.contains(moto::SECRET), "{err}");
}

#[test]
fn a_failed_type_leaves_no_object_in_the_bucket() {
    let Some(moto) = moto::Moto::start("a_failed_type_leaves_no_object_in_the_bucket") else {
        return;
    };
    let bucket = Bucket::new(&moto, "fails");
    let dir = tempfile::tempdir().unwrap();
    let input = small_export(
        dir.path(),
        "{\"resourceType\":\"Observation\",\"id\":\"o1\"}\n{not json\n",
    );
    // The input from the bucket too: a bad line in a streamed object.
    for n in ["Patient.ndjson", "Observation.ndjson"] {
        bucket.put(&format!("in/{n}"), std::fs::read(input.join(n)).unwrap());
    }
    let out = convert(
        &moto,
        &[
            "s3://fails/in/",
            "--out",
            "s3://fails/out/",
            "--on-error",
            "fail",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("s3://fails/in/Observation.ndjson:2"), "{err}");
    assert_eq!(
        bucket.keys("out"),
        ["out/.flatfhir-tables.json", "out/Patient.parquet"]
    );
}
