//! What the heap path needs to know about a table, from the catalog: its
//! files, block and segment size, whether pages carry checksums, and every
//! attribute's storage (dropped ones included), so tuples can be taken apart
//! without the server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gpupg_format::heap::{Align, AttributeDesc, ElementDesc, TupleLayout};
use gpupg_format::PgType;

use gpupg_source::quote_ident;
use gpupg_source::Connection;
use gpupg_source::SourceError;
use gpupg_source::{SelectColumn, TableInfo};

/// A table readable from its files.
#[derive(Debug, Clone)]
pub struct HeapRelation {
    /// The quoted, schema-qualified name (for messages).
    pub label: String,
    pub oid: u32,
    /// The data directory the files are read from (`--data-dir` or the
    /// server's `data_directory`), which must be proven the server's own
    /// ([`super::prove_files`]) before any page is trusted.
    pub data_dir: PathBuf,
    /// The first segment file of the main fork.
    pub base_path: PathBuf,
    pub block_size: usize,
    /// Blocks per segment file (1 GB at the default sizes).
    pub segment_blocks: u64,
    /// Whether the cluster has data checksums (then every page is verified).
    pub checksums: bool,
    /// How to turn its tuples into the export's COPY rows.
    pub layout: TupleLayout,
}

fn unavailable(table: &TableInfo, reason: impl Into<String>) -> SourceError {
    SourceError::HeapUnavailable {
        table: table.qualified(),
        reason: reason.into(),
    }
}

/// Reads the catalog for the heap path on `conn` (a connection outside the
/// export's transaction: a refused query must not abort it). `columns` are
/// the export's columns; `data_dir` overrides the server's `data_directory`
/// (for a user who may not read that setting, or a different mount point).
///
/// Returns [`SourceError::HeapUnavailable`] with the reason when the table
/// cannot be read from its files.
pub fn heap_relation(
    conn: &mut Connection,
    table: &TableInfo,
    columns: &[SelectColumn],
    data_dir: Option<&Path>,
) -> Result<HeapRelation, SourceError> {
    match table.relkind {
        'r' | 'm' => {}
        'p' => {
            return Err(unavailable(
                table,
                "partitioned tables are read through COPY",
            ))
        }
        k => {
            return Err(unavailable(
                table,
                format!("relkind '{k}' has no heap files"),
            ))
        }
    }
    let rows = conn.query(
        &format!("reading where {} is stored", table.qualified()),
        &format!(
            "SELECT pg_catalog.pg_relation_filepath(c.oid), c.relpersistence, am.amname, \
             pg_catalog.current_setting('block_size'), pg_catalog.current_setting('segment_size'), \
             pg_catalog.current_setting('data_checksums'), \
             (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'data_directory') \
             FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam \
             WHERE c.oid = {}",
            table.oid
        ),
        &[],
    )?;
    let row = rows
        .first()
        .ok_or_else(|| unavailable(table, "the table disappeared"))?;
    let get = |i: usize| row.get(i).cloned().flatten();
    let filepath = get(0).ok_or_else(|| unavailable(table, "it has no storage"))?;
    match get(1).as_deref() {
        Some("p") => {}
        Some("u") => {
            return Err(unavailable(
                table,
                "unlogged tables have no page LSNs to prove a page unchanged",
            ))
        }
        _ => {
            return Err(unavailable(
                table,
                "temporary tables live in another session's memory",
            ))
        }
    }
    if get(2).as_deref() != Some("heap") {
        return Err(unavailable(
            table,
            format!(
                "its access method is {}, not heap",
                get(2).unwrap_or_else(|| "unknown".into())
            ),
        ));
    }
    let block_size: usize = get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    // segment_size is shown with a unit ("1GB").
    let segment_bytes = get(4)
        .as_deref()
        .and_then(|s| gpupg_source::parse_size(s).ok())
        .unwrap_or(0);
    if block_size == 0 || segment_bytes < block_size as u64 {
        return Err(unavailable(
            table,
            "cannot read block_size and segment_size",
        ));
    }
    let checksums = get(5).as_deref() == Some("on");
    let data_dir = match (data_dir, get(6)) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(d)) => PathBuf::from(d),
        (None, None) => {
            return Err(unavailable(
                table,
                "the server's data_directory is hidden from this user (it needs superuser or \
                 pg_read_all_settings); give it with --data-dir",
            ))
        }
    };
    let base_path = data_dir.join(&filepath);
    if let Err(e) = std::fs::File::open(&base_path) {
        return Err(unavailable(
            table,
            format!(
                "its file {} cannot be read by this process ({e}); the heap path needs the \
                 data directory on this host, readable by this user",
                base_path.display()
            ),
        ));
    }

    let layout = tuple_layout(conn, table, columns, block_size, checksums)?;
    Ok(HeapRelation {
        label: table.qualified(),
        oid: table.oid,
        data_dir,
        base_path,
        block_size,
        segment_blocks: segment_bytes / block_size as u64,
        checksums,
        layout,
    })
}

