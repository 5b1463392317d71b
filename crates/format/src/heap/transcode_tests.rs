//! Tests of the heap → COPY conversion: pages built with [`super::super::build`]
//! from typed values must transcode to exactly what [`crate::encode`] makes
//! of the same values.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::encode::{encode_tuple, numeric_from_str, Value};
use crate::heap::build::{
    array_to_disk, heap_fill_tuple, numeric_to_disk, toast_pointer, varlena_4b, varlena_compressed,
    varlena_lz4, varlena_pglz, FillAttr, PageBuilder,
};
use crate::heap::checksum::set_page_checksum;
use crate::heap::jsonb_build::{jsonb_payload, jsonb_text, parse_json, Json};
use crate::heap::page::PD_ALL_VISIBLE;
use crate::heap::varlena::CompressionMethod;
use crate::types::oid;

/// Column types of the test model.
#[derive(Debug, Clone, PartialEq)]
enum Col {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Oid,
    Date,
    Time,
    Timestamp,
    Interval,
    Uuid,
    Text,
    Name,
    Bytea,
    Json,
    Numeric,
    Enum,
    Jsonb,
    Array(Box<Col>),
}

const ENUM_TYPE_OID: u32 = 90_000;
const ENUM_LABELS: [(u32, &str); 3] = [(90_001, "sad"), (90_002, "ok"), (90_003, "happy")];

fn labels() -> HashMap<u32, String> {
    ENUM_LABELS
        .iter()
        .map(|&(o, l)| (o, l.to_string()))
        .collect()
}

impl Col {
    fn pg_type(&self) -> PgType {
        match self {
            Col::Bool => PgType::Bool,
            Col::Int2 => PgType::Int2,
            Col::Int4 => PgType::Int4,
            Col::Int8 => PgType::Int8,
            Col::Float4 => PgType::Float4,
            Col::Float8 => PgType::Float8,
            Col::Oid => PgType::Oid,
            Col::Date => PgType::Date,
            Col::Time => PgType::Time,
            Col::Timestamp => PgType::Timestamptz,
            Col::Interval => PgType::Interval,
            Col::Uuid => PgType::Uuid,
            Col::Text | Col::Name => PgType::Text,
            Col::Bytea => PgType::Bytea,
            Col::Json => PgType::Json,
            Col::Numeric => PgType::Numeric(None),
            Col::Enum => PgType::Enum,
            Col::Jsonb => PgType::Jsonb,
            Col::Array(e) => PgType::Array(Box::new(e.pg_type())),
        }
    }

    /// (typlen, typalign)
    fn storage(&self) -> (i16, Align) {
        match self {
            Col::Bool => (1, Align::Char),
            Col::Int2 => (2, Align::Short),
            Col::Int4 | Col::Float4 | Col::Oid | Col::Date | Col::Enum => (4, Align::Int),
            Col::Int8 | Col::Float8 | Col::Time | Col::Timestamp => (8, Align::Double),
            Col::Interval => (16, Align::Double),
            Col::Uuid => (16, Align::Char),
            Col::Name => (64, Align::Char),
            Col::Text | Col::Bytea | Col::Json | Col::Numeric | Col::Jsonb => (-1, Align::Int),
            Col::Array(e) => (
                -1,
                if e.storage().1 == Align::Double {
                    Align::Double
                } else {
                    Align::Int
                },
            ),
        }
    }

    fn type_oid(&self) -> u32 {
        match self {
            Col::Name => oid::NAME,
            Col::Enum => ENUM_TYPE_OID,
            Col::Timestamp => oid::TIMESTAMPTZ,
            c => crate::encode::element_oid_of(&c.pg_type()),
        }
    }

    fn attribute(&self) -> AttributeDesc {
        let (len, align) = self.storage();
        let a = AttributeDesc::column(self.pg_type(), len, align, len > 0 && len <= 8);
        match self {
            Col::Array(e) => {
                let (typlen, align) = e.storage();
                a.with_element(ElementDesc {
                    typlen,
                    align,
                    byval: typlen > 0 && typlen <= 8,
                })
            }
            _ => a,
        }
    }

    fn fill(&self) -> FillAttr {
        let (len, align) = self.storage();
        FillAttr::new(len, align)
    }
}

/// A value of a column: what COPY sends and what is on disk.
#[derive(Debug, Clone)]
struct Cell {
    copy: Value,
    disk: Option<Vec<u8>>,
}

fn null() -> Cell {
    Cell {
        copy: Value::Null,
        disk: None,
    }
}

/// The on-disk datum of a non-null `v` of column type `c`; `compress`
/// makes varlena payloads pglz-compressed inline.
fn to_disk(c: &Col, v: &Value, compress: bool) -> Vec<u8> {
    let var = |p: &[u8]| {
        if compress {
            varlena_pglz(p)
        } else {
            varlena_4b(p)
        }
    };
    match (c, v) {
        (Col::Bool, Value::Bool(b)) => vec![u8::from(*b)],
        (Col::Int2, Value::Int2(x)) => x.to_le_bytes().to_vec(),
        (Col::Int4, Value::Int4(x)) => x.to_le_bytes().to_vec(),
        (Col::Int8, Value::Int8(x)) => x.to_le_bytes().to_vec(),
        (Col::Float4, Value::Float4(x)) => x.to_bits().to_le_bytes().to_vec(),
        (Col::Float8, Value::Float8(x)) => x.to_bits().to_le_bytes().to_vec(),
        (Col::Oid, Value::Oid(x)) => x.to_le_bytes().to_vec(),
        (Col::Date, Value::Date(x)) => x.to_le_bytes().to_vec(),
        (Col::Time | Col::Timestamp, Value::Time(x) | Value::Timestamp(x)) => {
            x.to_le_bytes().to_vec()
        }
        (
            Col::Interval,
            Value::Interval {
                micros,
                days,
                months,
            },
        ) => {
            let mut b = micros.to_le_bytes().to_vec();
            b.extend_from_slice(&days.to_le_bytes());
            b.extend_from_slice(&months.to_le_bytes());
            b
        }
        (Col::Uuid, Value::Uuid(u)) => u.to_vec(),
        (Col::Text | Col::Json, Value::Text(s)) => var(s.as_bytes()),
        (Col::Bytea, Value::Bytes(b)) => var(b),
        (Col::Name, Value::Text(s)) => {
            let mut b = s.as_bytes().to_vec();
            b.resize(64, 0);
            b
        }
        (Col::Numeric, Value::Numeric(s)) => {
            let d = numeric_to_disk(&numeric_from_str(s).unwrap()).unwrap();
            if compress {
                varlena_pglz(&d[4..])
            } else {
                d
            }
        }
        (Col::Enum, Value::Text(l)) => {
            let oid = ENUM_LABELS.iter().find(|(_, x)| x == l).unwrap().0;
            oid.to_le_bytes().to_vec()
        }
        (Col::Jsonb, Value::Jsonb(s)) => {
            let p = jsonb_payload(&parse_json(s).unwrap()).unwrap();
            if compress {
                varlena_pglz(&p)
            } else {
                varlena_4b(&p)
            }
        }
        (
            Col::Array(e),
            Value::Array {
                element_oid,
                dims,
                elements,
            },
        ) => {
            let elems: Vec<Option<Vec<u8>>> = elements
                .iter()
                .map(|x| match x {
                    Value::Null => None,
                    x => Some(to_disk(e, x, false)),
                })
                .collect();
            let a = array_to_disk(*element_oid, dims, &elems, e.storage().1);
            if compress {
                varlena_pglz(&a[4..])
            } else {
                a
            }
        }
        (c, v) => panic!("no disk form of {v:?} for {c:?}"),
    }
}

