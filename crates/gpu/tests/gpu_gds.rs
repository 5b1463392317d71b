//! GPUDirect Storage on a GPU machine (`j_gds_read`): run with
//! `--ignored --nocapture --test-threads=1` (gpu/run-tests.sh does). Prints
//! `RESULT gds_<place>_<variant>` lines that the script collects.

use std::time::Instant;

fn result(name: &str, value: impl std::fmt::Display) {
    println!("RESULT {name} {value}");
}

/// Set (to the data file's path) in the child processes `j_gds_read`
/// starts with another cuFile configuration.
const GDS_CHILD_ENV: &str = "GPUPG_GDS_CHILD";
const GDS_FILE_BYTES: usize = 64 << 20;

/// The test file's bytes: little-endian u64 words that encode their own
/// offset, so a read from the wrong offset never matches.
fn gds_pattern(offset: u64, len: usize) -> Vec<u8> {
    assert!(offset.is_multiple_of(8) && len.is_multiple_of(8));
    (0..len as u64 / 8)
        .flat_map(|w| {
            let word = (offset / 8 + w).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5A5A_0123_4567_89AB;
            word.to_le_bytes()
        })
        .collect()
}

/// "fstype device (mount point)" of the file system holding `dir`.
fn gds_fs_of(dir: &std::path::Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && dir.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} {} ({})", f[2], f[0], f[1])))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, s)| s)
        .unwrap_or_else(|| "unknown file system".into())
}

