//! Byte sizes as PostgreSQL shows them (`1GB`, `8kB`) and as users type
//! them (`256MB`, `4g`, `4096`).

/// `"256MB"`, `"1 GB"`, `"8kB"`, `"4096"` -> bytes (units are powers of
/// 1024, any case). The error says what is wrong, for a command line.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 256MB"))?;
    let unit: u64 = match t[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" | "kib" => 1 << 10,
        "mb" | "m" | "mib" => 1 << 20,
        "gb" | "g" | "gib" => 1 << 30,
        "tb" | "t" | "tib" => 1 << 40,
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?} (use kB, MB, GB or TB)"
            ))
        }
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("8kB"), Ok(8192));
        assert_eq!(parse_size("131072"), Ok(131072));
        assert_eq!(parse_size("1 GB"), Ok(1 << 30));
        assert_eq!(parse_size("256mb"), Ok(256 << 20));
        assert!(parse_size("GB").is_err());
        assert!(parse_size("1XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("99999999999TB")
            .unwrap_err()
            .contains("too large"));
    }
}
