//! FHIR dates and instants as typed columns (`--dates typed`): classifying a string value as a
//! full date, a full instant (a dateTime with seconds and an offset), or text that starts
//! like a date but is neither (an impossible day, `24:00:00`, no offset, finer than a
//! microsecond), and turning the held texts into days or microseconds since the epoch (UTC).
//!
//! Written by hand rather than with chrono's RFC 3339 parser because FHIR's grammar is
//! stricter (an upper-case `T`, an offset of at most 14 hours, no leap second, four-digit
//! years) and a value that is not exactly a FHIR instant must stay text, never be guessed.

use crate::schema::kind;

/// The kind of a string value for the dates policy: [`kind::DATE`] (`YYYY-MM-DD`, a real
/// day), [`kind::INSTANT`] (`YYYY-MM-DDThh:mm:ss[.f]` with `Z` or `±hh:mm`), [`kind::BADDATE`]
/// (starts as `YYYY-MM-DD` but is neither), else [`kind::STR`].
#[inline]
pub(crate) fn classify(s: &str) -> u8 {
    let b = s.as_bytes();
    // Most strings fail here: too short or no `-` where a date has them.
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return kind::STR;
    }
    if !digits(&b[..4]) || !digits(&b[5..7]) || !digits(&b[8..10]) {
        return kind::STR;
    }
    if b.len() == 10 {
        return if days(b).is_some() {
            kind::DATE
        } else {
            kind::BADDATE
        };
    }
    if micros(s).is_some() {
        kind::INSTANT
    } else {
        kind::BADDATE
    }
}

fn digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

fn num(b: &[u8]) -> i64 {
    b.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0'))
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (at least the first ten bytes of `b`), when
/// it is a real day of a year from 0001.
fn days(b: &[u8]) -> Option<i32> {
    let (y, m, d) = (num(&b[..4]), num(&b[5..7]), num(&b[8..10]));
    if y < 1 || !(1..=12).contains(&m) || d < 1 {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d > month_days[(m - 1) as usize] {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)] // m in 1..=12, d in 1..=31: checked above
    i32::try_from(crate::calendar::days_from_civil(y, m as u32, d as u32)).ok()
}

/// The days since 1970-01-01 of a value [`classify`] found to be [`kind::DATE`].
pub(crate) fn date_days(s: &str) -> Option<i32> {
    (s.len() == 10).then(|| days(s.as_bytes())).flatten()
}

/// Microseconds since 1970-01-01T00:00:00Z of a full FHIR instant, when it is one and is
/// exact to the microsecond (more fraction digits are allowed only as trailing zeros).
pub(crate) fn micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !digits(&b[11..13]) || !digits(&b[14..16]) || !digits(&b[17..19]) {
        return None;
    }
    let day = days(b)?;
    let (h, mi, sec) = (num(&b[11..13]), num(&b[14..16]), num(&b[17..19]));
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut frac = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        let n = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        let f = &b[start..start + n];
        if f.len() > 6 && f[6..].iter().any(|&c| c != b'0') {
            return None;
        }
        let six = &f[..f.len().min(6)];
        frac = num(six) * 10i64.pow(6 - six.len() as u32);
        i = start + n;
    }
    let offset = match &b[i..] {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hh = [*h1, *h2];
            let mm = [*m1, *m2];
            if !digits(&hh) || !digits(&mm) {
                return None;
            }
            let (oh, om) = (num(&hh), num(&mm));
            if om > 59 || oh > 14 || (oh == 14 && om != 0) {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let secs = i64::from(day) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs * 1_000_000 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_classified_strictly() {
        for (s, k) in [
            ("2019-07-01", kind::DATE),
            ("2020-02-29", kind::DATE),
            ("2019-02-29", kind::BADDATE),
            ("2019-02-30", kind::BADDATE),
            ("2019-13-01", kind::BADDATE),
            ("0000-01-01", kind::BADDATE),
            ("2019-07-01T10:00:00Z", kind::INSTANT),
            ("2019-07-01T10:00:00.123+02:00", kind::INSTANT),
            ("2019-07-01T10:00:00.123456789-05:30", kind::BADDATE),
            ("2019-07-01T10:00:00.123456000-05:30", kind::INSTANT),
            ("2019-07-01T24:00:00Z", kind::BADDATE),
            ("2019-07-01T10:00:60Z", kind::BADDATE),
            ("2019-07-01T10:00:00", kind::BADDATE),
            ("2019-07-01T10:00:00+15:00", kind::BADDATE),
            ("2019-07-01t10:00:00Z", kind::BADDATE),
            ("2019-07-01T10:00Z", kind::BADDATE),
            ("2019", kind::STR),
            ("2019-07", kind::STR),
            ("final", kind::STR),
            ("abcd-ef-gh", kind::STR),
        ] {
            assert_eq!(classify(s), k, "{s}");
        }
    }

    #[test]
    fn instants_are_utc_microseconds() {
        assert_eq!(micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(micros("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(micros("1969-12-31T23:59:59.5Z"), Some(-500_000));
        assert_eq!(
            micros("2000-03-01T00:00:00-14:00"),
            Some(951_868_800_000_000 + 14 * 3_600_000_000)
        );
        assert_eq!(date_days("1970-01-01"), Some(0));
        assert_eq!(date_days("2000-03-01"), Some(11_017));
        assert_eq!(date_days("1969-12-31"), Some(-1));
        assert_eq!(date_days("0001-01-01"), Some(-719_162));
    }
}
