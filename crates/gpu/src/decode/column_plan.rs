//! Host-side planning: which kernel decodes each column (or which columns
//! stay on the CPU, and why), the type options of a CPU projection, how a
//! large chunk is split into pieces that fit the device, and projecting a
//! chunk onto some of its columns.

use std::ops::Range;

use arrow_schema::DataType;
use gpupg_decode::{ArrayRepr, EnumRepr, IntervalRepr, TypeOptions, UnconstrainedNumeric};
use gpupg_format::copy::field_offsets;
use gpupg_format::{CopyChunk, PgType};

use crate::kernels::Kind;

/// How one column (or an array's elements) is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColPlan {
    /// One fixed-size output value per row (`decode_fixed`).
    Fixed {
        /// The kernels' value kind.
        kind: Kind,
        /// Decimal precision (numeric(p,s) to Decimal128), else 0.
        precision: i32,
        /// Decimal scale, else 0.
        scale: i32,
        /// Round values to the scale, half away from zero (an unconstrained
        /// numeric); a declared numeric(p, s) must hold its values exactly.
        round: bool,
    },
    /// Offsets and bytes (`var_lengths`, scan, `var_copy`).
    Var(Kind),
    /// `List<element>`: `array_count`, scan, `array_elems`, then the
    /// element plan over all elements.
    List(Box<ColPlan>),
    /// Decoded by the CPU decoder on a projection of the chunk.
    Cpu(&'static str),
}

impl ColPlan {
    fn fixed(kind: Kind) -> ColPlan {
        ColPlan::Fixed {
            kind,
            precision: 0,
            scale: 0,
            round: false,
        }
    }

    /// Whether the whole column is decoded on the CPU.
    pub fn is_cpu(&self) -> bool {
        matches!(self, ColPlan::Cpu(_))
    }
}

/// The Decimal128 a declared `numeric(p, s)` maps to, exactly as
/// `gpupg_decode`'s schema resolves it (`None`: not representable, so the
/// column is an unconstrained numeric for the options).
fn declared_decimal(pg: &PgType) -> Option<(u8, i8)> {
    match pg {
        PgType::Numeric(Some(t)) => {
            let p = u8::try_from(t.precision)
                .ok()
                .filter(|p| (1..=38).contains(p))?;
            let s = i8::try_from(t.scale).ok().filter(|s| *s <= p as i8)?;
            Some((p, s))
        }
        _ => None,
    }
}

/// The plan of a column of PostgreSQL type `pg` whose Arrow type (from the
/// output schema) is `dt`.
pub fn plan_for(pg: &PgType, dt: &DataType) -> ColPlan {
    match (pg, dt) {
        (PgType::Bool, _) => ColPlan::fixed(Kind::Bool),
        (PgType::Int2, _) => ColPlan::fixed(Kind::Int2),
        (PgType::Int4, _) => ColPlan::fixed(Kind::Int4),
        (PgType::Int8, _) => ColPlan::fixed(Kind::Int8),
        (PgType::Float4, _) => ColPlan::fixed(Kind::Float4),
        (PgType::Float8, _) => ColPlan::fixed(Kind::Float8),
        (PgType::Oid, _) => ColPlan::fixed(Kind::Oid),
        (PgType::Date, _) => ColPlan::fixed(Kind::Date),
        (PgType::Time, _) => ColPlan::fixed(Kind::Time),
        (PgType::Timestamp | PgType::Timestamptz, _) => ColPlan::fixed(Kind::Timestamp),
        (PgType::Uuid, _) => ColPlan::fixed(Kind::Uuid),
        (PgType::Interval, DataType::Struct(_)) => ColPlan::fixed(Kind::IntervalStruct),
        (PgType::Interval, _) => ColPlan::fixed(Kind::IntervalMdn),
        (PgType::Numeric(_), DataType::Decimal128(p, s)) => ColPlan::Fixed {
            kind: Kind::Decimal,
            precision: i32::from(*p),
            scale: i32::from(*s),
            // A declared numeric(p, s) must hold its values exactly; an
            // unconstrained one is rounded to the user's scale.
            round: declared_decimal(pg) != Some((*p, *s)),
        },
        (PgType::Numeric(_), DataType::Float64) => ColPlan::fixed(Kind::NumericF64),
        (PgType::Numeric(_), _) => ColPlan::Var(Kind::NumericText),
        (PgType::Text | PgType::Json, _) => ColPlan::Var(Kind::Text),
        (PgType::Jsonb, _) => ColPlan::Var(Kind::Jsonb),
        (PgType::Bytea, _) => ColPlan::Var(Kind::Bytea),
        (PgType::Enum, DataType::Dictionary(..)) => {
            // Dictionary keys are numbered in first-seen order per batch, a
            // sequential dependency; labels are few and short, so the CPU
            // does it at memory speed.
            ColPlan::Cpu("enum as dictionary: first-seen key order is sequential")
        }
        (PgType::Enum, _) => ColPlan::Var(Kind::Text),
        (PgType::Array(elem), DataType::List(f)) => match plan_for(elem, f.data_type()) {
            ColPlan::Cpu(why) => ColPlan::Cpu(why),
            ColPlan::List(_) => ColPlan::Cpu("nested arrays"),
            p => ColPlan::List(Box::new(p)),
        },
        (PgType::Array(_), _) => ColPlan::Cpu("arrays as struct (dims, lower bounds, values)"),
    }
}

