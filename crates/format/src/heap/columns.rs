//! Heap pages located column by column, for decoders that read values
//! straight from the pages instead of from binary COPY rows
//! ([`transcode_page`](super::transcode_page)).
//!
//! [`PageColumns::add_page`] deforms every `LP_NORMAL` tuple of a page and
//! records, per output column, where each value lies and how long it is
//! (-1 for NULL), the layout that the CPU decoder's second pass reads
//! (`starts` / `lens`). A value is either left where the page stores it
//! ([`ValueForm::Stored`]: fixed-size numbers in the page's little-endian
//! order, booleans as one byte, uuids, and the payloads of inline
//! uncompressed varlenas, `name`s and cstrings, which are what COPY sends
//! for them) or converted to send format into the column's own buffer
//! ([`ValueForm::Sent`]: numeric, interval, enum, arrays, and any column
//! with a "missing" value, whose missing value is ready-made send bytes).
//! Stored values cost no copy: the decoder reads them in the page buffer.
//! A string or bytea column's value that the page holds compressed (pglz,
//! lz4) or out of line in TOAST is decompressed into the column's `sent`
//! and its start marked [`ColumnValues::SPILLED`]: a fifth of the rows of
//! a table with long notes would otherwise send nearly every page through
//! the converter's rows (three more copies of every value of the page).
//!
//! A page this does not handle (anything the converter refuses, any
//! corruption) leaves
//! the columns as they were and returns `Err(NotLocated)`: the caller converts the
//! page with [`transcode_page`](super::transcode_page), which gives its
//! rows or says exactly why the page must be read through COPY. So the
//! values located here must be exactly those of `transcode_page`'s rows
//! (the decode crate's tests compare both on generated pages).

use super::fast::{align, locate, locate_runs, normal_tuples, NormalTuple, Nulls, Op};
use super::*;

/// A page [`PageColumns::add_page`] leaves to the converter: it holds a
/// value in a form read only there, or one the converter refuses, or it is
/// corrupt; `transcode_page` says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the page must be read by the heap converter")]
pub struct NotLocated;

/// Where the values of an output column are ([`PageColumns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueForm {
    /// In the page buffer, as the heap stores them: fixed-size numbers
    /// little-endian, a boolean as one byte (nonzero is true), a uuid's 16
    /// bytes, a string's or bytea's payload.
    Stored,
    /// In [`ColumnValues::sent`], in send format (what COPY sends).
    Sent,
}

/// The located values of one output column.
#[derive(Debug, Clone)]
pub struct ColumnValues {
    /// Whether the values are as stored in the page or in send format.
    pub form: ValueForm,
    /// Per row: where the value starts, in the page buffer given to
    /// [`PageColumns::add_page`] (stored) or in `sent` (sent, and stored
    /// values marked [`ColumnValues::SPILLED`]).
    pub starts: Vec<u32>,
    /// Per row: the value's length, -1 for NULL.
    pub lens: Vec<i32>,
    /// The send-format values of a sent column; a stored column's spilled
    /// values.
    pub sent: Vec<u8>,
}

impl ColumnValues {
    /// The bit of a stored column's start that says the value is in
    /// `sent` (at the start without this bit), decompressed or read from
    /// TOAST, not in the page buffer. Only string and bytea payloads spill;
    /// page buffers given to [`PageColumns::add_page`] end below it.
    pub const SPILLED: u32 = 1 << 31;

    /// The bytes of row `row`'s value (`None` for NULL or a row out of
    /// range), `data` being the page buffer given to
    /// [`PageColumns::add_page`].
    pub fn value<'a>(&'a self, data: &'a [u8], row: usize) -> Option<&'a [u8]> {
        let start = *self.starts.get(row)?;
        let len = usize::try_from(*self.lens.get(row)?).ok()?;
        let (buf, start) = match self.form {
            ValueForm::Sent => (&self.sent[..], start),
            ValueForm::Stored if start & Self::SPILLED != 0 => {
                (&self.sent[..], start & !Self::SPILLED)
            }
            ValueForm::Stored => (data, start),
        };
        let start = start as usize;
        buf.get(start..start.checked_add(len)?)
    }
}

/// The values of the rows of some pages, located column by column; reused
/// from page batch to page batch.
#[derive(Debug)]
pub struct PageColumns {
    columns: Vec<ColumnValues>,
    /// Per row: the tuple's offset number (1-based), for error messages.
    offnums: Vec<u16>,
    datums: Vec<Datum>,
    /// How each output column's values are located.
    locates: Vec<Locate>,
    /// The layout's output columns are in attnum order, and those the
    /// converter's fast program steps over in runs are stored values.
    runs_direct: bool,
    scratch: Scratch,
}

