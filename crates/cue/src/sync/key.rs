//! The workspace key on disk, and join codes that carry it to new peers.
//!
//! The key lives in `.cuedeck/sync/key` (hex, mode 0600), next to the state
//! and, like it, never synced. A join code is
//! `cue1.` + base64url(version 1 | key 32 | room 32 | relay URL): everything a
//! new peer needs, checked on parse (the room must be the one the key derives),
//! so a damaged code is refused before anything connects.

use std::io::Write;

use anyhow::{Context, Result};
use base64::Engine;
use cue_core::sync::{MemberSecret, WorkspaceKey};

use crate::commands::UsageError;
use crate::disk::Layout;

const CODE_PREFIX: &str = "cue1.";
const CODE_VERSION: u8 = 1;
/// The environment variable a join code may come from (an environment is
/// readable by this user only, unlike the command line).
pub const CODE_ENV: &str = "CUE_JOIN_CODE";
/// Longest join code read from standard input or a file: a real one is under
/// 200 characters; anything longer is not a code.
const MAX_CODE_BYTES: u64 = 64 * 1024;

/// Where a join code comes from, most private first: a file (`--code-file`),
/// standard input (`-`, or no code while stdin is not a terminal), the
/// environment (`CUE_JOIN_CODE`). A code given on the command line still works,
/// with a warning: every local user can read a process's arguments (`ps`,
/// `/proc/PID/cmdline`), and the shell keeps them in its history.
pub fn read_join_code(arg: Option<&str>, code_file: Option<&std::path::Path>) -> Result<String> {
    use std::io::{IsTerminal, Read};
    let read_limited = |mut r: Box<dyn Read>, from: &str| -> Result<String> {
        let mut text = String::new();
        r.by_ref()
            .take(MAX_CODE_BYTES)
            .read_to_string(&mut text)
            .with_context(|| format!("reading the join code from {from}"))?;
        let code = text.trim().to_string();
        if code.is_empty() {
            return Err(UsageError(format!("no join code in {from}")).into());
        }
        Ok(code)
    };
    match (arg, code_file) {
        (Some(_), Some(_)) => Err(UsageError(
            "give the join code once: as an argument, as `-` (standard input), or with --code-file"
                .into(),
        )
        .into()),
        (None, Some(path)) => {
            let f = std::fs::File::open(path)
                .with_context(|| format!("opening the code file {}", path.display()))?;
            read_limited(Box::new(f), &path.display().to_string())
        }
        (Some("-"), None) => read_limited(Box::new(std::io::stdin()), "standard input"),
        (Some(code), None) => {
            eprintln!(
                "warning: a join code on the command line is visible to other local users (ps, /proc) and stays in your shell history; \
                 pass it on standard input (`-`), with --code-file FILE or in ${CODE_ENV} instead"
            );
            Ok(code.to_string())
        }
        (None, None) => {
            if let Some(code) = std::env::var(CODE_ENV)
                .ok()
                .filter(|c| !c.trim().is_empty())
            {
                return Ok(code.trim().to_string());
            }
            if !std::io::stdin().is_terminal() {
                return read_limited(Box::new(std::io::stdin()), "standard input");
            }
            Err(UsageError(format!(
                "no join code: pipe it in (`cue sync invite | tail -1 | cue clone - DIR`), or use --code-file FILE or ${CODE_ENV}"
            ))
            .into())
        }
    }
}

/// Reads 32 bytes kept as 64 hex digits in `sync/NAME`: `None` if the file
/// does not exist, an error saying `damaged` if it holds anything else.
fn read_secret_file(layout: &Layout, name: &str, damaged: &str) -> Result<Option<[u8; 32]>> {
    let path = layout.sync_dir().join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes).with_context(|| {
        format!(
            "{} is damaged (expected 64 hex digits); {damaged}",
            path.display()
        )
    })?;
    Ok(Some(bytes))
}

/// Reads this workspace's key, or `None` if it has none yet.
pub fn read_key(layout: &Layout) -> Result<Option<WorkspaceKey>> {
    let bytes = read_secret_file(layout, "key", "restore it, or rejoin with `cue clone CODE`")?;
    Ok(bytes.map(WorkspaceKey::from_bytes))
}

/// Writes the key, readable by this user only, atomically (a rotation
/// replaces it while a daemon may read it).
pub fn write_key(layout: &Layout, key: &WorkspaceKey) -> Result<()> {
    write_private(layout, "key", &hex::encode(key.as_bytes()))
}

