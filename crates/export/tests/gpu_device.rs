//! On the GPU machine (run by `gpu/run-tests.sh`): tables read into
//! device-resident columns, copied back, equal the CPU engine's export of
//! the same table bit for bit.

mod common;

use arrow::array::Array;
use common::*;
use gpupg_export::{export, export_to_device, Engine, HeapIo, NoProgress, Source};
use gpupg_localpg::LocalServer;
use gpupg_sink::Format;

fn source_name(s: Source) -> &'static str {
    match s {
        Source::Heap => "heap",
        _ => "copy",
    }
}

fn check_table(dsn: &str, name: &str, keys: &[&str], source: Source) -> gpupg_export::ExportReport {
    check_table_io(dsn, name, keys, source, HeapIo::Auto)
}

fn check_table_io(
    dsn: &str,
    name: &str,
    keys: &[&str],
    source: Source,
    heap_io: HeapIo,
) -> gpupg_export::ExportReport {
    check_table_on(dsn, name, keys, (source, heap_io), &[0])
}

/// As [`check_table_io`], decoding on `devices`: with several, every one
/// of them holds some of the batches.
fn check_table_on(
    dsn: &str,
    name: &str,
    keys: &[&str],
    (source, heap_io): (Source, HeapIo),
    devices: &[usize],
) -> gpupg_export::ExportReport {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, out) = file(dir.path(), "cpu.arrow");
    let mut req = request(dsn, table(name), out, Format::Arrow);
    req.sink.compression = gpupg_sink::Compression::None;
    let cpu_report = export(&req, &NoProgress).expect("CPU export");
    let cpu = sorted_by(&read_back(&path), keys);

    req.engine = Engine::Gpu;
    req.source = source;
    req.heap_io = heap_io;
    req.devices = devices.to_vec();
    // As the command line does: the decoder threads take the GPUs in turn.
    req.workers = 2 * devices.len();
    let gpupg_export::Loaded {
        schema,
        batches,
        report,
        ..
    } = export_to_device(&req, &NoProgress).expect("device export");
    let device = gpupg_gpu::DeviceTable { schema, batches };
    let per_device: Vec<usize> = devices
        .iter()
        .map(|&d| device.batches.iter().filter(|b| b.device() == d).count())
        .collect();
    assert_eq!(
        per_device.iter().sum::<usize>(),
        device.batches.len(),
        "{name}: every batch on a GPU asked for"
    );
    if device.batches.len() >= 4 * devices.len() {
        assert!(
            per_device.iter().all(|&n| n > 0),
            "{name}: batches per GPU {per_device:?}"
        );
    }
    assert_eq!(report.source, source_name(source));
    assert_eq!(report.engine, "gpu");
    assert_eq!(report.rows, cpu_report.rows);
    assert_eq!(device.num_rows() as u64, cpu_report.rows);
    let resident = report.resident.clone().expect("resident summary");
    assert_eq!(resident.bytes, device.device_bytes() as u64);
    assert_eq!(resident.batches, device.batches.len());
    assert!(report.files.is_empty());
    let gpu = sorted_by(&device.to_host().expect("copy back"), keys);

    assert_eq!(cpu.schema(), gpu.schema(), "{name}: schema");
    for (i, field) in cpu.schema().fields().iter().enumerate() {
        assert_eq!(
            cpu.column(i).to_data(),
            gpu.column(i).to_data(),
            "{name}: column {} differs",
            field.name()
        );
    }
    let pages = report.heap.as_ref().map_or(String::new(), |h| {
        format!(
            "; heap pages {} direct ({} converted on the GPU), {} via COPY",
            h.pages_direct, h.pages_gpu, h.pages_fallback
        )
    });
    println!(
        "RESULT {name}_{} {} rows, {} batches ({} per GPU {devices:?}), {:.1} MB on the device, equal to the CPU export{pages}",
        source_name(source),
        report.rows,
        resident.batches,
        per_device
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        resident.bytes as f64 / 1e6
    );
    report
}

