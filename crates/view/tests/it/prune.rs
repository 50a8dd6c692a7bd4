//! The trie-pruned parse against the full one, and the view's JSON errors against
//! `convert`'s: the same values and the same rejections.

use std::path::{Path, PathBuf};

use flatfhir_view::{Format, View, json, run_views};
use proptest::prelude::*;

/// Rows of `view` on `line` as JSON text (exact decimals): pruned (as views run) or built
/// in full; an error as its message.
fn rows(view: &View, line: &str, pruned: bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut push = |rows: &[flatfhir_view::Row<'_>]| {
        for row in rows {
            let mut text = Vec::new();
            for cell in row {
                cell.write_json(&mut text);
                text.push(b'|');
            }
            out.push(String::from_utf8_lossy(&text).into_owned());
        }
    };
    if pruned {
        view.rows_for_line(line, &|| "line".into(), &mut push)
            .map_err(|e| e.to_string())?;
    } else {
        let full = json::parse(line).map_err(|e| e.to_string())?;
        let mut rs = Vec::new();
        view.rows(&full, &mut rs).map_err(|e| e.to_string())?;
        push(&rs);
    }
    Ok(out)
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a",
        "b",
        "code",
        "value",
        "valueQuantity",
        "valueString",
        "_a",
        "_value",
        "system",
        "coding",
        "reference",
        "id",
        "extension",
        "url",
    ])
    .prop_map(str::to_string)
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["1.50", "-2", "0.10", "3e2", "12345678901234567890.5"])
            .prop_map(str::to_string),
        prop::sample::select(vec!["\"x\"", "\"Patient/p1\"", "\"a\\\"b\"", "\"s\""])
            .prop_map(str::to_string),
        Just("true".to_string()),
        Just("null".to_string()),
    ]
}

