//! FHIRPath evaluation over the borrowed JSON tree: collections of [`Item`]s, operators,
//! three-valued logic, exact decimals, dates with precision, quantities and the FHIR/System
//! type system. Functions live in [`crate::functions`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::ast::{BinOp, Expr, Lit, SysType, TypeSpec};
use crate::json::Json;
use crate::temporal::{Kind, Temporal};

/// One item of a FHIRPath collection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item<'a> {
    /// A node of the resource (or of a constant): the value (`Null` for a primitive that has
    /// only extensions), its model key (FHIR type, or backbone path) when known, and for a
    /// primitive its `_name` element (id and extensions).
    Node(&'a Json<'a>, Option<&'a str>, Option<&'a Json<'a>>),
    Bool(bool),
    Int(i64),
    /// An exact decimal; the scale is its precision (`1.50`).
    Dec(Decimal),
    /// A System string, or a System date/dateTime/time when tagged `date`/`dateTime`/`time`.
    Str(Cow<'a, str>, Option<&'a str>),
    /// A System quantity: value and unit.
    Qty(Decimal, Cow<'a, str>),
    /// A type (`type()`): namespace and name.
    TypeInfo(&'static str, Cow<'a, str>),
}

/// An item seen as a FHIRPath primitive value (or an object, or null), what functions and
/// operators compute on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Primitive<'s, 'a> {
    Bool(bool),
    Int(i64),
    Dec(Decimal),
    Str(&'s str),
    /// A date, dateTime or time (text without `@`) and its kind.
    Temporal(&'s str, Kind),
    Qty(Decimal, &'s str),
    Obj(&'s Json<'a>),
    Null,
}

/// A JSON `null`, for primitives that only have extensions.
static NULL: Json<'static> = Json::Null;

/// Parses a JSON number's text into an integer or an exact decimal with its precision.
pub(crate) fn parse_number(n: &str) -> Primitive<'static, 'static> {
    if !n.contains(['.', 'e', 'E'])
        && let Ok(i) = n.parse()
    {
        return Primitive::Int(i);
    }
    let d = if n.contains(['e', 'E']) {
        Decimal::from_scientific(n).ok()
    } else {
        Decimal::from_str(n).ok()
    };
    d.map_or(Primitive::Null, Primitive::Dec)
}

fn temporal_kind(tag: &str) -> Option<Kind> {
    Some(match tag {
        "date" => Kind::Date,
        "dateTime" | "instant" => Kind::DateTime,
        "time" => Kind::Time,
        _ => return None,
    })
}

impl<'a> Item<'a> {
    pub(crate) fn prim(&self) -> Primitive<'_, 'a> {
        match self {
            Item::Node(j, t, _) => match j {
                Json::Bool(b) => Primitive::Bool(*b),
                Json::Number(n) => parse_number(n),
                Json::String(s) => match t.and_then(temporal_kind) {
                    Some(k) => Primitive::Temporal(s, k),
                    None => Primitive::Str(s),
                },
                Json::Null => Primitive::Null,
                other => Primitive::Obj(other),
            },
            Item::Bool(b) => Primitive::Bool(*b),
            Item::Int(i) => Primitive::Int(*i),
            Item::Dec(d) => Primitive::Dec(*d),
            Item::Str(s, t) => match t.and_then(temporal_kind) {
                Some(k) => Primitive::Temporal(s, k),
                None => Primitive::Str(s),
            },
            Item::Qty(v, u) => Primitive::Qty(*v, u),
            Item::TypeInfo(..) => Primitive::Null,
        }
    }

    /// The model key (FHIR type or backbone path) of a node, when known; a resource's own
    /// type wins over `Resource`.
    pub(crate) fn key(&self) -> Option<&'a str> {
        match self {
            Item::Node(j, t, _) => match t {
                Some(k) if !matches!(*k, "Resource" | "DomainResource") => Some(k),
                _ => j.get("resourceType").and_then(Json::as_str).or(*t),
            },
            Item::Str(_, t) => *t,
            _ => None,
        }
    }

    /// The FHIR type tag of a node, if known (for compatibility with the view code).
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self.prim() {
            Primitive::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// What an expression is evaluated against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Env<'a, 'e> {
    pub(crate) resource: &'a Json<'a>,
    /// View constants and their FHIR types.
    pub(crate) consts: &'a [(Json<'a>, String)],
    pub(crate) row_index: i64,
    pub(crate) index: i64,
    /// `$total` inside `aggregate()`.
    pub(crate) total: Option<&'e [Item<'a>]>,
    /// Whether nodes are typed from the FHIR model as they are reached. Only expressions
    /// whose answers depend on types ([`needs_types`]) pay for the model lookups.
    pub(crate) typed: bool,
}

