//! FHIRPath evaluation over the borrowed JSON tree: collections of [`Item`]s, operators and
//! three-valued logic. Functions live in [`crate::functions`].

use std::borrow::Cow;

use crate::ast::{BinOp, Expr, Lit};
use crate::json::Json;

/// One item of a FHIRPath collection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item<'a> {
    /// A node of the resource (or of a constant), with the FHIR type when known (`ofType`).
    Node(&'a Json<'a>, Option<&'a str>),
    Bool(bool),
    Int(i64),
    /// A decimal and its number of fraction digits.
    Dec(f64, u32),
    /// A computed string, with its FHIR type when known (e.g. `dateTime`).
    Str(Cow<'a, str>, Option<&'a str>),
}

/// A primitive view of an item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Prim<'s, 'a> {
    Bool(bool),
    Int(i64),
    Dec(f64, u32),
    Str(&'s str),
    Obj(&'s Json<'a>),
    Null,
}

/// Parses a JSON number's text into an integer or a decimal with its precision.
pub(crate) fn parse_number(n: &str) -> Prim<'static, 'static> {
    if !n.contains(['.', 'e', 'E'])
        && let Ok(i) = n.parse()
    {
        return Prim::Int(i);
    }
    let scale = n.split_once('.').map_or(0, |(_, f)| {
        f.bytes().take_while(u8::is_ascii_digit).count() as u32
    });
    n.parse().map_or(Prim::Null, |f| Prim::Dec(f, scale))
}

impl<'a> Item<'a> {
    pub(crate) fn prim(&self) -> Prim<'_, 'a> {
        match self {
            Item::Node(j, _) => match j {
                Json::Bool(b) => Prim::Bool(*b),
                Json::Number(n) => parse_number(n),
                Json::String(s) => Prim::Str(s),
                Json::Null => Prim::Null,
                other => Prim::Obj(other),
            },
            Item::Bool(b) => Prim::Bool(*b),
            Item::Int(i) => Prim::Int(*i),
            Item::Dec(d, s) => Prim::Dec(*d, *s),
            Item::Str(s, _) => Prim::Str(s),
        }
    }

    /// The FHIR type tag, if known.
    pub(crate) fn ty(&self) -> Option<&'a str> {
        match self {
            Item::Node(_, t) | Item::Str(_, t) => *t,
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self.prim() {
            Prim::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// What an expression is evaluated against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Env<'a> {
    pub(crate) resource: &'a Json<'a>,
    /// View constants and their FHIR types.
    pub(crate) consts: &'a [(Json<'a>, String)],
    pub(crate) row_index: i64,
    pub(crate) index: i64,
}

pub(crate) type Coll<'a> = Vec<Item<'a>>;
pub(crate) type EvalResult<T> = Result<T, String>;

/// FHIR data type names that may follow a choice element's name (`value[x]`).
const CHOICE_SUFFIXES: &[&str] = &[
    "Boolean",
    "Integer",
    "Integer64",
    "String",
    "Decimal",
    "Uri",
    "Url",
    "Canonical",
    "Base64Binary",
    "Instant",
    "Date",
    "DateTime",
    "Time",
    "Code",
    "Oid",
    "Id",
    "Markdown",
    "UnsignedInt",
    "PositiveInt",
    "Uuid",
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "CodeableConcept",
    "CodeableReference",
    "Coding",
    "ContactPoint",
    "Count",
    "Distance",
    "Duration",
    "HumanName",
    "Identifier",
    "Money",
    "Period",
    "Quantity",
    "Range",
    "Ratio",
    "RatioRange",
    "Reference",
    "SampledData",
    "Signature",
    "Timing",
    "ContactDetail",
    "DataRequirement",
    "Expression",
    "ParameterDefinition",
    "RelatedArtifact",
    "TriggerDefinition",
    "UsageContext",
    "Dosage",
    "Meta",
];

/// Pushes the value(s) of a JSON member: arrays are flattened, nulls skipped.
#[inline]
fn push_json<'a>(out: &mut Coll<'a>, v: &'a Json<'a>, ty: Option<&'a str>) {
    match v {
        Json::Array(a) => out.extend(
            a.iter()
                .filter(|x| !matches!(x, Json::Null))
                .map(|x| Item::Node(x, ty)),
        ),
        Json::Null => {}
        v => out.push(Item::Node(v, ty)),
    }
}

