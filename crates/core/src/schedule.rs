//! Converting several resource types in one call. A type whose input fits in one chunk cannot
//! use more than one thread for its pass over the input, and its fixed costs (creating the
//! output, one Parquet writer per column, `fsync`) leave cores idle; such types run side by
//! side, each on one thread. Larger types run one at a time with every thread. Each type's
//! output is the same either way (it never depends on the thread count); results come back
//! in the order of the groups.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::convert::{ConvertOptions, Progress, TypeReport, convert_group};
use crate::error::Result;
use crate::input::TypeGroup;

/// Converts every group with [`convert_group`] and hands each result to `report` with the
/// group's index, in group order (a result waits until the groups before it are done).
///
/// The *small* groups — plain (not gzip) regular files of `opts.read.chunk_bytes` or less
/// in all — run first, side by side, as many at once as there are threads (`opts.threads`,
/// 0 meaning one per core), each with one thread. Then every other group runs alone with
/// all threads, in order. A group's failure is its own result; the others go on.
pub fn convert_groups<F>(
    groups: &[TypeGroup],
    opts: &ConvertOptions,
    progress: &dyn Progress,
    mut report: F,
) where
    F: FnMut(usize, Result<TypeReport>),
{
    let slots = thread_count(opts.threads);
    let small: Vec<bool> = groups
        .iter()
        .map(|g| slots > 1 && is_small(g, opts.read.chunk_bytes as u64))
        .collect();
    // All small groups first, side by side, then the others one at a time; results are
    // handed on in group order as soon as every group before them is done.
    let side = small.iter().filter(|&&s| s).count() >= 2;
    let (together, alone): (Vec<usize>, Vec<usize>) =
        (0..groups.len()).partition(|&k| side && small[k]);
    let mut waiting = BTreeMap::new();
    let mut want = 0;
    let mut deliver = |k: usize, r: Result<TypeReport>| {
        waiting.insert(k, r);
        while let Some(r) = waiting.remove(&want) {
            report(want, r);
            want += 1;
        }
    };
    side_by_side(groups, &together, opts, progress, slots, &mut deliver);
    for k in alone {
        deliver(k, convert_group(&groups[k], opts, progress));
    }
}

