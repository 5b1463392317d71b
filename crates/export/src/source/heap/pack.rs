//! Packs the small chunks of short COPY statements into full ones. On the
//! heap path the connections run one COPY per run of pages the readers
//! could not trust; when those pages are scattered (an UPDATE of 1% of
//! lineorder's rows leaves about 16% of its pages so), most statements
//! return a few rows, and each chunk was decoded, and on the GPU kept, on
//! its own: 260,898 device batches for lineorder, 53.8 s into device
//! memory. A connection now appends a small chunk's rows to the chunk it
//! holds until that one is half full.

use gpupg_format::CopyChunk;
use gpupg_source::BufferPool;

/// One connection's chunk being filled with the rows of small ones.
pub(crate) struct ChunkPacker {
    held: Option<CopyChunk>,
    /// Chunks of fewer bytes than this are packed; a packed chunk of at
    /// least this many is sent.
    small: usize,
}

impl ChunkPacker {
    /// A packer for chunks of `chunk_bytes`.
    pub(crate) fn new(chunk_bytes: usize) -> ChunkPacker {
        ChunkPacker {
            held: None,
            small: chunk_bytes / 2,
        }
    }

    /// Takes a chunk the connection received; returns the chunks to send
    /// on now (none, or one). A packed chunk's rows keep their bytes; only
    /// their offsets move. Buffers are never grown (page-locked pool
    /// buffers must stay where they are): two chunks under half a pool
    /// buffer always fit one, and should the held one be another buffer
    /// without room, it is sent and the new one held instead.
    pub(crate) fn push(&mut self, chunk: CopyChunk, pool: &BufferPool) -> Vec<CopyChunk> {
        if chunk.data.len() >= self.small || chunk.row_starts.is_empty() {
            return vec![chunk];
        }
        let Some(mut held) = self.held.take() else {
            self.held = Some(chunk);
            return Vec::new();
        };
        if held.data.len() + chunk.data.len() > held.data.capacity() {
            self.held = Some(chunk);
            return vec![held];
        }
        let base = held.data.len() as u32;
        held.data.extend_from_slice(&chunk.data);
        held.row_starts
            .extend(chunk.row_starts.iter().map(|s| s + base));
        held.row_ends
            .extend(chunk.row_ends.iter().map(|e| e + base));
        pool.give(chunk.data);
        if held.data.len() >= self.small {
            vec![held]
        } else {
            self.held = Some(held);
            Vec::new()
        }
    }

    /// The chunk still held, at the end of the connection's statements.
    pub(crate) fn finish(&mut self) -> Option<CopyChunk> {
        self.held.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(pool: &BufferPool, rows: &[&[u8]]) -> CopyChunk {
        let mut data = pool.take();
        data.clear();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        for r in rows {
            // Framing bytes between rows, as a COPY stream has.
            data.extend_from_slice(b"--");
            starts.push(data.len() as u32);
            data.extend_from_slice(r);
            ends.push(data.len() as u32);
        }
        CopyChunk {
            data,
            row_starts: starts,
            row_ends: ends,
            partition: 3,
            first_row: 0,
        }
    }

    fn rows(c: &CopyChunk) -> Vec<Vec<u8>> {
        (0..c.num_rows())
            .map(|i| c.data[c.row_starts[i] as usize..c.row_ends[i] as usize].to_vec())
            .collect()
    }

    #[test]
    fn small_chunks_are_packed_until_half_full() {
        let pool = BufferPool::new(8, 64 * 1024);
        let mut p = ChunkPacker::new(64 * 1024);
        let mut sent = Vec::new();
        let mut want = Vec::new();
        for i in 0..400u32 {
            let row = vec![i as u8; 100 + i as usize % 7];
            want.push(row.clone());
            sent.extend(p.push(chunk(&pool, &[&row]), &pool));
        }
        sent.extend(p.finish());
        // 400 rows of about 105 bytes (plus framing): one chunk sent when
        // half full (32 KiB), the rest at the end.
        assert_eq!(
            sent.len(),
            2,
            "{:?}",
            sent.iter().map(|c| c.num_rows()).collect::<Vec<_>>()
        );
        let got: Vec<Vec<u8>> = sent.iter().flat_map(rows).collect();
        assert_eq!(got, want);
        assert!(sent
            .iter()
            .all(|c| c.data.capacity() == 64 * 1024 && c.partition == 3));
    }

    #[test]
    fn large_and_empty_chunks_pass_through() {
        let pool = BufferPool::new(8, 64 * 1024);
        let mut p = ChunkPacker::new(64 * 1024);
        let big = vec![7u8; 40 * 1024];
        let out = p.push(chunk(&pool, &[&big]), &pool);
        assert_eq!(out.len(), 1);
        assert!(p.push(chunk(&pool, &[]), &pool).len() == 1);
        assert!(p.finish().is_none());
        // Two small chunks that together pass half the buffer: sent as one,
        // rows in order.
        let a = vec![1u8; 20 * 1024];
        let b = vec![2u8; 30 * 1024];
        assert!(p.push(chunk(&pool, &[&a]), &pool).is_empty());
        let out = p.push(chunk(&pool, &[&b, &a[..10]]), &pool);
        assert_eq!(out.len(), 1);
        assert_eq!(rows(&out[0]), vec![a.clone(), b.clone(), a[..10].to_vec()]);
        assert!(p.finish().is_none());
    }
}
