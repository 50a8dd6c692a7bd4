//! FHIRPath functions: `where`, `exists`, `first`, `extension`, `join`, the SQL on FHIR key
//! functions, `lowBoundary`/`highBoundary` and a few string helpers.

use std::borrow::Cow;

use crate::ast::{Expr, Func};
use crate::eval::{
    Coll, Env, EvalResult, Item, Prim, eval, format_dec, is_type, item_eq, to_bool, to_string,
};
use crate::json::Json;

/// Applies `f` to the collection `b`; `input` is the focus the arguments are evaluated on.
pub(crate) fn call<'a>(
    env: &Env<'a>,
    f: &'a Func,
    args: &'a [Expr],
    b: Coll<'a>,
    input: &[Item<'a>],
) -> EvalResult<Coll<'a>> {
    let arg = |i: usize| -> EvalResult<Coll<'a>> { eval(env, &args[i], input) };
    let int_arg = |i: usize| -> EvalResult<usize> {
        match arg(i)?.as_slice() {
            [x] => match x.prim() {
                Prim::Int(n) => Ok(n.max(0) as usize),
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
    Ok(match f {
        Func::Where => {
            let mut out = Vec::new();
            for (i, it) in b.into_iter().enumerate() {
                let e = Env {
                    index: i as i64,
                    ..*env
                };
                if to_bool(&eval(&e, &args[0], std::slice::from_ref(&it))?)? == Some(true) {
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
            let n = int_arg(0)?;
            b.into_iter().skip(n).collect()
        }
        Func::Take => {
            let n = int_arg(0)?;
            b.into_iter().take(n).collect()
        }
        Func::Single => match b.len() {
            0 | 1 => b,
            n => return Err(format!("single() on a collection of {n} items")),
        },
        Func::Count => one(Item::Int(b.len() as i64)),
        Func::Distinct => {
            let mut out: Coll<'a> = Vec::new();
            for x in b {
                if !out.iter().any(|y| item_eq(&x, y)) {
                    out.push(x);
                }
            }
            out
        }
        Func::Not => match to_bool(&b)? {
            None => Vec::new(),
            Some(v) => one(Item::Bool(!v)),
        },
        Func::HasValue => one(Item::Bool(matches!(
            b.as_slice(),
            [x] if !matches!(x.prim(), Prim::Obj(_) | Prim::Null)
        ))),
        Func::OfType(t) => b.into_iter().filter(|x| is_type(x, t)).collect(),
        Func::Is(t) => match b.as_slice() {
            [] => Vec::new(),
            [x] => one(Item::Bool(is_type(x, t))),
            _ => return Err("'is' needs a single value".into()),
        },
        Func::Extension => {
            let Some(url) = str_arg(0)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for it in &b {
                if let Item::Node(node, _) = it
                    && let Some(Json::Array(exts)) = node.get("extension")
                {
                    for e in exts {
                        if e.get("url").and_then(Json::as_str) == Some(url.as_str()) {
                            out.push(Item::Node(e, None));
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
                one(Item::Str(Cow::Owned(parts.join(&sep)), None))
            }
        }
        Func::GetResourceKey => b
            .iter()
            .filter_map(|it| match it {
                Item::Node(n, _) => n.get("id").map(|id| Item::Node(id, None)),
                _ => None,
            })
            .collect(),
        Func::GetReferenceKey(ty) => b
            .iter()
            .filter_map(|it| {
                let Item::Node(n, _) = it else { return None };
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
            let prec = if args.is_empty() {
                None
            } else {
                Some(int_arg(0)? as u32)
            };
            b.iter().filter_map(|x| boundary(x, high, prec)).collect()
        }
        Func::Iif => {
            let c = to_bool(&eval(env, &args[0], &b)?)?;
            if c == Some(true) {
                eval(env, &args[1], &b)?
            } else if args.len() > 2 {
                eval(env, &args[2], &b)?
            } else {
                Vec::new()
            }
        }
        Func::ToString => b
            .iter()
            .filter_map(|x| to_string(x).map(|s| Item::Str(Cow::Owned(s), None)))
            .collect(),
        Func::StartsWith | Func::EndsWith | Func::ContainsStr => {
            let Some(a) = str_arg(0)? else {
                return Ok(Vec::new());
            };
            match b.as_slice() {
                [] => Vec::new(),
                [x] => {
                    let s = x.as_str().ok_or("string function on a non-string")?;
                    one(Item::Bool(match f {
                        Func::StartsWith => s.starts_with(&a),
                        Func::EndsWith => s.ends_with(&a),
                        _ => s.contains(&a),
                    }))
                }
                _ => return Err("string function on several values".into()),
            }
        }
        Func::Lower | Func::Upper | Func::Length => match b.as_slice() {
            [] => Vec::new(),
            [x] => {
                let s = x.as_str().ok_or("string function on a non-string")?;
                one(match f {
                    Func::Lower => Item::Str(Cow::Owned(s.to_lowercase()), None),
                    Func::Upper => Item::Str(Cow::Owned(s.to_uppercase()), None),
                    _ => Item::Int(s.chars().count() as i64),
                })
            }
            _ => return Err("string function on several values".into()),
        },
        Func::AllTrue => one(Item::Bool(
            b.iter().all(|x| matches!(x.prim(), Prim::Bool(true))),
        )),
        Func::AnyTrue => one(Item::Bool(
            b.iter().any(|x| matches!(x.prim(), Prim::Bool(true))),
        )),
    })
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

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Low/high boundary of a decimal, date, dateTime or time.
fn boundary<'a>(x: &Item<'a>, high: bool, prec: Option<u32>) -> Option<Item<'a>> {
    match x.prim() {
        Prim::Int(i) => {
            let half = 0.5;
            let v = i as f64 + if high { half } else { -half };
            Some(Item::Dec(v, prec.unwrap_or(1).max(1)))
        }
        Prim::Dec(d, s) => {
            let half = 0.5 * 10f64.powi(-(s as i32));
            let v = if high { d + half } else { d - half };
            let out_scale = prec.unwrap_or(s + 1);
            let v: f64 = format_dec(v, out_scale).parse().ok()?;
            Some(Item::Dec(v, out_scale))
        }
        Prim::Str(s) => {
            let ty = x.ty().unwrap_or_else(|| {
                if s.contains('T') {
                    "dateTime"
                } else if s.len() >= 5 && s.as_bytes()[2] == b':' {
                    "time"
                } else {
                    "date"
                }
            });
            let out = match ty {
                "time" => time_boundary(s, high)?,
                "dateTime" | "instant" => datetime_boundary(s, high)?,
                "date" => date_boundary(s, high)?,
                _ => return None,
            };
            Some(Item::Str(Cow::Owned(out), x.ty()))
        }
        _ => None,
    }
}

fn date_boundary(s: &str, high: bool) -> Option<String> {
    let parts: Vec<&str> = s.split('-').collect();
    let y: i32 = parts.first()?.parse().ok()?;
    let m: u32 = match parts.get(1) {
        Some(m) => m.parse().ok()?,
        None => {
            if high {
                12
            } else {
                1
            }
        }
    };
    let d: u32 = match parts.get(2) {
        Some(d) => d.parse().ok()?,
        None => {
            if high {
                days_in_month(y, m)
            } else {
                1
            }
        }
    };
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

fn time_boundary(s: &str, high: bool) -> Option<String> {
    let mut parts = s.split(':');
    let h = parts.next()?;
    let m = parts.next().unwrap_or(if high { "59" } else { "00" });
    let (sec, frac) = match parts.next() {
        Some(sec) => match sec.split_once('.') {
            Some((s, f)) => (s.to_string(), f.to_string()),
            None => (sec.to_string(), String::new()),
        },
        None => ((if high { "59" } else { "00" }).to_string(), String::new()),
    };
    let mut frac = frac;
    while frac.len() < 3 {
        frac.push(if high { '9' } else { '0' });
    }
    Some(format!("{h}:{m}:{sec}.{frac}"))
}

fn datetime_boundary(s: &str, high: bool) -> Option<String> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let date = date_boundary(date, high)?;
    let (time, tz) = match time {
        None | Some("") => (time_boundary(if high { "23" } else { "00" }, high)?, None),
        Some(t) => {
            let split = t.find(['Z', '+', '-']);
            let (clock, tz) = match split {
                Some(i) => (&t[..i], Some(&t[i..])),
                None => (t, None),
            };
            (time_boundary(clock, high)?, tz)
        }
    };
    let tz = tz.unwrap_or(if high { "-12:00" } else { "+14:00" });
    Some(format!("{date}T{time}{tz}"))
}
