//! OpenAPI schemas for the types whose JSON form is hand-written (ids and the lenient
//! input types), so the generated document says what the API really accepts.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::id::{IdRef, TaskId};
use crate::spec::Command;
use crate::submit::{DepInput, DurationInput, SizeInput, TimeoutInput, WhenInput};

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

fn number(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .description(Some(description))
}

fn one_of(items: Vec<RefOr<Schema>>, description: &str) -> RefOr<Schema> {
    let mut b = OneOfBuilder::new().description(Some(description));
    for i in items {
        b = b.item(i);
    }
    b.into()
}

impl PartialSchema for TaskId {
    fn schema() -> RefOr<Schema> {
        string("A task id: 32 lowercase hex characters.")
            .pattern(Some("^[0-9a-f]{32}$"))
            .into()
    }
}
impl ToSchema for TaskId {}

impl PartialSchema for IdRef {
    fn schema() -> RefOr<Schema> {
        string("A task id, or a unique prefix of at least 8 hex characters.")
            .pattern(Some("^[0-9a-fA-F]{8,32}$"))
            .into()
    }
}
impl ToSchema for IdRef {}

impl PartialSchema for Command {
    fn schema() -> RefOr<Schema> {
        one_of(
            vec![
                string("A command line, run by `sh -c`.").into(),
                ArrayBuilder::new()
                    .items(string("An argument."))
                    .description(Some("An argv list, run without a shell."))
                    .into(),
            ],
            "What a shell task runs.",
        )
    }
}
impl ToSchema for Command {}

impl PartialSchema for DepInput {
    fn schema() -> RefOr<Schema> {
        let mode = || {
            string("`success` (default): run only if it succeeded; `finish`: run after it ended.")
                .enum_values(Some(["success", "finish"]))
        };
        one_of(
            vec![
                IdRef::schema(),
                ObjectBuilder::new()
                    .property("task", IdRef::schema())
                    .property("mode", mode())
                    .required("task")
                    .description(Some("A stored task."))
                    .into(),
                ObjectBuilder::new()
                    .property(
                        "key",
                        string("The `key` of another task in the same batch."),
                    )
                    .property("mode", mode())
                    .required("key")
                    .description(Some("A task of the same batch."))
                    .into(),
            ],
            "A dependency.",
        )
    }
}
impl ToSchema for DepInput {}

impl PartialSchema for TimeoutInput {
    fn schema() -> RefOr<Schema> {
        one_of(
            vec![
                number("Seconds, more than zero.").into(),
                string("A duration (`90s`, `10m`), or `none` for no timeout.").into(),
            ],
            "A timeout.",
        )
    }
}
impl ToSchema for TimeoutInput {}

impl PartialSchema for DurationInput {
    fn schema() -> RefOr<Schema> {
        one_of(
            vec![
                number("Seconds, more than zero.").into(),
                string("A duration such as `2s` or `1m30s`.").into(),
            ],
            "A duration.",
        )
    }
}
impl ToSchema for DurationInput {}

impl PartialSchema for SizeInput {
    fn schema() -> RefOr<Schema> {
        one_of(
            vec![
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("Bytes."))
                    .into(),
                string("A size such as `512KiB` or `10MiB`.").into(),
            ],
            "A size.",
        )
    }
}
impl ToSchema for SizeInput {}

impl PartialSchema for WhenInput {
    fn schema() -> RefOr<Schema> {
        one_of(
            vec![
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("Unix milliseconds."))
                    .into(),
                string("RFC 3339 (`2026-11-24T10:00:00Z`) or relative (`+10m`).").into(),
            ],
            "A point in time.",
        )
    }
}
impl ToSchema for WhenInput {}
