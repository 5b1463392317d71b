//! Heap page → binary COPY rows: the direct heap path's converter.
//!
//! A [`TupleLayout`] describes every attribute of the table in attnum order
//! (dropped ones included, as they still take space in old tuples) and the
//! output columns. [`transcode_page`] appends one binary COPY row per
//! `LP_NORMAL` tuple of a page, each value converted from its on-disk form
//! to exactly the bytes the type's send function would produce, so that the
//! COPY decoders read heap data unchanged.
//!
//! It is all or nothing per page: when a value cannot be converted here (a
//! TOAST pointer, an lz4-compressed value, a type without a converter, a
//! jsonb nested too deep) or the page is corrupt, the rows already appended
//! for the page are removed again and a [`PageFallback`] says why; the
//! caller then reads that page through COPY (`WHERE ctid >= '(b,0)' AND
//! ctid < '(b+1,0)'`).
//!
//! Visibility is not judged here: every `LP_NORMAL` tuple is converted,
//! including dead and uncommitted ones. Only pages that are all-visible (the
//! visibility map's bit, [`PageSummary::all_visible`]) hold exactly the rows
//! a snapshot sees; the caller decides what to trust.
//!
//! Text is converted without any encoding conversion: the bytes are what
//! COPY sends when the client encoding equals the server encoding.
//!
//! Pages are converted by a fast path (`transcode_fast.rs`: one pass per
//! tuple from a program compiled with the layout, rows written into room
//! made for them) that gives up on anything unusual; the page is then
//! converted again by the reference path below (deform, then convert each
//! output column), which decides the rows or the fallback. Both give the
//! same bytes for every page the fast path converts.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use super::checksum::{self, ChecksumError};
use super::jsonb::{self, JsonbError, JSONB_MAX_DEPTH};
use super::lz4::Lz4Error;
use super::page::{maxalign, LpFlags, Page, PageError, DEFAULT_BLOCK_SIZE};
use super::pglz::PglzError;
use super::toast::{ToastError, ToastLookup};
use super::tuple::{self, bitmap_len, Align, AttrStorage, Datum, HeapTuple, TupleError};
use super::varlena::{self, DecompressError, Varlena, VarlenaError};
use crate::chunk::CopyChunk;
use crate::types::PgType;
use crate::value::{ARRAY_MAX_DIMS, ARRAY_MAX_ELEMENTS};

/// Storage of an array's element type (`typlen`, `typalign`, `typbyval`
/// of `pg_type` for `typelem`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementDesc {
    /// `typlen`: > 0 fixed size, -1 varlena.
    pub typlen: i16,
    /// `typalign`.
    pub align: Align,
    /// `typbyval`: passed by value (fixed sizes up to 8 bytes).
    pub byval: bool,
}

/// One attribute of the table, as `pg_attribute` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDesc {
    /// `attlen`: > 0 fixed, -1 varlena, -2 cstring.
    pub attlen: i16,
    /// `attalign`.
    pub align: Align,
    /// `attbyval`.
    pub byval: bool,
    /// `attisdropped`: never output, but still stepped over.
    pub dropped: bool,
    /// How the values are converted (domains as their base type). `None`
    /// for a dropped attribute, or for a live one of a type without a
    /// [`PgType`], which then must not be an output column.
    pub pg_type: Option<PgType>,
    /// For arrays: the element type's storage.
    pub element: Option<ElementDesc>,
    /// `atthasmissing`: the value of tuples written before the column was
    /// added, as ready-made send-format bytes (`None`: NULL).
    pub missing: Option<Vec<u8>>,
}

impl AttributeDesc {
    /// A live column.
    pub fn column(pg_type: PgType, attlen: i16, align: Align, byval: bool) -> AttributeDesc {
        AttributeDesc {
            attlen,
            align,
            byval,
            dropped: false,
            pg_type: Some(pg_type),
            element: None,
            missing: None,
        }
    }

    /// A dropped column (its `attlen` and `attalign` stay in `pg_attribute`).
    pub fn dropped(attlen: i16, align: Align) -> AttributeDesc {
        AttributeDesc {
            attlen,
            align,
            byval: attlen > 0 && attlen <= 8,
            dropped: true,
            pg_type: None,
            element: None,
            missing: None,
        }
    }

    /// Sets the element storage of an array column.
    pub fn with_element(mut self, element: ElementDesc) -> AttributeDesc {
        self.element = Some(element);
        self
    }

    /// Sets the missing value (send-format bytes).
    pub fn with_missing(mut self, send_bytes: Vec<u8>) -> AttributeDesc {
        self.missing = Some(send_bytes);
        self
    }
}

/// A layout that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// An output column's index is past the table's attributes.
    #[error("output column {index} names no attribute (the table has {natts})")]
    NoSuchAttribute {
        /// The output's attribute index (0-based).
        index: usize,
        /// Attributes of the table.
        natts: usize,
    },
    /// An output column is a dropped attribute.
    #[error("output column names dropped attribute {attnum}")]
    DroppedOutput {
        /// The attribute number (1-based).
        attnum: usize,
    },
    /// An output column's type is not known to the converter.
    #[error("output attribute {attnum} has no type the heap path can convert")]
    NoType {
        /// The attribute number (1-based).
        attnum: usize,
    },
    /// A type stored with a size it cannot have (a catalog mismatch).
    #[error("attribute {attnum} of type {pg_type} cannot have attlen {attlen}")]
    TypeLength {
        /// The attribute number (1-based).
        attnum: usize,
        /// The type's name.
        pg_type: String,
        /// The catalog's `attlen`.
        attlen: i16,
    },
    /// An `attlen` that is neither positive, -1 nor -2.
    #[error("attribute {attnum} has invalid attlen {attlen}")]
    BadAttlen {
        /// The attribute number (1-based).
        attnum: usize,
        /// Its `attlen`.
        attlen: i16,
    },
    /// An array output column without its [`ElementDesc`].
    #[error("array attribute {attnum} needs its element type's storage")]
    NoElement {
        /// The attribute number (1-based).
        attnum: usize,
    },
    /// An array type whose element is itself an array.
    #[error("attribute {attnum}: arrays of arrays do not exist")]
    NestedArray {
        /// The attribute number (1-based).
        attnum: usize,
    },
    /// More attributes than a tuple can have (`MaxTupleAttributeNumber`).
    #[error("{0} attributes is more than a heap tuple can have")]
    TooManyAttributes(usize),
    /// More output columns than a COPY row's int16 field count holds.
    #[error("{0} output columns is more than a COPY row can have")]
    TooManyOutputs(usize),
    /// A block size PostgreSQL cannot be built with.
    #[error(transparent)]
    BlockSize(#[from] PageError),
}

