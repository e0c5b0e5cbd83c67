//! End-to-end tests: the real `cue` binary on real folders, and for live
//! sync, real `cue watch --sync` daemons talking through a real `cue-relay`.

mod testkit;

mod bad_input;
mod chaos;
mod exchange;
mod hostile;
mod hostilekit;
mod live;
mod livekit;
mod members;
mod secrets;
