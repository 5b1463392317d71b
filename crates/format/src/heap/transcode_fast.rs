//! The fast path of [`transcode_page`](super::transcode_page): one pass over
//! each tuple that deforms and converts together, driven by a small program
//! compiled once per layout ([`FastPlan`]).
//!
//! It handles what pages hold almost always: valid line pointers and tuple
//! headers, values of the common types stored inline. Anything else, every
//! kind of corruption and every value that makes the page fall back
//! included, makes it give up (`None`), and the caller converts the page
//! again with the reference path ([`super::append_rows`]), which gives the
//! same rows for a good page and the exact error for a bad one. So the fast
//! path must give up wherever the reference path fails, and produce the same
//! bytes wherever it succeeds: each step below does the checks of
//! [`tuple::deform`] and [`Converter::convert`] for the attribute it steps
//! over or converts (the tests compare both paths on good, mutated and
//! random pages).
//!
//! The program ([`FastPlan::runs`]) merges consecutive byte-swapped columns
//! of one size into one step (they lie back to back once the first is
//! aligned) and consecutive fixed-size attributes that are not output into
//! one skip (their offsets relative to the first are fixed, like
//! PostgreSQL's `attcacheoff`). Layouts whose output columns are in attnum
//! order, each once, convert while deforming: tuples without NULLs that
//! have every attribute by the merged steps, others by the merged steps
//! where no attribute of a step is NULL or missing and one step per
//! attribute elsewhere. Other layouts locate the attributes first, then
//! convert them in output order.
//!
//! A row is written into room made for it in the output ([`Room`]: plain
//! bounds-checked slice writes, no length updates of the vector, short
//! strings copied 16 bytes at a time) when the layout's output columns are
//! of the types written there; a row that does not fit, or has a value to
//! convert otherwise (compressed, an array, an enum...), is written again
//! with [`Out`] and [`Converter::convert`].

use super::*;
use crate::heap::page::{MAXIMUM_ALIGNOF, PAGE_HEADER_SIZE};
use crate::heap::tuple::HEAP_TUPLE_HEADER_SIZE;

/// How a non-NULL value is written (the common [`Conv`]s, and the rest
/// through [`Converter::convert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Emit {
    Swap2,
    Swap4,
    Swap8,
    Bool,
    Interval,
    Raw,
    /// `name` and cstrings: the bytes before the first NUL.
    UntilNul,
    /// A varlena's payload.
    Text,
    Numeric,
    /// Anything else: [`Converter::convert`] with the attribute's plan.
    Generic,
}

impl Emit {
    fn of(conv: &Conv) -> Emit {
        match conv {
            Conv::Swap(2) => Emit::Swap2,
            Conv::Swap(4) => Emit::Swap4,
            Conv::Swap(8) => Emit::Swap8,
            Conv::Bool => Emit::Bool,
            Conv::Interval => Emit::Interval,
            Conv::Raw => Emit::Raw,
            Conv::NulPadded | Conv::CString => Emit::UntilNul,
            Conv::Varlena => Emit::Text,
            Conv::Numeric => Emit::Numeric,
            _ => Emit::Generic,
        }
    }
}

/// One step of a program. `mask` is the alignment minus one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// `n` output attributes of `size` (2, 4 or 8) bytes, byte-swapped, the
    /// first aligned by `mask`. When `n > 1`, `mask < size`, so they lie
    /// back to back.
    Swap { size: u8, n: u16, mask: u8 },
    /// Fixed-size attributes that are not output: align by `mask` and step
    /// over `span` bytes (the attributes after the first are aligned at
    /// most as much as it is, so their offsets relative to it are fixed).
    Skip { mask: u8, span: u32 },
    /// An output attribute of `len` bytes.
    Fixed {
        attr: u16,
        len: u16,
        mask: u8,
        emit: Emit,
    },
    /// A varlena attribute (`attlen` -1).
    Varlena {
        attr: u16,
        mask: u8,
        emit: Emit,
        out: bool,
    },
    /// A NUL-terminated attribute (`attlen` -2).
    CString {
        attr: u16,
        mask: u8,
        emit: Emit,
        out: bool,
    },
}

impl Op {
    /// Whether the attribute is an output column (for single-attribute
    /// steps).
    pub(super) fn out(self) -> bool {
        match self {
            Op::Swap { .. } | Op::Fixed { .. } => true,
            Op::Skip { .. } => false,
            Op::Varlena { out, .. } | Op::CString { out, .. } => out,
        }
    }
}

