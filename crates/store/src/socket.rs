//! The server's Unix socket: where it is by default (in a directory only
//! its user can write), binding it for the owner only, telling a live
//! server's socket from a stale file, and who is at the other end.

use std::fs::{DirBuilder, Metadata};
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// The socket's file name in its directory.
const SOCKET_NAME: &str = "store.sock";

/// Where the server listens and clients connect by default:
/// `$XDG_RUNTIME_DIR/gpupgparser/store.sock` when `XDG_RUNTIME_DIR` is an
/// absolute path to a directory this user owns and only this user can
/// write, else `/tmp/gpupgparser-UID/store.sock`. The directory is created
/// with mode 0700 when missing, then checked: it must be a directory (not
/// a symbolic link) owned by this user and writable by no one else, so no
/// other user can put a socket there first (the client checks its peer
/// anyway; this keeps the default path the user's own). Server and client
/// call it alike; an explicit socket path skips it.
///
/// ```no_run
/// let p = gpupg_store::default_socket_path()?;
/// assert!(p.ends_with("store.sock"));
/// # Ok::<(), gpupg_store::StoreError>(())
/// ```
pub fn default_socket_path() -> Result<PathBuf, StoreError> {
    let me = euid();
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    let dir = default_socket_dir(xdg.as_deref(), Path::new("/tmp"), me);
    ensure_private_dir(&dir, me)?;
    Ok(dir.join(SOCKET_NAME))
}

/// The default socket's directory: in `xdg` when that is a private
/// directory of user `me`, else `tmp/gpupgparser-ME`. An `XDG_RUNTIME_DIR`
/// that is not (another user's left in the environment by `su`, say) is
/// passed over rather than refused: it is not this user's to use.
fn default_socket_dir(xdg: Option<&Path>, tmp: &Path, me: u32) -> PathBuf {
    match xdg {
        Some(dir)
            if dir.is_absolute()
                && std::fs::symlink_metadata(dir).is_ok_and(|m| dir_problem(&m, me).is_none()) =>
        {
            dir.join("gpupgparser")
        }
        _ => tmp.join(format!("gpupgparser-{me}")),
    }
}

/// Creates `dir` with mode 0700 unless it exists, then checks it is a
/// private directory of user `me` ([`StoreError::UnsafeSocketDir`] says
/// what is wrong).
fn ensure_private_dir(dir: &Path, me: u32) -> Result<(), StoreError> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == IoKind::AlreadyExists => {}
        Err(e) => return Err(StoreError::io(format!("creating {}", dir.display()), e)),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| StoreError::io(format!("checking {}", dir.display()), e))?;
    match dir_problem(&meta, me) {
        None => Ok(()),
        Some(why) => Err(StoreError::UnsafeSocketDir {
            dir: dir.into(),
            why,
        }),
    }
}

