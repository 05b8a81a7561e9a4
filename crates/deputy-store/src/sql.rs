//! The store's own small SQL layer, shared by both backends: values, rows, and queries
//! written once with `?` placeholders.
//!
//! Why not sqlx's query types: on SQLite every sqlx statement is a round trip to the
//! connection's worker thread (about 40 µs on a 2-core machine, against 0.4 µs for the
//! statement itself), so a write of ten statements cost more in thread hops than in
//! SQLite. SQLite now runs on rusqlite, on threads that own their connections and run a
//! whole write or read at a time; PostgreSQL stays on sqlx. This module is what the
//! shared backend code (`backend/`) sees of either: [`Exec`] runs one statement,
//! [`Query`] builds one, [`Row`] reads one. It never does I/O itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Result, StoreError};

/// A boxed future that may be sent across threads: what a write or read closure returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One SQL value. Binds carry their type even when null (`Int(None)`), because
/// PostgreSQL types every parameter; `Null` only comes back from SQLite reads, which
/// do not say what a null column would have held.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
    Null,
}

impl Value {
    fn is_null(&self) -> bool {
        matches!(
            self,
            Value::Null
                | Value::Int(None)
                | Value::Real(None)
                | Value::Text(None)
                | Value::Blob(None)
        )
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
            Value::Null => "null",
        }
    }
}

/// What can be bound to a `?`.
pub trait Bind {
    fn value(self) -> Value;
}

impl Bind for Value {
    fn value(self) -> Value {
        self
    }
}
impl Bind for i64 {
    fn value(self) -> Value {
        Value::Int(Some(self))
    }
}
impl Bind for Option<i64> {
    fn value(self) -> Value {
        Value::Int(self)
    }
}
impl Bind for &str {
    fn value(self) -> Value {
        Value::Text(Some(self.to_string()))
    }
}
impl Bind for String {
    fn value(self) -> Value {
        Value::Text(Some(self))
    }
}
impl Bind for Option<String> {
    fn value(self) -> Value {
        Value::Text(self)
    }
}
impl Bind for Option<&str> {
    fn value(self) -> Value {
        Value::Text(self.map(str::to_string))
    }
}
impl Bind for &[u8] {
    fn value(self) -> Value {
        Value::Blob(Some(self.to_vec()))
    }
}
impl<T: Bind + Clone> Bind for &T {
    fn value(self) -> Value {
        self.clone().value()
    }
}
impl Bind for Vec<u8> {
    fn value(self) -> Value {
        Value::Blob(Some(self))
    }
}

/// What a column can be read as.
pub trait Decode: Sized {
    fn decode(v: &Value) -> std::result::Result<Self, String>;
}

impl Decode for i64 {
    fn decode(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Int(Some(i)) => Ok(*i),
            other => Err(format!("expected an integer, found {}", describe(other))),
        }
    }
}
impl Decode for f64 {
    fn decode(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Real(Some(f)) => Ok(*f),
            Value::Int(Some(i)) => Ok(*i as f64),
            other => Err(format!("expected a number, found {}", describe(other))),
        }
    }
}
impl Decode for String {
    fn decode(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Text(Some(s)) => Ok(s.clone()),
            other => Err(format!("expected text, found {}", describe(other))),
        }
    }
}
impl Decode for Vec<u8> {
    fn decode(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Blob(Some(b)) => Ok(b.clone()),
            Value::Text(Some(s)) => Ok(s.clone().into_bytes()),
            other => Err(format!("expected bytes, found {}", describe(other))),
        }
    }
}
impl<T: Decode> Decode for Option<T> {
    fn decode(v: &Value) -> std::result::Result<Self, String> {
        if v.is_null() {
            Ok(None)
        } else {
            T::decode(v).map(Some)
        }
    }
}

fn describe(v: &Value) -> String {
    if v.is_null() {
        "NULL".into()
    } else {
        v.kind().into()
    }
}

/// One result row: its values by position, and the statement's column names.
#[derive(Debug, Clone)]
pub struct Row {
    names: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    pub fn new(names: Arc<[String]>, values: Vec<Value>) -> Self {
        Self { names, values }
    }

    /// The column called `name`.
    pub fn get<T: Decode>(&self, name: &str) -> Result<T> {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| StoreError::Corrupt(format!("no column `{name}` in the row")))?;
        T::decode(&self.values[i]).map_err(|e| StoreError::Corrupt(format!("column `{name}`: {e}")))
    }

    /// The column at `index` (from 0).
    pub fn at<T: Decode>(&self, index: usize) -> Result<T> {
        let v = self
            .values
            .get(index)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {index} in the row")))?;
        T::decode(v).map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
    }
}

/// A row read as a tuple, column by column.
pub trait FromRow: Sized {
    fn from_row(row: &Row) -> Result<Self>;
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Decode),+> FromRow for ($($t,)+) {
            fn from_row(row: &Row) -> Result<Self> {
                Ok(($(row.at::<$t>($i)?,)+))
            }
        }
    };
}
tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);

/// An event row a write has deferred: appended, with its `seq`, only when the writer
/// flushes (`backend::tasks::flush_events`), so that on PostgreSQL the lock that orders
/// event numbers is held from then to the commit, not for the whole transaction.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub task: Option<String>,
    pub kind: &'static str,
    pub payload: String,
    pub at: i64,
}

/// A connection that runs statements: the backend's half of this layer.
pub trait Exec: Send {
    /// The events deferred in the open transaction, in order.
    fn deferred_events(&mut self) -> &mut Vec<EventRow>;

