//! WAL written by hand as `XLogInsert` lays it out, read back.

use proptest::prelude::*;

use super::*;
use crate::crc32c::{crc32c, Crc32c};

const TLI: u32 = 1;
/// Small pages and segments so records cross both often.
const LAYOUT: WalLayout = WalLayout {
    page_size: 1024,
    segment_size: 4096,
    timeline: TLI,
};
/// The LSN of the first byte written: segment 16.
const BASE: u64 = 16 * 4096;

/// WAL being written from [`BASE`].
struct Wal {
    bytes: Vec<u8>,
    /// Where the next record goes (8-aligned, maybe a page boundary).
    pos: u64,
    prev: u64,
    /// Each record's start.
    starts: Vec<u64>,
}

impl Wal {
    fn new() -> Wal {
        Wal {
            bytes: Vec::new(),
            pos: BASE,
            prev: 0,
            starts: Vec::new(),
        }
    }

    fn ps() -> u64 {
        u64::from(LAYOUT.page_size)
    }

    /// Writes the page header of the page at `lsn`, continuing a record
    /// with `rem` bytes left when `rem > 0`; returns its length.
    fn page_header(&mut self, lsn: u64, rem: u32) -> u64 {
        let long = lsn.is_multiple_of(LAYOUT.segment_size);
        let at = (lsn - BASE) as usize;
        let len = if long {
            LONG_PAGE_HEADER
        } else {
            SHORT_PAGE_HEADER
        };
        self.bytes.resize(at + Self::ps() as usize, 0);
        let h = &mut self.bytes[at..at + len];
        let mut flags = if long { XLP_LONG_HEADER } else { 0 };
        if rem > 0 {
            flags |= XLP_FIRST_IS_CONTRECORD;
        }
        h[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        h[2..4].copy_from_slice(&flags.to_le_bytes());
        h[4..8].copy_from_slice(&TLI.to_le_bytes());
        h[8..16].copy_from_slice(&lsn.to_le_bytes());
        h[16..20].copy_from_slice(&rem.to_le_bytes());
        if long {
            h[24..32].copy_from_slice(&7u64.to_le_bytes());
            h[32..36].copy_from_slice(&(LAYOUT.segment_size as u32).to_le_bytes());
            h[36..40].copy_from_slice(&LAYOUT.page_size.to_le_bytes());
        }
        len as u64
    }

    /// Appends a record of `body` (block headers and payloads) for `rmid`
    /// and `info`; returns its start.
    fn record(&mut self, rmid: u8, info: u8, body: &[u8]) -> u64 {
        let tot = (RECORD_HEADER + body.len()) as u32;
        let mut rec = Vec::with_capacity(tot as usize);
        rec.extend_from_slice(&tot.to_le_bytes());
        rec.extend_from_slice(&77u32.to_le_bytes());
        rec.extend_from_slice(&self.prev.to_le_bytes());
        rec.extend_from_slice(&[info, rmid, 0, 0]);
        let mut crc = Crc32c::default();
        crc.update(body);
        crc.update(&rec[..CRC_AT]);
        rec.extend_from_slice(&crc.finish().to_le_bytes());
        rec.extend_from_slice(body);
        let ps = Self::ps();
        if self.pos.is_multiple_of(ps) {
            self.pos += self.page_header(self.pos, 0);
        }
        let start = self.pos;
        let mut done = 0;
        while done < rec.len() {
            if self.pos.is_multiple_of(ps) {
                let rem = (rec.len() - done) as u32;
                self.pos += self.page_header(self.pos, rem);
            }
            let take = (rec.len() - done).min((ps - self.pos % ps) as usize);
            let at = (self.pos - BASE) as usize;
            self.bytes.resize(self.bytes.len().max(at + take), 0);
            self.bytes[at..at + take].copy_from_slice(&rec[done..done + take]);
            done += take;
            self.pos += take as u64;
        }
        self.prev = start;
        self.starts.push(start);
        self.pos = if rmid == RM_XLOG_ID && info == XLOG_SWITCH {
            self.pos.div_ceil(LAYOUT.segment_size) * LAYOUT.segment_size
        } else {
            self.pos.div_ceil(8) * 8
        };
        start
    }

    /// A record with just `len` bytes of main data, to move the position.
    fn filler(&mut self, len: usize) -> u64 {
        let mut body = vec![XLR_DATA_LONG];
        body.extend_from_slice(&(len as u32).to_le_bytes());
        body.resize(5 + len, 0xAB);
        self.record(10, 0, &body)
    }

    /// A filler whose end leaves the next record at page offset `off`.
    fn fill_to_offset(&mut self, off: u64) {
        let min = RECORD_HEADER + 5;
        let len = (0..3 * Self::ps() as usize)
            .find(|len| after(self.pos, (min + len) as u64) % Self::ps() == off)
            .expect("a filler length reaches the offset");
        self.filler(len);
        assert_eq!(self.pos % Self::ps(), off, "filler placed the next record");
    }

    fn source(&self) -> impl FnMut(u64, &mut [u8]) -> Result<(), String> + '_ {
        move |lsn, page: &mut [u8]| {
            let at = lsn.checked_sub(BASE).ok_or("before the WAL")? as usize;
            let src = self.bytes.get(at..at + page.len()).ok_or("no such page")?;
            page.copy_from_slice(src);
            Ok(())
        }
    }

