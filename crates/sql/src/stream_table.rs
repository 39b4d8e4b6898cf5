//! Placeholder table provider for streaming source tables: gives DataFusion the schema to plan
//! against; the dataflow replaces its scans with the connector's source.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::plan_err;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::TableType;
use datafusion::physical_plan::ExecutionPlan;

/// A source table declared with `CREATE TABLE … WITH (connector = …)`.
#[derive(Debug)]
pub struct StreamTable {
    /// The table's name.
    pub name: String,
    schema: SchemaRef,
}

impl StreamTable {
    /// A placeholder for `name` with `schema`.
    pub fn new(name: impl Into<String>, schema: SchemaRef) -> Self {
        StreamTable {
            name: name.into(),
            schema,
        }
    }
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan_err!(
            "`{}` is a streaming table; it is read by `laketide run`",
            self.name
        )
    }
}
