//! Time is injected, never read, by the core: executors take a [`Clock`].

use time::OffsetDateTime;

pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// A clock stopped at one instant (tests, replays).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

/// The wall clock. Edges (Lambda, the custom handler, the CLI) pass it to executors; nothing in
/// the planner or normalizers calls it, which keeps plans deterministic.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// RFC 3339 at second precision with `Z`, as IAM condition keys expect.
pub fn rfc3339_seconds(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A source timestamp (RFC 3339, any precision or offset) at second precision in UTC, or
/// `None` when it does not parse. Truncation is safe for cut-offs: a token used at `t` was
/// issued before `t`.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok()
}

/// [`parse_rfc3339`] formatted with [`rfc3339_seconds`], rounded *up* to the next second when
/// the source had a fraction, so a cut-off derived from it still covers the occurrence.
pub fn normalize_rfc3339(s: &str) -> Option<String> {
    let t = parse_rfc3339(s)?;
    let t = if t.nanosecond() > 0 {
        t.replace_nanosecond(0).ok()? + time::Duration::SECOND
    } else {
        t
    };
    Some(rfc3339_seconds(t))
}

#[cfg(test)]
mod tests {
    #[test]
    fn source_timestamps_normalize_to_seconds_rounding_up() {
        assert_eq!(
            super::normalize_rfc3339("2026-11-20T10:14:37.120Z").as_deref(),
            Some("2026-11-20T10:14:38Z")
        );
        assert_eq!(
            super::normalize_rfc3339("2026-11-20T11:14:37+01:00").as_deref(),
            Some("2026-11-20T10:14:37Z")
        );
        assert_eq!(super::normalize_rfc3339("yesterday"), None);
    }

    #[test]
    fn formats_at_second_precision() {
        let t = time::macros::datetime!(2026-11-23 10:05:07.999 +02:00);
        assert_eq!(super::rfc3339_seconds(t), "2026-11-23T08:05:07Z");
    }
}
