//! Pass 2: per-column decoding of a block of fields into Arrow buffers.
//!
//! A [`Col`] receives, for one block of rows, the start offset (into the
//! chunk's data) and length (-1 for NULL) of its field in every row, and
//! appends the decoded values to plain vectors that become Arrow buffers
//! without copying. The type is switched on once per block; the inner loops
//! are monomorphic. Arrays reuse the same path: their elements' offsets are
//! gathered into scratch vectors and handed to a child `Col` as a block.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    IntervalMonthDayNanoType, Time64MicrosecondType, TimestampMicrosecondType, UInt32Type,
};
use arrow_array::{
    ArrayRef, ArrowPrimitiveType, BinaryArray, BooleanArray, DictionaryArray, FixedSizeBinaryArray,
    ListArray, PrimitiveArray, StringArray, StructArray,
};
use arrow_buffer::{
    BooleanBufferBuilder, Buffer, IntervalMonthDayNano, NullBufferBuilder, OffsetBuffer,
    ScalarBuffer,
};
use arrow_schema::{ArrowError, DataType};
use gpupg_format::value::{self, ValueError};

use crate::schema::{interval_fields, Plan};

mod append;
use append::{
    append_array, append_bool, append_bytes, append_enum, append_interval_struct, append_uuid,
};

/// Why a value could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum ValueFailure {
    /// The value's bytes are not a valid value of its type.
    #[error(transparent)]
    Value(ValueError),
    /// NULL where the column may not hold one.
    #[error("NULL in a column declared NOT NULL")]
    Null,
    /// The column's bytes in one batch pass Arrow's 32-bit offsets.
    #[error("the batch holds more than 2 GiB of this column, over an Arrow batch's limit; use smaller chunks")]
    TooLarge,
}

/// A failure at `index`, the position within the block given to `append`.
#[derive(Debug)]
pub(crate) struct ColErr {
    pub index: usize,
    pub fail: ValueFailure,
}

#[inline]
fn at(index: usize, e: ValueError) -> ColErr {
    ColErr {
        index,
        fail: ValueFailure::Value(e),
    }
}

/// Counters gathered while decoding a chunk.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    pub flattened_arrays: u64,
}

/// How a variable-length column's bytes become Arrow values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BytesMode {
    /// Copied and checked as UTF-8.
    Utf8,
    /// Version byte checked and dropped, the rest as UTF-8.
    Jsonb,
    /// Parsed numeric printed as text (ASCII, needs no check).
    NumericText,
    /// Copied as they are.
    Binary,
}

/// An array's shape under `ArrayRepr::Struct`.
#[derive(Debug, Default)]
struct Shape {
    dim_offsets: Vec<i32>,
    dims: Vec<i32>,
    lb_offsets: Vec<i32>,
    lbs: Vec<i32>,
}

/// Element offsets of one block of arrays, kept between blocks and chunks
/// so they are allocated once.
#[derive(Debug, Default)]
struct ElemScratch {
    starts: Vec<u32>,
    lens: Vec<i32>,
    /// For each element, the index in the block of the array holding it
    /// (to report the row of a bad element).
    owner: Vec<u32>,
}

#[derive(Debug)]
enum Kind {
    Bool(BooleanBufferBuilder),
    Int2(Vec<i16>),
    Int4(Vec<i32>),
    Int8(Vec<i64>),
    Float4(Vec<f32>),
    Float8(Vec<f64>),
    Oid(Vec<u32>),
    Date(Vec<i32>),
    Time(Vec<i64>),
    Timestamp(Vec<i64>),
    Decimal {
        values: Vec<i128>,
        precision: u8,
        scale: i8,
        round: bool,
    },
    NumericFloat {
        values: Vec<f64>,
        scratch: Vec<u8>,
    },
    Bytes {
        offsets: Vec<i32>,
        values: Vec<u8>,
        mode: BytesMode,
    },
    EnumDict {
        keys: Vec<i32>,
        map: HashMap<Box<[u8]>, i32>,
        dict_offsets: Vec<i32>,
        dict_values: Vec<u8>,
    },
    Uuid(Vec<u8>),
    IntervalMdn(Vec<IntervalMonthDayNano>),
    IntervalStruct {
        months: Vec<i32>,
        days: Vec<i32>,
        micros: Vec<i64>,
    },
    Array {
        offsets: Vec<i32>,
        child: Box<Col>,
        shape: Option<Shape>,
        scratch: ElemScratch,
    },
}