    fn blocks(&self, start: u64, end: u64) -> Result<Vec<BlockRef>, WalError> {
        let mut out = Vec::new();
        for_each_block(LAYOUT, self.source(), start, end, |b| out.push(b))?;
        Ok(out)
    }
}

const XLR_DATA_LONG: u8 = 254;

/// Where the record after one of `tot` bytes written at `pos` starts.
fn after(mut pos: u64, tot: u64) -> u64 {
    let ps = Wal::ps();
    let header = |pos: u64| {
        if pos.is_multiple_of(LAYOUT.segment_size) {
            LONG_PAGE_HEADER as u64
        } else {
            SHORT_PAGE_HEADER as u64
        }
    };
    if pos.is_multiple_of(ps) {
        pos += header(pos);
    }
    let mut left = tot;
    while left > 0 {
        if pos.is_multiple_of(ps) {
            pos += header(pos);
        }
        let take = left.min(ps - pos % ps);
        pos += take;
        left -= take;
    }
    pos.div_ceil(8) * 8
}

/// The body of a record changing `blocks` (id i for the i-th), each with
/// `data` bytes of block data, every other one with an image; then main
/// data of `main` bytes.
fn body(blocks: &[BlockRef], data: u16, main: u8) -> Vec<u8> {
    let mut h = Vec::new();
    let mut payload = Vec::new();
    let mut prev: Option<(u32, u32, u32)> = None;
    for (i, b) in blocks.iter().enumerate() {
        let same = prev == Some((b.spc, b.db, b.rel));
        let image = i % 2 == 1;
        let mut flags = b.fork | 0x20;
        if image {
            flags |= 0x10;
        }
        if same {
            flags |= 0x80;
        }
        h.push(i as u8);
        h.push(flags);
        h.extend_from_slice(&data.to_le_bytes());
        payload.resize(payload.len() + data as usize, 0x11);
        if image {
            let len = 100u16;
            h.extend_from_slice(&len.to_le_bytes());
            h.extend_from_slice(&40u16.to_le_bytes());
            // A hole, compressed with lz4: the hole length follows.
            h.push(0x01 | 0x08);
            h.extend_from_slice(&3000u16.to_le_bytes());
            payload.resize(payload.len() + len as usize, 0x22);
        }
        if !same {
            for v in [b.spc, b.db, b.rel] {
                h.extend_from_slice(&v.to_le_bytes());
            }
        }
        h.extend_from_slice(&b.block.to_le_bytes());
        prev = Some((b.spc, b.db, b.rel));
    }
    // An origin and a top-level XID, then the main data header.
    h.push(253);
    h.extend_from_slice(&1u16.to_le_bytes());
    h.push(252);
    h.extend_from_slice(&99u32.to_le_bytes());
    h.push(255);
    h.push(main);
    payload.resize(payload.len() + main as usize, 0x33);
    h.extend_from_slice(&payload);
    h
}

fn block(rel: u32, fork: u8, block: u32) -> BlockRef {
    BlockRef {
        spc: 1663,
        db: 5,
        rel,
        fork,
        block,
    }
}

