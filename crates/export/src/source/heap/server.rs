//! Server calls of the heap path.

use gpupg_source::Connection;
use gpupg_source::SourceError;

/// Runs `CHECKPOINT`, which writes every page that was dirty when it began,
/// so that the data files hold at least every change made before. Needs
/// superuser or (PostgreSQL 15+) membership in `pg_checkpoint`; run it on a
/// connection outside the export's transaction, since a refusal aborts the
/// transaction it runs in.
pub fn checkpoint(conn: &mut Connection) -> Result<(), SourceError> {
    conn.execute("CHECKPOINT").map_err(|e| match e.sqlstate() {
        Some("42501") => SourceError::HeapUnavailable {
            table: String::new(),
            reason: "CHECKPOINT was refused: reading heap files needs superuser or \
                     membership in pg_checkpoint (PostgreSQL 15+), since without a \
                     checkpoint the files may lack committed changes still in shared buffers"
                .into(),
        },
        _ => e,
    })
}

/// The server's current WAL insert position (`pg_current_wal_insert_lsn()`),
/// as a 64-bit LSN.
pub fn wal_insert_lsn(conn: &mut Connection) -> Result<u64, SourceError> {
    let rows = conn.query(
        "reading the WAL insert position",
        "SELECT pg_catalog.pg_current_wal_insert_lsn()",
        &[],
    )?;
    let text = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    parse_lsn(&text).ok_or_else(|| SourceError::Protocol {
        host: conn.endpoint().to_string(),
        during: "reading the WAL insert position".into(),
        message: format!("not an LSN: {text:?}"),
    })
}

/// `"16/B374D848"` -> `0x16_B374D848`.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

#[cfg(test)]
mod tests {
    use super::parse_lsn;

    #[test]
    fn lsns() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        assert_eq!(parse_lsn("1/2/3"), None);
        assert_eq!(parse_lsn("x"), None);
        assert_eq!(parse_lsn("100000000/0"), None);
    }
}
