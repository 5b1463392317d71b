//! The server's Unix socket: where it is by default, binding it for the
//! owner only, and telling a live server's socket from a stale file.

use std::io::ErrorKind as IoKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// `$XDG_RUNTIME_DIR/gpupgparser-store-UID.sock` when that directory
/// exists (it is private to the user), else `/tmp/gpupgparser-store-UID.sock`.
///
/// ```
/// let p = gpupg_store::default_socket_path();
/// assert!(p.to_string_lossy().contains("gpupgparser-store-"));
/// ```
pub fn default_socket_path() -> PathBuf {
    // SAFETY: getuid cannot fail and has no preconditions.
    let uid = unsafe { libc::getuid() };
    let name = format!("gpupgparser-store-{uid}.sock");
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() && dir.is_dir() => dir.join(name),
        _ => PathBuf::from("/tmp").join(name),
    }
}

/// Binds `path` with mode 0600. A socket file a live server answers on is
/// refused ([`StoreError::SocketInUse`]); one nobody answers on is stale
/// and replaced; anything that is not a socket is left alone
/// ([`StoreError::NotASocket`]).
pub(crate) fn bind_owner_only(path: &Path) -> Result<UnixListener, StoreError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => return Err(StoreError::NotASocket(path.into())),
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(StoreError::SocketInUse(path.into())),
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

/// Whether the peer of `stream` runs as this process's user (or root):
/// the socket's mode already keeps others out; this also holds where the
/// file system ignores modes.
pub(crate) fn peer_is_owner(stream: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
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
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    r == 0 && (cred.uid == me || cred.uid == 0)
}