    /// Runs a statement that returns no rows; the number of rows it changed.
    fn run(&mut self, sql: &str, args: Vec<Value>) -> impl Future<Output = Result<u64>> + Send;

    /// Runs a query and hands its rows to `each` in order until it returns false.
    fn each(
        &mut self,
        sql: &str,
        args: Vec<Value>,
        each: &mut (dyn FnMut(Row) -> Result<bool> + Send),
    ) -> impl Future<Output = Result<()>> + Send;
}

/// A statement with its arguments, built up in order: SQL text with `?` for each bound
/// value (PostgreSQL's connection numbers them).
#[derive(Debug, Clone, Default)]
pub struct Query {
    sql: String,
    args: Vec<Value>,
}

/// A query from fixed SQL; bind its `?`s in order.
pub fn query(sql: &str) -> Query {
    Query {
        sql: sql.to_string(),
        args: Vec::new(),
    }
}

impl Query {
    pub fn bind(mut self, v: impl Bind) -> Self {
        self.args.push(v.value());
        self
    }

    /// Appends SQL text (never a user's value: those are bound).
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends one `?` bound to `v`.
    pub fn push_bind(&mut self, v: impl Bind) -> &mut Self {
        self.sql.push('?');
        self.args.push(v.value());
        self
    }

    /// Appends `?, ?, …`, one bound to each value.
    pub fn push_list<V: Bind>(&mut self, values: impl IntoIterator<Item = V>) -> &mut Self {
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.push_bind(v);
        }
        self
    }

    /// Appends `(?, ?), (?, ?), …`: one parenthesised tuple per item, its values from `row`.
    pub fn push_rows<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        row: impl Fn(T) -> Vec<Value>,
    ) -> &mut Self {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.sql.push('(');
            self.push_list(row(item));
            self.sql.push(')');
        }
        self
    }

    /// The query plan of this statement instead of its result (SQLite), for tests that
    /// pin which index a statement uses.
    #[cfg(test)]
    pub fn explained(mut self) -> Self {
        self.sql.insert_str(0, "EXPLAIN QUERY PLAN ");
        self
    }

    /// Runs it; the number of rows changed.
    pub async fn execute(self, c: &mut impl Exec) -> Result<u64> {
        c.run(&self.sql, self.args).await
    }

    /// Every row.
    pub async fn fetch_all(self, c: &mut impl Exec) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        c.each(&self.sql, self.args, &mut |r| {
            rows.push(r);
            Ok(true)
        })
        .await?;
        Ok(rows)
    }

    /// Rows in order, for as long as `each` returns true.
    pub async fn fetch_while(
        self,
        c: &mut impl Exec,
        each: &mut (dyn FnMut(Row) -> Result<bool> + Send),
    ) -> Result<()> {
        c.each(&self.sql, self.args, each).await
    }

    /// The first row, if any.
    pub async fn fetch_optional(self, c: &mut impl Exec) -> Result<Option<Row>> {
        let mut first = None;
        c.each(&self.sql, self.args, &mut |r| {
            first = Some(r);
            Ok(false)
        })
        .await?;
        Ok(first)
    }

    /// The first row; an error when there is none.
    pub async fn fetch_one(self, c: &mut impl Exec) -> Result<Row> {
        self.fetch_optional(c).await?.ok_or_else(|| {
            StoreError::Corrupt("a query that always returns a row returned none".into())
        })
    }

    /// The first column of the first row.
    pub async fn scalar<T: Decode>(self, c: &mut impl Exec) -> Result<T> {
        self.fetch_one(c).await?.at(0)
    }

    /// The first column of the first row, if there is a row.
    pub async fn scalar_optional<T: Decode>(self, c: &mut impl Exec) -> Result<Option<T>> {
        self.fetch_optional(c).await?.map(|r| r.at(0)).transpose()
    }

    /// The first column of every row.
    pub async fn scalars<T: Decode + Send>(self, c: &mut impl Exec) -> Result<Vec<T>> {
        let mut out = Vec::new();
        c.each(&self.sql, self.args, &mut |r| {
            out.push(r.at(0)?);
            Ok(true)
        })
        .await?;
        Ok(out)
    }

    /// Every row as a tuple.
    pub async fn fetch_as<T: FromRow + Send>(self, c: &mut impl Exec) -> Result<Vec<T>> {
        let mut out = Vec::new();
        c.each(&self.sql, self.args, &mut |r| {
            out.push(T::from_row(&r)?);
            Ok(true)
        })
        .await?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_decode_as_none_and_fail_as_values() {
        let row = Row::new(
            Arc::from(vec!["a".to_string(), "b".to_string()]),
            vec![Value::Null, Value::Int(Some(3))],
        );
        assert_eq!(row.get::<Option<i64>>("a").unwrap(), None);
        assert_eq!(row.get::<Option<i64>>("b").unwrap(), Some(3));
        let e = row.get::<i64>("a").unwrap_err().to_string();
        assert!(e.contains("column `a`") && e.contains("NULL"), "{e}");
        assert!(row.get::<String>("b").is_err());
        assert!(row.get::<i64>("c").is_err());
    }

    #[test]
    fn lists_and_rows_bind_in_order() {
        let mut q = query("INSERT INTO t (a, b) VALUES ");
        q.push_rows([(1, "x"), (2, "y")], |(a, b)| {
            vec![(a as i64).value(), b.value()]
        });
        q.push(" WHERE c IN (").push_list([7i64, 8]).push(")");
        assert_eq!(
            q.sql,
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) WHERE c IN (?, ?)"
        );
        assert_eq!(q.args.len(), 6);
        assert_eq!(q.args[2], Value::Int(Some(2)));
    }
}
