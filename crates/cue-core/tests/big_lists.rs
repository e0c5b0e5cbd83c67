//! Long frontmatter lists render in linear-ish time (100,000 tags used to cost
//! minutes of CPU per render: deduplication compared every pair), and merge
//! as a union; past the limits, frontmatter syncs as plain text.

use automerge::ActorId;
use cue_core::doc::{Author, FileDoc};
use cue_core::frontmatter::{self, FmValue, FrontmatterError};
use cue_core::limits::MAX_MAP_FIELDS;
use cue_core::FileId;

const ANA: Author<'static> = Author {
    member: "ana",
    now_ms: 1_700_000_000_000,
};

fn tags_file(n: usize, extra: &[&str]) -> String {
    let mut tags: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    // Repeats in the user's text are formatting: kept in the text, one in the fields.
    tags.extend(["t1".to_string(), "t2".to_string()]);
    tags.extend(extra.iter().map(|s| s.to_string()));
    // Block style, one tag a line, as long lists are written: a text diff then
    // touches only the lines that changed.
    let lines: Vec<String> = tags.iter().map(|t| format!("  - {t}\n")).collect();
    format!("---\ntitle: big\ntags:\n{}---\nbody\n", lines.concat())
}

fn tags(doc: &FileDoc) -> Vec<FmValue> {
    let fields = doc.fields().unwrap_or_else(|e| panic!("{e}"));
    match fields.iter().find(|(k, _)| k == "tags") {
        Some((_, FmValue::List(items))) => items.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_hundred_thousand_tags_render_and_merge_as_a_union() {
    let n = 100_000;
    let text = tags_file(n, &[]);
    let mut ana = FileDoc::create(ActorId::from([1; 16]), FileId([1; 16]), &text, &ANA)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ana.render().unwrap_or_else(|e| panic!("{e}")), text);
    let got = tags(&ana);
    assert_eq!(got.len(), n, "repeats are one item in the fields");
    assert_eq!(got[0], FmValue::Str("t0".into()));
    assert_eq!(got[n - 1], FmValue::Str(format!("t{}", n - 1)));

    // Bo replaces one tag by another, Ana adds a third, concurrently. (Two
    // edits far apart in a file this long are diffed as one block: see
    // `diff::MAX_LINE_PRODUCT`.)
    let heads = ana.heads();
    let mut bo = ana
        .fork_at(&heads, ActorId::from([2; 16]))
        .unwrap_or_else(|e| panic!("{e}"));
    let bo_text = tags_file(n, &[]).replace("  - t5\n", "  - from-bo\n");
    assert!(bo.record(&bo_text, &ANA).unwrap_or_else(|e| panic!("{e}")));
    let ana_text = tags_file(n, &["from-ana"]);
    assert!(ana
        .record(&ana_text, &ANA)
        .unwrap_or_else(|e| panic!("{e}")));
    ana.merge(&mut bo).unwrap_or_else(|e| panic!("{e}"));
    let merged = tags(&ana);
    assert_eq!(merged.len(), n + 1, "t5 removed, two added");
    assert!(merged.contains(&FmValue::Str("from-bo".into())));
    assert!(merged.contains(&FmValue::Str("from-ana".into())));
    assert!(!merged.contains(&FmValue::Str("t5".into())));
    let rendered = ana.render().unwrap_or_else(|e| panic!("{e}"));
    let fields = frontmatter::parse_file(&rendered).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        FmValue::Map(fields),
        FmValue::Map(ana.fields().unwrap_or_else(|e| panic!("{e}")))
    );
}

#[test]
fn too_many_fields_sync_as_plain_text() {
    let keys: Vec<String> = (0..=MAX_MAP_FIELDS).map(|i| format!("k{i}: {i}")).collect();
    let text = format!("---\n{}\n---\nbody\n", keys.join("\n"));
    assert!(matches!(
        frontmatter::parse_file(&text),
        Err(FrontmatterError::TooLarge { .. })
    ));
    let doc = FileDoc::create(ActorId::from([1; 16]), FileId([1; 16]), &text, &ANA)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(doc.frontmatter_broken());
    assert_eq!(doc.render().unwrap_or_else(|e| panic!("{e}")), text);
}
