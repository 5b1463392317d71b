//! Helpers shared by the integration tests.
#![allow(dead_code)]

use gpupg_localpg::LocalServer;
use gpupg_source::{BufferPool, ConnectConfig, Connection, CopyOutStats, SourceError};

pub fn connect(server: &LocalServer) -> Connection {
    connect_dsn(&server.dsn())
}

pub fn connect_dsn(dsn: &str) -> Connection {
    let cfg = ConnectConfig::resolve(Some(dsn)).expect("valid DSN");
    Connection::connect(&cfg).unwrap_or_else(|e| panic!("connect {dsn}: {e}"))
}

/// Runs a COPY and returns every row's bytes (buffers go back to the pool
/// as a decoder would give them back).
pub fn copy_rows(
    conn: &mut Connection,
    sql: &str,
    pool: &BufferPool,
) -> Result<(Vec<Vec<u8>>, CopyOutStats), SourceError> {
    let mut rows = Vec::new();
    let mut next_first_row = 0u64;
    let stats = conn.copy_out(sql, pool, 7, &mut |chunk| {
        assert_eq!(chunk.partition, 7);
        assert_eq!(chunk.first_row, next_first_row, "chunks out of order");
        assert!(chunk.num_rows() > 0, "empty chunk handed on");
        next_first_row += chunk.num_rows() as u64;
        for i in 0..chunk.num_rows() {
            rows.push(chunk.row(i).to_vec());
        }
        pool.give(chunk.data);
        Ok(())
    })?;
    assert_eq!(stats.rows, rows.len() as u64);
    assert_eq!(
        stats.row_bytes,
        rows.iter().map(|r| r.len() as u64).sum::<u64>()
    );
    Ok((rows, stats))
}

/// Splits one binary COPY tuple into its fields (None = NULL), checking the
/// framing is exact.
pub fn fields(row: &[u8]) -> Vec<Option<Vec<u8>>> {
    let n = i16::from_be_bytes([row[0], row[1]]) as usize;
    let mut pos = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(row[pos..pos + 4].try_into().unwrap());
        pos += 4;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(row[pos..pos + len as usize].to_vec()));
            pos += len as usize;
        }
    }
    assert_eq!(pos, row.len(), "row has trailing bytes");
    out
}

pub fn be_i32(v: &[u8]) -> i32 {
    i32::from_be_bytes(v.try_into().unwrap())
}
