//! Frontmatter on arbitrary text. The input is UTF-8 text A, optionally
//! followed by a NUL byte and text B. Checks:
//! - `split` gives in-bounds ranges on char boundaries, in order;
//! - `parse_file`, `parse_yaml`, `patch` never panic (and finish: the target
//!   runs with libFuzzer's timeout);
//! - patching A with its own fields leaves it byte for byte unchanged;
//! - patching A with B's fields gives a text whose fields are exactly B's,
//!   whose body is A's body, and that a second patch leaves unchanged.
#![no_main]

use cue_core::frontmatter::{parse_file, parse_yaml, patch, split, FmValue};
use libfuzzer_sys::fuzz_target;

fn check_split(text: &str) {
    let sp = split(text);
    assert!(sp.body_start <= text.len());
    assert!(text.is_char_boundary(sp.body_start));
    assert!(sp.newline == "\n" || sp.newline == "\r\n");
    if let Some(r) = &sp.yaml {
        assert!(r.start <= r.end && r.end <= sp.body_start);
        assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
        assert!(text.starts_with("---"));
    } else {
        assert_eq!(sp.body_start, 0);
    }
}

fn body(text: &str) -> &str {
    &text[split(text).body_start..]
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = input.split_once('\0').unwrap_or((input, input));
    check_split(a);
    check_split(b);
    let _ = parse_yaml(a);

    if let Ok(fa) = &parse_file(a) {
        assert_eq!(
            patch(a, fa),
            a,
            "patching a text with its own fields changed it"
        );
    }

    let Ok(fb) = parse_file(b) else { return };
    let patched = patch(a, &fb);
    check_split(&patched);
    match parse_file(&patched) {
        Ok(back) => assert!(
            FmValue::Map(back.clone()) == FmValue::Map(fb.clone()),
            "re-parsing the patched text gave other fields\npatched: {patched:?}\nwant: {fb:?}\ngot: {back:?}"
        ),
        Err(e) => panic!("patched text does not parse: {e}\npatched: {patched:?}\nfields: {fb:?}"),
    }
    // Only the frontmatter changes: the body is A's, whether or not A had frontmatter.
    assert_eq!(body(&patched), body(a), "patch changed the body");
    assert_eq!(patch(&patched, &fb), patched, "patch is not idempotent");
});