#[test]
#[ignore = "needs a GPU"]
fn device_export_equals_cpu_export() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    gpupg_datagen::create_all_types(&config(&dsn), 3000).expect("all_types");
    gpupg_datagen::create_lineorder(&config(&dsn), "lineorder", 50_000, 4).expect("lineorder");
    // All-visible pages, so the heap path reads them from the files (the
    // GPU page kernels' array variants convert all_types' pages, arrays of
    // every type included).
    exec(&dsn, "CHECKPOINT");
    exec(&dsn, "VACUUM (FREEZE) all_types, lineorder");
    for source in [Source::Copy, Source::Heap] {
        check_table(&dsn, "all_types", &["id"], source);
        check_table(&dsn, "lineorder", &["lo_orderkey", "lo_linenumber"], source);
    }
    let heap = |r: &gpupg_export::ExportReport| r.heap.clone().expect("heap report");
    let r = check_table(
        &dsn,
        "lineorder",
        &["lo_orderkey", "lo_linenumber"],
        Source::Heap,
    );
    // Every page with tuples converted on the GPU (the others are new
    // pages, direct with no rows), none left to the CPU.
    assert!(heap(&r).pages_gpu > 0);
    assert_eq!(r.gpu.as_ref().map(|g| g.pages_flagged), Some(0));
    // Pages the GPU leaves to the CPU converter: compressed values and
    // TOAST pointers (converted there, the values read from the TOAST
    // relation's files); dropped and added columns, partitions with their
    // own layouts.
    create_heap_cases(&dsn);
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["toasty", "evolved", "parted"]);
    let r = check_table(&dsn, "toasty", &["id"], Source::Heap);
    let h = heap(&r);
    let flagged = r.gpu.as_ref().map_or(0, |g| g.pages_flagged);
    println!(
        "toasty: {flagged} pages flagged by the GPU; fallback reasons {:?}",
        h.fallback_reasons
    );
    assert!(flagged > 0, "toasty: pages left to the CPU converter");
    assert_eq!(
        h.pages_fallback, 0,
        "toasty: TOAST pointers read from the files on the CPU: {h:?}"
    );
    assert!(
        h.toast.iter().any(|t| t.contains("chunks indexed")),
        "{h:?}"
    );
    let r = check_table(&dsn, "evolved", &["id"], Source::Heap);
    assert!(heap(&r).pages_gpu > 0);
    let r = check_table(&dsn, "parted", &["id"], Source::Heap);
    assert!(heap(&r).pages_gpu > 0);
}

/// jsonb converted by the GPU page kernels (kernels/jsonb.cuh): a table of
/// documents of many shapes has every page converted on the GPU, none
/// flagged; documents nested deeper than the kernels follow and
/// compressed ones flag their pages, which the CPU converter converts (no
/// page through COPY). Both equal the CPU export.
#[test]
#[ignore = "needs a GPU"]
fn jsonb_pages_convert_on_the_gpu() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    exec(
        &dsn,
        r#"CREATE TABLE docs (id int, doc jsonb, note text);
         INSERT INTO docs SELECT g, CASE g % 8
             WHEN 0 THEN jsonb_build_object('g', g, 'neg', -g * 1.25, 'tiny', g * 0.000001,
                 'big', g::numeric ^ 7, 's', 'a"b\c/' || chr(10) || chr(9) || chr(1) || chr(31) || g,
                 'u', 'é€😀', 'arr', jsonb_build_array(true, false, NULL, '{}'::jsonb, '[]'::jsonb))
             WHEN 1 THEN to_jsonb(g * 1.50)
             WHEN 2 THEN to_jsonb('str' || g)
             WHEN 3 THEN 'null'::jsonb
             WHEN 4 THEN (SELECT jsonb_agg(i) FROM generate_series(1, 40 + g % 20) i)
             WHEN 5 THEN (SELECT jsonb_object_agg('k' || (i % 30), i * 0.1) FROM generate_series(1, 45) i)
             WHEN 6 THEN '{"a": {"b": {"c": [1, [2, [3, {"d": "e", "d": -0.00}]]]}}, "": ""}'::jsonb
             ELSE jsonb_build_object('x', 1e-30::numeric, 'y', 123456789012345678901234567890.000,
                 'z', '-0.00'::numeric, 'w', 1e300::numeric)
           END, CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END
         FROM generate_series(1, 20000) g;
         CREATE TABLE docs_mixed (id int, doc jsonb);
         INSERT INTO docs_mixed SELECT g, CASE
             WHEN g % 500 = 0 THEN (repeat('[', 40) || g || repeat(']', 40))::jsonb
             WHEN g % 700 = 0 THEN jsonb_build_object('long', repeat('abc', 3000))
             ELSE jsonb_build_object('g', g, 'l', jsonb_build_array(g, g * 0.5)) END
         FROM generate_series(1, 20000) g;"#,
    );
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["docs", "docs_mixed"]);
    let heap = |r: &gpupg_export::ExportReport| r.heap.clone().expect("heap report");
    let flagged = |r: &gpupg_export::ExportReport| r.gpu.as_ref().map_or(0, |g| g.pages_flagged);
    let r = check_table(&dsn, "docs", &["id"], Source::Heap);
    assert!(heap(&r).pages_gpu > 0, "{:?}", heap(&r));
    assert_eq!(flagged(&r), 0);
    let r = check_table(&dsn, "docs_mixed", &["id"], Source::Heap);
    let h = heap(&r);
    assert!(h.pages_gpu > 0 && flagged(&r) > 0, "{h:?}");
    assert_eq!(h.pages_fallback, 0, "{h:?}");
}

