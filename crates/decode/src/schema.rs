//! PostgreSQL column types to Arrow fields, resolved once per export.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, IntervalUnit, Schema, SchemaRef, TimeUnit};
use gpupg_format::{ColumnDesc, PgType};

use crate::{ArrayRepr, DecodeError, EnumRepr, IntervalRepr, TypeOptions, UnconstrainedNumeric};

/// Arrow's largest decimal precision in 128 bits.
const DECIMAL128_MAX_PRECISION: u8 = 38;

/// How one column (or array element) is decoded: chosen once, so the decode
/// loops only switch per column, never per value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Oid,
    /// `round`: round extra fractional digits (user-chosen scale for an
    /// unconstrained numeric) instead of rejecting them (declared scale).
    Decimal {
        precision: u8,
        scale: i8,
        round: bool,
    },
    NumericText,
    NumericFloat,
    /// text-like, json and enum labels as Utf8.
    Text,
    Jsonb,
    Bytea,
    EnumDict,
    Date,
    Time,
    Timestamp,
    IntervalMdn,
    IntervalStruct,
    Uuid,
    /// An array; `lossless` selects [`ArrayRepr::Struct`].
    Array {
        element: Box<Plan>,
        lossless: bool,
    },
}

/// The Arrow schema of an export and how each column is decoded into it.
#[derive(Debug)]
pub struct OutputSchema {
    columns: Vec<ColumnDesc>,
    schema: SchemaRef,
    pub(crate) plans: Vec<Plan>,
}

impl OutputSchema {
    /// Maps every column; an error names the first column that cannot be
    /// mapped.
    pub fn new(columns: &[ColumnDesc], opts: &TypeOptions) -> Result<OutputSchema, DecodeError> {
        if let UnconstrainedNumeric::Decimal128 { scale } = opts.numeric {
            if scale > DECIMAL128_MAX_PRECISION as i8 {
                return Err(DecodeError::Options(format!(
                    "Decimal128 scale {scale} for unconstrained numeric is over the precision 38"
                )));
            }
        }
        if columns.len() > i16::MAX as usize {
            return Err(DecodeError::Options(format!(
                "{} columns, more than a COPY tuple can carry",
                columns.len()
            )));
        }
        let mut fields = Vec::with_capacity(columns.len());
        let mut plans = Vec::with_capacity(columns.len());
        for c in columns {
            let (plan, dt, md) =
                resolve(&c.pg_type, opts).map_err(|reason| DecodeError::Unsupported {
                    column: c.name.clone(),
                    type_name: type_name(c),
                    reason,
                })?;
            fields.push(Field::new(c.name.clone(), dt, c.nullable).with_metadata(md));
            plans.push(plan);
        }
        Ok(OutputSchema {
            columns: columns.to_vec(),
            schema: Arc::new(Schema::new(fields)),
            plans,
        })
    }

    /// The Arrow schema of every batch.
    pub fn arrow_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The columns, in order.
    pub fn columns(&self) -> &[ColumnDesc] {
        &self.columns
    }
}

/// The type as messages show it: the server's name when the catalog gave one.
pub(crate) fn type_name(c: &ColumnDesc) -> String {
    if c.type_name.is_empty() {
        c.pg_type.to_string()
    } else {
        c.type_name.clone()
    }
}

/// Arrow canonical extension metadata for a field.
fn extension(name: &str) -> HashMap<String, String> {
    HashMap::from([
        ("ARROW:extension:name".to_string(), name.to_string()),
        ("ARROW:extension:metadata".to_string(), String::new()),
    ])
}

/// The list type used for arrays' `dims` and `lower_bounds`.
pub(crate) fn int32_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Int32, false)))
}

/// The interval struct's fields.
pub(crate) fn interval_fields() -> Fields {
    Fields::from(vec![
        Field::new("months", DataType::Int32, false),
        Field::new("days", DataType::Int32, false),
        Field::new("microseconds", DataType::Int64, false),
    ])
}

