//! WAL positions as `u64`, PostgreSQL's `pg_lsn`: text `X/Y`, two hex
//! halves of at most 8 digits each.

use super::PgError;

/// Parses `16/B374D848`. Anything else is an error, never a panic: the text
/// comes from the server.
pub fn parse_lsn(text: &str) -> Result<u64, PgError> {
    let bad = || PgError::BadLsn(text.to_owned());
    let (hi, lo) = text.trim().split_once('/').ok_or_else(bad)?;
    let half = |s: &str| {
        if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u32::from_str_radix(s, 16).map_err(|_| bad())
    };
    Ok((u64::from(half(hi)?) << 32) | u64::from(half(lo)?))
}

/// Writes `lsn` the way PostgreSQL does (`0/3000060`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses an optional LSN column (NULL on a standby that has not received
/// anything yet).
pub(crate) fn parse_opt(text: Option<String>) -> Result<Option<u64>, PgError> {
    text.map(|t| parse_lsn(&t)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for (text, value) in [
            ("0/0", 0u64),
            ("0/3000060", 0x300_0060),
            ("16/B374D848", 0x16_B374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
        ] {
            assert_eq!(parse_lsn(text).ok(), Some(value), "{text}");
            assert_eq!(format_lsn(value), text);
        }
        assert_eq!(parse_lsn("16/b374d848").ok(), Some(0x16_B374_D848));
    }

    #[test]
    fn bad_text_is_an_error() {
        for text in [
            "",
            "/",
            "0/",
            "/0",
            "1",
            "g/0",
            "0/-1",
            "123456789/0",
            "0/0/0",
            "+1/0",
        ] {
            assert!(
                matches!(parse_lsn(text), Err(PgError::BadLsn(_))),
                "{text:?} parsed"
            );
        }
    }
}