/// What keeps a directory with metadata `m` (not followed through a link)
/// from being user `me`'s alone: `None` when it is.
fn dir_problem(m: &Metadata, me: u32) -> Option<String> {
    if m.file_type().is_symlink() {
        Some("is a symbolic link".into())
    } else if !m.is_dir() {
        Some("is not a directory".into())
    } else if m.uid() != me {
        Some(format!(
            "is owned by uid {}, not by this user (uid {me})",
            m.uid()
        ))
    } else if m.mode() & 0o022 != 0 {
        Some(format!(
            "is writable by its group or others (mode {:o})",
            m.mode() & 0o7777
        ))
    } else {
        None
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// The credentials of the process at the other end of `stream`, as the
/// kernel recorded them when it connected or listened (`SO_PEERCRED`).
pub(crate) fn peer_credentials(stream: &UnixStream) -> std::io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of the given length on a valid
    // socket descriptor.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if r == 0 {
        Ok(cred)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether a peer running as `uid` may be trusted with the store's
/// traffic: this process's user, or root (who can read its memory anyway).
pub(crate) fn trusted_uid(uid: u32) -> bool {
    uid == euid() || uid == 0
}

/// Checks that the process listening at `path`, reached by `stream`, is
/// this user's (or root's) before anything is sent to it: a socket path,
/// the default one in `/tmp` included, can be taken by another user first.
pub(crate) fn verify_server(stream: &UnixStream, path: &Path) -> Result<(), StoreError> {
    let cred = peer_credentials(stream).map_err(|e| {
        StoreError::io(
            format!("reading who listens on {} (SO_PEERCRED)", path.display()),
            e,
        )
    })?;
    if trusted_uid(cred.uid) {
        Ok(())
    } else {
        Err(StoreError::UntrustedPeer {
            path: path.into(),
            uid: cred.uid,
            me: euid(),
        })
    }
}

/// Binds `path` with mode 0600. A socket file a live server of this user
/// answers on is refused ([`StoreError::SocketInUse`]), one another user
/// listens on too ([`StoreError::UntrustedPeer`]); one nobody answers on is
/// stale and replaced; anything that is not a socket is left alone
/// ([`StoreError::NotASocket`]).
pub(crate) fn bind_owner_only(path: &Path) -> Result<UnixListener, StoreError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => return Err(StoreError::NotASocket(path.into())),
        Ok(_) => match UnixStream::connect(path) {
            Ok(stream) => {
                verify_server(&stream, path)?;
                return Err(StoreError::SocketInUse(path.into()));
            }
            Err(_) => std::fs::remove_file(path).map_err(|e| {
                StoreError::io(format!("removing the stale socket {}", path.display()), e)
            })?,
        },
        Err(e) if e.kind() == IoKind::NotFound => {}
        Err(e) => return Err(StoreError::io(format!("checking {}", path.display()), e)),
    }
    // Bound inside a fresh directory only the owner can enter, given mode
    // 0600 there, then linked into place: no moment where another user
    // could connect, no process-wide umask change, and (link never
    // replaces) a server starting at the same moment is not overwritten.
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let private = tempfile::Builder::new()
        .prefix(".gpupg-store-")
        .tempdir_in(parent)
        .map_err(|e| StoreError::io(format!("creating a directory in {}", parent.display()), e))?;
    let staged = private.path().join("s");
    let listener = UnixListener::bind(&staged)
        .map_err(|e| StoreError::io(format!("binding {}", path.display()), e))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| StoreError::io(format!("setting the mode of {}", path.display()), e))?;
    std::fs::hard_link(&staged, path).map_err(|e| match e.kind() {
        IoKind::AlreadyExists => StoreError::SocketInUse(path.into()),
        _ => StoreError::io(format!("creating the socket {}", path.display()), e),
    })?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_directory_is_private_to_its_user() {
        let me = euid();
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let fallback = tmp.join(format!("gpupgparser-{me}"));
        // No XDG_RUNTIME_DIR, a relative one, a missing one: /tmp.
        for xdg in [
            None,
            Some(Path::new("run")),
            Some(&root.path().join("none")),
        ] {
            assert_eq!(default_socket_dir(xdg, &tmp, me), fallback, "{xdg:?}");
        }
        // A private one: a directory of ours in it.
        let run = root.path().join("run");
        DirBuilder::new().mode(0o700).create(&run).unwrap();
        assert_eq!(
            default_socket_dir(Some(&run), &tmp, me),
            run.join("gpupgparser")
        );
        // One others may write, or another user's: passed over.
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert_eq!(default_socket_dir(Some(&run), &tmp, me), fallback);
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(
            default_socket_dir(Some(&run), &tmp, me + 1),
            tmp.join(format!("gpupgparser-{}", me + 1))
        );

        // Created with mode 0700 when missing, accepted when it exists.
        ensure_private_dir(&fallback, me).unwrap();
        let m = std::fs::symlink_metadata(&fallback).unwrap();
        assert_eq!(m.mode() & 0o777, 0o700);
        ensure_private_dir(&fallback, me).unwrap();
        // Refused, saying why: another owner, group or other write, a link,
        // a file.
        let refused = |dir: &Path, owner: u32| match ensure_private_dir(dir, owner) {
            Err(e @ StoreError::UnsafeSocketDir { .. }) => e.to_string(),
            other => panic!("{}: not refused: {other:?}", dir.display()),
        };
        let e = refused(&fallback, me + 1);
        assert!(
            e.starts_with(&format!(
                "{}: is owned by uid {me}, not by this user (uid {})",
                fallback.display(),
                me + 1
            )),
            "{e}"
        );
        std::fs::set_permissions(&fallback, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(refused(&fallback, me).contains("is writable by its group or others (mode 1777)"));
        std::fs::set_permissions(&fallback, std::fs::Permissions::from_mode(0o720)).unwrap();
        assert!(refused(&fallback, me).contains("(mode 720)"));
        let link = tmp.join("link");
        std::os::unix::fs::symlink(&run, &link).unwrap();
        assert!(refused(&link, me).contains("is a symbolic link"));
        let file = tmp.join("file");
        std::fs::write(&file, "").unwrap();
        assert!(refused(&file, me).contains("is not a directory"));
    }
}