/// How one value is converted (compiled from the type and its storage).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Conv {
    /// Never output.
    Dropped,
    /// 1 byte, sent as 0 or 1.
    Bool,
    /// Fixed size, byte order reversed: int2, int4, int8, float4, float8,
    /// oid, date, time, timestamp, timestamptz.
    Swap(usize),
    /// int64 time, int32 day, int32 month, each reversed.
    Interval,
    /// Fixed size, sent as stored (uuid).
    Raw,
    /// A varlena's payload (text, varchar, bpchar, json, bytea).
    Varlena,
    /// Fixed size, NUL-padded (`name`): the bytes before the first NUL.
    NulPadded,
    /// NUL-terminated (attlen -2): the bytes before the NUL.
    CString,
    /// On-disk numeric to numeric_send's format.
    Numeric,
    /// A 4-byte enum OID, sent as its label.
    Enum,
    /// On-disk jsonb to jsonb_send's format: version 1 and `jsonb_out`'s
    /// text.
    Jsonb,
    /// ArrayType to array_send's format.
    Array(Box<ElementPlan>),
    /// No converter: a non-NULL value makes the page fall back.
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ElementPlan {
    typlen: i16,
    align: Align,
    conv: Conv,
}

/// The conversion for a scalar type stored with `len`.
fn scalar_conv(pg: &PgType, len: i16) -> Option<Conv> {
    use PgType::*;
    Some(match (pg, len) {
        (Bool, 1) => Conv::Bool,
        (Int2, 2) => Conv::Swap(2),
        (Int4 | Float4 | Oid | Date, 4) => Conv::Swap(4),
        (Int8 | Float8 | Time | Timestamp | Timestamptz, 8) => Conv::Swap(8),
        (Interval, 16) => Conv::Interval,
        (Uuid, 16) => Conv::Raw,
        (Text, -1) | (Bytea, -1) | (Json, -1) => Conv::Varlena,
        (Text, l) if l > 0 => Conv::NulPadded,
        (Text, -2) => Conv::CString,
        (Numeric(_), -1) => Conv::Numeric,
        (Enum, 4) => Conv::Enum,
        (Jsonb, -1) => Conv::Jsonb,
        _ => return None,
    })
}

fn check_attlen(attnum: usize, attlen: i16) -> Result<(), LayoutError> {
    if attlen > 0 || attlen == -1 || attlen == -2 {
        Ok(())
    } else {
        Err(LayoutError::BadAttlen { attnum, attlen })
    }
}

fn plan(attnum: usize, a: &AttributeDesc) -> Result<Conv, LayoutError> {
    check_attlen(attnum, a.attlen)?;
    if a.dropped {
        return Ok(Conv::Dropped);
    }
    let Some(pg) = &a.pg_type else {
        return Ok(Conv::Unsupported("a type without a PgType".into()));
    };
    let mismatch = || LayoutError::TypeLength {
        attnum,
        pg_type: pg.to_string(),
        attlen: a.attlen,
    };
    match pg {
        PgType::Array(elem) => {
            if a.attlen != -1 {
                return Err(mismatch());
            }
            if matches!(**elem, PgType::Array(_)) {
                return Err(LayoutError::NestedArray { attnum });
            }
            let e = a.element.ok_or(LayoutError::NoElement { attnum })?;
            check_attlen(attnum, e.typlen)?;
            let conv = scalar_conv(elem, e.typlen).ok_or_else(|| LayoutError::TypeLength {
                attnum,
                pg_type: elem.to_string(),
                attlen: e.typlen,
            })?;
            Ok(match conv {
                Conv::Unsupported(_) => Conv::Unsupported(pg.to_string()),
                conv => Conv::Array(Box::new(ElementPlan {
                    typlen: e.typlen,
                    align: e.align,
                    conv,
                })),
            })
        }
        _ => scalar_conv(pg, a.attlen).ok_or_else(mismatch),
    }
}

/// Everything [`transcode_page`] needs to know about a table.
#[derive(Debug, Clone)]
pub struct TupleLayout {
    attributes: Vec<AttributeDesc>,
    storage: Vec<AttrStorage>,
    plans: Vec<Conv>,
    output: Vec<usize>,
    /// Attributes to deform: up to the last output one.
    deform_natts: usize,
    enum_labels: HashMap<u32, Box<[u8]>>,
    block_size: usize,
    verify_checksums: bool,
    /// Where values stored out of line are read; none: their pages fall
    /// back ([`FallbackReason::ExternalToast`]).
    toast: Option<Arc<dyn ToastLookup>>,
    /// The fast path's program.
    fast: fast::FastPlan,
}

