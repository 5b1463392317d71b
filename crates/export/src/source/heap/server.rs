//! Server calls of the heap path.

use gpupg_source::quote_ident;
use gpupg_source::Connection;
use gpupg_source::SourceError;

/// The pages of one relation dirty in shared buffers when listed
/// ([`dirty_blocks`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirtyBlocks {
    /// Dirty blocks of the main fork, sorted.
    pub heap: Vec<u32>,
    /// Dirty blocks of the visibility map fork (counted for the report:
    /// a trusted page needs `PD_ALL_VISIBLE` in its own header too, so a
    /// stale visibility map page in the files cannot make one trusted).
    pub vm: u64,
}

impl DirtyBlocks {
    /// Whether block `block` of the main fork was dirty.
    pub fn contains(&self, block: u64) -> bool {
        u32::try_from(block).is_ok_and(|b| self.heap.binary_search(&b).is_ok())
    }
}

/// The blocks of each relation of `oids` (any relation with storage: a
/// table, a partition, a TOAST relation) that are dirty in shared buffers
/// now, from the `pg_buffercache` extension, in the order of `oids`. Run
/// after the fence: a page changed before it is then either listed here
/// or already written to the kernel, so in the files `pread` reads (see
/// docs/heap.md). One scan of every buffer for all relations; run it
/// outside the export's transaction (a refusal aborts the transaction).
///
/// [`SourceError::HeapUnavailable`] when the extension is not installed
/// in this database, this user may not read it (superuser or
/// `pg_monitor`) or the server refuses the query otherwise.
pub fn dirty_blocks(conn: &mut Connection, oids: &[u32]) -> Result<Vec<DirtyBlocks>, SourceError> {
    let unavailable = |reason: String| SourceError::HeapUnavailable {
        table: String::new(),
        reason,
    };
    let mut out = vec![DirtyBlocks::default(); oids.len()];
    if oids.is_empty() {
        return Ok(out);
    }
    let schema = conn
        .query(
            "looking for the pg_buffercache extension",
            "SELECT n.nspname FROM pg_catalog.pg_extension e \
             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace \
             WHERE e.extname = 'pg_buffercache'",
            &[],
        )?
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .ok_or_else(|| {
            unavailable("the pg_buffercache extension is not installed in this database".into())
        })?;
    let list = oid_list(oids);
    // A relation's buffers are tagged with its file node, its tablespace
    // (0 in pg_class: the database's default) and the database.
    let sql = format!(
        "WITH db AS (SELECT oid, dattablespace FROM pg_catalog.pg_database \
                     WHERE datname = pg_catalog.current_database()), \
              r AS (SELECT c.oid, pg_catalog.pg_relation_filenode(c.oid) AS node, \
                     CASE c.reltablespace WHEN 0 THEN (SELECT dattablespace FROM db) \
                     ELSE c.reltablespace END AS spc \
                     FROM pg_catalog.pg_class c WHERE c.oid IN ({list})) \
         SELECT r.oid, b.relforknumber, b.relblocknumber \
         FROM {}.pg_buffercache b JOIN r ON b.relfilenode = r.node AND b.reltablespace = r.spc \
         WHERE b.isdirty AND b.reldatabase = (SELECT oid FROM db) AND b.relforknumber IN (0, 2)",
        quote_ident(&schema)
    );
    let rows = conn
        .query("listing the pages dirty in shared buffers", &sql, &[])
        .map_err(|e| match e.sqlstate() {
            Some("42501") => unavailable(
                "pg_buffercache is not readable by this user (it needs superuser or pg_monitor)"
                    .into(),
            ),
            // Another version of the extension, say: the list cannot be had.
            Some(_) => unavailable(format!("pg_buffercache cannot be read: {e}")),
            None => e,
        })?;
    for row in rows {
        let get = |i: usize| {
            row.get(i)
                .cloned()
                .flatten()
                .and_then(|v| v.parse::<u64>().ok())
        };
        let (Some(oid), Some(fork), Some(block)) = (get(0), get(1), get(2)) else {
            return Err(SourceError::Protocol {
                host: conn.endpoint().to_string(),
                during: "listing the pages dirty in shared buffers".into(),
                message: format!("not a relation, fork and block: {row:?}"),
            });
        };
        let Some(i) = oids.iter().position(|&o| u64::from(o) == oid) else {
            continue;
        };
        match (fork, u32::try_from(block)) {
            (0, Ok(b)) => out[i].heap.push(b),
            (2, _) => out[i].vm += 1,
            _ => {}
        }
    }
    for d in &mut out {
        d.heap.sort_unstable();
        d.heap.dedup();
    }
    Ok(out)
}

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
    let during = "reading the WAL insert position";
    let text = first_value(
        conn,
        during,
        "SELECT pg_catalog.pg_current_wal_insert_lsn()",
    )?;
    parse_lsn(&text).ok_or_else(|| not_a(conn, during, "an LSN", &text))
}

/// The main forks' sizes of relations `oids` together, in bytes
/// (`pg_relation_size`: the files as they are now, unlike `relpages`,
/// which only VACUUM and ANALYZE set and ANALYZE never sets for a TOAST
/// relation).
pub fn relations_bytes(conn: &mut Connection, oids: &[u32]) -> Result<u64, SourceError> {
    if oids.is_empty() {
        return Ok(0);
    }
    let list = oid_list(oids);
    let during = "measuring the TOAST relations";
    let sql = format!(
        "SELECT COALESCE(sum(pg_catalog.pg_relation_size(c.oid)), 0)::text \
         FROM pg_catalog.pg_class c WHERE c.oid IN ({list})"
    );
    let text = first_value(conn, during, &sql)?;
    text.parse()
        .map_err(|_| not_a(conn, during, "a size", &text))
}

/// `oids` as SQL's list `1, 2, 3`.
pub fn oid_list(oids: &[u32]) -> String {
    oids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first column of the first row `sql` returns, as text (empty when
/// there is none or it is NULL).
pub fn first_value(conn: &mut Connection, during: &str, sql: &str) -> Result<String, SourceError> {
    let rows = conn.query(during, sql, &[])?;
    Ok(rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default())
}

/// The server answered `text` where `what` was expected.
fn not_a(conn: &Connection, during: &str, what: &str, text: &str) -> SourceError {
    SourceError::Protocol {
        host: conn.endpoint().to_string(),
        during: during.into(),
        message: format!("not {what}: {text:?}"),
    }
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
    use super::{parse_lsn, DirtyBlocks};

    #[test]
    fn dirty_block_lookup() {
        let d = DirtyBlocks {
            heap: vec![1, 5, 9],
            vm: 0,
        };
        assert!(d.contains(5) && d.contains(1) && d.contains(9));
        assert!(!d.contains(0) && !d.contains(6) && !d.contains(u64::from(u32::MAX) + 5));
    }

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
