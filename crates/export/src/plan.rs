//! Turns a request into the COPY statements to run: one per page range of
//! each heap relation, or a single one for a query or a relation without
//! ctids.

use gpupg_source::{
    catalog::{self, SelectColumn},
    ranges::{
        copy_query_sql, copy_sql, plan_table_reads, split_range, PageRange, ReadSpec,
        TID_RANGE_SCAN_VERSION,
    },
    Connection, SourceError, TableInfo,
};

use crate::{ExportError, ExportRequest, RequestError, Target};

/// Ranges planned per connection (see `plan_table_reads`).
const RANGES_PER_CONNECTION: usize = 4;
/// No range smaller than this many pages (128 KiB at 8 KiB pages): below
/// that, a COPY statement's start-up costs more than the range.
const MIN_RANGE_PAGES: u64 = 16;

/// The COPY statements of one export and what they read.
pub(crate) struct ExportPlan {
    pub columns: Vec<SelectColumn>,
    pub statements: Vec<String>,
    /// What the target is called in messages and reports.
    pub label: String,
    /// Planner's row estimate, for the progress bar's ETA.
    pub estimated_rows: Option<u64>,
    /// Why the plan is serial, if it is (shown to the user).
    pub serial_reason: Option<String>,
    /// The table, and what one COPY of a page range of it selects (for the
    /// heap path's fallback ranges); `None` for a query.
    pub table: Option<(TableInfo, ReadSpec)>,
}

pub(crate) fn plan_export(
    conn: &mut Connection,
    req: &ExportRequest<'_>,
) -> Result<ExportPlan, ExportError> {
    match &req.target {
        Target::Query(sql) => {
            if req.filter.is_some() {
                return Err(RequestError::FilterOnQuery.into());
            }
            if req.columns.is_some() {
                return Err(RequestError::ColumnsOnQuery.into());
            }
            if req.pages.is_some() {
                return Err(ExportError::Invalid(
                    "a page range applies to a table, not a query".into(),
                ));
            }
            let columns = catalog::query_columns(conn, sql, req.unsupported)?;
            let select = columns
                .iter()
                .map(|c| c.select_expr.clone())
                .collect::<Vec<_>>()
                .join(", ");
            // Wrapping keeps the user's statement intact while letting
            // unsupported columns be cast to text by name.
            let wrapped = format!("SELECT {select} FROM ({sql}) AS gpupg_query");
            Ok(ExportPlan {
                columns,
                statements: vec![copy_query_sql(&wrapped)],
                label: "query".into(),
                estimated_rows: None,
                serial_reason: Some("a query is read on one connection".into()),
                table: None,
            })
        }
        Target::Table(name) => {
            let table = catalog::resolve_table(conn, name)?;
            let columns =
                catalog::table_columns(conn, &table, req.columns.as_deref(), req.unsupported)?;
            let exprs: Vec<String> = columns.iter().map(|c| c.select_expr.clone()).collect();
            if let Some(f) = &req.filter {
                check_filter(conn, &table.qualified(), f)?;
            }
            // `copy_select` puts it in parentheses, the closing one on a
            // line of its own so that a trailing `--` comment ends first.
            let filter = req.filter.clone();
            let version = conn.server_version_num();
            let spec = ReadSpec {
                relation: table.qualified(),
                columns: exprs,
                filter,
            };
            let mut statements: Vec<String> = match req.pages {
                Some(pages) => page_range_statements(&table, &spec, pages, req.parallel, version)?,
                // Many more ranges than connections, so that a connection
                // that finishes early takes work from the queue instead of
                // idling while one slow range finishes the export.
                None => plan_table_reads(
                    &table,
                    &spec.columns,
                    spec.filter.as_deref(),
                    req.parallel * RANGES_PER_CONNECTION,
                    MIN_RANGE_PAGES,
                    version,
                )
                .iter()
                .map(|t| t.sql())
                .collect(),
            };
            if statements.is_empty() {
                // A partitioned table without partitions has no rows, but the
                // output still carries its schema.
                statements.push(copy_sql(&spec, None));
            }
            let serial_reason = (statements.len() == 1).then(|| {
                if version < TID_RANGE_SCAN_VERSION {
                    "the server is older than PostgreSQL 14 (no TID Range Scan)".to_string()
                } else if !table.has_ctid() && !table.is_partitioned() {
                    format!("{} has no ctids to split on", table.qualified())
                } else {
                    "the table is small".to_string()
                }
            });
            let leaves = if table.is_partitioned() {
                table.partitions.iter().collect()
            } else {
                vec![&table]
            };
            let estimated_rows = leaves
                .iter()
                .map(|t| t.reltuples)
                .filter(|r| *r > 0.0)
                .map(|r| r as u64)
                .reduce(|a, b| a + b);
            Ok(ExportPlan {
                columns,
                statements,
                label: table.qualified(),
                estimated_rows,
                serial_reason,
                table: Some((table, spec)),
            })
        }
    }
}

/// The COPY statements of the pages `pages` of `table` (a plain table or
/// materialized view: a partitioned table or a view has no pages of its
/// own), split among `parallel` connections as a whole table is.
fn page_range_statements(
    table: &TableInfo,
    spec: &ReadSpec,
    pages: PageRange,
    parallel: usize,
    version: u32,
) -> Result<Vec<String>, ExportError> {
    if table.is_partitioned() || !table.has_ctid() {
        let kind = if table.is_partitioned() {
            "a partitioned table (read its partitions apart)"
        } else {
            "not a table (a view or foreign table has no pages)"
        };
        return Err(ExportError::Invalid(format!(
            "a page range reads a plain table or materialized view; {} is {kind}",
            table.qualified()
        )));
    }
    let ranges = if version < TID_RANGE_SCAN_VERSION {
        // Each ctid range would be a sequential scan of the whole table.
        vec![pages]
    } else {
        split_range(
            pages,
            table.relpages,
            parallel * RANGES_PER_CONNECTION,
            MIN_RANGE_PAGES,
        )
    };
    Ok(ranges
        .into_iter()
        .map(|r| copy_sql(spec, Some(r)))
        .collect())
}

/// Has the server parse the `--where` condition on `relation` (Parse and
/// Describe, nothing runs), so a filter that is not one condition on the
/// table's columns fails before any output exists, with the server's
/// reason and not the COPY it would go into. The COPY statements are sent
/// through Parse too, so this is for the message: a filter could not add a
/// statement there either.
fn check_filter(conn: &mut Connection, relation: &str, filter: &str) -> Result<(), ExportError> {
    match conn.describe(&format!("SELECT FROM ONLY {relation} WHERE ({filter}\n)")) {
        Ok(_) => Ok(()),
        Err(SourceError::Server { message, .. }) => Err(ExportError::FilterNotACondition {
            filter: filter.to_string(),
            table: relation.to_string(),
            message,
        }),
        Err(e) => Err(e.into()),
    }
}
