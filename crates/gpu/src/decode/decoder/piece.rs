//! Steps 2 to 4 of a piece, on the compute stream: the framing kernel,
//! the per-column kernels (arrays, fixed-width values, variable-width
//! lengths, scan and copy), the control words read back with the piece's
//! one synchronization, and the Arrow-layout device columns assembled
//! from the outputs.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use arrow_schema::{DataType, Fields};
use cudarc::driver::sys;

use super::{field_of, GpuDecoder, Outcome, Uploaded};
use crate::decode::column_plan::ColPlan;
use crate::kernels::{Kind, Task, TaskKernel, FLAG_CPU, FLAG_ERROR};
use crate::runtime::column::{DeviceColumn, DeviceSlice};
use crate::runtime::cuda::{check, AllocKind, DeviceBuffer, Event};
use crate::runtime::error::GpuError;
use crate::runtime::pinned::PinnedBuffer;

/// Where each control word of a piece is: [0] the framing flag; per
/// column: flag, nulls, element flag, element nulls, flattened arrays.
#[derive(Clone, Copy)]
struct CtrlLayout {
    ncols: usize,
}

impl CtrlLayout {
    fn words(self) -> usize {
        1 + 5 * self.ncols
    }
    fn flag(self, c: usize) -> usize {
        1 + c
    }
    fn nulls(self, c: usize) -> usize {
        1 + self.ncols + c
    }
    fn eflag(self, c: usize) -> usize {
        1 + 2 * self.ncols + c
    }
    fn enulls(self, c: usize) -> usize {
        1 + 3 * self.ncols + c
    }
    fn flat(self, c: usize) -> usize {
        1 + 4 * self.ncols + c
    }
}

/// A piece after its framing kernel: what the column kernels read, and
/// what lives until the piece's synchronization.
struct Framed {
    n: usize,
    /// The input's data pointer shifted down by the piece's first byte:
    /// field offsets are absolute in the chunk, so `data + offset` lands
    /// inside the piece's bytes (wrapping arithmetic on the address is
    /// exact).
    data: u64,
    /// Per-field offsets and lengths, column-major.
    foff: DeviceBuffer,
    flen: DeviceBuffer,
    ctrl: DeviceBuffer,
    layout: CtrlLayout,
    ev0: Event,
    ev_framed: Event,
    ev_done: Event,
    /// Task tables and scratch the kernels read until the piece is done.
    keep: Vec<DeviceBuffer>,
    /// The output slabs, released (their views aside) only after the
    /// piece's synchronization: a plain free would wait for the device.
    slabs: Vec<Carver>,
}

impl Framed {
    /// The device address of control word `i`.
    fn cw(&self, i: usize) -> u64 {
        self.ctrl.ptr() + 4 * i as u64
    }

    /// Column `c`'s field offsets and lengths.
    fn field_ptrs(&self, c: usize) -> (u64, u64) {
        (
            self.foff.ptr() + 4 * (c * self.n) as u64,
            self.flen.ptr() + 4 * (c * self.n) as u64,
        )
    }
}

/// An array column's lists: validity, offsets, and its elements' field
/// offsets and lengths.
struct ListPart {
    col: usize,
    total: u64,
    valid: DeviceBuffer,
    offsets: Option<DeviceBuffer>,
    eoff: Option<DeviceBuffer>,
    elen: Option<DeviceBuffer>,
}

/// Values one value kernel decodes: a top-level column or an array
/// column's elements.
struct Target {
    col: usize,
    element: bool,
    plan: ColPlan,
    n: usize,
    off: u64,
    len: u64,
    nullable: bool,
    data_type: DataType,
}

/// A target's outputs: validity, buffers, and the variable-width lengths
/// and their scan.
struct Out {
    valid: DeviceBuffer,
    bufs: Vec<DeviceBuffer>,
    lens_scratch: Option<DeviceBuffer>,
    incl: Option<DeviceBuffer>,
}

