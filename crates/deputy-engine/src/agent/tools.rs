//! The built-in agent's file tools: `read_file`, `write_file`, `edit_file`, `list_dir`,
//! `glob` and `grep`. Every path goes through [`Workspace::resolve`]; every result is
//! bounded. A failure is a result the model reads (`is_error`), never a crash of the loop.
//! (`shell` lives in `shell.rs`: it needs the engine's process machinery.)

use std::path::Path;

use serde_json::{Value, json};

use super::workspace::Workspace;

/// Largest file `read_file`, `edit_file` and `grep` open.
const MAX_FILE_BYTES: u64 = 8 << 20;
/// Largest content `write_file` writes.
const MAX_WRITE_BYTES: usize = 4 << 20;
/// Largest result text handed back to the model.
pub const MAX_RESULT_BYTES: usize = 32 << 10;
const MAX_ENTRIES: usize = 1000;
const MAX_MATCHES: usize = 200;
const DEFAULT_READ_LINES: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
}

impl ToolOutput {
    pub fn ok(content: impl Into<String>) -> Self {
        Self {
            content: bounded(content.into()),
            is_error: false,
        }
    }

    pub fn error(content: impl Into<String>) -> Self {
        Self {
            content: bounded(content.into()),
            is_error: true,
        }
    }
}

/// Cuts a result to [`MAX_RESULT_BYTES`], saying so.
pub fn bounded(mut s: String) -> String {
    if s.len() <= MAX_RESULT_BYTES {
        return s;
    }
    let total = s.len();
    let end = s.floor_char_boundary(MAX_RESULT_BYTES);
    s.truncate(end);
    s.push_str(&format!(
        "\n[… {} more bytes not shown; narrow the request]",
        total - end
    ));
    s
}

/// Name, description and JSON schema of each file tool.
pub fn specs() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "read_file",
            "Read a text file of the workspace. Optional offset (first line, 1-based) and limit (number of lines).",
            json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "offset": {"type": "integer", "minimum": 1},
                "limit": {"type": "integer", "minimum": 1}
            }, "required": ["path"], "additionalProperties": false}),
        ),
        (
            "write_file",
            "Create or overwrite a file of the workspace with the given content (parent directories are created).",
            json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "content": {"type": "string"}
            }, "required": ["path", "content"], "additionalProperties": false}),
        ),
        (
            "edit_file",
            "Replace old_string with new_string in a file. old_string must appear exactly once unless replace_all is true.",
            json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "old_string": {"type": "string", "minLength": 1},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean"}
            }, "required": ["path", "old_string", "new_string"], "additionalProperties": false}),
        ),
        (
            "list_dir",
            "List a directory of the workspace (default: its root). Directories end with /.",
            json!({"type": "object", "properties": {"path": {"type": "string"}}, "additionalProperties": false}),
        ),
        (
            "glob",
            "Find files of the workspace whose relative path matches a glob like src/**/*.rs.",
            json!({"type": "object", "properties": {
                "pattern": {"type": "string", "minLength": 1},
                "path": {"type": "string"}
            }, "required": ["pattern"], "additionalProperties": false}),
        ),
        (
            "grep",
            "Search file contents with a regular expression; optional path (file or directory) and glob filter. Prints path:line: text.",
            json!({"type": "object", "properties": {
                "pattern": {"type": "string", "minLength": 1},
                "path": {"type": "string"},
                "glob": {"type": "string"}
            }, "required": ["pattern"], "additionalProperties": false}),
        ),
    ]
}

fn str_arg<'a>(args: &'a Value, key: &str) -> &'a str {
    args.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Runs one file tool with arguments already checked against its schema. Blocking:
/// call it from `spawn_blocking`.
pub fn run(ws: &Workspace, name: &str, args: &Value) -> ToolOutput {
    let result = match name {
        "read_file" => read_file(ws, args),
        "write_file" => write_file(ws, args),
        "edit_file" => edit_file(ws, args),
        "list_dir" => list_dir(ws, args),
        "glob" => glob(ws, args),
        "grep" => grep(ws, args),
        other => Err(format!("there is no tool `{other}`")),
    };
    match result {
        Ok(s) => ToolOutput::ok(s),
        Err(e) => ToolOutput::error(e),
    }
}

