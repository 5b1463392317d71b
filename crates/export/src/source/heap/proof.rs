//! The proof that the files the heap path is about to read are the
//! server's own and current, made once per export after its CHECKPOINT or
//! its listing of dirty pages ([`Synced`]) and before any page is trusted.
//!
//! Every other check of the heap path (all-visible, page LSN below the
//! fence, checksums) holds as well for a stale copy of the files or for
//! another cluster's: pages changed since would pass and rows would be read
//! twice or not at all. So the files must prove:
//!
//! - **current**, after a CHECKPOINT: `global/pg_control`'s latest
//!   checkpoint was written after the fence, by the CHECKPOINT this export
//!   just ran (or a later one); a copy made before has an older one,
//!   another cluster an unrelated one. Needs no privilege beyond reading
//!   the WAL position.
//! - **current**, without one (the dirty pages listed instead): the
//!   directory is the one the postmaster runs in (its `/proc/<pid>/cwd` is
//!   the same directory: device and inode), so its files are the live ones,
//!   not a copy; and `pg_control`'s latest checkpoint is the one
//!   `pg_control_checkpoint()` reports (read before and after the file:
//!   between the two, as checkpoints may end meanwhile), where that function
//!   is granted. A copy made after the latest checkpoint passes the
//!   second, never the first; so when the postmaster's directory cannot be
//!   seen (another user, `/proc` hidden) a CHECKPOINT is needed
//!   ([`directory_provable`]).
//! - **same cluster**: its system identifier is `pg_control_system()`'s
//!   (when that function is granted to the user).
//! - **this host**: `postmaster.pid` names the postmaster our own backend
//!   (`pg_backend_pid()`) is a child of, in this host's `/proc`, started
//!   when the file says, listening on the server's port; a server on
//!   another host or in a container (another PID namespace) fails it.
//! - per relation, **its file**: the file's name is the relation's file
//!   node now (not rewritten since the catalog was read), and the segment
//!   files hold `pg_relation_size` bytes.
//!
//! Any mismatch refuses the heap path with what did not match. Currency and
//! the relation checks are always required, and at least one of same
//! cluster and this host (this host always without a checkpoint); a proof
//! that cannot be made (function not granted, `/proc` hidden) is named in
//! [`FilesProof::unproven`].

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use gpupg_format::cluster::{ClusterFileError, ControlFile, PostmasterPid};

use super::server::{parse_lsn, wal_insert_lsn};
use super::{HeapRelation, RelationFiles};
use gpupg_source::Connection;
use gpupg_source::SourceError;

/// How far the start time in `postmaster.pid` (`time(NULL)` at start) may be
/// from the process's start in `/proc` (clock ticks since boot, and the boot
/// time rounded to seconds).
const START_TIME_SLACK_S: i64 = 2;

/// Attempts at a consistent reading (pg_control written while read, a
/// relation extended or truncated between two measurements).
const ATTEMPTS: usize = 3;

/// How the files were made to hold every change made before the fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// This export ran CHECKPOINT after the fence.
    Checkpoint,
    /// The pages dirty in shared buffers after the fence were listed (and
    /// are read through COPY); no checkpoint.
    DirtyListed,
}

/// What was proven about the files, for the summary and the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilesProof {
    /// The proofs made, e.g. "same cluster (system identifier 7716...)".
    pub proven: Vec<String>,
    /// The proofs that could not be made, and why.
    pub unproven: Vec<String>,
}

impl FilesProof {
    /// One line: "proven: a; b; not proven: c".
    pub fn describe(&self) -> String {
        let mut s = format!("proven: {}", self.proven.join("; "));
        if !self.unproven.is_empty() {
            s.push_str(&format!("; not proven: {}", self.unproven.join("; ")));
        }
        s
    }
}