/// The builder of one output column (or of array elements).
#[derive(Debug)]
pub(crate) struct Col {
    nullable: bool,
    nulls: NullBufferBuilder,
    data_type: DataType,
    kind: Kind,
    /// Rows expected in the current chunk, to size the first reservation of
    /// variable-length data; 0 when unknown (array elements).
    rows_hint: usize,
}

/// The element field's type inside a list type.
fn list_item_type(dt: &DataType) -> DataType {
    match dt {
        DataType::List(f) => f.data_type().clone(),
        DataType::Struct(fs) => fs
            .iter()
            .find(|f| f.name() == "values")
            .map(|f| list_item_type(f.data_type()))
            .unwrap_or(DataType::Null),
        _ => DataType::Null,
    }
}

impl Col {
    pub(crate) fn new(plan: &Plan, data_type: DataType, nullable: bool) -> Col {
        let kind = match plan {
            Plan::Bool => Kind::Bool(BooleanBufferBuilder::new(0)),
            Plan::Int2 => Kind::Int2(Vec::new()),
            Plan::Int4 => Kind::Int4(Vec::new()),
            Plan::Int8 => Kind::Int8(Vec::new()),
            Plan::Float4 => Kind::Float4(Vec::new()),
            Plan::Float8 => Kind::Float8(Vec::new()),
            Plan::Oid => Kind::Oid(Vec::new()),
            Plan::Date => Kind::Date(Vec::new()),
            Plan::Time => Kind::Time(Vec::new()),
            Plan::Timestamp => Kind::Timestamp(Vec::new()),
            Plan::Decimal {
                precision,
                scale,
                round,
            } => Kind::Decimal {
                values: Vec::new(),
                precision: *precision,
                scale: *scale,
                round: *round,
            },
            Plan::NumericFloat => Kind::NumericFloat {
                values: Vec::new(),
                scratch: Vec::new(),
            },
            Plan::NumericText => bytes(BytesMode::NumericText),
            Plan::Text => bytes(BytesMode::Utf8),
            Plan::Jsonb => bytes(BytesMode::Jsonb),
            Plan::Bytea => bytes(BytesMode::Binary),
            Plan::EnumDict => Kind::EnumDict {
                keys: Vec::new(),
                map: HashMap::new(),
                dict_offsets: vec![0],
                dict_values: Vec::new(),
            },
            Plan::Uuid => Kind::Uuid(Vec::new()),
            Plan::IntervalMdn => Kind::IntervalMdn(Vec::new()),
            Plan::IntervalStruct => Kind::IntervalStruct {
                months: Vec::new(),
                days: Vec::new(),
                micros: Vec::new(),
            },
            Plan::Array { element, lossless } => Kind::Array {
                offsets: vec![0],
                child: Box::new(Col::new(element, list_item_type(&data_type), true)),
                shape: lossless.then(|| Shape {
                    dim_offsets: vec![0],
                    lb_offsets: vec![0],
                    ..Shape::default()
                }),
                scratch: ElemScratch::default(),
            },
        };
        Col {
            nullable,
            nulls: NullBufferBuilder::new(0),
            data_type,
            kind,
            rows_hint: 0,
        }
    }

    /// Starts a chunk of `rows` rows: drops anything left by a failed
    /// decode and reserves the fixed-size buffers exactly.
    pub(crate) fn begin(&mut self, rows: usize) {
        self.rows_hint = rows;
        self.nulls = NullBufferBuilder::new(rows);
        fn fresh<T>(v: &mut Vec<T>, rows: usize) {
            v.clear();
            v.reserve_exact(rows);
        }
        match &mut self.kind {
            Kind::Bool(b) => *b = BooleanBufferBuilder::new(rows),
            Kind::Int2(v) => fresh(v, rows),
            Kind::Int4(v) | Kind::Date(v) => fresh(v, rows),
            Kind::Int8(v) | Kind::Time(v) | Kind::Timestamp(v) => fresh(v, rows),
            Kind::Float4(v) => fresh(v, rows),
            Kind::Float8(v) => fresh(v, rows),
            Kind::Oid(v) => fresh(v, rows),
            Kind::Decimal { values, .. } => fresh(values, rows),
            Kind::NumericFloat { values, .. } => fresh(values, rows),
            Kind::Bytes {
                offsets, values, ..
            } => {
                fresh(offsets, rows + 1);
                offsets.push(0);
                values.clear();
            }
            Kind::EnumDict {
                keys,
                map,
                dict_offsets,
                dict_values,
            } => {
                fresh(keys, rows);
                map.clear();
                dict_offsets.clear();
                dict_offsets.push(0);
                dict_values.clear();
            }
            Kind::Uuid(v) => fresh(v, rows * 16),
            Kind::IntervalMdn(v) => fresh(v, rows),
            Kind::IntervalStruct {
                months,
                days,
                micros,
            } => {
                fresh(months, rows);
                fresh(days, rows);
                fresh(micros, rows);
            }
            Kind::Array {
                offsets,
                child,
                shape,
                ..
            } => {
                fresh(offsets, rows + 1);
                offsets.push(0);
                if let Some(s) = shape {
                    for o in [&mut s.dim_offsets, &mut s.lb_offsets] {
                        fresh(o, rows + 1);
                        o.push(0);
                    }
                    s.dims.clear();
                    s.lbs.clear();
                }
                child.begin(0);
            }
        }
    }

