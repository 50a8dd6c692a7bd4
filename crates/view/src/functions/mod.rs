//! FHIRPath functions: filtering and projection, existence, subsetting, combining,
//! conversions, strings, math, type functions, boundaries and the SQL on FHIR key functions.

use std::borrow::Cow;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::ast::{Expr, Func};
use crate::eval::{
    Coll, Env, EvalResult, Item, Primitive, eval, fhir_type, has_type, item_eq, parse_temporal,
    quantity_of, system_type, to_bool, to_strict_bool, to_string,
};
use crate::json::Json;

mod boundary;
mod convert;

use boundary::{boundary, digits_of};
use convert::{convert, decode, encode, unescape_json};

/// Applies `f` to the collection `b`; `input` is the focus the arguments are evaluated on.
pub(crate) fn call<'a>(
    env: &Env<'a, '_>,
    f: &'a Func,
    args: &'a [Expr],
    b: Coll<'a>,
    input: &[Item<'a>],
) -> EvalResult<Coll<'a>> {
    let arg = |i: usize| -> EvalResult<Coll<'a>> { eval(env, &args[i], input) };
    let int_arg = |i: usize| -> EvalResult<Option<i64>> {
        match arg(i)?.as_slice() {
            [] => Ok(None),
            [x] => match x.prim() {
                Primitive::Int(n) => Ok(Some(n)),
                _ => Err("expected an integer argument".into()),
            },
            _ => Err("expected a single integer argument".into()),
        }
    };
    let str_arg = |i: usize| -> EvalResult<Option<String>> {
        match arg(i)?.as_slice() {
            [] => Ok(None),
            [x] => x
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| "expected a string argument".into()),
            _ => Err("expected a single string argument".into()),
        }
    };
    let one = |x: Item<'a>| vec![x];
    let single = |b: &Coll<'a>, what: &str| -> EvalResult<Option<Item<'a>>> {
        match b.as_slice() {
            [] => Ok(None),
            [x] => Ok(Some(x.clone())),
            _ => Err(format!("{what} needs a single item, got {}", b.len())),
        }
    };
    // The single string of the input (string functions); empty input gives `None`.
    let input_str = |b: &Coll<'a>| -> EvalResult<Option<String>> {
        match b.as_slice() {
            [] => Ok(None),
            [x] => match x.prim() {
                // A FHIR date/dateTime/time node is text too (and must read the same whether
                // or not the expression types its nodes).
                Primitive::Str(s) | Primitive::Temporal(s, _) => Ok(Some(s.to_string())),
                _ => Err("a string function needs a string".into()),
            },
            _ => Err(format!(
                "a string function needs a single string, got {} items",
                b.len()
            )),
        }
    };
    let str_item = |s: String| Item::Str(Cow::Owned(s), None);
    Ok(match f {
        Func::Where => {
            let mut out = Vec::new();
            for (i, it) in b.into_iter().enumerate() {
                let e = Env {
                    index: i as i64,
                    ..*env
                };
                let r = eval(&e, &args[0], std::slice::from_ref(&it))?;
                // Singleton evaluation: one non-boolean item counts as true.
                if to_bool(&r)? == Some(true) {
                    out.push(it);
                }
            }
            out
        }
        Func::Select => {
            let mut out = Vec::new();
            for (i, it) in b.iter().enumerate() {
                let e = Env {
                    index: i as i64,
                    ..*env
                };
                out.extend(eval(&e, &args[0], std::slice::from_ref(it))?);
            }
            out
        }
        Func::Repeat => {
            let mut out: Coll<'a> = Vec::new();
            let mut queue = b;
            while !queue.is_empty() {
                let mut next = Vec::new();
                for it in &queue {
                    for x in eval(env, &args[0], std::slice::from_ref(it))? {
                        if !out.iter().any(|y| item_eq(&x, y) == Some(true)) {
                            out.push(x.clone());
                            next.push(x);
                        }
                    }
                }
                queue = next;
            }
            out
        }
        Func::Exists | Func::All => {
            if args.is_empty() {
                one(Item::Bool(!b.is_empty()))
            } else {
                let all = matches!(f, Func::All);
                let mut res = all;
                for (i, it) in b.iter().enumerate() {
                    let e = Env {
                        index: i as i64,
                        ..*env
                    };
                    let v = to_bool(&eval(&e, &args[0], std::slice::from_ref(it))?)? == Some(true);
                    if v != all {
                        res = !all;
                        break;
                    }
                }
                one(Item::Bool(res))
            }
        }
        Func::Empty => one(Item::Bool(b.is_empty())),
        Func::First => b.into_iter().take(1).collect(),
        Func::Last => b.into_iter().last().into_iter().collect(),
        Func::Tail => b.into_iter().skip(1).collect(),
        Func::Skip => {
            let n = int_arg(0)?.unwrap_or(0).max(0) as usize;
            b.into_iter().skip(n).collect()
        }
        Func::Take => {
            let n = int_arg(0)?.unwrap_or(0).max(0) as usize;
            b.into_iter().take(n).collect()
        }
        Func::Single => match b.len() {
            0 | 1 => b,
            n => return Err(format!("single() on a collection of {n} items")),
        },
        Func::Count => one(Item::Int(b.len() as i64)),
        Func::Distinct => distinct(b),
        Func::IsDistinct => {
            let n = b.len();
            one(Item::Bool(distinct(b).len() == n))
        }
        Func::Not => match b.as_slice() {
            [] => Vec::new(),
            [x] => match x.prim() {
                Primitive::Bool(v) => one(Item::Bool(!v)),
                // Singleton evaluation: one item that is not a boolean counts as true.
                _ => one(Item::Bool(false)),
            },
            _ => {
                return Err(format!(
                    "not() needs a single boolean, got {} items",
                    b.len()
                ));
            }
        },
        Func::HasValue => one(Item::Bool(matches!(
            b.as_slice(),
            [x] if !matches!(x.prim(), Primitive::Obj(_) | Primitive::Null) && matches!(x, Item::Node(..))
        ))),
        Func::OfType(t) => {
            let mut out = Vec::new();
            for x in b {
                if has_type(&x, t, true)? {
                    out.push(x);
                }
            }
            out
        }
        Func::As(t) => match b.as_slice() {
            [] => Vec::new(),
            [x] => {
                if has_type(x, t, true)? {
                    b
                } else {
                    Vec::new()
                }
            }
            _ => return Err(format!("'as' needs a single item, got {}", b.len())),
        },
        Func::Is(t) => match b.as_slice() {
            [] => Vec::new(),
            [x] => one(Item::Bool(has_type(x, t, false)?)),
            _ => return Err("'is' needs a single value".into()),
        },
        Func::Type => {
            let mut out = Vec::new();
            for x in &b {
                out.push(match system_type(x) {
                    Some(st) => Item::TypeInfo("System", Cow::Borrowed(sys_name(st))),
                    None => match x {
                        Item::TypeInfo(..) => Item::TypeInfo("System", Cow::Borrowed("Object")),
                        _ => {
                            let t = fhir_type(x)?;
                            match t.strip_prefix("System.") {
                                Some(s) => Item::TypeInfo("System", Cow::Borrowed(s)),
                                None => Item::TypeInfo("FHIR", Cow::Borrowed(t)),
                            }
                        }
                    },
                });
            }
            out
        }
        Func::Extension => {
            let Some(url) = str_arg(0)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for it in &b {
                let holder = match it {
                    Item::Node(n @ Json::Object(_), _, _) => Some(*n),
                    Item::Node(_, _, ext) => *ext,
                    _ => None,
                };
                if let Some(node) = holder
                    && let Some(Json::Array(exts)) = node.get("extension")
                {
                    for e in exts {
                        if e.get("url").and_then(Json::as_str) == Some(url.as_str()) {
                            out.push(Item::Node(e, Some("Extension"), None));
                        }
                    }
                }
            }
            out
        }
        Func::Join => {
            let sep = if args.is_empty() {
                String::new()
            } else {
                str_arg(0)?.unwrap_or_default()
            };
            if b.is_empty() {
                Vec::new()
            } else {
                let parts: Vec<String> = b.iter().filter_map(to_string).collect();
                one(str_item(parts.join(&sep)))
            }
        }
        Func::GetResourceKey => b
            .iter()
            .filter_map(|it| match it {
                Item::Node(n, _, _) => n.get("id").map(|id| Item::Node(id, Some("id"), None)),
                _ => None,
            })
            .collect(),
        Func::GetReferenceKey(ty) => b
            .iter()
            .filter_map(|it| {
                let Item::Node(n, _, _) = it else { return None };
                let Some(Json::String(r)) = n.get("reference") else {
                    return None;
                };
                let (rtype, id) = reference_parts(r)?;
                if ty.as_deref().is_some_and(|t| t != rtype) {
                    return None;
                }
                // Borrow the id from the resource when the reference text is borrowed.
                Some(Item::Str(
                    match r {
                        Cow::Borrowed(b) => {
                            let off = id.as_ptr() as usize - r.as_ptr() as usize;
                            Cow::Borrowed(&b[off..off + id.len()])
                        }
                        Cow::Owned(_) => Cow::Owned(id.to_string()),
                    },
                    None,
                ))
            })
            .collect(),
        Func::LowBoundary | Func::HighBoundary => {
            let high = matches!(f, Func::HighBoundary);
            let prec = if args.is_empty() { None } else { int_arg(0)? };
            let mut out = Vec::new();
            for x in &b {
                if let Some(v) = boundary(x, high, prec)? {
                    out.push(v);
                }
            }
            out
        }
        Func::Precision => match single(&b, "precision()")? {
            None => Vec::new(),
            Some(x) => match x.prim() {
                Primitive::Dec(d) => one(Item::Int(i64::from(d.scale()))),
                Primitive::Int(_) => one(Item::Int(0)),
                Primitive::Temporal(s, k) => {
                    let t = parse_temporal(s, k).ok_or("invalid date/time")?;
                    one(Item::Int(digits_of(&t)))
                }
                _ => return Err("precision() needs a number or a date/time".into()),
            },
        },
        Func::Iif => {
            if b.len() > 1 {
                return Err(format!(
                    "iif() needs a single item as its focus, got {}",
                    b.len()
                ));
            }
            let c = to_strict_bool(&eval(env, &args[0], &b)?, "the iif() criterion")?;
            if c == Some(true) {
                eval(env, &args[1], &b)?
            } else if args.len() > 2 {
                eval(env, &args[2], &b)?
            } else {
                Vec::new()
            }
        }
        Func::ToString => match single(&b, "toString()")? {
            None => Vec::new(),
            Some(x) => to_string(&x).map(str_item).into_iter().collect(),
        },
        Func::Convert(c, test) => match single(&b, "a conversion")? {
            None => Vec::new(),
            Some(x) => {
                let unit = if args.is_empty() { None } else { str_arg(0)? };
                let r = convert(&x, *c, unit.as_deref());
                if *test {
                    one(Item::Bool(r.is_some()))
                } else {
                    r.into_iter().collect()
                }
            }
        },
        Func::StartsWith | Func::EndsWith | Func::ContainsStr => {
            let Some(s) = input_str(&b)? else {
                return Ok(Vec::new());
            };
            let Some(a) = str_arg(0)? else {
                return Ok(Vec::new());
            };
            one(Item::Bool(match f {
                Func::StartsWith => s.starts_with(&a),
                Func::EndsWith => s.ends_with(&a),
                _ => s.contains(&a),
            }))
        }
        Func::Lower | Func::Upper | Func::Length | Func::Trim | Func::ToChars => {
            let Some(s) = input_str(&b)? else {
                return Ok(Vec::new());
            };
            match f {
                Func::Lower => one(str_item(s.to_lowercase())),
                Func::Upper => one(str_item(s.to_uppercase())),
                Func::Trim => one(str_item(s.trim().to_string())),
                Func::ToChars => s.chars().map(|c| str_item(c.to_string())).collect(),
                _ => one(Item::Int(s.chars().count() as i64)),
            }
        }
        Func::IndexOf | Func::LastIndexOf => {
            let Some(s) = input_str(&b)? else {
                return Ok(Vec::new());
            };
            let Some(a) = str_arg(0)? else {
                return Ok(Vec::new());
            };
            let pos = if matches!(f, Func::IndexOf) {
                s.find(&a)
            } else {
                s.rfind(&a)
            };
            one(Item::Int(pos.map_or(-1, |p| s[..p].chars().count() as i64)))
        }
        Func::Substring => {
            let Some(s) = input_str(&b)? else {
                return Ok(Vec::new());
            };
            let Some(start) = int_arg(0)? else {
                return Ok(Vec::new());
            };
            let chars: Vec<char> = s.chars().collect();
            if start < 0 || start as usize >= chars.len() {
                return Ok(Vec::new());
            }
            let len = if args.len() > 1 {
                match int_arg(1)? {
                    Some(l) => l.max(0) as usize,
                    None => chars.len(),
                }
            } else {
                chars.len()
            };
            let end = (start as usize).saturating_add(len).min(chars.len());
            one(str_item(chars[start as usize..end].iter().collect()))
        }
        Func::Matches | Func::MatchesFull | Func::ReplaceMatches => {
            let Some(s) = input_str(&b)? else {
                return Ok(Vec::new());
            };
            let Some(pat) = str_arg(0)? else {
                return Ok(Vec::new());
            };
            let full = matches!(f, Func::MatchesFull);
            let src = if full {
                format!("^(?:{pat})$")
            } else {
                pat.clone()
            };
            let re = regex::RegexBuilder::new(&src)
                .dot_matches_new_line(true)
                .build()
                .map_err(|e| format!("unsupported regular expression '{pat}': {e}"))?;
            if matches!(f, Func::ReplaceMatches) {
                let Some(rep) = str_arg(1)? else {
                    return Ok(Vec::new());
                };
                if pat.is_empty() {
                    // An empty pattern matches nowhere worth replacing: the input unchanged.
                    return Ok(one(str_item(s)));
                }
                one(str_item(re.replace_all(&s, rep.as_str()).into_owned()))
            } else {
                one(Item::Bool(re.is_match(&s)))
            }
        }
        Func::Replace => {
            let Some(s) = input_str(&b)? else {
                return Ok(Vec::new());
            };
            let (Some(pat), Some(rep)) = (str_arg(0)?, str_arg(1)?) else {
                return Ok(Vec::new());
            };
            if pat.is_empty() {
                // Insert the replacement around every character.
                let mut out = rep.clone();
                for c in s.chars() {
                    out.push(c);
                    out.push_str(&rep);
                }
                one(str_item(out))
            } else {
                one(str_item(s.replace(&pat, &rep)))
            }
        }
        Func::Split => {
            let Some(s) = input_str(&b)? else {
                return Ok(Vec::new());
            };
            let Some(sep) = str_arg(0)? else {
                return Ok(Vec::new());
            };
            if sep.is_empty() {
                s.chars().map(|c| str_item(c.to_string())).collect()
            } else {
                s.split(sep.as_str())
                    .map(|p| str_item(p.to_string()))
                    .collect()
            }
        }
        Func::Encode | Func::Decode => {
            let Some(s) = input_str(&b)? else {
                return Ok(Vec::new());
            };
            let Some(fmt) = str_arg(0)? else {
                return Ok(Vec::new());
            };
            let r = if matches!(f, Func::Encode) {
                encode(&s, &fmt)?
            } else {
                decode(&s, &fmt)?
            };
            r.map(str_item).into_iter().collect()
        }
        Func::Escape | Func::Unescape => {
            let Some(s) = input_str(&b)? else {
                return Ok(Vec::new());
            };
            let Some(fmt) = str_arg(0)? else {
                return Ok(Vec::new());
            };
            let r = match (matches!(f, Func::Escape), fmt.as_str()) {
                (true, "html") => s
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;")
                    .replace('\'', "&#39;"),
                (false, "html") => s
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&#39;", "'")
                    .replace("&amp;", "&"),
                (true, "json") => {
                    let q = serde_json::to_string(&s).map_err(|e| e.to_string())?;
                    q[1..q.len() - 1].to_string()
                }
                (false, "json") => unescape_json(&s)?,
                (_, other) => return Err(format!("unsupported escape format '{other}'")),
            };
            one(str_item(r))
        }
        Func::Union | Func::Combine => {
            let other = arg(0)?;
            let mut all = b;
            all.extend(other);
            if matches!(f, Func::Union) {
                distinct(all)
            } else {
                all
            }
        }
        Func::Intersect => {
            let other = arg(0)?;
            distinct(
                b.into_iter()
                    .filter(|x| other.iter().any(|y| item_eq(x, y) == Some(true)))
                    .collect(),
            )
        }
        Func::Exclude => {
            let other = arg(0)?;
            b.into_iter()
                .filter(|x| !other.iter().any(|y| item_eq(x, y) == Some(true)))
                .collect()
        }
        Func::SubsetOf | Func::SupersetOf => {
            let other = arg(0)?;
            let (small, big) = if matches!(f, Func::SubsetOf) {
                (&b, &other)
            } else {
                (&other, &b)
            };
            one(Item::Bool(
                small
                    .iter()
                    .all(|x| big.iter().any(|y| item_eq(x, y) == Some(true))),
            ))
        }
        Func::Children => {
            let mut out = Vec::new();
            for it in &b {
                children(&mut out, it, env.typed);
            }
            out
        }
        Func::Descendants => {
            let mut out = Vec::new();
            let mut queue = b;
            while !queue.is_empty() {
                let mut next = Vec::new();
                for it in &queue {
                    children(&mut next, it, env.typed);
                }
                out.extend(next.iter().cloned());
                queue = next;
            }
            out
        }
        Func::Sort => {
            // Keys per item: each argument (a leading `-` sorts descending).
            let mut keyed = Vec::with_capacity(b.len());
            for (i, it) in b.into_iter().enumerate() {
                let mut keys = Vec::with_capacity(args.len().max(1));
                if args.is_empty() {
                    keys.push((vec![it.clone()], false));
                }
                for a in args {
                    let (expr, desc) = match a {
                        Expr::Neg(x) => (&**x, true),
                        x => (x, false),
                    };
                    let e = Env {
                        index: i as i64,
                        ..*env
                    };
                    keys.push((eval(&e, expr, std::slice::from_ref(&it))?, desc));
                }
                keyed.push((keys, it));
            }
            let mut err = None;
            keyed.sort_by(|(ka, _), (kb, _)| {
                for ((a, desc), (b, _)) in ka.iter().zip(kb) {
                    // An empty key sorts first, in either direction.
                    let o = match (a.as_slice(), b.as_slice()) {
                        ([], []) => std::cmp::Ordering::Equal,
                        ([], _) => return std::cmp::Ordering::Less,
                        (_, []) => return std::cmp::Ordering::Greater,
                        ([x], [y]) => match crate::eval::compare(x, y) {
                            Ok(Some(o)) => o,
                            Ok(None) => std::cmp::Ordering::Equal,
                            Err(e) => {
                                err.get_or_insert(e);
                                std::cmp::Ordering::Equal
                            }
                        },
                        _ => {
                            err.get_or_insert("sort() keys must be single values".to_string());
                            std::cmp::Ordering::Equal
                        }
                    };
                    let o = if *desc { o.reverse() } else { o };
                    if o != std::cmp::Ordering::Equal {
                        return o;
                    }
                }
                std::cmp::Ordering::Equal
            });
            if let Some(e) = err {
                return Err(e);
            }
            keyed.into_iter().map(|(_, it)| it).collect()
        }
        Func::Comparable => {
            let Some(x) = single(&b, "comparable()")? else {
                return Ok(Vec::new());
            };
            let y = arg(0)?;
            let Some(y) = single(&y, "comparable()'s argument")? else {
                return Ok(Vec::new());
            };
            match (quantity_of(&x), quantity_of(&y)) {
                (Some(a), Some(b)) => one(Item::Bool(crate::quantity::comparable(&a.1, &b.1))),
                _ => return Err("comparable() needs quantities".into()),
            }
        }
        Func::ConformsTo => {
            let Some(url) = str_arg(0)? else {
                return Ok(Vec::new());
            };
            let Some(ty) = url.strip_prefix("http://hl7.org/fhir/StructureDefinition/") else {
                return Err(format!(
                    "conformsTo('{url}'): only core FHIR types can be checked"
                ));
            };
            if !crate::model::is_type(ty) {
                return Err(format!("conformsTo('{url}'): not a core FHIR type"));
            }
            let mut out = Vec::new();
            for x in &b {
                out.push(Item::Bool(crate::model::is_subtype(fhir_type(x)?, ty)));
            }
            out
        }
        Func::Aggregate => {
            let mut total = if args.len() > 1 { arg(1)? } else { Vec::new() };
            for (i, it) in b.iter().enumerate() {
                let e = Env {
                    index: i as i64,
                    total: Some(&total),
                    ..*env
                };
                let next = eval(&e, &args[0], std::slice::from_ref(it))?;
                total = next;
            }
            total
        }
        Func::Abs
        | Func::Ceiling
        | Func::Floor
        | Func::Truncate
        | Func::Sqrt
        | Func::Exp
        | Func::Ln => {
            let Some(x) = single(&b, "a math function")? else {
                return Ok(Vec::new());
            };
            math1(f, &x)?.into_iter().collect()
        }
        Func::Round => {
            let Some(x) = single(&b, "round()")? else {
                return Ok(Vec::new());
            };
            let p = if args.is_empty() {
                Some(0)
            } else {
                int_arg(0)?
            };
            let Some(p) = p else { return Ok(Vec::new()) };
            if p < 0 {
                return Err("round() precision must be >= 0".into());
            }
            let d = match x.prim() {
                Primitive::Int(i) => Decimal::from(i),
                Primitive::Dec(d) => d,
                _ => return Err("round() needs a number".into()),
            };
            one(Item::Dec(d.round_dp_with_strategy(
                p as u32,
                RoundingStrategy::MidpointAwayFromZero,
            )))
        }
        Func::Log | Func::Power => {
            let Some(x) = single(&b, "a math function")? else {
                return Ok(Vec::new());
            };
            let y = arg(0)?;
            let Some(y) = single(&y, "a math function's argument")? else {
                return Ok(Vec::new());
            };
            math2(f, &x, &y)?.into_iter().collect()
        }
        Func::Trace => b,
        Func::Today | Func::Now | Func::TimeOfDay => {
            let (text, tag) = clock(f);
            one(Item::Str(Cow::Owned(text), Some(tag)))
        }
        Func::AllTrue | Func::AnyTrue | Func::AllFalse | Func::AnyFalse => {
            let mut bools = Vec::with_capacity(b.len());
            for x in &b {
                match x.prim() {
                    Primitive::Bool(v) => bools.push(v),
                    _ => {
                        return Err(
                            "allTrue()/anyTrue()/allFalse()/anyFalse() need booleans".into()
                        );
                    }
                }
            }
            one(Item::Bool(match f {
                Func::AllTrue => bools.iter().all(|v| *v),
                Func::AnyTrue => bools.iter().any(|v| *v),
                Func::AllFalse => bools.iter().all(|v| !*v),
                _ => bools.iter().any(|v| !*v),
            }))
        }
    })
}