fn read_text(ws: &Workspace, path: &Path) -> Result<String, String> {
    let shown = ws.display(path);
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    if meta.is_dir() {
        return Err(format!("`{shown}` is a directory; use list_dir"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "`{shown}` is {} bytes, over the {MAX_FILE_BYTES} this tool opens; use grep",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    if bytes.contains(&0) {
        return Err(format!("`{shown}` is a binary file"));
    }
    String::from_utf8(bytes).map_err(|_| format!("`{shown}` is not UTF-8 text"))
}

fn read_file(ws: &Workspace, args: &Value) -> Result<String, String> {
    let path = ws.resolve(str_arg(args, "path"))?;
    let text = read_text(ws, &path)?;
    let offset = args
        .get("offset")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1) as usize;
    let limit = args
        .get("limit")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_READ_LINES, |l| l as usize);
    let total = text.lines().count();
    let mut out: String = text
        .lines()
        .skip(offset - 1)
        .take(limit)
        .map(|l| format!("{l}\n"))
        .collect();
    let shown_end = (offset - 1 + limit).min(total);
    if offset > 1 || shown_end < total {
        out.push_str(&format!(
            "[lines {offset}-{shown_end} of {total}; use offset and limit for more]\n"
        ));
    }
    Ok(out)
}

fn write_file(ws: &Workspace, args: &Value) -> Result<String, String> {
    let path = ws.resolve(str_arg(args, "path"))?;
    let content = str_arg(args, "content");
    if content.len() > MAX_WRITE_BYTES {
        return Err(format!(
            "the content is {} bytes, over the {MAX_WRITE_BYTES} allowed",
            content.len()
        ));
    }
    let shown = ws.display(&path);
    if path.is_dir() {
        return Err(format!("`{shown}` is a directory"));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create `{shown}`: {e}"))?;
    }
    std::fs::write(&path, content).map_err(|e| format!("cannot write `{shown}`: {e}"))?;
    Ok(format!("wrote {} bytes to {shown}", content.len()))
}

fn edit_file(ws: &Workspace, args: &Value) -> Result<String, String> {
    let path = ws.resolve(str_arg(args, "path"))?;
    let shown = ws.display(&path);
    let text = read_text(ws, &path)?;
    let old = str_arg(args, "old_string");
    let new = str_arg(args, "new_string");
    let all = args
        .get("replace_all")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let count = text.matches(old).count();
    let edited = match (count, all) {
        (0, _) => {
            return Err(format!(
                "old_string was not found in `{shown}`; read the file and copy the text exactly"
            ));
        }
        (1, _) | (_, true) => text.replace(old, new),
        (n, false) => {
            return Err(format!(
                "old_string appears {n} times in `{shown}`; include more surrounding text to make it unique, or set replace_all"
            ));
        }
    };
    std::fs::write(&path, edited).map_err(|e| format!("cannot write `{shown}`: {e}"))?;
    Ok(format!("replaced {count} occurrence(s) in {shown}"))
}

fn list_dir(ws: &Workspace, args: &Value) -> Result<String, String> {
    let path = ws.resolve(str_arg(args, "path"))?;
    let shown = ws.display(&path);
    let entries = std::fs::read_dir(&path).map_err(|e| format!("cannot list `{shown}`: {e}"))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            match e.file_type() {
                Ok(t) if t.is_dir() => format!("{name}/"),
                _ => name,
            }
        })
        .collect();
    names.sort();
    let total = names.len();
    names.truncate(MAX_ENTRIES);
    let mut out = names.join("\n");
    if total > MAX_ENTRIES {
        out.push_str(&format!(
            "\n[{} more entries not shown]",
            total - MAX_ENTRIES
        ));
    }
    if total == 0 {
        out = format!("`{shown}` is empty");
    }
    Ok(out)
}

/// Files under `dir` (not following symlinks, skipping `.git`), as (absolute, relative).
fn files_under(ws: &Workspace, dir: &Path) -> impl Iterator<Item = (std::path::PathBuf, String)> {
    let root = ws.root().to_path_buf();
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(move |e| {
            let rel = e
                .path()
                .strip_prefix(&root)
                .unwrap_or(e.path())
                .to_string_lossy()
                .into_owned();
            (e.into_path(), rel)
        })
}

fn matcher(pattern: &str) -> Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("`{pattern}` is not a glob: {e}"))
}

fn glob(ws: &Workspace, args: &Value) -> Result<String, String> {
    let m = matcher(str_arg(args, "pattern"))?;
    let dir = ws.resolve(str_arg(args, "path"))?;
    let mut found: Vec<String> = files_under(ws, &dir)
        .filter(|(_, rel)| m.is_match(rel))
        .map(|(_, rel)| rel)
        .take(MAX_ENTRIES + 1)
        .collect();
    found.sort();
    if found.is_empty() {
        return Ok("no files match".into());
    }
    let more = found.len() > MAX_ENTRIES;
    found.truncate(MAX_ENTRIES);
    let mut out = found.join("\n");
    if more {
        out.push_str("\n[more files match; narrow the pattern]");
    }
    Ok(out)
}

