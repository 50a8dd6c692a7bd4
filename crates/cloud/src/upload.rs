//! Writing to object storage: [`upload_file`] (a multipart upload, completed only when every
//! part of the whole file is stored, aborted on any error or on [`abort_uploads`]; so the
//! object appears whole or not at all), small whole-object [`put`]s (atomic by nature),
//! [`delete`] and [`list`].
//!
//! Interruption: [`abort_uploads`] (the binary's SIGINT/SIGTERM handler calls it) makes every
//! upload in flight abort its multipart upload (the parts already sent are discarded by the
//! store) and refuses new ones; it waits, bounded, until they have. A process killed outright
//! leaves incomplete multipart uploads, which are invisible as objects; a bucket lifecycle
//! rule (`AbortIncompleteMultipartUpload`) removes their parts.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use flatfhir_core::remote::RemoteObject;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use object_store::{ObjectStoreExt as _, PutPayload};
use tokio::io::AsyncReadExt as _;

use crate::location::Location;
use crate::{Error, Result, runtime};

/// Size of each uploaded part (S3's minimum is 5 MiB for all but the last).
const PART_BYTES: usize = 16 << 20;
/// Parts in flight at once per file.
const PARTS_AT_ONCE: usize = 4;
/// How long [`abort_uploads`] waits for uploads to abort.
const ABORT_WAIT: Duration = Duration::from_secs(20);

static CANCELLED: AtomicBool = AtomicBool::new(false);
static IN_FLIGHT: Mutex<usize> = Mutex::new(0);
static SETTLED: Condvar = Condvar::new();
static WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// An object written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Its URL.
    pub url: String,
    /// Bytes.
    pub size: u64,
    /// The store's ETag, when it gives one.
    pub e_tag: Option<String>,
}

/// Counts an upload in flight while alive.
struct Flight;

impl Flight {
    fn start(url: &str) -> Result<Self> {
        let mut n = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        if CANCELLED.load(Ordering::SeqCst) {
            return Err(Error::Interrupted { url: url.into() });
        }
        *n += 1;
        Ok(Flight)
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut n = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        SETTLED.notify_all();
    }
}

/// Makes every upload in flight abort (and new ones fail), and waits until they have, at
/// most 20 s. Returns how many were in flight.
pub fn abort_uploads() -> usize {
    let n = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
    CANCELLED.store(true, Ordering::SeqCst);
    WAKE.notify_waiters();
    let was = *n;
    let _ = SETTLED
        .wait_timeout_while(n, ABORT_WAIT, |n| *n > 0)
        .map_err(|e| e.into_inner());
    was
}

async fn cancelled() {
    loop {
        let notified = WAKE.notified();
        if CANCELLED.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }
}

/// Uploads the local file `local` to `url` by a multipart upload.
///
/// # Errors
/// The file cannot be read, the store refuses a request (after its retries), or
/// [`abort_uploads`] was called; the multipart upload is then aborted and no object appears.
pub fn upload_file(local: &Path, url: &str) -> Result<Uploaded> {
    let loc = Location::parse(url)?;
    let flight = Flight::start(url)?;
    let (local, url2) = (local.to_path_buf(), url.to_string());
    runtime::run(async move {
        let name = local.display().to_string();
        let r = match tokio::fs::File::open(&local).await {
            Ok(file) => upload(loc, file, &name, &url2, PART_BYTES).await,
            Err(source) => Err(Error::Local { path: name, source }),
        };
        drop(flight);
        r
    })
}

/// Uploads what `source` yields to `url`, in parts of `part_bytes` (at least 5 MiB for S3),
/// as [`upload_file`] does; `name` names the source in errors. A read error of the source
/// aborts the upload.
///
/// # Errors
/// As [`upload_file`].
pub fn upload_reader<R>(source: R, name: &str, url: &str, part_bytes: usize) -> Result<Uploaded>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let loc = Location::parse(url)?;
    let flight = Flight::start(url)?;
    let (name, url2) = (name.to_string(), url.to_string());
    runtime::run(async move {
        let r = upload(loc, source, &name, &url2, part_bytes).await;
        drop(flight);
        r
    })
}

