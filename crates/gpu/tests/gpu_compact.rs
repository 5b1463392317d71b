//! GPU tests of the gather (`gpupg_gpu::gather`): runs of rows of device
//! batches copied device to device into a new batch. Run on a machine with
//! a GPU with `cargo test -p gpupg-gpu --release --test gpu_compact --
//! --ignored --nocapture --test-threads=1` (gpu/run-tests.sh runs the
//! prebuilt binary so); without a GPU each test says why it skipped.
//!
//! Reference: `gather_rows_host` (arrow's slice + concat) on host copies of
//! the sources; every comparison is Arrow equality of whole columns after
//! `validate_full`, plus the device layout (one plain allocation, 256-byte
//! aligned buffers, no bitmap without NULLs).

#[path = "common/rows.rs"]
mod rows;

use rows::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Array, RecordBatch};
use gpupg_decode::{OutputSchema, TypeOptions};
use gpupg_gpu::ipc::allocation_of;
use gpupg_gpu::{
    gather_rows, gather_rows_host, AllocKind, DeviceBatch, DeviceColumn, Gatherer, GpuDecoder,
    GpuError, RowRun,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A gatherer on GPU 0, or `None` (with the reason printed) without one.
fn gatherer() -> Option<Gatherer> {
    match gpupg_gpu::device_count() {
        Ok(n) if n > 0 => {
            let g = Gatherer::new(0).unwrap_or_else(|e| panic!("gatherer: {e}"));
            println!("gather kernels: {:?}", g.kernel_info());
            Some(g)
        }
        Ok(_) => {
            println!("skipped: no CUDA device");
            None
        }
        Err(e) => {
            println!("skipped: {e}");
            None
        }
    }
}

fn result(name: &str, value: impl std::fmt::Display) {
    println!("RESULT {name} {value}");
}

/// The device layout of a gathered batch: every buffer a 256-byte aligned
/// view of one plain allocation, a validity bitmap exactly where there are
/// NULLs.
fn check_layout(b: &DeviceBatch, what: &str) {
    let mut bases = BTreeSet::new();
    let mut stack: Vec<&DeviceColumn> = b.columns.iter().collect();
    while let Some(c) = stack.pop() {
        assert_eq!(
            c.validity.is_some(),
            c.null_count > 0,
            "{what}: {} column: bitmap iff NULLs",
            c.data_type
        );
        for s in c.validity.iter().chain(&c.buffers) {
            assert_eq!(s.buffer.kind(), AllocKind::Plain, "{what}");
            assert_eq!(s.buffer.ptr() % 256, 0, "{what}: alignment");
            bases.insert(allocation_of(&s.buffer).expect("allocation").base);
        }
        stack.extend(c.children.iter());
    }
    assert!(bases.len() <= 1, "{what}: {} allocations", bases.len());
}

/// Compares column by column (after `validate_full`), naming the first
/// difference.
fn assert_same(got: &RecordBatch, want: &RecordBatch, what: &str) {
    assert_eq!(got.schema(), want.schema(), "{what}: schema");
    assert_eq!(got.num_rows(), want.num_rows(), "{what}: rows");
    for (i, (g, w)) in got.columns().iter().zip(want.columns()).enumerate() {
        let name = got.schema().field(i).name().clone();
        g.to_data()
            .validate_full()
            .unwrap_or_else(|e| panic!("{what}: column {name} invalid: {e}"));
        if g.to_data() != w.to_data() {
            let first = (0..g.len().min(w.len()))
                .find(|&r| g.slice(r, 1).to_data() != w.slice(r, 1).to_data());
            panic!(
                "{what}: column {name} differs (first row {first:?}): gpu {:?} host {:?}",
                first.map(|r| g.slice(r, 1)),
                first.map(|r| w.slice(r, 1))
            );
        }
    }
}

/// Gathers on the device and on the host copies, and compares.
fn check_gather(
    g: &mut Gatherer,
    sources: &[&DeviceBatch],
    hosts: &[RecordBatch],
    runs: &[RowRun],
    what: &str,
) -> DeviceBatch {
    let want = gather_rows_host(hosts, runs).expect("host gather");
    let got = g
        .gather(sources, runs)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.num_rows, want.num_rows(), "{what}");
    check_layout(&got, what);
    let back = got.to_host().expect("to_host");
    assert_same(&back, &want, what);
    got
}

/// Runs covering the rows of `col` that are not NULL, in order.
fn valid_runs(batch: usize, col: &dyn Array) -> Vec<RowRun> {
    let mut runs = Vec::new();
    let mut start = None;
    for i in 0..=col.len() {
        let valid = i < col.len() && col.is_valid(i);
        match (valid, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push(RowRun::new(batch, s, i - s));
                start = None;
            }
            _ => {}
        }
    }
    runs
}

