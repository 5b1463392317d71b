//! Splitting a table into COPY statements that workers run in parallel.
//!
//! A heap relation is split into ranges of pages read with ctid quals,
//! which PostgreSQL 14+ executes as a TID Range Scan that reads only those
//! pages. There are several ranges per worker, handed out dynamically (by
//! the export's task list), so a worker that hits a slow range does not hold
//! up the others.
//!
//! - `relpages` is only a snapshot of the size: rows may be added at the end
//!   meanwhile, so the last range of each relation is open-ended.
//! - Servers before 14 lack TID Range Scan: ctid quals would make every
//!   range a full sequential scan, so each relation is read by one COPY
//!   (one open range, no ctid quals) and never rescanned.
//! - Views and foreign tables have no ctid: one COPY each, no quals.
//! - Partitioned tables are read per leaf partition, each split by its own
//!   size.

use crate::catalog::TableInfo;

/// Pages `[start, end)`; `end == None` means up to the end of the relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    /// The first page.
    pub start: u64,
    /// The page after the last, or `None` for the end of the relation.
    pub end: Option<u64>,
}

/// Ranges per worker: enough for dynamic balance, few enough that each
/// COPY's fixed cost (planning, a round trip) stays negligible.
pub const RANGES_PER_WORKER: u64 = 4;

/// Version from which ctid ranges are executed as a TID Range Scan.
pub const TID_RANGE_SCAN_VERSION: u32 = 140000;

/// Splits `[0, inf)` into about `RANGES_PER_WORKER × workers` ranges of at
/// least `min_pages` pages (so small tables are not split into many tiny
/// scans). The ranges are disjoint, in order, cover every page, and the last
/// one is open-ended.
pub fn plan_ranges(relpages: u64, workers: usize, min_pages: u64) -> Vec<PageRange> {
    let wanted = (workers.max(1) as u64).saturating_mul(RANGES_PER_WORKER);
    let size = relpages.div_ceil(wanted).max(min_pages).max(1);
    let count = relpages.div_ceil(size).max(1);
    (0..count)
        .map(|i| PageRange {
            start: i * size,
            end: (i + 1 < count).then(|| (i + 1) * size),
        })
        .collect()
}

/// Splits `range` of a relation of `relpages` pages like [`plan_ranges`]
/// (for `workers`, at least `min_pages` a range): the ranges are disjoint,
/// in order and cover `range` exactly; an open-ended `range` ends with an
/// open-ended one (pages past `relpages` are read too).
pub fn split_range(
    range: PageRange,
    relpages: u64,
    workers: usize,
    min_pages: u64,
) -> Vec<PageRange> {
    let end = range.end.unwrap_or(relpages).max(range.start);
    let mut ranges: Vec<PageRange> = plan_ranges(end - range.start, workers, min_pages)
        .into_iter()
        .map(|r| PageRange {
            start: range.start + r.start,
            end: r.end.map(|e| range.start + e),
        })
        .collect();
    if let Some(last) = ranges.last_mut() {
        last.end = range.end;
    }
    ranges
}

/// `n` ranges (at least one) of about equal size covering pages
/// `[0, relpages)`, the last open-ended: the fragments of a table that
/// processes read apart under one snapshot. Some are empty when the table
/// has fewer pages than `n`.
pub fn fragment_ranges(relpages: u64, n: usize) -> Vec<PageRange> {
    let n = n.max(1) as u64;
    // u128: relpages × i cannot overflow.
    let bound = |i: u64| (u128::from(relpages) * u128::from(i) / u128::from(n)) as u64;
    (0..n)
        .map(|i| PageRange {
            start: bound(i),
            end: (i + 1 < n).then(|| bound(i + 1)),
        })
        .collect()
}

/// What one COPY reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSpec {
    /// Quoted, schema-qualified relation.
    pub relation: String,
    /// Select expressions (see `SelectColumn::select_expr`).
    pub columns: Vec<String>,
    /// The user's WHERE condition; parenthesized when used.
    pub filter: Option<String>,
}

/// `COPY (SELECT cols FROM ONLY rel WHERE ctid quals AND (filter)) TO STDOUT
/// (FORMAT binary)`. `None` or `[0, inf)` reads the whole relation without
/// ctid quals.
pub fn copy_sql(spec: &ReadSpec, range: Option<PageRange>) -> String {
    let mut conds = Vec::new();
    if let Some(r) = range {
        if r.start > 0 {
            conds.push(format!("ctid >= '({},0)'::tid", r.start));
        }
        if let Some(end) = r.end {
            conds.push(format!("ctid < '({end},0)'::tid"));
        }
    }
    copy_select(spec, conds)
}

