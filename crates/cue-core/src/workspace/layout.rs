//! Where every live file belongs on disk, kept up to date one entry at a time.
//!
//! The index document is the truth, but reading all of it costs about 20 µs
//! per file (215 ms at 10,000 files), far too much per received edit. So
//! [`Layout`] mirrors the index's entries and their placement, and is updated
//! only for the entries a change touched.
//!
//! The placement rule is a pure function of the live entries, so every peer
//! places every file at the same name whatever order changes arrived in:
//! entries whose paths collide (the same path, or paths that differ only in
//! case, which macOS and Windows cannot hold side by side) form a group; the
//! oldest (`created_at`, then id) keeps its path, each other one gets
//! `name.conflict-<6 hex of its id>.md`, or a longer name when that one is
//! taken by another group or by an earlier member. A conflict name depends
//! only on its own group and on which other groups exist, so when a group
//! appears or disappears, the one group whose conflict names it could clash
//! with is placed again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::doc::FileEntry;
use crate::{FileId, PathError, SyncPath};

use super::Unplaced;

/// The name two paths collide under on a file system that ignores case and
/// normalises Unicode (macOS, Windows).
pub(crate) fn collision_key(path: &SyncPath) -> String {
    path.collision_key()
}

/// The group a conflict name belongs to: `docs/a.conflict-1a2b3c.md` (or the
/// 32-hex and numbered forms) → `docs/a.md`.
fn conflict_base(key: &str) -> Option<String> {
    let stem = key.strip_suffix(".md")?;
    let at = stem.rfind(".conflict-")?;
    let tag = &stem[at + ".conflict-".len()..];
    let (hex, n) = match tag.split_once('-') {
        Some((hex, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => (hex, true),
        Some(_) => return None,
        None => (tag, false),
    };
    let hex_ok = hex.bytes().all(|b| b.is_ascii_hexdigit());
    let len_ok = hex.len() == 32 || (hex.len() == 6 && !n);
    (hex_ok && len_ok).then(|| format!("{}.md", &stem[..at]))
}

/// Every entry of the index, and where each live one is placed.
#[derive(Default)]
pub(super) struct Layout {
    all: BTreeMap<FileId, FileEntry>,
    /// Live entries with a valid path, by collision key, oldest first.
    groups: BTreeMap<String, BTreeSet<(i64, FileId)>>,
    group_of: HashMap<FileId, String>,
    /// The names each group gave, last time it was placed.
    given: HashMap<String, Vec<(FileId, SyncPath)>>,
    placed: BTreeMap<SyncPath, FileId>,
    place_of: HashMap<FileId, SyncPath>,
    unplaced: BTreeMap<FileId, Unplaced>,
}

impl Layout {
    pub fn entry(&self, id: &FileId) -> Option<&FileEntry> {
        self.all.get(id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &FileEntry> {
        self.all.values()
    }

    /// Where `id` is placed, if it is live and placeable.
    pub fn place_of(&self, id: &FileId) -> Option<&SyncPath> {
        self.place_of.get(id)
    }

    /// The file placed at `path`.
    pub fn at(&self, path: &SyncPath) -> Option<FileId> {
        self.placed.get(path).copied()
    }

    /// Every placed file, in path order.
    pub fn placed(&self) -> &BTreeMap<SyncPath, FileId> {
        &self.placed
    }

    /// Whether a live file already goes by `path` (in any case).
    pub fn occupied(&self, path: &SyncPath) -> bool {
        self.groups.contains_key(&collision_key(path))
    }

    /// Whether the entry is live (tombstoned files are not, unless edited
    /// after their deletion), as of the last update.
    pub fn is_live(&self, id: &FileId) -> bool {
        self.group_of.contains_key(id) || self.unplaced.contains_key(id)
    }

    /// Whether the entry is live but cannot be placed (an unsafe path).
    pub fn is_unplaced(&self, id: &FileId) -> bool {
        self.unplaced.contains_key(id)
    }

    pub fn unplaced(&self) -> impl Iterator<Item = &Unplaced> {
        self.unplaced.values()
    }

    /// Takes in the current state of some entries (`None`: gone from the
    /// index), with whether each is live, and places what they affect.
    /// Returns the files whose place changed.
    pub fn update(&mut self, changed: Vec<(FileId, Option<(FileEntry, bool)>)>) -> Vec<FileId> {
        let mut affected: BTreeSet<String> = BTreeSet::new();
        // Whether each group touched here existed before.
        let mut existed: BTreeMap<String, bool> = BTreeMap::new();
        for (id, now) in changed {
            if let Some(old) = self.group_of.remove(&id) {
                existed.entry(old.clone()).or_insert(true);
                let created = self.all.get(&id).map(|e| e.created_at_ms).unwrap_or(0);
                if let Some(members) = self.groups.get_mut(&old) {
                    members.remove(&(created, id));
                    if members.is_empty() {
                        self.groups.remove(&old);
                    }
                }
                affected.insert(old);
            }
            self.unplaced.remove(&id);
            match now {
                None => {
                    self.all.remove(&id);
                }
                Some((entry, live)) => {
                    if live {
                        match SyncPath::parse(&entry.path) {
                            Ok(path) => {
                                let key = collision_key(&path);
                                existed
                                    .entry(key.clone())
                                    .or_insert_with(|| self.groups.contains_key(&key));
                                self.groups
                                    .entry(key.clone())
                                    .or_default()
                                    .insert((entry.created_at_ms, id));
                                self.group_of.insert(id, key.clone());
                                affected.insert(key);
                            }
                            Err(reason) => {
                                self.unplaced.insert(id, unplaced(&entry, reason));
                            }
                        }
                    }
                    self.all.insert(id, entry);
                }
            }
        }
        // A group that appeared or vanished may free or take a conflict name
        // of the group it looks like a conflict copy of.
        let toggled: Vec<String> = existed
            .into_iter()
            .filter(|(k, was)| *was != self.groups.contains_key(k))
            .map(|(k, _)| k)
            .collect();
        for key in toggled {
            if let Some(base) = conflict_base(&key) {
                if self.groups.contains_key(&base) || self.given.contains_key(&base) {
                    affected.insert(base);
                }
            }
        }
        let mut moved = Vec::new();
        for key in affected {
            self.place_group(&key, &mut moved);
        }
        moved.sort();
        moved.dedup();
        moved
    }

    /// Places the members of one group afresh.
    fn place_group(&mut self, key: &str, moved: &mut Vec<FileId>) {
        let mut old: HashMap<FileId, SyncPath> = HashMap::new();
        for (id, path) in self.given.remove(key).unwrap_or_default() {
            if self.placed.get(&path) == Some(&id) {
                self.placed.remove(&path);
            }
            // A file another group placed since (it was renamed) is not ours.
            if self.place_of.get(&id) == Some(&path) {
                self.place_of.remove(&id);
                old.insert(id, path);
            }
        }
        let members: Vec<FileId> = self
            .groups
            .get(key)
            .map(|m| m.iter().map(|(_, id)| *id).collect())
            .unwrap_or_default();
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut given = Vec::with_capacity(members.len());
        for (i, id) in members.iter().enumerate() {
            let Some(path) = self.all.get(id).and_then(|e| SyncPath::parse(&e.path).ok()) else {
                continue;
            };
            let place = if i == 0 {
                path
            } else {
                // A name no group has as its own and this group has not given:
                // a user can save a file under a conflict name, and two files
                // must never share a name (the one dropped would be removed
                // from disk).
                let hex = id.to_hex();
                let mut n = 0u64;
                loop {
                    let candidate = match n {
                        0 => path.conflict_copy(&hex[..6]),
                        1 => path.conflict_copy(&hex),
                        n => path.conflict_copy(&format!("{hex}-{n}")),
                    };
                    let ck = collision_key(&candidate);
                    if !self.groups.contains_key(&ck) && !names.contains(&ck) {
                        break candidate;
                    }
                    n += 1;
                }
            };
            names.insert(collision_key(&place));
            if old.get(id) != Some(&place) {
                moved.push(*id);
            }
            old.remove(id);
            self.placed.insert(place.clone(), *id);
            self.place_of.insert(*id, place.clone());
            given.push((*id, place));
        }
        moved.extend(old.into_keys());
        if !given.is_empty() {
            self.given.insert(key.to_string(), given);
        }
    }
}

fn unplaced(entry: &FileEntry, reason: PathError) -> Unplaced {
    Unplaced {
        file: entry.id,
        path: entry.path.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u8, path: &str, created: i64) -> FileEntry {
        FileEntry {
            id: FileId([id; 16]),
            path: path.into(),
            created_at_ms: created,
            created_by: "x".into(),
            deleted: None,
        }
    }

    fn place(layout: &Layout) -> Vec<(String, u8)> {
        layout
            .placed()
            .iter()
            .map(|(p, id)| (p.to_string(), id.0[0]))
            .collect()
    }

    #[test]
    fn conflict_bases() {
        assert_eq!(
            conflict_base("docs/a.conflict-0a0a0a.md").as_deref(),
            Some("docs/a.md")
        );
        let long = format!("docs/a.conflict-{}-2.md", "ab".repeat(16));
        assert_eq!(conflict_base(&long).as_deref(), Some("docs/a.md"));
        assert_eq!(conflict_base("docs/a.conflict-zz.md"), None);
        assert_eq!(conflict_base("docs/a.md"), None);
    }

    /// The result of placing entries one by one, in any order, is the same as
    /// placing them all at once.
    #[test]
    fn placement_does_not_depend_on_the_order_of_updates() {
        let a = entry(0x11, "docs/a.md", 1);
        let b = entry(0x22, "docs/a.md", 2);
        // A user's file saved under b's first conflict name.
        let c = entry(0x33, "docs/a.conflict-222222.md", 3);
        let d = entry(0x44, "docs/A.md", 4);
        let all = [a, b, c, d];
        let mut at_once = Layout::default();
        at_once.update(
            all.iter()
                .map(|e| (e.id, Some((e.clone(), true))))
                .collect(),
        );
        for order in [[3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
            let mut one_by_one = Layout::default();
            for i in order {
                let e = &all[i];
                one_by_one.update(vec![(e.id, Some((e.clone(), true)))]);
            }
            assert_eq!(place(&one_by_one), place(&at_once), "{order:?}");
        }
        let names = place(&at_once);
        assert!(names.contains(&("docs/a.md".into(), 0x11)), "{names:?}");
        assert!(names.contains(&("docs/a.conflict-222222.md".into(), 0x33)));
        // b's short conflict name is taken, so it gets the long one.
        assert!(names.contains(&(format!("docs/a.conflict-{}.md", "22".repeat(16)), 0x22)));
        assert!(names.contains(&("docs/A.conflict-444444.md".into(), 0x44)));
        // c is deleted: b may now take the short name.
        let mut layout = at_once;
        let moved = layout.update(vec![(FileId([0x33; 16]), Some((all[2].clone(), false)))]);
        assert!(moved.contains(&FileId([0x22; 16])), "{moved:?}");
        assert!(place(&layout).contains(&("docs/a.conflict-222222.md".into(), 0x22)));
    }

    /// A file renamed into a group that is placed before its old one keeps
    /// its new place (found by cue-sim, seed 16).
    #[test]
    fn a_renamed_file_keeps_its_new_place() {
        let mut layout = Layout::default();
        let e = entry(0x55, "docs/z.md", 1);
        layout.update(vec![(e.id, Some((e.clone(), true)))]);
        let renamed = FileEntry {
            path: "cards/a.md".into(),
            ..e
        };
        let moved = layout.update(vec![(renamed.id, Some((renamed, true)))]);
        assert_eq!(moved, vec![FileId([0x55; 16])]);
        assert_eq!(place(&layout), vec![("cards/a.md".to_string(), 0x55)]);
    }
}
