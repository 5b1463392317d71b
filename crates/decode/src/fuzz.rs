//! A harness for fuzzing the decoder: arbitrary bytes become a schema, type
//! options and a chunk (with arbitrary row boundaries), which are decoded.
//! Shared by the cargo-fuzz target in `fuzz/` and by a plain test, so CI
//! exercises the same code without cargo-fuzz.

use std::sync::Arc;

use arrow_array::Array;
use gpupg_format::types::NumericTypmod;
use gpupg_format::{ColumnDesc, CopyChunk, PgType};

use crate::{
    ArrayRepr, CpuDecoder, Decoder, EnumRepr, IntervalRepr, OutputSchema, TypeOptions,
    UnconstrainedNumeric,
};

/// Reads the input front to back; past its end every read is 0.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// The scalar types a fuzz schema draws from.
fn scalar(b: u8) -> PgType {
    match b % 20 {
        0 => PgType::Bool,
        1 => PgType::Int2,
        2 => PgType::Int4,
        3 => PgType::Int8,
        4 => PgType::Float4,
        5 => PgType::Float8,
        6 => PgType::Oid,
        7 => PgType::Numeric(None),
        8 => PgType::Numeric(Some(NumericTypmod {
            precision: 15,
            scale: 2,
        })),
        9 => PgType::Numeric(Some(NumericTypmod {
            precision: 38,
            scale: -3,
        })),
        10 => PgType::Text,
        11 => PgType::Bytea,
        12 => PgType::Date,
        13 => PgType::Time,
        14 => PgType::Timestamp,
        15 => PgType::Timestamptz,
        16 => PgType::Interval,
        17 => PgType::Uuid,
        18 => PgType::Json,
        _ => {
            if b & 0x80 != 0 {
                PgType::Enum
            } else {
                PgType::Jsonb
            }
        }
    }
}

/// Decodes the chunk described by `input` and checks the batch's shape.
/// Returns whether decoding succeeded. Never panics unless the decoder
/// has a bug (a panic, or a batch of the wrong shape).
pub fn decode_arbitrary(input: &[u8]) -> bool {
    let mut inp = Input(input);
    let ncols = 1 + usize::from(inp.byte() % 5);
    let mut columns = Vec::with_capacity(ncols);
    for i in 0..ncols {
        let t = inp.byte();
        let pg_type = match inp.byte() % 8 {
            0 => PgType::Array(Box::new(scalar(t))),
            1 if t & 1 == 1 => PgType::Array(Box::new(PgType::Array(Box::new(scalar(t >> 1))))),
            _ => scalar(t),
        };
        columns.push(ColumnDesc {
            name: format!("c{i}"),
            type_name: String::new(),
            type_oid: 0,
            typmod: -1,
            pg_type,
            nullable: t & 0x40 == 0,
        });
    }
    let o = inp.byte();
    let opts = TypeOptions {
        interval: if o & 1 == 0 {
            IntervalRepr::MonthDayNano
        } else {
            IntervalRepr::Struct
        },
        numeric: match (o >> 1) % 3 {
            0 => UnconstrainedNumeric::Text,
            1 => UnconstrainedNumeric::Float64,
            _ => UnconstrainedNumeric::Decimal128 {
                scale: (inp.byte() % 77) as i8 - 38,
            },
        },
        enums: if o & 8 == 0 {
            EnumRepr::Utf8
        } else {
            EnumRepr::Dictionary
        },
        arrays: if o & 16 == 0 {
            ArrayRepr::List
        } else {
            ArrayRepr::Struct
        },
    };
    let Ok(schema) = OutputSchema::new(&columns, &opts) else {
        return false;
    };
    let mut chunk = CopyChunk {
        partition: u32::from(inp.byte()),
        first_row: u64::from(inp.byte()),
        ..CopyChunk::default()
    };
    let nrows = usize::from(inp.byte() % 8);
    if o & 32 == 0 {
        // Well-framed tuples with arbitrary field contents: this reaches
        // the value decoders. A field's length byte picks NULL, a length
        // typical of fixed-size types, or a short arbitrary length.
        for _ in 0..nrows {
            let mut row = Vec::new();
            row.extend_from_slice(&(ncols as i16).to_be_bytes());
            for _ in 0..ncols {
                let l = inp.byte();
                let len = match l % 16 {
                    0 => -1,
                    1 => 1,
                    2 => 2,
                    3 | 4 => 4,
                    5 | 6 => 8,
                    7 => 16,
                    _ => i32::from(l >> 2),
                };
                row.extend_from_slice(&len.to_be_bytes());
                if len > 0 {
                    let bytes = inp.take(len as usize);
                    row.extend_from_slice(bytes);
                    row.resize(row.len() + len as usize - bytes.len(), 0);
                }
            }
            chunk.push_row(&row);
        }
    } else {
        // Raw bytes cut at arbitrary boundaries (possibly overlapping or
        // outside the buffer): this reaches the framing checks.
        let bounds: Vec<(u8, u8)> = (0..nrows).map(|_| (inp.byte(), inp.byte())).collect();
        chunk.data = inp.0.to_vec();
        let len = chunk.data.len() as u32 + 2;
        for (a, b) in bounds {
            let s = u32::from(a) % len;
            let e = s + u32::from(b) % 64;
            chunk.row_starts.push(s);
            chunk.row_ends.push(e);
        }
    }
    let schema = Arc::new(schema);
    let mut dec = CpuDecoder::new(schema.clone());
    let first = dec.decode(&chunk);
    // Decoding again with the same decoder must give the same outcome
    // (scratch state from a failed decode must not leak into the next).
    let second = dec.decode(&chunk);
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.num_rows(), chunk.num_rows());
            assert_eq!(a.schema(), schema.arrow_schema());
            assert_eq!(a, b);
            for c in a.columns() {
                // Full validation of offsets, UTF-8 and child lengths.
                if let Err(e) = c.to_data().validate_full() {
                    panic!("decoder built an invalid array: {e}");
                }
            }
            true
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            false
        }
        (a, b) => panic!("decoding the same chunk twice differed: {a:?} vs {b:?}"),
    }
}

