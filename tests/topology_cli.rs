//! `gpupgparser info`'s topology section, run as a user runs it: on this
//! machine's /sys (which may have no GPU and no NVMe drive: a note, never
//! an error), and on a fake sysfs tree with NVMe drives.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use gpupg_topology::fake::FakeSysfs;
use gpupg_topology::DevNum;

mod common;
use common::{bin, ok};

fn has_nvme(sys: &Path) -> bool {
    std::fs::read_dir(sys.join("block"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("nvme"))
        })
        .unwrap_or(false)
}

#[test]
fn info_shows_this_machines_topology() {
    let out = ok(&bin().arg("info").output().expect("runs"));
    assert!(out.contains("PCIe topology (/sys"), "{out}");
    assert!(out.contains("GPU selection (optimal):"), "{out}");
    if !has_nvme(Path::new("/sys")) {
        assert!(out.contains("\n  no NVMe drives\n"), "{out}");
    }
    if out.starts_with("GPU: none usable") {
        assert!(
            out.contains("\n  no GPUs (none usable by CUDA: see the GPU line above)\n"),
            "{out}"
        );
    }

    // The data directory of this checkout, under each policy.
    for policy in ["optimal", "numa", "system"] {
        let out = ok(&bin()
            .args(["info", "--gpu-selection", policy, "--data-dir"])
            .arg(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("runs"));
        assert!(out.contains(&format!("GPU selection ({policy}):")), "{out}");
        assert!(
            out.contains(&format!("  {} --> ", env!("CARGO_MANIFEST_DIR"))),
            "{out}"
        );
    }

    let out = ok(&bin().args(["info", "--json"]).output().expect("runs"));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["topology"]["sysfs_root"], "/sys");
    assert_eq!(json["topology"]["policy"], "optimal");
    assert!(json["topology"]["gpus"].is_array());
}

#[test]
fn info_on_a_fake_tree_with_nvme_drives() {
    let sys = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    let tablespace = tempfile::tempdir().expect("tempdir");
    let f = FakeSysfs::new(sys.path()).expect("fake");
    f.numa_online("0").unwrap();
    f.nvme(
        "pci0000:00/0000:00:01.0/0000:01:00.0",
        0,
        "nvme0",
        "Fake SSD",
        &[("nvme0n1", "259:0")],
    )
    .unwrap();
    // Whatever holds the temporary directories here plays nvme0n1p1.
    let dev = DevNum::from_st_dev(std::fs::metadata(data.path()).unwrap().dev());
    f.partition("nvme0n1", "nvme0n1p1", &dev.to_string(), 1)
        .unwrap();
    std::fs::create_dir(data.path().join("base")).unwrap();
    std::fs::create_dir(data.path().join("pg_tblspc")).unwrap();
    std::os::unix::fs::symlink(tablespace.path(), data.path().join("pg_tblspc/16400")).unwrap();

    let out = ok(&bin()
        .arg("info")
        .arg("--sysfs-root")
        .arg(sys.path())
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .expect("runs"));
    assert!(
        out.contains("   - [0000:00:01.0]\n      - [0000:01:00.0] nvme0 (Fake SSD) nvme0n1 --> "),
        "{out}"
    );
    assert!(!out.contains("no NVMe drives"), "{out}");
    // No GPU here (or the real GPUs are not in the fake tree): no GPU-Direct.
    assert!(
        out.contains(&format!(
            "  {} with 1 tablespace --> no GPU-Direct: ",
            data.path().display()
        )),
        "{out}"
    );
    assert!(
        out.contains("on nvme0n1p1 (partition of nvme0n1) (NVMe nvme0 at 0000:01:00.0, Fake SSD)"),
        "{out}"
    );

    let spec = format!("{}=gpu0", data.path().display());
    let out = ok(&bin()
        .args(["info", "--json", "--gpu-selection", "numa"])
        .arg("--sysfs-root")
        .arg(sys.path())
        .arg("--data-dir")
        .arg(data.path())
        .arg("--manual-optimal-gpus")
        .arg(&spec)
        .output()
        .expect("runs"));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let t = &json["topology"];
    assert_eq!(t["policy"], "numa");
    assert_eq!(t["nvme"][0]["name"], "nvme0n1");
    assert_eq!(t["nvme"][0]["pci"]["address"], "0000:01:00.0");
    let sel = &t["selections"][0];
    assert_eq!(sel["parts"].as_array().unwrap().len(), 2);
    let base = &sel["parts"][0];
    assert_eq!(base["manual"], spec.as_str());
    assert_eq!(base["storage"]["type"], "nvme");
    assert_eq!(base["storage"]["partition"], "nvme0n1p1");
    // The tablespace is not under the manual path: the policy decides.
    assert!(sel["parts"][1]["manual"].is_null());
}

#[test]
fn bad_options_fail_with_one_line_saying_where() {
    let o = bin()
        .args(["info", "--manual-optimal-gpus", "nvme3=gpu2,,md0=gpu1"])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(
            "error: invalid value 'nvme3=gpu2,,md0=gpu1' for '--manual-optimal-gpus <SPEC>'"
        ) && first.contains("empty entry")
            && first.contains("at character 12"),
        "{err}"
    );
    let o = bin()
        .args(["info", "--manual-optimal-gpus", "nvme3=gpu2:gpuX"])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("expected a GPU as gpuN or N, found \"gpuX\" at character 12"),
        "{err}"
    );
    // The same options, parsed the same way, on every command that reads
    // heap files.
    for command in [
        &["info"][..],
        &[
            "export",
            "--table",
            "t",
            "--output",
            "/nonexistent/t.parquet",
        ],
        &["bench", "--rows", "10"],
        &["store", "load", "--table", "t"],
    ] {
        let o = bin()
            .args(command)
            .args(["--gpu-selection", "nearest"])
            .output()
            .expect("runs");
        assert_eq!(o.status.code(), Some(2), "{command:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("expected optimal, numa or system"),
            "{command:?}: {err}"
        );
        let o = bin()
            .args(command)
            .args(["--manual-optimal-gpus", "nvme3=gpu2:gpuX"])
            .output()
            .expect("runs");
        assert_eq!(o.status.code(), Some(2), "{command:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("found \"gpuX\""), "{command:?}: {err}");
    }
}
