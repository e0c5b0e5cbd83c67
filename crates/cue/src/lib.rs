//! The `cue` client as a library: the SQLite store, the disk layer and the
//! commands, so that benchmarks and tests can drive them in-process. The
//! binary (`main.rs`) is only argument parsing and exit codes.

pub mod commands;
pub mod config;
pub mod disk;
pub mod session;
pub mod store;
pub mod sync;

/// Makes glibc's malloc hand large freed memory back to the OS, without
/// paying for it on every document. With its adaptive defaults, the large
/// short-lived buffers automerge allocates while encoding documents are kept
/// by the allocator: a 1,000-file import peaked at 397 MB with the defaults
/// and 43 MB with both thresholds at 128 KiB. But at 128 KiB the heap was
/// trimmed and faulted back in for every document built (page faults, munmap
/// and realloc copies were 30% of a 10,000-file `cue init` in `perf`), so
/// blocks over 1 MiB are mapped on their own and the heap keeps up to 16 MiB
/// of free top: `cue init` of 10,000 notes went from 26 s to 18 s for 3 MB
/// more peak RSS.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called once at start-up.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 * 1024 * 1024);
    }
}
