//! What to read: the table (and its leaf partitions) and its columns with
//! their decodable types, from the system catalogs.

use std::collections::HashMap;

use gpupg_format::types::oid;
use gpupg_format::{ColumnDesc, PgType};

use crate::conn::{Connection, Param};
use crate::error::SourceError;
use crate::sql::quote_ident;

/// A relation to export.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// `pg_class.oid`.
    pub oid: u32,
    /// The schema it is in, unquoted.
    pub schema: String,
    /// Its name, unquoted.
    pub name: String,
    /// `pg_class.relkind`: 'r' table, 'p' partitioned table, 'v' view,
    /// 'm' materialized view, 'f' foreign table, ...
    pub relkind: char,
    /// Current size in pages (`pg_relation_size / block_size`); 0 for
    /// relations without storage.
    pub relpages: u64,
    /// The server's block size (`block_size`), 8192 unless built otherwise.
    pub block_size: u32,
    /// Current size in bytes (summed over partitions for a partitioned
    /// table).
    pub bytes: u64,
    /// The planner's row estimate (-1 or 0 when never analyzed).
    pub reltuples: f64,
    /// Leaf partitions of a partitioned table, each with its own size.
    pub partitions: Vec<TableInfo>,
}

impl TableInfo {
    /// `"schema"."name"`, quoted for use in SQL.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// Whether rows have a ctid that a TID range can select (heap
    /// relations); views and foreign tables do not.
    pub fn has_ctid(&self) -> bool {
        matches!(self.relkind, 'r' | 'm' | 't')
    }

    /// Whether it is a partitioned table, read through its leaf partitions.
    pub fn is_partitioned(&self) -> bool {
        self.relkind == 'p'
    }
}

/// What to do with a column whose type gpupgparser cannot decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsupportedTypes {
    /// Fail with [`SourceError::UnsupportedType`].
    #[default]
    Error,
    /// Read it as text (`"col"::text`).
    CastToText,
}

/// One column of the SELECT list of the COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectColumn {
    /// Name, type and nullability as the decoders see the column.
    pub desc: ColumnDesc,
    /// The quoted identifier, or `"ident"::text` when cast to text.
    pub select_expr: String,
}

/// Resolves a table name as the user wrote it (optionally schema-qualified,
/// with any quoting, following search_path) with `to_regclass`.
pub fn resolve_table(conn: &mut Connection, name: &str) -> Result<TableInfo, SourceError> {
    // The name is a parameter: the server parses it as a qualified name,
    // and nothing in it is ever read as SQL.
    let rows = conn
        .query(
            &format!("looking up table {name}"),
            "SELECT c.oid, n.nspname, c.relname, c.relkind, pg_catalog.pg_relation_size(c.oid), \
         pg_catalog.current_setting('block_size'), c.reltuples \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = pg_catalog.to_regclass($1)",
            &[Param::untyped_text(name)],
        )
        .map_err(|e| e.about_table_name(name))?;
    let row = rows.first().ok_or_else(|| SourceError::NoSuchTable {
        table: name.to_string(),
    })?;
    let ctx = format!("reading the catalog entry of table {name}");
    let block_size: u32 = parse_field(conn, row, 5, &ctx)?;
    let mut table = table_from_row(conn, row, block_size, [0, 1, 2, 3, 4, 6], &ctx)?;
    if table.is_partitioned() {
        // Walk pg_inherits (works before pg_partition_tree, PostgreSQL 12)
        // down to the leaves; intermediate partitioned tables have no data.
        let rows = conn.query(
            &format!("listing the partitions of table {}", table.qualified()),
            "WITH RECURSIVE tree(relid) AS ( \
               SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = $1 \
               UNION ALL \
               SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree t ON i.inhparent = t.relid) \
             SELECT c.oid, n.nspname, c.relname, c.relkind, pg_catalog.pg_relation_size(c.oid), c.reltuples \
             FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.relid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind <> 'p' ORDER BY c.oid",
            &[Param::oid(table.oid)],
        )?;
        let ctx = format!("reading the partitions of table {}", table.qualified());
        for row in &rows {
            let part = table_from_row(conn, row, block_size, [0, 1, 2, 3, 4, 5], &ctx)?;
            table.bytes += part.bytes;
            table.partitions.push(part);
        }
    }
    Ok(table)
}