/// `name` on one item: the member, else the resource itself when `name` is its type, else a
/// choice element `name[x]`.
#[inline]
pub(crate) fn member<'a>(out: &mut Coll<'a>, item: &Item<'a>, name: &str) {
    let Item::Node(Json::Object(m), _) = item else {
        return;
    };
    if let Some((_, v)) = m.iter().find(|(k, _)| crate::json::key_eq(k, name)) {
        push_json(out, v, None);
        return;
    }
    if name.starts_with(|c: char| c.is_ascii_uppercase())
        && let Item::Node(node, _) = item
        && node.get("resourceType").and_then(Json::as_str) == Some(name)
    {
        out.push(item.clone());
        return;
    }
    for (k, v) in m {
        if let Some(suffix) = k.strip_prefix(name)
            && let Some(ty) = CHOICE_SUFFIXES.iter().find(|s| **s == suffix)
        {
            push_json(out, v, Some(type_name(ty)));
            return;
        }
    }
}

/// `Quantity` stays, `DateTime` becomes `dateTime` (primitive type names are lower camel case).
fn type_name(suffix: &'static str) -> &'static str {
    match suffix {
        "Boolean" => "boolean",
        "Integer" => "integer",
        "Integer64" => "integer64",
        "String" => "string",
        "Decimal" => "decimal",
        "Uri" => "uri",
        "Url" => "url",
        "Canonical" => "canonical",
        "Base64Binary" => "base64Binary",
        "Instant" => "instant",
        "Date" => "date",
        "DateTime" => "dateTime",
        "Time" => "time",
        "Code" => "code",
        "Oid" => "oid",
        "Id" => "id",
        "Markdown" => "markdown",
        "UnsignedInt" => "unsignedInt",
        "PositiveInt" => "positiveInt",
        "Uuid" => "uuid",
        other => other,
    }
}

/// Whether an item can be of FHIR/System type `ty`, judged from its JSON kind and tag.
pub(crate) fn is_type(item: &Item<'_>, ty: &str) -> bool {
    if let Some(t) = item.ty() {
        return t.eq_ignore_ascii_case(ty);
    }
    let lower = ty.to_ascii_lowercase();
    match item.prim() {
        Prim::Bool(_) => lower == "boolean",
        Prim::Int(_) => matches!(
            lower.as_str(),
            "integer" | "decimal" | "unsignedint" | "positiveint" | "integer64"
        ),
        Prim::Dec(..) => lower == "decimal",
        Prim::Str(_) => matches!(
            lower.as_str(),
            "string"
                | "code"
                | "id"
                | "uri"
                | "url"
                | "canonical"
                | "oid"
                | "uuid"
                | "markdown"
                | "base64binary"
                | "date"
                | "datetime"
                | "time"
                | "instant"
        ),
        Prim::Obj(j) => {
            // A resource knows its type; other complex types are not distinguishable.
            match j.get("resourceType").and_then(Json::as_str) {
                Some(rt) => rt == ty,
                None => ty.starts_with(|c: char| c.is_ascii_uppercase()),
            }
        }
        Prim::Null => false,
    }
}

/// Collection to a three-valued boolean (singleton evaluation).
pub(crate) fn to_bool(c: &[Item<'_>]) -> EvalResult<Option<bool>> {
    match c {
        [] => Ok(None),
        [x] => Ok(Some(match x.prim() {
            Prim::Bool(b) => b,
            _ => true,
        })),
        _ => Err(format!(
            "expected a single boolean, got a collection of {} items",
            c.len()
        )),
    }
}

fn lit_item<'a>(l: &'a Lit) -> Item<'a> {
    match l {
        Lit::Bool(b) => Item::Bool(*b),
        Lit::Int(i) => Item::Int(*i),
        Lit::Dec(d, s) => Item::Dec(*d, *s),
        Lit::Str(s) => Item::Str(Cow::Borrowed(s), None),
        Lit::Date(d) => Item::Str(
            Cow::Borrowed(d),
            Some(if d.starts_with('T') {
                "time"
            } else if d.contains('T') {
                "dateTime"
            } else {
                "date"
            }),
        ),
    }
}

