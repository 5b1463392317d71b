//! Per-type decoding with edge values, framing errors, options.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_buffer::IntervalMonthDayNano;
use arrow_schema::{DataType, TimeUnit};
use gpupg_decode::*;
use gpupg_format::encode::{encode_tuple, numeric_from_str, Value};
use gpupg_format::types::{oid, NumericTypmod};
use gpupg_format::{ColumnDesc, CopyChunk, PgType};

fn col(name: &str, pg_type: PgType) -> ColumnDesc {
    ColumnDesc {
        name: name.into(),
        type_name: pg_type.to_string(),
        type_oid: 0,
        typmod: -1,
        pg_type,
        nullable: true,
    }
}

fn chunk(rows: &[Vec<Value>]) -> CopyChunk {
    let mut c = CopyChunk {
        partition: 3,
        first_row: 100,
        ..CopyChunk::default()
    };
    for r in rows {
        // A CopyData header's worth of junk between rows, as a source leaves.
        c.data.extend_from_slice(b"d\0\0\0\0");
        c.push_row(&encode_tuple(r));
    }
    c
}

fn decode_opts(
    cols: &[ColumnDesc],
    opts: TypeOptions,
    rows: &[Vec<Value>],
) -> Result<RecordBatch, DecodeError> {
    let schema = Arc::new(OutputSchema::new(cols, &opts)?);
    CpuDecoder::new(schema).decode(&chunk(rows))
}

fn decode1(pg: PgType, opts: TypeOptions, values: Vec<Value>) -> Result<RecordBatch, DecodeError> {
    let rows: Vec<Vec<Value>> = values.into_iter().map(|v| vec![v]).collect();
    decode_opts(&[col("c", pg)], opts, &rows)
}

fn ok1(pg: PgType, values: Vec<Value>) -> RecordBatch {
    decode1(pg, TypeOptions::default(), values).unwrap()
}

fn num(p: u16, s: i16) -> PgType {
    PgType::Numeric(Some(NumericTypmod {
        precision: p,
        scale: s,
    }))
}

fn nums(v: &[&str]) -> Vec<Value> {
    v.iter().map(|s| Value::Numeric(s.to_string())).collect()
}

