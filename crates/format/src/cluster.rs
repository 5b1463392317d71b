//! The two files of a data directory that say whose it is: `global/pg_control`
//! (the cluster's system identifier and its latest checkpoint) and
//! `postmaster.pid` (the running postmaster's PID, start time and port).
//! The heap path compares them with what the server says before it trusts
//! any page read from the directory. Parsing only; no I/O.

use thiserror::Error;

use crate::crc32c::crc32c;

/// What a `global/pg_control` holds that identifies the cluster and dates
/// the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlFile {
    /// Made by initdb; the same for every copy of the cluster (base backups
    /// and standbys included), different for any other cluster.
    pub system_identifier: u64,
    /// 1300 for PostgreSQL 13 to 16, 1700 for 17, 1800 for 18.
    pub pg_control_version: u32,
    /// The LSN of the latest checkpoint record, written at the end of every
    /// checkpoint.
    pub checkpoint_lsn: u64,
    /// That checkpoint's REDO pointer (`checkPointCopy.redo`): every change
    /// with a WAL position below it is in the data files.
    pub redo_lsn: u64,
    /// The timeline of that checkpoint (`checkPointCopy.ThisTimeLineID`).
    pub timeline: u32,
}

/// What is wrong with `global/pg_control` or `postmaster.pid`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClusterFileError {
    /// `global/pg_control` is shorter than the fields read from it.
    #[error("pg_control is {0} bytes, too short")]
    ControlTooShort(usize),
    /// `global/pg_control`'s CRC-32C does not match its contents.
    #[error("pg_control's CRC does not verify (damaged, or being written)")]
    ControlCrc,
    /// A line of `postmaster.pid` that should hold a number does not.
    #[error("postmaster.pid line {line} ({what}) is missing or not a number")]
    PidLine {
        /// The line number (1-based).
        line: usize,
        /// What the line holds (PID, start time, port).
        what: &'static str,
    },
}

/// Offsets in `ControlFileData`, unchanged from PostgreSQL 11 (which removed
/// `prevCheckPoint`) to 18: `system_identifier` u64, `pg_control_version`
/// u32, `catalog_version_no` u32, `state` (an enum, 4 bytes, padded to 8),
/// `time` i64, `checkPoint` u64, then `checkPointCopy`, a `CheckPoint`
/// that starts with `redo` u64 and `ThisTimeLineID` u32.
const SYSID_AT: usize = 0;
const VERSION_AT: usize = 8;
const CHECKPOINT_AT: usize = 32;
const REDO_AT: usize = 40;
const TIMELINE_AT: usize = 48;
/// The CRC is the struct's last member and covers every byte before it;
/// its offset grows with the struct (288 for version 1300, 292 for 1800),
/// so it is looked for among the 4-byte aligned offsets up to this bound
/// rather than tabulated per version. A wrong offset verifies with
/// probability 2^-32 per candidate, and a cluster still has to match the
/// server's identifier and checkpoint to be trusted.
const MAX_CRC_AT: usize = 1024;

impl ControlFile {
    /// Parses the file's bytes (the file is 8192 bytes; only the start is
    /// used). The layout is the host's byte order, little-endian here.
    pub fn parse(bytes: &[u8]) -> Result<ControlFile, ClusterFileError> {
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        let too_short = || ClusterFileError::ControlTooShort(bytes.len());
        let system_identifier = u64_at(SYSID_AT).ok_or_else(too_short)?;
        let pg_control_version = u32_at(VERSION_AT).ok_or_else(too_short)?;
        let checkpoint_lsn = u64_at(CHECKPOINT_AT).ok_or_else(too_short)?;
        let redo_lsn = u64_at(REDO_AT).ok_or_else(too_short)?;
        let timeline = u32_at(TIMELINE_AT).ok_or_else(too_short)?;
        let verifies = (CHECKPOINT_AT + 8..MAX_CRC_AT)
            .step_by(4)
            .any(|at| u32_at(at).is_some_and(|crc| crc == crc32c(&bytes[..at])));
        if !verifies {
            return Err(ClusterFileError::ControlCrc);
        }
        Ok(ControlFile {
            system_identifier,
            pg_control_version,
            checkpoint_lsn,
            redo_lsn,
            timeline,
        })
    }
}