/// Evaluates `e` with `input` as its focus.
pub(crate) fn eval<'a>(env: &Env<'a>, e: &'a Expr, input: &[Item<'a>]) -> EvalResult<Coll<'a>> {
    Ok(match e {
        Expr::This => input.to_vec(),
        Expr::Index => vec![Item::Int(env.index)],
        Expr::RowIndex => vec![Item::Int(env.row_index)],
        Expr::Resource => vec![Item::Node(env.resource, None)],
        Expr::Const(i) => {
            let (j, ty) = &env.consts[*i];
            let mut out = Vec::new();
            push_json(&mut out, j, Some(ty.as_str()));
            out
        }
        Expr::Lit(l) => vec![lit_item(l)],
        Expr::Empty => Vec::new(),
        Expr::Member(base, name) => {
            let mut out = Vec::new();
            if matches!(**base, Expr::This) {
                for it in input {
                    member(&mut out, it, name);
                }
            } else {
                for it in &eval(env, base, input)? {
                    member(&mut out, it, name);
                }
            }
            out
        }
        Expr::Choice {
            base,
            name,
            key,
            ty,
        } => {
            let b = eval(env, base, input)?;
            let mut out = Vec::new();
            for it in &b {
                let Item::Node(node @ Json::Object(_), _) = it else {
                    continue;
                };
                if let Some(v) = node.get(key) {
                    push_json(&mut out, v, Some(ty.as_str()));
                } else if let Some(v) = node.get(name) {
                    let mut tmp = Vec::new();
                    push_json(&mut tmp, v, None);
                    out.extend(tmp.into_iter().filter(|x| is_type(x, ty)));
                }
            }
            out
        }
        Expr::Indexer(base, idx) => {
            let b = eval(env, base, input)?;
            let i = eval(env, idx, input)?;
            match i.as_slice() {
                [] => Vec::new(),
                [x] => match x.prim() {
                    Prim::Int(i) if i >= 0 => b.into_iter().nth(i as usize).into_iter().collect(),
                    Prim::Int(_) => Vec::new(),
                    _ => return Err("index must be an integer".into()),
                },
                _ => return Err("index must be a single integer".into()),
            }
        }
        Expr::Call(base, f, args) => {
            let b = eval(env, base, input)?;
            crate::functions::call(env, f, args, b, input)?
        }
        Expr::Neg(x) => {
            let v = eval(env, x, input)?;
            match v.as_slice() {
                [] => Vec::new(),
                [x] => match x.prim() {
                    Prim::Int(i) => vec![Item::Int(-i)],
                    Prim::Dec(d, s) => vec![Item::Dec(-d, s)],
                    _ => return Err("unary '-' needs a number".into()),
                },
                _ => return Err("unary '-' needs a single number".into()),
            }
        }
        Expr::Bin(op, l, r) => binary(env, *op, l, r, input)?,
    })
}

