//! The store on the CPU: a server in this process with the host backend
//! (the same registry, protocol and manifests as the GPU backend's) against
//! a throwaway PostgreSQL server.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Instant;

use common::*;
use gpupg_localpg::LocalServer;
use gpupg_store::{ErrorKind, HostBackend, Manifest, Registry, Server, StoreError};

fn host_store(limit: Option<u64>) -> (Arc<HostBackend>, TestStore) {
    let host = Arc::new(HostBackend::new(1));
    let store = TestStore::start(host.clone(), limit);
    (host, store)
}

fn read_back(host: &HostBackend, m: &Manifest) -> Vec<arrow::array::RecordBatch> {
    m.read_batches(&mut |a, offset, dst| host.read(&a.ipc_handle, offset, dst))
        .expect("manifest reads back")
}

fn lineorder(dsn: &str, rows: u64) {
    gpupg_datagen::create_lineorder(&config(dsn), "lineorder", rows, 2).expect("lineorder");
}

const LO_KEYS: &[&str] = &["lo_orderkey", "lo_linenumber"];

#[test]
fn load_list_export_refresh_and_drop() {
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    lineorder(&dsn, 20_000);
    gpupg_datagen::create_all_types(&config(&dsn), 2000).expect("all_types");
    let (host, store) = host_store(None);
    let mut c = store.client();

    let lo = c
        .load(spec(&dsn, "lineorder", "lo"))
        .expect("load lineorder");
    assert_eq!((lo.name.as_str(), lo.revision, lo.rows), ("lo", 1, 20_000));
    assert_eq!(lo.backend, "host");
    assert_eq!(lo.source, "copy");
    assert_eq!(lo.lsn_kind, "wal_insert");
    assert!(lo.lsn.contains('/'), "{}", lo.lsn);
    let types = c
        .load(spec(&dsn, "all_types", "all_types"))
        .expect("load all_types");
    assert_eq!(types.rows, 2000);

    // list: both current, fresh, bytes that add up.
    let list = c.list(true).expect("list");
    assert_eq!(list.backend, "host");
    let l = find(&list, "lo", true).expect("lo listed");
    assert_eq!(l.stale, Some(false), "{l:?}");
    assert_eq!(l.attached, 0);
    assert_eq!(list.used_bytes, lo.device_bytes + types.device_bytes);
    assert_eq!(list.used_bytes, store.registry.used_bytes());

    // The manifest describes exactly the rows of the CPU export.
    for (name, table, keys) in [
        ("lo", "lineorder", LO_KEYS),
        ("all_types", "all_types", &["id"][..]),
    ] {
        let m = c.export(name).expect("export");
        assert_eq!(m.format, "gpupgparser-store-manifest");
        assert_eq!(m.version, 1);
        assert_eq!(m.table, table);
        assert!(m
            .columns
            .iter()
            .all(|col| col.chunks.len() == m.columns[0].chunks.len()));
        let bytes: u64 = m.allocations.iter().map(|a| a.size).sum();
        assert_eq!(bytes, m.device_bytes);
        for col in &m.columns {
            for chunk in &col.chunks {
                for b in &chunk.buffers {
                    let a = &m.allocations[b.allocation];
                    assert!(
                        b.offset + b.length <= a.size,
                        "{}: buffer inside its allocation",
                        col.name
                    );
                    assert!(b.offset % 64 == 0 || b.length == 0);
                }
            }
        }
        let back = read_back(&host, &m);
        assert_eq!(
            back.iter().map(|b| b.num_rows() as u64).sum::<u64>(),
            m.rows
        );
        assert_same_rows(name, &cpu_export(&dsn, table), &back, keys);
        // The manifest survives JSON, as a consumer gets it.
        let again: Manifest = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(again, m);
    }
    let m = c.export("lo").expect("export");
    assert!(m.columns[0].chunks.len() > 1, "several chunks");
    let nulls: usize = c
        .export("all_types")
        .unwrap()
        .columns
        .iter()
        .flat_map(|c| &c.chunks)
        .map(|c| c.null_count)
        .sum();
    assert!(nulls > 0, "all_types has NULLs, with validity buffers");

    // Unchanged: refresh keeps the revision and costs one query.
    let t = Instant::now();
    let r = c.refresh("lo").expect("refresh");
    assert!(!r.rebuilt);
    assert_eq!(r.info.revision, 1);
    assert!(t.elapsed().as_secs_f64() < 1.0, "{:?}", t.elapsed());

    // Changed: stale, then a new revision with the new rows.
    exec(
        &dsn,
        "UPDATE lineorder SET lo_quantity = lo_quantity + 1000 WHERE lo_orderkey % 10 = 0",
    );
    wait_for("lo to look stale", || {
        find(&c.list(true).unwrap(), "lo", true).unwrap().stale == Some(true)
    });
    let r = c.refresh("lo").expect("refresh");
    assert!(r.rebuilt);
    assert_eq!(r.info.revision, 2);
    assert_eq!(r.info.rows, 20_000);
    let back = read_back(&host, &c.export("lo").unwrap());
    assert_same_rows(
        "lo after update",
        &cpu_export(&dsn, "lineorder"),
        &back,
        LO_KEYS,
    );
    let list = c.list(true).unwrap();
    assert_eq!(find(&list, "lo", true).unwrap().stale, Some(false));
    assert!(
        find(&list, "lo", false).is_none(),
        "revision 1 freed: nobody held it"
    );
    assert_eq!(list.used_bytes, store.registry.used_bytes());
    // A rewrite (new relfilenode) is seen at once.
    exec(&dsn, "VACUUM FULL all_types");
    assert_eq!(
        find(&c.list(true).unwrap(), "all_types", true)
            .unwrap()
            .stale,
        Some(true)
    );

    // Drop frees the table's bytes.
    let d = c.drop_table("all_types").expect("drop");
    assert_eq!(d.held_bytes, 0);
    assert!(d.freed_bytes > 0);
    let list = c.list(false).unwrap();
    assert!(find(&list, "all_types", true).is_none());
    assert_eq!(
        list.used_bytes,
        find(&list, "lo", true).unwrap().device_bytes
    );
    assert_eq!(
        c.list(false).unwrap().revisions[0].stale,
        None,
        "not checked"
    );
}

