//! A table written by a real server, read back as the bytes of its heap
//! file, for the page kernels' tests on the CPU twin (not every binary
//! that includes it uses it).
#![allow(dead_code)]

use gpupg_localpg::LocalServer;
use gpupg_source::{ConnectConfig, Connection};

/// A throwaway server and a connection to it.
pub struct ServerPages {
    server: LocalServer,
    conn: Connection,
}

impl ServerPages {
    /// Starts a server and connects to it.
    pub fn start() -> Self {
        let server = LocalServer::start().expect("start PostgreSQL");
        let config = ConnectConfig::resolve(Some(&server.dsn())).expect("the server's DSN");
        let conn = Connection::connect(&config).expect("connect");
        ServerPages { server, conn }
    }

    /// A server that ran `sql` (which creates and fills `table`), with
    /// the heap file of `table` (see [`Self::heap_file`]) and the blocks
    /// of its rows that match `special` (see [`Self::blocks_where`]).
    pub fn written(sql: &str, table: &str, special: &str) -> (Self, Vec<u8>, Vec<u32>) {
        let mut server = Self::start();
        server.query(sql);
        let data = server.heap_file(table);
        let blocks = server.blocks_where(table, special);
        (server, data, blocks)
    }

    /// Runs `sql` and returns the first column of every row (NULLs left
    /// out).
    pub fn query(&mut self, sql: &str) -> Vec<String> {
        let rows = self
            .conn
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect()
    }

    /// The heap file of `table` after a CHECKPOINT wrote its pages; the
    /// server's pages must be the 8 kB ones the twin reads.
    pub fn heap_file(&mut self, table: &str) -> Vec<u8> {
        self.query("CHECKPOINT");
        assert_eq!(
            self.query("SHOW block_size"),
            ["8192"],
            "the twin reads 8 kB pages"
        );
        eprintln!("PostgreSQL {}", self.query("SHOW server_version").remove(0));
        let rel = self
            .query(&format!("SELECT pg_relation_filepath('{table}')"))
            .remove(0);
        std::fs::read(self.server.data_dir().join(rel)).expect("the heap file")
    }

    /// The sorted block numbers of the rows of `table` that match `filter`
    /// (the pages the kernels must flag).
    pub fn blocks_where(&mut self, table: &str, filter: &str) -> Vec<u32> {
        let mut blocks: Vec<u32> = self
            .query(&format!(
                "SELECT DISTINCT ((ctid::text::point)[0])::int FROM {table} WHERE {filter}"
            ))
            .iter()
            .map(|b| b.parse().expect("a block number"))
            .collect();
        blocks.sort_unstable();
        blocks
    }
}
