//! Arrow IPC write throughput of the sink with concurrent writers, and how much of it is
//! serialized.
//!
//! Builds one SSB-lineorder-like batch (17 columns: Int64 order key, 11 Int32, 2
//! Decimal128(15,2), 1 Date32, 2 short Utf8; `--dict` makes `lo_shipmode` a
//! `Dictionary(Int32, Utf8)`), then T threads write it `--batches` times in total into one
//! Arrow IPC file. Prints the wall time, the rate (Arrow buffer bytes and file bytes per
//! second), the thread-seconds spent inside `Sink::write` (including waiting for the file
//! lock), and the sink's own split: `encode` (summed over threads, in parallel) and `lock`
//! (time holding the file lock, i.e. the serialized part).
//!
//! ```text
//! cargo run --release -p gpupg-sink --example ipc_speed -- \
//!     [--rows 1000000] [--batches 20] [--threads 2] [--compression zstd:1] [--dict] \
//!     [--out PATH] [--keep]
//! ```
//!
//! Measured with `--out /dev/shm/ipc_speed.arrow` (tmpfs: no disk in the way), before (one
//! mutex around arrow's `FileWriter`: encoding under the lock) and after the sink encodes in
//! the calling threads, runs of both interleaved; wall seconds, the thread-seconds of
//! encoding, and the seconds the file lock was held. Two runs each (one with `--dict`).
//!
//! This 2-core host (shared with other builds; quiet during these runs), defaults (20 batches of
//! 1M rows, 2.17 GB of Arrow data):
//!
//! ```text
//! codec    threads   before: wall = lock   after: wall   encode      lock
//! none     1         0.89-0.93 s           0.80-0.82 s   0           0.80-0.82 s
//! none     2         0.81-0.88 s           0.80-0.87 s   0           0.79-0.87 s
//! zstd:1   1         3.62-3.96 s           3.57-3.76 s   3.3-3.5 s   0.28-0.29 s
//! zstd:1   2         3.67-3.73 s           1.85-1.90 s   3.3-3.4 s   0.28-0.30 s
//! lz4      1         2.31-2.38 s           2.87-2.89 s   2.4 s       0.40 s
//! lz4      2         2.36-2.38 s           1.47-1.55 s   2.4-2.5 s   0.40-0.43 s
//! zstd:1   2 --dict  3.75 s                1.91 s        3.5 s       0.26 s
//! ```
//!
//! The GPU host's 16 CPU cores (`--threads T --batches 48`: 5.22 GB of Arrow data):
//!
//! ```text
//! codec    threads   before: wall = lock   after: wall   lock
//! none     16        2.35-3.00 s           2.05-2.07 s   2.04-2.07 s
//! zstd:1   1         17.2-17.7 s           16.3-16.5 s   0.71-0.76 s
//! zstd:1   4         13.7-17.6 s           3.82-4.36 s   0.65-0.72 s
//! zstd:1   16        14.0-14.4 s           1.37 s        0.73-0.74 s
//! lz4      1         10.0-10.3 s           11.0-11.7 s   1.04-1.05 s
//! lz4      16        10.7-11.3 s           1.63-1.74 s   1.27-1.34 s
//! zstd:1   16 --dict 16.9 s                1.62 s        0.72 s
//! ```
//!
//! Before, 16 threads spent 184-190 thread-seconds inside `write`, almost all of it waiting
//! for the lock, for a 14 s export; after, 19. Uncompressed output stays bound by the
//! serialized copy into the page cache (the lock is held for the whole run, as before). One lz4
//! thread is 7-25% slower after: glibc malloc hands the compressed output fresh pages more
//! often (3x the minor page faults; with `GLIBC_TUNABLES=glibc.malloc.trim_threshold=
//! 1073741824:glibc.malloc.mmap_threshold=1073741824` the gap here shrinks from 0.5 s to 0.2 s).
//! The exporter binary uses mimalloc instead.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::{StringBuilder, StringDictionaryBuilder};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use gpupg_sink::{create_file_sink, Compression, Format, SinkOptions};

struct Args {
    rows: usize,
    batches: usize,
    threads: usize,
    compression: Compression,
    dict: bool,
    out: Option<PathBuf>,
    keep: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        rows: 1_000_000,
        batches: 20,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        compression: Compression::Zstd(1),
        dict: false,
        out: None,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--keep" => {
                a.keep = true;
                continue;
            }
            "--dict" => {
                a.dict = true;
                continue;
            }
            _ => {}
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--rows" => a.rows = num()?.max(1),
            "--batches" => a.batches = num()?,
            "--threads" => a.threads = num()?.max(1),
            "--compression" => a.compression = value.parse().map_err(|e| format!("{e}"))?,
            "--out" => a.out = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
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
    fn below(&mut self, n: u64) -> i32 {
        (self.next() % n) as i32
    }
}