#[test]
fn old_revisions_live_while_attached() {
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    lineorder(&dsn, 5000);
    let (host, store) = host_store(None);
    let mut admin = store.client();
    admin.load(spec(&dsn, "lineorder", "lo")).expect("load");
    let before = cpu_export(&dsn, "lineorder");

    // A holds revision 1 across a refresh.
    let mut a = store.client();
    let m1 = a.attach("lo").expect("attach");
    assert_eq!(m1.revision, 1);
    assert_eq!(
        find(&admin.list(false).unwrap(), "lo", true)
            .unwrap()
            .attached,
        1
    );
    exec(&dsn, "DELETE FROM lineorder WHERE lo_orderkey < 100");
    let r = admin.refresh("lo").expect("refresh");
    assert!(r.rebuilt);
    assert_eq!(r.info.revision, 2);
    let list = admin.list(false).unwrap();
    let old = find(&list, "lo", false).expect("revision 1 kept while attached");
    assert_eq!((old.revision, old.attached), (1, 1));
    let new = find(&list, "lo", true).unwrap();
    assert!(new.rows < 5000);
    assert_eq!(list.used_bytes, old.device_bytes + new.device_bytes);
    // Its bytes are still there and unchanged.
    assert_same_rows("held revision 1", &before, &read_back(&host, &m1), LO_KEYS);

    // Releasing: freed at once. Releasing again: an error.
    a.release("lo", 1).expect("release");
    let list = admin.list(false).unwrap();
    assert!(find(&list, "lo", false).is_none());
    assert_eq!(
        list.used_bytes,
        find(&list, "lo", true).unwrap().device_bytes
    );
    let e = a.release("lo", 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAttached);
    assert!(
        m1.read_batches(&mut |al, o, d| host.read(&al.ipc_handle, o, d))
            .is_err(),
        "a freed revision's handles no longer open"
    );

    // A disappears while holding revision 2: released with its connection.
    let m2 = a.attach("lo").expect("attach");
    assert_eq!(m2.revision, 2);
    exec(&dsn, "DELETE FROM lineorder WHERE lo_orderkey < 200");
    admin.refresh("lo").expect("refresh");
    assert_eq!(
        find(&admin.list(false).unwrap(), "lo", false)
            .unwrap()
            .revision,
        2
    );
    drop(a);
    wait_for("revision 2 to go with its client", || {
        find(&admin.list(false).unwrap(), "lo", false).is_none()
    });

    // Dropped while attached: held until released.
    let mut b = store.client();
    b.attach("lo").expect("attach");
    let d = admin.drop_table("lo").expect("drop");
    assert_eq!(d.freed_bytes, 0);
    assert!(d.held_bytes > 0);
    let list = admin.list(false).unwrap();
    assert_eq!(list.used_bytes, d.held_bytes);
    assert_eq!(find(&list, "lo", false).unwrap().attached, 1);
    b.release("lo", 3).expect("release");
    assert_eq!(admin.list(false).unwrap().used_bytes, 0);
    assert!(admin.list(false).unwrap().revisions.is_empty());
}

