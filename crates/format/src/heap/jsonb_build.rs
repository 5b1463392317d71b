//! jsonb values written in their on-disk form as PostgreSQL's
//! `convertToJsonb` writes them, with the text `jsonb_out` prints for them:
//! input for the tests of [`super::jsonb`] and of page readers.

use super::build::numeric_to_disk;
use crate::encode::numeric_from_str;

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as `numeric_out` prints it (no exponent).
    Number(String),
    /// A string (without a NUL: jsonb refuses `\u0000`).
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object's pairs, in input order (duplicates allowed: the last
    /// one counts, as in jsonb).
    Object(Vec<(String, Json)>),
}

const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_FARRAY: u32 = 0x4000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JB_OFFSET_STRIDE: usize = 32;

/// An object's pairs as jsonb keeps them: one per key (the last), sorted
/// by key length, then bytes.
fn unique_pairs(pairs: &[(String, Json)]) -> Vec<(&str, &Json)> {
    let mut v: Vec<(usize, &str, &Json)> = pairs
        .iter()
        .enumerate()
        .map(|(i, (k, j))| (i, k.as_str(), j))
        .collect();
    v.sort_by(|a, b| {
        (a.1.len(), a.1.as_bytes())
            .cmp(&(b.1.len(), b.1.as_bytes()))
            .then(b.0.cmp(&a.0))
    });
    v.dedup_by(|later, first| later.1 == first.1);
    v.into_iter().map(|(_, k, j)| (k, j)).collect()
}

/// The varlena payload (after the header) of the jsonb holding `j`, as
/// `convertToJsonb` writes it. `None` for a number `numeric_from_str`
/// does not read.
pub fn jsonb_payload(j: &Json) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    match j {
        Json::Array(_) | Json::Object(_) => {
            container(&mut buf, j)?;
        }
        scalar => {
            // A raw scalar: a one-element array flagged JB_FSCALAR.
            buf.extend_from_slice(&(JB_FARRAY | JB_FSCALAR | 1).to_le_bytes());
            buf.extend_from_slice(&[0; 4]);
            let e = child(&mut buf, scalar)?;
            let len = (e & 0x0FFF_FFFF) | JENTRY_HAS_OFF;
            buf[4..8].copy_from_slice(&((e & 0x7000_0000) | len).to_le_bytes());
        }
    }
    Some(buf)
}

fn pad_to_int(buf: &mut Vec<u8>) -> u32 {
    let pad = (4 - buf.len() % 4) % 4;
    buf.resize(buf.len() + pad, 0);
    pad as u32
}

/// Appends the container `j` (padding first) and returns its length with
/// the padding.
fn container(buf: &mut Vec<u8>, j: &Json) -> Option<u32> {
    let start = buf.len();
    pad_to_int(buf);
    let children: Vec<&Json>;
    let keys: Vec<Json>;
    let header = match j {
        Json::Array(items) => {
            children = items.iter().collect();
            JB_FARRAY | items.len() as u32
        }
        Json::Object(pairs) => {
            let u = unique_pairs(pairs);
            keys = u.iter().map(|(k, _)| Json::String(k.to_string())).collect();
            children = keys.iter().chain(u.iter().map(|&(_, v)| v)).collect();
            JB_FOBJECT | u.len() as u32
        }
        _ => return None,
    };
    buf.extend_from_slice(&header.to_le_bytes());
    let entries_at = buf.len();
    buf.resize(entries_at + 4 * children.len(), 0);
    let mut total = 0u32;
    for (i, c) in children.iter().enumerate() {
        let e = child(buf, c)?;
        total += e & 0x0FFF_FFFF;
        let e = if i % JB_OFFSET_STRIDE == 0 {
            (e & 0x7000_0000) | total | JENTRY_HAS_OFF
        } else {
            e
        };
        buf[entries_at + 4 * i..entries_at + 4 * i + 4].copy_from_slice(&e.to_le_bytes());
    }
    Some((buf.len() - start) as u32)
}

/// Appends the data of child `j` and returns its JEntry (type and
/// length). Padding is counted from the payload's start, which is where
/// PostgreSQL counts it from modulo 4.
fn child(buf: &mut Vec<u8>, j: &Json) -> Option<u32> {
    Some(match j {
        Json::Null => 0x4000_0000,
        Json::Bool(false) => 0x2000_0000,
        Json::Bool(true) => 0x3000_0000,
        Json::String(s) => {
            buf.extend_from_slice(s.as_bytes());
            s.len() as u32
        }
        Json::Number(n) => {
            let pad = pad_to_int(buf);
            let d = numeric_to_disk(&numeric_from_str(n)?)?;
            buf.extend_from_slice(&d);
            0x1000_0000 | (pad + d.len() as u32)
        }
        c => 0x5000_0000 | container(buf, c)?,
    })
}

/// The text `jsonb_out` prints for `j`.
pub fn jsonb_text(j: &Json) -> String {
    let mut s = String::new();
    write_text(j, &mut s);
    s
}

fn write_text(j: &Json, out: &mut String) {
    match j {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(n),
        Json::String(s) => write_string(s, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_text(item, out);
            }
            out.push(']');
        }
        Json::Object(pairs) => {
            out.push('{');
            for (i, (k, v)) in unique_pairs(pairs).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(k, out);
                out.push_str(": ");
                write_text(v, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses JSON text (as [`jsonb_text`] prints it, or any JSON whose
/// numbers `numeric_out` would print unchanged); `None` if it is not.
pub fn parse_json(text: &str) -> Option<Json> {
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
    };
    let j = p.value()?;
    p.ws();
    (p.at == p.s.len()).then_some(j)
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.s.get(self.at) == Some(&b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn word(&mut self, w: &str) -> bool {
        if self.s[self.at..].starts_with(w.as_bytes()) {
            self.at += w.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Json> {
        self.ws();
        match *self.s.get(self.at)? {
            b'{' => {
                self.at += 1;
                let mut pairs = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.ws();
                        let k = self.string()?;
                        if !self.eat(b':') {
                            return None;
                        }
                        pairs.push((k, self.value()?));
                        if self.eat(b'}') {
                            break;
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                Some(Json::Object(pairs))
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value()?);
                        if self.eat(b']') {
                            break;
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                Some(Json::Array(items))
            }
            b'"' => self.string().map(Json::String),
            b't' if self.word("true") => Some(Json::Bool(true)),
            b'f' if self.word("false") => Some(Json::Bool(false)),
            b'n' if self.word("null") => Some(Json::Null),
            _ => {
                let start = self.at;
                while matches!(
                    self.s.get(self.at),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.at += 1;
                }
                let n = std::str::from_utf8(&self.s[start..self.at]).ok()?;
                (!n.is_empty()).then(|| Json::Number(n.to_string()))
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = std::str::from_utf8(self.s.get(self.at..self.at + 4)?).ok()?;
        self.at += 4;
        u32::from_str_radix(h, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        if self.s.get(self.at) != Some(&b'"') {
            return None;
        }
        self.at += 1;
        let mut out = String::new();
        loop {
            let start = self.at;
            while !matches!(self.s.get(self.at), Some(b'"' | b'\\') | None) {
                self.at += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[start..self.at]).ok()?);
            match *self.s.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(out);
                }
                _ => {
                    let e = *self.s.get(self.at + 1)?;
                    self.at += 2;
                    out.push(match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                if !self.word("\\u") {
                                    return None;
                                }
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xD800) << 10) + lo.checked_sub(0xDC00)?
                            } else {
                                hi
                            };
                            char::from_u32(c)?
                        }
                        _ => return None,
                    });
                }
            }
        }
    }
}
