//! Tests of the jsonb printer: hand-made values, malformed ones, values
//! written by `jsonb_build` against the text it expects, and arbitrary
//! bytes (never a panic).

use proptest::prelude::*;

use super::*;
use crate::heap::build::numeric_to_disk;
use crate::heap::jsonb_build::{jsonb_payload, jsonb_text, parse_json, Json};

fn print(payload: &[u8]) -> Result<String, JsonbError> {
    let mut out = b"prefix".to_vec();
    let r = jsonb_to_text(payload, &mut out, &mut Vec::new());
    match r {
        // Damaged strings may not be UTF-8.
        Ok(()) => Ok(String::from_utf8_lossy(&out[6..]).into_owned()),
        Err(e) => {
            assert_eq!(out, b"prefix", "the output is left as it was");
            Err(e)
        }
    }
}

fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn numeric(text: &str) -> Vec<u8> {
    numeric_to_disk(&crate::encode::numeric_from_str(text).unwrap()).unwrap()
}

const ARRAY: u32 = JB_FARRAY;
const OBJECT: u32 = JB_FOBJECT;
const SCALAR: u32 = JB_FARRAY | JB_FSCALAR | 1;
const OFF: u32 = JENTRY_HAS_OFF;

#[test]
fn hand_made_values() {
    assert_eq!(print(&words(&[OBJECT])).unwrap(), "{}");
    assert_eq!(print(&words(&[ARRAY])).unwrap(), "[]");
    assert_eq!(
        print(&words(&[SCALAR, OFF | JENTRY_ISBOOL_TRUE])).unwrap(),
        "true"
    );
    assert_eq!(
        print(&words(&[SCALAR, OFF | JENTRY_ISNULL])).unwrap(),
        "null"
    );
    let mut s = words(&[SCALAR, OFF | 5]);
    s.extend_from_slice(b"a\"\\\n\x01");
    assert_eq!(print(&s).unwrap(), r#""a\"\\\n\u0001""#);
    // {"a": -1.50, "bc": [false, null, "é"]}: keys, then values; the
    // numeric after 3 bytes of keys starts with 1 byte of padding, the
    // nested array after it with what aligns it.
    let n = numeric("-1.50");
    let mut inner = words(&[ARRAY | 3, OFF | JENTRY_ISBOOL_FALSE, JENTRY_ISNULL, 2]);
    inner.extend_from_slice("é".as_bytes());
    let num_end = 3 + 1 + n.len();
    let pad = (4 - num_end % 4) % 4;
    let mut v = words(&[
        OBJECT | 2,
        OFF | 1,
        2,
        JENTRY_ISNUMERIC | (1 + n.len()) as u32,
        JENTRY_ISCONTAINER | (pad + inner.len()) as u32,
    ]);
    v.extend_from_slice(b"abc\0");
    v.extend_from_slice(&n);
    v.resize(v.len() + pad, 0);
    v.extend_from_slice(&inner);
    assert_eq!(
        print(&v).unwrap(),
        r#"{"a": -1.50, "bc": [false, null, "é"]}"#
    );
    // Offsets stored every 32 children, lengths in between.
    let mut entries = vec![ARRAY | 40];
    let mut data = Vec::new();
    for i in 0..40u32 {
        data.push(b'a' + (i % 26) as u8);
        entries.push(if i % 32 == 0 { OFF | (i + 1) } else { 1 });
    }
    let mut a = words(&entries);
    a.extend_from_slice(&data);
    let want: Vec<String> = data.iter().map(|&b| format!("\"{}\"", b as char)).collect();
    assert_eq!(print(&a).unwrap(), format!("[{}]", want.join(", ")));
}

#[test]
fn malformed_values_are_errors() {
    use JsonbError::*;
    let cases: Vec<(Vec<u8>, JsonbError)> = vec![
        (vec![], Truncated("header")),
        (vec![0, 0, 0], Truncated("header")),
        (words(&[0]), Header(0)),
        (words(&[OBJECT | ARRAY]), Header(OBJECT | ARRAY)),
        (words(&[ARRAY | 0x8000_0000]), Header(ARRAY | 0x8000_0000)),
        (
            words(&[ARRAY | JB_FSCALAR | 2]),
            Header(ARRAY | JB_FSCALAR | 2),
        ),
        (
            words(&[OBJECT | JB_FSCALAR | 1]),
            Header(OBJECT | JB_FSCALAR | 1),
        ),
        (words(&[ARRAY | 2, OFF]), Truncated("JEntry array")),
        (words(&[OBJECT | 1, OFF]), Truncated("JEntry array")),
        (words(&[ARRAY | 1, OFF | 4]), Bounds),
        (words(&[ARRAY | 1, 0x0FFF_FFFF]), Bounds),
        (words(&[ARRAY | 2, OFF | 4, OFF | 2, 0]), Bounds),
        (words(&[ARRAY | 1, OFF, 0]), Bounds),
        (
            words(&[OBJECT | 1, OFF | JENTRY_ISNULL, JENTRY_ISNULL]),
            KeyNotString,
        ),
        (
            words(&[ARRAY | 1, OFF | 0x6000_0000]),
            Entry(OFF | 0x6000_0000),
        ),
        (
            words(&[ARRAY | 1, OFF | JENTRY_ISNULL | 4, 0]),
            Entry(OFF | JENTRY_ISNULL | 4),
        ),
        (
            words(&[SCALAR, OFF | JENTRY_ISCONTAINER | 4, ARRAY]),
            Entry(OFF | JENTRY_ISCONTAINER | 4),
        ),
        (
            words(&[
                ARRAY | 1,
                OFF | JENTRY_ISCONTAINER | 8,
                SCALAR,
                OFF | JENTRY_ISNULL,
            ]),
            Header(SCALAR),
        ),
        (
            words(&[ARRAY | 1, OFF | JENTRY_ISCONTAINER | 4, 0]),
            Header(0),
        ),
        (
            [
                words(&[ARRAY | 1, OFF | JENTRY_ISCONTAINER | 2]),
                vec![0, 0],
            ]
            .concat(),
            Truncated("header"),
        ),
        (words(&[ARRAY | 1, OFF | JENTRY_ISNUMERIC | 4, 0]), Numeric),
        (
            [words(&[ARRAY | 1, OFF | JENTRY_ISNUMERIC | 2]), vec![3, 0]].concat(),
            Numeric,
        ),
        (
            {
                let mut s = words(&[SCALAR, OFF | 3]);
                s.extend_from_slice(b"a\0b");
                s
            },
            NulInString,
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(print(&bytes), Err(want), "{bytes:02x?}");
    }
    // A numeric with an odd number of digit bytes.
    let mut n = numeric("12345678");
    n.push(0);
    n[0] = n[0].wrapping_add(4);
    let mut s = words(&[SCALAR, OFF | JENTRY_ISNUMERIC | n.len() as u32]);
    s.extend_from_slice(&n);
    assert_eq!(print(&s), Err(Numeric));
}

#[test]
fn deep_nesting_is_refused_not_followed() {
    let mut j = Json::Null;
    for _ in 0..JSONB_MAX_DEPTH {
        j = Json::Array(vec![j]);
    }
    let ok = jsonb_payload(&j).unwrap();
    assert_eq!(print(&ok).unwrap(), jsonb_text(&j));
    let deeper = jsonb_payload(&Json::Array(vec![j])).unwrap();
    assert_eq!(print(&deeper), Err(JsonbError::TooDeep));
}

#[test]
fn builder_matches_postgres_layout() {
    // What PostgreSQL 15 writes for '{"b": 1, "a": [true]}'::jsonb (keys
    // sorted by length then bytes, the numeric aligned):
    let j = parse_json(r#"{"b": 1, "a": [true], "b": 2}"#).unwrap();
    assert_eq!(jsonb_text(&j), r#"{"a": [true], "b": 2}"#);
    let p = jsonb_payload(&j).unwrap();
    assert_eq!(&p[..4], &(OBJECT | 2).to_le_bytes());
    assert_eq!(print(&p).unwrap(), jsonb_text(&j));
}

fn number() -> impl Strategy<Value = String> {
    (any::<i64>(), 0u32..12, 0u32..30).prop_map(|(m, scale, zeros)| {
        let digits = format!("{}{}", m.unsigned_abs(), "0".repeat(zeros as usize));
        let sign = if m < 0 { "-" } else { "" };
        let scale = scale as usize;
        if scale == 0 {
            return format!("{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        let zero = m == 0;
        format!("{}{int}.{frac}", if zero { "" } else { sign })
    })
}

fn json() -> impl Strategy<Value = Json> {
    let text = "[^\u{0}]{0,12}";
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number().prop_map(Json::Number),
        text.prop_map(Json::String),
    ];
    leaf.prop_recursive(6, 200, 40, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..40).prop_map(Json::Array),
            prop::collection::vec(("[a-c]{0,3}|[^\u{0}]{0,6}", inner), 0..40)
                .prop_map(Json::Object),
        ]
    })
}

proptest! {
    #[test]
    fn prints_what_jsonb_out_prints(j in json()) {
        let p = jsonb_payload(&j).unwrap();
        prop_assert_eq!(print(&p).unwrap(), jsonb_text(&j));
        // The text reads back as the same value.
        prop_assert_eq!(parse_json(&jsonb_text(&j)).map(|k| jsonb_text(&k)), Some(jsonb_text(&j)));
    }

    #[test]
    fn damaged_values_never_panic(j in json(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut p = jsonb_payload(&j).unwrap();
        let i = at.index(p.len());
        p[i] = byte;
        let _ = print(&p);
        p.truncate(cut.index(p.len() + 1));
        let _ = print(&p);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = print(&b);
        // Containers' headers are where arbitrary bytes go wrong first:
        // give them a valid one.
        let mut s = words(&[ARRAY | (b.len() as u32 / 8)]);
        s.extend_from_slice(&b);
        let _ = print(&s);
    }
}
