//! Aggregate states that take retractions: what an aggregate over an updating input keeps per
//! group. Counts and sums add and subtract; min, max and count(DISTINCT) keep a count per
//! value (in Arrow's row format, whose byte order is the value order), so a retracted value
//! leaves exactly when its last occurrence does.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::arrow::row::{RowConverter, RowParser, SortField};
use datafusion::common::{HashMap, ScalarValue};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{EngineError, Result};

/// Which aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetractableFunction {
    /// `count(*)` (no argument) or `count(x)` (non-null values).
    Count,
    /// `sum(x)` of integers or floats.
    Sum,
    /// `avg(x)` of integers or floats.
    Avg,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `count(DISTINCT x)`.
    CountDistinct,
}

/// One aggregate over an updating input.
#[derive(Debug, Clone)]
pub struct RetractableSpec {
    /// The function.
    pub function: RetractableFunction,
    /// Its argument (none for `count(*)`).
    pub arg: Option<Arc<dyn PhysicalExpr>>,
    /// `FILTER (WHERE …)`.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// Per group, one aggregate's state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum State {
    Count(i64),
    /// Integer sums are exact (i128); float sums are f64. `n` counts the values, so that a
    /// sum of nothing is NULL.
    Sum {
        int: i128,
        float: f64,
        n: i64,
    },
    /// Values (row format) with their counts.
    Values(BTreeMap<Box<[u8]>, i64>),
    Distinct(HashMap<Box<[u8]>, i64>),
}

/// How one aggregate reads its argument and builds its result.
pub(crate) struct Retractable {
    pub(crate) spec: RetractableSpec,
    /// The argument's type.
    input: Option<DataType>,
    /// The result's type.
    pub(crate) output: DataType,
    values: Option<(RowConverter, RowParser)>,
}

impl Retractable {
    /// For `spec` over an argument of type `input`; fails for argument types it cannot sum.
    pub(crate) fn new(spec: RetractableSpec, input: Option<DataType>) -> Result<Self> {
        let numeric = |t: &DataType| t.is_integer() || t.is_floating();
        let output = match (spec.function, &input) {
            (RetractableFunction::Count | RetractableFunction::CountDistinct, _) => DataType::Int64,
            (RetractableFunction::Sum, Some(t)) if t.is_integer() => DataType::Int64,
            (RetractableFunction::Sum, Some(t)) if t.is_floating() => DataType::Float64,
            (RetractableFunction::Avg, Some(t)) if numeric(t) => DataType::Float64,
            (RetractableFunction::Min | RetractableFunction::Max, Some(t)) => t.clone(),
            (f, t) => {
                return Err(EngineError::User(format!(
                    "{f:?} of {} over an updating result is not supported (sum and avg take integers and floats)",
                    t.as_ref().map_or("nothing".to_string(), |t| t.to_string())
                )));
            }
        };
        let values = match spec.function {
            RetractableFunction::Min
            | RetractableFunction::Max
            | RetractableFunction::CountDistinct => {
                let t = input.clone().ok_or_else(|| {
                    EngineError::Internal("min, max and count(DISTINCT) take an argument".into())
                })?;
                let converter = RowConverter::new(vec![SortField::new(t)])?;
                let parser = converter.parser();
                Some((converter, parser))
            }
            _ => None,
        };
        Ok(Retractable {
            spec,
            input,
            output,
            values,
        })
    }

    /// An empty state.
    pub(crate) fn empty(&self) -> State {
        match self.spec.function {
            RetractableFunction::Count => State::Count(0),
            RetractableFunction::Sum | RetractableFunction::Avg => State::Sum {
                int: 0,
                float: 0.0,
                n: 0,
            },
            RetractableFunction::Min | RetractableFunction::Max => State::Values(BTreeMap::new()),
            RetractableFunction::CountDistinct => State::Distinct(HashMap::new()),
        }
    }

    /// The argument of a batch prepared for [`Self::apply`]: integers as Int64, floats as
    /// Float64, other values in the row format.
    pub(crate) fn prepare(&self, arg: Option<&ArrayRef>) -> Result<Prepared> {
        let Some(arg) = arg else {
            return Ok(Prepared::None);
        };
        if let Some((converter, _)) = &self.values {
            return Ok(Prepared::Rows(
                converter.convert_columns(std::slice::from_ref(arg))?,
                arg.logical_nulls(),
            ));
        }
        match &self.input {
            Some(t) if t.is_integer() => Ok(Prepared::Int(cast(arg, &DataType::Int64)?)),
            _ => Ok(Prepared::Float(cast(arg, &DataType::Float64)?)),
        }
    }

