//! YAML frontmatter: splitting a Markdown file, reading its fields, and writing
//! merged fields back without disturbing what nobody changed.
//!
//! The CRDT keeps frontmatter twice: the file's exact text (so formatting,
//! comments and key order survive) and a structured map (so fields merge by the
//! rules: scalars last-writer-wins, lists as a union, maps per key). When both
//! agree, the file is written verbatim. When a merge changed fields, only the
//! top-level key blocks whose value differs are rewritten ([`patch`]); every
//! other line stays byte for byte. This is a pure function of the document, so
//! every peer produces the same bytes.

use yaml_rust2::{Yaml, YamlLoader};

use crate::limits::{MAX_LIST_ITEMS, MAX_MAP_FIELDS};

/// A frontmatter value, as far as the merge rules care.
#[derive(Debug, Clone)]
pub enum FmValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A list; merged as a union, rendered without duplicates.
    List(Vec<FmValue>),
    /// A map, in the order its keys should be written.
    Map(Vec<(String, FmValue)>),
}

/// Lists and maps up to this many items compare pairwise (no allocation);
/// longer ones through [`FmValue::canonical`] in O(n log n): pairwise, 100,000
/// tags took minutes per render.
const PAIRWISE_MAX: usize = 16;

impl PartialEq for FmValue {
    fn eq(&self, other: &Self) -> bool {
        use FmValue::*;
        match (self, other) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Float(a), Float(b)) => a.to_bits() == b.to_bits() || a == b,
            (Str(a), Str(b)) => a == b,
            // Lists merge as sets (union), so order and repeats are formatting:
            // the author's order stays in the file text on every peer.
            (List(a), List(b)) if a.len() <= PAIRWISE_MAX && b.len() <= PAIRWISE_MAX => {
                a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
            }
            (List(a), List(b)) => canonical_set(a) == canonical_set(b),
            // Key order is formatting, not content.
            (Map(a), Map(b)) if a.len() <= PAIRWISE_MAX => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| b.iter().any(|(k2, v2)| k == k2 && v == v2))
            }
            (Map(a), Map(b)) => {
                if a.len() != b.len() {
                    return false;
                }
                by_key(a)
                    .iter()
                    .zip(by_key(b))
                    .all(|(x, y)| x.0 == y.0 && x.1 == y.1)
            }
            _ => false,
        }
    }
}

/// A map's entries sorted by key.
fn by_key(m: &[(String, FmValue)]) -> Vec<&(String, FmValue)> {
    let mut v: Vec<&(String, FmValue)> = m.iter().collect();
    v.sort_by(|x, y| x.0.cmp(&y.0));
    v
}

/// The canonical forms of a list's items, sorted and without repeats: equal
/// exactly when the lists are equal as sets.
fn canonical_set(items: &[FmValue]) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = items.iter().map(FmValue::canonical).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_be_bytes());
}

