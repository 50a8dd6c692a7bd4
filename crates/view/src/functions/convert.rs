//! Conversions (`toX()`/`convertsToX()`), text encodings (`encode`/`decode`) and JSON
//! unescaping for the FHIRPath functions.

use std::borrow::Cow;
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::ast::Conv;
use crate::eval::{EvalResult, Item, Primitive, quantity_of, to_string};
use crate::temporal::{Kind, Temporal};

/// JSON string unescaping of `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\uXXXX`.
pub(super) fn unescape_json(s: &str) -> EvalResult<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('/') => out.push('/'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let h: String = it.by_ref().take(4).collect();
                let c = u32::from_str_radix(&h, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("unescape('json'): bad \\u escape '{h}'"))?;
                out.push(c);
            }
            other => {
                return Err(format!(
                    "unescape('json'): bad escape '\\{}'",
                    other.unwrap_or(' ')
                ));
            }
        }
    }
    Ok(out)
}

pub(super) fn encode(s: &str, fmt: &str) -> EvalResult<Option<String>> {
    use base64::Engine;
    Ok(Some(match fmt {
        "base64" => base64::engine::general_purpose::STANDARD.encode(s),
        "urlbase64" => base64::engine::general_purpose::URL_SAFE.encode(s),
        "hex" => s.bytes().map(|b| format!("{b:02x}")).collect(),
        other => return Err(format!("unsupported encoding '{other}'")),
    }))
}

pub(super) fn decode(s: &str, fmt: &str) -> EvalResult<Option<String>> {
    use base64::Engine;
    let bytes = match fmt {
        "base64" => base64::engine::general_purpose::STANDARD.decode(s).ok(),
        "urlbase64" => base64::engine::general_purpose::URL_SAFE.decode(s).ok(),
        "hex" => s
            .len()
            .is_multiple_of(2)
            .then(|| {
                (0..s.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()
            })
            .flatten(),
        other => return Err(format!("unsupported encoding '{other}'")),
    };
    let Some(bytes) = bytes else {
        return Err(format!("'{s}' is not valid {fmt}"));
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| format!("decoded {fmt} is not UTF-8 text"))
}

/// `toX()`: the converted value, or `None` when it does not convert.
pub(super) fn convert<'a>(x: &Item<'a>, c: Conv, unit: Option<&str>) -> Option<Item<'a>> {
    let p = x.prim();
    match c {
        Conv::Boolean => match p {
            Primitive::Bool(b) => Some(Item::Bool(b)),
            Primitive::Int(1) => Some(Item::Bool(true)),
            Primitive::Int(0) => Some(Item::Bool(false)),
            Primitive::Dec(d) if d == Decimal::ONE => Some(Item::Bool(true)),
            Primitive::Dec(d) if d.is_zero() => Some(Item::Bool(false)),
            Primitive::Str(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(Item::Bool(true)),
                "false" | "f" | "no" | "n" | "0" | "0.0" => Some(Item::Bool(false)),
                _ => None,
            },
            _ => None,
        },
        Conv::Integer => match p {
            Primitive::Int(i) => Some(Item::Int(i)),
            Primitive::Bool(b) => Some(Item::Int(i64::from(b))),
            Primitive::Str(s) => {
                let t = s.strip_prefix(['+', '-']).unwrap_or(s);
                (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse().ok().map(Item::Int))
                    .flatten()
            }
            _ => None,
        },
        Conv::Decimal => match p {
            Primitive::Int(i) => Some(Item::Dec(Decimal::from(i))),
            Primitive::Dec(d) => Some(Item::Dec(d)),
            Primitive::Bool(b) => Some(Item::Dec(if b { Decimal::ONE } else { Decimal::ZERO })),
            Primitive::Str(s) => parse_decimal_text(s).map(Item::Dec),
            _ => None,
        },
        Conv::String => to_string(x).map(|s| Item::Str(Cow::Owned(s), None)),
        Conv::Date | Conv::DateTime | Conv::Time => {
            let (text, kind) = match p {
                Primitive::Str(s) => (s, None),
                Primitive::Temporal(s, k) => (s, Some(k)),
                _ => return None,
            };
            let t = match kind {
                Some(Kind::Time) => Temporal::parse(&format!("T{text}"))?,
                _ if c == Conv::Time => Temporal::parse(&format!("T{text}"))?,
                _ => Temporal::parse(text)?,
            };
            let out = match (c, t.kind) {
                (Conv::Time, Kind::Time) => {
                    return Some(Item::Str(Cow::Owned(t.format()), Some("time")));
                }
                (Conv::Time, _) | (_, Kind::Time) => return None,
                (Conv::Date, _) => {
                    let mut d = t;
                    d.kind = Kind::Date;
                    d.prec = d.prec.min(3);
                    d.offset = None;
                    (d, "date")
                }
                (_, _) => {
                    let mut d = t;
                    d.kind = Kind::DateTime;
                    (d, "dateTime")
                }
            };
            Some(Item::Str(Cow::Owned(out.0.format()), Some(out.1)))
        }
        Conv::Quantity => {
            let q = match p {
                Primitive::Int(i) => Some((Decimal::from(i), "1".to_string())),
                Primitive::Dec(d) => Some((d, "1".to_string())),
                Primitive::Bool(b) => Some((
                    if b { Decimal::ONE } else { Decimal::ZERO },
                    "1".to_string(),
                )),
                Primitive::Str(s) => parse_quantity_text(s),
                _ => quantity_of(x).map(|(v, u)| (v, u.into_owned())),
            }?;
            match unit {
                None => Some(Item::Qty(q.0, Cow::Owned(q.1))),
                Some(u) => {
                    let (a, b) = crate::quantity::align((Decimal::ONE, u), (q.0, &q.1), false)?;
                    // b is q in base units; a is one target unit in base units.
                    Some(Item::Qty(
                        b.checked_div(a)?.normalize(),
                        Cow::Owned(u.to_string()),
                    ))
                }
            }
        }
    }
}

pub(super) fn parse_decimal_text(s: &str) -> Option<Decimal> {
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (i, f) = t.split_once('.').unwrap_or((t, ""));
    let ok = !i.is_empty()
        && i.bytes().all(|b| b.is_ascii_digit())
        && f.bytes().all(|b| b.is_ascii_digit())
        && !(t.contains('.') && f.is_empty());
    ok.then(|| Decimal::from_str(s).ok()).flatten()
}

/// `'4.5 \'mg\''`, `'1 day'`, `'3'` as a quantity.
pub(super) fn parse_quantity_text(s: &str) -> Option<(Decimal, String)> {
    let s = s.trim();
    let (num, unit) = match s.split_once(' ') {
        Some((n, u)) => (n, u.trim()),
        None => (s, ""),
    };
    let v = parse_decimal_text(num)?;
    let unit = if unit.is_empty() {
        "1".to_string()
    } else if let Some(u) = unit.strip_prefix('\'').and_then(|u| u.strip_suffix('\'')) {
        u.to_string()
    } else if crate::parser::calendar_unit(unit).is_some() {
        unit.to_string()
    } else {
        return None;
    };
    crate::quantity::valid_unit(&unit).then_some((v, unit))
}
