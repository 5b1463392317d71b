//! The type options' names, as the CLI's flags and the Python keywords
//! take them (`--numeric decimal:2`, `numeric="decimal:2"`): parsed once,
//! here, with typed errors each caller words with its own option name.

use std::str::FromStr;

use thiserror::Error;

use crate::{ArrayRepr, EnumRepr, UnconstrainedNumeric};
/// A type option's name that no choice has (`--numeric`, `--enums`,
/// `--arrays`, or the Python keywords of the same names); the message
/// lists what is taken, the caller names the option.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TypeChoiceError {
    /// Not a numeric representation.
    #[error("expected text, float64 or decimal:SCALE")]
    Numeric,
    /// `decimal:SCALE` with a scale Decimal128 cannot have.
    #[error("the scale must be a number from -38 to 38")]
    NumericScale,
    /// Not an enum representation.
    #[error("expected utf8 or dictionary")]
    Enums,
    /// Not an array representation.
    #[error("expected list or struct")]
    Arrays,
}

impl FromStr for UnconstrainedNumeric {
    type Err = TypeChoiceError;

    /// `text`, `float64` or `decimal:SCALE` (-38 to 38).
    fn from_str(s: &str) -> Result<UnconstrainedNumeric, TypeChoiceError> {
        Ok(match s {
            "text" => UnconstrainedNumeric::Text,
            "float64" => UnconstrainedNumeric::Float64,
            _ => {
                let scale = s.strip_prefix("decimal:").ok_or(TypeChoiceError::Numeric)?;
                let scale = scale
                    .parse::<i8>()
                    .ok()
                    .filter(|s| (-38..=38).contains(s))
                    .ok_or(TypeChoiceError::NumericScale)?;
                UnconstrainedNumeric::Decimal128 { scale }
            }
        })
    }
}

impl FromStr for EnumRepr {
    type Err = TypeChoiceError;

    /// `utf8` or `dictionary`.
    fn from_str(s: &str) -> Result<EnumRepr, TypeChoiceError> {
        match s {
            "utf8" => Ok(EnumRepr::Utf8),
            "dictionary" => Ok(EnumRepr::Dictionary),
            _ => Err(TypeChoiceError::Enums),
        }
    }
}

impl FromStr for ArrayRepr {
    type Err = TypeChoiceError;

    /// `list` or `struct`.
    fn from_str(s: &str) -> Result<ArrayRepr, TypeChoiceError> {
        match s {
            "list" => Ok(ArrayRepr::List),
            "struct" => Ok(ArrayRepr::Struct),
            _ => Err(TypeChoiceError::Arrays),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_others_are_refused() {
        assert_eq!("text".parse(), Ok(UnconstrainedNumeric::Text));
        assert_eq!("float64".parse(), Ok(UnconstrainedNumeric::Float64));
        assert_eq!(
            "decimal:-2".parse(),
            Ok(UnconstrainedNumeric::Decimal128 { scale: -2 })
        );
        assert_eq!(
            "decimal:39".parse::<UnconstrainedNumeric>(),
            Err(TypeChoiceError::NumericScale)
        );
        assert_eq!(
            "float32".parse::<UnconstrainedNumeric>(),
            Err(TypeChoiceError::Numeric)
        );
        assert_eq!("dictionary".parse(), Ok(EnumRepr::Dictionary));
        assert_eq!("map".parse::<EnumRepr>(), Err(TypeChoiceError::Enums));
        assert_eq!("struct".parse(), Ok(ArrayRepr::Struct));
        assert_eq!("tuple".parse::<ArrayRepr>(), Err(TypeChoiceError::Arrays));
    }
}