fn binary<'a>(
    env: &Env<'a>,
    op: BinOp,
    l: &'a Expr,
    r: &'a Expr,
    input: &[Item<'a>],
) -> EvalResult<Coll<'a>> {
    let lv = eval(env, l, input)?;
    // Short-circuit the boolean operators where the result is already known.
    match op {
        BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies => {
            let a = to_bool(&lv)?;
            if (op == BinOp::And && a == Some(false)) || (op == BinOp::Or && a == Some(true)) {
                return Ok(vec![Item::Bool(op == BinOp::Or)]);
            }
            if op == BinOp::Implies && a == Some(false) {
                return Ok(vec![Item::Bool(true)]);
            }
            let b = to_bool(&eval(env, r, input)?)?;
            let res = match op {
                BinOp::And => match (a, b) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
                BinOp::Or => match (a, b) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
                BinOp::Xor => match (a, b) {
                    (Some(x), Some(y)) => Some(x != y),
                    _ => None,
                },
                _ => match (a, b) {
                    (Some(true), b) => b,
                    (None, Some(true)) => Some(true),
                    _ => None,
                },
            };
            return Ok(res.map(Item::Bool).into_iter().collect());
        }
        _ => {}
    }
    let rv = eval(env, r, input)?;
    Ok(match op {
        BinOp::Eq | BinOp::Ne => match coll_eq(&lv, &rv) {
            None => Vec::new(),
            Some(b) => vec![Item::Bool(b == (op == BinOp::Eq))],
        },
        BinOp::Equiv | BinOp::NotEquiv => {
            let b = lv.len() == rv.len() && lv.iter().all(|x| rv.iter().any(|y| item_equiv(x, y)));
            vec![Item::Bool(b == (op == BinOp::Equiv))]
        }
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let (a, b) = match (lv.as_slice(), rv.as_slice()) {
                ([a], [b]) => (a, b),
                ([], _) | (_, []) => return Ok(Vec::new()),
                _ => return Err("comparison needs single values".into()),
            };
            match compare(a, b) {
                None => Vec::new(),
                Some(o) => {
                    use std::cmp::Ordering::*;
                    let r = match op {
                        BinOp::Lt => o == Less,
                        BinOp::Le => o != Greater,
                        BinOp::Gt => o == Greater,
                        _ => o != Less,
                    };
                    vec![Item::Bool(r)]
                }
            }
        }
        BinOp::Union => {
            let mut out: Coll<'a> = Vec::with_capacity(lv.len() + rv.len());
            for x in lv.into_iter().chain(rv) {
                if !out.iter().any(|y| item_eq(&x, y)) {
                    out.push(x);
                }
            }
            out
        }
        BinOp::In | BinOp::Contains => {
            let (needle, hay) = if op == BinOp::In {
                (&lv, &rv)
            } else {
                (&rv, &lv)
            };
            match needle.as_slice() {
                [] => Vec::new(),
                [x] => vec![Item::Bool(hay.iter().any(|y| item_eq(x, y)))],
                _ => return Err("'in'/'contains' needs a single value".into()),
            }
        }
        BinOp::Concat => {
            let s = |c: &[Item<'_>]| -> EvalResult<String> {
                match c {
                    [] => Ok(String::new()),
                    [x] => Ok(to_string(x).unwrap_or_default()),
                    _ => Err("'&' needs single values".into()),
                }
            };
            vec![Item::Str(Cow::Owned(s(&lv)? + &s(&rv)?), None)]
        }
        _ => arith(op, &lv, &rv)?,
    })
}

fn arith<'a>(op: BinOp, lv: &[Item<'a>], rv: &[Item<'a>]) -> EvalResult<Coll<'a>> {
    let (a, b) = match (lv, rv) {
        ([a], [b]) => (a.prim(), b.prim()),
        ([], _) | (_, []) => return Ok(Vec::new()),
        _ => return Err("arithmetic needs single values".into()),
    };
    let out = match (a, b) {
        (Prim::Int(x), Prim::Int(y)) => match op {
            BinOp::Add => x.checked_add(y).map(Item::Int),
            BinOp::Sub => x.checked_sub(y).map(Item::Int),
            BinOp::Mul => x.checked_mul(y).map(Item::Int),
            BinOp::Div => (y != 0).then(|| Item::Dec(x as f64 / y as f64, 8)),
            BinOp::IntDiv => x.checked_div(y).map(Item::Int),
            BinOp::Mod => x.checked_rem(y).map(Item::Int),
            _ => None,
        },
        (Prim::Str(x), Prim::Str(y)) if op == BinOp::Add => {
            Some(Item::Str(Cow::Owned(format!("{x}{y}")), None))
        }
        (x, y) => {
            let (Some((x, sx)), Some((y, sy))) = (num(x), num(y)) else {
                return Err(format!("cannot apply {op:?} to these operands"));
            };
            let s = sx.max(sy);
            match op {
                BinOp::Add => Some(Item::Dec(x + y, s)),
                BinOp::Sub => Some(Item::Dec(x - y, s)),
                BinOp::Mul => Some(Item::Dec(x * y, sx + sy)),
                BinOp::Div => (y != 0.0).then(|| Item::Dec(x / y, 8)),
                BinOp::IntDiv => (y != 0.0).then(|| Item::Int((x / y).trunc() as i64)),
                BinOp::Mod => (y != 0.0).then(|| Item::Dec(x % y, s)),
                _ => None,
            }
        }
    };
    Ok(out.into_iter().collect())
}

fn num(p: Prim<'_, '_>) -> Option<(f64, u32)> {
    match p {
        Prim::Int(i) => Some((i as f64, 0)),
        Prim::Dec(d, s) => Some((d, s)),
        _ => None,
    }
}

/// FHIRPath `=` on collections: empty if either side is empty.
pub(crate) fn coll_eq(a: &[Item<'_>], b: &[Item<'_>]) -> Option<bool> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    Some(a.len() == b.len() && a.iter().zip(b).all(|(x, y)| item_eq(x, y)))
}

