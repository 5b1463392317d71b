//! Which operating-system user runs the server programs.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::error::LocalPgError;

/// The user the server programs run as: the current one, or `postgres` when
/// this process is root (PostgreSQL refuses to run as root).
#[derive(Debug, Clone, Copy)]
pub(crate) enum RunAs {
    Current,
    User { uid: u32, gid: u32 },
}

impl RunAs {
    pub(crate) fn detect() -> Result<RunAs, LocalPgError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(RunAs::Current);
        }
        let (uid, gid) = lookup_user("postgres").ok_or(LocalPgError::NoPostgresUser)?;
        Ok(RunAs::User { uid, gid })
    }

    /// Makes `cmd` run as this user.
    pub(crate) fn apply(self, cmd: &mut Command) {
        if let RunAs::User { uid, gid } = self {
            cmd.uid(uid).gid(gid);
            // The child must not inherit root's HOME (it may not be readable).
            cmd.env("HOME", "/tmp");
        }
    }

    /// Gives `path` to this user so the server can write it.
    pub(crate) fn chown(self, path: &Path) -> Result<(), LocalPgError> {
        if let RunAs::User { uid, gid } = self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| {
                LocalPgError::Io {
                    what: "giving the server's directory to user postgres",
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// uid and gid of `name` from the password database.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    // getpwnam_r with a caller-owned buffer: getpwnam's static result would
    // race with other threads starting servers at the same time.
    // SAFETY: passwd is a plain C struct of integers and pointers, for
    // which all zeros is a valid (null-pointer) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; buf's length is passed.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some((pwd.pw_uid, pwd.pw_gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_user_exists_and_missing_user_does_not() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-gpupg"), None);
    }
}
