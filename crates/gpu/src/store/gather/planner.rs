//! Planning a gather: run sets per output buffer, the output layout, and
//! the kernels' task tables, for any [`Exec`] (the device, or the CPU twin
//! in the tests).

use super::*;

/// `struct GRun` in kernels/gather.cu: units `src..src + len` of source
/// `batch` to units `dst..dst + len` of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GRun {
    pub(super) src: u64,
    pub(super) dst: u64,
    pub(super) len: u64,
    pub(super) batch: u64,
}

/// `struct GTask` in kernels/gather.cu (field for field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct GTask {
    pub(super) runs: u64,
    pub(super) nruns: u64,
    pub(super) srcs: u64,
    pub(super) aux: u64,
    pub(super) dst: u64,
    pub(super) total: u64,
    pub(super) tail: u64,
    pub(super) start: u64,
    pub(super) width: u64,
    pub(super) flags: u64,
}

impl GTask {
    pub(super) fn words(&self) -> [u64; 10] {
        [
            self.runs, self.nruns, self.srcs, self.aux, self.dst, self.total, self.tail,
            self.start, self.width, self.flags,
        ]
    }
}

/// Runs in output order with empty ones dropped and adjacent ones (same
/// batch, contiguous source) merged; output positions are the prefix sums.
#[cfg(test)]
pub(super) fn coalesce(parts: impl IntoIterator<Item = (usize, u64, u64)>) -> Vec<GRun> {
    let mut out = Vec::new();
    coalesce_into(parts, &mut out);
    out
}

/// [`coalesce`] into `out` (cleared first; a reused buffer).
fn coalesce_into(parts: impl IntoIterator<Item = (usize, u64, u64)>, out: &mut Vec<GRun>) {
    out.clear();
    let mut dst = 0u64;
    for (batch, src, len) in parts {
        if len == 0 {
            continue;
        }
        let batch = batch as u64;
        match out.last_mut() {
            Some(last) if last.batch == batch && last.src + last.len == src => last.len += len,
            _ => out.push(GRun {
                src,
                dst,
                len,
                batch,
            }),
        }
        dst += len;
    }
}

pub(super) fn set_total(set: &[GRun]) -> u64 {
    set.last().map_or(0, |r| r.dst + r.len)
}

/// The child runs of an offsets-based column (strings' bytes, lists'
/// elements) in parent order: batch, first offset, length.
pub(super) fn child_parts<'r>(
    parent: &'r [GRun],
    bounds: &'r [u64],
) -> impl Iterator<Item = (usize, u64, u64)> + 'r {
    parent
        .iter()
        .zip(bounds.chunks_exact(2))
        .map(|(r, b)| (r.batch as usize, b[0], b[1].saturating_sub(b[0])))
}

/// Checks the source offsets at each parent run's boundaries (`bounds`:
/// first and end, two per run) against the size of the batch's values
/// (`limit`), and gives each parent run's rebasing delta and the child
/// total.
pub(super) fn child_deltas(
    parent: &[GRun],
    bounds: &[u64],
    limit: &dyn Fn(usize) -> u64,
    name: &str,
) -> Result<(Vec<i64>, u64), String> {
    let mut deltas = Vec::with_capacity(parent.len());
    let mut at = 0u64;
    for (r, b) in parent.iter().zip(bounds.chunks_exact(2)) {
        let (lo, hi) = (b[0], b[1]);
        let b = r.batch as usize;
        if lo > hi || hi > limit(b) {
            return Err(format!(
                "column {name}: source {b} rows {}..{} have offsets {lo}..{hi} outside its {} values",
                r.src,
                r.src + r.len,
                limit(b)
            ));
        }
        // out = src - lo + at, in the offset width's wrapping arithmetic.
        deltas.push(at.wrapping_sub(lo) as i64);
        at += hi - lo;
    }
    Ok((deltas, at))
}