impl TupleLayout {
    /// A layout of `attributes` (every attribute of the table, attnum
    /// order) producing rows of the attributes at the 0-based indexes
    /// `output` (any order, any subset, like COPY's column list).
    /// `enum_labels` maps the OIDs of the enum values of any enum column
    /// (`pg_enum.oid`) to their labels. Block size 8192, checksums not
    /// verified.
    pub fn new(
        attributes: Vec<AttributeDesc>,
        output: Vec<usize>,
        enum_labels: HashMap<u32, String>,
    ) -> Result<TupleLayout, LayoutError> {
        if attributes.len() > tuple::MAX_TUPLE_ATTRIBUTES {
            return Err(LayoutError::TooManyAttributes(attributes.len()));
        }
        if output.len() > i16::MAX as usize {
            return Err(LayoutError::TooManyOutputs(output.len()));
        }
        let plans = attributes
            .iter()
            .enumerate()
            .map(|(i, a)| plan(i + 1, a))
            .collect::<Result<Vec<_>, _>>()?;
        for &index in &output {
            let a = attributes.get(index).ok_or(LayoutError::NoSuchAttribute {
                index,
                natts: attributes.len(),
            })?;
            if a.dropped {
                return Err(LayoutError::DroppedOutput { attnum: index + 1 });
            }
            if a.pg_type.is_none() {
                return Err(LayoutError::NoType { attnum: index + 1 });
            }
        }
        let storage = attributes
            .iter()
            .map(|a| AttrStorage {
                attlen: a.attlen,
                align: a.align,
            })
            .collect();
        let deform_natts = output.iter().map(|&i| i + 1).max().unwrap_or(0);
        Ok(TupleLayout {
            fast: fast::FastPlan::new(&attributes, &plans, &output, deform_natts),
            deform_natts,
            storage,
            plans,
            output,
            attributes,
            enum_labels: enum_labels
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes().into_boxed_slice()))
                .collect(),
            block_size: DEFAULT_BLOCK_SIZE,
            verify_checksums: false,
            toast: None,
        })
    }

    /// A layout whose output is every live attribute in attnum order, the
    /// columns of `COPY table TO STDOUT`.
    pub fn all_columns(
        attributes: Vec<AttributeDesc>,
        enum_labels: HashMap<u32, String>,
    ) -> Result<TupleLayout, LayoutError> {
        let output = (0..attributes.len())
            .filter(|&i| !attributes[i].dropped)
            .collect();
        Self::new(attributes, output, enum_labels)
    }

    /// Sets the block size of the relation (a power of two, 1 kB..=32 kB).
    pub fn with_block_size(mut self, block_size: usize) -> Result<TupleLayout, LayoutError> {
        super::page::check_block_size(block_size)?;
        self.block_size = block_size;
        Ok(self)
    }

    /// Whether [`transcode_page`] verifies page checksums (for clusters
    /// with data checksums enabled); a mismatch makes the page fall back.
    pub fn with_checksums(mut self, verify: bool) -> TupleLayout {
        self.verify_checksums = verify;
        self
    }

    /// Reads values stored out of line through `toast` (the table's TOAST
    /// relation, trusted pages only) instead of falling back.
    pub fn set_toast(&mut self, toast: Arc<dyn ToastLookup>) {
        self.toast = Some(toast);
    }

    /// The table's attributes, dropped ones included, in `attnum` order.
    pub fn attributes(&self) -> &[AttributeDesc] {
        &self.attributes
    }

    /// The output attributes (0-based indexes).
    pub fn output(&self) -> &[usize] {
        &self.output
    }

    /// The relation's block size (`BLCKSZ`), 8192 unless built otherwise.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Whether [`with_checksums`](Self::with_checksums) turned verification on.
    pub fn verifies_checksums(&self) -> bool {
        self.verify_checksums
    }

    /// Attributes deformed for a row: up to the last output one.
    pub fn deform_natts(&self) -> usize {
        self.deform_natts
    }

    /// The output columns (their positions in [`output`](Self::output))
    /// whose type the converter does not convert: a page holding a non-NULL
    /// value of one falls back to COPY.
    pub fn unconverted_outputs(&self) -> Vec<usize> {
        self.output
            .iter()
            .enumerate()
            .filter(|&(_, &attr)| matches!(self.plans.get(attr), Some(Conv::Unsupported(_))))
            .map(|(out, _)| out)
            .collect()
    }

    /// How attribute `index` (0-based) is sent; `None` past the last one.
    /// An array is [`SendForm::Array`] when its elements have a form of
    /// their own ([`Self::array_element`]), else `Other`.
    pub fn send_form(&self, index: usize) -> Option<SendForm> {
        Some(match self.plans.get(index)? {
            Conv::Array(_) => match self.array_element(index) {
                Some(_) => SendForm::Array,
                None => SendForm::Other,
            },
            conv => scalar_send_form(conv),
        })
    }

    /// How the elements of array attribute `index` (0-based) are stored
    /// and sent; `None` when it is not an array, or its elements' form is
    /// `Other`.
    pub fn array_element(&self, index: usize) -> Option<ArrayElement> {
        let Some(Conv::Array(elem)) = self.plans.get(index) else {
            return None;
        };
        let form = scalar_send_form(&elem.conv);
        (form != SendForm::Other).then_some(ArrayElement {
            form,
            typlen: elem.typlen,
            align: elem.align,
        })
    }

    /// The labels of the enum values of enum columns, by `pg_enum.oid`,
    /// sorted by OID.
    pub fn enum_labels(&self) -> Vec<(u32, &[u8])> {
        let mut v: Vec<(u32, &[u8])> = self.enum_labels.iter().map(|(&k, l)| (k, &l[..])).collect();
        v.sort_unstable_by_key(|&(k, _)| k);
        v
    }
}

/// The [`SendForm`] of a value converted by `conv` (an array's is `Other`:
/// its elements have the form, see [`TupleLayout::array_element`]).
fn scalar_send_form(conv: &Conv) -> SendForm {
    match conv {
        Conv::Dropped => SendForm::Dropped,
        Conv::Bool => SendForm::Bool,
        Conv::Swap(n @ (2 | 4 | 8)) => SendForm::Swap(*n as u8),
        Conv::Interval => SendForm::Interval,
        Conv::Raw => SendForm::Raw,
        Conv::Varlena => SendForm::Varlena,
        Conv::NulPadded => SendForm::NulPadded,
        Conv::CString => SendForm::CString,
        Conv::Numeric => SendForm::Numeric,
        Conv::Enum => SendForm::Enum,
        Conv::Jsonb => SendForm::Jsonb,
        Conv::Swap(_) | Conv::Array(_) | Conv::Unsupported(_) => SendForm::Other,
    }
}