/// `today()`, `now()`, `timeOfDay()` in UTC (the offset `Z`).
fn clock(f: &Func) -> (String, &'static str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = now.as_millis() as i64;
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = crate::temporal::civil_from_days(days);
    let (h, mi, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    match f {
        Func::Today => (format!("{y:04}-{m:02}-{d:02}"), "date"),
        Func::TimeOfDay => (format!("{h:02}:{mi:02}:{s:02}.{milli:03}"), "time"),
        _ => (
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z"),
            "dateTime",
        ),
    }
}

fn sys_name(t: crate::ast::SysType) -> &'static str {
    use crate::ast::SysType::*;
    match t {
        Boolean => "Boolean",
        Integer => "Integer",
        Decimal => "Decimal",
        String => "String",
        Date => "Date",
        DateTime => "DateTime",
        Time => "Time",
        Quantity => "Quantity",
        Other => "Object",
    }
}

fn distinct(b: Coll<'_>) -> Coll<'_> {
    let mut out: Coll<'_> = Vec::with_capacity(b.len());
    for x in b {
        if !out.iter().any(|y| item_eq(&x, y) == Some(true)) {
            out.push(x);
        }
    }
    out
}

/// The child nodes of an item (every member's values, typed from the model).
fn children<'a>(out: &mut Coll<'a>, it: &Item<'a>, typed: bool) {
    if let Item::Node(Json::Object(m), _, _) = it {
        for (k, _) in m {
            if k.starts_with('_') || k == "resourceType" {
                continue;
            }
            crate::eval::member(out, it, k, typed);
        }
    }
}

