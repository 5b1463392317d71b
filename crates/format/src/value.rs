//! Decoding single values from their binary send format.
//!
//! Each function takes exactly the bytes of one non-NULL field (what follows
//! its int32 length in a binary COPY tuple) and checks them the way the
//! type's `*_recv` function in PostgreSQL would, so that anything the server
//! could not have sent is an error rather than a wrong value. Nothing here
//! allocates except [`Numeric::write_text`], which appends to a caller's
//! buffer. Integers on the wire are big-endian.

use thiserror::Error;

/// Days from 1970-01-01 (the Unix and Arrow epoch) to 2000-01-01 (the
/// PostgreSQL epoch).
pub const UNIX_TO_PG_EPOCH_DAYS: i32 = 10_957;

/// Microseconds from 1970-01-01 to 2000-01-01.
pub const UNIX_TO_PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Microseconds in a day: the largest valid `time` (24:00:00).
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// `date 'infinity'` on the wire (PostgreSQL's `DATEVAL_NOEND`).
pub const DATE_INFINITY: i32 = i32::MAX;
/// `date '-infinity'` on the wire (`DATEVAL_NOBEGIN`).
pub const DATE_NEG_INFINITY: i32 = i32::MIN;
/// `timestamp 'infinity'` on the wire (`DT_NOEND`).
pub const TIMESTAMP_INFINITY: i64 = i64::MAX;
/// `timestamp '-infinity'` on the wire (`DT_NOBEGIN`).
pub const TIMESTAMP_NEG_INFINITY: i64 = i64::MIN;

/// Most dimensions an array may have (PostgreSQL's `MAXDIM`).
pub const ARRAY_MAX_DIMS: usize = 6;
/// Most elements an array may have (PostgreSQL's `MaxArraySize`).
pub const ARRAY_MAX_ELEMENTS: u64 = 0x3fff_ffff / 8;

/// Numeric sign words (PostgreSQL's numeric.c).
pub mod numeric_sign {
    /// Positive, finite.
    pub const POS: u16 = 0x0000;
    /// Negative, finite.
    pub const NEG: u16 = 0x4000;
    /// Not a number.
    pub const NAN: u16 = 0xC000;
    /// Positive infinity (PostgreSQL 14+).
    pub const PINF: u16 = 0xD000;
    /// Negative infinity (PostgreSQL 14+).
    pub const NINF: u16 = 0xF000;
}

/// The display scale is a 14-bit field (`NUMERIC_DSCALE_MASK`).
const NUMERIC_DSCALE_MASK: u16 = 0x3FFF;
/// Numeric digits are base 10000.
const NBASE: u16 = 10_000;

