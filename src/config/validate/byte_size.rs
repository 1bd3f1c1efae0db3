//! Byte sizes as written in `max_body`: `1048576`, `512KiB`, `10MiB`, `1GiB`, `1MB`.

const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

/// Integer bytes, or an integer and one of B, KB, MB, GB, KiB, MiB, GiB (a space between is allowed).
pub(super) fn parse_byte_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("`{text}` is not a size like 1048576, 512KiB, 10MiB or 1GB");
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    let multiplier = match unit {
        "" => 1,
        unit => {
            let unit = unit.strip_prefix(' ').unwrap_or(unit);
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .ok_or_else(invalid)?
                .1
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_byte_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_byte_size("0"), Ok(0));
        assert_eq!(parse_byte_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_byte_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_byte_size("10 MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_byte_size("2KB"), Ok(2_000));
        assert_eq!(parse_byte_size("7B"), Ok(7));
    }

    #[test]
    fn sizes_reject_what_they_do_not_know() {
        for bad in [
            "", "MiB", "10 ", "10mib", "1.5MiB", "-1", "10  MiB", "10MiBs", "1TB",
        ] {
            assert!(parse_byte_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_byte_size("99999999999999999999GiB"),
            Err(
                "`99999999999999999999GiB` is not a size like 1048576, 512KiB, 10MiB or 1GB".into()
            )
        );
        assert_eq!(
            parse_byte_size("99999999999GiB"),
            Err("`99999999999GiB` is too large".into())
        );
    }
}
