//! Helpers shared by the CLI tests: running the binary, locating fixtures, reading outputs.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

/// The project root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A fixture path under `fixtures/`.
pub(crate) fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// `../shared` (or `$FLATFHIR_SHARED` when set), or `None` when it is absent, after printing
/// the `SKIPPED: reason` line that `scripts/test-all` counts.
pub(crate) fn shared() -> Option<PathBuf> {
    let p =
        std::env::var_os("FLATFHIR_SHARED").map_or_else(|| root().join("../shared"), PathBuf::from);
    if p.join("fixtures/bds-r4").is_dir() {
        Some(p.canonicalize().unwrap())
    } else {
        eprintln!(
            "SKIPPED: {} is absent (../shared; or set FLATFHIR_SHARED)",
            p.join("fixtures/bds-r4").display()
        );
        None
    }
}

/// The `flatfhir` command.
pub(crate) fn flatfhir() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("flatfhir").unwrap()
}

/// A table read back: column names, types, and rows as JSON values (null for no value).
#[derive(Debug, PartialEq)]
pub(crate) struct Table {
    pub(crate) columns: Vec<(String, DataType)>,
    pub(crate) rows: Vec<Vec<Value>>,
}

impl Table {
    pub(crate) fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub(crate) fn col(&self, name: &str) -> Vec<Value> {
        let i = self
            .columns
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        self.rows.iter().map(|r| r[i].clone()).collect()
    }

    pub(crate) fn data_type(&self, name: &str) -> DataType {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .1
            .clone()
    }
}

fn cell(a: &dyn Array, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Int64 => Value::from(a.as_primitive::<Int64Type>().value(i)),
        DataType::Float64 => Value::from(a.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => Value::from(a.as_boolean().value(i)),
        DataType::Utf8 => Value::from(a.as_string::<i32>().value(i)),
        other => panic!("unexpected type {other}"),
    }
}

fn collect(batches: Vec<RecordBatch>, schema: &arrow_schema::Schema) -> Table {
    let columns = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let mut rows = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            rows.push(b.columns().iter().map(|c| cell(c.as_ref(), i)).collect());
        }
    }
    Table { columns, rows }
}

/// Reads a Parquet file.
pub(crate) fn read_parquet(path: &Path) -> Table {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let batches = builder
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    collect(batches, &schema)
}

/// Reads an Arrow IPC file.
pub(crate) fn read_arrow(path: &Path) -> Table {
    let reader = arrow_ipc::reader::FileReader::try_new(File::open(path).unwrap(), None).unwrap();
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().unwrap();
    collect(batches, &schema)
}

/// Files in a directory (names), sorted, including hidden ones.
pub(crate) fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Files created in a directory, as inotify reports them.
pub(crate) struct Created {
    fd: std::os::fd::OwnedFd,
}

#[allow(unsafe_code)]
impl Created {
    pub(crate) fn watch(dir: &Path) -> Self {
        use std::os::fd::FromRawFd as _;
        use std::os::unix::ffi::OsStrExt as _;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain system calls on a new descriptor and a NUL-terminated path.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_CLOEXEC);
            assert!(fd >= 0, "inotify_init1");
            let wd = libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_CREATE);
            assert!(wd >= 0, "inotify_add_watch");
            Self {
                fd: std::os::fd::OwnedFd::from_raw_fd(fd),
            }
        }
    }

    /// Blocks until `n` files whose names `wanted` accepts were created; panics if `child`
    /// ends first. (poll's 60 s are a guard against a hang, not a measurement.)
    pub(crate) fn wait_for(
        &self,
        n: usize,
        child: &mut std::process::Child,
        wanted: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        use std::os::fd::AsRawFd as _;
        let mut names = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while names.len() < n {
            let mut p = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&raw mut p, 1, 60_000) };
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the child ended before creating its files: {status}");
            }
            assert!(ready > 0, "no file created in 60 s (seen: {names:?})");
            // SAFETY: reads into a buffer of the given length.
            let len =
                unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            assert!(len > 0, "inotify read");
            let mut at = 0;
            while at < len as usize {
                // struct inotify_event: wd i32, mask u32, cookie u32, len u32, name[len].
                let name_len =
                    u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
                let raw = &buf[at + 16..at + 16 + name_len];
                let name = String::from_utf8_lossy(raw.split(|&b| b == 0).next().unwrap_or(raw));
                if wanted(&name) {
                    names.push(name.into_owned());
                }
                at += 16 + name_len;
            }
        }
        names
    }
}
