//! Every supported type, edge values included, exported through the whole
//! pipeline (Parquet and Arrow IPC) and compared value by value with what the
//! server itself says the row holds.

mod common;

use arrow::array::{
    Array, AsArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, IntervalMonthDayNanoArray, ListArray,
    RecordBatch, StringArray, StructArray, Time64MicrosecondArray, TimestampMicrosecondArray,
    UInt32Array,
};
use arrow::datatypes::{DataType, Int32Type};
use common::*;
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;

/// How the server spells the value we expect, in the same canonical text the
/// `canon` function below makes of an Arrow value.
const EPOCH_US: &str = "(extract(epoch from {c}) * 1000000)::numeric::bigint::text";

fn elem_list(col: &str, elem: &str) -> String {
    // Row-major flattening, as the exporter does; NULL elements spelled NULL;
    // an empty array is '' (not NULL).
    format!(
        "CASE WHEN {col} IS NULL THEN NULL ELSE coalesce((SELECT string_agg(coalesce({e}, 'NULL'), '|' ORDER BY o) \
         FROM unnest({col}) WITH ORDINALITY AS x(v, o)), '') END",
        e = elem.replace("{c}", "v")
    )
}

fn infinite_aware(col: &str, finite: &str, max: &str, min: &str) -> String {
    format!(
        "CASE WHEN {col} IS NULL THEN NULL WHEN isfinite({col}) THEN {f} WHEN {col} > '2000-01-01' THEN '{max}' ELSE '{min}' END",
        f = finite.replace("{c}", col)
    )
}

fn expectations() -> Vec<(&'static str, String)> {
    let ts = |c: &str| infinite_aware(c, EPOCH_US, &i64::MAX.to_string(), &i64::MIN.to_string());
    vec![
        ("b", "b::text".into()),
        ("i2", "i2::text".into()),
        ("i4", "i4::text".into()),
        ("i8", "i8::text".into()),
        ("f4", "f4::text".into()),
        ("f8", "f8::text".into()),
        ("n", "n::text".into()),
        ("n38", "n38::text".into()),
        ("nneg", "nneg::text".into()),
        ("nu", "nu::text".into()),
        ("t", "CASE WHEN t IS NOT NULL THEN format('%s', t) END".into()),
        ("vc", "CASE WHEN vc IS NOT NULL THEN format('%s', vc) END".into()),
        ("nm", "CASE WHEN nm IS NOT NULL THEN format('%s', nm) END".into()),
        ("bc", "CASE WHEN bc IS NOT NULL THEN format('%s', bc) END".into()),
        ("by", "encode(by, 'hex')".into()),
        (
            "d",
            infinite_aware(
                "d",
                "({c} - date '1970-01-01')::text",
                &i32::MAX.to_string(),
                &i32::MIN.to_string(),
            ),
        ),
        ("tm", EPOCH_US.replace("{c}", "tm")),
        ("ts", ts("ts")),
        ("tz", ts("tz")),
        (
            "iv",
            "CASE WHEN iv IS NULL THEN NULL ELSE format('%s,%s,%s', \
             (extract(year from iv) * 12 + extract(month from iv))::int, extract(day from iv)::int, \
             ((extract(hour from iv) * 3600 + extract(minute from iv) * 60) * 1000000 + extract(microseconds from iv))::bigint) END"
                .into(),
        ),
        ("u", "u::text".into()),
        ("j", "j::text".into()),
        ("jb", "jb::text".into()),
        ("e", "e::text".into()),
        ("dom", "dom::text".into()),
        ("o", "o::text".into()),
        ("ai", elem_list("ai", "{c}::text")),
        ("at", elem_list("at", "{c}")),
        ("an", elem_list("an", "{c}::text")),
        ("a2", elem_list("a2", "{c}::text")),
        (
            "ats",
            elem_list(
                "ats",
                &infinite_aware("{c}", EPOCH_US, &i64::MAX.to_string(), &i64::MIN.to_string()),
            ),
        ),
    ]
}

fn decimal_text(v: i128, scale: i8) -> String {
    if scale <= 0 {
        return (v * 10i128.pow((-scale) as u32)).to_string();
    }
    let s = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let s = format!("{s:0>width$}", width = scale + 1);
    let (int, frac) = s.split_at(s.len() - scale);
    format!("{}{int}.{frac}", if v < 0 { "-" } else { "" })
}

