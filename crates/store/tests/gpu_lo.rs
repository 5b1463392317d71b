//! On the GPU machine (run by `gpu/run-tests.sh`): the large-object
//! bridges through real device memory. This process allocates a plain
//! device buffer, exports it through CUDA IPC and fills it; a second
//! process (this test binary again, running `child_lo`: the driver does not
//! open a handle in the process that exported it) maps the handle and runs
//! the library's lo-import or lo-export against the carried PostgreSQL
//! server. This process then checks the large object's bytes, the buffer's
//! bytes and the zero fill, and the errors: a garbage handle, this
//! process's own handle, a device that does not exist, spans outside the
//! allocation, an object longer than the region, a missing object.

use std::process::Command;
use std::time::Instant;

use gpupg_gpu::ipc::ExportableBuffer;
use gpupg_gpu::{IpcHandle, MappedRegion};
use gpupg_localpg::LocalServer;
use gpupg_source::large_object as lo;
use gpupg_source::{ConnectConfig, Connection};
use gpupg_store::large_object::{
    export_region, import_region, open_device_region, HostRegion, DEFAULT_CHUNK_BYTES,
};

/// The child's job: fields separated by 0x1f (the DSN has spaces).
const CHILD_JOB: &str = "GPUPG_LO_CHILD_JOB";
const MIB: u64 = 1 << 20;
const REGION: u64 = 256 * MIB;

/// What this process is doing, for the watchdog's message.
static STAGE: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn stage(what: &str) {
    eprintln!("STAGE {} {what}", std::process::id());
    *STAGE.lock().unwrap_or_else(|p| p.into_inner()) = what.to_string();
}

/// Ends the process, saying where it was, if it still runs after
/// `seconds`: a hang fails the run with a reason instead of eating the
/// machine's time.
fn watchdog(seconds: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(seconds));
        let at = STAGE.lock().unwrap_or_else(|p| p.into_inner()).clone();
        eprintln!("STUCK {} after {seconds} s at: {at}", std::process::id());
        std::process::exit(3);
    });
}

/// The byte at absolute position `pos` of pattern `seed`: different at
/// every offset, so a shifted copy shows.
fn pattern_byte(pos: u64, seed: u64) -> u8 {
    (pos.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8
}

fn pattern(start: u64, len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| pattern_byte(start + i, seed))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn connect(dsn: &str) -> Connection {
    Connection::connect(&ConnectConfig::resolve(Some(dsn)).expect("dsn")).expect("connect")
}

/// Fills `len` bytes of the buffer from `start` with pattern `seed`
/// (`None`: with `byte`).
fn fill(buf: &ExportableBuffer, start: u64, len: u64, seed: Option<u64>, byte: u8) {
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(8 * MIB) as usize;
        let part = match seed {
            Some(s) => pattern(start + pos, n, s),
            None => vec![byte; n],
        };
        buf.write(start + pos, &part).expect("write the buffer");
        pos += n as u64;
    }
}

/// Checks `len` bytes of the buffer from `start` against `expected(pos)`
/// (absolute positions), 8 MiB at a time.
fn check_buffer(
    buf: &ExportableBuffer,
    start: u64,
    len: u64,
    what: &str,
    expected: impl Fn(u64) -> u8,
) {
    let mut part = vec![0u8; (8 * MIB) as usize];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(8 * MIB) as usize;
        buf.read(start + pos, &mut part[..n])
            .expect("read the buffer");
        if let Some(i) = (0..n).find(|&i| part[i] != expected(start + pos + i as u64)) {
            let at = start + pos + i as u64;
            panic!(
                "{what}: byte {at} of the buffer is {:#04x}, expected {:#04x}",
                part[i],
                expected(at)
            );
        }
        pos += n as u64;
    }
}

/// Checks large object `oid` against `expected(pos)`: its size through
/// lo_lseek64, every byte through binary lo_get, and a few spans as hex
/// text (another path through the server).
fn check_object(
    conn: &mut Connection,
    oid: u32,
    size: u64,
    what: &str,
    expected: impl Fn(u64) -> u8,
) {
    assert_eq!(lo::size(conn, oid).expect("size"), size, "{what}: size");
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(8 * MIB) as usize;
        let got = lo::get(conn, oid, pos as i64, n as i32).expect("lo_get");
        assert_eq!(got.len(), n, "{what}: lo_get at {pos}");
        if let Some(i) = (0..n).find(|&i| got[i] != expected(pos + i as u64)) {
            panic!(
                "{what}: byte {} of large object {oid} differs",
                pos + i as u64
            );
        }
        pos += n as u64;
    }
    for at in [0, size / 3, size.saturating_sub(64)] {
        let n = 64.min(size - at.min(size));
        if n == 0 {
            continue;
        }
        let text = conn
            .simple_query(&format!("SELECT encode(lo_get({oid}, {at}, {n}), 'hex')"))
            .expect("hex")[0][0]
            .clone()
            .expect("value");
        let want: Vec<u8> = (at..at + n).map(&expected).collect();
        assert_eq!(text, hex(&want), "{what}: bytes {at}..{}", at + n);
    }
}