/// Proves that `rels`, opened as `files` after `synced` (the export's
/// CHECKPOINT, which began after WAL position `fence`, or its listing of
/// dirty pages), are the server's own current files. `conn` is outside the
/// export's transaction (a refused function must not abort it). Returns
/// [`SourceError::HeapUnavailable`] naming what did not match, or what
/// could not be proven, when they are not.
pub fn prove_files(
    conn: &mut Connection,
    fence: u64,
    rels: &[(&HeapRelation, &RelationFiles)],
    synced: Synced,
) -> Result<FilesProof, SourceError> {
    let Some((first, _)) = rels.first() else {
        return Ok(FilesProof::default());
    };
    let mut proof = FilesProof::default();
    // Partitions can lie in other tablespaces, but under one data directory.
    let dir = first.data_dir.as_path();
    let fail = |what: String| SourceError::HeapUnavailable {
        table: first.label.clone(),
        reason: format!(
            "the files in {} are not proven this server's own and current: {what}",
            dir.display()
        ),
    };
    // Without a checkpoint, the server's latest checkpoint is read before
    // and after the file (one may end in between).
    let before = match synced {
        Synced::Checkpoint => None,
        Synced::DirtyListed => server_checkpoint(conn).map_err(&fail)?,
    };
    let control = read_control(dir).map_err(&fail)?;
    let cluster = same_cluster(conn, dir, &control, &mut proof).map_err(&fail)?;
    match synced {
        Synced::Checkpoint => current(conn, dir, &control, fence, &mut proof).map_err(&fail)?,
        Synced::DirtyListed => {
            same_checkpoint(conn, dir, &control, before, &mut proof).map_err(&fail)?
        }
    }
    let host = this_host(conn, dir, &mut proof).map_err(&fail)?;
    if host.is_none() && (!cluster || synced == Synced::DirtyListed) {
        return Err(fail(format!(
            "neither the cluster nor the host could be proven ({})",
            proof.unproven.join("; ")
        )));
    }
    for (rel, files) in rels {
        its_file(conn, rel, files).map_err(&fail)?;
    }
    proof.proven.push(format!(
        "file nodes and sizes of {} relation(s)",
        rels.len()
    ));
    match (synced, host) {
        (Synced::DirtyListed, Some(postmaster)) => {
            its_directory(dir, postmaster, &mut proof).map_err(&fail)?
        }
        // After a CHECKPOINT too, where the postmaster's directory can be
        // seen: a copy of the data directory with the live pg_control and
        // postmaster.pid linked into it passes every other check (its
        // segment sizes can match), and its pages would be stale.
        (Synced::Checkpoint, Some(postmaster))
            if std::fs::metadata(format!("/proc/{postmaster}/cwd")).is_ok() =>
        {
            its_directory(dir, postmaster, &mut proof).map_err(&fail)?
        }
        _ => {}
    }
    Ok(proof)
}

/// Whether the files can be proven current without a CHECKPOINT: the
/// postmaster's working directory (`/proc/<pid>/cwd` of our backend's
/// parent) can be seen, to be compared with the data directory. Returns
/// why not.
pub fn directory_provable(conn: &mut Connection) -> Result<(), String> {
    let rows = conn
        .query(
            "reading our backend's PID",
            "SELECT pg_catalog.pg_backend_pid()",
            &[],
        )
        .map_err(|e| e.to_string())?;
    let backend: u32 = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|s| s.parse().ok())
        .ok_or("pg_backend_pid() gave no PID")?;
    let parent = process_stat(backend)
        .map_err(|e| {
            format!("our backend's process (PID {backend}) cannot be seen on this host ({e})")
        })?
        .ppid;
    std::fs::metadata(format!("/proc/{parent}/cwd")).map_err(|e| {
        format!("the postmaster's working directory (/proc/{parent}/cwd) cannot be read ({e})")
    })?;
    Ok(())
}