fn err_text(r: Result<RecordBatch, DecodeError>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn integers_and_bool() {
    let b = ok1(
        PgType::Int2,
        vec![Value::Int2(i16::MIN), Value::Int2(i16::MAX), Value::Null],
    );
    let a = b.column(0).as_primitive::<Int16Type>();
    assert_eq!(
        (a.value(0), a.value(1), a.is_null(2)),
        (i16::MIN, i16::MAX, true)
    );
    let b = ok1(
        PgType::Int4,
        vec![Value::Int4(i32::MIN), Value::Int4(i32::MAX), Value::Int4(0)],
    );
    let a = b.column(0).as_primitive::<Int32Type>();
    assert_eq!(a.values().to_vec(), vec![i32::MIN, i32::MAX, 0]);
    assert_eq!(a.null_count(), 0);
    let b = ok1(
        PgType::Int8,
        vec![Value::Int8(i64::MIN), Value::Int8(i64::MAX)],
    );
    assert_eq!(
        b.column(0).as_primitive::<Int64Type>().values().to_vec(),
        vec![i64::MIN, i64::MAX]
    );
    let b = ok1(PgType::Oid, vec![Value::Oid(u32::MAX), Value::Oid(0)]);
    assert_eq!(
        b.column(0).as_primitive::<UInt32Type>().values().to_vec(),
        vec![u32::MAX, 0]
    );
    let b = ok1(
        PgType::Bool,
        vec![Value::Bool(true), Value::Bool(false), Value::Null],
    );
    let a = b.column(0).as_boolean();
    assert!(a.value(0) && !a.value(1) && a.is_null(2));
    // A wrong-sized fixed value is an error naming column, type, partition, row.
    let e = err_text(decode1(
        PgType::Int4,
        TypeOptions::default(),
        vec![Value::Int4(1), Value::Int2(1)],
    ));
    assert_eq!(
        e,
        "column c (integer), partition 3, row 101: value has 2 bytes, expected 4"
    );
}

#[test]
fn floats_keep_bits() {
    let nan_payload = f64::from_bits(0x7ff8_0000_0000_0abc);
    let b = ok1(
        PgType::Float8,
        vec![
            Value::Float8(nan_payload),
            Value::Float8(-0.0),
            Value::Float8(f64::INFINITY),
            Value::Float8(f64::NEG_INFINITY),
            Value::Float8(f64::MIN_POSITIVE / 2.0),
        ],
    );
    let a = b.column(0).as_primitive::<Float64Type>();
    let bits: Vec<u64> = a.values().iter().map(|v| v.to_bits()).collect();
    assert_eq!(
        bits,
        vec![
            0x7ff8_0000_0000_0abc,
            (-0.0f64).to_bits(),
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            (f64::MIN_POSITIVE / 2.0).to_bits()
        ]
    );
    let b = ok1(
        PgType::Float4,
        vec![
            Value::Float4(-0.0),
            Value::Float4(f32::NAN),
            Value::Float4(f32::MAX),
        ],
    );
    let a = b.column(0).as_primitive::<Float32Type>();
    assert_eq!(a.value(0).to_bits(), (-0.0f32).to_bits());
    assert_eq!(a.value(1).to_bits(), f32::NAN.to_bits());
    assert_eq!(a.value(2), f32::MAX);
}

#[test]
fn numeric_declared_precision() {
    let b = ok1(
        num(15, 2),
        nums(&[
            "12345678.90",
            "0",
            "-0.00",
            "-1.5",
            "0.01",
            "9999999999999.99",
        ]),
    );
    assert_eq!(
        b.schema().field(0).data_type(),
        &DataType::Decimal128(15, 2)
    );
    let a = b.column(0).as_primitive::<Decimal128Type>();
    assert_eq!(
        a.values().to_vec(),
        vec![1_234_567_890, 0, 0, -150, 1, 999_999_999_999_999]
    );
    let max38 = "9".repeat(38);
    let b = ok1(num(38, 0), nums(&[&max38, &format!("-{max38}")]));
    let a = b.column(0).as_primitive::<Decimal128Type>();
    assert_eq!(a.value(0), 10i128.pow(38) - 1);
    assert_eq!(a.value(1), 1 - 10i128.pow(38));
    // Negative scale: numeric(5,-2) holds multiples of 100.
    let b = ok1(num(5, -2), nums(&["1234500"]));
    assert_eq!(
        b.schema().field(0).data_type(),
        &DataType::Decimal128(5, -2)
    );
    assert_eq!(b.column(0).as_primitive::<Decimal128Type>().value(0), 12345);
    // More digits than declared: impossible from a real column, so an error.
    let e = err_text(decode1(
        num(5, 2),
        TypeOptions::default(),
        nums(&["1000.00"]),
    ));
    assert!(
        e.contains("does not fit numeric(5,2)") && e.contains("row 100"),
        "{e}"
    );
    let e = err_text(decode1(num(5, 2), TypeOptions::default(), nums(&["1.125"])));
    assert!(e.contains("more than 2 fractional digits"), "{e}");
    let e = err_text(decode1(num(15, 2), TypeOptions::default(), nums(&["NaN"])));
    assert!(e.contains("NaN has no decimal"), "{e}");
    // numeric(2,5) (scale over precision, PostgreSQL 15+) is not a valid
    // Arrow decimal: it falls back to the unconstrained mapping (text).
    let b = ok1(num(2, 5), nums(&["0.00012"]));
    assert_eq!(b.column(0).as_string::<i32>().value(0), "0.00012");
}

#[test]
fn numeric_unconstrained_text() {
    let tiny = format!("0.{}1", "0".repeat(999));
    let b = ok1(
        PgType::Numeric(None),
        nums(&[
            "0",
            "-0.00",
            "1e-1000",
            "NaN",
            "Infinity",
            "-Infinity",
            "-123.4500",
            "1e40",
            "0.0001",
        ]),
    );
    let a = b.column(0).as_string::<i32>();
    let got: Vec<&str> = (0..a.len()).map(|i| a.value(i)).collect();
    let e40 = format!("1{}", "0".repeat(40));
    assert_eq!(
        got,
        vec![
            "0",
            "0.00",
            tiny.as_str(),
            "NaN",
            "Infinity",
            "-Infinity",
            "-123.4500",
            e40.as_str(),
            "0.0001"
        ]
    );
}

#[test]
fn numeric_unconstrained_decimal_and_float() {
    let opts = TypeOptions {
        numeric: UnconstrainedNumeric::Decimal128 { scale: 2 },
        ..TypeOptions::default()
    };
    let b = decode1(
        PgType::Numeric(None),
        opts,
        nums(&["1.005", "-1.005", "2.004", "1e-1000", "7"]),
    )
    .unwrap();
    assert_eq!(
        b.schema().field(0).data_type(),
        &DataType::Decimal128(38, 2)
    );
    let a = b.column(0).as_primitive::<Decimal128Type>();
    assert_eq!(a.values().to_vec(), vec![101, -101, 200, 0, 700]);
    let e = err_text(decode1(PgType::Numeric(None), opts, nums(&["1", "NaN"])));
    assert_eq!(
        e,
        "column c (numeric), partition 3, row 101: numeric NaN has no decimal representation"
    );
    let e = err_text(decode1(PgType::Numeric(None), opts, nums(&["1e37"])));
    assert!(e.contains("does not fit numeric(38,2)"), "{e}");
    let bad = TypeOptions {
        numeric: UnconstrainedNumeric::Decimal128 { scale: 39 },
        ..TypeOptions::default()
    };
    assert!(matches!(
        OutputSchema::new(&[col("c", PgType::Numeric(None))], &bad),
        Err(DecodeError::Options(_))
    ));

    let opts = TypeOptions {
        numeric: UnconstrainedNumeric::Float64,
        ..TypeOptions::default()
    };
    let b = decode1(
        PgType::Numeric(None),
        opts,
        nums(&["0.1", "NaN", "-Infinity", "Infinity", "-2.5e-3"]),
    )
    .unwrap();
    let a = b.column(0).as_primitive::<Float64Type>();
    assert_eq!(a.value(0), 0.1);
    assert!(a.value(1).is_nan());
    assert_eq!(a.value(2), f64::NEG_INFINITY);
    assert_eq!(a.value(3), f64::INFINITY);
    assert_eq!(a.value(4), -0.0025);
}

#[test]
fn dates() {
    // 4713-11-24 BC is Julian day 0: 2451545 days before 2000-01-01.
    // 5874897-12-31 AD is PostgreSQL's last date.
    let b = ok1(
        PgType::Date,
        vec![
            Value::Date(0),
            Value::Date(i32::MAX),
            Value::Date(i32::MIN),
            Value::Date(-2_451_545),
            Value::Date(2_145_031_948),
            Value::Date(-10_957),
        ],
    );
    assert_eq!(b.schema().field(0).data_type(), &DataType::Date32);
    let a = b.column(0).as_primitive::<Date32Type>();
    assert_eq!(
        a.values().to_vec(),
        vec![10_957, i32::MAX, i32::MIN, -2_440_588, 2_145_042_905, 0]
    );
    let e = err_text(decode1(
        PgType::Date,
        TypeOptions::default(),
        vec![Value::Date(i32::MAX - 5)],
    ));
    assert!(e.contains("date 2147483642 is out of Arrow's range"), "{e}");
}

#[test]
fn timestamps_and_times() {
    const SHIFT: i64 = 946_684_800_000_000;
    // 4713-11-24 00:00 BC, PostgreSQL's first timestamp.
    let min_ts = -211_813_488_000_000_000i64;
    // 294246-01-01 AD fits after the shift; 294276-12-31 AD does not.
    let late_ok = 9_222_424_000_000_000_000i64;
    let too_late = 9_223_371_331_199_999_999i64;
    for (pg, tz) in [
        (PgType::Timestamp, None),
        (PgType::Timestamptz, Some("UTC".into())),
    ] {
        let b = ok1(
            pg.clone(),
            vec![
                Value::Timestamp(0),
                Value::Timestamp(i64::MAX),
                Value::Timestamp(i64::MIN),
                Value::Timestamp(min_ts),
                Value::Timestamp(late_ok),
                Value::Null,
            ],
        );
        assert_eq!(
            b.schema().field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, tz)
        );
        let a = b.column(0).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(
            &a.values()[..5],
            &[SHIFT, i64::MAX, i64::MIN, min_ts + SHIFT, late_ok + SHIFT]
        );
        assert!(a.is_null(5));
        let e = err_text(decode1(
            pg,
            TypeOptions::default(),
            vec![Value::Timestamp(too_late)],
        ));
        assert!(
            e.contains("out of Arrow's range") && e.contains("row 100"),
            "{e}"
        );
    }
    let b = ok1(
        PgType::Time,
        vec![Value::Time(0), Value::Time(86_400_000_000), Value::Time(1)],
    );
    assert_eq!(
        b.schema().field(0).data_type(),
        &DataType::Time64(TimeUnit::Microsecond)
    );
    assert_eq!(
        b.column(0)
            .as_primitive::<Time64MicrosecondType>()
            .values()
            .to_vec(),
        vec![0, 86_400_000_000, 1]
    );
    assert!(decode1(PgType::Time, TypeOptions::default(), vec![Value::Time(-1)]).is_err());
}