/// `COPY` of the rows in `blocks` (any order) only: a TID Scan of every
/// line pointer a block can hold (`items_per_page`, PostgreSQL's
/// `MaxHeapTuplesPerPage`), the list built by the server from the block
/// numbers. One statement reads scattered blocks that would otherwise take
/// one range each; offsets past a page's last line pointer and blocks past
/// the end cost a lookup each and return nothing.
pub fn copy_sql_blocks(spec: &ReadSpec, blocks: &[u64], items_per_page: u32) -> String {
    let list: Vec<String> = blocks.iter().map(u64::to_string).collect();
    copy_select(
        spec,
        vec![format!(
            "ctid = ANY (ARRAY(SELECT format('(%s,%s)', b, o)::tid \
             FROM unnest('{{{}}}'::int8[]) b, generate_series(1, {items_per_page}) o))",
            list.join(",")
        )],
    )
}

/// `COPY (SELECT cols FROM ONLY rel WHERE conds AND (filter)) TO STDOUT
/// (FORMAT binary)`.
fn copy_select(spec: &ReadSpec, mut conds: Vec<String>) -> String {
    if let Some(f) = &spec.filter {
        // The newline ends a trailing `--` comment in the user's text.
        conds.push(format!("({f}\n)"));
    }
    let mut sql = format!(
        "COPY (SELECT {} FROM ONLY {}",
        spec.columns.join(", "),
        spec.relation
    );
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(") TO STDOUT (FORMAT binary)");
    sql
}

/// `COPY (sql) TO STDOUT (FORMAT binary)` for a user query (trailing
/// semicolons removed; a newline ends a trailing `--` comment).
pub fn copy_query_sql(sql: &str) -> String {
    let q = sql
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    format!("COPY (\n{q}\n) TO STDOUT (FORMAT binary)")
}

/// One COPY of a planned export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadTask {
    /// Index of the task (the `partition` of its chunks).
    pub partition: u32,
    /// The relation, columns and filter.
    pub spec: ReadSpec,
    /// The pages it reads, or `None` for the whole relation without ctid
    /// quals.
    pub range: Option<PageRange>,
}

impl ReadTask {
    /// The `COPY` statement, as [`copy_sql`] writes it.
    pub fn sql(&self) -> String {
        copy_sql(&self.spec, self.range)
    }
}