/// The fast path's program for a layout.
#[derive(Debug, Clone)]
pub(super) struct FastPlan {
    /// The output columns are in attnum order, each once.
    pub(super) in_order: bool,
    /// One step per attribute to deform.
    pub(super) single: Vec<Op>,
    /// `single` with runs merged.
    pub(super) runs: Vec<Op>,
    /// The attributes (first, count) each step of `runs` stands for.
    run_attrs: Vec<(u16, u16)>,
    /// How each attribute to deform is written.
    emits: Vec<Emit>,
    /// No output column needs [`Converter::convert`] for its common forms,
    /// so rows are written into room made for them (see [`Room`]).
    in_room: bool,
    /// Room for a row, besides `mult` times the tuple's data length.
    room: usize,
    /// The most times one attribute is output.
    mult: usize,
}

impl FastPlan {
    pub(super) fn new(
        attributes: &[AttributeDesc],
        plans: &[Conv],
        output: &[usize],
        deform_natts: usize,
    ) -> FastPlan {
        let in_order = output.windows(2).all(|w| w[0] < w[1]);
        let mut times_out = vec![0usize; deform_natts];
        for &c in output {
            times_out[c] += 1;
        }
        let is_out: Vec<bool> = times_out.iter().map(|&n| n > 0).collect();
        let emits: Vec<Emit> = plans[..deform_natts].iter().map(Emit::of).collect();
        let single: Vec<Op> = (0..deform_natts)
            .map(|i| {
                let a = &attributes[i];
                let mask = (a.align.bytes() - 1) as u8;
                let (attr, emit, out) = (i as u16, emits[i], is_out[i]);
                match a.attlen {
                    l if l > 0 && !out => Op::Skip {
                        mask,
                        span: l as u32,
                    },
                    l if l > 0 => Op::Fixed {
                        attr,
                        len: l as u16,
                        mask,
                        emit,
                    },
                    -1 => Op::Varlena {
                        attr,
                        mask,
                        emit,
                        out,
                    },
                    _ => Op::CString {
                        attr,
                        mask,
                        emit,
                        out,
                    },
                }
            })
            .collect();
        // A byte-swapped value, as a run of one.
        let swap = |op: Op| match op {
            Op::Fixed {
                len,
                mask,
                emit: Emit::Swap2 | Emit::Swap4 | Emit::Swap8,
                ..
            } => Op::Swap {
                size: len as u8,
                n: 1,
                mask,
            },
            op => op,
        };
        let mut runs: Vec<Op> = Vec::new();
        let mut run_attrs: Vec<(u16, u16)> = Vec::new();
        {
            for (i, op) in single.iter().copied().map(swap).enumerate() {
                let merged = match (runs.last_mut(), op) {
                    (
                        Some(Op::Swap { size, n, mask }),
                        Op::Swap {
                            size: s2, mask: m2, ..
                        },
                    ) if *size == s2 && *mask == m2 && m2 < s2 && *n < u16::MAX => {
                        *n += 1;
                        true
                    }
                    (Some(Op::Skip { mask, span }), Op::Skip { mask: m2, span: s2 })
                        if m2 <= *mask =>
                    {
                        *span = align(*span as usize, m2) as u32 + s2;
                        true
                    }
                    _ => false,
                };
                match run_attrs.last_mut() {
                    Some((_, count)) if merged => *count += 1,
                    _ => {
                        runs.push(op);
                        run_attrs.push((i as u16, 1));
                    }
                }
            }
        }
        let in_room = output.iter().all(|&c| emits[c] != Emit::Generic);
        // Room for the length word of each output column and its value:
        // fixed-size values take at most their size plus 4, varlenas and
        // cstrings at most their size in the tuple, plus 5 (a numeric's
        // send-format header is longer than its on-disk one) and 16 (what
        // may be written past a short string); missing values as they are.
        let room = 2 + output
            .iter()
            .map(|&c| {
                let a = &attributes[c];
                4 + match a.attlen {
                    l if l > 0 => l as usize,
                    _ => 16 + 5,
                } + a.missing.as_ref().map_or(0, Vec::len)
            })
            .sum::<usize>();
        let mult = times_out.iter().copied().max().unwrap_or(0);
        FastPlan {
            in_order,
            single,
            runs,
            run_attrs,
            emits,
            in_room,
            room,
            mult,
        }
    }
}

#[inline(always)]
pub(super) fn align(off: usize, mask: u8) -> usize {
    let m = usize::from(mask);
    (off + m) & !m
}

/// What converting a page needs besides the output.
struct Cx<'l> {
    layout: &'l TupleLayout,
    scratch: Vec<u8>,
    inner: Vec<u8>,
}

