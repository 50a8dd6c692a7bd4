//! `lowBoundary`/`highBoundary` and `precision()` of decimals, quantities, dates, dateTimes
//! and times.

use std::borrow::Cow;

use rust_decimal::{Decimal, RoundingStrategy};

use crate::eval::{EvalResult, Item, Primitive, parse_temporal, quantity_of};
use crate::temporal::{Kind, Temporal, days_in_month};

/// The precision of a date/time in digits (`2014` → 4, `T10:30` → 4, milliseconds → 17).
pub(super) fn digits_of(t: &Temporal) -> i64 {
    let ms = if t.prec >= 6 && t.frac_digits > 0 {
        3
    } else {
        0
    };
    match t.kind {
        Kind::Time => [0, 0, 0, 0, 2, 4, 6][t.prec as usize] + ms,
        _ => [0, 4, 6, 8, 10, 12, 14][t.prec as usize] + ms,
    }
}

/// Low/high boundary of a decimal, quantity, date, dateTime or time; `precision` in digits
/// (decimals: fraction digits, default 8; dates: 4/6/8, dateTimes up to 17, times up to 9).
pub(super) fn boundary<'a>(
    x: &Item<'a>,
    high: bool,
    prec: Option<i64>,
) -> EvalResult<Option<Item<'a>>> {
    let dec = |d: Decimal, default_scale: u32| -> Option<Decimal> {
        let p = prec.unwrap_or(8);
        if !(0..=28).contains(&p) {
            return None;
        }
        let p = p as u32;
        let _ = default_scale;
        // Half a unit of the last digit given. At the largest scale (28 digits) that is not
        // representable; one unit of the 28th digit gives the same boundary at any precision
        // up to 28 (it moves the value off an exact boundary in the same direction).
        let half = Decimal::try_new(5, d.scale() + 1).unwrap_or(Decimal::new(1, 28));
        let tiny = Decimal::new(1, p);
        let mut v = if d.abs() < tiny && d.scale() > p {
            // Below the requested precision: the boundary at it is zero (sign kept).
            let mut z = Decimal::ZERO;
            z.set_sign_negative(d.is_sign_negative());
            z
        } else {
            let b = if high {
                d.checked_add(half)?
            } else {
                d.checked_sub(half)?
            };
            let strategy = if high {
                RoundingStrategy::ToPositiveInfinity
            } else {
                RoundingStrategy::ToNegativeInfinity
            };
            b.round_dp_with_strategy(p, strategy)
        };
        v.rescale(p);
        Some(v)
    };
    Ok(match x.prim() {
        Primitive::Int(i) => dec(Decimal::from(i), 0).map(Item::Dec),
        Primitive::Dec(d) => dec(d, d.scale()).map(Item::Dec),
        Primitive::Qty(v, u) => dec(v, v.scale()).map(|d| Item::Qty(d, Cow::Owned(u.to_string()))),
        Primitive::Temporal(s, k) => {
            let t = parse_temporal(s, k).ok_or("invalid date/time")?;
            temporal_boundary(&t, high, prec)?
                .map(|(text, tag)| Item::Str(Cow::Owned(text), Some(tag)))
        }
        Primitive::Obj(_) => match quantity_of(x) {
            Some((v, u)) => dec(v, v.scale()).map(|d| Item::Qty(d, Cow::Owned(u.into_owned()))),
            None => None,
        },
        _ => None,
    })
}

fn temporal_boundary(
    t: &Temporal,
    high: bool,
    prec: Option<i64>,
) -> EvalResult<Option<(String, &'static str)>> {
    let digits = prec.unwrap_or(match t.kind {
        Kind::Date => 8,
        Kind::DateTime => 17,
        Kind::Time => 9,
    });
    let (level, ms) = match (t.kind, digits) {
        (Kind::Time, 2) => (4, false),
        (Kind::Time, 4) => (5, false),
        (Kind::Time, 6) => (6, false),
        (Kind::Time, 9) => (6, true),
        (Kind::Time, _) => return Ok(None),
        (_, 4) => (1, false),
        (_, 6) => (2, false),
        (_, 8) => (3, false),
        (Kind::DateTime, 10) => (4, false),
        (Kind::DateTime, 12) => (5, false),
        (Kind::DateTime, 14) => (6, false),
        (Kind::DateTime, 17) => (6, true),
        _ => return Ok(None),
    };
    if high && t.kind == Kind::DateTime && t.prec == 4 && level > 4 {
        // The suite and implementations disagree on an hour-precision dateTime's high
        // boundary (`T08` → `08:00:59.999` or `08:59:59.999`): refused, not guessed.
        return Err("highBoundary() of a dateTime with hour precision is not supported".into());
    }
    let mut v = *t;
    if v.prec < 2 {
        v.month = if high { 12 } else { 1 };
    }
    if v.prec < 3 {
        v.day = if high {
            days_in_month(v.year, v.month)
        } else {
            1
        };
    }
    if v.prec < 4 {
        v.hour = if high { 23 } else { 0 };
    }
    if v.prec < 5 {
        v.minute = if high { 59 } else { 0 };
    }
    if v.prec < 6 {
        v.millis = if high { 59_999 } else { 0 };
    } else if v.frac_digits == 0 && high {
        v.millis += 999;
    }
    v.prec = level;
    v.frac_digits = if ms { 3 } else { 0 };
    if v.kind == Kind::DateTime && level >= 4 && v.offset.is_none() {
        v.offset = Some(if high { -12 * 60 } else { 14 * 60 });
    }
    let tag = match (v.kind, level) {
        (Kind::Time, _) => "time",
        (_, 1..=3) => {
            v.kind = Kind::Date;
            "date"
        }
        _ => "dateTime",
    };
    Ok(Some((v.format(), tag)))
}