/// The value kernels' tasks, before the variable-width copies know where
/// their values go.
struct ValueTasks {
    outs: Vec<Option<Out>>,
    fixed: Vec<Task>,
    var: Vec<Task>,
    /// The target of each variable-width task.
    var_idx: Vec<usize>,
}

/// Validity bitmap bytes of `m` rows, in whole 32-bit words.
fn words(m: usize) -> usize {
    m.div_ceil(32) * 4
}

/// `b` bytes rounded up to the slab's 256-byte alignment (at least one).
fn align(b: usize) -> usize {
    b.max(1).div_ceil(256) * 256
}

impl GpuDecoder {
    /// Runs the kernels over an uploaded piece.
    pub(super) fn run(&mut self, up: &Uploaded, out_kind: AllocKind) -> Result<Outcome, GpuError> {
        let n = up.rows.len();
        let mut fr = self.frame(up)?;
        let nullable: Vec<bool> = self.schema.columns().iter().map(|c| c.nullable).collect();
        let list_cols: Vec<usize> = (0..self.plans.len())
            .filter(|&c| matches!(self.plans[c], ColPlan::List(_)))
            .collect();
        let Some(lists) = self.list_kernels(&mut fr, &list_cols, &nullable, out_kind)? else {
            return Ok(Outcome::BadData);
        };
        let targets = self.targets(&fr, &lists, &nullable);
        let Some(outs) = self.value_kernels(&mut fr, &targets, out_kind)? else {
            return Ok(Outcome::BadData);
        };
        let layout = fr.layout;
        let ctrl_vals = self.finish(fr, up)?;

        if ctrl_vals[0] & FLAG_ERROR != 0 {
            return Ok(Outcome::BadData);
        }
        let mut redo = Vec::new();
        for c in 0..layout.ncols {
            let f = ctrl_vals[layout.flag(c)] | ctrl_vals[layout.eflag(c)];
            if f & FLAG_ERROR != 0 {
                return Ok(Outcome::BadData);
            }
            if f & FLAG_CPU != 0 {
                redo.push(c);
            }
        }
        let flattened: u64 = list_cols
            .iter()
            .map(|&c| u64::from(ctrl_vals[layout.flat(c)]))
            .sum();
        let mut outputs = self.assemble(n, targets, outs, lists, &ctrl_vals, layout);
        // A column redone on the CPU drops its GPU output.
        for &c in &redo {
            outputs[c] = None;
        }
        Ok(Outcome::Done {
            columns: outputs,
            redo_on_cpu: redo,
            flattened,
        })
    }

    /// Step 2: once the piece's copy is done, the framing kernel writes
    /// every field's offset and length.
    fn frame(&mut self, up: &Uploaded) -> Result<Framed, GpuError> {
        let n = up.rows.len();
        let ncols = self.plans.len();
        let slot = &self.slots[up.slot];
        let Some(dev) = slot.dev.as_ref() else {
            return Err(GpuError::Unsupported {
                device: self.ctx.ordinal,
                what: "input slot without a buffer".into(),
            });
        };
        let data_bytes = (up.hi - up.lo) as usize;
        let data_pad = data_bytes.div_ceil(16) * 16;
        let data = dev.ptr().wrapping_sub(u64::from(up.lo));
        let starts = dev.ptr() + data_pad as u64;
        let ends = starts + 4 * n as u64;
        self.compute.wait(&slot.h2d_done)?;
        let ev0 = Event::new(&self.ctx)?;
        let ev_framed = Event::new(&self.ctx)?;
        let ev_done = Event::new(&self.ctx)?;
        ev0.record(&self.compute)?;
        let fields = n * ncols;
        let foff = self.alloc(4 * fields, AllocKind::Pool)?;
        let flen = self.alloc(4 * fields, AllocKind::Pool)?;
        let layout = CtrlLayout { ncols };
        let ctrl = self.zeroed(4 * layout.words())?;
        self.kernels.frame(
            &self.compute,
            data,
            u64::from(up.hi),
            starts,
            ends,
            n as u32,
            ncols as u32,
            foff.ptr(),
            flen.ptr(),
            ctrl.ptr(),
        )?;
        ev_framed.record(&self.compute)?;
        Ok(Framed {
            n,
            data,
            foff,
            flen,
            ctrl,
            layout,
            ev0,
            ev_framed,
            ev_done,
            keep: Vec::new(),
            slabs: Vec::new(),
        })
    }

