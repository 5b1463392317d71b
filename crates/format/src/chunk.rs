//! The unit of work between a source and a decoder.

/// A large buffer holding many whole rows of binary COPY data, with the
/// position of each row.
///
/// The COPY source reads the server's protocol stream straight into `data`,
/// so the bytes between rows are the 5-byte CopyData message headers (and
/// possibly other protocol messages); rows are located only through
/// `row_starts` / `row_ends`, never by searching. Each row is one binary COPY
/// tuple: an int16 field count followed by, per field, an int32 length (-1 for
/// NULL) and that many bytes. The file header and trailer are never inside a
/// row's range.
///
/// Offsets are `u32` so a chunk is at most 4 GiB; sources keep chunks far
/// smaller (tens of MiB) to bound memory.
#[derive(Debug, Default, Clone)]
pub struct CopyChunk {
    /// Raw bytes; only the ranges named by the offsets are rows.
    pub data: Vec<u8>,
    /// Byte offset in `data` where row `i` begins (at its field count).
    pub row_starts: Vec<u32>,
    /// Byte offset in `data` just past row `i`.
    pub row_ends: Vec<u32>,
    /// Which partition of the export this chunk came from (for messages).
    pub partition: u32,
    /// Index within the partition of this chunk's first row (for messages).
    pub first_row: u64,
}

impl CopyChunk {
    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.row_starts.len()
    }

    /// The bytes of row `i`. Panics if `i` is out of range or the offsets do
    /// not lie inside `data` (a source bug, not bad input: sources build the
    /// offsets from lengths they have checked against the buffer).
    pub fn row(&self, i: usize) -> &[u8] {
        &self.data[self.row_starts[i] as usize..self.row_ends[i] as usize]
    }

    /// Bytes of row data (excluding protocol framing between rows).
    pub fn row_bytes(&self) -> u64 {
        self.row_starts
            .iter()
            .zip(&self.row_ends)
            .map(|(s, e)| u64::from(e - s))
            .sum()
    }

    /// Appends one row, copying it (used by tests and by sources that
    /// assemble rows from separate buffers).
    pub fn push_row(&mut self, row: &[u8]) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(row);
        self.row_starts.push(start);
        self.row_ends.push(self.data.len() as u32);
    }
}
