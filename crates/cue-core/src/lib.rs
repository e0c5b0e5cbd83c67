//! The sans-IO core of CueDeck Sync.
//!
//! Everything that decides what a workspace *is* lives here: the CRDT documents
//! (an index document plus one automerge document per file), the merge rules,
//! turning files into document edits and documents back into file bytes, the
//! offline bundle format and the derived activity log. Nothing in this crate
//! touches a socket, a clock or the file system: time and randomness come in as
//! arguments and storage sits behind the [`store::Store`] trait, so the same code
//! runs in the `cue` binary and in a seeded, deterministic simulation.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

pub mod bundle;
pub mod diff;
pub mod disk;
pub mod doc;
pub mod frontmatter;
pub mod guard;
pub mod ids;
pub mod limits;
mod parallel;
pub mod path;
pub mod store;
pub mod sync;
pub mod workspace;

pub use ids::{FileId, WorkspaceId};
pub use path::{PathError, SyncPath};
pub use workspace::{Workspace, WorkspaceError};
