//! The pages changed since the latest checkpoint, from the WAL files in
//! `pg_wal` ([`HeapSync::Wal`](crate::HeapSync::Wal)): every change made
//! before the checkpoint's REDO pointer R is in the data files, and every
//! change of a WAL-logged relation at or after R and before the fence F has
//! a WAL record naming its block. So the blocks the records in [R, F) name
//! are a superset of the pages whose files may lack a change made before F
//! (docs/heap.md, "Dirty pages", the way "wal"). Costs the WAL since the
//! checkpoint (read at about 1 GB/s), not a scan of every buffer.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gpupg_format::wal::{for_each_block, lsn_text, WalLayout, LONG_PAGE_HEADER, SHORT_PAGE_HEADER};
use gpupg_source::{Connection, SourceError};

use super::proof::read_control;
use super::server::{first_value, oid_list, parse_lsn, DirtyBlocks};

/// How long to wait for the server to write its WAL up to the fence (the
/// WAL writer wakes every `wal_writer_delay`, 200 ms by default, but
/// writes whole pages only; a commit, [`nudge_wal_writer`], writes the
/// rest).
const WRITE_WAIT: Duration = Duration::from_secs(2);
/// How often the write position is asked while waiting.
const WRITE_POLL: Duration = Duration::from_millis(5);
/// How long to wait for the WAL writer before a commit makes the server
/// write (on a busy server the write position passes the fence within
/// milliseconds by itself).
const NUDGE_AFTER: Duration = Duration::from_millis(20);
/// Bytes of WAL read by one positioned read.
const READ_AHEAD: usize = 1 << 20;
/// `auto` reads the WAL when that costs less than the buffer scan. WAL at
/// about 1 GB/s is an estimate for a release build, not yet measured (a
/// table-driven CRC-32C runs above 1 GB/s on one core and the WAL since a
/// checkpoint is mostly in the page cache; the coordinator measures it on
/// the H100 host); `pg_buffercache` costs about 0.05 s per GB of
/// shared_buffers (measured on the H100 host, PostgreSQL 15,
/// shared_buffers 16 GB: 0.7-1.3 s).
const WAL_BYTES_PER_S: f64 = 1e9;
const BUFFER_SCAN_S_PER_BYTE: f64 = 0.05 / 1e9;

/// The pages changed since the checkpoint, per relation, and what was read.
pub(super) struct WalList {
    /// Per relation given, in that order.
    pub dirty: Vec<DirtyBlocks>,
    /// The checkpoint's REDO pointer the list starts at.
    pub redo: u64,
    /// Bytes of WAL read.
    pub bytes: u64,
}

/// Why the WAL gave no list (the next way is taken, saying why), or a
/// failure of the server connection.
pub(super) enum NoWalList {
    Why(String),
    Error(SourceError),
}

impl From<SourceError> for NoWalList {
    fn from(e: SourceError) -> Self {
        NoWalList::Error(e)
    }
}

/// What the server says of the relations and the WAL.
struct ServerFacts {
    /// (tablespace, database, file node) per relation, in order.
    nodes: Vec<(u32, u32, u32)>,
    page_size: u32,
    segment_size: u64,
    shared_buffers: u64,
}

/// The blocks of relations `oids` changed in the WAL from the latest
/// checkpoint's REDO pointer to `fence`, read from `data_dir`'s `pg_wal`.
/// `auto`: give up when reading that WAL would cost more than the
/// `pg_buffercache` scan.
pub(super) fn wal_blocks(
    probe: &mut Connection,
    data_dir: &Path,
    oids: &[u32],
    fence: u64,
    auto: bool,
) -> Result<WalList, NoWalList> {
    let facts = server_facts(probe, oids)?;
    wait_written(probe, fence, facts.page_size, facts.segment_size)?;
    let mut last = String::new();
    // A checkpoint ending while the WAL is read may remove its first
    // segments: read again from the newer REDO pointer, once.
    for _ in 0..2 {
        let control = read_control(data_dir).map_err(NoWalList::Why)?;
        let start = control.redo_lsn.min(fence);
        let bytes = fence - start;
        if auto
            && bytes as f64 / WAL_BYTES_PER_S > facts.shared_buffers as f64 * BUFFER_SCAN_S_PER_BYTE
        {
            return Err(NoWalList::Why(format!(
                "the WAL since the checkpoint at {} ({:.1} MB) costs more to read than the \
                 shared buffers ({:.1} MB) to scan",
                lsn_text(control.redo_lsn),
                bytes as f64 / 1e6,
                facts.shared_buffers as f64 / 1e6
            )));
        }
        let layout = WalLayout {
            page_size: facts.page_size,
            segment_size: facts.segment_size,
            timeline: control.timeline,
        };
        match collect(data_dir, layout, &facts.nodes, start, fence) {
            Ok(dirty) => {
                return Ok(WalList {
                    dirty,
                    redo: control.redo_lsn,
                    bytes,
                })
            }
            Err(why) => last = why,
        }
        if read_control(data_dir).map_err(NoWalList::Why)?.redo_lsn == control.redo_lsn {
            break;
        }
    }
    Err(NoWalList::Why(last))
}

