//! Validated workspace paths.
//!
//! Paths arrive from other peers inside CRDT documents, so they are hostile input.
//! A [`SyncPath`] is the only way a path reaches the file-system layer, and it can
//! only be built by [`SyncPath::parse`], which rejects anything that could escape
//! the `.cuedeck/` folder, and every name that cannot exist on one of the systems
//! a team mixes (Linux, macOS, Windows): one portable rule, applied everywhere,
//! so a file one member creates can be written by every other member.
//! Names that differ only in case or Unicode normalisation are valid but collide
//! on macOS and Windows; [`SyncPath::collision_key`] tells them apart.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Longest path we accept, in bytes: well under every file system's limit.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest file or folder name: leaves room under the usual 255-byte limit.
pub const MAX_COMPONENT_BYTES: usize = 200;

/// Characters Windows forbids in file names (`/` is the separator here, and a
/// backslash would be one on Windows). macOS forbids only `:` of these (its
/// old separator), Linux none: the intersection is what syncs.
const FORBIDDEN: &[char] = &['<', '>', ':', '"', '|', '?', '*', '\\'];

/// Names Windows reserves for devices, whatever the extension and case
/// (`con.md`, `Aux.tar.md`), including the superscript-digit ports.
const DEVICE_NAMES: &[&str] = &[
    "CON",
    "PRN",
    "AUX",
    "NUL",
    "CONIN$",
    "CONOUT$",
    "COM1",
    "COM2",
    "COM3",
    "COM4",
    "COM5",
    "COM6",
    "COM7",
    "COM8",
    "COM9",
    "COM\u{b9}",
    "COM\u{b2}",
    "COM\u{b3}",
    "LPT1",
    "LPT2",
    "LPT3",
    "LPT4",
    "LPT5",
    "LPT6",
    "LPT7",
    "LPT8",
    "LPT9",
    "LPT\u{b9}",
    "LPT\u{b2}",
    "LPT\u{b3}",
];

/// A path relative to `.cuedeck/`, with `/` separators, that is safe to join onto it.
/// Synced files live under `cards/` and `docs/`; files that the user's
/// `sync.include` globs add from the project itself are keyed `project/<path
/// from the project root>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyncPath(String);

/// Why a path was refused; the message names the path so a user can find it,
/// and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0:?} is absolute; workspace paths are relative to .cuedeck/")]
    Absolute(String),
    #[error("path {0:?} contains '..' or '.'; it could point outside the workspace")]
    Traversal(String),
    #[error(
        "path {path:?} contains {shown}, which cannot be in a file name on Windows; rename it"
    )]
    BadCharacter { path: String, shown: String },
    #[error("path {0:?} is longer than {MAX_PATH_BYTES} bytes, or has a name longer than {MAX_COMPONENT_BYTES}; shorten it")]
    TooLong(String),
    #[error("path {0:?} has an empty component")]
    EmptyComponent(String),
    #[error("{name} cannot exist on Windows ({device} is a reserved device name, whatever the extension); rename it (path {path:?})")]
    DeviceName {
        path: String,
        name: String,
        device: String,
    },
    #[error("{name:?} ends with a dot or a space, which Windows drops from names; rename it (path {path:?})")]
    TrailingDotOrSpace { path: String, name: String },
    #[error("path {0:?} is outside the synced folders (cards/, docs/, project/) or inside one that is never synced (.cuedeck, .git, at any depth)")]
    Reserved(String),
    #[error("path {0:?} is not a Markdown file (.md)")]
    NotMarkdown(String),
}

/// How a forbidden character is shown in an error.
fn show_char(c: char) -> String {
    match c {
        '\\' => "a backslash".into(),
        c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
        c => format!("{c:?}"),
    }
}