/// Converts the tuples of `page` as [`super::append_rows`] does, appending
/// to `chunk`; `None` if it gives up (the chunk then holds partial rows the
/// caller removes).
pub(super) fn append_rows(
    page: &Page<'_>,
    layout: &TupleLayout,
    chunk: &mut CopyChunk,
) -> Option<usize> {
    let CopyChunk {
        data,
        row_starts,
        row_ends,
        ..
    } = chunk;
    // Room is made as rows are written: zero-filling room that is not used
    // costs about as much as writing it.
    let mut w = Out::new(data);
    row_starts.reserve(page.item_count());
    row_ends.reserve(page.item_count());
    let mut cx = Cx {
        layout,
        scratch: Vec::new(),
        inner: Vec::new(),
    };
    let rows = rows(page, &mut cx, &mut w, row_starts, row_ends);
    let end = w.len();
    w.finish();
    // Every row offset fits in u32 if the last one does.
    u32::try_from(end).ok()?;
    rows
}

fn rows(
    page: &Page<'_>,
    cx: &mut Cx<'_>,
    w: &mut Out<'_>,
    row_starts: &mut Vec<u32>,
    row_ends: &mut Vec<u32>,
) -> Option<usize> {
    let layout = cx.layout;
    let plan = &layout.fast;
    let bytes = page.bytes();
    let ncols = (layout.output.len() as i16).to_be_bytes();
    let natts_wanted = plan.single.len();
    let mut spans = if plan.in_order {
        Vec::new()
    } else {
        vec![Datum::Null; natts_wanted]
    };
    let mut rows = 0;
    for t in normal_tuples(page) {
        let NormalTuple {
            lp_off,
            tuple,
            nulls,
            ..
        } = t?;
        let hoff = usize::from(tuple.header().hoff);
        let natts = nulls.natts;
        let data = tuple.data();
        let full = nulls.bitmap.is_none() && natts >= natts_wanted;
        let src = Src {
            data,
            // The page from the data on: short values are copied in wider
            // pieces than they are, from past the tuple's end.
            wide: bytes.get(lp_off + hoff..)?,
        };
        if !plan.in_order {
            if full {
                locate_runs(plan, data, &mut spans)?;
            } else {
                let mut off = 0usize;
                for (i, (&op, span)) in plan.single.iter().zip(spans.iter_mut()).enumerate() {
                    *span = match nulls.get(i) {
                        Some(d) => d,
                        None => {
                            let (start, end) = locate(op, data, &mut off)?;
                            Datum::Bytes {
                                start: start as u32,
                                end: end as u32,
                            }
                        }
                    };
                }
            }
        }
        let row_start = w.len();
        let written = if plan.in_room {
            let room = w.room(plan.room + plan.mult * data.len());
            if plan.in_order && full {
                Room::ops(room, &plan.runs, ncols, src)
            } else if plan.in_order {
                Room::mixed(room, layout, ncols, src, &nulls)
            } else {
                Room::cols(room, layout, ncols, src, &spans)
            }
        } else {
            None
        };
        match written {
            Some(n) => w.advance(n),
            // A value converted otherwise, or not enough room (or a corrupt
            // tuple, found again here).
            None => row_out(cx, w, ncols, src, &nulls, full, &spans)?,
        }
        row_starts.push(row_start as u32);
        row_ends.push(w.len() as u32);
        rows += 1;
    }
    Some(rows)
}

/// One `LP_NORMAL` tuple of a page, checked ([`normal_tuples`]).
pub(super) struct NormalTuple<'p> {
    /// The line pointer's index (its offset number minus one).
    pub(super) index: usize,
    /// Where the tuple starts in the page.
    pub(super) lp_off: usize,
    pub(super) tuple: HeapTuple<'p>,
    pub(super) nulls: Nulls<'p>,
}

