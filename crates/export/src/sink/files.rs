//! The sink of an export to files: Parquet or Arrow IPC through
//! `gpupg_sink`, into one file or one per partition (`--output-dir`), each
//! written to a temporary file renamed into place when the export ends.

use arrow_array::RecordBatch;
use gpupg_sink::{create_dir_sinks, create_file_sink, remove_other_parts, Sink};

use super::{BatchSink, SinkEnd, SinkSetup};
use crate::carry::{BatchOrigin, PageMap};
use crate::report::OutputFile;
use crate::{ExportError, ExportRequest, Output};

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

impl FileSink {
    /// Creates the output files of `req` (refusing existing ones unless
    /// overwriting); `req.output` must be a file or a directory.
    pub(crate) fn create(
        req: &ExportRequest<'_>,
        setup: &SinkSetup,
    ) -> Result<FileSink, ExportError> {
        let schema = setup.schema.clone();
        match &req.output {
            Output::File(path) => Ok(FileSink {
                sinks: vec![create_file_sink(path, schema, &req.sink)?],
                stale_parts: None,
            }),
            Output::Dir(dir) => Ok(FileSink {
                sinks: create_dir_sinks(dir, &setup.stem, setup.connections, schema, &req.sink)?,
                stale_parts: req.sink.overwrite.then(|| StaleParts {
                    dir: dir.clone(),
                    stem: setup.stem.clone(),
                    format: req.sink.format,
                    parts: setup.connections,
                }),
            }),
            Output::Device | Output::Host => Err(ExportError::Internal(
                "files asked for an output kept in memory".into(),
            )),
        }
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