/// Registers `path` with cuFile in this process's configuration; when that
/// works, reads it at several offsets into device memory and compares with
/// the pattern, and measures throughput. Returns a one-line summary, or the
/// failure reason (whose form is asserted).
fn gds_attempt(path: &std::path::Path, label: &str) -> Result<String, String> {
    use gpupg_gpu::io::gds::cufile_error_name;
    use gpupg_gpu::{gds_open, GdsDriver, GdsError, GdsFile};
    let driver = match GdsDriver::open(0) {
        Ok(d) => d,
        Err(e) => {
            let t = e.to_string();
            assert!(
                t.starts_with("CUDA: ")
                    || t.contains("libcufile")
                    || t.starts_with("cuFileDriverOpen: CU_FILE_"),
                "{label}: driver error does not name its step: {t}"
            );
            println!("{label}: driver: {t}");
            return Err(t);
        }
    };
    println!("{label}: {}", driver.describe());
    let f = match GdsFile::open(&driver, path) {
        Ok(f) => f,
        Err(e) => {
            let t = e.to_string();
            match &e {
                GdsError::CuFile { code, .. } => {
                    let want = format!(
                        "cuFileHandleRegister on {}: {} ({code})",
                        path.display(),
                        cufile_error_name(*code)
                    );
                    assert!(t.starts_with(&want), "{label}: {t} (expected {want}...)");
                }
                GdsError::Io { .. } => assert!(
                    t.starts_with(&format!("open({}, O_DIRECT): ", path.display())),
                    "{label}: {t}"
                ),
                other => panic!("{label}: unexpected registration error {other:?}"),
            }
            // The one-line reason the heap path prints is the same text.
            let why = gds_open(0, path, true)
                .expect_err("gds_open registered what GdsFile::open did not");
            assert_eq!(why, t);
            assert!(!why.contains('\n'));
            if driver.mode() == gpupg_gpu::GdsMode::Compat {
                let why = gds_open(0, path, false).unwrap_err();
                assert!(
                    why.contains("compatibility mode only") || why.contains("POSIX"),
                    "{why}"
                );
                println!("{label}: gds_open without compatibility mode: {why}");
            }
            println!("{label}: registration failed: {t}");
            return Err(t);
        }
    };
    let mode = f.mode();
    println!("{label}: registered {} ({})", path.display(), mode.as_str());
    assert_eq!(f.len(), GDS_FILE_BYTES as u64);
    let size = GDS_FILE_BYTES;
    let mut buf = driver.alloc(size, true).expect("device buffer");
    println!(
        "{label}: cuFileBufRegister: {}",
        if buf.registered() {
            "ok".to_string()
        } else {
            buf.register_error().unwrap_or("not asked").to_string()
        }
    );
    let mut host = vec![0u8; size];
    let check = |buf: &gpupg_gpu::GdsBuffer,
                 host: &mut Vec<u8>,
                 dst: usize,
                 file_off: u64,
                 len: usize,
                 what: &str| {
        buf.copy_to_host(host).expect("copy back");
        assert!(
            host[dst..dst + len] == gds_pattern(file_off, len)[..],
            "{label}: {what}: bytes at device offset {dst} differ from the file at {file_off}"
        );
    };
    // The whole file, then ranges at other device offsets (the buffer
    // holds the pattern of the device offset before, so a read that wrote
    // nothing or the wrong bytes cannot match).
    assert_eq!(f.read(&mut buf, 0, size, 0).expect("whole file"), size);
    check(&buf, &mut host, 0, 0, size, "whole file");
    let cases: [(u64, usize, usize); 5] = [
        (4096, 8192, 0),
        (8192 * 37, 3 << 20, 12288),
        ((size - 8192) as u64, 8192, 0),
        (1 << 20, 16 << 20, 20 << 20),
        (40 << 20, 8192 * 3, (64 << 20) - 8192 * 3),
    ];
    for (file_off, len, dst) in cases {
        let n = f.read(&mut buf, dst, len, file_off).expect("read");
        assert_eq!(n, len, "{label}: read {len} at {file_off}");
        check(
            &buf,
            &mut host,
            dst,
            file_off,
            len,
            &format!("{len} bytes at {file_off}"),
        );
    }
    // Past the end: what is there; at the end: nothing.
    let n = f
        .read(&mut buf, 4096 * 100, 16384, (size - 8192) as u64)
        .expect("read past EOF");
    assert_eq!(n, 8192, "{label}: read across EOF");
    check(
        &buf,
        &mut host,
        4096 * 100,
        (size - 8192) as u64,
        8192,
        "across EOF",
    );
    assert_eq!(
        f.read(&mut buf, 0, 4096, size as u64).expect("read at EOF"),
        0
    );
    // Bad requests are errors, not cuFile calls.
    let e = f.read(&mut buf, 0, 4096, 100).unwrap_err().to_string();
    assert!(
        e.contains("file offset 100 is not a multiple of 4096"),
        "{e}"
    );
    let e = f
        .read(&mut buf, size - 4096, 8192, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not fit"), "{e}");
    // An unregistered buffer.
    let mut plain = driver.alloc(8 << 20, false).expect("device buffer");
    assert!(!plain.registered());
    assert_eq!(
        f.read(&mut plain, 0, 8 << 20, 4 << 20).expect("read"),
        8 << 20
    );
    let mut h2 = vec![0u8; 8 << 20];
    plain.copy_to_host(&mut h2).unwrap();
    assert!(
        h2 == gds_pattern(4 << 20, 8 << 20),
        "{label}: unregistered buffer"
    );

    // Throughput: O_DIRECT reads (not from the page cache).
    let rounds = 8;
    let t = Instant::now();
    for _ in 0..rounds {
        assert_eq!(f.read(&mut buf, 0, size, 0).unwrap(), size);
    }
    let one = (rounds * size) as f64 / t.elapsed().as_secs_f64() / 1e9;
    let threads = 4;
    let part = size / threads;
    let mut bufs: Vec<_> = (0..threads)
        .map(|_| driver.alloc(part, true).expect("buffer"))
        .collect();
    let t = Instant::now();
    std::thread::scope(|s| {
        for (k, b) in bufs.iter_mut().enumerate() {
            let f = &f;
            s.spawn(move || {
                for _ in 0..rounds {
                    let n = f
                        .read(b, 0, part, (k * part) as u64)
                        .expect("threaded read");
                    assert_eq!(n, part);
                }
            });
        }
    });
    let four = (rounds * size) as f64 / t.elapsed().as_secs_f64() / 1e9;
    for (k, b) in bufs.iter().enumerate() {
        let mut h = vec![0u8; part];
        b.copy_to_host(&mut h).unwrap();
        assert!(
            h == gds_pattern((k * part) as u64, part),
            "{label}: thread {k}"
        );
    }
    let summary = format!(
        "{}: {:.2} GB/s one thread, {:.2} GB/s {threads} threads (64 MiB file, O_DIRECT, buffer registered: {})",
        mode.as_str(),
        one,
        four,
        buf.registered()
    );
    println!("{label}: {summary}");
    Ok(summary)
}

/// The last `n` lines of cuFile's log in `dir`, indented.
fn gds_log_tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    log| {}\n", l.trim()))
        .collect()
}

