//! Heap pages on the GPU: what the page kernels (`kernels/heap.cu`) need
//! to know of a table ([`PageLayout`], built from the format crate's
//! `TupleLayout`), in the `#[repr(C)]` form they read.
//!
//! The kernels convert the common forms of values (those of
//! [`SendForm`] other than `Other`, jsonb and arrays of the other forms
//! included; of `Varlena`, also values compressed inline with pglz or LZ4)
//! into binary COPY rows, byte for byte what
//! `gpupg_format::heap::transcode_page` writes; a page holding anything
//! else (another compressed value, an out-of-line value, a compressed
//! array element, a jsonb nested deeper than the kernels follow) is
//! flagged and left to that CPU converter. Layouts that output an array take the kernels' array
//! variants ([`PageLayout::has_arrays`]), which need more registers.

use std::sync::atomic::{AtomicU64, Ordering};

use gpupg_format::heap::{SendForm, TupleLayout};

/// Most attributes the page kernels deform per tuple (a per-thread array).
pub const MAX_GPU_ATTRIBUTES: usize = 64;

/// Threads per block of the page kernels (one block per page).
pub(crate) const PAGE_THREADS: u32 = 128;

/// `HF_ARRAY` in kernels/heap.cu.
const HF_ARRAY: u8 = 13;

/// `HF_*` in kernels/heap.cu.
fn form_code(f: SendForm) -> u8 {
    match f {
        SendForm::Dropped | SendForm::Other => 0,
        SendForm::Bool => 1,
        SendForm::Swap(2) => 2,
        SendForm::Swap(4) => 3,
        SendForm::Swap(_) => 4,
        SendForm::Interval => 5,
        SendForm::Raw => 6,
        SendForm::Varlena => 7,
        SendForm::NulPadded => 8,
        SendForm::CString => 9,
        SendForm::Numeric => 10,
        SendForm::Enum => 11,
        SendForm::Jsonb => 12,
        SendForm::Array => HF_ARRAY,
    }
}

/// One attribute, `struct HeapAttr` in kernels/heap.cu.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct HeapAttr {
    pub attlen: i16,
    pub align_mask: u8,
    pub form: u8,
    /// -1: the missing value is NULL.
    pub missing_len: i32,
    pub missing_off: u32,
    /// An array's elements (`form` 13): their form, alignment mask and
    /// typlen; zero otherwise.
    pub elem_form: u8,
    pub elem_align_mask: u8,
    pub elem_typlen: i16,
}

/// Kernel arguments, `struct HeapArgs` in kernels/heap.cu.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct HeapArgs {
    pub pages: u64,
    pub page_at: u64,
    pub slot_base: u64,
    pub attrs: u64,
    pub outputs: u64,
    pub missing: u64,
    pub enum_oids: u64,
    pub enum_off: u64,
    pub enum_blob: u64,
    pub row_len: u64,
    pub incl: u64,
    pub out: u64,
    pub starts: u64,
    pub ends: u64,
    pub flagged: u64,
    /// With data checksums, each page's block number (the kernel verifies
    /// the checksums); 0: not verified.
    pub check_blocks: u64,
    pub npages: u32,
    pub nslots: u32,
    pub block_size: u32,
    pub natts: u32,
    pub nout: u32,
    pub nenum: u32,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A table's tuple layout as the page kernels read it. Built once per
/// relation; each decoder uploads it once ([`PageLayout::id`] keys its
/// cache).
#[derive(Debug, Clone)]
pub struct PageLayout {
    id: u64,
    pub(crate) block_size: usize,
    pub(crate) attrs: Vec<HeapAttr>,
    pub(crate) outputs: Vec<u16>,
    pub(crate) missing: Vec<u8>,
    pub(crate) enum_oids: Vec<u32>,
    /// `enum_oids.len() + 1` offsets into `enum_blob`.
    pub(crate) enum_off: Vec<u32>,
    pub(crate) enum_blob: Vec<u8>,
    /// The cluster has data checksums: the kernels verify them.
    pub(crate) checksums: bool,
}

