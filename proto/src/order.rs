//! Sorting many strings quickly: each is first ordered by its first eight bytes read as a number,
//! so that most comparisons of a large sort compare two numbers and read no string.

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

#[cfg(test)]
mod tests {
    use super::head;
    use proptest::prelude::*;

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