async fn upload<R>(
    loc: Location,
    mut file: R,
    name: &str,
    url: &str,
    part_bytes: usize,
) -> Result<Uploaded>
where
    R: tokio::io::AsyncRead + Unpin + Send,
{
    let local_err = |source| Error::Local {
        path: name.to_string(),
        source,
    };
    let mut upload = loc
        .store
        .put_multipart(&loc.path)
        .await
        .map_err(|e| Error::store(url, &e))?;
    let parts = async {
        let mut size = 0u64;
        let mut pending = FuturesUnordered::new();
        loop {
            let mut buf = Vec::with_capacity(part_bytes);
            (&mut file)
                .take(part_bytes as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(local_err)?;
            let last = buf.len() < part_bytes;
            if !buf.is_empty() || size == 0 {
                size += buf.len() as u64;
                pending.push(upload.put_part(PutPayload::from(buf)));
            }
            while pending.len() >= PARTS_AT_ONCE || (last && !pending.is_empty()) {
                if let Some(r) = pending.next().await {
                    r.map_err(|e| Error::store(url, &e))?;
                }
            }
            if last {
                return Ok::<u64, Error>(size);
            }
        }
    };
    let outcome = tokio::select! {
        r = parts => r,
        () = cancelled() => Err(Error::Interrupted { url: url.into() }),
    };
    let outcome = match outcome {
        Ok(size) if !CANCELLED.load(Ordering::SeqCst) => upload
            .complete()
            .await
            .map(|put| Uploaded {
                url: url.to_string(),
                size,
                e_tag: put.e_tag,
            })
            .map_err(|e| Error::store(url, &e)),
        Ok(_) => Err(Error::Interrupted { url: url.into() }),
        Err(e) => Err(e),
    };
    if outcome.is_err()
        && let Err(e) = upload.abort().await
    {
        tracing::warn!(
            "{url}: could not abort the multipart upload ({}); its parts stay invisible until the bucket's lifecycle rule removes them",
            crate::redact::redact(&e.to_string())
        );
    }
    outcome
}

/// Writes `bytes` as one object (a single PUT: atomic).
///
/// # Errors
/// The store refuses it.
pub fn put(url: &str, bytes: Vec<u8>) -> Result<Uploaded> {
    let loc = Location::parse(url)?;
    let size = bytes.len() as u64;
    let u = url.to_string();
    runtime::run(async move {
        loc.store
            .put(&loc.path, PutPayload::from(bytes))
            .await
            .map(|r| Uploaded {
                url: u.clone(),
                size,
                e_tag: r.e_tag,
            })
            .map_err(|e| Error::store(&u, &e))
    })
}

/// Deletes an object (a missing one is not an error).
///
/// # Errors
/// The store refuses it.
pub fn delete(url: &str) -> Result<()> {
    let loc = Location::parse(url)?;
    let u = url.to_string();
    runtime::run(async move {
        match loc.store.delete(&loc.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store(&u, &e)),
        }
    })
}

/// Every object under the prefix `url` (as a directory: `url` + `/`), in key order, with
/// the ETag of each.
///
/// # Errors
/// The store refuses the listing.
pub fn list(url: &str) -> Result<Vec<RemoteObject>> {
    Ok(list_tagged(url)?.into_iter().map(|(o, _)| o).collect())
}

/// [`list`] with each object's ETag.
///
/// # Errors
/// The store refuses the listing.
pub fn list_tagged(url: &str) -> Result<Vec<(RemoteObject, Option<String>)>> {
    let loc = Location::parse(url)?;
    let u = url.to_string();
    runtime::run(async move {
        let prefix = loc.path.clone();
        let mut out = Vec::new();
        let mut stream = loc.store.list(Some(&prefix));
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| Error::store(&u, &e))?;
            let key = meta.location.as_ref();
            let relative = match prefix.as_ref() {
                "" => key.to_string(),
                p => match key.strip_prefix(p).and_then(|r| r.strip_prefix('/')) {
                    Some(r) => r.to_string(),
                    None => continue,
                },
            };
            out.push((
                RemoteObject {
                    url: loc.url_of(&meta.location),
                    relative,
                    size: meta.size,
                },
                meta.e_tag,
            ));
        }
        out.sort_by(|a, b| a.0.relative.cmp(&b.0.relative));
        Ok(out)
    })
}

/// Reads a (small) object whole.
///
/// # Errors
/// The store refuses it, or it does not exist ([`Error::is_not_found`]).
pub fn get(url: &str) -> Result<Vec<u8>> {
    let loc = Location::parse(url)?;
    let u = url.to_string();
    runtime::run(async move {
        let r = loc
            .store
            .get(&loc.path)
            .await
            .map_err(|e| Error::store(&u, &e))?;
        r.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| Error::store(&u, &e))
    })
}
