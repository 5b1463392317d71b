//! Before any file is read (and before the checkpoint): how many of the
//! table's pages would fall back to COPY, estimated from a sample of its
//! blocks, so that `--source auto` reads through COPY when the heap path
//! would mostly read the files for nothing. The converter says which types
//! it converts ([`TupleLayout::unconverted_outputs`]); values stored out of
//! line and lz4-compressed values count while the heap path sends their
//! pages to COPY.

use gpupg_format::heap::TupleLayout;
use gpupg_source::{quote_ident, Connection, SelectColumn, TableInfo};

/// Whether an lz4-compressed value sends its page to COPY: it does not
/// since lz4 is decompressed from the pages (`gpupg_format::heap::lz4`).
const LZ4_FALLS_BACK: bool = false;

/// Above this share of pages falling back, COPY alone is faster: a page
/// that falls back is read twice (the file, then COPY of its ctid range or
/// block list), and lists of scattered pages cost the server more than one
/// sequential COPY. Measured on the H100 host (issue 17, events 10M rows,
/// 16 connections): with 59.6% of the pages falling back (TOAST values then
/// not read from the files) the heap path took 32.4-42.6 s to Parquet
/// against 8.5 s through COPY, so it breaks even near 8.5 / 32.4 x 59.6% =
/// 15.6%. On 2 cores every page falling back made the heap path as slow
/// as COPY (events 1M): the threshold of the larger machine is the safe one.
const COPY_ABOVE_SHARE: f64 = 0.15;

/// Blocks sampled over all the relations (SYSTEM sampling reads whole
/// blocks: about 16 MB at 8 KiB).
const SAMPLE_BLOCKS: u64 = 2000;

/// A relation of the plan, for the estimate.
pub(super) struct Sampled<'a> {
    pub table: &'a TableInfo,
    pub layout: &'a TupleLayout,
    /// Whether its values stored out of line are read from the files (its
    /// TOAST relation's files open: any size is indexed, [`super::toast`]);
    /// if not, a page holding one falls back.
    pub toast_read: bool,
}

/// The reason to read through COPY, when the sample says most pages would
/// fall back; `None` when the heap path is worth it or nothing could be
/// sampled (an estimate is never a reason to fail the export).
pub(super) fn copy_is_faster(
    conn: &mut Connection,
    rels: &[Sampled<'_>],
    columns: &[SelectColumn],
    block_size: usize,
) -> Option<String> {
    let version: u32 = conn
        .simple_query("SELECT pg_catalog.current_setting('server_version_num')")
        .ok()?
        .first()?
        .first()?
        .as_deref()?
        .parse()
        .ok()?;
    let total: u64 = rels.iter().map(|r| r.table.relpages).sum();
    if total == 0 {
        return None;
    }
    let percent = (SAMPLE_BLOCKS as f64 * 100.0 / total as f64).min(100.0);
    let mut counts = PageCounts::default();
    for r in rels {
        // The leaves of a partitioned table share their columns' types: when
        // nothing of one can fall back, nothing of any can.
        let sql = sample_sql(r, columns, block_size, version, percent)?;
        let row = conn.simple_query(&sql).ok()?;
        let got: Vec<u64> = row
            .first()?
            .iter()
            .map(|v| v.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0))
            .collect();
        counts.add(&got);
    }
    counts.verdict(rels, columns)
}

/// Pages sampled, and those holding a value of each kind that falls back.
#[derive(Default)]
struct PageCounts {
    sampled: u64,
    unconverted: u64,
    external: u64,
    lz4: u64,
    any: u64,
}

impl PageCounts {
    fn add(&mut self, got: &[u64]) {
        if let [sampled, unconverted, external, lz4, any] = got {
            self.sampled += sampled;
            self.unconverted += unconverted;
            self.external += external;
            self.lz4 += lz4;
            self.any += any;
        }
    }

