//! UTC calendar days: what a daily spending cap counts over.

use time::macros::format_description;

/// A calendar day in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day(time::Date);

impl Day {
    /// The day a moment (milliseconds since the Unix epoch) falls on.
    pub fn of_unix_ms(ms: u64) -> Day {
        let seconds = i64::try_from(ms / 1000).expect("a clock within time's range");
        let moment = time::OffsetDateTime::from_unix_timestamp(seconds)
            .expect("a clock within time's range");
        Day(moment.date())
    }

    /// The day `days` after this one.
    pub fn plus(self, days: u32) -> Day {
        Day(self.0.saturating_add(time::Duration::days(i64::from(days))))
    }

    /// Milliseconds since the Unix epoch at this day's first moment.
    pub fn start_ms(self) -> u64 {
        let seconds = self.0.midnight().assume_utc().unix_timestamp();
        u64::try_from(seconds).unwrap_or(0) * 1000
    }

    /// A day written `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Day> {
        time::Date::parse(text, format_description!("[year]-[month]-[day]"))
            .ok()
            .map(Day)
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_starts_at_midnight_utc_and_reads_back_from_its_name() {
        let last_ms_of_nov_30 = 1_764_547_199_999;
        assert_eq!(Day::of_unix_ms(last_ms_of_nov_30).to_string(), "2025-11-30");
        assert_eq!(
            Day::of_unix_ms(last_ms_of_nov_30 + 1).to_string(),
            "2025-12-01"
        );
        let day = Day::of_unix_ms(last_ms_of_nov_30);
        assert_eq!(Day::parse(&day.to_string()), Some(day));
        assert_eq!(day.plus(1).to_string(), "2025-12-01");
        assert_eq!(day.plus(1).start_ms(), last_ms_of_nov_30 + 1);
        for bad in ["2025-13-01", "2025-1-01", "yesterday", ""] {
            assert_eq!(Day::parse(bad), None, "{bad:?}");
        }
    }
}