/// The elements of an array attribute: how each non-NULL one is stored
/// (`typlen`, alignment) and sent (`form`, never `Array`, `Dropped` or
/// `Other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArrayElement {
    /// The element's send form.
    pub form: SendForm,
    /// The element type's `typlen` (> 0, -1 varlena, -2 cstring).
    pub typlen: i16,
    /// The element type's `typalign`: each element is padded to it.
    pub align: Align,
}

/// How the values of one attribute become send-format bytes, for
/// converters outside this crate (the GPU's page kernel) that handle the
/// common forms and leave the rest to [`transcode_page`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendForm {
    /// A dropped attribute: stepped over, never output.
    Dropped,
    /// 1 byte, sent as 0 or 1.
    Bool,
    /// Fixed size (2, 4 or 8), byte order reversed.
    Swap(u8),
    /// int64 time, int32 day, int32 month, each reversed.
    Interval,
    /// Fixed size, sent as stored (uuid).
    Raw,
    /// A varlena's payload (text, varchar, bpchar, json, bytea).
    Varlena,
    /// Fixed size, NUL-padded (`name`): the bytes before the first NUL.
    NulPadded,
    /// NUL-terminated (attlen -2): the bytes before the NUL.
    CString,
    /// On-disk numeric to numeric_send's format.
    Numeric,
    /// A 4-byte enum OID, sent as its label ([`TupleLayout::enum_labels`]).
    Enum,
    /// On-disk jsonb to jsonb_send's format: version byte 1, then the text
    /// `jsonb_out` prints.
    Jsonb,
    /// On-disk ArrayType to array_send's format, each element sent in the
    /// form of [`TupleLayout::array_element`].
    Array,
    /// Anything else (arrays of elements without a form, types without a
    /// converter).
    Other,
}

