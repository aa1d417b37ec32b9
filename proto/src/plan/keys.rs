//! The addresses to plan, in address order: every valid recipient at the served domains with
//! the entries its local part names, sorted without building a string per address.

use super::names::{self, Named};
use super::{Served, cmp_addr};
use crate::addr;
use crate::snapshot::Content;

/// A valid address to plan: `(local, domain)` borrowed from the content, and the entries its
/// local part names.
#[derive(Clone, Copy)]
pub(super) struct Key<'a> {
    pub(super) addr: (&'a str, &'a str),
    pub(super) named: Named,
}

/// Every valid recipient, sorted as the strings `local@domain` sort, without duplicates. The
/// entries each local part names come from merging the lists it was gathered from, so planning
/// a key looks nothing up to begin (validated content names each entry once). The local names
/// of normalized content come in order from its sorted lists ([`locals_in_address_order`]);
/// only its full addresses, and any other content's keys, are sorted (at a million aliases the
/// sort was a tenth of planning's wall time, on both cores, before the runs begin).
pub(super) fn keys(c: &Content) -> Vec<Key<'_>> {
    let domains = Served::of(c);
    // A full address's local part is in the local names (at every served domain) when it names
    // any entry, and its key then merges with that one.
    let served = |k: &(&str, &str)| domains.contains(k.1);
    let full = |addr| Key {
        addr,
        named: Named::NOTHING,
    };
    let mut fulls: Vec<Key<'_>> = (c.virtuals.iter())
        .filter_map(|v| addr::split(&v.key))
        .filter(served)
        .map(full)
        .collect();
    fulls.extend(
        (c.recipients.iter())
            .filter_map(|r| addr::split(&r.address))
            .filter(served)
            .map(full),
    );
    let mut ds: Vec<&str> = c.domains.iter().map(String::as_str).collect();
    ds.sort_unstable();
    ds.dedup();
    let mut out = Vec::with_capacity(ds.len() * (c.aliases.len() + c.users.len()));
    // Normalized content: its local names at each domain come in order without a sort.
    let merged = locals_in_address_order(c, |name, named| {
        out.extend(ds.iter().map(|&d| Key {
            addr: (name, d),
            named,
        }))
    });
    let mut out = if !merged {
        sorted_keys(c, fulls)
    } else if fulls.is_empty() {
        out
    } else {
        sort_keys(&mut fulls);
        crate::order::merged(out, fulls, |x, y| cmp_addr(x.addr, y.addr)).collect()
    };
    out.dedup_by(|later, kept| {
        let same = later.addr == kept.addr;
        if same {
            kept.named = kept.named.and(later.named);
        }
        same
    });
    out
}

/// [`keys`] before the duplicates are merged, for any content: every local name at every
/// served domain and the full addresses `fulls`, sorted.
pub(super) fn sorted_keys<'a>(c: &'a Content, mut fulls: Vec<Key<'a>>) -> Vec<Key<'a>> {
    let mut out = Vec::with_capacity(c.domains.len() * (c.aliases.len() + c.users.len()));
    for d in &c.domains {
        let d = d.as_str();
        out.extend(names::local_names(c).map(|(name, named)| Key {
            addr: (name, d),
            named,
        }));
    }
    out.append(&mut fulls);
    sort_keys(&mut out);
    out
}

