//! The properties the fuzz targets check, as plain functions: each target in `fuzz_targets/`
//! is one call (see docs/fuzzing.md).

#![allow(clippy::missing_panics_doc)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;

use serde_json::{Map, Value};

mod reference;

/// serde_json errors the walkers are allowed not to share: serde_json stops at 128 levels
/// (the walkers at 256 and 512), and rejects numbers outside `f64` (valid JSON, which the
/// walkers keep as text).
fn serde_only_limit(e: &serde_json::Error) -> bool {
    let m = e.to_string();
    m.contains("recursion limit exceeded") || m.contains("number out of range")
}

/// The flattener's walker against serde_json.
pub fn check_walker(line: &str) {
    let theirs = serde_json::from_str::<Value>(line);
    for guess in [false, true] {
        let ours = flatfhir_core::fuzzing::walk_to_value(line, guess);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert!(a == b, "walker {a} != serde_json {b} for {line:?}"),
            (Err(_), Ok(b)) if !b.is_object() => {}
            (Err(e), Ok(_)) => panic!("walker rejects ({e}) what serde_json accepts: {line:?}"),
            (Ok(_), Err(e)) if serde_only_limit(e) => {}
            (Ok(a), Err(e)) => {
                panic!("walker accepts ({a}) what serde_json rejects ({e}): {line:?}")
            }
            (Err(_), Err(_)) => {}
        }
    }
}

/// The view's JSON tree as a serde_json value (numbers read by serde_json from their text).
fn view_json_to_serde(j: &flatfhir_view::json::Json<'_>) -> Value {
    use flatfhir_view::json::Json;
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => serde_json::from_str(n).unwrap_or(Value::Null),
        Json::String(s) => Value::String(s.to_string()),
        Json::Array(a) => Value::Array(a.iter().map(view_json_to_serde).collect()),
        Json::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(k.to_string(), view_json_to_serde(v));
            }
            Value::Object(out)
        }
    }
}

/// The view engine's JSON tree (built by core's validating walker, the one JSON layer) against
/// serde_json: what serde_json reads, it reads to the same value, and a rejection says why.
/// Where the walker and serde_json differ on acceptance (the `walker` target checks that), a
/// text only the view accepts is not a failure here.
pub fn check_view_json(text: &str) {
    let theirs = serde_json::from_str::<Value>(text);
    let ours = flatfhir_view::json::parse(text);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => {
            let a = view_json_to_serde(a);
            assert!(a == *b, "view json {a} != serde_json {b} for {text:?}");
        }
        // A line is one JSON object: another top-level value is rightly refused.
        (Err(_), Ok(v)) if !v.is_object() => {}
        (Err(e), Ok(_)) => panic!("view json rejects ({e}) what serde_json accepts: {text:?}"),
        (Ok(_), Err(_)) => {}
        (Err(e), Err(_)) => assert!(!e.reason.is_empty(), "a rejection without a reason"),
    }
}

/// A resource with a bit of everything for FHIRPath to walk.
const PATIENT: &str = r#"{"resourceType":"Patient","id":"p1","active":true,"birthDate":"1970-01-02","deceasedDateTime":"2020-03-04T05:06:07Z","multipleBirthInteger":2,"name":[{"use":"official","family":"Smith","given":["Ann","B."]},{"given":["Nan"]}],"identifier":[{"system":"urn:x","value":"MRN1"}],"extension":[{"url":"http://e/x","valueDecimal":1.50},{"url":"http://e/q","valueQuantity":{"value":3,"unit":"mg"}}],"contact":[{"telecom":[{"system":"phone","value":"1"}]}],"link":[{"other":{"reference":"Patient/p2"}}]}"#;

