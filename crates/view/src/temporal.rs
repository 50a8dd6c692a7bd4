//! FHIRPath dates, dateTimes and times: parsed from their text with their precision and
//! offset, compared per the FHIRPath rules (values of different precision are not comparable:
//! the result is empty), with offsets compared as instants. Also the date arithmetic of
//! `@2014-01-01 + 1 month` and the boundaries of `lowBoundary()`/`highBoundary()`.

use std::cmp::Ordering;

/// Which kind of temporal value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Date,
    DateTime,
    Time,
}

/// A parsed value. `prec` counts the components present: 1 year … 3 day, 4 hour, 5 minute,
/// 6 second (a fraction belongs to the seconds: `10:30:00` equals `10:30:00.0`). Times use
/// the same numbering from hour (4) on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Temporal {
    pub(crate) kind: Kind,
    pub(crate) year: i32,
    pub(crate) month: u32,
    pub(crate) day: u32,
    pub(crate) hour: u32,
    pub(crate) minute: u32,
    /// Seconds in milliseconds.
    pub(crate) millis: u32,
    /// Digits of the seconds fraction (0 when none).
    pub(crate) frac_digits: u32,
    pub(crate) prec: u8,
    /// Offset from UTC in minutes, when given.
    pub(crate) offset: Option<i32>,
}

fn num(s: &str, len: usize) -> Option<u32> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

pub(crate) fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn parse_clock(t: &Temporal, s: &str) -> Option<Temporal> {
    let mut v = *t;
    let mut parts = s.split(':');
    v.hour = num(parts.next()?, 2).filter(|h| *h < 24)?;
    v.prec = 4;
    if let Some(m) = parts.next() {
        v.minute = num(m, 2).filter(|m| *m < 60)?;
        v.prec = 5;
        if let Some(sec) = parts.next() {
            let (whole, frac) = match sec.split_once('.') {
                Some((w, f)) => (w, Some(f)),
                None => (sec, None),
            };
            let w = num(whole, 2).filter(|s| *s < 60)?;
            let mut ms = w * 1000;
            if let Some(f) = frac {
                if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                v.frac_digits = f.len() as u32;
                let mut digits: String = f.chars().take(3).collect();
                while digits.len() < 3 {
                    digits.push('0');
                }
                ms += digits.parse::<u32>().ok()?;
            }
            v.millis = ms;
            v.prec = 6;
        }
    }
    if parts.next().is_some() {
        return None;
    }
    Some(v)
}

impl Temporal {
    /// Parses `2012-04-15T10:00:00.000+02:00`, `2012-04`, `T10:30` (a time; the `T` may be
    /// left out when `kind` is known to be a time).
    pub(crate) fn parse(s: &str) -> Option<Temporal> {
        let blank = Temporal {
            kind: Kind::Date,
            year: 0,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            millis: 0,
            frac_digits: 0,
            prec: 0,
            offset: None,
        };
        if let Some(t) = s.strip_prefix('T') {
            let mut v = parse_clock(&blank, t)?;
            v.kind = Kind::Time;
            return Some(v);
        }
        if s.len() >= 5 && s.as_bytes()[2] == b':' {
            let mut v = parse_clock(&blank, s)?;
            v.kind = Kind::Time;
            return Some(v);
        }
        let (date, time) = match s.split_once('T') {
            Some((d, t)) => (d, Some(t)),
            None => (s, None),
        };
        let mut v = blank;
        let mut dp = date.split('-');
        v.year = num(dp.next()?, 4)? as i32;
        v.prec = 1;
        if let Some(m) = dp.next() {
            v.month = num(m, 2).filter(|m| (1..=12).contains(m))?;
            v.prec = 2;
            if let Some(d) = dp.next() {
                v.day = num(d, 2).filter(|d| *d >= 1 && *d <= days_in_month(v.year, v.month))?;
                v.prec = 3;
            }
        }
        if dp.next().is_some() {
            return None;
        }
        let Some(time) = time else {
            return Some(v);
        };
        v.kind = Kind::DateTime;
        if time.is_empty() {
            // `@2015T`: a dateTime of date precision.
            return Some(v);
        }
        if v.prec != 3 {
            return None;
        }
        let (clock, tz) = match time.find(['Z', '+', '-']) {
            Some(i) => (&time[..i], Some(&time[i..])),
            None => (time, None),
        };
        let mut v = parse_clock(&v, clock)?;
        v.offset = match tz {
            None => None,
            Some("Z") => Some(0),
            Some(z) => {
                let sign = if z.starts_with('-') { -1 } else { 1 };
                let (h, m) = z[1..].split_once(':')?;
                let h = num(h, 2).filter(|h| *h <= 14)? as i32;
                let m = num(m, 2).filter(|m| *m < 60)? as i32;
                Some(sign * (h * 60 + m))
            }
        };
        Some(v)
    }

