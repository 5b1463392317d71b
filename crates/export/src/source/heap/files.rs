//! A relation's main fork read straight from the data directory: segment
//! files of `segment_blocks` pages each (`path`, `path.1`, ...), read with
//! positioned reads so that many threads share the open files.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use gpupg_format::heap::page::PAGE_HEADER_SIZE;
use gpupg_format::heap::PageHeader;

/// The open segment files of one relation.
#[derive(Debug)]
pub struct RelationFiles {
    base: PathBuf,
    block_size: usize,
    segment_blocks: u64,
    segments: Vec<File>,
    nblocks: u64,
}

impl RelationFiles {
    /// Opens every segment file of the relation whose first segment is
    /// `base`. The relation's size is taken now, from the file sizes: call
    /// this after the checkpoint that makes the files current.
    pub fn open(base: &Path, block_size: usize, segment_blocks: u64) -> io::Result<RelationFiles> {
        let mut segments = Vec::new();
        let mut nblocks = 0u64;
        loop {
            let path = segment_path(base, segments.len());
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !segments.is_empty() => break,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot open {}: {e}", path.display()),
                    ))
                }
            };
            let blocks = file.metadata()?.len() / block_size as u64;
            nblocks += blocks;
            segments.push(file);
            // Only a full segment can be followed by another.
            if blocks < segment_blocks {
                break;
            }
        }
        Ok(RelationFiles {
            base: base.to_path_buf(),
            block_size,
            segment_blocks,
            segments,
            nblocks,
        })
    }

    /// The relation's size in bytes now, from the open segment files and a
    /// segment added since they were opened, for comparing with the
    /// server's `pg_relation_size` (they are the same files only if they
    /// agree).
    pub fn bytes_now(&self) -> io::Result<u64> {
        let mut total = 0;
        for file in &self.segments {
            total += file.metadata()?.len();
        }
        match std::fs::metadata(segment_path(&self.base, self.segments.len())) {
            Ok(m) => Ok(total + m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(total),
            Err(e) => Err(e),
        }
    }

    /// Blocks in the relation when it was opened.
    pub fn nblocks(&self) -> u64 {
        self.nblocks
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Reads `buf.len() / block_size` whole blocks starting at `first`,
    /// across segment boundaries.
    pub fn read_blocks(&self, first: u64, buf: &mut [u8]) -> io::Result<()> {
        let bs = self.block_size as u64;
        for piece in self.pieces(first, buf.len() as u64 / bs) {
            let block = first + piece.done;
            let file = self.segments.get(piece.segment).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("block {block} is past the end of {}", self.base.display()),
                )
            })?;
            let dst =
                &mut buf[(piece.done * bs) as usize..((piece.done + piece.blocks) * bs) as usize];
            file.read_exact_at(dst, piece.offset).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "reading blocks {block}..{} of {}: {e}",
                        block + piece.blocks,
                        segment_path(&self.base, piece.segment).display()
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// The segment file pieces of `count` blocks from `first` on, in order:
    /// a read of them reads piece by piece.
    pub fn pieces(&self, first: u64, count: u64) -> impl Iterator<Item = SegmentPiece> + '_ {
        let mut done = 0u64;
        std::iter::from_fn(move || {
            if done >= count {
                return None;
            }
            let block = first + done;
            let in_seg = block % self.segment_blocks;
            let piece = SegmentPiece {
                segment: (block / self.segment_blocks) as usize,
                offset: in_seg * self.block_size as u64,
                blocks: (self.segment_blocks - in_seg).min(count - done),
                done,
            };
            done += piece.blocks;
            Some(piece)
        })
    }

    /// The paths of the segment files opened, in order.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        (0..self.segments.len())
            .map(|i| segment_path(&self.base, i))
            .collect()
    }

    /// The LSN in the header of `block` as it is now (read again after the
    /// block itself, to catch a page written while it was being read).
    pub fn read_lsn(&self, block: u64) -> io::Result<u64> {
        let mut b = [0u8; PAGE_HEADER_SIZE];
        let seg = (block / self.segment_blocks) as usize;
        let in_seg = block % self.segment_blocks;
        let file = self
            .segments
            .get(seg)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "block past the end"))?;
        file.read_exact_at(&mut b, in_seg * self.block_size as u64)?;
        Ok(PageHeader::read(&b).map_or(0, |h| h.lsn))
    }

    /// The whole visibility map fork (`base_vm`); empty when the relation
    /// has none yet (then no page is all-visible).
    pub fn read_visibility_map(&self) -> io::Result<Vec<u8>> {
        let mut name = self.base.as_os_str().to_owned();
        name.push("_vm");
        let path = PathBuf::from(name);
        // Segments of the map (`_vm.1`, ...) only exist for relations of
        // tens of terabytes; read them all the same.
        let mut out = Vec::new();
        for seg in 0.. {
            match std::fs::read(segment_path(&path, seg)) {
                Ok(b) => {
                    let full = b.len() as u64 == self.segment_blocks * self.block_size as u64;
                    out.extend_from_slice(&b);
                    if !full {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot read {}: {e}", path.display()),
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// Part of a read that lies in one segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPiece {
    /// The segment (index into [`RelationFiles::segment_paths`]).
    pub segment: usize,
    /// Byte offset in the segment file.
    pub offset: u64,
    /// Blocks in this piece.
    pub blocks: u64,
    /// Blocks of the read before this piece.
    pub done: u64,
}

/// `base` for segment 0, `base.N` after.
fn segment_path(base: &Path, seg: usize) -> PathBuf {
    if seg == 0 {
        return base.to_path_buf();
    }
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{seg}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("16384");
        // 3 blocks of 16 bytes per segment; 7 blocks in all.
        let block = |i: u8| vec![i; 16];
        let seg0: Vec<u8> = (0..3).flat_map(block).collect();
        let seg1: Vec<u8> = (3..6).flat_map(block).collect();
        let seg2: Vec<u8> = (6..7).flat_map(block).collect();
        std::fs::write(&base, seg0).expect("seg0");
        std::fs::write(dir.path().join("16384.1"), seg1).expect("seg1");
        std::fs::write(dir.path().join("16384.2"), seg2).expect("seg2");
        let f = RelationFiles::open(&base, 16, 3).expect("open");
        assert_eq!(f.nblocks(), 7);
        assert_eq!(f.bytes_now().expect("sizes"), 7 * 16);
        std::fs::write(dir.path().join("16384.3"), [0u8; 16]).expect("seg3");
        assert_eq!(f.bytes_now().expect("sizes"), 8 * 16);
        std::fs::remove_file(dir.path().join("16384.3")).expect("rm seg3");
        let mut buf = vec![0u8; 16 * 5];
        f.read_blocks(2, &mut buf).expect("read");
        let got: Vec<u8> = buf.chunks(16).map(|c| c[0]).collect();
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        let pieces: Vec<(usize, u64, u64, u64)> = f
            .pieces(2, 5)
            .map(|p| (p.segment, p.offset, p.blocks, p.done))
            .collect();
        assert_eq!(pieces, vec![(0, 32, 1, 0), (1, 0, 3, 1), (2, 0, 1, 4)]);
        assert_eq!(f.segment_paths().len(), 3);
        assert!(f.segment_paths()[2].ends_with("16384.2"));
        let mut one = vec![0u8; 16];
        assert!(f.read_blocks(7, &mut one).is_err());
        assert!(f.read_visibility_map().expect("no vm").is_empty());
        assert!(RelationFiles::open(&dir.path().join("nope"), 16, 3).is_err());
    }
}