/// Every attribute's storage, the output columns, enum labels and missing
/// values.
fn tuple_layout(
    conn: &mut Connection,
    table: &TableInfo,
    columns: &[SelectColumn],
    block_size: usize,
    checksums: bool,
) -> Result<TupleLayout, SourceError> {
    // The element storage of array columns (through a domain, if any).
    let rows = conn.query(
        &format!("reading the columns' storage of {}", table.qualified()),
        &format!(
            "SELECT a.attname, a.attlen, a.attalign, a.attbyval, a.attisdropped, a.atthasmissing, \
             e.typlen, e.typalign, e.typbyval, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnum, \
             a.attgenerated \
             FROM pg_catalog.pg_attribute a \
             LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
             LEFT JOIN pg_catalog.pg_type e ON e.oid = b.typelem AND b.typlen = -1 AND b.typelem <> 0 \
             WHERE a.attrelid = {} AND a.attnum > 0 ORDER BY a.attnum",
            table.oid
        ),
        &[],
    )?;
    let by_name: HashMap<&str, (usize, &PgType)> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.desc.name.as_str(), (i, &c.desc.pg_type)))
        .collect();
    for c in columns {
        if c.select_expr != quote_ident(&c.desc.name) {
            return Err(unavailable(
                table,
                format!(
                    "column \"{}\" is cast to text by the server, which only COPY does",
                    c.desc.name
                ),
            ));
        }
    }
    let bad = |what: &str| unavailable(table, format!("unexpected catalog data: {what}"));
    let mut attributes = Vec::with_capacity(rows.len());
    let mut output = vec![usize::MAX; columns.len()];
    let mut missing_wanted = Vec::new();
    for row in &rows {
        let get = |i: usize| row.get(i).cloned().flatten();
        let name = get(0).ok_or_else(|| bad("attname"))?;
        let attlen: i16 = get(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("attlen"))?;
        let align = get(2)
            .and_then(|s| s.bytes().next())
            .and_then(Align::from_code)
            .ok_or_else(|| bad("attalign"))?;
        let byval = get(3).as_deref() == Some("t");
        let dropped = get(4).as_deref() == Some("t");
        let has_missing = get(5).as_deref() == Some("t");
        let index = attributes.len();
        if dropped {
            attributes.push(AttributeDesc::dropped(attlen, align));
            continue;
        }
        let mut attr = match by_name.get(name.as_str()) {
            // PostgreSQL 18's virtual generated columns have no storage (the
            // tuple holds a NULL for them); the server computes them on
            // read, which only COPY does.
            Some(_) if get(11).as_deref() == Some("v") => {
                return Err(unavailable(
                    table,
                    format!(
                        "column \"{name}\" of {} is a virtual generated column: it is not \
                         stored in the files, only the server computes it (COPY)",
                        table.qualified()
                    ),
                ))
            }
            Some(&(out, pg_type)) => {
                output[out] = index;
                if has_missing {
                    let type_name = get(9).ok_or_else(|| bad("format_type"))?;
                    missing_wanted.push((index, get(10).unwrap_or_default(), type_name));
                }
                AttributeDesc::column(pg_type.clone(), attlen, align, byval)
            }
            // Not exported: only stepped over.
            None => AttributeDesc {
                pg_type: None,
                ..AttributeDesc::column(PgType::Bool, attlen, align, byval)
            },
        };
        if let (Some(len), Some(a)) = (get(6), get(7)) {
            let typlen: i16 = len.parse().map_err(|_| bad("typlen"))?;
            let align = a
                .bytes()
                .next()
                .and_then(Align::from_code)
                .ok_or_else(|| bad("typalign"))?;
            if attr.pg_type.is_some() {
                attr = attr.with_element(ElementDesc {
                    typlen,
                    align,
                    byval: get(8).as_deref() == Some("t"),
                });
            }
        }
        attributes.push(attr);
    }
    if output.contains(&usize::MAX) {
        return Err(bad("an exported column has no attribute"));
    }
    for (index, attnum, type_name) in missing_wanted {
        if let Some(v) = missing_value(conn, table, &attnum, &type_name)? {
            attributes[index] = attributes[index].clone().with_missing(v);
        }
    }
    let enum_labels = enum_labels(conn)?;
    TupleLayout::new(attributes, output, enum_labels)
        .and_then(|l| l.with_block_size(block_size))
        .map(|l| l.with_checksums(checksums))
        .map_err(|e| unavailable(table, format!("its tuple layout: {e}")))
}