    /// The components as integers in UTC when an offset is given (for comparison).
    fn key(&self) -> [i64; 6] {
        let mut k = [
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
            i64::from(self.hour),
            i64::from(self.minute),
            i64::from(self.millis),
        ];
        if let Some(off) = self.offset
            && off != 0
        {
            // Shift by the offset: via minutes since an epoch.
            let days = days_from_civil(self.year, self.month, self.day);
            let mins =
                days * 1440 + i64::from(self.hour) * 60 + i64::from(self.minute) - i64::from(off);
            let (d, m) = (mins.div_euclid(1440), mins.rem_euclid(1440));
            let (y, mo, da) = civil_from_days(d);
            k = [
                i64::from(y),
                i64::from(mo),
                i64::from(da),
                m / 60,
                m % 60,
                i64::from(self.millis),
            ];
        }
        k
    }

    /// FHIRPath comparison: `None` when the values are not comparable (different kinds,
    /// one with an offset and one without, or equal up to the lower of two different
    /// precisions).
    pub(crate) fn compare(&self, other: &Temporal) -> Option<Ordering> {
        let time = |k: Kind| k == Kind::Time;
        if time(self.kind) != time(other.kind) {
            return None;
        }
        let (a, b) = if self.offset.is_some() && other.offset.is_some() {
            (self.key(), other.key())
        } else if self.offset.is_none() && other.offset.is_none() {
            (self.raw_key(), other.raw_key())
        } else if self.prec <= 3 || other.prec <= 3 {
            // An offset only matters from the hour on.
            (self.raw_key(), other.raw_key())
        } else {
            return None;
        };
        let start = if time(self.kind) { 3 } else { 0 };
        let common = self.prec.min(other.prec) as usize;
        for i in start..common {
            match a[i].cmp(&b[i]) {
                Ordering::Equal => {}
                o => return Some(o),
            }
        }
        (self.prec == other.prec).then_some(Ordering::Equal)
    }

    /// The text of the value at its precision (without `@`).
    pub(crate) fn format(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        if self.kind != Kind::Time {
            let _ = write!(s, "{:04}", self.year);
            if self.prec >= 2 {
                let _ = write!(s, "-{:02}", self.month);
            }
            if self.prec >= 3 {
                let _ = write!(s, "-{:02}", self.day);
            }
            if self.kind == Kind::DateTime {
                s.push('T');
            }
        }
        if self.prec >= 4 {
            let _ = write!(s, "{:02}", self.hour);
        }
        if self.prec >= 5 {
            let _ = write!(s, ":{:02}", self.minute);
        }
        if self.prec >= 6 {
            let _ = write!(s, ":{:02}", self.millis / 1000);
            if self.frac_digits > 0 {
                let ms = format!("{:03}", self.millis % 1000);
                let mut f = ms;
                while (f.len() as u32) < self.frac_digits {
                    f.push('0');
                }
                let _ = write!(s, ".{}", &f[..self.frac_digits.max(1) as usize]);
            }
        }
        if self.kind == Kind::DateTime && self.prec >= 4 {
            match self.offset {
                Some(0) => s.push('Z'),
                Some(o) => {
                    let sign = if o < 0 { '-' } else { '+' };
                    let _ = write!(s, "{sign}{:02}:{:02}", o.abs() / 60, o.abs() % 60);
                }
                None => {}
            }
        }
        s
    }