#[test]
fn memory_limit_refuses_and_leaves_the_rest_alone() {
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    lineorder(&dsn, 8000);
    exec(
        &dsn,
        "CREATE TABLE small AS SELECT * FROM lineorder LIMIT 1000",
    );
    // Sizes first, on a store without a limit.
    let (small_bytes, big_bytes) = {
        let (_, store) = host_store(None);
        let mut c = store.client();
        (
            c.load(spec(&dsn, "small", "s")).unwrap().device_bytes,
            c.load(spec(&dsn, "lineorder", "lo")).unwrap().device_bytes,
        )
    };
    // Room for the small table and half the big one (chunking, and so
    // padding, varies a little from load to load).
    let limit = small_bytes + big_bytes / 2;
    let (host, store) = host_store(Some(limit));
    let mut c = store.client();
    c.load(spec(&dsn, "small", "s")).expect("fits");
    let e = c.load(spec(&dsn, "lineorder", "lo")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MemoryLimit, "{e}");
    assert!(
        e.to_string().contains(&format!("of the limit of {limit}")),
        "{e}"
    );
    // Refused while it was being built, not after: it stopped short of
    // the whole table.
    let needed: u64 = e
        .to_string()
        .split("needs at least ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {e}"));
    assert!(needed < big_bytes, "{needed} of {big_bytes}: {e}");
    // Nothing changed: the small table is whole and the name is free.
    let list = c.list(true).unwrap();
    assert_eq!(list.revisions.len(), 1);
    assert_eq!(list.used_bytes, list.revisions[0].device_bytes);
    assert_eq!(list.memory_limit, Some(limit));
    assert!(list.loading.is_empty());
    let back = read_back(&host, &c.export("s").unwrap());
    assert_same_rows("small", &cpu_export(&dsn, "small"), &back, LO_KEYS);
    // A refresh needs room for both revisions: refused, the old one kept.
    exec(&dsn, "CREATE TABLE small2 AS SELECT * FROM small");
    exec(&dsn, "INSERT INTO small SELECT * FROM lineorder");
    wait_for("s to look stale", || {
        find(&c.list(true).unwrap(), "s", true).unwrap().stale == Some(true)
    });
    let e = c.refresh("s").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MemoryLimit, "{e}");
    let s = find(&c.list(true).unwrap(), "s", true).unwrap().clone();
    assert_eq!((s.revision, s.stale), (1, Some(true)));
    // Room again after a drop.
    c.drop_table("s").unwrap();
    assert_eq!(c.list(false).unwrap().used_bytes, 0);
    c.load(spec(&dsn, "small2", "s2")).expect("fits now");
}

