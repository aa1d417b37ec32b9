//! Pieces and threads: results come back in order, panics are passed on, cuts cover each item once.

use super::{beside, cuts};

#[test]
fn both_results_come_back_in_order_and_a_panic_is_passed_on() {
    let data: Vec<u32> = (0..1000).collect();
    let (a, b) = data.split_at(400);
    let (x, y) = beside(|| a.iter().sum::<u32>(), || b.iter().sum::<u32>());
    assert_eq!((x, y), ((0..400).sum(), (400..1000).sum()));
    let other = std::panic::catch_unwind(|| beside(|| 1, || -> u32 { panic!("second") }));
    assert!(other.is_err());
    let mine = std::panic::catch_unwind(|| beside(|| -> u32 { panic!("first") }, || 2));
    assert!(mine.is_err());
}

#[test]
fn cuts_cover_every_item_once_in_order() {
    let check = |len: usize, n: usize, expected: &[(usize, usize)]| {
        let got: Vec<_> = cuts(len, n).map(|r| (r.start, r.end)).collect();
        assert_eq!(got, expected, "{len} in {n}");
    };
    check(0, 3, &[]);
    check(1, 3, &[(0, 1)]);
    check(10, 1, &[(0, 10)]);
    check(10, 0, &[(0, 10)]);
    check(10, 3, &[(0, 3), (3, 6), (6, 10)]);
    check(3, 5, &[(0, 1), (1, 2), (2, 3)]);
}
