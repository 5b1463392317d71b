//! PostgreSQL's write-ahead log read from its bytes, for the blocks its
//! records change: the heap path lists the pages changed since the latest
//! checkpoint's REDO pointer this way (docs/heap.md, "Dirty pages").
//!
//! The layout (`access/xlog_internal.h`, `access/xlogrecord.h`; the same in
//! PostgreSQL 15 and 18): WAL is cut into pages of `XLOG_BLCKSZ` bytes and
//! segments of `wal_segment_size`; each page starts with a header (24 bytes,
//! 40 on a segment's first page) naming its own LSN and timeline; records
//! start 8-aligned, may span pages (a page continuing a record says so and
//! how many bytes of it remain) and each carries a CRC-32C. Any header that
//! does not say what it must (a recycled segment, a torn read) is an error,
//! never a guess. [`blocks`] decodes a record's block references. Nothing
//! here does I/O: the caller's [`WalSource`] gives the pages.

mod record;
#[cfg(test)]
mod tests;

pub use record::{block_refs, BlockRef};
use thiserror::Error;

use crate::crc32c::Crc32c;

/// `SizeOfXLogShortPHD`: a page header.
pub const SHORT_PAGE_HEADER: usize = 24;
/// `SizeOfXLogLongPHD`: the header of a segment's first page.
pub const LONG_PAGE_HEADER: usize = 40;
/// `SizeOfXLogRecord`: a record's fixed header, up to and with `xl_crc`.
pub const RECORD_HEADER: usize = 24;
/// `offsetof(XLogRecord, xl_crc)`.
const CRC_AT: usize = 20;
/// `XLP_FIRST_IS_CONTRECORD`: the page starts with the rest of a record.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// `XLP_LONG_HEADER`: the page has the long header.
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// `RM_XLOG_ID`, the resource manager of `XLOG_SWITCH`.
pub const RM_XLOG_ID: u8 = 0;
/// `XLOG_SWITCH`: the rest of the segment is unused.
pub const XLOG_SWITCH: u8 = 0x40;
/// `XLogRecordMaxSize` (PostgreSQL 16+; no record of 15 is larger).
const MAX_RECORD: u32 = 1020 * 1024 * 1024;

/// How a cluster cuts its WAL, and the timeline read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalLayout {
    /// `XLOG_BLCKSZ` (`SHOW wal_block_size`), 8192 by default.
    pub page_size: u32,
    /// `wal_segment_size` in bytes, 16 MiB by default.
    pub segment_size: u64,
    /// The timeline every page read must name.
    pub timeline: u32,
}

impl WalLayout {
    /// The file name in `pg_wal` of the segment holding `lsn`.
    pub fn segment_file(&self, lsn: u64) -> String {
        let segno = lsn / self.segment_size.max(1);
        let per_id = (1u64 << 32) / self.segment_size.max(1);
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            segno / per_id.max(1),
            segno % per_id.max(1)
        )
    }

    fn valid(&self) -> bool {
        let ps = u64::from(self.page_size);
        self.page_size.is_power_of_two()
            && ps >= 1024
            && self.segment_size.is_power_of_two()
            && self.segment_size >= ps
            && self.segment_size <= 1 << 30
    }
}

/// Where the WAL pages come from (files of `pg_wal`, or bytes in a test).
pub trait WalSource {
    /// Fills `page` (one page long) with the WAL page starting at
    /// `page_lsn`; a page that cannot be read (a segment gone) is an error
    /// in words.
    fn read_page(&mut self, page_lsn: u64, page: &mut [u8]) -> Result<(), String>;
}

impl<F: FnMut(u64, &mut [u8]) -> Result<(), String>> WalSource for F {
    fn read_page(&mut self, page_lsn: u64, page: &mut [u8]) -> Result<(), String> {
        self(page_lsn, page)
    }
}

/// Why WAL could not be read: each means the list of changed blocks would
/// be incomplete, never that a guess was made.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WalError {
    /// The layout is not one PostgreSQL makes.
    #[error("WAL page size {page_size} or segment size {segment_size} is not valid")]
    Layout {
        /// The page size given.
        page_size: u32,
        /// The segment size given.
        segment_size: u64,
    },
    /// The source could not give a page.
    #[error("WAL page at {}: {why}", lsn_ref(.lsn))]
    Read {
        /// The page's LSN.
        lsn: u64,
        /// What the source said.
        why: String,
    },
    /// A page header names another LSN or timeline than the one read (a
    /// recycled segment, another timeline, a torn read), or is malformed.
    #[error("WAL page at {}: {what}", lsn_ref(.lsn))]
    PageHeader {
        /// The page's LSN.
        lsn: u64,
        /// What is wrong.
        what: String,
    },
    /// A record is malformed (its length, its links, its block headers).
    #[error("WAL record at {}: {what}", lsn_ref(.lsn))]
    Record {
        /// The record's LSN.
        lsn: u64,
        /// What is wrong.
        what: String,
    },
    /// A record's CRC-32C does not verify.
    #[error("WAL record at {}: CRC mismatch", lsn_ref(.lsn))]
    Crc {
        /// The record's LSN.
        lsn: u64,
    },
}