/// What is wrong with one value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    /// A fixed-size value of the wrong length.
    #[error("value has {found} bytes, expected {expected}")]
    WrongLength {
        /// The type's size.
        expected: usize,
        /// The value's bytes.
        found: usize,
    },
    /// A part of a variable-size value runs past its end.
    #[error("value is truncated: {what} needs {needed} bytes, {found} left")]
    Truncated {
        /// The part being read (a header, the digits, an element).
        what: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left in the value.
        found: usize,
    },
    /// Bytes left after a complete value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// A numeric sign word that is none of positive, negative, NaN, ±Infinity.
    #[error("invalid numeric sign word {0:#06x}")]
    NumericSign(u16),
    /// A numeric display scale outside its 14 bits.
    #[error("invalid numeric display scale {0:#06x}")]
    NumericDscale(u16),
    /// A base-10000 digit of 10000 or more.
    #[error("invalid numeric digit {0} (base-10000 digits are 0..=9999)")]
    NumericDigit(u16),
    /// NaN or ±Infinity where a decimal is wanted.
    #[error("numeric {0} has no decimal representation")]
    NumericNotFinite(&'static str),
    /// A numeric with more integer digits than its Decimal128 type holds.
    #[error("numeric value does not fit numeric({precision},{scale})")]
    NumericOverflow {
        /// The decimal's precision.
        precision: u8,
        /// The decimal's scale.
        scale: i8,
    },
    /// A numeric with digits below its declared scale, which the server
    /// never sends for a column of that type.
    #[error(
        "numeric value has more than {scale} fractional digits, impossible for its declared scale"
    )]
    NumericInexact {
        /// The declared scale.
        scale: i8,
    },
    /// A `time` outside one day.
    #[error("time {0} µs is outside 00:00:00..=24:00:00")]
    TimeRange(i64),
    /// A value that does not fit its Arrow type after the change of epoch or unit.
    #[error("{what} {value} is out of Arrow's range")]
    OutOfRange {
        /// The quantity (days, microseconds...).
        what: &'static str,
        /// Its value before the conversion.
        value: i64,
    },
    /// A jsonb version byte other than 1.
    #[error("unsupported jsonb format version {0} (only 1 exists)")]
    JsonbVersion(u8),
    /// A jsonb value without even its version byte.
    #[error("jsonb value is empty (no version byte)")]
    JsonbEmpty,
    /// An array with a negative number of dimensions or more than six.
    #[error("array has {0} dimensions (0..=6 allowed)")]
    ArrayDims(i32),
    /// Array header flags other than "has nulls" (0 or 1).
    #[error("invalid array flags {0} (0 or 1 allowed)")]
    ArrayFlags(i32),
    /// A negative dimension, or one whose upper bound overflows.
    #[error("invalid array dimension {dim} with lower bound {lower}")]
    ArrayDim {
        /// The dimension's length.
        dim: i32,
        /// Its lower bound.
        lower: i32,
    },
    /// More elements than PostgreSQL allows in one array.
    #[error("array has more than {ARRAY_MAX_ELEMENTS} elements")]
    ArrayTooLarge,
    /// An element length below -1 (the NULL marker).
    #[error("array element {index} has invalid length {length}")]
    ArrayElementLength {
        /// Index of the element (0-based).
        index: usize,
        /// Its length word.
        length: i32,
    },
    /// Text that is not UTF-8.
    #[error("invalid UTF-8 at byte {0} of the value")]
    Utf8(usize),
}

/// Reads `N` bytes of a fixed-size value, checking the length exactly.
#[inline]
fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], ValueError> {
    b.try_into().map_err(|_| ValueError::WrongLength {
        expected: N,
        found: b.len(),
    })
}

/// `boolean`: one byte; like `boolrecv`, any non-zero byte is true.
#[inline]
pub fn bool(b: &[u8]) -> Result<bool, ValueError> {
    Ok(fixed::<1>(b)?[0] != 0)
}

/// `smallint`.
#[inline]
pub fn int2(b: &[u8]) -> Result<i16, ValueError> {
    Ok(i16::from_be_bytes(fixed(b)?))
}

/// `integer`.
#[inline]
pub fn int4(b: &[u8]) -> Result<i32, ValueError> {
    Ok(i32::from_be_bytes(fixed(b)?))
}

/// `bigint`.
#[inline]
pub fn int8(b: &[u8]) -> Result<i64, ValueError> {
    Ok(i64::from_be_bytes(fixed(b)?))
}

/// `real`: the IEEE bits as sent, so NaN payloads, ±Inf and -0 survive.
#[inline]
pub fn float4(b: &[u8]) -> Result<f32, ValueError> {
    Ok(f32::from_bits(u32::from_be_bytes(fixed(b)?)))
}

/// `double precision`: the IEEE bits as sent.
#[inline]
pub fn float8(b: &[u8]) -> Result<f64, ValueError> {
    Ok(f64::from_bits(u64::from_be_bytes(fixed(b)?)))
}

/// `oid`.
#[inline]
pub fn oid(b: &[u8]) -> Result<u32, ValueError> {
    Ok(u32::from_be_bytes(fixed(b)?))
}

/// `date`: days since 2000-01-01; `i32::MAX` / `i32::MIN` are ±infinity.
#[inline]
pub fn date(b: &[u8]) -> Result<i32, ValueError> {
    int4(b)
}

