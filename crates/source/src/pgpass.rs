//! Where the password of a connection comes from: the connection string or
//! `PGPASSWORD`, else libpq's password file (`passfile`, `PGPASSFILE` or
//! `~/.pgpass`), read only when the server asks for a password.
//!
//! The file's lines are `hostname:port:database:username:password`; `*`
//! matches anything in the first four fields, `\` makes the next character
//! literal (`\:`, `\\`), lines starting with `#` are comments and the first
//! matching line wins. As libpq does, a file that is not a plain file or that
//! the group or others may access is ignored, and the reason is what the user
//! sees when the server then rejects the connection for want of a password.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::dsn::{ConnectConfig, Host, DEFAULT_SOCKET_DIRS};

/// The password of a connection and where it came from.
#[derive(Debug)]
pub(crate) enum Password {
    /// The connection string or `PGPASSWORD`.
    Given(String),
    /// A line of the password file.
    FromFile { password: String, file: PathBuf },
    /// None, and why not (a sentence for the user).
    Missing(String),
}

impl Password {
    /// The given password, else the password file's for this connection
    /// (an empty one counts as none, as in libpq).
    pub(crate) fn find(cfg: &ConnectConfig) -> Password {
        if let Some(p) = cfg.password.as_ref().filter(|p| !p.is_empty()) {
            return Password::Given(p.clone());
        }
        let Some(file) = &cfg.passfile else {
            return Password::Missing("no password file (no home directory)".to_string());
        };
        let text = match read(file) {
            Ok(t) => t,
            Err(why) => return Password::Missing(why),
        };
        let hosts = host_names(&cfg.host);
        let port = cfg.port.to_string();
        match find_in(&text, &hosts, &port, &cfg.dbname, &cfg.user) {
            Some(password) => Password::FromFile {
                password,
                file: file.clone(),
            },
            None => Password::Missing(format!(
                "no line of password file \"{}\" matches {}:{port}:{}:{}",
                file.display(),
                hosts.join(" or "),
                cfg.dbname,
                cfg.user
            )),
        }
    }

    /// The password, or the message for a server that asks for one.
    pub(crate) fn value(&self) -> Result<&str, String> {
        match self {
            Password::Given(p) | Password::FromFile { password: p, .. } => Ok(p),
            Password::Missing(why) => Err(format!(
                "the server asks for a password but none was given: {why} (set password in the connection string, PGPASSWORD or a line of the password file)"
            )),
        }
    }

    /// Where a password the server rejected came from, as libpq says it.
    pub(crate) fn origin(&self) -> Option<String> {
        match self {
            Password::FromFile { file, .. } => Some(format!(
                "password retrieved from file \"{}\"",
                file.display()
            )),
            _ => None,
        }
    }
}

/// The host names a line may give for this host: the name or socket
/// directory, and `localhost` for a socket in a default directory (libpq
/// says `localhost` for a connection to its own default socket).
fn host_names(host: &Host) -> Vec<String> {
    match host {
        Host::Tcp(h) => vec![h.clone()],
        Host::Unix(dir) => {
            let mut names = vec![dir.display().to_string()];
            if DEFAULT_SOCKET_DIRS.iter().any(|d| Path::new(d) == dir) {
                names.push("localhost".to_string());
            }
            names
        }
    }
}

/// The file's text, or why it is not used.
fn read(file: &Path) -> Result<String, String> {
    let shown = file.display();
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("password file \"{shown}\" does not exist"))
        }
        Err(e) => return Err(format!("cannot read password file \"{shown}\": {e}")),
    };
    if !meta.is_file() {
        return Err(format!("password file \"{shown}\" is not a plain file"));
    }
    // Other users must not read the passwords: libpq refuses such a file.
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "password file \"{shown}\" has group or world access; permissions should be u=rw (0600) or less"
        ));
    }
    let bytes =
        std::fs::read(file).map_err(|e| format!("cannot read password file \"{shown}\": {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("password file \"{shown}\" is not UTF-8 text"))
}

/// One field of a line: its text with escapes removed, and whether it was
/// a bare `*`.
struct Field {
    text: String,
    wildcard: bool,
}

