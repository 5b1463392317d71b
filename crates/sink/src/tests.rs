//! I/O failures injected below the encoders: a writer that runs out of space.

use std::io::{self, Write};
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::ipc::IpcSink;
use crate::parquet_sink::ParquetSink;
use crate::target::OutputTarget;
use crate::{Compression, Format, Sink, SinkError, SinkOptions};

const ENOSPC: i32 = 28;

/// Accepts `room` bytes, then fails every write with ENOSPC, like a full disk.
struct FullDisk {
    room: usize,
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
    ]))
}

fn batch(rows: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows)),
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("value {i}")),
            )),
        ],
    )
    .unwrap()
}

fn sink_over(format: Format, dir: &std::path::Path, room: usize) -> Box<dyn Sink> {
    let path = dir.join(format!("full.{}", format.extension()));
    let (target, _file) = OutputTarget::create(&path, false).unwrap();
    let opts = SinkOptions {
        format,
        compression: Compression::None,
        overwrite: false,
        row_group_rows: 1000,
    };
    match format {
        Format::Parquet => {
            Box::new(ParquetSink::with_writer(target, FullDisk { room }, schema(), &opts).unwrap())
        }
        Format::Arrow => {
            Box::new(IpcSink::with_writer(target, FullDisk { room }, schema(), &opts).unwrap())
        }
    }
}

fn assert_enospc(err: &SinkError, dir: &std::path::Path) {
    match err {
        SinkError::Io { path, source, .. } => {
            assert_eq!(source.raw_os_error(), Some(ENOSPC), "{err}");
            assert!(path.starts_with(dir), "{err}");
        }
        other => panic!("expected SinkError::Io, got {other}"),
    }
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("full."), "{line}");
    assert!(line.contains("No space left on device"), "{line}");
}

#[test]
fn disk_full_while_writing_parquet_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_over(Format::Parquet, dir.path(), 4096);
    // 1000-row groups of ~20 KB each: the first append to hit the limit must fail.
    let err = (0..10)
        .find_map(|_| sink.write(&batch(1000)).err())
        .expect("writes beyond the room succeeded");
    assert_enospc(&err, dir.path());
    assert!(err.to_string().contains("appending a row group"), "{err}");
    // The sink refuses further use, and dropping it removes the temporary file.
    assert!(matches!(
        sink.write(&batch(10)),
        Err(SinkError::Failed { .. })
    ));
    drop(sink);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn disk_full_while_writing_parquet_footer() {
    let dir = tempfile::tempdir().unwrap();
    // Room for the header and a small row group, not for the footer.
    let sink = sink_over(Format::Parquet, dir.path(), 200);
    sink.write(&batch(3)).unwrap();
    let err = sink.finish().unwrap_err();
    assert_enospc(&err, dir.path());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn disk_full_while_writing_arrow_ipc() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_over(Format::Arrow, dir.path(), 64 * 1024);
    // The 1 MiB write buffer delays the error until it spills or the file is finished.
    let err = (0..200)
        .find_map(|_| sink.write(&batch(1000)).err())
        .expect("writes beyond the room succeeded");
    assert_enospc(&err, dir.path());
    drop(sink);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let sink = sink_over(Format::Arrow, dir.path(), 64);
    sink.write(&batch(10)).unwrap();
    let err = sink.finish().unwrap_err();
    assert_enospc(&err, dir.path());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