/// GPUDirect Storage (`src/io/gds.rs`): a 64 MiB file of known bytes on the
/// machine's disk (the current directory, or `$GPUPG_GDS_DIR`), registered
/// with cuFile under the machine's configuration, and then — in child
/// processes, because cuFile reads its configuration when the driver
/// opens — under configurations that allow compatibility mode. Where a
/// registration works, reads at several aligned offsets and lengths into
/// device memory are compared with the file and timed; where it fails,
/// the error must name the step and the cuFile error. Either way the
/// outcome of each mode is printed.
#[test]
#[ignore = "needs a GPU"]
fn j_gds_read() {
    if let Some(p) = std::env::var_os(GDS_CHILD_ENV) {
        let label = std::env::var("GPUPG_GDS_LABEL").unwrap_or_else(|_| "child".into());
        match gds_attempt(std::path::Path::new(&p), &label) {
            Ok(s) => println!("GDS_OUTCOME ok {s}"),
            Err(t) => println!("GDS_OUTCOME failed {t}"),
        }
        return;
    }
    // The machine's disk (the current directory, or $GPUPG_GDS_DIR);
    // where nothing registers there, a tmpfs (/dev/shm) as well, so that
    // the read path is exercised wherever cuFile accepts some file.
    let base = std::env::var_os("GPUPG_GDS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().expect("current dir"));
    let mut places = vec![("disk", base)];
    let shm = std::path::PathBuf::from("/dev/shm");
    if shm.is_dir() {
        places.push(("shm", shm));
    }
    let mut outcomes: Vec<(String, Result<String, String>)> = Vec::new();
    for (place, base) in places {
        let before = outcomes.len();
        gds_round(place, &base, &mut outcomes);
        if outcomes[before..].iter().any(|(_, r)| r.is_ok()) {
            break;
        }
    }
    let show = |r: &Result<String, String>| match r {
        Ok(s) => format!("registered, {s}"),
        Err(e) => format!("failed: {e}"),
    };
    for (label, r) in &outcomes {
        result(&format!("gds_{}", label.replace('-', "_")), show(r));
    }
    // Something was checked either way: a registration whose reads matched
    // (asserted in gds_attempt, here or in a child), or failures whose
    // reasons name their step (asserted there too), reported above.
    assert!(outcomes.len() >= 2);
    if outcomes.iter().all(|(_, r)| r.is_err()) {
        assert!(outcomes
            .iter()
            .all(|(_, r)| !r.as_ref().unwrap_err().is_empty()));
        println!("no mode registers a file here");
    }
}

/// One location of `j_gds_read`: the machine's configuration in this
/// process, then configurations allowing compatibility mode in child
/// processes (cuFile reads its configuration when the driver opens) until
/// one registers. Appends (label, outcome) to `out`.
fn gds_round(place: &str, base: &std::path::Path, out: &mut Vec<(String, Result<String, String>)>) {
    let dir = tempfile::Builder::new()
        .prefix(".gpupg-gds-")
        .tempdir_in(base)
        .expect("temp dir");
    let path = dir.path().join("segment");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).expect("data file");
        for k in 0..GDS_FILE_BYTES / (8 << 20) {
            f.write_all(&gds_pattern((k * (8 << 20)) as u64, 8 << 20))
                .expect("write");
        }
        f.sync_all().expect("fsync");
    }
    println!(
        "{place}: data {} on {}",
        path.display(),
        gds_fs_of(dir.path())
    );

    // 1. The machine's own configuration.
    let cfg = gpupg_gpu::io::gds::cufile_config_path();
    println!(
        "{place}: native: configuration {} (allow_compat_mode: {:?})",
        cfg.display(),
        gpupg_gpu::io::gds::cufile_config_compat_mode()
    );
    let label = format!("{place}-native");
    let native = gds_attempt(&path, &label);
    if native.is_err() {
        print!("{}", gds_log_tail(std::path::Path::new("cufile.log"), 8));
    }
    // `gpupgparser info --check-gds` goes through the same code.
    let st = gpupg_gpu::check_gds(dir.path());
    for step in &st.steps {
        println!("{place}: check_gds: {step}");
    }
    assert_eq!(
        st.registered,
        native.is_ok(),
        "check_gds and GdsFile::open disagree"
    );
    if let Err(reason) = &native {
        if reason.starts_with("cuFileHandleRegister") {
            let cufile = reason.rsplit(": ").next().unwrap_or_default();
            assert!(
                st.steps
                    .iter()
                    .any(|s| s == &format!("cuFileHandleRegister: {cufile}")),
                "check_gds does not report {cufile}: {:?}",
                st.steps
            );
        }
    }
    let native_ok = native.is_ok();
    out.push((label, native));
    if native_ok {
        return;
    }

    // 2. Compatibility mode allowed: a minimal configuration, the
    // system's with the flag turned on, the minimal one with
    // CUFILE_FORCE_COMPAT_MODE, and with CUFILE_EXPERIMENTAL_FS.
    let log_dir = dir.path().join("log");
    std::fs::create_dir_all(&log_dir).unwrap();
    let minimal = format!(
        "{{\n  \"logging\": {{ \"dir\": \"{}\", \"level\": \"ERROR\" }},\n  \"properties\": {{ \"allow_compat_mode\": true }}\n}}\n",
        log_dir.display()
    );
    // (label, configuration, extra environment variable)
    let mut variants: Vec<(&str, String, Option<&str>)> = vec![("compat", minimal.clone(), None)];
    if let Ok(system) = std::fs::read_to_string("/etc/cufile.json") {
        let on = system
            .replace(
                "\"allow_compat_mode\": false",
                "\"allow_compat_mode\": true",
            )
            .replace(
                "\"allow_compat_mode\" : false",
                "\"allow_compat_mode\" : true",
            );
        variants.push(("compat-system-config", on, None));
    }
    variants.push((
        "compat-forced",
        minimal.clone(),
        Some("CUFILE_FORCE_COMPAT_MODE"),
    ));
    variants.push((
        "compat-experimental-fs",
        minimal,
        Some("CUFILE_EXPERIMENTAL_FS"),
    ));
    let exe = std::env::current_exe().expect("test executable");
    for (variant, json, env) in variants {
        let label = format!("{place}-{variant}");
        let cfg = dir.path().join(format!("{variant}.json"));
        std::fs::write(&cfg, json).unwrap();
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([
            "--ignored",
            "--nocapture",
            "--exact",
            "j_gds_read",
            "--test-threads",
            "1",
        ])
        .env(GDS_CHILD_ENV, &path)
        .env("GPUPG_GDS_LABEL", &label)
        .env("CUFILE_ENV_PATH_JSON", &cfg);
        if let Some(k) = env {
            cmd.env(k, "true");
        }
        let o = cmd.output().expect("run child");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        for l in text.lines().filter(|l| {
            !l.is_empty() && !l.starts_with("running ") && !l.starts_with("test result")
        }) {
            println!("  {label}| {l}");
        }
        assert!(
            o.status.success(),
            "{label}: the child failed ({}): reads through cuFile did not match the file",
            o.status
        );
        let outcome = text
            .lines()
            .find_map(|l| l.split_once("GDS_OUTCOME ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("{label}: the child printed no outcome"));
        let r = match outcome.strip_prefix("ok ") {
            Some(s) => Ok(s.to_string()),
            None => Err(outcome.trim_start_matches("failed ").to_string()),
        };
        if r.is_err() {
            for entry in std::fs::read_dir(&log_dir).into_iter().flatten().flatten() {
                print!("{}", gds_log_tail(&entry.path(), 4));
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let done = r.is_ok();
        out.push((label, r));
        if done {
            break;
        }
    }
}