/// A `date` as days since 1970-01-01 (Arrow `Date32`). ±infinity stay
/// `i32::MAX` / `i32::MIN`, unshifted, so they remain recognizable.
#[inline]
pub fn date_to_unix_days(pg_days: i32) -> Result<i32, ValueError> {
    if pg_days == DATE_INFINITY || pg_days == DATE_NEG_INFINITY {
        return Ok(pg_days);
    }
    pg_days
        .checked_add(UNIX_TO_PG_EPOCH_DAYS)
        .ok_or(ValueError::OutOfRange {
            what: "date",
            value: i64::from(pg_days),
        })
}

/// `time`: microseconds since midnight, 0..=24:00:00 as `time_recv` checks.
#[inline]
pub fn time(b: &[u8]) -> Result<i64, ValueError> {
    let v = int8(b)?;
    if !(0..=MICROS_PER_DAY).contains(&v) {
        return Err(ValueError::TimeRange(v));
    }
    Ok(v)
}

/// `timestamp` / `timestamptz`: microseconds since 2000-01-01 (UTC for
/// timestamptz); `i64::MAX` / `i64::MIN` are ±infinity.
#[inline]
pub fn timestamp(b: &[u8]) -> Result<i64, ValueError> {
    int8(b)
}

/// A timestamp as microseconds since 1970-01-01. ±infinity stay
/// `i64::MAX` / `i64::MIN`; a finite value too close to them to shift (after
/// about 294247 AD) is an error rather than a silent wrap.
#[inline]
pub fn timestamp_to_unix_micros(pg_micros: i64) -> Result<i64, ValueError> {
    if pg_micros == TIMESTAMP_INFINITY || pg_micros == TIMESTAMP_NEG_INFINITY {
        return Ok(pg_micros);
    }
    pg_micros
        .checked_add(UNIX_TO_PG_EPOCH_MICROS)
        .ok_or(ValueError::OutOfRange {
            what: "timestamp",
            value: pg_micros,
        })
}

/// An `interval` as PostgreSQL keeps it: the three parts are independent
/// (a month is not a fixed number of days, nor a day of microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interval {
    /// Microseconds of the time part.
    pub micros: i64,
    /// Whole days.
    pub days: i32,
    /// Whole months.
    pub months: i32,
}

/// `interval`: int64 microseconds, int32 days, int32 months.
#[inline]
pub fn interval(b: &[u8]) -> Result<Interval, ValueError> {
    let a: [u8; 16] = fixed(b)?;
    Ok(Interval {
        micros: i64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        days: i32::from_be_bytes([a[8], a[9], a[10], a[11]]),
        months: i32::from_be_bytes([a[12], a[13], a[14], a[15]]),
    })
}

/// `uuid`: 16 bytes in network order.
#[inline]
pub fn uuid(b: &[u8]) -> Result<[u8; 16], ValueError> {
    fixed(b)
}

/// `jsonb`: a format version byte (1) and then the JSON text. Returns the
/// text bytes (not yet checked as UTF-8).
#[inline]
pub fn jsonb(b: &[u8]) -> Result<&[u8], ValueError> {
    match b.split_first() {
        None => Err(ValueError::JsonbEmpty),
        Some((1, text)) => Ok(text),
        Some((&v, _)) => Err(ValueError::JsonbVersion(v)),
    }
}

/// Text-like values (`text`, `varchar`, `bpchar`, `name`, `json`, enum
/// labels): the bytes as UTF-8.
pub fn text(b: &[u8]) -> Result<&str, ValueError> {
    std::str::from_utf8(b).map_err(|e| ValueError::Utf8(e.valid_up_to()))
}

/// Which special value a numeric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericKind {
    /// A number: sign, weight and digits apply.
    Finite,
    /// `NaN`.
    NaN,
    /// `Infinity` (PostgreSQL 14+).
    PosInf,
    /// `-Infinity` (PostgreSQL 14+).
    NegInf,
}