    /// Step 3a, array columns: element counts, their scan into list
    /// offsets, and each element's field offset and length. `None` when a
    /// column has more elements than an Arrow list's offsets hold (the CPU
    /// decoder reports it).
    fn list_kernels(
        &mut self,
        fr: &mut Framed,
        list_cols: &[usize],
        nullable: &[bool],
        out_kind: AllocKind,
    ) -> Result<Option<Vec<ListPart>>, GpuError> {
        let n = fr.n;
        let layout = fr.layout;
        let mut lists: Vec<ListPart> = Vec::new();
        if list_cols.is_empty() {
            return Ok(Some(lists));
        }
        let counts = self.alloc(4 * n * list_cols.len(), AllocKind::Pool)?;
        let incl = self.alloc(8 * n * list_cols.len(), AllocKind::Pool)?;
        let mut tasks = Vec::new();
        for (k, &c) in list_cols.iter().enumerate() {
            let valid = self.alloc(words(n), out_kind)?;
            let (o, l) = fr.field_ptrs(c);
            tasks.push(Task {
                off: o,
                len: l,
                out2: fr.cw(layout.flat(c)),
                valid: valid.ptr(),
                aux: counts.ptr() + (4 * k * n) as u64,
                flag: fr.cw(layout.flag(c)),
                nulls: fr.cw(layout.nulls(c)),
                n: n as u32,
                nullable: u32::from(nullable[c]),
                ..Task::default()
            });
            lists.push(ListPart {
                col: c,
                total: 0,
                valid,
                offsets: None,
                eoff: None,
                elen: None,
            });
        }
        self.kernels.tasks(
            TaskKernel::ArrayCount,
            &self.compute,
            fr.data,
            &tasks,
            &mut fr.keep,
        )?;
        self.kernels.scan_u32(
            &self.compute,
            counts.ptr(),
            incl.ptr(),
            n as u64,
            list_cols.len() as u32,
            n as u64,
        )?;
        let last: Vec<u64> = (0..list_cols.len())
            .map(|k| incl.ptr() + 8 * (k * n + n - 1) as u64)
            .collect();
        let totals = self.read_u64s(&last)?;
        let mut etasks = Vec::new();
        for (k, lp) in lists.iter_mut().enumerate() {
            lp.total = totals[k];
            if lp.total > i32::MAX as u64 {
                // Over an Arrow list's offsets: the CPU reports TooLarge.
                return Ok(None);
            }
            let t = lp.total as usize;
            let offsets = self.alloc(4 * (n + 1), out_kind)?;
            let eoff = self.alloc(4 * t, AllocKind::Pool)?;
            let elen = self.alloc(4 * t, AllocKind::Pool)?;
            let (o, l) = fr.field_ptrs(lp.col);
            etasks.push(Task {
                off: o,
                len: l,
                out0: offsets.ptr(),
                out1: eoff.ptr(),
                aux: elen.ptr(),
                aux2: incl.ptr() + (8 * k * n) as u64,
                flag: fr.cw(layout.flag(lp.col)),
                n: n as u32,
                ..Task::default()
            });
            lp.offsets = Some(offsets);
            lp.eoff = Some(eoff);
            lp.elen = Some(elen);
        }
        self.kernels.tasks(
            TaskKernel::ArrayElems,
            &self.compute,
            fr.data,
            &etasks,
            &mut fr.keep,
        )?;
        fr.keep.push(counts);
        fr.keep.push(incl);
        Ok(Some(lists))
    }