impl FmValue {
    /// Bytes that are equal exactly when the values are (`==`): what lists
    /// are deduplicated and compared by, with a hash set or a sort instead of
    /// comparing every pair. A float's bits, with -0.0 as 0.0 (NaNs equal
    /// only themselves, bit for bit); a list as the set of its items; a map
    /// by sorted key. Every part is tagged and length-prefixed.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            FmValue::Null => out.push(0),
            FmValue::Bool(b) => out.extend_from_slice(&[1, u8::from(*b)]),
            FmValue::Int(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_be_bytes());
            }
            FmValue::Float(f) => {
                out.push(3);
                let bits = if *f == 0.0 { 0 } else { f.to_bits() };
                out.extend_from_slice(&bits.to_be_bytes());
            }
            FmValue::Str(s) => {
                out.push(4);
                put_len(out, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            FmValue::List(items) => {
                out.push(5);
                let set = canonical_set(items);
                put_len(out, set.len());
                for k in set {
                    put_len(out, k.len());
                    out.extend_from_slice(&k);
                }
            }
            FmValue::Map(entries) => {
                out.push(6);
                let sorted = by_key(entries);
                put_len(out, sorted.len());
                for (k, v) in sorted {
                    put_len(out, k.len());
                    out.extend_from_slice(k.as_bytes());
                    let v = v.canonical();
                    put_len(out, v.len());
                    out.extend_from_slice(&v);
                }
            }
        }
    }

    /// Looks a key up in a map value.
    pub fn get(&self, key: &str) -> Option<&FmValue> {
        match self {
            FmValue::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as a string, for display (`status`, `title`...).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FmValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Where the frontmatter sits inside a file, as byte ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The YAML between the fences, if the file starts with a `---` fence that is closed.
    pub yaml: Option<std::ops::Range<usize>>,
    /// Where the body starts (after the closing fence line).
    pub body_start: usize,
    /// The line ending the file uses (`"\r\n"` if its first line ends so).
    pub newline: &'static str,
}

/// Finds the frontmatter block: a first line `---` and a later line `---` or `...`.
pub fn split(text: &str) -> Split {
    let newline = match text.find('\n') {
        Some(i) if i > 0 && text.as_bytes()[i - 1] == b'\r' => "\r\n",
        _ => "\n",
    };
    let none = Split {
        yaml: None,
        body_start: 0,
        newline,
    };
    let first_end = match text.find('\n') {
        Some(i) => i,
        None => return none,
    };
    if text[..first_end].trim_end_matches('\r') != "---" {
        return none;
    }
    let yaml_start = first_end + 1;
    let mut pos = yaml_start;
    while pos < text.len() {
        let end = text[pos..]
            .find('\n')
            .map(|i| pos + i + 1)
            .unwrap_or(text.len());
        let line = text[pos..end].trim_end_matches(['\n', '\r']);
        if line == "---" || line == "..." {
            return Split {
                yaml: Some(yaml_start..pos),
                body_start: end,
                newline,
            };
        }
        pos = end;
    }
    none
}

/// Why frontmatter could not be read as fields. The file still syncs as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontmatterError {
    #[error("frontmatter is not valid YAML: {0}")]
    Syntax(String),
    #[error("frontmatter must be a YAML mapping of keys to values")]
    NotAMap,
    #[error(
        "frontmatter uses an unsupported YAML feature (aliases, complex keys or several documents)"
    )]
    Unsupported,
    #[error("frontmatter repeats the key {0:?}")]
    DuplicateKey(String),
    #[error(
        "frontmatter has {count} {what}, over the limit of {limit}; the file syncs as plain text"
    )]
    TooLarge {
        what: &'static str,
        count: usize,
        limit: usize,
    },
}

/// Reads a file's frontmatter fields. A file without frontmatter has none (an empty map).
pub fn parse_file(text: &str) -> Result<Vec<(String, FmValue)>, FrontmatterError> {
    match split(text).yaml {
        None => Ok(Vec::new()),
        Some(range) => parse_yaml(&text[range]),
    }
}

/// Parses the YAML between the fences into top-level fields.
pub fn parse_yaml(yaml: &str) -> Result<Vec<(String, FmValue)>, FrontmatterError> {
    if too_deep(yaml) {
        return Err(FrontmatterError::Unsupported);
    }
    let docs =
        YamlLoader::load_from_str(yaml).map_err(|e| FrontmatterError::Syntax(e.to_string()))?;
    let root = match docs.as_slice() {
        [] => return Ok(Vec::new()),
        [one] => one,
        _ => return Err(FrontmatterError::Unsupported),
    };
    match root {
        Yaml::Null => Ok(Vec::new()),
        Yaml::Hash(_) => match convert(root)? {
            FmValue::Map(entries) => {
                check_duplicates(yaml)?;
                Ok(entries)
            }
            _ => Err(FrontmatterError::NotAMap),
        },
        _ => Err(FrontmatterError::NotAMap),
    }
}

/// Deepest nesting we parse. The YAML parser recurses per level, so hostile
/// input (`- - - - …` or `[[[[…`) could otherwise overflow the stack.
const MAX_DEPTH: usize = 64;

