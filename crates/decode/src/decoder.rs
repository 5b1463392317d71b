//! The CPU decoder: pass 1 (framing into an offsets table) and pass 2
//! (column by column into Arrow buffers), block by block.

use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchOptions};
use gpupg_format::copy::FramingError;
use gpupg_format::heap::{PageColumns, PageHeader, TupleLayout, ValueForm};
use gpupg_format::CopyChunk;

use crate::builder::{Col, ColErr, Ctx, ValueFailure};
use crate::schema::{type_name, OutputSchema};
use crate::{DecodeError, DecodeStats, Decoder};

/// Rows per block: the offsets table (8 bytes × columns × rows) and the
/// block's row bytes stay in L2 between the two passes, so pass 2 does not
/// fetch each row from memory once per column. 512 measured best on the
/// lineorder-like benchmark (256 and 1024-2048 were 3-15% slower).
const BLOCK_ROWS: usize = 512;

/// Decodes binary COPY chunks on the CPU. Scratch space (the offsets
/// table, array element offsets) is kept between chunks.
pub struct CpuDecoder {
    schema: Arc<OutputSchema>,
    cols: Vec<Col>,
    /// Pass 1 output for one block, column-major: the value start (offset in
    /// the chunk's data) and length (-1 for NULL) of column `c`, row `r` are
    /// at `c * block + r`, so pass 2 reads each column contiguously.
    starts: Vec<u32>,
    lens: Vec<i32>,
    /// The located values of a block of heap pages ([`CpuDecoder::decode_pages`]).
    page_columns: Option<PageColumns>,
    stats: DecodeStats,
}

/// Heap pages per block of [`CpuDecoder::decode_pages`]: a few hundred
/// rows, so the located values and the pages stay in L2 between locating
/// and decoding, as [`BLOCK_ROWS`] does for COPY rows.
const BLOCK_PAGES: usize = 8;

/// What [`CpuDecoder::decode_pages`] gives.
#[derive(Debug)]
pub struct PagesDecoded {
    /// The rows of the pages decoded; `None` when there are none.
    pub batch: Option<RecordBatch>,
    /// The pages left to the heap converter
    /// ([`transcode_page`](gpupg_format::heap::transcode_page)), as indexes
    /// into the `pages` given: a value in a form read only there
    /// (compressed, out of line) or refused by it, or a page it must judge.
    pub flagged: Vec<u32>,
}

impl CpuDecoder {
    /// A decoder producing batches of `schema`; its buffers are reused from
    /// one chunk to the next.
    pub fn new(schema: Arc<OutputSchema>) -> Self {
        let arrow = schema.arrow_schema();
        let cols = schema
            .plans
            .iter()
            .zip(arrow.fields())
            .map(|(p, f)| Col::new(p, f.data_type().clone(), f.is_nullable()))
            .collect();
        CpuDecoder {
            schema,
            cols,
            starts: Vec::new(),
            lens: Vec::new(),
            page_columns: None,
            stats: DecodeStats::default(),
        }
    }

    /// Decodes heap pages straight into columns, without binary COPY rows
    /// in between: page `k` is `data[pages[k] * block_size..]`, block
    /// `blocks[k]` of a relation whose tuples `layout` describes (its output
    /// columns are this decoder's schema). The pages must be ones the
    /// caller trusts to hold exactly the rows it wants (all-visible, not
    /// changed since its snapshot).
    ///
    /// The rows come out in page order, and within a page in line pointer
    /// order, the order of `transcode_page`'s rows. A value of a form this
    /// does not read flags its page instead; a value that is wrong for its
    /// column (a date out of range, invalid UTF-8...) is an error naming
    /// the block and line pointer, as the COPY path would report its row.
    pub fn decode_pages(
        &mut self,
        data: &[u8],
        pages: &[u32],
        blocks: &[u32],
        layout: &TupleLayout,
    ) -> Result<PagesDecoded, DecodeError> {
        let ncols = self.cols.len();
        let bs = layout.block_size();
        if layout.output().len() != ncols || blocks.len() != pages.len() {
            return Err(DecodeError::BadChunk {
                partition: 0,
                first_row: 0,
                reason: format!(
                    "{} heap output columns for {ncols} decoder columns, {} pages and {} block numbers",
                    layout.output().len(),
                    pages.len(),
                    blocks.len()
                ),
            });
        }
        let page_at = |k: usize| pages[k] as usize * bs;
        // Line pointers bound the rows; reserving for them avoids regrowth.
        let estimate: usize = (0..pages.len())
            .filter_map(|k| data.get(page_at(k)..).and_then(PageHeader::read))
            .map(|h| usize::from(h.lower).saturating_sub(24) / 4)
            .sum();
        for col in &mut self.cols {
            col.begin(estimate);
        }
        let mut pc = match self.page_columns.take() {
            Some(mut pc) if pc.fits(layout) => {
                pc.clear();
                pc
            }
            _ => PageColumns::new(layout),
        };
        let mut flagged = Vec::new();
        // Per page of the block: its block number and first row.
        let mut firsts: Vec<(u32, usize)> = Vec::with_capacity(BLOCK_PAGES);
        let mut ctx = Ctx::default();
        let mut rows = 0usize;
        let mut k = 0;
        while k < pages.len() {
            let end = (k + BLOCK_PAGES).min(pages.len());
            pc.clear();
            firsts.clear();
            for (j, &block) in blocks.iter().enumerate().take(end).skip(k) {
                let first = pc.rows();
                match pc.add_page(layout, data, page_at(j), block) {
                    Ok(_) => firsts.push((block, first)),
                    Err(_) => flagged.push(j as u32),
                }
            }
            k = end;
            for (c, values) in pc.columns().iter().enumerate() {
                let res = match values.form {
                    ValueForm::Stored => self.cols[c].append_stored(
                        data,
                        &values.sent,
                        &values.starts,
                        &values.lens,
                        &mut ctx,
                    ),
                    ValueForm::Sent => {
                        self.cols[c].append(&values.sent, &values.starts, &values.lens, &mut ctx)
                    }
                };
                if let Err(ColErr { index, fail }) = res {
                    let block = firsts
                        .iter()
                        .rev()
                        .find(|&&(_, first)| first <= index)
                        .map_or(0, |&(b, _)| b);
                    let col = &self.schema.columns()[c];
                    return Err(DecodeError::HeapValue {
                        column: col.name.clone(),
                        type_name: type_name(col),
                        block,
                        offnum: pc.offnum(index).unwrap_or(0),
                        failure: fail,
                    });
                }
            }
            rows += pc.rows();
        }
        self.page_columns = Some(pc);
        if rows == 0 {
            return Ok(PagesDecoded {
                batch: None,
                flagged,
            });
        }
        Ok(PagesDecoded {
            batch: Some(self.finish_batch(rows, &ctx)?),
            flagged,
        })
    }

