//! Rendering after a delta: the lines of the few addresses a change can reach are planned
//! again and spliced into the agent's part before it, piece by piece, sharing every piece they
//! do not fall in (`Text`'s pieces). Pure, like the rest of `render`.

use std::collections::BTreeMap;
use std::sync::Arc;

use proto::plan::Affected;
use proto::{Planner, addr};

use super::{
    ADDRESS_FILES, AgentMaps, AgentPart, Lines, PIECE, RenderError, Text, render_agent_in,
};
use crate::store::Counts;

/// The address a map line is for: up to the first space, `:` or end of line (none of which a
/// valid address holds).
pub(super) fn line_address(line: &str) -> &str {
    let end = line
        .bytes()
        .position(|b| matches!(b, b' ' | b':' | b'\n'))
        .unwrap_or(line.len());
    &line[..end]
}

/// `old` (one agent's lines of one file, sorted by address) without the lines of the addresses
/// in `doomed` (sorted), merged with `new` (those addresses' lines now, sorted). The lines
/// between are copied in runs found by binary search, not looked at one by one. `gone` is called
/// with each line left out. `None` when `new` has a line for an address not in `doomed`.
pub(super) fn merge(
    old: &str,
    new: &str,
    doomed: &[String],
    mut gone: impl FnMut(&str, &str),
) -> Option<String> {
    let mut out = String::with_capacity(old.len() + new.len());
    let mut fresh = new.split_inclusive('\n').peekable();
    let mut at = 0;
    for address in doomed {
        let start = at + seek(&old[at..], address);
        out.push_str(&old[at..start]);
        at = start;
        for line in old[start..].split_inclusive('\n') {
            if line_address(line) != address {
                break;
            }
            gone(address, line);
            at += line.len();
        }
        while let Some(n) = fresh.next_if(|n| line_address(n) == address) {
            out.push_str(n);
        }
    }
    out.push_str(&old[at..]);
    fresh.next().is_none().then_some(out)
}

/// [`merge`] over the pieces of `old`: the doomed addresses and new lines are handed to the
/// piece whose addresses they fall among, and only those pieces are merged (and cut again when
/// they grew past twice `piece` bytes); every other piece is shared with `old`.
pub(super) fn merge_pieces(
    old: &Text,
    new: &str,
    doomed: &[String],
    piece: usize,
    mut gone: impl FnMut(&str, &str),
) -> Option<Text> {
    // Piece `k` holds the addresses from its first one up to the next piece's first one.
    let firsts: Vec<&str> = old.pieces.iter().map(|p| line_address(p)).collect();
    let fresh: Vec<&str> = new.split_inclusive('\n').collect();
    let mut out = Vec::with_capacity(old.pieces.len() + 1);
    let (mut d, mut f, mut copied) = (0, 0, 0);
    loop {
        let next = match (doomed.get(d), fresh.get(f)) {
            (None, None) => break,
            (Some(a), None) => a.as_str(),
            (None, Some(l)) => line_address(l),
            (Some(a), Some(l)) => a.as_str().min(line_address(l)),
        };
        let k = firsts.partition_point(|x| *x <= next).saturating_sub(1);
        out.extend(old.pieces[copied.min(k)..k].iter().cloned());
        let below_next_piece = |a: &str| firsts.get(k + 1).is_none_or(|e| a < *e);
        let d_end = d + doomed[d..].partition_point(|a| below_next_piece(a));
        let f_end = f + fresh[f..].partition_point(|l| below_next_piece(line_address(l)));
        let text = old.pieces.get(k).map_or("", |p| p.as_str());
        let merged = merge(
            text,
            &fresh[f..f_end].concat(),
            &doomed[d..d_end],
            &mut gone,
        )?;
        match old.pieces.get(k) {
            // Its addresses planned again to the same lines: the piece is kept, so that a file
            // whose pieces are all kept is known to be unchanged (`Rendered::same_file`).
            Some(p) if **p == merged => out.push(Arc::clone(p)),
            _ => cut(merged, piece, &mut out),
        }
        (d, f, copied) = (d_end, f_end, k + 1);
    }
    out.extend(old.pieces[copied.min(old.pieces.len())..].iter().cloned());
    Some(Text { pieces: out })
}

/// Appends `text` (lines sorted by address) to `out` as one piece, or as pieces of about
/// `piece` bytes when it holds more than twice that; never between two lines of one address.
pub(super) fn cut(text: String, piece: usize, out: &mut Vec<Arc<String>>) {
    if text.len() < 2 * piece {
        if !text.is_empty() {
            out.push(Arc::new(text));
        }
        return;
    }
    let (mut start, mut at, mut last) = (0, 0, None);
    for line in text.split_inclusive('\n') {
        let address = line_address(line);
        if at - start >= piece && last != Some(address) {
            out.push(Arc::new(text[start..at].to_string()));
            start = at;
        }
        last = Some(address);
        at += line.len();
    }
    out.push(Arc::new(text[start..].to_string()));
}

