//! `gpupgparser lo-import` and `lo-export` as a user runs them, on any
//! machine: bad arguments are one-line errors before anything is touched,
//! and without a GPU the commands say so (exit status 1, no panic). The
//! round trips through real GPU memory are in crates/store/tests/gpu_lo.rs.

use std::process::Output;

mod common;
use common::{bin, one_line_error};

/// A server that is never reached: every case here fails before
/// connecting.
const NOWHERE: &str = "host=127.0.0.1 port=1 user=nobody dbname=nothing connect_timeout=2";

fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .env_remove("GPUPGPARSER_PG_DSN")
        .env_remove("DATABASE_URL")
        .output()
        .expect("runs")
}

/// A usage error from the argument parser: exit status 2, no panic.
fn usage_error(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "stderr: {stderr}");
    assert!(o.stdout.is_empty());
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn zeros() -> String {
    "0".repeat(128)
}

fn has_gpu() -> bool {
    gpupg_gpu::devices().is_ok_and(|d| !d.is_empty())
}

#[test]
fn malformed_handles_are_one_line_errors() {
    for cmd in [&["lo-import"][..], &["lo-export", "--loid", "16385"][..]] {
        let base = [cmd, &["--dsn", NOWHERE, "--length", "10"][..]].concat();
        let e = one_line_error(&run(&[&base[..], &["--ipc-handle", "xyz"]].concat()));
        assert_eq!(
            e,
            "--ipc-handle: invalid CUDA IPC handle: expected 128 hex digits, got 3 characters"
        );
        let mut bad = zeros();
        bad.replace_range(40..41, "z");
        let e = one_line_error(&run(&[&base[..], &["--ipc-handle", &bad]].concat()));
        assert_eq!(
            e,
            "--ipc-handle: invalid CUDA IPC handle: not a hex digit at position 40"
        );
        let long = zeros() + "00";
        let e = one_line_error(&run(&[&base[..], &["--ipc-handle", &long]].concat()));
        assert!(e.contains("expected 128 hex digits, got 130"), "{e}");
    }
}

#[test]
fn out_of_range_arguments_are_refused() {
    let h = zeros();
    // offset + length past 2^64: refused before the GPU is looked at.
    let max = u64::MAX.to_string();
    for cmd in [&["lo-import"][..], &["lo-export", "--loid", "16385"][..]] {
        let args = [
            cmd,
            &[
                "--dsn",
                NOWHERE,
                "--ipc-handle",
                &h,
                "--offset",
                &max,
                "--length",
                "2",
            ][..],
        ]
        .concat();
        let e = one_line_error(&run(&args));
        assert_eq!(
            e,
            format!("offset {max} plus length 2 is past the largest possible address")
        );
    }
    // Negative or non-numeric numbers, OID 0 and OIDs past 32 bits, and
    // missing required arguments: usage errors naming the argument.
    let cases = [
        (
            "lo-import --length=-1",
            "invalid value '-1' for '--length <LENGTH>'",
        ),
        (
            "lo-import --length 1 --offset x",
            "invalid value 'x' for '--offset <OFFSET>'",
        ),
        (
            "lo-import --length 1 --offset=-5",
            "invalid value '-5' for '--offset <OFFSET>'",
        ),
        (
            "lo-import --length 1 --loid 0",
            "invalid value '0' for '--loid <OID>'",
        ),
        (
            "lo-import --length 1 --loid 4294967296",
            "invalid value '4294967296' for '--loid <OID>'",
        ),
        (
            "lo-import --length 1 --device=-1",
            "invalid value '-1' for '--device <DEVICE>'",
        ),
        (
            "lo-export --loid=-3 --length 1",
            "invalid value '-3' for '--loid <OID>'",
        ),
        (
            "lo-import",
            "required arguments were not provided:\n  --length <LENGTH>",
        ),
        (
            "lo-export --length 1",
            "required arguments were not provided:\n  --loid <OID>",
        ),
    ];
    for (args, expected) in cases {
        let mut argv: Vec<&str> = args.split(' ').collect();
        argv.extend(["--ipc-handle", &h]);
        let e = usage_error(&run(&argv));
        assert!(e.contains(expected), "{args}: {e}");
    }
    let e = usage_error(&run(&["lo-export", "--loid", "5", "--length", "1"]));
    assert!(
        e.contains("required arguments were not provided:\n  --ipc-handle <HEX>"),
        "{e}"
    );
}

#[test]
fn without_a_gpu_the_commands_say_so() {
    let h = zeros();
    for cmd in [&["lo-import"][..], &["lo-export", "--loid", "16385"][..]] {
        for device in ["0", "7"] {
            let args = [
                cmd,
                &[
                    "--dsn",
                    NOWHERE,
                    "--device",
                    device,
                    "--ipc-handle",
                    &h,
                    "--offset",
                    "0",
                    "--length",
                    "16",
                ][..],
            ]
            .concat();
            let e = one_line_error(&run(&args));
            assert!(
                e.starts_with(&format!(
                    "mapping the --ipc-handle allocation on GPU {device}: "
                )),
                "{e}"
            );
            if has_gpu() {
                // A handle nobody exported, or a device that is not
                // there: the driver's refusal, still one line.
                assert!(
                    e.contains("invalid CUDA IPC handle") || e.contains("no CUDA device"),
                    "{e}"
                );
            } else {
                assert!(
                    e.contains("no CUDA driver found") || e.contains("no CUDA device"),
                    "{e}"
                );
            }
        }
    }
}

#[test]
fn help_lists_the_commands() {
    let o = run(&["--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("lo-import") && out.contains("lo-export"),
        "{out}"
    );
    let o = run(&["lo-export", "--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for arg in [
        "--loid",
        "--device",
        "--ipc-handle",
        "--offset",
        "--length",
        "--dsn",
    ] {
        assert!(out.contains(arg), "{arg}: {out}");
    }
}