    /// Appends one block: field `i` is `data[starts[i]..][..lens[i]]`, or
    /// NULL when `lens[i] == -1`. Pass 1 guarantees every field lies inside
    /// `data`; the loops still use checked slicing so that a broken caller
    /// gets an error rather than undefined behaviour.
    pub(crate) fn append(
        &mut self,
        data: &[u8],
        starts: &[u32],
        lens: &[i32],
        ctx: &mut Ctx,
    ) -> Result<(), ColErr> {
        self.append_in::<false>(data, None, starts, lens, ctx)
    }

    /// [`Col::append`] for values as heap pages store them
    /// ([`ValueForm::Stored`](gpupg_format::heap::ValueForm)): fixed-size
    /// numbers little-endian and a boolean as one byte, nonzero for true
    /// (what the heap converter sends as 1). Other kinds are stored as COPY
    /// sends them (uuid bytes, string and bytea payloads). A string or
    /// bytea value whose start has
    /// [`ColumnValues::SPILLED`](gpupg_format::heap::ColumnValues) is in
    /// `spill` (the column's decompressed values), not in `data`.
    pub(crate) fn append_stored(
        &mut self,
        data: &[u8],
        spill: &[u8],
        starts: &[u32],
        lens: &[i32],
        ctx: &mut Ctx,
    ) -> Result<(), ColErr> {
        self.append_in::<true>(data, Some(spill), starts, lens, ctx)
    }