/// The device name `name` is, if Windows reserves it: the part before the
/// first dot, without trailing spaces, compared without case.
fn device_name(name: &str) -> Option<&'static str> {
    let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
    DEVICE_NAMES
        .iter()
        .find(|d| d.eq_ignore_ascii_case(stem))
        .copied()
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
        if let Some(c) = raw
            .chars()
            .find(|c| FORBIDDEN.contains(c) || c.is_control())
        {
            return Err(PathError::BadCharacter {
                path: owned(),
                shown: show_char(c),
            });
        }
        for part in raw.split('/') {
            match part {
                "" => return Err(PathError::EmptyComponent(owned())),
                "." | ".." => return Err(PathError::Traversal(owned())),
                p if p.len() > MAX_COMPONENT_BYTES => return Err(PathError::TooLong(owned())),
                p if p.eq_ignore_ascii_case(".cuedeck") || p.eq_ignore_ascii_case(".git") => {
                    return Err(PathError::Reserved(owned()))
                }
                p if p.ends_with('.') || p.ends_with(' ') => {
                    return Err(PathError::TrailingDotOrSpace {
                        path: owned(),
                        name: p.to_string(),
                    })
                }
                p => {
                    if let Some(device) = device_name(p) {
                        return Err(PathError::DeviceName {
                            path: owned(),
                            name: p.to_string(),
                            device: device.to_string(),
                        });
                    }
                }
            }
        }
        let first = raw.split('/').next().unwrap_or_default();
        // Files matched by `sync.include` globs live outside `.cuedeck/`, under `project/`.
        if !matches!(first, "cards" | "docs" | "project") {
            return Err(PathError::Reserved(owned()));
        }
        if !raw.ends_with(".md") || raw.ends_with("/.md") || raw == ".md" {
            return Err(PathError::NotMarkdown(owned()));
        }
        Ok(SyncPath(raw.to_string()))
    }

    /// The form under which two paths name the same file on a case-insensitive,
    /// normalising file system (macOS, Windows): Unicode NFC (macOS hands out
    /// names decomposed, NFD, while Linux keeps whatever bytes it was given),
    /// then lower case. `Case.md` and `case.md`, or `é` typed precomposed and
    /// decomposed, have one key: the layout treats such paths like one path
    /// created twice.
    pub fn collision_key(&self) -> String {
        let nfc: String = self.0.nfc().collect();
        nfc.to_lowercase().nfc().collect()
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
                PathError::BadCharacter {
                    path: "docs/C:evil.md".into(),
                    shown: "':'".into(),
                },
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
            (
                "docs\\x.md",
                PathError::BadCharacter {
                    path: "docs\\x.md".into(),
                    shown: "a backslash".into(),
                },
            ),
            (
                "docs/x\0.md",
                PathError::BadCharacter {
                    path: "docs/x\0.md".into(),
                    shown: "a control character (U+0000)".into(),
                },
            ),
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
    fn names_that_cannot_exist_on_windows_or_macos_are_refused() {
        for bad in [
            "docs/a<b.md",
            "docs/a>b.md",
            "docs/a\"b.md",
            "docs/a|b.md",
            "docs/a?.md",
            "docs/*.md",
            "docs/tab\there.md",
            "docs/del\u{7f}.md",
            "docs/c1\u{85}.md",
        ] {
            assert!(
                matches!(SyncPath::parse(bad), Err(PathError::BadCharacter { .. })),
                "{bad:?}"
            );
        }
        for bad in [
            "docs/CON.md",
            "docs/con.md",
            "docs/Con.tar.md",
            "docs/nul/x.md",
            "cards/aux.md",
            "docs/PRN.md",
            "docs/com1.md",
            "docs/LPT9.md",
            "docs/COM\u{b9}.md",
            "docs/lpt\u{b2}.md",
            "docs/CON .md",
            "project/conout$.md",
        ] {
            assert!(
                matches!(SyncPath::parse(bad), Err(PathError::DeviceName { .. })),
                "{bad:?}"
            );
        }
        for ok in [
            "docs/console.md",
            "docs/com10.md",
            "docs/lpt.md",
            "docs/nullish.md",
            "docs/com0.md",
        ] {
            assert!(SyncPath::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in ["docs/a./x.md", "docs/a /x.md", "docs/x.md.", "docs/x.md "] {
            assert!(
                matches!(
                    SyncPath::parse(bad),
                    Err(PathError::TrailingDotOrSpace { .. }) | Err(PathError::NotMarkdown(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            SyncPath::parse("docs/a. /x.md"),
            Err(PathError::TrailingDotOrSpace { .. })
        ));
        let e = SyncPath::parse("docs/CON.md").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("CON.md cannot exist on Windows (CON is a reserved device name, whatever the extension); rename it (path \"docs/CON.md\")")
        );
    }

    #[test]
    fn dot_cuedeck_and_dot_git_are_refused_at_any_depth() {
        for bad in [
            "project/.cuedeck/docs/x.md",
            "project/other/.cuedeck/docs/injected.md",
            "project/a/b/.CueDeck/x.md",
            "docs/.cuedeck/x.md",
            "cards/.git/x.md",
            "project/sub/.Git/hooks.md",
        ] {
            assert_eq!(
                SyncPath::parse(bad),
                Err(PathError::Reserved(bad.into())),
                "{bad:?}"
            );
        }
        assert!(SyncPath::parse("project/.cuedeckx/x.md").is_ok());
        assert!(SyncPath::parse("docs/.github/x.md").is_ok());
    }

    #[test]
    fn collision_keys_fold_case_and_normalisation() {
        let key = |s: &str| {
            SyncPath::parse(s)
                .unwrap_or_else(|e| panic!("{e}"))
                .collision_key()
        };
        assert_eq!(key("docs/Case.md"), key("docs/case.md"));
        assert_eq!(key("docs/README.md"), key("docs/readme.md"));
        // é precomposed (NFC, as typed on Linux) and decomposed (NFD, as macOS stores it).
        assert_eq!(key("docs/caf\u{e9}.md"), key("docs/cafe\u{301}.md"));
        assert_eq!(key("docs/CAF\u{c9}.md"), key("docs/cafe\u{301}.md"));
        assert_ne!(key("docs/a.md"), key("docs/b.md"));
        assert_ne!(key("docs/a.md"), key("cards/a.md"));
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
