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
mod tests;