/// The `LP_NORMAL` tuples of `page` in line pointer order, with the checks
/// of `Page::tuple` and `HeapTuple::parse`; `None` for a line pointer or
/// tuple header that fails them (the page is then not converted here).
pub(super) fn normal_tuples<'p>(
    page: &Page<'p>,
) -> impl Iterator<Item = Option<NormalTuple<'p>>> + 'p {
    let bytes = page.bytes();
    let (upper, special) = (
        usize::from(page.header().upper),
        usize::from(page.header().special),
    );
    let line_pointers = bytes
        .get(PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + 4 * page.item_count())
        .unwrap_or(&[]);
    let short = line_pointers.len() < 4 * page.item_count();
    std::iter::once(None).filter(move |_| short).chain(
        line_pointers
            .chunks_exact(4)
            .enumerate()
            .filter_map(move |(index, lp)| {
                let lp = u32::from_le_bytes([lp[0], lp[1], lp[2], lp[3]]);
                if (lp >> 15) & 0x03 != LpFlags::Normal.code() {
                    return None;
                }
                Some((|| {
                    let (lp_off, lp_len) = ((lp & 0x7fff) as usize, (lp >> 17) as usize);
                    if lp_len < HEAP_TUPLE_HEADER_SIZE
                        || lp_off < upper
                        || lp_off + lp_len > special
                        || lp_off % MAXIMUM_ALIGNOF != 0
                    {
                        return None;
                    }
                    let tup = bytes.get(lp_off..lp_off + lp_len)?;
                    let tuple = HeapTuple::parse(tup).ok()?;
                    let natts = tuple.natts();
                    let nulls = Nulls {
                        natts,
                        bitmap: if tuple.header().has_nulls() {
                            Some(tup.get(
                                HEAP_TUPLE_HEADER_SIZE..HEAP_TUPLE_HEADER_SIZE + bitmap_len(natts),
                            )?)
                        } else {
                            None
                        },
                    };
                    Some(NormalTuple {
                        index,
                        lp_off,
                        tuple,
                        nulls,
                    })
                })())
            }),
    )
}

/// The row of a tuple written with [`Out`], converting any value.
#[inline(never)]
fn row_out(
    cx: &mut Cx<'_>,
    w: &mut Out<'_>,
    ncols: [u8; 2],
    src: Src<'_>,
    nulls: &Nulls<'_>,
    full: bool,
    spans: &[Datum],
) -> Option<()> {
    let layout = cx.layout;
    let plan = &layout.fast;
    w.put(ncols);
    let mut off = 0usize;
    if !plan.in_order {
        for &col in &layout.output {
            match spans[col] {
                Datum::Null => w.put((-1i32).to_be_bytes()),
                Datum::Missing => missing(layout, col, w)?,
                Datum::Bytes { start, end } => emit(
                    plan.emits[col],
                    col as u16,
                    src.data.get(start as usize..end as usize)?,
                    w,
                    cx,
                )?,
            }
        }
    } else if full {
        for &op in &plan.runs {
            step(op, src, &mut off, w, cx)?;
        }
    } else {
        for (i, &op) in plan.single.iter().enumerate() {
            match nulls.get(i) {
                Some(_) if !op.out() => {}
                Some(Datum::Missing) => missing(layout, i, w)?,
                Some(_) => w.put((-1i32).to_be_bytes()),
                None => step(op, src, &mut off, w, cx)?,
            }
        }
    }
    Some(())
}

/// Which attributes a tuple has, and which of them are NULL.
pub(super) struct Nulls<'t> {
    pub(super) natts: usize,
    /// The null bitmap (bit set: not NULL), if the tuple has one.
    pub(super) bitmap: Option<&'t [u8]>,
}

impl Nulls<'_> {
    /// Whether the tuple has a non-NULL value for each of `attrs`.
    #[inline(always)]
    fn all_present(&self, attrs: std::ops::Range<usize>) -> bool {
        attrs.end <= self.natts
            && match self.bitmap {
                None => true,
                Some(b) => attrs
                    .into_iter()
                    .all(|i| b.get(i / 8).is_some_and(|&x| x & (1 << (i % 8)) != 0)),
            }
    }

    /// [`Datum::Missing`] or [`Datum::Null`] for an attribute without a
    /// value in the tuple, `None` for one with a value.
    #[inline(always)]
    pub(super) fn get(&self, i: usize) -> Option<Datum> {
        if i >= self.natts {
            Some(Datum::Missing)
        } else {
            match self.bitmap {
                Some(b) if b[i / 8] & (1 << (i % 8)) == 0 => Some(Datum::Null),
                _ => None,
            }
        }
    }
}

/// A tuple's data, and the page from there on (passed by value: the
/// compiler then keeps both in registers across the writes of a row).
#[derive(Clone, Copy)]
struct Src<'t> {
    data: &'t [u8],
    wide: &'t [u8],
}

/// A row written into room made for it (`room`, written up to `p`), with
/// plain bounds-checked slice writes; `None` from any step: a value to
/// convert otherwise, not enough room, or a corrupt tuple.
struct Room<'r> {
    room: &'r mut [u8],
    p: usize,
}

