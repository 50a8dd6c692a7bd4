//! Runs the official FHIRPath R4 test suite (`../shared/fhirpath/tests-fhir-r4.xml`, 935 cases)
//! through the FHIRPath engine the views use, and writes a report.
//!
//! Each case is classified as:
//! - `pass`: the expected values (or, for an `invalid` case, an error);
//! - `wrong`: a valid case that produced other values without an error, or an `invalid` case
//!   that raised no error — the answers the engine must never give;
//! - `refused`: a valid case the engine rejected with an error (an unsupported function or
//!   construct at compile time, or an evaluation error): never silent.
//!
//! The report (per group: pass / wrong / refused, and every case with its outcome) goes to
//! `$FHIRPATH_TEST_REPORT` when set, else to `target/tmp/fhirpath/report.json`. The test fails
//! on any `wrong` case and when fewer than [`PASS_FLOOR`] cases pass; it is skipped (with a
//! message) when `../shared` is absent.
//! Run: `cargo test -p flatfhir-view --test it fhirpath_r4_suite -- --nocapture`. `FHIRPATH_VERBOSE=1` prints every non-passing case.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flatfhir_view::fhirpath::{Expression, Value};
use flatfhir_view::json;
use serde_json::json;

/// The pass count this engine has reached; raise it as coverage grows, never lower it.
const PASS_FLOOR: usize = 933;

/// `../shared/fhirpath` from the project root, or `$FLATFHIR_SHARED/fhirpath` when set (a
/// git worktree elsewhere on disk).
fn suite_dir() -> PathBuf {
    std::env::var_os("FLATFHIR_SHARED").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fhirpath"),
        |s| PathBuf::from(s).join("fhirpath"),
    )
}

/// One expected output: its declared type (if any) and text.
#[derive(Debug)]
struct Expected {
    ty: Option<String>,
    text: String,
}

#[derive(Debug)]
struct Case {
    group: String,
    name: String,
    expression: String,
    input: Option<String>,
    /// `invalid` value (`syntax`, `semantic`, `execution`, …) when an error is expected.
    invalid: Option<String>,
    predicate: bool,
    ordered: bool,
    outputs: Vec<Expected>,
}

fn read_cases(xml: &str) -> Vec<Case> {
    let doc = roxmltree::Document::parse(xml).expect("tests-fhir-r4.xml is well-formed");
    let mut cases = Vec::new();
    for group in doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("group"))
    {
        let gname = group.attribute("name").unwrap_or("?").to_string();
        for (i, t) in group
            .children()
            .filter(|n| n.has_tag_name("test"))
            .enumerate()
        {
            let expr = t
                .children()
                .find(|n| n.has_tag_name("expression"))
                .expect("a test has an expression");
            let outputs = t
                .children()
                .filter(|n| n.has_tag_name("output"))
                .map(|o| Expected {
                    ty: o.attribute("type").map(str::to_string),
                    text: o.text().unwrap_or("").to_string(),
                })
                .collect();
            cases.push(Case {
                group: gname.clone(),
                name: t
                    .attribute("name")
                    .map_or_else(|| format!("{gname}#{i}"), str::to_string),
                expression: expr.text().unwrap_or("").to_string(),
                input: t.attribute("inputfile").map(str::to_string),
                invalid: expr.attribute("invalid").map(str::to_string),
                predicate: t.attribute("predicate") == Some("true"),
                ordered: t.attribute("ordered") != Some("false"),
                outputs,
            });
        }
    }
    cases
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Pass,
    Wrong,
    Refused,
}

/// Decimal text to a canonical form (no trailing fraction zeros), for comparison by value.
fn canon_number(s: &str) -> Option<String> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let body = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    Some(if neg && body != "0" {
        format!("-{body}")
    } else {
        body
    })
}

/// `4 'g'` / `4 g` / `4 days` → (canonical number, unit).
fn split_quantity(s: &str) -> Option<(String, String)> {
    let (num, unit) = s.trim().split_once(' ')?;
    Some((
        canon_number(num)?,
        unit.trim().trim_matches('\'').to_string(),
    ))
}

