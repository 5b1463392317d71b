//! The sink of an export to files: Parquet or Arrow IPC through
//! `gpupg_sink`, into one file or one per partition (`--output-dir`), each
//! written to a temporary file renamed into place when the export ends.

use arrow_array::RecordBatch;
use std::path::Path;

use gpupg_sink::{create_dir_sinks, create_file_sink, remove_other_parts, Sink, SinkOptions};

use super::{BatchSink, SinkEnd, SinkSetup};
use crate::carry::{BatchOrigin, PageMap};
use crate::report::OutputFile;
use crate::ExportError;

/// The files of one export.
pub(crate) struct FileSink {
    /// One sink, or one per partition.
    sinks: Vec<Box<dyn Sink>>,
    /// With `--output-dir --overwrite`: the parts of an earlier export
    /// this one did not write are removed at the end.
    stale_parts: Option<StaleParts>,
}

/// Which files of `--output-dir` are this export's own.
struct StaleParts {
    dir: std::path::PathBuf,
    stem: String,
    format: gpupg_sink::Format,
    parts: usize,
}

/// Which files an export writes.
pub(crate) enum Files<'a> {
    /// One file (`--output`).
    One(&'a Path),
    /// One file per partition in a directory (`--output-dir`).
    Dir(&'a Path),
}

impl FileSink {
    /// Creates the output files (refusing existing ones unless `opts` says
    /// to overwrite them).
    pub(crate) fn create(
        files: Files<'_>,
        opts: &SinkOptions,
        setup: &SinkSetup,
    ) -> Result<FileSink, ExportError> {
        let schema = setup.schema.clone();
        Ok(match files {
            Files::One(path) => FileSink {
                sinks: vec![create_file_sink(path, schema, opts)?],
                stale_parts: None,
            },
            Files::Dir(dir) => FileSink {
                sinks: create_dir_sinks(dir, &setup.stem, setup.connections, schema, opts)?,
                stale_parts: opts.overwrite.then(|| StaleParts {
                    dir: dir.to_path_buf(),
                    stem: setup.stem.clone(),
                    format: opts.format,
                    parts: setup.connections,
                }),
            },
        })
    }
}

impl BatchSink<RecordBatch> for FileSink {
    type Kept = ();

    fn write(&self, batch: RecordBatch, partition: u32, _: BatchOrigin) -> Result<(), ExportError> {
        let last = self.sinks.len().saturating_sub(1);
        match self.sinks.get((partition as usize).min(last)) {
            Some(sink) => Ok(sink.write(&batch)?),
            None => Err(ExportError::Internal("a file export without files".into())),
        }
    }

    fn finish(self, _: &mut PageMap) -> Result<SinkEnd<()>, ExportError> {
        let mut end = SinkEnd::nothing();
        for sink in self.sinks {
            let stats = sink.finish()?;
            end.encode_seconds += stats.encode_seconds;
            end.files.extend(
                stats
                    .files
                    .into_iter()
                    .map(|(path, bytes)| OutputFile { path, bytes }),
            );
        }
        if let Some(s) = self.stale_parts {
            remove_other_parts(&s.dir, &s.stem, s.format, s.parts)?;
        }
        Ok(end)
    }
}