/// A parsed, normalized `numeric`: `±Σ digits[i] × 10000^(weight - i)`,
/// shown with `dscale` fractional decimal digits.
///
/// Normalized as `numeric_recv` + `make_result` leave it: leading and
/// trailing zero digits stripped, zero is positive, and digits below
/// `dscale` are truncated away when converted (numeric_recv's `trunc_var`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numeric<'a> {
    /// Finite or which special value.
    pub kind: NumericKind,
    /// The sign (never set for zero).
    pub negative: bool,
    /// Weight of the first digit; i32 because stripping leading zero digits
    /// can move it below i16::MIN.
    pub weight: i32,
    /// Display scale: decimal digits shown after the point.
    pub dscale: u16,
    /// Base-10000 digits, big-endian u16 pairs, each checked < 10000; no
    /// leading or trailing zero digit.
    digits: &'a [u8],
}

/// Powers of ten that fit an i128 (10^0..=10^38).
const POW10: [i128; 39] = {
    let mut t = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// 10^n as u16 for n in 0..=4 (digit arithmetic inside one base-10000 digit).
const POW10_U16: [u16; 5] = [1, 10, 100, 1000, 10000];

/// `numeric`: int16 ndigits, int16 weight, uint16 sign, uint16 dscale, then
/// ndigits int16 base-10000 digits. Validated like `numeric_recv`.
pub fn numeric(b: &[u8]) -> Result<Numeric<'_>, ValueError> {
    let header: &[u8; 8] =
        b.get(..8)
            .and_then(|h| h.try_into().ok())
            .ok_or(ValueError::Truncated {
                what: "numeric header",
                needed: 8,
                found: b.len(),
            })?;
    let ndigits = u16::from_be_bytes([header[0], header[1]]) as usize;
    let mut weight = i32::from(i16::from_be_bytes([header[2], header[3]]));
    let sign = u16::from_be_bytes([header[4], header[5]]);
    let dscale = u16::from_be_bytes([header[6], header[7]]);
    let kind = match sign {
        numeric_sign::POS | numeric_sign::NEG => NumericKind::Finite,
        numeric_sign::NAN => NumericKind::NaN,
        numeric_sign::PINF => NumericKind::PosInf,
        numeric_sign::NINF => NumericKind::NegInf,
        s => return Err(ValueError::NumericSign(s)),
    };
    if dscale & NUMERIC_DSCALE_MASK != dscale {
        return Err(ValueError::NumericDscale(dscale));
    }
    let body = &b[8..];
    let needed = ndigits * 2;
    if body.len() < needed {
        return Err(ValueError::Truncated {
            what: "numeric digits",
            needed,
            found: body.len(),
        });
    }
    if body.len() > needed {
        return Err(ValueError::TrailingBytes(body.len() - needed));
    }
    let mut digits = body;
    for d in digits.chunks_exact(2) {
        let d = u16::from_be_bytes([d[0], d[1]]);
        if d >= NBASE {
            return Err(ValueError::NumericDigit(d));
        }
    }
    if kind != NumericKind::Finite {
        // make_result ignores everything but the sign of a special value.
        return Ok(Numeric {
            kind,
            negative: kind == NumericKind::NegInf,
            weight: 0,
            dscale: 0,
            digits: &[],
        });
    }
    while let [0, 0, rest @ ..] = digits {
        digits = rest;
        weight -= 1;
    }
    while let [rest @ .., 0, 0] = digits {
        digits = rest;
    }
    let negative = sign == numeric_sign::NEG && !digits.is_empty();
    if digits.is_empty() {
        weight = 0;
    }
    Ok(Numeric {
        kind,
        negative,
        weight,
        dscale,
        digits,
    })
}

