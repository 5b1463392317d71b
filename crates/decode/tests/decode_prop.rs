//! Property test: random rows of every type, encoded with the format
//! crate's encoder, decoded, and compared value by value with expectations
//! computed directly from the generated inputs (not through the decoder's
//! value functions).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, IntervalUnit, TimeUnit};
use gpupg_decode::{CpuDecoder, Decoder, OutputSchema, TypeOptions};
use gpupg_format::encode::{encode_tuple, Value};
use gpupg_format::types::{oid, NumericTypmod};
use gpupg_format::{ColumnDesc, CopyChunk, PgType};
use proptest::prelude::*;

/// An expected Arrow value.
#[derive(Debug, Clone, PartialEq)]
enum Exp {
    Null,
    I(i128),
    F(u64),
    S(String),
    B(Vec<u8>),
    Iv(i32, i32, i64),
    L(Vec<Exp>),
}

const EPOCH_DAYS: i128 = 10_957;
const EPOCH_MICROS: i128 = 946_684_800_000_000;
const NKINDS: usize = 20;

fn pg_type(kind: usize) -> PgType {
    match kind {
        0 => PgType::Bool,
        1 => PgType::Int2,
        2 => PgType::Int4,
        3 => PgType::Int8,
        4 => PgType::Float4,
        5 => PgType::Float8,
        6 => PgType::Oid,
        7 => PgType::Numeric(Some(NumericTypmod {
            precision: 18,
            scale: 4,
        })),
        8 => PgType::Numeric(None),
        9 => PgType::Text,
        10 => PgType::Bytea,
        11 => PgType::Date,
        12 => PgType::Time,
        13 => PgType::Timestamp,
        14 => PgType::Timestamptz,
        15 => PgType::Interval,
        16 => PgType::Uuid,
        17 => PgType::Jsonb,
        18 => PgType::Array(Box::new(PgType::Int4)),
        _ => PgType::Array(Box::new(PgType::Text)),
    }
}

/// Canonical numeric_out text of sign, integer digits and fraction digits.
fn canonical(neg: bool, int: &str, frac: &str) -> String {
    let int = int.trim_start_matches('0');
    let nonzero = int.bytes().chain(frac.bytes()).any(|c| c != b'0');
    let mut s = String::new();
    if neg && nonzero {
        s.push('-');
    }
    s.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        s.push('.');
        s.push_str(frac);
    }
    s
}

fn value(kind: usize) -> BoxedStrategy<(Value, Exp)> {
    let v: BoxedStrategy<(Value, Exp)> = match kind {
        0 => any::<bool>().prop_map(|b| (Value::Bool(b), Exp::I(b as i128))).boxed(),
        1 => any::<i16>().prop_map(|v| (Value::Int2(v), Exp::I(v.into()))).boxed(),
        2 => any::<i32>().prop_map(|v| (Value::Int4(v), Exp::I(v.into()))).boxed(),
        3 => any::<i64>().prop_map(|v| (Value::Int8(v), Exp::I(v.into()))).boxed(),
        4 => any::<u32>()
            .prop_map(|b| (Value::Float4(f32::from_bits(b)), Exp::F(b.into())))
            .boxed(),
        5 => any::<u64>().prop_map(|b| (Value::Float8(f64::from_bits(b)), Exp::F(b))).boxed(),
        6 => any::<u32>().prop_map(|v| (Value::Oid(v), Exp::I(v.into()))).boxed(),
        7 => (-(10i128.pow(18) - 1)..10i128.pow(18), 0usize..=4)
            .prop_map(|(v, keep)| {
                // v is the value × 10^4; write it with `keep` fraction
                // digits when the dropped ones are zeros, else all four.
                let (neg, a) = (v < 0, v.unsigned_abs());
                let (int, frac) = (a / 10_000, format!("{:04}", a % 10_000));
                let frac = if frac[keep..].bytes().all(|c| c == b'0') { &frac[..keep] } else { &frac[..] };
                let s = format!("{}{}{}{}", if neg { "-" } else { "" }, int, if frac.is_empty() { "" } else { "." }, frac);
                (Value::Numeric(s), Exp::I(v))
            })
            .boxed(),
        8 => prop_oneof![
            8 => (any::<bool>(), "[0-9]{0,30}", "[0-9]{0,20}").prop_filter_map("needs a digit", |(neg, int, frac)| {
                if int.is_empty() && frac.is_empty() {
                    return None;
                }
                let s = format!("{}{}.{}", if neg { "-" } else { "" }, int, frac);
                let s = if frac.is_empty() { s.trim_end_matches('.').to_string() } else { s };
                Some((Value::Numeric(s), Exp::S(canonical(neg, &int, &frac))))
            }),
            1 => prop_oneof![Just("NaN"), Just("Infinity"), Just("-Infinity")]
                .prop_map(|s| (Value::Numeric(s.into()), Exp::S(s.into()))),
        ]
        .boxed(),
        9 => "\\PC{0,20}".prop_map(|s| (Value::Text(s.clone()), Exp::S(s))).boxed(),
        10 => proptest::collection::vec(any::<u8>(), 0..20)
            .prop_map(|b| (Value::Bytes(b.clone()), Exp::B(b)))
            .boxed(),
        11 => prop_oneof![
            8 => (-2_451_545i32..=2_145_031_948).prop_map(|d| (Value::Date(d), Exp::I(d as i128 + EPOCH_DAYS))),
            1 => prop_oneof![Just(i32::MAX), Just(i32::MIN)].prop_map(|d| (Value::Date(d), Exp::I(d.into()))),
        ]
        .boxed(),
        12 => (0i64..=86_400_000_000).prop_map(|t| (Value::Time(t), Exp::I(t.into()))).boxed(),
        13 | 14 => prop_oneof![
            8 => (-211_813_488_000_000_000i64..=9_222_000_000_000_000_000)
                .prop_map(|t| (Value::Timestamp(t), Exp::I(t as i128 + EPOCH_MICROS))),
            1 => prop_oneof![Just(i64::MAX), Just(i64::MIN)].prop_map(|t| (Value::Timestamp(t), Exp::I(t.into()))),
        ]
        .boxed(),
        15 => (-(i64::MAX / 1000)..=i64::MAX / 1000, any::<i32>(), any::<i32>())
            .prop_map(|(micros, days, months)| {
                (Value::Interval { micros, days, months }, Exp::Iv(months, days, micros * 1000))
            })
            .boxed(),
        16 => any::<[u8; 16]>().prop_map(|u| (Value::Uuid(u), Exp::B(u.to_vec()))).boxed(),
        17 => "\\PC{0,20}".prop_map(|s| (Value::Jsonb(s.clone()), Exp::S(s))).boxed(),
        18 => proptest::collection::vec(proptest::option::of(any::<i32>()), 0..6)
            .prop_map(|v| {
                let elems = v.iter().map(|x| x.map_or(Value::Null, Value::Int4)).collect();
                let exp = v.iter().map(|x| x.map_or(Exp::Null, |i| Exp::I(i.into()))).collect();
                (Value::array1(oid::INT4, elems), Exp::L(exp))
            })
            .boxed(),
        _ => proptest::collection::vec(proptest::option::of("\\PC{0,6}"), 0..6)
            .prop_map(|v| {
                let elems = v.iter().map(|x| x.clone().map_or(Value::Null, Value::Text)).collect();
                let exp = v.iter().map(|x| x.clone().map_or(Exp::Null, Exp::S)).collect();
                (Value::array1(oid::TEXT, elems), Exp::L(exp))
            })
            .boxed(),
    };
    prop_oneof![1 => Just((Value::Null, Exp::Null)), 6 => v].boxed()
}

