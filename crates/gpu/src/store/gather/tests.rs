//! Unit tests of the gather planner (they need its private types): plans,
//! validation, and the kernels' CPU twin (tests/cpu_twin/gather_twin.cpp)
//! run on host memory through `Exec`.

use super::*;

#[path = "../../../tests/common/gather_samples.rs"]
mod samples;

use std::process::Command;
use std::sync::OnceLock;

use arrow_array::builder::StringDictionaryBuilder;
use arrow_array::types::Int8Type;
use arrow_array::{make_array, Array};
use arrow_buffer::Buffer;
use arrow_data::ArrayData;
use arrow_schema::{Field, Fields, Schema};

// -- planning -------------------------------------------------------

fn run(batch: u64, src: u64, dst: u64, len: u64) -> GRun {
    GRun {
        src,
        dst,
        len,
        batch,
    }
}

#[test]
fn runs_are_merged_and_placed() {
    let set = coalesce([
        (0, 10, 5),
        (0, 15, 3), // continues the last: merged
        (0, 0, 0),  // empty: dropped
        (1, 18, 2), // same rows of another batch: not merged
        (1, 0, 4),  // backwards: not merged
        (1, 4, 1),
    ]);
    assert_eq!(
        set,
        vec![run(0, 10, 0, 8), run(1, 18, 8, 2), run(1, 0, 10, 5)]
    );
    assert_eq!(set_total(&set), 15);
    assert_eq!(set_total(&[]), 0);
    // Single rows in descending order stay single.
    let single = coalesce((0..5u64).rev().map(|i| (0, i, 1)));
    assert_eq!(single.len(), 5);
    assert_eq!(single[4], run(0, 0, 4, 1));
}

#[test]
fn offsets_are_rebased_per_run() {
    // Rows 3..5 of batch 0 (offsets 30..52), rows 0..2 of batch 1
    // (offsets 0..7), row 9 of batch 0 (empty value at 90).
    let parent = [run(0, 3, 0, 2), run(1, 0, 2, 2), run(0, 9, 4, 1)];
    let bounds = [30, 52, 0, 7, 90, 90];
    let limit = |b: usize| if b == 0 { 100 } else { 7 };
    let (deltas, total) = child_deltas(&parent, &bounds, &limit, "c").unwrap();
    let parts: Vec<_> = child_parts(&parent, &bounds).collect();
    assert_eq!(parts, vec![(0, 30, 22), (1, 0, 7), (0, 90, 0)]);
    // The child run set: the empty value dropped.
    assert_eq!(coalesce(parts), vec![run(0, 30, 0, 22), run(1, 0, 22, 7)]);
    assert_eq!(total, 29);
    // out = src + delta: the first value of each run lands at the
    // bytes gathered before it.
    assert_eq!(30i64 + deltas[0], 0);
    assert_eq!(deltas[1], 22);
    assert_eq!(90i64 + deltas[2], 29);
    // Wrapping at 32 bits gives the same offsets for i32 buffers.
    let d32 = deltas[0] as u64;
    assert_eq!((31u64.wrapping_add(d32)) as u32, 1);
    // Offsets past the values or decreasing are refused.
    let err = child_deltas(&parent, &[30, 52, 0, 8, 90, 90], &limit, "c").unwrap_err();
    assert!(
        err.contains("source 1 rows 0..2 have offsets 0..8 outside its 7 values"),
        "{err}"
    );
    assert!(child_deltas(&parent, &[52, 30, 0, 7, 90, 90], &limit, "c").is_err());
}

#[test]
fn runs_are_validated() {
    let rows = [10, 3];
    assert_eq!(check_runs(&rows, &[]), Ok(0));
    assert_eq!(
        check_runs(&rows, &[RowRun::new(0, 0, 10), RowRun::new(1, 3, 0)]),
        Ok(10)
    );
    let e = check_runs(&rows, &[RowRun::new(2, 0, 1)]).unwrap_err();
    assert!(e.contains("run 0 names batch 2 of 2"), "{e}");
    let e = check_runs(&rows, &[RowRun::new(0, 0, 1), RowRun::new(1, 2, 2)]).unwrap_err();
    assert!(
        e.contains("run 1: rows 2..2+2 are outside batch 1 of 3 rows"),
        "{e}"
    );
    assert!(check_runs(&rows, &[RowRun::new(0, usize::MAX, 2)]).is_err());
    assert!(check_runs(&rows, &[RowRun::new(1, 4, 0)]).is_err());
}

