/// Receives progress from the export threads; the CLI draws a bar with it.
pub trait Progress: Sync {
    /// Called once the table is known: estimated total rows (from the
    /// planner's statistics) when there are any.
    fn start(&self, estimated_rows: Option<u64>);
    /// Called by decoder threads after each chunk.
    fn advance(&self, rows: u64, copy_bytes: u64);
    /// Called when all data is written (before files are renamed).
    fn finish(&self);
}

/// Progress that goes nowhere (tests, non-terminal output).
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: Option<u64>) {}
    fn advance(&self, _: u64, _: u64) {}
    fn finish(&self) {}
}