/// Where an output node's buffers are in the slab; filled by the planner.
#[derive(Debug, Clone, Default)]
pub(super) struct OutNode {
    pub(super) data_type: Option<DataType>,
    pub(super) len: usize,
    /// (offset, bytes, NULL counter).
    pub(super) validity: Option<(usize, usize, usize)>,
    /// (offset, bytes) in `ArrayData` order.
    pub(super) buffers: Vec<(usize, usize)>,
    pub(super) children: Vec<usize>,
}

#[derive(Debug)]
pub(super) enum Aux {
    None,
    Counter(usize),
    Deltas(Vec<i64>),
}

/// One output buffer written by one kernel.
#[derive(Debug)]
pub(super) struct Spec {
    pub(super) kernel: GatherKernel,
    pub(super) set: usize,
    /// Per source batch: its buffer's address (0 for a bitmap: all set).
    pub(super) srcs: Vec<u64>,
    pub(super) aux: Aux,
    /// Offset in the slab.
    pub(super) dst: usize,
    pub(super) total: u64,
    pub(super) tail: Option<u64>,
    pub(super) width: u64,
}

impl Spec {
    pub(super) fn units(&self, nruns: usize) -> u64 {
        match self.kernel {
            GatherKernel::Copy => (self.total * self.width).div_ceil(COPY_TILE),
            GatherKernel::Bits => self.total.div_ceil(BITS_UNIT),
            GatherKernel::Rebase => {
                let n = self.total.div_ceil(REBASE_TILE);
                if self.tail.is_some() {
                    n.max(1)
                } else {
                    n
                }
            }
            GatherKernel::Fetch => nruns as u64,
        }
    }
}

/// The uploaded table: run sets, source addresses, deltas, counters and
/// tasks, as u64 words (every struct of the kernels is made of u64s).
#[derive(Debug, Default, Clone)]
pub(super) struct Table {
    pub(super) words: Vec<u64>,
}

impl Table {
    /// Appends words; returns their byte offset.
    pub(super) fn push(&mut self, w: &[u64]) -> u64 {
        let at = self.bytes() as u64;
        self.words.extend_from_slice(w);
        at
    }

    pub(super) fn push_iter(&mut self, w: impl IntoIterator<Item = u64>) -> u64 {
        let at = self.bytes() as u64;
        self.words.extend(w);
        at
    }

    pub(super) fn push_runs(&mut self, runs: &[GRun]) -> u64 {
        let at = self.bytes() as u64;
        for r in runs {
            self.words
                .extend_from_slice(&[r.src, r.dst, r.len, r.batch]);
        }
        at
    }

    pub(super) fn push_tasks(&mut self, tasks: &[GTask]) -> u64 {
        let at = self.bytes() as u64;
        for t in tasks {
            self.words.extend_from_slice(&t.words());
        }
        at
    }

    pub(super) fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        // SAFETY: u64 has no padding and every bit pattern is a valid u8;
        // the slice covers exactly the vector's initialized elements.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.bytes()) }
    }
}

/// One kernel launch over a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Launch {
    pub(super) kernel: GatherKernel,
    pub(super) tasks_at: u64,
    pub(super) ntasks: u32,
    pub(super) nunits: u64,
}

/// Runs the planned kernels: on the device ([`CudaExec`]) or, in the
/// tests, the kernels' C++ twin on host memory.
pub(super) trait Exec {
    type Slab;
    /// Runs the fetch kernel over `table`; `out` (cleared) gets two values
    /// per unit.
    fn fetch(&mut self, table: &Table, launch: Launch, out: &mut Vec<u64>) -> Result<(), GpuError>;
    /// Allocates the output slab, runs `launches` over `table` and returns
    /// the slab and the `ncounters` NULL counters at byte `counters_at` of
    /// the table, once everything is written.
    fn run(
        &mut self,
        table: &Table,
        slab_bytes: usize,
        launches: &[Launch],
        counters_at: u64,
        ncounters: usize,
    ) -> Result<(Self::Slab, Vec<u64>), GpuError>;
}

