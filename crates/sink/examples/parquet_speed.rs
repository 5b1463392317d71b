//! Parquet (or Arrow IPC) write throughput of the sink on a lineorder-like table.
//!
//! Builds one lineorder batch, then T threads write it N times in total into one file, and
//! prints the rate in MB/s of Arrow data (in-memory buffer bytes of the batches written).
//!
//! `--table bench` (the default) is the `lineorder` that `gpupgparser bench` and `demo` create
//! (crates/datagen): 14 Int32 and 3 space-padded `character(n)` Utf8 columns, with the same
//! values for row g as the server generates (the same hash of g per column, the same ranges
//! and cardinalities: custkey 30000, partkey 200000, suppkey 2000, yyyymmdd dates, ...), so
//! dictionary fallbacks and compression ratios are those of the measured export.
//! `--table typed` is SSB lineorder with the types of a typed schema: 12 Int32,
//! 2 Decimal128(15,2), 2 short Utf8 and 1 Date32.
//!
//! ```text
//! cargo run --release -p gpupg-sink --example parquet_speed -- \
//!     [--rows 1000000] [--times 16] [--threads 16] [--batch-rows 1000000] \
//!     [--compression zstd:1] [--format parquet|arrow] [--row-group-rows 1048576] \
//!     [--table bench|typed] [--out PATH] [--keep]
//! ```
//! `--batch-rows` slices the batch into smaller `write` calls, as decoder threads send them
//! (a heap export sends about 65536 rows per call: one 8 MiB read of table pages).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Date32Array, Decimal128Array, Int32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use gpupg_sink::{create_file_sink, Compression, Format, SinkOptions};

#[derive(Clone, Copy)]
enum Table {
    /// crates/datagen's lineorder, as the benchmark exports it.
    Bench,
    /// SSB lineorder with decimal and date types.
    Typed,
}

struct Args {
    rows: usize,
    times: usize,
    threads: usize,
    batch_rows: usize,
    compression: Compression,
    format: Format,
    row_group_rows: usize,
    table: Table,
    out: Option<PathBuf>,
    keep: bool,
}

fn parse_args() -> Result<Args, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut a = Args {
        rows: 1_000_000,
        times: threads,
        threads,
        batch_rows: 0,
        compression: Compression::Zstd(1),
        format: Format::Parquet,
        row_group_rows: gpupg_sink::DEFAULT_ROW_GROUP_ROWS,
        table: Table::Bench,
        out: None,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--keep" {
            a.keep = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--rows" => a.rows = num()?,
            "--times" => a.times = num()?,
            "--threads" => a.threads = num()?.max(1),
            "--batch-rows" => a.batch_rows = num()?,
            "--row-group-rows" => a.row_group_rows = num()?,
            "--compression" => a.compression = value.parse().map_err(|e| format!("{e}"))?,
            "--format" => {
                a.format = match value.as_str() {
                    "parquet" => Format::Parquet,
                    "arrow" => Format::Arrow,
                    _ => return Err(format!("--format {value}: expected parquet or arrow")),
                }
            }
            "--table" => {
                a.table = match value.as_str() {
                    "bench" => Table::Bench,
                    "typed" => Table::Typed,
                    _ => return Err(format!("--table {value}: expected bench or typed")),
                }
            }
            "--out" => a.out = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.batch_rows == 0 {
        a.batch_rows = a.rows;
    }
    Ok(a)
}

/// xorshift64*: deterministic, dependency-free data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
}