fn uuid_text(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The canonical text of element `i` of `a`, or None for NULL.
fn canon(a: &dyn Array, i: usize) -> Option<String> {
    if a.is_null(i) {
        return None;
    }
    let any = a.as_any();
    Some(match a.data_type() {
        DataType::Boolean => any.downcast_ref::<BooleanArray>()?.value(i).to_string(),
        DataType::Int16 => any.downcast_ref::<Int16Array>()?.value(i).to_string(),
        DataType::Int32 => any.downcast_ref::<Int32Array>()?.value(i).to_string(),
        DataType::Int64 => any.downcast_ref::<Int64Array>()?.value(i).to_string(),
        DataType::UInt32 => any.downcast_ref::<UInt32Array>()?.value(i).to_string(),
        DataType::Float32 => format!(
            "f32:{:08x}",
            canon_f32(any.downcast_ref::<Float32Array>()?.value(i))
        ),
        DataType::Float64 => format!(
            "f64:{:016x}",
            canon_f64(any.downcast_ref::<Float64Array>()?.value(i))
        ),
        DataType::Decimal128(_, s) => {
            decimal_text(any.downcast_ref::<Decimal128Array>()?.value(i), *s)
        }
        DataType::Utf8 => any.downcast_ref::<StringArray>()?.value(i).to_string(),
        DataType::Binary => a
            .as_binary::<i32>()
            .value(i)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect(),
        DataType::Date32 => any.downcast_ref::<Date32Array>()?.value(i).to_string(),
        DataType::Time64(_) => any
            .downcast_ref::<Time64MicrosecondArray>()?
            .value(i)
            .to_string(),
        DataType::Timestamp(_, _) => any
            .downcast_ref::<TimestampMicrosecondArray>()?
            .value(i)
            .to_string(),
        DataType::Interval(_) => {
            let v = any.downcast_ref::<IntervalMonthDayNanoArray>()?.value(i);
            format!("{},{},{}", v.months, v.days, v.nanoseconds / 1000)
        }
        DataType::Struct(_) => {
            let s = any.downcast_ref::<StructArray>()?;
            (0..s.num_columns())
                .map(|c| canon(s.column(c).as_ref(), i).unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join(",")
        }
        DataType::FixedSizeBinary(16) => {
            uuid_text(any.downcast_ref::<FixedSizeBinaryArray>()?.value(i))
        }
        DataType::List(_) => {
            let l = any.downcast_ref::<ListArray>()?;
            let v = l.value(i);
            (0..v.len())
                .map(|j| canon(v.as_ref(), j).unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join("|")
        }
        DataType::Dictionary(_, _) => {
            let d = a.as_dictionary::<Int32Type>();
            let k = d.keys().value(i) as usize;
            canon(d.values().as_ref(), k)?
        }
        other => panic!("no canonical form for {other}"),
    })
}

fn canon_f64(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}
fn canon_f32(v: f32) -> u32 {
    if v.is_nan() {
        f32::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

/// The server's float text as the same canonical bits.
fn server_float(text: &str, f32_col: bool) -> String {
    let v: f64 = match text {
        "Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        t => t.parse().expect("server float parses"),
    };
    if f32_col {
        format!(
            "f32:{:08x}",
            canon_f32(text.parse::<f32>().unwrap_or(v as f32))
        )
    } else {
        format!("f64:{:016x}", canon_f64(v))
    }
}

fn check_against_server(dsn: &str, batches: &[RecordBatch], rows: usize) {
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(total, rows, "row count");
    // Exported rows by id (the order of ranges is not the table's order).
    let mut by_id = std::collections::HashMap::new();
    for (bi, b) in batches.iter().enumerate() {
        let ids = b
            .column_by_name("id")
            .expect("id column")
            .as_primitive::<Int32Type>();
        for r in 0..b.num_rows() {
            assert!(
                by_id.insert(ids.value(r), (bi, r)).is_none(),
                "duplicate id {}",
                ids.value(r)
            );
        }
    }
    for (col, expr) in expectations() {
        let expected = query(
            dsn,
            &format!("SELECT id::text, {expr} FROM all_types ORDER BY id"),
        );
        assert_eq!(expected.len(), rows);
        for row in expected {
            let id: i32 = row[0].as_ref().expect("id").parse().expect("id parses");
            let &(bi, r) = by_id.get(&id).unwrap_or_else(|| panic!("id {id} missing"));
            let got = canon(batches[bi].column_by_name(col).expect("column").as_ref(), r);
            let want = match (col, row[1].clone()) {
                ("f4", Some(t)) => Some(server_float(&t, true)),
                ("f8", Some(t)) => Some(server_float(&t, false)),
                (_, w) => w,
            };
            assert_eq!(got, want, "column {col}, id {id}");
        }
    }
}

#[test]
fn every_type_matches_the_server_in_parquet_and_arrow() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    let rows = 3000;
    gpupg_datagen::create_all_types(&config(&dsn), rows).expect("all_types");
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, format) in [("t.parquet", Format::Parquet), ("t.arrow", Format::Arrow)] {
        let (path, out) = file(dir.path(), name);
        let req = request(&dsn, table("all_types"), out, format);
        let report = gpupg_export::export(&req, &gpupg_export::NoProgress).expect("export");
        assert_eq!(report.rows, rows);
        assert!(report.statements >= 1);
        // a2 holds 2-D values in rows 1, 3 and every generated row; ai a 3-D one.
        assert!(report.flattened_arrays > 0);
        let batches = read_back(&path);
        check_against_server(&dsn, &batches, rows as usize);
        // Types as documented.
        let schema = batches[0].schema();
        let ty = |c: &str| {
            schema
                .field_with_name(c)
                .expect("field")
                .data_type()
                .clone()
        };
        assert_eq!(ty("n"), DataType::Decimal128(15, 2));
        assert_eq!(ty("n38"), DataType::Decimal128(38, 10));
        // Parquet has no negative scales: numeric(6,-2) is stored as
        // Decimal128(8, 0), the same numbers.
        match format {
            Format::Arrow => assert_eq!(ty("nneg"), DataType::Decimal128(6, -2)),
            Format::Parquet => assert_eq!(ty("nneg"), DataType::Decimal128(8, 0)),
        }
        assert_eq!(ty("nu"), DataType::Utf8);
        assert_eq!(ty("u"), DataType::FixedSizeBinary(16));
        assert_eq!(ty("o"), DataType::UInt32);
        assert_eq!(ty("dom"), DataType::Int32);
        assert_eq!(
            schema
                .field_with_name("u")
                .expect("u")
                .metadata()
                .get("ARROW:extension:name")
                .map(String::as_str),
            Some("arrow.uuid")
        );
        assert_eq!(
            schema
                .field_with_name("jb")
                .expect("jb")
                .metadata()
                .get("ARROW:extension:name")
                .map(String::as_str),
            Some("arrow.json")
        );
        match format {
            Format::Arrow => assert!(matches!(ty("iv"), DataType::Interval(_))),
            Format::Parquet => assert!(matches!(ty("iv"), DataType::Struct(_))),
        }
    }
}

#[test]
fn options_change_the_mapping() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    gpupg_datagen::create_all_types(&config(&dsn), 10).expect("all_types");
    let dir = tempfile::tempdir().expect("tempdir");

    // Dictionary enums and float64 numerics; the NaN/Infinity of row 2-3 survive as floats.
    let (path, out) = file(dir.path(), "opts.arrow");
    let mut req = request(&dsn, table("all_types"), out, Format::Arrow);
    req.types.enums = gpupg_decode::EnumRepr::Dictionary;
    req.types.numeric = gpupg_decode::UnconstrainedNumeric::Float64;
    req.types.arrays = gpupg_decode::ArrayRepr::Struct;
    req.columns = Some(vec!["id".into(), "e".into(), "nu".into(), "a2".into()]);
    gpupg_export::export(&req, &gpupg_export::NoProgress).expect("export");
    let batches = read_back(&path);
    let schema = batches[0].schema();
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["id", "e", "nu", "a2"]);
    assert!(matches!(
        schema.field(1).data_type(),
        DataType::Dictionary(_, _)
    ));
    assert_eq!(schema.field(2).data_type(), &DataType::Float64);
    assert!(matches!(schema.field(3).data_type(), DataType::Struct(_)));
    let mut seen_nan = false;
    for b in &batches {
        let nu = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..b.num_rows() {
            if nu.is_valid(i) && nu.value(i).is_nan() {
                seen_nan = true;
            }
        }
    }
    assert!(seen_nan, "numeric NaN exported as a float NaN");

    // Decimal128(38, 4) for unconstrained numeric: NaN is an error naming the column.
    let (_, out) = file(dir.path(), "dec.parquet");
    let mut req = request(&dsn, table("all_types"), out, Format::Parquet);
    req.types.numeric = gpupg_decode::UnconstrainedNumeric::Decimal128 { scale: 4 };
    req.columns = Some(vec!["id".into(), "nu".into()]);
    let err =
        gpupg_export::export(&req, &gpupg_export::NoProgress).expect_err("NaN cannot be a decimal");
    assert!(err.to_string().contains("nu"), "{err}");
    assert!(files_in(dir.path()).iter().all(|f| f != "dec.parquet"));
}