fn text_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zé€ ]{0,20}",
        "[a-z]{0,300}",
        (0usize..40, "[a-z]{1,5}").prop_map(|(n, s)| s.repeat(n * 10)),
    ]
}

fn scalar_value(c: &Col) -> BoxedStrategy<Value> {
    match c {
        Col::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Col::Int2 => any::<i16>().prop_map(Value::Int2).boxed(),
        Col::Int4 => any::<i32>().prop_map(Value::Int4).boxed(),
        Col::Int8 => any::<i64>().prop_map(Value::Int8).boxed(),
        Col::Float4 => any::<u32>()
            .prop_map(|b| Value::Float4(f32::from_bits(b)))
            .boxed(),
        Col::Float8 => any::<u64>()
            .prop_map(|b| Value::Float8(f64::from_bits(b)))
            .boxed(),
        Col::Oid => any::<u32>().prop_map(Value::Oid).boxed(),
        Col::Date => any::<i32>().prop_map(Value::Date).boxed(),
        Col::Time => (0..=86_400_000_000i64).prop_map(Value::Time).boxed(),
        Col::Timestamp => any::<i64>().prop_map(Value::Timestamp).boxed(),
        Col::Interval => (any::<i64>(), any::<i32>(), any::<i32>())
            .prop_map(|(micros, days, months)| Value::Interval {
                micros,
                days,
                months,
            })
            .boxed(),
        Col::Uuid => any::<[u8; 16]>().prop_map(Value::Uuid).boxed(),
        Col::Text | Col::Json => text_strategy().prop_map(Value::Text).boxed(),
        Col::Name => "[a-zA-Z0-9_ ]{0,63}".prop_map(Value::Text).boxed(),
        Col::Bytea => proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(Value::Bytes)
            .boxed(),
        Col::Numeric => (any::<bool>(), "[0-9]{0,30}", "[0-9]{0,30}", -300i32..300)
            .prop_map(|(neg, i, f, e)| {
                Value::Numeric(format!(
                    "{}{}.{}e{}",
                    if neg { "-" } else { "" },
                    if i.is_empty() { "0" } else { &i },
                    f,
                    e
                ))
            })
            .boxed(),
        Col::Enum => (0usize..3)
            .prop_map(|i| Value::Text(ENUM_LABELS[i].1.to_string()))
            .boxed(),
        Col::Jsonb => json_value()
            .prop_map(|j| Value::Jsonb(jsonb_text(&j)))
            .boxed(),
        Col::Array(_) => unreachable!("arrays are built by array_value"),
    }
}

fn array_value(e: &Col) -> BoxedStrategy<Value> {
    let oid = e.type_oid();
    let elem = prop_oneof![1 => Just(Value::Null), 6 => scalar_value(e)];
    prop_oneof![
        // Empty.
        Just(Value::Array {
            element_oid: oid,
            dims: vec![],
            elements: vec![],
        }),
        // One dimension, any lower bound.
        (proptest::collection::vec(elem.clone(), 1..8), -3i32..3).prop_map(move |(els, lb)| {
            Value::Array {
                element_oid: oid,
                dims: vec![(els.len() as i32, lb)],
                elements: els,
            }
        }),
        // Two dimensions.
        (1usize..4, 1usize..4).prop_flat_map(move |(a, b)| {
            proptest::collection::vec(elem.clone(), a * b).prop_map(move |els| Value::Array {
                element_oid: oid,
                dims: vec![(a as i32, 1), (b as i32, 0)],
                elements: els,
            })
        }),
    ]
    .boxed()
}

fn value(c: &Col) -> BoxedStrategy<Cell> {
    let c = c.clone();
    let v = match &c {
        Col::Array(e) => array_value(e),
        c => scalar_value(c),
    };
    let compressible = matches!(
        c,
        Col::Text | Col::Json | Col::Jsonb | Col::Bytea | Col::Numeric | Col::Array(_)
    );
    let cell = (v, any::<bool>()).prop_map(move |(v, compress)| Cell {
        disk: Some(to_disk(&c, &v, compress && compressible)),
        copy: v,
    });
    prop_oneof![1 => Just(null()), 5 => cell].boxed()
}

fn scalar_col() -> impl Strategy<Value = Col> {
    prop_oneof![
        Just(Col::Bool),
        Just(Col::Int2),
        Just(Col::Int4),
        Just(Col::Int8),
        Just(Col::Float4),
        Just(Col::Float8),
        Just(Col::Oid),
        Just(Col::Date),
        Just(Col::Time),
        Just(Col::Timestamp),
        Just(Col::Interval),
        Just(Col::Uuid),
        Just(Col::Text),
        Just(Col::Name),
        Just(Col::Bytea),
        Just(Col::Json),
        Just(Col::Numeric),
        Just(Col::Enum),
        Just(Col::Jsonb),
    ]
}

