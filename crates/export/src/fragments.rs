//! One table read by many processes under one snapshot: a coordinator
//! ([`FragmentPlan::begin`]) opens a connection, exports its snapshot and
//! splits the table's pages into ranges; each worker reads one range with
//! an [`crate::ExportRequest`] whose `snapshot` and `pages` are the plan's,
//! so the union of the fragments is exactly the table as of the snapshot,
//! whatever other sessions commit meanwhile. The coordinator's transaction
//! must stay open until the last fragment has started (the snapshot
//! disappears with it), so the plan keeps its connection until closed.

use gpupg_source::{
    catalog, fragment_ranges, snapshot::begin_exported_snapshot, ConnectConfig, Connection,
    PageRange,
};

use crate::ExportError;

/// The coordinator of a fragmented read: an open transaction holding the
/// exported snapshot, and the page ranges that cover the table.
pub struct FragmentPlan {
    /// Kept open: the snapshot lives as long as its transaction.
    conn: Connection,
    snapshot: String,
    table: String,
    relpages: u64,
    ranges: Vec<PageRange>,
}

impl FragmentPlan {
    /// Connects, exports a snapshot and splits `table` (a plain table or a
    /// materialized view) into `fragments` page ranges of about equal size,
    /// the last open-ended so that rows past its size at the snapshot are
    /// read too.
    pub fn begin(
        connect: &ConnectConfig,
        table: &str,
        fragments: usize,
    ) -> Result<FragmentPlan, ExportError> {
        if fragments == 0 {
            return Err(ExportError::Invalid(
                "at least one fragment is needed".into(),
            ));
        }
        let mut conn = Connection::connect(connect)?;
        let snapshot = begin_exported_snapshot(&mut conn)?;
        let info = catalog::resolve_table(&mut conn, table)?;
        if info.is_partitioned() || !info.has_ctid() {
            let kind = if info.is_partitioned() {
                "a partitioned table (plan its partitions apart)"
            } else {
                "not a table (a view or foreign table has no pages to split)"
            };
            return Err(ExportError::Invalid(format!(
                "fragments split a plain table or materialized view; {} is {kind}",
                info.qualified()
            )));
        }
        Ok(FragmentPlan {
            conn,
            snapshot,
            table: info.qualified(),
            relpages: info.relpages,
            ranges: fragment_ranges(info.relpages, fragments),
        })
    }

    /// The exported snapshot's id, for [`crate::ExportRequest::snapshot`].
    pub fn snapshot(&self) -> &str {
        &self.snapshot
    }

    /// The table, schema-qualified and quoted, for [`crate::Target::Table`].
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The table's size in pages when the plan began.
    pub fn relpages(&self) -> u64 {
        self.relpages
    }

    /// One page range per fragment, in order, covering the table.
    pub fn ranges(&self) -> &[PageRange] {
        &self.ranges
    }

    /// Ends the coordinator's transaction and connection: fragments not
    /// started by then fail ([`ExportError::SnapshotGone`]). Dropping the
    /// plan does the same without waiting for the server's answer.
    pub fn close(mut self) -> Result<(), ExportError> {
        self.conn.execute("COMMIT")?;
        Ok(())
    }
}
