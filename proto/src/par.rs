//! How the work uses the machine's cores, one policy for every step:
//! - a step over many items (parse, copy, sort, merge, decode, plan, compress) is cut into
//!   [`pieces`], one per thread of rayon's pool (as many as the machine has cores;
//!   `RAYON_NUM_THREADS` sets it), none smaller than [`LEAST_ITEMS`] or [`LEAST_BYTES`], since
//!   below that a thread costs more than it saves;
//! - two different jobs that overlap (one producing what the other consumes, or I/O beside
//!   work) run [`beside`] each other on two threads, whatever the pool's size, and I/O that
//!   takes its jobs from a queue runs [`on_threads`] of its own.

use std::ops::Range;

/// The fewest entries (aliases, lines, keys) worth a piece of their own.
pub const LEAST_ITEMS: usize = 50_000;
/// The fewest bytes (of a file or a body) worth a piece of their own.
pub const LEAST_BYTES: usize = 2 << 20;

/// The threads a step may use: the size of rayon's pool.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// How many pieces to cut `len` items into: one per thread, each of at least `least`.
pub fn pieces(len: usize, least: usize) -> usize {
    (len / least.max(1)).clamp(1, threads())
}

/// `0..len` cut into `n` ranges of about the same length, in order (none when `len` is 0).
pub fn cuts(len: usize, n: usize) -> impl Iterator<Item = Range<usize>> {
    let n = n.clamp(1, len.max(1));
    (0..n)
        .map(move |i| len * i / n..len * (i + 1) / n)
        .filter(|r| !r.is_empty())
}

/// Runs `first` on this thread and `second` on another, and returns both results. A panic in
/// either is passed on here, once both have ended.
pub fn beside<A, B: Send>(first: impl FnOnce() -> A, second: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|s| {
        let other = s.spawn(second);
        let mine = first();
        let theirs = other
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (mine, theirs)
    })
}

/// Runs `work` on `n` threads at once (at least one: this one), and returns what each gave:
/// for I/O-bound work that takes its jobs from a shared queue, which rayon's pool (sized for
/// computing) should not be blocked by.
pub fn on_threads<R: Send>(n: usize, work: impl Fn() -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let others: Vec<_> = (1..n.max(1)).map(|_| s.spawn(&work)).collect();
        let mut out = vec![work()];
        for h in others {
            out.push(
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        out
    })
}

#[cfg(test)]
mod tests;
