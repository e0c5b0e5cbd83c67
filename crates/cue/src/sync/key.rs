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
use cue_core::sync::WorkspaceKey;

use crate::commands::UsageError;
use crate::disk::Layout;

const CODE_PREFIX: &str = "cue1.";
const CODE_VERSION: u8 = 1;

/// Reads this workspace's key, or `None` if it has none yet.
pub fn read_key(layout: &Layout) -> Result<Option<WorkspaceKey>> {
    let path = layout.sync_dir().join("key");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes).with_context(|| {
        format!(
            "{} is damaged (expected 64 hex digits); restore it, or rejoin with `cue clone CODE`",
            path.display()
        )
    })?;
    Ok(Some(WorkspaceKey::from_bytes(bytes)))
}

/// Writes the key, readable by this user only.
pub fn write_key(layout: &Layout, key: &WorkspaceKey) -> Result<()> {
    let dir = layout.sync_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("key");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{}", hex::encode(key.as_bytes()))?;
    f.sync_all()?;
    Ok(())
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