/// FHIRPath through the public view API: compiling never panics, nor does evaluating.
pub fn check_fhirpath(expr: &str) {
    let cols = vec![("c".to_string(), expr.to_string())];
    let Ok(view) = flatfhir_view::View::from_columns("v", "Patient", &cols) else {
        return;
    };
    let resource = flatfhir_view::json::parse(PATIENT).expect("sample parses");
    let mut rows = Vec::new();
    let _ = view.rows(&resource, &mut rows);
    for r in &rows {
        for c in r.iter() {
            let _ = c.to_json();
        }
    }
}

/// The file's lines as a careful reader sees them: BOM dropped, split at `\n`, one `\r`
/// before it dropped, numbered from 1. `(number, bytes, blank)`.
fn reference_lines(text: &[u8]) -> Vec<(u64, Vec<u8>, bool)> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let mut out = Vec::new();
    if text.is_empty() {
        return out;
    }
    let mut parts: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    for (i, p) in parts.into_iter().enumerate() {
        let p = p.strip_suffix(b"\r").unwrap_or(p);
        let blank = p.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'));
        out.push((i as u64 + 1, p.to_vec(), blank));
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// The line reader: the first byte picks gzip, chunk size and line cap; the rest is the
/// file's (decompressed) text.
pub fn check_reader(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let gz = mode & 1 != 0;
    let chunk_bytes = [1, 3, 64, 4096][usize::from((mode >> 1) & 3)];
    let max_line_bytes = [8, 64, 1 << 20][usize::from((mode >> 3) & 3) % 3];
    let chunk_rows = usize::from((mode >> 5) & 1) * 4;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Basic.ndjson");
    std::fs::write(&path, if gz { gzip(body) } else { body.to_vec() }).unwrap();
    let opts = flatfhir_core::ReadOptions::default()
        .max_line_bytes(max_line_bytes)
        .chunk_bytes(chunk_bytes)
        .chunk_rows(chunk_rows);
    let got = read_all(&path, &opts);
    if !gz && is_gzip(body) {
        // Sniffed as gzip: whatever it decodes to, an error must name the file.
        if let Err(e) = got {
            assert!(e.contains("Basic.ndjson"), "{e}");
        }
        return;
    }
    let (lines, overlong, sunk) = got.unwrap_or_else(|e| panic!("{e}"));
    let want = reference_lines(body);
    let mut given = lines.iter().peekable();
    let mut skipped = overlong.iter().peekable();
    for (n, text, blank) in &want {
        if let Some((gn, gt)) = given.peek()
            && gn == n
        {
            assert!(!blank, "blank line {n} handed over");
            assert_eq!(gt, text, "line {n}");
            given.next();
            continue;
        }
        if let Some((on, olen)) = skipped.peek()
            && on == n
        {
            assert!(
                text.len() > max_line_bytes,
                "line {n} skipped but not overlong"
            );
            assert_eq!(*olen, text.len() as u64, "overlong line {n}'s length");
            assert_eq!(sunk.get(n), Some(text), "overlong line {n}'s bytes");
            skipped.next();
            continue;
        }
        assert!(
            *blank,
            "line {n} ({:?}) lost",
            String::from_utf8_lossy(text)
        );
    }
    assert!(given.next().is_none(), "a line beyond the file: {lines:?}");
    assert!(skipped.next().is_none(), "an overlong line beyond the file");
}

type Read3 = (Vec<(u64, Vec<u8>)>, Vec<(u64, u64)>, BTreeMap<u64, Vec<u8>>);

fn read_all(path: &Path, opts: &flatfhir_core::ReadOptions) -> Result<Read3, String> {
    let mut r = flatfhir_core::internal::LineReader::open(path, opts).map_err(|e| e.to_string())?;
    let sunk = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<u64, Vec<u8>>::new()));
    let sink = std::sync::Arc::clone(&sunk);
    r.set_overlong_sink(Box::new(move |n, piece, _| {
        sink.lock()
            .unwrap()
            .entry(n)
            .or_default()
            .extend_from_slice(piece);
        Ok(())
    }));
    let (mut lines, mut overlong) = (Vec::new(), Vec::new());
    while let Some(c) = r.next_chunk().map_err(|e| e.to_string())? {
        overlong.extend(c.overlong.iter().map(|o| (o.number, o.len)));
        lines.extend(c.lines().map(|l| (l.number, l.bytes.to_vec())));
    }
    drop(r);
    let sunk = std::mem::take(&mut *sunk.lock().unwrap());
    Ok((lines, overlong, sunk))
}