/// Decompressed payloads, for the converter.
#[derive(Debug, Default)]
struct Scratch {
    payload: Vec<u8>,
    inner: Vec<u8>,
}

/// How a column's values are located: the stored forms, or `Sent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Locate {
    /// The datum's bytes as they are (fixed size, uuid, boolean).
    Datum,
    /// A varlena's inline uncompressed payload.
    Payload,
    /// The bytes before the first NUL (`name`, cstrings).
    UntilNul,
    Sent,
}

fn locate_of(conv: &Conv, has_missing: bool) -> Locate {
    if has_missing {
        return Locate::Sent;
    }
    match conv {
        Conv::Bool | Conv::Swap(2 | 4 | 8) | Conv::Raw => Locate::Datum,
        Conv::Varlena => Locate::Payload,
        Conv::NulPadded | Conv::CString => Locate::UntilNul,
        _ => Locate::Sent,
    }
}

/// Whether a layout's rows can be located by the steps of the fast
/// program: output columns in attnum order, and every attribute of a run of
/// byte-swapped values stored (a missing value makes a column sent).
fn runs_direct(layout: &TupleLayout, locates: &[Locate]) -> bool {
    let mut col = 0usize;
    for &op in &layout.fast.runs {
        match op {
            Op::Swap { n, .. } => {
                let n = usize::from(n);
                match locates.get(col..col + n) {
                    Some(l) if l.iter().all(|&h| h == Locate::Datum) => col += n,
                    _ => return false,
                }
            }
            Op::Skip { .. } => {}
            op => col += usize::from(op.out()),
        }
    }
    layout.fast.in_order && col == locates.len()
}

fn form_of(layout: &TupleLayout, attr: usize) -> ValueForm {
    match locate_of(
        &layout.plans[attr],
        layout.attributes[attr].missing.is_some(),
    ) {
        Locate::Sent => ValueForm::Sent,
        _ => ValueForm::Stored,
    }
}

impl PageColumns {
    /// Empty columns for `layout`'s output columns.
    pub fn new(layout: &TupleLayout) -> PageColumns {
        let columns = layout
            .output
            .iter()
            .map(|&a| ColumnValues {
                form: form_of(layout, a),
                starts: Vec::new(),
                lens: Vec::new(),
                sent: Vec::new(),
            })
            .collect();
        let mut pc = PageColumns {
            columns,
            offnums: Vec::new(),
            datums: vec![Datum::Null; layout.deform_natts],
            locates: layout
                .output
                .iter()
                .map(|&a| locate_of(&layout.plans[a], layout.attributes[a].missing.is_some()))
                .collect(),
            runs_direct: false,
            scratch: Scratch::default(),
        };
        pc.runs_direct = runs_direct(layout, &pc.locates);
        pc
    }

    /// Whether these columns were made for a layout like `layout` (same
    /// output columns, located the same way), so they can be reused for it.
    pub fn fits(&self, layout: &TupleLayout) -> bool {
        self.datums.len() == layout.deform_natts
            && self.locates.len() == layout.output.len()
            && self.locates.iter().zip(&layout.output).all(|(&how, &a)| {
                how == locate_of(&layout.plans[a], layout.attributes[a].missing.is_some())
            })
    }

    /// Rows located so far.
    pub fn rows(&self) -> usize {
        self.offnums.len()
    }

    /// The output columns' values.
    pub fn columns(&self) -> &[ColumnValues] {
        &self.columns
    }

    /// The offset number (1-based) of row `row`'s tuple in its page.
    pub fn offnum(&self, row: usize) -> Option<u16> {
        self.offnums.get(row).copied()
    }

    /// Forgets every row (keeping the allocations).
    pub fn clear(&mut self) {
        self.offnums.clear();
        for c in &mut self.columns {
            c.starts.clear();
            c.lens.clear();
            c.sent.clear();
        }
    }