/// The page path's harness: the sample table's pages (a layout and a seed
/// from the first bytes), with the rest of the input written over them at
/// offsets it gives, decoded with [`CpuDecoder::decode_pages`]. Any panic
/// is a bug; errors and flagged pages are fine. Returns whether some rows
/// were decoded.
pub fn decode_pages_arbitrary(input: &[u8]) -> bool {
    use gpupg_format::heap::sample::{layouts, output_columns, pages};

    const PAGES: usize = 3;
    let mut inp = Input(input);
    let layouts = layouts();
    let layout = &layouts[usize::from(inp.byte()) % layouts.len()];
    let mut data = pages(u64::from(inp.byte()), PAGES, usize::from(inp.byte() % 4));
    // Patches: a 2-byte offset, a length, then that many bytes.
    while !inp.0.is_empty() {
        let at = usize::from(u16::from_le_bytes([inp.byte(), inp.byte()])) * 3 % data.len();
        let n = usize::from(inp.byte() % 16);
        for (d, &b) in data[at..].iter_mut().zip(inp.take(n)) {
            *d = b;
        }
    }
    let cols = output_columns(layout);
    let Ok(schema) = OutputSchema::new(&cols, &TypeOptions::default()) else {
        return false;
    };
    let mut dec = CpuDecoder::new(Arc::new(schema));
    // Pages in an order the input picks, one of them twice, one past the end.
    let order: Vec<u32> = [2u32, 0, 1, 0, PAGES as u32]
        .iter()
        .map(|&p| (p + u32::from(input.first().copied().unwrap_or(0))) % (PAGES as u32 + 1))
        .collect();
    match dec.decode_pages(&data, &order, &order, layout) {
        Ok(d) => {
            for &k in &d.flagged {
                assert!((k as usize) < order.len(), "flagged page {k} out of range");
            }
            match d.batch {
                Some(b) => {
                    for c in b.columns() {
                        if let Err(e) = c.to_data().validate_full() {
                            panic!("page decoder built an invalid array: {e}");
                        }
                    }
                    b.num_rows() > 0
                }
                None => false,
            }
        }
        Err(_) => false,
    }
}