fn grep(ws: &Workspace, args: &Value) -> Result<String, String> {
    let pattern = str_arg(args, "pattern");
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("`{pattern}` is not a regular expression: {e}"))?;
    let filter = match args.get("glob").and_then(Value::as_str) {
        Some(g) => Some(matcher(g)?),
        None => None,
    };
    let start = ws.resolve(str_arg(args, "path"))?;
    let mut out = Vec::new();
    'files: for (path, rel) in files_under(ws, &start) {
        if filter.as_ref().is_some_and(|f| !f.is_match(&rel)) {
            continue;
        }
        let Ok(text) = read_text(ws, &path) else {
            continue; // Binary, huge or unreadable: not text to search.
        };
        for (n, line) in text.lines().enumerate() {
            if re.is_match(line) {
                let line: String = line.chars().take(300).collect();
                out.push(format!("{rel}:{}: {line}", n + 1));
                if out.len() > MAX_MATCHES {
                    break 'files;
                }
            }
        }
    }
    if out.is_empty() {
        return Ok("no matches".into());
    }
    let more = out.len() > MAX_MATCHES;
    out.truncate(MAX_MATCHES);
    let mut text = out.join("\n");
    if more {
        text.push_str("\n[more matches; narrow the pattern or path]");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> (tempfile::TempDir, Workspace) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ws");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/lib.rs"), "fn a() {}\nfn b() {}\n").unwrap();
        std::fs::write(root.join("README"), "hello\n").unwrap();
        let w = Workspace::new(&root).unwrap();
        (d, w)
    }

    #[test]
    fn file_tools_work_inside_the_workspace() {
        let (_d, w) = ws();
        let r = run(&w, "list_dir", &json!({}));
        assert_eq!(r.content, "README\nsrc/");
        let r = run(&w, "read_file", &json!({"path": "src/lib.rs", "offset": 2}));
        assert_eq!(
            r.content,
            "fn b() {}\n[lines 2-2 of 2; use offset and limit for more]\n"
        );
        let r = run(
            &w,
            "edit_file",
            &json!({"path": "src/lib.rs", "old_string": "fn", "new_string": "pub fn"}),
        );
        assert!(r.is_error && r.content.contains("appears 2 times"), "{r:?}");
        let r = run(
            &w,
            "edit_file",
            &json!({"path": "src/lib.rs", "old_string": "fn b", "new_string": "fn c"}),
        );
        assert!(!r.is_error, "{r:?}");
        let r = run(
            &w,
            "write_file",
            &json!({"path": "src/new/mod.rs", "content": "fn c() {}\n"}),
        );
        assert!(!r.is_error, "{r:?}");
        let r = run(&w, "glob", &json!({"pattern": "src/**/*.rs"}));
        assert_eq!(r.content, "src/lib.rs\nsrc/new/mod.rs");
        let r = run(&w, "grep", &json!({"pattern": "fn c", "glob": "**/*.rs"}));
        assert_eq!(
            r.content,
            "src/lib.rs:2: fn c() {}\nsrc/new/mod.rs:1: fn c() {}"
        );
        let r = run(&w, "grep", &json!({"pattern": "(unclosed"}));
        assert!(r.is_error);
    }

    #[test]
    fn escapes_are_refused_and_touch_nothing_outside() {
        let (d, w) = ws();
        let outside = d.path().join("outside.txt");
        std::fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, w.root().join("link")).unwrap();
        for (tool, args) in [
            ("read_file", json!({"path": "../../etc/passwd"})),
            ("read_file", json!({"path": "/etc/passwd"})),
            ("read_file", json!({"path": "link"})),
            ("write_file", json!({"path": "link", "content": "x"})),
            (
                "write_file",
                json!({"path": "../outside.txt", "content": "x"}),
            ),
            (
                "edit_file",
                json!({"path": "link", "old_string": "keep", "new_string": "x"}),
            ),
            ("list_dir", json!({"path": ".."})),
            ("grep", json!({"pattern": "keep", "path": ".."})),
        ] {
            let r = run(&w, tool, &args);
            assert!(
                r.is_error && r.content.contains("outside the workspace"),
                "{tool} {args}: {r:?}"
            );
        }
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        // A symlink inside that points outside is not followed by glob or grep either.
        let r = run(&w, "grep", &json!({"pattern": "keep"}));
        assert_eq!(r.content, "no matches");
    }

    #[test]
    fn results_are_bounded() {
        let s = bounded("x".repeat(MAX_RESULT_BYTES * 2));
        assert!(s.len() < MAX_RESULT_BYTES + 100);
        assert!(s.ends_with("narrow the request]"));
    }
}
