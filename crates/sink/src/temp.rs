//! Names of temporary output files, and the removal of those a dead process
//! left behind (killed with SIGKILL, a crash, a power cut).
//!
//! A temporary file is named `.NAME.gpupg-HOST-PID-START-SEQ.tmp`: NAME the
//! destination's file name, HOST this machine's host name (letters and
//! digits only, the rest as `_`), PID and START the writing process's id and
//! start time (clock ticks after boot, `/proc/PID/stat`), SEQ a counter of
//! the process. A temporary file is stale, and removed when an output is
//! created in its directory, only when all of these hold:
//! - its name follows the scheme exactly;
//! - it is a regular file owned by this user;
//! - it was written on this host: a directory shared with other machines
//!   or containers (whose processes this one cannot see) holds their live
//!   files too, and those are never touched;
//! - no process PID started at START runs here: the start time tells a
//!   reused PID from the writer, so a live writer's file is never removed,
//!   whatever its age.
//!
//! Without `/proc` liveness cannot be told and nothing is removed.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Distinguishes temporary files of several sinks of one process that
/// target the same directory (e.g. a retry while the failed attempt's file is
/// still being removed).
static SEQ: AtomicU64 = AtomicU64::new(0);

const MARK: &str = ".gpupg-";
const SUFFIX: &str = ".tmp";

/// Who wrote a temporary file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Writer {
    host: String,
    pid: u32,
    /// Clock ticks after boot; `None` when `/proc` cannot say.
    start: Option<u64>,
}

/// This process, as its temporary files name it.
fn this_process() -> &'static Writer {
    static ME: OnceLock<Writer> = OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id();
        Writer {
            host: host_name(),
            pid,
            start: start_time(pid),
        }
    })
}

/// The temporary file for the destination `name` in `dir`.
pub(crate) fn temp_path(dir: &Path, name: &str) -> PathBuf {
    let me = this_process();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        ".{name}{MARK}{}-{}-{}-{seq}{SUFFIX}",
        me.host,
        me.pid,
        me.start.unwrap_or(0)
    ))
}

/// Removes the stale temporary files of `dir` (see the module's comment)
/// and returns how many. Best effort: an unreadable directory or entry is
/// skipped (creating the output there reports the problem).
pub(crate) fn remove_stale(dir: &Path) -> usize {
    let me = this_process();
    if me.start.is_none() {
        return 0;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(writer) = entry.file_name().to_str().and_then(parse) else {
            continue;
        };
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let stale = writer.host == me.host
            && meta.file_type().is_file()
            && meta.uid() == uid
            && !is_running(&writer);
        if stale && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The writer of a temporary file named `.NAME.gpupg-HOST-PID-START-SEQ.tmp`,
/// `None` for any other name.
fn parse(file_name: &str) -> Option<Writer> {
    let body = file_name.strip_prefix('.')?.strip_suffix(SUFFIX)?;
    let at = body.rfind(MARK)?;
    if at == 0 {
        return None;
    }
    let fields: Vec<&str> = body[at + MARK.len()..].split('-').collect();
    let [host, pid, start, seq] = fields[..] else {
        return None;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !(host_ok && digits(pid) && digits(start) && digits(seq)) {
        return None;
    }
    Some(Writer {
        host: host.to_string(),
        pid: pid.parse().ok()?,
        start: Some(start.parse().ok()?),
    })
}

/// Whether the process that wrote a file of this host still runs. When
/// `/proc/PID/stat` cannot be read for another reason than the process
/// being gone, it is taken to run.
fn is_running(writer: &Writer) -> bool {
    match fs::read_to_string(format!("/proc/{}/stat", writer.pid)) {
        Ok(stat) => stat_start_time(&stat) == writer.start,
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// The start time of process `pid`, from `/proc/PID/stat`.
fn start_time(pid: u32) -> Option<u64> {
    stat_start_time(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 (starttime) of a `/proc/PID/stat` line. The command name
/// (field 2, in parentheses) may hold spaces and parentheses: the fields
/// after it are counted from the last `)`.
fn stat_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This machine's host name with every character but ASCII letters and
/// digits as `_` (so `-` separates the name's fields), at most 64.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = if r == 0 { &buf[..len] } else { &[][..] }
        .iter()
        .take(64)
        .map(|&b| {
            if b.is_ascii_alphanumeric() {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_not_ours() {
        let dir = Path::new("/d");
        let p = temp_path(dir, "t.parquet");
        let name = p.file_name().and_then(|n| n.to_str()).expect("name");
        let me = this_process();
        let expected = Writer {
            start: Some(me.start.unwrap_or(0)),
            ..me.clone()
        };
        assert_eq!(parse(name), Some(expected));
        for other in [
            "t.parquet",
            ".t.parquet.gpupg-h-1-2-3",
            ".gpupg-h-1-2-3.tmp",
            ".t.gpupg-h-1-2.tmp",
            ".t.gpupg-h-1-2-3-4.tmp",
            ".t.gpupg-h-x-2-3.tmp",
            ".t.gpupg-h.x-1-2-3.tmp",
            ".t.gpupg--1-2-3.tmp",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
        assert_eq!(
            stat_start_time("12 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 20"),
            Some(777)
        );
    }

    #[test]
    fn only_files_of_dead_processes_of_this_host_are_removed() {
        let me = this_process();
        let Some(start) = me.start else {
            return; // no /proc: nothing is ever removed
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let (host, pid) = (&me.host, me.pid);
        let names = [
            // This process: alive.
            (format!(".a.parquet.gpupg-{host}-{pid}-{start}-0.tmp"), true),
            // Its PID, another start time: a reused PID, the writer is gone.
            (
                format!(".b.parquet.gpupg-{host}-{pid}-{}-0.tmp", start + 1),
                false,
            ),
            // A PID above any pid_max.
            (format!(".c.parquet.gpupg-{host}-99999999-5-0.tmp"), false),
            // Another host's: never touched.
            (format!(".d.parquet.gpupg-{host}x-99999999-5-0.tmp"), true),
            // Not the scheme.
            (".e.parquet.gpupg-tmp-99999999-0".to_string(), true),
            ("f-99999999-5-0.tmp".to_string(), true),
        ];
        for (name, _) in &names {
            fs::write(dir.path().join(name), b"x").expect("write");
        }
        assert_eq!(remove_stale(dir.path()), 2);
        for (name, kept) in &names {
            assert_eq!(dir.path().join(name).exists(), *kept, "{name}");
        }
    }
}
