//! The large-object bridges on the CPU: a host buffer as the region, a
//! throwaway PostgreSQL server as the other side. Round trips, replacing
//! an object while keeping its owner and privileges, creating one with a
//! given OID, zero-filled exports, and every refusal leaving both sides as
//! they were.

use gpupg_gpu::GpuError;
use gpupg_localpg::LocalServer;
use gpupg_source::large_object as lo;
use gpupg_source::{ConnectConfig, Connection};
use gpupg_store::large_object::{
    export_region, import_region, ByteRegion, HostRegion, LoError, DEFAULT_CHUNK_BYTES,
};

fn connect(dsn: &str) -> Connection {
    Connection::connect(&ConnectConfig::resolve(Some(dsn)).expect("dsn")).expect("connect")
}

fn scalar(conn: &mut Connection, sql: &str) -> Option<String> {
    let rows = conn.simple_query(sql).expect("query");
    rows[0][0].clone()
}

/// Bytes that differ at every offset (an off-by-one anywhere shows).
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The object's bytes as the server has them, read back as hex text (not
/// through the binary path under test).
fn contents(conn: &mut Connection, oid: u32) -> String {
    scalar(conn, &format!("SELECT encode(lo_get({oid}), 'hex')")).expect("not NULL")
}

fn object_count(conn: &mut Connection) -> String {
    scalar(conn, "SELECT count(*) FROM pg_largeobject_metadata").expect("count")
}

#[test]
fn new_objects_round_trip_in_chunks() {
    let pg = LocalServer::start().expect("server");
    let mut conn = connect(&pg.dsn());
    let data = pattern(100_003, 1);
    let region = HostRegion::new(data.clone());
    // (offset, length, chunk): odd sizes, many chunks, a chunk larger than
    // the span, one-byte chunks, the whole region, nothing.
    for (offset, length, chunk) in [
        (7u64, 99_991u64, 4096usize),
        (0, 9_999, 1000),
        (100_000, 3, 1),
        (5, 3000, DEFAULT_CHUNK_BYTES),
        (0, 100_003, 65_536),
        (50, 0, 10),
        (100_003, 0, 10),
    ] {
        let out = import_region(&mut conn, &region, offset, length, None, chunk)
            .unwrap_or_else(|e| panic!("import {offset}+{length}/{chunk}: {e}"));
        assert!(out.created);
        assert_eq!(out.bytes, length);
        let span = &data[offset as usize..(offset + length) as usize];
        assert_eq!(
            contents(&mut conn, out.oid),
            hex(span),
            "{offset}+{length}/{chunk}"
        );
        assert_eq!(lo::size(&mut conn, out.oid).unwrap(), length);
        // Back into a fresh buffer, in other chunks, at another offset.
        let mut back = HostRegion::new(vec![0xee; length as usize + 11]);
        let n = export_region(&mut conn, out.oid, &mut back, 11, length, chunk / 2 + 1)
            .expect("export");
        assert_eq!(n, length);
        assert_eq!(&back.as_slice()[11..], span);
        assert_eq!(&back.as_slice()[..11], &[0xee; 11]);
    }
    // Every byte value survives binary transport unchanged.
    let all: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    let out = import_region(&mut conn, &HostRegion::new(all.clone()), 0, 1024, None, 100)
        .expect("import");
    assert_eq!(lo::get(&mut conn, out.oid, 0, 2000).unwrap(), all);
    assert_eq!(contents(&mut conn, out.oid), hex(&all));
    // The session is idle afterwards: no transaction left open (in one,
    // now() would be its start, not this statement's).
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(
        scalar(&mut conn, "SELECT now() = statement_timestamp()").as_deref(),
        Some("t")
    );
}

