//! The COPY source: the connections of one export, all on the snapshot
//! the first one exported, each running COPY statements from a shared
//! queue and sending the chunks of whole rows they receive to the decoders.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use gpupg_format::CopyChunk;
use gpupg_source::{
    snapshot::{begin_exported_snapshot, begin_with_snapshot},
    ConnectConfig, Connection, SourceError,
};

use super::heap::pack::ChunkPacker;
use super::Work;
use crate::interrupt::Interrupts;
use crate::plan::{plan_export, ExportPlan};
use crate::state::{downstream, Shared};
use crate::{ExportError, ExportRequest};

/// The start of an export (or a ceiling measurement): the first connection
/// holds an exported snapshot, and the plan was read on it.
pub(crate) struct Session {
    pub plan: ExportPlan,
    leader: Connection,
    snapshot: String,
}

impl Session {
    pub(crate) fn begin(
        req: &ExportRequest<'_>,
        interrupts: &Interrupts,
    ) -> Result<Session, ExportError> {
        let mut leader = Connection::connect(&req.connect)?;
        interrupts.watch(&leader);
        let snapshot = match &req.snapshot {
            // A fragment of a plan: the coordinator's snapshot, which its
            // transaction keeps alive for every connection imports it.
            Some(id) => {
                import_snapshot(&mut leader, id)?;
                id.clone()
            }
            None => begin_exported_snapshot(&mut leader)?,
        };
        let plan = plan_export(&mut leader, req)?;
        Ok(Session {
            plan,
            leader,
            snapshot,
        })
    }

    /// Connections to use: no more than there are statements to run.
    pub(crate) fn connections(&self, req: &ExportRequest<'_>) -> usize {
        req.parallel.min(self.plan.statements.len()).max(1)
    }

    /// All connections of the export, the leader first, each in a
    /// transaction on the same snapshot.
    pub(crate) fn open(
        self,
        req: &ExportRequest<'_>,
        interrupts: &Interrupts,
    ) -> Result<(ExportPlan, Vec<Connection>), ExportError> {
        let n = self.connections(req);
        let mut conns = vec![self.leader];
        conns.extend(open_followers(
            &req.connect,
            &self.snapshot,
            n - 1,
            interrupts,
        )?);
        Ok((self.plan, conns))
    }
}

/// Opens `n` more connections in parallel, each inside a transaction on the
/// snapshot `snapshot`. Done before any data is read, because the
/// connection that exported the snapshot must keep its transaction open until
/// every other one has imported it.
fn open_followers(
    config: &ConnectConfig,
    snapshot: &str,
    n: usize,
    interrupts: &Interrupts,
) -> Result<Vec<Connection>, ExportError> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(move || -> Result<Connection, ExportError> {
                    let mut c = Connection::connect(config)?;
                    interrupts.watch(&c);
                    import_snapshot(&mut c, snapshot)?;
                    Ok(c)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| ExportError::ThreadPanicked("connect"))?
            })
            .collect()
    })
}

/// Starts `conn`'s transaction on the exported snapshot `id`; a snapshot
/// the server does not know (its exporting transaction ended, or a wrong
/// id) is [`ExportError::SnapshotGone`].
fn import_snapshot(conn: &mut Connection, id: &str) -> Result<(), ExportError> {
    begin_with_snapshot(conn, id).map_err(|e| match e {
        // 22023 invalid_parameter_value: "invalid snapshot identifier"
        // (a malformed id, or on older servers a gone one: 15); 42704
        // undefined_object: "snapshot ... does not exist" (a gone one on
        // newer servers: 18).
        SourceError::Server { code, message, .. }
            if (code == "22023" || code == "42704") && message.contains("snapshot") =>
        {
            ExportError::SnapshotGone {
                snapshot: id.to_string(),
                message,
            }
        }
        e => e.into(),
    })
}

/// One connection's thread: runs the statements of `statements` until the
/// queue closes, sending its chunks to `work` (on the heap path, small
/// chunks packed into full ones: `pack`), then commits.
pub(crate) fn read_copy(
    mut conn: Connection,
    partition: u32,
    statements: Receiver<String>,
    work: Sender<Work>,
    pack: bool,
    shared: &Shared<'_>,
) -> Result<(), ExportError> {
    let (pool, abort, counts) = (&shared.pool, &shared.abort, &shared.counts);
    let mut packer = ChunkPacker::new(pool.capacity());
    let send = |chunk: CopyChunk| -> Result<(), SourceError> {
        if abort.stopped() {
            return Err(downstream());
        }
        let t = Instant::now();
        let sent = work.send(Work::Rows(chunk));
        counts.send_wait.add(t.elapsed());
        sent.map_err(|_| downstream())
    };
    for sql in statements.iter() {
        if abort.stopped() {
            break;
        }
        let mut on_chunk = |chunk: CopyChunk| -> Result<(), SourceError> {
            if !pack {
                return send(chunk);
            }
            packer.push(chunk, pool).into_iter().try_for_each(send)
        };
        let stats = conn.copy_out(&sql, pool, partition, &mut on_chunk)?;
        counts
            .wire_bytes
            .fetch_add(stats.wire_bytes, Ordering::Relaxed);
    }
    if let Some(chunk) = packer.finish() {
        send(chunk)?;
    }
    if !abort.stopped() {
        conn.execute("COMMIT")?;
    }
    let mut wall = counts.copy_wall.lock().unwrap_or_else(|p| p.into_inner());
    *wall = (*wall).max(shared.copy_started.elapsed());
    Ok(())
}