    /// Both: `STORED` picks the byte order of fixed-size numbers and the
    /// form of booleans, at compile time.
    fn append_in<const STORED: bool>(
        &mut self,
        data: &[u8],
        spill: Option<&[u8]>,
        starts: &[u32],
        lens: &[i32],
        ctx: &mut Ctx,
    ) -> Result<(), ColErr> {
        let nulls = &mut self.nulls;
        let nullable = self.nullable;
        match &mut self.kind {
            Kind::Bool(b) => append_bool::<STORED>(b, nulls, nullable, data, starts, lens),
            Kind::Int2(v) => fixed::<_, 2>(v, nulls, nullable, data, starts, lens, |b| {
                Ok(if STORED {
                    i16::from_le_bytes(*b)
                } else {
                    i16::from_be_bytes(*b)
                })
            }),
            Kind::Int4(v) => fixed::<_, 4>(v, nulls, nullable, data, starts, lens, |b| {
                Ok(if STORED {
                    i32::from_le_bytes(*b)
                } else {
                    i32::from_be_bytes(*b)
                })
            }),
            Kind::Int8(v) => fixed::<_, 8>(v, nulls, nullable, data, starts, lens, |b| {
                Ok(if STORED {
                    i64::from_le_bytes(*b)
                } else {
                    i64::from_be_bytes(*b)
                })
            }),
            Kind::Float4(v) => fixed::<_, 4>(v, nulls, nullable, data, starts, lens, |b| {
                Ok(f32::from_bits(if STORED {
                    u32::from_le_bytes(*b)
                } else {
                    u32::from_be_bytes(*b)
                }))
            }),
            Kind::Float8(v) => fixed::<_, 8>(v, nulls, nullable, data, starts, lens, |b| {
                Ok(f64::from_bits(if STORED {
                    u64::from_le_bytes(*b)
                } else {
                    u64::from_be_bytes(*b)
                }))
            }),
            Kind::Oid(v) => fixed::<_, 4>(v, nulls, nullable, data, starts, lens, |b| {
                Ok(if STORED {
                    u32::from_le_bytes(*b)
                } else {
                    u32::from_be_bytes(*b)
                })
            }),
            Kind::Date(v) => fixed::<_, 4>(v, nulls, nullable, data, starts, lens, |b| {
                value::date_to_unix_days(if STORED {
                    i32::from_le_bytes(*b)
                } else {
                    i32::from_be_bytes(*b)
                })
            }),
            Kind::Time(v) => fixed::<_, 8>(v, nulls, nullable, data, starts, lens, |b| {
                if STORED {
                    value::time(&i64::from_le_bytes(*b).to_be_bytes())
                } else {
                    value::time(b)
                }
            }),
            Kind::Timestamp(v) => fixed::<_, 8>(v, nulls, nullable, data, starts, lens, |b| {
                value::timestamp_to_unix_micros(if STORED {
                    i64::from_le_bytes(*b)
                } else {
                    i64::from_be_bytes(*b)
                })
            }),
            Kind::IntervalMdn(v) => fixed::<_, 16>(v, nulls, nullable, data, starts, lens, |b| {
                let iv = value::interval(b)?;
                let nanoseconds = iv.micros.checked_mul(1000).ok_or(ValueError::OutOfRange {
                    what: "interval microseconds",
                    value: iv.micros,
                })?;
                Ok(IntervalMonthDayNano {
                    months: iv.months,
                    days: iv.days,
                    nanoseconds,
                })
            }),
            Kind::IntervalStruct {
                months,
                days,
                micros,
            } => append_interval_struct(months, days, micros, nulls, nullable, data, starts, lens),
            Kind::Uuid(v) => append_uuid(v, nulls, nullable, data, starts, lens),
            Kind::Decimal {
                values,
                precision,
                scale,
                round,
            } => {
                let (p, sc, r) = (*precision, *scale, *round);
                fill(values, nulls, nullable, starts, lens, |i, s, l| {
                    value::numeric_to_i128(field(data, s, l, i)?, p, sc, r).map_err(|e| at(i, e))
                })
            }
            Kind::NumericFloat { values, scratch } => {
                fill(values, nulls, nullable, starts, lens, |i, s, l| {
                    let n = value::numeric(field(data, s, l, i)?).map_err(|e| at(i, e))?;
                    Ok(n.to_f64(scratch))
                })
            }
            Kind::Bytes {
                offsets,
                values,
                mode,
            } => append_bytes(
                offsets,
                values,
                *mode,
                nulls,
                nullable,
                self.rows_hint,
                data,
                spill,
                starts,
                lens,
            ),
            Kind::EnumDict {
                keys,
                map,
                dict_offsets,
                dict_values,
            } => append_enum(
                keys,
                map,
                dict_offsets,
                dict_values,
                nulls,
                nullable,
                data,
                starts,
                lens,
            ),
            Kind::Array {
                offsets,
                child,
                shape,
                scratch,
            } => append_array(
                offsets, child, shape, scratch, nulls, nullable, data, starts, lens, ctx,
            ),
        }
    }