/// The COPY statements that read `table` (its leaf partitions when it is
/// partitioned) following the rules in the module documentation.
pub fn plan_table_reads(
    table: &TableInfo,
    columns: &[String],
    filter: Option<&str>,
    workers: usize,
    min_pages: u64,
    server_version_num: u32,
) -> Vec<ReadTask> {
    let leaves: Vec<&TableInfo> = if table.is_partitioned() {
        table.partitions.iter().collect()
    } else {
        vec![table]
    };
    let mut tasks = Vec::new();
    for leaf in leaves {
        let spec = ReadSpec {
            relation: leaf.qualified(),
            columns: columns.to_vec(),
            filter: filter.map(str::to_string),
        };
        let ranges: Vec<Option<PageRange>> =
            if server_version_num < TID_RANGE_SCAN_VERSION || !leaf.has_ctid() {
                vec![None]
            } else {
                plan_ranges(leaf.relpages, workers, min_pages)
                    .into_iter()
                    .map(Some)
                    .collect()
            };
        for range in ranges {
            tasks.push(ReadTask {
                partition: tasks.len() as u32,
                spec: spec.clone(),
                range,
            });
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_cover(r: &[PageRange]) {
        assert_eq!(r[0].start, 0);
        for w in r.windows(2) {
            assert_eq!(w[0].end, Some(w[1].start), "gap or overlap in {r:?}");
        }
        assert_eq!(r.last().unwrap().end, None);
    }

    #[test]
    fn ranges_cover_everything_without_overlap() {
        for (pages, workers, min) in [
            (0, 4, 1),
            (1, 4, 1),
            (1000, 4, 1),
            (1001, 3, 10),
            (5, 8, 1),
            (1 << 40, 16, 1024),
        ] {
            let r = plan_ranges(pages, workers, min);
            check_cover(&r);
            assert!(r.len() as u64 <= (workers as u64 * RANGES_PER_WORKER).max(1));
        }
    }

    #[test]
    fn splits_of_a_range_cover_it_exactly() {
        for (start, end, relpages, workers) in [
            (0, Some(0), 100, 4),
            (10, Some(50), 100, 4),
            (10, None, 100, 2),
            (200, None, 100, 2),
            (5, Some(6), 0, 8),
        ] {
            let range = PageRange { start, end };
            let r = split_range(range, relpages, workers, 1);
            assert_eq!(r[0].start, start, "{range:?}");
            for w in r.windows(2) {
                assert_eq!(w[0].end, Some(w[1].start), "gap or overlap in {r:?}");
            }
            assert_eq!(r.last().unwrap().end, end, "{r:?}");
        }
        assert!(
            split_range(
                PageRange {
                    start: 10,
                    end: Some(50)
                },
                0,
                4,
                1
            )
            .len()
                > 4
        );
    }

    #[test]
    fn fragments_cover_the_table() {
        for (pages, n) in [(0, 1), (0, 4), (3, 8), (1000, 7), (1 << 40, 16)] {
            let r = fragment_ranges(pages, n);
            assert_eq!(r.len(), n);
            check_cover(&r);
            assert!(r[n - 1].start <= pages);
        }
    }

    #[test]
    fn several_ranges_per_worker_but_not_tiny() {
        let r = plan_ranges(1600, 4, 1);
        assert_eq!(r.len(), 16);
        assert_eq!(
            r[0],
            PageRange {
                start: 0,
                end: Some(100)
            }
        );
        // The minimum size wins over the count.
        let r = plan_ranges(1600, 4, 1000);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[1],
            PageRange {
                start: 1000,
                end: None
            }
        );
        assert_eq!(
            plan_ranges(0, 4, 1),
            vec![PageRange {
                start: 0,
                end: None
            }]
        );
    }

    #[test]
    fn copy_statements() {
        let spec = ReadSpec {
            relation: "\"s\".\"t\"".into(),
            columns: vec!["\"a\"".into(), "\"b\"::text".into()],
            filter: Some("a > 1 -- comment".into()),
        };
        assert_eq!(
            copy_sql(&spec, Some(PageRange { start: 10, end: Some(20) })),
            "COPY (SELECT \"a\", \"b\"::text FROM ONLY \"s\".\"t\" WHERE ctid >= '(10,0)'::tid AND ctid < '(20,0)'::tid AND (a > 1 -- comment\n)) TO STDOUT (FORMAT binary)"
        );
        let spec = ReadSpec {
            filter: None,
            ..spec
        };
        assert_eq!(
            copy_sql(
                &spec,
                Some(PageRange {
                    start: 0,
                    end: None
                })
            ),
            "COPY (SELECT \"a\", \"b\"::text FROM ONLY \"s\".\"t\") TO STDOUT (FORMAT binary)"
        );
        assert_eq!(
            copy_sql(&spec, Some(PageRange { start: 5, end: None })),
            "COPY (SELECT \"a\", \"b\"::text FROM ONLY \"s\".\"t\" WHERE ctid >= '(5,0)'::tid) TO STDOUT (FORMAT binary)"
        );
        assert_eq!(
            copy_query_sql(" SELECT 1 ;; "),
            "COPY (\nSELECT 1\n) TO STDOUT (FORMAT binary)"
        );
    }

    fn table(relkind: char, relpages: u64) -> TableInfo {
        TableInfo {
            oid: 1,
            schema: "s".into(),
            name: "t".into(),
            relkind,
            relpages,
            block_size: 8192,
            bytes: relpages * 8192,
            reltuples: 0.0,
            partitions: vec![],
        }
    }

    #[test]
    fn planning_rules() {
        let cols = vec!["\"a\"".to_string()];
        // PostgreSQL 14+: ranges.
        let t = plan_table_reads(&table('r', 1000), &cols, None, 2, 1, 150000);
        assert_eq!(t.len(), 8);
        assert!(t.iter().enumerate().all(|(i, t)| t.partition == i as u32));
        // Before 14: one COPY without ctid quals.
        let t = plan_table_reads(&table('r', 1000), &cols, None, 2, 1, 130000);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].range, None);
        assert!(!t[0].sql().contains("ctid"));
        // Views: one COPY.
        let t = plan_table_reads(&table('v', 0), &cols, None, 8, 1, 150000);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].range, None);
        // Partitioned: per leaf.
        let mut p = table('p', 0);
        let mut a = table('r', 100);
        a.name = "a".into();
        let mut b = table('f', 0);
        b.name = "b".into();
        p.partitions = vec![a, b];
        let t = plan_table_reads(&p, &cols, None, 1, 1, 150000);
        assert_eq!(t.len(), 5);
        assert!(t[..4].iter().all(|t| t.spec.relation == "\"s\".\"a\""));
        assert_eq!(t[4].spec.relation, "\"s\".\"b\"");
        assert_eq!(t[4].range, None);
    }
}