    /// The values the value kernels decode: every column with a GPU plan,
    /// array columns as their elements.
    fn targets(&self, fr: &Framed, lists: &[ListPart], nullable: &[bool]) -> Vec<Target> {
        let arrow = self.schema.arrow_schema();
        let mut targets: Vec<Target> = Vec::new();
        for (c, &col_nullable) in nullable.iter().enumerate() {
            let dt = field_of(&arrow, c).data_type().clone();
            match &self.plans[c] {
                ColPlan::Cpu(_) => {}
                ColPlan::List(elem) => {
                    let lp = lists.iter().find(|l| l.col == c);
                    let (Some(lp), DataType::List(item)) = (lp, &dt) else {
                        continue;
                    };
                    let (Some(eo), Some(el)) = (lp.eoff.as_ref(), lp.elen.as_ref()) else {
                        continue;
                    };
                    targets.push(Target {
                        col: c,
                        element: true,
                        plan: (**elem).clone(),
                        n: lp.total as usize,
                        off: eo.ptr(),
                        len: el.ptr(),
                        nullable: true,
                        data_type: item.data_type().clone(),
                    });
                }
                p => {
                    let (o, l) = fr.field_ptrs(c);
                    targets.push(Target {
                        col: c,
                        element: false,
                        plan: p.clone(),
                        n: fr.n,
                        off: o,
                        len: l,
                        nullable: col_nullable,
                        data_type: dt,
                    });
                }
            }
        }
        targets
    }

    /// Step 3b: the fixed-width values, then the variable-width lengths,
    /// their scans and the copies. `None` when a column's values pass
    /// Arrow's 2 GiB per array (the CPU decoder reports it).
    fn value_kernels(
        &mut self,
        fr: &mut Framed,
        targets: &[Target],
        out_kind: AllocKind,
    ) -> Result<Option<Vec<Option<Out>>>, GpuError> {
        let ValueTasks {
            mut outs,
            fixed,
            mut var,
            var_idx,
        } = self.value_tasks(fr, targets, out_kind)?;
        self.kernels.tasks(
            TaskKernel::Fixed,
            &self.compute,
            fr.data,
            &fixed,
            &mut fr.keep,
        )?;
        if var.is_empty() {
            return Ok(Some(outs));
        }
        self.kernels.tasks(
            TaskKernel::VarLengths,
            &self.compute,
            fr.data,
            &var,
            &mut fr.keep,
        )?;
        let mut last = Vec::new();
        for &ti in &var_idx {
            let t = &targets[ti];
            let mut at = 0;
            if let Some(Some(o)) = outs.get(ti) {
                if let (Some(l), Some(i)) = (o.lens_scratch.as_ref(), o.incl.as_ref()) {
                    self.kernels.scan_u32(
                        &self.compute,
                        l.ptr(),
                        i.ptr(),
                        t.n as u64,
                        1,
                        t.n as u64,
                    )?;
                    if t.n > 0 {
                        at = i.ptr() + 8 * (t.n as u64 - 1);
                    }
                }
            }
            last.push(at);
        }
        let nz: Vec<u64> = last.iter().copied().filter(|&a| a != 0).collect();
        let vals = self.read_u64s(&nz)?;
        let totals: Vec<u64> = {
            let mut it = vals.into_iter();
            last.iter()
                .map(|&a| if a != 0 { it.next().unwrap_or(0) } else { 0 })
                .collect()
        };
        if totals.iter().any(|&t| t > i32::MAX as u64) {
            // Over Arrow's 2 GiB per array: the CPU reports TooLarge.
            return Ok(None);
        }
        let values_bytes: usize = totals.iter().map(|&t| align(t as usize)).sum();
        let mut values_slab = Carver::new(Arc::new(self.alloc(values_bytes, out_kind)?));
        for (k, &ti) in var_idx.iter().enumerate() {
            let values = values_slab.carve(totals[k] as usize);
            if let Some(Some(o)) = outs.get_mut(ti) {
                var[k].out0 = o.bufs.first().map_or(0, |b| b.ptr());
                var[k].out1 = values.ptr();
                o.bufs.push(values);
            }
        }
        fr.slabs.push(values_slab);
        self.kernels.tasks(
            TaskKernel::VarCopy,
            &self.compute,
            fr.data,
            &var,
            &mut fr.keep,
        )?;
        Ok(Some(outs))
    }

