//! A stream joined with a lookup table (`JOIN t FOR SYSTEM_TIME AS OF s.proc_time AS d ON
//! s.k = d.k`): each row looks its key up when it arrives. INNER or LEFT; the lookup table is
//! the right side; conditions on the table alone filter its rows, other conditions the pairs.

use datafusion::common::{DFSchema, NullEquality};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan, TableScan};
use laketide_engine::operators::{LookupJoin, LookupJoinSpec};

use super::{Stream, Translator, arrow_schema};
use crate::error::{Result, SqlError};
use crate::stream_table::StreamTable;

/// The right input of a lookup join: the lookup table's scan and the conditions on its rows.
pub(crate) struct LookupSide<'a> {
    pub(crate) scan: &'a TableScan,
    name: String,
    filters: Vec<Expr>,
}

/// `column`, or a cast of it (the join's keys are cast to a common type).
fn key_column(e: &Expr) -> Option<&datafusion::common::Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Cast(c) => key_column(&c.expr),
        Expr::TryCast(c) => key_column(&c.expr),
        _ => None,
    }
}

impl Translator<'_> {
    /// The lookup table `plan` reads (through aliases and filters), if it reads one.
    pub(crate) fn lookup_side<'a>(&self, plan: &'a LogicalPlan) -> Option<LookupSide<'a>> {
        let mut filters = Vec::new();
        let mut plan = plan;
        loop {
            match plan {
                LogicalPlan::SubqueryAlias(a) => plan = &a.input,
                LogicalPlan::Filter(f) => {
                    filters.push(f.predicate.clone());
                    plan = &f.input;
                }
                LogicalPlan::TableScan(scan) => {
                    let provider = source_as_provider(&scan.source).ok()?;
                    let table = provider.downcast_ref::<StreamTable>()?;
                    if !self.sources.is_lookup(&table.name) {
                        return None;
                    }
                    filters.extend(scan.filters.iter().cloned());
                    return Some(LookupSide {
                        scan,
                        name: table.name.clone(),
                        filters,
                    });
                }
                _ => return None,
            }
        }
    }

    /// The error for a lookup table read as a stream.
    pub(crate) fn lookup_outside_join(&self, name: &str) -> SqlError {
        self.err(format!(
            "`{name}` is a lookup table: join a stream with it, `JOIN {name} FOR SYSTEM_TIME AS OF s.proc_time AS x ON s.key = x.key` (as the right side of the JOIN), instead of reading it as a stream"
        ))
    }

    /// The lookup join of the join's left stream with the table `side` reads.
    pub(crate) fn lookup_join(&mut self, join: &Join, side: LookupSide<'_>) -> Result<Stream> {
        let left_outer = match join.join_type {
            JoinType::Inner => false,
            JoinType::Left => true,
            other => {
                return Err(self.err(format!(
                    "a lookup join is an INNER or LEFT JOIN (the table has no rows of its own to emit), not {other}"
                )));
            }
        };
        if join.null_equality == NullEquality::NullEqualsNull {
            return Err(self.err(
                "join keys compared with IS NOT DISTINCT FROM are not supported in lookup joins; compare them with =",
            ));
        }
        if join.on.is_empty() {
            return Err(self.err(format!(
                "a lookup join needs the table's key equal to the stream's: `ON s.key = {}.key`",
                side.name
            )));
        }
        let left = self.translate(&join.left)?;
        if self.dataflow.mode(left.node).is_updating() {
            return Err(self.err(
                "the stream side of this lookup join is an updating result; look rows up before aggregating them",
            ));
        }
        let mut key_names: Vec<String> = Vec::new();
        let mut stream_keys = Vec::new();
        for (l, r) in &join.on {
            let column = key_column(r).ok_or_else(|| {
                self.err(format!(
                    "a lookup join compares the table's own columns with the stream's, not `{r}`"
                ))
            })?;
            if key_names.contains(&column.name) {
                return Err(self.err(format!(
                    "the lookup table's column `{}` is compared twice; compare each key column once",
                    column.name
                )));
            }
            key_names.push(column.name.clone());
            stream_keys.push(self.physical(l, &left.schema)?);
        }
        let table = self
            .sources
            .lookup_table(&side.name, &key_names, self.location)?;
        let table_schema = table.schema();
        let keys = (table.key_columns().iter())
            .map(|c| {
                let name = table_schema.field(*c).name();
                let at = key_names.iter().position(|k| k == name).ok_or_else(|| {
                    self.err(format!("the lookup join gives no value for key `{name}`"))
                })?;
                Ok(stream_keys[at].clone())
            })
            .collect::<Result<Vec<_>>>()?;
        let unqualified =
            DFSchema::try_from(table_schema.as_ref().clone()).map_err(|e| self.df(e))?;
        let table_filter = match conjunction(side.filters.iter().cloned().map(unnormalize_col)) {
            Some(f) => Some(self.physical(&f, &unqualified)?),
            None => None,
        };
        let filter = match &join.filter {
            Some(f) => Some(self.physical(f, &join.schema)?),
            None => None,
        };
        let table_projection = match &side.scan.projection {
            Some(p) => p.clone(),
            None => (0..table_schema.fields().len()).collect(),
        };
        let description = format!(
            "{} {} on [{}]{}{}",
            if left_outer { "LEFT" } else { "INNER" },
            table.describe(),
            super::join::keys_text(join),
            match conjunction(side.filters.iter().cloned()) {
                Some(f) => format!(", table rows where {f}"),
                None => String::new(),
            },
            match &join.filter {
                Some(f) => format!(", where {f}"),
                None => String::new(),
            },
        );
        let op = LookupJoin::new(LookupJoinSpec {
            input: arrow_schema(&left.schema),
            keys,
            table,
            table_filter,
            table_projection,
            filter,
            left_outer,
            output: arrow_schema(&join.schema),
        })
        .map_err(|e| self.err(e.to_string()))?;
        let signature = format!("lookup join {} {}", side.name, join.join_type);
        let node = self.operator("lookup_join", description, Box::new(op), vec![left.node])?;
        // Stateless: cache and reload settings may change without losing the query's state.
        self.dataflow.set_state_signature(node, signature);
        // The stream's columns come first and keep their places: its windows and event time
        // pass through.
        Ok(Stream {
            node,
            schema: join.schema.clone(),
            ..left
        })
    }
}
