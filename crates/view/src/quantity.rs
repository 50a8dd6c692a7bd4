//! FHIRPath quantities: UCUM units of the kinds FHIR data uses (mass, length, area, volume,
//! time, dimensionless) converted to a base unit for comparison, and the calendar duration
//! words (`1 year`, `3 days`). Units outside the table compare only with the same unit
//! written the same way; anything else is not comparable (empty), never guessed.

use std::str::FromStr;

use rust_decimal::Decimal;

/// A unit's base unit and the factor to it (`mg` → (`g`, 0.001)).
fn ucum(unit: &str) -> Option<(&'static str, Decimal)> {
    let d = |s: &str| Decimal::from_str(s).ok();
    let (base, f) = match unit {
        "g" => ("g", "1"),
        "mg" => ("g", "0.001"),
        "ug" | "mcg" => ("g", "0.000001"),
        "ng" => ("g", "0.000000001"),
        "kg" => ("g", "1000"),
        "[lb_av]" => ("g", "453.59237"),
        "[oz_av]" => ("g", "28.349523125"),
        "m" => ("m", "1"),
        "dm" => ("m", "0.1"),
        "cm" => ("m", "0.01"),
        "mm" => ("m", "0.001"),
        "um" => ("m", "0.000001"),
        "km" => ("m", "1000"),
        "[in_i]" => ("m", "0.0254"),
        "[ft_i]" => ("m", "0.3048"),
        "m2" => ("m2", "1"),
        "cm2" => ("m2", "0.0001"),
        "mm2" => ("m2", "0.000001"),
        "L" | "l" => ("L", "1"),
        "dL" | "dl" => ("L", "0.1"),
        "mL" | "ml" => ("L", "0.001"),
        "s" => ("s", "1"),
        "ms" => ("s", "0.001"),
        "min" => ("s", "60"),
        "h" => ("s", "3600"),
        "d" => ("s", "86400"),
        "wk" => ("s", "604800"),
        "1" => ("1", "1"),
        "%" => ("1", "0.01"),
        _ => return None,
    };
    Some((base, d(f)?))
}

/// Calendar duration words: their UCUM unit, and whether they are definite (a week is
/// exactly `1 'wk'`; a calendar year or month is not `1 'a'` / `1 'mo'`).
fn calendar(word: &str) -> Option<(&'static str, bool)> {
    Some(match word {
        "year" | "years" => ("a", false),
        "month" | "months" => ("mo", false),
        "week" | "weeks" => ("wk", true),
        "day" | "days" => ("d", true),
        "hour" | "hours" => ("h", true),
        "minute" | "minutes" => ("min", true),
        "second" | "seconds" => ("s", true),
        "millisecond" | "milliseconds" => ("ms", true),
        _ => return None,
    })
}

/// The unit as compared: definite calendar words become their UCUM unit; `year`/`month`
/// stay words (comparable only with the same word).
pub(crate) fn normalize(unit: &str) -> &str {
    match calendar(unit) {
        Some((u, true)) => u,
        Some((_, false)) if unit.starts_with('y') => "year",
        Some((_, false)) => "month",
        None => unit,
    }
}

/// Converts `b` (value, unit) into the unit of `a` for comparison; `None` when the units are
/// not comparable. With `equiv`, calendar years/months equal `'a'`/`'mo'` (`~`).
pub(crate) fn align(
    a: (Decimal, &str),
    b: (Decimal, &str),
    equiv: bool,
) -> Option<(Decimal, Decimal)> {
    let (ua, ub) = (normalize(a.1), normalize(b.1));
    fn cal(u: &str) -> &str {
        match u {
            "year" => "a",
            "month" => "mo",
            u => u,
        }
    }
    let (ua, ub) = if equiv { (cal(ua), cal(ub)) } else { (ua, ub) };
    if ua == ub {
        return Some((a.0, b.0));
    }
    let (ba, fa) = ucum(ua)?;
    let (bb, fb) = ucum(ub)?;
    // Years and months in UCUM (`a`, `mo`) are not in the table: not convertible.
    if ba != bb {
        return None;
    }
    Some((a.0.checked_mul(fa)?, b.0.checked_mul(fb)?))
}

/// The value in the unit's base unit (`2 'cm'` → (`m`, 0.02)), for known units.
pub(crate) fn base_of(unit: &str, v: Decimal) -> Option<(&'static str, Decimal)> {
    let (b, f) = ucum(normalize(unit))?;
    Some((b, v.checked_mul(f)?))
}

/// Whether two units can be compared (`cm` and `[in_i]`; not `cm` and `s`).
pub(crate) fn comparable(a: &str, b: &str) -> bool {
    align((Decimal::ONE, a), (Decimal::ONE, b), false).is_some()
}

/// Whether a unit string is one this engine can reason about (a known UCUM unit, a calendar
/// word, or any UCUM-looking unit compared only with itself).
pub(crate) fn valid_unit(unit: &str) -> bool {
    !unit.is_empty() && !unit.contains(char::is_whitespace)
}

/// `4 'g'`, `1 day` as FHIRPath writes them.
pub(crate) fn format(v: Decimal, unit: &str) -> String {
    if calendar(unit).is_some() {
        format!("{v} {unit}")
    } else {
        format!("{v} '{unit}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn converts_within_a_dimension_only() {
        let (a, b) = align((dec("4.0000"), "g"), (dec("4000.0"), "mg"), false).unwrap();
        assert_eq!(a, b);
        assert!(align((dec("1"), "g"), (dec("1"), "m"), false).is_none());
        assert!(align((dec("1"), "year"), (dec("1"), "a"), false).is_none());
        assert!(align((dec("1"), "year"), (dec("1"), "a"), true).is_some());
        let (a, b) = align((dec("1"), "week"), (dec("7"), "days"), false).unwrap();
        assert_eq!(a, b);
    }
}