/// A cheap, non-recursive over-estimate of the nesting depth.
fn too_deep(yaml: &str) -> bool {
    let mut brackets: usize = 0;
    for c in yaml.chars() {
        match c {
            '[' | '{' => {
                brackets += 1;
                if brackets > MAX_DEPTH {
                    return true;
                }
            }
            ']' | '}' => brackets = brackets.saturating_sub(1),
            _ => {}
        }
    }
    yaml.lines().any(|line| {
        let trimmed = line.trim_start_matches([' ', '-', '\t', '?', ':']);
        (line.len() - trimmed.len()) > MAX_DEPTH * 2
    })
}

/// yaml-rust2 keeps the last of two equal keys; we refuse instead, because a
/// silently dropped value is data loss.
fn check_duplicates(yaml: &str) -> Result<(), FrontmatterError> {
    let mut seen = std::collections::HashSet::new();
    for block in blocks(yaml) {
        if let Some(key) = block.key {
            if !seen.insert(key.clone()) {
                return Err(FrontmatterError::DuplicateKey(key));
            }
        }
    }
    Ok(())
}

fn key_string(key: &Yaml) -> Result<String, FrontmatterError> {
    Ok(match key {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Real(r) => r.clone(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => "null".to_string(),
        _ => return Err(FrontmatterError::Unsupported),
    })
}

fn convert(y: &Yaml) -> Result<FmValue, FrontmatterError> {
    Ok(match y {
        Yaml::Null => FmValue::Null,
        Yaml::Boolean(b) => FmValue::Bool(*b),
        Yaml::Integer(i) => FmValue::Int(*i),
        Yaml::Real(r) => match y.as_f64() {
            Some(f) => FmValue::Float(f),
            None => FmValue::Str(r.clone()),
        },
        Yaml::String(s) => FmValue::Str(s.clone()),
        Yaml::Array(items) => {
            if items.len() > MAX_LIST_ITEMS {
                return Err(FrontmatterError::TooLarge {
                    what: "items in one list",
                    count: items.len(),
                    limit: MAX_LIST_ITEMS,
                });
            }
            FmValue::List(items.iter().map(convert).collect::<Result<_, _>>()?)
        }
        Yaml::Hash(h) => {
            if h.len() > MAX_MAP_FIELDS {
                return Err(FrontmatterError::TooLarge {
                    what: "fields in one map",
                    count: h.len(),
                    limit: MAX_MAP_FIELDS,
                });
            }
            let mut entries: Vec<(String, FmValue)> = Vec::with_capacity(h.len());
            let mut seen = std::collections::HashSet::with_capacity(h.len());
            for (k, v) in h {
                let key = key_string(k)?;
                if !seen.insert(key.clone()) {
                    return Err(FrontmatterError::DuplicateKey(key));
                }
                entries.push((key, convert(v)?));
            }
            FmValue::Map(entries)
        }
        Yaml::Alias(_) | Yaml::BadValue => return Err(FrontmatterError::Unsupported),
    })
}

/// One top-level piece of the YAML text: a key with its indented continuation,
/// or a run of other lines (comments, blank lines) that belong to no key.
#[derive(Debug)]
struct Block<'a> {
    key: Option<String>,
    text: &'a str,
}

fn blocks(yaml: &str) -> Vec<Block<'_>> {
    let mut out: Vec<Block<'_>> = Vec::new();
    let mut start = 0;
    let mut current_key: Option<String> = None;
    let mut pos = 0;
    let bytes = yaml.as_bytes();
    while pos < yaml.len() {
        let end = yaml[pos..]
            .find('\n')
            .map(|i| pos + i + 1)
            .unwrap_or(yaml.len());
        let line = &yaml[pos..end];
        let first = bytes[pos];
        let continues = first == b' ' || first == b'\t' || first == b'-';
        let is_key = !continues && first != b'#' && !line.trim().is_empty();
        let belongs = current_key.is_some() && continues;
        if !belongs {
            // This line starts a new block (a key, or free lines).
            if pos > start && (is_key || current_key.is_some()) {
                out.push(Block {
                    key: current_key.take(),
                    text: &yaml[start..pos],
                });
                start = pos;
            }
            current_key = if is_key { Some(line_key(line)) } else { None };
        }
        pos = end;
    }
    if start < yaml.len() {
        out.push(Block {
            key: current_key,
            text: &yaml[start..],
        });
    }
    out
}