pub(crate) fn item_eq(x: &Item<'_>, y: &Item<'_>) -> bool {
    match (x.prim(), y.prim()) {
        (Prim::Obj(a), Prim::Obj(b)) => a == b,
        (Prim::Int(a), Prim::Int(b)) => a == b,
        (Prim::Bool(a), Prim::Bool(b)) => a == b,
        (Prim::Str(a), Prim::Str(b)) => a == b,
        (a, b) => match (num(a), num(b)) {
            (Some((a, _)), Some((b, _))) => a == b,
            _ => false,
        },
    }
}

fn item_equiv(x: &Item<'_>, y: &Item<'_>) -> bool {
    match (x.prim(), y.prim()) {
        (Prim::Str(a), Prim::Str(b)) => {
            let norm = |s: &str| {
                s.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase()
            };
            norm(a) == norm(b)
        }
        _ => item_eq(x, y),
    }
}

fn compare(a: &Item<'_>, b: &Item<'_>) -> Option<std::cmp::Ordering> {
    match (a.prim(), b.prim()) {
        (Prim::Int(x), Prim::Int(y)) => Some(x.cmp(&y)),
        (Prim::Str(x), Prim::Str(y)) => Some(x.cmp(y)),
        (x, y) => match (num(x), num(y)) {
            (Some((x, _)), Some((y, _))) => x.partial_cmp(&y),
            _ => None,
        },
    }
}

/// The string form of a primitive item (`toString()`).
pub(crate) fn to_string(x: &Item<'_>) -> Option<String> {
    match x.prim() {
        Prim::Bool(b) => Some(b.to_string()),
        Prim::Int(i) => Some(i.to_string()),
        Prim::Dec(d, s) => match x {
            Item::Node(Json::Number(n), _) => Some(n.to_string()),
            _ => Some(format_dec(d, s)),
        },
        Prim::Str(s) => Some(s.to_string()),
        Prim::Obj(_) | Prim::Null => None,
    }
}

/// The type name and FHIRPath text of an item (see [`crate::fhirpath::Value`]).
pub(crate) fn describe_item(it: &Item<'_>) -> (String, String) {
    match it {
        Item::Bool(b) => ("boolean".into(), b.to_string()),
        Item::Int(i) => ("integer".into(), i.to_string()),
        Item::Dec(d, s) => ("decimal".into(), format_dec(*d, *s)),
        Item::Str(s, ty) => match ty {
            Some(t @ ("date" | "dateTime" | "time")) => (t.to_string(), format!("@{s}")),
            Some(t) => (t.to_string(), s.to_string()),
            None => ("string".into(), s.to_string()),
        },
        Item::Node(j, ty) => {
            let t = |d: &str| ty.map_or_else(|| d.to_string(), str::to_string);
            match j {
                Json::Bool(b) => (t("boolean"), b.to_string()),
                Json::Number(n) => (t(if n.contains('.') { "decimal" } else { "integer" }), n.to_string()),
                Json::String(s) => match ty {
                    Some(d @ ("date" | "dateTime" | "time" | "instant")) => (d.to_string(), format!("@{s}")),
                    _ => (t("string"), s.to_string()),
                },
                Json::Null => (t("null"), "null".into()),
                other => {
                    let rt = other.get("resourceType").and_then(Json::as_str).unwrap_or("Object");
                    (t(rt), other.to_serde().to_string())
                }
            }
        }
    }
}