/// What a line should become: a row (its value), or a rejection. `None`: the reference
/// cannot tell (limits serde_json has and the walker does not).
fn model(text: &[u8], max_line_bytes: usize) -> Option<Result<Value, ()>> {
    if text.len() > max_line_bytes {
        return Some(Err(()));
    }
    let Ok(s) = std::str::from_utf8(text) else {
        return Some(Err(()));
    };
    match serde_json::from_str::<Value>(s) {
        // The engine refuses a member name repeated in one object (docs/columns.md).
        Ok(v) if v.is_object() && v["resourceType"] == "Basic" => Some(
            serde_json::from_str::<NoDuplicateKeys>(s)
                .map(|_| v)
                .map_err(|_| ()),
        ),
        Ok(_) => Some(Err(())),
        Err(e) if serde_only_limit(&e) => None,
        Err(_) => Some(Err(())),
    }
}

/// Deserializes any JSON, failing on a member name repeated in one object.
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self, A::Error> {
        while a.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self, A::Error> {
        let mut seen = BTreeSet::new();
        while let Some(k) = a.next_key::<String>()? {
            if !seen.insert(k) {
                return Err(serde::de::Error::custom("duplicate key"));
            }
            a.next_value::<NoDuplicateKeys>()?;
        }
        Ok(self)
    }
}