    /// Turns what was appended into an Arrow array, leaving the builder
    /// empty.
    pub(crate) fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let nulls = self.nulls.finish();
        let dt = self.data_type.clone();
        Ok(match &mut self.kind {
            Kind::Bool(b) => Arc::new(BooleanArray::new(b.finish(), nulls)),
            Kind::Int2(v) => prim::<Int16Type>(v, nulls)?,
            Kind::Int4(v) => prim::<Int32Type>(v, nulls)?,
            Kind::Int8(v) => prim::<Int64Type>(v, nulls)?,
            Kind::Float4(v) => prim::<Float32Type>(v, nulls)?,
            Kind::Float8(v) => prim::<Float64Type>(v, nulls)?,
            Kind::Oid(v) => prim::<UInt32Type>(v, nulls)?,
            Kind::Date(v) => prim::<Date32Type>(v, nulls)?,
            Kind::Time(v) => prim::<Time64MicrosecondType>(v, nulls)?,
            Kind::Timestamp(v) => Arc::new(
                PrimitiveArray::<TimestampMicrosecondType>::try_new(
                    ScalarBuffer::from(std::mem::take(v)),
                    nulls,
                )?
                .with_data_type(dt),
            ),
            Kind::IntervalMdn(v) => prim::<IntervalMonthDayNanoType>(v, nulls)?,
            Kind::Decimal {
                values,
                precision,
                scale,
                ..
            } => Arc::new(
                PrimitiveArray::<Decimal128Type>::try_new(
                    ScalarBuffer::from(std::mem::take(values)),
                    nulls,
                )?
                .with_precision_and_scale(*precision, *scale)?,
            ),
            Kind::NumericFloat { values, .. } => prim::<Float64Type>(values, nulls)?,
            Kind::Bytes {
                offsets,
                values,
                mode,
            } => {
                let offsets = take_offsets(offsets);
                let values = Buffer::from_vec(std::mem::take(values));
                if *mode == BytesMode::Binary {
                    Arc::new(BinaryArray::try_new(offsets, values, nulls)?)
                } else {
                    // SAFETY: the offsets start at 0, never decrease and end
                    // at the values' length (append_bytes pushes each end
                    // after copying), and append_bytes checked the bytes as
                    // UTF-8 with every offset on a character boundary
                    // (NumericText writes ASCII only).
                    Arc::new(unsafe { StringArray::new_unchecked(offsets, values, nulls) })
                }
            }
            Kind::EnumDict {
                keys,
                map,
                dict_offsets,
                dict_values,
            } => {
                map.clear();
                let keys = PrimitiveArray::<Int32Type>::try_new(
                    ScalarBuffer::from(std::mem::take(keys)),
                    nulls,
                )?;
                // SAFETY: each label was checked as UTF-8 before its end
                // offset was pushed; offsets start at 0 and increase.
                let dict = unsafe {
                    StringArray::new_unchecked(
                        take_offsets(dict_offsets),
                        Buffer::from_vec(std::mem::take(dict_values)),
                        None,
                    )
                };
                Arc::new(DictionaryArray::<Int32Type>::try_new(keys, Arc::new(dict))?)
            }
            Kind::Uuid(v) => Arc::new(FixedSizeBinaryArray::try_new(
                16,
                Buffer::from_vec(std::mem::take(v)),
                nulls,
            )?),
            Kind::IntervalStruct {
                months,
                days,
                micros,
            } => {
                let parts: Vec<ArrayRef> = vec![
                    prim::<Int32Type>(months, None)?,
                    prim::<Int32Type>(days, None)?,
                    prim::<Int64Type>(micros, None)?,
                ];
                Arc::new(StructArray::try_new(interval_fields(), parts, nulls)?)
            }
            Kind::Array {
                offsets,
                child,
                shape,
                ..
            } => {
                let values = child.finish()?;
                let item = match &dt {
                    DataType::List(f) => f.clone(),
                    DataType::Struct(fs) => match fs
                        .iter()
                        .find(|f| f.name() == "values")
                        .map(|f| f.data_type())
                    {
                        Some(DataType::List(f)) => f.clone(),
                        _ => {
                            return Err(ArrowError::SchemaError(
                                "array struct without values list".into(),
                            ))
                        }
                    },
                    other => {
                        return Err(ArrowError::SchemaError(format!(
                            "array column typed {other}"
                        )))
                    }
                };
                let list = ListArray::try_new(item, take_offsets(offsets), values, None)?;
                match (shape, &dt) {
                    (None, _) => Arc::new(list.with_nulls(nulls)?),
                    (Some(sh), DataType::Struct(fields)) => {
                        let dims = int_list(&mut sh.dim_offsets, &mut sh.dims)?;
                        let lbs = int_list(&mut sh.lb_offsets, &mut sh.lbs)?;
                        Arc::new(StructArray::try_new(
                            fields.clone(),
                            vec![dims, lbs, Arc::new(list)],
                            nulls,
                        )?)
                    }
                    (Some(_), other) => {
                        return Err(ArrowError::SchemaError(format!(
                            "array struct typed {other}"
                        )))
                    }
                }
            }
        })
    }
}

/// A `List<Int32>` of dims or lower bounds.
fn int_list(offsets: &mut Vec<i32>, values: &mut Vec<i32>) -> Result<ArrayRef, ArrowError> {
    let item = match crate::schema::int32_list() {
        DataType::List(f) => f,
        _ => return Err(ArrowError::SchemaError("int32 list".into())),
    };
    let v = prim::<Int32Type>(values, None)?;
    Ok(Arc::new(ListArray::try_new(
        item,
        take_offsets(offsets),
        v,
        None,
    )?))
}

/// Takes finished offsets, leaving `[0]` for the next chunk.
fn take_offsets(o: &mut Vec<i32>) -> OffsetBuffer<i32> {
    let v = std::mem::replace(o, vec![0]);
    // SAFETY: every producer in this module starts offsets at 0 and pushes
    // non-decreasing values (lengths are non-negative, checked sums).
    unsafe { OffsetBuffer::new_unchecked(ScalarBuffer::from(v)) }
}

