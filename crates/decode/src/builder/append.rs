//! The column kinds whose loop does more than decode one fixed-width value
//! per row (booleans, intervals as structs, UUIDs, enums, arrays, strings
//! and bytes): one function each, called once per block by
//! [`Col::append`](super::Col).

use std::collections::HashMap;

use arrow_buffer::{BooleanBufferBuilder, NullBufferBuilder};
use gpupg_format::heap::ColumnValues;
use gpupg_format::value::{self, ValueError};

use super::{at, field, null, too_large, BytesMode, Col, ColErr, Ctx, ElemScratch, Shape};

/// Reserves room for a block's bytes. On a chunk's first block the whole
/// chunk's size is extrapolated from it (plus 1/8), so later blocks rarely
/// reallocate; exact when the chunk is one block.
#[inline]
fn reserve_bytes(values: &mut Vec<u8>, block_total: usize, block_rows: usize, rows_hint: usize) {
    if values.capacity() - values.len() >= block_total {
        return;
    }
    if values.is_empty() && rows_hint > block_rows && block_rows > 0 {
        let est = (block_total as u128 * rows_hint as u128 / block_rows as u128) as usize;
        values.reserve_exact(est.saturating_add(est / 8).max(block_total));
    } else {
        values.reserve(block_total);
    }
}

/// The end offset of the value just written, or TooLarge past 2 GiB.
#[inline(always)]
fn end_offset(values: &[u8], i: usize) -> Result<i32, ColErr> {
    i32::try_from(values.len()).map_err(|_| too_large(i))
}

/// Booleans: COPY's one byte 0 or 1, or (`STORED`) the heap's one byte,
/// nonzero for true.
#[inline]
pub(super) fn append_bool<const STORED: bool>(
    b: &mut BooleanBufferBuilder,
    nulls: &mut NullBufferBuilder,
    nullable: bool,
    data: &[u8],
    starts: &[u32],
    lens: &[i32],
) -> Result<(), ColErr> {
    b.reserve(starts.len());
    for (i, (&s, &l)) in starts.iter().zip(lens).enumerate() {
        if l == -1 {
            null(nulls, nullable, i)?;
            b.append(false);
        } else {
            let f = field(data, s, l, i)?;
            let v = match f {
                [byte] if STORED => *byte != 0,
                // COPY's form, or a wrong length reported as COPY's would be.
                _ => value::bool(f).map_err(|e| at(i, e))?,
            };
            b.append(v);
            nulls.append_non_null();
        }
    }
    Ok(())
}

/// Intervals as three child columns (months, days, microseconds), for
/// readers without Arrow's month-day-nano interval.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn append_interval_struct(
    months: &mut Vec<i32>,
    days: &mut Vec<i32>,
    micros: &mut Vec<i64>,
    nulls: &mut NullBufferBuilder,
    nullable: bool,
    data: &[u8],
    starts: &[u32],
    lens: &[i32],
) -> Result<(), ColErr> {
    months.reserve(starts.len());
    days.reserve(starts.len());
    micros.reserve(starts.len());
    for (i, (&s, &l)) in starts.iter().zip(lens).enumerate() {
        let iv = if l == -1 {
            null(nulls, nullable, i)?;
            value::Interval::default()
        } else {
            nulls.append_non_null();
            value::interval(field(data, s, l, i)?).map_err(|e| at(i, e))?
        };
        months.push(iv.months);
        days.push(iv.days);
        micros.push(iv.micros);
    }
    Ok(())
}

/// UUIDs as 16 bytes each, zeros under a NULL.
#[inline]
pub(super) fn append_uuid(
    v: &mut Vec<u8>,
    nulls: &mut NullBufferBuilder,
    nullable: bool,
    data: &[u8],
    starts: &[u32],
    lens: &[i32],
) -> Result<(), ColErr> {
    v.reserve(starts.len() * 16);
    for (i, (&s, &l)) in starts.iter().zip(lens).enumerate() {
        if l == -1 {
            null(nulls, nullable, i)?;
            v.extend_from_slice(&[0; 16]);
        } else {
            v.extend_from_slice(&value::uuid(field(data, s, l, i)?).map_err(|e| at(i, e))?);
            nulls.append_non_null();
        }
    }
    Ok(())
}

/// Enum labels as dictionary keys: a label seen for the first time is
/// checked as text and added to the dictionary.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn append_enum(
    keys: &mut Vec<i32>,
    map: &mut HashMap<Box<[u8]>, i32>,
    dict_offsets: &mut Vec<i32>,
    dict_values: &mut Vec<u8>,
    nulls: &mut NullBufferBuilder,
    nullable: bool,
    data: &[u8],
    starts: &[u32],
    lens: &[i32],
) -> Result<(), ColErr> {
    keys.reserve(starts.len());
    for (i, (&s, &l)) in starts.iter().zip(lens).enumerate() {
        if l == -1 {
            null(nulls, nullable, i)?;
            keys.push(0);
            continue;
        }
        let label = field(data, s, l, i)?;
        let key = match map.get(label) {
            Some(&k) => k,
            None => {
                value::text(label).map_err(|e| at(i, e))?;
                let k = i32::try_from(map.len()).map_err(|_| too_large(i))?;
                dict_values.extend_from_slice(label);
                dict_offsets.push(i32::try_from(dict_values.len()).map_err(|_| too_large(i))?);
                map.insert(label.into(), k);
                k
            }
        };
        keys.push(key);
        nulls.append_non_null();
    }
    Ok(())
}

