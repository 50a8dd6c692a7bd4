//! Against a real S3-compatible server (moto, see `moto/mod.rs`): an upload that fails
//! part-way leaves no object, a whole one round-trips, listing and ranged reads. One test in
//! this binary, because it sets the process environment the store reads.

mod moto;

use std::io::Read as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use flatfhir_core::remote::RemoteStat;

/// Yields `good` bytes, then fails.
struct Breaks {
    left: usize,
}

impl tokio::io::AsyncRead for Breaks {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(std::io::Error::other("disk went away")));
        }
        let n = self.left.min(buf.remaining()).min(1 << 16);
        buf.put_slice(&vec![b'x'; n]);
        self.left -= n;
        Poll::Ready(Ok(()))
    }
}

/// Yields `left` bytes, then never anything more (and says so once).
struct Stalls {
    left: usize,
    stalled: Option<std::sync::mpsc::Sender<()>>,
}

impl tokio::io::AsyncRead for Stalls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.left == 0 {
            if let Some(tx) = self.stalled.take() {
                let _ = tx.send(());
            }
            return Poll::Pending;
        }
        let n = self.left.min(buf.remaining()).min(1 << 16);
        buf.put_slice(&vec![b'y'; n]);
        self.left -= n;
        Poll::Ready(Ok(()))
    }
}

#[test]
fn s3_uploads_are_whole_or_absent_and_reads_stream() {
    let Some(moto) = moto::Moto::start("s3_uploads_are_whole_or_absent_and_reads_stream") else {
        return;
    };
    for (k, v) in moto.env() {
        // SAFETY: the only test of this binary, on its only thread that reads the environment
        // (the store reads it when first built, below).
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(k, v)
        };
    }
    moto.create_bucket("bkt");
    flatfhir_cloud::install();

    // A source that breaks after the first 5 MiB part: aborted, no object.
    let err = flatfhir_cloud::upload_reader(
        Breaks {
            left: (5 << 20) + 100,
        },
        "source",
        "s3://bkt/t/Big.parquet",
        5 << 20,
    )
    .unwrap_err();
    assert!(err.to_string().contains("disk went away"), "{err}");
    assert!(flatfhir_cloud::list("s3://bkt/t").unwrap().is_empty());
    let err = flatfhir_cloud::get("s3://bkt/t/Big.parquet").unwrap_err();
    assert!(err.is_not_found(), "{err}");

    // A whole file: two parts, the object equals the file.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("A.parquet");
    let data: Vec<u8> = (0..(17u32 << 20) + 5).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let up = flatfhir_cloud::upload_file(&local, "s3://bkt/t/A.parquet").unwrap();
    assert_eq!(up.size, data.len() as u64);
    assert_eq!(flatfhir_cloud::get("s3://bkt/t/A.parquet").unwrap(), data);

    // Listing like a directory, and streamed reads from an offset (core's hook).
    flatfhir_cloud::put("s3://bkt/t/sub/x.ndjson", b"{}\n".to_vec()).unwrap();
    let listed: Vec<String> = flatfhir_cloud::list("s3://bkt/t/")
        .unwrap()
        .into_iter()
        .map(|o| o.relative)
        .collect();
    assert_eq!(listed, ["A.parquet", "sub/x.ndjson"]);
    let input = flatfhir_cloud::ObjectInput::default();
    use flatfhir_core::remote::RemoteInput as _;
    assert_eq!(input.stat("s3://bkt/t").unwrap(), RemoteStat::Prefix);
    assert_eq!(
        input.stat("s3://bkt/t/A.parquet").unwrap(),
        RemoteStat::Object(data.len() as u64)
    );
    let err = input.stat("s3://bkt/nothing-here").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(
        input.read_range("s3://bkt/t/A.parquet", 0, 2).unwrap(),
        data[..2]
    );
    let mut tail = Vec::new();
    input
        .open("s3://bkt/t/A.parquet", 12_345_678)
        .unwrap()
        .read_to_end(&mut tail)
        .unwrap();
    assert_eq!(tail, data[12_345_678..]);

    // Errors name the URL, never the secret.
    let err = flatfhir_cloud::get("s3://no-such-bucket/k")
        .unwrap_err()
        .to_string();
    assert!(err.contains("s3://no-such-bucket/k"), "{err}");
    assert!(!err.contains(moto::SECRET), "{err}");

    // An upload in flight (its first part sent, its source stalled) when the process is
    // interrupted (the binary's SIGINT handler calls abort_uploads): aborted, no object.
    let (stalled_tx, stalled_rx) = std::sync::mpsc::channel();
    let uploading = std::thread::spawn(move || {
        flatfhir_cloud::upload_reader(
            Stalls {
                left: (5 << 20) + 10,
                stalled: Some(stalled_tx),
            },
            "stalled source",
            "s3://bkt/t/D.parquet",
            5 << 20,
        )
    });
    stalled_rx.recv().unwrap();
    assert_eq!(flatfhir_cloud::abort_uploads(), 1);
    let err = uploading.join().unwrap().unwrap_err();
    assert!(
        matches!(err, flatfhir_cloud::Error::Interrupted { .. }),
        "{err}"
    );
    assert!(
        flatfhir_cloud::get("s3://bkt/t/D.parquet")
            .unwrap_err()
            .is_not_found()
    );

    // After an interruption, no upload starts.
    let err = flatfhir_cloud::upload_file(&local, "s3://bkt/t/C.parquet").unwrap_err();
    assert!(
        matches!(err, flatfhir_cloud::Error::Interrupted { .. }),
        "{err}"
    );
    assert!(
        flatfhir_cloud::get("s3://bkt/t/C.parquet")
            .unwrap_err()
            .is_not_found()
    );
}