    /// Adds `n` of a calendar unit (`a`/`year`, `mo`/`month`, `wk`, `d`, `h`, `min`, `s`,
    /// `ms`). Units finer than the value's precision are an error (`None`).
    pub(crate) fn add(&self, n: i64, unit: &str) -> Option<Temporal> {
        let mut v = *self;
        match unit {
            "a" | "year" | "years" => {
                v.year = i32::try_from(i64::from(v.year) + n).ok()?;
                v.day = v.day.min(days_in_month(v.year, v.month));
            }
            "mo" | "month" | "months" => {
                let m = i64::from(v.year) * 12 + i64::from(v.month) - 1 + n;
                v.year = i32::try_from(m.div_euclid(12)).ok()?;
                v.month = (m.rem_euclid(12) + 1) as u32;
                v.day = v.day.min(days_in_month(v.year, v.month));
            }
            _ => {
                let ms: i64 = match unit {
                    "wk" | "week" | "weeks" => n.checked_mul(7 * 86_400_000)?,
                    "d" | "day" | "days" => n.checked_mul(86_400_000)?,
                    "h" | "hour" | "hours" => n.checked_mul(3_600_000)?,
                    "min" | "minute" | "minutes" => n.checked_mul(60_000)?,
                    "s" | "second" | "seconds" => n.checked_mul(1000)?,
                    "ms" | "millisecond" | "milliseconds" => n,
                    _ => return None,
                };
                let need = match unit {
                    "wk" | "week" | "weeks" | "d" | "day" | "days" => 3,
                    "h" | "hour" | "hours" => 4,
                    "min" | "minute" | "minutes" => 5,
                    _ => 6,
                };
                let need = if v.kind == Kind::Time {
                    need.max(4)
                } else {
                    need
                };
                if v.prec < need && !(v.kind == Kind::Time && need == 3) {
                    return None;
                }
                let base = if v.kind == Kind::Time {
                    0
                } else {
                    days_from_civil(v.year, v.month, v.day) * 86_400_000
                };
                let t = base
                    + i64::from(v.hour) * 3_600_000
                    + i64::from(v.minute) * 60_000
                    + i64::from(v.millis)
                    + ms;
                let day = t.div_euclid(86_400_000);
                let rest = t.rem_euclid(86_400_000);
                if v.kind != Kind::Time {
                    let (y, m, d) = civil_from_days(day);
                    v.year = y;
                    v.month = m;
                    v.day = d;
                }
                v.hour = (rest / 3_600_000) as u32;
                v.minute = (rest / 60_000 % 60) as u32;
                v.millis = (rest % 60_000) as u32;
                if ms % 1000 != 0 && v.frac_digits == 0 {
                    v.frac_digits = 3;
                }
            }
        }
        Some(v)
    }

    fn raw_key(&self) -> [i64; 6] {
        [
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
            i64::from(self.hour),
            i64::from(self.minute),
            i64::from(self.millis),
        ]
    }
}

/// Days since 1970-01-01 (proleptic Gregorian) of `y`-`m`-`d`: core's calendar (one copy of
/// the arithmetic; total on any year, which date arithmetic needs).
pub(crate) fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    flatfhir_core::internal::calendar::days_from_civil(i64::from(y), m, d)
}

/// The date of a day counted from 1970-01-01, the inverse of [`days_from_civil`]. Years beyond
/// `i32` wrap as they did when this was computed here; FHIRPath dates stay far inside.
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let (y, m, d) = flatfhir_core::internal::calendar::civil_from_days(z);
    (y as i32, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(a: &str, b: &str) -> Option<Ordering> {
        Temporal::parse(a)
            .unwrap()
            .compare(&Temporal::parse(b).unwrap())
    }

    #[test]
    fn precision_and_offsets() {
        assert_eq!(cmp("2018-03", "2018-03-01"), None);
        assert_eq!(cmp("2018-02", "2018-03-01"), Some(Ordering::Less));
        assert_eq!(
            cmp("2012-04-15T15:00:00+02:00", "2012-04-15T16:00:00+03:00"),
            Some(Ordering::Equal)
        );
        assert_eq!(cmp("2012-04-15T15:00:00Z", "2012-04-15T10:00:00"), None);
        assert_eq!(
            cmp("2012-04-15T15:30:31", "2012-04-15T15:30:31.0"),
            Some(Ordering::Equal)
        );
        assert_eq!(
            cmp("2017-11-05T01:30:00.0-04:00", "2017-11-05T01:15:00.0-05:00"),
            Some(Ordering::Less)
        );
        assert_eq!(cmp("T10:30", "T10:30:00"), None);
        assert!(Temporal::parse("2018-02-30").is_none());
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
    }
}