/// The data directory is the postmaster's working directory (PostgreSQL
/// runs in its data directory): the same device and inode, so its files
/// are the live ones, not a copy.
fn its_directory(dir: &Path, postmaster: u32, proof: &mut FilesProof) -> Result<(), String> {
    let cwd = format!("/proc/{postmaster}/cwd");
    let live = std::fs::metadata(&cwd)
        .map_err(|e| format!("the postmaster's working directory ({cwd}) cannot be read ({e})"))?;
    let ours = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if (live.dev(), live.ino()) != (ours.dev(), ours.ino()) {
        let at = std::fs::read_link(&cwd)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "elsewhere".into());
        return Err(format!(
            "{} is not the postmaster's data directory ({at}): a copy of the files",
            dir.display()
        ));
    }
    proof.proven.push(format!(
        "its data directory (the working directory of postmaster {postmaster})"
    ));
    Ok(())
}

/// The server's latest checkpoint (`pg_control_checkpoint()`); `None`
/// when the function is not granted to this user.
fn server_checkpoint(conn: &mut Connection) -> Result<Option<u64>, String> {
    let rows = match conn.query(
        "reading the server's latest checkpoint",
        "SELECT checkpoint_lsn FROM pg_catalog.pg_control_checkpoint()",
        &[],
    ) {
        Ok(rows) => rows,
        Err(e) if e.sqlstate() == Some("42501") => return Ok(None),
        Err(e) => return Err(format!("reading the server's latest checkpoint: {e}")),
    };
    let text = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    parse_lsn(&text)
        .map(Some)
        .ok_or_else(|| format!("pg_control_checkpoint() gave no LSN: {text:?}"))
}

/// Without a checkpoint of our own: pg_control's latest checkpoint is the
/// one the server reported before reading the file (`before`), the one it
/// reports after it, or one in between. A copy made before the latest checkpoint fails this; one made
/// after passes, and is refused by [`its_directory`].
fn same_checkpoint(
    conn: &mut Connection,
    dir: &Path,
    control: &ControlFile,
    before: Option<u64>,
    proof: &mut FilesProof,
) -> Result<(), String> {
    let Some(before) = before else {
        proof.unproven.push(
            "current by its latest checkpoint (pg_control_checkpoint() is not granted to this user)"
                .into(),
        );
        return Ok(());
    };
    let after = server_checkpoint(conn)?.unwrap_or(before);
    let at = control.checkpoint_lsn;
    // Checkpoint LSNs only grow: checkpoints that ended meanwhile lie
    // between the two readings.
    if at < before || at > after {
        return Err(format!(
            "{}/global/pg_control's latest checkpoint {} is not the server's {} (a stale copy \
             of the files, or another server's)",
            dir.display(),
            lsn(at),
            lsn(after)
        ));
    }
    proof.proven.push(format!(
        "current (latest checkpoint {} is the server's, read before and after the file)",
        lsn(at)
    ));
    Ok(())
}