/// Plan, Arrow type and field metadata of a PostgreSQL type.
fn resolve(
    pg: &PgType,
    opts: &TypeOptions,
) -> Result<(Plan, DataType, HashMap<String, String>), String> {
    let none = HashMap::new;
    Ok(match pg {
        PgType::Bool => (Plan::Bool, DataType::Boolean, none()),
        PgType::Int2 => (Plan::Int2, DataType::Int16, none()),
        PgType::Int4 => (Plan::Int4, DataType::Int32, none()),
        PgType::Int8 => (Plan::Int8, DataType::Int64, none()),
        PgType::Float4 => (Plan::Float4, DataType::Float32, none()),
        PgType::Float8 => (Plan::Float8, DataType::Float64, none()),
        PgType::Oid => (Plan::Oid, DataType::UInt32, none()),
        PgType::Numeric(tm) => {
            // A declared numeric(p, s) maps to Decimal128(p, s) when Arrow
            // can hold it; Arrow needs p <= 38, s <= p and s within i8,
            // while PostgreSQL 15+ allows s > p and |s| up to 1000.
            let declared = tm.and_then(|t| {
                let p = u8::try_from(t.precision)
                    .ok()
                    .filter(|p| (1..=DECIMAL128_MAX_PRECISION).contains(p))?;
                let s = i8::try_from(t.scale).ok().filter(|s| *s <= p as i8)?;
                Some((p, s))
            });
            match (declared, opts.numeric) {
                (Some((precision, scale)), _) => (
                    Plan::Decimal {
                        precision,
                        scale,
                        round: false,
                    },
                    DataType::Decimal128(precision, scale),
                    none(),
                ),
                (None, UnconstrainedNumeric::Text) => (Plan::NumericText, DataType::Utf8, none()),
                (None, UnconstrainedNumeric::Float64) => {
                    (Plan::NumericFloat, DataType::Float64, none())
                }
                (None, UnconstrainedNumeric::Decimal128 { scale }) => (
                    Plan::Decimal {
                        precision: DECIMAL128_MAX_PRECISION,
                        scale,
                        round: true,
                    },
                    DataType::Decimal128(DECIMAL128_MAX_PRECISION, scale),
                    none(),
                ),
            }
        }
        PgType::Text => (Plan::Text, DataType::Utf8, none()),
        PgType::Bytea => (Plan::Bytea, DataType::Binary, none()),
        PgType::Date => (Plan::Date, DataType::Date32, none()),
        PgType::Time => (Plan::Time, DataType::Time64(TimeUnit::Microsecond), none()),
        PgType::Timestamp => (
            Plan::Timestamp,
            DataType::Timestamp(TimeUnit::Microsecond, None),
            none(),
        ),
        PgType::Timestamptz => (
            Plan::Timestamp,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            none(),
        ),
        PgType::Interval => match opts.interval {
            IntervalRepr::MonthDayNano => (
                Plan::IntervalMdn,
                DataType::Interval(IntervalUnit::MonthDayNano),
                none(),
            ),
            IntervalRepr::Struct => (
                Plan::IntervalStruct,
                DataType::Struct(interval_fields()),
                none(),
            ),
        },
        PgType::Uuid => (
            Plan::Uuid,
            DataType::FixedSizeBinary(16),
            extension("arrow.uuid"),
        ),
        PgType::Json => (Plan::Text, DataType::Utf8, extension("arrow.json")),
        PgType::Jsonb => (Plan::Jsonb, DataType::Utf8, extension("arrow.json")),
        PgType::Enum => match opts.enums {
            EnumRepr::Utf8 => (Plan::Text, DataType::Utf8, none()),
            EnumRepr::Dictionary => (
                Plan::EnumDict,
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                none(),
            ),
        },
        PgType::Array(elem) => {
            let (eplan, edt, emd) = resolve(elem, opts)?;
            // Arrays may hold NULLs whatever the column's constraints.
            let item = Arc::new(Field::new("item", edt, true).with_metadata(emd));
            let values = DataType::List(item);
            match opts.arrays {
                ArrayRepr::List => (
                    Plan::Array {
                        element: Box::new(eplan),
                        lossless: false,
                    },
                    values,
                    none(),
                ),
                ArrayRepr::Struct => (
                    Plan::Array {
                        element: Box::new(eplan),
                        lossless: true,
                    },
                    DataType::Struct(Fields::from(vec![
                        Field::new("dims", int32_list(), false),
                        Field::new("lower_bounds", int32_list(), false),
                        Field::new("values", values, false),
                    ])),
                    none(),
                ),
            }
        }
    })
}
