//! A pooled PostgreSQL connection (sqlx) as the shared code's [`Exec`], and the pool
//! that serves reads.

use std::sync::Arc;

use futures_util::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Column, Postgres, Row as _, TypeInfo};

use crate::Result;
use crate::sql::{BoxFuture, EventRow, Exec, Row, Value};

pub struct PgConn {
    conn: PoolConnection<Postgres>,
    deferred: Vec<EventRow>,
}

impl PgConn {
    pub fn new(conn: PoolConnection<Postgres>) -> Self {
        Self {
            conn,
            deferred: Vec::new(),
        }
    }

    /// Runs fixed SQL (no parameters, possibly several statements) in one round trip,
    /// over the simple query protocol.
    pub async fn simple(&mut self, sql: &'static str) -> Result<()> {
        sqlx::raw_sql(sql).execute(&mut *self.conn).await?;
        Ok(())
    }
}

/// The shared SQL is written with `?` placeholders; PostgreSQL numbers them: `?` ->
/// `$1`, `$2`, ... outside quoted literals and identifiers.
pub fn number_placeholders(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut n = 0;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (None, '?') => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

fn build(
    sql: &str,
    args: Vec<Value>,
) -> sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments> {
    let mut q = sqlx::query(AssertSqlSafe(number_placeholders(sql)));
    for v in args {
        q = match v {
            Value::Int(v) => q.bind(v),
            Value::Real(v) => q.bind(v),
            Value::Text(v) => q.bind(v),
            Value::Blob(v) => q.bind(v),
            Value::Null => q.bind(None::<String>),
        };
    }
    q
}

/// A row's values by the column types PostgreSQL reports. deputy's schema uses BIGINT,
/// TEXT and BYTEA (migration 0001 says why); the rest covers what expressions return.
fn row_from(r: &PgRow, names: &Arc<[String]>) -> Result<Row> {
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match col.type_info().name() {
            "INT8" => Value::Int(r.try_get::<Option<i64>, _>(i)?),
            "INT4" => Value::Int(r.try_get::<Option<i32>, _>(i)?.map(i64::from)),
            "INT2" => Value::Int(r.try_get::<Option<i16>, _>(i)?.map(i64::from)),
            "BOOL" => Value::Int(r.try_get::<Option<bool>, _>(i)?.map(i64::from)),
            "FLOAT8" => Value::Real(r.try_get::<Option<f64>, _>(i)?),
            "FLOAT4" => Value::Real(r.try_get::<Option<f32>, _>(i)?.map(f64::from)),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => {
                Value::Text(r.try_get::<Option<String>, _>(i)?)
            }
            "BYTEA" => Value::Blob(r.try_get::<Option<Vec<u8>>, _>(i)?),
            "VOID" => Value::Null,
            other => {
                return Err(crate::StoreError::Corrupt(format!(
                    "column `{}` has type {other}, which the store does not read (cast it to BIGINT or TEXT)",
                    col.name()
                )));
            }
        };
        values.push(v);
    }
    Ok(Row::new(names.clone(), values))
}

impl Exec for PgConn {
    fn deferred_events(&mut self) -> &mut Vec<EventRow> {
        &mut self.deferred
    }

    async fn run(&mut self, sql: &str, args: Vec<Value>) -> Result<u64> {
        Ok(build(sql, args)
            .execute(&mut *self.conn)
            .await?
            .rows_affected())
    }

    async fn each(
        &mut self,
        sql: &str,
        args: Vec<Value>,
        each: &mut (dyn FnMut(Row) -> Result<bool> + Send),
    ) -> Result<()> {
        let q = build(sql, args);
        let mut rows = q.fetch(&mut *self.conn);
        let mut names: Option<Arc<[String]>> = None;
        while let Some(r) = rows.try_next().await? {
            let names = names
                .get_or_insert_with(|| r.columns().iter().map(|c| c.name().to_string()).collect());
            if !each(row_from(&r, names)?)? {
                break;
            }
        }
        Ok(())
    }
}

/// Reads take a connection from the pool for as long as they run.
pub struct PgReaders {
    pool: sqlx::PgPool,
}

impl PgReaders {
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self { pool }
    }

    pub async fn run<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let mut conn = PgConn::new(self.pool.acquire().await?);
        read(&mut conn).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            super::number_placeholders("a = ? AND b = '?' AND \"c?\" = ? "),
            "a = $1 AND b = '?' AND \"c?\" = $2 "
        );
    }
}
