//! Shards and the mergeable schema: for random inputs and random shardings, the merged shard
//! schemas equal the whole-input schema (in any merge order), and the shards' tables,
//! concatenated in shard order, equal the single-machine table; a precomputed schema that
//! the input does not fit is an error naming file and line.

use std::io::Write;
use std::path::Path;

use arrow_array::{Array, RecordBatch};
use flatfhir_core::{
    ConvertOptions, NoProgress, OnError, ReadOptions, SchemaDoc, Shard, TypeGroup, TypeSchema,
    convert_group, infer_schema, plan, plan_shards, read_group, read_shard,
};
use proptest::prelude::*;
use serde_json::Value;

use super::property::resource;

fn group(dir: &Path) -> TypeGroup {
    let p = plan(&[dir.to_path_buf()], &ReadOptions::default()).unwrap();
    assert_eq!(p.groups.len(), 1);
    p.groups[0].clone()
}

/// Where the shard starting at `start` really starts (the Hadoop rule).
fn begin(text: &[u8], start: u64) -> usize {
    let s = start as usize;
    if s == 0 {
        return 0;
    }
    text[s..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |i| s + i + 1)
}

/// The schema with first-seen positions turned into real line numbers.
fn normalised(t: &TypeSchema, files: &[Vec<u8>]) -> TypeSchema {
    let mut t = t.clone();
    for c in &mut t.columns {
        let f = &files[c.first_seen.file as usize];
        let b = begin(f, c.first_seen.start);
        c.first_seen.line += f[..b].iter().filter(|&&x| x == b'\n').count() as u64;
        c.first_seen.start = 0;
    }
    t
}

fn cells(batches: &[RecordBatch]) -> Vec<Vec<arrow_array::ArrayRef>> {
    let width = batches.first().map_or(0, |b| b.num_columns());
    (0..width)
        .map(|c| {
            batches
                .iter()
                .flat_map(|b| (0..b.num_rows()).map(move |r| b.column(c).slice(r, 1)))
                .collect()
        })
        .collect()
}

fn write_input(
    dir: &Path,
    resources: &[Value],
    split: usize,
    crlf: bool,
    gzip: bool,
) -> Vec<Vec<u8>> {
    let eol = if crlf { "\r\n" } else { "\n" };
    let (a, b) = resources.split_at(split.min(resources.len()));
    let mut first: String = a.iter().map(|r| format!("{r}{eol}")).collect();
    // A blank line in the middle; blank lines count for line numbers but are no rows.
    first.insert_str(first.find('\n').map_or(0, |i| i + 1), eol);
    std::fs::write(dir.join("Basic.1.ndjson"), &first).unwrap();
    let second: String = b.iter().map(|r| format!("{r}\n")).collect();
    if gzip {
        let f = std::fs::File::create(dir.join("Basic.2.ndjson.gz")).unwrap();
        let mut z = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        z.write_all(second.as_bytes()).unwrap();
        z.finish().unwrap();
    } else {
        std::fs::write(dir.join("Basic.2.ndjson"), &second).unwrap();
    }
    vec![first.into_bytes(), second.into_bytes()]
}

/// Shards at the given cut points (fractions of each plain file).
fn shards_at(group: &TypeGroup, cuts: &[f64]) -> Vec<Shard> {
    let mut out = Vec::new();
    for s in plan_shards(group, u64::MAX).unwrap() {
        let len = std::fs::metadata(&s.path).unwrap().len();
        if s.path.extension().is_some_and(|e| e == "gz") || len == 0 {
            out.push(s);
            continue;
        }
        let mut points: Vec<u64> = cuts.iter().map(|f| (f * len as f64) as u64).collect();
        points.push(0);
        points.push(len);
        points.sort_unstable();
        points.dedup();
        for w in points.windows(2) {
            out.push(Shard {
                start: w[0],
                end: Some(w[1]),
                ..s.clone()
            });
        }
    }
    out
}