fn prim<T: ArrowPrimitiveType>(
    v: &mut Vec<T::Native>,
    nulls: Option<arrow_buffer::NullBuffer>,
) -> Result<ArrayRef, ArrowError> {
    Ok(Arc::new(PrimitiveArray::<T>::try_new(
        ScalarBuffer::from(std::mem::take(v)),
        nulls,
    )?))
}

trait WithNulls: Sized {
    fn with_nulls(self, nulls: Option<arrow_buffer::NullBuffer>) -> Result<Self, ArrowError>;
}

impl WithNulls for ListArray {
    fn with_nulls(self, nulls: Option<arrow_buffer::NullBuffer>) -> Result<Self, ArrowError> {
        let (field, offsets, values, _) = self.into_parts();
        ListArray::try_new(field, offsets, values, nulls)
    }
}

fn bytes(mode: BytesMode) -> Kind {
    Kind::Bytes {
        offsets: vec![0],
        values: Vec::new(),
        mode,
    }
}

#[inline]
fn too_large(index: usize) -> ColErr {
    ColErr {
        index,
        fail: ValueFailure::TooLarge,
    }
}

/// Records a NULL, or fails if the column may not hold one.
#[inline(always)]
fn null(nulls: &mut NullBufferBuilder, nullable: bool, i: usize) -> Result<(), ColErr> {
    if !nullable {
        return Err(ColErr {
            index: i,
            fail: ValueFailure::Null,
        });
    }
    nulls.append_null();
    Ok(())
}

/// The bytes of a non-NULL field (`len >= 0`), or an error if a caller
/// broke the framing guarantee.
#[inline(always)]
fn field(data: &[u8], start: u32, len: i32, i: usize) -> Result<&[u8], ColErr> {
    let s = start as usize;
    usize::try_from(len)
        .ok()
        .and_then(|l| data.get(s..s + l))
        .ok_or_else(|| {
            at(
                i,
                ValueError::Truncated {
                    what: "field",
                    needed: len.max(0) as usize,
                    found: data.len().saturating_sub(s),
                },
            )
        })
}

/// The loop every one-value-per-row column shares: `f` decodes a non-NULL
/// field into the slot reserved for it. Blocks without NULLs (a vectorized
/// scan of the lengths tells) skip per-value null bookkeeping.
#[inline(always)]
fn fill<T: Copy + Default>(
    values: &mut Vec<T>,
    nulls: &mut NullBufferBuilder,
    nullable: bool,
    starts: &[u32],
    lens: &[i32],
    mut f: impl FnMut(usize, u32, i32) -> Result<T, ColErr>,
) -> Result<(), ColErr> {
    let n = starts.len().min(lens.len());
    values.reserve(n);
    let old = values.len();
    let spare = &mut values.spare_capacity_mut()[..n];
    let slots = spare.iter_mut().zip(starts).zip(lens).enumerate();
    if !lens.iter().fold(false, |any, &l| any | (l < 0)) {
        for (i, ((slot, &s), &l)) in slots {
            slot.write(f(i, s, l)?);
        }
        nulls.append_n_non_nulls(n);
    } else {
        for (i, ((slot, &s), &l)) in slots {
            if l < 0 {
                null(nulls, nullable, i)?;
                slot.write(T::default());
            } else {
                slot.write(f(i, s, l)?);
                nulls.append_non_null();
            }
        }
    }
    // SAFETY: the loops above wrote all `n` reserved slots (an error returns
    // before this point, leaving the length unchanged).
    unsafe { values.set_len(old + n) };
    Ok(())
}

/// [`fill`] for fixed-width values of `W` bytes; `conv` is inlined per type.
#[inline(always)]
fn fixed<T: Copy + Default, const W: usize>(
    values: &mut Vec<T>,
    nulls: &mut NullBufferBuilder,
    nullable: bool,
    data: &[u8],
    starts: &[u32],
    lens: &[i32],
    conv: impl Fn(&[u8; W]) -> Result<T, ValueError>,
) -> Result<(), ColErr> {
    fill(values, nulls, nullable, starts, lens, |i, s, l| {
        let wrong = || {
            at(
                i,
                ValueError::WrongLength {
                    expected: W,
                    found: l.max(0) as usize,
                },
            )
        };
        if l != W as i32 {
            return Err(wrong());
        }
        let b: &[u8; W] = field(data, s, l, i)?.try_into().map_err(|_| wrong())?;
        conv(b).map_err(|e| at(i, e))
    })
}