/// Runs one lo-import or lo-export in a second process: `Ok((value,
/// seconds))` where value is the OID or the bytes written and seconds the
/// library call's, or `Err(message)`.
#[allow(clippy::too_many_arguments)]
fn in_child(
    op: &str,
    device: usize,
    handle: &str,
    offset: u64,
    length: u64,
    loid: Option<u32>,
    dsn: &str,
) -> Result<(u64, f64), String> {
    stage(&format!("child {op} {offset}+{length} loid {loid:?}"));
    let job = [
        op.to_string(),
        device.to_string(),
        handle.to_string(),
        offset.to_string(),
        length.to_string(),
        loid.map_or("-".to_string(), |o| o.to_string()),
        dsn.to_string(),
    ]
    .join("\x1f");
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "child_lo",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_JOB, job)
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest prints "test child_lo ... " without a newline first.
    for line in stdout.lines() {
        if let Some(at) = line.find("CHILD OK ") {
            let mut f = line[at + 9..].split(' ');
            let value = f.next().and_then(|v| v.parse().ok()).expect("value");
            let secs = f.next().and_then(|v| v.parse().ok()).expect("seconds");
            return Ok((value, secs));
        }
        if let Some(at) = line.find("CHILD ERR ") {
            return Err(line[at + 10..].to_string());
        }
    }
    panic!("no CHILD line in: {stdout}");
}

/// The second process: one lo-import or lo-export as the job says. Does
/// nothing unless started by the parent.
#[test]
#[ignore = "needs a GPU; started by gpu_lo_round_trips as a second process"]
fn child_lo() {
    let Ok(job) = std::env::var(CHILD_JOB) else {
        return;
    };
    watchdog(120);
    let f: Vec<&str> = job.split('\x1f').collect();
    let [op, device, handle, offset, length, loid, dsn] = f[..] else {
        panic!("bad job {job:?}");
    };
    let device: usize = device.parse().expect("device");
    let offset: u64 = offset.parse().expect("offset");
    let length: u64 = length.parse().expect("length");
    let loid: Option<u32> = (loid != "-").then(|| loid.parse().expect("loid"));
    let run = || -> Result<(u64, f64), String> {
        let mut region = open_device_region(device, handle).map_err(|e| e.to_string())?;
        let mut conn = connect(dsn);
        let t = Instant::now();
        let value = match op {
            "import" => import_region(
                &mut conn,
                &region,
                offset,
                length,
                loid,
                DEFAULT_CHUNK_BYTES,
            )
            .map(|o| u64::from(o.oid)),
            "export" => export_region(
                &mut conn,
                loid.expect("export needs an OID"),
                &mut region,
                offset,
                length,
                DEFAULT_CHUNK_BYTES,
            ),
            other => panic!("unknown op {other}"),
        }
        .map_err(|e| e.to_string())?;
        Ok((value, t.elapsed().as_secs_f64()))
    };
    match run() {
        Ok((value, secs)) => println!("CHILD OK {value} {secs}"),
        Err(e) => println!("CHILD ERR {e}"),
    }
}