#[test]
fn errors_are_typed_and_the_server_keeps_serving() {
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    exec(
        &dsn,
        "CREATE TABLE t AS SELECT g AS id, g::text AS s FROM generate_series(1, 100) g",
    );
    let (_, store) = host_store(None);
    let mut c = store.client();
    let kind = |r: Result<_, StoreError>| -> ErrorKind {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => {
                assert!(!e.to_string().contains('\n'));
                e.kind()
            }
        }
    };
    assert_eq!(kind(c.refresh("nope").map(|_| ())), ErrorKind::UnknownTable);
    assert_eq!(
        kind(c.drop_table("nope").map(|_| ())),
        ErrorKind::UnknownTable
    );
    assert_eq!(kind(c.export("nope").map(|_| ())), ErrorKind::UnknownTable);
    assert_eq!(kind(c.attach("nope").map(|_| ())), ErrorKind::UnknownTable);
    let mut bad_device = spec(&dsn, "t", "t");
    bad_device.device = 3;
    let e = c.load(bad_device).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadDevice);
    assert_eq!(
        e.to_string(),
        "device 3 cannot be used: the host backend has 1 device(s)"
    );
    for (devices, kind_, text) in [
        (
            "0,5",
            ErrorKind::BadDevice,
            "device 5 cannot be used: devices 0,5: GPU 5 does not exist (this machine has 1 GPU(s))",
        ),
        ("0,0", ErrorKind::BadRequest, "devices 0,0: GPU 0 is given twice"),
    ] {
        let mut bad = spec(&dsn, "t", "t");
        bad.devices = Some(devices.into());
        let e = c.load(bad).unwrap_err();
        assert_eq!(e.kind(), kind_, "{e}");
        assert!(e.to_string().contains(text), "{e}");
    }
    assert_eq!(
        kind(c.load(spec(&dsn, "t", "")).map(|_| ())),
        ErrorKind::BadName
    );
    // A missing table, or a name that is not one: the name the user gave
    // and how to give one, never the store's catalog SQL.
    for table in ["no_such_table", "public.orderz", "\"My Table", "a.b.c.d"] {
        let e = c.load(spec(&dsn, table, "x")).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.kind(), ErrorKind::LoadFailed, "{msg}");
        assert!(msg.contains(table) && msg.contains("schema.name"), "{msg}");
        for word in ["SELECT", "pg_catalog", "pg_partition_tree", "regclass"] {
            assert!(!msg.contains(word), "{word:?} in: {msg}");
        }
    }
    let mut bad_dsn = spec(&dsn, "t", "t");
    bad_dsn.dsn = "host=/tmp bogus=1".into();
    assert_eq!(kind(c.load(bad_dsn).map(|_| ())), ErrorKind::BadRequest);
    let mut bad_column = spec(&dsn, "t", "t");
    bad_column.columns = Some(vec!["zz".into()]);
    let e = c.load(bad_column).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LoadFailed);
    assert!(e.to_string().contains("\"zz\""), "{e}");
    assert!(
        c.list(false).unwrap().revisions.is_empty(),
        "failed loads leave nothing"
    );

    c.load(spec(&dsn, "t", "t")).expect("load");
    assert_eq!(
        kind(c.load(spec(&dsn, "t", "t")).map(|_| ())),
        ErrorKind::AlreadyLoaded
    );
    assert_eq!(kind(c.release("t", 1)), ErrorKind::NotAttached);

    // Not the protocol: answered with an error line, the connection stays.
    let mut raw = UnixStream::connect(&store.socket).unwrap();
    let mut lines = BufReader::new(raw.try_clone().unwrap());
    for (request, kind) in [
        ("garbage\n", "bad_request"),
        ("{\"v\":99,\"op\":\"list\"}\n", "version"),
        ("{\"v\":1,\"op\":\"teleport\"}\n", "bad_request"),
        ("{\"v\":1,\"op\":\"export\",\"name\":\"t\"}\n", ""),
    ] {
        raw.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        lines.read_line(&mut answer).unwrap();
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["v"], 1);
        if kind.is_empty() {
            assert_eq!(v["ok"], true, "{answer}");
            assert_eq!(v["result"]["rows"], 100);
        } else {
            assert_eq!(v["ok"], false, "{answer}");
            assert_eq!(v["error"]["kind"], kind, "{answer}");
        }
    }
    // A client vanishing in the middle of a line changes nothing.
    raw.write_all(b"{\"v\":1,\"op\":").unwrap();
    drop((raw, lines));
    assert_eq!(c.list(false).unwrap().revisions.len(), 1);
}

