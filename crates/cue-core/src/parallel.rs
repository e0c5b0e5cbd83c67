//! Work spread over every core: building or loading many documents at once
//! (an import, a burst of new notes, a newcomer's first fill). Results come
//! back in input order, so what happens next does not depend on scheduling.

/// Items per thread in one round: enough to keep every core busy, few enough
/// that the documents of one round stay small in memory.
pub(crate) const GROUP: usize = 32;

/// `f` applied to each item, on up to every core, in input order. A panic
/// in `f` (a bug inside automerge, say) becomes `on_panic()` for the items
/// of that thread instead of taking the process down.
pub(crate) fn map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
    on_panic: impl Fn() -> R,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    if items.len() < 4 || threads == 1 {
        return items.iter().map(&f).collect();
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|chunk| {
                (
                    chunk.len(),
                    scope.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()),
                )
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join()
                    .unwrap_or_else(|_| (0..n).map(|_| on_panic()).collect())
            })
            .collect()
    })
}

/// How many items one round of [`map`] takes, to bound memory.
pub(crate) fn round() -> usize {
    GROUP
        * std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8)
}
