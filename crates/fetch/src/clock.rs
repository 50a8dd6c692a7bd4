//! The wall clock as a FHIR `instant` (UTC, milliseconds), for `log.ndjson` timestamps.

use std::time::SystemTime;

use time::OffsetDateTime;

/// Now as a FHIR instant with milliseconds (UTC), for `log.ndjson`.
pub(crate) fn now_instant_ms() -> String {
    instant_ms(SystemTime::now())
}

/// `t` as `YYYY-MM-DDThh:mm:ss.sssZ`.
fn instant_ms(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn instants_are_utc_with_milliseconds() {
        let at = |ms: u64| instant_ms(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a year divisible by 400), 23:59:59.999.
        assert_eq!(at(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(at(951_868_800_000), "2000-03-01T00:00:00.000Z");
    }
}