#[test]
fn block_references_in_order() {
    let mut wal = Wal::new();
    let a = [block(16384, 0, 3), block(16384, 2, 0), block(16390, 0, 9)];
    let b = [block(16384, 0, 4)];
    let start = wal.record(10, 0, &body(&a, 30, 12));
    wal.record(10, 0, &body(&b, 0, 0));
    wal.filler(10);
    let got = wal.blocks(start, wal.pos).expect("reads");
    assert_eq!(got, [&a[..], &b[..]].concat());
    // The end excludes records starting at or after it.
    let second = wal.starts[1];
    assert_eq!(wal.blocks(start, second).expect("reads"), a);
}

#[test]
fn records_span_pages_and_segments() {
    let mut wal = Wal::new();
    let start = wal.filler(50);
    // Longer than a page and than a segment: continuation pages, and a
    // long header in the middle of the record.
    let big = wal.filler(5000);
    let after = wal.record(10, 0, &body(&[block(1, 0, 1)], 2000, 200));
    wal.filler(8);
    assert!(big / 4096 < after / 4096, "the record crosses a segment");
    let got = wal.blocks(start, wal.pos).expect("reads");
    assert_eq!(got, [block(1, 0, 1)]);
}

#[test]
fn header_split_across_pages() {
    for off in [1024 - 8, 1024 - 16] {
        let mut wal = Wal::new();
        let start = wal.filler(0);
        wal.fill_to_offset(off);
        let split = wal.record(10, 0, &body(&[block(7, 0, 70)], 10, 1));
        assert_eq!(split % 1024, off);
        wal.filler(3);
        assert_eq!(
            wal.blocks(start, wal.pos).expect("reads"),
            [block(7, 0, 70)]
        );
    }
}

#[test]
fn record_ending_at_a_page_boundary() {
    let mut wal = Wal::new();
    let start = wal.filler(0);
    wal.fill_to_offset(0);
    wal.record(10, 0, &body(&[block(8, 0, 1)], 0, 0));
    assert_eq!(wal.blocks(start, wal.pos).expect("reads"), [block(8, 0, 1)]);
}

#[test]
fn switch_skips_the_rest_of_the_segment() {
    let mut wal = Wal::new();
    let start = wal.filler(0);
    wal.record(RM_XLOG_ID, XLOG_SWITCH, &[]);
    assert_eq!(wal.pos % LAYOUT.segment_size, 0);
    // Garbage where the switch left the segment unused.
    let at = (wal.starts[1] - BASE) as usize + 64;
    wal.bytes[at..at + 16].fill(0xEE);
    let next = wal.record(10, 0, &body(&[block(9, 0, 2)], 0, 0));
    assert_eq!(next % LAYOUT.segment_size, LONG_PAGE_HEADER as u64);
    assert_eq!(wal.blocks(start, wal.pos).expect("reads"), [block(9, 0, 2)]);
}

#[test]
fn bad_crc_is_an_error() {
    let mut wal = Wal::new();
    let start = wal.record(10, 0, &body(&[block(1, 0, 1)], 40, 0));
    let at = (start - BASE) as usize + RECORD_HEADER + 30;
    wal.bytes[at] ^= 1;
    assert_eq!(
        wal.blocks(start, wal.pos),
        Err(WalError::Crc { lsn: start })
    );
}