/// The heap files read by cuFile straight into device memory. The lent
/// GPU machine's disk registers with cuFile only in its compatibility mode
/// (and only with `CUFILE_EXPERIMENTAL_FS=true`), which `--heap-io auto`
/// refuses (it reads with pread and says why) and `--heap-io cufile` uses:
/// the path from device memory (headers copied back, line pointers and
/// checksums checked by the kernels, flagged pages copied back) is the
/// same as with GPUDirect. With data checksums, a corrupt page is read
/// through COPY on both I/O paths.
#[test]
#[ignore = "needs a GPU"]
fn cufile_heap_export_equals_cpu_export() {
    let server = LocalServer::start_with(gpupg_localpg::LocalServerOptions {
        data_checksums: true,
        ..Default::default()
    })
    .expect("server");
    let dsn = server.dsn();
    gpupg_datagen::create_lineorder(&config(&dsn), "lineorder", 50_000, 4).expect("lineorder");
    create_heap_cases(&dsn);
    exec(&dsn, "CHECKPOINT");
    vacuum_all_visible(&dsn, &["lineorder", "toasty", "evolved", "parted"]);
    let keys = ["lo_orderkey", "lo_linenumber"];
    let heap = |r: &gpupg_export::ExportReport| r.heap.clone().expect("heap report");

    let r = check_table_io(&dsn, "lineorder", &keys, Source::Heap, HeapIo::Auto);
    let io = heap(&r).io;
    println!("RESULT cufile_auto {io}");
    assert!(io.starts_with("pread") || io.starts_with("cuFile"), "{io}");

    // cuFile's compatibility mode on this machine's file system.
    std::env::set_var("CUFILE_EXPERIMENTAL_FS", "true");
    let t = std::time::Instant::now();
    let r = check_table_io(&dsn, "lineorder", &keys, Source::Heap, HeapIo::CuFile);
    let h = heap(&r);
    println!(
        "RESULT cufile_lineorder {} in {:.3} s: {} pages direct, {} on the GPU",
        h.io,
        t.elapsed().as_secs_f64(),
        h.pages_direct,
        h.pages_gpu
    );
    assert!(h.io.starts_with("cuFile into GPU"), "{}", h.io);
    assert!(
        h.checksums && h.pages_gpu > 0 && h.pages_fallback == 0,
        "{h:?}"
    );
    for (name, keys) in [("toasty", ["id"]), ("evolved", ["id"]), ("parted", ["id"])] {
        let r = check_table_io(&dsn, name, &keys, Source::Heap, HeapIo::CuFile);
        assert!(heap(&r).io.starts_with("cuFile"), "{name}");
    }

    // A corrupt block: its checksum fails in the kernels on both I/O paths
    // and it is read through COPY (the server's buffers hold it intact).
    let rel = query(&dsn, "SELECT pg_relation_filepath('lineorder')");
    let path = server
        .data_dir()
        .join(rel[0][0].as_deref().expect("relation path"));
    let mut bytes = std::fs::read(&path).expect("heap file");
    bytes[5 * 8192 + 7000] ^= 0x55;
    std::fs::write(&path, &bytes).expect("corrupt the file");
    for io in [HeapIo::CuFile, HeapIo::Pread] {
        let r = check_table_io(&dsn, "lineorder", &keys, Source::Heap, io);
        let h = heap(&r);
        assert_eq!(h.pages_fallback, 1, "{io:?}: {h:?}");
        assert_eq!(
            h.fallback_reasons.get("checksum failure"),
            Some(&1),
            "{io:?}: {h:?}"
        );
    }
    println!("RESULT cufile_checksums a corrupt page read through COPY with cuFile and with pread");
}

