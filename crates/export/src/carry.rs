//! Page-level refresh: which heap pages each decoded batch holds
//! ([`PageMap`]), and what a refresh keeps of the previous load
//! ([`CarriedBatch`]).
//!
//! A load through the heap files records, for every batch made of whole
//! pages, each page's block, LSN and row count. A refresh given that map
//! (`ExportRequest::prior`) reads only the pages whose LSN changed (or that
//! were not tracked: rows read through COPY), and returns the rows of the
//! others as runs of the old batches to copy ([`gpupg_gpu::gather_rows`]
//! on the device, [`gpupg_gpu::gather_rows_host`] on the host).
//!
//! Why an unchanged LSN means unchanged rows: every change to a heap page
//! of a logged relation is WAL-logged and sets the page LSN; the
//! visibility-map bit is cleared by such a change too. A page kept has the
//! same LSN as when its rows were decoded, so it holds the same tuples, all
//! visible then and so visible to the refresh's later snapshot. The
//! checkpoint after the refresh's fence puts every change made before the
//! snapshot into the files (or, without one, a page still dirty in shared
//! buffers is never kept), so a page changed before it shows a newer LSN;
//! one changed after it only holds versions the snapshot does not see.
//! Unlogged relations (no page LSNs) never take the heap path.

use std::path::{Path, PathBuf};

use arrow_schema::SchemaRef;
use gpupg_gpu::RowRun;

/// One heap page whose rows a batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRows {
    /// The page's block number in its relation.
    pub block: u32,
    /// The page LSN when it was read.
    pub lsn: u64,
    /// Rows the page gave (its normal line pointers: the page was
    /// all-visible).
    pub rows: u32,
}

/// Where a decoded batch's rows came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOrigin {
    /// Exactly the rows of these pages of relation `rel` (an index into
    /// [`PageMap::rels`]), page after page in this order.
    Pages {
        /// The relation.
        rel: usize,
        /// Its pages, in the batch's row order.
        pages: Vec<PageRows>,
    },
    /// Rows not tracked by page (read through COPY, or converted by the
    /// heap readers); a refresh reads them again.
    Untracked,
}

impl BatchOrigin {
    /// The pages of a batch of `rows` rows decoded from `pages` of relation
    /// `rel`: untracked when they are not known or their rows do not add up
    /// (then a refresh reads them again rather than trust a wrong map).
    pub(crate) fn of(rel: usize, pages: Option<Vec<PageRows>>, rows: usize) -> BatchOrigin {
        match pages {
            Some(pages) if pages.iter().map(|p| p.rows as usize).sum::<usize>() == rows => {
                BatchOrigin::Pages { rel, pages }
            }
            _ => BatchOrigin::Untracked,
        }
    }
}

/// The pages of a loaded table, batch by batch: `batches[i]` describes the
/// load's batch `i`.
#[derive(Debug, Clone, Default)]
pub struct PageMap {
    /// The heap relations' files (their base paths, which change with the
    /// relfilenode on TRUNCATE, VACUUM FULL, CLUSTER, a rewrite).
    pub rels: Vec<PathBuf>,
    /// The columns as decoded: rows are kept only under the same schema.
    pub schema: Option<SchemaRef>,
    /// Where each batch's rows came from.
    pub batches: Vec<BatchOrigin>,
    /// Rows, bytes and GPU of each batch (a refresh carries rows from one
    /// GPU's batches into a batch on that GPU, of a bounded size).
    pub sizes: Vec<BatchSize>,
}

/// A batch's rows, bytes and GPU (0 for host batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchSize {
    /// Rows of the batch.
    pub rows: usize,
    /// Bytes its columns take.
    pub bytes: u64,
    /// The GPU it is on.
    pub device: usize,
}

impl PageMap {
    /// Adds the next batch: where its rows came from, and its size.
    pub fn push(&mut self, origin: BatchOrigin, size: BatchSize) {
        self.batches.push(origin);
        self.sizes.push(size);
    }