/// A whole conversion with `--on-error skip`. The first byte picks chunk size, threads,
/// gzip and memory budget; the rest is the file.
pub fn check_convert(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    if is_gzip(body) {
        return; // the reader target covers sniffed gzip
    }
    let chunk_bytes = [64, 1 << 20][usize::from(mode & 1)];
    let threads = 1 + usize::from((mode >> 1) & 1);
    let gz = (mode >> 2) & 1 != 0;
    let memory_budget = if (mode >> 3) & 1 != 0 { 0 } else { 64 << 20 };
    let max_line_bytes = 4096;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("Basic.ndjson");
    std::fs::write(&input, if gz { gzip(body) } else { body.to_vec() }).unwrap();
    let read = flatfhir_core::ReadOptions::default()
        .max_line_bytes(max_line_bytes)
        .chunk_bytes(chunk_bytes);
    let out = dir.path().join("out");
    let opts = flatfhir_core::ConvertOptions::default()
        .out_dir(out.clone())
        .threads(threads)
        .on_error(flatfhir_core::OnError::Skip)
        .read(read.clone())
        .memory_budget(memory_budget)
        .max_columns(2000);
    let plan = flatfhir_core::plan(std::slice::from_ref(&input), &read).expect("plan");
    let Some(group) = plan.groups.first() else {
        return;
    };
    let report = match flatfhir_core::convert_group(group, &opts, &flatfhir_core::NoProgress) {
        Ok(r) => r,
        // A whole type may fail (column names that collide, too many columns): no output.
        Err(e) => {
            assert!(
                !out.join("Basic.parquet").exists(),
                "output left after: {e}"
            );
            return;
        }
    };
    let lines = reference_lines(body);
    let nonblank: Vec<&(u64, Vec<u8>, bool)> = lines.iter().filter(|l| !l.2).collect();
    assert_eq!(
        report.rows + report.rejected,
        nonblank.len() as u64,
        "every non-blank line is a row or rejected"
    );

    // Every rejected line is named by file and line, and kept verbatim.
    let mut rejected = BTreeSet::new();
    if report.rejected > 0 {
        let reasons =
            std::fs::read_to_string(out.join("_rejected/Basic.errors.ndjson")).expect("reasons");
        let mut kept = Vec::new();
        std::fs::File::open(out.join("_rejected/Basic.ndjson"))
            .expect("rejected lines")
            .read_to_end(&mut kept)
            .unwrap();
        let mut kept = kept.split(|&b| b == b'\n');
        for rec in reasons.lines() {
            let rec: Value = serde_json::from_str(rec).unwrap();
            assert_eq!(rec["file"].as_str(), Some(input.to_str().unwrap()), "{rec}");
            let n = rec["line"].as_u64().expect("a line number");
            let (_, text, _) = nonblank
                .iter()
                .find(|l| l.0 == n)
                .unwrap_or_else(|| panic!("rejected line {n} is not a non-blank line: {rec}"));
            assert!(!rec["reason"].as_str().unwrap_or("").is_empty(), "{rec}");
            assert_eq!(kept.next(), Some(text.as_slice()), "line {n} kept verbatim");
            assert!(rejected.insert(n), "line {n} rejected twice");
        }
    }
    assert_eq!(rejected.len() as u64, report.rejected);

    // The accepted lines, in order, are what the model accepts.
    let mut accepted = Vec::new();
    for (n, text, _) in &nonblank {
        let was_rejected = rejected.contains(n);
        match model(text, max_line_bytes) {
            Some(Ok(v)) => {
                assert!(
                    !was_rejected,
                    "line {n} rejected: {:?}",
                    String::from_utf8_lossy(text)
                );
                accepted.push(v);
            }
            Some(Err(())) => assert!(
                was_rejected,
                "line {n} accepted: {:?}",
                String::from_utf8_lossy(text)
            ),
            // The reference cannot read it; the table cannot be checked against it.
            None if !was_rejected => return,
            None => {}
        }
    }
    assert_eq!(accepted.len() as u64, report.rows);
    match &report.output {
        Some(parquet) => reference::check_parquet(parquet, &accepted),
        None => assert!(accepted.is_empty()),
    }
}

/// The manifest reader: every entry of every list is kept (or the manifest refused with a
/// reason naming the entry), URLs resolved against the status URL.
pub fn check_manifest(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let base = url::Url::parse("https://fhir.example/bulk/status/1?x=y").unwrap();
    let m = match flatfhir_fetch::fuzzing::manifest(&v, &base) {
        Ok(m) => m,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    let lists: &[(&str, flatfhir_fetch::ItemType)] = &[
        ("output", flatfhir_fetch::ItemType::Output),
        ("error", flatfhir_fetch::ItemType::Error),
        ("outcome", flatfhir_fetch::ItemType::Error),
        ("deleted", flatfhir_fetch::ItemType::Deleted),
    ];
    let mut want = Vec::new();
    for (key, item) in lists {
        for e in v[*key].as_array().into_iter().flatten() {
            let url = base
                .join(e["url"].as_str().expect("kept only with a url"))
                .unwrap();
            want.push((
                *item,
                url.to_string(),
                e["type"].as_str().map(str::to_owned),
            ));
        }
    }
    let got: Vec<_> = m
        .entries
        .iter()
        .map(|e| (e.item, e.url.clone(), e.resource_type.clone()))
        .collect();
    assert_eq!(got, want);
    for item in lists.iter().map(|l| l.1) {
        let idx: Vec<usize> = m
            .entries
            .iter()
            .filter(|e| e.item == item)
            .map(|e| e.index)
            .collect();
        assert_eq!(
            idx,
            (0..idx.len()).collect::<Vec<_>>(),
            "indexes of {item:?}"
        );
    }
    assert_eq!(
        m.requires_access_token,
        v["requiresAccessToken"].as_bool().unwrap_or(true)
    );
}

/// OperationOutcome bodies and error files: every issue's text reaches the user, and a line
/// of an error file that cannot be read is reported, not dropped.
pub fn check_operation_outcome(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let shown = flatfhir_fetch::fuzzing::outcome_text(&text);
    assert!(!shown.is_empty());
    let _ = flatfhir_fetch::fuzzing::is_transient(&text);
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        if v["resourceType"] == "OperationOutcome" {
            for i in v["issue"].as_array().into_iter().flatten() {
                if let Some(d) = i["diagnostics"].as_str() {
                    assert!(shown.contains(d), "diagnostics {d:?} not in {shown:?}");
                }
            }
        }
    } else {
        assert!(shown.chars().count() <= 500 || text.trim().is_empty());
    }

    // The same bytes as an error file of the export.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("error")).unwrap();
    let rel = "error/1.OperationOutcome.ndjson";
    std::fs::write(dir.path().join(rel), data).unwrap();
    let issues = flatfhir_fetch::fuzzing::read_issues(dir.path(), rel);
    // One issue per issue of each line; one for a line that is not JSON or holds no
    // issue; one for a file that is not UTF-8.
    let want = match std::str::from_utf8(data) {
        Err(_) => 1,
        Ok(whole) => whole
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| match serde_json::from_str::<Value>(line) {
                Ok(v) => v["issue"].as_array().map_or(1, |a| a.len().max(1)),
                Err(_) => 1,
            })
            .sum(),
    };
    assert_eq!(
        issues.len(),
        want,
        "issues from {:?}: {issues:?}",
        String::from_utf8_lossy(data)
    );
}