impl PageLayout {
    /// The kernels' form of `layout`, or why its pages are converted on the
    /// CPU instead (a column of a form the kernels do not convert, such as
    /// a type without a converter, or too many attributes).
    pub fn new(layout: &TupleLayout) -> Result<PageLayout, String> {
        let natts = layout.deform_natts();
        if natts > MAX_GPU_ATTRIBUTES {
            return Err(format!(
                "{natts} attributes to deform, more than the GPU page kernels' {MAX_GPU_ATTRIBUTES}"
            ));
        }
        let attributes = layout.attributes();
        let mut attrs = Vec::with_capacity(natts);
        let mut missing = Vec::new();
        for (i, a) in attributes.iter().take(natts).enumerate() {
            let form = layout.send_form(i).unwrap_or(SendForm::Other);
            let elem = layout.array_element(i);
            let (missing_len, missing_off) = match &a.missing {
                Some(b) => {
                    let off = missing.len() as u32;
                    missing.extend_from_slice(b);
                    (
                        i32::try_from(b.len()).map_err(|_| "a missing value over 2 GiB")?,
                        off,
                    )
                }
                None => (-1, 0),
            };
            attrs.push(HeapAttr {
                attlen: a.attlen,
                align_mask: (a.align.bytes() - 1) as u8,
                form: form_code(form),
                missing_len,
                missing_off,
                elem_form: elem.map_or(0, |e| form_code(e.form)),
                elem_align_mask: elem.map_or(0, |e| (e.align.bytes() - 1) as u8),
                elem_typlen: elem.map_or(0, |e| e.typlen),
            });
        }
        let mut outputs = Vec::with_capacity(layout.output().len());
        for &o in layout.output() {
            let form = layout.send_form(o).unwrap_or(SendForm::Other);
            if matches!(form, SendForm::Other | SendForm::Dropped) {
                let what = attributes
                    .get(o)
                    .and_then(|a| a.pg_type.as_ref())
                    .map_or_else(|| "a type".to_string(), |t| t.to_string());
                return Err(format!(
                    "attribute {} ({what}) has no GPU page conversion",
                    o + 1
                ));
            }
            outputs.push(o as u16);
        }
        let labels = layout.enum_labels();
        let mut enum_oids = Vec::with_capacity(labels.len());
        let mut enum_off = Vec::with_capacity(labels.len() + 1);
        let mut enum_blob = Vec::new();
        enum_off.push(0);
        for (oid, label) in labels {
            enum_oids.push(oid);
            enum_blob.extend_from_slice(label);
            enum_off.push(
                u32::try_from(enum_blob.len()).map_err(|_| "enum labels over 4 GiB".to_string())?,
            );
        }
        Ok(PageLayout {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            block_size: layout.block_size(),
            attrs,
            outputs,
            missing,
            enum_oids,
            enum_off,
            enum_blob,
            checksums: layout.verifies_checksums(),
        })
    }

    /// Whether the kernels verify the pages' checksums (the cluster has
    /// data checksums).
    pub fn checksums(&self) -> bool {
        self.checksums
    }

    /// Whether an output column is an array: the kernels' array variants
    /// convert its pages.
    pub fn has_arrays(&self) -> bool {
        self.outputs.iter().any(|&o| {
            self.attrs
                .get(usize::from(o))
                .is_some_and(|a| a.form == HF_ARRAY)
        })
    }

    /// Identifies this layout in the decoders' caches.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes per heap page (PostgreSQL's `BLCKSZ`).
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The tables the kernels read, in their byte layout: attrs, outputs,
    /// missing values, enum OIDs, enum label offsets, enum labels (public
    /// for the CPU twin of the kernels in the tests).
    pub fn kernel_tables(&self) -> [Vec<u8>; 6] {
        let attrs: Vec<u8> = self
            .attrs
            .iter()
            .flat_map(|a| {
                let mut b = [0u8; 16];
                b[0..2].copy_from_slice(&a.attlen.to_ne_bytes());
                b[2] = a.align_mask;
                b[3] = a.form;
                b[4..8].copy_from_slice(&a.missing_len.to_ne_bytes());
                b[8..12].copy_from_slice(&a.missing_off.to_ne_bytes());
                b[12] = a.elem_form;
                b[13] = a.elem_align_mask;
                b[14..16].copy_from_slice(&a.elem_typlen.to_ne_bytes());
                b
            })
            .collect();
        [
            attrs,
            self.outputs.iter().flat_map(|v| v.to_ne_bytes()).collect(),
            self.missing.clone(),
            self.enum_oids
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect(),
            self.enum_off.iter().flat_map(|v| v.to_ne_bytes()).collect(),
            self.enum_blob.clone(),
        ]
    }

    /// Attributes deformed per tuple, and output columns.
    pub fn counts(&self) -> (usize, usize) {
        (self.attrs.len(), self.outputs.len())
    }

    /// Enum labels known to the layout.
    pub fn enum_count(&self) -> usize {
        self.enum_oids.len()
    }

    /// [`Self::kernel_tables`] as one blob of 16-byte aligned parts, and
    /// the offset of each part.
    pub(crate) fn blob(&self) -> (Vec<u8>, [usize; 6]) {
        let mut blob = Vec::new();
        let mut at = [0usize; 6];
        for (k, part) in self.kernel_tables().iter().enumerate() {
            blob.resize(blob.len().next_multiple_of(16), 0);
            at[k] = blob.len();
            blob.extend_from_slice(part);
        }
        blob.resize(blob.len().next_multiple_of(16).max(16), 0);
        (blob, at)
    }
}

/// Line pointers of each page (`(pd_lower - 24) / 4`, 0 for a header that
/// makes no sense: the kernel then flags the page) and their running sum:
/// `npages + 1` slot bases.
pub fn slot_bases(data: &[u8], pages: &[u32], block_size: usize) -> Vec<u32> {
    slot_bases_of_headers(data, block_size, pages, block_size)
}