impl Room<'_> {
    /// The row of a tuple with every attribute to deform, none NULL, by
    /// the steps `ops`.
    #[inline(always)]
    fn ops(room: &mut [u8], ops: &[Op], ncols: [u8; 2], src: Src<'_>) -> Option<usize> {
        let mut r = Room { room, p: 0 };
        r.put(ncols)?;
        let mut off = 0usize;
        for &op in ops {
            r.step(op, src, &mut off)?;
        }
        Some(r.p)
    }

    /// The row of a tuple with NULLs or missing attributes: the steps of
    /// `runs` where none of their attributes is either, else one step per
    /// attribute.
    #[inline(never)]
    fn mixed(
        room: &mut [u8],
        layout: &TupleLayout,
        ncols: [u8; 2],
        src: Src<'_>,
        nulls: &Nulls<'_>,
    ) -> Option<usize> {
        let plan = &layout.fast;
        let mut r = Room { room, p: 0 };
        r.put(ncols)?;
        let mut off = 0usize;
        for (&op, &(first, count)) in plan.runs.iter().zip(&plan.run_attrs) {
            let attrs = usize::from(first)..usize::from(first) + usize::from(count);
            if nulls.all_present(attrs.clone()) {
                r.step(op, src, &mut off)?;
                continue;
            }
            for i in attrs {
                let op = *plan.single.get(i)?;
                match nulls.get(i) {
                    Some(_) if !op.out() => {}
                    Some(Datum::Missing) => r.missing(layout, i)?,
                    Some(_) => r.put((-1i32).to_be_bytes())?,
                    None => r.step(op, src, &mut off)?,
                }
            }
        }
        Some(r.p)
    }

    /// The row of the located attributes `spans`, in output order.
    #[inline(never)]
    fn cols(
        room: &mut [u8],
        layout: &TupleLayout,
        ncols: [u8; 2],
        src: Src<'_>,
        spans: &[Datum],
    ) -> Option<usize> {
        let mut r = Room { room, p: 0 };
        r.put(ncols)?;
        for &col in &layout.output {
            match spans[col] {
                Datum::Null => r.put((-1i32).to_be_bytes())?,
                Datum::Missing => r.missing(layout, col)?,
                Datum::Bytes { start, end } => {
                    let (start, end) = (start as usize, end as usize);
                    let datum = src.data.get(start..end)?;
                    match layout.fast.emits[col] {
                        Emit::Text | Emit::Numeric => {
                            let first = *datum.first()?;
                            let header = if first & 0x01 == 0x01 && first != 0x01 {
                                varlena::VARHDRSZ_SHORT
                            } else if first & 0x03 == 0x00 {
                                varlena::VARHDRSZ
                            } else {
                                return None;
                            };
                            let start = start + header;
                            r.payload(layout.fast.emits[col], src, start, end)?;
                        }
                        e => r.fixed(e, datum)?,
                    }
                }
            }
        }
        Some(r.p)
    }

    #[inline(always)]
    fn put<const N: usize>(&mut self, b: [u8; N]) -> Option<()> {
        self.room.get_mut(self.p..self.p + N)?.copy_from_slice(&b);
        self.p += N;
        Some(())
    }

    #[inline(always)]
    fn put_slice(&mut self, b: &[u8]) -> Option<()> {
        self.room
            .get_mut(self.p..self.p + b.len())?
            .copy_from_slice(b);
        self.p += b.len();
        Some(())
    }

    /// The field of attribute `i`, which the tuple does not have.
    fn missing(&mut self, layout: &TupleLayout, i: usize) -> Option<()> {
        match &layout.attributes[i].missing {
            None => self.put((-1i32).to_be_bytes()),
            Some(b) => {
                self.put(i32::try_from(b.len()).ok()?.to_be_bytes())?;
                self.put_slice(b)
            }
        }
    }

    /// [`step`], for the values written here.
    #[inline(always)]
    fn step(&mut self, op: Op, src: Src<'_>, off: &mut usize) -> Option<()> {
        let data = src.data;
        match op {
            Op::Swap { size, n, mask } => {
                let o = align(*off, mask);
                let n = usize::from(n);
                let end = o + usize::from(size) * n;
                let values = data.get(o..end)?;
                let len = (4 + usize::from(size)) * n;
                let dst = self.room.get_mut(self.p..self.p + len)?;
                swap_run(size, n, values, dst);
                self.p += len;
                *off = end;
            }
            Op::Skip { mask, span } => {
                let end = align(*off, mask) + span as usize;
                if end > data.len() {
                    return None;
                }
                *off = end;
            }
            Op::Fixed {
                len, mask, emit, ..
            } => {
                let o = align(*off, mask);
                let end = o + usize::from(len);
                self.fixed(emit, data.get(o..end)?)?;
                *off = end;
            }
            Op::Varlena {
                mask, emit, out, ..
            } => {
                let o = varlena_start(data, *off, mask);
                let first = *data.get(o)?;
                // The forms `varlena::datum_size` measures, the
                // uncompressed inline ones spelled out.
                let (start, end) = if first & 0x01 == 0x01 && first != 0x01 {
                    (o + varlena::VARHDRSZ_SHORT, o + usize::from(first >> 1))
                } else if first & 0x03 == 0x00 {
                    let h = data.get(o..o + 4)?;
                    let size = ((u32::from_le_bytes([h[0], h[1], h[2], h[3]]) >> 2) & 0x3fff_ffff)
                        as usize;
                    if size < varlena::VARHDRSZ {
                        return None;
                    }
                    (o + varlena::VARHDRSZ, o + size)
                } else if out {
                    // Compressed, or a TOAST pointer.
                    return None;
                } else {
                    let end = o + varlena::datum_size(&data[o..]).ok()?;
                    (end, end)
                };
                if out {
                    self.payload(emit, src, start, end)?;
                } else if end > data.len() {
                    return None;
                }
                *off = end;
            }
            Op::CString {
                mask, out, emit, ..
            } => {
                let (o, end) = cstring(data, *off, mask)?;
                if out {
                    self.fixed(emit, &data[o..end])?;
                }
                *off = end;
            }
        }
        Some(())
    }

    /// The field of a fixed-size or cstring value.
    #[inline(always)]
    fn fixed(&mut self, e: Emit, datum: &[u8]) -> Option<()> {
        match e {
            Emit::Swap2 => self.put(swap2(datum.try_into().ok()?)),
            Emit::Swap4 => self.put(swap4(datum.try_into().ok()?)),
            Emit::Swap8 => self.put(swap8(datum.try_into().ok()?)),
            Emit::Bool => self.put([0, 0, 0, 1, u8::from(*datum.first()? != 0)]),
            Emit::Interval => self.put(interval(datum.try_into().ok()?)),
            Emit::Raw => {
                self.put((datum.len() as u32).to_be_bytes())?;
                self.put_slice(datum)
            }
            Emit::UntilNul => {
                let n = datum.iter().position(|&b| b == 0).unwrap_or(datum.len());
                self.put((n as u32).to_be_bytes())?;
                self.put_slice(&datum[..n])
            }
            Emit::Text | Emit::Numeric | Emit::Generic => None,
        }
    }

    /// The field of the uncompressed varlena payload `data[start..end]`.
    #[inline(always)]
    fn payload(&mut self, e: Emit, src: Src<'_>, start: usize, end: usize) -> Option<()> {
        let payload = src.data.get(start..end)?;
        let n = payload.len();
        match e {
            Emit::Text => match src.wide.get(start..start + 16) {
                Some(wide) if n <= 16 => {
                    // One 16-byte copy; what is past the value is
                    // overwritten by the next field or cut off.
                    let d = self.room.get_mut(self.p..self.p + 20)?;
                    d[..4].copy_from_slice(&(n as u32).to_be_bytes());
                    d[4..].copy_from_slice(wide);
                    self.p += 4 + n;
                    Some(())
                }
                _ => {
                    self.put((n as u32).to_be_bytes())?;
                    self.put_slice(payload)
                }
            },
            Emit::Numeric => {
                let (head, digits) = numeric_parts(payload).ok()?;
                self.put(((8 + digits.len()) as u32).to_be_bytes())?;
                self.put(head)?;
                let d = self.room.get_mut(self.p..self.p + digits.len())?;
                swap_digits(d, digits);
                self.p += digits.len();
                Some(())
            }
            _ => None,
        }
    }
}