    /// Locates the values of every `LP_NORMAL` tuple of the page at
    /// `data[at..at + block_size]` (block `blkno`), in line pointer order.
    /// `layout` must be the one the columns were made for. `Err(NotLocated)`: the
    /// page is not handled here (see the module documentation) and the
    /// columns are as they were.
    pub fn add_page(
        &mut self,
        layout: &TupleLayout,
        data: &[u8],
        at: usize,
        blkno: u32,
    ) -> Result<PageSummary, NotLocated> {
        let bs = layout.block_size;
        let page = at
            .checked_add(bs)
            .and_then(|end| data.get(at..end))
            .ok_or(NotLocated)?;
        // Offsets into `data` are u32, below the spilled bit.
        if at + bs > ColumnValues::SPILLED as usize || self.columns.len() != layout.output.len() {
            return Err(NotLocated);
        }
        let (parsed, summary) = open_page(page, blkno, layout).map_err(|_| NotLocated)?;
        if summary.new_page {
            return Ok(summary);
        }
        let mark = self.rows();
        let sent_marks: Vec<usize> = self.columns.iter().map(|c| c.sent.len()).collect();
        match self.add_tuples(layout, &parsed, at) {
            Ok(rows) => Ok(PageSummary { rows, ..summary }),
            Err(NotLocated) => {
                self.offnums.truncate(mark);
                for (c, &s) in self.columns.iter_mut().zip(&sent_marks) {
                    c.starts.truncate(mark);
                    c.lens.truncate(mark);
                    c.sent.truncate(s);
                }
                Err(NotLocated)
            }
        }
    }

    fn add_tuples(
        &mut self,
        layout: &TupleLayout,
        page: &Page<'_>,
        at: usize,
    ) -> Result<usize, NotLocated> {
        let plan = &layout.fast;
        let natts_wanted = plan.single.len();
        // Room for a row per line pointer, written by index and cut to the
        // rows there are at the end.
        let first = self.offnums.len();
        let room = first + page.item_count();
        for c in &mut self.columns {
            c.starts.resize(room, 0);
            c.lens.resize(room, 0);
        }
        let mut r = first;
        let result = (|| {
            for t in normal_tuples(page) {
                let NormalTuple {
                    index,
                    lp_off,
                    tuple,
                    nulls,
                } = t.ok_or(NotLocated)?;
                let natts = nulls.natts;
                let data = tuple.data();
                // Where the tuple's data starts in the page buffer.
                let base = at + lp_off + usize::from(tuple.header().hoff);
                let full = nulls.bitmap.is_none() && natts >= natts_wanted;
                if !(full
                    && self.runs_direct
                    && self.full_in_order(layout, data, base, r).is_some())
                {
                    self.any_tuple(layout, data, base, r, &nulls)?;
                }
                self.offnums.push((index + 1) as u16);
                r += 1;
            }
            Ok(r - first)
        })();
        for c in &mut self.columns {
            c.starts.truncate(r);
            c.lens.truncate(r);
        }
        result
    }

    /// Row `r` from a tuple with every attribute to deform and no NULLs,
    /// of a layout whose output columns are in attnum order, by the steps
    /// of the converter's fast program. `None`: locate it otherwise.
    #[inline(always)]
    fn full_in_order(
        &mut self,
        layout: &TupleLayout,
        data: &[u8],
        base: usize,
        r: usize,
    ) -> Option<()> {
        let mut off = 0usize;
        let mut col = 0usize;
        for &op in &layout.fast.runs {
            match op {
                Op::Swap { size, n, mask } => {
                    let (o, size, n) = (align(off, mask), usize::from(size), usize::from(n));
                    off = o + size * n;
                    if off > data.len() {
                        return None;
                    }
                    for (k, c) in self.columns.get_mut(col..col + n)?.iter_mut().enumerate() {
                        *c.starts.get_mut(r)? = (base + o + size * k) as u32;
                        *c.lens.get_mut(r)? = size as i32;
                    }
                    col += n;
                }
                Op::Skip { mask, span } => {
                    off = align(off, mask) + span as usize;
                    if off > data.len() {
                        return None;
                    }
                }
                op => {
                    let (start, end) = locate(op, data, &mut off)?;
                    if op.out() {
                        let a = *layout.output.get(col)?;
                        let how = *self.locates.get(col)?;
                        let c = self.columns.get_mut(col)?;
                        let v = value(how, c, layout, a, data, base, start, end, &mut self.scratch)
                            .ok()?;
                        store(c, r, v).ok()?;
                        col += 1;
                    }
                }
            }
        }
        Some(())
    }

