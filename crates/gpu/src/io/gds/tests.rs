//! Unit tests of the GPUDirect Storage path that need no GPU: alignment,
//! error texts, configuration parsing, and errors without cuFile.

use super::ffi::{compat_mode_in, config_bool_in};
use super::*;

#[test]
fn alignment_is_checked() {
    assert!(check_alignment(0, 0, 0).is_ok());
    assert!(check_alignment(8192 * 5, 8192 * 16, 4096).is_ok());
    let e = check_alignment(100, 4096, 0).unwrap_err().to_string();
    assert_eq!(
        e,
        "cuFile read: file offset 100 is not a multiple of 4096 (O_DIRECT alignment)"
    );
    let e = check_alignment(4096, 4097, 0).unwrap_err().to_string();
    assert!(e.contains("length 4097"), "{e}");
    let e = check_alignment(4096, 4096, 512).unwrap_err().to_string();
    assert!(e.contains("device offset 512"), "{e}");
}

#[test]
fn errors_name_step_and_code() {
    let e = GdsError::cufile(
        "cuFileHandleRegister on /data/16384",
        CuFileError {
            err: 5008,
            cu_err: 0,
        },
    );
    assert_eq!(
        e.to_string(),
        "cuFileHandleRegister on /data/16384: CU_FILE_IO_NOT_SUPPORTED (5008)"
    );
    assert_eq!(e.cufile_code(), Some(5008));
    let e = GdsError::cufile(
        "cuFileDriverOpen",
        CuFileError {
            err: 5011,
            cu_err: 201,
        },
    );
    assert_eq!(
        e.to_string(),
        "cuFileDriverOpen: CU_FILE_CUDA_DRIVER_ERROR (5011), CUDA error 201"
    );
    let e = GdsError::Io {
        step: "open(/x, O_DIRECT)".into(),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
        hint: Some("the file system does not support direct I/O"),
    };
    let t = e.to_string();
    assert!(
        t.starts_with("open(/x, O_DIRECT): ")
            && t.ends_with("(the file system does not support direct I/O)"),
        "{t}"
    );
    assert_eq!(cufile_error_name(5020), "CU_FILE_DIO_NOT_SET");
    assert_eq!(cufile_error_name(5025), "CU_FILE_PERMISSION_DENIED");
    assert_eq!(cufile_error_name(42), "unknown cuFile error");
    assert_eq!(describe_cufile(5030, 0), "CU_FILE_INTERNAL_ERROR (5030)");
}

#[test]
fn read_results() {
    let step = || "cuFileRead of 4096 bytes at offset 0 of /f".to_string();
    assert_eq!(read_result(4096, 4096, step).unwrap(), 4096);
    assert_eq!(read_result(0, 4096, step).unwrap(), 0);
    let e = read_result(-5008, 4096, step).unwrap_err();
    assert_eq!(e.cufile_code(), Some(5008));
    assert_eq!(
        e.to_string(),
        "cuFileRead of 4096 bytes at offset 0 of /f: CU_FILE_IO_NOT_SUPPORTED (5008)"
    );
    assert!(matches!(
        read_result(-1, 4096, step).unwrap_err(),
        GdsError::Io { .. }
    ));
    assert!(matches!(
        read_result(8192, 4096, step).unwrap_err(),
        GdsError::InvalidArgument(_)
    ));
    // No overflow on the most negative value.
    assert!(read_result(isize::MIN, 4096, step).is_err());
}

#[test]
fn config_compat_mode() {
    let text = r#"{
        // "allow_compat_mode": false,
        "properties": {
            "max_direct_io_size_kb" : 16384,
            "allow_compat_mode":	true,
        }
    }"#;
    assert_eq!(compat_mode_in(text), Some(true));
    assert_eq!(
        compat_mode_in("\"allow_compat_mode\" : false,"),
        Some(false)
    );
    assert_eq!(compat_mode_in("{}"), None);
    let p2p = "{\n  // \"use_pci_p2pdma\": false,\n  \"use_pci_p2pdma\" : true\n}";
    assert_eq!(config_bool_in(p2p, "use_pci_p2pdma"), Some(true));
    assert_eq!(config_bool_in(p2p, "allow_compat_mode"), None);
}

#[test]
fn properties_parse() {
    let mut raw = vec![0u8; 48];
    raw[0..4].copy_from_slice(&2u32.to_ne_bytes());
    raw[4..8].copy_from_slice(&17u32.to_ne_bytes());
    raw[16..24].copy_from_slice(&(16u64 << 20).to_ne_bytes());
    raw[24..28].copy_from_slice(&((1u32 << 4) | (1 << 11)).to_ne_bytes());
    raw[28..32].copy_from_slice(&(1u32 << 1).to_ne_bytes());
    let p = parse_properties(&raw).unwrap();
    assert_eq!(p.nvfs_version, Some((2, 17)));
    assert_eq!(p.supported, vec!["NVMe", "NVMe P2P"]);
    assert!(p.compat_allowed && !p.posix_only);
    assert_eq!(p.max_direct_io_size, 16 << 20);
    assert_eq!(GdsMode::of(Some(&p)), GdsMode::Unknown);
    let none = parse_properties(&[0u8; 48]).unwrap();
    assert_eq!(none.nvfs_version, None);
    assert!(none.supported.is_empty());
    assert_eq!(GdsMode::of(Some(&none)), GdsMode::Direct);
    let compat = GdsProperties {
        compat_allowed: true,
        ..none.clone()
    };
    assert_eq!(GdsMode::of(Some(&compat)), GdsMode::Compat);
    assert_eq!(GdsMode::of(None), GdsMode::Unknown);
    assert!(parse_properties(&[0u8; 20]).is_none());
    assert_eq!(status_flag_names(1 << 10), Vec::<&str>::new());
}

/// Without CUDA (CI), every entry point returns a typed error naming
/// the step; with a GPU, the same calls either work or say why not.
#[test]
fn no_cuda_no_panic() {
    match GdsDriver::open(0) {
        Ok(d) => eprintln!("cuFile here: {}", d.describe()),
        Err(e) => {
            let t = e.to_string();
            assert!(!t.is_empty() && !t.contains('\n'), "{t}");
            assert!(
                matches!(
                    e,
                    GdsError::Cuda(_)
                        | GdsError::NoLibrary(_)
                        | GdsError::MissingSymbol { .. }
                        | GdsError::CuFile { .. }
                ),
                "{e:?}"
            );
            if let GdsError::Cuda(g) = &e {
                assert!(t.starts_with("CUDA: "), "{t}");
                eprintln!("no CUDA here ({}): {t}", g.is_unavailable());
            }
            // Twice: failures are remembered, not retried into a panic.
            assert_eq!(GdsDriver::open(0).unwrap_err().to_string(), t);
            let why = gds_open(0, Path::new("/nonexistent/16384"), true).unwrap_err();
            assert_eq!(why, t);
        }
    }
}

/// Loading the library alone (no CUDA needed): found, or an error that
/// says where it was looked for.
#[test]
fn library_missing_is_an_error() {
    match api() {
        Ok(a) => eprintln!("libcufile here: {}", a.lib.path),
        Err(e) => {
            let t = e.to_string();
            assert!(t.contains("libcufile.so.0"), "{t}");
            assert!(t.contains("/usr/local/cuda"), "{t}");
            assert!(!t.contains('\n'));
        }
    }
}