/// Labels of every enum value, by the value's OID (what the heap stores).
fn enum_labels(conn: &mut Connection) -> Result<HashMap<u32, String>, SourceError> {
    let rows = conn.query(
        "reading the labels of enum types",
        "SELECT oid, enumlabel FROM pg_catalog.pg_enum",
        &[],
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let oid = r.first()?.as_ref()?.parse().ok()?;
            let label = r.get(1)?.clone()?;
            Some((oid, label))
        })
        .collect())
}

/// The value rows written before a column was added read as
/// (`attmissingval`), in the column's binary send format; `None` for NULL.
fn missing_value(
    conn: &mut Connection,
    table: &TableInfo,
    attnum: &str,
    type_name: &str,
) -> Result<Option<Vec<u8>>, SourceError> {
    // attmissingval is a one-element array of the column's type; its text
    // form cast back gives the value, which COPY BINARY then sends exactly
    // as it sends the column.
    let sql = format!(
        "COPY (SELECT ((SELECT a.attmissingval::text FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid = {} AND a.attnum = {attnum})::{type_name}[])[1]) TO STDOUT (FORMAT binary)",
        table.oid
    );
    let pool = gpupg_source::BufferPool::new(1, 64 * 1024);
    let mut field: Option<Option<Vec<u8>>> = None;
    let result = conn.copy_out(&sql, &pool, 0, &mut |chunk| {
        if chunk.num_rows() > 0 && field.is_none() {
            let row = chunk.row(0);
            // int16 field count 1, then int32 length (-1: NULL) and bytes.
            if row.len() >= 6 {
                let len = i32::from_be_bytes([row[2], row[3], row[4], row[5]]);
                field = Some(if len < 0 {
                    None
                } else {
                    row.get(6..6 + len as usize).map(|b| b.to_vec())
                });
            }
        }
        pool.give(chunk.data);
        Ok(())
    });
    match (result, field) {
        (Ok(_), Some(v)) => Ok(v),
        (r, _) => Err(unavailable(
            table,
            format!(
                "cannot read the default of a column added later (attnum {attnum}){}",
                r.err().map(|e| format!(": {e}")).unwrap_or_default()
            ),
        )),
    }
}
