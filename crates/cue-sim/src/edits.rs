//! What users do to their files, and what the checker must find afterwards.
//!
//! The generator is the one of `cue-core`'s convergence property test (body
//! lines carrying unique markers, scalar `priority` changes, tag adds and
//! removes, renames, deletes, same-path creations), rewritten to act on a
//! peer's simulated disk only: recording the change is the file-system layer's
//! job ([`crate::peer`]), exactly as in the daemon, so the simulator can also
//! record late, after a crash, or never (a file deleted before it was seen).
//!
//! Every marker and every added tag is a unique string, so the [`Oracle`] can
//! say precisely which user edits must survive: a marker once saved to a disk
//! is never removed by a user, so it must be in some file at the end (after the
//! trash is restored), and a tag is present exactly when it was added and not
//! removed.

use std::collections::{BTreeMap, BTreeSet};

use cue_core::frontmatter::{self, FmValue};
use rand::rngs::StdRng;
use rand::RngExt;

/// Where users create and move files: few enough that peers collide on them
/// (same-path creations, renames onto a name another peer just took).
pub const PATHS: [&str; 6] = [
    "docs/a.md",
    "docs/b.md",
    "cards/c1.md",
    "cards/c2.md",
    "docs/sub/d.md",
    "docs/sub/deep/e.md",
];

/// The edits that must survive, as unique strings.
#[derive(Debug, Default, Clone)]
pub struct Oracle {
    next: u64,
    /// Body markers saved by some user: each must be on disk at the end.
    pub markers: BTreeSet<String>,
    /// Tags saved by some user.
    pub tags_added: BTreeSet<String>,
    /// Tags some user removed from a file.
    pub tags_removed: BTreeSet<String>,
    /// Tags in detached edits (see [`crate::peer::Peer::scan`]): a copy of a
    /// file may keep a tag that was removed from the original.
    pub detached_tags: BTreeSet<String>,
}

impl Oracle {
    fn marker(&mut self, peer: usize) -> String {
        self.next += 1;
        format!("<m{peer}-{}>", self.next)
    }

    /// The tags that must be in the files at the end.
    pub fn expected_tags(&self) -> BTreeSet<String> {
        self.tags_added
            .difference(&self.tags_removed)
            .cloned()
            .collect()
    }

    /// Takes in an edit the user really made.
    pub fn commit(&mut self, made: &Made) {
        self.markers.extend(made.markers.iter().cloned());
        self.tags_added.extend(made.tags_added.iter().cloned());
        self.tags_removed.extend(made.tags_removed.iter().cloned());
    }
}

/// What a user did to the files on their disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEdit {
    /// Saved `path`: a new file or a changed one.
    Write { path: String, what: &'static str },
    /// Moved `from` to `to`, bytes unchanged.
    Rename { from: String, to: String },
    /// Deleted `path`.
    Remove { path: String },
}

/// What one user edit did: the change, and what it means for the [`Oracle`].
/// Nothing is in the oracle until [`Oracle::commit`]: the caller may still
/// decide the edit does not happen.
#[derive(Debug, Clone)]
pub struct Made {
    pub edit: UserEdit,
    pub markers: Vec<String>,
    pub tags_added: Vec<String>,
    pub tags_removed: Vec<String>,
}

impl Made {
    fn new(edit: UserEdit) -> Made {
        Made {
            edit,
            markers: Vec::new(),
            tags_added: Vec::new(),
            tags_removed: Vec::new(),
        }
    }
}

