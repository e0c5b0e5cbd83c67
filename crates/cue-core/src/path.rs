//! Validated workspace paths.
//!
//! Paths arrive from other peers inside CRDT documents, so they are hostile input.
//! A [`SyncPath`] is the only way a path reaches the file-system layer, and it can
//! only be built by [`SyncPath::parse`], which rejects anything that could escape
//! the `.cuedeck/` folder or collide on a case-insensitive or Windows file system.

use std::fmt;

/// Longest path we accept, in bytes: well under every file system's limit.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest file or folder name: leaves room under the usual 255-byte limit.
pub const MAX_COMPONENT_BYTES: usize = 200;

/// A path relative to `.cuedeck/`, with `/` separators, that is safe to join onto it.
/// Synced files live under `cards/` and `docs/`; files that the user's
/// `sync.include` globs add from the project itself are keyed `project/<path
/// from the project root>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyncPath(String);

/// Why a path was refused; the message names the path so a user can find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0:?} is absolute; workspace paths are relative to .cuedeck/")]
    Absolute(String),
    #[error("path {0:?} contains '..' or '.'; it could point outside the workspace")]
    Traversal(String),
    #[error("path {0:?} contains a backslash, colon, NUL or control character")]
    BadCharacter(String),
    #[error("path {0:?} is longer than {MAX_PATH_BYTES} bytes")]
    TooLong(String),
    #[error("path {0:?} has an empty component")]
    EmptyComponent(String),
    #[error("path {0:?} is outside the synced folders (cards/, docs/, project/) or inside one that is never synced (.cuedeck, .git)")]
    Reserved(String),
    #[error("path {0:?} is not a Markdown file (.md)")]
    NotMarkdown(String),
}

impl SyncPath {
    /// Checks a path from any source (disk, a peer, a bundle, the command line).
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let owned = || raw.to_string();
        if raw.is_empty() {
            return Err(PathError::Empty);
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(owned()));
        }
        if raw.starts_with('/') || raw.as_bytes().get(1) == Some(&b':') {
            return Err(PathError::Absolute(owned()));
        }
        if raw.chars().any(|c| c == '\\' || c == ':' || c.is_control()) {
            return Err(PathError::BadCharacter(owned()));
        }
        for part in raw.split('/') {
            match part {
                "" => return Err(PathError::EmptyComponent(owned())),
                "." | ".." => return Err(PathError::Traversal(owned())),
                p if p.len() > MAX_COMPONENT_BYTES => return Err(PathError::TooLong(owned())),
                _ => {}
            }
        }
        let mut parts = raw.split('/');
        let first = parts.next().unwrap_or_default();
        let second = parts.next().unwrap_or_default();
        let allowed = match first {
            "cards" | "docs" => true,
            // Files matched by `sync.include` globs live outside `.cuedeck/`.
            // Compared without case: macOS and Windows file systems ignore it.
            "project" => !matches!(second.to_ascii_lowercase().as_str(), ".cuedeck" | ".git"),
            _ => false,
        };
        if !allowed || raw.split('/').any(|c| c.eq_ignore_ascii_case(".git")) {
            return Err(PathError::Reserved(owned()));
        }
        if !raw.ends_with(".md") || raw.ends_with("/.md") || raw == ".md" {
            return Err(PathError::NotMarkdown(owned()));
        }
        Ok(SyncPath(raw.to_string()))
    }

    /// The path as stored in documents: relative to `.cuedeck/`, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's components, for joining onto a real folder one at a time.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The side-by-side name given to a file that lost a same-path race:
    /// `docs/auth.md` becomes `docs/auth.conflict-1a2b3c.md`.
    pub fn conflict_copy(&self, tag: &str) -> SyncPath {
        let stem = self.0.strip_suffix(".md").unwrap_or(&self.0);
        SyncPath(format!("{stem}.conflict-{tag}.md"))
    }
}

impl fmt::Display for SyncPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SyncPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_workspace_paths() {
        for ok in [
            "docs/auth.md",
            "cards/2a9f1x.md",
            "docs/a b/ü.md",
            "project/docs/x.md",
        ] {
            assert!(SyncPath::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_escapes_and_oddities() {
        let cases = [
            ("", PathError::Empty),
            (
                "/etc/passwd.md",
                PathError::Absolute("/etc/passwd.md".into()),
            ),
            ("C:/x.md", PathError::Absolute("C:/x.md".into())),
            (
                "docs/C:evil.md",
                PathError::BadCharacter("docs/C:evil.md".into()),
            ),
            (
                "project/.GIT/x.md",
                PathError::Reserved("project/.GIT/x.md".into()),
            ),
            (
                "../../etc/passwd",
                PathError::Traversal("../../etc/passwd".into()),
            ),
            (
                "docs/../../x.md",
                PathError::Traversal("docs/../../x.md".into()),
            ),
            ("docs/./x.md", PathError::Traversal("docs/./x.md".into())),
            ("docs\\x.md", PathError::BadCharacter("docs\\x.md".into())),
            ("docs/x\0.md", PathError::BadCharacter("docs/x\0.md".into())),
            ("docs//x.md", PathError::EmptyComponent("docs//x.md".into())),
            ("sync/state.md", PathError::Reserved("sync/state.md".into())),
            ("notes/x.md", PathError::Reserved("notes/x.md".into())),
            (
                "project/.cuedeck/sync/x.md",
                PathError::Reserved("project/.cuedeck/sync/x.md".into()),
            ),
            (
                "docs/.git/x.md",
                PathError::Reserved("docs/.git/x.md".into()),
            ),
            (".cache/x.md", PathError::Reserved(".cache/x.md".into())),
            ("docs/x.png", PathError::NotMarkdown("docs/x.png".into())),
        ];
        for (raw, want) in cases {
            assert_eq!(SyncPath::parse(raw), Err(want), "{raw:?}");
        }
        assert!(matches!(
            SyncPath::parse(&"a/".repeat(600)),
            Err(PathError::TooLong(_))
        ));
    }

    #[test]
    fn conflict_copy_keeps_extension() {
        let p = SyncPath::parse("docs/auth.md").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.conflict_copy("1a2b3c").as_str(),
            "docs/auth.conflict-1a2b3c.md"
        );
    }
}