#[test]
#[ignore = "needs a GPU"]
fn a_every_decoded_type() {
    let Some(mut g) = gatherer() else { return };
    let cols = all_columns();
    let mut checked = 0;
    for (oname, opts) in all_options() {
        let schema = Arc::new(OutputSchema::new(&cols, &opts).expect("schema"));
        let mut dec = GpuDecoder::new(0, schema).expect("decoder");
        let rows = [3000usize, 2000];
        let dev: Vec<DeviceBatch> = rows
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                let chunk = chunk_of(&random_rows(&cols, &opts, n, 40 + k as u64));
                dec.decode_to_device(&chunk).expect("decode")
            })
            .collect();
        let hosts: Vec<RecordBatch> = dev.iter().map(|b| b.to_host().expect("to_host")).collect();
        let refs: Vec<&DeviceBatch> = dev.iter().collect();
        for (name, runs) in patterns(&rows, 7) {
            let what = format!("{oname}/{name}");
            check_gather(&mut g, &refs, &hosts, &runs, &what);
            checked += 1;
            println!(
                "{what}: ok ({} runs, {} fetch rounds, {} tasks)",
                g.stats().runs,
                g.stats().fetch_rounds,
                g.stats().tasks
            );
        }
        // Every row where i4 is not NULL, from both batches: hundreds of
        // runs, and no NULL left in i4.
        let i4 = hosts[0].schema().index_of("i4").expect("i4");
        let mut runs = valid_runs(0, hosts[0].column(i4).as_ref());
        runs.extend(valid_runs(1, hosts[1].column(i4).as_ref()));
        let got = check_gather(&mut g, &refs, &hosts, &runs, &format!("{oname}/i4 valid"));
        assert_eq!(got.columns[i4].null_count, 0);
        assert!(got.columns[i4].validity.is_none());
        // A gather of a gather.
        let again = check_gather(
            &mut g,
            &[&got, &dev[1]],
            &[got.to_host().expect("to_host"), hosts[1].clone()],
            &[RowRun::new(1, 1, 999), RowRun::new(0, 3, 500)],
            &format!("{oname}/regather"),
        );
        assert_eq!(again.num_rows, 1499);
        checked += 2;
    }
    result(
        "gather_every_type",
        format!("ok ({checked} gathers, 3 option sets)"),
    );
}

#[test]
#[ignore = "needs a GPU"]
fn b_every_arrow_layout() {
    let Some(mut g) = gatherer() else { return };
    // Batch 0 with NULLs everywhere, batch 1 without a bitmap (but for
    // `sparse`'s two NULLs): uploaded as they are.
    let hosts = [sample(800, 1, 0.2), sample(640, 2, 0.0)];
    let dev: Vec<DeviceBatch> = hosts.iter().map(|h| g.upload(h).expect("upload")).collect();
    let refs: Vec<&DeviceBatch> = dev.iter().collect();
    let sparse = hosts[0].schema().index_of("sparse").expect("sparse");
    let mut checked = 0;
    for (name, runs) in patterns(&[800, 640], 11) {
        let got = check_gather(&mut g, &refs, &hosts, &runs, &name);
        if name == "drop nulls" {
            assert_eq!(got.columns[sparse].null_count, 0);
            assert!(got.columns[sparse].validity.is_none());
        }
        checked += 1;
    }
    // Large runs crossing many tiles, at odd rows.
    let big = [sample(40_000, 3, 0.1), sample(30_000, 4, 0.05)];
    let dev: Vec<DeviceBatch> = big.iter().map(|h| g.upload(h).expect("upload")).collect();
    let refs: Vec<&DeviceBatch> = dev.iter().collect();
    let runs = [
        RowRun::new(0, 1, 25_001),
        RowRun::new(1, 7, 29_000),
        RowRun::new(0, 25_003, 14_990),
        RowRun::new(1, 0, 7),
    ];
    check_gather(&mut g, &refs, &big, &runs, "large runs");
    result(
        "gather_arrow_layouts",
        format!("ok ({} gathers)", checked + 1),
    );
}

#[test]
#[ignore = "needs a GPU"]
fn c_errors() {
    let Some(mut g) = gatherer() else { return };
    let a = g.upload(&sample(50, 1, 0.2)).expect("upload");
    let b = g.upload(&sample(20, 2, 0.2)).expect("upload");
    let expect_unsupported = |r: Result<DeviceBatch, GpuError>, needle: &str| match r {
        Err(GpuError::Unsupported { what, .. }) => {
            assert!(what.contains(needle), "{what} (wanted {needle})")
        }
        other => panic!(
            "expected an error naming {needle}, got {:?}",
            other.map(|b| b.num_rows)
        ),
    };
    expect_unsupported(
        g.gather(&[&a, &b], &[RowRun::new(1, 15, 6)]),
        "outside batch 1 of 20 rows",
    );
    expect_unsupported(
        g.gather(&[&a, &b], &[RowRun::new(2, 0, 1)]),
        "names batch 2",
    );
    expect_unsupported(g.gather(&[], &[]), "no source batch");
    let host = sample(10, 3, 0.0);
    let other = g
        .upload(&host.project(&[0, 2]).expect("project"))
        .expect("upload");
    expect_unsupported(
        g.gather(&[&a, &other], &[RowRun::new(0, 0, 1)]),
        "another schema",
    );
    // The one-shot form works on its own.
    let one = gather_rows(&[&b], &[RowRun::new(0, 2, 3)]).expect("gather_rows");
    assert_eq!(one.num_rows, 3);
    assert_same(
        &one.to_host().expect("to_host"),
        &gather_rows_host(&[b.to_host().expect("to_host")], &[RowRun::new(0, 2, 3)]).expect("host"),
        "gather_rows",
    );
    result("gather_errors", "ok");
}