#[test]
fn intervals() {
    let vals = vec![
        Value::Interval {
            micros: -1_500_000,
            days: -3,
            months: -14,
        },
        Value::Interval {
            micros: 86_400_000_000,
            days: 1,
            months: i32::MAX,
        },
        Value::Null,
    ];
    let b = ok1(PgType::Interval, vals.clone());
    let a = b.column(0).as_primitive::<IntervalMonthDayNanoType>();
    assert_eq!(
        a.value(0),
        IntervalMonthDayNano {
            months: -14,
            days: -3,
            nanoseconds: -1_500_000_000
        }
    );
    assert_eq!(a.value(1).nanoseconds, 86_400_000_000_000);
    assert!(a.is_null(2));
    let opts = TypeOptions {
        interval: IntervalRepr::Struct,
        ..TypeOptions::default()
    };
    let big = Value::Interval {
        micros: i64::MAX,
        days: i32::MIN,
        months: i32::MIN,
    };
    let b = decode1(
        PgType::Interval,
        opts,
        vec![vals[0].clone(), big.clone(), Value::Null],
    )
    .unwrap();
    let s = b.column(0).as_struct();
    assert_eq!(s.column_names(), vec!["months", "days", "microseconds"]);
    assert_eq!(s.column(0).as_primitive::<Int32Type>().value(0), -14);
    assert_eq!(s.column(1).as_primitive::<Int32Type>().value(1), i32::MIN);
    assert_eq!(s.column(2).as_primitive::<Int64Type>().value(1), i64::MAX);
    assert!(s.is_null(2));
    // Microseconds × 1000 overflow Arrow's nanoseconds.
    let e = err_text(decode1(PgType::Interval, TypeOptions::default(), vec![big]));
    assert!(e.contains("interval microseconds"), "{e}");
}