/// What was wrong with a corrupt page.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Corruption {
    /// The page header or a line pointer.
    #[error(transparent)]
    Page(#[from] PageError),
    /// The page checksum (when verified).
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    /// A tuple's header or attributes.
    #[error(transparent)]
    Tuple(#[from] TupleError),
    /// A varlena header.
    #[error(transparent)]
    Varlena(#[from] VarlenaError),
    /// A pglz-compressed value.
    #[error(transparent)]
    Pglz(#[from] PglzError),
    /// A jsonb value's structure.
    #[error(transparent)]
    Jsonb(JsonbError),
    /// An lz4-compressed value.
    #[error(transparent)]
    Lz4(#[from] Lz4Error),
    /// A value's own structure (a numeric, an array header...), named.
    #[error("invalid {0}")]
    Value(&'static str),
}

/// Why a page must be read through COPY instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FallbackReason {
    /// A TOAST pointer: the value lives in the TOAST table, which the heap
    /// path does not read.
    #[error("a value is stored out of line (TOAST pointer)")]
    ExternalToast,
    /// A value stored out of line that the TOAST relation's trusted pages
    /// do not give.
    #[error("a value stored out of line is not read from the files: {0}")]
    Toast(#[from] ToastError),
    /// A type the converter does not know (a live attribute without a
    /// [`PgType`]), or a value it does not follow (jsonb nested deeper
    /// than [`JSONB_MAX_DEPTH`]).
    #[error("type {0} has no heap converter")]
    UnsupportedType(String),
    /// An enum OID missing from the layout's labels (added after it was read).
    #[error("enum value OID {0} has no label in the layout")]
    UnknownEnumValue(u32),
    /// The chunk's offsets (u32) cannot hold this page's rows.
    #[error("the chunk would exceed 4 GiB")]
    ChunkFull,
    /// Something on the page is not what PostgreSQL writes.
    #[error("corrupt page: {0}")]
    Corrupt(#[from] Corruption),
}

/// A page that was not converted, and why. The rows it had appended were
/// removed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("block {blkno}{}{}: {reason}",
    .offnum.map(|o| format!(", line pointer {o}")).unwrap_or_default(),
    .attnum.map(|a| format!(", attribute {a}")).unwrap_or_default())]
pub struct PageFallback {
    /// The page's block number in the relation.
    pub blkno: u32,
    /// The tuple's offset number (1-based), when one tuple is the cause.
    pub offnum: Option<u16>,
    /// The attribute number (1-based), when one value is the cause.
    pub attnum: Option<u16>,
    /// Why the page was not converted.
    pub reason: FallbackReason,
}

/// What one converted page held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageSummary {
    /// Rows appended (one per `LP_NORMAL` line pointer).
    pub rows: usize,
    /// The page LSN.
    pub lsn: u64,
    /// `PD_ALL_VISIBLE` of the page header.
    pub all_visible: bool,
    /// The page was new (all zeros): no rows.
    pub new_page: bool,
    /// Line pointers on the page, of any state.
    pub line_pointers: usize,
}

macro_rules! corruption_from {
    ($($t:ty),*) => {$(
        impl From<$t> for FallbackReason {
            fn from(e: $t) -> FallbackReason {
                FallbackReason::Corrupt(e.into())
            }
        }
    )*};
}
impl From<JsonbError> for FallbackReason {
    fn from(e: JsonbError) -> FallbackReason {
        match e {
            // Not corrupt, only deeper than the converter follows.
            JsonbError::TooDeep => FallbackReason::UnsupportedType(format!(
                "jsonb nested over {JSONB_MAX_DEPTH} levels"
            )),
            e => FallbackReason::Corrupt(Corruption::Jsonb(e)),
        }
    }
}

corruption_from!(
    PageError,
    ChecksumError,
    TupleError,
    VarlenaError,
    PglzError,
    Lz4Error
);

impl From<DecompressError> for FallbackReason {
    fn from(e: DecompressError) -> FallbackReason {
        match e {
            DecompressError::Pglz(e) => e.into(),
            DecompressError::Lz4(e) => e.into(),
        }
    }
}

fn corrupt(what: &'static str) -> FallbackReason {
    FallbackReason::Corrupt(Corruption::Value(what))
}

/// Growth of the output buffer beyond what a write needs, so that growing
/// (which zero-fills) is rare.
const OUT_SLACK: usize = 2048;

/// The slack of an output that holds one value ([`Out::for_value`]): it is
/// cut off after every value, so a page's slack would be zero-filled again
/// for each (2% of the CPU time of the events table's heap path).
const VALUE_SLACK: usize = 64;

/// The output of one page: appends to a `Vec<u8>` without touching its
/// length on every write. `buf[..pos]` is what has been written; `buf[pos..]`
/// is zero-filled (or stale) room that writes go to, extended in large steps
/// and cut off again by [`Out::finish`]. Every write is a bounds-checked
/// slice copy.
struct Out<'a> {
    buf: &'a mut Vec<u8>,
    pos: usize,
    /// How far beyond a write's needs growing extends the room.
    slack: usize,
}

impl<'a> Out<'a> {
    fn new(buf: &'a mut Vec<u8>) -> Out<'a> {
        let pos = buf.len();
        Out {
            buf,
            pos,
            slack: OUT_SLACK,
        }
    }

    /// An output for one value, finished right after it.
    fn for_value(buf: &'a mut Vec<u8>) -> Out<'a> {
        Out {
            slack: VALUE_SLACK,
            ..Out::new(buf)
        }
    }

    /// Bytes written (the length the vector will have).
    #[inline(always)]
    fn len(&self) -> usize {
        self.pos
    }

    /// Makes room for `n` more bytes.
    #[inline(always)]
    fn reserve(&mut self, n: usize) {
        if n > self.buf.len() - self.pos {
            self.grow(n);
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, n: usize) {
        self.buf.resize(self.pos + n + self.slack, 0);
    }

    /// The next `n` bytes, to be written by the caller.
    #[inline(always)]
    fn take(&mut self, n: usize) -> &mut [u8] {
        self.reserve(n);
        let at = self.pos;
        self.pos += n;
        &mut self.buf[at..at + n]
    }

    /// The next `N` bytes, to be written by the caller.
    #[inline(always)]
    fn take_array<const N: usize>(&mut self) -> &mut [u8; N] {
        self.take(N).try_into().expect("take returns N bytes")
    }

    #[inline(always)]
    fn put<const N: usize>(&mut self, b: [u8; N]) {
        *self.take_array::<N>() = b;
    }

    /// Takes back the last `n` bytes written (a fixed-size copy of a
    /// shorter value).
    #[inline(always)]
    fn unput(&mut self, n: usize) {
        self.pos -= n;
    }

    #[inline(always)]
    fn put_slice(&mut self, b: &[u8]) {
        self.take(b.len()).copy_from_slice(b);
    }

    /// Room for `n` more bytes, to be written by the caller and kept with
    /// [`Out::advance`].
    #[inline(always)]
    fn room(&mut self, n: usize) -> &mut [u8] {
        self.reserve(n);
        &mut self.buf[self.pos..self.pos + n]
    }

    /// Keeps `n` bytes written into [`Out::room`].
    #[inline(always)]
    fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// Overwrites 4 bytes already written at `at`.
    #[inline(always)]
    fn patch(&mut self, at: usize, b: [u8; 4]) {
        self.buf[at..at + 4].copy_from_slice(&b);
    }

    /// Runs `f`, which appends to the vector itself.
    fn with_vec<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        self.buf.truncate(self.pos);
        let r = f(self.buf);
        self.pos = self.buf.len();
        r
    }

    /// Cuts the vector to what was written.
    fn finish(self) {
        self.buf.truncate(self.pos);
    }
}

#[inline(always)]
fn put_i32(out: &mut Out<'_>, v: i32) {
    out.put(v.to_be_bytes());
}

#[inline(always)]
fn put_len(out: &mut Out<'_>, len: usize) -> Result<(), FallbackReason> {
    let len = i32::try_from(len).map_err(|_| corrupt("value length"))?;
    put_i32(out, len);
    Ok(())
}

/// Starts a field whose length is known only at its end.
#[inline(always)]
fn begin_field(out: &mut Out<'_>) -> usize {
    let at = out.len();
    out.put([0; 4]);
    at
}

#[inline(always)]
fn end_field(out: &mut Out<'_>, at: usize) -> Result<(), FallbackReason> {
    let len = i32::try_from(out.len() - at - 4).map_err(|_| corrupt("value length"))?;
    out.patch(at, len.to_be_bytes());
    Ok(())
}

#[inline(always)]
fn le_i32(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The uncompressed payload of a varlena datum: borrowed when stored
/// inline, else decompressed or read through `toast` into `scratch`.
fn payload<'a>(
    datum: &'a [u8],
    scratch: &'a mut Vec<u8>,
    toast: Option<&dyn ToastLookup>,
) -> Result<&'a [u8], FallbackReason> {
    match varlena::parse(datum)? {
        Varlena::Short(p) | Varlena::Plain(p) => Ok(p),
        Varlena::Compressed {
            method,
            rawsize,
            data,
        } => {
            scratch.clear();
            varlena::decompress_append(method, data, rawsize, scratch)?;
            Ok(scratch)
        }
        Varlena::External(ptr) => {
            let toast = toast.ok_or(FallbackReason::ExternalToast)?;
            scratch.clear();
            toast.detoast(&ptr, scratch)?;
            Ok(scratch)
        }
    }
}

/// Per-page conversion state.
struct Converter<'l> {
    labels: &'l HashMap<u32, Box<[u8]>>,
    toast: Option<&'l dyn ToastLookup>,
    /// Decompressed payloads of top-level values.
    scratch: Vec<u8>,
    /// Decompressed payloads of array elements.
    inner: Vec<u8>,
}

impl Converter<'_> {
    /// Appends the field (length word and send-format bytes) for the
    /// non-NULL on-disk `datum`.
    fn field(
        &mut self,
        conv: &Conv,
        datum: &[u8],
        out: &mut Out<'_>,
    ) -> Result<(), FallbackReason> {
        Self::convert(
            conv,
            datum,
            out,
            self.labels,
            self.toast,
            &mut self.scratch,
            &mut self.inner,
        )
    }

    fn convert(
        conv: &Conv,
        datum: &[u8],
        out: &mut Out<'_>,
        labels: &HashMap<u32, Box<[u8]>>,
        toast: Option<&dyn ToastLookup>,
        scratch: &mut Vec<u8>,
        inner: &mut Vec<u8>,
    ) -> Result<(), FallbackReason> {
        match conv {
            Conv::Bool => {
                let b = *datum.first().ok_or(corrupt("boolean"))?;
                out.put([0, 0, 0, 1, u8::from(b != 0)]);
            }
            Conv::Swap(2) => {
                let b: [u8; 2] = datum.try_into().map_err(|_| corrupt("int2"))?;
                out.put(swap2(b));
            }
            Conv::Swap(4) => {
                let b: [u8; 4] = datum.try_into().map_err(|_| corrupt("4-byte value"))?;
                out.put(swap4(b));
            }
            Conv::Swap(8) => {
                let b: [u8; 8] = datum.try_into().map_err(|_| corrupt("8-byte value"))?;
                out.put(swap8(b));
            }
            Conv::Swap(n) => {
                if datum.len() != *n {
                    return Err(corrupt("fixed-size value"));
                }
                put_i32(out, *n as i32);
                for (d, s) in out.take(*n).iter_mut().zip(datum.iter().rev()) {
                    *d = *s;
                }
            }
            Conv::Interval => {
                let b: [u8; 16] = datum.try_into().map_err(|_| corrupt("interval"))?;
                out.put(interval(b));
            }
            Conv::Raw => {
                put_len(out, datum.len())?;
                out.put_slice(datum);
            }
            Conv::NulPadded => {
                let n = datum.iter().position(|&b| b == 0).unwrap_or(datum.len());
                put_len(out, n)?;
                out.put_slice(&datum[..n]);
            }
            Conv::CString => {
                let n = datum.iter().position(|&b| b == 0).unwrap_or(datum.len());
                put_len(out, n)?;
                out.put_slice(&datum[..n]);
            }
            Conv::Varlena => match varlena::parse(datum)? {
                Varlena::Short(p) | Varlena::Plain(p) => {
                    put_len(out, p.len())?;
                    out.put_slice(p);
                }
                Varlena::Compressed {
                    method,
                    rawsize,
                    data,
                } => {
                    put_len(out, rawsize)?;
                    out.with_vec(|v| varlena::decompress_append(method, data, rawsize, v))?;
                }
                Varlena::External(ptr) => {
                    let toast = toast.ok_or(FallbackReason::ExternalToast)?;
                    let at = begin_field(out);
                    out.with_vec(|v| toast.detoast(&ptr, v))?;
                    end_field(out, at)?;
                }
            },
            Conv::Numeric => {
                let p = payload(datum, scratch, toast)?;
                numeric_send(p, out)?;
            }
            Conv::Enum => {
                let b: [u8; 4] = datum.try_into().map_err(|_| corrupt("enum OID"))?;
                let oid = u32::from_le_bytes(b);
                let label = labels
                    .get(&oid)
                    .ok_or(FallbackReason::UnknownEnumValue(oid))?;
                put_len(out, label.len())?;
                out.put_slice(label);
            }
            Conv::Jsonb => {
                let p = payload(datum, scratch, toast)?;
                let field = begin_field(out);
                out.put([1]);
                out.with_vec(|v| jsonb::jsonb_to_text(p, v, inner))?;
                end_field(out, field)?;
            }
            Conv::Array(elem) => {
                let p = payload(datum, scratch, toast)?;
                array(p, elem, out, labels, inner)?;
            }
            Conv::Unsupported(name) => return Err(FallbackReason::UnsupportedType(name.clone())),
            Conv::Dropped => return Err(corrupt("output of a dropped attribute")),
        }
        Ok(())
    }
}

/// The field (length word and big-endian value) of a 2-byte value.
#[inline(always)]
fn swap2(b: [u8; 2]) -> [u8; 6] {
    let v = u16::from_le_bytes(b).to_be_bytes();
    [0, 0, 0, 2, v[0], v[1]]
}

/// The field (length word and big-endian value) of a 4-byte value.
#[inline(always)]
fn swap4(b: [u8; 4]) -> [u8; 8] {
    ((4u64 << 32) | u64::from(u32::from_le_bytes(b))).to_be_bytes()
}

/// The field (length word and big-endian value) of an 8-byte value.
#[inline(always)]
fn swap8(b: [u8; 8]) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&8i32.to_be_bytes());
    v[4..].copy_from_slice(&u64::from_le_bytes(b).to_be_bytes());
    v
}