fn buf(len: usize) -> Buf {
    Buf { addr: 256, len }
}

fn leaf(dt: &DataType, len: usize, buffers: Vec<Buf>) -> SrcCol<'_> {
    SrcCol {
        dt,
        len,
        validity: None,
        buffers,
        children: Vec::new(),
    }
}

#[test]
fn columns_are_validated() {
    let i32t = DataType::Int32;
    let utf8 = DataType::Utf8;
    assert!(check_col(&i32t, &leaf(&i32t, 10, vec![buf(40)]), 10, "a").is_ok());
    let e = check_col(&i32t, &leaf(&i32t, 10, vec![buf(39)]), 10, "a").unwrap_err();
    assert!(e.contains("values buffer of 39 bytes"), "{e}");
    let e = check_col(&utf8, &leaf(&i32t, 10, vec![buf(40)]), 10, "a").unwrap_err();
    assert!(e.contains("has type Int32 instead of Utf8"), "{e}");
    let e = check_col(&i32t, &leaf(&i32t, 9, vec![buf(40)]), 10, "a").unwrap_err();
    assert!(e.contains("has 9 rows, 10 needed"), "{e}");
    let mut v = leaf(&i32t, 10, vec![buf(40)]);
    v.validity = Some(buf(1));
    assert!(check_col(&i32t, &v, 10, "a")
        .unwrap_err()
        .contains("validity bitmap"));
    assert!(check_col(&utf8, &leaf(&utf8, 10, vec![buf(44), buf(0)]), 10, "s").is_ok());
    assert!(check_col(&utf8, &leaf(&utf8, 10, vec![buf(40), buf(0)]), 10, "s").is_err());
    assert!(check_col(&utf8, &leaf(&utf8, 10, vec![buf(44)]), 10, "s").is_err());
    // An empty string column may have no offsets at all.
    assert!(check_col(&utf8, &leaf(&utf8, 0, vec![buf(0), buf(0)]), 0, "s").is_ok());
    let null = DataType::Null;
    let e = check_col(&null, &leaf(&null, 1, vec![]), 1, "n").unwrap_err();
    assert!(e.contains("type Null is not supported"), "{e}");
    // Children: a struct's fields need its rows, a fixed-size list's
    // child size times them.
    let st = DataType::Struct(Fields::from(vec![Field::new("x", DataType::Int16, true)]));
    let i16t = DataType::Int16;
    let mut s = leaf(&st, 4, vec![]);
    s.children = vec![leaf(&i16t, 3, vec![buf(6)])];
    let e = check_col(&st, &s, 4, "st").unwrap_err();
    assert!(e.contains("column st.0 has 3 rows, 4 needed"), "{e}");
    let fsl = DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Int16, true)), 3);
    let mut f = leaf(&fsl, 4, vec![]);
    f.children = vec![leaf(&i16t, 12, vec![buf(24)])];
    assert!(check_col(&fsl, &f, 4, "f").is_ok());
    f.children = vec![leaf(&i16t, 11, vec![buf(24)])];
    assert!(check_col(&fsl, &f, 4, "f").is_err());
}

#[test]
fn shapes_of_every_decoded_type() {
    use arrow_schema::{IntervalUnit, TimeUnit};
    let item = |t: DataType| Arc::new(Field::new("item", t, true));
    for (dt, want) in [
        (DataType::Boolean, Shape::Bool),
        (DataType::Int16, Shape::Fixed(2)),
        (DataType::UInt32, Shape::Fixed(4)),
        (DataType::Date32, Shape::Fixed(4)),
        (DataType::Time64(TimeUnit::Microsecond), Shape::Fixed(8)),
        (
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Shape::Fixed(8),
        ),
        (
            DataType::Interval(IntervalUnit::MonthDayNano),
            Shape::Fixed(16),
        ),
        (DataType::Decimal128(38, 10), Shape::Fixed(16)),
        (DataType::FixedSizeBinary(16), Shape::Fixed(16)),
        (DataType::Utf8, Shape::Bytes(4)),
        (DataType::LargeBinary, Shape::Bytes(8)),
        (DataType::List(item(DataType::Utf8)), Shape::List(4)),
        (DataType::LargeList(item(DataType::Int8)), Shape::List(8)),
        (
            DataType::FixedSizeList(item(DataType::Int8), 3),
            Shape::FixedList(3),
        ),
        (
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            Shape::Dict {
                width: 4,
                signed: true,
            },
        ),
        (
            DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::Utf8)),
            Shape::Dict {
                width: 1,
                signed: false,
            },
        ),
    ] {
        assert_eq!(shape_of(&dt), Some(want), "{dt}");
    }
    assert_eq!(shape_of(&DataType::Null), None);
    assert_eq!(shape_of(&DataType::Utf8View), None);
}

