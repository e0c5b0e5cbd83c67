//! Live sync between peers through a relay, with no I/O: the sealed envelope,
//! the protocol messages, and the engine that decides what to send.

mod beacon;
mod engine;
pub mod members;
pub mod message;
pub mod seal;

pub use beacon::Beacon;
pub use engine::{Output, SyncEngine, SyncProblem, SyncStatus, HEARTBEAT_MS, LAST_SYNC_META};
pub use members::{MemberPublic, MemberSecret, Rotation, RotationError};
pub use message::{Message, MessageError};
pub use seal::{SealError, Sealer, WorkspaceKey};
