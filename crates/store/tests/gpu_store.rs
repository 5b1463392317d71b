//! On the GPU machine (run by `gpu/run-tests.sh`): the store with the GPU
//! backend. Tables are loaded into device memory, and a second process (this
//! test binary again, running `child_maps_columns`) maps every column through
//! the manifest's CUDA IPC handles; what it reads equals the CPU export. A
//! refresh while the child holds the old revision, the memory limit, and the
//! Python example (CuPy and PyTorch) are checked too.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use common::*;
use gpupg_gpu::{IpcHandle, MappedRegion};
use gpupg_localpg::LocalServer;
use gpupg_store::{Client, ErrorKind, GpuBackend, Manifest, Source};

const CHILD_SOCKET: &str = "GPUPG_STORE_CHILD_SOCKET";
const CHILD_NAME: &str = "GPUPG_STORE_CHILD_NAME";
const CHILD_OUT: &str = "GPUPG_STORE_CHILD_OUT";
const LO_KEYS: &[&str] = &["lo_orderkey", "lo_linenumber"];

/// What this process is doing, for the watchdog's message.
static STAGE: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn stage(what: &str) {
    eprintln!("STAGE {} {what}", std::process::id());
    note(what);
}

/// As [`stage`], without the log line (for steps repeated many times).
fn note(what: &str) {
    *STAGE.lock().unwrap_or_else(|p| p.into_inner()) = what.to_string();
}

/// Ends the process, saying where it was, if it is still running after
/// `seconds`: a hang (in the driver, say) fails the run with a reason
/// instead of eating the machine's time.
fn watchdog(seconds: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(seconds));
        let at = STAGE.lock().unwrap_or_else(|p| p.into_inner()).clone();
        eprintln!("STUCK {} after {seconds} s at: {at}", std::process::id());
        std::process::exit(3);
    });
}

/// Maps every allocation of `m` once and reads the batches through them.
fn map_and_read(
    m: &Manifest,
    regions: &mut HashMap<usize, MappedRegion>,
) -> Vec<arrow::array::RecordBatch> {
    for a in &m.allocations {
        if let std::collections::hash_map::Entry::Vacant(slot) = regions.entry(a.id) {
            stage(&format!(
                "opening allocation {} of {}",
                a.id,
                m.allocations.len()
            ));
            let handle = IpcHandle::from_hex(&a.ipc_handle).expect("handle parses");
            let region = MappedRegion::open(a.device, &handle).expect("handle opens");
            assert_eq!(region.len() as u64, a.size, "mapped size = manifest size");
            slot.insert(region);
        }
    }
    stage("reading the columns");
    m.read_batches(&mut |a, offset, dst| {
        regions
            .get(&a.id)
            .expect("mapped")
            .read(offset, dst)
            .map_err(Into::into)
    })
    .expect("columns read through the mappings")
}

fn write_arrow(path: &Path, batches: &[arrow::array::RecordBatch]) {
    let f = std::fs::File::create(path).expect("create");
    let mut w = arrow::ipc::writer::FileWriter::try_new(f, &batches[0].schema()).expect("writer");
    for b in batches {
        w.write(b).expect("write");
    }
    w.finish().expect("finish");
}