/// Converts the groups at `which` on up to `slots` threads at once, one thread each, handing
/// each result to `done` as it comes.
fn side_by_side<F>(
    groups: &[TypeGroup],
    which: &[usize],
    opts: &ConvertOptions,
    progress: &dyn Progress,
    slots: usize,
    done: &mut F,
) where
    F: FnMut(usize, Result<TypeReport>),
{
    if which.is_empty() {
        return;
    }
    let one = ConvertOptions {
        threads: 1,
        ..opts.clone()
    };
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<TypeReport>)>();
        for _ in 0..slots.min(which.len()) {
            let tx = tx.clone();
            let (next, one) = (&next, &one);
            scope.spawn(move || {
                while let Some(&k) = which.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let r = convert_group(&groups[k], one, progress);
                    if tx.send((k, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Ends when every worker has finished (or panicked: the scope then passes the
        // panic on).
        for (k, r) in rx {
            done(k, r);
        }
    });
}

/// Threads a conversion with `threads` uses: as given, or for 0 what rayon picks
/// (`RAYON_NUM_THREADS`, else one per core).
pub(crate) fn thread_count(threads: usize) -> usize {
    if threads > 0 {
        return threads;
    }
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Is the group's input at most `limit` bytes of plain regular files? Anything that cannot be
/// told (a missing file, a pipe, gzip, which may expand to many chunks) is not small, and
/// runs alone, where [`convert_group`] reports its errors as usual.
fn is_small(group: &TypeGroup, limit: u64) -> bool {
    let mut total = 0u64;
    for f in &group.files {
        if crate::remote::url_of(&f.path).is_some() {
            // An object: its size from the listing, gzip from its first bytes.
            let Ok(len) = crate::remote::len(&f.path) else {
                return false;
            };
            total = total.saturating_add(len);
            if total > limit || !matches!(crate::remote::is_gzip(&f.path), Ok(false)) {
                return false;
            }
            continue;
        }
        let Ok(mut file) = File::open(&f.path) else {
            return false;
        };
        let Ok(meta) = file.metadata() else {
            return false;
        };
        total = total.saturating_add(meta.len());
        if !meta.is_file() || total > limit {
            return false;
        }
        let mut magic = [0u8; 2];
        if file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b] {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::InputFile;
    use crate::reader::ReadOptions;
    use std::io::Write;
    use std::sync::Mutex;

    fn group(dir: &std::path::Path, rt: &str, lines: usize, bad_at: Option<usize>) -> TypeGroup {
        let path = dir.join(format!("{rt}.ndjson"));
        let mut f = File::create(&path).unwrap();
        for i in 0..lines {
            if Some(i) == bad_at {
                writeln!(f, "{{\"resourceType\":\"{rt}\",\"id\":").unwrap();
            } else {
                writeln!(
                    f,
                    "{{\"resourceType\":\"{rt}\",\"id\":\"{rt}-{i}\",\"n\":{i},\"code\":{{\"text\":\"t{}\"}}}}",
                    i % 7
                )
                .unwrap();
            }
        }
        TypeGroup {
            resource_type: rt.to_string(),
            files: vec![InputFile {
                path,
                typed_by_name: true,
                reports_untyped: false,
            }],
        }
    }

    #[test]
    fn small_means_plain_files_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let g = group(dir.path(), "Patient", 10, None);
        let size = std::fs::metadata(&g.files[0].path).unwrap().len();
        assert!(is_small(&g, size));
        assert!(!is_small(&g, size - 1));
        let gz = dir.path().join("Condition.ndjson.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(b"{\"resourceType\":\"Condition\"}\n")
            .unwrap();
        enc.finish().unwrap();
        let gz_group = TypeGroup {
            resource_type: "Condition".into(),
            files: vec![InputFile {
                path: gz,
                typed_by_name: true,
                reports_untyped: false,
            }],
        };
        assert!(!is_small(&gz_group, 1 << 20));
        let mut missing = g.clone();
        missing.files[0].path = dir.path().join("nope.ndjson");
        assert!(!is_small(&missing, 1 << 20));
    }

    /// Side by side or alone, every type's file is byte for byte what converting it alone
    /// with two threads writes, results come back in group order, and a failing type fails
    /// alone.
    #[test]
    fn side_by_side_writes_what_one_at_a_time_writes() {
        let input = tempfile::tempdir().unwrap();
        let groups = vec![
            group(input.path(), "AllergyIntolerance", 5, None),
            group(input.path(), "CarePlan", 40, None),
            group(input.path(), "CareTeam", 3, Some(1)),
            group(input.path(), "Condition", 400, None),
            group(input.path(), "Device", 7, None),
            group(input.path(), "Encounter", 9, None),
        ];
        // 4 KiB chunks: Condition (~30 KB) is large and runs alone; the others are small.
        let read = ReadOptions {
            chunk_bytes: 4096,
            ..ReadOptions::default()
        };
        let limit = read.chunk_bytes as u64;
        let smalls: Vec<bool> = groups.iter().map(|g| is_small(g, limit)).collect();
        assert_eq!(smalls, [true, true, true, false, true, true]);

        let alone = tempfile::tempdir().unwrap();
        let opts = |out: &std::path::Path, threads| ConvertOptions {
            out_dir: out.to_path_buf(),
            threads,
            read: read.clone(),
            ..ConvertOptions::default()
        };
        let expected: Vec<Option<Vec<u8>>> = groups
            .iter()
            .map(|g| {
                convert_group(g, &opts(alone.path(), 2), &crate::NoProgress)
                    .ok()
                    .map(|r| std::fs::read(r.output.unwrap()).unwrap())
            })
            .collect();
        assert!(expected[2].is_none(), "CareTeam has a bad line");

        let together = tempfile::tempdir().unwrap();
        let order = Mutex::new(Vec::new());
        convert_groups(
            &groups,
            &opts(together.path(), 2),
            &crate::NoProgress,
            |k, r| {
                let bytes = r.ok().map(|r| {
                    assert_eq!(r.resource_type, groups[k].resource_type);
                    std::fs::read(r.output.unwrap()).unwrap()
                });
                order.lock().unwrap().push((k, bytes));
            },
        );
        let got = order.into_inner().unwrap();
        assert_eq!(
            got.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            (0..groups.len()).collect::<Vec<_>>()
        );
        for ((k, bytes), want) in got.iter().zip(&expected) {
            assert_eq!(bytes, want, "{}", groups[*k].resource_type);
        }
    }
}