/// `numeric` straight to a scaled i128, as [`Numeric::to_i128`] of
/// [`numeric`]. Values of up to four base-10000 digits that need no
/// rounding (all of a `numeric(p, s)` column with p <= 16) are converted
/// without the general parse; anything else takes the general path.
#[inline]
pub fn numeric_to_i128(
    b: &[u8],
    precision: u8,
    scale: i8,
    round: bool,
) -> Result<i128, ValueError> {
    if let Some(v) = numeric_to_i128_short(b, precision, scale) {
        return v;
    }
    numeric(b)?.to_i128(precision, scale, round)
}

/// The fast path of [`numeric_to_i128`]; `None` when it does not apply.
#[inline(always)]
fn numeric_to_i128_short(b: &[u8], precision: u8, scale: i8) -> Option<Result<i128, ValueError>> {
    let h: &[u8; 8] = b.get(..8)?.try_into().ok()?;
    let n = usize::from(u16::from_be_bytes([h[0], h[1]]));
    if n > 4 || b.len() != 8 + 2 * n {
        return None;
    }
    let weight = i64::from(i16::from_be_bytes([h[2], h[3]]));
    let sign = u16::from_be_bytes([h[4], h[5]]);
    let dscale = i64::from(u16::from_be_bytes([h[6], h[7]]));
    if (sign != numeric_sign::POS && sign != numeric_sign::NEG)
        || dscale > i64::from(NUMERIC_DSCALE_MASK)
    {
        return None;
    }
    let mut acc: u64 = 0;
    for d in b[8..].chunks_exact(2) {
        let d = u16::from_be_bytes([d[0], d[1]]);
        if d >= NBASE {
            return None;
        }
        acc = acc * 10_000 + u64::from(d);
    }
    // Leading or trailing zero digits do not change the folded value, so
    // no normalization is needed. Same conditions as Numeric::to_i128's
    // fast path: nothing nonzero dropped, nothing below dscale.
    let scale = i64::from(scale);
    let k = 4 * (weight - n as i64 + 1) + scale;
    let (acc, shift) = if k >= 0 {
        if k - scale + dscale < 0 {
            return None;
        }
        (acc, k as usize)
    } else if k > -4 {
        let d = u64::from(POW10_U16[(-k) as usize]);
        if !acc.is_multiple_of(d) || dscale < scale {
            return None;
        }
        (acc / d, 0)
    } else {
        return None;
    };
    let overflow = ValueError::NumericOverflow {
        precision,
        scale: scale as i8,
    };
    let v = match mul_pow10(i128::from(acc), shift) {
        Some(v) if v < POW10[usize::from(precision.min(38))] => v,
        _ => return Some(Err(overflow)),
    };
    Some(Ok(if sign == numeric_sign::NEG { -v } else { v }))
}

impl<'a> Numeric<'a> {
    /// Number of base-10000 digits.
    pub fn ndigits(&self) -> usize {
        self.digits.len() / 2
    }

    /// Base-10000 digit `i` (0 beyond the stored digits).
    #[inline]
    pub fn digit(&self, i: usize) -> u16 {
        match self.digits.get(2 * i..2 * i + 2) {
            Some(d) => u16::from_be_bytes([d[0], d[1]]),
            None => 0,
        }
    }

    /// Digit `i` with the decimal places below `10^-dscale` cleared, which is
    /// what `trunc_var(dscale)` in numeric_recv leaves.
    #[inline]
    fn truncated_digit(&self, i: usize) -> u16 {
        let d = self.digit(i);
        // Lowest decimal exponent held by this digit.
        let low = 4 * (i64::from(self.weight) - i as i64);
        let cut = -i64::from(self.dscale) - low;
        if cut <= 0 {
            d
        } else if cut >= 4 {
            0
        } else {
            let p = POW10_U16[cut as usize];
            d - d % p
        }
    }