#[test]
fn replacing_keeps_owner_and_privileges() {
    let pg = LocalServer::start().expect("server");
    pg.psql(
        "CREATE ROLE alice; CREATE ROLE bob LOGIN; CREATE ROLE carol LOGIN;\n\
         SET ROLE alice;\n\
         SELECT lo_from_bytea(31337, decode(repeat('ab', 50000), 'hex'));\n\
         RESET ROLE;\n\
         GRANT SELECT, UPDATE ON LARGE OBJECT 31337 TO bob;\n\
         GRANT SELECT ON LARGE OBJECT 31337 TO carol;",
    )
    .expect("setup");
    let mut admin = connect(&pg.dsn());
    let meta = "SELECT lomowner::regrole || ' ' || lomacl::text FROM pg_largeobject_metadata WHERE oid = 31337";
    let before = scalar(&mut admin, meta).expect("metadata");
    assert!(before.starts_with("alice "), "{before}");
    assert!(before.contains("bob=rw/alice"), "{before}");

    // bob may update: the contents are replaced by fewer bytes, the
    // object keeps its OID, owner and privileges.
    let mut bob = connect(&pg.dsn().replace("user=postgres", "user=bob"));
    let data = pattern(30_001, 2);
    let region = HostRegion::new(data.clone());
    let out = import_region(&mut bob, &region, 1, 30_000, Some(31337), 7000).expect("replace");
    assert_eq!((out.oid, out.bytes, out.created), (31337, 30_000, false));
    assert_eq!(scalar(&mut admin, meta).expect("metadata"), before);
    assert_eq!(contents(&mut admin, 31337), hex(&data[1..]));
    assert_eq!(lo::size(&mut admin, 31337).unwrap(), 30_000);
    // Replaced by nothing: an empty object, still there.
    import_region(&mut bob, &region, 0, 0, Some(31337), 7000).expect("empty");
    assert_eq!(lo::size(&mut admin, 31337).unwrap(), 0);
    assert_eq!(scalar(&mut admin, meta).expect("metadata"), before);
    import_region(&mut bob, &region, 0, 1000, Some(31337), 7000).expect("again");

    // carol may only read: the server's refusal comes through, and the
    // object is as it was.
    let mut carol = connect(&pg.dsn().replace("user=postgres", "user=carol"));
    let e = import_region(&mut carol, &region, 0, 500, Some(31337), 7000).unwrap_err();
    assert_eq!(e.sqlstate(), Some("42501"), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("replacing the contents of large object 31337: ")
            && msg.contains("permission denied for large object 31337"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(contents(&mut admin, 31337), hex(&data[..1000]));
    // ... but may export it; a role without SELECT may not.
    let mut back = HostRegion::new(vec![0; 1000]);
    assert_eq!(
        export_region(&mut carol, 31337, &mut back, 0, 1000, 300).unwrap(),
        1000
    );
    assert_eq!(back.as_slice(), &data[..1000]);
    pg.psql("CREATE ROLE dave LOGIN").expect("dave");
    let mut dave = connect(&pg.dsn().replace("user=postgres", "user=dave"));
    let mut untouched = HostRegion::new(vec![9; 1000]);
    let e = export_region(&mut dave, 31337, &mut untouched, 0, 1000, 300).unwrap_err();
    assert_eq!(e.sqlstate(), Some("42501"), "{e}");
    assert!(e.to_string().contains("permission denied"), "{e}");
    assert_eq!(untouched.as_slice(), &[9; 1000]);
    // The failed sessions are usable again (their transactions ended).
    assert_eq!(scalar(&mut carol, "SELECT 1").as_deref(), Some("1"));
    assert_eq!(scalar(&mut dave, "SELECT 1").as_deref(), Some("1"));
}

#[test]
fn a_missing_loid_is_created_with_that_oid() {
    let pg = LocalServer::start().expect("server");
    let mut conn = connect(&pg.dsn());
    assert!(!lo::exists(&mut conn, 424_242).unwrap());
    let data = pattern(5000, 3);
    let out = import_region(
        &mut conn,
        &HostRegion::new(data.clone()),
        100,
        4321,
        Some(424_242),
        1024,
    )
    .expect("import");
    assert_eq!((out.oid, out.created), (424_242, true));
    assert!(lo::exists(&mut conn, 424_242).unwrap());
    assert_eq!(contents(&mut conn, 424_242), hex(&data[100..4421]));
    let e = import_region(&mut conn, &HostRegion::new(data), 0, 1, Some(0), 1024).unwrap_err();
    assert!(matches!(e, LoError::InvalidOid), "{e}");
}

#[test]
fn exports_zero_fill_and_refuse_what_does_not_fit() {
    let pg = LocalServer::start().expect("server");
    let mut conn = connect(&pg.dsn());
    let data = pattern(1000, 4);
    let oid = import_region(
        &mut conn,
        &HostRegion::new(data.clone()),
        0,
        1000,
        None,
        333,
    )
    .expect("import")
    .oid;

    // Shorter than the span: the rest of the span is zeros, outside it
    // nothing changes.
    let mut region = HostRegion::new(vec![0xee; 5000]);
    let n = export_region(&mut conn, oid, &mut region, 100, 3000, 256).expect("export");
    assert_eq!(n, 1000);
    let r = region.as_slice();
    assert_eq!(&r[..100], &[0xee; 100]);
    assert_eq!(&r[100..1100], &data[..]);
    assert!(r[1100..3100].iter().all(|&b| b == 0));
    assert_eq!(&r[3100..], &[0xee; 1900]);
    // Exactly as long as the span: no fill.
    let mut exact = HostRegion::new(vec![1; 1000]);
    export_region(&mut conn, oid, &mut exact, 0, 1000, 7).expect("export");
    assert_eq!(exact.as_slice(), &data[..]);
    // An empty object zero-fills the whole span.
    let empty = lo::create(&mut conn, 0).unwrap();
    let mut zeros = HostRegion::new(vec![5; 20]);
    assert_eq!(
        export_region(&mut conn, empty, &mut zeros, 2, 17, 4).unwrap(),
        0
    );
    assert_eq!(zeros.as_slice()[..2], [5, 5]);
    assert!(zeros.as_slice()[2..19].iter().all(|&b| b == 0));
    assert_eq!(zeros.as_slice()[19], 5);

    // Longer than the span: refused, the region untouched.
    let mut small = HostRegion::new(vec![0xab; 2000]);
    let e = export_region(&mut conn, oid, &mut small, 10, 999, 256).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "large object {oid} is 1000 bytes, longer than the 999 bytes to export it into (nothing was written)"
        )
    );
    assert_eq!(small.as_slice(), &[0xab; 2000]);

    // A missing object: a clear error, nothing written.
    let e = export_region(&mut conn, 987_654, &mut small, 0, 2000, 256).unwrap_err();
    assert_eq!(e.to_string(), "large object 987654 does not exist");
    assert_eq!(small.as_slice(), &[0xab; 2000]);
    let e = export_region(&mut conn, 0, &mut small, 0, 2000, 256).unwrap_err();
    assert!(matches!(e, LoError::InvalidOid), "{e}");
    // The connection is idle and usable.
    assert_eq!(
        export_region(&mut conn, oid, &mut small, 0, 2000, 256).unwrap(),
        1000
    );
}

