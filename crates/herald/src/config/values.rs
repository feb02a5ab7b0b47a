//! Parsers for the kinds of value settings take: durations, sizes, counts, CIDRs.
//!
//! Each returns a sentence on failure; the caller adds which setting it was.

use std::time::Duration;

use ipnet::IpNet;

/// Parses `250ms`, `5s`, `2h`, `1h 30m` and the like.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("{text:?} is not a duration like 250ms, 5s or 24h ({error})"))
}

/// Parses a size such as `5MiB`, `512KiB`, `1MB` or a plain number of bytes.
pub fn size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?} is not a size like 5MiB, 512KiB or 1048576"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{text:?} is not a size like 5MiB, 512KiB or 1048576"))
}

/// Parses a whole number within `min..=max`.
pub fn count(text: &str, min: u32, max: u32) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{text:?} is not a whole number between {min} and {max}"))
}

/// Parses a positive rate such as `100` or `2.5`.
pub fn rate(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)
        .ok_or_else(|| format!("{text:?} is not a positive number"))
}

/// Parses a comma-separated list of CIDRs (`127.0.0.0/8, ::1/128`); a bare address
/// counts as a single-host network.
pub fn cidrs(text: &str) -> Result<Vec<IpNet>, String> {
    list(text)
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{item:?} is not a CIDR like 10.0.0.0/8 or an IP address"))
        })
        .collect()
}

/// The non-empty items of a comma-separated list, trimmed.
pub fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("5MiB"), Ok(5 * 1024 * 1024));
        assert_eq!(size("512 KiB"), Ok(512 * 1024));
        assert_eq!(size("1000"), Ok(1000));
        assert_eq!(size("2GB"), Ok(2_000_000_000));
        for bad in [
            "",
            "MiB",
            "5 mebibytes",
            "-1",
            "1.5MiB",
            "99999999999999999999GiB",
        ] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(duration("5").is_err());
        assert!(duration("soon").is_err());
    }

    #[test]
    fn cidr_lists() {
        let parsed = cidrs("127.0.0.0/8, ::1, 10.1.2.3").expect("valid");
        assert_eq!(parsed.len(), 3);
        assert!(cidrs("127.0.0.0/33").is_err());
        assert!(cidrs("localhost").is_err());
        assert_eq!(cidrs(""), Ok(vec![]));
    }
}