fn check(
    resources: &[Value],
    split: usize,
    crlf: bool,
    gzip: bool,
    cuts: &[f64],
    order: &[usize],
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let texts = write_input(&input, resources, split, crlf, gzip);
    let g = group(&input);
    let opts = ConvertOptions::default()
        .out_dir(dir.path().join("out"))
        .threads(1);
    let whole = infer_schema(&g, &opts, &NoProgress).unwrap().schema;

    let shards = shards_at(&g, cuts);
    let mut none = |_: RecordBatch| Ok(());
    let parts: Vec<TypeSchema> = shards
        .iter()
        .map(|s| read_shard(s, &opts, None, &mut none).unwrap().schema)
        .collect();
    // In shard order, and in another order: merging is commutative and associative.
    let mut merged = TypeSchema::default();
    for p in &parts {
        merged.merge("Basic", p).unwrap();
    }
    let mut other = TypeSchema::default();
    for &i in order.iter().filter(|&&i| i < parts.len()) {
        other.merge("Basic", &parts[i]).unwrap();
    }
    for (i, p) in parts.iter().enumerate() {
        if !order.contains(&i) {
            let mut pair = p.clone();
            pair.merge("Basic", &other).unwrap();
            other = pair;
        }
    }
    prop_assert_eq!(&normalised(&merged, &texts), &whole);
    prop_assert_eq!(&other, &merged);

    // The document round-trips.
    let mut doc = SchemaDoc::new("_", &[]);
    doc.types.insert("Basic".into(), merged.clone());
    prop_assert_eq!(&SchemaDoc::from_json(&doc.to_json()).unwrap(), &doc);

    // Shard tables in shard order = the single-machine table.
    let mut want = Vec::new();
    let mut schema = None;
    read_group(
        &g,
        &opts,
        &NoProgress,
        &mut |s| {
            schema = Some(s.clone());
            Ok(())
        },
        &mut |b| {
            want.push(b);
            Ok(())
        },
    )
    .unwrap();
    let mut got = Vec::new();
    for s in &shards {
        read_shard(s, &opts, Some(&merged), &mut |b| {
            got.push(b);
            Ok(())
        })
        .unwrap();
    }
    let schema = schema.unwrap();
    for b in &got {
        prop_assert_eq!(b.schema(), schema.clone());
    }
    prop_assert_eq!(cells(&got), cells(&want));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn shards_merge_to_the_whole_input(
        resources in prop::collection::vec(resource(), 1..14),
        split in 0usize..14,
        crlf in any::<bool>(),
        gzip in any::<bool>(),
        cuts in prop::collection::vec(0.0f64..1.0, 0..6),
        order in Just((0..12).collect::<Vec<usize>>()).prop_shuffle(),
    ) {
        check(&resources, split, crlf, gzip, &cuts, &order[..6])?;
    }
}

/// Every line in exactly one shard, including cuts right at a line start, on its newline, and
/// one byte either side.
#[test]
fn hadoop_rule_reads_each_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..9)
        .map(|i| format!("{{\"resourceType\":\"Basic\",\"id\":\"{i}\"}}"))
        .collect();
    let text = lines.join("\n") + "\n";
    std::fs::write(dir.path().join("Basic.ndjson"), &text).unwrap();
    let g = group(dir.path());
    let len = text.len() as u64;
    let doc = infer_schema(&g, &ConvertOptions::default(), &NoProgress)
        .unwrap()
        .schema;
    for size in 1..=len {
        let shards = plan_shards(&g, size).unwrap();
        let mut ids = Vec::new();
        for s in &shards {
            read_shard(s, &ConvertOptions::default(), Some(&doc), &mut |b| {
                let col = b.column_by_name("id").unwrap();
                let a = col
                    .as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .unwrap();
                ids.extend(a.iter().map(|v| v.unwrap().to_string()));
                Ok(())
            })
            .unwrap();
        }
        let want: Vec<String> = (0..9).map(|i| i.to_string()).collect();
        assert_eq!(ids, want, "shard size {size}");
    }
}

fn doc_of(dir: &Path) -> SchemaDoc {
    let g = group(dir);
    let mut doc = SchemaDoc::new("_", &[]);
    let t = infer_schema(&g, &ConvertOptions::default(), &NoProgress)
        .unwrap()
        .schema;
    doc.types.insert(g.resource_type.clone(), t);
    doc
}

/// A value the given schema cannot hold is an error naming file and line, in `convert` and
/// in a shard read; a value it can hold (an integer in a text column) is written as the
/// single machine would.
#[test]
fn misfits_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(
        a.join("Basic.ndjson"),
        "{\"resourceType\":\"Basic\",\"n\":1,\"s\":\"x\"}\n",
    )
    .unwrap();
    let doc = doc_of(&a);
    for (text, want) in [
        (
            "{\"resourceType\":\"Basic\",\"n\":2}\n\n{\"resourceType\":\"Basic\",\"n\":\"two\"}\n",
            "Basic.ndjson:3: column n is int64 in the given schema, but this line has a string value",
        ),
        (
            "{\"resourceType\":\"Basic\",\"s\":5}\n{\"resourceType\":\"Basic\",\"new\":{\"k\":true}}\n",
            "Basic.ndjson:2: column new_k (new.k) is not in the given schema",
        ),
    ] {
        std::fs::write(b.join("Basic.ndjson"), text).unwrap();
        let g = group(&b);
        let opts = ConvertOptions::default()
            .out_dir(dir.path().join("out"))
            .schema(Some(std::sync::Arc::new(doc.clone())))
            // Misfits are errors even when bad lines are skipped.
            .on_error(OnError::Skip);
        let err = convert_group(&g, &opts, &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with(want), "{err}");
        assert!(!dir.path().join("out/Basic.parquet").exists());
        let shard = &plan_shards(&g, 1 << 20).unwrap()[0];
        let t = doc.get("Basic").unwrap();
        let err = read_shard(shard, &opts, Some(t), &mut |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with(want), "{err}");
    }
    // An integer in a text column fits (written as its text).
    std::fs::write(
        b.join("Basic.ndjson"),
        "{\"resourceType\":\"Basic\",\"s\":5}\n",
    )
    .unwrap();
    let opts = ConvertOptions::default()
        .out_dir(dir.path().join("out"))
        .schema(Some(std::sync::Arc::new(doc.clone())));
    let r = convert_group(&group(&b), &opts, &NoProgress).unwrap();
    assert_eq!((r.rows, r.columns), (1, 3));
}