#[test]
fn out_of_range_spans_fail_before_any_write() {
    let pg = LocalServer::start().expect("server");
    let mut conn = connect(&pg.dsn());
    let data = pattern(4096, 5);
    let region = HostRegion::new(data.clone());
    let oid = import_region(&mut conn, &region, 0, 4096, Some(777), 1000)
        .expect("import")
        .oid;
    let objects = object_count(&mut conn);
    let other = HostRegion::new(pattern(4096, 6));
    for (offset, length) in [(1, 4096), (4096, 1), (5000, 0), (u64::MAX, 1), (0, 1 << 40)] {
        let e = import_region(&mut conn, &other, offset, length, Some(777), 1000).unwrap_err();
        match &e {
            LoError::OutOfRange { size, .. } => assert_eq!(*size, 4096),
            LoError::Overflow { .. } => assert_eq!(offset, u64::MAX),
            other => panic!("{offset}+{length}: {other}"),
        }
        // A new object is not made either.
        assert!(import_region(&mut conn, &other, offset, length, None, 1000).is_err());
        assert!(import_region(&mut conn, &other, offset, length, Some(778), 1000).is_err());
        let mut target = HostRegion::new(vec![3; 4096]);
        let e = export_region(&mut conn, oid, &mut target, offset, length, 1000).unwrap_err();
        assert!(
            matches!(e, LoError::OutOfRange { .. } | LoError::Overflow { .. }),
            "{e}"
        );
        assert_eq!(target.as_slice(), &[3; 4096]);
    }
    let e = import_region(&mut conn, &other, 4000, 200, Some(777), 1000).unwrap_err();
    assert_eq!(
        e.to_string(),
        "bytes 4000..4200 (offset 4000, length 200) are outside the host buffer of 4096 bytes"
    );
    assert_eq!(contents(&mut conn, 777), hex(&data));
    assert_eq!(object_count(&mut conn), objects);
    assert!(!lo::exists(&mut conn, 778).unwrap());
}

