//! Decode speed on a lineorder-like table (the Star Schema Benchmark's fact
//! table: 17 columns, mostly int4, two numeric(15,2), a bigint, dates and
//! padded bpchar). Generates one chunk in memory, decodes it repeatedly and
//! prints GB/s of COPY row bytes.
//!
//! ```text
//! cargo run --release -p gpupg-decode --example decode_speed -- [MB] [iterations] [threads]
//! ```
//! With `threads` > 1 each thread decodes its own copy of the chunk with its
//! own decoder at the same time, to show per-core scaling.
//!
//! Every batch's buffers are fresh allocations, and with glibc's default
//! settings large ones come from mmap, so part of the time is the kernel
//! zeroing new pages (about a third here). To see the decoder alone, as with
//! an allocator that recycles memory, run with
//! `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=100000000000`.

use std::sync::Arc;
use std::time::Instant;

use gpupg_decode::{CpuDecoder, Decoder, OutputSchema, TypeOptions};
use gpupg_format::encode::{encode_tuple, Value};
use gpupg_format::types::NumericTypmod;
use gpupg_format::{ColumnDesc, CopyChunk, PgType};

/// xorshift64*: deterministic data without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn columns() -> Vec<ColumnDesc> {
    let num = PgType::Numeric(Some(NumericTypmod {
        precision: 15,
        scale: 2,
    }));
    let cols = [
        ("lo_orderkey", PgType::Int4),
        ("lo_linenumber", PgType::Int4),
        ("lo_custkey", PgType::Int4),
        ("lo_partkey", PgType::Int4),
        ("lo_suppkey", PgType::Int4),
        ("lo_orderdate", PgType::Date),
        ("lo_orderpriority", PgType::Text),
        ("lo_shippriority", PgType::Text),
        ("lo_quantity", PgType::Int4),
        ("lo_extendedprice", num.clone()),
        ("lo_ordtotalprice", num),
        ("lo_discount", PgType::Int4),
        ("lo_revenue", PgType::Int8),
        ("lo_supplycost", PgType::Int4),
        ("lo_tax", PgType::Int4),
        ("lo_commitdate", PgType::Date),
        ("lo_shipmode", PgType::Text),
    ];
    cols.into_iter()
        .map(|(name, pg_type)| ColumnDesc {
            name: name.into(),
            type_name: pg_type.to_string(),
            type_oid: 0,
            typmod: -1,
            pg_type,
            nullable: false,
        })
        .collect()
}

fn price(rng: &mut Rng) -> String {
    let cents = rng.below(1_000_000_000);
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn make_chunk(target_bytes: usize) -> CopyChunk {
    let prios = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"];
    let modes = ["REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut chunk = CopyChunk::default();
    chunk.data.reserve(target_bytes + target_bytes / 16);
    let mut i = 0i32;
    while chunk.data.len() < target_bytes {
        let row = encode_tuple(&[
            Value::Int4(i / 4),
            Value::Int4(i % 7 + 1),
            Value::Int4(rng.below(3_000_000) as i32),
            Value::Int4(rng.below(1_400_000) as i32),
            Value::Int4(rng.below(200_000) as i32),
            Value::Date(-2922 + rng.below(2556) as i32),
            Value::Text(format!("{:<15}", prios[rng.below(5) as usize])),
            Value::Text("0".into()),
            Value::Int4(rng.below(50) as i32 + 1),
            Value::Numeric(price(&mut rng)),
            Value::Numeric(price(&mut rng)),
            Value::Int4(rng.below(11) as i32),
            Value::Int8(rng.below(10_000_000_000) as i64),
            Value::Int4(rng.below(100_000) as i32),
            Value::Int4(rng.below(9) as i32),
            Value::Date(-2922 + rng.below(2556) as i32),
            Value::Text(format!("{:<10}", modes[rng.below(7) as usize])),
        ]);
        // Rows sit in the buffer between 5-byte CopyData headers, as the
        // COPY source leaves them.
        chunk.data.push(b'd');
        chunk
            .data
            .extend_from_slice(&(row.len() as u32 + 4).to_be_bytes());
        chunk.row_starts.push(chunk.data.len() as u32);
        chunk.data.extend_from_slice(&row);
        chunk.row_ends.push(chunk.data.len() as u32);
        i += 1;
    }
    chunk
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mb = args.first().copied().unwrap_or(200);
    let iters = args.get(1).copied().unwrap_or(5);
    let threads = args.get(2).copied().unwrap_or(1).max(1);
    let chunk = make_chunk(mb << 20);
    let bytes = chunk.row_bytes();
    println!(
        "lineorder-like chunk: {} rows, {:.1} MB of row bytes, {} columns",
        chunk.num_rows(),
        bytes as f64 / 1e6,
        columns().len()
    );
    let schema = Arc::new(OutputSchema::new(&columns(), &TypeOptions::default()).expect("schema"));
    let run = |chunk: &CopyChunk| -> Vec<f64> {
        let mut dec = CpuDecoder::new(schema.clone());
        (0..iters)
            .map(|_| {
                let t = Instant::now();
                let batch = dec.decode(chunk).expect("decode");
                let secs = t.elapsed().as_secs_f64();
                assert_eq!(batch.num_rows(), chunk.num_rows());
                drop(batch);
                secs
            })
            .collect()
    };
    if threads == 1 {
        let times = run(&chunk);
        let best = times.iter().cloned().fold(f64::INFINITY, f64::min);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        println!(
            "1 thread: best {:.3} s = {:.2} GB/s, mean {:.2} GB/s over {iters} runs",
            best,
            bytes as f64 / best / 1e9,
            bytes as f64 / mean / 1e9
        );
    } else {
        let chunks: Vec<CopyChunk> = (0..threads).map(|_| chunk.clone()).collect();
        let t = Instant::now();
        std::thread::scope(|s| {
            for c in &chunks {
                s.spawn(|| run(c));
            }
        });
        let secs = t.elapsed().as_secs_f64();
        let total = bytes as f64 * threads as f64 * iters as f64;
        println!(
            "{threads} threads: {:.2} GB/s total, {:.2} GB/s per thread",
            total / secs / 1e9,
            total / secs / 1e9 / threads as f64
        );
    }
}