/// `global/pg_control`, read again while its CRC does not verify (the
/// server rewrites it in place at every checkpoint).
pub(super) fn read_control(dir: &Path) -> Result<ControlFile, String> {
    let path = dir.join("global").join("pg_control");
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {} ({e})", path.display()))?;
        match ControlFile::parse(&bytes) {
            Ok(c) => return Ok(c),
            Err(e @ ClusterFileError::ControlCrc) => last = e.to_string(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{}: {last}", path.display()))
}

/// The system identifier in pg_control against `pg_control_system()`:
/// whether it was proven (false: the function is not granted).
fn same_cluster(
    conn: &mut Connection,
    dir: &Path,
    control: &ControlFile,
    proof: &mut FilesProof,
) -> Result<bool, String> {
    let rows = match conn.query(
        "reading the cluster's system identifier",
        "SELECT system_identifier FROM pg_catalog.pg_control_system()",
        &[],
    ) {
        Ok(rows) => rows,
        Err(e) if e.sqlstate() == Some("42501") => {
            proof
                .unproven
                .push("same cluster (pg_control_system() is not granted to this user)".into());
            return Ok(false);
        }
        Err(e) => return Err(format!("reading the server's system identifier: {e}")),
    };
    let server: Option<u64> = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|s| s.parse().ok());
    match server {
        Some(id) if id == control.system_identifier => {
            proof
                .proven
                .push(format!("same cluster (system identifier {id})"));
            Ok(true)
        }
        Some(id) => Err(format!(
            "{}/global/pg_control has system identifier {}, the server {id} (another cluster's files)",
            dir.display(),
            control.system_identifier
        )),
        None => Err("pg_control_system() gave no system identifier".into()),
    }
}

/// The latest checkpoint in pg_control lies between the fence and the WAL
/// position now: it was written by this export's CHECKPOINT or a later one.
fn current(
    conn: &mut Connection,
    dir: &Path,
    control: &ControlFile,
    fence: u64,
    proof: &mut FilesProof,
) -> Result<(), String> {
    // Read after the file: a checkpoint that ended in between is still
    // before it.
    let now = wal_insert_lsn(conn).map_err(|e| e.to_string())?;
    let at = control.checkpoint_lsn;
    if at < fence {
        return Err(format!(
            "{}/global/pg_control's latest checkpoint {} is older than the CHECKPOINT this \
             export ran after {} (a stale copy of the files, or another server's)",
            dir.display(),
            lsn(at),
            lsn(fence)
        ));
    }
    if at > now {
        return Err(format!(
            "{}/global/pg_control's latest checkpoint {} is past the server's WAL position {} \
             (another server's files)",
            dir.display(),
            lsn(at),
            lsn(now)
        ));
    }
    proof.proven.push(format!(
        "current (latest checkpoint {} after the fence {})",
        lsn(at),
        lsn(fence)
    ));
    Ok(())
}

/// `postmaster.pid` names the postmaster our backend is a child of: its PID
/// when proven (`None`: the file or `/proc` cannot be read).
fn this_host(
    conn: &mut Connection,
    dir: &Path,
    proof: &mut FilesProof,
) -> Result<Option<u32>, String> {
    let pid_path = dir.join("postmaster.pid");
    let text = match std::fs::read_to_string(&pid_path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            proof.unproven.push(format!(
                "this host ({} cannot be read: {e})",
                pid_path.display()
            ));
            return Ok(None);
        }
        Err(e) => {
            return Err(format!(
                "{} cannot be read ({e}): no server runs on these files",
                pid_path.display()
            ))
        }
    };
    let pm = PostmasterPid::parse(&text).map_err(|e| format!("{}: {e}", pid_path.display()))?;
    let rows = conn
        .query(
            "reading our backend's PID and the server's port",
            "SELECT pg_catalog.pg_backend_pid(), pg_catalog.current_setting('port')",
            &[],
        )
        .map_err(|e| e.to_string())?;
    let get = |i: usize| rows.first().and_then(|r| r.get(i).cloned().flatten());
    let backend: u32 = get(0)
        .and_then(|s| s.parse().ok())
        .ok_or("pg_backend_pid() gave no PID")?;
    let port: u16 = get(1)
        .and_then(|s| s.parse().ok())
        .ok_or("the server's port setting is not a number")?;
    if pm.port != port {
        return Err(format!(
            "{} says port {}, the server listens on {port}",
            pid_path.display(),
            pm.port
        ));
    }
    let parent = match process_stat(backend) {
        Ok(s) => s.ppid,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "our backend's PID {backend} is no process on this host (the server runs on \
                 another host or in a container)"
            ))
        }
        Err(e) => {
            proof
                .unproven
                .push(format!("this host (/proc/{backend}/stat: {e})"));
            return Ok(None);
        }
    };
    if parent != pm.pid {
        return Err(format!(
            "our backend (PID {backend} on this host) is a child of PID {parent}, not of the \
             postmaster {} in {} (the server runs elsewhere)",
            pm.pid,
            pid_path.display()
        ));
    }
    let started = process_stat(pm.pid)
        .and_then(|s| start_epoch(s.start_ticks))
        .map_err(|e| format!("/proc/{}/stat: {e}", pm.pid))?;
    if (started - pm.start_time).abs() > START_TIME_SLACK_S {
        return Err(format!(
            "PID {} on this host started at {started}, the postmaster in {} at {} (the server \
             runs in another PID namespace)",
            pm.pid,
            pid_path.display(),
            pm.start_time
        ));
    }
    proof.proven.push(format!(
        "this host (our backend {backend} is a child of postmaster {}, port {port})",
        pm.pid
    ));
    Ok(Some(pm.pid))
}