    /// The batch of the `rows` rows appended since the columns began.
    fn finish_batch(&mut self, rows: usize, ctx: &Ctx) -> Result<RecordBatch, DecodeError> {
        let arrays = self
            .cols
            .iter_mut()
            .map(Col::finish)
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new_with_options(
            self.schema.arrow_schema(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        self.stats.rows += rows as u64;
        self.stats.flattened_arrays += ctx.flattened_arrays;
        Ok(batch)
    }

    fn column_error(
        &self,
        chunk: &CopyChunk,
        col: usize,
        row: usize,
        fail: ValueFailure,
    ) -> DecodeError {
        let c = &self.schema.columns()[col];
        let (column, type_name, partition) = (c.name.clone(), type_name(c), chunk.partition);
        let row = chunk.first_row + row as u64;
        match fail {
            ValueFailure::Value(source) => DecodeError::Value {
                column,
                type_name,
                partition,
                row,
                source,
            },
            ValueFailure::Null => DecodeError::UnexpectedNull {
                column,
                type_name,
                partition,
                row,
            },
            ValueFailure::TooLarge => DecodeError::TooLarge {
                column,
                type_name,
                partition,
                row,
            },
        }
    }
}

/// Pass 1 over rows `first..first + n`: checks each tuple's framing and
/// fills the column-major offsets table (`block` rows per column).
#[allow(clippy::too_many_arguments)]
fn frame_block(
    chunk: &CopyChunk,
    first: usize,
    n: usize,
    ncols: usize,
    block: usize,
    starts: &mut [u32],
    lens: &mut [i32],
) -> Result<(), DecodeError> {
    let data = &chunk.data;
    let bad_chunk = |reason: String| DecodeError::BadChunk {
        partition: chunk.partition,
        first_row: chunk.first_row,
        reason,
    };
    let rows = chunk
        .row_starts
        .get(first..first + n)
        .zip(chunk.row_ends.get(first..first + n))
        .ok_or_else(|| bad_chunk("fewer row ends than row starts".into()))?;
    let row_of = |r: usize| -> Result<&[u8], DecodeError> {
        let (rs, re) = (rows.0[r], rows.1[r]);
        data.get(rs as usize..re as usize).ok_or_else(|| {
            bad_chunk(format!(
                "row {} spans {rs}..{re}, outside the {}-byte buffer",
                first + r,
                data.len()
            ))
        })
    };
    let mut r = 0;
    // Groups of four rows are walked in lock-step: within a row each field's
    // position depends on the previous field's length (a chain of dependent
    // loads), but rows are independent, so interleaving them lets the CPU
    // overlap four chains. Any failure re-walks the group one row at a time
    // to report the first error exactly.
    while r + 4 <= n {
        let group = [row_of(r)?, row_of(r + 1)?, row_of(r + 2)?, row_of(r + 3)?];
        let group_starts = [rows.0[r], rows.0[r + 1], rows.0[r + 2], rows.0[r + 3]];
        if !frame_rows4(group, group_starts, ncols, block, r, starts, lens) {
            for k in 0..4 {
                frame_row(group[k], group_starts[k], ncols, block, r + k, starts, lens).map_err(
                    |source| DecodeError::Framing {
                        partition: chunk.partition,
                        row: chunk.first_row + (first + r + k) as u64,
                        source,
                    },
                )?;
            }
        }
        r += 4;
    }
    while r < n {
        frame_row(row_of(r)?, rows.0[r], ncols, block, r, starts, lens).map_err(|source| {
            DecodeError::Framing {
                partition: chunk.partition,
                row: chunk.first_row + (first + r) as u64,
                source,
            }
        })?;
        r += 1;
    }
    Ok(())
}

/// [`frame_row`] for four rows at once (rows `r..r + 4` of the block);
/// false if any of them is malformed (without saying which or why).
#[inline(always)]
fn frame_rows4(
    rows: [&[u8]; 4],
    row_starts: [u32; 4],
    ncols: usize,
    block: usize,
    r: usize,
    starts: &mut [u32],
    lens: &mut [i32],
) -> bool {
    for row in rows {
        match row {
            [a, b, ..] if i16::from_be_bytes([*a, *b]) as i64 == ncols as i64 => {}
            _ => return false,
        }
    }
    let mut pos = [2usize; 4];
    for c in 0..ncols {
        let base = c * block + r;
        let (Some(s4), Some(l4)) = (starts.get_mut(base..base + 4), lens.get_mut(base..base + 4))
        else {
            return false;
        };
        for k in 0..4 {
            let row = rows[k];
            let p = pos[k];
            let Some(b) = row.get(p..p + 4) else {
                return false;
            };
            let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            let p = p + 4;
            s4[k] = row_starts[k] + p as u32;
            l4[k] = len;
            let advance = if len >= 0 {
                len as usize
            } else if len == -1 {
                0
            } else {
                return false;
            };
            if row.len() - p < advance {
                return false;
            }
            pos[k] = p + advance;
        }
    }
    (0..4).all(|k| pos[k] == rows[k].len())
}

/// The framing of one row (as [`gpupg_format::copy::field_offsets`], but
/// writing absolute offsets into the transposed table).
#[inline(always)]
fn frame_row(
    row: &[u8],
    row_start: u32,
    ncols: usize,
    block: usize,
    r: usize,
    starts: &mut [u32],
    lens: &mut [i32],
) -> Result<(), FramingError> {
    let count = match row {
        [a, b, ..] => i16::from_be_bytes([*a, *b]),
        _ => {
            return Err(FramingError::Truncated {
                field: 0,
                offset: 0,
                needed: 2,
                len: row.len(),
            })
        }
    };
    if count as i64 != ncols as i64 {
        return Err(FramingError::FieldCount {
            expected: ncols,
            found: i64::from(count),
        });
    }
    let mut pos = 2usize;
    for c in 0..ncols {
        let len = match row.get(pos..pos + 4) {
            Some(b) => i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            None => {
                return Err(FramingError::Truncated {
                    field: c,
                    offset: pos,
                    needed: 4,
                    len: row.len(),
                })
            }
        };
        pos += 4;
        let idx = c * block + r;
        if let (Some(s), Some(l)) = (starts.get_mut(idx), lens.get_mut(idx)) {
            // row_start + pos <= row end <= u32::MAX: rows lie in the chunk.
            *s = row_start + pos as u32;
            *l = len;
        }
        if len >= 0 {
            let l = len as usize;
            if row.len() - pos < l {
                return Err(FramingError::Truncated {
                    field: c,
                    offset: pos,
                    needed: l,
                    len: row.len(),
                });
            }
            pos += l;
        } else if len != -1 {
            return Err(FramingError::BadLength {
                field: c,
                length: len,
            });
        }
    }
    if pos != row.len() {
        return Err(FramingError::TrailingBytes(row.len() - pos));
    }
    Ok(())
}

impl Decoder for CpuDecoder {
    fn decode(&mut self, chunk: &CopyChunk) -> Result<RecordBatch, DecodeError> {
        let n = chunk.num_rows();
        if chunk.row_ends.len() != n {
            return Err(DecodeError::BadChunk {
                partition: chunk.partition,
                first_row: chunk.first_row,
                reason: format!("{n} row starts but {} row ends", chunk.row_ends.len()),
            });
        }
        let ncols = self.cols.len();
        let block = BLOCK_ROWS.min(n).max(1);
        self.starts.resize(ncols * block, 0);
        self.lens.resize(ncols * block, 0);
        for col in &mut self.cols {
            col.begin(n);
        }
        let mut ctx = Ctx::default();
        let mut first = 0;
        while first < n {
            let m = (n - first).min(block);
            frame_block(
                chunk,
                first,
                m,
                ncols,
                block,
                &mut self.starts,
                &mut self.lens,
            )?;
            for c in 0..ncols {
                let range = c * block..c * block + m;
                let res = self.cols[c].append(
                    &chunk.data,
                    &self.starts[range.clone()],
                    &self.lens[range],
                    &mut ctx,
                );
                if let Err(ColErr { index, fail }) = res {
                    return Err(self.column_error(chunk, c, first + index, fail));
                }
            }
            first += m;
        }
        self.finish_batch(n, &ctx)
    }

    fn stats(&self) -> DecodeStats {
        self.stats
    }
}
