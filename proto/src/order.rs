//! Sorting many strings quickly: each is first ordered by its first eight bytes read as a number,
//! so that most comparisons of a large sort compare two numbers and read no string, and a large
//! list is sorted on every thread of the pool.

/// The first eight of `bytes`, zero-padded, as a big-endian number. Two byte strings whose heads
/// differ are ordered as their heads are (where one ends first, its padding is below the other's
/// byte, or equal to a zero byte, which then decides nothing); equal heads say nothing.
pub(crate) fn head(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut b = [0u8; 8];
    for (slot, byte) in b.iter_mut().zip(bytes) {
        *slot = byte;
    }
    u64::from_be_bytes(b)
}

/// `v` in the order of `cmp`, sorted on every thread of the pool when it has at least
/// `parallel` items. Items `cmp` finds equal come in no set order: a total order (such as one
/// ending with each item's place) gives the stable result.
pub(crate) fn sorted<T: Send>(
    mut v: Vec<T>,
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering + Sync,
    parallel: usize,
) -> impl Iterator<Item = T> {
    if v.len() >= parallel.max(2) {
        rayon::slice::ParallelSliceMut::par_sort_unstable_by(&mut v[..], cmp);
    } else {
        v.sort_unstable_by(cmp);
    }
    v.into_iter()
}

/// Two lists each in the order of `cmp`, merged as they are taken into one in that order; of
/// items `cmp` finds equal, `a`'s come first.
pub(crate) fn merged<T>(
    a: Vec<T>,
    b: Vec<T>,
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> impl Iterator<Item = T> {
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if cmp(y, x).is_lt() => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

#[cfg(test)]
mod tests {
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
}