/// The key, created (random) if this workspace has none yet.
pub fn ensure_key(layout: &Layout) -> Result<WorkspaceKey> {
    if let Some(k) = read_key(layout)? {
        return Ok(k);
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context("reading the system's random source")?;
    let key = WorkspaceKey::from_bytes(seed);
    write_key(layout, &key)?;
    Ok(key)
}

/// This member's own X25519 secret (`.cuedeck/sync/member-key`, 64 hex
/// digits, 0600), or `None` if it has none yet.
pub fn read_member_secret(layout: &Layout) -> Result<Option<MemberSecret>> {
    let bytes = read_secret_file(
        layout,
        MEMBER_KEY_FILE,
        "without it this member cannot follow a key rotation",
    )?;
    Ok(bytes.map(MemberSecret::from_bytes))
}

/// This member's secret, created (random, 0600) if it has none yet: every
/// member gets one at `init` and `clone`, and an older workspace on the
/// first daemon start.
pub fn ensure_member_secret(layout: &Layout) -> Result<MemberSecret> {
    if let Some(s) = read_member_secret(layout)? {
        return Ok(s);
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context("reading the system's random source")?;
    let secret = MemberSecret::from_bytes(seed);
    write_private(layout, MEMBER_KEY_FILE, &hex::encode(secret.to_bytes()))?;
    Ok(secret)
}

/// The workspace key this peer rotated away from, kept so that its beacon
/// can stay in the old room (`.cuedeck/sync/previous-key`).
pub fn read_previous_key(layout: &Layout) -> Result<Option<WorkspaceKey>> {
    // Unreadable or damaged, it only costs the beacon for members still in
    // the old room.
    let bytes = read_secret_file(layout, PREVIOUS_KEY_FILE, "").unwrap_or(None);
    Ok(bytes.map(WorkspaceKey::from_bytes))
}

/// Moves this peer to `new`: the current key becomes the previous one
/// (written first, so a crash in between leaves the old key in `key`, and
/// the rotation record, still in the index, is applied again at restart).
pub fn rotate_key(layout: &Layout, old: &WorkspaceKey, new: &WorkspaceKey) -> Result<()> {
    write_private(layout, PREVIOUS_KEY_FILE, &hex::encode(old.as_bytes()))?;
    write_key(layout, new)
}

const MEMBER_KEY_FILE: &str = "member-key";
const PREVIOUS_KEY_FILE: &str = "previous-key";

/// Writes `name` under `sync/`, readable by this user only, atomically.
fn write_private(layout: &Layout, name: &str, text: &str) -> Result<()> {
    let dir = layout.sync_dir();
    crate::store::secure_sync_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = crate::store::private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        #[cfg(unix)]
        crate::store::set_mode(&tmp, 0o600)
            .with_context(|| format!("securing {}", tmp.display()))?;
        writeln!(f, "{text}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// What a join code carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinCode {
    pub relay: String,
    pub key: WorkspaceKey,
}

impl JoinCode {
    /// The one-line code `cue sync invite` prints.
    pub fn encode(&self) -> String {
        let mut raw = vec![CODE_VERSION];
        raw.extend_from_slice(self.key.as_bytes());
        raw.extend_from_slice(self.key.room_id().as_bytes());
        raw.extend_from_slice(self.relay.as_bytes());
        format!(
            "{CODE_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )
    }

    /// Whether `s` looks like a join code rather than a bundle path.
    pub fn looks_like(s: &str) -> bool {
        s.starts_with(CODE_PREFIX)
    }

    /// Parses and checks a code.
    pub fn parse(s: &str) -> Result<JoinCode, UsageError> {
        let damaged = |why: &str| {
            UsageError(format!(
                "this join code is damaged or incomplete ({why}); copy the whole last line that `cue sync invite` printed"
            ))
        };
        let body = s
            .trim()
            .strip_prefix(CODE_PREFIX)
            .ok_or_else(|| damaged("it does not start with cue1."))?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| damaged("not base64url"))?;
        if raw.len() < 65 || raw[0] != CODE_VERSION {
            return Err(damaged("too short or an unknown version"));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[1..33]);
        let key = WorkspaceKey::from_bytes(key);
        if key.room_id().as_bytes()[..] != raw[33..65] {
            return Err(damaged("its key does not match its room"));
        }
        let relay = String::from_utf8(raw[65..].to_vec()).map_err(|_| damaged("relay URL"))?;
        if !relay.starts_with("ws://") && !relay.starts_with("wss://") {
            return Err(damaged("no ws:// relay URL"));
        }
        Ok(JoinCode { relay, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_codes_come_from_a_file_and_only_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("code");
        std::fs::write(&file, "  cue1.abc\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_join_code(None, Some(&file)).ok().as_deref(),
            Some("cue1.abc")
        );
        assert!(read_join_code(Some("cue1.abc"), Some(&file)).is_err());
        assert_eq!(
            read_join_code(Some("cue1.x"), None).ok().as_deref(),
            Some("cue1.x")
        );
        std::fs::write(&file, "\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(read_join_code(None, Some(&file)).is_err());
    }

    #[test]
    fn codes_round_trip_and_damage_is_caught() {
        let code = JoinCode {
            relay: "ws://127.0.0.1:7878".into(),
            key: WorkspaceKey::from_bytes([42; 32]),
        };
        let text = code.encode();
        assert!(JoinCode::looks_like(&text));
        assert_eq!(JoinCode::parse(&text).ok(), Some(code));
        // Flip one character of the key part.
        let mut chars: Vec<char> = text.chars().collect();
        chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
        let bad: String = chars.into_iter().collect();
        let err = JoinCode::parse(&bad).err().map(|e| e.0).unwrap_or_default();
        assert!(err.contains("damaged"), "{err}");
        assert!(JoinCode::parse("cue1.").is_err());
        assert!(JoinCode::parse("hello").is_err());
    }
}
