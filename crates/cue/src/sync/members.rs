//! Members and key rotation: `cue member list`, `cue member remove NAME`,
//! and the one rule every peer follows to move to a new workspace key.
//!
//! Each member holds an X25519 key pair (`sync/member-key`) and publishes the
//! public half in the index. `cue member remove NAME` makes a fresh workspace
//! key (a new room), seals it to every other member's public key, writes the
//! sealed copies as a rotation record into the index (epoch n+1), and moves
//! this peer to the new key. Peers find the record in the index (live, from a
//! bundle, or on their next start) or are handed it by the beacon a moved
//! peer keeps in the old room; each opens its own copy and moves too. The
//! removed member has no copy: it is left alone in the old room.
//!
//! The epoch a peer is at is not stored: it is the epoch of the record whose
//! new room is the room of the key the peer holds (0 if none is).

use std::path::Path;

use anyhow::{Context, Result};
use cue_core::store::Store;
use cue_core::sync::{MemberPublic, MemberSecret, Rotation, RotationError, WorkspaceKey};
use cue_core::Workspace;
use serde_json::json;

use super::key;
use crate::commands::UsageError;
use crate::disk::{self, Layout};
use crate::session;

/// What a peer does about the rotation records it knows.
#[derive(Debug)]
pub enum Step {
    /// Nothing: no record moves this peer further.
    Stay,
    /// Move to `key` (epoch `epoch`); `record` is what the beacon hands out.
    Move {
        key: WorkspaceKey,
        epoch: u32,
        record: Vec<u8>,
        by: String,
        removed: String,
    },
    /// A record at the next epoch removes this member.
    Removed { epoch: u32, by: String },
    /// A record at the next epoch has no copy this member can open (it had
    /// published no key, or another one).
    NoCopy { epoch: u32, by: String },
}

/// The epoch `key` belongs to, by the records given (0: the first key).
pub fn epoch_of(records: &[(u32, Vec<u8>)], key: &WorkspaceKey) -> u32 {
    let room = key.room_id();
    records
        .iter()
        .filter_map(|(_, bytes)| Rotation::decode(bytes).ok())
        .filter(|r| r.new_room == room)
        .map(|r| r.epoch)
        .max()
        .unwrap_or(0)
}

/// What the next-epoch records among `records` mean for member `me`, who
/// holds `key`. Records of other epochs are skipped (older ones are history,
/// later ones need the next key first); a next-epoch record that is not
/// from a holder of `key`, or malformed, goes to `refused` and is otherwise
/// ignored.
pub fn next_step(
    records: &[(u32, Vec<u8>)],
    key: &WorkspaceKey,
    me: &str,
    secret: &MemberSecret,
    refused: &mut Vec<String>,
) -> Step {
    let epoch = epoch_of(records, key);
    for (at, bytes) in records {
        let plain = match Rotation::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                if *at == epoch + 1 {
                    refused.push(format!("rotation record for epoch {at} refused: {e}"));
                }
                continue;
            }
        };
        if plain.epoch != epoch + 1 || plain.new_room == key.room_id() {
            continue;
        }
        let rotation = match Rotation::decode_verified(bytes, key) {
            Ok(r) => r,
            Err(e) => {
                refused.push(format!(
                    "rotation record for epoch {} (by {:?}) refused: {e}",
                    plain.epoch, plain.by
                ));
                continue;
            }
        };
        if rotation.removed == me {
            return Step::Removed {
                epoch: rotation.epoch,
                by: rotation.by,
            };
        }
        return match rotation.open(me, secret, key) {
            Ok(new_key) => Step::Move {
                key: new_key,
                epoch: rotation.epoch,
                record: bytes.clone(),
                by: rotation.by,
                removed: rotation.removed,
            },
            Err(RotationError::NotForUs(_) | RotationError::DoesNotOpen(_)) => Step::NoCopy {
                epoch: rotation.epoch,
                by: rotation.by,
            },
            Err(e) => {
                refused.push(format!(
                    "rotation record for epoch {} (by {:?}) refused: {e}",
                    rotation.epoch, rotation.by
                ));
                continue;
            }
        };
    }
    Step::Stay
}

