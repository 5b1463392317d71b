//! Names the row of a value error (a NaN that has no decimal, a timestamp
//! out of range) the way a user can find it again: by the table's primary
//! key, or by its ctid when the table has none.
//!
//! The decoder knows only the row's place in the COPY stream of one
//! connection, which means nothing outside the export. But the chunk still
//! holds the row's bytes when its decoding fails, each field in its type's
//! binary format, which is exactly what the extended protocol takes as a
//! binary parameter. So, after the export has failed:
//!
//! - when every column of the primary key was exported, the key's values
//!   are taken from the failing row itself and the server only prints them
//!   (`SELECT $1, $2` with the columns' types): exact, and no table access;
//! - otherwise the row is looked up by its content (every exported column
//!   compared as text, NULLs equal) and named by its ctid (and partition):
//!   exact unless the table holds identical copies of the row, which the
//!   message then says. The lookup scans the table, so it is bounded by a
//!   statement timeout; a row changed since the export's snapshot is not
//!   found. In both cases nothing is named, and the decoder's own message
//!   stands, when the lookup fails.

use gpupg_decode::DecodeError;
use gpupg_format::CopyChunk;
use gpupg_source::{
    quote_ident, ConnectConfig, Connection, Param, SelectColumn, SourceError, TableInfo,
};

use crate::plan::ExportPlan;
use crate::ExportError;

/// The fields of one COPY row, in its columns' binary formats (`None`:
/// NULL).
pub(crate) type RowFields = Vec<Option<Vec<u8>>>;

/// The longest the content lookup may scan for the row.
const LOOKUP_TIMEOUT: &str = "10s";

/// The row index a decoder's error about a value names, if it is one.
pub(crate) fn value_error_row(e: &ExportError) -> Option<u64> {
    match e {
        ExportError::Decode(
            DecodeError::Value { row, .. }
            | DecodeError::UnexpectedNull { row, .. }
            | DecodeError::TooLarge { row, .. },
        ) => Some(*row),
        _ => None,
    }
}

/// `e`, when it is about a value in the row whose fields are `row`, as
/// [`ExportError::RowValue`] naming that row by key or ctid; else `e`.
pub(crate) fn with_row_named(
    e: ExportError,
    row: Option<RowFields>,
    connect: &ConnectConfig,
    plan: &ExportPlan,
) -> ExportError {
    let (Some(fields), Some((table, _))) = (row, &plan.table) else {
        return e;
    };
    let (column, type_name, reason) = match &e {
        ExportError::Decode(DecodeError::Value {
            column,
            type_name,
            source,
            ..
        }) => (column, type_name, source.to_string()),
        ExportError::Decode(DecodeError::UnexpectedNull {
            column, type_name, ..
        }) => (column, type_name, "NULL in a column declared NOT NULL".into()),
        ExportError::Decode(DecodeError::TooLarge {
            column, type_name, ..
        }) => (
            column,
            type_name,
            "the chunk holds more than 2 GiB of this column, over an Arrow batch's limit; use smaller chunks".into(),
        ),
        _ => return e,
    };
    match name_row(connect, table, &plan.columns, &fields) {
        Ok(Some(row)) => ExportError::RowValue {
            column: format!("{column} ({type_name})"),
            table: table.qualified(),
            row,
            reason,
        },
        _ => e,
    }
}

/// The fields of the chunk's row that has index `row` in its partition
/// (the index a decoder's error names), when the chunk holds that row.
pub(crate) fn failing_row(chunk: &CopyChunk, row: u64) -> Option<RowFields> {
    let i = usize::try_from(row.checked_sub(chunk.first_row)?).ok()?;
    let (&start, &end) = (chunk.row_starts.get(i)?, chunk.row_ends.get(i)?);
    let bytes = chunk.data.get(start as usize..end as usize)?;
    let count = usize::try_from(i16::from_be_bytes(bytes.get(..2)?.try_into().ok()?)).ok()?;
    let mut fields = Vec::with_capacity(count);
    let mut pos = 2usize;
    for _ in 0..count {
        let len = i32::from_be_bytes(bytes.get(pos..pos + 4)?.try_into().ok()?);
        pos += 4;
        match usize::try_from(len) {
            Err(_) => fields.push(None),
            Ok(n) => {
                fields.push(Some(bytes.get(pos..pos + n)?.to_vec()));
                pos += n;
            }
        }
    }
    Some(fields)
}