/// Reads the WAL in `[start, end)` and sorts the main fork and visibility
/// map blocks of `nodes` into their lists.
fn collect(
    data_dir: &Path,
    layout: WalLayout,
    nodes: &[(u32, u32, u32)],
    start: u64,
    end: u64,
) -> Result<Vec<DirtyBlocks>, String> {
    let index: HashMap<(u32, u32, u32), usize> =
        nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut dirty = vec![DirtyBlocks::default(); nodes.len()];
    let mut vm: Vec<Vec<u32>> = vec![Vec::new(); nodes.len()];
    let source = SegmentFiles::new(wal_dir(data_dir), layout, end);
    for_each_block(layout, source, start, end, |b| {
        if let Some(&i) = index.get(&(b.spc, b.db, b.rel)) {
            match b.fork {
                0 => dirty[i].heap.push(b.block),
                2 => vm[i].push(b.block),
                _ => {}
            }
        }
    })
    .map_err(|e| e.to_string())?;
    for (d, mut v) in dirty.iter_mut().zip(vm) {
        d.heap.sort_unstable();
        d.heap.dedup();
        v.sort_unstable();
        v.dedup();
        d.vm = v.len() as u64;
    }
    Ok(dirty)
}

/// `pg_wal` of `data_dir`; in debug builds, the directory the environment
/// variable `GPUPG_TEST_WAL_DIR` names instead, so that tests can make the
/// WAL unreadable without touching a live server's (crates/export/tests/
/// wal_sync.rs).
fn wal_dir(data_dir: &Path) -> PathBuf {
    #[cfg(debug_assertions)]
    if let Some(dir) = std::env::var_os("GPUPG_TEST_WAL_DIR") {
        return PathBuf::from(dir);
    }
    data_dir.join("pg_wal")
}

/// The relations' file locators (the tablespace as the WAL names it: the
/// database's default where `pg_class` says 0) and the WAL's sizes.
fn server_facts(probe: &mut Connection, oids: &[u32]) -> Result<ServerFacts, NoWalList> {
    let list = oid_list(oids);
    let settings = probe.query(
        "reading the WAL's sizes",
        "SELECT pg_catalog.current_setting('wal_block_size'), \
         (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'), \
         (SELECT setting::bigint * pg_catalog.current_setting('block_size')::bigint \
          FROM pg_catalog.pg_settings WHERE name = 'shared_buffers'), \
         (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) \
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r \
                    WHERE r.rolname IN ('pg_monitor', 'pg_checkpoint') \
                    AND pg_catalog.pg_has_role(r.oid, 'MEMBER'))",
        &[],
    )?;
    // Reading the files skips what the server enforces on rows (row
    // security, say): the WAL's list, which needs no privilege of its own,
    // is kept to the users the other ways admit (pg_buffercache's
    // readers and those who may run CHECKPOINT), so that it admits no one
    // new to the heap path.
    let admitted = settings
        .first()
        .and_then(|r| r.get(3).cloned().flatten())
        .is_some_and(|v| v == "t");
    if !admitted {
        return Err(NoWalList::Why(
            "the WAL's list is for superusers and members of pg_monitor or pg_checkpoint, \
             as the other ways"
                .into(),
        ));
    }
    let get = |row: Option<&Vec<Option<String>>>, i: usize| {
        row.and_then(|r| r.get(i).cloned().flatten())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (Some(page_size), Some(segment_size), Some(shared_buffers)) = (
        get(settings.first(), 0),
        get(settings.first(), 1),
        get(settings.first(), 2),
    ) else {
        return Err(NoWalList::Why(format!(
            "the WAL's block and segment sizes cannot be read: {settings:?}"
        )));
    };
    let rows = if oids.is_empty() {
        Vec::new()
    } else {
        probe.query(
            "reading the relations' file locators",
            &format!(
                "WITH db AS (SELECT oid, dattablespace FROM pg_catalog.pg_database \
                             WHERE datname = pg_catalog.current_database()) \
                 SELECT c.oid, CASE c.reltablespace WHEN 0 THEN (SELECT dattablespace FROM db) \
                        ELSE c.reltablespace END, \
                        CASE WHEN c.reltablespace = 1664 THEN 0 ELSE (SELECT oid FROM db) END, \
                        pg_catalog.pg_relation_filenode(c.oid) \
                 FROM pg_catalog.pg_class c WHERE c.oid IN ({list})"
            ),
            &[],
        )?
    };
    let mut nodes = vec![None; oids.len()];
    for row in &rows {
        let (Some(oid), Some(spc), Some(db), Some(node)) = (
            get(Some(row), 0),
            get(Some(row), 1),
            get(Some(row), 2),
            get(Some(row), 3),
        ) else {
            return Err(NoWalList::Why(format!(
                "a relation has no file locator: {row:?}"
            )));
        };
        if let Some(i) = oids.iter().position(|&o| u64::from(o) == oid) {
            let n = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            nodes[i] = Some((n(spc), n(db), n(node)));
        }
    }
    let nodes = nodes
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| NoWalList::Why("a relation is gone from pg_class".into()))?;
    Ok(ServerFacts {
        nodes,
        page_size: u32::try_from(page_size).unwrap_or(0),
        segment_size,
        shared_buffers,
    })
}