/// The field of an interval: int64 time, int32 day, int32 month, each
/// reversed.
#[inline(always)]
fn interval(b: [u8; 16]) -> [u8; 20] {
    let mut v = [0u8; 20];
    v[..4].copy_from_slice(&16i32.to_be_bytes());
    for (dst, src) in [(4..12, 0..8), (12..16, 8..12), (16..20, 12..16)] {
        v[dst].copy_from_slice(&b[src]);
    }
    v[4..12].reverse();
    v[12..16].reverse();
    v[16..20].reverse();
    v
}

/// `numeric_send` of the on-disk numeric payload `p` (after the varlena
/// header): NumericShort (`0x8000` set), special (`0xC000` set: NaN,
/// ±Infinity) or NumericLong, to int16 ndigits, int16 weight, uint16 sign,
/// int16 dscale and the base-10000 digits, big-endian. The fields are
/// extracted exactly as numeric.c's `NUMERIC_WEIGHT`, `NUMERIC_SIGN` and
/// `NUMERIC_DSCALE` do (for ±Infinity that gives dscale 32, as the server
/// sends).
fn numeric_send(p: &[u8], out: &mut Out<'_>) -> Result<(), FallbackReason> {
    let (head, digits) = numeric_parts(p)?;
    put_len(out, 8 + digits.len())?;
    let dst = out.take(8 + digits.len());
    dst[..8].copy_from_slice(&head);
    swap_digits(&mut dst[8..], digits);
    Ok(())
}

/// The digits of a numeric, each reversed.
#[inline(always)]
fn swap_digits(dst: &mut [u8], digits: &[u8]) {
    for (d, s) in dst.chunks_exact_mut(2).zip(digits.chunks_exact(2)) {
        d[0] = s[1];
        d[1] = s[0];
    }
}

