//! SQL column types of `CREATE TABLE` mapped to Arrow types.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, DataType as SqlType, ExactNumberInfo, TimezoneInfo,
};

/// The Arrow type of a SQL type, or a message naming the unsupported type.
///
/// `TIMESTAMP` is microsecond precision (like Delta Lake and Flink's default); `TIMESTAMP(3)`,
/// `TIMESTAMP(0)` and `TIMESTAMP(9)` choose milliseconds, seconds and nanoseconds.
/// `TIMESTAMP WITH TIME ZONE` / `TIMESTAMPTZ` are instants in UTC.
pub fn arrow_type(sql: &SqlType) -> Result<DataType, String> {
    use SqlType as S;
    Ok(match sql {
        S::TinyInt(_) => DataType::Int8,
        S::SmallInt(_) | S::Int2(_) | S::Int16 => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) | S::Int32 => DataType::Int32,
        S::BigInt(_) | S::Int8(_) | S::Int64 => DataType::Int64,
        S::Float(ExactNumberInfo::Precision(p)) if *p > 24 => DataType::Float64,
        S::Float(_) | S::Real | S::Float4 | S::Float32 => DataType::Float32,
        S::Double(_) | S::DoublePrecision | S::Float8 | S::Float64 => DataType::Float64,
        S::Boolean | S::Bool => DataType::Boolean,
        S::Text
        | S::String(_)
        | S::Varchar(_)
        | S::CharVarying(_)
        | S::CharacterVarying(_)
        | S::Char(_)
        | S::Character(_)
        | S::Uuid
        | S::JSON => DataType::Utf8,
        S::Bytea | S::Binary(_) | S::Varbinary(_) | S::Blob(_) | S::Bytes(_) => DataType::Binary,
        S::Date | S::Date32 => DataType::Date32,
        S::Decimal(info) | S::Numeric(info) | S::Dec(info) => match info {
            ExactNumberInfo::None => DataType::Decimal128(38, 10),
            ExactNumberInfo::Precision(p) => DataType::Decimal128(checked_precision(*p)?, 0),
            ExactNumberInfo::PrecisionAndScale(p, s) => {
                let scale =
                    i8::try_from(*s).map_err(|_| format!("DECIMAL scale {s} is out of range"))?;
                DataType::Decimal128(checked_precision(*p)?, scale)
            }
        },
        S::Timestamp(precision, tz) => {
            let unit = match precision {
                None | Some(6) => TimeUnit::Microsecond,
                Some(0) => TimeUnit::Second,
                Some(3) => TimeUnit::Millisecond,
                Some(9) => TimeUnit::Nanosecond,
                Some(p) => {
                    return Err(format!("TIMESTAMP({p}) is not supported; use 0, 3, 6 or 9"));
                }
            };
            let tz = match tz {
                TimezoneInfo::WithTimeZone | TimezoneInfo::Tz => Some(Arc::from("UTC")),
                TimezoneInfo::None | TimezoneInfo::WithoutTimeZone => None,
            };
            DataType::Timestamp(unit, tz)
        }
        S::TimestampNtz(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
        S::Array(elem) => {
            let inner = match elem {
                ArrayElemTypeDef::AngleBracket(t) | ArrayElemTypeDef::Parenthesis(t) => t,
                ArrayElemTypeDef::SquareBracket(t, _) => t,
                ArrayElemTypeDef::None => {
                    return Err("ARRAY needs an element type, e.g. ARRAY<TEXT>".into());
                }
            };
            DataType::List(Arc::new(Field::new("item", arrow_type(inner)?, true)))
        }
        S::Struct(fields, _) | S::Tuple(fields) => {
            let mut out = Vec::with_capacity(fields.len());
            for (i, f) in fields.iter().enumerate() {
                let name = f
                    .field_name
                    .as_ref()
                    .map(|n| n.value.clone())
                    .unwrap_or_else(|| format!("c{i}"));
                out.push(Field::new(name, arrow_type(&f.field_type)?, true));
            }
            DataType::Struct(Fields::from(out))
        }
        S::Map(k, v) => {
            let entries = Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", arrow_type(k)?, false),
                    Field::new("value", arrow_type(v)?, true),
                ])),
                false,
            );
            DataType::Map(Arc::new(entries), false)
        }
        other => return Err(format!("column type {other} is not supported")),
    })
}

fn checked_precision(p: u64) -> Result<u8, String> {
    match u8::try_from(p) {
        Ok(p) if (1..=38).contains(&p) => Ok(p),
        _ => Err(format!("DECIMAL precision {p} is out of range (1 to 38)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn t(sql: &str) -> Result<DataType, String> {
        let mut p = Parser::new(&GenericDialect {}).try_with_sql(sql).unwrap();
        arrow_type(&p.parse_data_type().unwrap())
    }

    #[test]
    fn maps_common_types() {
        assert_eq!(t("BIGINT"), Ok(DataType::Int64));
        assert_eq!(t("TEXT"), Ok(DataType::Utf8));
        assert_eq!(t("DOUBLE"), Ok(DataType::Float64));
        assert_eq!(
            t("TIMESTAMP"),
            Ok(DataType::Timestamp(TimeUnit::Microsecond, None))
        );
        assert_eq!(
            t("TIMESTAMP(3)"),
            Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
        );
        assert_eq!(t("DECIMAL(10,2)"), Ok(DataType::Decimal128(10, 2)));
        assert!(
            matches!(t("STRUCT<country TEXT, zip INT>"), Ok(DataType::Struct(f)) if f.len() == 2)
        );
        assert!(t("TIMESTAMP(4)").is_err());
    }
}