/// crates/datagen's `lineorder_insert` for rows 0..rows: the same hash per column
/// (`(g * (2654435761 + 2k)) % 2147483647`), ranges and `character(n)` padding.
fn bench_lineorder(rows: usize) -> RecordBatch {
    let h = |g: usize, k: i64| (g as i64 * (2_654_435_761 + 2 * k)) % 2_147_483_647;
    let yyyymmdd = |x: i64| (19_920_101 + (x % 7) * 10_000 + (x % 12) * 100 + x % 28) as i32;
    let int = |name: &str, f: &dyn Fn(usize) -> i64| -> (Field, ArrayRef) {
        (
            Field::new(name, DataType::Int32, false),
            Arc::new(Int32Array::from_iter_values((0..rows).map(|g| f(g) as i32))),
        )
    };
    let chars = |name: &str, width: usize, f: &dyn Fn(usize) -> &'static str| {
        let mut b = StringBuilder::with_capacity(rows, rows * width);
        for g in 0..rows {
            b.append_value(format!("{:<width$}", f(g)));
        }
        let array: ArrayRef = Arc::new(b.finish());
        (Field::new(name, DataType::Utf8, false), array)
    };
    let priorities = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"];
    let modes = ["REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB"];
    let cols = vec![
        int("lo_orderkey", &|g| g as i64 / 4 + 1),
        int("lo_linenumber", &|g| g as i64 % 7 + 1),
        int("lo_custkey", &|g| h(g, 1) % 30_000 + 1),
        int("lo_partkey", &|g| h(g, 2) % 200_000 + 1),
        int("lo_suppkey", &|g| h(g, 3) % 2_000 + 1),
        int("lo_orderdate", &|g| yyyymmdd(h(g, 4)).into()),
        chars("lo_orderpriority", 15, &|g| {
            priorities[(h(g, 5) % 5) as usize]
        }),
        chars("lo_shippriority", 1, &|_| "0"),
        int("lo_quantity", &|g| h(g, 6) % 50 + 1),
        int("lo_extendedprice", &|g| h(g, 7) % 10_000_000 + 90_000),
        int("lo_ordtotalprice", &|g| h(g, 7) % 40_000_000),
        int("lo_discount", &|g| h(g, 6) % 11),
        int("lo_revenue", &|g| h(g, 8) % 10_000_000),
        int("lo_supplycost", &|g| h(g, 7) % 100_000),
        int("lo_tax", &|g| h(g, 6) % 9),
        int("lo_commitdate", &|g| yyyymmdd(h(g, 8)).into()),
        chars("lo_shipmode", 10, &|g| modes[(h(g, 9) % 7) as usize]),
    ];
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = cols.into_iter().unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("consistent batch")
}

fn typed_lineorder(rows: usize) -> RecordBatch {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let int = |name: &str, f: &mut dyn FnMut(usize) -> i32| -> (Field, ArrayRef) {
        (
            Field::new(name, DataType::Int32, false),
            Arc::new(Int32Array::from_iter_values((0..rows).map(f))),
        )
    };
    let mut cols: Vec<(Field, ArrayRef)> = vec![
        int("lo_orderkey", &mut |i| (i / 4) as i32 + 1),
        int("lo_linenumber", &mut |i| (i % 7) as i32 + 1),
    ];
    let mut r = |n: u64| rng.below(n) as i32;
    cols.push(int("lo_custkey", &mut |_| r(3_000_000) + 1));
    cols.push(int("lo_partkey", &mut |_| r(1_400_000) + 1));
    cols.push(int("lo_suppkey", &mut |_| r(200_000) + 1));
    let dates: Vec<i32> = (0..rows).map(|_| 8036 + r(2556)).collect(); // 1992..1998
    cols.push((
        Field::new("lo_orderdate", DataType::Date32, false),
        Arc::new(Date32Array::from(dates.clone())),
    ));
    let priorities = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"];
    let mut prio = StringBuilder::with_capacity(rows, rows * 9);
    for _ in 0..rows {
        prio.append_value(priorities[r(5) as usize]);
    }
    cols.push((
        Field::new("lo_orderpriority", DataType::Utf8, false),
        Arc::new(prio.finish()),
    ));
    cols.push(int("lo_shippriority", &mut |_| 0));
    let qty: Vec<i32> = (0..rows).map(|_| r(50) + 1).collect();
    cols.push(int("lo_quantity", &mut |i| qty[i]));
    let dec = |name: &str, v: Vec<i128>| -> (Field, ArrayRef) {
        (
            Field::new(name, DataType::Decimal128(15, 2), false),
            Arc::new(
                Decimal128Array::from(v)
                    .with_precision_and_scale(15, 2)
                    .expect("valid decimal"),
            ),
        )
    };
    let price: Vec<i128> = (0..rows)
        .map(|i| i128::from(qty[i]) * i128::from(90_000 + r(20_000_000)))
        .collect();
    cols.push(dec("lo_extendedprice", price.clone()));
    cols.push(dec(
        "lo_ordtotalprice",
        (0..rows)
            .map(|_| i128::from(r(i32::MAX as u64 / 4)))
            .collect(),
    ));
    let disc: Vec<i32> = (0..rows).map(|_| r(11)).collect();
    cols.push(int("lo_discount", &mut |i| disc[i]));
    cols.push(int("lo_revenue", &mut |i| {
        (price[i] * i128::from(100 - disc[i]) / 10_000) as i32
    }));
    cols.push(int("lo_supplycost", &mut |_| r(120_000) + 1));
    cols.push(int("lo_tax", &mut |_| r(9)));
    cols.push(int("lo_commitdate", &mut |i| dates[i] + 30 + r(90)));
    let modes = ["AIR", "FOB", "MAIL", "RAIL", "REG AIR", "SHIP", "TRUCK"];
    let mut mode = StringBuilder::with_capacity(rows, rows * 5);
    for _ in 0..rows {
        mode.append_value(modes[r(7) as usize]);
    }
    cols.push((
        Field::new("lo_shipmode", DataType::Utf8, false),
        Arc::new(mode.finish()),
    ));
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = cols.into_iter().unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("consistent batch")
}

