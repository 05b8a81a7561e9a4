//! The directory an agent works in, and the one rule of its file tools: every path
//! resolves inside it. Paths are resolved against the workspace, canonicalized (which
//! follows symlinks), and refused unless the result is still inside; a path that does
//! not exist yet is checked through its nearest existing ancestor. The error text is
//! written for the model, which sees it as the tool's result.
//!
//! What this does not cover: a symlink swapped in between the check and the use by
//! another process (the agent's own tools run one at a time), and what a `shell`
//! command does (see the sandbox option).

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// `root` must exist; it is canonicalized once.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        Ok(Self {
            root: root.canonicalize()?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path inside the workspace that `raw` names, or why it is refused.
    pub fn resolve(&self, raw: &str) -> Result<PathBuf, String> {
        if raw.contains('\0') {
            return Err("the path contains a NUL byte".into());
        }
        let raw = if raw.is_empty() { "." } else { raw };
        let given = Path::new(raw);
        let joined = if given.is_absolute() {
            given.to_path_buf()
        } else {
            self.root.join(given)
        };
        // Walk up to the nearest existing ancestor, remembering the rest.
        let mut existing = joined.as_path();
        let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
        let resolved = loop {
            match existing.canonicalize() {
                Ok(p) => break p,
                Err(_) => {
                    // It exists but does not resolve: a dangling symlink, whose target
                    // (possibly outside) a write would create.
                    if existing.symlink_metadata().is_ok() {
                        return Err(self.outside(raw));
                    }
                    let Some(parent) = existing.parent() else {
                        return Err(format!("`{raw}` does not resolve to a path"));
                    };
                    match existing.components().next_back() {
                        Some(Component::Normal(name)) => rest.push(name),
                        // `..` or `.` past what exists: refuse rather than guess.
                        _ => return Err(self.outside(raw)),
                    }
                    existing = parent;
                }
            }
        };
        if !resolved.starts_with(&self.root) {
            return Err(self.outside(raw));
        }
        let mut full = resolved;
        for name in rest.into_iter().rev() {
            full.push(name);
        }
        Ok(full)
    }

    fn outside(&self, raw: &str) -> String {
        format!(
            "refused: `{raw}` is outside the workspace {}; use a path relative to it",
            self.root.display()
        )
    }

    /// `path` as the model should see it: relative to the workspace.
    pub fn display(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(p) if p.as_os_str().is_empty() => ".".into(),
            Ok(p) => p.display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_or_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("ws");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(outer.path().join("secret.txt"), "s").unwrap();
        std::os::unix::fs::symlink(outer.path().join("secret.txt"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(outer.path(), root.join("dirlink")).unwrap();
        std::os::unix::fs::symlink(outer.path().join("not-yet"), root.join("dangling")).unwrap();
        let ws = Workspace::new(&root).unwrap();
        let canon = root.canonicalize().unwrap();

        assert_eq!(ws.resolve("src").unwrap(), canon.join("src"));
        assert_eq!(
            ws.resolve("src/new/file.rs").unwrap(),
            canon.join("src/new/file.rs")
        );
        assert_eq!(ws.resolve("").unwrap(), canon);
        assert_eq!(
            ws.resolve(canon.join("src").to_str().unwrap()).unwrap(),
            canon.join("src")
        );
        for bad in [
            "../secret.txt",
            "../../etc/passwd",
            "src/../../secret.txt",
            "/etc/passwd",
            "link",
            "dirlink/secret.txt",
            "dirlink/new.txt",
            "missing/../../x",
            "dangling",
            "dangling/below",
        ] {
            let e = ws.resolve(bad).unwrap_err();
            assert!(e.contains("outside the workspace"), "{bad}: {e}");
        }
    }
}