/// An LSN as PostgreSQL prints it: `4/45CF3730`.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

fn lsn_ref(lsn: &u64) -> String {
    lsn_text(*lsn)
}

/// One record, reassembled from its pages, its CRC verified.
#[derive(Debug)]
pub struct Record<'a> {
    /// Its start LSN.
    pub lsn: u64,
    /// `xl_rmid`.
    pub rmid: u8,
    /// `xl_info`.
    pub info: u8,
    /// The whole record, header included (`xl_tot_len` bytes).
    pub bytes: &'a [u8],
}

/// Reads the records that start in `[start, end)`, in order.
pub struct WalReader<S> {
    layout: WalLayout,
    source: S,
    /// The next record's start (or the page boundary before it).
    pos: u64,
    end: u64,
    page: Vec<u8>,
    /// The LSN of the page in `page`, when one is loaded.
    page_lsn: Option<u64>,
    record: Vec<u8>,
    /// The previous record's start, which the next record's `xl_prev`
    /// must name.
    prev: Option<u64>,
}

impl<S: WalSource> WalReader<S> {
    /// A reader of the records from `start` (a record's start, such as a
    /// checkpoint's REDO pointer) to those starting before `end`.
    pub fn new(layout: WalLayout, source: S, start: u64, end: u64) -> Result<Self, WalError> {
        if !layout.valid() {
            return Err(WalError::Layout {
                page_size: layout.page_size,
                segment_size: layout.segment_size,
            });
        }
        Ok(WalReader {
            layout,
            source,
            pos: start,
            end,
            page: vec![0; layout.page_size as usize],
            page_lsn: None,
            record: Vec::new(),
            prev: None,
        })
    }

