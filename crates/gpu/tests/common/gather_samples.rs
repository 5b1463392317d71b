//! Sample batches of every Arrow layout and the run lists the gather tests
//! use: shared by `gather`'s unit tests and `tests/gpu_compact.rs` (each
//! includes this file as a module).

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, FixedSizeBinaryBuilder, FixedSizeListBuilder, Int16Builder, Int32Builder,
    LargeListBuilder, LargeStringBuilder, ListBuilder, MapBuilder, StringBuilder,
    StringDictionaryBuilder,
};
use arrow_array::types::{Int32Type, Int8Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, Int8Array, IntervalMonthDayNanoArray, RecordBatch,
    StructArray, Time64MicrosecondArray, TimestampMicrosecondArray, UInt32Array,
};
use arrow_buffer::{IntervalMonthDayNano, NullBuffer};
use arrow_schema::{DataType, Field, Fields, Schema};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::RowRun;

/// A batch of every layout: NULLs with probability `p_null` (0: no
/// validity bitmaps at all), dictionaries in a per-seed order; column
/// `sparse` is NULL exactly at rows 5 and 37.
pub fn sample(rows: usize, seed: u64, p_null: f64) -> RecordBatch {
    let mut rng = StdRng::seed_from_u64(seed);
    let null = |rng: &mut StdRng| p_null > 0.0 && rng.random_bool(p_null);
    let mut cols: Vec<(&str, ArrayRef)> = Vec::new();
    macro_rules! prim {
        ($name:expr, $arr:ty, $gen:expr) => {{
            let v: $arr = (0..rows)
                .map(|_| {
                    if null(&mut rng) {
                        None
                    } else {
                        Some($gen(&mut rng))
                    }
                })
                .collect();
            cols.push(($name, Arc::new(v) as ArrayRef));
        }};
    }
    prim!("b", BooleanArray, |r: &mut StdRng| r.random::<bool>());
    prim!("i8", Int8Array, |r: &mut StdRng| r.random::<i8>());
    prim!("i16", Int16Array, |r: &mut StdRng| r.random::<i16>());
    prim!("i32", Int32Array, |r: &mut StdRng| r.random::<i32>());
    prim!("i64", Int64Array, |r: &mut StdRng| r.random::<i64>());
    prim!("u32", UInt32Array, |r: &mut StdRng| r.random::<u32>());
    prim!("f32", Float32Array, |r: &mut StdRng| r.random::<f32>());
    prim!("f64", Float64Array, |r: &mut StdRng| r.random::<f64>());
    prim!("d", Date32Array, |r: &mut StdRng| r.random::<i32>());
    prim!("tm", Time64MicrosecondArray, |r: &mut StdRng| r
        .random_range(0..86_400_000_000i64));
    let ts: TimestampMicrosecondArray = (0..rows)
        .map(|_| (!null(&mut rng)).then(|| rng.random::<i64>()))
        .collect();
    cols.push(("ts", Arc::new(ts.with_timezone("UTC"))));
    let dec: Decimal128Array = (0..rows)
        .map(|_| (!null(&mut rng)).then(|| rng.random_range(-(10i128.pow(37))..10i128.pow(37))))
        .collect();
    cols.push((
        "dec",
        Arc::new(dec.with_precision_and_scale(38, 10).expect("decimal")),
    ));
    prim!("iv", IntervalMonthDayNanoArray, |r: &mut StdRng| {
        IntervalMonthDayNano::new(r.random(), r.random(), r.random())
    });
    for (name, w) in [("uuid", 16), ("fsb3", 3)] {
        let mut b = FixedSizeBinaryBuilder::new(w);
        for _ in 0..rows {
            if null(&mut rng) {
                b.append_null();
            } else {
                let v: Vec<u8> = (0..w).map(|_| rng.random()).collect();
                b.append_value(&v).expect("width");
            }
        }
        cols.push((name, Arc::new(b.finish())));
    }
    let text = |rng: &mut StdRng| -> String {
        let n = if rng.random_bool(0.1) {
            rng.random_range(0..200)
        } else {
            rng.random_range(0..12)
        };
        (0..n)
            .map(|_| ['a', 'z', 'é', '中', '😀'][rng.random_range(0..5)])
            .collect()
    };
    let mut s = StringBuilder::new();
    let mut bin = BinaryBuilder::new();
    let mut ls = LargeStringBuilder::new();
    for _ in 0..rows {
        s.append_option((!null(&mut rng)).then(|| text(&mut rng)));
        bin.append_option((!null(&mut rng)).then(|| {
            (0..rng.random_range(0..40))
                .map(|_| rng.random::<u8>())
                .collect::<Vec<u8>>()
        }));
        ls.append_option((!null(&mut rng)).then(|| text(&mut rng)));
    }
    cols.push(("s", Arc::new(s.finish())));
    cols.push(("bin", Arc::new(bin.finish())));
    cols.push(("ls", Arc::new(ls.finish())));
    let mut li = ListBuilder::new(Int32Builder::new());
    let mut lstr = ListBuilder::new(StringBuilder::new());
    let mut ll = LargeListBuilder::new(Int16Builder::new());
    let mut fsl = FixedSizeListBuilder::new(Int32Builder::new(), 3);
    let mut map = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
    for _ in 0..rows {
        for _ in 0..rng.random_range(0..6) {
            li.values()
                .append_option((!null(&mut rng)).then(|| rng.random::<i32>()));
            lstr.values()
                .append_option((!null(&mut rng)).then(|| text(&mut rng)));
        }
        li.append(!null(&mut rng));
        lstr.append(!null(&mut rng));
        for _ in 0..rng.random_range(0..4) {
            ll.values()
                .append_option((!null(&mut rng)).then(|| rng.random::<i16>()));
        }
        ll.append(!null(&mut rng));
        for _ in 0..3 {
            fsl.values()
                .append_option((!null(&mut rng)).then(|| rng.random::<i32>()));
        }
        fsl.append(!null(&mut rng));
        for k in 0..rng.random_range(0..3) {
            map.keys().append_value(format!("k{k}"));
            map.values()
                .append_option((!null(&mut rng)).then(|| rng.random::<i32>()));
        }
        map.append(!null(&mut rng)).expect("map");
    }
    cols.push(("li", Arc::new(li.finish())));
    cols.push(("lstr", Arc::new(lstr.finish())));
    cols.push(("ll", Arc::new(ll.finish())));
    cols.push(("fsl", Arc::new(fsl.finish())));
    cols.push(("map", Arc::new(map.finish())));
    // A struct of a number, a string and a list (like arrays as
    // structs), with NULLs of its own.
    let sa: Int32Array = (0..rows)
        .map(|_| (!null(&mut rng)).then(|| rng.random::<i32>()))
        .collect();
    let mut sb = StringBuilder::new();
    let mut sl = ListBuilder::new(Int32Builder::new());
    for _ in 0..rows {
        sb.append_option((!null(&mut rng)).then(|| text(&mut rng)));
        for _ in 0..rng.random_range(0..3) {
            sl.values().append_value(rng.random::<i32>());
        }
        sl.append(true);
    }
    let sl = sl.finish();
    let fields = Fields::from(vec![
        Field::new("a", DataType::Int32, true),
        Field::new("b", DataType::Utf8, true),
        Field::new("c", sl.data_type().clone(), true),
    ]);
    let snulls: Vec<bool> = (0..rows).map(|_| !null(&mut rng)).collect();
    let snulls = Some(NullBuffer::from(snulls)).filter(|n| n.null_count() > 0);
    let st = StructArray::try_new(
        fields,
        vec![Arc::new(sa), Arc::new(sb.finish()), Arc::new(sl)],
        snulls,
    )
    .expect("struct");
    cols.push(("st", Arc::new(st)));
    // Labels in a per-seed order, so batches have different
    // dictionaries.
    let mut labels = ["red", "green", "blue", "ünïcode", "", "x"];
    for i in (1..labels.len()).rev() {
        labels.swap(i, rng.random_range(0..=i));
    }
    let mut d32 = StringDictionaryBuilder::<Int32Type>::new();
    let mut d8 = StringDictionaryBuilder::<Int8Type>::new();
    for _ in 0..rows {
        let l = labels[rng.random_range(0..labels.len())];
        if null(&mut rng) {
            d32.append_null();
        } else {
            d32.append_value(l);
        }
        if null(&mut rng) {
            d8.append_null();
        } else {
            d8.append_value(l);
        }
    }
    cols.push(("dict", Arc::new(d32.finish())));
    cols.push(("dict8", Arc::new(d8.finish())));
    let nn: Int32Array = (0..rows as i32).map(Some).collect();
    cols.push(("nn", Arc::new(nn)));
    let sparse: Int32Array = (0..rows as i32)
        .map(|i| (i != 5 && i != 37).then_some(i))
        .collect();
    cols.push(("sparse", Arc::new(sparse)));
    let schema = Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(Arc::new(schema), cols.into_iter().map(|c| c.1).collect())
        .expect("sample batch")
}

