use gpupg_source::{
    snapshot::{begin_exported_snapshot, begin_with_snapshot},
    ConnectConfig, Connection,
};

use crate::interrupt::Interrupts;
use crate::plan::{plan_export, ExportPlan};
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
        let snapshot = begin_exported_snapshot(&mut leader)?;
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
                    begin_with_snapshot(&mut c, snapshot)?;
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