#[test]
fn text_bytea_uuid_json() {
    let b = ok1(
        PgType::Text,
        vec![
            Value::Text(String::new()),
            Value::Text("héllo wörld ✓ 𝄞".into()),
            Value::Text("ab   ".into()),
            Value::Null,
        ],
    );
    let a = b.column(0).as_string::<i32>();
    assert_eq!(
        (a.value(0), a.value(1), a.value(2)),
        ("", "héllo wörld ✓ 𝄞", "ab   ")
    );
    assert!(a.is_null(3) && a.is_valid(0));
    // Invalid UTF-8 names the row.
    let e = err_text(decode1(
        PgType::Text,
        TypeOptions::default(),
        vec![Value::Text("ok".into()), Value::Bytes(vec![b'a', 0xff])],
    ));
    assert_eq!(
        e,
        "column c (text), partition 3, row 101: invalid UTF-8 at byte 1 of the value"
    );
    // Two halves of one character in adjacent values: each is invalid even
    // though their concatenation is valid.
    let e = err_text(decode1(
        PgType::Text,
        TypeOptions::default(),
        vec![Value::Bytes(vec![b'x', 0xc3]), Value::Bytes(vec![0xa9])],
    ));
    assert!(e.contains("row 100") && e.contains("invalid UTF-8"), "{e}");

    let b = ok1(
        PgType::Bytea,
        vec![
            Value::Bytes(vec![]),
            Value::Bytes(vec![0, 0xff, 1]),
            Value::Null,
        ],
    );
    let a = b.column(0).as_binary::<i32>();
    assert_eq!((a.value(0), a.value(1)), (&[][..], &[0, 0xff, 1][..]));
    assert!(a.is_null(2) && a.is_valid(0));

    let u = *b"0123456789abcdef";
    let b = ok1(PgType::Uuid, vec![Value::Uuid(u), Value::Null]);
    let f = b.schema().field(0).clone();
    assert_eq!(f.data_type(), &DataType::FixedSizeBinary(16));
    assert_eq!(f.metadata()["ARROW:extension:name"], "arrow.uuid");
    assert_eq!(f.metadata()["ARROW:extension:metadata"], "");
    assert_eq!(b.column(0).as_fixed_size_binary().value(0), &u);
    assert!(b.column(0).is_null(1));

    let b = ok1(PgType::Json, vec![Value::Text("{\"a\": [1, 2]}".into())]);
    assert_eq!(
        b.schema().field(0).metadata()["ARROW:extension:name"],
        "arrow.json"
    );
    assert_eq!(b.column(0).as_string::<i32>().value(0), "{\"a\": [1, 2]}");
    let b = ok1(
        PgType::Jsonb,
        vec![
            Value::Jsonb("{\"é\": null}".into()),
            Value::Jsonb(String::new()),
        ],
    );
    assert_eq!(
        b.schema().field(0).metadata()["ARROW:extension:name"],
        "arrow.json"
    );
    let a = b.column(0).as_string::<i32>();
    assert_eq!((a.value(0), a.value(1)), ("{\"é\": null}", ""));
    let e = err_text(decode1(
        PgType::Jsonb,
        TypeOptions::default(),
        vec![Value::Bytes(b"\x02{}".to_vec())],
    ));
    assert!(e.contains("jsonb format version 2"), "{e}");
}