/// A planned gather.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) nodes: Vec<OutNode>,
    pub(super) roots: Vec<usize>,
    pub(super) slab_bytes: usize,
    pub(super) table: Table,
    pub(super) launches: Vec<Launch>,
    pub(super) counters_at: u64,
    pub(super) ncounters: usize,
    pub(super) runs: usize,
    pub(super) tasks: usize,
    pub(super) fetch_rounds: usize,
}

/// A column of the output waiting to be planned: the same column of every
/// source, the run set it is gathered with and its output node.
pub(super) struct Pending<'s, 'a> {
    pub(super) cols: Vec<&'s SrcCol<'a>>,
    pub(super) set: usize,
    pub(super) node: usize,
    pub(super) name: String,
}

pub(super) struct Planner {
    pub(super) device: usize,
    /// Source batches.
    pub(super) nsrc: usize,
    pub(super) sets: Vec<Vec<GRun>>,
    /// Per set: the batches with rows in it, in order of first use.
    pub(super) users: Vec<Vec<usize>>,
    pub(super) nodes: Vec<OutNode>,
    pub(super) specs: Vec<Spec>,
    pub(super) cursor: usize,
    pub(super) counters: usize,
    pub(super) scratch: Scratch,
}

/// Buffers kept from one gather to the next: vectors of a few hundred KB
/// allocated afresh on every call cost more in page faults than the
/// planning itself (10,000 runs).
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// Spare run-set buffers.
    pub(super) sets: Vec<Vec<GRun>>,
    /// The fetch round's table and the values it reads back.
    pub(super) fetch: Vec<u64>,
    pub(super) vals: Vec<u64>,
    /// The copy kernels' table.
    pub(super) table: Vec<u64>,
}

impl Planner {
    /// The slab offset of the next `bytes` (256-byte aligned, at least one
    /// alignment unit each, as the decoder's Carver).
    pub(super) fn carve(&mut self, bytes: usize) -> usize {
        let at = self.cursor;
        self.cursor += bytes.max(1).div_ceil(ALIGN) * ALIGN;
        at
    }

    /// A run-set buffer to fill (then [`Self::add_set`]).
    pub(super) fn spare(&mut self) -> Vec<GRun> {
        self.scratch.sets.pop().unwrap_or_default()
    }

    pub(super) fn add_set(&mut self, set: Vec<GRun>) -> usize {
        let mut seen = vec![false; self.nsrc];
        let mut users = Vec::new();
        for r in &set {
            let b = r.batch as usize;
            if !std::mem::replace(&mut seen[b], true) {
                users.push(b);
            }
        }
        self.users.push(users);
        self.sets.push(set);
        self.sets.len() - 1
    }

    pub(super) fn add_node(&mut self) -> usize {
        self.nodes.push(OutNode::default());
        self.nodes.len() - 1
    }

