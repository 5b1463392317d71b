use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use gpupg_source::pool::BufferPool;
use serde::Serialize;

use crate::interrupt::{cancellable, Interrupts};
use crate::source::copy::Session;
use crate::{ExportError, ExportRequest};

/// The server's own speed: the export's COPY statements on the same number
/// of connections, with the data received and thrown away.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingReport {
    /// Connections the statements ran on.
    pub connections: usize,
    /// Wall-clock seconds, connecting included.
    pub seconds: f64,
    /// Rows received.
    pub rows: u64,
    /// Bytes received from the server.
    pub bytes_received: u64,
}

/// Runs the COPY statements of `req` (same snapshot, ranges and connections
/// as [`crate::export`]) into nothing. The output settings of `req` are not
/// used.
pub fn measure_copy_ceiling(req: &ExportRequest<'_>) -> Result<CeilingReport, ExportError> {
    cancellable([req.cancel, None], |interrupts| measure(req, interrupts))
}

fn measure(req: &ExportRequest<'_>, interrupts: &Interrupts) -> Result<CeilingReport, ExportError> {
    let session = Session::begin(req, interrupts)?;
    let connections = session.connections(req);
    let (plan, conns) = session.open(req, interrupts)?;
    let pool = BufferPool::new(2 * connections, req.chunk_bytes);
    let next = AtomicUsize::new(0);
    let (rows, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let first_error = Mutex::new(None);
    let started = Instant::now();
    std::thread::scope(|s| {
        for (reader, mut conn) in conns.into_iter().enumerate() {
            let (pool, next, rows, bytes, first_error, plan) =
                (&pool, &next, &rows, &bytes, &first_error, &plan);
            s.spawn(move || {
                let mut run = || -> Result<(), ExportError> {
                    loop {
                        if req.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                            return Err(ExportError::Cancelled);
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(sql) = plan.statements.get(i) else {
                            break;
                        };
                        let stats = conn.copy_out(sql, pool, reader as u32, &mut |chunk| {
                            pool.give(chunk.data);
                            Ok(())
                        })?;
                        rows.fetch_add(stats.rows, Ordering::Relaxed);
                        bytes.fetch_add(stats.wire_bytes, Ordering::Relaxed);
                    }
                    conn.execute("COMMIT")?;
                    Ok(())
                };
                if let Err(e) = run() {
                    first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(CeilingReport {
        connections,
        seconds: started.elapsed().as_secs_f64(),
        rows: rows.into_inner(),
        bytes_received: bytes.into_inner(),
    })
}