#[test]
fn enums() {
    let vals = vec![
        Value::Text("sad".into()),
        Value::Text("happy".into()),
        Value::Null,
        Value::Text("sad".into()),
    ];
    let b = ok1(PgType::Enum, vals.clone());
    assert_eq!(b.column(0).as_string::<i32>().value(3), "sad");
    let opts = TypeOptions {
        enums: EnumRepr::Dictionary,
        ..TypeOptions::default()
    };
    let b = decode1(PgType::Enum, opts, vals).unwrap();
    let d = b.column(0).as_dictionary::<Int32Type>();
    assert_eq!(d.keys().values().to_vec()[..2], [0, 1]);
    assert_eq!(d.keys().value(3), 0);
    assert!(d.is_null(2));
    let labels = d.values().as_string::<i32>();
    assert_eq!(
        (labels.value(0), labels.value(1), labels.len()),
        ("sad", "happy", 2)
    );
}

fn int_array(dims: Vec<(i32, i32)>, v: &[Option<i32>]) -> Value {
    Value::Array {
        element_oid: oid::INT4,
        dims,
        elements: v
            .iter()
            .map(|x| x.map_or(Value::Null, Value::Int4))
            .collect(),
    }
}

#[test]
fn arrays_as_lists() {
    let rows = vec![
        int_array(vec![], &[]),
        int_array(vec![(3, 1)], &[Some(1), None, Some(3)]),
        Value::Null,
        int_array(vec![(2, 1), (2, 1)], &[Some(1), Some(2), Some(3), Some(4)]),
        int_array(
            vec![(1, 1), (2, 0), (2, 5)],
            &[Some(5), Some(6), Some(7), Some(8)],
        ),
    ];
    let schema = Arc::new(
        OutputSchema::new(
            &[col("a", PgType::Array(Box::new(PgType::Int4)))],
            &TypeOptions::default(),
        )
        .unwrap(),
    );
    let mut dec = CpuDecoder::new(schema);
    let b = dec
        .decode(&chunk(
            &rows.into_iter().map(|v| vec![v]).collect::<Vec<_>>(),
        ))
        .unwrap();
    let l = b.column(0).as_list::<i32>();
    assert_eq!(l.value_offsets(), &[0, 0, 3, 3, 7, 11]);
    assert!(l.is_null(2) && l.is_valid(0));
    let v = l.values().as_primitive::<Int32Type>();
    assert_eq!(v.value(0), 1);
    assert!(v.is_null(1));
    assert_eq!(&v.values()[3..], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        dec.stats(),
        DecodeStats {
            rows: 5,
            flattened_arrays: 2
        }
    );
}