fn matches(want: &Expected, got: &Value) -> bool {
    let strip = |s: &str| s.strip_prefix('@').unwrap_or(s).to_string();
    match want.ty.as_deref() {
        Some("boolean") => got.type_name() == "boolean" && got.text() == want.text,
        Some("integer") => {
            matches!(got.type_name(), "integer" | "unsignedInt" | "positiveInt")
                && got.text() == want.text
        }
        Some("decimal") => {
            got.type_name() == "decimal" && canon_number(got.text()) == canon_number(&want.text)
        }
        Some("date" | "dateTime" | "time" | "instant") => strip(got.text()) == strip(&want.text),
        Some("Quantity") => {
            got.type_name() == "Quantity"
                && split_quantity(got.text()) == split_quantity(&want.text)
        }
        // string, code, id, …: the value; whether it is of that type is what `is()` tests.
        Some(_) => got.text() == want.text,
        // Untyped outputs (lowBoundary, …): the literal text, precision included.
        None => strip(got.text()) == strip(&want.text),
    }
}

/// Runs one case: its outcome and a note (the error, or what was produced).
/// Runs one case, with the model's semantic checks (`strict`, as the suite's reference
/// engines run) or without (as views run: any FHIR version).
fn run_case(case: &Case, resources: &BTreeMap<String, String>, strict: bool) -> (Outcome, String) {
    let text = match &case.input {
        Some(f) => match resources.get(f) {
            Some(t) => t.as_str(),
            None => return (Outcome::Refused, format!("input file {f}.json not found")),
        },
        None => r#"{"resourceType":"Parameters"}"#,
    };
    let resource = json::parse(text).expect("suite inputs are valid JSON");
    let rt = resource
        .get("resourceType")
        .and_then(json::Json::as_str)
        .unwrap_or("Resource");
    let compiled = if strict {
        Expression::parse_strict(&case.expression, rt)
    } else {
        Expression::parse(&case.expression)
    };
    let result = compiled
        .map_err(|e| format!("compile: {e}"))
        .and_then(|e| e.evaluate(&resource).map_err(|e| format!("eval: {e}")));
    if let Some(kind) = &case.invalid {
        return match result {
            Err(e) => (Outcome::Pass, format!("raised as expected ({kind}): {e}")),
            Ok(v) => (
                Outcome::Wrong,
                format!("expected a {kind} error, got {}", show(&v)),
            ),
        };
    }
    let got = match result {
        Err(e) => return (Outcome::Refused, e),
        Ok(v) => v,
    };
    let got = if case.predicate {
        vec![predicate_value(!got.is_empty())]
    } else {
        got
    };
    let ok = got.len() == case.outputs.len()
        && if case.ordered {
            got.iter().zip(&case.outputs).all(|(g, w)| matches(w, g))
        } else {
            let mut used = vec![false; got.len()];
            case.outputs.iter().all(|w| {
                let hit = got
                    .iter()
                    .enumerate()
                    .find(|(i, g)| !used[*i] && matches(w, g));
                hit.map(|(i, _)| used[i] = true).is_some()
            })
        };
    if ok {
        (Outcome::Pass, String::new())
    } else {
        let want: Vec<String> = case
            .outputs
            .iter()
            .map(|o| format!("{}:{}", o.ty.as_deref().unwrap_or("?"), o.text))
            .collect();
        (
            Outcome::Wrong,
            format!("expected [{}], got {}", want.join(", "), show(&got)),
        )
    }
}

