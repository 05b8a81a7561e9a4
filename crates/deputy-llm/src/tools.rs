//! Checking a model's tool arguments before a tool runs: parsed as JSON, then checked
//! against the tool's JSON schema. A bad call becomes a message for the model (sent
//! back as the tool's result, so it can correct itself), never a crash of the loop.

use serde_json::Value;

/// A tool's compiled argument schema.
pub struct ArgumentSchema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for ArgumentSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgumentSchema").finish_non_exhaustive()
    }
}

/// At most this many schema violations are reported back to the model.
const MAX_REPORTED: usize = 5;

impl ArgumentSchema {
    /// Compiles a tool's `parameters` schema; a broken schema is the tool author's bug.
    pub fn new(schema: &Value) -> Result<Self, String> {
        jsonschema::validator_for(schema)
            .map(|validator| Self { validator })
            .map_err(|e| format!("the tool's argument schema is invalid: {e}"))
    }

    /// The parsed arguments, or a message telling the model what to fix.
    pub fn check(&self, tool: &str, arguments: &str) -> Result<Value, String> {
        let text = if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        };
        let value: Value = serde_json::from_str(text).map_err(|e| {
            format!("error: the arguments for `{tool}` are not valid JSON ({e}); send a JSON object matching the tool's schema")
        })?;
        let problems: Vec<String> = self
            .validator
            .iter_errors(&value)
            .take(MAX_REPORTED)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(value)
        } else {
            Err(format!(
                "error: the arguments for `{tool}` do not match its schema: {}",
                problems.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> ArgumentSchema {
        ArgumentSchema::new(&json!({
            "type": "object",
            "properties": {"path": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
            "required": ["path"],
            "additionalProperties": false
        }))
        .unwrap()
    }

    #[test]
    fn good_arguments_pass_and_bad_ones_explain_themselves() {
        assert_eq!(
            schema().check("read_file", r#"{"path": "a.rs"}"#).unwrap()["path"],
            "a.rs"
        );
        let truncated = schema().check("read_file", r#"{"path": "a.r"#).unwrap_err();
        assert!(truncated.contains("not valid JSON"), "{truncated}");
        let missing = schema().check("read_file", "").unwrap_err();
        assert!(missing.contains("path"), "{missing}");
        let wrong = schema()
            .check("read_file", r#"{"path": 3, "limit": 0, "x": 1}"#)
            .unwrap_err();
        assert!(
            wrong.contains("/path") && wrong.contains("/limit"),
            "{wrong}"
        );
        assert!(ArgumentSchema::new(&json!({"type": "no-such-type"})).is_err());
    }
}