/// Type options under which `OutputSchema::new` gives column `pg` the Arrow
/// type `dt` (used to decode a projection of the chunk on the CPU with
/// exactly the export's representation).
pub fn options_for(pg: &PgType, dt: &DataType) -> TypeOptions {
    let mut o = TypeOptions::default();
    fill_options(pg, dt, &mut o);
    o
}

/// Type options that give every `(type, Arrow type)` pair its Arrow type
/// (all columns of one export share options, so they never conflict).
pub fn merged_options(cols: &[(&PgType, &DataType)]) -> TypeOptions {
    let mut o = TypeOptions::default();
    for (pg, dt) in cols {
        fill_options(pg, dt, &mut o);
    }
    o
}

fn fill_options(pg: &PgType, dt: &DataType, o: &mut TypeOptions) {
    match (pg, dt) {
        (PgType::Interval, DataType::Struct(_)) => o.interval = IntervalRepr::Struct,
        (PgType::Interval, _) => o.interval = IntervalRepr::MonthDayNano,
        (PgType::Numeric(_), _) if declared_decimal(pg).is_some() => {}
        (PgType::Numeric(_), DataType::Decimal128(_, s)) => {
            o.numeric = UnconstrainedNumeric::Decimal128 { scale: *s }
        }
        (PgType::Numeric(_), DataType::Float64) => o.numeric = UnconstrainedNumeric::Float64,
        (PgType::Numeric(_), _) => o.numeric = UnconstrainedNumeric::Text,
        (PgType::Enum, DataType::Dictionary(..)) => o.enums = EnumRepr::Dictionary,
        (PgType::Array(e), DataType::List(f)) => {
            o.arrays = ArrayRepr::List;
            fill_options(e, f.data_type(), o);
        }
        (PgType::Array(e), DataType::Struct(fs)) => {
            o.arrays = ArrayRepr::Struct;
            if let Some(DataType::List(f)) = fs
                .iter()
                .find(|f| f.name() == "values")
                .map(|f| f.data_type())
            {
                fill_options(e, f.data_type(), o);
            }
        }
        _ => {}
    }
}

/// Splits rows `0..n` into consecutive pieces whose row bytes (from the
/// first row's start to the last row's end) stay within `max_bytes`, so a
/// chunk larger than the device budget streams through in pieces. A single
/// row larger than the budget is a piece of its own.
pub fn split_rows(row_starts: &[u32], row_ends: &[u32], max_bytes: u64) -> Vec<Range<usize>> {
    let n = row_starts.len().min(row_ends.len());
    let mut out = Vec::new();
    let mut first = 0usize;
    let mut lo = u64::MAX;
    let mut hi = 0u64;
    for i in 0..n {
        let (s, e) = (u64::from(row_starts[i]), u64::from(row_ends[i]));
        let nlo = lo.min(s);
        let nhi = hi.max(e);
        if i > first && nhi.saturating_sub(nlo) > max_bytes {
            out.push(first..i);
            first = i;
            lo = s;
            hi = e;
        } else {
            lo = nlo;
            hi = nhi;
        }
    }
    if first < n || n == 0 {
        out.push(first..n);
    }
    out
}

/// The byte range `[lo, hi)` of `data` spanned by rows `rows`, or `None`
/// when a row lies outside the buffer or ends before it starts (a
/// malformed chunk, which the CPU decoder reports).
pub fn row_span(chunk: &CopyChunk, rows: Range<usize>) -> Option<(u32, u32)> {
    let starts = chunk.row_starts.get(rows.clone())?;
    let ends = chunk.row_ends.get(rows)?;
    let mut lo = u32::MAX;
    let mut hi = 0u32;
    for (&s, &e) in starts.iter().zip(ends) {
        if e < s || e as usize > chunk.data.len() {
            return None;
        }
        lo = lo.min(s);
        hi = hi.max(e);
    }
    if lo > hi {
        lo = hi;
    }
    Some((lo, hi))
}

