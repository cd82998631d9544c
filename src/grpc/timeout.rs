//! `grpc-timeout` parsing (PROTOCOL-HTTP2.md: `TimeoutValue TimeoutUnit`,
//! where TimeoutValue is 1 to 8 ASCII digits and TimeoutUnit one of
//! `H M S m u n`). Strict, as grpc-go is: anything else is malformed, never
//! silently "no deadline" as tonic treats it.

use std::time::Duration;

/// Most digits the spec allows in a timeout value.
pub const MAX_TIMEOUT_DIGITS: usize = 8;

/// Longest deadline honoured; larger values are clamped (99999999H would
/// otherwise overflow `Instant` arithmetic). 100 years is "no deadline" in
/// practice.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The header value is not a valid `grpc-timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedTimeout;

impl std::fmt::Display for MalformedTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed grpc-timeout")
    }
}

impl std::error::Error for MalformedTimeout {}

/// Parse a `grpc-timeout` value into a duration (clamped to `MAX_TIMEOUT`).
pub fn parse(value: &[u8]) -> Result<Duration, MalformedTimeout> {
    let (unit, digits) = value.split_last().ok_or(MalformedTimeout)?;
    if digits.is_empty()
        || digits.len() > MAX_TIMEOUT_DIGITS
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return Err(MalformedTimeout);
    }
    let n = digits.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    let d = match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(MalformedTimeout),
    };
    Ok(d.min(MAX_TIMEOUT))
}

/// Format a duration as a `grpc-timeout` value, rounding up to the unit that
/// keeps at most 8 digits (used by the driver client).
pub fn format(d: Duration) -> String {
    const LIMIT: u128 = 100_000_000;
    let nanos = d.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let v = nanos.div_ceil(per);
        if v < LIMIT {
            return format!("{v}{unit}");
        }
    }
    "99999999H".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_values() {
        assert_eq!(parse(b"1m"), Ok(Duration::from_millis(1)));
        assert_eq!(parse(b"10S"), Ok(Duration::from_secs(10)));
        assert_eq!(parse(b"2H"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse(b"3M"), Ok(Duration::from_secs(180)));
        assert_eq!(parse(b"7u"), Ok(Duration::from_micros(7)));
        assert_eq!(parse(b"12345678n"), Ok(Duration::from_nanos(12_345_678)));
        assert_eq!(parse(b"0m"), Ok(Duration::ZERO));
        assert_eq!(parse(b"99999999H"), Ok(MAX_TIMEOUT));
    }

    #[test]
    fn malformed_values() {
        for bad in
            [&b"xyz"[..], b"123456789S", b"5x", b"", b"S", b"-1S", b" 1S", b"1 S", b"1s", b"1.5S"]
        {
            assert_eq!(parse(bad), Err(MalformedTimeout), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn format_round_trips_within_rounding() {
        for d in [
            Duration::from_millis(1500),
            Duration::from_secs(10),
            Duration::from_nanos(1),
            Duration::from_secs(86400 * 400),
        ] {
            let s = format(d);
            let back = parse(s.as_bytes()).unwrap();
            assert!(back >= d.min(MAX_TIMEOUT), "{s}");
        }
    }
}