/// jsonb documents: nested, with long strings (compressible) and numbers.
fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i32>().prop_map(|n| Json::Number(n.to_string())),
        Just(Json::Number("-1.250".into())),
        text_strategy().prop_map(Json::String),
    ];
    leaf.prop_recursive(3, 30, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec(("[a-d]{0,2}", inner), 0..6).prop_map(Json::Object),
        ]
    })
}

fn col() -> impl Strategy<Value = Col> {
    prop_oneof![
        4 => scalar_col(),
        1 => scalar_col().prop_map(|e| Col::Array(Box::new(e))),
    ]
}

/// A table: columns (with `dropped` flags), rows of cells (a row may have
/// fewer cells than columns: written before the trailing columns were
/// added), missing values per column, and the output column order.
#[derive(Debug, Clone)]
struct Table {
    cols: Vec<(Col, bool)>,
    missing: Vec<Option<Cell>>,
    rows: Vec<Vec<Cell>>,
    output: Vec<usize>,
}

fn table() -> impl Strategy<Value = Table> {
    proptest::collection::vec((col(), proptest::bool::weighted(0.15)), 1..10)
        .prop_flat_map(|cols| {
            let n = cols.len();
            let row = {
                let cells: Vec<_> = cols.iter().map(|(c, _)| value(c)).collect();
                (cells, 0..=n).prop_map(|(cells, short)| {
                    // One row in four stops early.
                    let keep = if short % 4 == 0 {
                        short.max(1)
                    } else {
                        cells.len()
                    };
                    cells.into_iter().take(keep).collect::<Vec<_>>()
                })
            };
            let missing: Vec<_> = cols
                .iter()
                .map(|(c, dropped)| {
                    let v = value(c);
                    let dropped = *dropped;
                    proptest::option::of(v).prop_map(move |m| if dropped { None } else { m })
                })
                .collect();
            let live: Vec<usize> = (0..n).filter(|&i| !cols[i].1).collect();
            let output = Just(live)
                .prop_shuffle()
                .prop_flat_map(|l| {
                    let len = l.len();
                    (Just(l), 0..=len)
                })
                .prop_map(|(l, k)| l.into_iter().take(k.max(1)).collect::<Vec<_>>());
            (
                Just(cols),
                missing,
                proptest::collection::vec(row, 0..25),
                output,
            )
        })
        .prop_map(|(cols, missing, rows, output)| Table {
            cols,
            missing,
            rows,
            output,
        })
}

impl Table {
    fn layout(&self) -> TupleLayout {
        let attrs = self
            .cols
            .iter()
            .zip(&self.missing)
            .map(|((c, dropped), m)| {
                if *dropped {
                    let (len, align) = c.storage();
                    AttributeDesc::dropped(len, align)
                } else {
                    let a = c.attribute();
                    match m.as_ref().and_then(|m| m.copy.to_bytes()) {
                        Some(b) => a.with_missing(b),
                        None => a,
                    }
                }
            })
            .collect();
        let output = if self.output.iter().all(|&i| !self.cols[i].1) {
            self.output.clone()
        } else {
            vec![]
        };
        TupleLayout::new(attrs, output, labels()).unwrap()
    }

    fn tuple(&self, row: &[Cell]) -> Vec<u8> {
        let fill: Vec<FillAttr> = self.cols.iter().map(|(c, _)| c.fill()).collect();
        let values: Vec<Option<&[u8]>> = row.iter().map(|c| c.disk.as_deref()).collect();
        heap_fill_tuple(&fill, &values)
    }

    fn expected(&self, row: &[Cell]) -> Vec<u8> {
        let values: Vec<Value> = self
            .output
            .iter()
            .map(|&i| match row.get(i) {
                Some(c) => c.copy.clone(),
                None => self.missing[i]
                    .as_ref()
                    .map_or(Value::Null, |m| m.copy.clone()),
            })
            .collect();
        encode_tuple(&values)
    }

    /// The pages holding all rows, in order.
    fn pages(&self, block_size: usize) -> Vec<Vec<u8>> {
        let mut pages = Vec::new();
        let mut b = PageBuilder::new(block_size, 0);
        for row in &self.rows {
            let t = self.tuple(row);
            if b.add_tuple(&t).is_none() {
                pages.push(
                    std::mem::replace(&mut b, PageBuilder::new(block_size, pages.len() as u32 + 1))
                        .finish(),
                );
                b.add_tuple(&t).expect("a tuple fits an empty page");
            }
        }
        pages.push(b.finish());
        pages
    }
}

fn transcode_all(pages: &[Vec<u8>], layout: &TupleLayout) -> Result<CopyChunk, PageFallback> {
    let mut chunk = CopyChunk::default();
    for (i, p) in pages.iter().enumerate() {
        transcode_page(p, i as u32, layout, &mut chunk)?;
    }
    Ok(chunk)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn heap_rows_equal_copy_rows(t in table(), big in any::<bool>()) {
        let bs = if big { 32768 } else { 8192 };
        let layout = t.layout().with_block_size(bs).unwrap();
        prop_assume!(!layout.output().is_empty());
        let chunk = transcode_all(&t.pages(bs), &layout).unwrap();
        prop_assert_eq!(chunk.num_rows(), t.rows.len());
        for (i, row) in t.rows.iter().enumerate() {
            prop_assert_eq!(chunk.row(i), &t.expected(row)[..], "row {}", i);
            // And the framing the decoders check holds.
            let mut offs = vec![(0u32, 0i32); layout.output().len()];
            crate::copy::field_offsets(chunk.row(i), layout.output().len(), &mut offs).unwrap();
        }
    }

    #[test]
    fn mutated_pages_never_panic(t in table(), flips in proptest::collection::vec((0usize..8192, any::<u8>()), 1..20)) {
        let layout = t.layout();
        prop_assume!(!layout.output().is_empty());
        let mut page = t.pages(8192).swap_remove(0);
        for (at, v) in flips {
            page[at] ^= v;
        }
        let mut chunk = CopyChunk::default();
        chunk.push_row(b"\x00\x00");
        match transcode_page(&page, 0, &layout, &mut chunk) {
            Ok(s) => prop_assert_eq!(chunk.num_rows(), s.rows + 1),
            Err(_) => {
                prop_assert_eq!(chunk.num_rows(), 1);
                prop_assert_eq!(&chunk.data[..], b"\x00\x00");
            }
        }
    }

    #[test]
    fn random_pages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 8192), lower in 24u16..400, upper in 0u16..8192) {
        let mut page = bytes;
        page[10] = 0;
        page[11] = 0;
        page[12..14].copy_from_slice(&lower.to_le_bytes());
        page[14..16].copy_from_slice(&upper.to_le_bytes());
        page[16..18].copy_from_slice(&8192u16.to_le_bytes());
        page[18..20].copy_from_slice(&0x2004u16.to_le_bytes());
        let cols = [Col::Int4, Col::Text, Col::Numeric, Col::Array(Box::new(Col::Text)), Col::Name, Col::Array(Box::new(Col::Numeric)), Col::Interval];
        let layout = TupleLayout::all_columns(cols.iter().map(Col::attribute).collect(), labels()).unwrap();
        let mut chunk = CopyChunk::default();
        let _ = transcode_page(&page, 0, &layout, &mut chunk);
    }
}