/// Run lists of every kind the tests use, for sources of `rows` rows.
pub fn patterns(rows: &[usize], seed: u64) -> Vec<(String, Vec<RowRun>)> {
    let (n0, n1) = (rows[0], rows[1]);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = vec![
        ("empty".to_string(), vec![]),
        ("whole".into(), vec![RowRun::new(0, 0, n0)]),
        (
            "both whole".into(),
            vec![RowRun::new(1, 0, n1), RowRun::new(0, 0, n0)],
        ),
        (
            // Descending single rows: nothing merges.
            "single rows".into(),
            (0..n0).rev().map(|i| RowRun::new(0, i, 1)).collect(),
        ),
        (
            "odd bits".into(),
            vec![
                RowRun::new(0, 3, 10),
                RowRun::new(0, 17, 5),
                RowRun::new(1, 1, 30),
                RowRun::new(0, 40, 13),
                RowRun::new(1, 33, 7),
                RowRun::new(0, 61, 0),
                RowRun::new(1, 9, 1),
            ],
        ),
        (
            // Everything but rows 5 and 37: the sparse column's NULLs.
            "drop nulls".into(),
            vec![
                RowRun::new(0, 0, 5),
                RowRun::new(0, 6, 31),
                RowRun::new(0, 38, n0 - 38),
            ],
        ),
    ];
    let mut inter = Vec::new();
    let (mut a, mut b) = (0usize, 0usize);
    while a < n0 || b < n1 {
        let k = rng.random_range(0..40);
        let take = k.min(n0 - a);
        inter.push(RowRun::new(0, a, take));
        a += take;
        let take = rng.random_range(0..40).min(n1 - b);
        inter.push(RowRun::new(1, b, take));
        b += take;
    }
    v.push(("interleaved".into(), inter));
    let mut random = Vec::new();
    for _ in 0..300 {
        let batch = rng.random_range(0..2);
        let n = rows[batch];
        let start = rng.random_range(0..=n);
        let len = rng.random_range(0..=(n - start).min(70));
        random.push(RowRun::new(batch, start, len));
    }
    v.push(("random".into(), random));
    v
}