/// Waits until the server has written its WAL up to the fence (the WAL
/// insert position read after the snapshot), so that the files in
/// `pg_wal` hold every record before it. A fence just after a page header
/// needs the write position at that page's start only: nothing lies in
/// between.
fn wait_written(
    probe: &mut Connection,
    fence: u64,
    page_size: u32,
    segment_size: u64,
) -> Result<(), NoWalList> {
    let ps = u64::from(page_size.max(1));
    let in_page = fence % ps;
    let header = if (fence - in_page).is_multiple_of(segment_size.max(1)) {
        LONG_PAGE_HEADER
    } else {
        SHORT_PAGE_HEADER
    };
    let needed = if in_page == header as u64 {
        fence - in_page
    } else {
        fence
    };
    let t = Instant::now();
    let mut nudged = false;
    loop {
        let text = first_value(
            probe,
            "reading the WAL write position",
            "SELECT pg_catalog.pg_current_wal_lsn()",
        )?;
        let written =
            parse_lsn(&text).ok_or_else(|| NoWalList::Why(format!("not an LSN: {text:?}")))?;
        if written >= needed {
            return Ok(());
        }
        if !nudged && t.elapsed() >= NUDGE_AFTER {
            nudge_wal_writer(probe);
            nudged = true;
            continue;
        }
        if t.elapsed() > WRITE_WAIT {
            return Err(NoWalList::Why(format!(
                "the WAL was not written up to the fence {} within {} s (written: {})",
                lsn_text(fence),
                WRITE_WAIT.as_secs(),
                lsn_text(written)
            )));
        }
        std::thread::sleep(WRITE_POLL);
    }
}

/// Makes the server write its WAL past the fence now: the WAL writer
/// writes only whole pages unless a commit asks for more, so records on a
/// quiet server's last page may wait unwritten for the next commit
/// (PostgreSQL 18 in the tests: 56 bytes for seconds). A transaction that
/// takes an XID commits synchronously, and its commit flushes the WAL up to
/// its own record, after the fence; it costs one XID and one WAL flush.
/// Where it is refused (a read-only server), the wait goes on and may give
/// up.
fn nudge_wal_writer(probe: &mut Connection) {
    let nudge = "BEGIN READ WRITE; SET LOCAL synchronous_commit = on; \
                 SELECT pg_catalog.pg_current_xact_id(); COMMIT";
    if probe.execute(nudge).is_err() {
        // Whatever failed left the transaction open: end it, so the probe
        // stays usable; a failure here shows in the next query.
        let _ = probe.execute("ROLLBACK");
    }
}

/// WAL pages read from the segment files of `pg_wal`, [`READ_AHEAD`]
/// bytes at a time (never past the segment or the end to read).
struct SegmentFiles {
    dir: PathBuf,
    layout: WalLayout,
    end: u64,
    file: Option<(u64, File)>,
    buf: Vec<u8>,
    /// The LSN of `buf`'s first byte.
    buf_lsn: u64,
}

impl SegmentFiles {
    fn new(dir: PathBuf, layout: WalLayout, end: u64) -> SegmentFiles {
        SegmentFiles {
            dir,
            layout,
            end,
            file: None,
            buf: Vec::new(),
            buf_lsn: 0,
        }
    }

