//! Sorting by heads, on one thread or many, gives the plain sort.

use super::{head, sorted};
use proptest::prelude::*;

#[test]
fn sorting_in_parallel_gives_the_plain_sort() {
    let check = |v: Vec<(u8, u32)>| {
        let cmp = |x: &(u8, u32), y: &(u8, u32)| x.cmp(y);
        let mut want = v.clone();
        want.sort();
        for parallel in [0, 2, 3, usize::MAX] {
            let got: Vec<_> = sorted(v.clone(), cmp, parallel).collect();
            assert_eq!(got, want, "{v:?} from {parallel}");
        }
    };
    check(vec![]);
    check(vec![(1, 0)]);
    check(vec![(2, 0), (1, 1)]);
    check(vec![(3, 0), (1, 1), (2, 2), (1, 3), (0, 4)]);
    check((0..50u32).map(|i| ((i * 7 % 13) as u8, i)).collect());
    check((0..50u32).rev().map(|i| (0, i)).collect());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Different heads order two strings as the strings order; only equal heads leave it open.
    #[test]
    fn heads_that_differ_order_as_the_strings_do(
        a in prop::collection::vec(prop::sample::select(vec![0u8, 1, b'@', b'a', 0xff]), 0..11),
        b in prop::collection::vec(prop::sample::select(vec![0u8, 1, b'@', b'a', 0xff]), 0..11),
    ) {
        let (ha, hb) = (head(a.iter().copied()), head(b.iter().copied()));
        if ha != hb {
            prop_assert_eq!(ha.cmp(&hb), a.cmp(&b), "{:?} {:?}", a, b);
        }
    }
}