    /// The value kernels' tasks and outputs. All outputs of the targets
    /// come from one allocation (and the variable-width values from a
    /// second, once their sizes are known): one cuMemAlloc per piece
    /// instead of dozens.
    fn value_tasks(
        &mut self,
        fr: &mut Framed,
        targets: &[Target],
        out_kind: AllocKind,
    ) -> Result<ValueTasks, GpuError> {
        let layout = fr.layout;
        let mut slab_bytes = 0usize;
        for t in targets {
            slab_bytes += align(words(t.n));
            slab_bytes += match &t.plan {
                ColPlan::Fixed {
                    kind: Kind::Bool, ..
                } => align(words(t.n)),
                ColPlan::Fixed {
                    kind: Kind::IntervalStruct,
                    ..
                } => 2 * align(4 * t.n) + align(8 * t.n),
                ColPlan::Fixed { kind, .. } => align(kind.out_width().unwrap_or(16) * t.n),
                ColPlan::Var(_) => align(4 * (t.n + 1)),
                _ => 0,
            };
        }
        let mut slab = Carver::new(Arc::new(self.alloc(slab_bytes, out_kind)?));
        let mut vt = ValueTasks {
            outs: Vec::new(),
            fixed: Vec::new(),
            var: Vec::new(),
            var_idx: Vec::new(),
        };
        for (ti, t) in targets.iter().enumerate() {
            let (flag, nulls) = if t.element {
                (fr.cw(layout.eflag(t.col)), fr.cw(layout.enulls(t.col)))
            } else {
                (fr.cw(layout.flag(t.col)), fr.cw(layout.nulls(t.col)))
            };
            let valid = slab.carve(words(t.n));
            match &t.plan {
                ColPlan::Fixed {
                    kind,
                    precision,
                    scale,
                    round,
                } => {
                    let bufs = match kind {
                        Kind::Bool => vec![slab.carve(words(t.n))],
                        Kind::IntervalStruct => vec![
                            slab.carve(4 * t.n),
                            slab.carve(4 * t.n),
                            slab.carve(8 * t.n),
                        ],
                        k => vec![slab.carve(k.out_width().unwrap_or(16) * t.n)],
                    };
                    vt.fixed.push(Task {
                        off: t.off,
                        len: t.len,
                        out0: bufs[0].ptr(),
                        out1: bufs.get(1).map_or(0, |b| b.ptr()),
                        out2: bufs.get(2).map_or(0, |b| b.ptr()),
                        valid: valid.ptr(),
                        flag,
                        nulls,
                        n: t.n as u32,
                        kind: *kind as u32,
                        nullable: u32::from(t.nullable),
                        precision: *precision,
                        scale: *scale,
                        round: u32::from(*round),
                        ..Task::default()
                    });
                    vt.outs.push(Some(Out {
                        valid,
                        bufs,
                        lens_scratch: None,
                        incl: None,
                    }));
                }
                ColPlan::Var(kind) => {
                    let offsets = slab.carve(4 * (t.n + 1));
                    let lens = self.alloc(4 * t.n, AllocKind::Pool)?;
                    let incl = self.alloc(8 * t.n, AllocKind::Pool)?;
                    vt.var.push(Task {
                        off: t.off,
                        len: t.len,
                        valid: valid.ptr(),
                        aux: lens.ptr(),
                        aux2: incl.ptr(),
                        flag,
                        nulls,
                        n: t.n as u32,
                        kind: *kind as u32,
                        nullable: u32::from(t.nullable),
                        ..Task::default()
                    });
                    vt.var_idx.push(ti);
                    vt.outs.push(Some(Out {
                        valid,
                        bufs: vec![offsets],
                        lens_scratch: Some(lens),
                        incl: Some(incl),
                    }));
                }
                _ => vt.outs.push(None),
            }
        }
        fr.slabs.push(slab);
        Ok(vt)
    }