/// The fields of `n` values of `size` bytes back to back in `src` into
/// `dst` (which has room for them).
#[inline(always)]
fn swap_run(size: u8, n: usize, src: &[u8], dst: &mut [u8]) {
    // (`n` is at most what both have room for: the callers pass exactly
    // that.)
    match size {
        4 => {
            let n = n.min(src.len() / 4).min(dst.len() / 8);
            let (src, dst) = (&src[..4 * n], &mut dst[..8 * n]);
            // Two at a time: one 8-byte swap gives both values, big-endian,
            // in the high halves of `a` and `b` as stored little-endian
            // (SSE2 has no byte shuffle, so this beats vector code).
            const LEN4: u64 = 0x0400_0000;
            let pairs = n / 2;
            for i in 0..pairs {
                let s = &src[8 * i..8 * i + 8];
                let x = u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
                let y = x.swap_bytes();
                let a = (y & 0xffff_ffff_0000_0000) | LEN4;
                let b = (y << 32) | LEN4;
                dst[16 * i..16 * i + 8].copy_from_slice(&a.to_le_bytes());
                dst[16 * i + 8..16 * i + 16].copy_from_slice(&b.to_le_bytes());
            }
            if n % 2 == 1 {
                let s = &src[4 * (n - 1)..4 * n];
                dst[8 * (n - 1)..8 * n].copy_from_slice(&swap4([s[0], s[1], s[2], s[3]]));
            }
        }
        8 => {
            let n = n.min(src.len() / 8).min(dst.len() / 12);
            let (src, dst) = (&src[..8 * n], &mut dst[..12 * n]);
            for i in 0..n {
                let s = &src[8 * i..8 * i + 8];
                dst[12 * i..12 * i + 12]
                    .copy_from_slice(&swap8([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]));
            }
        }
        _ => {
            let n = n.min(src.len() / 2).min(dst.len() / 6);
            let (src, dst) = (&src[..2 * n], &mut dst[..6 * n]);
            for i in 0..n {
                let s = &src[2 * i..2 * i + 2];
                dst[6 * i..6 * i + 6].copy_from_slice(&swap2([s[0], s[1]]));
            }
        }
    }
}