#[test]
fn auto_refresh_rebuilds_in_the_background() {
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    exec(
        &dsn,
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    let (_, store) = host_store(None);
    let mut c = store.client();
    let mut s = spec(&dsn, "t", "t");
    s.auto_refresh_seconds = Some(1);
    c.load(s).expect("load");
    exec(&dsn, "UPDATE t SET id = id + 1 WHERE id = 5");
    wait_for("the background refresh", || {
        find(&c.list(false).unwrap(), "t", true).unwrap().revision == 2
    });
    let info = find(&c.list(true).unwrap(), "t", true).unwrap().clone();
    assert_eq!(
        (info.stale, info.auto_refresh_seconds),
        (Some(false), Some(1))
    );
}

#[test]
fn the_socket_is_private_and_not_shared() {
    let (_, mut store) = host_store(None);
    let mode = std::fs::metadata(&store.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A live server's socket is refused.
    let backend = Arc::new(HostBackend::default());
    let e = Server::bind(&store.socket, Registry::new(backend.clone(), None))
        .err()
        .expect("in use");
    assert_eq!(e.kind(), ErrorKind::SocketInUse);
    assert!(
        e.to_string().ends_with("in use by a running store server"),
        "{e}"
    );
    // A stale one (its server gone without removing it) is replaced.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let server =
        Server::bind(&stale, Registry::new(backend.clone(), None)).expect("stale replaced");
    drop(server);
    // Anything else is left alone.
    let file = dir.path().join("file");
    std::fs::write(&file, "keep me").unwrap();
    let e = Server::bind(&file, Registry::new(backend, None))
        .err()
        .expect("not a socket");
    assert_eq!(e.kind(), ErrorKind::SocketInUse);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    // A shutdown request stops the server, which removes its socket.
    store.client().shutdown().expect("shutdown");
    store.stop().expect("clean stop");
    assert!(!store.socket.exists());
    let e = gpupg_store::Client::connect(&store.socket)
        .err()
        .expect("gone");
    assert_eq!(e.kind(), ErrorKind::NoServer);
}

/// A client checks who listens on the socket (SO_PEERCRED) before it
/// sends a byte: an impostor of another user squatting where the client
/// looks gets nothing, least of all the connection string's password. A
/// server does not take the impostor's socket for a store server either.
#[test]
fn nothing_is_sent_to_a_socket_of_another_user() {
    let Some(nobody) = impostor::nobody_uid() else {
        return;
    };
    let dir = impostor::shared_dir();
    let socket = dir.path().join("store.sock");
    let imp = impostor::Impostor::start(&socket);
    let e = gpupg_store::Client::connect(&socket)
        .and_then(|mut c| {
            c.load(gpupg_store::LoadSpec::new(
                "t",
                "host=/nowhere user=u password=hunter2",
            ))
        })
        .expect_err("refused");
    assert_eq!(String::from_utf8_lossy(&imp.received()), "");
    let msg = e.to_string();
    assert!(
        msg.contains(&socket.display().to_string()) && msg.contains(&format!("uid {nobody}")),
        "{msg}"
    );
    assert_eq!(e.kind(), ErrorKind::UntrustedSocket);
    assert_eq!(String::from_utf8_lossy(&imp.received()), "");

    let e = Server::bind(
        &socket,
        Registry::new(Arc::new(HostBackend::default()), None),
    )
    .err()
    .expect("not ours");
    let msg = e.to_string();
    assert!(msg.contains(&format!("uid {nobody}")), "{msg}");
    assert_eq!(e.kind(), ErrorKind::UntrustedSocket);
    assert_eq!(String::from_utf8_lossy(&imp.received()), "");
}

/// A refresh through the heap files reads only the pages changed since the
/// previous revision and copies the others' rows from it, over several
/// generations; a rewrite of the table or a change of its columns reads
/// everything again.
#[test]
fn refresh_reads_only_changed_pages() {
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    lineorder(&dsn, 60_000);
    exec(&dsn, "VACUUM (FREEZE) lineorder");
    // Pages holding rows (parallel inserts may leave an empty one).
    let pages_where = |cond: &str| pages_where(&dsn, "lineorder", cond);
    let page = PAGE;
    let blocks = pages_where("true");
    let changed = pages_where(&format!("{page} % 25 = 0"));
    let (host, store) = host_store(None);
    let mut c = store.client();
    let mut s = spec(&dsn, "lineorder", "lo");
    s.source = gpupg_store::Source::Heap;
    let lo = c.load(s).expect("load through the heap files");
    assert_eq!(lo.source, "heap");
    assert_eq!((lo.rows, lo.pages_kept), (60_000, 0));
    let all = relation_blocks(&dsn, "lineorder");
    assert!((blocks..=all).contains(&lo.pages_read), "{lo:?}");
    let check = |c: &mut gpupg_store::Client, what: &str| {
        let back = read_back(&host, &c.export("lo").unwrap());
        assert_same_rows(what, &cpu_export(&dsn, "lineorder"), &back, LO_KEYS);
    };

    // Every 25th page changed: its rows move to new pages at the end.
    exec(
        &dsn,
        &format!("UPDATE lineorder SET lo_quantity = lo_quantity + 1000 WHERE {page} % 25 = 0"),
    );
    let r = refresh_changed(&mut c, "lo");
    assert_eq!((r.revision, r.rows), (2, 60_000));
    // All but the changed pages and the few with free space that new row
    // versions went to (the last page each loading connection filled).
    assert!(
        (blocks - changed - 4..=blocks - changed).contains(&r.pages_kept),
        "{blocks} pages, {changed} changed: {r:?}"
    );
    assert!(r.rows_kept > 50_000 && r.rows_kept < 60_000, "{r:?}");
    // The changed pages and the new ones are not all-visible: COPY.
    assert_eq!(r.pages_read, 0, "{r:?}");
    assert!(r.pages_copied >= changed, "{r:?}");
    check(&mut c, "after the first update");

    // After VACUUM the pages changed then are read from the files; another
    // update changes pages that were carried once already.
    exec(&dsn, "VACUUM (FREEZE) lineorder");
    exec(
        &dsn,
        &format!("UPDATE lineorder SET lo_discount = lo_discount + 100 WHERE {page} % 25 = 7"),
    );
    let r = refresh_changed(&mut c, "lo");
    assert_eq!((r.revision, r.rows), (3, 60_000));
    // Kept pages now come out of the batches revision 2 carried over.
    assert!(r.pages_kept > blocks * 9 / 10, "{r:?}");
    check(&mut c, "after the second update");

    // A new column: the schema changed, every page is read.
    exec(&dsn, "VACUUM (FREEZE) lineorder");
    exec(&dsn, "ALTER TABLE lineorder ADD COLUMN extra int DEFAULT 7");
    let r = c.refresh("lo").expect("refresh").info;
    assert_eq!((r.revision, r.pages_kept, r.rows), (4, 0, 60_000), "{r:?}");
    check(&mut c, "after a new column");

    // A rewrite: new files, every page is read.
    exec(&dsn, "VACUUM FULL lineorder");
    exec(&dsn, "VACUUM (FREEZE) lineorder");
    let blocks = pages_where("true");
    let r = c.refresh("lo").expect("refresh").info;
    assert_eq!((r.revision, r.pages_kept, r.rows), (5, 0, 60_000), "{r:?}");
    let all = relation_blocks(&dsn, "lineorder");
    assert!((blocks..=all).contains(&r.pages_read), "{r:?}");
    check(&mut c, "after VACUUM FULL");

    // One row changed: every other page is kept.
    exec(
        &dsn,
        "UPDATE lineorder SET lo_tax = lo_tax + 1 WHERE lo_orderkey = 1 AND lo_linenumber = 1",
    );
    let r = refresh_changed(&mut c, "lo");
    assert_eq!(r.revision, 6);
    assert!(r.pages_kept + 2 >= r.pages_read + r.pages_kept, "{r:?}");
    assert!(r.pages_kept + 2 >= blocks, "{r:?}");
    check(&mut c, "after one row changed");
}

/// A table spread over several devices (`devices: all`): each chunk on one
/// of them, every allocation naming its device, the list kept for
/// refreshes, and the rows those of the table.
#[test]
fn tables_spread_over_several_devices() {
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    // Three ranges of 1024 pages: three chunks at least.
    lineorder(&dsn, 160_000);
    exec(&dsn, "VACUUM (FREEZE) lineorder");
    let host = Arc::new(HostBackend::new(2));
    let store = TestStore::start(host.clone(), None);
    let mut c = store.client();
    let mut s = spec(&dsn, "lineorder", "lo");
    s.devices = Some("all".into());
    s.source = gpupg_store::Source::Heap;
    let lo = c.load(s).expect("load over two devices");
    assert_eq!(lo.device, 0);
    let m = c.export("lo").unwrap();
    let mut devices: Vec<usize> = m.allocations.iter().map(|a| a.device).collect();
    devices.dedup();
    devices.sort();
    devices.dedup();
    assert_eq!(devices, [0, 1], "chunks on both devices");
    assert_same_rows(
        "lo",
        &cpu_export(&dsn, "lineorder"),
        &read_back(&host, &m),
        LO_KEYS,
    );
    // A refresh loads onto the same two devices.
    exec(
        &dsn,
        &format!("UPDATE lineorder SET lo_tax = lo_tax + 1 WHERE {PAGE} % 10 = 3"),
    );
    let r = refresh_changed(&mut c, "lo");
    assert!(r.pages_kept > 0, "{r:?}");
    let m = c.export("lo").unwrap();
    assert!(m.allocations.iter().any(|a| a.device == 1));
    assert_same_rows(
        "lo refreshed",
        &cpu_export(&dsn, "lineorder"),
        &read_back(&host, &m),
        LO_KEYS,
    );
}

/// The spec's `heap_sync` is the export's: `buffercache` reads the pages
/// dirty in shared buffers through COPY and runs no CHECKPOINT,
/// `checkpoint` runs one; the rows are the table's either way.
#[test]
fn heap_sync_of_the_spec_reaches_the_export() {
    let pg = LocalServer::start().expect("server");
    let dsn = pg.dsn();
    exec(&dsn, "CREATE EXTENSION pg_buffercache");
    lineorder(&dsn, 20_000);
    // The CHECKPOINT flushes the commits so that VACUUM marks the pages
    // all-visible, the second writes them to the files.
    exec(&dsn, "CHECKPOINT");
    exec(&dsn, "VACUUM (FREEZE) lineorder");
    exec(&dsn, "CHECKPOINT");
    let checkpoint = || {
        scalar(
            &dsn,
            "SELECT checkpoint_lsn::text FROM pg_control_checkpoint()",
        )
    };
    let (host, store) = host_store(None);
    let mut c = store.client();
    for (i, (sync, runs_checkpoint)) in [
        (gpupg_store::HeapSync::BufferCache, false),
        (gpupg_store::HeapSync::Checkpoint, true),
    ]
    .into_iter()
    .enumerate()
    {
        // Pages dirty in shared buffers, not yet in the files.
        exec(
            &dsn,
            &format!("UPDATE lineorder SET lo_tax = lo_tax + 1 WHERE {PAGE} % 20 = {i}"),
        );
        let before = checkpoint();
        let name = format!("lo{i}");
        let mut s = spec(&dsn, "lineorder", &name);
        s.source = gpupg_store::Source::Heap;
        s.heap_sync = sync;
        let lo = c.load(s).expect("load through the heap files");
        assert_eq!(lo.source, "heap", "{sync:?}");
        assert_eq!(checkpoint() != before, runs_checkpoint, "{sync:?}");
        assert_same_rows(
            &name,
            &cpu_export(&dsn, "lineorder"),
            &read_back(&host, &c.export(&name).unwrap()),
            LO_KEYS,
        );
    }
}
