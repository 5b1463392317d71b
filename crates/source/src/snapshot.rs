//! One consistent snapshot for all connections of an export.
//!
//! The first connection opens a REPEATABLE READ transaction and exports its
//! snapshot; every other connection imports it, so all of them see the same
//! rows whatever commits meanwhile. The exporting connection must stay in
//! its transaction until the others have imported the snapshot (the
//! snapshot disappears when that transaction ends).

use crate::conn::Connection;
use crate::error::SourceError;
use crate::sql::quote_literal;

/// Starts a read-only REPEATABLE READ transaction on `conn` and returns its
/// exported snapshot id.
pub fn begin_exported_snapshot(conn: &mut Connection) -> Result<String, SourceError> {
    begin(conn)?;
    let rows = conn.query(
        "exporting the snapshot the connections share",
        "SELECT pg_catalog.pg_export_snapshot()",
        &[],
    )?;
    rows.first()
        .and_then(|r| r.first())
        .and_then(|v| v.clone())
        .ok_or_else(|| {
            conn.protocol_error(
                "exporting the snapshot",
                "pg_export_snapshot() returned no value",
            )
        })
}

/// Starts a read-only REPEATABLE READ transaction on `conn` that sees the
/// snapshot `id` exported by another connection.
pub fn begin_with_snapshot(conn: &mut Connection, id: &str) -> Result<(), SourceError> {
    begin(conn)?;
    // SET TRANSACTION SNAPSHOT takes no parameters, hence the literal.
    let set = format!("SET TRANSACTION SNAPSHOT {}", quote_literal(id));
    if let Err(e) = conn.query("importing the export's snapshot", &set, &[]) {
        // Leave the session outside the failed transaction.
        let _ = conn.execute("ROLLBACK");
        return Err(e);
    }
    Ok(())
}

/// Opens the read-only REPEATABLE READ transaction of an export's
/// connection (errors say so, not the statement).
fn begin(conn: &mut Connection) -> Result<(), SourceError> {
    conn.query(
        "starting the export's read-only transaction",
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        &[],
    )
    .map(|_| ())
}