/// The second process: attaches to a table, maps its columns, writes what
/// it read to `$GPUPG_STORE_CHILD_OUT.1.arrow`; on "again" from the parent
/// reads the same mappings again into `.2.arrow`, then releases. Does
/// nothing unless started by the parent; with an empty name it only tries
/// a handle nobody exported.
#[test]
#[ignore = "needs a GPU; started by the other tests as a second process"]
fn child_maps_columns() {
    let (Ok(socket), Ok(name), Ok(out)) = (
        std::env::var(CHILD_SOCKET),
        std::env::var(CHILD_NAME),
        std::env::var(CHILD_OUT),
    ) else {
        return;
    };
    watchdog(60);
    if name.is_empty() {
        // A handle no process exported: the driver's refusal as an error.
        stage("opening a garbage handle");
        let e = MappedRegion::open(0, &IpcHandle([0x5a; 64])).unwrap_err();
        println!("CHILD GARBAGE {e}");
        return;
    }
    let started = Instant::now();
    stage("connecting");
    let mut client = Client::connect(Path::new(&socket)).expect("connect");
    stage("attaching");
    let m = client.attach(&name).expect("attach");
    let mut regions = HashMap::new();
    let first = map_and_read(&m, &mut regions);
    let attach_map = started.elapsed();
    write_arrow(Path::new(&format!("{out}.1.arrow")), &first);
    // Past the end of a mapping: a clear error.
    let region = regions.values().next().expect("one region");
    let past = region
        .read(region.len() as u64 - 4, &mut [0u8; 8])
        .unwrap_err();
    println!(
        "CHILD ATTACHED {} {} {:.1} | {}",
        m.revision,
        m.allocations.len(),
        attach_map.as_secs_f64() * 1e3,
        past
    );
    std::io::stdout().flush().ok();
    let mut line = String::new();
    stage("waiting for the parent");
    std::io::stdin().read_line(&mut line).expect("parent says");
    if line.trim() == "again" {
        let second = map_and_read(&m, &mut regions);
        write_arrow(Path::new(&format!("{out}.2.arrow")), &second);
    }
    drop(regions);
    client.release(&name, m.revision).expect("release");
    println!("CHILD DONE");
}

/// A running child and where its output goes.
struct ChildProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    out: PathBuf,
}

impl ChildProcess {
    fn start(socket: &Path, name: &str, out: PathBuf) -> ChildProcess {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "child_maps_columns",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_SOCKET, socket)
            .env(CHILD_NAME, name)
            .env(CHILD_OUT, &out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("child starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        ChildProcess {
            child,
            stdin,
            stdout,
            out,
        }
    }

    /// What follows `prefix` in the child's next line holding it.
    fn expect(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("child output");
            assert!(n > 0, "child ended before {prefix}");
            // libtest prints "test child_maps_columns ... " without a
            // newline before the test's own output.
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().to_string();
            }
        }
    }

    fn say(&mut self, what: &str) {
        writeln!(self.stdin, "{what}").expect("tell child");
    }

    fn batches(&self, n: u32) -> Vec<arrow::array::RecordBatch> {
        read_arrow(Path::new(&format!("{}.{n}.arrow", self.out.display())))
    }

    fn finish(mut self) {
        self.expect("CHILD DONE");
        assert!(self.child.wait().expect("child exits").success());
    }
}