/// The header of [`numeric_send`]'s format (ndigits, weight, sign,
/// dscale) and the on-disk digits of the numeric payload `p`.
#[inline(always)]
pub(super) fn numeric_parts(p: &[u8]) -> Result<([u8; 8], &[u8]), FallbackReason> {
    const SHORT_SIGN: u16 = 0x2000;
    const SHORT_DSCALE_MASK: u16 = 0x1F80;
    const SHORT_WEIGHT_SIGN: u16 = 0x0040;
    const SHORT_WEIGHT_MASK: u16 = 0x003F;
    let h = p
        .get(..2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(corrupt("numeric header"))?;
    let (weight, sign, dscale, start) = if h & 0x8000 != 0 {
        // NUMERIC_HEADER_IS_SHORT: short or special.
        let weight = if h & SHORT_WEIGHT_SIGN != 0 {
            !SHORT_WEIGHT_MASK | (h & SHORT_WEIGHT_MASK)
        } else {
            h & SHORT_WEIGHT_MASK
        };
        let dscale = (h & SHORT_DSCALE_MASK) >> 7;
        let sign = if h & 0xC000 == 0xC000 {
            let s = h & 0xF000;
            if !matches!(s, 0xC000 | 0xD000 | 0xF000) {
                return Err(corrupt("numeric special value"));
            }
            s
        } else if h & SHORT_SIGN != 0 {
            0x4000
        } else {
            0x0000
        };
        (weight, sign, dscale, 2)
    } else {
        let w = p.get(2..4).ok_or(corrupt("numeric header"))?;
        (u16::from_le_bytes([w[0], w[1]]), h & 0xC000, h & 0x3FFF, 4)
    };
    let digits = &p[start..];
    if !digits.len().is_multiple_of(2) {
        return Err(corrupt("numeric digits"));
    }
    let ndigits = u16::try_from(digits.len() / 2).map_err(|_| corrupt("numeric digits"))?;
    let mut head = [0u8; 8];
    head[0..2].copy_from_slice(&ndigits.to_be_bytes());
    head[2..4].copy_from_slice(&weight.to_be_bytes());
    head[4..6].copy_from_slice(&sign.to_be_bytes());
    head[6..8].copy_from_slice(&dscale.to_be_bytes());
    Ok((head, digits))
}

/// [`numeric_send`] appending to a vector.
#[cfg(test)]
fn numeric(p: &[u8], out: &mut Vec<u8>) -> Result<(), FallbackReason> {
    let mut out = Out::new(out);
    let r = numeric_send(p, &mut out);
    out.finish();
    r
}

/// `array_send` of the on-disk ArrayType payload `p` (what follows the
/// varlena header). ArrayType offsets count from the start of a 4-byte
/// header, so payload byte `i` is at ArrayType offset `i + 4`.
///
/// Layout: int32 ndim, int32 dataoffset (0 = no null bitmap), Oid
/// elemtype, int32 dims[ndim], int32 lbound[ndim], the null bitmap, and the
/// elements from `dataoffset` (or the MAXALIGNed end of the header), each
/// non-NULL one followed by padding to the element alignment.
fn array(
    p: &[u8],
    elem: &ElementPlan,
    out: &mut Out<'_>,
    labels: &HashMap<u32, Box<[u8]>>,
    inner: &mut Vec<u8>,
) -> Result<(), FallbackReason> {
    if p.len() < 12 {
        return Err(corrupt("array header"));
    }
    let ndim = le_i32(p, 0);
    let dataoffset = le_i32(p, 4);
    let elemtype = le_i32(p, 8);
    if !(0..=ARRAY_MAX_DIMS as i32).contains(&ndim) {
        return Err(corrupt("array dimensions"));
    }
    let nd = ndim as usize;
    let header_end = 12 + 8 * nd;
    if p.len() < header_end {
        return Err(corrupt("array header"));
    }
    let mut nitems: u64 = if nd == 0 { 0 } else { 1 };
    for i in 0..nd {
        let dim = le_i32(p, 12 + 4 * i);
        if dim < 0 {
            return Err(corrupt("array dimension"));
        }
        nitems = nitems.saturating_mul(dim as u64);
    }
    if nitems > ARRAY_MAX_ELEMENTS {
        return Err(corrupt("array size"));
    }
    let nitems = nitems as usize;
    let has_nulls = dataoffset != 0;
    let bitmap = if has_nulls {
        let bl = bitmap_len(nitems);
        Some(
            p.get(header_end..header_end + bl)
                .ok_or(corrupt("array null bitmap"))?,
        )
    } else {
        None
    };
    let data_start = if has_nulls {
        usize::try_from(dataoffset).map_err(|_| corrupt("array data offset"))?
    } else {
        maxalign(16 + 8 * nd)
    };
    if data_start < 4 + header_end + bitmap.map_or(0, <[u8]>::len) || data_start > p.len() + 4 {
        return Err(corrupt("array data offset"));
    }
    let field = begin_field(out);
    put_i32(out, ndim);
    put_i32(out, i32::from(has_nulls));
    put_i32(out, elemtype);
    for i in 0..nd {
        put_i32(out, le_i32(p, 12 + 4 * i));
        put_i32(out, le_i32(p, 12 + 4 * nd + 4 * i));
    }
    // `v` is an ArrayType offset; the element is at p[v - 4].
    let mut v = data_start;
    for i in 0..nitems {
        if let Some(bm) = bitmap {
            if bm[i / 8] & (1 << (i % 8)) == 0 {
                put_i32(out, -1);
                continue;
            }
        }
        let rest = p.get(v - 4..).unwrap_or(&[]);
        let len = match elem.typlen {
            l if l > 0 => l as usize,
            -1 => varlena::datum_size(rest)?,
            _ => {
                rest.iter()
                    .position(|&b| b == 0)
                    .ok_or(corrupt("array cstring element"))?
                    + 1
            }
        };
        let datum = rest.get(..len).ok_or(corrupt("array element"))?;
        // Array elements are never stored out of line.
        Converter::convert(&elem.conv, datum, out, labels, None, inner, &mut Vec::new())?;
        v = elem.align.align(v + len);
    }
    end_field(out, field)
}

/// Appends one binary COPY row per `LP_NORMAL` tuple of `page` (block
/// `blkno` of the relation, counted across segment files) to `out`, in
/// line pointer order, with the output columns of `layout`.
///
/// Rows are appended to `out.data` back to back (no protocol framing) and
/// recorded in `row_starts` / `row_ends`. On any [`PageFallback`] the chunk
/// is left exactly as it was.
pub fn transcode_page(
    page: &[u8],
    blkno: u32,
    layout: &TupleLayout,
    out: &mut CopyChunk,
) -> Result<PageSummary, PageFallback> {
    transcode(page, blkno, layout, out, true)
}

/// [`transcode_page`] without the fast path: what it must agree with.
#[cfg(test)]
fn transcode_page_reference(
    page: &[u8],
    blkno: u32,
    layout: &TupleLayout,
    out: &mut CopyChunk,
) -> Result<PageSummary, PageFallback> {
    transcode(page, blkno, layout, out, false)
}

fn transcode(
    page: &[u8],
    blkno: u32,
    layout: &TupleLayout,
    out: &mut CopyChunk,
    fast: bool,
) -> Result<PageSummary, PageFallback> {
    let at = |offnum: Option<u16>, attnum: Option<u16>| {
        move |reason: FallbackReason| PageFallback {
            blkno,
            offnum,
            attnum,
            reason,
        }
    };
    let (parsed, summary) = open_page(page, blkno, layout).map_err(at(None, None))?;
    if summary.new_page {
        return Ok(summary);
    }
    let mark = (out.data.len(), out.row_starts.len(), out.row_ends.len());
    let rollback = |out: &mut CopyChunk| {
        out.data.truncate(mark.0);
        out.row_starts.truncate(mark.1);
        out.row_ends.truncate(mark.2);
    };
    // The fast path converts the common cases; anything it does not handle
    // or finds wrong (a value to convert otherwise, a corrupt tuple, a
    // value that makes the page fall back) makes it give up, and the page
    // is converted again by the reference path, which says exactly why it
    // falls back where it does.
    if fast {
        if let Some(rows) = fast::append_rows(&parsed, layout, out) {
            return Ok(PageSummary { rows, ..summary });
        }
        rollback(out);
    }
    match append_rows(&parsed, layout, out) {
        Ok(rows) => Ok(PageSummary { rows, ..summary }),
        Err((offnum, attnum, reason)) => {
            rollback(out);
            Err(at(offnum, attnum)(reason))
        }
    }
}

/// Parses `page` (block `blkno`) and, unless it is new, verifies its
/// checksum when `layout` asks for it: what every page reader of this
/// module does first. The summary counts no rows yet.
fn open_page<'p>(
    page: &'p [u8],
    blkno: u32,
    layout: &TupleLayout,
) -> Result<(Page<'p>, PageSummary), FallbackReason> {
    let parsed = Page::parse(page, layout.block_size)?;
    let header = *parsed.header();
    let summary = PageSummary {
        rows: 0,
        lsn: header.lsn,
        all_visible: header.all_visible(),
        new_page: parsed.is_new(),
        line_pointers: parsed.item_count(),
    };
    if !parsed.is_new() && layout.verify_checksums {
        checksum::verify_page(page, blkno)?;
    }
    Ok((parsed, summary))
}