    /// Row `r` from any tuple: deformed into the spans, then each output
    /// column located.
    fn any_tuple(
        &mut self,
        layout: &TupleLayout,
        data: &[u8],
        base: usize,
        r: usize,
        nulls: &Nulls<'_>,
    ) -> Result<(), NotLocated> {
        let plan = &layout.fast;
        if nulls.bitmap.is_none() && nulls.natts >= plan.single.len() {
            locate_runs(plan, data, &mut self.datums).ok_or(NotLocated)?;
        } else {
            let mut off = 0usize;
            for (i, (&op, span)) in plan.single.iter().zip(self.datums.iter_mut()).enumerate() {
                *span = match nulls.get(i) {
                    Some(d) => d,
                    None => {
                        let (start, end) = locate(op, data, &mut off).ok_or(NotLocated)?;
                        Datum::Bytes {
                            start: start as u32,
                            end: end as u32,
                        }
                    }
                };
            }
        }
        for (col, (c, &a)) in self.columns.iter_mut().zip(&layout.output).enumerate() {
            let how = self.locates[col];
            let v = match self.datums[a] {
                Datum::Null => None,
                Datum::Missing => match &layout.attributes[a].missing {
                    Some(b) if how == Locate::Sent => {
                        let start = c.sent.len();
                        c.sent.extend_from_slice(b);
                        Some((start, b.len()))
                    }
                    // A stored column has no missing value.
                    _ => None,
                },
                Datum::Bytes { start, end } => value(
                    how,
                    c,
                    layout,
                    a,
                    data,
                    base,
                    start as usize,
                    end as usize,
                    &mut self.scratch,
                )?,
            };
            store(c, r, v)?;
        }
        Ok(())
    }
}

/// Where the non-NULL value of attribute `a` (`data[start..end]`, in a
/// tuple whose data starts at `base` in the page buffer) is: in the page
/// buffer (stored) or in `c.sent`, converted. `Err`: not read here.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn value(
    how: Locate,
    c: &mut ColumnValues,
    layout: &TupleLayout,
    a: usize,
    data: &[u8],
    base: usize,
    start: usize,
    end: usize,
    scratch: &mut Scratch,
) -> Result<Option<(usize, usize)>, NotLocated> {
    Ok(Some(match how {
        // The locators checked the range against the data.
        Locate::Datum => (base + start, end - start),
        Locate::Payload => {
            // `varlena::parse`'s inline uncompressed forms (the size was
            // checked when located): a 1-byte header other than a TOAST
            // pointer's, or a 4-byte one without the compression bit.
            let header = match data.get(start) {
                Some(&b) if b & 0x01 == 0x01 && b != 0x01 => 1,
                Some(&b) if b & 0x03 == 0x00 => 4,
                // Compressed or out of line: the converter's payload.
                _ => {
                    let (field, len) = convert(c, layout, a, data, start, end, scratch)?;
                    let field = u32::try_from(field)
                        .ok()
                        .filter(|&f| f < ColumnValues::SPILLED)
                        .ok_or(NotLocated)?;
                    return Ok(Some(((field | ColumnValues::SPILLED) as usize, len)));
                }
            };
            if end - start < header {
                return Err(NotLocated);
            }
            (base + start + header, end - start - header)
        }
        Locate::UntilNul => {
            let datum = data.get(start..end).ok_or(NotLocated)?;
            let n = datum.iter().position(|&b| b == 0).unwrap_or(datum.len());
            (base + start, n)
        }
        Locate::Sent => convert(c, layout, a, data, start, end, scratch)?,
    }))
}

/// Converts attribute `a`'s value `data[start..end]` to send format at the
/// end of `c.sent`: where the value (after its length word) starts there,
/// and its length.
#[inline(always)]
fn convert(
    c: &mut ColumnValues,
    layout: &TupleLayout,
    a: usize,
    data: &[u8],
    start: usize,
    end: usize,
    scratch: &mut Scratch,
) -> Result<(usize, usize), NotLocated> {
    let datum = data.get(start..end).ok_or(NotLocated)?;
    let mut out = Out::for_value(&mut c.sent);
    let field = out.len();
    Converter::convert(
        &layout.plans[a],
        datum,
        &mut out,
        &layout.enum_labels,
        layout.toast.as_deref(),
        &mut scratch.payload,
        &mut scratch.inner,
    )
    .map_err(|_| NotLocated)?;
    let end = out.len();
    out.finish();
    // The converter wrote a length word, then the value.
    Ok((field + 4, end - field - 4))
}

/// Row `r` of column `c`: the value's start and length, or NULL.
#[inline(always)]
fn store(c: &mut ColumnValues, r: usize, v: Option<(usize, usize)>) -> Result<(), NotLocated> {
    let (start, len) = match v {
        None => (0, -1),
        Some((start, len)) => (
            u32::try_from(start).map_err(|_| NotLocated)?,
            i32::try_from(len).map_err(|_| NotLocated)?,
        ),
    };
    *c.starts.get_mut(r).ok_or(NotLocated)? = start;
    *c.lens.get_mut(r).ok_or(NotLocated)? = len;
    Ok(())
}