    /// Pages whose rows are tracked.
    pub fn tracked_pages(&self) -> usize {
        self.batches
            .iter()
            .map(|b| match b {
                BatchOrigin::Pages { pages, .. } => pages.len(),
                BatchOrigin::Untracked => 0,
            })
            .sum()
    }

    /// Where each tracked page of the relation whose files are at `base`
    /// lies, by block (`None` when the map has none of its pages).
    pub(crate) fn index(&self, base: &Path) -> Option<PriorPages> {
        let rel = self.rels.iter().position(|r| r == base)?;
        let mut pages: Vec<Option<PriorPage>> = Vec::new();
        let mut twice = Vec::new();
        for (batch, origin) in self.batches.iter().enumerate() {
            let BatchOrigin::Pages {
                rel: r,
                pages: list,
            } = origin
            else {
                continue;
            };
            if *r != rel {
                continue;
            }
            let mut first_row = 0usize;
            for p in list {
                let block = p.block as usize;
                if pages.len() <= block {
                    pages.resize(block + 1, None);
                }
                if pages[block].is_some() {
                    twice.push(block);
                }
                pages[block] = Some(PriorPage {
                    lsn: p.lsn,
                    batch,
                    first_row,
                    rows: p.rows as usize,
                });
                first_row += p.rows as usize;
            }
        }
        // A page listed twice (never by this crate) is read again: keeping
        // either copy could lose or double rows.
        for b in twice {
            pages[b] = None;
        }
        Some(PriorPages { pages })
    }
}

/// The tracked pages of one relation in a previous load, by block.
#[derive(Debug, Default)]
pub(crate) struct PriorPages {
    pages: Vec<Option<PriorPage>>,
}

/// Where a page's rows are in the previous load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PriorPage {
    pub lsn: u64,
    pub batch: usize,
    pub first_row: usize,
    pub rows: usize,
}

impl PriorPages {
    /// The page at `block`, when the previous load holds its rows.
    pub(crate) fn get(&self, block: u64) -> Option<PriorPage> {
        usize::try_from(block)
            .ok()
            .and_then(|b| self.pages.get(b).copied().flatten())
    }
}

/// A page a refresh keeps: its relation (in the refresh's numbering), its
/// block, and where its rows are in the previous load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeptPage {
    pub rel: usize,
    pub block: u32,
    pub prior: PriorPage,
}

/// Rows a refresh keeps, to be copied out of the previous load's batches
/// (all on `device`) into one new batch there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedBatch {
    /// The GPU the batch goes to (0 for host batches).
    pub device: usize,
    /// Runs of rows of the previous load's batches, in output order.
    pub runs: Vec<RowRun>,
    /// The new batch's pages.
    pub origin: BatchOrigin,
    /// Rows of the new batch.
    pub rows: usize,
}

/// At most this many rows, and about [`CARRY_BATCH_BYTES`], go into one
/// carried batch: Arrow's 32-bit offsets bound a batch's variable-width
/// values, and smaller batches leave room on a nearly full device.
pub const CARRY_BATCH_ROWS: usize = 1 << 24;
/// About the most bytes of one carried batch (see [`CARRY_BATCH_ROWS`]).
pub const CARRY_BATCH_BYTES: u64 = 1 << 30;