    /// Adds (`sign` 1) or retracts (-1) row `i` of `arg` to `state`.
    pub(crate) fn apply(&self, state: &mut State, arg: &Prepared, i: usize, sign: i64) {
        match (state, arg) {
            (State::Count(n), Prepared::None) => *n += sign,
            (State::Count(n), a) if a.is_valid(i) => *n += sign,
            (State::Sum { int, n, .. }, Prepared::Int(a)) if a.is_valid(i) => {
                *int += i128::from(a.as_primitive::<Int64Type>().value(i)) * i128::from(sign);
                *n += sign;
            }
            (State::Sum { float, n, .. }, Prepared::Float(a)) if a.is_valid(i) => {
                *float += a.as_primitive::<Float64Type>().value(i) * sign as f64;
                *n += sign;
            }
            (State::Values(map), Prepared::Rows(rows, nulls))
                if nulls.as_ref().is_none_or(|n| n.is_valid(i)) =>
            {
                count_value(map, rows.row(i).data(), sign)
            }
            (State::Distinct(map), Prepared::Rows(rows, nulls))
                if nulls.as_ref().is_none_or(|n| n.is_valid(i)) =>
            {
                let key = rows.row(i).data();
                // Look up before allocating: most values were seen before.
                match map.get_mut(key) {
                    Some(c) => {
                        *c += sign;
                        if *c == 0 {
                            map.remove(key);
                        }
                    }
                    None => {
                        map.insert(Box::from(key), sign);
                    }
                }
            }
            _ => {}
        }
    }

    /// The result of `state`.
    pub(crate) fn evaluate(&self, state: &State) -> Result<ScalarValue> {
        Ok(match (self.spec.function, state) {
            (RetractableFunction::Count, State::Count(n)) => ScalarValue::Int64(Some(*n)),
            (RetractableFunction::CountDistinct, State::Distinct(m)) => {
                ScalarValue::Int64(Some(m.len() as i64))
            }
            (RetractableFunction::Sum, State::Sum { int, float, n }) => match (&self.output, *n) {
                (_, 0) => ScalarValue::try_from(&self.output)?,
                (DataType::Int64, _) => ScalarValue::Int64(Some(
                    i64::try_from(*int)
                        .map_err(|_| EngineError::User("sum overflows a BIGINT".into()))?,
                )),
                _ => ScalarValue::Float64(Some(*float)),
            },
            (RetractableFunction::Avg, State::Sum { int, float, n }) => {
                if *n == 0 {
                    ScalarValue::Float64(None)
                } else if self.input.as_ref().is_some_and(|t| t.is_integer()) {
                    ScalarValue::Float64(Some(*int as f64 / *n as f64))
                } else {
                    ScalarValue::Float64(Some(*float / *n as f64))
                }
            }
            (RetractableFunction::Min | RetractableFunction::Max, State::Values(map)) => {
                let picked = if self.spec.function == RetractableFunction::Min {
                    map.keys().next()
                } else {
                    map.keys().next_back()
                };
                match (picked, &self.values) {
                    (Some(bytes), Some((converter, parser))) => {
                        let column = converter.convert_rows([parser.parse(bytes)])?;
                        ScalarValue::try_from_array(&column[0], 0)?
                    }
                    _ => ScalarValue::try_from(&self.output)?,
                }
            }
            (f, s) => {
                return Err(EngineError::Internal(format!(
                    "the state {s:?} does not belong to {f:?}"
                )));
            }
        })
    }
}

fn count_value(map: &mut BTreeMap<Box<[u8]>, i64>, key: &[u8], sign: i64) {
    match map.get_mut(key) {
        Some(c) => {
            *c += sign;
            if *c == 0 {
                map.remove(key);
            }
        }
        None => {
            map.insert(Box::from(key), sign);
        }
    }
}

/// An aggregate's argument over one batch.
pub(crate) enum Prepared {
    None,
    Int(ArrayRef),
    Float(ArrayRef),
    Rows(
        datafusion::arrow::row::Rows,
        Option<datafusion::arrow::buffer::NullBuffer>,
    ),
}

impl Prepared {
    fn is_valid(&self, i: usize) -> bool {
        match self {
            Prepared::None => true,
            Prepared::Int(a) | Prepared::Float(a) => a.is_valid(i),
            Prepared::Rows(_, nulls) => nulls.as_ref().is_none_or(|n| n.is_valid(i)),
        }
    }
}