/// The chunked de-framer of file downloads. The first byte picks the mode and the next four
/// the read sizes (1 to 256 bytes, or that many KiB). Mode 0: the rest is a wire, de-framed
/// exactly as `flatfhir_fetch::fuzzing::reference_dechunk` (same body and bytes taken, incomplete, or refused —
/// never another body). Mode 1: the rest is a body, chunked in pieces of the read sizes
/// turned about (with an extension and trailer at times), which must de-frame to itself.
pub fn check_chunked(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (head, payload) = rest.split_at(rest.len().min(4));
    let steps: Vec<usize> = head
        .iter()
        .map(|&b| {
            let n = usize::from(b & 0x7f) + 1;
            if b & 0x80 == 0 { n } else { n * 1024 }
        })
        .collect();
    if mode & 1 == 0 {
        // The de-framer refuses lines over 4 KiB; the reference has no cap.
        if payload.len() > 4096 {
            return;
        }
        let ours = flatfhir_fetch::fuzzing::dechunk(payload, &steps);
        let want = flatfhir_fetch::fuzzing::reference_dechunk(payload);
        match (&ours, &want) {
            (Ok(a), Ok(b)) => assert!(a == b, "de-framed {a:?}, reference {b:?}: {payload:?}"),
            (Err(_), Err(_)) => {}
            _ => panic!("de-framed {ours:?}, reference {want:?}: {payload:?}"),
        }
        return;
    }
    let mut wire = Vec::new();
    let mut lens = steps.iter().rev().cycle();
    let mut at = 0;
    while at < payload.len() {
        let n = (*lens.next().unwrap_or(&1)).min(payload.len() - at);
        let ext = if mode & 2 == 0 { "" } else { ";x=\"y\"" };
        wire.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
        wire.extend_from_slice(&payload[at..at + n]);
        wire.extend_from_slice(b"\r\n");
        at += n;
    }
    wire.extend_from_slice(if mode & 4 == 0 {
        b"0\r\n\r\n"
    } else {
        b"0\r\nx-t: 1\r\n\r\n"
    });
    let got = flatfhir_fetch::fuzzing::dechunk(&wire, &steps);
    assert!(
        got == Ok(Some((payload.to_vec(), wire.len()))),
        "{payload:?} chunked as {wire:?} de-framed to {got:?}"
    );
}
