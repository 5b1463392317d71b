//! PostgreSQL heap pages, read without a server: the foundation of the
//! direct heap path, which reads a table's files instead of running COPY.
//!
//! The pieces, bottom up (PostgreSQL 15 on-disk format, little-endian):
//!
//! - [`page`]: the page header (`pd_lsn`, `pd_checksum`, `pd_flags`,
//!   `pd_lower` / `pd_upper` / `pd_special`, size and version,
//!   `pd_prune_xid`) and the line pointers, validated against the block
//!   size; an all-zero page is a valid empty page.
//! - [`checksum`]: the data page checksum (`pg_checksum_page`) and its
//!   verification.
//! - [`vm`]: the visibility map fork: all-visible / all-frozen per block.
//! - [`tuple`](mod@tuple): heap tuple headers, the null bitmap and deforming a tuple
//!   into per-attribute byte ranges exactly as `heap_deform_tuple` does
//!   (alignment, 1-byte-header varlenas, dropped attributes, attributes
//!   added after the tuple was written).
//! - [`varlena`]: the forms of a variable-length datum (1-byte header,
//!   4-byte header, compressed inline, TOAST pointer).
//! - [`pglz`]: pglz decompression (and a simple compressor for tests).
//! - [`jsonb`]: jsonb's binary form printed as `jsonb_out` prints it.
//! - [`lz4`]: LZ4 block decompression (`COMPRESSION lz4`, PostgreSQL 14+).
//! - [`toast`](mod@toast): values stored out of line: chunk tuples, joining
//!   and expanding a value's chunks, the [`ToastLookup`] the converters ask.
//! - [`transcode`]: the main API. A [`TupleLayout`] from the catalog and
//!   [`transcode_page`], which appends one binary COPY row per `LP_NORMAL`
//!   tuple of a page to a [`CopyChunk`](crate::CopyChunk), byte for byte
//!   what `COPY ... TO STDOUT (FORMAT binary)` would send for it, so the
//!   CPU and GPU COPY decoders decode heap data unchanged.
//! - [`PageColumns`]: the other way to read pages, for the CPU decoder:
//!   each tuple's output values located column by column, stored values
//!   left in the page (`transcode.rs` includes `columns.rs`).
//! - `jsonb_build`: jsonb values in their on-disk form, for tests.
//! - `sample`: pages of a table with every form, for page readers' tests.
//! - `build`: the inverse, writing tuples and pages as PostgreSQL does
//!   (`heap_fill_tuple`), for tests.
//!
//! `sample`, `build` and `jsonb_build` exist only with the `test-utils`
//! feature (and in this crate's own tests).
//!
//! Converted: boolean, smallint, integer, bigint, real, double precision,
//! oid, date, time, timestamp, timestamptz, interval, uuid, text, varchar,
//! bpchar, name, json, jsonb (printed as `jsonb_out` prints it), bytea
//! (pglz- and lz4-compressed inline values decompressed), numeric (short,
//! long and special forms), enums (OID to label through the layout),
//! domains (as their base type) and arrays of all of these.
//!
//! Values stored out of line in the TOAST table are read through the
//! layout's [`ToastLookup`] when it has one ([`TupleLayout::set_toast`]).
//!
//! Not converted (the page falls back to COPY, see [`PageFallback`]):
//! values stored out of line with no lookup or that it does not give,
//! types without a converter, jsonb nested deeper than
//! [`jsonb::JSONB_MAX_DEPTH`] levels, enum OIDs the layout does not know,
//! corrupt pages (bad header, line pointer, tuple, varlena, pglz or lz4
//! stream or value structure; a checksum mismatch when verification is on).
//!
//! Visibility is the caller's business: every `LP_NORMAL` tuple is
//! converted, so only all-visible pages (visibility map bit set, checked
//! after the snapshot that the rest of the export uses) hold exactly the
//! rows a snapshot sees. Nothing here does I/O.

#[cfg(any(test, feature = "test-utils"))]
pub mod build;
pub mod checksum;
pub mod jsonb;
#[cfg(any(test, feature = "test-utils"))]
pub mod jsonb_build;
pub mod lz4;
pub mod page;
pub mod pglz;
#[cfg(any(test, feature = "test-utils"))]
pub mod sample;
pub mod toast;
pub mod transcode;
pub mod tuple;
pub mod varlena;
pub mod vm;

pub use checksum::{page_checksum, set_page_checksum, verify_page, ChecksumError};
pub use page::{ItemId, LpFlags, Page, PageError, PageHeader, DEFAULT_BLOCK_SIZE};
pub use toast::{ChunkMap, ToastError, ToastLookup};
pub use transcode::{
    transcode_page, ArrayElement, AttributeDesc, ColumnValues, Corruption, ElementDesc,
    FallbackReason, LayoutError, NotLocated, PageColumns, PageFallback, PageSummary, SendForm,
    TupleLayout, ValueForm,
};
pub use tuple::{Align, AttrStorage, Datum, HeapTuple, TupleError, TupleHeader};
pub use varlena::{CompressionMethod, Varlena, VarlenaError};
pub use vm::{VisibilityMap, VmBits};