#[test]
fn wrong_pageaddr_or_timeline_is_an_error() {
    let mut wal = Wal::new();
    let start = wal.filler(0);
    wal.filler(3000);
    let end = wal.pos;
    // The second page names another LSN: a recycled segment.
    let mut recycled = Wal {
        bytes: wal.bytes.clone(),
        ..Wal::new()
    };
    recycled.bytes[1024 + 8..1024 + 16].copy_from_slice(&(BASE - 4096 + 1024).to_le_bytes());
    assert!(matches!(
        recycled.blocks(start, end),
        Err(WalError::PageHeader { lsn, .. }) if lsn == BASE + 1024
    ));
    let mut other_tli = Wal {
        bytes: wal.bytes.clone(),
        ..Wal::new()
    };
    other_tli.bytes[2048 + 4] = 2;
    assert!(matches!(
        other_tli.blocks(start, end),
        Err(WalError::PageHeader { lsn, .. }) if lsn == BASE + 2048
    ));
    // A continuation page whose rem_len disagrees.
    let mut rem = Wal {
        bytes: wal.bytes.clone(),
        ..Wal::new()
    };
    rem.bytes[1024 + 16] ^= 4;
    assert!(matches!(
        rem.blocks(start, end),
        Err(WalError::PageHeader { .. })
    ));
    // A page the source cannot give (past the bytes written, or zeros
    // where no record was written yet), and a record past the end.
    assert!(matches!(
        wal.blocks(start, end + 8192),
        Err(WalError::Read { .. } | WalError::Record { .. })
    ));
    assert!(matches!(
        wal.blocks(BASE + 8192, BASE + 9000),
        Err(WalError::Read { .. })
    ));
    assert!(matches!(
        wal.blocks(start, end - 8),
        Err(WalError::Record { .. })
    ));
}

#[test]
fn broken_xl_prev_and_block_headers_are_errors() {
    let mut wal = Wal::new();
    let start = wal.filler(0);
    let second = wal.record(10, 0, &body(&[block(1, 0, 1)], 0, 0));
    // SAME_REL on the first block: no relation to refer to.
    let bad = [0u8, 0x80, 0, 0, 1, 0, 0, 0];
    let third = wal.record(10, 0, &bad);
    assert!(matches!(
        wal.blocks(start, wal.pos),
        Err(WalError::Record { lsn, .. }) if lsn == third
    ));
    let at = (second - BASE) as usize + 8;
    wal.bytes[at] ^= 8;
    // Fix the CRC so that only xl_prev is wrong.
    let len = u32::from_le_bytes(wal.bytes[at - 8..at - 4].try_into().unwrap()) as usize;
    let rec = (second - BASE) as usize;
    let mut crc = Crc32c::default();
    crc.update(&wal.bytes[rec + RECORD_HEADER..rec + len]);
    crc.update(&wal.bytes[rec..rec + CRC_AT]);
    wal.bytes[rec + CRC_AT..rec + RECORD_HEADER].copy_from_slice(&crc.finish().to_le_bytes());
    assert!(matches!(
        wal.blocks(start, third),
        Err(WalError::Record { lsn, .. }) if lsn == second
    ));
}

#[test]
fn segment_file_names() {
    let l = WalLayout {
        page_size: 8192,
        segment_size: 16 << 20,
        timeline: 1,
    };
    assert_eq!(l.segment_file(0x4_45CF_3730), "000000010000000400000045");
    assert_eq!(lsn_text(0x4_45CF_3730), "4/45CF3730");
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

fn arb_block() -> impl Strategy<Value = BlockRef> {
    (1u32..4, 0u8..3, 0u32..1000).prop_map(|(rel, fork, b)| block(rel, fork, b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Records of any size and block references round-trip, wherever they
    /// fall on pages and segments.
    #[test]
    fn written_blocks_are_read_back(
        recs in prop::collection::vec(
            (prop::collection::vec(arb_block(), 0..5), 0u16..1500, any::<u8>(), any::<bool>()),
            1..20,
        )
    ) {
        let mut wal = Wal::new();
        let start = wal.filler(0);
        let mut want = Vec::new();
        for (blocks, data, main, switch) in recs {
            if switch {
                wal.record(RM_XLOG_ID, XLOG_SWITCH, &[]);
            }
            wal.record(10, 0, &body(&blocks, data, main));
            want.extend(blocks);
        }
        prop_assert_eq!(wal.blocks(start, wal.pos).expect("reads"), want);
    }

    /// Any damage to the bytes gives an error or a list, never a panic.
    #[test]
    fn damaged_wal_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        end_cut in 0u64..3000,
    ) {
        let mut wal = Wal::new();
        let start = wal.filler(0);
        for i in 0..6u32 {
            wal.record(10, 0, &body(&[block(i, 0, i)], 300 * i as u16, 9));
        }
        for (at, v) in flips {
            let i = at.index(wal.bytes.len());
            wal.bytes[i] = v;
        }
        let _ = wal.blocks(start, wal.pos.saturating_sub(end_cut));
    }
}