/// Whether a value written by a view (JSON) is the expected output.
fn matches_json(want: &Expected, got: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    let text = want.text.as_str();
    let temporal = |s: &str| -> String {
        let s = s.strip_prefix('@').unwrap_or(s);
        s.strip_prefix('T').unwrap_or(s).to_string()
    };
    match (want.ty.as_deref(), got) {
        (Some("boolean"), J::Bool(b)) => text == b.to_string(),
        (Some("integer"), J::Number(n)) => n.is_i64() && n.to_string() == text,
        (Some("decimal"), J::Number(n)) => canon_number(&n.to_string()) == canon_number(text),
        (Some("date" | "dateTime" | "time" | "instant"), J::String(s)) => {
            temporal(s) == temporal(text)
        }
        (Some("Quantity"), J::String(s)) => split_quantity(s) == split_quantity(text),
        (Some(_), J::String(s)) => s == text,
        (None, J::String(s)) => {
            if text.starts_with('@') {
                temporal(s) == temporal(text)
            } else {
                split_quantity(s).is_some() && split_quantity(s) == split_quantity(text)
                    || s == text
            }
        }
        (None, J::Number(n)) => canon_number(&n.to_string()) == canon_number(text),
        (None, J::Bool(b)) => text == b.to_string(),
        _ => false,
    }
}

/// Runs one case as a view does: a one-column (collection) ViewDefinition on the input
/// resource, compiled and run by the view engine, its cell written as JSON.
fn run_case_view(case: &Case, resources: &BTreeMap<String, String>) -> (Outcome, String) {
    let text = match &case.input {
        Some(f) => match resources.get(f) {
            Some(t) => t.as_str(),
            None => return (Outcome::Refused, format!("input file {f}.json not found")),
        },
        None => r#"{"resourceType":"Parameters"}"#,
    };
    let resource = json::parse(text).expect("suite inputs are valid JSON");
    let rt = resource
        .get("resourceType")
        .and_then(json::Json::as_str)
        .unwrap_or("Resource");
    let def = json!({"resource": rt, "select": [{"column": [
        {"name": "v", "path": case.expression, "collection": true}
    ]}]});
    let result = flatfhir_view::View::from_json(&def, "case")
        .map_err(|e| e.to_string())
        .and_then(|view| {
            let mut rows = Vec::new();
            view.rows(&resource, &mut rows).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            rows[0][0].write_json(&mut out);
            Ok(serde_json::from_slice::<serde_json::Value>(&out).expect("a cell is JSON"))
        });
    if let Some(kind) = &case.invalid {
        return match result {
            Err(e) => (Outcome::Pass, format!("raised as expected ({kind}): {e}")),
            Ok(v) => (Outcome::Wrong, format!("expected a {kind} error, got {v}")),
        };
    }
    let got = match result {
        Err(e) => return (Outcome::Refused, e),
        Ok(serde_json::Value::Array(v)) => v,
        Ok(other) => vec![other],
    };
    let got = if case.predicate {
        vec![serde_json::Value::Bool(!got.is_empty())]
    } else {
        got
    };
    let ok = got.len() == case.outputs.len()
        && if case.ordered {
            got.iter()
                .zip(&case.outputs)
                .all(|(g, w)| matches_json(w, g))
        } else {
            let mut used = vec![false; got.len()];
            case.outputs.iter().all(|w| {
                let hit = got
                    .iter()
                    .enumerate()
                    .find(|(i, g)| !used[*i] && matches_json(w, g));
                hit.map(|(i, _)| used[i] = true).is_some()
            })
        };
    if ok {
        (Outcome::Pass, String::new())
    } else {
        (
            Outcome::Wrong,
            format!("got {}", serde_json::Value::Array(got)),
        )
    }
}

fn predicate_value(b: bool) -> Value {
    // `Value` has no public constructor: evaluate the literal.
    let r = json::parse(r#"{"resourceType":"Parameters"}"#).unwrap();
    let e = Expression::parse(if b { "true" } else { "false" }).unwrap();
    e.evaluate(&r).unwrap().remove(0)
}

fn show(v: &[Value]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|x| format!("{}:{}", x.type_name(), x.text()))
        .collect();
    format!("[{}]", parts.join(", "))
}