/// Groups the kept pages into carried batches: in the previous load's
/// order, one relation and one GPU per batch, adjacent rows merged into
/// one run, at most [`CARRY_BATCH_ROWS`] rows and about
/// [`CARRY_BATCH_BYTES`] (from `prior_batches`, the sizes of the previous
/// load's batches) per batch.
pub(crate) fn carry(mut kept: Vec<KeptPage>, prior_batches: &[BatchSize]) -> Vec<CarriedBatch> {
    let device = |batch: usize| prior_batches.get(batch).map_or(0, |b| b.device);
    // By GPU, then in the previous load's order; a page without rows sorts
    // before the page whose rows start where it would have.
    kept.sort_by_key(|k| {
        (
            device(k.prior.batch),
            k.prior.batch,
            k.prior.first_row,
            k.prior.rows,
        )
    });
    let row_bytes = |batch: usize| -> f64 {
        match prior_batches.get(batch) {
            Some(b) if b.rows > 0 => b.bytes as f64 / b.rows as f64,
            _ => 0.0,
        }
    };
    let mut out: Vec<CarriedBatch> = Vec::new();
    let mut bytes = 0.0f64;
    for k in kept {
        let page_bytes = row_bytes(k.prior.batch) * k.prior.rows as f64;
        let fits = out.last().is_some_and(|c| match &c.origin {
            BatchOrigin::Pages { rel, .. } => {
                *rel == k.rel
                    && c.device == device(k.prior.batch)
                    && c.rows + k.prior.rows <= CARRY_BATCH_ROWS
                    && bytes + page_bytes <= CARRY_BATCH_BYTES as f64
            }
            BatchOrigin::Untracked => false,
        });
        if !fits {
            out.push(CarriedBatch {
                device: device(k.prior.batch),
                runs: Vec::new(),
                origin: BatchOrigin::Pages {
                    rel: k.rel,
                    pages: Vec::new(),
                },
                rows: 0,
            });
            bytes = 0.0;
        }
        let Some(c) = out.last_mut() else { break };
        bytes += page_bytes;
        c.rows += k.prior.rows;
        if let BatchOrigin::Pages { pages, .. } = &mut c.origin {
            pages.push(PageRows {
                block: k.block,
                lsn: k.prior.lsn,
                rows: k.prior.rows as u32,
            });
        }
        if k.prior.rows == 0 {
            continue;
        }
        match c.runs.last_mut() {
            Some(r) if r.batch == k.prior.batch && r.start + r.len == k.prior.first_row => {
                r.len += k.prior.rows;
            }
            _ => c
                .runs
                .push(RowRun::new(k.prior.batch, k.prior.first_row, k.prior.rows)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(block: u32, lsn: u64, rows: u32) -> PageRows {
        PageRows { block, lsn, rows }
    }

    fn map() -> PageMap {
        PageMap {
            rels: vec![PathBuf::from("base/1/10"), PathBuf::from("base/1/20")],
            schema: None,
            sizes: Vec::new(),
            batches: vec![
                BatchOrigin::Pages {
                    rel: 0,
                    pages: vec![page(0, 5, 3), page(1, 6, 2), page(2, 7, 0), page(3, 8, 4)],
                },
                BatchOrigin::Untracked,
                BatchOrigin::Pages {
                    rel: 1,
                    pages: vec![page(7, 9, 1)],
                },
                BatchOrigin::Pages {
                    rel: 0,
                    pages: vec![page(9, 10, 5), page(4, 11, 1)],
                },
            ],
        }
    }

    #[test]
    fn pages_are_found_where_their_rows_are() {
        let m = map();
        assert_eq!(m.tracked_pages(), 7);
        let rel0 = m.index(Path::new("base/1/10")).unwrap();
        assert_eq!(
            rel0.get(3),
            Some(PriorPage {
                lsn: 8,
                batch: 0,
                first_row: 5,
                rows: 4
            })
        );
        assert_eq!(rel0.get(4).map(|p| (p.batch, p.first_row)), Some((3, 5)));
        assert_eq!(rel0.get(5), None);
        assert_eq!(rel0.get(7), None, "block 7 is the other relation's");
        assert_eq!(rel0.get(u64::MAX), None);
        assert!(m.index(Path::new("base/1/30")).is_none());
    }

    #[test]
    fn a_batch_is_tracked_only_when_its_pages_hold_its_rows() {
        let pages = vec![page(3, 1, 2), page(4, 1, 5)];
        assert_eq!(
            BatchOrigin::of(1, Some(pages.clone()), 7),
            BatchOrigin::Pages {
                rel: 1,
                pages: pages.clone()
            }
        );
        assert_eq!(BatchOrigin::of(1, Some(pages), 6), BatchOrigin::Untracked);
        assert_eq!(BatchOrigin::of(1, None, 7), BatchOrigin::Untracked);
    }

    #[test]
    fn a_page_listed_twice_is_not_kept() {
        let mut m = map();
        m.batches.push(BatchOrigin::Pages {
            rel: 0,
            pages: vec![page(1, 6, 2)],
        });
        let rel0 = m.index(Path::new("base/1/10")).unwrap();
        assert_eq!(rel0.get(1), None);
        assert!(rel0.get(0).is_some());
    }

    #[test]
    fn kept_pages_become_merged_runs() {
        let m = map();
        let rel0 = m.index(Path::new("base/1/10")).unwrap();
        let rel1 = m.index(Path::new("base/1/20")).unwrap();
        let kept = |rel: usize, block: u32, p: &PriorPages| KeptPage {
            rel,
            block,
            prior: p.get(u64::from(block)).unwrap(),
        };
        // Given out of order, as the reader threads find them; block 1 of
        // relation 0 changed.
        let pages = vec![
            kept(0, 4, &rel0),
            kept(0, 3, &rel0),
            kept(1, 7, &rel1),
            kept(0, 0, &rel0),
            kept(0, 2, &rel0),
            kept(0, 9, &rel0),
        ];
        let size = |rows, device| BatchSize {
            rows,
            bytes: 100 * rows as u64,
            device,
        };
        let sizes = [size(9, 0), size(0, 0), size(1, 0), size(6, 0)];
        let carried = carry(pages, &sizes);
        assert_eq!(carried.len(), 3, "{carried:?}");
        assert_eq!(
            carried[0].runs,
            vec![RowRun::new(0, 0, 3), RowRun::new(0, 5, 4)]
        );
        assert_eq!(carried[0].rows, 7);
        assert_eq!(
            carried[0].origin,
            BatchOrigin::Pages {
                rel: 0,
                pages: vec![page(0, 5, 3), page(2, 7, 0), page(3, 8, 4)]
            }
        );
        assert_eq!(carried[1].runs, vec![RowRun::new(2, 0, 1)]);
        assert_eq!(
            carried[2].runs,
            vec![RowRun::new(3, 0, 6)],
            "adjacent pages of one batch make one run"
        );
        assert_eq!(carried[2].rows, 6);
    }

    #[test]
    fn carried_batches_stay_on_their_gpu() {
        let kept = |batch: usize, block: u32| KeptPage {
            rel: 0,
            block,
            prior: PriorPage {
                lsn: 1,
                batch,
                first_row: 0,
                rows: 10,
            },
        };
        let on = |device| BatchSize {
            rows: 10,
            bytes: 100,
            device,
        };
        // Batches 0 and 2 on GPU 1, batch 1 on GPU 0.
        let carried = carry(
            vec![kept(0, 0), kept(1, 1), kept(2, 2)],
            &[on(1), on(0), on(1)],
        );
        let got: Vec<(usize, Vec<RowRun>)> =
            carried.iter().map(|c| (c.device, c.runs.clone())).collect();
        assert_eq!(
            got,
            vec![
                (0, vec![RowRun::new(1, 0, 10)]),
                (1, vec![RowRun::new(0, 0, 10), RowRun::new(2, 0, 10)]),
            ]
        );
    }

    #[test]
    fn carried_batches_are_bounded() {
        let block = |b: u32| KeptPage {
            rel: 0,
            block: b,
            prior: PriorPage {
                lsn: 1,
                batch: 0,
                first_row: b as usize * 100,
                rows: 100,
            },
        };
        // Rows of 1 MiB, 100 to a page: ten pages to a GiB.
        let sizes = [BatchSize {
            rows: 10_000,
            bytes: 10_000 * (1 << 20),
            device: 0,
        }];
        let carried = carry((0..25).map(block).collect(), &sizes);
        let rows: Vec<usize> = carried.iter().map(|c| c.rows).collect();
        assert_eq!(rows, vec![1000, 1000, 500]);
        assert_eq!(carried[1].runs, vec![RowRun::new(0, 1000, 1000)]);
    }
}