/// A random JSON value over FHIR-like member names, as text.
fn value() -> impl Strategy<Value = String> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|m| {
                let body: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

fn resource() -> impl Strategy<Value = String> {
    prop::collection::vec((key(), value()), 0..6).prop_map(|m| {
        let body: String = m.iter().map(|(k, v)| format!(",\"{k}\":{v}")).collect();
        format!("{{\"resourceType\":\"Observation\"{body}}}")
    })
}

/// A random path of the shapes the trie follows step by step, and some it does not.
fn path() -> impl Strategy<Value = String> {
    let step = prop_oneof![
        4 => key().prop_filter("a member name", |k| !k.starts_with('_')),
        1 => Just("first()".to_string()),
        1 => Just("a[0]".to_string()),
        1 => Just("where(system = 'x')".to_string()),
        1 => Just("value.ofType(Quantity)".to_string()),
        1 => Just("value.ofType(string)".to_string()),
    ];
    let end = prop::sample::select(vec![
        "",
        ".exists()",
        ".empty()",
        ".join(',')",
        ".getReferenceKey()",
        ".count()",
        ".children()",
        ".extension('x')",
        ".select(a)",
        ".descendants().count()",
    ]);
    (prop::collection::vec(step, 1..4), end).prop_map(|(s, e)| format!("{}{e}", s.join(".")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Pruned parsing never changes a view's rows or errors, with and without `forEach`.
    #[test]
    fn pruned_rows_equal_full_rows(
        line in resource(),
        paths in prop::collection::vec(path(), 1..4),
        each in prop::option::of(path()),
    ) {
        let cols: Vec<serde_json::Value> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| serde_json::json!({"name": format!("c{i}"), "path": p, "collection": true}))
            .collect();
        let mut select = serde_json::json!({"column": cols});
        if let Some(e) = &each {
            select["forEach"] = serde_json::json!(e);
        }
        let v = serde_json::json!({"resource": "Observation", "select": [select]});
        // Paths such as `value.ofType(Quantity)` after `first()` may not compile; skip those.
        let Ok(view) = View::from_json(&v, "v") else { return Ok(()) };
        prop_assert_eq!(rows(&view, &line, true), rows(&view, &line, false), "{}", line);
    }
}

/// Found by `pruned_rows_equal_full_rows`: an evaluation error names the resource by its id
/// (`Observation/x`), which the pruned tree dropped when no column read `id`.
#[test]
fn pruned_errors_name_the_resource_like_full_ones() {
    let v = serde_json::json!({"resource": "Observation", "select": [{"column": [
        {"name": "c0", "path": "value.ofType(Quantity)", "collection": true}
    ]}]});
    let view = View::from_json(&v, "v").unwrap();
    let line = r#"{"resourceType":"Observation","id":"x","_value":1.50}"#;
    let pruned = rows(&view, line, true);
    assert_eq!(pruned, rows(&view, line, false));
    assert!(
        format!("{pruned:?}").contains("Observation/x"),
        "{pruned:?}"
    );
}

/// The shared fixtures: every line, the example views and a view of many paths per type,
/// pruned and in full.
#[test]
fn pruned_rows_equal_full_rows_on_fixtures() {
    let dir = std::env::var_os("FLATFHIR_SHARED")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
            PathBuf::from,
        )
        .join("fixtures/bds-r4");
    if !dir.is_dir() {
        eprintln!(
            "SKIPPED: {} is absent (../shared; or set FLATFHIR_SHARED)",
            dir.display()
        );
        return;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/views");
    let mut views: Vec<View> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            View::from_json_str(&std::fs::read_to_string(&p).unwrap(), "x").unwrap()
        })
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    let paths = [
        "id",
        "code.coding[0].code",
        "code.coding.where(system = 'http://loinc.org').code",
        "subject.getReferenceKey()",
        "getResourceKey()",
        "value.ofType(Quantity).value",
        "effective.ofType(dateTime)",
        "identifier.value.join(',')",
        "name.given.first()",
        "extension.exists()",
        "category.coding.code",
        "meta",
        "text.empty()",
        "component.code.coding.code",
        "type.coding.display",
        "item.sequence",
    ];
    let mut checked = 0;
    for f in &files {
        let rt = f.file_stem().unwrap().to_str().unwrap().to_string();
        let cols: Vec<(String, String)> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("c{i}"), p.to_string()))
            .collect();
        let mut all = vec![View::from_columns("gen", &rt, &cols).unwrap()];
        let each = serde_json::json!({"resource": rt, "select": [{"forEach": "component", "column": [
            {"name": "code", "path": "code.coding.first().code"},
            {"name": "v", "path": "value.ofType(Quantity).value"}]}]});
        all.push(View::from_json(&each, "each").unwrap());
        let plain = serde_json::json!({"resource": rt, "select": [{"column": [
            {"name": "id", "path": "id"},
            {"name": "code", "path": "code.coding[0].code"},
            {"name": "subject", "path": "subject.reference"},
            {"name": "value", "path": "valueQuantity.value"},
            {"name": "effective", "path": "effectiveDateTime"},
            {"name": "given", "path": "name.given.first()"},
            {"name": "ids", "path": "identifier.value", "collection": true},
            {"name": "displays", "path": "type.coding.display", "collection": true}]}]});
        let plain = View::from_json(&plain, "plain").unwrap();
        assert!(
            plain
                .path_kinds()
                .iter()
                .all(|(_, _, k)| k.label() == "stream")
        );
        all.push(plain);
        // The benchmark's views (`benches/views`): streamed, `forEach` included.
        let benches = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/views");
        for name in ["obs4.json", "bp10.json"] {
            let text = std::fs::read_to_string(benches.join(name)).unwrap();
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v["resource"] = serde_json::json!(rt);
            let v = View::from_json(&v, name).unwrap();
            assert!(
                v.path_kinds().iter().all(|(_, _, k)| k.label() == "stream"),
                "{name}"
            );
            all.push(v);
        }
        all.extend(
            views
                .iter_mut()
                .filter(|v| v.resource() == rt)
                .map(|v| v.clone()),
        );
        for line in std::fs::read_to_string(f).unwrap().lines() {
            for v in &all {
                // Non-collection columns may hold several values: the error must agree too.
                assert_eq!(
                    rows(v, line, true),
                    rows(v, line, false),
                    "{}: {line}",
                    f.display()
                );
                checked += 1;
            }
        }
    }
    eprintln!("pruned = full on {checked} (line, view) pairs");
}

