use gpupg_source::{snapshot::begin_with_snapshot, ConnectConfig, Connection};

use crate::ExportError;

/// Opens `n` more connections in parallel, each inside a transaction on the
/// snapshot `snapshot`. Done before any data is read, because the
/// connection that exported the snapshot must keep its transaction open until
/// every other one has imported it.
pub(crate) fn open_followers(
    config: &ConnectConfig,
    snapshot: &str,
    n: usize,
) -> Result<Vec<Connection>, ExportError> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(move || -> Result<Connection, ExportError> {
                    let mut c = Connection::connect(config)?;
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