/// The password of the first line that matches.
fn find_in(text: &str, hosts: &[String], port: &str, dbname: &str, user: &str) -> Option<String> {
    let matches = |f: &Field, v: &str| f.wildcard || f.text == v;
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(fields)
        .find(|f| {
            f.len() >= 5
                && !f[4].text.is_empty()
                && hosts.iter().any(|h| matches(&f[0], h))
                && matches(&f[1], port)
                && matches(&f[2], dbname)
                && matches(&f[3], user)
        })
        .map(|mut f| f.swap_remove(4).text)
}

/// The fields of a line, split at the colons no backslash escapes.
fn fields(line: &str) -> Vec<Field> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut escaped = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                escaped = true;
                // A trailing backslash stands for itself, as in libpq.
                text.push(chars.next().unwrap_or('\\'));
            }
            ':' => {
                let wildcard = text == "*" && !escaped;
                out.push(Field {
                    text: std::mem::take(&mut text),
                    wildcard,
                });
                escaped = false;
            }
            c => text.push(c),
        }
    }
    out.push(Field {
        wildcard: text == "*" && !escaped,
        text,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(text: &str, host: &str) -> Option<String> {
        find_in(text, &[host.to_string()], "5432", "db", "u")
    }

    #[test]
    fn first_matching_line_with_wildcards_and_escapes() {
        let text = "# h:5432:db:u:comment\n\
                    other:5432:db:u:no\n\
                    h:5433:db:u:wrong-port\n\
                    h:*:db:u:a\\:b\\\\c:ignored\n\
                    *:*:*:*:fallback\n";
        assert_eq!(find(text, "h").as_deref(), Some("a:b\\c"));
        assert_eq!(find(text, "elsewhere").as_deref(), Some("fallback"));
        // An escaped star is a literal star, not a wildcard.
        assert_eq!(find("\\*:*:*:*:p\n", "h"), None);
        assert_eq!(find("\\*:*:*:*:p\n", "*").as_deref(), Some("p"));
        // Escaped colons in a host (IPv6) and CRLF line ends.
        assert_eq!(
            find("\\:\\:1:5432:db:u:six\r\n", "::1").as_deref(),
            Some("six")
        );
        // Too few fields or an empty password: no match.
        assert_eq!(find("h:5432:db:u\nh:5432:db:u:\n", "h"), None);
    }

    #[test]
    fn given_password_first_and_an_empty_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pass");
        std::fs::write(&file, "h:5432:db:u:from-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let found = |dsn: &str| {
            let dsn = format!("host=h user=u dbname=db {dsn}");
            let path = file.to_str().map(str::to_string);
            let cfg = ConnectConfig::resolve_in_env(Some(&dsn), &|k| {
                (k == "PGPASSFILE").then(|| path.clone()).flatten()
            })
            .unwrap();
            Password::find(&cfg).value().map(str::to_string)
        };
        assert_eq!(found("password=given").as_deref(), Ok("given"));
        assert_eq!(found("password=''").as_deref(), Ok("from-file"));
        assert_eq!(found("").as_deref(), Ok("from-file"));
        let e = found("user=other").unwrap_err();
        assert!(
            e.contains("no line of password file") && e.contains("h:5432:db:other"),
            "{e}"
        );
    }

    #[test]
    fn localhost_stands_for_the_default_socket_directories() {
        for dir in DEFAULT_SOCKET_DIRS {
            let names = host_names(&Host::Unix(PathBuf::from(dir)));
            assert_eq!(names, [dir.to_string(), "localhost".to_string()]);
        }
        assert_eq!(host_names(&Host::Unix("/srv/pg".into())), ["/srv/pg"]);
        assert_eq!(host_names(&Host::Tcp("db".into())), ["db"]);
    }

    #[test]
    fn unsafe_or_odd_files_are_refused_with_libpq_words() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pgpass");
        std::fs::write(&f, "*:*:*:*:pw\n").unwrap();
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            match read(&f) {
                Ok(t) => assert!(ok, "{mode:o} accepted: {t}"),
                Err(e) => {
                    assert!(!ok, "{mode:o}: {e}");
                    assert!(e.contains("group or world access"), "{e}");
                }
            }
        }
        let e = read(dir.path()).unwrap_err();
        assert!(e.contains("not a plain file"), "{e}");
        let e = read(&dir.path().join("none")).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }
}
