//! The type model: which PostgreSQL types gpupgparser decodes, resolved from
//! the catalog (domains to their base type, enums, arrays to their element).

use std::fmt;

/// Built-in type OIDs (from PostgreSQL's `pg_type.dat`), each named as
/// the type's `typname` in capitals.
#[allow(missing_docs)] // The name is the type; a doc line would repeat it.
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// A PostgreSQL type as gpupgparser decodes it. Domains are represented by
/// their base type; all string-like types share [`PgType::Text`] because
/// their binary send format is the same (the raw UTF-8 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PgType {
    /// `boolean`.
    Bool,
    /// `smallint`.
    Int2,
    /// `integer`.
    Int4,
    /// `bigint`.
    Int8,
    /// `real`.
    Float4,
    /// `double precision`.
    Float8,
    /// `oid`, an unsigned 32-bit integer.
    Oid,
    /// `numeric(p, s)` when declared with a typmod, `numeric` otherwise.
    Numeric(Option<NumericTypmod>),
    /// text, varchar, name, bpchar (padding kept).
    Text,
    /// `bytea`, raw bytes.
    Bytea,
    /// `date`: days since 2000-01-01 on the wire.
    Date,
    /// `time without time zone`: microseconds since midnight.
    Time,
    /// `timestamp without time zone`: microseconds since 2000-01-01.
    Timestamp,
    /// `timestamp with time zone`: microseconds since 2000-01-01 UTC.
    Timestamptz,
    /// `interval`: microseconds, days and months, kept apart.
    Interval,
    /// `uuid`, 16 bytes.
    Uuid,
    /// `json`, sent as its text.
    Json,
    /// jsonb: the send format prefixes the JSON text with a version byte (1).
    Jsonb,
    /// A user-defined enum; its send format is the label text.
    Enum,
    /// An array of the element type; any number of dimensions on the wire.
    Array(Box<PgType>),
}

/// Precision and scale of a declared `numeric(p, s)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NumericTypmod {
    /// Total significant digits, 1 to 1000.
    pub precision: u16,
    /// Digits after the decimal point; negative (round to tens, hundreds) since PostgreSQL 15.
    pub scale: i16,
}

impl NumericTypmod {
    /// Decodes PostgreSQL's `atttypmod` for numeric (`((p << 16) | s) + 4`;
    /// the scale is an 11-bit signed number since PostgreSQL 15). `None`
    /// for an unconstrained numeric (typmod -1).
    pub fn from_typmod(typmod: i32) -> Option<Self> {
        if typmod < 4 {
            return None;
        }
        let t = typmod - 4;
        let precision = ((t >> 16) & 0xffff) as u16;
        let raw_scale = t & 0x7ff;
        // Sign-extend the 11-bit scale.
        let scale = ((raw_scale ^ 1024) - 1024) as i16;
        Some(NumericTypmod { precision, scale })
    }
}

impl PgType {
    /// The type for a built-in scalar OID with its typmod, or `None` if
    /// gpupgparser has no decoder for it. Arrays, enums and domains are
    /// resolved by the catalog reader, which knows `typelem`, `typtype` and
    /// `typbasetype`.
    pub fn from_builtin(type_oid: u32, typmod: i32) -> Option<PgType> {
        use oid::*;
        Some(match type_oid {
            BOOL => PgType::Bool,
            INT2 => PgType::Int2,
            INT4 => PgType::Int4,
            INT8 => PgType::Int8,
            FLOAT4 => PgType::Float4,
            FLOAT8 => PgType::Float8,
            OID => PgType::Oid,
            NUMERIC => PgType::Numeric(NumericTypmod::from_typmod(typmod)),
            TEXT | VARCHAR | NAME | BPCHAR => PgType::Text,
            BYTEA => PgType::Bytea,
            DATE => PgType::Date,
            TIME => PgType::Time,
            TIMESTAMP => PgType::Timestamp,
            TIMESTAMPTZ => PgType::Timestamptz,
            INTERVAL => PgType::Interval,
            UUID => PgType::Uuid,
            JSON => PgType::Json,
            JSONB => PgType::Jsonb,
            _ => return None,
        })
    }
}

impl fmt::Display for PgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgType::Bool => f.write_str("boolean"),
            PgType::Int2 => f.write_str("smallint"),
            PgType::Int4 => f.write_str("integer"),
            PgType::Int8 => f.write_str("bigint"),
            PgType::Float4 => f.write_str("real"),
            PgType::Float8 => f.write_str("double precision"),
            PgType::Oid => f.write_str("oid"),
            PgType::Numeric(None) => f.write_str("numeric"),
            PgType::Numeric(Some(t)) => write!(f, "numeric({},{})", t.precision, t.scale),
            PgType::Text => f.write_str("text"),
            PgType::Bytea => f.write_str("bytea"),
            PgType::Date => f.write_str("date"),
            PgType::Time => f.write_str("time"),
            PgType::Timestamp => f.write_str("timestamp"),
            PgType::Timestamptz => f.write_str("timestamptz"),
            PgType::Interval => f.write_str("interval"),
            PgType::Uuid => f.write_str("uuid"),
            PgType::Json => f.write_str("json"),
            PgType::Jsonb => f.write_str("jsonb"),
            PgType::Enum => f.write_str("enum"),
            PgType::Array(e) => write!(f, "{e}[]"),
        }
    }
}

/// One output column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDesc {
    /// Column name as PostgreSQL spells it (unquoted).
    pub name: String,
    /// The server's name for the declared type, e.g. `character varying(20)`
    /// or `my_domain`; used in messages.
    pub type_name: String,
    /// OID of the declared type (a domain's own OID for a domain).
    pub type_oid: u32,
    /// `atttypmod` of the column (or -1).
    pub typmod: i32,
    /// How the value is decoded.
    pub pg_type: PgType,
    /// Whether the column may hold NULLs (`NOT attnotnull`); queries: true.
    pub nullable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmod_round_trip() {
        // numeric(15,2) -> typmod ((15 << 16) | 2) + 4
        let t = NumericTypmod::from_typmod(((15 << 16) | 2) + 4).unwrap();
        assert_eq!((t.precision, t.scale), (15, 2));
        // numeric(10,-3): scale stored as 11-bit two's complement
        let t = NumericTypmod::from_typmod(((10 << 16) | (2048 - 3)) + 4).unwrap();
        assert_eq!((t.precision, t.scale), (10, -3));
        assert_eq!(NumericTypmod::from_typmod(-1), None);
    }

    #[test]
    fn builtins_resolve() {
        assert_eq!(PgType::from_builtin(oid::VARCHAR, 24), Some(PgType::Text));
        assert_eq!(PgType::from_builtin(600, -1), None);
        assert_eq!(
            PgType::Array(Box::new(PgType::Int4)).to_string(),
            "integer[]"
        );
    }
}
