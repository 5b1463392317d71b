//! The block references of a WAL record (`DecodeXLogRecord` in
//! `access/transam/xlogreader.c`, the same in PostgreSQL 15 and 18): after
//! the 24-byte header, block headers (`XLogRecordBlockHeader`, with an
//! image header and the relation when they apply), then the headers of the
//! origin, the top-level XID and the main data, then the payloads.

use super::{WalError, RECORD_HEADER};

/// `XLR_MAX_BLOCK_ID`: block ids are 0 to 32.
const XLR_MAX_BLOCK_ID: u8 = 32;
/// `XLR_BLOCK_ID_DATA_SHORT`: main data, a 1-byte length.
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
/// `XLR_BLOCK_ID_DATA_LONG`: main data, a 4-byte length.
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
/// `XLR_BLOCK_ID_ORIGIN`: a 2-byte replication origin.
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
/// `XLR_BLOCK_ID_TOPLEVEL_XID`: a 4-byte top-level transaction id.
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
/// `BKPBLOCK_FORK_MASK`.
const BKPBLOCK_FORK_MASK: u8 = 0x0F;
/// `BKPBLOCK_HAS_IMAGE`: an `XLogRecordBlockImageHeader` follows.
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
/// `BKPBLOCK_SAME_REL`: the relation is the previous block's.
const BKPBLOCK_SAME_REL: u8 = 0x80;
/// `BKPIMAGE_HAS_HOLE` (PostgreSQL 15 to 18).
const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// `BKPIMAGE_COMPRESS_PGLZ | _LZ4 | _ZSTD` (PostgreSQL 15 to 18; 14 had one
/// `BKPIMAGE_IS_COMPRESSED` at 0x02, which 15 made `BKPIMAGE_APPLY`).
const BKPIMAGE_COMPRESSED: u8 = 0x04 | 0x08 | 0x10;

/// One block a record changes (or logs an image of).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRef {
    /// The tablespace OID (1663 for `pg_default`, never 0).
    pub spc: u32,
    /// The database OID.
    pub db: u32,
    /// The relation's file node (`relfilenode`).
    pub rel: u32,
    /// The fork: 0 main, 1 free space map, 2 visibility map, 3 init.
    pub fork: u8,
    /// The block number in that fork.
    pub block: u32,
}

/// Gives `each` the block references of the record `rec` (its whole bytes,
/// header included) that starts at `lsn`.
pub fn block_refs(lsn: u64, rec: &[u8], mut each: impl FnMut(BlockRef)) -> Result<(), WalError> {
    let bad = |what: String| WalError::Record { lsn, what };
    let mut cur = Cursor {
        bytes: rec,
        at: RECORD_HEADER,
    };
    let mut remaining = rec.len().saturating_sub(RECORD_HEADER) as u64;
    let mut data_total: u64 = 0;
    let mut rel: Option<(u32, u32, u32)> = None;
    let mut last_id: Option<u8> = None;
    let short = || bad("block headers run past the record".into());
    while remaining > data_total {
        let before = cur.at;
        let id = cur.u8().ok_or_else(short)?;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                data_total += u64::from(cur.u8().ok_or_else(short)?);
            }
            XLR_BLOCK_ID_DATA_LONG => {
                data_total += u64::from(cur.u32().ok_or_else(short)?);
            }
            XLR_BLOCK_ID_ORIGIN => {
                cur.u16().ok_or_else(short)?;
            }
            XLR_BLOCK_ID_TOPLEVEL_XID => {
                cur.u32().ok_or_else(short)?;
            }
            id if id <= XLR_MAX_BLOCK_ID => {
                if last_id.is_some_and(|last| id <= last) {
                    return Err(bad(format!("out-of-order block id {id}")));
                }
                last_id = Some(id);
                let fork_flags = cur.u8().ok_or_else(short)?;
                data_total += u64::from(cur.u16().ok_or_else(short)?);
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let length = cur.u16().ok_or_else(short)?;
                    let _hole_offset = cur.u16().ok_or_else(short)?;
                    let bimg_info = cur.u8().ok_or_else(short)?;
                    data_total += u64::from(length);
                    if bimg_info & BKPIMAGE_HAS_HOLE != 0 && bimg_info & BKPIMAGE_COMPRESSED != 0 {
                        let _hole_length = cur.u16().ok_or_else(short)?;
                    }
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    let spc = cur.u32().ok_or_else(short)?;
                    let db = cur.u32().ok_or_else(short)?;
                    let node = cur.u32().ok_or_else(short)?;
                    rel = Some((spc, db, node));
                }
                let Some((spc, db, node)) = rel else {
                    return Err(bad(format!(
                        "block {id} says SAME_REL with no previous relation"
                    )));
                };
                let block = cur.u32().ok_or_else(short)?;
                each(BlockRef {
                    spc,
                    db,
                    rel: node,
                    fork: fork_flags & BKPBLOCK_FORK_MASK,
                    block,
                });
            }
            id => return Err(bad(format!("invalid block id {id}"))),
        }
        remaining = remaining.saturating_sub((cur.at - before) as u64);
        // By convention the main data header is the last one.
        if matches!(id, XLR_BLOCK_ID_DATA_SHORT | XLR_BLOCK_ID_DATA_LONG) {
            break;
        }
    }
    if remaining != data_total {
        return Err(bad(format!(
            "headers leave {remaining} bytes for {data_total} bytes of data"
        )));
    }
    Ok(())
}

/// Little-endian reads that never run past the bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let b: [u8; N] = self
            .bytes
            .get(self.at..self.at.checked_add(N)?)?
            .try_into()
            .ok()?;
        self.at += N;
        Some(b)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
}