#[test]
fn arrays_as_structs_keep_shape() {
    let opts = TypeOptions {
        arrays: ArrayRepr::Struct,
        ..TypeOptions::default()
    };
    let rows = vec![
        int_array(
            vec![(1, 1), (2, 0), (2, -5)],
            &[Some(5), None, Some(7), Some(8)],
        ),
        int_array(vec![], &[]),
        Value::Null,
        int_array(vec![(2, 1)], &[Some(9), Some(10)]),
    ];
    let mut dec = CpuDecoder::new(Arc::new(
        OutputSchema::new(&[col("a", PgType::Array(Box::new(PgType::Int4)))], &opts).unwrap(),
    ));
    let b = dec
        .decode(&chunk(
            &rows.into_iter().map(|v| vec![v]).collect::<Vec<_>>(),
        ))
        .unwrap();
    let s = b.column(0).as_struct();
    assert_eq!(s.column_names(), vec!["dims", "lower_bounds", "values"]);
    let dims = s.column(0).as_list::<i32>();
    let lbs = s.column(1).as_list::<i32>();
    let vals = s.column(2).as_list::<i32>();
    let ints = |a: arrow_array::ArrayRef| a.as_primitive::<Int32Type>().values().to_vec();
    assert_eq!(ints(dims.value(0)), vec![1, 2, 2]);
    assert_eq!(ints(lbs.value(0)), vec![1, 0, -5]);
    assert_eq!(ints(dims.value(1)), Vec::<i32>::new());
    assert!(s.is_null(2));
    assert_eq!(ints(dims.value(3)), vec![2]);
    assert_eq!(ints(vals.value(3)), vec![9, 10]);
    assert!(vals.value(0).is_null(1));
    assert_eq!(dec.stats().flattened_arrays, 0);
}