/// The columns of `table` to read: all (in attnum order) or those named in
/// `only` (in that order, names matched exactly as PostgreSQL spells them).
/// Columns the user may not read are refused here, naming them, rather
/// than by the first COPY.
pub fn table_columns(
    conn: &mut Connection,
    table: &TableInfo,
    only: Option<&[String]>,
    unsupported: UnsupportedTypes,
) -> Result<Vec<SelectColumn>, SourceError> {
    let rows = conn.query(
        &format!("listing the columns of table {}", table.qualified()),
        "SELECT a.attname, a.atttypid, a.atttypmod, NOT a.attnotnull, \
         pg_catalog.format_type(a.atttypid, a.atttypmod), \
         pg_catalog.has_column_privilege(a.attrelid, a.attnum, 'SELECT'), current_user \
         FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        &[Param::oid(table.oid)],
    )?;
    let qualified = table.qualified();
    let ctx = format!("reading the columns of table {qualified}");
    let mut all = Vec::with_capacity(rows.len());
    for row in &rows {
        let name = text_field(conn, row, 0, &ctx)?.to_string();
        let type_oid: u32 = parse_field(conn, row, 1, &ctx)?;
        let typmod: i32 = parse_field(conn, row, 2, &ctx)?;
        let nullable = text_field(conn, row, 3, &ctx)? == "t";
        let type_name = text_field(conn, row, 4, &ctx)?.to_string();
        let readable = text_field(conn, row, 5, &ctx)? == "t";
        all.push((name, type_oid, typmod, nullable, type_name, readable));
    }
    let picked: Vec<_> = match only {
        None => all,
        Some(names) => names
            .iter()
            .map(|n| {
                all.iter()
                    .find(|c| &c.0 == n)
                    .cloned()
                    .ok_or_else(|| SourceError::NoSuchColumn {
                        table: qualified.clone(),
                        column: n.clone(),
                        available: all
                            .iter()
                            .map(|c| quote_ident(&c.0))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let denied: Vec<String> = picked
        .iter()
        .filter(|c| !c.5)
        .map(|c| quote_ident(&c.0))
        .collect();
    if !denied.is_empty() {
        let user = rows
            .first()
            .and_then(|r| r.get(6).cloned().flatten())
            .unwrap_or_default();
        return Err(SourceError::NoPrivilege {
            user,
            table: qualified,
            columns: denied.join(", "),
        });
    }
    let mut types = TypeResolver::default();
    picked
        .into_iter()
        .map(|(name, type_oid, typmod, nullable, type_name, _)| {
            types.column(
                conn,
                &qualified,
                name,
                type_oid,
                typmod,
                nullable,
                type_name,
                unsupported,
            )
        })
        .collect()
}

/// The result columns of a user query (described, not run). All are
/// nullable; a cast-to-text column's `select_expr` refers to the column by
/// name, for a wrapping `SELECT ... FROM (query) q`.
pub fn query_columns(
    conn: &mut Connection,
    sql: &str,
    unsupported: UnsupportedTypes,
) -> Result<Vec<SelectColumn>, SourceError> {
    let described = conn.describe(sql)?;
    let mut types = TypeResolver::default();
    let mut out = Vec::with_capacity(described.len());
    for (name, type_oid, typmod, _, _) in described {
        let type_name = types.type_name(conn, type_oid, typmod)?;
        out.push(types.column(
            conn,
            "the query",
            name,
            type_oid,
            typmod,
            true,
            type_name,
            unsupported,
        )?);
    }
    Ok(out)
}

/// The `pg_type` facts type resolution needs.
#[derive(Debug, Clone)]
struct TypeRow {
    typtype: char,
    typcategory: char,
    typelem: u32,
    typbasetype: u32,
    typtypmod: i32,
    typlen: i16,
}

/// Resolves type OIDs to [`PgType`], caching `pg_type` rows.
#[derive(Default)]
struct TypeResolver {
    rows: HashMap<u32, TypeRow>,
}

/// Domains of domains of arrays...: deeper nesting than this is a cycle.
const MAX_TYPE_DEPTH: usize = 32;

impl TypeResolver {
    #[allow(clippy::too_many_arguments)]
    fn column(
        &mut self,
        conn: &mut Connection,
        table: &str,
        name: String,
        type_oid: u32,
        typmod: i32,
        nullable: bool,
        type_name: String,
        unsupported: UnsupportedTypes,
    ) -> Result<SelectColumn, SourceError> {
        match self.resolve(conn, type_oid, typmod, 0)? {
            Some(pg_type) => Ok(SelectColumn {
                select_expr: quote_ident(&name),
                desc: ColumnDesc {
                    name,
                    type_name,
                    type_oid,
                    typmod,
                    pg_type,
                    nullable,
                },
            }),
            None => match unsupported {
                UnsupportedTypes::Error => Err(SourceError::UnsupportedType {
                    table: table.to_string(),
                    column: name,
                    type_name,
                }),
                // The wire then carries text, so the column is described as
                // text; type_name keeps the declared type for messages.
                UnsupportedTypes::CastToText => Ok(SelectColumn {
                    select_expr: format!("{}::text", quote_ident(&name)),
                    desc: ColumnDesc {
                        name,
                        type_name,
                        type_oid: oid::TEXT,
                        typmod: -1,
                        pg_type: PgType::Text,
                        nullable,
                    },
                }),
            },
        }
    }

    fn resolve(
        &mut self,
        conn: &mut Connection,
        type_oid: u32,
        typmod: i32,
        depth: usize,
    ) -> Result<Option<PgType>, SourceError> {
        if let Some(t) = PgType::from_builtin(type_oid, typmod) {
            return Ok(Some(t));
        }
        if depth > MAX_TYPE_DEPTH {
            return Ok(None);
        }
        let row = self.row(conn, type_oid)?;
        Ok(match row.typtype {
            // A domain decodes as its base type with the domain's typmod
            // (a column of a domain type has atttypmod -1).
            'd' => self.resolve(conn, row.typbasetype, row.typtypmod, depth + 1)?,
            'e' => Some(PgType::Enum),
            // Variable-length types of category A are arrays (including
            // int2vector/oidvector, which use array_send); the column's
            // typmod applies to the elements.
            _ if row.typcategory == 'A' && row.typelem != 0 && row.typlen == -1 => self
                .resolve(conn, row.typelem, typmod, depth + 1)?
                .map(|e| PgType::Array(Box::new(e))),
            _ => None,
        })
    }

    fn row(&mut self, conn: &mut Connection, type_oid: u32) -> Result<TypeRow, SourceError> {
        if let Some(r) = self.rows.get(&type_oid) {
            return Ok(r.clone());
        }
        let rows = conn.query(
            &format!("looking up type {type_oid}"),
            "SELECT typtype, typcategory, typelem, typbasetype, typtypmod, typlen \
             FROM pg_catalog.pg_type WHERE oid = $1",
            &[Param::oid(type_oid)],
        )?;
        let ctx = format!("reading type {type_oid} from pg_type");
        let r = rows
            .first()
            .ok_or_else(|| conn.protocol_error(&ctx, "type OID not found in pg_type"))?;
        let row = TypeRow {
            typtype: char_field(conn, r, 0, &ctx)?,
            typcategory: char_field(conn, r, 1, &ctx)?,
            typelem: parse_field(conn, r, 2, &ctx)?,
            typbasetype: parse_field(conn, r, 3, &ctx)?,
            typtypmod: parse_field(conn, r, 4, &ctx)?,
            typlen: parse_field(conn, r, 5, &ctx)?,
        };
        self.rows.insert(type_oid, row.clone());
        Ok(row)
    }

    fn type_name(
        &mut self,
        conn: &mut Connection,
        type_oid: u32,
        typmod: i32,
    ) -> Result<String, SourceError> {
        let rows = conn.query(
            &format!("naming type {type_oid}"),
            "SELECT pg_catalog.format_type($1, $2)",
            &[Param::oid(type_oid), Param::int4(typmod)],
        )?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.clone())
            .unwrap_or_else(|| format!("type {type_oid}")))
    }
}

type Row = Vec<Option<String>>;

fn table_from_row(
    conn: &Connection,
    row: &Row,
    block_size: u32,
    idx: [usize; 6],
    ctx: &str,
) -> Result<TableInfo, SourceError> {
    let bytes: u64 = parse_field(conn, row, idx[4], ctx)?;
    Ok(TableInfo {
        oid: parse_field(conn, row, idx[0], ctx)?,
        schema: text_field(conn, row, idx[1], ctx)?.to_string(),
        name: text_field(conn, row, idx[2], ctx)?.to_string(),
        relkind: char_field(conn, row, idx[3], ctx)?,
        relpages: bytes.div_ceil(u64::from(block_size.max(1))),
        block_size,
        bytes,
        reltuples: parse_field(conn, row, idx[5], ctx)?,
        partitions: Vec::new(),
    })
}

fn text_field<'r>(
    conn: &Connection,
    row: &'r Row,
    i: usize,
    ctx: &str,
) -> Result<&'r str, SourceError> {
    row.get(i).and_then(|v| v.as_deref()).ok_or_else(|| {
        conn.protocol_error(
            ctx,
            &format!("catalog query returned no value in column {i}"),
        )
    })
}

fn parse_field<T: std::str::FromStr>(
    conn: &Connection,
    row: &Row,
    i: usize,
    ctx: &str,
) -> Result<T, SourceError> {
    let v = text_field(conn, row, i, ctx)?;
    v.parse().map_err(|_| {
        conn.protocol_error(
            ctx,
            &format!("catalog value \"{v}\" in column {i} is not a number"),
        )
    })
}

fn char_field(conn: &Connection, row: &Row, i: usize, ctx: &str) -> Result<char, SourceError> {
    text_field(conn, row, i, ctx)?
        .chars()
        .next()
        .ok_or_else(|| conn.protocol_error(ctx, &format!("catalog value in column {i} is empty")))
}