/// The decoders spread over every GPU of the machine (`--devices all`):
/// equal to the CPU export, each GPU holding batches. On a machine with
/// one GPU this is the same code with one.
#[test]
#[ignore = "needs a GPU"]
fn every_gpu_export_equals_cpu_export() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    gpupg_datagen::create_all_types(&config(&dsn), 3000).expect("all_types");
    gpupg_datagen::create_lineorder(&config(&dsn), "lineorder", 200_000, 4).expect("lineorder");
    exec(&dsn, "CHECKPOINT");
    exec(&dsn, "VACUUM (FREEZE) all_types, lineorder");
    let all = gpupg_export::DeviceChoice::All
        .resolve_here()
        .expect("the GPUs");
    for source in [Source::Copy, Source::Heap] {
        for (name, keys) in [
            ("all_types", &["id"][..]),
            ("lineorder", &["lo_orderkey", "lo_linenumber"][..]),
        ] {
            let r = check_table_on(&dsn, name, keys, (source, HeapIo::Auto), &all);
            assert_eq!(r.resident.map(|x| x.devices), Some(all.clone()));
        }
    }
    println!("RESULT every_gpu {} GPU(s) {all:?}", all.len());
}

/// `stream_to_device` yields device batches holding exactly the CPU
/// export's rows (COPY and heap), with its schema up front and a report at
/// the end; dropping one after its first batch returns.
#[test]
#[ignore = "needs a GPU"]
fn device_stream_equals_cpu_export() {
    let server = LocalServer::start().expect("server");
    let dsn = server.dsn();
    gpupg_datagen::create_lineorder(&config(&dsn), "lineorder", 100_000, 4).expect("lineorder");
    exec(&dsn, "CHECKPOINT");
    exec(&dsn, "VACUUM (FREEZE) lineorder");
    let keys = ["lo_orderkey", "lo_linenumber"];
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, out) = file(dir.path(), "cpu.arrow");
    let req = request(&dsn, table("lineorder"), out, Format::Arrow);
    export(&req, &NoProgress).expect("CPU export");
    let cpu = sorted_by(&read_back(&path), &keys);
    for source in [Source::Copy, Source::Heap] {
        let mut req = request(
            &dsn,
            table("lineorder"),
            gpupg_export::Output::Device,
            Format::Arrow,
        );
        req.engine = Engine::Gpu;
        req.source = source;
        let mut s = gpupg_export::stream_to_device(req, NoProgress).expect("device stream");
        assert_eq!(s.schema(), cpu.schema());
        let mut host = Vec::new();
        for b in &mut s {
            host.push(b.expect("device batch").to_host().expect("copy back"));
        }
        let report = s.report().expect("report at the end");
        assert_eq!(report.source, source_name(source));
        let gpu = sorted_by(&host, &keys);
        for (i, field) in cpu.schema().fields().iter().enumerate() {
            assert_eq!(
                cpu.column(i).to_data(),
                gpu.column(i).to_data(),
                "column {}",
                field.name()
            );
        }
        println!(
            "RESULT device_stream_{} {} rows",
            source_name(source),
            report.rows
        );
    }
    let mut req = request(
        &dsn,
        table("lineorder"),
        gpupg_export::Output::Device,
        Format::Arrow,
    );
    req.engine = Engine::Gpu;
    let mut s = gpupg_export::stream_to_device(req, NoProgress).expect("device stream");
    s.next().expect("a first batch").expect("batch");
    let t = std::time::Instant::now();
    drop(s);
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}