    /// The value times `10^scale` as an exact integer that must have at most
    /// `precision` decimal digits (Arrow `Decimal128(precision, scale)`).
    ///
    /// When the value has more fractional digits than `scale`: with `round`
    /// it is rounded half away from zero, as PostgreSQL rounds a cast to
    /// `numeric(p, s)`; without, it is an error (`NumericInexact`), since a
    /// column declared `numeric(p, s)` cannot hold such a value.
    /// `precision` must be 1..=38.
    pub fn to_i128(&self, precision: u8, scale: i8, round: bool) -> Result<i128, ValueError> {
        match self.kind {
            NumericKind::Finite => {}
            NumericKind::NaN => return Err(ValueError::NumericNotFinite("NaN")),
            NumericKind::PosInf => return Err(ValueError::NumericNotFinite("Infinity")),
            NumericKind::NegInf => return Err(ValueError::NumericNotFinite("-Infinity")),
        }
        let overflow = ValueError::NumericOverflow { precision, scale };
        let scale_i = i64::from(scale);
        let n = self.ndigits();
        let p = usize::from(precision.min(38));
        // Fast path for the common case (a numeric(p, s) column's values are
        // at most a few digits, kept whole at the target scale, or with only
        // zeros below it, as in 12.50 whose last base-10000 digit is 5000):
        // fold the digits in a u64 and scale once.
        let low = 4 * (i64::from(self.weight) - n as i64 + 1);
        let k = low + scale_i;
        if (1..=4).contains(&n) && k > -4 {
            let mut acc: u64 = 0;
            for i in 0..n {
                acc = acc * 10_000 + u64::from(self.digit(i));
            }
            let whole = if k >= 0 {
                // Nothing dropped; nothing below dscale to truncate.
                (low + i64::from(self.dscale) >= 0).then_some((acc, k as usize))
            } else {
                // Only zeros dropped, and dscale >= scale so truncation at
                // dscale would only clear places that are zero already.
                let d = POW10_U16[(-k) as usize] as u64;
                (acc.is_multiple_of(d) && i64::from(self.dscale) >= scale_i).then_some((acc / d, 0))
            };
            if let Some((acc, shift)) = whole {
                let v = mul_pow10(i128::from(acc), shift).ok_or(overflow.clone())?;
                if v >= POW10[p] {
                    return Err(overflow);
                }
                return Ok(if self.negative { -v } else { v });
            }
        }
        let mut acc: i128 = 0;
        // Decimal exponent (after scaling) of the lowest place of the last
        // digit folded into `acc`; `acc` is always a truncation of the final
        // magnitude, so checked arithmetic on it never fails early.
        let mut last_exp: i64 = 0;
        let mut any = false;
        let mut round_up = false;
        let mut inexact = false;
        for i in 0..n {
            let d = self.truncated_digit(i);
            let e = 4 * (i64::from(self.weight) - i as i64) + scale_i;
            if e >= 0 {
                if any {
                    let shift = usize::try_from(last_exp - e).unwrap_or(usize::MAX);
                    acc = mul_pow10(acc, shift).ok_or(overflow.clone())?;
                }
                acc = acc.checked_add(i128::from(d)).ok_or(overflow.clone())?;
                last_exp = e;
                any = true;
            } else if e > -4 {
                // This digit straddles the last kept place: keep its high
                // part, the remainder decides rounding.
                let drop = (-e) as usize;
                let p = POW10_U16[drop];
                let (keep, rem) = (d / p, d % p);
                if any {
                    let shift = usize::try_from(last_exp).unwrap_or(usize::MAX);
                    acc = mul_pow10(acc, shift).ok_or(overflow.clone())?;
                }
                acc = acc.checked_add(i128::from(keep)).ok_or(overflow.clone())?;
                last_exp = 0;
                any = true;
                round_up = rem >= p / 2;
                inexact |= rem != 0;
            } else {
                // Entirely below the last kept place. Exactly one digit has
                // its lowest place in -4..=-1 and so holds the first dropped
                // decimal place; when that is this digit (e == -4), its top
                // decimal decides rounding.
                if e == -4 {
                    round_up = d >= 5000;
                }
                inexact |= d != 0;
            }
        }
        if any && last_exp > 0 {
            acc = mul_pow10(acc, last_exp as usize).ok_or(overflow.clone())?;
        }
        if inexact {
            if !round {
                return Err(ValueError::NumericInexact { scale });
            }
            if round_up {
                acc = acc.checked_add(1).ok_or(overflow.clone())?;
            }
        }
        if acc >= POW10[p] {
            return Err(overflow);
        }
        Ok(if self.negative { -acc } else { acc })
    }

