//! The cost of the heap path's dirty-page list from the WAL against the
//! one from `pg_buffercache`, on a throwaway server with 4 GB of shared
//! buffers (issue 17): a 1M-row table written out by a CHECKPOINT, 1,000
//! rows updated after it, then heap exports with `--heap-sync wal` and
//! `buffercache`, three each; prints each export's metadata time (which
//! holds the listing) and its sync line.
//!
//! ```text
//! cargo run -p gpupg-export --example wal_sync_bench
//! ```

use std::error::Error;

use gpupg_export::{stream, ExportRequest, HeapSync, NoProgress, Output, Source, Target};
use gpupg_localpg::{LocalServer, LocalServerOptions};
use gpupg_source::ConnectConfig;

fn main() -> Result<(), Box<dyn Error>> {
    let server = LocalServer::start_with(LocalServerOptions {
        extra_conf: vec![("shared_buffers".into(), "4GB".into())],
        ..Default::default()
    })?;
    server.psql(
        "CREATE EXTENSION pg_buffercache;
         CREATE TABLE t (a int, b int) WITH (fillfactor = 90);
         INSERT INTO t SELECT g, g FROM generate_series(1, 1000000) g;
         CHECKPOINT; VACUUM (FREEZE) t; CHECKPOINT;
         UPDATE t SET b = -b WHERE a % 1000 = 0;",
    )?;
    println!("{}", server.psql("SHOW shared_buffers")?.trim());
    for round in 0..3 {
        for sync in [HeapSync::Wal, HeapSync::BufferCache] {
            let mut req = ExportRequest::new(
                ConnectConfig::resolve(Some(&server.dsn()))?,
                Target::Table("t".into()),
                Output::Host,
            );
            req.source = Source::Heap;
            req.heap_threshold = 0;
            req.heap_sync = sync;
            let mut batches = stream(req, NoProgress)?;
            for batch in &mut batches {
                batch?;
            }
            let report = batches.finish()?;
            let line = report.heap.as_ref().map_or("", |h| h.sync.as_str());
            println!(
                "round {round} {sync:<11} metadata {:.3} s  {line}",
                report.phases.metadata
            );
        }
    }
    Ok(())
}