fn simple_layout(cols: &[Col]) -> TupleLayout {
    TupleLayout::all_columns(cols.iter().map(Col::attribute).collect(), labels()).unwrap()
}

fn page_of(tuples: &[Vec<u8>]) -> Vec<u8> {
    let mut b = PageBuilder::new(8192, 0);
    for t in tuples {
        b.add_tuple(t).unwrap();
    }
    b.finish()
}

#[test]
fn line_pointer_states_and_summary() {
    let cols = [Col::Int4];
    let fill = [Col::Int4.fill()];
    let t = |v: i32| heap_fill_tuple(&fill, &[Some(&v.to_le_bytes()[..])]);
    let mut b = PageBuilder::new(8192, 0);
    b.add_tuple(&t(1)).unwrap();
    b.add_line_pointer(LpFlags::Redirect, 4).unwrap();
    b.add_line_pointer(LpFlags::Dead, 0).unwrap();
    b.add_tuple(&t(2)).unwrap();
    b.add_line_pointer(LpFlags::Unused, 0).unwrap();
    b.set_flags(PD_ALL_VISIBLE);
    b.set_lsn(0x0000_0002_0000_0010);
    let page = b.finish();
    let mut chunk = CopyChunk::default();
    let s = transcode_page(&page, 0, &simple_layout(&cols), &mut chunk).unwrap();
    assert_eq!(
        s,
        PageSummary {
            rows: 2,
            lsn: 0x0000_0002_0000_0010,
            all_visible: true,
            new_page: false,
            line_pointers: 5
        }
    );
    assert_eq!(chunk.row(0), &encode_tuple(&[Value::Int4(1)])[..]);
    assert_eq!(chunk.row(1), &encode_tuple(&[Value::Int4(2)])[..]);
    // A new page is empty.
    let s = transcode_page(&[0; 8192], 9, &simple_layout(&cols), &mut chunk).unwrap();
    assert!(s.new_page);
    assert_eq!((s.rows, chunk.num_rows()), (0, 2));
}

/// One tuple of (int4, text) whose text datum is `datum`; the fallback it
/// causes when transcoded after a good page.
fn fallback_of(text_col: Col, datum: Vec<u8>) -> (PageFallback, CopyChunk) {
    let cols = [Col::Int4, text_col.clone()];
    let fill = [Col::Int4.fill(), text_col.fill()];
    let good = heap_fill_tuple(&fill, &[Some(&5i32.to_le_bytes()[..]), None]);
    let bad = heap_fill_tuple(&fill, &[Some(&6i32.to_le_bytes()[..]), Some(&datum[..])]);
    let layout = simple_layout(&cols);
    let mut chunk = CopyChunk::default();
    transcode_page(
        &page_of(std::slice::from_ref(&good)),
        0,
        &layout,
        &mut chunk,
    )
    .unwrap();
    let before = chunk.clone();
    let e = transcode_page(&page_of(&[good, bad]), 1, &layout, &mut chunk).unwrap_err();
    assert_eq!(chunk.data, before.data);
    assert_eq!(chunk.row_starts, before.row_starts);
    assert_eq!(chunk.row_ends, before.row_ends);
    (e, chunk)
}

#[test]
fn external_values_fall_back() {
    let (e, _) = fallback_of(Col::Text, toast_pointer(20004, 20000, 16500, 16400));
    assert_eq!(
        e,
        PageFallback {
            blkno: 1,
            offnum: Some(2),
            attnum: Some(2),
            reason: FallbackReason::ExternalToast
        }
    );
    assert_eq!(
        e.to_string(),
        "block 1, line pointer 2, attribute 2: a value is stored out of line (TOAST pointer)"
    );
    // A corrupt pglz stream or lz4 block is corruption, in an array too.
    let bad = varlena_compressed(&[0x01, 0x00, 0x00], 10, CompressionMethod::Pglz);
    assert!(matches!(
        fallback_of(Col::Text, bad).0.reason,
        FallbackReason::Corrupt(Corruption::Pglz(_))
    ));
    // "a" is one literal: a block that makes 1 byte, not 5.
    let lz4 = varlena_compressed(&[0x10, b'a'], 5, CompressionMethod::Lz4);
    assert!(matches!(
        fallback_of(Col::Text, lz4).0.reason,
        FallbackReason::Corrupt(Corruption::Lz4(_))
    ));
    let arr = varlena_compressed(&[0x10, b'a'], 40, CompressionMethod::Lz4);
    assert!(matches!(
        fallback_of(Col::Array(Box::new(Col::Int4)), arr).0.reason,
        FallbackReason::Corrupt(Corruption::Lz4(_))
    ));
}

