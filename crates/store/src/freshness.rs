//! Whether a table changed since it was loaded, from what PostgreSQL keeps
//! anyway, in one query:
//!
//! - each relation's `relfilenode` (changed by TRUNCATE, VACUUM FULL,
//!   CLUSTER, REFRESH MATERIALIZED VIEW, rewriting ALTER TABLEs) and the
//!   `xmin` of its `pg_class` row (changed by any other ALTER TABLE; VACUUM
//!   and ANALYZE update the row in place and leave it);
//! - the size of the main fork (grows with most inserts and updates);
//! - `n_tup_ins + n_tup_upd + n_tup_del` of `pg_stat_all_tables` (every
//!   row change, even in place). Those counters are exact but not
//!   immediate: a session publishes them when it goes idle, at most once a
//!   second, so a change can show up to a second later (up to 10 s when
//!   the writing session committed twice within a second and stayed idle,
//!   at once when it disconnects). Aborted changes count too, which only
//!   costs a refresh that finds the same rows.
//!
//! A partitioned table is the sum over its partitions. Views have no
//! storage and never look changed.

use gpupg_source::{ConnectConfig, Connection, Param, SourceError};

use crate::error::StoreError;

/// What a table looked like at one moment; equal fingerprints mean no
/// change in between (within the counters' delay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// `oid:relfilenode:xmin` of the table and its partitions.
    relations: String,
    bytes: String,
    tuple_changes: String,
}

/// A fingerprint and the WAL position read with it.
#[derive(Debug, Clone)]
pub(crate) struct Observation {
    pub fingerprint: Fingerprint,
    /// The WAL insert position (the replay position on a standby).
    pub wal_lsn: String,
}

/// Reads the table's fingerprint and the WAL position on one connection.
/// A table that does not exist, or a name that is not one, fails the load
/// with a message about the name the user gave.
pub(crate) fn observe(connect: &ConnectConfig, table: &str) -> Result<Observation, StoreError> {
    match query(connect, table) {
        Ok(Some(o)) => Ok(o),
        Ok(None) => Err(StoreError::Internal(format!(
            "the change check of {table} returned no row"
        ))),
        Err(e @ (SourceError::NoSuchTable { .. } | SourceError::BadTableName { .. })) => {
            Err(StoreError::Load {
                name: table.to_string(),
                source: Box::new(e.into()),
            })
        }
        Err(source) => Err(StoreError::Freshness {
            table: table.to_string(),
            source: Box::new(source),
        }),
    }
}

fn query(connect: &ConnectConfig, table: &str) -> Result<Option<Observation>, SourceError> {
    let mut conn = Connection::connect(connect)?;
    // The name is a parameter, looked up with to_regclass: NULL when there
    // is no such table. pg_partition_tree (PostgreSQL 12) gives nothing
    // for a table that is not partitioned, hence the table itself too.
    let tree = if conn.server_version_num() >= 120_000 {
        "SELECT p.relid FROM t, pg_catalog.pg_partition_tree(t.relid) p UNION "
    } else {
        ""
    };
    let sql = format!(
        "WITH t AS (SELECT pg_catalog.to_regclass($1) AS relid), \
         rel AS ({tree}SELECT relid FROM t WHERE relid IS NOT NULL) \
         SELECT coalesce(string_agg(c.oid::text || ':' || c.relfilenode::text || ':' || c.xmin::text, ',' ORDER BY c.oid), ''), \
                coalesce(sum(pg_relation_size(c.oid)), 0)::text, \
                coalesce(sum(coalesce(s.n_tup_ins, 0) + coalesce(s.n_tup_upd, 0) + coalesce(s.n_tup_del, 0)), 0)::text, \
                (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)::text, \
                (SELECT relid FROM t) IS NOT NULL \
         FROM rel JOIN pg_class c ON c.oid = rel.relid \
         LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid"
    );
    let rows = conn
        .query(
            &format!("checking whether table {table} changed"),
            &sql,
            &[Param::untyped_text(table)],
        )
        .map_err(|e| e.about_table_name(table))?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    if col(4) != "t" {
        return Err(SourceError::NoSuchTable {
            table: table.to_string(),
        });
    }
    Ok(Some(Observation {
        fingerprint: Fingerprint {
            relations: col(0),
            bytes: col(1),
            tuple_changes: col(2),
        },
        wal_lsn: col(3),
    }))
}
