//! Finding the PostgreSQL server programs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::LocalPgError;

/// The directory holding `initdb`, `pg_ctl`, `postgres` and `psql`.
///
/// Looks, in order, at the environment variable `GPUPGPARSER_PG_BIN`,
/// `pg_config --bindir`, the newest `/usr/lib/postgresql/*/bin`,
/// `/usr/local/pgsql/bin` and the newest `/opt/pg/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Result<PathBuf, LocalPgError> {
    let mut tried = Vec::new();

    if let Some(dir) = std::env::var_os("GPUPGPARSER_PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
        tried.push(format!("GPUPGPARSER_PG_BIN={}", dir.display()));
    }

    // pg_config may come from a client-only package (libpq-dev), so its
    // bindir is used only when the server programs are really there.
    match Command::new("pg_config").arg("--bindir").output() {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&dir) {
                return Ok(dir);
            }
            tried.push(format!("pg_config --bindir ({})", dir.display()));
        }
        _ => tried.push("pg_config --bindir (not runnable)".to_string()),
    }

    for (parent, suffix) in [
        ("/usr/lib/postgresql", "bin"),
        ("/usr/local/pgsql", ""),
        ("/opt/pg/usr/lib/postgresql", "bin"),
    ] {
        let candidates = if suffix.is_empty() {
            vec![Path::new(parent).join("bin")]
        } else {
            versioned_dirs(Path::new(parent), suffix)
        };
        for dir in candidates {
            if has_server(&dir) {
                return Ok(dir);
            }
        }
        tried.push(if suffix.is_empty() {
            format!("{parent}/bin")
        } else {
            format!("{parent}/*/{suffix}")
        });
    }

    Err(LocalPgError::NoBinDir {
        tried: tried.join(", "),
    })
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|p| dir.join(p).is_file())
}

/// `parent/<version>/suffix` for every numeric version directory, newest
/// first (versions compare numerically: 9.6 < 10 < 15).
fn versioned_dirs(parent: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            version.map(|v| (v, e.path().join(suffix)))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically_newest_first() {
        let dir = std::env::temp_dir().join(format!("gpupg-localpg-vers-{}", std::process::id()));
        for v in ["9.6", "10", "15", "notaversion"] {
            std::fs::create_dir_all(dir.join(v).join("bin")).unwrap();
        }
        let found = versioned_dirs(&dir, "bin");
        let names: Vec<String> = found
            .iter()
            .map(|p| {
                p.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names, ["15", "10", "9.6"]);
    }
}
