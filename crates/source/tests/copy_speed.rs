//! COPY framing throughput: how much CPU the reader spends per byte.
//! Run with optimizations:
//! cargo test -p gpupg-source --test copy_speed --config 'profile.dev.package.gpupg-source.opt-level=3' -- --ignored --nocapture

mod common;

use std::time::Instant;

use gpupg_localpg::LocalServer;
use gpupg_source::{copy_query_sql, BufferPool};

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[test]
#[ignore = "measurement; run in an optimized build"]
fn framing_throughput() {
    let server = LocalServer::start().unwrap();
    server
        .psql("CREATE TABLE w AS SELECT g::int8 AS a, (g * 3)::int8 AS b, g::float8 / 7 AS c FROM generate_series(1, 3000000) g")
        .unwrap();
    let mut c = common::connect(&server);
    let pool = BufferPool::new(4, 8 << 20);
    let sql = copy_query_sql("SELECT a, b, c FROM w");
    for _ in 0..3 {
        let wall = Instant::now();
        let cpu = thread_cpu_seconds();
        let mut rows = 0usize;
        let stats = c
            .copy_out(&sql, &pool, 0, &mut |chunk| {
                rows += chunk.num_rows();
                pool.give(chunk.data);
                Ok(())
            })
            .unwrap();
        let cpu = thread_cpu_seconds() - cpu;
        let wall = wall.elapsed().as_secs_f64();
        assert_eq!(rows, 3_000_000);
        assert_eq!(stats.rows, 3_000_000);
        let mb = stats.wire_bytes as f64 / 1e6;
        println!(
            "{mb:.0} MB, {} rows: wall {wall:.3}s ({:.0} MB/s, server-bound), reader CPU {cpu:.3}s ({:.0} MB/s per core)",
            stats.rows,
            mb / wall,
            mb / cpu
        );
    }
}