    /// Step 4: the control words back with the piece's one
    /// synchronization; the piece's scratch is released and its timings
    /// added to the stats.
    fn finish(&mut self, fr: Framed, up: &Uploaded) -> Result<Vec<u32>, GpuError> {
        let ctrl_words = fr.layout.words();
        fr.ev_done.record(&self.compute)?;
        self.slots[up.slot].freed.record(&self.compute)?;
        if self.ctrl_host.capacity() < 4 * ctrl_words {
            self.ctrl_host = PinnedBuffer::new(4 * ctrl_words)?;
        }
        check(
            // SAFETY: the control buffer has ctrl_words u32s; the pinned host
            // buffer has room (checked above).
            unsafe {
                sys::cuMemcpyDtoHAsync_v2(
                    self.ctrl_host.full_mut_ptr() as *mut c_void,
                    fr.ctrl.ptr(),
                    4 * ctrl_words,
                    self.compute.raw,
                )
            },
            "cuMemcpyDtoHAsync",
            self.ctx.ordinal,
        )?;
        self.compute.sync()?;
        let host = self.ctrl_host.full_mut();
        let word =
            |i: usize| u32::from_ne_bytes(host[4 * i..4 * i + 4].try_into().unwrap_or([0; 4]));
        let ctrl_vals: Vec<u32> = (0..ctrl_words).map(word).collect();
        let Framed {
            foff,
            flen,
            ctrl,
            ev0,
            ev_framed,
            ev_done,
            keep,
            slabs,
            ..
        } = fr;
        drop(keep);
        drop(foff);
        drop(flen);
        drop(ctrl);
        drop(slabs);
        let slot = &self.slots[up.slot];
        self.stats.h2d_s += slot.h2d_done.since(&slot.h2d_start)? / 1e3;
        self.stats.frame_s += ev_framed.since(&ev0)? / 1e3;
        self.stats.decode_s += ev_done.since(&ev_framed)? / 1e3;
        self.stats.pieces += 1;
        self.stats.peak_device_bytes = self.ctx.mem.peak();
        Ok(ctrl_vals)
    }

    /// Arrow-layout device columns from the kernels' outputs (`None` for
    /// the columns decoded on the CPU).
    fn assemble(
        &self,
        n: usize,
        targets: Vec<Target>,
        mut outs: Vec<Option<Out>>,
        lists: Vec<ListPart>,
        ctrl_vals: &[u32],
        layout: CtrlLayout,
    ) -> Vec<Option<DeviceColumn>> {
        let mut outputs: Vec<Option<DeviceColumn>> = (0..layout.ncols).map(|_| None).collect();
        let mut elements: HashMap<usize, DeviceColumn> = HashMap::new();
        for (ti, t) in targets.into_iter().enumerate() {
            let Some(o) = outs.get_mut(ti).and_then(Option::take) else {
                continue;
            };
            let nulls = if t.element {
                ctrl_vals[layout.enulls(t.col)]
            } else {
                ctrl_vals[layout.nulls(t.col)]
            } as usize;
            let Some(col) = target_column(&t, o, nulls) else {
                continue;
            };
            if t.element {
                elements.insert(t.col, col);
            } else {
                outputs[t.col] = Some(col);
            }
        }
        let arrow = self.schema.arrow_schema();
        for lp in lists {
            let nulls = ctrl_vals[layout.nulls(lp.col)] as usize;
            let (Some(child), Some(offs)) = (elements.remove(&lp.col), lp.offsets) else {
                continue;
            };
            outputs[lp.col] = Some(DeviceColumn {
                data_type: field_of(&arrow, lp.col).data_type().clone(),
                len: n,
                null_count: nulls,
                validity: (nulls > 0).then(|| DeviceSlice {
                    len: n.div_ceil(8),
                    buffer: lp.valid,
                }),
                buffers: vec![DeviceSlice {
                    len: 4 * (n + 1),
                    buffer: offs,
                }],
                children: vec![child],
            });
        }
        outputs
    }
}