#[test]
fn kernel_structs_and_constants_match_the_source() {
    let src = crate::kernels::GATHER_SOURCE;
    let fields = |name: &str| -> Vec<String> {
        let at = src.find(&format!("struct {name} {{")).expect(name);
        let body = &src[at..at + src[at..].find("};").expect("end")];
        body.lines()
            .skip(1)
            .filter_map(|l| {
                let l = l.trim();
                let decl = l.strip_prefix("u64 ")?;
                Some(decl.split(';').next()?.trim().to_string())
            })
            .collect()
    };
    assert_eq!(fields("GRun"), ["src", "dst", "len", "batch"]);
    assert_eq!(
        fields("GTask"),
        ["runs", "nruns", "srcs", "aux", "dst", "total", "tail", "start", "width", "flags"]
    );
    let t = GTask {
        runs: 1,
        nruns: 2,
        srcs: 3,
        aux: 4,
        dst: 5,
        total: 6,
        tail: 7,
        start: 8,
        width: 9,
        flags: 10,
    };
    assert_eq!(t.words(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    for (name, v) in [
        ("COPY_TILE", COPY_TILE),
        ("REBASE_TILE", REBASE_TILE),
        ("BITS_UNIT", BITS_UNIT),
        ("FLAG_TAIL", FLAG_TAIL),
    ] {
        assert!(
            src.contains(&format!("#define {name} {v}ull")),
            "{name} = {v} in gather.cu"
        );
    }
    assert!(src.contains("#define NO_COUNTER 0xffffffffffffffffull"));
}

#[test]
fn work_units_and_carving() {
    let spec = |kernel, total, width, tail| Spec {
        kernel,
        set: 0,
        srcs: Vec::new(),
        aux: Aux::None,
        dst: 0,
        total,
        tail,
        width,
    };
    assert_eq!(spec(GatherKernel::Copy, 4096, 4, None).units(1), 1);
    assert_eq!(spec(GatherKernel::Copy, 4097, 4, None).units(1), 2);
    assert_eq!(spec(GatherKernel::Bits, 1025, 0, None).units(1), 2);
    assert_eq!(spec(GatherKernel::Rebase, 0, 4, None).units(0), 0);
    // The tail of an empty offsets buffer is still written.
    assert_eq!(spec(GatherKernel::Rebase, 0, 4, Some(0)).units(0), 1);
    assert_eq!(spec(GatherKernel::Rebase, 4097, 4, Some(9)).units(3), 2);
    assert_eq!(spec(GatherKernel::Fetch, 0, 4, None).units(7), 7);
    let mut p = Planner {
        device: 0,
        nsrc: 2,
        sets: Vec::new(),
        users: Vec::new(),
        nodes: Vec::new(),
        specs: Vec::new(),
        cursor: 0,
        counters: 0,
        scratch: Scratch::default(),
    };
    // A set's users: the batches in order of first use.
    let set = p.add_set(vec![run(1, 0, 0, 2), run(0, 5, 2, 1), run(1, 9, 3, 1)]);
    assert_eq!(p.users[set], vec![1, 0]);
    assert_eq!(p.carve(0), 0);
    assert_eq!(p.carve(257), 256);
    assert_eq!(p.carve(256), 768);
    assert_eq!(p.cursor, 1024);
}

// -- sample batches ---------------------------------------------------

use samples::{patterns, sample};

/// The reference of the reference: arrow's `interleave`, row by row.
fn interleaved(sources: &[RecordBatch], runs: &[RowRun]) -> Vec<ArrayRef> {
    let idx: Vec<(usize, usize)> = runs
        .iter()
        .flat_map(|r| (r.start..r.start + r.len).map(move |i| (r.batch, i)))
        .collect();
    (0..sources[0].num_columns())
        .map(|c| {
            let arrays: Vec<&dyn Array> = sources.iter().map(|b| b.column(c).as_ref()).collect();
            arrow_select::interleave::interleave(&arrays, &idx).expect("interleave")
        })
        .collect()
}

#[test]
fn host_gather_matches_interleave() {
    let sources = [sample(80, 1, 0.2), sample(64, 2, 0.0)];
    for (name, runs) in patterns(&[80, 64], 3) {
        let got = gather_rows_host(&sources, &runs).unwrap();
        let want: usize = runs.iter().map(|r| r.len).sum();
        assert_eq!(got.num_rows(), want, "{name}");
        if want == 0 {
            continue;
        }
        for (c, w) in interleaved(&sources, &runs).iter().enumerate() {
            assert_eq!(
                got.column(c).to_data(),
                w.to_data(),
                "{name}: column {}",
                got.schema().field(c).name()
            );
        }
    }
}

#[test]
fn host_gather_errors() {
    let a = sample(10, 1, 0.2);
    let e = gather_rows_host(std::slice::from_ref(&a), &[RowRun::new(0, 5, 6)]).unwrap_err();
    assert!(e.to_string().contains("outside batch 0 of 10 rows"), "{e}");
    let e = gather_rows_host(std::slice::from_ref(&a), &[RowRun::new(1, 0, 1)]).unwrap_err();
    assert!(e.to_string().contains("names batch 1 of 1"), "{e}");
    assert!(gather_rows_host(&[], &[]).is_err());
    let other = a.project(&[0, 1]).unwrap();
    let e = gather_rows_host(&[a, other], &[]).unwrap_err();
    assert!(e.to_string().contains("another schema"), "{e}");
}

// -- the kernels' CPU twin -------------------------------------------

type TwinFn = unsafe extern "C" fn(u32, *mut u8, *mut u8, u64, u32, u64, u32, u32);

/// kernels/gather.cu compiled as C++ into a shared library
/// (tests/cpu_twin/gather_twin.cpp: each thread run after the other), or
/// why not (no C++ compiler).
fn twin() -> Result<TwinFn, String> {
    static LIB: OnceLock<Result<(libloading::Library, TwinFn), String>> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gpupg-gather-twin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/cpu_twin/gather_twin.cpp"
        );
        let lib = dir.join("libgather_twin.so");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let out = Command::new(&cxx)
            .args([
                "-std=c++17",
                "-O1",
                "-fno-strict-aliasing",
                "-shared",
                "-fPIC",
                "-o",
            ])
            .arg(&lib)
            .arg(src)
            .output()
            .map_err(|e| format!("cannot run {cxx}: {e}"))?;
        assert!(
            out.status.success(),
            "compiling the gather kernels as C++ failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // SAFETY: our own library, whose initializers do nothing; the
        // symbol has exactly TwinFn's signature (see gather_twin.cpp).
        unsafe {
            let l = libloading::Library::new(&lib).map_err(|e| e.to_string())?;
            let f: TwinFn = *l
                .get::<TwinFn>(b"gather_twin_launch\0")
                .map_err(|e| e.to_string())?;
            // Loaded: the files are no longer needed.
            let _ = std::fs::remove_dir_all(&dir);
            Ok((l, f))
        }
    })
    .as_ref()
    .map(|(_, f)| *f)
    .map_err(|e| e.clone())
}

