//! Encoding values and tuples in the binary COPY format, the inverse of
//! [`crate::value`] and [`crate::copy`].
//!
//! gpupgparser only reads COPY data; this exists so tests (here and in the
//! crates above) can build exact server-like input from typed values without
//! a server.

use crate::types::oid;

/// One value of a column, in PostgreSQL's own representation (epochs and
/// units as on the wire).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL: a field of length -1.
    Null,
    /// `boolean`.
    Bool(bool),
    /// `smallint`.
    Int2(i16),
    /// `integer`.
    Int4(i32),
    /// `bigint`.
    Int8(i64),
    /// `real`.
    Float4(f32),
    /// `double precision`.
    Float8(f64),
    /// `oid`.
    Oid(u32),
    /// A decimal string as `numeric_in` accepts it ("-1.50", "1e-5", "NaN",
    /// "Infinity", "-Infinity"); encoded by [`numeric_from_str`].
    Numeric(String),
    /// Already-encoded numeric bytes (for non-canonical forms in tests).
    NumericRaw(Vec<u8>),
    /// text, varchar, bpchar, name, json and enum labels.
    Text(String),
    /// Raw bytes, sent as they are (also for invalid UTF-8 in tests).
    Bytes(Vec<u8>),
    /// Days since 2000-01-01.
    Date(i32),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since 2000-01-01 (timestamp and timestamptz).
    Timestamp(i64),
    /// `interval`, its three parts as PostgreSQL keeps them.
    Interval {
        /// Microseconds of the time part.
        micros: i64,
        /// Whole days.
        days: i32,
        /// Whole months.
        months: i32,
    },
    /// `uuid`.
    Uuid([u8; 16]),
    /// JSON text; sent with the jsonb version byte 1 in front.
    Jsonb(String),
    /// An array: element type OID, `(length, lower bound)` per dimension,
    /// elements in row-major order.
    Array {
        /// OID of the element type, written in the array header.
        element_oid: u32,
        /// `(length, lower bound)` per dimension.
        dims: Vec<(i32, i32)>,
        /// The elements in row-major order.
        elements: Vec<Value>,
    },
}

impl Value {
    /// A one-dimensional array with lower bound 1 (PostgreSQL's default).
    pub fn array1(element_oid: u32, elements: Vec<Value>) -> Value {
        let dims = if elements.is_empty() {
            Vec::new()
        } else {
            vec![(elements.len() as i32, 1)]
        };
        Value::Array {
            element_oid,
            dims,
            elements,
        }
    }

    /// The send-format bytes of a non-NULL value, or `None` for NULL.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(b) => vec![u8::from(*b)],
            Value::Int2(v) => v.to_be_bytes().to_vec(),
            Value::Int4(v) => v.to_be_bytes().to_vec(),
            Value::Int8(v) => v.to_be_bytes().to_vec(),
            Value::Float4(v) => v.to_bits().to_be_bytes().to_vec(),
            Value::Float8(v) => v.to_bits().to_be_bytes().to_vec(),
            Value::Oid(v) => v.to_be_bytes().to_vec(),
            // Test input; a malformed string is a test bug, so it becomes
            // NaN's encoding rather than a panic in library code.
            Value::Numeric(s) => {
                numeric_from_str(s).unwrap_or_else(|| numeric_from_str("NaN").unwrap_or_default())
            }
            Value::NumericRaw(b) => b.clone(),
            Value::Text(s) => s.as_bytes().to_vec(),
            Value::Bytes(b) => b.clone(),
            Value::Date(v) => v.to_be_bytes().to_vec(),
            Value::Time(v) | Value::Timestamp(v) => v.to_be_bytes().to_vec(),
            Value::Interval {
                micros,
                days,
                months,
            } => {
                let mut b = Vec::with_capacity(16);
                b.extend_from_slice(&micros.to_be_bytes());
                b.extend_from_slice(&days.to_be_bytes());
                b.extend_from_slice(&months.to_be_bytes());
                b
            }
            Value::Uuid(u) => u.to_vec(),
            Value::Jsonb(s) => {
                let mut b = Vec::with_capacity(s.len() + 1);
                b.push(1);
                b.extend_from_slice(s.as_bytes());
                b
            }
            Value::Array {
                element_oid,
                dims,
                elements,
            } => {
                let elems: Vec<Option<Vec<u8>>> = elements.iter().map(Value::to_bytes).collect();
                array_bytes(*element_oid, dims, &elems)
            }
        })
    }

    /// Appends the value as a tuple field: int32 length (-1 for NULL) and
    /// the bytes.
    pub fn encode_field(&self, out: &mut Vec<u8>) {
        match self.to_bytes() {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                out.extend_from_slice(&b);
            }
        }
    }
}

/// One binary COPY tuple: int16 field count, then each field.
pub fn encode_tuple(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(values.len() as i16).to_be_bytes());
    for v in values {
        v.encode_field(&mut out);
    }
    out
}