/// A shard that does not start at 0 names the file, its line counted from the shard's start,
/// and where that shard starts.
#[test]
fn errors_in_later_shards_say_where_the_count_starts() {
    let dir = tempfile::tempdir().unwrap();
    let good = "{\"resourceType\":\"Basic\",\"id\":\"a\"}\n";
    std::fs::write(
        dir.path().join("Basic.ndjson"),
        format!("{good}{good}{good}{{broken\n"),
    )
    .unwrap();
    let g = group(dir.path());
    let shards = plan_shards(&g, 40).unwrap();
    let last = shards.last().unwrap();
    assert!(last.start > 0);
    let err = read_shard(last, &ConvertOptions::default(), None, &mut |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("of the shard from byte {}", last.start)),
        "{err}"
    );
    assert!(
        err.starts_with(&format!("{}:", last.path.display())),
        "{err}"
    );
}

/// Documents of another format or version, or inconsistent ones, are refused.
#[test]
fn foreign_documents_are_refused() {
    let mut doc = SchemaDoc::new("_", &[]);
    doc.version = 2;
    assert!(
        SchemaDoc::from_json(&doc.to_json())
            .unwrap_err()
            .to_string()
            .contains("version 2")
    );
    let bad = r#"{"format":"flatfhir-schema","version":1,"sep":"_","exclude":[],"types":{"Basic":{"rows":1,"rejected":0,"columns":[{"name":"a_c","path":["a","b"],"kinds":["int"],"type":"int64","non_null":1,"first_seen":{"file":0,"start":0,"line":1,"pos":0}}]}}}"#;
    assert!(
        SchemaDoc::from_json(bad)
            .unwrap_err()
            .to_string()
            .contains("whose name is \"a_b\"")
    );
}

/// Texts held in memory flatten as the same lines in a file do; errors name the source and
/// the line counted from `first_line`.
#[test]
fn texts_in_memory_flatten_like_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..20)
        .map(|i| format!("{{\"resourceType\":\"Basic\",\"id\":\"{i}\",\"v\":[{i}]}}"))
        .collect();
    std::fs::write(dir.path().join("Basic.ndjson"), lines.join("\n") + "\n").unwrap();
    let g = group(dir.path());
    let opts = ConvertOptions::default();
    let doc = infer_schema(&g, &opts, &NoProgress).unwrap().schema;
    let shard = Shard {
        resource_type: "Basic".into(),
        file_index: 0,
        path: "column value".into(),
        start: 0,
        end: None,
        typed_by_name: true,
        reports_untyped: true,
    };
    let texts: Vec<Vec<u8>> = lines.iter().map(|l| l.clone().into_bytes()).collect();
    let mut none = |_: RecordBatch| Ok(());
    let own = flatfhir_core::read_texts(&shard, texts.clone(), 1, &opts, None, &mut none)
        .unwrap()
        .schema;
    assert_eq!(own, doc);
    let mut got = Vec::new();
    flatfhir_core::read_texts(&shard, texts, 1, &opts, Some(&doc), &mut |b| {
        got.push(b);
        Ok(())
    })
    .unwrap();
    let mut want = Vec::new();
    read_group(&g, &opts, &NoProgress, &mut |_| Ok(()), &mut |b| {
        want.push(b);
        Ok(())
    })
    .unwrap();
    assert_eq!(cells(&got), cells(&want));
    let err = flatfhir_core::read_texts(
        &shard,
        vec![b"{\"resourceType\":\"Basic\",\"v\":[\"x\"]}".to_vec()],
        41,
        &opts,
        Some(&doc),
        &mut none,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "column value:41: column v_0 is int64 in the given schema, but this line has a string value"
    );
}