fn math1<'a>(f: &Func, x: &Item<'a>) -> EvalResult<Option<Item<'a>>> {
    let (d, int) = match x.prim() {
        Primitive::Int(i) => (Decimal::from(i), true),
        Primitive::Dec(d) => (d, false),
        Primitive::Qty(v, u) if matches!(f, Func::Abs) => {
            return Ok(Some(Item::Qty(v.abs(), Cow::Owned(u.to_string()))));
        }
        _ => return Err("a math function needs a number".into()),
    };
    let to_int = |d: Decimal| i64::try_from(d).map_err(|_| "integer overflow".to_string());
    Ok(match f {
        Func::Abs if int => Some(Item::Int(to_int(d.abs())?)),
        Func::Abs => Some(Item::Dec(d.abs())),
        Func::Ceiling => Some(Item::Int(to_int(d.ceil())?)),
        Func::Floor => Some(Item::Int(to_int(d.floor())?)),
        Func::Truncate => Some(Item::Int(to_int(d.trunc())?)),
        _ => {
            let v = d.to_f64().ok_or("number out of range")?;
            let r = match f {
                Func::Sqrt => v.sqrt(),
                Func::Exp => v.exp(),
                _ => v.ln(),
            };
            float_result(r)
        }
    })
}

fn math2<'a>(f: &Func, x: &Item<'a>, y: &Item<'a>) -> EvalResult<Option<Item<'a>>> {
    let n = |i: &Item<'_>| match i.prim() {
        Primitive::Int(v) => Ok((Decimal::from(v), true)),
        Primitive::Dec(d) => Ok((d, false)),
        _ => Err("a math function needs numbers".to_string()),
    };
    let ((a, ai), (b, bi)) = (n(x)?, n(y)?);
    if matches!(f, Func::Power) && ai && bi && b >= Decimal::ZERO {
        let (Ok(base), Ok(exp)) = (i64::try_from(a), u32::try_from(b)) else {
            return Err("power() out of range".into());
        };
        return Ok(base.checked_pow(exp).map(Item::Int));
    }
    let (fa, fb) = (
        a.to_f64().ok_or("number out of range")?,
        b.to_f64().ok_or("number out of range")?,
    );
    let r = match f {
        Func::Log => fa.ln() / fb.ln(),
        _ => fa.powf(fb),
    };
    Ok(float_result(r))
}

/// A transcendental result (computed in binary floating point) as a decimal of 15
/// significant digits, or empty when it is not a real number.
fn float_result<'a>(r: f64) -> Option<Item<'a>> {
    if !r.is_finite() {
        return None;
    }
    let s = format!("{:.*e}", 14, r);
    Decimal::from_scientific(&s)
        .ok()
        .map(|d| Item::Dec(d.normalize()))
}

/// `Type/id` from a reference (absolute URLs and `_history` suffixes allowed).
fn reference_parts(r: &str) -> Option<(&str, &str)> {
    let r = if r.contains('_') {
        r.split("/_history/").next()?
    } else {
        r
    };
    let mut it = r.rsplit('/');
    let id = it.next()?;
    let ty = it.next()?;
    (!id.is_empty() && ty.starts_with(|c: char| c.is_ascii_uppercase())).then_some((ty, id))
}