/// [`Exec`] on host memory with the twin: 3 blocks of 2 warps, so the
/// grid-stride loops turn.
struct TwinExec {
    f: TwinFn,
    fetches: usize,
    runs: usize,
}

impl TwinExec {
    fn call(&self, l: Launch, tab: &mut [u64], out: *mut u8) {
        let k = match l.kernel {
            GatherKernel::Copy => 0,
            GatherKernel::Bits => 1,
            GatherKernel::Rebase => 2,
            GatherKernel::Fetch => 3,
        };
        // SAFETY: the table and output are host memory laid out as the
        // plan says (the twin's addresses are host pointers).
        unsafe {
            (self.f)(
                k,
                tab.as_mut_ptr() as *mut u8,
                out,
                l.tasks_at,
                l.ntasks,
                l.nunits,
                3,
                64,
            )
        }
    }
}

impl Exec for TwinExec {
    type Slab = Vec<u64>;

    fn fetch(&mut self, table: &Table, l: Launch, out: &mut Vec<u64>) -> Result<(), GpuError> {
        self.fetches += 1;
        let mut tab = table.words.clone();
        out.clear();
        out.resize(2 * l.nunits as usize, 0);
        self.call(l, &mut tab, out.as_mut_ptr() as *mut u8);
        Ok(())
    }