#[test]
fn fhirpath_r4_suite() {
    let dir = suite_dir();
    let Ok(xml) = std::fs::read_to_string(dir.join("tests-fhir-r4.xml")) else {
        eprintln!(
            "SKIPPED: the FHIRPath R4 suite is not at {} (../shared is absent; or set FLATFHIR_SHARED)",
            dir.display()
        );
        return;
    };
    let cases = read_cases(&xml);
    let mut resources = BTreeMap::new();
    for c in &cases {
        if let Some(f) = &c.input
            && !resources.contains_key(f)
            && let Ok(t) = std::fs::read_to_string(dir.join("inputs").join(format!("{f}.json")))
        {
            resources.insert(f.clone(), t);
        }
    }
    let verbose = std::env::var_os("FHIRPATH_VERBOSE").is_some();
    // group -> (pass, wrong, refused, cases)
    let mut groups: BTreeMap<String, (usize, usize, usize, Vec<serde_json::Value>)> =
        BTreeMap::new();
    let mut order = Vec::new();
    let (mut pass, mut wrong, mut refused) = (0, 0, 0);
    let mut wrong_cases = Vec::new();
    // The lenient mode the views use: the same answers, or a refusal; only the model's
    // semantic checks (`invalid="semantic"`) may go unraised.
    let mut lenient = [0usize; 4];
    let mut as_view = [0usize; 4];
    for c in &cases {
        let (outcome, note) = run_case_view(c, &resources);
        let unchecked = outcome == Outcome::Wrong && c.invalid.as_deref() == Some("semantic");
        as_view[if unchecked { 3 } else { outcome as usize }] += 1;
        if outcome == Outcome::Wrong && !unchecked {
            wrong_cases.push(format!(
                "(as a view) {} / {}: `{}`: {note}",
                c.group, c.name, c.expression
            ));
        }
    }
    for c in &cases {
        let (outcome, note) = run_case(c, &resources, false);
        let unchecked = outcome == Outcome::Wrong && c.invalid.as_deref() == Some("semantic");
        lenient[if unchecked { 3 } else { outcome as usize }] += 1;
        if outcome == Outcome::Wrong && !unchecked {
            wrong_cases.push(format!(
                "(lenient) {} / {}: `{}`: {note}",
                c.group, c.name, c.expression
            ));
        }
    }
    for c in &cases {
        let (outcome, note) = run_case(c, &resources, true);
        if !groups.contains_key(&c.group) {
            order.push(c.group.clone());
        }
        let g = groups.entry(c.group.clone()).or_default();
        match outcome {
            Outcome::Pass => {
                pass += 1;
                g.0 += 1;
            }
            Outcome::Wrong => {
                wrong += 1;
                g.1 += 1;
                wrong_cases.push(format!(
                    "{} / {}: `{}`: {note}",
                    c.group, c.name, c.expression
                ));
            }
            Outcome::Refused => {
                refused += 1;
                g.2 += 1;
            }
        }
        if verbose && outcome != Outcome::Pass {
            eprintln!(
                "{outcome:?} {} / {}: `{}`: {note}",
                c.group, c.name, c.expression
            );
        }
        let label = match outcome {
            Outcome::Pass => "pass",
            Outcome::Wrong => "wrong",
            Outcome::Refused => "refused",
        };
        g.3.push(json!({
            "name": c.name,
            "expression": c.expression,
            "outcome": label,
            "note": note,
        }));
    }
    let report: serde_json::Map<String, serde_json::Value> = order
        .iter()
        .map(|name| {
            let (p, w, r, tests) = &groups[name];
            (
                name.clone(),
                json!({"pass": p, "wrong": w, "refused": r, "tests": tests}),
            )
        })
        .collect();
    let out = std::env::var_os("FHIRPATH_TEST_REPORT").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("fhirpath/report.json"),
        PathBuf::from,
    );
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let doc = json!({
        "suite": "tests-fhir-r4.xml",
        "total": cases.len(),
        "pass": pass,
        "wrong": wrong,
        "refused": refused,
        "lenient": {"pass": lenient[0], "wrong": lenient[1], "refused": lenient[2], "semantic_unchecked": lenient[3]},
        "as_view": {"pass": as_view[0], "wrong": as_view[1], "refused": as_view[2], "semantic_unchecked": as_view[3]},
        "groups": report,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let mut table = String::from("group                          pass wrong refused\n");
    for name in &order {
        let (p, w, r, _) = &groups[name];
        if *w + *r > 0 {
            table.push_str(&format!("{name:<30} {p:>4} {w:>5} {r:>7}\n"));
        }
    }
    eprintln!(
        "{table}FHIRPath R4 suite: {pass} passed, {wrong} wrong, {refused} refused of {} (floor {PASS_FLOOR}); report: {}",
        cases.len(),
        out.display()
    );
    eprintln!(
        "lenient (no model checks): {} passed, {} wrong, {} refused, {} semantic checks not made",
        lenient[0], lenient[1], lenient[2], lenient[3]
    );
    eprintln!(
        "as a view column: {} passed, {} wrong, {} refused, {} semantic checks not made",
        as_view[0], as_view[1], as_view[2], as_view[3]
    );
    assert_eq!(cases.len(), 935, "the suite should have 935 cases");
    assert!(
        wrong_cases.is_empty(),
        "{} wrong answers (or expected errors not raised):\n{}",
        wrong_cases.len(),
        wrong_cases.join("\n")
    );
    assert!(
        pass >= PASS_FLOOR,
        "{pass} cases pass, below the recorded floor of {PASS_FLOOR}"
    );
}

/// Strict mode checks paths against the R4 model; the lenient mode views use does not.
#[test]
fn strict_mode_checks_the_model() {
    for bad in [
        "name.given1",
        "Encounter.name.given",
        "Observation.valueQuantity.unit",
        "children().skip(1)",
    ] {
        let rt = if bad.starts_with("Observation") {
            "Observation"
        } else {
            "Patient"
        };
        let err = Expression::parse_strict(bad, rt).unwrap_err();
        assert!(!err.message.is_empty(), "{bad}");
        assert!(Expression::parse(bad).is_ok(), "{bad} parses leniently");
    }
    for good in [
        "name.given",
        "Patient.birthDate",
        "deceased.ofType(boolean)",
        "contact.name.family",
    ] {
        assert!(Expression::parse_strict(good, "Patient").is_ok(), "{good}");
    }
    // Errors name the construct.
    let err = Expression::parse("name.frobnicate()").unwrap_err();
    assert!(err.message.contains("frobnicate"), "{err}");
    let err = Expression::parse("gender.ofType(string1)").unwrap_err();
    assert!(err.message.contains("string1"), "{err}");
}

/// Found by the `fhirpath` fuzz target: a decimal with 28 fraction digits made the boundary
/// functions panic (half a unit of its last digit needs scale 29).
#[test]
fn boundaries_of_a_decimal_with_28_fraction_digits() {
    let r = json::parse(r#"{"resourceType":"Parameters"}"#).unwrap();
    let fives = "5".repeat(27);
    let d = format!("1.{fives}7");
    let eval = |src: &str| -> String {
        let got = Expression::parse(src).unwrap().evaluate(&r).unwrap();
        assert_eq!(got.len(), 1, "{src}");
        got[0].text().to_string()
    };
    let up8 = "1.55555556";
    let down8 = "1.55555555";
    let up28 = format!("1.{fives}8");
    let down28 = format!("1.{fives}6");
    assert_eq!(eval(&format!("({d}).highBoundary()")), up8);
    assert_eq!(eval(&format!("({d}).lowBoundary()")), down8);
    assert_eq!(eval(&format!("({d}).highBoundary(28)")), up28);
    assert_eq!(eval(&format!("({d}).lowBoundary(28)")), down28);
    // The negative's boundaries are the positive's, swapped and negated.
    assert_eq!(eval(&format!("(-{d}).highBoundary()")), format!("-{down8}"));
    assert_eq!(eval(&format!("(-{d}).lowBoundary()")), format!("-{up8}"));
    assert_eq!(
        eval(&format!("(-{d}).highBoundary(28)")),
        format!("-{down28}")
    );
    assert_eq!(eval(&format!("(-{d}).lowBoundary(28)")), format!("-{up28}"));
}