/// The device column of one target's outputs with `nulls` NULLs.
fn target_column(t: &Target, o: Out, nulls: usize) -> Option<DeviceColumn> {
    let validity = (nulls > 0).then(|| DeviceSlice {
        len: t.n.div_ceil(8),
        buffer: o.valid,
    });
    let col = match &t.plan {
        ColPlan::Fixed { kind, .. } => match kind {
            Kind::Bool => {
                let mut bufs = o.bufs;
                let b = bufs.remove(0);
                DeviceColumn {
                    data_type: t.data_type.clone(),
                    len: t.n,
                    null_count: nulls,
                    validity,
                    buffers: vec![DeviceSlice {
                        len: t.n.div_ceil(8),
                        buffer: b,
                    }],
                    children: Vec::new(),
                }
            }
            Kind::IntervalStruct => {
                let fields: Fields = match &t.data_type {
                    DataType::Struct(f) => f.clone(),
                    _ => Fields::empty(),
                };
                let children = o
                    .bufs
                    .into_iter()
                    .enumerate()
                    .map(|(k, b)| DeviceColumn {
                        data_type: fields
                            .get(k)
                            .map_or(DataType::Null, |f| f.data_type().clone()),
                        len: t.n,
                        null_count: 0,
                        validity: None,
                        buffers: vec![DeviceSlice {
                            len: if k == 2 { 8 * t.n } else { 4 * t.n },
                            buffer: b,
                        }],
                        children: Vec::new(),
                    })
                    .collect();
                DeviceColumn {
                    data_type: t.data_type.clone(),
                    len: t.n,
                    null_count: nulls,
                    validity,
                    buffers: Vec::new(),
                    children,
                }
            }
            k => {
                let w = k.out_width().unwrap_or(16);
                DeviceColumn {
                    data_type: t.data_type.clone(),
                    len: t.n,
                    null_count: nulls,
                    validity,
                    buffers: o
                        .bufs
                        .into_iter()
                        .map(|b| DeviceSlice {
                            len: w * t.n,
                            buffer: b,
                        })
                        .collect(),
                    children: Vec::new(),
                }
            }
        },
        ColPlan::Var(_) => {
            let mut bufs = o.bufs.into_iter();
            let (Some(offs), Some(vals)) = (bufs.next(), bufs.next()) else {
                return None;
            };
            let vlen = vals.len();
            DeviceColumn {
                data_type: t.data_type.clone(),
                len: t.n,
                null_count: nulls,
                validity,
                buffers: vec![
                    DeviceSlice {
                        len: 4 * (t.n + 1),
                        buffer: offs,
                    },
                    DeviceSlice {
                        len: vlen,
                        buffer: vals,
                    },
                ],
                children: Vec::new(),
            }
        }
        _ => return None,
    };
    Some(col)
}

/// Hands out 256-byte aligned views of one device allocation.
struct Carver {
    slab: Arc<DeviceBuffer>,
    cursor: usize,
}

impl Carver {
    fn new(slab: Arc<DeviceBuffer>) -> Carver {
        Carver { slab, cursor: 0 }
    }

    /// The next `bytes` (callers sized the slab for every carve).
    fn carve(&mut self, bytes: usize) -> DeviceBuffer {
        let at = self.cursor;
        self.cursor += bytes.max(1).div_ceil(256) * 256;
        debug_assert!(self.cursor <= self.slab.len().max(1).div_ceil(256) * 256);
        DeviceBuffer::view(&self.slab, at, bytes)
    }
}