    fn run(
        &mut self,
        table: &Table,
        slab_bytes: usize,
        launches: &[Launch],
        counters_at: u64,
        ncounters: usize,
    ) -> Result<(Vec<u64>, Vec<u64>), GpuError> {
        self.runs += 1;
        let mut tab = table.words.clone();
        // Poisoned: bytes the kernels do not write show up.
        let mut slab = vec![0xa5a5_a5a5_a5a5_a5a5u64; slab_bytes.div_ceil(8)];
        for l in launches {
            self.call(*l, &mut tab, slab.as_mut_ptr() as *mut u8);
        }
        let c0 = counters_at as usize / 8;
        Ok((slab, tab[c0..c0 + ncounters].to_vec()))
    }
}

/// Host copies of source buffers standing in for device memory, each at
/// a chosen misalignment (offsets and keys stay aligned, as the kernels
/// require).
#[derive(Default)]
struct HostMem {
    blocks: Vec<Vec<u64>>,
}

impl HostMem {
    fn put(&mut self, bytes: &[u8], mis: usize) -> Buf {
        // Two spare words: aligned reads of a word holding the last byte
        // stay inside, as on the device.
        let mut v = vec![0u64; (bytes.len() + mis).div_ceil(8) + 2];
        let p = v.as_mut_ptr() as *mut u8;
        // SAFETY: v has room for mis + bytes.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(mis), bytes.len()) };
        self.blocks.push(v);
        Buf {
            addr: p as u64 + mis as u64,
            len: bytes.len(),
        }
    }

    fn col<'a>(&mut self, d: &'a ArrayData, mis: usize) -> SrcCol<'a> {
        assert_eq!(d.offset(), 0, "sources start at offset 0, as on the device");
        let validity = d
            .nulls()
            .filter(|n| n.null_count() > 0)
            .map(|n| self.put(n.validity(), mis));
        let shape = shape_of(d.data_type()).expect("supported");
        let buffers = d
            .buffers()
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let aligned = i == 0
                    && matches!(shape, Shape::Bytes(_) | Shape::List(_) | Shape::Dict { .. });
                self.put(b.as_slice(), if aligned { 0 } else { mis })
            })
            .collect();
        SrcCol {
            dt: d.data_type(),
            len: d.len(),
            validity,
            buffers,
            children: d.child_data().iter().map(|c| self.col(c, mis)).collect(),
        }
    }
}

fn host_array(nodes: &[OutNode], i: usize, slab: &[u8], counters: &[u64]) -> ArrayData {
    let n = &nodes[i];
    let take = |(at, len): (usize, usize)| Buffer::from_slice_ref(&slab[at..at + len]);
    let null_count = n.validity.map_or(0, |(_, _, k)| counters[k] as usize);
    ArrayData::builder(n.data_type.clone().expect("planned"))
        .len(n.len)
        .null_count(null_count)
        .null_bit_buffer(
            n.validity
                .filter(|_| null_count > 0)
                .map(|(at, len, _)| take((at, len))),
        )
        .buffers(n.buffers.iter().map(|&b| take(b)).collect())
        .child_data(
            n.children
                .iter()
                .map(|&c| host_array(nodes, c, slab, counters))
                .collect(),
        )
        .build()
        .expect("a valid array")
}