/// Reads cell `i` of an Arrow array back into an [`Exp`].
fn actual(a: &ArrayRef, i: usize) -> Exp {
    if a.is_null(i) {
        return Exp::Null;
    }
    match a.data_type() {
        DataType::Boolean => Exp::I(a.as_boolean().value(i) as i128),
        DataType::Int16 => Exp::I(a.as_primitive::<Int16Type>().value(i).into()),
        DataType::Int32 => Exp::I(a.as_primitive::<Int32Type>().value(i).into()),
        DataType::Int64 => Exp::I(a.as_primitive::<Int64Type>().value(i).into()),
        DataType::UInt32 => Exp::I(a.as_primitive::<UInt32Type>().value(i).into()),
        DataType::Date32 => Exp::I(a.as_primitive::<Date32Type>().value(i).into()),
        DataType::Time64(TimeUnit::Microsecond) => {
            Exp::I(a.as_primitive::<Time64MicrosecondType>().value(i).into())
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Exp::I(a.as_primitive::<TimestampMicrosecondType>().value(i).into())
        }
        DataType::Decimal128(_, _) => Exp::I(a.as_primitive::<Decimal128Type>().value(i)),
        DataType::Float32 => Exp::F(a.as_primitive::<Float32Type>().value(i).to_bits().into()),
        DataType::Float64 => Exp::F(a.as_primitive::<Float64Type>().value(i).to_bits()),
        DataType::Utf8 => Exp::S(a.as_string::<i32>().value(i).to_string()),
        DataType::Binary => Exp::B(a.as_binary::<i32>().value(i).to_vec()),
        DataType::FixedSizeBinary(_) => Exp::B(a.as_fixed_size_binary().value(i).to_vec()),
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = a.as_primitive::<IntervalMonthDayNanoType>().value(i);
            Exp::Iv(v.months, v.days, v.nanoseconds)
        }
        DataType::List(_) => {
            let v = a.as_list::<i32>().value(i);
            Exp::L((0..v.len()).map(|j| actual(&v, j)).collect())
        }
        other => panic!("unexpected type {other}"),
    }
}

fn table() -> impl Strategy<Value = (Vec<usize>, Vec<Vec<(Value, Exp)>>)> {
    proptest::collection::vec(0..NKINDS, 1..7).prop_flat_map(|kinds| {
        let row = kinds.iter().map(|&k| value(k)).collect::<Vec<_>>();
        (Just(kinds), proptest::collection::vec(row, 0..40))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn decodes_random_rows((kinds, rows) in table()) {
        let cols: Vec<ColumnDesc> = kinds
            .iter()
            .enumerate()
            .map(|(i, &k)| ColumnDesc {
                name: format!("c{i}"),
                type_name: String::new(),
                type_oid: 0,
                typmod: -1,
                pg_type: pg_type(k),
                nullable: true,
            })
            .collect();
        let mut chunk = CopyChunk::default();
        for r in &rows {
            let vals: Vec<Value> = r.iter().map(|(v, _)| v.clone()).collect();
            chunk.data.extend_from_slice(b"d\0\0\0\0");
            chunk.push_row(&encode_tuple(&vals));
        }
        let schema = Arc::new(OutputSchema::new(&cols, &TypeOptions::default()).unwrap());
        let batch = CpuDecoder::new(schema).decode(&chunk).unwrap();
        prop_assert_eq!(batch.num_rows(), rows.len());
        for (c, col) in batch.columns().iter().enumerate() {
            col.to_data().validate_full().unwrap();
            for (r, row) in rows.iter().enumerate() {
                prop_assert_eq!(&actual(col, r), &row[c].1, "column {} ({}) row {}", c, pg_type(kinds[c]), r);
            }
        }
    }
}
