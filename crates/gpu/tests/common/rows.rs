//! COPY data of every type the decoders handle (random and edge rows), and
//! lineorder-like chunks: shared by the GPU test binaries, each of which
//! uses part of it.
#![allow(dead_code)]

use gpupg_decode::{ArrayRepr, EnumRepr, IntervalRepr, TypeOptions, UnconstrainedNumeric};
use gpupg_format::encode::{element_oid_of, encode_tuple, Value};
use gpupg_format::types::NumericTypmod;
use gpupg_format::{ColumnDesc, CopyChunk, PgType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn col(name: &str, pg: PgType, nullable: bool) -> ColumnDesc {
    ColumnDesc {
        name: name.to_string(),
        type_name: String::new(),
        type_oid: 0,
        typmod: -1,
        pg_type: pg,
        nullable,
    }
}

pub fn num(p: u16, s: i16) -> PgType {
    PgType::Numeric(Some(NumericTypmod {
        precision: p,
        scale: s,
    }))
}

pub fn arr(e: PgType) -> PgType {
    PgType::Array(Box::new(e))
}

/// Every type, nullable, plus NOT NULL columns.
pub fn all_columns() -> Vec<ColumnDesc> {
    let mut v = vec![
        col("b", PgType::Bool, true),
        col("i2", PgType::Int2, true),
        col("i4", PgType::Int4, true),
        col("i8", PgType::Int8, true),
        col("f4", PgType::Float4, true),
        col("f8", PgType::Float8, true),
        col("oid", PgType::Oid, true),
        col("n152", num(15, 2), true),
        col("n3810", num(38, 10), true),
        col("n5m2", num(5, -2), true),
        col("n", PgType::Numeric(None), true),
        col("t", PgType::Text, true),
        col("by", PgType::Bytea, true),
        col("d", PgType::Date, true),
        col("tm", PgType::Time, true),
        col("ts", PgType::Timestamp, true),
        col("tstz", PgType::Timestamptz, true),
        col("iv", PgType::Interval, true),
        col("u", PgType::Uuid, true),
        col("j", PgType::Json, true),
        col("jb", PgType::Jsonb, true),
        col("e", PgType::Enum, true),
        col("nn_i4", PgType::Int4, false),
        col("nn_t", PgType::Text, false),
    ];
    for (n, e) in [
        ("a_i4", PgType::Int4),
        ("a_t", PgType::Text),
        ("a_f8", PgType::Float8),
        ("a_n", PgType::Numeric(None)),
        ("a_n102", num(10, 2)),
        ("a_d", PgType::Date),
        ("a_b", PgType::Bool),
        ("a_u", PgType::Uuid),
        ("a_iv", PgType::Interval),
        ("a_jb", PgType::Jsonb),
        ("a_by", PgType::Bytea),
        ("a_e", PgType::Enum),
        ("a_ts", PgType::Timestamptz),
    ] {
        v.push(col(n, arr(e), true));
    }
    v
}

pub fn all_options() -> Vec<(&'static str, TypeOptions)> {
    let d = TypeOptions::default();
    vec![
        ("default", d),
        (
            "struct-float-dict",
            TypeOptions {
                interval: IntervalRepr::Struct,
                numeric: UnconstrainedNumeric::Float64,
                enums: EnumRepr::Dictionary,
                arrays: ArrayRepr::Struct,
            },
        ),
        (
            "decimal4",
            TypeOptions {
                numeric: UnconstrainedNumeric::Decimal128 { scale: 4 },
                ..d
            },
        ),
    ]
}

pub const LABELS: [&str; 4] = ["red", "green", "blue", "ünïcode"];

pub fn rand_text(rng: &mut StdRng, max: usize) -> String {
    let n = rng.random_range(0..=max);
    let pool = [
        'a',
        'z',
        '0',
        ' ',
        'é',
        'ß',
        '中',
        '😀',
        '\u{7ff}',
        '\u{ffff}',
        '\u{10ffff}',
    ];
    (0..n)
        .map(|_| {
            if rng.random_bool(0.8) {
                (b'a' + rng.random_range(0..26)) as char
            } else {
                pool[rng.random_range(0..pool.len())]
            }
        })
        .collect()
}

pub fn rand_numeric(rng: &mut StdRng, int_digits: u32, frac_digits: u32, specials: bool) -> Value {
    if specials && rng.random_bool(0.03) {
        return Value::Numeric(
            ["NaN", "Infinity", "-Infinity"][rng.random_range(0..3)].to_string(),
        );
    }
    let i = rng.random_range(0..=int_digits);
    let f = rng.random_range(0..=frac_digits);
    let mut s = String::new();
    if rng.random_bool(0.5) {
        s.push('-');
    }
    if i == 0 {
        s.push('0');
    }
    for _ in 0..i {
        s.push((b'0' + rng.random_range(0..10)) as char);
    }
    if f > 0 {
        s.push('.');
        for _ in 0..f {
            s.push((b'0' + rng.random_range(0..10)) as char);
        }
    }
    Value::Numeric(s)
}

/// A random non-NULL value of a type, in the range the CPU decoder accepts.
pub fn rand_value(rng: &mut StdRng, pg: &PgType, opts: &TypeOptions, _depth: u32) -> Value {
    match pg {
        PgType::Bool => Value::Bool(rng.random()),
        PgType::Int2 => Value::Int2(rng.random()),
        PgType::Int4 => Value::Int4(rng.random()),
        PgType::Int8 => Value::Int8(rng.random()),
        PgType::Float4 => Value::Float4(f32::from_bits(rng.random())),
        PgType::Float8 => Value::Float8(f64::from_bits(rng.random())),
        PgType::Oid => Value::Oid(rng.random()),
        PgType::Numeric(Some(t)) if t.precision == 15 => rand_numeric(rng, 13, 2, false),
        PgType::Numeric(Some(t)) if t.precision == 38 => rand_numeric(rng, 28, 10, false),
        PgType::Numeric(Some(t)) if t.scale < 0 => {
            // numeric(5,-2): multiples of 100 up to 7 digits.
            let v: i64 = rng.random_range(-99_999..=99_999);
            Value::Numeric(format!("{}", v * 100))
        }
        PgType::Numeric(Some(_)) => rand_numeric(rng, 8, 2, false),
        PgType::Numeric(None) => match opts.numeric {
            UnconstrainedNumeric::Decimal128 { .. } => rand_numeric(rng, 30, 8, false),
            // Short values hit the GPU's exact float path, long ones the
            // per-chunk CPU fallback.
            UnconstrainedNumeric::Float64 if rng.random_bool(0.7) => rand_numeric(rng, 8, 6, true),
            _ => {
                if rng.random_bool(0.1) {
                    Value::Numeric(format!(
                        "{}e{}",
                        rng.random_range(1..999),
                        rng.random_range(-40..40)
                    ))
                } else {
                    rand_numeric(rng, 40, 30, true)
                }
            }
        },
        PgType::Text | PgType::Json => {
            let max = if rng.random_bool(0.1) { 300 } else { 20 };
            Value::Text(rand_text(rng, max))
        }
        PgType::Jsonb => Value::Jsonb(rand_text(rng, 50)),
        PgType::Enum => Value::Text(LABELS[rng.random_range(0..LABELS.len())].to_string()),
        PgType::Bytea => Value::Bytes((0..rng.random_range(0..80)).map(|_| rng.random()).collect()),
        PgType::Date => match rng.random_range(0..50) {
            0 => Value::Date(i32::MAX),
            1 => Value::Date(i32::MIN),
            _ => Value::Date(rng.random_range(-2_000_000_000..2_000_000_000)),
        },
        PgType::Time => Value::Time(rng.random_range(0..=86_400_000_000)),
        PgType::Timestamp | PgType::Timestamptz => match rng.random_range(0..50) {
            0 => Value::Timestamp(i64::MAX),
            1 => Value::Timestamp(i64::MIN),
            _ => Value::Timestamp(
                rng.random_range(-9_000_000_000_000_000_000..9_000_000_000_000_000_000),
            ),
        },
        PgType::Interval => Value::Interval {
            micros: rng.random_range(-9_000_000_000_000_000..9_000_000_000_000_000),
            days: rng.random(),
            months: rng.random(),
        },
        PgType::Uuid => Value::Uuid(rng.random()),
        PgType::Array(e) => {
            let elem_oid = element_oid_of(e);
            let shape: Vec<(i32, i32)> = match rng.random_range(0..10) {
                0 => vec![],
                1 => vec![(2, 1), (3, rng.random_range(-5..5))],
                2 => vec![(0, 1)],
                _ => vec![(rng.random_range(1..8), 1)],
            };
            let count: i32 = if shape.is_empty() {
                0
            } else {
                shape.iter().map(|d| d.0).product()
            };
            let elements = (0..count)
                .map(|_| {
                    if rng.random_bool(0.1) {
                        Value::Null
                    } else {
                        rand_value(rng, e, opts, _depth + 1)
                    }
                })
                .collect();
            Value::Array {
                element_oid: elem_oid,
                dims: if count == 0 { vec![] } else { shape },
                elements,
            }
        }
    }
}

pub fn chunk_of(rows: &[Vec<Value>]) -> CopyChunk {
    let mut c = CopyChunk::default();
    for r in rows {
        // The 5-byte CopyData header the source leaves between rows.
        c.data.extend_from_slice(b"d\0\0\0\0");
        let t = encode_tuple(r);
        let start = c.data.len() as u32;
        c.data.extend_from_slice(&t);
        c.row_starts.push(start);
        c.row_ends.push(c.data.len() as u32);
    }
    c.partition = 3;
    c.first_row = 1000;
    c
}

pub fn random_rows(
    cols: &[ColumnDesc],
    opts: &TypeOptions,
    n: usize,
    seed: u64,
) -> Vec<Vec<Value>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            cols.iter()
                .map(|c| {
                    if c.nullable && rng.random_bool(0.15) {
                        Value::Null
                    } else {
                        rand_value(&mut rng, &c.pg_type, opts, 0)
                    }
                })
                .collect()
        })
        .collect()
}

