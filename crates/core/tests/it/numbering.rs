//! Line numbers in what the engine reports — rejected lines, errors, where a column was
//! first seen — for generated files of good, blank, broken and overlong lines: they must be
//! the file's own line numbers however the input is cut into chunks, read (mapped or not)
//! and spread over threads. Workers number lines within their chunk; the pass adds the
//! lines of the chunks before, so this is where an off-by-one would show.

use std::path::Path;

use flatfhir_core::{
    ConvertOptions, NoProgress, OnError, ReadOptions, convert_group, infer_schema, plan,
};
use proptest::prelude::*;

/// Longest line the runs accept.
const MAX_LINE: usize = 120;

#[derive(Debug, Clone)]
enum Kind {
    /// A Patient with a column of its own (`c<n>`), so first-seen lines can be checked.
    Good(u8),
    Blank,
    /// Not JSON.
    Broken,
    /// Longer than [`MAX_LINE`].
    Overlong(usize),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        5 => (0u8..6).prop_map(Kind::Good),
        1 => Just(Kind::Blank),
        1 => Just(Kind::Broken),
        1 => (MAX_LINE + 1..MAX_LINE * 3).prop_map(Kind::Overlong),
    ]
}

fn text(k: &Kind, i: usize) -> String {
    match k {
        Kind::Good(c) => format!(r#"{{"resourceType":"Patient","id":"p{i}","c{c}":{i}}}"#),
        Kind::Blank => "  ".into(),
        Kind::Broken => format!(r#"{{"resourceType":"Patient","id":"p{i}""#),
        Kind::Overlong(n) => {
            let head = format!(r#"{{"resourceType":"Patient","id":"p{i}","pad":""#);
            format!("{head}{}\"}}", "x".repeat(n - head.len() - 2))
        }
    }
}

/// Writes the files; returns per file its lines' texts (1-based line = index + 1).
fn write(dir: &Path, files: &[Vec<Kind>], crlf: bool) -> Vec<Vec<String>> {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut all = Vec::new();
    let mut i = 0;
    for (f, kinds) in files.iter().enumerate() {
        let lines: Vec<String> = kinds
            .iter()
            .map(|k| {
                i += 1;
                text(k, i)
            })
            .collect();
        let body: String = lines.iter().map(|l| format!("{l}{nl}")).collect();
        std::fs::write(dir.join(format!("Patient.{f:02}.ndjson")), body).unwrap();
        all.push(lines);
    }
    all
}

fn options(out: &Path, threads: usize, chunk_bytes: usize) -> ConvertOptions {
    ConvertOptions::default()
        .out_dir(out.to_path_buf())
        .threads(threads)
        .on_error(OnError::Skip)
        .read(
            ReadOptions::default()
                .chunk_bytes(chunk_bytes)
                // Files over eight chunks of long lines grow their later chunks.
                .chunk_rows(flatfhir_core::DEFAULT_CHUNK_ROWS)
                .max_line_bytes(MAX_LINE),
        )
}

fn check(
    files: &[Vec<Kind>],
    crlf: bool,
    threads: usize,
    chunk_bytes: usize,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let texts = write(&input, files, crlf);
    let out = dir.path().join("out");
    let opts = options(&out, threads, chunk_bytes);
    let p = plan(std::slice::from_ref(&input), &opts.read).unwrap();
    prop_assert_eq!(p.groups.len(), 1);
    let group = &p.groups[0];
    let names: Vec<String> = group
        .files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect();

    // What should be rejected, in order: (file, line, reason prefix, text).
    let mut want = Vec::new();
    for (f, kinds) in files.iter().enumerate() {
        for (l, k) in kinds.iter().enumerate() {
            let why = match k {
                Kind::Broken => "not valid JSON",
                Kind::Overlong(_) => "line is ",
                Kind::Good(_) | Kind::Blank => continue,
            };
            want.push((names[f].clone(), l as u64 + 1, why, texts[f][l].clone()));
        }
    }

    let report = convert_group(group, &opts, &NoProgress).unwrap();
    prop_assert_eq!(report.rejected, want.len() as u64);
    if want.is_empty() {
        prop_assert!(report.rejected_file.is_none());
    } else {
        let rejected = std::fs::read_to_string(out.join("_rejected/Patient.ndjson")).unwrap();
        let errors = std::fs::read_to_string(out.join("_rejected/Patient.errors.ndjson")).unwrap();
        let got: Vec<serde_json::Value> = errors
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        prop_assert_eq!(got.len(), want.len());
        for (g, (file, line, why, _)) in got.iter().zip(&want) {
            prop_assert_eq!(g["file"].as_str(), Some(file.as_str()));
            prop_assert_eq!(g["line"].as_u64(), Some(*line), "{}", g);
            let reason = g["reason"].as_str().unwrap();
            prop_assert!(reason.starts_with(why), "{} for {}:{}", reason, file, line);
        }
        let verbatim: String = want.iter().map(|w| format!("{}\n", w.3)).collect();
        prop_assert_eq!(rejected, verbatim);
    }

    // Each `c<n>` column was first seen on the first good line that has it.
    let schema = infer_schema(group, &opts, &NoProgress).unwrap();
    for col in &schema.columns {
        let Some(c) = col.name.strip_prefix('c') else {
            continue;
        };
        let c: u8 = c.parse().unwrap_or_else(|_| panic!("{:?}", col.name));
        let first = files
            .iter()
            .enumerate()
            .flat_map(|(f, kinds)| kinds.iter().enumerate().map(move |(l, k)| (f, l, k)))
            .find(|(_, _, k)| matches!(k, Kind::Good(x) if *x == c))
            .map(|(f, l, _)| (f as u32, l as u64 + 1));
        prop_assert_eq!(
            Some((col.first_seen.file, col.first_seen.line)),
            first,
            "{}",
            col.name
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn reported_lines_are_file_lines(
        files in prop::collection::vec(prop::collection::vec(kind(), 0..40), 1..4),
        crlf in any::<bool>(),
        threads in 1usize..3,
        chunk_bytes in 1usize..400,
    ) {
        check(&files, crlf, threads, chunk_bytes)?;
    }
}

/// A conversion that stops at the first bad line names the file's own line, also when it is
/// far into a file read in many small chunks.
#[test]
fn the_first_bad_line_is_named_with_its_file_line() {
    let mut kinds = vec![Kind::Good(0); 500];
    kinds.insert(237, Kind::Blank);
    kinds.insert(401, Kind::Broken);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[kinds], false);
    let mut opts = options(&dir.path().join("out"), 2, 300);
    opts.on_error = OnError::Fail;
    let p = plan(&[dir.path().join("Patient.00.ndjson")], &opts.read).unwrap();
    let err = convert_group(&p.groups[0], &opts, &NoProgress).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Patient.00.ndjson:402"), "{msg}");
}