/// A region whose reads fail from some offset on (a device that went away
/// half-way, say).
struct FailingRegion {
    inner: HostRegion,
    fail_at: u64,
}

impl ByteRegion for FailingRegion {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn describe(&self) -> String {
        "the failing buffer".into()
    }
    fn read(&self, offset: u64, dst: &mut [u8]) -> Result<(), GpuError> {
        if offset + dst.len() as u64 > self.fail_at {
            return Err(GpuError::Cuda {
                call: "cuMemcpyDtoH",
                code: "CUDA_ERROR_ILLEGAL_ADDRESS (test)".into(),
                device: 0,
            });
        }
        self.inner.read(offset, dst)
    }
    fn write(&mut self, offset: u64, src: &[u8]) -> Result<(), GpuError> {
        self.inner.write(offset, src)
    }
}

#[test]
fn a_failure_half_way_changes_nothing() {
    let pg = LocalServer::start().expect("server");
    let mut conn = connect(&pg.dsn());
    let data = pattern(10_000, 7);
    let oid = import_region(
        &mut conn,
        &HostRegion::new(data.clone()),
        0,
        10_000,
        None,
        4096,
    )
    .expect("import")
    .oid;
    let objects = object_count(&mut conn);
    let failing = FailingRegion {
        inner: HostRegion::new(pattern(20_000, 8)),
        fail_at: 15_000,
    };
    // Replacing: the truncate and the first chunks are rolled back.
    let e = import_region(&mut conn, &failing, 0, 20_000, Some(oid), 4096).unwrap_err();
    assert_eq!(
        e.to_string(),
        "reading bytes 12288..16384 of the failing buffer: CUDA call cuMemcpyDtoH failed on device 0: CUDA_ERROR_ILLEGAL_ADDRESS (test)"
    );
    assert_eq!(contents(&mut conn, oid), hex(&data));
    // New objects, with or without an OID: none is left behind.
    assert!(import_region(&mut conn, &failing, 0, 20_000, None, 4096).is_err());
    assert!(import_region(&mut conn, &failing, 0, 20_000, Some(55_555), 4096).is_err());
    assert_eq!(object_count(&mut conn), objects);
    assert!(!lo::exists(&mut conn, 55_555).unwrap());
    // The same connection goes on working.
    let ok = import_region(&mut conn, &failing, 0, 15_000, Some(55_555), 4096).expect("import");
    assert!(ok.created);
    assert_eq!(lo::size(&mut conn, 55_555).unwrap(), 15_000);
}