/// Arrays: each row's offsets (and shape, when kept) here, then all the
/// block's elements appended to `child` at once; an element's error is
/// reported at the row that holds it.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn append_array(
    offsets: &mut Vec<i32>,
    child: &mut Col,
    shape: &mut Option<Shape>,
    scratch: &mut ElemScratch,
    nulls: &mut NullBufferBuilder,
    nullable: bool,
    data: &[u8],
    starts: &[u32],
    lens: &[i32],
    ctx: &mut Ctx,
) -> Result<(), ColErr> {
    scratch.starts.clear();
    scratch.lens.clear();
    scratch.owner.clear();
    offsets.reserve(starts.len());
    let mut last = offsets.last().copied().unwrap_or(0);
    for (i, (&s, &l)) in starts.iter().zip(lens).enumerate() {
        if l == -1 {
            null(nulls, nullable, i)?;
        } else {
            let bytes = field(data, s, l, i)?;
            let h = value::array_header(bytes).map_err(|e| at(i, e))?;
            if h.ndim > 1 && shape.is_none() {
                ctx.flattened_arrays += 1;
            }
            value::array_elements(bytes, &h, |_, off, len| {
                // `off` is inside `bytes`, itself inside `data`,
                // whose offsets fit u32.
                scratch.starts.push(s + off as u32);
                scratch.lens.push(len);
                scratch.owner.push(i as u32);
                Ok(())
            })
            .map_err(|e| at(i, e))?;
            last = i32::try_from(h.nitems)
                .ok()
                .and_then(|n| last.checked_add(n))
                .ok_or_else(|| too_large(i))?;
            if let Some(sh) = shape.as_mut() {
                for &(d, lb) in h.dims() {
                    sh.dims.push(d);
                    sh.lbs.push(lb);
                }
            }
            nulls.append_non_null();
        }
        offsets.push(last);
        if let Some(sh) = shape.as_mut() {
            let n = i32::try_from(sh.dims.len()).map_err(|_| too_large(i))?;
            sh.dim_offsets.push(n);
            sh.lb_offsets.push(n);
        }
    }
    child
        .append(data, &scratch.starts, &scratch.lens, ctx)
        .map_err(|e| ColErr {
            index: scratch.owner.get(e.index).map_or(0, |&o| o as usize),
            fail: e.fail,
        })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn append_bytes(
    offsets: &mut Vec<i32>,
    values: &mut Vec<u8>,
    mode: BytesMode,
    nulls: &mut NullBufferBuilder,
    nullable: bool,
    rows_hint: usize,
    data: &[u8],
    spill: Option<&[u8]>,
    starts: &[u32],
    lens: &[i32],
) -> Result<(), ColErr> {
    let base = values.len();
    let first_offset = offsets.len();
    offsets.reserve(starts.len());
    match mode {
        BytesMode::Utf8 | BytesMode::Binary | BytesMode::Jsonb => {
            let total: usize = lens.iter().map(|&l| l.max(0) as usize).sum();
            reserve_bytes(values, total, starts.len(), rows_hint);
            for (i, (&s, &l)) in starts.iter().zip(lens).enumerate() {
                if l == -1 {
                    null(nulls, nullable, i)?;
                } else {
                    let mut v = match spill {
                        Some(spill) if s & ColumnValues::SPILLED != 0 => {
                            field(spill, s & !ColumnValues::SPILLED, l, i)?
                        }
                        _ => field(data, s, l, i)?,
                    };
                    if mode == BytesMode::Jsonb {
                        v = value::jsonb(v).map_err(|e| at(i, e))?;
                    }
                    values.extend_from_slice(v);
                    nulls.append_non_null();
                }
                offsets.push(end_offset(values, i)?);
            }
        }
        BytesMode::NumericText => {
            for (i, (&s, &l)) in starts.iter().zip(lens).enumerate() {
                if l == -1 {
                    null(nulls, nullable, i)?;
                } else {
                    value::numeric(field(data, s, l, i)?)
                        .map_err(|e| at(i, e))?
                        .write_text(values);
                    nulls.append_non_null();
                }
                offsets.push(end_offset(values, i)?);
            }
        }
    }
    if matches!(mode, BytesMode::Utf8 | BytesMode::Jsonb) {
        check_utf8(&values[base..], base, &offsets[first_offset..])?;
    }
    Ok(())
}

/// Checks a block's bytes as UTF-8 in one pass, then that no value boundary
/// splits a character (a valid concatenation can hide two broken halves).
/// `ends` are the block's end offsets, absolute; `base` is where the block's
/// bytes start. Only on failure are values checked one by one, to name the
/// first bad one.
fn check_utf8(block: &[u8], base: usize, ends: &[i32]) -> Result<(), ColErr> {
    let whole_ok = simdutf8::basic::from_utf8(block).is_ok();
    // A byte 0b10xx_xxxx continues a character; as i8 that is < -0x40.
    let boundaries_ok = whole_ok
        && ends.iter().all(|&e| {
            block
                .get(e as usize - base)
                .is_none_or(|&b| (b as i8) >= -0x40)
        });
    if boundaries_ok {
        return Ok(());
    }
    let mut start = 0usize;
    for (i, &e) in ends.iter().enumerate() {
        let end = e as usize - base;
        if let Err(err) = std::str::from_utf8(&block[start..end]) {
            return Err(at(i, ValueError::Utf8(err.valid_up_to())));
        }
        start = end;
    }
    // Unreachable in practice (the per-value pass agrees with the block
    // pass); reported at the block's first value rather than ignored.
    Err(at(0, ValueError::Utf8(0)))
}
