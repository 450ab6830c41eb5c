//! Fixed-point prices and quantities: unsigned integers counting units of
//! 1e-8, parsed from and printed to exact decimal strings. No floats.

use std::fmt;

/// Units per whole: every price and quantity has 8 decimals.
pub const SCALE: u64 = 100_000_000;
/// Largest accepted value, 10,000,000,000, in units.
pub const MAX_UNITS: u64 = 10_000_000_000 * SCALE;
/// Digits after the point that a value may carry once trailing zeros go.
pub const DECIMALS: usize = 8;

/// Why a decimal string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("not a plain decimal string")]
    Malformed,
    #[error("must be greater than 0")]
    Zero,
    #[error("must be at most 10000000000")]
    TooLarge,
    #[error("more than 8 digits after the point")]
    TooPrecise,
}

/// Parses a contract decimal (`digits[.digits]`, > 0, <= 1e10, <= 8
/// significant decimals) into units of 1e-8. Any length of input is fine:
/// leading zeros and trailing fractional zeros are skipped, never stored.
pub fn parse_units(s: &[u8]) -> Result<u64, DecimalError> {
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(dot) => (&s[..dot], Some(&s[dot + 1..])),
        None => (s, None),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) {
        return Err(DecimalError::Malformed);
    }
    let frac = match frac {
        Some(f) if f.is_empty() || !f.iter().all(u8::is_ascii_digit) => {
            return Err(DecimalError::Malformed)
        }
        Some(f) => f,
        None => &[],
    };
    let int = &int[int.iter().position(|&b| b != b'0').unwrap_or(int.len())..];
    let frac = &frac[..frac.iter().rposition(|&b| b != b'0').map_or(0, |p| p + 1)];
    if frac.len() > DECIMALS {
        return Err(DecimalError::TooPrecise);
    }
    // 1e10 has 11 digits; anything longer without leading zeros is too large.
    if int.len() > 11 {
        return Err(DecimalError::TooLarge);
    }
    let mut units: u64 = 0;
    for &d in int {
        units = units * 10 + u64::from(d - b'0');
    }
    units *= SCALE;
    let mut place = SCALE / 10;
    for &d in frac {
        units += u64::from(d - b'0') * place;
        place /= 10;
    }
    if units == 0 {
        return Err(DecimalError::Zero);
    }
    if units > MAX_UNITS {
        return Err(DecimalError::TooLarge);
    }
    Ok(units)
}

/// Appends the shortest exact decimal form of `units` ("1", "100.25").
pub fn write_units(units: u64, out: &mut Vec<u8>) {
    let int = units / SCALE;
    let mut frac = units % SCALE;
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = int;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
    if frac != 0 {
        let mut digits = DECIMALS;
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        let mut fbuf = [b'0'; DECIMALS];
        let mut j = digits;
        while frac != 0 {
            j -= 1;
            fbuf[j] = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        out.push(b'.');
        out.extend_from_slice(&fbuf[..digits]);
    }
}

macro_rules! fixed {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub(crate) u64);

        impl $name {
            /// From raw units of 1e-8; `None` unless `0 < units <= MAX_UNITS`.
            pub fn from_units(units: u64) -> Option<Self> {
                (units > 0 && units <= MAX_UNITS).then_some(Self(units))
            }
            /// Raw units of 1e-8.
            pub fn units(self) -> u64 {
                self.0
            }
            /// Parses a contract decimal string.
            pub fn parse(s: &str) -> Result<Self, DecimalError> {
                parse_units(s.as_bytes()).map(Self)
            }
            /// Appends the exact decimal form.
            pub fn write(self, out: &mut Vec<u8>) {
                write_units(self.0, out)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut v = Vec::with_capacity(24);
                write_units(self.0, &mut v);
                // write_units only emits ASCII digits and '.'.
                f.write_str(std::str::from_utf8(&v).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

fixed!(
    /// A limit or trade price, in units of 1e-8 of the quote currency.
    Price
);
fixed!(
    /// A quantity, in units of 1e-8 of the base currency (lots).
    Qty
);

impl Qty {
    /// Units as a possibly-zero remainder (used for leftover quantities).
    pub(crate) fn raw(units: u64) -> Self {
        Self(units)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<u64, DecimalError> {
        parse_units(s.as_bytes())
    }

    #[test]
    fn parses_contract_examples() {
        assert_eq!(p("100.25"), Ok(10_025_000_000));
        assert_eq!(p("1.50000000000"), Ok(150_000_000));
        assert_eq!(p("0.00000001"), Ok(1));
        assert_eq!(p("10000000000"), Ok(MAX_UNITS));
        assert_eq!(p("10000000000.000"), Ok(MAX_UNITS));
        assert_eq!(p("0000001"), Ok(SCALE));
        assert_eq!(p("0.123456789"), Err(DecimalError::TooPrecise));
        assert_eq!(p("1e3"), Err(DecimalError::Malformed));
        assert_eq!(p("0"), Err(DecimalError::Zero));
        assert_eq!(p("0.000000000"), Err(DecimalError::Zero));
        assert_eq!(p("10000000000.00000001"), Err(DecimalError::TooLarge));
        assert_eq!(p("99999999999999999999999"), Err(DecimalError::TooLarge));
        for bad in [
            "", ".", "1.", ".5", "-1", "+1", " 1", "1 ", "1.2.3", "１", "0x10",
        ] {
            assert_eq!(p(bad), Err(DecimalError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn prints_shortest_exact_form() {
        for (units, s) in [
            (1, "0.00000001"),
            (SCALE, "1"),
            (10_025_000_000, "100.25"),
            (MAX_UNITS, "10000000000"),
            (150_000_000, "1.5"),
            (0, "0"),
        ] {
            let mut v = Vec::new();
            write_units(units, &mut v);
            assert_eq!(std::str::from_utf8(&v).unwrap(), s);
        }
    }

    proptest::proptest! {
        #[test]
        fn print_then_parse_is_identity(units in 1..=MAX_UNITS) {
            let mut v = Vec::new();
            write_units(units, &mut v);
            proptest::prop_assert_eq!(parse_units(&v), Ok(units));
        }

        #[test]
        fn parse_never_panics(s in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let _ = parse_units(&s);
        }
    }
}