/// Makes sure this member has a key pair and that the index publishes its
/// public key (once the index is there: a clone publishes after it arrived).
/// Returns whether the index changed.
pub fn publish_own_key<S: Store>(layout: &Layout, ws: &mut Workspace<S>) -> Result<bool> {
    let secret = key::ensure_member_secret(layout)?;
    if ws.workspace_id().is_none() {
        return Ok(false);
    }
    Ok(ws.publish_member_key(&secret.public().to_hex(), disk::now_ms())?)
}

/// `cue member list`: names, key fingerprints, when each joined and was last
/// seen (its latest change here, or online now by the daemon's status).
pub fn list(cwd: &Path, json_out: bool) -> Result<()> {
    let mut s = session::open(cwd)?;
    publish_own_key(&s.layout, &mut s.ws)?;
    let me = session::member_name(None, &s.config);
    let joined = s.ws.member_joined()?;
    let keys = s.ws.member_keys()?;
    let mut last: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for row in s.ws.activity(0)? {
        let t = last.entry(row.member.clone()).or_insert(row.time_s);
        *t = (*t).max(row.time_s);
    }
    let online: Vec<String> = super::status::read_status(&s.layout)
        .map(|st| st.peers.into_iter().filter_map(|p| p.member).collect())
        .unwrap_or_default();
    let records = s.ws.rotations()?;
    let removed: std::collections::BTreeSet<String> = records
        .iter()
        .filter_map(|(_, b)| Rotation::decode(b).ok())
        .map(|r| r.removed)
        .collect();
    let mut names: std::collections::BTreeSet<String> =
        joined.iter().map(|(n, _)| n.clone()).collect();
    names.extend(keys.iter().map(|(n, _)| n.clone()));
    let mut rows = Vec::new();
    for name in names {
        let key = keys
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, k)| MemberPublic::parse(k));
        let joined_ms = joined.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
        let last_s = last.get(&name).copied();
        rows.push((
            name.clone(),
            key.map(|k| k.fingerprint()),
            joined_ms,
            last_s,
            online.contains(&name),
            removed.contains(&name),
            name == me,
        ));
    }
    if json_out {
        let out: Vec<_> = rows
            .iter()
            .map(|(name, fp, joined, last, online, removed, me)| {
                json!({
                    "name": name,
                    "key_fingerprint": fp,
                    "joined_ms": joined,
                    "last_change_s": last,
                    "online": online,
                    "removed": removed,
                    "me": me,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<16} {:<20} {:<20} LAST SEEN", "MEMBER", "KEY", "JOINED");
    for (name, fp, joined, last, online, removed, me) in rows {
        let seen = if online {
            "online now".to_string()
        } else {
            last.map(crate::commands::format_time)
                .unwrap_or_else(|| "-".into())
        };
        let mut label = name.clone();
        if me {
            label.push_str(" (you)");
        }
        if removed {
            label.push_str(" (removed)");
        }
        println!(
            "{:<16} {:<20} {:<20} {}",
            label,
            fp.unwrap_or_else(|| "(no key published)".into()),
            joined
                .map(|t| crate::commands::format_time(t / 1000))
                .unwrap_or_else(|| "-".into()),
            seen
        );
    }
    if let Some(epoch) = records.iter().map(|(e, _)| *e).max() {
        println!("Key rotations: {epoch} (the latest removed a member; see docs/FORMAT.md).");
    }
    Ok(())
}

/// `cue member remove NAME`: rotates the workspace key so that NAME reads
/// nothing written from now on.
pub fn remove(cwd: &Path, name: &str) -> Result<()> {
    let mut s = session::open(cwd)?;
    let layout = s.layout.clone();
    let old = key::read_key(&layout)?.ok_or_else(|| {
        UsageError(
            "this peer has no workspace key (it does not sync live); removing a member rotates that key, so run this on a peer that syncs"
                .to_string(),
        )
    })?;
    publish_own_key(&layout, &mut s.ws)?;
    let me = session::member_name(None, &s.config);
    if name == me {
        return Err(UsageError(format!(
            "{name} is you: a member cannot remove itself (another member can)"
        ))
        .into());
    }
    let joined = s.ws.member_joined()?;
    let keys = s.ws.member_keys()?;
    if !joined.iter().any(|(n, _)| n == name) && !keys.iter().any(|(n, _)| n == name) {
        return Err(UsageError(format!(
            "no member named {name:?} in this workspace; `cue member list` shows them"
        ))
        .into());
    }
    let records = s.ws.rotations()?;
    let secret = key::ensure_member_secret(&layout)?;
    let mut refused = Vec::new();
    if let Step::Move { epoch, .. } = next_step(&records, &old, &me, &secret, &mut refused) {
        return Err(UsageError(format!(
            "the workspace already moved to key epoch {epoch} and this peer has not followed yet; start `cue sync start` (or `cue watch --sync`) once, then retry"
        ))
        .into());
    }
    let epoch = epoch_of(&records, &old) + 1;
    let mut recipients = Vec::new();
    let mut keyless = Vec::new();
    for (member, _) in &joined {
        if member == name {
            continue;
        }
        match keys
            .iter()
            .find(|(n, _)| n == member)
            .and_then(|(_, k)| MemberPublic::parse(k))
        {
            Some(k) => recipients.push((member.clone(), k)),
            None => keyless.push(member.clone()),
        }
    }
    for (member, text) in &keys {
        if member != name && !recipients.iter().any(|(n, _)| n == member) {
            match MemberPublic::parse(text) {
                Some(k) => recipients.push((member.clone(), k)),
                None => keyless.push(member.clone()),
            }
        }
    }
    keyless.sort();
    keyless.dedup();
    let (record, new_key) = Rotation::create(
        &old,
        epoch,
        disk::now_ms(),
        &me,
        name,
        &recipients,
        &mut rand::rng(),
    )
    .context("making the rotation record")?;
    s.ws.add_rotation(epoch, &record, name, disk::now_ms())
        .context("writing the rotation record into the index")?;
    key::rotate_key(&layout, &old, &new_key)?;
    println!(
        "Removed {name}: the workspace moved to a new key (epoch {epoch}), sealed to {} member(s): {}.",
        recipients.len(),
        recipients
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !keyless.is_empty() {
        println!(
            "No key published by: {} (they never ran this version of cue); they need a new invite (`cue sync invite`).",
            keyless.join(", ")
        );
    }
    match super::status::running_pid(&layout) {
        Some(_) => println!(
            "The running sync daemon sends the record to the old room and moves to the new one; members follow when they next connect."
        ),
        None => println!(
            "Start the sync daemon (`cue sync start`): it hands the record to members in the old room, who then follow."
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> MemberSecret {
        MemberSecret::from_bytes([b; 32])
    }

    #[test]
    fn members_follow_one_epoch_at_a_time_and_refuse_forged_records() {
        let mut rng = rand::rng();
        let k0 = WorkspaceKey::from_bytes([1; 32]);
        let (alice, bob, carol) = (secret(1), secret(2), secret(3));
        let all = vec![
            ("alice".to_string(), alice.public()),
            ("bob".to_string(), bob.public()),
        ];
        let (r1, k1) = Rotation::create(&k0, 1, 10, "alice", "carol", &all, &mut rng)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut records = vec![(1, r1.clone())];
        let mut refused = Vec::new();
        match next_step(&records, &k0, "bob", &bob, &mut refused) {
            Step::Move { key, epoch: 1, .. } => assert_eq!(key, k1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            next_step(&records, &k0, "carol", &carol, &mut refused),
            Step::Removed { epoch: 1, .. }
        ));
        // Once on k1, record 1 is history.
        assert!(matches!(
            next_step(&records, &k1, "bob", &bob, &mut refused),
            Step::Stay
        ));
        assert_eq!(epoch_of(&records, &k1), 1);
        assert!(refused.is_empty(), "{refused:?}");

        // A record for epoch 2 made by someone without k1 (carol, who kept
        // only k0, or a stranger): refused with one line, nobody moves.
        let (forged, _) = Rotation::create(&k0, 2, 20, "carol", "alice", &all, &mut rng)
            .unwrap_or_else(|e| panic!("{e}"));
        records.push((2, forged));
        records.push((3, b"garbage".to_vec()));
        assert!(matches!(
            next_step(&records, &k1, "bob", &bob, &mut refused),
            Step::Stay
        ));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("not made by a holder"), "{refused:?}");
        assert!(!refused[0].contains('\n'));
    }
}
