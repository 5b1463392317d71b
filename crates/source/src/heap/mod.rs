//! The source side of the direct heap path: where a table's files are and how
//! its tuples are laid out (from the catalog), reading its pages and its
//! visibility map from the data directory, and the server calls that make
//! reading them safe (CHECKPOINT, the WAL position used as the LSN fence,
//! the proof that the files are the server's own and current).
//!
//! The page format itself (line pointers, tuples, visibility map bits,
//! checksums, conversion to binary COPY rows) is `gpupg_format::heap`; which
//! pages may be trusted is decided by the export, which holds the snapshot.

mod catalog;
mod files;
mod proof;
mod server;

pub use catalog::{heap_relation, HeapRelation};
pub use files::{RelationFiles, SegmentPiece};
pub use proof::{prove_files, FilesProof};
pub use server::{checkpoint, parse_lsn, wal_insert_lsn};