    /// Appends the value as `numeric_out` prints it: `dscale` fractional
    /// digits (padded with zeros, or cut as numeric_recv truncates), no
    /// exponent; `NaN`, `Infinity`, `-Infinity` for the special values.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        match self.kind {
            NumericKind::Finite => {}
            NumericKind::NaN => return out.extend_from_slice(b"NaN"),
            NumericKind::PosInf => return out.extend_from_slice(b"Infinity"),
            NumericKind::NegInf => return out.extend_from_slice(b"-Infinity"),
        }
        // Follows get_str_from_var in numeric.c.
        if self.negative && self.is_nonzero_after_trunc() {
            out.push(b'-');
        }
        let weight = i64::from(self.weight);
        let mut d: i64;
        if weight < 0 {
            d = weight + 1;
            out.push(b'0');
        } else {
            d = 0;
            while d <= weight {
                let dig = self.digit(d as usize);
                let digits = four_digits(dig);
                if d == 0 {
                    // Suppress leading zeros of the first digit only.
                    let skip = digits[..3].iter().take_while(|&&c| c == b'0').count();
                    out.extend_from_slice(&digits[skip..]);
                } else {
                    out.extend_from_slice(&digits);
                }
                d += 1;
            }
        }
        let dscale = usize::from(self.dscale);
        if dscale > 0 {
            out.push(b'.');
            let start = out.len();
            let mut written = 0;
            while written < dscale {
                let dig = if d >= 0 { self.digit(d as usize) } else { 0 };
                out.extend_from_slice(&four_digits(dig));
                d += 1;
                written += 4;
            }
            out.truncate(start + dscale);
        }
    }

    /// Whether any digit survives truncation to `dscale` (a negative value
    /// that truncates to zero prints without a sign, as numeric_recv's
    /// make_result would make it positive).
    fn is_nonzero_after_trunc(&self) -> bool {
        (0..self.ndigits()).any(|i| self.truncated_digit(i) != 0)
    }

    /// The nearest f64, as PostgreSQL's `numeric::float8` computes it (it
    /// prints the value and parses the text). `scratch` is reused text space.
    pub fn to_f64(&self, scratch: &mut Vec<u8>) -> f64 {
        match self.kind {
            NumericKind::Finite => {}
            NumericKind::NaN => return f64::NAN,
            NumericKind::PosInf => return f64::INFINITY,
            NumericKind::NegInf => return f64::NEG_INFINITY,
        }
        scratch.clear();
        self.write_text(scratch);
        // The text is ASCII digits, sign and point, which Rust's correctly
        // rounded parser accepts like strtod (huge values parse to ±inf,
        // where PostgreSQL would raise an error instead).
        std::str::from_utf8(scratch)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    }
}

#[inline]
fn mul_pow10(v: i128, n: usize) -> Option<i128> {
    if v == 0 {
        return Some(0);
    }
    v.checked_mul(*POW10.get(n)?)
}

#[inline]
fn four_digits(d: u16) -> [u8; 4] {
    [
        b'0' + (d / 1000) as u8,
        b'0' + (d / 100 % 10) as u8,
        b'0' + (d / 10 % 10) as u8,
        b'0' + (d % 10) as u8,
    ]
}

/// The header of an array value and where its elements start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayHeader {
    /// Number of dimensions, 0 for an empty array.
    pub ndim: usize,
    /// The has-null flag (0 or 1).
    pub has_nulls: bool,
    /// OID of the element type as the sender wrote it.
    pub element_oid: u32,
    /// Length and lower bound of each dimension (first `ndim` used).
    pub dims: [(i32, i32); ARRAY_MAX_DIMS],
    /// Product of the dimensions.
    pub nitems: usize,
    /// Byte offset of the first element's length word.
    pub elements_start: usize,
}

