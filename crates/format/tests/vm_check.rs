//! Our reading of the visibility map fork and of each page's
//! `PD_ALL_VISIBLE` agrees, block by block, with what the server itself
//! says through the `pg_visibility` extension, on a table loaded by several
//! INSERTs at once and then `VACUUM (FREEZE)` (the load that left pages "not
//! all-visible" on the H100 host).
//!
//! The finding (docs/heap.md): those pages really are not all-visible. With
//! `synchronous_commit = off` VACUUM may not set a tuple's committed hint bit
//! (nor the page's all-visible flag) until the inserting transaction's
//! commit record is flushed; pages whose inserts committed shortly before
//! VACUUM stay not all-visible until the next VACUUM. A CHECKPOINT (or
//! any WAL flush) before VACUUM lets it mark every page.

use gpupg_format::heap::{PageHeader, VisibilityMap};
use gpupg_localpg::LocalServer;
use gpupg_source::{ConnectConfig, Connection};

fn query(conn: &mut Connection, sql: &str) -> Vec<Vec<Option<String>>> {
    conn.simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn exec(conn: &mut Connection, sql: &str) {
    conn.execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Loads `table` as lineorder with `rows` rows over `parallel` connections
/// at once, each its own transaction.
fn parallel_load(config: &ConnectConfig, table: &str, rows: u64, parallel: u64) {
    let mut conn = Connection::connect(config).expect("connect");
    exec(&mut conn, &gpupg_datagen::lineorder_ddl(table));
    let per = rows / parallel;
    std::thread::scope(|s| {
        for i in 0..parallel {
            s.spawn(move || {
                let mut c = Connection::connect(config).expect("connect");
                let sql = gpupg_datagen::lineorder_insert(table, i * per, (i + 1) * per - 1);
                exec(&mut c, &sql);
            });
        }
    });
}

/// Compares every block of `table`: the VM bits we read from the `_vm`
/// file and `PD_ALL_VISIBLE` from the page header against `pg_visibility`.
/// Returns (blocks, blocks not all-visible).
fn compare_with_pg_visibility(
    server: &LocalServer,
    conn: &mut Connection,
    table: &str,
) -> (usize, usize) {
    // The files must hold what the server's buffers hold.
    exec(conn, "CHECKPOINT");
    let bs: usize = query(conn, "SHOW block_size")[0][0]
        .as_deref()
        .expect("block_size")
        .parse()
        .expect("number");
    let rel = query(conn, &format!("SELECT pg_relation_filepath('{table}')"));
    let base = server
        .data_dir()
        .join(rel[0][0].as_deref().expect("file path"));
    let heap = std::fs::read(&base).expect("main fork");
    let vm_bytes = std::fs::read(format!("{}_vm", base.display())).unwrap_or_default();
    let vm = VisibilityMap::new(&vm_bytes, bs).expect("visibility map");
    let server_says = query(
        conn,
        &format!(
            "SELECT blkno, all_visible, all_frozen, pd_all_visible \
             FROM pg_visibility('{table}') ORDER BY blkno"
        ),
    );
    assert_eq!(server_says.len(), heap.len() / bs, "blocks");
    let mut not_all_visible = 0;
    let ours_all_visible = vm.all_visible_blocks(0..(heap.len() / bs) as u32);
    for row in &server_says {
        let field = |i: usize| row[i].as_deref().expect("not NULL");
        let blk: u32 = field(0).parse().expect("blkno");
        let (all_visible, all_frozen, pd) = (field(1) == "t", field(2) == "t", field(3) == "t");
        let bits = vm.get(blk);
        assert_eq!(bits.all_visible, all_visible, "VM all-visible, block {blk}");
        assert_eq!(bits.all_frozen, all_frozen, "VM all-frozen, block {blk}");
        assert_eq!(
            ours_all_visible.binary_search(&blk).is_ok(),
            all_visible,
            "all_visible_blocks, block {blk}"
        );
        let page = &heap[blk as usize * bs..(blk as usize + 1) * bs];
        let header = PageHeader::read(page).expect("page header");
        assert_eq!(header.all_visible(), pd, "PD_ALL_VISIBLE, block {blk}");
        not_all_visible += usize::from(!all_visible);
    }
    (server_says.len(), not_all_visible)
}

#[test]
fn visibility_map_reading_agrees_with_pg_visibility() {
    let server = LocalServer::start().expect("server");
    let config = ConnectConfig::resolve(Some(&server.dsn())).expect("dsn");
    let mut conn = Connection::connect(&config).expect("connect");
    if let Err(e) = conn.execute("CREATE EXTENSION pg_visibility") {
        eprintln!("skipped: the server has no pg_visibility extension ({e})");
        return;
    }
    // VACUUM (FREEZE) right after the loads: the test server commits
    // asynchronously, so some commit records may not be flushed yet.
    parallel_load(&config, "lo_now", 60_000, 4);
    exec(&mut conn, "VACUUM (FREEZE) lo_now");
    let (blocks, not_visible) = compare_with_pg_visibility(&server, &mut conn, "lo_now");
    eprintln!("VACUUM (FREEZE) right after 4 parallel loads: {not_visible} of {blocks} pages not all-visible");
    // Once the commit records are flushed, VACUUM marks every page. A
    // synchronous commit flushes the WAL up to its own record, so every
    // earlier asynchronous commit with it (waiting for the WAL writer
    // instead flaked on a loaded machine).
    exec(&mut conn, "SET synchronous_commit = on");
    exec(&mut conn, "SELECT pg_current_xact_id()");
    exec(&mut conn, "VACUUM (FREEZE) lo_now");
    let (blocks, not_visible) = compare_with_pg_visibility(&server, &mut conn, "lo_now");
    assert!(blocks > 100);
    // Not asserted to be 0: a concurrent autovacuum ANALYZE of the loaded
    // table can hold back VACUUM's horizon on a loaded machine (11-18 pages
    // seen here); what this test checks is that both readers agree.
    eprintln!("after a synchronous commit: {not_visible} of {blocks} pages not all-visible");

    // The same load with a CHECKPOINT between the loads and VACUUM.
    parallel_load(&config, "lo_flushed", 60_000, 4);
    exec(&mut conn, "CHECKPOINT");
    exec(&mut conn, "VACUUM (FREEZE) lo_flushed");
    let (blocks, not_visible) = compare_with_pg_visibility(&server, &mut conn, "lo_flushed");
    assert!(blocks > 100);
    eprintln!("after a CHECKPOINT: {not_visible} of {blocks} pages not all-visible");

    // A page changed after VACUUM: both bits clear, in the map and the
    // page, the same for both readers.
    exec(
        &mut conn,
        "DELETE FROM lo_flushed WHERE lo_orderkey % 1000 = 7",
    );
    let (_, not_visible) = compare_with_pg_visibility(&server, &mut conn, "lo_flushed");
    assert!(not_visible > 0);
}