/// lz4-compressed values (text, bytea, numeric, an array) give the rows
/// their uncompressed forms give.
#[test]
fn lz4_values_are_decompressed() {
    let text = "lz4 compresses this text ".repeat(200);
    let cells = [
        (Col::Text, Value::Text(text.clone())),
        (Col::Bytea, Value::Bytes(text.clone().into_bytes())),
        (
            Col::Numeric,
            Value::Numeric("-12345678901234567890.125".into()),
        ),
        (
            Col::Array(Box::new(Col::Text)),
            Value::Array {
                element_oid: oid::TEXT,
                dims: vec![(3, 1)],
                elements: vec![
                    Value::Text(text.clone()),
                    Value::Null,
                    Value::Text("x".into()),
                ],
            },
        ),
    ];
    for (col, v) in cells {
        let plain = to_disk(&col, &v, false);
        // Re-compress the payload (after the 4-byte header) with lz4.
        let lz4 = varlena_lz4(&plain[4..]);
        let layout = simple_layout(std::slice::from_ref(&col));
        let fill = [col.fill()];
        let rows = |datum: &[u8]| {
            let mut chunk = CopyChunk::default();
            let page = page_of(&[heap_fill_tuple(&fill, &[Some(datum)])]);
            transcode_page(&page, 0, &layout, &mut chunk).unwrap();
            chunk.row(0).to_vec()
        };
        assert_eq!(rows(&lz4), rows(&plain), "{col:?}");
        assert_eq!(rows(&plain), encode_tuple(&[v]), "{col:?}");
        // The CPU decoder's page reader locates the same bytes; a string's
        // or bytea's is decompressed into its column's sent buffer.
        let located = |datum: &[u8]| {
            let page = page_of(&[heap_fill_tuple(&fill, &[Some(datum)])]);
            let mut pc = PageColumns::new(&layout);
            pc.add_page(&layout, &page, 0, 0).unwrap();
            let c = &pc.columns()[0];
            let spilled = c.form == ValueForm::Stored && c.starts[0] & ColumnValues::SPILLED != 0;
            (c.value(&page, 0).unwrap().to_vec(), spilled)
        };
        let stored = matches!(col, Col::Text | Col::Bytea);
        assert_eq!(located(&lz4), (located(&plain).0, stored), "{col:?}");
        assert_eq!(
            located(&varlena_pglz(&plain[4..])),
            (located(&plain).0, stored),
            "{col:?}"
        );
    }
}

#[test]
fn jsonb_is_converted_and_checked() {
    let cols = [Col::Int4, Col::Jsonb];
    let fill = [Col::Int4.fill(), Col::Jsonb.fill()];
    let text = r#"{"a": [1, "x\ty", null], "bb": {"c": true}}"#;
    let json = to_disk(&Col::Jsonb, &Value::Jsonb(text.into()), false);
    let page = page_of(&[
        heap_fill_tuple(&fill, &[Some(&1i32.to_le_bytes()[..]), None]),
        heap_fill_tuple(&fill, &[Some(&2i32.to_le_bytes()[..]), Some(&json[..])]),
    ]);
    let attrs: Vec<AttributeDesc> = cols.iter().map(Col::attribute).collect();
    let all = TupleLayout::all_columns(attrs.clone(), labels()).unwrap();
    let mut chunk = CopyChunk::default();
    assert_eq!(transcode_page(&page, 0, &all, &mut chunk).unwrap().rows, 2);
    assert_eq!(
        chunk.row(1),
        &encode_tuple(&[Value::Int4(2), Value::Jsonb(text.into())])[..]
    );
    // The send format, not the binary form, in a jsonb column: corrupt.
    let bad = varlena_4b(b"\x01{}");
    let (e, _) = fallback_of(Col::Jsonb, bad);
    assert_eq!(
        e.reason,
        FallbackReason::Corrupt(Corruption::Jsonb(JsonbError::Truncated("header")))
    );
}

#[test]
fn unknown_enum_value_falls_back() {
    let (e, _) = fallback_of(Col::Enum, 12345u32.to_le_bytes().to_vec());
    assert_eq!(e.reason, FallbackReason::UnknownEnumValue(12345));
}

#[test]
fn dropped_columns_and_missing_values() {
    // (int4, dropped text, int8) then added columns: int4 with a missing
    // value, text without.
    let fill = [
        Col::Int4.fill(),
        Col::Text.fill(),
        Col::Int8.fill(),
        Col::Int4.fill(),
        Col::Text.fill(),
    ];
    let old = heap_fill_tuple(
        &fill[..3],
        &[
            Some(&1i32.to_le_bytes()[..]),
            Some(&varlena_4b(b"gone")[..]),
            Some(&7i64.to_le_bytes()[..]),
        ],
    );
    let new = heap_fill_tuple(
        &fill,
        &[
            Some(&2i32.to_le_bytes()[..]),
            None,
            Some(&8i64.to_le_bytes()[..]),
            Some(&3i32.to_le_bytes()[..]),
            Some(&varlena_4b(b"x")[..]),
        ],
    );
    let attrs = vec![
        Col::Int4.attribute(),
        AttributeDesc::dropped(-1, Align::Int),
        Col::Int8.attribute(),
        Col::Int4
            .attribute()
            .with_missing(42i32.to_be_bytes().to_vec()),
        Col::Text.attribute(),
    ];
    let layout = TupleLayout::all_columns(attrs.clone(), labels()).unwrap();
    assert_eq!(layout.output(), &[0, 2, 3, 4]);
    let mut chunk = CopyChunk::default();
    transcode_page(&page_of(&[old, new]), 0, &layout, &mut chunk).unwrap();
    assert_eq!(
        chunk.row(0),
        &encode_tuple(&[Value::Int4(1), Value::Int8(7), Value::Int4(42), Value::Null])[..]
    );
    assert_eq!(
        chunk.row(1),
        &encode_tuple(&[
            Value::Int4(2),
            Value::Int8(8),
            Value::Int4(3),
            Value::Text("x".into())
        ])[..]
    );
    assert_eq!(
        TupleLayout::new(attrs.clone(), vec![1], labels()).unwrap_err(),
        LayoutError::DroppedOutput { attnum: 2 }
    );
    assert!(matches!(
        TupleLayout::new(attrs, vec![5], labels()),
        Err(LayoutError::NoSuchAttribute { index: 5, .. })
    ));
}