    fn fill(&mut self, lsn: u64) -> Result<(), String> {
        let seg = self.layout.segment_size;
        let segno = lsn / seg;
        if self.file.as_ref().is_none_or(|(n, _)| *n != segno) {
            let path = self.dir.join(self.layout.segment_file(lsn));
            let f = File::open(&path).map_err(|e| {
                format!(
                    "cannot open {} ({e}; removed or recycled after a checkpoint?)",
                    path.display()
                )
            })?;
            self.file = Some((segno, f));
        }
        let ps = u64::from(self.layout.page_size);
        let off = lsn % seg;
        let wanted = self.end.saturating_sub(lsn).div_ceil(ps).max(1) * ps;
        let len = (READ_AHEAD as u64).min(seg - off).min(wanted) as usize;
        self.buf.resize(len, 0);
        self.buf_lsn = lsn;
        if let Some((_, f)) = &self.file {
            f.read_exact_at(&mut self.buf, off).map_err(|e| {
                format!(
                    "cannot read {} at {off} ({e})",
                    self.layout.segment_file(lsn)
                )
            })?;
        }
        Ok(())
    }
}

impl gpupg_format::wal::WalSource for SegmentFiles {
    fn read_page(&mut self, page_lsn: u64, page: &mut [u8]) -> Result<(), String> {
        let held = page_lsn >= self.buf_lsn
            && page_lsn + page.len() as u64 <= self.buf_lsn + self.buf.len() as u64;
        if !held {
            self.fill(page_lsn)?;
        }
        let at = (page_lsn - self.buf_lsn) as usize;
        let src = self
            .buf
            .get(at..at + page.len())
            .ok_or_else(|| format!("WAL page at {} not read", lsn_text(page_lsn)))?;
        page.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use gpupg_localpg::{LocalServer, LocalServerOptions};
    use gpupg_source::{ConnectConfig, Connection};

    use super::super::server::{dirty_blocks, wal_insert_lsn};
    use super::wal_blocks;

    fn connect(dsn: &str) -> Connection {
        Connection::connect(&ConnectConfig::resolve(Some(dsn)).expect("dsn")).expect("connects")
    }

    /// Under writers that update, insert and delete and a VACUUM, every
    /// heap page `pg_buffercache` lists dirty is in the WAL's list taken
    /// right after (its fence later than the buffer scan). With checksums,
    /// so that a page dirtied by hint bits alone has logged an image since
    /// the checkpoint; no checkpoint runs meanwhile (one ending between the
    /// scan and the WAL list would move R past pages it wrote).
    #[test]
    fn the_wal_list_holds_every_page_dirty_in_shared_buffers() {
        let server = LocalServer::start_with(LocalServerOptions {
            data_checksums: true,
            ..Default::default()
        })
        .expect("server");
        let dsn = server.dsn();
        let mut probe = connect(&dsn);
        probe
            .execute(
                "CREATE EXTENSION pg_buffercache;
                 CREATE TABLE w (a int, b text);
                 INSERT INTO w SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;
                 CHECKPOINT;",
            )
            .expect("setup");
        let oid: u32 = probe
            .query("oid", "SELECT 'w'::regclass::oid", &[])
            .expect("oid")[0][0]
            .as_deref()
            .and_then(|s| s.parse().ok())
            .expect("an oid");
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for w in 0..2 {
                let (dsn, stop) = (&dsn, &stop);
                s.spawn(move || {
                    let mut c = connect(dsn);
                    let mut k = w * 7;
                    while !stop.load(Ordering::Relaxed) {
                        k = (k * 31 + 17) % 20000;
                        c.execute(&format!(
                            "UPDATE w SET b = b || 'y' WHERE a = {k};
                             DELETE FROM w WHERE a = {k} + 1;
                             INSERT INTO w VALUES ({k} + 1, 'z');"
                        ))
                        .expect("writer");
                    }
                });
            }
            let (dsn, stop) = (&dsn, &stop);
            s.spawn(move || {
                let mut c = connect(dsn);
                while !stop.load(Ordering::Relaxed) {
                    c.execute("VACUUM w").expect("vacuum");
                    std::thread::sleep(std::time::Duration::from_millis(30));
                }
            });
            for round in 0..8 {
                std::thread::sleep(std::time::Duration::from_millis(80));
                let dirty = dirty_blocks(&mut probe, &[oid]).expect("buffer cache");
                let fence = wal_insert_lsn(&mut probe).expect("fence");
                let listed = match wal_blocks(&mut probe, server.data_dir(), &[oid], fence, false) {
                    Ok(l) => l,
                    Err(super::NoWalList::Why(why)) => panic!("round {round}: no WAL list: {why}"),
                    Err(super::NoWalList::Error(e)) => panic!("round {round}: {e}"),
                };
                let missing: Vec<u32> = dirty[0]
                    .heap
                    .iter()
                    .copied()
                    .filter(|b| listed.dirty[0].heap.binary_search(b).is_err())
                    .collect();
                assert!(
                    missing.is_empty(),
                    "round {round}: dirty in shared buffers, not in the WAL since {:X}: {missing:?}",
                    listed.redo
                );
                assert!(
                    !dirty[0].heap.is_empty(),
                    "round {round}: the writers dirty pages"
                );
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
}