#[test]
#[ignore = "needs a GPU"]
fn gpu_lo_round_trips() {
    watchdog(280);
    stage("allocating and filling 256 MiB");
    let buf = ExportableBuffer::alloc(0, REGION as usize).expect("exportable buffer");
    assert_eq!(buf.allocation().size as u64, REGION);
    fill(&buf, 0, REGION, Some(1), 0);
    let h = buf.handle().to_hex();
    stage("starting PostgreSQL");
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    let mut conn = connect(&dsn);
    let mb = REGION as f64 / 1e6;

    // Import the whole region into a new object.
    let (oid, import_s) = in_child("import", 0, &h, 0, REGION, None, &dsn).expect("import");
    let oid = u32::try_from(oid).expect("an OID");
    stage("checking the imported object");
    check_object(&mut conn, oid, REGION, "import of 256 MiB", |p| {
        pattern_byte(p, 1)
    });
    println!(
        "RESULT lo_roundtrip_mb_s {:.1} lo-import of a 256 MiB device region into a new large object ({import_s:.2} s; MB = 10^6 bytes)",
        mb / import_s
    );

    // Export it back over a cleared buffer.
    stage("clearing the buffer");
    fill(&buf, 0, REGION, None, 0xcc);
    let (n, export_s) = in_child("export", 0, &h, 0, REGION, Some(oid), &dsn).expect("export");
    assert_eq!(n, REGION);
    stage("checking the exported buffer");
    check_buffer(&buf, 0, REGION, "export of 256 MiB", |p| pattern_byte(p, 1));
    println!(
        "RESULT lo_roundtrip_mb_s {:.1} lo-export of a 256 MiB large object into a device region ({export_s:.2} s)",
        mb / export_s
    );

    // A shorter object into the middle: its bytes, then zeros to the end
    // of the span, and nothing outside the span touched.
    stage("shorter object");
    let short_len = 3 * MIB + 5;
    let short = pattern(0, short_len as usize, 3);
    let short_oid = import_region(
        &mut conn,
        &HostRegion::new(short.clone()),
        0,
        short_len,
        None,
        DEFAULT_CHUNK_BYTES,
    )
    .expect("host import")
    .oid;
    let (start, span) = (1000, 8 * MIB);
    let (n, _) = in_child("export", 0, &h, start, span, Some(short_oid), &dsn).expect("export");
    assert_eq!(n, short_len);
    check_buffer(&buf, 0, start, "before the span", |p| pattern_byte(p, 1));
    check_buffer(&buf, start, short_len, "the short object", |p| {
        short[(p - start) as usize]
    });
    check_buffer(
        &buf,
        start + short_len,
        span - short_len,
        "the zero fill",
        |_| 0,
    );
    check_buffer(&buf, start + span, MIB, "after the span", |p| {
        pattern_byte(p, 1)
    });
    println!(
        "RESULT lo_export_short {short_len} bytes written at offset {start}, {} zero-filled, the rest untouched",
        span - short_len
    );

    // Replace the big object's contents with a part of the region: same
    // OID, fewer bytes.
    stage("replace");
    let (part, part_len) = (100 * MIB + 12_345, MIB + 3);
    let (replaced, _) =
        in_child("import", 0, &h, part, part_len, Some(oid), &dsn).expect("replace");
    assert_eq!(replaced, u64::from(oid));
    check_object(&mut conn, oid, part_len, "replaced object", |p| {
        pattern_byte(part + p, 1)
    });
    // A new object with the OID asked for (from a part the exports above
    // left as the pattern).
    let fresh = 200 * MIB + 5;
    let (created, _) =
        in_child("import", 0, &h, fresh, 4099, Some(900_001), &dsn).expect("create with OID");
    assert_eq!(created, 900_001);
    check_object(&mut conn, 900_001, 4099, "object 900001", |p| {
        pattern_byte(fresh + p, 1)
    });

    // Refusals, each a clear message, nothing changed.
    stage("errors");
    let e = in_child("export", 0, &h, 0, part_len - 1, Some(oid), &dsn).unwrap_err();
    assert_eq!(
        e,
        format!(
            "large object {oid} is {part_len} bytes, longer than the {} bytes to export it into (nothing was written)",
            part_len - 1
        )
    );
    check_buffer(&buf, 0, start, "after a refused export", |p| {
        pattern_byte(p, 1)
    });
    let e = in_child("import", 0, &h, REGION - 10, 11, Some(oid), &dsn).unwrap_err();
    assert_eq!(
        e,
        format!(
            "bytes {}..{} (offset {}, length 11) are outside the allocation mapped on GPU 0 of {REGION} bytes",
            REGION - 10,
            REGION + 1,
            REGION - 10
        )
    );
    assert_eq!(lo::size(&mut conn, oid).unwrap(), part_len);
    let e = in_child("export", 0, &h, 0, 16, Some(987_654), &dsn).unwrap_err();
    assert_eq!(e, "large object 987654 does not exist");
    let garbage = IpcHandle([0x5a; 64]).to_hex();
    let e = in_child("import", 0, &garbage, 0, 16, None, &dsn).unwrap_err();
    assert!(e.starts_with("invalid CUDA IPC handle: "), "{e}");
    println!("RESULT lo_garbage_handle {e}");
    let e = MappedRegion::open(0, &buf.handle()).unwrap_err();
    assert!(e.to_string().starts_with("invalid CUDA IPC handle"), "{e}");
    println!("RESULT lo_own_handle {e}");
    let e = open_device_region(99, &h).unwrap_err();
    assert!(e.to_string().starts_with("no CUDA device"), "{e}");
    println!("RESULT lo_bad_device {e}");
    let e = in_child("import", 0, "12ab", 0, 16, None, &dsn).unwrap_err();
    assert_eq!(
        e,
        "invalid CUDA IPC handle: expected 128 hex digits, got 4 characters"
    );
}
