//! Reading `pg_controldata` output (run with `LC_ALL=C`, so the labels are
//! the English ones below).
//!
//! Every line is `Label:  value`; no label holds a colon, some values do
//! (`Latest checkpoint's NextXID: 0:735`), so a line splits at its first
//! colon. The text comes from a program, so anything missing or malformed
//! is a [`PgError::Protocol`], never a panic.

use super::lsn::parse_lsn;
use super::types::ControlData;
use super::PgError;

const SYSID: &str = "Database system identifier";
const CHECKPOINT: &str = "Latest checkpoint location";
const TIMELINE: &str = "Latest checkpoint's TimeLineID";
const STATE: &str = "Database cluster state";

/// What pg_controldata prints when `global/pg_control` fails its CRC check
/// (a torn read or a corrupt file): the numbers that follow are untrustworthy.
const BAD_CRC: &str = "Calculated CRC checksum does not match";

/// Parses the whole output of `pg_controldata`.
pub(crate) fn parse(text: &str) -> Result<ControlData, PgError> {
    if text.contains(BAD_CRC) {
        return Err(PgError::Protocol(
            "pg_controldata says pg_control fails its CRC check; its values are untrustworthy"
                .into(),
        ));
    }
    let value = |label: &str| -> Result<&str, PgError> {
        text.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(l, _)| l.trim() == label)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PgError::Protocol(format!("pg_controldata printed no \"{label}\"")))
    };
    let number = |label: &str| -> Result<u64, PgError> {
        let v = value(label)?;
        v.parse::<u64>().map_err(|_| {
            PgError::Protocol(format!(
                "pg_controldata's \"{label}\" is {v:?}, not a number"
            ))
        })
    };
    let lsn = value(CHECKPOINT)?;
    let checkpoint_lsn = parse_lsn(lsn).map_err(|_| {
        PgError::Protocol(format!(
            "pg_controldata's \"{CHECKPOINT}\" is {lsn:?}, not a WAL position"
        ))
    })?;
    let timeline = number(TIMELINE)?;
    Ok(ControlData {
        backup_label: false,
        sysid: number(SYSID)?,
        checkpoint_lsn,
        timeline: u32::try_from(timeline).map_err(|_| {
            PgError::Protocol(format!(
                "pg_controldata's \"{TIMELINE}\" is {timeline}, not a timeline"
            ))
        })?,
        state: value(STATE)?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of PostgreSQL 15's output for a cleanly stopped primary.
    const SHUT_DOWN: &str = "\
pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7401234567890123456
Database cluster state:               shut down
pg_control last modified:             Mon Jun  3 10:00:00 2024
Latest checkpoint location:           0/1719A28
Latest checkpoint's REDO location:    0/1719A28
Latest checkpoint's REDO WAL file:    000000010000000000000001
Latest checkpoint's TimeLineID:       1
Latest checkpoint's PrevTimeLineID:   1
Latest checkpoint's full_page_writes: on
Latest checkpoint's NextXID:          0:735
Latest checkpoint's NextOID:          13555
Time of latest checkpoint:            Mon Jun  3 10:00:00 2024
Minimum recovery ending location:     0/0
Min recovery ending loc's timeline:   0
";

    #[test]
    fn parses_a_shut_down_primary() {
        let c = parse(SHUT_DOWN).expect("parse");
        assert_eq!(
            c,
            ControlData {
                sysid: 7_401_234_567_890_123_456,
                checkpoint_lsn: 0x171_9A28,
                timeline: 1,
                state: "shut down".into(),
                backup_label: false,
            }
        );
        assert!(c.is_clean_shutdown());
    }

    #[test]
    fn parses_a_running_standby_on_a_later_timeline() {
        let text = SHUT_DOWN
            .replace("shut down\n", "in archive recovery\n")
            .replace("0/1719A28\n", "1A/FF000028\n")
            .replace(
                "Latest checkpoint's TimeLineID:       1",
                "Latest checkpoint's TimeLineID:       12",
            );
        let c = parse(&text).expect("parse");
        assert_eq!(c.state, "in archive recovery");
        assert_eq!(c.checkpoint_lsn, 0x1A_FF00_0028);
        assert_eq!(c.timeline, 12);
        assert!(!c.is_clean_shutdown());
        let in_recovery = SHUT_DOWN.replace("shut down\n", "shut down in recovery\n");
        let c = parse(&in_recovery).expect("parse");
        assert_eq!(c.state, "shut down in recovery");
        assert!(c.is_clean_shutdown());
    }

    #[test]
    fn garbled_output_is_an_error() {
        let garbled = [
            String::new(),
            "pg_controldata: fatal: could not open file".into(),
            // Translated labels (LC_ALL not honoured).
            SHUT_DOWN.replace("Database system identifier", "Identifiant du système"),
            SHUT_DOWN.replace("7401234567890123456", "74O1234567890123456"),
            SHUT_DOWN.replace("7401234567890123456", "-1"),
            SHUT_DOWN.replace("7401234567890123456", "99999999999999999999"),
            SHUT_DOWN.replace(
                "Latest checkpoint location:           0/1719A28",
                "Latest checkpoint location:           01719A28",
            ),
            SHUT_DOWN.replace("TimeLineID:       1", "TimeLineID:       4294967296"),
            SHUT_DOWN.replace("TimeLineID:       1", "TimeLineID:"),
            SHUT_DOWN.replace("shut down\n", "\n"),
            SHUT_DOWN.lines().take(4).collect::<Vec<_>>().join("\n"),
            format!(
                "WARNING: Calculated CRC checksum does not match value stored in file.\n\
                 Either the file is corrupt, or it has a different layout than this program\n\
                 is expecting.  The results below are untrustworthy.\n\n{SHUT_DOWN}"
            ),
            "\u{0}\u{ffff}:::\n:\n::::".into(),
        ];
        for text in garbled {
            assert!(
                matches!(parse(&text), Err(PgError::Protocol(_))),
                "{text:?} parsed"
            );
        }
    }
}