fn gpu_spec(dsn: &str, table: &str, name: &str, source: Source) -> gpupg_store::LoadSpec {
    let mut s = spec(dsn, table, name);
    s.source = source;
    s.chunk_mib = Some(4);
    s
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_store_maps_columns_in_another_process() {
    watchdog(240);
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    gpupg_datagen::create_lineorder(&config(&dsn), "lineorder", 200_000, 4).expect("lineorder");
    gpupg_datagen::create_all_types(&config(&dsn), 3000).expect("all_types");
    exec(&dsn, "CHECKPOINT");
    exec(&dsn, "VACUUM (FREEZE) lineorder, all_types");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = TestStore::start(Arc::new(GpuBackend::default()), None);
    let mut c = store.client();

    // Load: lineorder from its heap files, all_types through COPY.
    let t = Instant::now();
    let lo = c
        .load(gpu_spec(&dsn, "lineorder", "lo", Source::Heap))
        .expect("load lineorder");
    let lo_seconds = t.elapsed().as_secs_f64();
    assert_eq!(
        (lo.rows, lo.source.as_str(), lo.lsn_kind.as_str()),
        (200_000, "heap", "fence")
    );
    let ty = c
        .load(gpu_spec(&dsn, "all_types", "all_types", Source::Copy))
        .expect("load all_types");
    println!(
        "RESULT load lineorder 200000 rows from the heap files in {lo_seconds:.2} s ({:.1} MB on GPU {}); all_types {} rows via COPY",
        lo.device_bytes as f64 / 1e6,
        lo.device,
        ty.rows
    );
    let m = c.export("lo").expect("export");
    assert!(m.allocations.iter().all(|a| a.ipc_handle.len() == 128));

    // A second process maps every column; values equal the CPU export.
    stage("exporting lineorder on the CPU");
    let lo_before = cpu_export(&dsn, "lineorder");
    for (name, table, keys) in [
        ("all_types", "all_types", &["id"][..]),
        ("lo", "lineorder", LO_KEYS),
    ] {
        stage(&format!("starting the child for {name}"));
        let mut child = ChildProcess::start(&store.socket, name, dir.path().join(name));
        let attached = child.expect("CHILD ATTACHED");
        stage(&format!("comparing {name}"));
        let fields: Vec<&str> = attached.split(" | ").collect();
        assert!(
            fields[1].contains("outside the mapped region"),
            "{attached}"
        );
        let numbers: Vec<&str> = fields[0].split(' ').collect();
        let expected = if name == "lo" {
            lo_before.clone()
        } else {
            cpu_export(&dsn, table)
        };
        assert_same_rows(name, &expected, &child.batches(1), keys);
        println!(
            "RESULT {name} mapped from a second process: {} allocations, attach + map + read {} ms; equal to the CPU export",
            numbers[1], numbers[2]
        );
        if name == "all_types" {
            child.say("done");
            child.finish();
            continue;
        }
        // Refresh while the child holds revision 1.
        stage("refresh while attached");
        exec(
            &dsn,
            "UPDATE lineorder SET lo_quantity = lo_quantity + 1000 WHERE lo_orderkey % 5 = 0",
        );
        wait_for("lo to look stale", || {
            find(&c.list(true).unwrap(), "lo", true).unwrap().stale == Some(true)
        });
        let r = c.refresh("lo").expect("refresh");
        assert!(r.rebuilt);
        let list = c.list(false).unwrap();
        let old = find(&list, "lo", false).expect("revision 1 held");
        assert_eq!((old.revision, old.attached), (1, 1));
        child.say("again");
        let again = child.out.clone();
        child.finish();
        let again = read_arrow(Path::new(&format!("{}.2.arrow", again.display())));
        assert_same_rows("revision 1 after the refresh", &lo_before, &again, LO_KEYS);
        let list = c.list(false).unwrap();
        assert!(
            find(&list, "lo", false).is_none(),
            "revision 1 freed on release"
        );
        assert_eq!(list.used_bytes, r.info.device_bytes + ty.device_bytes);
        println!(
            "RESULT refresh while attached: revision 2 built ({:.2} s), revision 1 kept for the child and freed on release",
            r.info.load_seconds
        );
    }
    let unchanged = Instant::now();
    assert!(!c.refresh("lo").expect("refresh").rebuilt);
    println!(
        "RESULT refresh of an unchanged table: {:.1} ms",
        unchanged.elapsed().as_secs_f64() * 1e3
    );

    // The Python example, when CuPy and PyTorch are there.
    stage("python example");
    python_example(&dsn, &store.socket);
    stage("bad handles");

    // Bad handles, last (a driver that crashed on them would take nothing
    // else down): one nobody exported, in another process; one this process
    // exported, which the driver does not open here.
    let mut garbage = ChildProcess::start(Path::new(""), "", dir.path().join("garbage"));
    let e = garbage.expect("CHILD GARBAGE");
    assert!(e.starts_with("invalid CUDA IPC handle"), "{e}");
    assert!(garbage.child.wait().expect("exits").success());
    println!("RESULT garbage_handle {e}");
    let m = c.export("lo").expect("export");
    let own = IpcHandle::from_hex(&m.allocations[0].ipc_handle).unwrap();
    let e = MappedRegion::open(0, &own).unwrap_err();
    assert!(e.to_string().starts_with("invalid CUDA IPC handle"), "{e}");
    println!("RESULT own_handle {e}");

    c.shutdown().expect("shutdown");
    store.stop().expect("clean stop");
    assert_eq!(store.registry.used_bytes(), 0);
    assert!(!store.socket.exists());
}

/// Runs examples/store_protocol_cupy_torch.py against `lo`, with PostgreSQL's sums.
fn python_example(dsn: &str, socket: &Path) {
    // From the repository root (gpu/run-tests.sh runs there), else from
    // where this was built.
    let script = [
        PathBuf::from("examples/store_protocol_cupy_torch.py"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/store_protocol_cupy_torch.py"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_default();
    // Without the PostgreSQL bundle's libraries, which are not Python's.
    let has_modules = Command::new("python3")
        .env_remove("LD_LIBRARY_PATH")
        .args(["-c", "import cupy, torch"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_modules || !script.is_file() {
        println!("RESULT python_example skipped (no python3 with cupy and torch, or no script)");
        return;
    }
    let columns = [
        "lo_quantity",
        "lo_extendedprice",
        "lo_revenue",
        "lo_discount",
        "lo_orderdate",
    ];
    let select: Vec<String> = columns.iter().map(|c| format!("sum({c})::text")).collect();
    let rows = gpupg_source::Connection::connect(&config(dsn))
        .unwrap()
        .simple_query(&format!("SELECT {} FROM lineorder", select.join(", ")))
        .unwrap();
    let sums: serde_json::Map<String, serde_json::Value> = columns
        .iter()
        .zip(&rows[0])
        .map(|(c, v)| (c.to_string(), serde_json::Value::String(v.clone().unwrap())))
        .collect();
    let out = Command::new("python3")
        .env_remove("LD_LIBRARY_PATH")
        .arg(&script)
        .arg("--socket")
        .arg(socket)
        .args(["--name", "lo", "--sums"])
        .arg(serde_json::Value::Object(sums).to_string())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    assert!(out.status.success(), "python example failed: {stderr}");
    println!(
        "RESULT python_example CuPy and PyTorch sums equal PostgreSQL's for {} columns",
        columns.len()
    );
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_store_memory_limit() {
    watchdog(100);
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    gpupg_datagen::create_lineorder(&config(&dsn), "lineorder", 100_000, 4).expect("lineorder");
    let bytes = {
        let store = TestStore::start(Arc::new(GpuBackend::default()), None);
        let mut c = store.client();
        c.load(gpu_spec(&dsn, "lineorder", "probe", Source::Copy))
            .unwrap()
            .device_bytes
    };
    stage("loading under a limit");
    // Room for two copies and a quarter: columns take more than half of
    // the blocks they are carved from (each block doubles the last), so a
    // third copy cannot fit in the rest.
    let limit = bytes * 9 / 4;
    let store = TestStore::start(Arc::new(GpuBackend::default()), Some(limit));
    let mut c = store.client();
    c.load(gpu_spec(&dsn, "lineorder", "a", Source::Copy))
        .expect("a fits");
    c.load(gpu_spec(&dsn, "lineorder", "b", Source::Copy))
        .expect("b fits");
    let e = c
        .load(gpu_spec(&dsn, "lineorder", "c", Source::Copy))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MemoryLimit, "{e}");
    let list = c.list(true).unwrap();
    assert_eq!(list.revisions.len(), 2);
    let held: u64 = list.revisions.iter().map(|r| r.device_bytes).sum();
    assert_eq!(list.used_bytes, held);
    assert!(held <= limit);
    // A bad device is refused before anything is loaded.
    let mut bad = gpu_spec(&dsn, "lineorder", "d", Source::Copy);
    bad.device = 99;
    let e = c.load(bad).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadDevice, "{e}");
    // The tables that fit are whole: mapped from another process.
    let dir = tempfile::tempdir().unwrap();
    stage("mapping b from a child");
    let mut child = ChildProcess::start(&store.socket, "b", dir.path().join("b"));
    child.expect("CHILD ATTACHED");
    assert_same_rows(
        "b",
        &cpu_export(&dsn, "lineorder"),
        &child.batches(1),
        LO_KEYS,
    );
    child.say("done");
    child.finish();
    println!(
        "RESULT memory_limit {limit} bytes: 2 copies of {bytes} bytes loaded, the third refused, the others intact"
    );
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_store_accounting_matches_the_device() {
    watchdog(150);
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    gpupg_datagen::create_lineorder(&config(&dsn), "lineorder", 2_000_000, 4).expect("lineorder");
    let free = || gpupg_gpu::devices().expect("devices")[0].free_memory;
    let store = TestStore::start(Arc::new(GpuBackend::default()), None);
    let mut c = store.client();
    // A first load makes this process's context, kernels and pools, which
    // no table accounts for; the measured load comes after.
    stage("warming up");
    c.load(gpu_spec(&dsn, "lineorder", "warm", Source::Copy))
        .expect("warm-up load");
    c.drop_table("warm").expect("drop");
    let before = free();
    stage("loading");
    let info = c
        .load(gpu_spec(&dsn, "lineorder", "lo", Source::Copy))
        .expect("load");
    let after = free();
    let allocations = c.export("lo").expect("manifest").allocations.len() as u64;
    let list = c.list(false).expect("list");
    assert_eq!(list.used_bytes, info.device_bytes);
    let taken = before.saturating_sub(after);
    // The driver hands out memory in 2 MiB pages per allocation; pool memory
    // the decoders kept may differ by a few MiB between loads.
    let slack = (2 << 20) * allocations + (16 << 20);
    assert!(
        taken.abs_diff(info.device_bytes) <= slack,
        "listed {} bytes in {allocations} allocations, the device lost {taken}",
        info.device_bytes
    );
    stage("dropping");
    c.drop_table("lo").expect("drop");
    let back = free();
    assert!(
        back.abs_diff(before) <= 16 << 20,
        "free before {before}, after the drop {back}"
    );
    println!(
        "RESULT accounting listed {} bytes in {allocations} allocations; the device's free memory fell by {taken} and came back within {} bytes after the drop",
        info.device_bytes,
        back.abs_diff(before)
    );
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_store_refresh_reads_only_changed_pages() {
    watchdog(240);
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    gpupg_datagen::create_lineorder(&config(&dsn), "lineorder", 300_000, 4).expect("lineorder");
    exec(&dsn, "VACUUM (FREEZE) lineorder");
    let blocks = pages_where(&dsn, "lineorder", "true");
    let store = TestStore::start(Arc::new(GpuBackend::default()), None);
    let mut c = store.client();
    let dir = tempfile::tempdir().unwrap();
    let check = |what: &str, name: &str| {
        stage(&format!("mapping {what} from a child"));
        let mut child = ChildProcess::start(&store.socket, name, dir.path().join(what));
        child.expect("CHILD ATTACHED");
        assert_same_rows(
            what,
            &cpu_export(&dsn, "lineorder"),
            &child.batches(1),
            LO_KEYS,
        );
        child.say("done");
        child.finish();
    };
    stage("loading from the heap files");
    // Every GPU of the machine: the refresh gathers on each.
    let mut spec = gpu_spec(&dsn, "lineorder", "lo", Source::Heap);
    spec.devices = Some("all".into());
    let lo = c.load(spec).expect("load");
    assert_eq!(lo.source, "heap");
    let all = relation_blocks(&dsn, "lineorder");
    assert!((blocks..=all).contains(&lo.pages_read), "{lo:?}");
    let mut kept = Vec::new();
    // Pages read through COPY are not tracked: the next refresh reads them.
    let mut untracked = 0;
    for (generation, residue) in [(2, 0), (3, 7)] {
        // Every 25th page changed (its rows move to pages at the end), then
        // the next generation changes pages the last one carried over.
        exec(&dsn, "VACUUM (FREEZE) lineorder");
        let changed = pages_where(&dsn, "lineorder", &format!("{PAGE} % 25 = {residue}"));
        exec(
            &dsn,
            &format!(
                "UPDATE lineorder SET lo_quantity = lo_quantity + 1000 WHERE {PAGE} % 25 = {residue}"
            ),
        );
        stage("refreshing");
        let t = Instant::now();
        let r = refresh_changed(&mut c, "lo");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!((r.revision, r.rows), (generation, 300_000), "{r:?}");
        // All but those and the few with free space that new row versions
        // went to.
        assert!(
            r.pages_kept + changed + untracked + 4 >= blocks,
            "{changed} changed: {r:?}"
        );
        untracked = r.pages_copied;
        check(&format!("revision {generation}"), "lo");
        kept.push(format!(
            "revision {generation}: {} of {blocks} pages kept ({} rows), {} read, {} through COPY, {secs:.2} s",
            r.pages_kept, r.rows_kept, r.pages_read, r.pages_copied
        ));
    }
    println!("RESULT page_refresh {}", kept.join("; "));
}