#[test]
fn numeric_forms() {
    let send = |s: &str| numeric_from_str(s).unwrap();
    let conv = |disk: &[u8]| {
        let mut out = Vec::new();
        let p = match varlena::parse(disk).unwrap() {
            Varlena::Plain(p) | Varlena::Short(p) => p,
            _ => panic!(),
        };
        numeric(p, &mut out).unwrap();
        out[4..].to_vec()
    };
    for s in [
        "0",
        "1",
        "-1",
        "12345678.90",
        "-0.0001",
        "1e200",
        "1e-300",
        "9999.9999",
        "-123.456e100",
    ] {
        let d = numeric_to_disk(&send(s)).unwrap();
        assert_eq!(conv(&d), send(s), "{s}");
    }
    // Long form (weight 50 > 63? no: dscale 100 > 63).
    let d = numeric_to_disk(&send("1.0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001")).unwrap();
    assert_eq!(u16::from_le_bytes([d[4], d[5]]) & 0x8000, 0, "long form");
    // Specials: the short header's dscale bits are sent as they are, so
    // +-Infinity go out with dscale 32 (numeric.c's NUMERIC_DSCALE).
    let special = |h: u16| {
        let mut v = varlena_4b(&h.to_le_bytes());
        v.truncate(6);
        conv(&v)
    };
    assert_eq!(special(0xC000), vec![0, 0, 0, 0, 0xC0, 0, 0, 0]);
    assert_eq!(special(0xD000), vec![0, 0, 0, 0, 0xD0, 0, 0, 0x20]);
    assert_eq!(special(0xF000), vec![0, 0, 0, 0, 0xF0, 0, 0, 0x20]);
    let mut out = Vec::new();
    assert!(numeric(&0xE000u16.to_le_bytes(), &mut out).is_err());
    assert!(numeric(&[0x00], &mut out).is_err());
    assert!(numeric(&[0x00, 0x00, 0x00], &mut out).is_err());
    assert!(numeric(&[0x00, 0x80, 0x01], &mut out).is_err());
}

#[test]
fn name_and_cstring() {
    let name = {
        let mut b = b"abc".to_vec();
        b.resize(64, 0);
        b
    };
    let cs = AttributeDesc::column(PgType::Text, -2, Align::Char, false);
    let attrs = vec![Col::Name.attribute(), cs];
    let fill = [Col::Name.fill(), FillAttr::new(-2, Align::Char)];
    let t = heap_fill_tuple(&fill, &[Some(&name[..]), Some(b"hello\0")]);
    let mut chunk = CopyChunk::default();
    let layout = TupleLayout::all_columns(attrs, labels()).unwrap();
    transcode_page(&page_of(&[t]), 0, &layout, &mut chunk).unwrap();
    assert_eq!(
        chunk.row(0),
        &encode_tuple(&[Value::Text("abc".into()), Value::Text("hello".into())])[..]
    );
}

#[test]
fn checksums_are_verified_when_asked() {
    let fill = [Col::Int4.fill()];
    let mut page = page_of(&[heap_fill_tuple(&fill, &[Some(&1i32.to_le_bytes()[..])])]);
    let layout = simple_layout(&[Col::Int4]).with_checksums(true);
    let mut chunk = CopyChunk::default();
    let e = transcode_page(&page, 3, &layout, &mut chunk).unwrap_err();
    assert!(matches!(
        e.reason,
        FallbackReason::Corrupt(Corruption::Checksum(_))
    ));
    set_page_checksum(&mut page, 3).unwrap();
    assert_eq!(
        transcode_page(&page, 3, &layout, &mut chunk).unwrap().rows,
        1
    );
    assert!(transcode_page(&page, 4, &layout, &mut chunk).is_err());
    // Without verification the stored checksum is not looked at.
    assert!(transcode_page(&page, 4, &simple_layout(&[Col::Int4]), &mut chunk).is_ok());
}

#[test]
fn layout_checks() {
    let bad = AttributeDesc::column(PgType::Int4, 8, Align::Double, true);
    assert!(matches!(
        TupleLayout::all_columns(vec![bad], labels()),
        Err(LayoutError::TypeLength { attnum: 1, .. })
    ));
    let arr = AttributeDesc::column(PgType::Array(Box::new(PgType::Int4)), -1, Align::Int, false);
    assert_eq!(
        TupleLayout::all_columns(vec![arr], labels()).unwrap_err(),
        LayoutError::NoElement { attnum: 1 }
    );
    let zero = AttributeDesc::dropped(0, Align::Char);
    assert!(matches!(
        TupleLayout::all_columns(vec![zero], labels()),
        Err(LayoutError::BadAttlen { .. })
    ));
    let mut unknown = Col::Int4.attribute();
    unknown.pg_type = None;
    assert_eq!(
        TupleLayout::new(vec![unknown.clone()], vec![0], labels()).unwrap_err(),
        LayoutError::NoType { attnum: 1 }
    );
    assert!(TupleLayout::new(vec![unknown], vec![], labels()).is_ok());
    assert!(simple_layout(&[Col::Int4]).with_block_size(5000).is_err());
    // jsonb[] is an array like the others.
    let ja = Col::Array(Box::new(Col::Jsonb)).attribute();
    let l = TupleLayout::all_columns(vec![ja], labels()).unwrap();
    assert!(matches!(&l.plans[0], Conv::Array(e) if e.conv == Conv::Jsonb));
}