fn edit() -> impl Strategy<Value = (usize, u8, u8)> {
    (
        any::<usize>(),
        0u8..3,
        prop::sample::select(b"{}[]\",:\\ x0-e.\t\x01".to_vec()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A line `convert` rejects, a view rejects with the same file, line and reason (and a
    /// line it accepts, a view accepts).
    #[test]
    fn a_view_rejects_what_convert_rejects_with_its_reason(edits in prop::collection::vec(edit(), 1..3)) {
        let good = r#"{"resourceType":"Observation","id":"o1","code":{"coding":[{"system":"s","code":"c"}]},"valueQuantity":{"value":1.50},"note":[{"text":"a\"b"}]}"#;
        // Edit after the resourceType member (a different type is another group's line).
        let fixed = r#"{"resourceType":"Observation""#.len();
        let mut bad = good.as_bytes().to_vec();
        for (at, op, b) in edits {
            if bad.len() <= fixed {
                break;
            }
            let i = fixed + at % (bad.len() - fixed);
            match op {
                0 => { bad.remove(i); }
                1 => bad.insert(i, b),
                _ => bad.truncate(i.max(fixed)),
            }
        }
        let bad = String::from_utf8(bad).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("Observation.ndjson");
        std::fs::write(&input, format!("{good}\n{bad}\n")).unwrap();
        let plan = flatfhir_core::plan(std::slice::from_ref(&input), &Default::default()).unwrap();
        let opts = flatfhir_core::ConvertOptions::default()
.out_dir(dir.path().join("flat"));
        let convert = flatfhir_core::infer_schema(&plan.groups[0], &opts, &flatfhir_core::NoProgress)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let view = View::from_columns("v", "Observation", &[("id".into(), "id".into())]).unwrap();
        let viewed = run_views(&[input], &[view], &dir.path().join("v"), Format::Ndjson)
            .map(|_| ())
            .map_err(|e| e.to_string());
        prop_assert_eq!(viewed, convert, "{}", bad);
    }
}

/// The members the trie keeps besides the named ones: choice variants, `_name` elements,
/// a leading type name, and whole values of columns.
#[test]
fn pruning_keeps_choices_extensions_and_whole_values() {
    let line = r#"{"resourceType":"Observation","id":"o1","valueQuantity":{"value":1.50,"unit":"mg"},"_status":{"extension":[{"url":"u","valueString":"e"}]},"code":{"coding":[{"system":"x","code":"c","display":"d"}],"text":"t"},"subject":{"reference":"Patient/p1"}}"#;
    for p in [
        "value",
        "value.value",
        "status.extension.value",
        "Observation.code.text",
        "code",
        "code.coding.where(system = 'x')",
        "subject.getReferenceKey(Patient)",
        "status.hasValue()",
    ] {
        let view = View::from_columns("v", "Observation", &[("c".into(), p.into())]).unwrap();
        let pruned = rows(&view, line, true);
        assert_eq!(pruned, rows(&view, line, false), "{p}");
        assert_ne!(pruned, Ok(vec!["null|".to_string()]), "{p} found nothing");
    }
}

/// A path of many type-name steps (each may keep its input: `Patient.name`) reaches a number
/// of trie nodes that doubles with every step; past a bound the analysis builds the whole
/// resource instead (found by the `fhirpath` fuzz target: a 600-byte path took 50 s). The
/// rows stay the full tree's.
#[test]
fn paths_of_many_type_steps_fall_back_to_the_whole_resource() {
    let line = r#"{"resourceType":"Patient","id":"p","name":[{"family":"F","Given":{"Name":1}}]}"#;
    // 2^10 nodes without the bound: enough to pass it, few enough to finish without it.
    let steps: Vec<String> = (0..10)
        .map(|k| {
            if k % 2 == 0 {
                "Patient".into()
            } else {
                format!("N{k}")
            }
        })
        .collect();
    for (p, kind) in [
        ("Patient.name.family".to_string(), "trie"),
        (format!("name.{}", steps.join(".")), "resource"),
        (format!("{} ~ name", steps.join(".")), "resource"),
    ] {
        let view = View::from_columns("v", "Patient", &[("c".into(), p.clone())]).unwrap();
        let kinds = view.path_kinds();
        assert_eq!(
            kinds.iter().map(|(_, _, k)| k.label()).collect::<Vec<_>>(),
            [kind],
            "{p}"
        );
        assert_eq!(rows(&view, line, true), rows(&view, line, false), "{p}");
    }
}

/// A random plain member path (`a.b[1].code.first()`): the shape views stream.
fn plain_path() -> impl Strategy<Value = String> {
    let step = (
        key().prop_filter("a member name", |k| !k.starts_with('_')),
        prop::sample::select(vec!["", "", "[0]", "[1]", ".first()"]),
    )
        .prop_map(|(k, i)| format!("{k}{i}"));
    prop::collection::vec(step, 1..4).prop_map(|s| s.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Streamed rows (no tree) equal the general evaluator's on the full tree, errors
    /// included, for single-valued and collection columns, with and without a
    /// `forEach`/`forEachOrNull` select.
    #[test]
    fn streamed_rows_equal_full_rows(
        line in resource(),
        paths in prop::collection::vec((plain_path(), any::<bool>(), any::<bool>()), 1..5),
        each in prop::option::of((plain_path(), any::<bool>())),
    ) {
        let col = |i: usize, p: &str, coll: bool| {
            serde_json::json!({"name": format!("c{i}"), "path": p, "collection": coll})
        };
        let top: Vec<_> = paths.iter().enumerate()
            .filter(|(_, p)| each.is_none() || !p.2)
            .map(|(i, (p, coll, _))| col(i, p, *coll)).collect();
        let inner: Vec<_> = paths.iter().enumerate()
            .filter(|(_, p)| each.is_some() && p.2)
            .map(|(i, (p, coll, _))| col(i, p, *coll)).collect();
        let mut selects = vec![serde_json::json!({"column": top})];
        if let Some((e, or_null)) = &each {
            let key = if *or_null { "forEachOrNull" } else { "forEach" };
            selects.push(serde_json::json!({key: e, "column": inner}));
        }
        let v = serde_json::json!({"resource": "Observation", "select": selects});
        let view = View::from_json(&v, "v").unwrap();
        prop_assert!(view.path_kinds().iter().all(|(_, _, k)| k.label() == "stream"), "{:?}", view.path_kinds());
        prop_assert_eq!(rows(&view, &line, true), rows(&view, &line, false), "{}", line);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// One streamed view over many lines in a row (as views run): what the fast path learns
    /// from earlier lines (each trie node's member names, in order, and what each does) never
    /// changes the rows or errors of a later line, whatever its member order, escapes or
    /// repeated names.
    #[test]
    fn streamed_rows_equal_full_rows_line_after_line(
        lines in prop::collection::vec(resource(), 1..12),
        paths in prop::collection::vec((plain_path(), any::<bool>(), any::<bool>()), 1..5),
        each in prop::option::of((plain_path(), any::<bool>())),
    ) {
        let col = |i: usize, p: &str, coll: bool| {
            serde_json::json!({"name": format!("c{i}"), "path": p, "collection": coll})
        };
        let top: Vec<_> = paths.iter().enumerate()
            .filter(|(_, p)| each.is_none() || !p.2)
            .map(|(i, (p, coll, _))| col(i, p, *coll)).collect();
        let inner: Vec<_> = paths.iter().enumerate()
            .filter(|(_, p)| each.is_some() && p.2)
            .map(|(i, (p, coll, _))| col(i, p, *coll)).collect();
        let mut selects = vec![serde_json::json!({"column": top})];
        if let Some((e, or_null)) = &each {
            let key = if *or_null { "forEachOrNull" } else { "forEach" };
            selects.push(serde_json::json!({key: e, "column": inner}));
        }
        let v = serde_json::json!({"resource": "Observation", "select": selects});
        let view = View::from_json(&v, "v").unwrap();
        // Each line twice: once after other lines, once after itself.
        for line in lines.iter().chain(&lines) {
            prop_assert_eq!(rows(&view, line, true), rows(&view, line, false), "{}", line);
        }
    }
}

/// Member names the fast path learnt at a node, met again in another order, with a
/// repeated name, a `_name` element or a choice variant: each line is judged on its own.
#[test]
fn streamed_views_judge_each_line_on_its_own() {
    let v = serde_json::json!({"resource": "Observation", "select": [
        {"column": [
            {"name": "code", "path": "code.coding[0].code"},
            {"name": "value", "path": "value.value"},
            {"name": "subject", "path": "subject.reference"}]},
        {"forEach": "component", "column": [
            {"name": "cc", "path": "code.coding.code", "collection": true}]}]});
    let view = View::from_json(&v, "v").unwrap();
    let lines = [
        r#"{"resourceType":"Observation","code":{"coding":[{"system":"s","code":"a"},{"code":"b"}]},"subject":{"reference":"P/1"},"value":{"value":1.50},"component":[{"code":{"coding":[{"code":"x"}]}}]}"#,
        r#"{"resourceType":"Observation","subject":{"reference":"P/2"},"code":{"coding":[{"code":"c","system":"s"}]},"component":[{"code":{"coding":[{"code":"y"},{"code":"z"}]}},{}]}"#,
        r#"{"resourceType":"Observation","subject":{"reference":"P/3","reference":"P/4"}}"#,
        r#"{"resourceType":"Observation","subject":{"reference":"P/5","_reference":{"id":"r"}}}"#,
        r#"{"resourceType":"Observation","valueQuantity":{"value":2},"subject":{"reference":"P/6"}}"#,
        r#"{"resourceType":"Observation","subject":{"refer\u0065nce":"P/7"},"code":{"coding":[{"code":"d"}]},"component":[{"code":{"coding":[{"code":"w"}]}}]}"#,
        r#"{"resourceType":"Observation","code":{"coding":[{"system":"s","code":"a"}]},"subject":{"reference":"P/8"},"value":{"value":3}}"#,
    ];
    let mut seen = Vec::new();
    for _ in 0..2 {
        for line in lines {
            let streamed = rows(&view, line, true);
            assert_eq!(streamed, rows(&view, line, false), "{line}");
            seen.push(streamed);
        }
    }
    // The two rounds agree, and the values are the ones in each line.
    assert_eq!(seen[..lines.len()], seen[lines.len()..]);
    assert_eq!(
        seen[1],
        Ok(vec![
            "\"c\"|null|\"P/2\"|[\"y\",\"z\"]|".to_string(),
            "\"c\"|null|\"P/2\"|[]|".to_string()
        ])
    );
    assert_eq!(seen[5], Ok(vec!["\"d\"|null|\"P/7\"|[\"w\"]|".to_string()]));
}

/// The streamed leaf shortcut (a string at one plain node where one column ends) next to
/// the cases it leaves to the general loop: the root's `resourceType` as a column, two
/// columns on one path, a collection column, an index, a `forEach` path that is itself a
/// string, escaped strings, and a leaf met as an array of strings.
#[test]
fn streamed_leaves_equal_full_rows() {
    let v = serde_json::json!({"resource": "Observation", "select": [
        {"column": [
            {"name": "rt", "path": "resourceType"},
            {"name": "id", "path": "id"},
            {"name": "id2", "path": "id"},
            {"name": "status", "path": "status"},
            {"name": "codes", "path": "code.coding.code", "collection": true},
            {"name": "c0", "path": "code.coding[1].code"},
            {"name": "ref", "path": "subject.reference"}]},
        {"forEachOrNull": "category", "column": [
            {"name": "cat", "path": "text"}]}]});
    let view = View::from_json(&v, "v").unwrap();
    assert!(
        view.path_kinds()
            .iter()
            .all(|(_, _, k)| k.label() == "stream")
    );
    let lines = [
        r#"{"resourceType":"Observation","id":"o\"1","status":"final","code":{"coding":[{"code":"a"},{"code":"b\u0041"}]},"subject":{"reference":"P/1"},"category":[{"text":"t1"},{"text":"t\n2"}]}"#,
        r#"{"resourceType":"Observation","status":["final"],"subject":{"reference":["P/2"]},"category":"c"}"#,
        r#"{"resourceType":"Observation","status":["a","b"],"category":[{}]}"#,
        r#"{"resourceType":"Observation","id":"o3","subject":{"reference":{"x":1}}}"#,
        r#"{"id":"o4","resourceType":"Observation","status":1.50}"#,
    ];
    let mut got = Vec::new();
    for _ in 0..2 {
        for line in lines {
            let streamed = rows(&view, line, true);
            assert_eq!(streamed, rows(&view, line, false), "{line}");
            got.push(streamed);
        }
    }
    assert_eq!(got[..lines.len()], got[lines.len()..]);
    assert_eq!(
        got[0],
        Ok(vec![
            "\"Observation\"|\"o\\\"1\"|\"o\\\"1\"|\"final\"|[\"a\",\"bA\"]|\"bA\"|\"P/1\"|\"t1\"|"
                .to_string(),
            "\"Observation\"|\"o\\\"1\"|\"o\\\"1\"|\"final\"|[\"a\",\"bA\"]|\"bA\"|\"P/1\"|\"t\\n2\"|"
                .to_string(),
        ])
    );
}

/// Member names learnt at several nodes, interleaved (each node's names are linked in the
/// order first met), past the limit a node remembers, then met again in other orders and
/// with names missing: every line's rows are its own.
#[test]
fn streamed_rows_survive_many_and_interleaved_member_names() {
    let v = serde_json::json!({"resource": "Observation", "select": [
        {"column": [
            {"name": "id", "path": "id"},
            {"name": "code", "path": "code.coding.code", "collection": true},
            {"name": "ref", "path": "subject.reference"}]},
        {"forEach": "component", "column": [{"name": "cc", "path": "code.text"}]}]});
    let view = View::from_json(&v, "v").unwrap();
    let line = |n: usize, shift: usize, id: &str| {
        let extra = |p: &str, k: usize| -> String {
            (0..k)
                .map(|i| format!("\"{p}{}\":{i},", (i * 7 + shift) % k))
                .collect()
        };
        format!(
            r#"{{"resourceType":"Observation",{}"subject":{{{}"reference":"P/{id}"}},"code":{{{}"coding":[{{{}"code":"c{id}"}}]}},"component":[{{"code":{{{}"text":"t{id}"}}}}],{}"id":"{id}"}}"#,
            extra("r", n),
            extra("s", n / 2),
            extra("k", n / 3),
            extra("m", n / 4),
            extra("e", n / 5),
            extra("z", n),
        )
    };
    let mut lines = Vec::new();
    for (i, n) in [3, 90, 150, 10, 0, 200, 5].iter().enumerate() {
        lines.push(line(*n, i, &format!("o{i}")));
    }
    for _ in 0..2 {
        for l in &lines {
            let streamed = rows(&view, l, true);
            assert_eq!(streamed, rows(&view, l, false), "{l}");
        }
    }
    assert_eq!(
        rows(&view, &lines[5], true),
        Ok(vec!["\"o5\"|[\"co5\"]|\"P/o5\"|\"to5\"|".to_string()])
    );
}