fn lineorder(rows: usize, dict: bool) -> RecordBatch {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut r = |n: u64| rng.below(n);
    let int = |name: &str, v: Vec<i32>| -> (Field, ArrayRef) {
        (
            Field::new(name, DataType::Int32, false),
            Arc::new(Int32Array::from(v)),
        )
    };
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
    let mut cols: Vec<(Field, ArrayRef)> = vec![(
        Field::new("lo_orderkey", DataType::Int64, false),
        Arc::new(Int64Array::from_iter_values(
            (0..rows as i64).map(|i| i / 4 + 1),
        )),
    )];
    cols.push(int(
        "lo_linenumber",
        (0..rows).map(|i| (i % 7) as i32 + 1).collect(),
    ));
    cols.push(int(
        "lo_custkey",
        (0..rows).map(|_| r(3_000_000) + 1).collect(),
    ));
    cols.push(int(
        "lo_partkey",
        (0..rows).map(|_| r(1_400_000) + 1).collect(),
    ));
    cols.push(int(
        "lo_suppkey",
        (0..rows).map(|_| r(200_000) + 1).collect(),
    ));
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
    cols.push(int("lo_shippriority", vec![0; rows]));
    let qty: Vec<i32> = (0..rows).map(|_| r(50) + 1).collect();
    cols.push(int("lo_quantity", qty.clone()));
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
    cols.push(int("lo_discount", disc.clone()));
    cols.push(int(
        "lo_revenue",
        (0..rows)
            .map(|i| (price[i] * i128::from(100 - disc[i]) / 10_000) as i32)
            .collect(),
    ));
    cols.push(int(
        "lo_supplycost",
        (0..rows).map(|_| r(120_000) + 1).collect(),
    ));
    cols.push(int("lo_tax", (0..rows).map(|_| r(9)).collect()));
    cols.push(int(
        "lo_commitdate",
        (0..rows).map(|i| dates[i] + 30 + r(90)).collect(),
    ));
    let modes = ["AIR", "FOB", "MAIL", "RAIL", "REG AIR", "SHIP", "TRUCK"];
    let shipmode: ArrayRef = if dict {
        let mut b = StringDictionaryBuilder::<Int32Type>::new();
        for _ in 0..rows {
            b.append_value(modes[r(7) as usize]);
        }
        Arc::new(b.finish())
    } else {
        let mut b = StringBuilder::with_capacity(rows, rows * 5);
        for _ in 0..rows {
            b.append_value(modes[r(7) as usize]);
        }
        Arc::new(b.finish())
    };
    cols.push((
        Field::new("lo_shipmode", shipmode.data_type().clone(), false),
        shipmode,
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

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("ipc_speed: {e}");
    std::process::exit(1);
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("ipc_speed: {e}");
        std::process::exit(2);
    });
    let build = Instant::now();
    let batch = lineorder(args.rows, args.dict);
    let batch_bytes = arrow_bytes(&batch);
    eprintln!(
        "built {} rows x {} columns ({:.1} MB of Arrow data) in {:.2}s",
        args.rows,
        batch.num_columns(),
        batch_bytes as f64 / 1e6,
        build.elapsed().as_secs_f64()
    );

    let out = args.out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ipc_speed-{}.arrow", std::process::id()))
    });
    let opts = SinkOptions {
        format: Format::Arrow,
        compression: args.compression,
        overwrite: true,
        row_group_rows: 0,
    };
    let start = Instant::now();
    let sink = create_file_sink(&out, batch.schema(), &opts).unwrap_or_else(|e| fail(e));
    let next = AtomicUsize::new(0);
    let in_write_nanos = AtomicU64::new(0);
    let result: Result<(), gpupg_sink::SinkError> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.threads)
            .map(|_| {
                s.spawn(|| loop {
                    if next.fetch_add(1, Ordering::Relaxed) >= args.batches {
                        return Ok(());
                    }
                    let t = Instant::now();
                    let r = sink.write(&batch);
                    in_write_nanos.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    r?;
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("writer thread panicked"))
    });
    if let Err(e) = result {
        fail(e);
    }
    let stats = sink.finish().unwrap_or_else(|e| fail(e));
    let secs = start.elapsed().as_secs_f64();
    let arrow_gb = (batch_bytes * args.batches) as f64 / 1e9;
    let file_gb = stats.files.iter().map(|f| f.1).sum::<u64>() as f64 / 1e9;
    println!(
        "arrow {}{} threads={} rows={}: {:.2} GB Arrow -> {:.2} GB file in {:.2}s = {:.2} GB/s \
         Arrow, {:.2} GB/s file; in write() {:.2} thread-s, encode {:.2} thread-s, \
         file lock held {:.2}s",
        args.compression,
        if args.dict { " dict" } else { "" },
        args.threads,
        stats.rows,
        arrow_gb,
        file_gb,
        secs,
        arrow_gb / secs,
        file_gb / secs,
        in_write_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        stats.encode_seconds,
        stats.write_seconds,
    );
    if !args.keep {
        let _ = std::fs::remove_file(&out);
    }
}