/// Throughput on lineorder-like pages (14 int4, char(15), char(1),
/// char(10)): `cargo test --release -p gpupg-format --lib transcode_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn transcode_speed() {
    let mut cols = vec![Col::Int4; 6];
    cols.extend([Col::Text, Col::Text]);
    cols.extend(vec![Col::Int4; 8]);
    cols.push(Col::Text);
    let fill: Vec<FillAttr> = cols.iter().map(Col::fill).collect();
    let layout = simple_layout(&cols);
    let mut pages = Vec::new();
    let mut b = PageBuilder::new(8192, 0);
    for i in 0..100_000i32 {
        let ints: Vec<Vec<u8>> = (0..14)
            .map(|k| (i * 31 + k).to_le_bytes().to_vec())
            .collect();
        let t1 = varlena_4b(b"3-MEDIUM       ");
        let t2 = varlena_4b(b"0");
        let t3 = varlena_4b(b"TRUCK     ");
        let mut vals: Vec<Option<&[u8]>> = ints[..6].iter().map(|v| Some(&v[..])).collect();
        vals.extend([Some(&t1[..]), Some(&t2[..])]);
        vals.extend(ints[6..].iter().map(|v| Some(&v[..])));
        vals.push(Some(&t3[..]));
        let t = heap_fill_tuple(&fill, &vals);
        if b.add_tuple(&t).is_none() {
            pages.push(std::mem::replace(&mut b, PageBuilder::new(8192, 0)).finish());
            b.add_tuple(&t).unwrap();
        }
    }
    pages.push(b.finish());
    let mut chunk = CopyChunk::default();
    let start = std::time::Instant::now();
    let runs = 20;
    for _ in 0..runs {
        chunk.data.clear();
        chunk.row_starts.clear();
        chunk.row_ends.clear();
        for (i, p) in pages.iter().enumerate() {
            transcode_page(p, i as u32, &layout, &mut chunk).unwrap();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let heap_bytes = (pages.len() * 8192 * runs) as f64;
    eprintln!(
        "{} pages x {runs}: {:.2} GB/s of heap, {:.1} M rows/s, {:.2} GB/s of COPY rows",
        pages.len(),
        heap_bytes / secs / 1e9,
        (chunk.num_rows() * runs) as f64 / secs / 1e6,
        (chunk.data.len() * runs) as f64 / secs / 1e9
    );
}

// The fast path against the reference path: for any layout (output columns
// in attnum order, shuffled, repeated) and any page (good, mutated, random),
// `transcode_page` must give exactly what the reference conversion gives,
// rows or fallback.

/// A conversion's result and the chunk it appended to.
type Converted = (Result<PageSummary, PageFallback>, CopyChunk);

/// Both conversions of `page` appended to a chunk holding one row already.
fn fast_and_reference(page: &[u8], layout: &TupleLayout) -> (Converted, Converted) {
    let run = |f: fn(&[u8], u32, &TupleLayout, &mut CopyChunk) -> _| {
        let mut chunk = CopyChunk::default();
        chunk.push_row(b"\x00\x00");
        let r = f(page, 7, layout, &mut chunk);
        (r, chunk)
    };
    (run(transcode_page), run(transcode_page_reference))
}

fn assert_same(page: &[u8], layout: &TupleLayout) -> Result<(), TestCaseError> {
    let ((fr, fc), (rr, rc)) = fast_and_reference(page, layout);
    prop_assert_eq!(&fr, &rr);
    prop_assert_eq!(&fc.data, &rc.data);
    prop_assert_eq!(&fc.row_starts, &rc.row_starts);
    prop_assert_eq!(&fc.row_ends, &rc.row_ends);
    if rr.is_err() {
        prop_assert_eq!(&fc.data[..], b"\x00\x00");
        prop_assert_eq!(fc.num_rows(), 1);
    } else if let Ok(parsed) = Page::parse(page, layout.block_size()) {
        // A page the reference converts, the fast path converts by itself.
        let mut chunk = CopyChunk::default();
        prop_assert!(fast::append_rows(&parsed, layout, &mut chunk).is_some());
        prop_assert_eq!(&chunk.data[..], &rc.data[2..]);
    }
    Ok(())
}

/// Columns weighted towards what the fast path merges (runs of integers,
/// short strings), with the other types mixed in.
fn runs_col() -> impl Strategy<Value = Col> {
    prop_oneof![
        8 => Just(Col::Int4),
        2 => Just(Col::Int2),
        2 => Just(Col::Int8),
        1 => Just(Col::Float8),
        1 => Just(Col::Date),
        4 => Just(Col::Text),
        1 => Just(Col::Bool),
        1 => Just(Col::Numeric),
        1 => Just(Col::Name),
        1 => Just(Col::Uuid),
        1 => Just(Col::Interval),
        1 => col(),
    ]
}

/// A non-NULL value of a column (as [`value`] makes them).
fn non_null(c: &Col) -> BoxedStrategy<Cell> {
    let c = c.clone();
    let v = match &c {
        Col::Array(e) => array_value(e),
        c => scalar_value(c),
    };
    let compressible = matches!(
        c,
        Col::Text | Col::Json | Col::Jsonb | Col::Bytea | Col::Numeric | Col::Array(_)
    );
    (v, any::<bool>())
        .prop_map(move |(v, compress)| Cell {
            disk: Some(to_disk(&c, &v, compress && compressible)),
            copy: v,
        })
        .boxed()
}

/// Like [`table`], with columns from `cols`, up to `max_rows` rows (three
/// in four without NULLs, so without a null bitmap) and the output columns
/// all live ones in attnum order.
fn table_of(
    cols: impl Strategy<Value = Vec<(Col, bool)>>,
    max_rows: usize,
) -> impl Strategy<Value = Table> {
    cols.prop_flat_map(move |cols| {
        let n = cols.len();
        let any_cells: Vec<_> = cols.iter().map(|(c, _)| value(c)).collect();
        let full_cells: Vec<_> = cols.iter().map(|(c, _)| non_null(c)).collect();
        let row =
            (prop_oneof![1 => any_cells, 3 => full_cells], 0..=n).prop_map(|(cells, short)| {
                // One row in four stops early.
                let keep = if short % 4 == 0 {
                    short.max(1)
                } else {
                    cells.len()
                };
                cells.into_iter().take(keep).collect::<Vec<_>>()
            });
        let missing: Vec<_> = cols
            .iter()
            .map(|(c, dropped)| {
                let v = value(c);
                let dropped = *dropped;
                proptest::option::of(v).prop_map(move |m| if dropped { None } else { m })
            })
            .collect();
        let live: Vec<usize> = (0..n).filter(|&i| !cols[i].1).collect();
        (
            Just(cols),
            missing,
            proptest::collection::vec(row, 0..max_rows),
            Just(live),
        )
    })
    .prop_map(|(cols, missing, rows, output)| Table {
        cols,
        missing,
        rows,
        output,
    })
}

fn runs_table() -> impl Strategy<Value = Table> {
    let cols = proptest::collection::vec((runs_col(), proptest::bool::weighted(0.1)), 1..24);
    table_of(cols, 60)
}

/// Output columns from `live`: 0 as they are (attnum order), 1 a subset in
/// attnum order, 2 reversed, 3 with a column twice.
fn output_of(live: &[usize], mode: u8, pick: usize) -> Vec<usize> {
    match mode % 4 {
        0 => live.to_vec(),
        1 => live
            .iter()
            .enumerate()
            .filter(|(k, _)| (pick >> (k % 16)) & 1 == 1 || *k == pick % live.len())
            .map(|(_, &i)| i)
            .collect(),
        2 => live.iter().rev().copied().collect(),
        _ => {
            let mut o = live.to_vec();
            o.insert(pick % (o.len() + 1), live[pick % live.len()]);
            o
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn fast_path_equals_reference(
        t in runs_table(),
        mode in any::<u8>(),
        pick in any::<usize>(),
        big in any::<bool>(),
    ) {
        let live = t.output.clone();
        prop_assume!(!live.is_empty());
        let output = output_of(&live, mode, pick);
        let t = Table { output, ..t };
        let bs = if big { 32768 } else { 8192 };
        let layout = t.layout().with_block_size(bs).unwrap();
        prop_assert_eq!(layout.output(), &t.output[..]);
        let pages = t.pages(bs);
        // Good pages: the rows COPY sends, fast and reference alike.
        let chunk = transcode_all(&pages, &layout).unwrap();
        prop_assert_eq!(chunk.num_rows(), t.rows.len());
        for (i, row) in t.rows.iter().enumerate() {
            prop_assert_eq!(chunk.row(i), &t.expected(row)[..], "row {}", i);
        }
        for p in &pages {
            assert_same(p, &layout)?;
        }
    }

    #[test]
    fn fast_path_equals_reference_on_mutated_pages(
        t in runs_table(),
        mode in any::<u8>(),
        pick in any::<usize>(),
        flips in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..8), 1..12),
    ) {
        let live = t.output.clone();
        prop_assume!(!live.is_empty());
        let t = Table { output: output_of(&live, mode, pick), ..t };
        let layout = t.layout();
        let mut page = t.pages(8192).swap_remove(0);
        let upper = usize::from(u16::from_le_bytes([page[14], page[15]]));
        for (at, v, bit) in flips {
            // Mostly in the tuples, sometimes one bit, sometimes anywhere.
            let at = if at % 8 == 0 {
                usize::from(at) % 8192
            } else {
                upper + usize::from(at) % (8192 - upper).max(1)
            };
            let v = if v % 2 == 0 { 1 << bit } else { v };
            if let Some(b) = page.get_mut(at) {
                *b ^= v;
            }
        }
        assert_same(&page, &layout)?;
    }

    #[test]
    fn fast_path_equals_reference_on_random_pages(
        bytes in proptest::collection::vec(any::<u8>(), 8192),
        lower in 24u16..400,
        upper in 0u16..8192,
        t in runs_table(),
        mode in any::<u8>(),
        pick in any::<usize>(),
    ) {
        let live = t.output.clone();
        prop_assume!(!live.is_empty());
        let t = Table { output: output_of(&live, mode, pick), ..t };
        let layout = t.layout();
        let mut page = bytes;
        page[10] = 0;
        page[11] = 0;
        page[12..14].copy_from_slice(&lower.to_le_bytes());
        page[14..16].copy_from_slice(&upper.to_le_bytes());
        page[16..18].copy_from_slice(&8192u16.to_le_bytes());
        page[18..20].copy_from_slice(&0x2004u16.to_le_bytes());
        assert_same(&page, &layout)?;
    }

    #[test]
    fn fast_path_equals_reference_on_original_tables(t in table(), flips in proptest::collection::vec((0usize..8192, any::<u8>()), 0..6)) {
        let layout = t.layout();
        prop_assume!(!layout.output().is_empty());
        for (i, mut page) in t.pages(8192).into_iter().enumerate() {
            if i == 0 {
                for &(at, v) in &flips {
                    page[at] ^= v;
                }
            }
            assert_same(&page, &layout)?;
        }
    }
}

/// Lineorder-like rows (the layout the fast path merges most), with NULLs,
/// short tuples and 4-byte-header, compressed and TOASTed strings mixed in:
/// fast and reference agree on every page.
#[test]
fn fast_path_lineorder_variants() {
    let mut cols = vec![Col::Int4; 6];
    cols.extend([Col::Text, Col::Text]);
    cols.extend(vec![Col::Int4; 8]);
    cols.push(Col::Text);
    let fill: Vec<FillAttr> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| FillAttr {
            // Plain storage keeps one string's 4-byte header.
            plain_storage: i == 7,
            ..c.fill()
        })
        .collect();
    for (attrs, output) in [
        (cols.clone(), (0..cols.len()).collect::<Vec<_>>()),
        (cols.clone(), vec![0, 2, 6, 9, 16]),
        (cols.clone(), vec![16, 0, 6, 6, 1]),
    ] {
        let layout =
            TupleLayout::new(attrs.iter().map(Col::attribute).collect(), output, labels()).unwrap();
        for variant in 0..8 {
            let mut b = PageBuilder::new(8192, 0);
            for i in 0..40i32 {
                let ints: Vec<Vec<u8>> = (0..14)
                    .map(|k| (i.wrapping_mul(7919) ^ (k << 20)).to_le_bytes().to_vec())
                    .collect();
                let long = "x".repeat(200 + i as usize);
                let t1 = match (variant, i % 5) {
                    (1, 0) => varlena_pglz(long.as_bytes()),
                    (2, 0) => toast_pointer(3000, 2000, 1, 2),
                    (3, _) => varlena_4b(long.as_bytes()),
                    _ => varlena_4b(format!("{:<15}", i).as_bytes()),
                };
                let t2 = varlena_4b(b"0");
                let t3 = varlena_4b(&b"TRUCK     "[..(i as usize % 11)]);
                let mut vals: Vec<Option<&[u8]>> = ints[..6].iter().map(|v| Some(&v[..])).collect();
                vals.extend([Some(&t1[..]), Some(&t2[..])]);
                vals.extend(ints[6..].iter().map(|v| Some(&v[..])));
                vals.push(Some(&t3[..]));
                match (variant, i % 3) {
                    (4, 0) => vals[3] = None,
                    (5, 0) => vals[6] = None,
                    (6, 1) => vals.truncate(12),
                    (7, _) => vals[16] = None,
                    _ => {}
                }
                let t = heap_fill_tuple(&fill, &vals);
                if b.add_tuple(&t).is_none() {
                    break;
                }
            }
            let page = b.finish();
            let ((fr, fc), (rr, rc)) = fast_and_reference(&page, &layout);
            assert_eq!(fr, rr, "variant {variant}");
            assert_eq!(fc.data, rc.data, "variant {variant}");
            assert_eq!(fc.row_starts, rc.row_starts);
            assert_eq!(fc.row_ends, rc.row_ends);
            if variant != 2 {
                assert!(fr.is_ok(), "variant {variant}: {fr:?}");
            }
        }
    }
}