    /// Bytes of WAL from the start to where the reader is.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next record, or `None` once the next would start at or after
    /// the end.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, WalError> {
        let ps = u64::from(self.layout.page_size);
        if self.pos >= self.end {
            return Ok(None);
        }
        let page_lsn = self.pos - self.pos % ps;
        let header = self.load(page_lsn)?;
        if self.pos - page_lsn < header as u64 {
            // A record ended at the page boundary: the next starts after
            // this page's header, which must not continue a record.
            if self.flags() & XLP_FIRST_IS_CONTRECORD != 0 {
                return Err(WalError::PageHeader {
                    lsn: page_lsn,
                    what: "continues a record where a record should start".into(),
                });
            }
            self.pos = page_lsn + header as u64;
            if self.pos >= self.end {
                return Ok(None);
            }
        }
        let start = self.pos;
        if !start.is_multiple_of(8) {
            return Err(WalError::Record {
                lsn: start,
                what: "does not start 8-aligned".into(),
            });
        }
        let at = (start - page_lsn) as usize;
        // xl_tot_len is always on the record's first page: it starts
        // 8-aligned and pages end 8-aligned.
        let tot_len = u32_at(&self.page, at).unwrap_or(0);
        if (tot_len as usize) < RECORD_HEADER || tot_len > MAX_RECORD {
            return Err(WalError::Record {
                lsn: start,
                what: format!("invalid length {tot_len}"),
            });
        }
        if start.saturating_add(u64::from(tot_len)) > self.end {
            return Err(WalError::Record {
                lsn: start,
                what: format!("its {tot_len} bytes run past the end read"),
            });
        }
        let end_lsn = self.gather(start, tot_len as usize)?;
        if end_lsn > self.end {
            return Err(WalError::Record {
                lsn: start,
                what: format!("ends at {}, past the end read", lsn_text(end_lsn)),
            });
        }
        let rec = &self.record;
        let xl_prev = u64_at(rec, 8).unwrap_or(0);
        if let Some(prev) = self.prev {
            if xl_prev != prev {
                return Err(WalError::Record {
                    lsn: start,
                    what: format!("xl_prev {} is not {}", lsn_text(xl_prev), lsn_text(prev)),
                });
            }
        }
        let mut crc = Crc32c::default();
        crc.update(&rec[RECORD_HEADER..]);
        crc.update(&rec[..CRC_AT]);
        if Some(crc.finish()) != u32_at(rec, CRC_AT) {
            return Err(WalError::Crc { lsn: start });
        }
        let (info, rmid) = (rec[16], rec[17]);
        self.prev = Some(start);
        self.pos = if rmid == RM_XLOG_ID && info & 0xF0 == XLOG_SWITCH {
            let seg = self.layout.segment_size;
            end_lsn.div_ceil(seg).saturating_mul(seg)
        } else {
            end_lsn.div_ceil(8).saturating_mul(8)
        };
        Ok(Some(Record {
            lsn: start,
            rmid,
            info,
            bytes: &self.record,
        }))
    }

    /// Copies the `len` bytes of the record at `start` into `self.record`,
    /// across pages; returns the LSN just past its last byte.
    fn gather(&mut self, start: u64, len: usize) -> Result<u64, WalError> {
        let ps = u64::from(self.layout.page_size);
        self.record.clear();
        let mut lsn = start;
        loop {
            let page_lsn = lsn - lsn % ps;
            let at = (lsn - page_lsn) as usize;
            let take = (len - self.record.len()).min(self.page.len() - at);
            self.record.extend_from_slice(&self.page[at..at + take]);
            lsn += take as u64;
            if self.record.len() == len {
                return Ok(lsn);
            }
            if lsn >= self.end {
                return Err(WalError::Record {
                    lsn: start,
                    what: "continues past the end read".into(),
                });
            }
            let header = self.load(lsn)?;
            let rem = u32_at(&self.page, 16).unwrap_or(0) as usize;
            if self.flags() & XLP_FIRST_IS_CONTRECORD == 0 || rem != len - self.record.len() {
                return Err(WalError::PageHeader {
                    lsn,
                    what: format!(
                        "should continue the record at {} with {} bytes (contrecord flag {}, \
                         xlp_rem_len {rem})",
                        lsn_text(start),
                        len - self.record.len(),
                        self.flags() & XLP_FIRST_IS_CONTRECORD
                    ),
                });
            }
            lsn += header as u64;
        }
    }

    fn flags(&self) -> u16 {
        u16::from_le_bytes([self.page[2], self.page[3]])
    }

    /// Loads the page at `page_lsn` (unless loaded) and checks its header;
    /// returns the header's length.
    fn load(&mut self, page_lsn: u64) -> Result<usize, WalError> {
        if self.page_lsn != Some(page_lsn) {
            self.page_lsn = None;
            self.source
                .read_page(page_lsn, &mut self.page)
                .map_err(|why| WalError::Read { lsn: page_lsn, why })?;
            self.page_lsn = Some(page_lsn);
        }
        let bad = |what: String| WalError::PageHeader {
            lsn: page_lsn,
            what,
        };
        let tli = u32_at(&self.page, 4).unwrap_or(0);
        let addr = u64_at(&self.page, 8).unwrap_or(0);
        if addr != page_lsn {
            self.page_lsn = None;
            return Err(bad(format!(
                "xlp_pageaddr is {} (a recycled or unwritten segment)",
                lsn_text(addr)
            )));
        }
        if tli != self.layout.timeline {
            self.page_lsn = None;
            return Err(bad(format!("timeline {tli}, not {}", self.layout.timeline)));
        }
        let first_of_segment = page_lsn.is_multiple_of(self.layout.segment_size);
        let long = self.flags() & XLP_LONG_HEADER != 0;
        if long != first_of_segment {
            self.page_lsn = None;
            return Err(bad(format!(
                "long header flag {long} on a page {}the first of its segment",
                if first_of_segment { "" } else { "not " }
            )));
        }
        Ok(if long {
            LONG_PAGE_HEADER
        } else {
            SHORT_PAGE_HEADER
        })
    }
}

/// Every block reference of the records in `[start, end)`, given to
/// `each` in WAL order; returns the bytes of WAL read.
pub fn for_each_block<S: WalSource>(
    layout: WalLayout,
    source: S,
    start: u64,
    end: u64,
    mut each: impl FnMut(BlockRef),
) -> Result<u64, WalError> {
    let mut reader = WalReader::new(layout, source, start, end)?;
    while let Some(rec) = reader.next_record()? {
        block_refs(rec.lsn, rec.bytes, &mut each)?;
    }
    Ok(reader.position().saturating_sub(start))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