    fn verdict(&self, rels: &[Sampled<'_>], columns: &[SelectColumn]) -> Option<String> {
        if self.sampled == 0 {
            return None;
        }
        let share = |n: u64| n as f64 / self.sampled as f64;
        if share(self.any) <= COPY_ABOVE_SHARE {
            return None;
        }
        let pct = |n: u64| format!("{:.0}%", 100.0 * share(n));
        let mut causes = Vec::new();
        if self.unconverted > 0 {
            let mut types: Vec<String> = rels
                .iter()
                .flat_map(|r| r.layout.unconverted_outputs())
                .filter_map(|out| columns.get(out))
                .map(|c| c.desc.pg_type.to_string())
                .collect();
            types.sort();
            types.dedup();
            causes.push(format!(
                "type {} is not converted from the heap ({} of the pages)",
                types.join(", "),
                pct(self.unconverted)
            ));
        }
        if self.external > 0 {
            causes.push(format!(
                "values stored out of line in TOAST ({})",
                pct(self.external)
            ));
        }
        if self.lz4 > 0 {
            causes.push(format!("lz4-compressed values ({})", pct(self.lz4)));
        }
        Some(format!(
            "about {} of the table's pages would fall back to COPY (a sample of {} pages: {}), \
             so COPY alone is faster",
            pct(self.any),
            self.sampled,
            causes.join("; ")
        ))
    }
}

/// One row: pages sampled, then those holding a non-NULL value of an
/// unconverted type, a value stored out of line, an lz4-compressed value,
/// any of them. `None` when nothing in the export can fall back.
fn sample_sql(
    r: &Sampled<'_>,
    columns: &[SelectColumn],
    block_size: usize,
    version: u32,
    percent: f64,
) -> Option<String> {
    let or = |v: Vec<String>| {
        if v.is_empty() {
            "false".to_string()
        } else {
            v.join(" OR ")
        }
    };
    let unconverted = or(r
        .layout
        .unconverted_outputs()
        .iter()
        .filter_map(|&out| columns.get(out))
        .map(|c| format!("{} IS NOT NULL", quote_ident(&c.desc.name)))
        .collect());
    // Variable-length output columns: those that can be stored out of line
    // or compressed.
    let varlena: Vec<String> = r
        .layout
        .output()
        .iter()
        .zip(columns)
        .filter(|&(&attr, _)| r.layout.attributes().get(attr).map(|a| a.attlen) == Some(-1))
        .map(|(_, c)| quote_ident(&c.desc.name))
        .collect();
    // A value stored larger than a quarter page (TOAST_TUPLE_THRESHOLD) is
    // out of line unless its storage forbids it; smaller ones may be too
    // (several in one row), so this counts at least those pages.
    let threshold = block_size / 4;
    // `test` of any variable-length column, when `counts`.
    let any_varlena = |counts: bool, test: &dyn Fn(&str) -> String| {
        or(if counts {
            varlena.iter().map(|c| test(c)).collect()
        } else {
            Vec::new()
        })
    };
    let external = any_varlena(!r.toast_read, &|c| {
        format!("pg_catalog.pg_column_size({c}) > {threshold}")
    });
    // pg_column_compression is PostgreSQL 14's, as lz4 is.
    let lz4 = any_varlena(LZ4_FALLS_BACK && version >= 140_000, &|c| {
        format!("pg_catalog.pg_column_compression({c}) = 'lz4'")
    });
    if [&unconverted, &external, &lz4]
        .iter()
        .all(|c| *c == "false")
    {
        return None;
    }
    Some(format!(
        "SELECT count(DISTINCT b), count(DISTINCT b) FILTER (WHERE u), \
         count(DISTINCT b) FILTER (WHERE x), count(DISTINCT b) FILTER (WHERE l), \
         count(DISTINCT b) FILTER (WHERE u OR x OR l) \
         FROM (SELECT (ctid::text::point)[0] AS b, ({unconverted}) AS u, ({external}) AS x, ({lz4}) AS l \
         FROM {} TABLESAMPLE SYSTEM ({percent}) REPEATABLE (17)) AS s",
        r.table.qualified()
    ))
}