impl ArrayHeader {
    /// The used dimensions: `(length, lower bound)` per dimension.
    pub fn dims(&self) -> &[(i32, i32)] {
        &self.dims[..self.ndim]
    }
}

/// Parses an array's header, checked like `array_recv`: 0..=6 dimensions,
/// flags 0/1, non-negative lengths whose product is at most
/// [`ARRAY_MAX_ELEMENTS`], and `lower + length` within int32. An array with
/// zero elements is reported with `ndim == 0`, as `array_recv` makes it
/// (`construct_empty_array`).
pub fn array_header(b: &[u8]) -> Result<ArrayHeader, ValueError> {
    let rd = |off: usize, what: &'static str| -> Result<i32, ValueError> {
        b.get(off..off + 4)
            .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or(ValueError::Truncated {
                what,
                needed: off + 4,
                found: b.len(),
            })
    };
    let ndim = rd(0, "array header")?;
    if !(0..=ARRAY_MAX_DIMS as i32).contains(&ndim) {
        return Err(ValueError::ArrayDims(ndim));
    }
    let flags = rd(4, "array header")?;
    if flags != 0 && flags != 1 {
        return Err(ValueError::ArrayFlags(flags));
    }
    let element_oid = rd(8, "array header")? as u32;
    let mut dims = [(0i32, 0i32); ARRAY_MAX_DIMS];
    let mut nitems: u64 = 1;
    let ndim = ndim as usize;
    for (i, slot) in dims.iter_mut().enumerate().take(ndim) {
        let dim = rd(12 + 8 * i, "array dimensions")?;
        let lower = rd(16 + 8 * i, "array dimensions")?;
        if dim < 0 || lower.checked_add(dim).is_none() {
            return Err(ValueError::ArrayDim { dim, lower });
        }
        nitems = nitems.saturating_mul(dim as u64);
        *slot = (dim, lower);
    }
    if ndim == 0 {
        nitems = 0;
    }
    if nitems > ARRAY_MAX_ELEMENTS {
        return Err(ValueError::ArrayTooLarge);
    }
    let elements_start = 12 + 8 * ndim;
    let (ndim, dims) = if nitems == 0 {
        (0, [(0, 0); ARRAY_MAX_DIMS])
    } else {
        (ndim, dims)
    };
    Ok(ArrayHeader {
        ndim,
        has_nulls: flags == 1,
        element_oid,
        dims,
        nitems: nitems as usize,
        elements_start,
    })
}

/// Walks the `nitems` elements of an array value starting at `start`,
/// calling `f(index, offset, len)` with `len == -1` for NULL, and checks
/// that they end exactly at the end of `b`.
pub fn array_elements(
    b: &[u8],
    header: &ArrayHeader,
    mut f: impl FnMut(usize, usize, i32) -> Result<(), ValueError>,
) -> Result<(), ValueError> {
    let mut pos = header.elements_start;
    for index in 0..header.nitems {
        let len = b
            .get(pos..pos + 4)
            .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or(ValueError::Truncated {
                what: "array element length",
                needed: 4,
                found: b.len().saturating_sub(pos),
            })?;
        pos += 4;
        if len == -1 {
            // array_recv accepts a NULL whatever the flag says (the flag is
            // only a hint), so this is not checked.
            f(index, pos, -1)?;
        } else if len < -1 {
            return Err(ValueError::ArrayElementLength { index, length: len });
        } else {
            let l = len as usize;
            if b.len() - pos < l {
                return Err(ValueError::Truncated {
                    what: "array element",
                    needed: l,
                    found: b.len() - pos,
                });
            }
            f(index, pos, len)?;
            pos += l;
        }
    }
    if pos != b.len() {
        return Err(ValueError::TrailingBytes(b.len().saturating_sub(pos)));
    }
    Ok(())
}

#[cfg(test)]
#[path = "value_tests.rs"]
mod tests;