/// Bytes of Arrow buffers the batch references (what a reader would hold in memory).
fn arrow_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("parquet_speed: {e}");
            std::process::exit(2);
        }
    };
    let build = Instant::now();
    let batch = match args.table {
        Table::Bench => bench_lineorder(args.rows),
        Table::Typed => typed_lineorder(args.rows),
    };
    let slices: Vec<RecordBatch> = (0..args.rows)
        .step_by(args.batch_rows)
        .map(|off| batch.slice(off, args.batch_rows.min(args.rows - off)))
        .collect();
    let batch_bytes = arrow_bytes(&batch);
    eprintln!(
        "built {} rows x {} columns ({:.1} MB of Arrow data) in {:.2}s",
        args.rows,
        batch.num_columns(),
        batch_bytes as f64 / 1e6,
        build.elapsed().as_secs_f64()
    );

    let out = args.out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "parquet_speed-{}.{}",
            std::process::id(),
            args.format.extension()
        ))
    });
    let opts = SinkOptions {
        format: args.format,
        compression: args.compression,
        overwrite: true,
        row_group_rows: args.row_group_rows,
    };
    let start = Instant::now();
    let sink = match create_file_sink(&out, batch.schema(), &opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("parquet_speed: {e}");
            std::process::exit(1);
        }
    };
    // Work items are (copy, slice) pairs handed out dynamically, like decoder output.
    let next = AtomicUsize::new(0);
    let total_items = args.times * slices.len();
    let result: Result<(), gpupg_sink::SinkError> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.threads)
            .map(|_| {
                s.spawn(|| loop {
                    let item = next.fetch_add(1, Ordering::Relaxed);
                    if item >= total_items {
                        return Ok(());
                    }
                    sink.write(&slices[item % slices.len()])?;
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("writer thread panicked"))
    });
    if let Err(e) = result {
        eprintln!("parquet_speed: {e}");
        std::process::exit(1);
    }
    let stats = match sink.finish() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("parquet_speed: {e}");
            std::process::exit(1);
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let arrow_mb = (batch_bytes * args.times) as f64 / 1e6;
    let file_bytes: u64 = stats.files.iter().map(|f| f.1).sum();
    println!(
        "{} {} threads={} rows={} batch_rows={}: {:.1} MB Arrow in {:.2}s = {:.0} MB/s \
         ({:.2} M rows/s); file {:.1} MB (ratio {:.2}); encode {:.2} thread-s, write {:.2}s",
        args.format,
        args.compression,
        args.threads,
        stats.rows,
        args.batch_rows,
        arrow_mb,
        secs,
        arrow_mb / secs,
        stats.rows as f64 / secs / 1e6,
        file_bytes as f64 / 1e6,
        arrow_mb * 1e6 / file_bytes as f64,
        stats.encode_seconds,
        stats.write_seconds,
    );
    if !args.keep {
        let _ = std::fs::remove_file(&out);
    }
}
