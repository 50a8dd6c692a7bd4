//! Objects as input: [`ObjectInput`] is core's `RemoteInput` (stat, list a prefix like a
//! directory, stream an object from an offset), installed once per process with [`install`].
//!
//! A read is one GET from the offset to the object's end (`Range: bytes=N-`), streamed: a
//! task on the runtime pulls the body and hands chunks to the reading thread through a
//! bounded channel (about 4 MiB read ahead), so network and parsing overlap and memory stays
//! bounded. A reader dropped early (a shard that has read past its end) stops the task and
//! the connection. A body broken off mid-way is resumed from the byte reached, up to
//! [`RESUMES`] times, with `If-Match` on the first response's ETag so that an object replaced
//! meanwhile is an error, not a mix of two versions.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flatfhir_core::remote::{RemoteInput, RemoteObject, RemoteStat};
use futures_util::StreamExt as _;
use object_store::{GetOptions, GetRange, ObjectStoreExt as _};

use crate::location::Location;
use crate::runtime;

/// Times a broken-off body is resumed before the read fails.
const RESUMES: u32 = 5;
/// Body chunks held ahead of the reader (hyper's chunks are up to 16 KiB or so).
const AHEAD: usize = 256;

/// Core's object-store reader, with a cache of object sizes learnt from listings.
#[derive(Debug, Default)]
pub struct ObjectInput {
    sizes: Mutex<HashMap<String, u64>>,
}

/// Installs [`ObjectInput`] as the process's reader of URL inputs (idempotent).
pub fn install() {
    flatfhir_core::remote::install(Arc::new(ObjectInput::default()));
}

fn io_err(e: crate::Error) -> io::Error {
    let kind = if e.is_not_found() {
        io::ErrorKind::NotFound
    } else {
        io::ErrorKind::Other
    };
    // The path (the URL) is named by core's error around this one: give the reason only.
    let reason = match e {
        crate::Error::Store { reason, .. } | crate::Error::Url { reason, .. } => reason,
        other => other.to_string(),
    };
    io::Error::new(kind, reason)
}

impl ObjectInput {
    fn size(&self, url: &str) -> Option<u64> {
        self.sizes.lock().ok()?.get(url).copied()
    }

    fn remember(&self, url: &str, size: u64) {
        if let Ok(mut m) = self.sizes.lock() {
            m.insert(url.to_string(), size);
        }
    }
}

impl RemoteInput for ObjectInput {
    fn stat(&self, url: &str) -> io::Result<RemoteStat> {
        if let Some(n) = self.size(url) {
            return Ok(RemoteStat::Object(n));
        }
        let loc = Location::parse(url).map_err(io_err)?;
        if !url.ends_with('/') && !loc.path.as_ref().is_empty() {
            let (store, path) = (Arc::clone(&loc.store), loc.path.clone());
            match runtime::run(async move { store.head(&path).await }) {
                Ok(meta) => {
                    self.remember(url, meta.size);
                    return Ok(RemoteStat::Object(meta.size));
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(io_err(crate::Error::store(url, &e))),
            }
        }
        if self.list(url)?.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such object, and no objects under it as a prefix",
            ));
        }
        Ok(RemoteStat::Prefix)
    }

    fn list(&self, url: &str) -> io::Result<Vec<RemoteObject>> {
        let found = crate::upload::list(url).map_err(io_err)?;
        for o in &found {
            self.remember(&o.url, o.size);
        }
        Ok(found)
    }

    fn read_range(&self, url: &str, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let loc = Location::parse(url).map_err(io_err)?;
        let u = url.to_string();
        runtime::run(async move {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(start..end)),
                ..Default::default()
            };
            let r = loc.store.get_opts(&loc.path, opts).await;
            match r {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            }
            .map(|b| b.to_vec())
            .map_err(|e| io_err(crate::Error::store(&u, &e)))
        })
    }

    fn open(&self, url: &str, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let loc = Location::parse(url).map_err(io_err)?;
        let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
        let task = runtime::handle().spawn(pump(loc, url.to_string(), offset, tx));
        Ok(Box::new(ObjectReader {
            rx,
            current: Bytes::new(),
            task,
        }))
    }
}

/// Streams the object from `pos` into `tx`, resuming a broken body.
async fn pump(
    loc: Location,
    url: String,
    mut pos: u64,
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) {
    let mut etag: Option<String> = None;
    let mut resumes = 0;
    loop {
        let opts = GetOptions {
            range: (pos > 0).then_some(GetRange::Offset(pos)),
            if_match: etag.clone(),
            ..Default::default()
        };
        let result = match loc.store.get_opts(&loc.path, opts).await {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(io_err(crate::Error::store(&url, &e)))).await;
                return;
            }
        };
        if etag.is_none() {
            etag = result.meta.e_tag.clone();
        }
        let mut body = result.into_stream();
        loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    pos += chunk.len() as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return; // the reader is gone
                    }
                }
                Some(Err(e)) if resumes < RESUMES => {
                    resumes += 1;
                    tracing::warn!(
                        "{url}: the download broke off at byte {pos} ({}); resuming ({resumes}/{RESUMES})",
                        crate::redact::redact(&e.to_string())
                    );
                    break;
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(io_err(crate::Error::store(&url, &e)))).await;
                    return;
                }
                None => return,
            }
        }
    }
}

/// The reading end: chunks from [`pump`].
struct ObjectReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    task: tokio::task::JoinHandle<()>,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}
