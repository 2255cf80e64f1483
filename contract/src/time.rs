//! Unix-millisecond instants and their RFC 3339 wire form.
//!
//! Pure: nothing here reads a clock. Callers pass `now` in.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant as milliseconds since the unix epoch (UTC), the unit of every FlowMessage time
/// and of the lease arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

/// A string that is not an RFC 3339 timestamp (or is out of range).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid RFC 3339 timestamp {0:?}")]
pub struct TimeParseError(pub String);

impl Millis {
    /// `self + ms`, saturating at the ends of the range.
    pub fn plus(self, ms: i64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn since(self, earlier: Millis) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The RFC 3339 form with exactly three fractional digits and `Z`, as JavaScript's
    /// `Date.prototype.toISOString` writes it (upstream's Worker), e.g. `2026-05-11T10:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1000);
        let ms = self.0.rem_euclid(1000);
        match OffsetDateTime::from_unix_timestamp(secs) {
            Ok(t) => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                ms
            ),
            // Outside year ±9999: not a time any lease will carry; keep it visible.
            Err(_) => format!("{}ms", self.0),
        }
    }

    /// Parses any RFC 3339 timestamp (any offset, any fraction), truncating to milliseconds.
    pub fn parse_rfc3339(s: &str) -> Result<Millis, TimeParseError> {
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| TimeParseError(s.to_owned()))?;
        let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(ms)
            .map(Millis)
            .map_err(|_| TimeParseError(s.to_owned()))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Serde for `Option<Millis>` as upstream's lease wire form: an RFC 3339 string, or `""` for
/// "no time" (a released lease). Decoding also accepts `null` and a plain integer of
/// milliseconds.
pub mod rfc3339_opt {
    use super::*;

    /// Serialize `None` as `""` and `Some(t)` as RFC 3339.
    pub fn serialize<S: Serializer>(v: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => s.serialize_str(&t.to_rfc3339()),
            None => s.serialize_str(""),
        }
    }

    /// Deserialize `""`/`null` as `None`, a string as RFC 3339, an integer as milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Text(String),
            Int(i64),
        }
        match Option::<Wire>::deserialize(d)? {
            None => Ok(None),
            Some(Wire::Int(ms)) => Ok(Some(Millis(ms))),
            Some(Wire::Text(s)) if s.is_empty() => Ok(None),
            Some(Wire::Text(s)) => Millis::parse_rfc3339(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Serde for a required `Millis` as RFC 3339 (integers of milliseconds also accepted).
pub mod rfc3339 {
    use super::*;

    /// Serialize as RFC 3339.
    pub fn serialize<S: Serializer>(v: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_rfc3339())
    }

    /// Deserialize from RFC 3339 or integer milliseconds; empty is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        rfc3339_opt::deserialize(d)?.ok_or_else(|| serde::de::Error::custom("empty timestamp"))
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        i64::deserialize(d).map(Millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_millisecond_precision() {
        let t = Millis(1_778_493_600_123);
        let s = t.to_rfc3339();
        assert_eq!(s, "2026-05-11T10:00:00.123Z");
        assert_eq!(Millis::parse_rfc3339(&s), Ok(t));
    }

    #[test]
    fn rfc3339_parse_accepts_offsets_and_go_nanoseconds() {
        assert_eq!(
            Millis::parse_rfc3339("2026-05-11T12:00:00.123456789+02:00"),
            Ok(Millis(1_778_493_600_123))
        );
        assert_eq!(
            Millis::parse_rfc3339("2026-05-11T10:00:00Z"),
            Ok(Millis(1_778_493_600_000))
        );
        assert!(Millis::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn times_before_1970_format_correctly() {
        assert_eq!(Millis(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
    }
}