/// Formats a decimal with at most `scale` fraction digits, trailing zeros removed.
pub(crate) fn format_dec(d: f64, scale: u32) -> String {
    let s = format!("{d:.*}", scale.min(17) as usize);
    if s.contains('.') {
        let t = s.trim_end_matches('0');
        t.strip_suffix('.').unwrap_or(t).to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    fn run(expr: &str, resource: &str) -> Result<serde_json::Value, String> {
        let consts: Vec<(Json<'static>, String)> =
            vec![(Json::Number("1.5".into()), "decimal".into())];
        let e = crate::parser::parse(expr, &|n: &str| (n == "c").then_some(0))
            .map_err(|e| e.to_string())?;
        let r = parse(resource).unwrap();
        let env = Env {
            resource: &r,
            consts: &consts,
            row_index: 7,
            index: 0,
        };
        let out = eval(&env, &e, &[Item::Node(&r, None)])?;
        Ok(out
            .iter()
            .map(|i| match i {
                Item::Node(j, _) => j.to_serde(),
                Item::Bool(b) => (*b).into(),
                Item::Int(n) => (*n).into(),
                Item::Dec(d, s) => crate::json::number_to_serde(&format_dec(*d, *s)),
                Item::Str(s, _) => s.to_string().into(),
            })
            .collect())
    }

    const PT: &str = r#"{"resourceType":"Patient","id":"p1","active":true,
        "name":[{"use":"official","family":"Smith","given":["A","B"]},{"family":"Jones"}],
        "deceasedBoolean":false,"birthDate":"1970-06",
        "extension":[{"url":"u1","valueCode":"F"}],
        "managingOrganization":{"reference":"Organization/o1"},
        "multipleBirthInteger":2}"#;

    #[test]
    fn paths_functions_and_operators() {
        let cases: &[(&str, serde_json::Value)] = &[
            ("name.family", serde_json::json!(["Smith", "Jones"])),
            ("Patient.name[1].family", serde_json::json!(["Jones"])),
            (
                "name.where(use = 'official').given.join(',')",
                serde_json::json!(["A,B"]),
            ),
            ("name.given.count() + 1", serde_json::json!([3])),
            ("deceased.ofType(boolean)", serde_json::json!([false])),
            ("deceased", serde_json::json!([false])),
            ("multipleBirth.ofType(integer) * %c", serde_json::json!([3])),
            ("7 / 2", serde_json::json!([3.5])),
            ("7 div 2", serde_json::json!([3])),
            (
                "extension('u1').value.ofType(code)",
                serde_json::json!(["F"]),
            ),
            (
                "managingOrganization.getReferenceKey(Organization)",
                serde_json::json!(["o1"]),
            ),
            (
                "managingOrganization.getReferenceKey(Patient)",
                serde_json::json!([]),
            ),
            ("getResourceKey()", serde_json::json!(["p1"])),
            (
                "birthDate.highBoundary()",
                serde_json::json!(["1970-06-30"]),
            ),
            ("%rowIndex", serde_json::json!([7])),
            ("{} = 1", serde_json::json!([])),
            ("{}.exists() or true", serde_json::json!([true])),
            ("{}.exists() and true", serde_json::json!([false])),
            ("({} = 1) and true", serde_json::json!([])),
            ("({} = 1) or true", serde_json::json!([true])),
            ("active implies false", serde_json::json!([false])),
            (
                "name.family.first() & '-' & id",
                serde_json::json!(["Smith-p1"]),
            ),
            ("'a' | 'b' | 'a'", serde_json::json!(["a", "b"])),
            ("name.exists(family = 'Jones')", serde_json::json!([true])),
            ("name.select(given).count()", serde_json::json!([2])),
            ("iif(active, 'y', 'n')", serde_json::json!(["y"])),
            ("-1.50 + 1", serde_json::json!([-0.5])),
            ("name.family.startsWith('Sm')", serde_json::Value::Null),
        ];
        for (expr, want) in cases {
            let got = run(expr, PT);
            if want.is_null() {
                assert!(got.is_err(), "{expr}: expected an error, got {got:?}");
            } else {
                assert_eq!(got.as_ref(), Ok(want), "{expr}");
            }
        }
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = crate::parser::parse("name.where(use = ", &|_: &str| None).unwrap_err();
        assert_eq!(err.pos, 17);
        let err = crate::parser::parse("name.frobnicate()", &|_: &str| None).unwrap_err();
        assert_eq!(err.pos, 5);
        assert!(err.message.contains("frobnicate"));
        assert!(crate::parser::parse("%nope", &|_: &str| None).is_err());
        assert!(crate::parser::parse("a b", &|_: &str| None).is_err());
    }
}