/// `id=1000`, `a=1, b=x`, or `ctid (0,7)` (`of partition s.p2` added for a
/// partitioned table): the failing row of `table`, whose exported
/// `columns` hold `fields`. `None` when the row cannot be named (see the
/// module documentation).
fn name_row(
    connect: &ConnectConfig,
    table: &TableInfo,
    columns: &[SelectColumn],
    fields: &[Option<Vec<u8>>],
) -> Result<Option<String>, SourceError> {
    if fields.len() != columns.len() {
        return Ok(None);
    }
    let mut conn = Connection::connect(connect)?;
    let key = primary_key(&mut conn, table)?;
    let exported: Option<Vec<usize>> = key
        .iter()
        .map(|k| columns.iter().position(|c| &c.desc.name == k))
        .collect();
    match exported {
        Some(at) if !at.is_empty() => by_key(&mut conn, columns, fields, &at).map(Some),
        _ if table.has_ctid() || table.is_partitioned() => {
            by_ctid(&mut conn, table, columns, fields)
        }
        _ => Ok(None),
    }
}

/// The primary key's column names in key order (none without a key).
fn primary_key(conn: &mut Connection, table: &TableInfo) -> Result<Vec<String>, SourceError> {
    let rows = conn.query(
        &format!("finding the primary key of table {}", table.qualified()),
        "SELECT a.attname FROM pg_catalog.pg_index i \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
         WHERE i.indrelid = $1 AND i.indisprimary \
         ORDER BY pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum)",
        &[Param::oid(table.oid)],
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}

/// The key's values from the row itself, printed by the server in their
/// types' text form.
fn by_key(
    conn: &mut Connection,
    columns: &[SelectColumn],
    fields: &[Option<Vec<u8>>],
    at: &[usize],
) -> Result<String, SourceError> {
    let params: Vec<Param> = at.iter().map(|&i| param(&columns[i], &fields[i])).collect();
    let list: Vec<String> = (1..=at.len()).map(|n| format!("${n}")).collect();
    let rows = conn.query(
        "printing the key of the failing row",
        &format!("SELECT {}", list.join(", ")),
        &params,
    )?;
    let values = rows.into_iter().next().unwrap_or_default();
    Ok(at
        .iter()
        .zip(values.into_iter().chain(std::iter::repeat(None)))
        .map(|(&i, v)| {
            format!(
                "{}={}",
                display_name(&columns[i].desc.name),
                v.unwrap_or_else(|| "NULL".into())
            )
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// The row found by its content, named by ctid.
fn by_ctid(
    conn: &mut Connection,
    table: &TableInfo,
    columns: &[SelectColumn],
    fields: &[Option<Vec<u8>>],
) -> Result<Option<String>, SourceError> {
    conn.execute(&format!("SET statement_timeout = '{LOOKUP_TIMEOUT}'"))?;
    // Compared as text: every type has a text form, not every type an
    // equality operator (json, point).
    let conds: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "({})::pg_catalog.text IS NOT DISTINCT FROM ${}::pg_catalog.text",
                c.select_expr,
                i + 1
            )
        })
        .collect();
    let params: Vec<Param> = columns
        .iter()
        .zip(fields)
        .map(|(c, f)| param(c, f))
        .collect();
    let rows = conn.query(
        &format!("finding the failing row in table {}", table.qualified()),
        &format!(
            "SELECT ctid::pg_catalog.text, tableoid::pg_catalog.regclass::pg_catalog.text \
             FROM {}{} WHERE {} LIMIT 2",
            // The COPY read the table itself (each leaf of a partitioned
            // one), not tables inheriting from it.
            if table.is_partitioned() { "" } else { "ONLY " },
            table.qualified(),
            if conds.is_empty() {
                "true".to_string()
            } else {
                conds.join(" AND ")
            }
        ),
        &params,
    )?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let get = |i: usize| first.get(i).cloned().flatten().unwrap_or_default();
    let mut name = format!("ctid {}", get(0));
    if table.is_partitioned() {
        name.push_str(&format!(" of partition {}", get(1)));
    }
    if rows.len() > 1 {
        name.push_str(", one of several identical rows");
    }
    Ok(Some(name))
}

/// A field as a binary parameter of its column's type (text for a column
/// read as text).
fn param<'a>(column: &SelectColumn, field: &'a Option<Vec<u8>>) -> Param<'a> {
    Param {
        type_oid: column.desc.type_oid,
        value: field.as_deref().map(std::borrow::Cow::Borrowed),
    }
}

/// A column name as SQL would need it: bare when that is unambiguous.
fn display_name(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        quote_ident(name)
    }
}