/// The key of a top-level line, as YAML reads it (`"a b": 1` gives `a b`).
fn line_key(line: &str) -> String {
    if let Ok(docs) = YamlLoader::load_from_str(line) {
        if let Some(Yaml::Hash(h)) = docs.first() {
            if let Some((k, _)) = h.iter().next() {
                if let Ok(k) = key_string(k) {
                    return k;
                }
            }
        }
    }
    line.split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Rebuilds `text` so that its frontmatter says `fields`, changing as few lines
/// as it can. Returns `text` unchanged when it already agrees.
pub fn patch(text: &str, fields: &[(String, FmValue)]) -> String {
    let sp = split(text);
    let nl = sp.newline;
    let (yaml, head, tail) = match &sp.yaml {
        Some(r) => (&text[r.clone()], &text[..r.start], &text[r.end..]),
        None => {
            if fields.is_empty() {
                return text.to_string();
            }
            ("", "", "")
        }
    };
    if let Ok(current) = parse_yaml(yaml) {
        if FmValue::Map(current) == FmValue::Map(fields.to_vec()) {
            return text.to_string();
        }
    }
    let new_yaml = patch_yaml(yaml, fields, nl)
        .filter(|y| {
            parse_yaml(y)
                .map(|v| FmValue::Map(v) == FmValue::Map(fields.to_vec()))
                .unwrap_or(false)
        })
        .unwrap_or_else(|| emit_all(fields, nl));
    if sp.yaml.is_some() {
        format!("{head}{new_yaml}{tail}")
    } else {
        format!("---{nl}{new_yaml}---{nl}{text}")
    }
}

fn patch_yaml(yaml: &str, fields: &[(String, FmValue)], nl: &str) -> Option<String> {
    let mut out = String::with_capacity(yaml.len() + 64);
    let wanted: std::collections::HashMap<&str, &FmValue> =
        fields.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut written: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for block in blocks(yaml) {
        let Some(key) = &block.key else {
            out.push_str(block.text);
            continue;
        };
        let Some((key, want)) = wanted.get_key_value(key.as_str()) else {
            continue; // removed by someone: drop its lines
        };
        if !written.insert(key) {
            return None;
        }
        let have = parse_yaml(block.text)
            .ok()
            .and_then(|v| v.into_iter().next())
            .map(|(_, v)| v);
        if have.as_ref() == Some(want) {
            out.push_str(block.text);
        } else {
            let flow = block.text.contains('[')
                && !block.text.contains("\n-")
                && !block.text.contains("\n ");
            out.push_str(&emit_entry(key, want, 0, flow, nl));
            // Keep the block's own trailing line ending style.
        }
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str(nl);
    }
    for (k, v) in fields {
        if !written.contains(k.as_str()) {
            out.push_str(&emit_entry(k, v, 0, matches!(v, FmValue::List(_)), nl));
        }
    }
    Some(out)
}

/// Writes every field afresh: the fallback when the old text can't be patched.
fn emit_all(fields: &[(String, FmValue)], nl: &str) -> String {
    fields
        .iter()
        .map(|(k, v)| emit_entry(k, v, 0, false, nl))
        .collect()
}

fn emit_entry(key: &str, value: &FmValue, indent: usize, flow: bool, nl: &str) -> String {
    let pad = " ".repeat(indent);
    let k = emit_key(key);
    match value {
        FmValue::List(items) if items.is_empty() => format!("{pad}{k}: []{nl}"),
        FmValue::List(items) if flow && items.iter().all(is_scalar) => {
            let parts: Vec<String> = items.iter().map(|i| emit_scalar(i, true)).collect();
            format!("{pad}{k}: [{}]{nl}", parts.join(", "))
        }
        FmValue::List(items) => {
            let mut s = format!("{pad}{k}:{nl}");
            for item in items {
                s.push_str(&emit_item(item, indent + 2, nl));
            }
            s
        }
        FmValue::Map(entries) if entries.is_empty() => format!("{pad}{k}: {{}}{nl}"),
        FmValue::Map(entries) => {
            let mut s = format!("{pad}{k}:{nl}");
            for (k2, v2) in entries {
                s.push_str(&emit_entry(k2, v2, indent + 2, false, nl));
            }
            s
        }
        scalar => format!("{pad}{k}: {}{nl}", emit_scalar(scalar, false)),
    }
}

fn emit_item(item: &FmValue, indent: usize, nl: &str) -> String {
    let pad = " ".repeat(indent);
    match item {
        FmValue::List(items) if items.is_empty() => format!("{pad}- []{nl}"),
        FmValue::List(items) => {
            let parts: Vec<String> = items.iter().map(|i| emit_item(i, indent + 2, nl)).collect();
            format!("{pad}-{nl}{}", parts.concat())
        }
        FmValue::Map(entries) if entries.is_empty() => format!("{pad}- {{}}{nl}"),
        FmValue::Map(entries) => {
            let mut s = String::new();
            for (i, (k, v)) in entries.iter().enumerate() {
                let line = emit_entry(k, v, indent + 2, false, nl);
                if i == 0 {
                    s.push_str(&format!("{pad}- {}", &line[indent + 2..]));
                } else {
                    s.push_str(&line);
                }
            }
            s
        }
        scalar => format!("{pad}- {}{nl}", emit_scalar(scalar, false)),
    }
}

fn is_scalar(v: &FmValue) -> bool {
    !matches!(v, FmValue::List(_) | FmValue::Map(_))
}

fn emit_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !key.starts_with('-')
        && matches!(parse_yaml(&format!("{key}: 1")).as_deref(), Ok([(k, _)]) if k == key);
    if plain {
        key.to_string()
    } else {
        quote(key)
    }
}