type Located = (Option<u16>, Option<u16>, FallbackReason);

/// The reference conversion: each tuple deformed with [`tuple::deform`],
/// then each output column converted in output order.
fn append_rows(
    page: &Page<'_>,
    layout: &TupleLayout,
    chunk: &mut CopyChunk,
) -> Result<usize, Located> {
    let mut datums = vec![Datum::Null; layout.deform_natts];
    let mut conv = Converter {
        labels: &layout.enum_labels,
        toast: layout.toast.as_deref(),
        scratch: Vec::new(),
        inner: Vec::new(),
    };
    let ncols = (layout.output.len() as i16).to_be_bytes();
    let mut out = Out::new(&mut chunk.data);
    // Rows are usually somewhat larger than their tuples.
    out.reserve(page.bytes().len() * 3 / 2);
    let mut rows = 0;
    let result = (|| {
        for index in 0..page.item_count() {
            match page.item_id(index) {
                Some(id) if id.flags == LpFlags::Normal => {}
                _ => continue,
            }
            let offnum = Some((index + 1) as u16);
            let located = |attnum: Option<u16>| move |r: FallbackReason| (offnum, attnum, r);
            let tup = page.tuple(index).map_err(|e| located(None)(e.into()))?;
            let tuple = HeapTuple::parse(tup).map_err(|e| located(None)(e.into()))?;
            tuple::deform(&tuple, &layout.storage, &mut datums)
                .map_err(|e| located(None)(e.into()))?;
            let row_start = out.len();
            out.put(ncols);
            for &col in &layout.output {
                match datums[col] {
                    Datum::Null => put_i32(&mut out, -1),
                    Datum::Missing => match &layout.attributes[col].missing {
                        None => put_i32(&mut out, -1),
                        Some(b) => {
                            put_len(&mut out, b.len()).map_err(located(None))?;
                            out.put_slice(b);
                        }
                    },
                    Datum::Bytes { start, end } => conv
                        .field(
                            &layout.plans[col],
                            &tup[start as usize..end as usize],
                            &mut out,
                        )
                        .map_err(located(Some((col + 1) as u16)))?,
                }
            }
            let row_end =
                u32::try_from(out.len()).map_err(|_| (offnum, None, FallbackReason::ChunkFull))?;
            chunk.row_starts.push(row_start as u32);
            chunk.row_ends.push(row_end);
            rows += 1;
        }
        Ok(rows)
    })();
    out.finish();
    result
}

#[path = "transcode_fast.rs"]
mod fast;

#[path = "columns.rs"]
mod columns;
pub use columns::{ColumnValues, NotLocated, PageColumns, ValueForm};

#[cfg(test)]
#[path = "transcode_tests.rs"]
mod tests;