/// The field of attribute `i`, which the tuple does not have.
fn missing(layout: &TupleLayout, i: usize, w: &mut Out<'_>) -> Option<()> {
    match &layout.attributes[i].missing {
        None => w.put((-1i32).to_be_bytes()),
        Some(b) => {
            put_len(w, b.len()).ok()?;
            w.put_slice(b);
        }
    }
    Some(())
}

/// Steps over the attribute(s) of `op` at data offset `off`, writing the
/// fields of the output ones.
#[inline(always)]
fn step(op: Op, src: Src<'_>, off: &mut usize, w: &mut Out<'_>, cx: &mut Cx<'_>) -> Option<()> {
    let (data, wide) = (src.data, src.wide);
    match op {
        Op::Swap { size, n, mask } => {
            let o = align(*off, mask);
            let n = usize::from(n);
            let end = o + usize::from(size) * n;
            let values = data.get(o..end)?;
            swap_run(size, n, values, w.take((4 + usize::from(size)) * n));
            *off = end;
        }
        Op::Skip { mask, span } => {
            let end = align(*off, mask) + span as usize;
            if end > data.len() {
                return None;
            }
            *off = end;
        }
        Op::Fixed {
            attr,
            len,
            mask,
            emit: e,
        } => {
            let o = align(*off, mask);
            let end = o + usize::from(len);
            emit(e, attr, data.get(o..end)?, w, cx)?;
            *off = end;
        }
        Op::Varlena {
            attr,
            mask,
            emit: e,
            out,
        } => {
            let o = varlena_start(data, *off, mask);
            let first = *data.get(o)?;
            if first & 0x01 == 0x01 && first != 0x01 {
                // A 1-byte header: the common case of short strings.
                let end = o + usize::from(first >> 1);
                let datum = data.get(o..end)?;
                if out {
                    if e == Emit::Text {
                        put_short_payload(w, &datum[1..], wide.get(o + 1..o + 17));
                    } else {
                        emit(e, attr, datum, w, cx)?;
                    }
                }
                *off = end;
            } else {
                let end = o + varlena::datum_size(&data[o..]).ok()?;
                if out {
                    emit(e, attr, data.get(o..end)?, w, cx)?;
                }
                *off = end;
            }
        }
        Op::CString {
            attr,
            mask,
            emit: e,
            out,
        } => {
            let (o, end) = cstring(data, *off, mask)?;
            if out {
                emit(e, attr, &data[o..end], w, cx)?;
            }
            *off = end;
        }
    }
    Some(())
}

/// `att_align_pointer`: a varlena at `off` starts there if the byte there
/// is not zero (a 1-byte header, never padded), else at the aligned offset.
#[inline(always)]
fn varlena_start(data: &[u8], off: usize, mask: u8) -> usize {
    match data.get(off) {
        Some(&b) if b != 0 => off,
        _ => align(off, mask),
    }
}

/// The aligned start and end (past the NUL) of a cstring.
#[inline(always)]
fn cstring(data: &[u8], off: usize, mask: u8) -> Option<(usize, usize)> {
    let o = align(off, mask);
    let len = data.get(o..)?.iter().position(|&b| b == 0)? + 1;
    Some((o, o + len))
}