/// The tags in a file's frontmatter, if it has a `tags` list.
pub fn tags_of(text: &str) -> Vec<String> {
    let Ok(fields) = frontmatter::parse_file(text) else {
        return Vec::new();
    };
    match fields.iter().find(|(k, _)| k == "tags") {
        Some((_, FmValue::List(list))) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// One random user edit on `disk` by peer `peer`; `None` when the dice picked
/// something that does not apply (no file to edit, the path is taken...).
/// `oracle` only hands out unique marker numbers here.
pub fn user_edit(
    rng: &mut StdRng,
    disk: &mut BTreeMap<String, String>,
    peer: usize,
    oracle: &mut Oracle,
) -> Option<Made> {
    let files: Vec<String> = disk.keys().cloned().collect();
    let pick = |rng: &mut StdRng| -> Option<String> {
        (!files.is_empty()).then(|| files[rng.random_range(0..files.len())].clone())
    };
    let roll = rng.random_range(0..100);
    match roll {
        // A new file, maybe at a path another peer creates too.
        0..=16 => {
            let path = PATHS[rng.random_range(0..PATHS.len())];
            if disk.contains_key(path) {
                return None;
            }
            let m = oracle.marker(peer);
            let tag = format!("t{m}");
            disk.insert(
                path.to_string(),
                format!(
                    "---\ntitle: {path}\npriority: low\ntags: [{tag}]\n---\n# {path}\nfiller one\n{m}\nfiller two\n"
                ),
            );
            let mut made = Made::new(UserEdit::Write {
                path: path.to_string(),
                what: "create",
            });
            made.markers.push(m);
            made.tags_added.push(tag);
            Some(made)
        }
        // A line with a marker, at a random line start of the body.
        17..=51 => {
            let path = pick(rng)?;
            let text = disk.get(&path)?.clone();
            let body = frontmatter::split(&text).body_start;
            let lines: Vec<usize> = std::iter::once(body)
                .chain(text[body..].match_indices('\n').map(|(i, _)| body + i + 1))
                .filter(|i| *i <= text.len())
                .collect();
            let at = lines[rng.random_range(0..lines.len())];
            let m = oracle.marker(peer);
            disk.insert(path.clone(), format!("{}{m}\n{}", &text[..at], &text[at..]));
            let mut made = Made::new(UserEdit::Write { path, what: "line" });
            made.markers.push(m);
            Some(made)
        }
        // Remove a filler line (never a marker).
        52..=57 => {
            let path = pick(rng)?;
            let text = disk.get(&path)?.clone();
            let pos = text.find("filler")?;
            let end = text[pos..]
                .find('\n')
                .map(|i| pos + i + 1)
                .unwrap_or(text.len());
            disk.insert(path.clone(), format!("{}{}", &text[..pos], &text[end..]));
            Some(Made::new(UserEdit::Write {
                path,
                what: "unline",
            }))
        }
        // A frontmatter scalar: last writer wins.
        58..=67 => {
            let path = pick(rng)?;
            let text = disk.get(&path)?.clone();
            let mut fields = frontmatter::parse_file(&text).ok()?;
            let v = ["low", "medium", "high", "critical"][rng.random_range(0..4)];
            let f = fields.iter_mut().find(|(k, _)| k == "priority")?;
            f.1 = FmValue::Str(v.into());
            disk.insert(path.clone(), frontmatter::patch(&text, &fields));
            Some(Made::new(UserEdit::Write {
                path,
                what: "priority",
            }))
        }
        // A frontmatter list: add a unique tag or remove one.
        68..=79 => {
            let path = pick(rng)?;
            let text = disk.get(&path)?.clone();
            let mut fields = frontmatter::parse_file(&text).ok()?;
            let Some((_, FmValue::List(tags))) = fields.iter_mut().find(|(k, _)| k == "tags")
            else {
                return None;
            };
            let mut made = Made::new(UserEdit::Write {
                path: path.clone(),
                what: "tags",
            });
            if rng.random_bool(0.6) || tags.is_empty() {
                let tag = format!("t{}", oracle.marker(peer));
                tags.push(FmValue::Str(tag.clone()));
                made.tags_added.push(tag);
            } else {
                let i = rng.random_range(0..tags.len());
                if let FmValue::Str(t) = tags.remove(i) {
                    made.tags_removed.push(t);
                }
            }
            disk.insert(path, frontmatter::patch(&text, &fields));
            Some(made)
        }
        80..=87 => {
            let from = pick(rng)?;
            let to = PATHS[rng.random_range(0..PATHS.len())];
            if disk.contains_key(to) {
                return None;
            }
            let text = disk.remove(&from)?;
            disk.insert(to.to_string(), text);
            Some(Made::new(UserEdit::Rename {
                from,
                to: to.to_string(),
            }))
        }
        _ => {
            let path = pick(rng)?;
            disk.remove(&path)?;
            Some(Made::new(UserEdit::Remove { path }))
        }
    }
}
