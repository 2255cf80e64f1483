//! The CRD's duration strings (`rto`, `rpo`): a whole number followed by one unit, `s`, `m` or
//! `h` — upstream's pattern `^[0-9]+(s|m|h)$`, nothing more (no `1m30s`, no `ms`, no spaces).

use std::fmt;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty string.
    #[error("empty duration")]
    Empty,
    /// Not `<digits><s|m|h>`.
    #[error("{0:?} is not a whole number followed by s, m or h (e.g. 30s, 5m, 1h)")]
    Format(String),
    /// The number does not fit.
    #[error("{0:?} is too large")]
    Overflow(String),
}

/// A parsed CRD duration, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CrdDuration {
    secs: u64,
}

impl CrdDuration {
    /// The upstream schema pattern this parser implements.
    pub const PATTERN: &'static str = "^[0-9]+(s|m|h)$";

    /// Parses `30s`, `5m`, `1h`.
    pub fn parse(s: &str) -> Result<CrdDuration, DurationError> {
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let unit = s.as_bytes()[s.len() - 1];
        let factor: u64 = match unit {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            _ => return Err(DurationError::Format(s.to_owned())),
        };
        let digits = &s[..s.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DurationError::Format(s.to_owned()));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| DurationError::Overflow(s.to_owned()))?;
        let secs = n
            .checked_mul(factor)
            .filter(|v| *v <= i64::MAX as u64 / 1000)
            .ok_or_else(|| DurationError::Overflow(s.to_owned()))?;
        Ok(CrdDuration { secs })
    }

    /// Whole seconds.
    pub fn as_secs(self) -> u64 {
        self.secs
    }

    /// As a [`std::time::Duration`].
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.secs)
    }
}

impl fmt::Display for CrdDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_units() {
        let p = |s| CrdDuration::parse(s).map(CrdDuration::as_secs);
        assert_eq!(p("5s"), Ok(5));
        assert_eq!(p("0s"), Ok(0));
        assert_eq!(p("1m"), Ok(60));
        assert_eq!(p("5m"), Ok(300));
        assert_eq!(p("2h"), Ok(7200));
        assert_eq!(p("007s"), Ok(7));
    }

    #[test]
    fn refuses_everything_outside_the_upstream_pattern() {
        for bad in [
            "", "s", "5", "1minute", "fast", "1m30s", "5ms", " 5s", "5s ", "-5s", "+5s", "5S",
            "1.5m", "5d", "٣s",
        ] {
            assert!(CrdDuration::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(CrdDuration::parse(""), Err(DurationError::Empty));
    }

    #[test]
    fn refuses_overflow_instead_of_wrapping() {
        assert!(matches!(
            CrdDuration::parse("99999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            CrdDuration::parse("9999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }
}
