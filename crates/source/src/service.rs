//! Connection services as libpq reads them: `service=NAME` (or `PGSERVICE`)
//! names a `[NAME]` section of the user's file or, when that file lacks it,
//! of the system's `pg_service.conf`; its `key=value` lines are defaults
//! for what the connection string leaves out. [`crate::dsn`] locates the
//! files.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::SourceError;

/// One `key=value` line of the service's section.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ServiceEntry {
    pub key: String,
    pub value: String,
    service: String,
    file: PathBuf,
    line: usize,
}

impl ServiceEntry {
    /// An error about this line, naming the service, the file and the line.
    pub(crate) fn error(&self, message: &str) -> SourceError {
        line_error(&self.service, &self.file, self.line, message)
    }
}

fn line_error(service: &str, file: &Path, line: usize, message: &str) -> SourceError {
    SourceError::Service {
        service: service.to_string(),
        message: format!("{}, line {line}: {message}", file.display()),
    }
}

/// The settings of service `name`: the user's file's section if it has one,
/// else the system file's (as in libpq, the two are not merged). A missing
/// file counts as one without the section.
pub(crate) fn lookup(
    name: &str,
    user_file: Option<&Path>,
    system_file: &Path,
) -> Result<Vec<ServiceEntry>, SourceError> {
    let error = |message: String| SourceError::Service {
        service: name.to_string(),
        message,
    };
    let mut looked_in = Vec::new();
    for file in user_file.into_iter().chain([system_file]) {
        let text = match std::fs::read(file) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| error(format!("{} is not UTF-8 text", file.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                looked_in.push(format!("{} (no such file)", file.display()));
                continue;
            }
            Err(e) => return Err(error(format!("cannot read {}: {e}", file.display()))),
        };
        if let Some(entries) = section(&text, name, file)? {
            return Ok(entries);
        }
        looked_in.push(file.display().to_string());
    }
    Err(error(format!(
        "no [{name}] section in {}",
        looked_in.join(" or ")
    )))
}

/// The lines of section `[name]` of a service file, `None` without one.
/// Like libpq: surrounding white space and `#` comment lines are ignored,
/// the first section of that name is used, and the text around `=` is
/// taken as it is.
fn section(text: &str, name: &str, file: &Path) -> Result<Option<Vec<ServiceEntry>>, SourceError> {
    let mut found: Option<Vec<ServiceEntry>> = None;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            if found.is_some() {
                break;
            }
            if header
                .strip_prefix(name)
                .is_some_and(|r| r.starts_with(']'))
            {
                found = Some(Vec::new());
            }
            continue;
        }
        let Some(entries) = found.as_mut() else {
            continue;
        };
        let at = |message: &str| line_error(name, file, index + 1, message);
        let Some((key, value)) = line.split_once('=') else {
            return Err(at("syntax error: no \"=\" (expected key=value)"));
        };
        if key == "service" {
            return Err(at("a service cannot name another service"));
        }
        entries.push(ServiceEntry {
            key: key.to_string(),
            value: value.to_string(),
            service: name.to_string(),
            file: file.to_path_buf(),
            line: index + 1,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn pairs(entries: &[ServiceEntry]) -> Vec<(&str, &str)> {
        entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect()
    }

    #[test]
    fn first_matching_section_with_comments_and_white_space() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "s.conf",
            "# comment\n[other]\nhost=x\n\n  [db]  \n  host=h1 \r\n# port=1\nport=5433\ndbname=a=b\n[db2]\nhost=no\n[db]\nhost=second\n",
        );
        let e = lookup("db", Some(&f), Path::new("/nonexistent")).unwrap();
        assert_eq!(
            pairs(&e),
            [("host", "h1"), ("port", "5433"), ("dbname", "a=b")]
        );
        // "[db2]" is not "[db]".
        assert_eq!(
            pairs(&lookup("db2", Some(&f), Path::new("/nonexistent")).unwrap()),
            [("host", "no")]
        );
    }

    #[test]
    fn user_file_first_then_system_file() {
        let dir = tempfile::tempdir().unwrap();
        let user = write(dir.path(), "user.conf", "[a]\nhost=user\n");
        let system = write(dir.path(), "sys.conf", "[a]\nhost=sys\n[b]\nhost=sys-b\n");
        let missing = dir.path().join("missing.conf");
        assert_eq!(
            pairs(&lookup("a", Some(&user), &system).unwrap()),
            [("host", "user")]
        );
        assert_eq!(
            pairs(&lookup("b", Some(&user), &system).unwrap()),
            [("host", "sys-b")]
        );
        assert_eq!(
            pairs(&lookup("a", Some(&missing), &system).unwrap()),
            [("host", "sys")]
        );
        assert_eq!(
            pairs(&lookup("a", None, &system).unwrap()),
            [("host", "sys")]
        );
    }

    #[test]
    fn errors_name_the_service_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let user = write(
            dir.path(),
            "user.conf",
            "[a]\nhost=x\nport 5\n[n]\nservice=a\n",
        );
        let missing = dir.path().join("missing.conf");
        let e = lookup("zz", Some(&user), &missing).unwrap_err().to_string();
        assert!(
            e.starts_with("service \"zz\": no [zz] section in ")
                && e.contains("user.conf or ")
                && e.contains("missing.conf (no such file)"),
            "{e}"
        );
        let e = lookup("a", Some(&user), &missing).unwrap_err().to_string();
        assert!(e.contains("user.conf, line 3: syntax error"), "{e}");
        let e = lookup("n", Some(&user), &missing).unwrap_err().to_string();
        assert!(e.contains("line 5: a service cannot name another"), "{e}");
    }
}