/// The relation's file is its file node now, and its segments hold the
/// server's relation size (growing or not, between two readings of it).
fn its_file(
    conn: &mut Connection,
    rel: &HeapRelation,
    files: &RelationFiles,
) -> Result<(), String> {
    let sql = format!(
        "SELECT pg_catalog.pg_relation_filenode({0}), pg_catalog.pg_relation_size({0})",
        rel.oid
    );
    let read = |conn: &mut Connection| -> Result<(Option<String>, u64), String> {
        let rows = conn
            .query(
                &format!("reading the file node and size of {}", rel.label),
                &sql,
                &[],
            )
            .map_err(|e| e.to_string())?;
        let get = |i: usize| rows.first().and_then(|r| r.get(i).cloned().flatten());
        let size = get(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("pg_relation_size of {} is not a number", rel.label))?;
        Ok((get(0), size))
    };
    let name = rel
        .base_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = (0, 0, 0);
    for _ in 0..ATTEMPTS {
        let (node, before) = read(conn)?;
        let bytes = files
            .bytes_now()
            .map_err(|e| format!("measuring {}: {e}", rel.base_path.display()))?;
        let (_, after) = read(conn)?;
        if node.as_deref() != Some(name.as_str()) {
            return Err(format!(
                "{}'s file node is now {}, not the file {} read (rewritten meanwhile)",
                rel.label,
                node.unwrap_or_else(|| "none".into()),
                rel.base_path.display()
            ));
        }
        if before <= bytes && bytes <= after {
            return Ok(());
        }
        last = (bytes, before, after);
    }
    let (bytes, before, after) = last;
    let size = if before == after {
        format!("{before}")
    } else {
        format!("{before} to {after}")
    };
    Err(format!(
        "{}'s segment files ({}...) hold {bytes} bytes, the server's relation {size}",
        rel.label,
        rel.base_path.display()
    ))
}

fn lsn(l: u64) -> String {
    format!("{:X}/{:X}", l >> 32, l & 0xffff_ffff)
}

/// What `/proc/<pid>/stat` says of a process.
struct ProcStat {
    ppid: u32,
    /// When it started, in clock ticks since boot.
    start_ticks: u64,
}

fn process_stat(pid: u32) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not understood"))
}

/// `pid (comm) state ppid ... starttime ...`: the command name may hold
/// spaces and parentheses, so fields are counted after its last `)`; ppid
/// is field 4, starttime field 22.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        ppid: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Clock ticks since boot as seconds since 1970 (`btime` in /proc/stat).
fn start_epoch(ticks: u64) -> io::Result<i64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let boot: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/stat has no btime"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return Err(io::Error::other("no clock tick rate"));
    }
    Ok(boot + (ticks / hz as u64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields() {
        let s = parse_stat(
            "10997 (postgres: a (b) c) S 10990 10997 10997 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 \
             123456 1000 10 18446744073709551615",
        )
        .expect("parses");
        assert_eq!(s.ppid, 10990);
        assert_eq!(s.start_ticks, 123456);
        assert!(parse_stat("1 (x) S").is_none());
        assert!(parse_stat("no parenthesis").is_none());
        // This process: its parent and a start time after boot.
        let me = process_stat(std::process::id()).expect("own stat");
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        let started = start_epoch(me.start_ticks).expect("start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        assert!(
            started <= now && started > now - 24 * 3600 * 365,
            "{started}"
        );
    }

    #[test]
    fn description() {
        let p = FilesProof {
            proven: vec!["a".into(), "b".into()],
            unproven: vec!["c (why)".into()],
        };
        assert_eq!(p.describe(), "proven: a; b; not proven: c (why)");
    }
}