#[test]
#[ignore = "needs a GPU"]
fn d_lineorder_throughput() {
    let Some(mut g) = gatherer() else { return };
    let cols = lineorder_cols();
    let schema = Arc::new(OutputSchema::new(&cols, &TypeOptions::default()).expect("schema"));
    let mut dec = GpuDecoder::new(0, schema).expect("decoder");
    // 7 chunks of 1.7M rows: ~1.1 GB of columns on the device.
    let t = Instant::now();
    let dev: Vec<DeviceBatch> = (0..7)
        .map(|s| {
            let chunk = lineorder_chunk(1_700_000, 100 + s);
            dec.decode_to_device(&chunk).expect("decode")
        })
        .collect();
    drop(dec);
    let refs: Vec<&DeviceBatch> = dev.iter().collect();
    let src_bytes: usize = dev.iter().map(|b| b.device_bytes()).sum();
    let rows: usize = dev.iter().map(|b| b.num_rows).sum();
    println!(
        "{} batches, {rows} rows, {} MB on the device in {:.1} s",
        dev.len(),
        src_bytes >> 20,
        t.elapsed().as_secs_f64()
    );
    // ~10,000 runs keeping ~99% of the rows: per batch ~1430 gaps of
    // ~12 rows at random places (pages changed since the last revision).
    let mut rng = StdRng::seed_from_u64(5);
    let mut runs = Vec::new();
    for (b, batch) in dev.iter().enumerate() {
        let n = batch.num_rows;
        let gaps = 1430;
        let mut cuts: Vec<usize> = (0..gaps).map(|_| rng.random_range(0..n)).collect();
        cuts.sort_unstable();
        let mut at = 0;
        for c in cuts {
            if c > at {
                runs.push(RowRun::new(b, at, c - at));
            }
            at = (c + rng.random_range(1..24)).min(n).max(at);
        }
        if at < n {
            runs.push(RowRun::new(b, at, n - at));
        }
    }
    let kept: usize = runs.iter().map(|r| r.len).sum();
    println!(
        "{} runs keep {kept} rows ({:.2}%)",
        runs.len(),
        100.0 * kept as f64 / rows as f64
    );
    // Correctness at this size (and warm-up).
    let t = Instant::now();
    let hosts: Vec<RecordBatch> = dev.iter().map(|b| b.to_host().expect("to_host")).collect();
    check_gather(&mut g, &refs, &hosts, &runs, "lineorder 99%");
    drop(hosts);
    println!(
        "checked against the host in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut measure = |runs: &[RowRun], label: &str| -> (f64, f64) {
        let mut best = (0.0f64, 0.0f64);
        for round in 0..5 {
            let t = Instant::now();
            let out = g.gather(&refs, runs).expect("gather");
            let wall = t.elapsed().as_secs_f64();
            let bytes = out.device_bytes() as f64;
            let s = g.stats().clone();
            println!(
                "{label} round {round}: {} MB in {:.2} ms wall (plan {:.2} ms incl. {} fetch rounds of {:.2} ms, alloc {:.2} ms, kernels {:.2} ms; {} runs, {} tasks, {} KB of tables)",
                out.device_bytes() >> 20,
                wall * 1e3,
                s.plan_s * 1e3,
                s.fetch_rounds,
                s.fetch_s * 1e3,
                s.alloc_s * 1e3,
                s.kernel_s * 1e3,
                s.runs,
                s.tasks,
                s.table_bytes >> 10
            );
            let gbs = (bytes / wall / 1e9, bytes / s.kernel_s / 1e9);
            if gbs.0 > best.0 {
                best = gbs;
            }
            // Freed before the next round (cuMemFree synchronizes).
            drop(out);
        }
        best
    };
    let (wall_gbs, kernel_gbs) = measure(&runs, "99% in runs");
    let whole: Vec<RowRun> = dev
        .iter()
        .enumerate()
        .map(|(b, x)| RowRun::new(b, 0, x.num_rows))
        .collect();
    let (whole_gbs, whole_kernel_gbs) = measure(&whole, "whole batches");
    result("gather_gb_s", format!("{wall_gbs:.1}"));
    result(
        "gather_detail",
        format!(
            "{} runs: {wall_gbs:.1} GB/s wall, {kernel_gbs:.1} GB/s kernels; whole batches {whole_gbs:.1} GB/s wall, {whole_kernel_gbs:.1} GB/s kernels (output bytes; the device reads as many)",
            runs.len()
        ),
    );
}

// ---------------------------------------------------------------------------
// COPY data of every type (as tests/gpu.rs makes it).
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Arrow batches of every layout (as src/store/gather.rs's unit tests make them).
// ---------------------------------------------------------------------------

#[path = "common/gather_samples.rs"]
mod samples;
use samples::{patterns, sample};