/// A scalar as YAML text; plain when YAML reads it back as the same value.
fn emit_scalar(v: &FmValue, in_flow: bool) -> String {
    match v {
        FmValue::Null => "null".into(),
        FmValue::Bool(b) => b.to_string(),
        FmValue::Int(i) => i.to_string(),
        FmValue::Float(f) if f.is_nan() => ".nan".into(),
        FmValue::Float(f) if f.is_infinite() => (if *f > 0.0 { ".inf" } else { "-.inf" }).into(),
        FmValue::Float(f) => {
            let s = format!("{f:?}");
            if s.contains(['.', 'e', 'E']) {
                s
            } else {
                format!("{s}.0")
            }
        }
        FmValue::Str(s) => {
            let risky = s.is_empty()
                || s.trim() != s
                || s.contains(['\n', '\r', '\t', '#', '"', '\''])
                || s.contains(": ")
                || s.ends_with(':')
                || s.starts_with([
                    '-', '?', ':', '[', ']', '{', '}', '&', '*', '!', '|', '>', '%', '@', '`', ',',
                ])
                || (in_flow && s.contains([',', '[', ']', '{', '}']))
                || s.chars().any(|c| c.is_control());
            if !risky {
                if let Ok(fields) = parse_yaml(&format!("k: {s}")) {
                    if matches!(fields.as_slice(), [(_, FmValue::Str(back))] if back == s) {
                        return s.clone();
                    }
                }
            }
            quote(s)
        }
        FmValue::List(_) | FmValue::Map(_) => "null".into(),
    }
}