/// The byte ranges of the output attributes of a tuple with every
/// attribute to deform, none NULL, by the steps of `plan.runs` (the
/// attributes that are not output are left as they were).
pub(super) fn locate_runs(plan: &FastPlan, data: &[u8], spans: &mut [Datum]) -> Option<()> {
    let mut off = 0usize;
    for (&op, &(first, _)) in plan.runs.iter().zip(&plan.run_attrs) {
        let first = usize::from(first);
        match op {
            Op::Swap { size, n, mask } => {
                let (o, size, n) = (align(off, mask), usize::from(size), usize::from(n));
                off = o + size * n;
                if off > data.len() {
                    return None;
                }
                for (k, span) in spans.get_mut(first..first + n)?.iter_mut().enumerate() {
                    *span = Datum::Bytes {
                        start: (o + size * k) as u32,
                        end: (o + size * (k + 1)) as u32,
                    };
                }
            }
            Op::Skip { mask, span } => {
                off = align(off, mask) + span as usize;
                if off > data.len() {
                    return None;
                }
            }
            op => {
                let (start, end) = locate(op, data, &mut off)?;
                *spans.get_mut(first)? = Datum::Bytes {
                    start: start as u32,
                    end: end as u32,
                };
            }
        }
    }
    Some(())
}

/// The byte range of the single attribute of `op` at offset `off` (as
/// `tuple::deform` finds it), stepping over it.
pub(super) fn locate(op: Op, data: &[u8], off: &mut usize) -> Option<(usize, usize)> {
    let (o, end) = match op {
        Op::Swap { size, mask, .. } => {
            let o = align(*off, mask);
            (o, o + usize::from(size))
        }
        Op::Skip { mask, span } => {
            let o = align(*off, mask);
            (o, o + span as usize)
        }
        Op::Fixed { len, mask, .. } => {
            let o = align(*off, mask);
            (o, o + usize::from(len))
        }
        Op::Varlena { mask, .. } => {
            let o = varlena_start(data, *off, mask);
            (o, o + varlena::datum_size(data.get(o..)?).ok()?)
        }
        Op::CString { mask, .. } => cstring(data, *off, mask)?,
    };
    if end > data.len() {
        return None;
    }
    *off = end;
    Some((o, end))
}

/// The field of a varlena payload of at most 126 bytes. `wide`, the 16
/// bytes from the payload's start (past its end), if the page has them,
/// makes a short payload one fixed-size copy.
#[inline(always)]
fn put_short_payload(w: &mut Out<'_>, payload: &[u8], wide: Option<&[u8]>) {
    let n = payload.len();
    match wide {
        Some(src) if n <= 16 => {
            let d = w.take_array::<20>();
            d[..4].copy_from_slice(&(n as u32).to_be_bytes());
            d[4..].copy_from_slice(src);
            w.unput(16 - n);
        }
        _ => {
            w.put((n as u32).to_be_bytes());
            w.put_slice(payload);
        }
    }
}

/// Writes the field of the non-NULL `datum` of attribute `attr` as
/// [`Converter::convert`] does.
#[inline(always)]
fn emit(e: Emit, attr: u16, datum: &[u8], w: &mut Out<'_>, cx: &mut Cx<'_>) -> Option<()> {
    match e {
        Emit::Swap2 => w.put(swap2(datum.try_into().ok()?)),
        Emit::Swap4 => w.put(swap4(datum.try_into().ok()?)),
        Emit::Swap8 => w.put(swap8(datum.try_into().ok()?)),
        Emit::Bool => w.put([0, 0, 0, 1, u8::from(*datum.first()? != 0)]),
        Emit::Interval => w.put(interval(datum.try_into().ok()?)),
        Emit::Raw => {
            put_len(w, datum.len()).ok()?;
            w.put_slice(datum);
        }
        Emit::UntilNul => {
            let n = datum.iter().position(|&b| b == 0).unwrap_or(datum.len());
            put_len(w, n).ok()?;
            w.put_slice(&datum[..n]);
        }
        Emit::Text => match varlena::parse(datum).ok()? {
            Varlena::Short(p) | Varlena::Plain(p) => {
                put_len(w, p.len()).ok()?;
                w.put_slice(p);
            }
            _ => return generic(attr, datum, w, cx),
        },
        Emit::Numeric => match varlena::parse(datum).ok()? {
            Varlena::Short(p) | Varlena::Plain(p) => numeric_send(p, w).ok()?,
            _ => return generic(attr, datum, w, cx),
        },
        Emit::Generic => return generic(attr, datum, w, cx),
    }
    Some(())
}

#[inline(never)]
fn generic(attr: u16, datum: &[u8], w: &mut Out<'_>, cx: &mut Cx<'_>) -> Option<()> {
    let layout = cx.layout;
    Converter::convert(
        &layout.plans[usize::from(attr)],
        datum,
        w,
        &layout.enum_labels,
        layout.toast.as_deref(),
        &mut cx.scratch,
        &mut cx.inner,
    )
    .ok()
}