/// The offset of the first line of `text` (lines sorted by address) whose address is not below
/// `address`: a binary search over bytes, each probe moved back to the start of its line.
pub(super) fn seek(text: &str, address: &str) -> usize {
    let b = text.as_bytes();
    // Lines before `lo` are below `address`; the line at `hi` (a line start, or the end) is not.
    let (mut lo, mut hi) = (0, b.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let start = b[lo..mid]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(lo, |i| lo + i + 1);
        let line = &text[start..];
        if line_address(line) < address {
            lo = line.find('\n').map_or(b.len(), |i| start + i + 1);
        } else {
            hi = start;
        }
    }
    lo
}

/// Like [`render_agent`], after a delta: `old` is this agent's part for the content the delta
/// was applied to, and `affected` (closed over `a.content`) names every address whose plan can
/// have changed. Only those are planned; their old lines are replaced in a copy of `old`. The
/// result equals what [`render_agent`] gives (property-tested); when `old` was rendered without
/// a file that tells the classes apart, everything is planned.
pub fn render_agent_affected(
    a: &AgentMaps<'_>,
    formats: &[String],
    old: &AgentPart,
    affected: &Affected,
) -> Result<AgentPart, RenderError> {
    render_agent_affected_in(a, formats, old, affected, PIECE)
}

/// [`render_agent_affected`] cutting grown pieces at `piece` bytes.
pub(super) fn render_agent_affected_in(
    a: &AgentMaps<'_>,
    formats: &[String],
    old: &AgentPart,
    affected: &Affected,
    piece: usize,
) -> Result<AgentPart, RenderError> {
    // The counts of the old lines that go: every address has a line in a recipients file, and
    // a forward or split one a line in a forward file, whose targets at served domains (units
    // on the primary) tell a split from a forward.
    let recipients = ["postfix/relay_recipients", "exim/recipients"]
        .into_iter()
        .find(|n| old.files.contains_key(n));
    let forwards = ["postfix/virtual", "exim/forward"]
        .into_iter()
        .find(|n| old.files.contains_key(n));
    let (Some(recipients), Some(forwards)) = (recipients, forwards) else {
        return render_agent_in(a, formats, piece);
    };
    let mut lines = Lines::new(a.id, formats, usize::MAX);
    (Planner::sparse(a.content).without_reasons()).plan_affected(affected, |p| lines.add(p));
    if let Some(e) = lines.error.take() {
        return Err(e);
    }
    let counts_new = lines.counts;
    let new_lines = lines.finish().map(|t| t.map(|t| t.to_string()));
    // Every line is for an address at a served domain.
    let mut doomed: Vec<String> = affected
        .names()
        .iter()
        .flat_map(|n| a.content.domains.iter().map(move |d| format!("{n}@{d}")))
        .collect();
    doomed.sort_unstable();
    let served = |t: &str| {
        addr::split(t).is_some_and(|(_, d)| {
            a.content
                .domains
                .binary_search_by(|x| x.as_str().cmp(d))
                .is_ok()
        })
    };
    // What the lines that go counted: addresses, forwards, splits.
    let mut gone = [0u64; 3];
    let mut files: BTreeMap<&'static str, Text> = old
        .files
        .iter()
        .filter(|(n, _)| !ADDRESS_FILES.contains(n))
        .map(|(n, b)| (*n, b.clone()))
        .collect();
    for (name, new) in ADDRESS_FILES.into_iter().zip(&new_lines) {
        let (Some(new), Some(old)) = (new, old.files.get(name)) else {
            continue;
        };
        let merged = merge_pieces(old, new, &doomed, piece, |address, line| {
            if name == recipients {
                gone[0] += 1;
            } else if name == forwards {
                let targets = line[address.len()..].trim_start_matches(':');
                let split = targets.split(',').any(|t| served(t.trim()));
                gone[if split { 2 } else { 1 }] += 1;
            }
        });
        let Some(merged) = merged else {
            return render_agent_in(a, formats, piece);
        };
        files.insert(name, merged);
    }
    let (o, n) = (old.counts, counts_new);
    let counts = (|| {
        let punt_gone = gone[0].checked_sub(gone[1] + gone[2])?;
        Some(Counts {
            addresses: o.addresses.checked_sub(gone[0])? + n.addresses,
            forward: o.forward.checked_sub(gone[1])? + n.forward,
            split: o.split.checked_sub(gone[2])? + n.split,
            punt: o.punt.checked_sub(punt_gone)? + n.punt,
        })
    })();
    // Counts that do not add up mean `old` is not what this content's base rendered to.
    let Some(counts) = counts else {
        return render_agent_in(a, formats, piece);
    };
    Ok(AgentPart { files, counts })
}