/// Whether an expression's answer can depend on the FHIR types of the nodes it reaches
/// (type tests, comparisons and equality of dates and quantities, arithmetic, boundaries,
/// conversions, …). When it cannot, nodes are not typed while navigating, which saves a
/// model lookup per step; the values are the same.
pub(crate) fn needs_types(e: &Expr) -> bool {
    use crate::ast::Func as F;
    let mut typed = false;
    e.walk(&mut |x| {
        typed |= match x {
            Expr::Bin(op, ..) => !matches!(
                op,
                BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies | BinOp::Concat
            ),
            Expr::Neg(_) => true,
            Expr::Call(_, f, _) => !matches!(
                f,
                F::Where
                    | F::Select
                    | F::Exists
                    | F::All
                    | F::Empty
                    | F::First
                    | F::Last
                    | F::Tail
                    | F::Skip
                    | F::Take
                    | F::Single
                    | F::Count
                    | F::Not
                    | F::HasValue
                    | F::Extension
                    | F::Join
                    | F::GetResourceKey
                    | F::GetReferenceKey(_)
                    | F::Iif
                    | F::ToString
                    | F::StartsWith
                    | F::EndsWith
                    | F::ContainsStr
                    | F::Lower
                    | F::Upper
                    | F::Length
                    | F::AllTrue
                    | F::AnyTrue
                    | F::AllFalse
                    | F::AnyFalse
                    | F::IndexOf
                    | F::LastIndexOf
                    | F::Substring
                    | F::Matches
                    | F::MatchesFull
                    | F::ReplaceMatches
                    | F::Replace
                    | F::Trim
                    | F::Split
                    | F::ToChars
                    | F::Encode
                    | F::Decode
                    | F::Escape
                    | F::Unescape
                    | F::Combine
                    | F::Children
                    | F::Descendants
                    | F::Trace
                    | F::Aggregate
            ),
            _ => false,
        };
    });
    typed
}

pub(crate) type Coll<'a> = Vec<Item<'a>>;
pub(crate) type EvalResult<T> = Result<T, String>;

/// The root item of a resource: the resource node typed by its `resourceType`.
pub(crate) fn root<'a>(resource: &'a Json<'a>) -> Item<'a> {
    Item::Node(
        resource,
        resource.get("resourceType").and_then(Json::as_str),
        None,
    )
}

/// FHIR data type names that may follow a choice element's name (`value[x]`).
pub(crate) const CHOICE_SUFFIXES: &[&str] = &[
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

/// Pushes the value(s) of a JSON member: arrays are flattened; nulls are skipped unless the
/// `_name` element gives them extensions (`"given": [null, "B"], "_given": [{…}, null]`).
#[inline]
fn push_json<'a>(
    out: &mut Coll<'a>,
    v: &'a Json<'a>,
    ty: Option<&'a str>,
    ext: Option<&'a Json<'a>>,
) {
    match (v, ext) {
        (Json::Array(a), None) => out.extend(
            a.iter()
                .filter(|x| !matches!(x, Json::Null))
                .map(|x| Item::Node(x, ty, None)),
        ),
        (Json::Array(a), Some(e)) => {
            let exts = match e {
                Json::Array(es) => es.as_slice(),
                _ => &[],
            };
            for (i, x) in a.iter().enumerate() {
                let xe = exts.get(i).filter(|e| !matches!(e, Json::Null));
                if !matches!(x, Json::Null) || xe.is_some() {
                    out.push(Item::Node(x, ty, xe));
                }
            }
        }
        (Json::Null, None) => {}
        (v, e) => out.push(Item::Node(v, ty, e.filter(|e| !matches!(e, Json::Null)))),
    }
}

/// Whether a JSON value holds primitives (so it may have a `_name` sibling).
fn is_primitive(v: &Json<'_>) -> bool {
    match v {
        Json::Object(_) => false,
        Json::Array(a) => a.first().is_none_or(|x| !matches!(x, Json::Object(_))),
        _ => true,
    }
}

/// `name` on one item: the member (typed from the model), else the resource itself when
/// `name` is its type, else a choice element `name[x]`; a primitive's `_name` element
/// supplies its extensions.
#[inline]
pub(crate) fn member<'a>(out: &mut Coll<'a>, item: &Item<'a>, name: &str, typed: bool) {
    let (obj, parent) = match item {
        Item::Node(Json::Object(m), _, _) => (m, if typed { item.key() } else { None }),
        // A primitive's id and extensions live in its `_name` element.
        Item::Node(_, _, Some(Json::Object(m))) => (m, Some("Element")),
        Item::TypeInfo(ns, n) => {
            match name {
                "namespace" => out.push(Item::Str(Cow::Borrowed(ns), None)),
                "name" => out.push(Item::Str(n.clone(), None)),
                _ => {}
            }
            return;
        }
        _ => return,
    };
    let child = |key: &str| parent.and_then(|p| crate::model::child(p, key));
    if let Some((_, v)) = obj.iter().find(|(k, _)| crate::json::key_eq(k, name)) {
        let ext = if is_primitive(v) {
            obj.iter()
                .find(|(k, _)| {
                    k.len() == name.len() + 1 && k.as_bytes()[0] == b'_' && &k[1..] == name
                })
                .map(|(_, e)| e)
        } else {
            None
        };
        push_json(out, v, child(name), ext);
        return;
    }
    if name.starts_with(|c: char| c.is_ascii_uppercase())
        && let Item::Node(node, _, _) = item
        && node.get("resourceType").and_then(Json::as_str) == Some(name)
    {
        out.push(item.clone());
        return;
    }
    for (k, v) in obj {
        // (Byte tests: `str::strip_prefix(char)` builds a searcher.)
        if let Some(rest) = k.strip_prefix("_") {
            if rest == name {
                // Only extensions, no value.
                push_json(out, &NULL, child(name), Some(v));
                return;
            }
            continue;
        }
        if let Some(suffix) = k.strip_prefix(name)
            && let Some(ty) = CHOICE_SUFFIXES.iter().find(|s| **s == suffix)
        {
            let ext = if is_primitive(v) {
                obj.iter()
                    .find(|(ek, _)| ek.as_bytes().first() == Some(&b'_') && &ek[1..] == k.as_ref())
                    .map(|(_, e)| e)
            } else {
                None
            };
            push_json(out, v, Some(child(k).unwrap_or(type_name(ty))), ext);
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

/// The System type of a System value (`None` for nodes of the resource).
pub(crate) fn system_type(item: &Item<'_>) -> Option<SysType> {
    Some(match item {
        Item::Bool(_) => SysType::Boolean,
        Item::Int(_) => SysType::Integer,
        Item::Dec(_) => SysType::Decimal,
        Item::Str(_, t) => match t.and_then(temporal_kind) {
            Some(Kind::Date) => SysType::Date,
            Some(Kind::DateTime) => SysType::DateTime,
            Some(Kind::Time) => SysType::Time,
            None => SysType::String,
        },
        Item::Qty(..) => SysType::Quantity,
        Item::Node(..) | Item::TypeInfo(..) => return None,
    })
}

/// The FHIR type name of a node. An element the model does not know has no known type,
/// except a JSON boolean (only `boolean` is one).
pub(crate) fn fhir_type<'a>(item: &Item<'a>) -> EvalResult<&'a str> {
    match item.key() {
        Some(k) => Ok(crate::model::type_of(k)),
        None => match item {
            Item::Node(Json::Bool(_), ..) => Ok("boolean"),
            _ => Err(
                "the FHIR type of this value is not known (an element outside the FHIR R4 model)"
                    .into(),
            ),
        },
    }
}