#[test]
fn arrays_of_text_numeric_timestamptz() {
    let text = Value::array1(
        oid::TEXT,
        vec![
            Value::Text("a".into()),
            Value::Null,
            Value::Text("ü ".into()),
        ],
    );
    let b = ok1(
        PgType::Array(Box::new(PgType::Text)),
        vec![text, Value::array1(oid::TEXT, vec![])],
    );
    let l = b.column(0).as_list::<i32>();
    let v = l.values().as_string::<i32>();
    assert_eq!((v.value(0), v.is_null(1), v.value(2)), ("a", true, "ü "));
    assert_eq!(l.value_length(1), 0);

    let n = Value::array1(oid::NUMERIC, nums(&["1.50", "-2", "0"]));
    let b = ok1(PgType::Array(Box::new(num(10, 2))), vec![n.clone()]);
    let l = b.column(0).as_list::<i32>();
    assert_eq!(l.values().data_type(), &DataType::Decimal128(10, 2));
    assert_eq!(
        l.values()
            .as_primitive::<Decimal128Type>()
            .values()
            .to_vec(),
        vec![150, -200, 0]
    );
    // An element error names the row of the array.
    let bad = Value::array1(oid::NUMERIC, nums(&["123456789.5"]));
    let e = err_text(decode1(
        PgType::Array(Box::new(num(10, 2))),
        TypeOptions::default(),
        vec![n, bad],
    ));
    assert!(e.contains("row 101") && e.contains("numeric(10,2)"), "{e}");

    let t = Value::array1(
        oid::TIMESTAMPTZ,
        vec![Value::Timestamp(0), Value::Timestamp(i64::MAX)],
    );
    let b = ok1(PgType::Array(Box::new(PgType::Timestamptz)), vec![t]);
    let v = b.column(0).as_list::<i32>().values().clone();
    assert_eq!(
        v.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(
        v.as_primitive::<TimestampMicrosecondType>()
            .values()
            .to_vec(),
        vec![946_684_800_000_000, i64::MAX]
    );

    // Array of uuid keeps the element's extension metadata.
    let b = ok1(
        PgType::Array(Box::new(PgType::Uuid)),
        vec![Value::array1(oid::UUID, vec![Value::Uuid([7; 16])])],
    );
    match b.schema().field(0).data_type() {
        DataType::List(item) => assert_eq!(item.metadata()["ARROW:extension:name"], "arrow.uuid"),
        other => panic!("{other}"),
    }
    // Element of the wrong size.
    let bad = Value::array1(oid::INT4, vec![Value::Int8(1)]);
    let e = err_text(decode1(
        PgType::Array(Box::new(PgType::Int4)),
        TypeOptions::default(),
        vec![bad],
    ));
    assert!(e.contains("value has 8 bytes, expected 4"), "{e}");
    // Trailing garbage inside the array value.
    let mut raw = Value::array1(oid::INT4, vec![Value::Int4(1)])
        .to_bytes()
        .unwrap();
    raw.push(0);
    let e = err_text(decode1(
        PgType::Array(Box::new(PgType::Int4)),
        TypeOptions::default(),
        vec![Value::Bytes(raw)],
    ));
    assert!(e.contains("1 trailing bytes"), "{e}");
}

#[test]
fn not_null_columns_reject_nulls() {
    let mut c = col("id", PgType::Int8);
    c.nullable = false;
    let b = decode_opts(
        &[c.clone()],
        TypeOptions::default(),
        &[vec![Value::Int8(1)]],
    )
    .unwrap();
    assert!(!b.schema().field(0).is_nullable());
    let e = err_text(decode_opts(
        &[c],
        TypeOptions::default(),
        &[vec![Value::Int8(1)], vec![Value::Null]],
    ));
    assert_eq!(
        e,
        "column id (bigint), partition 3, row 101: NULL in a column declared NOT NULL"
    );
}

#[test]
fn framing_errors_are_errors() {
    let cols = [col("a", PgType::Int4), col("b", PgType::Text)];
    let schema = Arc::new(OutputSchema::new(&cols, &TypeOptions::default()).unwrap());
    let mut dec = CpuDecoder::new(schema);
    let good = encode_tuple(&[Value::Int4(1), Value::Text("x".into())]);
    let mk = |bad: &[u8]| {
        let mut c = CopyChunk::default();
        for _ in 0..5 {
            c.push_row(&good);
        }
        c.push_row(bad);
        c
    };
    let wrong_count = encode_tuple(&[Value::Int4(1)]);
    let e = dec.decode(&mk(&wrong_count)).unwrap_err().to_string();
    assert_eq!(e, "partition 0, row 5: tuple has 1 fields, expected 2");
    let mut trailing = good.clone();
    trailing.push(7);
    let e = dec.decode(&mk(&trailing)).unwrap_err().to_string();
    assert_eq!(
        e,
        "partition 0, row 5: tuple has 1 trailing bytes after its last field"
    );
    for cut in 0..good.len() {
        let e = dec.decode(&mk(&good[..cut])).unwrap_err();
        assert!(matches!(e, DecodeError::Framing { row: 5, .. }), "{e}");
    }
    // Row offsets outside the buffer, or unmatched, are reported too.
    let mut c = mk(&good);
    c.row_ends[2] = c.data.len() as u32 + 10;
    assert!(matches!(dec.decode(&c), Err(DecodeError::BadChunk { .. })));
    c.row_ends.pop();
    assert!(matches!(dec.decode(&c), Err(DecodeError::BadChunk { .. })));
    // After errors the decoder still decodes correctly.
    let b = dec.decode(&mk(&good)).unwrap();
    assert_eq!(b.num_rows(), 6);
    assert_eq!(b.column(1).as_string::<i32>().value(5), "x");
}

#[test]
fn many_blocks_with_nulls_and_strings() {
    // Enough rows for several blocks, NULLs in some blocks only, strings of
    // varying length: exercises block boundaries and the size estimate.
    let cols = [
        col("i", PgType::Int4),
        col("s", PgType::Text),
        col("n", num(12, 3)),
        col("a", PgType::Array(Box::new(PgType::Int2))),
    ];
    let rows: Vec<Vec<Value>> = (0..5000)
        .map(|i: i32| {
            let null_here = (2000..3000).contains(&i) && i % 7 == 0;
            vec![
                if null_here {
                    Value::Null
                } else {
                    Value::Int4(i)
                },
                if null_here {
                    Value::Null
                } else {
                    Value::Text("x".repeat((i % 40) as usize))
                },
                Value::Numeric(format!("{}.{:03}", i, i % 1000)),
                Value::array1(
                    oid::INT2,
                    (0..(i % 4)).map(|k| Value::Int2(k as i16)).collect(),
                ),
            ]
        })
        .collect();
    let b = decode_opts(&cols, TypeOptions::default(), &rows).unwrap();
    assert_eq!(b.num_rows(), 5000);
    let ints = b.column(0).as_primitive::<Int32Type>();
    let strs = b.column(1).as_string::<i32>();
    let decs = b.column(2).as_primitive::<Decimal128Type>();
    let arrs = b.column(3).as_list::<i32>();
    for i in 0..5000usize {
        let null_here = (2000..3000).contains(&i) && i % 7 == 0;
        assert_eq!(ints.is_null(i), null_here);
        if !null_here {
            assert_eq!(ints.value(i), i as i32);
            assert_eq!(strs.value(i).len(), i % 40);
        }
        assert_eq!(decs.value(i), (i * 1000 + i % 1000) as i128);
        assert_eq!(arrs.value_length(i), (i % 4) as i32);
    }
    for c in b.columns() {
        c.to_data().validate_full().unwrap();
    }
}

#[test]
fn empty_chunk_and_zero_columns() {
    let b = decode_opts(&[col("a", PgType::Int4)], TypeOptions::default(), &[]).unwrap();
    assert_eq!(b.num_rows(), 0);
    let b = decode_opts(&[], TypeOptions::default(), &[vec![], vec![]]).unwrap();
    assert_eq!((b.num_rows(), b.num_columns()), (2, 0));
}

#[test]
fn numeric_encoder_agrees_with_decoder_text() {
    // The encoder is shared with other crates' tests; check it against the
    // decoder on the canonical forms it should produce.
    for s in ["1", "-1", "10000.0001", "0.000", "123456789.123456789"] {
        let raw = numeric_from_str(s).unwrap();
        let b = ok1(PgType::Numeric(None), vec![Value::NumericRaw(raw)]);
        assert_eq!(b.column(0).as_string::<i32>().value(0), s);
    }
}
