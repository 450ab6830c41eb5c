//! Durations as a plan writes them (`contracts/rollout-plan.md`): a whole
//! number and one unit, `500ms`, `30s`, `10m`, `2h`, `1d`, or a bare `0`.
//! No fractions, no compound forms (`1h30m`), no spaces, no unit-less
//! numbers other than 0: a hold of `30` could be seconds or days, so it is
//! refused rather than guessed. [`format_duration`] prints a duration back
//! in the same units (compound only when it has to be, e.g. after
//! scaling).

use std::fmt;
use std::time::Duration;

/// The longest duration a plan may write: a year. A longer hold or window
/// is a typo, not a release.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// The units, longest first, with their length in milliseconds.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Why a duration did not parse; its Display is the message a plan error
/// carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("no value: expected a duration such as 500ms, 30s, 10m, 2h, 1d or 0")]
    Empty,
    #[error("{0:?} is not a duration: expected a whole number and a unit (ms, s, m, h, d), such as 500ms, 30s, 10m, 2h, 1d, or 0")]
    Malformed(String),
    #[error("{0:?} has no unit: write ms, s, m, h or d after the number (only 0 stands alone)")]
    NoUnit(String),
    #[error("{found:?} has an unknown unit {unit:?}: expected ms, s, m, h or d")]
    UnknownUnit { found: String, unit: String },
    #[error("{0:?} is longer than the limit of 365d")]
    TooLong(String),
}

/// Parses `500ms`, `30s`, `10m`, `2h`, `1d` or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(DurationError::Malformed(text.to_owned()));
    }
    if unit.is_empty() {
        return if number.bytes().all(|b| b == b'0') {
            Ok(Duration::ZERO)
        } else {
            Err(DurationError::NoUnit(text.to_owned()))
        };
    }
    if !unit.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(DurationError::Malformed(text.to_owned()));
    }
    let Some(&(_, unit_ms)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(DurationError::UnknownUnit {
            found: text.to_owned(),
            unit: unit.to_owned(),
        });
    };
    let too_long = || DurationError::TooLong(text.to_owned());
    let n: u64 = number.parse().map_err(|_| too_long())?;
    let ms = n.checked_mul(unit_ms).ok_or_else(too_long)?;
    let d = Duration::from_millis(ms);
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

/// A duration in the plan's units, to the millisecond: `0`, `1d`, `90s`
/// prints as `1m30s`, `2500ms` as `2s500ms`.
pub fn format_duration(d: Duration) -> String {
    Show(d).to_string()
}

/// Display of a duration in the plan's units (see [`format_duration`]).
#[derive(Debug, Clone, Copy)]
pub struct Show(pub Duration);

impl fmt::Display for Show {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return f.write_str("0");
        }
        for (unit, len) in UNITS {
            let n = ms / len;
            if n > 0 {
                write!(f, "{n}{unit}")?;
                ms -= n * len;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses_and_prints_back() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("10m", 600_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("0", 0),
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(d, Duration::from_millis(ms), "{text}");
            assert_eq!(format_duration(d), text);
        }
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(format_duration(Duration::from_millis(90_500)), "1m30s500ms");
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "", "s", "30", "-1s", "1.5s", "1h30m", "30 s", "30S", "1w", "1sec", "+3s", " 3s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            parse_duration("30"),
            Err(DurationError::NoUnit("30".into()))
        );
        assert!(matches!(
            parse_duration("3w"),
            Err(DurationError::UnknownUnit { unit, .. }) if unit == "w"
        ));
        assert!(parse_duration("365d").is_ok());
        assert_eq!(
            parse_duration("366d"),
            Err(DurationError::TooLong("366d".into()))
        );
        assert!(matches!(
            parse_duration("99999999999999999999999d"),
            Err(DurationError::TooLong(_))
        ));
    }
}
