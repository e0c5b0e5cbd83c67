//! Deterministic Markdown notes: the same seed and number give the same bytes
//! on every run, so runs compare.

/// splitmix64: small, fast, and enough for text that only has to look real.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, i: u64) -> Rng {
        Rng(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const WORDS: &[&str] = &[
    "token",
    "session",
    "refresh",
    "the",
    "client",
    "server",
    "must",
    "rotate",
    "keys",
    "after",
    "login",
    "and",
    "every",
    "request",
    "carries",
    "a",
    "signed",
    "header",
    "which",
    "expires",
    "quickly",
    "so",
    "that",
    "stolen",
    "credentials",
    "deploy",
    "review",
    "meeting",
    "owner",
    "deadline",
    "migration",
    "schema",
    "cache",
    "latency",
    "budget",
    "sprint",
    "customer",
];
const STATUS: &[&str] = &["todo", "active", "review", "done"];
const TAGS: &[&str] = &[
    "auth", "infra", "docs", "design", "ops", "api", "mobile", "billing",
];

/// Where the notes of the initial workspace live, relative to `.cuedeck/`:
/// ten folders, as a team's notes tend to be.
pub fn rel_path(i: usize) -> String {
    format!("docs/area-{}/note-{i:05}.md", i % 10)
}

/// A 2-5 KB note with YAML frontmatter, headings, paragraphs and a list.
pub fn note(seed: u64, i: usize) -> String {
    let mut r = Rng::new(seed, i as u64);
    let target = 2048 + r.below(3072);
    let mut text = format!(
        "---\ntitle: Note {i}\nstatus: {}\ntags: [{}, {}]\nowner: member-{}\n---\n# Note {i}\n\n",
        r.pick(STATUS),
        r.pick(TAGS),
        r.pick(TAGS),
        r.below(12),
    );
    while text.len() < target {
        match r.below(6) {
            0 => text.push_str(&format!("\n## Section {}\n\n", r.below(100))),
            1 => {
                for _ in 0..1 + r.below(4) {
                    text.push_str(&format!("- [ ] {} {}\n", r.pick(WORDS), r.pick(WORDS)));
                }
                text.push('\n');
            }
            _ => {
                let n = 12 + r.below(30);
                let words: Vec<&str> = (0..n).map(|_| r.pick(WORDS)).collect();
                text.push_str(&words.join(" "));
                text.push_str(".\n\n");
            }
        }
    }
    text
}

/// The notes the phases edit, beside the generated ones (so that a
/// workspace of 0 generated notes still has them).
pub const APPEND: &str = "docs/bench/append.md";
pub const CONCURRENT: &str = "docs/bench/concurrent.md";
/// The note peer `i` appends to after the burst: one per sender, so that
/// no save of the bench can race a daemon writing the same file.
pub fn after(i: usize) -> String {
    format!("docs/bench/after-p{i}.md")
}

/// Where the burst writes its notes, and their names.
pub const BURST_DIR: &str = "docs/burst";

pub fn burst_name(i: usize) -> String {
    format!("b-{i:05}.md")
}

/// The index of a burst note from its file name.
pub fn burst_index(name: &str) -> Option<usize> {
    name.strip_prefix("b-")?.strip_suffix(".md")?.parse().ok()
}