/// A whole binary COPY stream: header, tuples, trailer.
pub fn encode_stream(rows: &[Vec<Value>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(crate::copy::SIGNATURE);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    for r in rows {
        out.extend_from_slice(&encode_tuple(r));
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Array send format from already-encoded elements (`None` = NULL).
pub fn array_bytes(element_oid: u32, dims: &[(i32, i32)], elements: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(dims.len() as i32).to_be_bytes());
    let has_null = elements.iter().any(Option::is_none);
    b.extend_from_slice(&i32::from(has_null).to_be_bytes());
    b.extend_from_slice(&element_oid.to_be_bytes());
    for (d, l) in dims {
        b.extend_from_slice(&d.to_be_bytes());
        b.extend_from_slice(&l.to_be_bytes());
    }
    for e in elements {
        match e {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
        }
    }
    b
}

/// The array type OID PostgreSQL uses for a built-in element type, for
/// tests that want realistic headers (0 when unknown).
pub fn element_oid_of(pg: &crate::PgType) -> u32 {
    use crate::PgType::*;
    match pg {
        Bool => oid::BOOL,
        Int2 => oid::INT2,
        Int4 => oid::INT4,
        Int8 => oid::INT8,
        Float4 => oid::FLOAT4,
        Float8 => oid::FLOAT8,
        Oid => oid::OID,
        Numeric(_) => oid::NUMERIC,
        Text => oid::TEXT,
        Bytea => oid::BYTEA,
        Date => oid::DATE,
        Time => oid::TIME,
        Timestamp => oid::TIMESTAMP,
        Timestamptz => oid::TIMESTAMPTZ,
        Interval => oid::INTERVAL,
        Uuid => oid::UUID,
        Json => oid::JSON,
        Jsonb => oid::JSONB,
        Enum | Array(_) => 0,
    }
}

/// Encodes a decimal string in numeric's send format, as `numeric_send`
/// would send the value `numeric_in` makes of it: `dscale` is the number of
/// fractional digits written (less the exponent, at least 0), digits are
/// base 10000 with leading and trailing zero digits stripped, zero is
/// positive. Accepts an optional sign, digits with an optional point, an
/// optional `e`/`E` exponent, and `NaN` / `Infinity` / `-Infinity`
/// (case-insensitive). `None` if the string is not such a number.
pub fn numeric_from_str(s: &str) -> Option<Vec<u8>> {
    use crate::value::numeric_sign::*;
    let special = |sign: u16| {
        let mut b = vec![0, 0, 0, 0];
        b.extend_from_slice(&sign.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        Some(b)
    };
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" => return special(NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => return special(PINF),
        "-infinity" | "-inf" => return special(NINF),
        _ => {}
    }
    let (negative, t) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let dscale = (frac_part.len() as i64 - exp).max(0);
    if dscale > 0x3fff {
        return None;
    }
    // All decimal digits, and the position of the point among them.
    let digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|c| c - b'0')
        .collect();
    let point = int_part.len() as i64 + exp;
    // Pad on the left so the point falls on a base-10000 boundary.
    let pad_left = (4 - point.rem_euclid(4)) % 4;
    let mut padded = vec![0u8; pad_left as usize];
    padded.extend_from_slice(&digits);
    while !padded.len().is_multiple_of(4) {
        padded.push(0);
    }
    let mut weight = (point + pad_left) / 4 - 1;
    let mut groups: Vec<u16> = padded
        .chunks(4)
        .map(|c| c.iter().fold(0u16, |a, &d| a * 10 + u16::from(d)))
        .collect();
    let lead = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..lead);
    weight -= lead as i64;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let sign = if negative && !groups.is_empty() {
        NEG
    } else {
        POS
    };
    if groups.is_empty() {
        weight = 0;
    }
    let weight = i16::try_from(weight).ok()?;
    let mut b = Vec::with_capacity(8 + 2 * groups.len());
    b.extend_from_slice(&(groups.len() as u16).to_be_bytes());
    b.extend_from_slice(&weight.to_be_bytes());
    b.extend_from_slice(&sign.to_be_bytes());
    b.extend_from_slice(&(dscale as u16).to_be_bytes());
    for g in groups {
        b.extend_from_slice(&g.to_be_bytes());
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_encoding_matches_postgres() {
        // SELECT numeric_send('12345678.90') = 0003 0001 0000 0002 04d2 162e 2328
        assert_eq!(
            numeric_from_str("12345678.90").unwrap(),
            vec![0, 3, 0, 1, 0, 0, 0, 2, 0x04, 0xd2, 0x16, 0x2e, 0x23, 0x28]
        );
        // numeric_send('-0.0001') = 0001 ffff 4000 0004 0001
        assert_eq!(
            numeric_from_str("-0.0001").unwrap(),
            vec![0, 1, 0xff, 0xff, 0x40, 0, 0, 4, 0, 1]
        );
        // numeric_send('0.00') = 0000 0000 0000 0002
        assert_eq!(
            numeric_from_str("-0.00").unwrap(),
            vec![0, 0, 0, 0, 0, 0, 0, 2]
        );
        assert_eq!(
            numeric_from_str("NaN").unwrap(),
            vec![0, 0, 0, 0, 0xc0, 0, 0, 0]
        );
        assert!(numeric_from_str("1.2.3").is_none());
        assert!(numeric_from_str("").is_none());
    }

    #[test]
    fn tuple_layout() {
        let t = encode_tuple(&[Value::Int4(7), Value::Null, Value::Text("ab".into())]);
        assert_eq!(
            t,
            vec![0, 3, 0, 0, 0, 4, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, b'a', b'b']
        );
        let s = encode_stream(&[vec![Value::Bool(true)]]);
        assert_eq!(crate::copy::parse_header(&s).unwrap(), 19);
        assert!(crate::copy::is_trailer(&s[s.len() - 2..]));
    }
}