/// What the first lines of `postmaster.pid`, written by a running
/// postmaster, say of it (line 2, the data directory, is not needed: the
/// file is read from there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostmasterPid {
    /// The postmaster's PID, in its own PID namespace.
    pub pid: u32,
    /// When the postmaster started, seconds since 1970.
    pub start_time: i64,
    /// The port the postmaster listens on.
    pub port: u16,
}

impl PostmasterPid {
    /// Parses `postmaster.pid`'s text: the PID on its first line, the start
    /// time on the third and the port on the fourth.
    pub fn parse(text: &str) -> Result<PostmasterPid, ClusterFileError> {
        let lines: Vec<&str> = text.lines().collect();
        let line = |i: usize| lines.get(i).map(|l| l.trim()).unwrap_or("");
        let number = |i: usize, what: &'static str| {
            line(i)
                .parse::<i64>()
                .map_err(|_| ClusterFileError::PidLine { line: i + 1, what })
        };
        let pid = number(0, "PID")?;
        let start_time = number(2, "start time")?;
        let port = number(3, "port")?;
        Ok(PostmasterPid {
            pid: u32::try_from(pid).map_err(|_| ClusterFileError::PidLine {
                line: 1,
                what: "PID",
            })?,
            start_time,
            port: u16::try_from(port).map_err(|_| ClusterFileError::PidLine {
                line: 4,
                what: "port",
            })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pg_control as PostgreSQL 18 writes it: the CRC at 292.
    fn control(sysid: u64, checkpoint: u64, crc_at: usize) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[0..8].copy_from_slice(&sysid.to_le_bytes());
        b[8..12].copy_from_slice(&1800u32.to_le_bytes());
        b[32..40].copy_from_slice(&checkpoint.to_le_bytes());
        b[40..48].copy_from_slice(&checkpoint.wrapping_sub(0x28).to_le_bytes());
        b[48..52].copy_from_slice(&1u32.to_le_bytes());
        b[100] = 7;
        let crc = crc32c(&b[..crc_at]);
        b[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn control_file_parses_and_verifies() {
        for crc_at in [288, 292] {
            let b = control(7716545405941013115, 0x16E_F458, crc_at);
            let c = ControlFile::parse(&b).expect("valid");
            assert_eq!(c.system_identifier, 7716545405941013115);
            assert_eq!(c.pg_control_version, 1800);
            assert_eq!(c.checkpoint_lsn, 0x16E_F458);
            assert_eq!(c.redo_lsn, 0x16E_F430);
            assert_eq!(c.timeline, 1);
        }
        let mut b = control(1, 2, 292);
        b[40] ^= 1;
        assert_eq!(ControlFile::parse(&b), Err(ClusterFileError::ControlCrc));
        assert_eq!(
            ControlFile::parse(&b[..20]),
            Err(ClusterFileError::ControlTooShort(20))
        );
        assert_eq!(
            ControlFile::parse(&[0u8; 8192]),
            Err(ClusterFileError::ControlCrc)
        );
    }

    #[test]
    fn postmaster_pid_parses() {
        let text =
            "10997\n/tmp/th/d18\n1796648239\n54918\n/tmp/th\n\n 10035874         8\nready   \n";
        let p = PostmasterPid::parse(text).expect("valid");
        assert_eq!(
            p,
            PostmasterPid {
                pid: 10997,
                start_time: 1796648239,
                port: 54918,
            }
        );
        assert_eq!(
            PostmasterPid::parse("10997\n/d\n"),
            Err(ClusterFileError::PidLine {
                line: 3,
                what: "start time"
            })
        );
        assert!(PostmasterPid::parse("x\n/d\n1\n5432\n").is_err());
        assert!(PostmasterPid::parse("1\n/d\n1\n99999\n").is_err());
    }
}
