//! Proleptic Gregorian day counts (Howard Hinnant's `days_from_civil` / `civil_from_days`):
//! the one copy of the calendar arithmetic for core's `--dates typed` and the view engine's
//! date arithmetic. Not the `time` crate (which fetch and the test server use for clock
//! times): `--dates typed` runs this for every date-like value of a column on bytes already
//! checked, where `time::Date::from_calendar_date` would validate the day a second time, and
//! FHIRPath date arithmetic (`+ 10000 years`) can step outside `time::Date`'s years ±9999,
//! where `time` fails and these keep computing the proleptic date. Both functions are total.

/// Days since 1970-01-01 of the day `y`-`m`-`d` (`m` in 1..=12, `d` a day of that month).
#[inline]
#[must_use]
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = y - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day counted from 1970-01-01, the inverse of
/// [`days_from_civil`].
#[inline]
#[must_use]
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).expect("a day of the month");
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).expect("a month");
    (y + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days_and_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        // Every day over 800 years either side of the epoch, and far outside ±9999.
        for z in (-400 * 366..400 * 366)
            .chain(-5_000_000..-4_990_000)
            .chain(4_990_000..5_000_000)
        {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
    }
}