/// As [`slot_bases`], from the pages' headers `stride` bytes apart in
/// `headers` (the whole pages, or headers copied back from the device).
pub fn slot_bases_of_headers(
    headers: &[u8],
    stride: usize,
    pages: &[u32],
    block_size: usize,
) -> Vec<u32> {
    let mut bases = Vec::with_capacity(pages.len() + 1);
    let mut total = 0u32;
    bases.push(0);
    for &p in pages {
        let at = p as usize * stride;
        let lower = headers
            .get(at + 12..at + 14)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
        let n = if lower >= 24 && (lower - 24) % 4 == 0 && lower <= block_size {
            (lower - 24) / 4
        } else {
            0
        };
        total += n as u32;
        bases.push(total);
    }
    bases
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpupg_format::heap::{Align, AttributeDesc, ElementDesc};
    use gpupg_format::PgType;
    use std::collections::HashMap;

    #[test]
    fn structs_match_the_cuda_ones() {
        assert_eq!(size_of::<HeapAttr>(), 16);
        // 16 pointers and 6 u32s.
        assert_eq!(size_of::<HeapArgs>(), 16 * 8 + 6 * 4);
    }

    #[test]
    fn layouts_and_refusals() {
        let attrs = vec![
            AttributeDesc::column(PgType::Int4, 4, Align::Int, true),
            AttributeDesc::dropped(8, Align::Double),
            AttributeDesc::column(PgType::Text, -1, Align::Int, false),
            AttributeDesc::column(PgType::Int8, 8, Align::Double, true)
                .with_missing(7i64.to_be_bytes().to_vec()),
        ];
        let l = TupleLayout::new(attrs.clone(), vec![3, 0, 2], HashMap::new()).unwrap();
        let p = PageLayout::new(&l).unwrap();
        assert_eq!(p.outputs, vec![3, 0, 2]);
        assert_eq!(p.attrs.len(), 4);
        assert_eq!(p.attrs[1].form, 0);
        assert_eq!(p.attrs[3].missing_len, 8);
        assert_eq!(p.attrs[0].missing_len, -1);
        let (blob, at) = p.blob();
        assert_eq!(blob.len() % 16, 0);
        assert!(at.windows(2).all(|w| w[0] <= w[1]));

        let jsonb = vec![AttributeDesc::column(PgType::Jsonb, -1, Align::Int, false)];
        let l = TupleLayout::new(jsonb, vec![0], HashMap::new()).unwrap();
        assert_eq!(PageLayout::new(&l).unwrap().attrs[0].form, 12);

        // Arrays carry their elements' form, alignment and typlen.
        let array = |elem: PgType, typlen: i16, align: Align| {
            AttributeDesc::column(PgType::Array(Box::new(elem)), -1, Align::Int, false)
                .with_element(ElementDesc {
                    typlen,
                    align,
                    byval: typlen > 0 && typlen <= 8,
                })
        };
        let arrays = vec![
            array(PgType::Jsonb, -1, Align::Int),
            array(PgType::Int8, 8, Align::Double),
            array(PgType::Bool, 1, Align::Char),
        ];
        let l = TupleLayout::new(arrays, vec![0, 1, 2], HashMap::new()).unwrap();
        let p = PageLayout::new(&l).unwrap();
        let elems: Vec<_> = p
            .attrs
            .iter()
            .map(|a| (a.form, a.elem_form, a.elem_align_mask, a.elem_typlen))
            .collect();
        assert_eq!(elems, vec![(13, 12, 3, -1), (13, 4, 7, 8), (13, 1, 0, 1)]);
        assert!(p.has_arrays());
        let l = TupleLayout::new(attrs.clone(), vec![0], HashMap::new()).unwrap();
        assert!(!PageLayout::new(&l).unwrap().has_arrays());
        let tables = p.kernel_tables();
        assert_eq!(&tables[0][16 + 12..16 + 16], &[4, 7, 8, 0]);

        // An attribute of no known type is stepped over, never output.
        let mut other = AttributeDesc::column(PgType::Int4, 4, Align::Int, true);
        other.pg_type = None;
        let int = AttributeDesc::column(PgType::Int4, 4, Align::Int, true);
        let l = TupleLayout::new(vec![other, int], vec![1], HashMap::new()).unwrap();
        let p = PageLayout::new(&l).unwrap();
        assert_eq!((p.attrs[0].form, p.attrs[1].form), (0, 3));

        let many: Vec<_> = (0..70)
            .map(|_| AttributeDesc::column(PgType::Int4, 4, Align::Int, true))
            .collect();
        let l = TupleLayout::new(many, vec![69], HashMap::new()).unwrap();
        assert!(PageLayout::new(&l).unwrap_err().contains("70 attributes"));
    }

    #[test]
    fn slot_bases_count_line_pointers() {
        let mut data = vec![0u8; 3 * 8192];
        data[12..14].copy_from_slice(&(24u16 + 4 * 5).to_le_bytes());
        data[8192 * 2 + 12..8192 * 2 + 14].copy_from_slice(&(24u16 + 4 * 2).to_le_bytes());
        assert_eq!(slot_bases(&data, &[0, 1, 2], 8192), vec![0, 5, 5, 7]);
        assert_eq!(slot_bases(&data, &[2, 0], 8192), vec![0, 2, 7]);
        // A page index past the data counts as no line pointers.
        assert_eq!(slot_bases(&data, &[9], 8192), vec![0, 0]);
    }
}