/// A double-quoted YAML string (JSON-compatible escapes).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> FmValue {
        FmValue::Str(v.into())
    }

    const CARD: &str = "---\n# a comment\ntitle: Auth flow\npriority: high   # why\ntags:\n  - security\n  - api\n---\n# Body\n";

    #[test]
    fn split_finds_fences() {
        let sp = split(CARD);
        assert_eq!(
            &CARD[sp.yaml.clone().unwrap_or_default()],
            "# a comment\ntitle: Auth flow\npriority: high   # why\ntags:\n  - security\n  - api\n"
        );
        assert_eq!(&CARD[sp.body_start..], "# Body\n");
        assert_eq!(split("no fm\n").yaml, None);
        assert_eq!(split("---\nunclosed: 1\n").yaml, None);
        assert_eq!(split("---\r\na: 1\r\n---\r\nx").newline, "\r\n");
    }

    #[test]
    fn parse_reads_fields() {
        let f = parse_file(CARD).unwrap_or_default();
        assert_eq!(f[0], ("title".into(), s("Auth flow")));
        assert_eq!(f[2].1, FmValue::List(vec![s("security"), s("api")]));
        assert!(matches!(
            parse_file("---\n: [\n---\n"),
            Err(FrontmatterError::Syntax(_))
        ));
        assert!(matches!(
            parse_file("---\n- a\n---\n"),
            Err(FrontmatterError::NotAMap)
        ));
        let deep = format!("---\nk:\n{}x\n---\n", "- ".repeat(100_000));
        assert_eq!(parse_file(&deep), Err(FrontmatterError::Unsupported));
        let deep = format!("---\nk: {}\n---\n", "[".repeat(100_000));
        assert_eq!(parse_file(&deep), Err(FrontmatterError::Unsupported));
        assert!(parse_file("---\na: 1\na: 2\n---\n").is_err());
    }

    #[test]
    fn patch_is_identity_when_fields_agree() {
        let f = parse_file(CARD).unwrap_or_default();
        assert_eq!(patch(CARD, &f), CARD);
    }

    #[test]
    fn patch_rewrites_only_the_changed_key() {
        let mut f = parse_file(CARD).unwrap_or_default();
        f[1].1 = s("low");
        let out = patch(CARD, &f);
        assert_eq!(out, "---\n# a comment\ntitle: Auth flow\npriority: low\ntags:\n  - security\n  - api\n---\n# Body\n");
        f[2].1 = FmValue::List(vec![s("security"), s("api"), s("ops")]);
        f.push(("assignee".into(), s("bob: the builder")));
        let out = patch(CARD, &f);
        assert_eq!(parse_file(&out).unwrap_or_default(), f);
        assert!(out.contains("# a comment\ntitle: Auth flow\n"));
        assert!(out.contains("assignee: \"bob: the builder\"\n"));
    }

    #[test]
    fn patch_keeps_flow_style_and_crlf() {
        let text = "---\r\ntags: [a, b]\r\nx: 1\r\n---\r\nbody\r\n";
        let f = vec![
            ("tags".into(), FmValue::List(vec![s("a"), s("b"), s("c")])),
            ("x".into(), FmValue::Int(1)),
        ];
        assert_eq!(
            patch(text, &f),
            "---\r\ntags: [a, b, c]\r\nx: 1\r\n---\r\nbody\r\n"
        );
    }

    #[test]
    fn patch_adds_frontmatter_to_a_plain_file() {
        let f = vec![("title".into(), s("x"))];
        assert_eq!(patch("body\n", &f), "---\ntitle: x\n---\nbody\n");
        assert_eq!(patch("body\n", &[]), "body\n");
    }

    #[test]
    fn tricky_strings_round_trip() {
        for v in [
            "yes",
            "no",
            "true",
            "null",
            "~",
            "123",
            "1.5",
            "",
            " pad",
            "a #b",
            "#x",
            "- x",
            "é ✓",
            "a\"b",
            "line\nbreak",
            "[x]",
            "{x}",
            "@me",
            "a,b",
        ] {
            let f = vec![("k".into(), s(v)), ("l".into(), FmValue::List(vec![s(v)]))];
            let out = patch("body", &f);
            assert_eq!(parse_file(&out).unwrap_or_default(), f, "{v:?} -> {out}");
        }
    }
}