/// Gives `out` the local names of `c` (alias names, user names, bare virtual keys, each once
/// with every entry it names) in the order of their addresses at one domain, when each of
/// those lists is sorted without repeats, as in normalized content (and says so); otherwise
/// gives it nothing and returns false.
///
/// Names in byte order are almost in address order: `name@...` orders as `name` does except
/// where one name begins another and the longer one goes on with a byte below `@` (`a1` before
/// `a10` as names, `a10@` before `a1@` as addresses). So each name waits on a stack while the
/// names after it begin with it and go on below `@`, and comes out before the first that does
/// not, longest waiting first: one pass, no sort.
pub(super) fn locals_in_address_order<'a>(
    c: &'a Content,
    mut out: impl FnMut(&'a str, Named),
) -> bool {
    use std::cmp::Ordering;
    let strictly = |a: &str, b: &str| a < b;
    if !(c.aliases.is_sorted_by(|a, b| strictly(&a.name, &b.name))
        && c.users.is_sorted_by(|a, b| strictly(&a.name, &b.name))
        && c.virtuals.is_sorted_by(|a, b| strictly(&a.key, &b.key)))
    {
        return false;
    }
    // Users and bare virtual keys (most names are aliases'), merged first.
    let users = (c.users.iter().enumerate()).map(|(i, u)| {
        let named = Named::new(None, Some(i), None).procmail(u.procmail.is_some());
        (u.name.as_str(), named)
    });
    let bare = (c.virtuals.iter().enumerate())
        .filter(|(_, v)| !v.key.contains('@'))
        .map(|(i, v)| (v.key.as_str(), Named::new(None, None, Some(i))));
    let others = merge_names(users.collect(), bare.collect());
    let aliases = (c.aliases.iter().enumerate())
        .map(|(i, a)| (a.name.as_str(), Named::new(Some(i), None, None)));
    let mut waiting: Vec<(&'a str, Named)> = Vec::new();
    let mut emit = |name: &'a str, named| {
        while let Some(&(w, n)) = waiting.last() {
            let below_at = name.len() > w.len()
                && name.as_bytes().starts_with(w.as_bytes())
                && name.as_bytes()[w.len()] < b'@';
            if below_at {
                break;
            }
            out(w, n);
            waiting.pop();
        }
        waiting.push((name, named));
    };
    let mut o = 0;
    for (name, mut named) in aliases {
        while let Some(&(other, n)) = others.get(o) {
            match other.cmp(name) {
                Ordering::Less => emit(other, n),
                Ordering::Equal => named = named.and(n),
                Ordering::Greater => break,
            }
            o += 1;
        }
        emit(name, named);
    }
    for &(other, n) in &others[o..] {
        emit(other, n);
    }
    for (w, n) in waiting.into_iter().rev() {
        out(w, n);
    }
    true
}

/// Two lists of names in byte order, merged into one in that order, a name in both once with
/// what it names in each.
fn merge_names<'a>(a: Vec<(&'a str, Named)>, b: Vec<(&'a str, Named)>) -> Vec<(&'a str, Named)> {
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while let (Some(&(x, nx)), Some(&(y, ny))) = (a.peek(), b.peek()) {
        match x.cmp(y) {
            std::cmp::Ordering::Less => out.extend(a.next()),
            std::cmp::Ordering::Greater => out.extend(b.next()),
            std::cmp::Ordering::Equal => {
                out.push((x, nx.and(ny)));
                a.next();
                b.next();
            }
        }
    }
    out.extend(a.chain(b));
    out
}

/// Sorts `keys` by address, on every thread of the pool when there are many (at a million keys
/// sorting was a tenth of planning, before the runs begin). Each key is sorted
/// with the first eight bytes of its address as a number first ([`head`]), so that most comparisons
/// compare two numbers and not two pairs of strings.
pub(super) fn sort_keys(keys: &mut Vec<Key<'_>>) {
    // The sort moves (head, place) pairs of 16 bytes, not keys; the keys are then taken in order.
    let order: Vec<(u64, u32)> = (keys.iter().enumerate())
        .map(|(i, k)| {
            (
                head(k.addr),
                u32::try_from(i).expect("fewer than 2^32 keys"),
            )
        })
        .collect();
    let addr = |i: u32| keys[i as usize].addr;
    let cmp = |&(h, i): &(u64, u32), &(g, j): &(u64, u32)| {
        (h.cmp(&g)).then_with(|| cmp_addr(addr(i), addr(j)))
    };
    let sorted: Vec<Key<'_>> = (crate::order::sorted(order, cmp, crate::par::LEAST_ITEMS))
        .map(|(_, i)| keys[i as usize])
        .collect();
    *keys = sorted;
}

/// The first eight bytes of the string `local@domain` as a number ([`crate::order::head`]).
pub(super) fn head((local, domain): (&str, &str)) -> u64 {
    // Copied in slices: a byte iterator over the three parts took about 75 instructions a key.
    let mut b = [0u8; 8];
    let l = local.len().min(8);
    b[..l].copy_from_slice(&local.as_bytes()[..l]);
    if l < 8 {
        b[l] = b'@';
        let d = domain.len().min(7 - l);
        b[l + 1..l + 1 + d].copy_from_slice(&domain.as_bytes()[..d]);
    }
    u64::from_be_bytes(b)
}

/// Every valid recipient at a served domain, sorted: alias names and users at every served
/// domain, virtual keys, recipient-list entries.
pub fn valid_addresses(c: &Content) -> Vec<String> {
    keys(c)
        .into_iter()
        .map(|k| format!("{}@{}", k.addr.0, k.addr.1))
        .collect()
}

/// How many valid recipients `c` has (for the shrink guard).
pub fn address_count(c: &Content) -> usize {
    keys(c).len()
}
