//! Parsing an aliases file again only where it changed: the bytes both versions share at the
//! start and the end are not read again, and the span between, widened to whole entries, is
//! parsed and spliced into the entries of the version before.

use super::*;

/// An aliases file as last parsed, so that its next version is parsed again only where it
/// changed (the agent watching a large file). [`AliasesFile::update`] gives exactly what
/// [`parse_aliases`] gives on the new bytes (property-tested), up to the order of diagnostics.
///
/// How: the bytes both versions share at the start and at the end are not read again. The span
/// between is widened to whole entries: back to a line that starts an entry in both versions
/// (its first byte is not blank and not `#`, so it opens a new logical line whatever came
/// before), and forward to the next such line. Only that span is parsed; the entries before it
/// are kept, and those after it are kept with their line numbers moved.
#[derive(Debug, Default, Clone)]
pub struct AliasesFile {
    file: String,
    bytes: Vec<u8>,
    entries: Vec<ParsedAlias>,
    diags: Vec<Diagnostic>,
}

/// Whether a line begins at `at` and starts an entry whatever precedes it.
pub(in crate::parse) fn opens_entry(bytes: &[u8], at: usize) -> bool {
    let begins_line = at == 0 || bytes.get(at - 1) == Some(&b'\n');
    begins_line
        && bytes
            .get(at)
            .is_some_and(|&b| !is_blank_byte(b) && b != b'#' && b != b'\n')
}

/// Compared a block at a time (a memcmp each), then byte by byte in the block that differs: a
/// byte loop over a 50 MB file takes tens of milliseconds.
const BLOCK: usize = 4096;

/// How many leading bytes `a` and `b` share.
pub(in crate::parse) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut at = 0;
    while at + BLOCK <= n && a[at..at + BLOCK] == b[at..at + BLOCK] {
        at += BLOCK;
    }
    at + (a[at..n].iter().zip(&b[at..n]))
        .take_while(|(x, y)| x == y)
        .count()
}

/// How many trailing bytes `a` and `b` share.
pub(in crate::parse) fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut at = n;
    while at >= BLOCK && a[at - BLOCK..at] == b[at - BLOCK..at] {
        at -= BLOCK;
    }
    n - at
        + (a[..at].iter().rev().zip(b[..at].iter().rev()))
            .take_while(|(x, y)| x == y)
            .count()
}

/// How many newlines `bytes` holds: counted 64 bytes at a time into a byte, which the compiler
/// turns into a few vector instructions per block (a plain filter and count takes three times as
/// long: 26 ms over a 50 MB file, where an edit at its end counts every line before it).
pub(in crate::parse) fn newlines(bytes: &[u8]) -> u32 {
    let mut blocks = bytes.chunks_exact(64);
    let mut n: u32 = 0;
    for b in &mut blocks {
        n += u32::from(b.iter().fold(0u8, |k, &c| k + u8::from(c == b'\n')));
    }
    n + blocks.remainder().iter().filter(|&&c| c == b'\n').count() as u32
}

impl AliasesFile {
    /// Parses `bytes` as the aliases file `file`.
    pub fn parse(file: &str, bytes: Vec<u8>) -> Self {
        let mut diags = Vec::new();
        let entries = parse_aliases(&bytes, file, &mut diags);
        AliasesFile {
            file: file.to_string(),
            bytes,
            entries,
            diags,
        }
    }

    /// The entries, in file order (duplicates included, as [`parse_aliases`] gives them).
    pub fn entries(&self) -> &[ParsedAlias] {
        &self.entries
    }

    /// What was found wrong.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diags
    }

    /// Replaces the content with `bytes`, parsing only the entries that changed, and says what
    /// it replaced.
    pub fn update(&mut self, bytes: Vec<u8>) -> Splice {
        let (old, new) = (&self.bytes, &bytes);
        let prefix = common_prefix(old, new);
        if prefix == old.len() && prefix == new.len() {
            return Splice::default();
        }
        let max = old.len().min(new.len());
        let suffix = common_suffix(&old[prefix..], &new[prefix..]).min(max - prefix);
        // Back to a line that opens an entry in both (before `prefix` the bytes are the same).
        let line_start = |at: usize| {
            new[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
        };
        let mut start = line_start(prefix);
        while start > 0 && !(opens_entry(old, start) && opens_entry(new, start)) {
            start = line_start(start - 1);
        }
        // Forward to a line that opens an entry in both, or the end (from `old_end` in the old
        // bytes and `new_end` in the new ones, the bytes are the same).
        let (old_end, new_end) = (old.len() - suffix, new.len() - suffix);
        let mut end = old_end;
        while end < old.len() {
            if opens_entry(old, end) && opens_entry(new, end - old_end + new_end) {
                break;
            }
            end = match old[end..].iter().position(|&b| b == b'\n') {
                Some(i) => end + i + 1,
                None => old.len(),
            };
        }
        let new_stop = end - old_end + new_end;
        let first = newlines(&new[..start]) + 1;
        // At the end of the file the span takes every line left (the last may have no newline).
        let at_end = end == old.len();
        let old_after = if at_end {
            u32::MAX
        } else {
            first + newlines(&old[start..end])
        };
        let new_after = first + newlines(&new[start..new_stop]);
        // The span, parsed alone, with its line numbers moved to where it starts.
        let mut diags = Vec::new();
        let mut mid = parse_aliases(&new[start..new_stop], &self.file, &mut diags);
        let by = i64::from(first) - 1;
        mid.iter_mut().for_each(|e| move_entry(e, by));
        diags.iter_mut().for_each(|d| d.line = moved(d.line, by));
        let parsed = new_stop - start;
        // Entries before the span end before it; those after it start at or after its end.
        let lo = self.entries.partition_point(|e| e.line < first);
        let hi = self.entries.partition_point(|e| e.line < old_after);
        let shift = i64::from(new_after) - i64::from(old_after);
        let tail = lo + mid.len();
        let replaced: Vec<ParsedAlias> = self.entries.splice(lo..hi, mid).collect();
        if shift != 0 {
            (self.entries[tail..].iter_mut()).for_each(|e| move_entry(e, shift));
        }
        let in_span = |d: &Diagnostic| d.line >= first && d.line < old_after;
        let mut gone: Vec<Diagnostic> = self.diags.iter().filter(|d| in_span(d)).cloned().collect();
        self.diags.retain(|d| !in_span(d));
        for d in &mut self.diags {
            if d.line >= old_after {
                d.line = moved(d.line, shift);
            }
        }
        gone.sort();
        let mut came = diags.clone();
        came.sort();
        self.diags.extend(diags);
        self.bytes = bytes;
        Splice {
            parsed,
            at: lo,
            old: replaced,
            new: tail - lo,
            // Nothing follows a span that runs to the end of the file.
            shift: if at_end { 0 } else { shift },
            diagnostics_changed: gone != came,
        }
    }
}

/// What [`AliasesFile::update`] replaced: `old`, the entries from index `at`, by the `new`
/// entries from `at` in [`AliasesFile::entries`]. The entries before are as they were; those
/// after moved by `shift` lines and are otherwise the same.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Splice {
    /// How many bytes were parsed again.
    pub parsed: usize,
    /// Where the replaced entries start.
    pub at: usize,
    /// The entries replaced.
    pub old: Vec<ParsedAlias>,
    /// How many entries replaced them.
    pub new: usize,
    /// By how many lines the entries after them moved.
    pub shift: i64,
    /// Whether the file's diagnostics changed (other than by moving with `shift`).
    pub diagnostics_changed: bool,
}
