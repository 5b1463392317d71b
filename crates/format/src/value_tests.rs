//! Tests of the value decoders: fixed sizes, dates and times, jsonb, numeric
//! (text, wire forms, decimal and float conversion, against a reference) and
//! arrays.

use super::*;
use crate::encode::numeric_from_str;

fn num(s: &str) -> Vec<u8> {
    numeric_from_str(s).unwrap()
}

fn text_of(b: &[u8]) -> String {
    let mut out = Vec::new();
    numeric(b).unwrap().write_text(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn fixed_sizes() {
    assert_eq!(int2(&[0x80, 0]).unwrap(), i16::MIN);
    assert_eq!(int4(&[0x7f, 0xff, 0xff, 0xff]).unwrap(), i32::MAX);
    assert_eq!(int8(&[0xff; 8]).unwrap(), -1);
    assert_eq!(
        int4(&[1, 2, 3]),
        Err(ValueError::WrongLength {
            expected: 4,
            found: 3
        })
    );
    assert!(bool(&[2]).unwrap());
    assert!(!bool(&[0]).unwrap());
    assert!(bool(&[]).is_err());
    assert_eq!(oid(&[0xff; 4]).unwrap(), u32::MAX);
    let negz = float8(&(-0.0f64).to_bits().to_be_bytes()).unwrap();
    assert!(negz == 0.0 && negz.is_sign_negative());
    let nan = float4(&0x7fc0_0001u32.to_be_bytes()).unwrap();
    assert_eq!(nan.to_bits(), 0x7fc0_0001);
}

#[test]
fn dates_and_times() {
    assert_eq!(date_to_unix_days(0).unwrap(), 10957);
    assert_eq!(date_to_unix_days(i32::MAX).unwrap(), i32::MAX);
    assert_eq!(date_to_unix_days(i32::MIN).unwrap(), i32::MIN);
    assert!(date_to_unix_days(i32::MAX - 1).is_err());
    assert_eq!(
        timestamp_to_unix_micros(0).unwrap(),
        UNIX_TO_PG_EPOCH_MICROS
    );
    assert_eq!(timestamp_to_unix_micros(i64::MIN).unwrap(), i64::MIN);
    assert!(timestamp_to_unix_micros(i64::MAX - 1).is_err());
    assert_eq!(time(&MICROS_PER_DAY.to_be_bytes()).unwrap(), MICROS_PER_DAY);
    assert_eq!(time(&(-1i64).to_be_bytes()), Err(ValueError::TimeRange(-1)));
    let mut iv = Vec::new();
    iv.extend_from_slice(&(-5i64).to_be_bytes());
    iv.extend_from_slice(&(-3i32).to_be_bytes());
    iv.extend_from_slice(&(-14i32).to_be_bytes());
    assert_eq!(
        interval(&iv).unwrap(),
        Interval {
            micros: -5,
            days: -3,
            months: -14
        }
    );
}

#[test]
fn jsonb_version() {
    assert_eq!(jsonb(b"\x01{}").unwrap(), b"{}");
    assert_eq!(jsonb(b"\x02{}"), Err(ValueError::JsonbVersion(2)));
    assert_eq!(jsonb(b""), Err(ValueError::JsonbEmpty));
}

#[test]
fn numeric_text_like_numeric_out() {
    for (s, want) in [
        ("0", "0"),
        ("0.00", "0.00"),
        ("-0.00", "0.00"),
        ("1", "1"),
        ("-12345.678", "-12345.678"),
        ("10000", "10000"),
        ("0.0001", "0.0001"),
        ("0.00001", "0.00001"),
        (
            "123456789012345678901234567890.5",
            "123456789012345678901234567890.5",
        ),
        ("1e-20", "0.00000000000000000001"),
        ("1.5e3", "1500"),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("007.50", "7.50"),
    ] {
        assert_eq!(text_of(&num(s)), want, "{s}");
    }
}

#[test]
fn numeric_non_canonical_wire_forms() {
    // Negative zero with digits: [0], sign NEG, dscale 2.
    let b = [0, 1, 0, 0, 0x40, 0, 0, 2, 0, 0];
    assert_eq!(text_of(&b), "0.00");
    assert_eq!(numeric(&b).unwrap().to_i128(5, 2, false).unwrap(), 0);
    // Leading zero digits: 0000 0012 with weight 1 is 12.
    let b = [0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 12];
    assert_eq!(text_of(&b), "12");
    // Digits below dscale are truncated: 1.2345 sent with dscale 2.
    let b = [0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x09, 0x29];
    assert_eq!(text_of(&b), "1.23");
    assert_eq!(numeric(&b).unwrap().to_i128(10, 4, false).unwrap(), 12300);
    // -0.001 with dscale 2 truncates to zero: no sign.
    let b = [0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0, 10];
    assert_eq!(text_of(&b), "0.00");
}

#[test]
fn numeric_bad_wire_forms() {
    assert!(matches!(
        numeric(&[0, 0, 0]),
        Err(ValueError::Truncated { .. })
    ));
    assert_eq!(
        numeric(&[0, 0, 0, 0, 0x12, 0x34, 0, 0]),
        Err(ValueError::NumericSign(0x1234))
    );
    assert_eq!(
        numeric(&[0, 0, 0, 0, 0, 0, 0x40, 0]),
        Err(ValueError::NumericDscale(0x4000))
    );
    assert_eq!(
        numeric(&[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10]),
        Err(ValueError::NumericDigit(10000))
    );
    assert!(matches!(
        numeric(&[0, 2, 0, 0, 0, 0, 0, 0, 0, 1]),
        Err(ValueError::Truncated { .. })
    ));
    assert_eq!(
        numeric(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        Err(ValueError::TrailingBytes(2))
    );
}

#[test]
fn numeric_to_i128_cases() {
    let v = |s: &str, p: u8, sc: i8, r: bool| numeric(&num(s)).unwrap().to_i128(p, sc, r);
    assert_eq!(v("12345678.90", 15, 2, false).unwrap(), 1_234_567_890);
    assert_eq!(v("-0.00", 15, 2, false).unwrap(), 0);
    assert_eq!(v("0", 1, 0, false).unwrap(), 0);
    let max38 = "9".repeat(38);
    assert_eq!(v(&max38, 38, 0, false).unwrap(), POW10[38] - 1);
    assert_eq!(
        v(&format!("-{max38}"), 38, 0, false).unwrap(),
        1 - POW10[38]
    );
    assert!(matches!(
        v(&format!("1{}", "0".repeat(38)), 38, 0, true),
        Err(ValueError::NumericOverflow { .. })
    ));
    assert!(matches!(
        v("100", 2, 0, false),
        Err(ValueError::NumericOverflow { .. })
    ));
    assert_eq!(v("99.99", 4, 2, false).unwrap(), 9999);
    // 0.99...9 with 38 fractional digits at scale 38.
    let frac38 = format!("0.{}", "9".repeat(38));
    assert_eq!(v(&frac38, 38, 38, false).unwrap(), POW10[38] - 1);
    // Rounding half away from zero.
    assert_eq!(v("2.5", 38, 0, true).unwrap(), 3);
    assert_eq!(v("-2.5", 38, 0, true).unwrap(), -3);
    assert_eq!(v("2.4999", 38, 0, true).unwrap(), 2);
    assert_eq!(v("0.125", 38, 2, true).unwrap(), 13);
    assert_eq!(v("0.00005", 38, 4, true).unwrap(), 1);
    assert_eq!(v("0.00004999", 38, 4, true).unwrap(), 0);
    assert_eq!(v("1e-1000", 38, 2, true).unwrap(), 0);
    assert_eq!(
        v("9.995", 3, 2, true),
        Err(ValueError::NumericOverflow {
            precision: 3,
            scale: 2
        })
    );
    assert_eq!(
        v("0.125", 38, 2, false),
        Err(ValueError::NumericInexact { scale: 2 })
    );
    // Negative scale: units of 100.
    assert_eq!(v("12300", 5, -2, false).unwrap(), 123);
    assert_eq!(v("12350", 5, -2, true).unwrap(), 124);
    // Big weight, small value.
    assert_eq!(v("1e30", 38, 5, false).unwrap(), POW10[35]);
    assert!(matches!(
        v("1e40", 38, 0, true),
        Err(ValueError::NumericOverflow { .. })
    ));
    assert_eq!(
        v("NaN", 38, 0, true),
        Err(ValueError::NumericNotFinite("NaN"))
    );
    assert_eq!(
        v("-Infinity", 38, 0, true),
        Err(ValueError::NumericNotFinite("-Infinity"))
    );
}

#[test]
fn numeric_to_f64() {
    let mut s = Vec::new();
    let f = |x: &str, s: &mut Vec<u8>| numeric(&num(x)).unwrap().to_f64(s);
    assert_eq!(f("1.5", &mut s), 1.5);
    assert_eq!(f("-0.1", &mut s), -0.1);
    assert!(f("NaN", &mut s).is_nan());
    assert_eq!(f("-Infinity", &mut s), f64::NEG_INFINITY);
}

#[test]
fn arrays() {
    let a = crate::encode::array_bytes(
        23,
        &[(2, 1), (3, 0)],
        &(0..6)
            .map(|i: i32| Some(i.to_be_bytes().to_vec()))
            .collect::<Vec<_>>(),
    );
    let h = array_header(&a).unwrap();
    assert_eq!(h.ndim, 2);
    assert_eq!(h.nitems, 6);
    assert_eq!(h.dims(), &[(2, 1), (3, 0)]);
    let mut seen = Vec::new();
    array_elements(&a, &h, |i, off, len| {
        assert_eq!(len, 4);
        seen.push((i, int4(&a[off..off + 4]).unwrap()));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
    // Trailing byte.
    let mut bad = a.clone();
    bad.push(0);
    assert_eq!(
        array_elements(&bad, &h, |_, _, _| Ok(())),
        Err(ValueError::TrailingBytes(1))
    );
    // Truncated.
    let cut = &a[..a.len() - 1];
    assert!(array_elements(cut, &h, |_, _, _| Ok(())).is_err());
    // Seven dimensions.
    let mut seven = a.clone();
    seven[..4].copy_from_slice(&7i32.to_be_bytes());
    assert_eq!(array_header(&seven), Err(ValueError::ArrayDims(7)));
    // A zero-length dimension makes an empty array.
    let e = crate::encode::array_bytes(23, &[(0, 1), (3, 1)], &[]);
    let h = array_header(&e).unwrap();
    assert_eq!((h.ndim, h.nitems), (0, 0));
    // Dimension overflow.
    let big = crate::encode::array_bytes(23, &[(1 << 20, 1), (1 << 20, 1)], &[]);
    assert_eq!(array_header(&big), Err(ValueError::ArrayTooLarge));
    let neg = crate::encode::array_bytes(23, &[(-1, 1)], &[]);
    assert!(matches!(
        array_header(&neg),
        Err(ValueError::ArrayDim { .. })
    ));
}

/// Reference: the decimal string scaled to `scale` by digit
/// manipulation, rounded half away from zero; None if over 38 digits.
fn reference(neg: bool, int: &str, frac: &str, scale: i8) -> Option<i128> {
    let s = scale.max(0) as usize;
    let mut digits: String = int.to_string();
    let mut f = frac.to_string();
    while f.len() < s + 1 {
        f.push('0');
    }
    digits.push_str(&f[..s]);
    let round_up = f.as_bytes()[s] >= b'5';
    let digits = digits.trim_start_matches('0');
    if digits.len() > 38 {
        return None;
    }
    let mut v: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    if round_up {
        v += 1;
    }
    if v >= POW10[38] {
        return None;
    }
    Some(if neg { -v } else { v })
}

proptest::proptest! {
    #[test]
    fn numeric_to_i128_matches_reference(
        neg in proptest::bool::ANY,
        int in "[0-9]{0,40}",
        frac in "[0-9]{0,45}",
        scale in 0i8..=38,
    ) {
        let text = format!("{}{}.{}", if neg { "-" } else { "" }, if int.is_empty() { "0" } else { &int }, frac);
        let b = num(&text);
        let want = reference(neg, &int, &frac, scale);
        let slow = numeric(&b).unwrap().to_i128(38, scale, true).ok();
        let fast = numeric_to_i128(&b, 38, scale, true).ok();
        proptest::prop_assert_eq!(slow, want, "{} at scale {}", text, scale);
        proptest::prop_assert_eq!(fast, want, "{} at scale {}", text, scale);
        // Text output is the canonical form of the input.
        let t = text_of(&b);
        let int_c = int.trim_start_matches('0');
        let nonzero = int.bytes().chain(frac.bytes()).any(|c| c != b'0');
        let canon = format!("{}{}{}{}", if neg && nonzero { "-" } else { "" }, if int_c.is_empty() { "0" } else { int_c }, if frac.is_empty() { "" } else { "." }, frac);
        proptest::prop_assert_eq!(&t, &canon);
        // f64 is the correctly rounded value of the canonical text (a
        // negative zero is zero, as numeric has no -0).
        let mut scratch = Vec::new();
        proptest::prop_assert_eq!(numeric(&b).unwrap().to_f64(&mut scratch).to_bits(), canon.parse::<f64>().unwrap().to_bits());
    }

    #[test]
    fn numeric_strict_mode_rejects_only_inexact(v in -(10i64.pow(15))..10i64.pow(15), extra in 0u32..3) {
        // A value with 2 + extra fraction digits at scale 2: exact when
        // the extra digits are zero.
        let scaled = v as i128;
        let text = format!("{}{}.{:02}{}", if scaled < 0 { "-" } else { "" }, scaled.abs() / 100, scaled.abs() % 100, "0".repeat(extra as usize));
        let b = num(&text);
        proptest::prop_assert_eq!(numeric_to_i128(&b, 17, 2, false), Ok(scaled));
        proptest::prop_assert_eq!(numeric(&b).unwrap().to_i128(17, 2, false), Ok(scaled));
    }
}