/// A chunk of rows `rows` of `chunk` holding only the fields `cols` (in that
/// order) of each tuple, with `first_row` adjusted so messages name the
/// same rows. `None` if a row's framing is bad (the caller then decodes the
/// whole chunk on the CPU for the exact error).
pub fn project_chunk(
    chunk: &CopyChunk,
    rows: Range<usize>,
    ncols: usize,
    cols: &[usize],
) -> Option<CopyChunk> {
    let mut out = CopyChunk {
        partition: chunk.partition,
        first_row: chunk.first_row + rows.start as u64,
        ..CopyChunk::default()
    };
    let mut fields = vec![(0u32, 0i32); ncols];
    let mut row_buf = Vec::new();
    for i in rows {
        let s = *chunk.row_starts.get(i)? as usize;
        let e = *chunk.row_ends.get(i)? as usize;
        let row = chunk.data.get(s..e)?;
        field_offsets(row, ncols, &mut fields).ok()?;
        row_buf.clear();
        row_buf.extend_from_slice(&(cols.len() as i16).to_be_bytes());
        for &c in cols {
            let (off, len) = fields[c];
            row_buf.extend_from_slice(&len.to_be_bytes());
            if len > 0 {
                row_buf.extend_from_slice(&row[off as usize..off as usize + len as usize]);
            }
        }
        out.push_row(&row_buf);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::Field;
    use gpupg_format::encode::{encode_tuple, Value};
    use gpupg_format::types::NumericTypmod;
    use std::sync::Arc;

    #[test]
    fn plans() {
        assert_eq!(
            plan_for(&PgType::Int4, &DataType::Int32),
            ColPlan::fixed(Kind::Int4)
        );
        let n152 = PgType::Numeric(Some(NumericTypmod {
            precision: 15,
            scale: 2,
        }));
        assert_eq!(
            plan_for(&n152, &DataType::Decimal128(15, 2)),
            ColPlan::Fixed {
                kind: Kind::Decimal,
                precision: 15,
                scale: 2,
                round: false
            }
        );
        assert_eq!(
            plan_for(&PgType::Numeric(None), &DataType::Decimal128(38, 4)),
            ColPlan::Fixed {
                kind: Kind::Decimal,
                precision: 38,
                scale: 4,
                round: true
            }
        );
        assert_eq!(
            plan_for(&PgType::Numeric(None), &DataType::Utf8),
            ColPlan::Var(Kind::NumericText)
        );
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        assert!(plan_for(&PgType::Enum, &dict).is_cpu());
        let list = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        assert_eq!(
            plan_for(&PgType::Array(Box::new(PgType::Text)), &list),
            ColPlan::List(Box::new(ColPlan::Var(Kind::Text)))
        );
        let dlist = DataType::List(Arc::new(Field::new("item", dict, true)));
        assert!(plan_for(&PgType::Array(Box::new(PgType::Enum)), &dlist).is_cpu());
    }

    #[test]
    fn options_round_trip() {
        let o = options_for(&PgType::Numeric(None), &DataType::Decimal128(38, 3));
        assert_eq!(o.numeric, UnconstrainedNumeric::Decimal128 { scale: 3 });
        let o = options_for(&PgType::Numeric(None), &DataType::Float64);
        assert_eq!(o.numeric, UnconstrainedNumeric::Float64);
        let list = DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(Default::default()),
            true,
        )));
        let o = options_for(&PgType::Array(Box::new(PgType::Interval)), &list);
        assert_eq!(o.interval, IntervalRepr::Struct);
    }

    #[test]
    fn splitting() {
        // Rows of 10 bytes with 5-byte gaps: starts 5, 20, 35, ...
        let starts: Vec<u32> = (0..10).map(|i| 5 + 15 * i).collect();
        let ends: Vec<u32> = starts.iter().map(|s| s + 10).collect();
        let all = split_rows(&starts, &ends, 1 << 20);
        assert_eq!(all, vec![0..10]);
        let p = split_rows(&starts, &ends, 40);
        // 5..15, 20..30, 35..45 spans 40 bytes: three rows a piece.
        assert_eq!(p, vec![0..3, 3..6, 6..9, 9..10]);
        // A row larger than the budget is alone.
        assert_eq!(
            split_rows(&starts, &ends, 1),
            (0..10).map(|i| i..i + 1).collect::<Vec<_>>()
        );
        assert_eq!(split_rows(&[], &[], 10), vec![0..0]);
        // Pieces cover every row exactly once.
        let p = split_rows(&starts, &ends, 64);
        assert_eq!(p.first().unwrap().start, 0);
        assert_eq!(p.last().unwrap().end, 10);
        assert!(p.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn projection_and_span() {
        let mut c = CopyChunk::default();
        c.push_row(&encode_tuple(&[
            Value::Int4(1),
            Value::Text("a".into()),
            Value::Null,
        ]));
        c.push_row(&encode_tuple(&[
            Value::Int4(2),
            Value::Text("bc".into()),
            Value::Int8(3),
        ]));
        c.first_row = 100;
        let p = project_chunk(&c, 1..2, 3, &[2, 1]).unwrap();
        assert_eq!(p.first_row, 101);
        assert_eq!(
            p.row(0),
            encode_tuple(&[Value::Int8(3), Value::Text("bc".into())]).as_slice()
        );
        assert!(project_chunk(&c, 0..2, 4, &[0]).is_none());
        assert_eq!(row_span(&c, 0..2), Some((0, c.data.len() as u32)));
        let mut bad = c.clone();
        bad.row_ends[1] = 1_000_000;
        assert_eq!(row_span(&bad, 0..2), None);
    }
}
