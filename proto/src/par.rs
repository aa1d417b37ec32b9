//! Two pieces of work side by side, for the steps that split a million entries in halves.

/// Runs `first` on this thread and `second` on another, and returns both results. A panic in
/// either is passed on here, once both have ended.
pub fn join<A, B: Send>(first: impl FnOnce() -> A, second: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|s| {
        let other = s.spawn(second);
        let mine = first();
        let theirs = other
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (mine, theirs)
    })
}

#[cfg(test)]
mod tests {
    use super::join;

    #[test]
    fn both_results_come_back_in_order_and_a_panic_is_passed_on() {
        let data: Vec<u32> = (0..1000).collect();
        let (a, b) = data.split_at(400);
        let (x, y) = join(|| a.iter().sum::<u32>(), || b.iter().sum::<u32>());
        assert_eq!((x, y), ((0..400).sum(), (400..1000).sum()));
        let other = std::panic::catch_unwind(|| join(|| 1, || -> u32 { panic!("second") }));
        assert!(other.is_err());
        let mine = std::panic::catch_unwind(|| join(|| -> u32 { panic!("first") }, || 2));
        assert!(mine.is_err());
    }
}
