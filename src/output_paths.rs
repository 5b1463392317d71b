//! Checks of the files an export will write, made before it connects: a
//! mistake in a path is refused at once, not after the table was read (or,
//! for the report, after the output was written).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use gpupg_export::Output;
use gpupg_sink::{Format, FormatChoiceError};

/// The format of an `--output` file: `--format` when given, else its
/// extension's ([`gpupg_sink::output_format`]), in the flags' words.
pub fn output_format(path: &Path, given: Option<Format>) -> Result<Format> {
    gpupg_sink::output_format(path, given).map_err(|e| match e {
        FormatChoiceError::UnknownExtension(ext) => anyhow::anyhow!(
            "--output {}: .{ext} is not an output format (Parquet: .parquet, .pq; Arrow IPC: \
             .arrow, .arrows, .ipc, .feather; or give --format)",
            path.display()
        ),
        FormatChoiceError::Disagree { named, given } => anyhow::anyhow!(
            "--output {}: the name says {named} but --format says {given}",
            path.display()
        ),
    })
}

/// Refuses, before anything is read: an output or report that exists
/// (without `overwrite`) or is a directory, one whose directory is missing,
/// a report that is the output file or one of `--output-dir`'s data files.
pub fn check(
    output: &Output,
    format: Format,
    report: Option<&Path>,
    overwrite: bool,
) -> Result<()> {
    match output {
        Output::File(path) => check_file("--output", path, overwrite)?,
        Output::Dir(dir) => {
            if dir.exists() && !dir.is_dir() {
                bail!("--output-dir {}: is not a directory", dir.display());
            }
        }
        Output::Device | Output::Host => {}
    }
    let Some(report) = report else {
        return Ok(());
    };
    check_file("--report", report, overwrite)?;
    let same = |a: &Path, b: &Path| resolved(a).is_some() && resolved(a) == resolved(b);
    match output {
        Output::File(path) if same(report, path) => {
            bail!("--report {}: is the --output file", report.display())
        }
        Output::Dir(dir)
            if same(&directory_of(report), dir) && is_data_file_name(report, format) =>
        {
            bail!(
                "--report {}: could be one of the --output-dir files",
                report.display()
            )
        }
        _ => Ok(()),
    }
}

/// `what` may be written at `path`: not a directory, its directory exists,
/// and it does not exist unless `overwrite`.
pub fn check_file(what: &str, path: &Path, overwrite: bool) -> Result<()> {
    if path.is_dir() {
        bail!("{what} {}: is a directory", path.display());
    }
    let dir = directory_of(path);
    if !dir.is_dir() {
        bail!(
            "{what} {}: the directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    if !overwrite && path.symlink_metadata().is_ok() {
        bail!(
            "{what} {}: already exists (use --overwrite to replace it)",
            path.display()
        );
    }
    Ok(())
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The path with links and `..` resolved, also for a file that does not
/// exist yet (its directory resolved, its name kept).
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let name = path.file_name()?;
    Some(directory_of(path).canonicalize().ok()?.join(name))
}

/// Whether `path` has the form of an `--output-dir` file: `STEM-NNNNN.EXT`.
fn is_data_file_name(path: &Path, format: Format) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let Some(stem) = name
        .as_deref()
        .and_then(|n| n.strip_suffix(&format!(".{}", format.extension())))
    else {
        return false;
    };
    stem.rsplit_once('-')
        .is_some_and(|(_, n)| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names() {
        let f = |p: &str, g| output_format(Path::new(p), g).map_err(|e| e.to_string());
        assert_eq!(f("a.parquet", None), Ok(Format::Parquet));
        assert_eq!(f("a.Feather", None), Ok(Format::Arrow));
        assert_eq!(f("a", None), Ok(Format::Parquet));
        assert_eq!(f("a", Some(Format::Arrow)), Ok(Format::Arrow));
        assert_eq!(f("a.bin", Some(Format::Arrow)), Ok(Format::Arrow));
        assert!(f("a.csv", None).is_err_and(|e| e.contains(".csv is not an output format")));
        assert!(f("a.parquet", Some(Format::Arrow))
            .is_err_and(|e| e.contains("the name says parquet but --format says arrow")));
    }

    #[test]
    fn data_file_names() {
        assert!(is_data_file_name(
            Path::new("d/app.t-00001.parquet"),
            Format::Parquet
        ));
        assert!(!is_data_file_name(
            Path::new("d/app.t-00001.arrow"),
            Format::Parquet
        ));
        assert!(!is_data_file_name(
            Path::new("d/report.json"),
            Format::Parquet
        ));
    }
}