/// lineorder-like rows: 14 int4, bpchar(15), bpchar(1), bpchar(10), with the
/// CopyData headers between rows, written straight into the chunk buffer.
pub fn lineorder_chunk(rows: usize, seed: u64) -> CopyChunk {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = CopyChunk {
        data: Vec::with_capacity(rows * 160),
        row_starts: Vec::with_capacity(rows),
        row_ends: Vec::with_capacity(rows),
        ..CopyChunk::default()
    };
    let prio = [
        "1-URGENT       ",
        "2-HIGH         ",
        "3-MEDIUM       ",
        "4-NOT SPECI    ",
        "5-LOW          ",
    ];
    let modes = [
        "AIR       ",
        "RAIL      ",
        "SHIP      ",
        "TRUCK     ",
        "MAIL      ",
        "FOB       ",
        "REG AIR   ",
    ];
    for _ in 0..rows {
        c.data.extend_from_slice(&[b'd', 0, 0, 0, 0]);
        c.row_starts.push(c.data.len() as u32);
        c.data.extend_from_slice(&17i16.to_be_bytes());
        for k in 0..14 {
            c.data.extend_from_slice(&4i32.to_be_bytes());
            let v: i32 = if k < 5 {
                rng.random_range(1..6_000_000)
            } else {
                rng.random_range(0..10_000_000)
            };
            c.data.extend_from_slice(&v.to_be_bytes());
        }
        for s in [
            prio[rng.random_range(0..5)],
            if rng.random_bool(0.5) { "0" } else { "1" },
            modes[rng.random_range(0..7)],
        ] {
            c.data.extend_from_slice(&(s.len() as i32).to_be_bytes());
            c.data.extend_from_slice(s.as_bytes());
        }
        c.row_ends.push(c.data.len() as u32);
    }
    c
}

pub fn lineorder_cols() -> Vec<ColumnDesc> {
    let mut v: Vec<ColumnDesc> = (0..14)
        .map(|i| col(&format!("c{i}"), PgType::Int4, false))
        .collect();
    v.push(col("lo_orderpriority", PgType::Text, false));
    v.push(col("lo_shippriority", PgType::Text, false));
    v.push(col("lo_shipmode", PgType::Text, false));
    v
}