/// The whole device path (validation, planning, tables, the kernels'
/// logic) on host memory.
fn twin_gather(
    f: TwinFn,
    sources: &[RecordBatch],
    runs: &[RowRun],
    mis: usize,
    scratch: &mut Scratch,
) -> Result<(RecordBatch, TwinExec, Plan), GpuError> {
    let datas: Vec<Vec<ArrayData>> = sources
        .iter()
        .map(|b| b.columns().iter().map(|a| a.to_data()).collect())
        .collect();
    let mut mem = HostMem::default();
    let columns: Vec<Vec<SrcCol<'_>>> = datas
        .iter()
        .map(|b| b.iter().map(|d| mem.col(d, mis)).collect())
        .collect();
    let schemas: Vec<SchemaRef> = sources.iter().map(|b| b.schema()).collect();
    let shapes: Vec<(&SchemaRef, usize)> = schemas
        .iter()
        .zip(sources)
        .map(|(s, b)| (s, b.num_rows()))
        .collect();
    let schema = schemas[0].clone();
    let rows = check_sources(0, &schema, &shapes, &columns, runs)?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut exec = TwinExec {
        f,
        fetches: 0,
        runs: 0,
    };
    let mut plan = plan(0, &columns, &names, runs, &mut exec, scratch)?;
    let (slab, counters) = exec.run(
        &plan.table,
        plan.slab_bytes,
        &plan.launches,
        plan.counters_at,
        plan.ncounters,
    )?;
    // SAFETY: u64 words viewed as their bytes.
    let bytes = unsafe { std::slice::from_raw_parts(slab.as_ptr() as *const u8, slab.len() * 8) };
    let arrays: Vec<ArrayRef> = plan
        .roots
        .iter()
        .map(|&i| {
            let d = host_array(&plan.nodes, i, bytes, &counters);
            // Arrow's rule, as the decoder's: no bitmap without NULLs.
            assert_eq!(d.nulls().is_some(), d.null_count() > 0);
            make_array(d)
        })
        .collect();
    let batch = RecordBatch::try_new_with_options(
        schema,
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .expect("batch");
    // Reused by the next gather, as a Gatherer does.
    scratch.table = std::mem::take(&mut plan.table.words);
    Ok((batch, exec, plan))
}

fn assert_same(got: &RecordBatch, want: &RecordBatch, what: &str) {
    assert_eq!(got.schema(), want.schema(), "{what}");
    assert_eq!(got.num_rows(), want.num_rows(), "{what}");
    for c in 0..got.num_columns() {
        let (g, w) = (got.column(c), want.column(c));
        if g.to_data() != w.to_data() {
            let first = (0..g.len()).find(|&r| g.slice(r, 1).to_data() != w.slice(r, 1).to_data());
            panic!(
                "{what}: column {} differs at row {first:?}: {:?} vs {:?}",
                got.schema().field(c).name(),
                first.map(|r| g.slice(r, 1)),
                first.map(|r| w.slice(r, 1))
            );
        }
    }
}

#[test]
fn twin_gathers_every_layout() {
    let f = match twin() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    // Batch 0 with NULLs everywhere, batch 1 without a single bitmap.
    let sources = [sample(80, 1, 0.2), sample(64, 2, 0.0)];
    let mut scratch = Scratch::default();
    let sparse = sources[0].schema().index_of("sparse").unwrap();
    for mis in [0, 1, 3, 6] {
        for (name, runs) in patterns(&[80, 64], 3 + mis as u64) {
            let what = format!("{name} (sources misaligned by {mis})");
            let want = gather_rows_host(&sources, &runs).unwrap();
            let (got, exec, plan) = twin_gather(f, &sources, &runs, mis, &mut scratch)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_same(&got, &want, &what);
            // Strings and lists nested two deep: at most two fetches.
            assert!(exec.fetches <= 2, "{what}: {} fetches", exec.fetches);
            assert!(plan.launches.len() <= 3);
            if name == "drop nulls" {
                assert_eq!(got.column(sparse).null_count(), 0);
                assert!(got.column(sparse).nulls().is_none(), "{what}");
            }
        }
    }
    // Only the batch without NULLs (past its sparse column's two):
    // one bitmap gathered (sparse's, found NULL-free), none kept.
    let (got, _, plan) =
        twin_gather(f, &sources, &[RowRun::new(1, 38, 20)], 0, &mut scratch).unwrap();
    assert!(got.columns().iter().all(|c| c.nulls().is_none()));
    assert_eq!(plan.ncounters, 1);
}

#[test]
fn twin_large_runs_cross_tiles() {
    let f = match twin() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    // Enough rows for several copy tiles (16 KiB) and rebase tiles
    // (4096 elements) per run, runs at odd rows.
    let sources = [sample(9000, 7, 0.1), sample(7000, 8, 0.1)];
    let mut scratch = Scratch::default();
    let runs = vec![
        RowRun::new(0, 1, 8190),
        RowRun::new(1, 13, 5000),
        RowRun::new(0, 8191, 809),
        RowRun::new(1, 0, 13),
    ];
    for mis in [0, 5] {
        let want = gather_rows_host(&sources, &runs).unwrap();
        let (got, _, plan) = twin_gather(f, &sources, &runs, mis, &mut scratch).unwrap();
        assert_same(&got, &want, &format!("large runs, misaligned by {mis}"));
        assert_eq!(plan.runs, 4);
    }
}

#[test]
fn twin_checks_offsets_before_writing() {
    let f = match twin() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    // Offsets past the values (a corrupt source): refused after the
    // fetch, before the copy kernels run.
    let offsets = Buffer::from_slice_ref([0i32, 3, 9]);
    let values = Buffer::from_slice_ref(b"abcdef");
    // SAFETY: deliberately invalid (offset 9 > 6 bytes) and never read
    // as a string array.
    let bad_data = unsafe {
        ArrayData::builder(DataType::Utf8)
            .len(2)
            .buffers(vec![offsets, values])
            .build_unchecked()
    };
    let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
    let mut mem = HostMem::default();
    let columns = vec![vec![mem.col(&bad_data, 0)]];
    let shapes = [(&schema, 2usize)];
    let runs = [RowRun::new(0, 0, 2)];
    check_sources(0, &schema, &shapes, &columns, &runs).unwrap();
    let mut exec = TwinExec {
        f,
        fetches: 0,
        runs: 0,
    };
    match plan(
        0,
        &columns,
        &["s".into()],
        &runs,
        &mut exec,
        &mut Scratch::default(),
    ) {
        Err(GpuError::Layout { column, what }) => {
            assert_eq!(column, "s");
            assert!(what.contains("offsets 0..9 outside its 6 values"), "{what}");
        }
        other => panic!("expected a layout error, got {other:?}"),
    }
    assert_eq!((exec.fetches, exec.runs), (1, 0));
    // Run 0..1 alone is fine.
    let runs = [RowRun::new(0, 0, 1)];
    assert!(plan(
        0,
        &columns,
        &["s".into()],
        &runs,
        &mut exec,
        &mut Scratch::default()
    )
    .is_ok());
}

#[test]
fn dictionaries_are_concatenated_within_key_room() {
    let f = match twin() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    // Int8 keys: 100 + 100 labels fit no more than 128 values.
    let dict = |seed: u64| -> RecordBatch {
        let mut b = StringDictionaryBuilder::<Int8Type>::new();
        for i in 0..100 {
            b.append_value(format!("v{seed}-{i}"));
        }
        let a = b.finish();
        let schema = Schema::new(vec![Field::new("d", a.data_type().clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(a)]).unwrap()
    };
    let sources = [dict(0), dict(1)];
    // One source used: its dictionary as it is.
    let runs = [RowRun::new(1, 10, 20), RowRun::new(1, 50, 3)];
    let (got, _, _) = twin_gather(f, &sources, &runs, 0, &mut Scratch::default()).unwrap();
    assert_same(
        &got,
        &gather_rows_host(&sources, &runs).unwrap(),
        "one dictionary",
    );
    let runs = [RowRun::new(1, 10, 20), RowRun::new(0, 50, 3)];
    match twin_gather(f, &sources, &runs, 0, &mut Scratch::default()) {
        Err(GpuError::Unsupported { what, .. }) => {
            assert!(
                what.contains("200 values, more than its 1-byte keys"),
                "{what}"
            )
        }
        other => panic!("expected the key room error, got {:?}", other.map(|r| r.0)),
    }
}

#[test]
fn sources_are_validated_before_planning() {
    let a = sample(10, 1, 0.2);
    let schema = a.schema();
    let datas: Vec<ArrayData> = a.columns().iter().map(|c| c.to_data()).collect();
    let mut mem = HostMem::default();
    let cols: Vec<SrcCol<'_>> = datas.iter().map(|d| mem.col(d, 0)).collect();
    let columns = vec![cols];
    let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int8, true)]));
    let e = check_sources(3, &schema, &[(&other, 10)], &columns, &[]).unwrap_err();
    assert!(e.to_string().contains("another schema"), "{e}");
    let e = check_sources(3, &schema, &[(&schema, 11)], &columns, &[]).unwrap_err();
    assert!(e.to_string().contains("has 10 rows, 11 needed"), "{e}");
    let e = check_sources(
        3,
        &schema,
        &[(&schema, 10)],
        &columns,
        &[RowRun::new(0, 9, 2)],
    )
    .unwrap_err();
    match e {
        GpuError::Unsupported { device, what } => {
            assert_eq!(device, 3);
            assert!(what.starts_with("gather: run 0"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}