/// `is`/`ofType`/`as`: whether `item` is of type `t`. `exact` (ofType, as) compares the type
/// itself; `is` accepts subtypes (`code` is a `string`).
pub(crate) fn has_type(item: &Item<'_>, t: &TypeSpec, exact: bool) -> EvalResult<bool> {
    if let Some(st) = system_type(item) {
        return Ok(t.system == Some(st));
    }
    if let Item::TypeInfo(..) = item {
        return Ok(false);
    }
    let Some(f) = &t.fhir else {
        return Ok(false);
    };
    let ty = fhir_type(item)?;
    let ty = if ty == "System.String" { "string" } else { ty };
    Ok(if exact {
        ty == f
    } else {
        crate::model::is_subtype(ty, f)
    })
}

/// Collection to a three-valued boolean (singleton evaluation of a criterion).
pub(crate) fn to_bool(c: &[Item<'_>]) -> EvalResult<Option<bool>> {
    match c {
        [] => Ok(None),
        [x] => Ok(Some(match x.prim() {
            Primitive::Bool(b) => b,
            _ => true,
        })),
        _ => Err(format!(
            "expected a single boolean, got a collection of {} items",
            c.len()
        )),
    }
}

/// Like [`to_bool`], but the single item must be a boolean (`iif`, `where` criteria).
pub(crate) fn to_strict_bool(c: &[Item<'_>], what: &str) -> EvalResult<Option<bool>> {
    match c {
        [] => Ok(None),
        [x] => match x.prim() {
            Primitive::Bool(b) => Ok(Some(b)),
            _ => Err(format!("{what} must be a boolean")),
        },
        _ => Err(format!(
            "{what} must be a single boolean, got {} items",
            c.len()
        )),
    }
}

fn lit_item<'a>(l: &'a Lit) -> Item<'a> {
    match l {
        Lit::Bool(b) => Item::Bool(*b),
        Lit::Int(i) => Item::Int(*i),
        Lit::Dec(d) => Item::Dec(*d),
        Lit::Str(s) => Item::Str(Cow::Borrowed(s), None),
        Lit::Date(d) => Item::Str(
            Cow::Borrowed(d.strip_prefix('T').unwrap_or(d)),
            Some(if d.starts_with('T') {
                "time"
            } else if d.contains('T') {
                "dateTime"
            } else {
                "date"
            }),
        ),
        Lit::Quantity(v, u) => Item::Qty(*v, Cow::Borrowed(u)),
    }
}

