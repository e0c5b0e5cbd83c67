//! Turning "the file was X, now it is Y" into a small set of text splices.
//!
//! A user's editor hands us whole files, never keystrokes. To let concurrent
//! edits elsewhere in the same file survive, a save must become the smallest
//! edit we can find rather than "replace everything". We trim the common prefix
//! and suffix to whole lines, diff the middle by lines, then diff each changed
//! hunk by characters (trimmed again, then in full when it is small enough). The work is bounded (no clock, so the
//! result is the same on every machine): pathological inputs degrade to a
//! coarser, still correct, replacement.

use similar::{capture_diff_slices, Algorithm, DiffOp};

/// Above this many `old × new` lines, the middle is replaced as one block.
const MAX_LINE_PRODUCT: usize = 64_000_000;
/// Above this many `old × new` characters, a hunk is replaced without a char diff.
const MAX_CHAR_PRODUCT: usize = 4_000_000;

/// One edit of a text, positions in Unicode code points of the *original* text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    /// Where the edit starts in the original text.
    pub pos: usize,
    /// How many code points of the original text it removes.
    pub delete: usize,
    /// What it inserts there.
    pub insert: String,
}

/// The splices that turn `old` into `new`, in ascending order of position and
/// non-overlapping. Apply them from the last to the first so positions stay valid.
pub fn splices(old: &str, new: &str) -> Vec<Splice> {
    if old == new {
        return Vec::new();
    }
    let a: Vec<char> = old.chars().collect();
    let b: Vec<char> = new.chars().collect();
    // The middle must start and end on line boundaries: cut inside a line, the
    // line diff sees no equal lines, and the char diff of the whole middle then
    // builds a new line out of characters of another (a marker out of a tag),
    // which a concurrent edit of that other line tears apart.
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let prefix = a[..prefix]
        .iter()
        .rposition(|c| *c == '\n')
        .map_or(0, |i| i + 1);
    let mut suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a_end, b_end) = (a.len() - suffix, b.len() - suffix);
    let line_start = |t: &[char], end: usize| end == 0 || t[end - 1] == '\n';
    if !(line_start(&a, a_end) && line_start(&b, b_end)) {
        suffix = a[a_end..]
            .iter()
            .position(|c| *c == '\n')
            .map_or(0, |i| suffix - i - 1);
    }
    let a_mid = &a[prefix..a.len() - suffix];
    let b_mid = &b[prefix..b.len() - suffix];
    let mut out = Vec::new();
    diff_lines(a_mid, b_mid, prefix, &mut out);
    out
}

/// Applies splices (as returned by [`splices`]) to a string: used by tests and
/// by code that must predict a document's text without touching the document.
pub fn apply(old: &str, splices: &[Splice]) -> String {
    let mut chars: Vec<char> = old.chars().collect();
    for s in splices.iter().rev() {
        let end = (s.pos + s.delete).min(chars.len());
        chars.splice(s.pos.min(chars.len())..end, s.insert.chars());
    }
    chars.into_iter().collect()
}

fn split_lines(text: &[char]) -> Vec<&[char]> {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, c) in text.iter().enumerate() {
        if *c == '\n' {
            lines.push(&text[start..=i]);
            start = i + 1;
        }
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

fn diff_lines(a: &[char], b: &[char], base: usize, out: &mut Vec<Splice>) {
    if a.is_empty() && b.is_empty() {
        return;
    }
    let la = split_lines(a);
    let lb = split_lines(b);
    if la.len().saturating_mul(lb.len()) > MAX_LINE_PRODUCT || la.len() <= 1 || lb.len() <= 1 {
        diff_chars(a, b, base, out);
        return;
    }
    let ops = capture_diff_slices(Algorithm::Myers, &la, &lb);
    // Offsets (in chars) of each line start, so ops can be mapped back to chars.
    let starts = |lines: &[&[char]]| {
        let mut acc = Vec::with_capacity(lines.len() + 1);
        let mut pos = 0;
        acc.push(0);
        for l in lines {
            pos += l.len();
            acc.push(pos);
        }
        acc
    };
    let sa = starts(&la);
    let sb = starts(&lb);
    for op in ops {
        let (old_range, new_range) = match op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index,
                old_len,
                new_index,
            } => (old_index..old_index + old_len, new_index..new_index),
            DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => (old_index..old_index, new_index..new_index + new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (
                old_index..old_index + old_len,
                new_index..new_index + new_len,
            ),
        };
        let a_chars = &a[sa[old_range.start]..sa[old_range.end]];
        let b_chars = &b[sb[new_range.start]..sb[new_range.end]];
        diff_chars(a_chars, b_chars, base + sa[old_range.start], out);
    }
}

fn diff_chars(a: &[char], b: &[char], base: usize, out: &mut Vec<Splice>) {
    // What the hunk keeps at both ends stays, so an edit inside a long line
    // is small even when the line is too long for a full char diff.
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a, b) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let base = base + prefix;
    if a.is_empty() || b.is_empty() || a.len().saturating_mul(b.len()) > MAX_CHAR_PRODUCT {
        push(out, base, a.len(), b.iter().collect());
        return;
    }
    let ops = capture_diff_slices(Algorithm::Myers, a, b);
    for op in ops {
        match op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete {
                old_index, old_len, ..
            } => push(out, base + old_index, old_len, String::new()),
            DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => push(
                out,
                base + old_index,
                0,
                b[new_index..new_index + new_len].iter().collect(),
            ),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => push(
                out,
                base + old_index,
                old_len,
                b[new_index..new_index + new_len].iter().collect(),
            ),
        }
    }
}

/// Appends a splice, merging it with the previous one when they touch.
fn push(out: &mut Vec<Splice>, pos: usize, delete: usize, insert: String) {
    if delete == 0 && insert.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last.pos + last.delete == pos {
            last.delete += delete;
            last.insert.push_str(&insert);
            return;
        }
    }
    out.push(Splice {
        pos,
        delete,
        insert,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_edit_is_small() {
        let old = "# Title\n\nline one\nline two\nline three\n";
        let new = "# Title\n\nline one\nline 2\nline three\n";
        let s = splices(old, new);
        assert_eq!(apply(old, &s), new);
        let touched: usize = s.iter().map(|s| s.delete + s.insert.chars().count()).sum();
        assert!(touched <= 6, "{s:?}");
    }

    #[test]
    fn identical_is_empty() {
        assert!(splices("abc", "abc").is_empty());
    }

    proptest! {
        #[test]
        fn apply_inverts_splices(old in "(a|b|\n|é|🙂){0,60}", new in "(a|b|\n|é|🙂){0,60}") {
            let s = splices(&old, &new);
            prop_assert_eq!(apply(&old, &s), new);
            for w in s.windows(2) {
                prop_assert!(w[0].pos + w[0].delete <= w[1].pos);
            }
        }
    }
}