    /// Refuses source buffers the kernels would read with misaligned
    /// `width`-byte loads (offsets, keys).
    pub(super) fn aligned(
        &self,
        p: &Pending<'_, '_>,
        set: usize,
        which: &dyn Fn(&SrcCol<'_>) -> u64,
        width: usize,
    ) -> Result<(), GpuError> {
        for &b in &self.users[set] {
            let addr = which(p.cols[b]);
            if !addr.is_multiple_of(width as u64) {
                return Err(bad(
                    self.device,
                    format!(
                        "column {}: source {b}'s buffer at {addr:#x} is not aligned to its {width}-byte values",
                        p.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Plans a column whose sizes are known from its run set; columns with
    /// offsets wait in `waiting` for the boundaries' fetch.
    pub(super) fn expand<'s, 'a>(
        &mut self,
        p: Pending<'s, 'a>,
        work: &mut Vec<Pending<'s, 'a>>,
        waiting: &mut Vec<(Pending<'s, 'a>, usize)>,
    ) -> Result<(), GpuError> {
        let dt = p.cols[0].dt;
        let shape = shape_of(dt).ok_or_else(|| {
            bad(
                self.device,
                format!("column {}: type {dt} is not supported", p.name),
            )
        })?;
        let total = set_total(&self.sets[p.set]);
        let n = total as usize;
        let used = self.users[p.set].clone();
        {
            let node = &mut self.nodes[p.node];
            node.data_type = Some(dt.clone());
            node.len = n;
        }
        if used.iter().any(|&b| p.cols[b].validity.is_some()) {
            // Whole 32-bit words: the kernel stores words. A source without
            // a bitmap reads as all valid.
            let at = self.carve(n.div_ceil(32) * 4);
            let counter = self.counters;
            self.counters += 1;
            self.nodes[p.node].validity = Some((at, n.div_ceil(8), counter));
            self.specs.push(Spec {
                kernel: GatherKernel::Bits,
                set: p.set,
                srcs: p
                    .cols
                    .iter()
                    .map(|c| c.validity.map_or(0, |v| v.addr))
                    .collect(),
                aux: Aux::Counter(counter),
                dst: at,
                total,
                tail: None,
                width: 0,
            });
        }
        match shape {
            Shape::Fixed(w) => {
                let at = self.carve(n * w);
                self.nodes[p.node].buffers = vec![(at, n * w)];
                if w > 0 {
                    self.specs.push(Spec {
                        kernel: GatherKernel::Copy,
                        set: p.set,
                        srcs: p.cols.iter().map(|c| c.buffers[0].addr).collect(),
                        aux: Aux::None,
                        dst: at,
                        total,
                        tail: None,
                        width: w as u64,
                    });
                }
            }
            Shape::Bool => {
                let at = self.carve(n.div_ceil(32) * 4);
                self.nodes[p.node].buffers = vec![(at, n.div_ceil(8))];
                self.specs.push(Spec {
                    kernel: GatherKernel::Bits,
                    set: p.set,
                    srcs: p.cols.iter().map(|c| c.buffers[0].addr).collect(),
                    aux: Aux::None,
                    dst: at,
                    total,
                    tail: None,
                    width: 0,
                });
            }
            Shape::Bytes(w) | Shape::List(w) => {
                self.aligned(&p, p.set, &|c| c.buffers[0].addr, w)?;
                waiting.push((p, w));
            }
            Shape::FixedList(size) => {
                let mut child = self.spare();
                coalesce_into(
                    self.sets[p.set]
                        .iter()
                        .map(|r| (r.batch as usize, r.src * size as u64, r.len * size as u64)),
                    &mut child,
                );
                let set = self.add_set(child);
                let node = self.add_node();
                self.nodes[p.node].children = vec![node];
                work.push(Pending {
                    cols: p.cols.iter().map(|c| &c.children[0]).collect(),
                    set,
                    node,
                    name: format!("{}.0", p.name),
                });
            }
            Shape::Struct(k) => {
                let mut children = Vec::with_capacity(k);
                for i in 0..k {
                    let node = self.add_node();
                    children.push(node);
                    work.push(Pending {
                        cols: p.cols.iter().map(|c| &c.children[i]).collect(),
                        set: p.set,
                        node,
                        name: format!("{}.{i}", p.name),
                    });
                }
                self.nodes[p.node].children = children;
            }
            Shape::Dict { width, signed } => {
                self.expand_dict(p, &used, total, width, signed, work)?;
            }
        }
        Ok(())
    }

    /// Plans a dictionary column: the output dictionary is the
    /// dictionaries of the batches used, in order of first use; each
    /// batch's keys move by its dictionary's position there.
    fn expand_dict<'s, 'a>(
        &mut self,
        p: Pending<'s, 'a>,
        used: &[usize],
        total: u64,
        width: usize,
        signed: bool,
        work: &mut Vec<Pending<'s, 'a>>,
    ) -> Result<(), GpuError> {
        let n = total as usize;
        let mut base = vec![0u64; p.cols.len()];
        let mut parts = Vec::with_capacity(used.len());
        let mut size = 0u64;
        for &b in used {
            base[b] = size;
            let len = p.cols[b].children[0].len as u64;
            parts.push((b, 0, len));
            size += len;
        }
        let room: u128 = if signed {
            1u128 << (8 * width - 1)
        } else {
            1u128 << (8 * width)
        };
        if u128::from(size) > room {
            return Err(bad(
                self.device,
                format!(
                    "column {}: the gathered dictionaries hold {size} values, more than its {}-byte keys can index",
                    p.name, width
                ),
            ));
        }
        let deltas: Vec<i64> = self.sets[p.set]
            .iter()
            .map(|r| base[r.batch as usize] as i64)
            .collect();
        let at = self.carve(n * width);
        let srcs = p.cols.iter().map(|c| c.buffers[0].addr).collect();
        if deltas.iter().all(|&d| d == 0) {
            // One dictionary: the keys are copied as they are.
            self.specs.push(Spec {
                kernel: GatherKernel::Copy,
                set: p.set,
                srcs,
                aux: Aux::None,
                dst: at,
                total,
                tail: None,
                width: width as u64,
            });
        } else {
            self.aligned(&p, p.set, &|c| c.buffers[0].addr, width)?;
            self.specs.push(Spec {
                kernel: GatherKernel::Rebase,
                set: p.set,
                srcs,
                aux: Aux::Deltas(deltas),
                dst: at,
                total,
                tail: None,
                width: width as u64,
            });
        }
        self.nodes[p.node].buffers = vec![(at, n * width)];
        let mut dict = self.spare();
        coalesce_into(parts, &mut dict);
        let set = self.add_set(dict);
        let node = self.add_node();
        self.nodes[p.node].children = vec![node];
        work.push(Pending {
            cols: p.cols.iter().map(|c| &c.children[0]).collect(),
            set,
            node,
            name: format!("{}.0", p.name),
        });
        Ok(())
    }

    /// Plans an offsets-based column once its boundaries are known.
    pub(super) fn finish_offsets<'s, 'a>(
        &mut self,
        p: Pending<'s, 'a>,
        width: usize,
        bounds: &[u64],
        work: &mut Vec<Pending<'s, 'a>>,
    ) -> Result<(), GpuError> {
        let is_list = p.cols[0].buffers.len() == 1;
        let limit = |b: usize| -> u64 {
            if is_list {
                p.cols[b].children[0].len as u64
            } else {
                p.cols[b].buffers[1].len as u64
            }
        };
        let (deltas, child_total) = child_deltas(&self.sets[p.set], bounds, &limit, &p.name)
            .map_err(|what| GpuError::Layout {
                column: p.name.clone(),
                what,
            })?;
        let max = if width == 4 {
            i32::MAX as u64
        } else {
            i64::MAX as u64
        };
        if child_total > max {
            return Err(bad(
                self.device,
                format!(
                    "column {}: {child_total} gathered values do not fit {width}-byte offsets",
                    p.name
                ),
            ));
        }
        let total = set_total(&self.sets[p.set]);
        let n = total as usize;
        let at = self.carve((n + 1) * width);
        self.specs.push(Spec {
            kernel: GatherKernel::Rebase,
            set: p.set,
            srcs: p.cols.iter().map(|c| c.buffers[0].addr).collect(),
            aux: Aux::Deltas(deltas),
            dst: at,
            total,
            tail: Some(child_total),
            width: width as u64,
        });
        let mut child = self.spare();
        coalesce_into(child_parts(&self.sets[p.set], bounds), &mut child);
        let set = self.add_set(child);
        if is_list {
            self.nodes[p.node].buffers = vec![(at, (n + 1) * width)];
            let node = self.add_node();
            self.nodes[p.node].children = vec![node];
            work.push(Pending {
                cols: p.cols.iter().map(|c| &c.children[0]).collect(),
                set,
                node,
                name: format!("{}.0", p.name),
            });
        } else {
            let vlen = child_total as usize;
            let vat = self.carve(vlen);
            self.nodes[p.node].buffers = vec![(at, (n + 1) * width), (vat, vlen)];
            if vlen > 0 {
                self.specs.push(Spec {
                    kernel: GatherKernel::Copy,
                    set,
                    srcs: p.cols.iter().map(|c| c.buffers[1].addr).collect(),
                    aux: Aux::None,
                    dst: vat,
                    total: child_total,
                    tail: None,
                    width: 1,
                });
            }
        }
        Ok(())
    }

    /// Fetches the source offsets at the boundaries of every run of the
    /// waiting columns in one launch into `scratch.vals`; returns each
    /// column's first run there (its values at `2 * first ..`).
    pub(super) fn fetch<E: Exec>(
        &mut self,
        waiting: &[(Pending<'_, '_>, usize)],
        exec: &mut E,
    ) -> Result<Vec<usize>, GpuError> {
        let mut table = Table {
            words: std::mem::take(&mut self.scratch.fetch),
        };
        table.words.clear();
        let mut set_at: Vec<Option<u64>> = vec![None; self.sets.len()];
        let mut tasks = Vec::with_capacity(waiting.len());
        let mut units = 0u64;
        for (p, width) in waiting {
            let set = &self.sets[p.set];
            let runs = match set_at[p.set] {
                Some(at) => at,
                None => {
                    let at = table.push_runs(set);
                    set_at[p.set] = Some(at);
                    at
                }
            };
            let srcs: Vec<u64> = p.cols.iter().map(|c| c.buffers[0].addr).collect();
            tasks.push(GTask {
                runs,
                nruns: set.len() as u64,
                srcs: table.push(&srcs),
                aux: units,
                start: units,
                width: *width as u64,
                ..GTask::default()
            });
            units += set.len() as u64;
        }
        let firsts: Vec<usize> = tasks.iter().map(|t| t.aux as usize).collect();
        if units == 0 {
            self.scratch.fetch = table.words;
            return Ok(firsts);
        }
        let tasks_at = table.push_tasks(&tasks);
        let mut vals = std::mem::take(&mut self.scratch.vals);
        exec.fetch(
            &table,
            Launch {
                kernel: GatherKernel::Fetch,
                tasks_at,
                ntasks: tasks.len() as u32,
                nunits: units,
            },
            &mut vals,
        )?;
        self.scratch.fetch = table.words;
        if vals.len() < 2 * units as usize {
            return Err(GpuError::Layout {
                column: "(gather)".into(),
                what: format!(
                    "{} boundary values fetched, {} expected",
                    vals.len(),
                    2 * units
                ),
            });
        }
        self.scratch.vals = vals;
        Ok(firsts)
    }

    /// Lays out the table of the copy kernels: run sets, per-source
    /// addresses, deltas, the zeroed NULL counters, one task array per
    /// kernel.
    pub(super) fn table(&mut self) -> (Table, Vec<Launch>, u64) {
        let mut table = Table {
            words: std::mem::take(&mut self.scratch.table),
        };
        table.words.clear();
        // Reserved at once: regrowing a large table copies it.
        let sets: usize = self.sets.iter().map(|s| 4 * s.len()).sum();
        let per_spec: usize = self
            .specs
            .iter()
            .map(|s| {
                10 + s.srcs.len()
                    + match &s.aux {
                        Aux::Deltas(d) => d.len(),
                        _ => 0,
                    }
            })
            .sum();
        table.words.reserve(self.counters + sets + per_spec);
        let counters_at = table.push_iter(std::iter::repeat_n(0, self.counters));
        let mut set_at: Vec<Option<u64>> = vec![None; self.sets.len()];
        let mut launches = Vec::new();
        for kernel in [GatherKernel::Copy, GatherKernel::Rebase, GatherKernel::Bits] {
            let mut tasks = Vec::new();
            let mut units = 0u64;
            for s in self.specs.iter().filter(|s| s.kernel == kernel) {
                let set = &self.sets[s.set];
                let n = s.units(set.len());
                if n == 0 {
                    continue;
                }
                let runs = match set_at[s.set] {
                    Some(at) => at,
                    None => {
                        let at = table.push_runs(set);
                        set_at[s.set] = Some(at);
                        at
                    }
                };
                let aux = match &s.aux {
                    Aux::None => NO_COUNTER,
                    Aux::Counter(k) => counters_at + 8 * *k as u64,
                    Aux::Deltas(d) => table.push_iter(d.iter().map(|&x| x as u64)),
                };
                tasks.push(GTask {
                    runs,
                    nruns: set.len() as u64,
                    srcs: table.push(&s.srcs),
                    aux,
                    dst: s.dst as u64,
                    total: s.total,
                    tail: s.tail.unwrap_or(0),
                    start: units,
                    width: s.width,
                    flags: if s.tail.is_some() { FLAG_TAIL } else { 0 },
                });
                units += n;
            }
            if !tasks.is_empty() {
                let tasks_at = table.push_tasks(&tasks);
                launches.push(Launch {
                    kernel,
                    tasks_at,
                    ntasks: tasks.len() as u32,
                    nunits: units,
                });
            }
        }
        (table, launches, counters_at)
    }
}

/// Plans a gather of `runs` out of `columns[batch][column]` (validated by
/// the caller: one schema, every length checked), fetching offsets through
/// `exec` where sizes depend on them.
pub(super) fn plan<E: Exec>(
    device: usize,
    columns: &[Vec<SrcCol<'_>>],
    names: &[String],
    runs: &[RowRun],
    exec: &mut E,
    scratch: &mut Scratch,
) -> Result<Plan, GpuError> {
    let mut pl = Planner {
        device,
        nsrc: columns.len(),
        sets: Vec::new(),
        users: Vec::new(),
        nodes: Vec::new(),
        specs: Vec::new(),
        cursor: 0,
        counters: 0,
        scratch: std::mem::take(scratch),
    };
    let mut set = pl.spare();
    coalesce_into(
        runs.iter().map(|r| (r.batch, r.start as u64, r.len as u64)),
        &mut set,
    );
    let rows = pl.add_set(set);
    let nruns = pl.sets[rows].len();
    let mut work = Vec::new();
    let mut roots = Vec::with_capacity(names.len());
    for (c, name) in names.iter().enumerate() {
        let node = pl.add_node();
        roots.push(node);
        work.push(Pending {
            cols: columns.iter().map(|b| &b[c]).collect(),
            set: rows,
            node,
            name: name.clone(),
        });
    }
    let mut waiting = Vec::new();
    let mut fetch_rounds = 0;
    loop {
        while let Some(p) = work.pop() {
            pl.expand(p, &mut work, &mut waiting)?;
        }
        if waiting.is_empty() {
            break;
        }
        let firsts = pl.fetch(&waiting, exec)?;
        fetch_rounds += 1;
        let vals = std::mem::take(&mut pl.scratch.vals);
        for ((p, width), first) in std::mem::take(&mut waiting).into_iter().zip(firsts) {
            let n = pl.sets[p.set].len();
            let bounds = vals
                .get(2 * first..2 * (first + n))
                .ok_or_else(|| GpuError::Layout {
                    column: p.name.clone(),
                    what: format!(
                        "{} boundary values fetched, {} needed",
                        vals.len(),
                        2 * (first + n)
                    ),
                })?;
            pl.finish_offsets(p, width, bounds, &mut work)?;
        }
        pl.scratch.vals = vals;
    }
    let (table, launches, counters_at) = pl.table();
    if launches.iter().any(|l| l.ntasks == u32::MAX) {
        return Err(bad(device, "too many output buffers".into()));
    }
    // The buffers go back for the next gather.
    pl.scratch.sets.append(&mut pl.sets);
    *scratch = std::mem::take(&mut pl.scratch);
    Ok(Plan {
        slab_bytes: pl.cursor,
        tasks: launches.iter().map(|l| l.ntasks as usize).sum(),
        nodes: pl.nodes,
        roots,
        table,
        launches,
        counters_at,
        ncounters: pl.counters,
        runs: nruns,
        fetch_rounds,
    })
}
