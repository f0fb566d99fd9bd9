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

#[cfg(test)]
mod tests {
    #[test]
    fn formats_at_second_precision() {
        let t = time::macros::datetime!(2026-11-23 10:05:07.999 +02:00);
        assert_eq!(super::rfc3339_seconds(t), "2026-11-23T08:05:07Z");
    }
}