/// Evaluates `e` with `input` as its focus.
pub(crate) fn eval<'a>(env: &Env<'a, '_>, e: &'a Expr, input: &[Item<'a>]) -> EvalResult<Coll<'a>> {
    Ok(match e {
        Expr::This => input.to_vec(),
        Expr::Index => vec![Item::Int(env.index)],
        Expr::Total => match env.total {
            Some(t) => t.to_vec(),
            None => return Err("$total is only defined inside aggregate()".into()),
        },
        Expr::RowIndex => vec![Item::Int(env.row_index)],
        Expr::Resource => vec![root(env.resource)],
        Expr::Const(i) => {
            let (j, ty) = &env.consts[*i];
            let mut out = Vec::new();
            push_json(&mut out, j, Some(ty.as_str()), None);
            out
        }
        Expr::Lit(l) => vec![lit_item(l)],
        Expr::Empty => Vec::new(),
        Expr::Member(base, name) => {
            let mut out = Vec::new();
            if matches!(**base, Expr::This) {
                for it in input {
                    member(&mut out, it, name, env.typed);
                }
            } else {
                for it in &eval(env, base, input)? {
                    member(&mut out, it, name, env.typed);
                }
            }
            out
        }
        Expr::Choice {
            base,
            name,
            key,
            ty,
            single,
        } => {
            let b = eval(env, base, input)?;
            let mut out = Vec::new();
            let mut seen = 0;
            // The fallback below tests node types: it needs the base typed.
            let mut typed_base = None;
            for (i, it) in b.iter().enumerate() {
                let Item::Node(node @ Json::Object(_), _, _) = it else {
                    continue;
                };
                if let Some(v) = node.get(key) {
                    let child = if env.typed {
                        it.key().and_then(|p| crate::model::child(p, key))
                    } else {
                        None
                    };
                    let before = out.len();
                    push_json(&mut out, v, Some(child.unwrap_or(ty.name.as_str())), None);
                    seen += out.len() - before;
                } else {
                    let it = if env.typed {
                        it
                    } else {
                        let tb = match &mut typed_base {
                            Some(tb) => tb,
                            None => typed_base.insert(eval(
                                &Env {
                                    typed: true,
                                    ..*env
                                },
                                base,
                                input,
                            )?),
                        };
                        match tb.get(i) {
                            Some(t) => t,
                            None => it,
                        }
                    };
                    let mut tmp = Vec::new();
                    member(&mut tmp, it, name, true);
                    seen += tmp.len();
                    for x in tmp {
                        if has_type(&x, ty, true)? {
                            out.push(x);
                        }
                    }
                }
            }
            if *single && seen > 1 {
                return Err(format!(
                    "'as' needs a single item, got a collection of {seen} items"
                ));
            }
            out
        }
        Expr::Indexer(base, idx) => {
            let b = eval(env, base, input)?;
            let i = eval(env, idx, input)?;
            match i.as_slice() {
                [] => Vec::new(),
                [x] => match x.prim() {
                    Primitive::Int(i) if i >= 0 => {
                        b.into_iter().nth(i as usize).into_iter().collect()
                    }
                    Primitive::Int(_) => Vec::new(),
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
                    Primitive::Int(i) => {
                        vec![Item::Int(i.checked_neg().ok_or("integer overflow")?)]
                    }
                    Primitive::Dec(d) => {
                        let mut n = -d;
                        if n.is_zero() {
                            n.set_sign_positive(true);
                        }
                        vec![Item::Dec(n)]
                    }
                    Primitive::Qty(v, u) => vec![Item::Qty(-v, Cow::Owned(u.to_string()))],
                    _ => return Err("unary '-' needs a number".into()),
                },
                _ => return Err("unary '-' needs a single number".into()),
            }
        }
        Expr::Bin(op, l, r) => binary(env, *op, l, r, input)?,
    })
}

fn binary<'a>(
    env: &Env<'a, '_>,
    op: BinOp,
    l: &'a Expr,
    r: &'a Expr,
    input: &[Item<'a>],
) -> EvalResult<Coll<'a>> {
    let lv = eval(env, l, input)?;
    // Short-circuit the boolean operators where the result is already known.
    match op {
        BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies => {
            let a = logic_operand(&lv)?;
            if (op == BinOp::And && a == Some(false)) || (op == BinOp::Or && a == Some(true)) {
                return Ok(vec![Item::Bool(op == BinOp::Or)]);
            }
            if op == BinOp::Implies && a == Some(false) {
                return Ok(vec![Item::Bool(true)]);
            }
            let b = logic_operand(&eval(env, r, input)?)?;
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
            // A date compared with a string is false by type, which is rarely what was
            // meant (`birthDate = '1974-12-25'`): refused rather than answered.
            _ if matches!(
                (lv.as_slice(), rv.as_slice()),
                ([a], [b]) if matches!(
                    (a.prim(), b.prim()),
                    (Primitive::Temporal(..), Primitive::Str(_)) | (Primitive::Str(_), Primitive::Temporal(..))
                )
            ) =>
            {
                return Err(
                    "comparing a date/time with a string: compare with a date literal (@2020-01-01) or use toString()"
                        .into(),
                );
            }
            None => Vec::new(),
            Some(b) => vec![Item::Bool(b == (op == BinOp::Eq))],
        },
        BinOp::Equiv | BinOp::NotEquiv => {
            let b = coll_equiv(&lv, &rv);
            vec![Item::Bool(b == (op == BinOp::Equiv))]
        }
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let (a, b) = match (lv.as_slice(), rv.as_slice()) {
                ([a], [b]) => (a, b),
                ([], _) | (_, []) => return Ok(Vec::new()),
                _ => return Err("comparison needs single values".into()),
            };
            match compare(a, b)? {
                None => Vec::new(),
                Some(o) => {
                    let r = match op {
                        BinOp::Lt => o == Ordering::Less,
                        BinOp::Le => o != Ordering::Greater,
                        BinOp::Gt => o == Ordering::Greater,
                        _ => o != Ordering::Less,
                    };
                    vec![Item::Bool(r)]
                }
            }
        }
        BinOp::Union => {
            let mut out: Coll<'a> = Vec::with_capacity(lv.len() + rv.len());
            for x in lv.into_iter().chain(rv) {
                if !out.iter().any(|y| item_eq(&x, y) == Some(true)) {
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
                [x] => vec![Item::Bool(hay.iter().any(|y| item_eq(x, y) == Some(true)))],
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

/// An operand of `and`/`or`/`xor`/`implies`: empty, or a single boolean.
fn logic_operand(c: &[Item<'_>]) -> EvalResult<Option<bool>> {
    match c {
        [] => Ok(None),
        [x] => match x.prim() {
            Primitive::Bool(b) => Ok(Some(b)),
            // Singleton evaluation: a single non-boolean item is true.
            _ => Ok(Some(true)),
        },
        _ => Err(format!(
            "a boolean operator needs a single value, got {} items",
            c.len()
        )),
    }
}

/// The (value, unit) of a quantity: a System quantity or a FHIR `Quantity` node (its UCUM
/// `code` when the system is UCUM, else its `unit`).
pub(crate) fn quantity_of<'s>(item: &'s Item<'_>) -> Option<(Decimal, Cow<'s, str>)> {
    match item {
        Item::Qty(v, u) => Some((*v, Cow::Borrowed(u.as_ref()))),
        Item::Node(j @ Json::Object(_), ..) => {
            let ty = item.key().map(crate::model::type_of)?;
            if !crate::model::is_subtype(ty, "Quantity") {
                return None;
            }
            let v = match j.get("value") {
                Some(Json::Number(n)) => match parse_number(n) {
                    Primitive::Int(i) => Decimal::from(i),
                    Primitive::Dec(d) => d,
                    _ => return None,
                },
                _ => return None,
            };
            let ucum = j.get("system").and_then(Json::as_str) == Some("http://unitsofmeasure.org");
            let unit = if ucum {
                j.get("code").and_then(Json::as_str)
            } else {
                None
            }
            .or_else(|| j.get("unit").and_then(Json::as_str))
            .or_else(|| j.get("code").and_then(Json::as_str))
            .unwrap_or("1");
            Some((v, Cow::Borrowed(unit)))
        }
        _ => None,
    }
}

fn arith<'a>(op: BinOp, lv: &[Item<'a>], rv: &[Item<'a>]) -> EvalResult<Coll<'a>> {
    let (ia, ib) = match (lv, rv) {
        ([a], [b]) => (a, b),
        ([], _) | (_, []) => return Ok(Vec::new()),
        _ => return Err("arithmetic needs single values".into()),
    };
    let (a, b) = (ia.prim(), ib.prim());
    let bad = || {
        format!(
            "cannot apply {op:?} to {} and {}",
            kind_name(ia),
            kind_name(ib)
        )
    };
    let out = match (a, b) {
        (Primitive::Int(x), Primitive::Int(y)) => match op {
            BinOp::Add => Some(Item::Int(x.checked_add(y).ok_or("integer overflow")?)),
            BinOp::Sub => Some(Item::Int(x.checked_sub(y).ok_or("integer overflow")?)),
            BinOp::Mul => Some(Item::Int(x.checked_mul(y).ok_or("integer overflow")?)),
            BinOp::Div => {
                if y == 0 {
                    None
                } else {
                    Decimal::from(x)
                        .checked_div(Decimal::from(y))
                        .map(|d| Item::Dec(d.normalize()))
                }
            }
            BinOp::IntDiv => (y != 0).then(|| x.checked_div(y).map(Item::Int)).flatten(),
            BinOp::Mod => (y != 0).then(|| x.checked_rem(y).map(Item::Int)).flatten(),
            _ => return Err(bad()),
        },
        (Primitive::Str(x), Primitive::Str(y)) if op == BinOp::Add => {
            Some(Item::Str(Cow::Owned(format!("{x}{y}")), None))
        }
        (Primitive::Temporal(t, k), _) if matches!(op, BinOp::Add | BinOp::Sub) => {
            let Some((v, u)) = quantity_of(ib) else {
                return Err(bad());
            };
            if matches!(u.as_ref(), "a" | "mo") {
                return Err(format!(
                    "'{u}' is not a calendar duration: add years or months with the words `year`/`month`"
                ));
            }
            let v = if op == BinOp::Sub { -v } else { v };
            // A fraction of the unit is dropped (`7.7 days` adds 7 days).
            let n = i64::try_from(v.trunc()).map_err(|_| "date arithmetic overflow")?;
            let tv = parse_temporal(t, k).ok_or("invalid date/time")?;
            let r = tv
                .add(n, &u)
                .ok_or_else(|| format!("cannot add '{u}' to a value of this precision"))?;
            Some(Item::Str(
                Cow::Owned(r.format()),
                Some(match k {
                    Kind::Date => "date",
                    Kind::DateTime => "dateTime",
                    Kind::Time => "time",
                }),
            ))
        }
        (x, y) => {
            if let (Some(x), Some(y)) = (num(x), num(y)) {
                match op {
                    BinOp::Add => Some(Item::Dec(x.checked_add(y).ok_or("decimal overflow")?)),
                    BinOp::Sub => Some(Item::Dec(x.checked_sub(y).ok_or("decimal overflow")?)),
                    BinOp::Mul => Some(Item::Dec(x.checked_mul(y).ok_or("decimal overflow")?)),
                    BinOp::Div => x.checked_div(y).map(|d| Item::Dec(d.normalize())),
                    BinOp::IntDiv => x
                        .checked_div(y)
                        .and_then(|d| i64::try_from(d.trunc()).ok())
                        .map(Item::Int),
                    BinOp::Mod => x.checked_rem(y).map(Item::Dec),
                    _ => return Err(bad()),
                }
            } else if let (Some(qa), Some(qb)) = (quantity_of(ia), quantity_of(ib)) {
                match op {
                    BinOp::Add | BinOp::Sub => {
                        let Some((x, y)) =
                            crate::quantity::align((qa.0, &qa.1), (qb.0, &qb.1), false).filter(
                                |_| {
                                    crate::quantity::normalize(&qa.1)
                                        == crate::quantity::normalize(&qb.1)
                                },
                            )
                        else {
                            return Err(format!(
                                "cannot add or subtract quantities in '{}' and '{}'",
                                qa.1, qb.1
                            ));
                        };
                        let v = if op == BinOp::Add { x + y } else { x - y };
                        Some(Item::Qty(v, Cow::Owned(qa.1.into_owned())))
                    }
                    BinOp::Mul | BinOp::Div => Some(qty_mul_div(op, &qa, &qb).ok_or_else(bad)?),
                    _ => return Err(bad()),
                }
            } else if let (Some(q), Some(n)) = (quantity_of(ia), num(b)) {
                match op {
                    BinOp::Mul => Some(Item::Qty(
                        q.0.checked_mul(n).ok_or("decimal overflow")?,
                        Cow::Owned(q.1.into_owned()),
                    )),
                    BinOp::Div => {
                        q.0.checked_div(n)
                            .map(|v| Item::Qty(v.normalize(), Cow::Owned(q.1.into_owned())))
                    }
                    _ => return Err(bad()),
                }
            } else if let (Some(n), Some(q), BinOp::Mul) = (num(a), quantity_of(ib), op) {
                Some(Item::Qty(
                    q.0.checked_mul(n).ok_or("decimal overflow")?,
                    Cow::Owned(q.1.into_owned()),
                ))
            } else {
                return Err(bad());
            }
        }
    };
    Ok(out.into_iter().collect())
}

/// `q1 * q2` and `q1 / q2` for simple units: the same dimension gives a squared unit or
/// `'1'` (`2 'cm' * 2 'm'` = `0.04 'm2'`), other units a compound (`g/m`).
fn qty_mul_div<'a>(
    op: BinOp,
    a: &(Decimal, Cow<'_, str>),
    b: &(Decimal, Cow<'_, str>),
) -> Option<Item<'a>> {
    let mul = op == BinOp::Mul;
    let (x, y, unit) =
        match crate::quantity::base_of(&a.1, a.0).zip(crate::quantity::base_of(&b.1, b.0)) {
            Some(((ba, x), (bb, y))) if ba == bb => {
                (x, y, if mul { format!("{ba}2") } else { "1".into() })
            }
            _ if a.1 == "1" => (a.0, b.0, b.1.to_string()),
            _ if b.1 == "1" => (a.0, b.0, a.1.to_string()),
            _ => (
                a.0,
                b.0,
                format!("{}{}{}", a.1, if mul { "." } else { "/" }, b.1),
            ),
        };
    let v = if mul {
        x.checked_mul(y)?
    } else {
        x.checked_div(y)?.normalize()
    };
    Some(Item::Qty(v, Cow::Owned(unit)))
}

fn kind_name(item: &Item<'_>) -> &'static str {
    match item.prim() {
        Primitive::Bool(_) => "a boolean",
        Primitive::Int(_) => "an integer",
        Primitive::Dec(_) => "a decimal",
        Primitive::Str(_) => "a string",
        Primitive::Temporal(..) => "a date/time",
        Primitive::Qty(..) => "a quantity",
        Primitive::Obj(_) => "an object",
        Primitive::Null => "a value without a primitive value",
    }
}

fn num(p: Primitive<'_, '_>) -> Option<Decimal> {
    match p {
        Primitive::Int(i) => Some(Decimal::from(i)),
        Primitive::Dec(d) => Some(d),
        _ => None,
    }
}

pub(crate) fn parse_temporal(s: &str, k: Kind) -> Option<Temporal> {
    let mut t = if k == Kind::Time && !s.starts_with('T') {
        Temporal::parse(&format!("T{s}"))?
    } else {
        Temporal::parse(s)?
    };
    // A FHIR dateTime may be written with a date's precision (`2001-05-06`).
    if k == Kind::DateTime && t.kind == Kind::Date {
        t.kind = Kind::DateTime;
    }
    (t.kind == k).then_some(t)
}

/// FHIRPath `=` on collections: empty if either side is empty or an item comparison is.
pub(crate) fn coll_eq(a: &[Item<'_>], b: &[Item<'_>]) -> Option<bool> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    if a.len() != b.len() {
        return Some(false);
    }
    let mut unknown = false;
    for (x, y) in a.iter().zip(b) {
        match item_eq(x, y) {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    (!unknown).then_some(true)
}

/// Item equality: `None` when not comparable (dates of different precision, quantities in
/// incompatible units).
pub(crate) fn item_eq(x: &Item<'_>, y: &Item<'_>) -> Option<bool> {
    match (x.prim(), y.prim()) {
        (Primitive::Obj(a), Primitive::Obj(b)) => {
            if let (Some(qa), Some(qb)) = (quantity_of(x), quantity_of(y)) {
                return qty_cmp(&qa, &qb, false).map(|o| o == Ordering::Equal);
            }
            Some(a == b)
        }
        (Primitive::Int(a), Primitive::Int(b)) => Some(a == b),
        (Primitive::Bool(a), Primitive::Bool(b)) => Some(a == b),
        (Primitive::Str(a), Primitive::Str(b)) => Some(a == b),
        (Primitive::Temporal(a, ka), Primitive::Temporal(b, kb)) => {
            // A time is never equal to a date or dateTime.
            if (ka == Kind::Time) != (kb == Kind::Time) {
                return Some(false);
            }
            let (ta, tb) = (parse_temporal(a, ka)?, parse_temporal(b, kb)?);
            ta.compare(&tb).map(|o| o == Ordering::Equal)
        }
        (Primitive::Null, Primitive::Null) => Some(x == y),
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) => Some(a == b),
            _ => match (quantity_of(x), quantity_of(y)) {
                (Some(qa), Some(qb)) => qty_cmp(&qa, &qb, false).map(|o| o == Ordering::Equal),
                _ => Some(false),
            },
        },
    }
}

fn qty_cmp(
    a: &(Decimal, Cow<'_, str>),
    b: &(Decimal, Cow<'_, str>),
    equiv: bool,
) -> Option<Ordering> {
    let (x, y) = crate::quantity::align((a.0, &a.1), (b.0, &b.1), equiv)?;
    Some(x.cmp(&y))
}

/// FHIRPath `~` on collections: order-independent, empty equals empty.
fn coll_equiv(a: &[Item<'_>], b: &[Item<'_>]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut used = vec![false; b.len()];
    a.iter().all(|x| {
        let hit = b
            .iter()
            .enumerate()
            .find(|(i, y)| !used[*i] && item_equiv(x, y));
        hit.map(|(i, _)| used[i] = true).is_some()
    })
}

/// Item equivalence: strings ignoring case and whitespace runs, decimals at the lower
/// precision, dates of different precision are not equivalent.
pub(crate) fn item_equiv(x: &Item<'_>, y: &Item<'_>) -> bool {
    match (x.prim(), y.prim()) {
        (Primitive::Str(a), Primitive::Str(b)) => {
            let norm = |s: &str| {
                s.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase()
            };
            norm(a) == norm(b)
        }
        (Primitive::Temporal(a, ka), Primitive::Temporal(b, kb)) => {
            match (parse_temporal(a, ka), parse_temporal(b, kb)) {
                (Some(ta), Some(tb)) => ta.compare(&tb) == Some(Ordering::Equal),
                _ => false,
            }
        }
        (Primitive::Dec(_), _) | (_, Primitive::Dec(_)) => match (num(x.prim()), num(y.prim())) {
            (Some(a), Some(b)) => {
                let s = a.scale().min(b.scale());
                a.round_dp(s) == b.round_dp(s)
            }
            _ => false,
        },
        _ => match (quantity_of(x), quantity_of(y)) {
            (Some(qa), Some(qb)) => {
                // Compared at the precision of the less precise value.
                match crate::quantity::align((qa.0, &qa.1), (qb.0, &qb.1), true) {
                    Some((x, y)) => {
                        let s = x.scale().min(y.scale());
                        x.round_dp(s) == y.round_dp(s)
                    }
                    None => false,
                }
            }
            _ => item_eq(x, y) == Some(true),
        },
    }
}

/// Ordering for `<`, `<=`, `>`, `>=`: `Ok(None)` when not comparable (dates of different
/// precision, quantities in other dimensions); an error for values of different kinds.
pub(crate) fn compare(a: &Item<'_>, b: &Item<'_>) -> EvalResult<Option<Ordering>> {
    match (a.prim(), b.prim()) {
        (Primitive::Int(x), Primitive::Int(y)) => Ok(Some(x.cmp(&y))),
        (Primitive::Str(x), Primitive::Str(y)) => Ok(Some(x.cmp(y))),
        (Primitive::Temporal(x, kx), Primitive::Temporal(y, ky)) => {
            match (parse_temporal(x, kx), parse_temporal(y, ky)) {
                (Some(tx), Some(ty)) => Ok(tx.compare(&ty)),
                _ => Err("invalid date/time value".into()),
            }
        }
        (x, y) => match (num(x), num(y)) {
            (Some(x), Some(y)) => Ok(Some(x.cmp(&y))),
            _ => match (quantity_of(a), quantity_of(b)) {
                (Some(qa), Some(qb)) => Ok(qty_cmp(&qa, &qb, false)),
                _ => Err(format!(
                    "cannot compare {} with {}",
                    kind_name(a),
                    kind_name(b)
                )),
            },
        },
    }
}

/// The string form of a primitive item (`toString()`); decimals keep their precision.
pub(crate) fn to_string(x: &Item<'_>) -> Option<String> {
    match x.prim() {
        Primitive::Bool(b) => Some(b.to_string()),
        Primitive::Int(i) => Some(i.to_string()),
        Primitive::Dec(d) => match x {
            Item::Node(Json::Number(n), ..) if !n.contains(['e', 'E']) => Some(n.to_string()),
            _ => Some(d.to_string()),
        },
        Primitive::Str(s) | Primitive::Temporal(s, _) => Some(s.to_string()),
        Primitive::Qty(v, u) => Some(crate::quantity::format(v, u)),
        Primitive::Obj(_) | Primitive::Null => None,
    }
}

/// The type name and FHIRPath text of an item (see [`crate::fhirpath::Value`]).
pub(crate) fn describe_item(it: &Item<'_>) -> (String, String) {
    match it {
        Item::Bool(b) => ("boolean".into(), b.to_string()),
        Item::Int(i) => ("integer".into(), i.to_string()),
        Item::Dec(d) => ("decimal".into(), d.to_string()),
        Item::Qty(v, u) => ("Quantity".into(), crate::quantity::format(*v, u)),
        Item::TypeInfo(ns, n) => ("TypeInfo".into(), format!("{ns}.{n}")),
        Item::Str(s, ty) => match ty {
            Some(t @ ("date" | "dateTime")) => (t.to_string(), format!("@{s}")),
            Some("time") => ("time".into(), format!("@T{s}")),
            _ => ("string".into(), s.to_string()),
        },
        Item::Node(j, ..) => {
            let ty = it
                .key()
                .map(crate::model::type_of)
                .map(|t| if t == "System.String" { "string" } else { t });
            let t = |d: &str| ty.map_or_else(|| d.to_string(), str::to_string);
            match j {
                Json::Bool(b) => (t("boolean"), b.to_string()),
                Json::Number(n) => match parse_number(n) {
                    Primitive::Int(i) => (t("integer"), i.to_string()),
                    Primitive::Dec(d) if n.contains(['e', 'E']) => (t("decimal"), d.to_string()),
                    _ => (t("decimal"), n.to_string()),
                },
                Json::String(s) => match ty {
                    Some(d @ ("date" | "dateTime" | "instant")) => (d.to_string(), format!("@{s}")),
                    Some("time") => ("time".into(), format!("@T{s}")),
                    _ => (t("string"), s.to_string()),
                },
                Json::Null => (t("null"), String::new()),
                other => (t("Object"), other.to_serde().to_string()),
            }
        }
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
            total: None,
            typed: true,
        };
        let out = eval(&env, &e, &[root(&r)])?;
        Ok(out
            .iter()
            .map(|i| match i {
                Item::Node(j, ..) => j.to_serde(),
                Item::Bool(b) => (*b).into(),
                Item::Int(n) => (*n).into(),
                Item::Dec(d) => crate::json::number_to_serde(&d.to_string()),
                Item::Str(s, _) => s.to_string().into(),
                other => describe_item(other).1.into(),
            })
            .collect())
    }

    const PT: &str = r#"{"resourceType":"Patient","id":"p1","active":true,
        "name":[{"use":"official","family":"Smith","given":["A","B"]},{"family":"Jones"}],
        "deceasedBoolean":false,"birthDate":"1970-06",
        "extension":[{"url":"u1","valueCode":"F"}],
        "managingOrganization":{"reference":"Organization/o1"},
        "multipleBirthInteger":2,"gender":"female"}"#;

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
            (
                "multipleBirth.ofType(integer) * %c",
                serde_json::json!([3.0]),
            ),
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
            ("0.1 + 0.2 = 0.3", serde_json::json!([true])),
            ("(1.8 - 1.2).toString()", serde_json::json!(["0.6"])),
            ("1.0.toString()", serde_json::json!(["1.0"])),
            ("@2018-03 < @2018-03-01", serde_json::json!([])),
            (
                "@2012-04-15T15:00:00+02:00 = @2012-04-15T16:00:00+03:00",
                serde_json::json!([true]),
            ),
            ("1.is(Decimal)", serde_json::json!([false])),
            ("gender.as(string)", serde_json::json!([])),
            ("gender.is(string)", serde_json::json!([true])),
            ("1.587.lowBoundary(2)", serde_json::json!([1.58])),
            ("@2015.is(Date)", serde_json::json!([true])),
            ("iif('x', 1, 2)", serde_json::Value::Null),
            // The same text whether or not the expression types its nodes.
            ("birthDate.substring(0, 4)", serde_json::json!(["1970"])),
            (
                "birthDate.substring(0, 4) = '1970'",
                serde_json::json!([true]),
            ),
            ("birthDate < @1971", serde_json::json!([true])),
            ("birthDate = '1970-06'", serde_json::Value::Null),
            ("name.as(HumanName)", serde_json::Value::Null),
            ("gender.ofType(string1)", serde_json::Value::Null),
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

    proptest::proptest! {
        /// Untyped evaluation (what views use for expressions that do not need node types)
        /// gives the same values as typed evaluation.
        #[test]
        fn typed_and_untyped_evaluation_agree(
            path in proptest::collection::vec(proptest::sample::select(vec![
                "name", "given", "family", "use", "extension", "url", "value", "birthDate",
                "managingOrganization", "reference", "active", "deceased", "multipleBirth",
                "id", "contact", "telecom",
            ]), 1..4),
            tail in proptest::sample::select(vec![
                "", ".first()", ".last()", ".count()", ".exists()", ".empty()", ".tail()",
                ".take(1)", ".skip(1)", ".hasValue()", ".join(',')", ".toString()",
                ".substring(0, 3)", ".length()", ".upper()", ".where($this.exists())",
                ".select($this)", ".children().count()", " | {}",
                ".value.ofType(code)", ".ofType(string)", ".extension('u1')",
            ]),
        ) {
            let expr = format!("{}{tail}", path.join("."));
            let e = crate::parser::parse(&expr, &|_: &str| None).unwrap();
            let r = parse(PT).unwrap();
            let consts: Vec<(Json<'static>, String)> = Vec::new();
            let run = |typed: bool| {
                let env = Env {
                    resource: &r,
                    consts: &consts,
                    row_index: 0,
                    index: 0,
                    total: None,
                    typed,
                };
                eval(&env, &e, &[root(&r)]).map(|v| {
                    // The values as a view writes them (a date's text, not its `@` literal).
                    v.iter()
                        .map(|i| to_string(i).unwrap_or_else(|| describe_item(i).1))
                        .collect::<Vec<_>>()
                })
            };
            if !needs_types(&e) {
                proptest::prop_assert_eq!(run(true), run(false), "{}", expr);
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
