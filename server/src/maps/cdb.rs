//! Writing a map's CDB table: D. J. Bernstein's constant database, as Postfix `cdb:` and Exim's
//! `cdb` lookup read it. A header of 256 (position, length) pairs, the records (key length,
//! value length, key, value; lengths as little-endian u32), then 256 hash tables of
//! (hash, position) slots, each twice as long as its records, probed linearly from
//! `(hash >> 8) % length`.
//!
//! Written here rather than through the `cdb2` crate (which the tests read the tables back
//! with): a map's lines come in shared pieces (`render::Text`), and the records and hashes of
//! every piece a delta did not change are reused from the table before, which `bench mta`'s
//! target (an added alias live in a running Postfix within a second at 1M) needs: the crate
//! rebuilds a million records per table.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::render::{Rendered, table_entry};

/// Where one record's key and value lie in its piece's text, and its key's hash: the record is
/// written from the text again, so a kept piece costs 20 bytes a line, not a copy of it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u32,
    /// Start and length of the key in the piece; [`LOWER`] set in the length when the key is
    /// written lowercased.
    key: (u32, u32),
    /// Start and length of the value in the piece, or start [`OK`] for the value `OK`.
    value: (u32, u32),
}

/// In an [`Entry`]'s key length: the key is written in lowercase.
const LOWER: u32 = 1 << 31;
/// An [`Entry`]'s value start for the value `OK`, which is not in the text.
const OK: u32 = u32::MAX;

/// The records of one piece of a map's lines.
#[derive(Debug)]
pub(super) struct Records {
    entries: Vec<Entry>,
}

/// A map's pieces by address, each held (so that its address stays its own) with its records.
pub(super) type Pieces = HashMap<usize, (Arc<String>, Arc<Records>)>;

/// The records of the pieces of the tables written last, by map name and piece, so that the
/// next table of that map reuses those of the pieces it shares.
#[derive(Debug, Default)]
pub(super) struct Cache {
    /// Map name to its pieces.
    by_map: HashMap<&'static str, Pieces>,
}

impl Cache {
    /// The cached pieces of map `name`, taken out (put back with [`Cache::put`]).
    pub(super) fn take(&mut self, name: &'static str) -> Pieces {
        self.by_map.remove(name).unwrap_or_default()
    }

    /// Records `pieces` as map `name`'s.
    pub(super) fn put(&mut self, name: &'static str, pieces: Pieces) {
        self.by_map.insert(name, pieces);
    }
}

/// The hash CDB readers compute over a key.
fn hash(key: &[u8]) -> u32 {
    key.iter().fold(5381u32, |h, &c| {
        (h.wrapping_shl(5).wrapping_add(h)) ^ u32::from(c)
    })
}

/// The records of the lines of `piece`, a piece of map `name`.
fn records(name: &str, piece: &str) -> Records {
    let base = piece.as_ptr() as usize;
    let mut entries = Vec::new();
    let mut at = 0;
    for line in piece.split_inclusive('\n') {
        let (key, value) = table_entry(name, line);
        // The key begins its line; lowercased, it is as long as it was. A piece is at most a
        // few hundred KiB: its offsets fit.
        let lower = if matches!(key, std::borrow::Cow::Owned(_)) {
            LOWER
        } else {
            0
        };
        let start = value.as_ptr() as usize;
        let value = if (base..base + piece.len()).contains(&start) {
            ((start - base) as u32, value.len() as u32)
        } else {
            (OK, value.len() as u32)
        };
        entries.push(Entry {
            hash: hash(key.as_bytes()),
            key: (at as u32, key.len() as u32 | lower),
            value,
        });
        at += line.len();
    }
    Records { entries }
}

/// Writes the records of `recs` (of the text `piece`) to `out`, and hands each record's hash
/// and position (from `pos`) to `slot`; returns the position after them.
fn write_records(
    out: &mut impl Write,
    piece: &str,
    recs: &Records,
    mut pos: u32,
    mut slot: impl FnMut(u32, u32),
) -> std::io::Result<u32> {
    let text = piece.as_bytes();
    let mut lowered = Vec::new();
    for e in &recs.entries {
        let (ks, kl) = (e.key.0 as usize, (e.key.1 & !LOWER) as usize);
        let key = &text[ks..ks + kl];
        let value: &[u8] = match e.value {
            (OK, _) => b"OK",
            (vs, vl) => &text[vs as usize..(vs + vl) as usize],
        };
        out.write_all(&(kl as u32).to_le_bytes())?;
        out.write_all(&(value.len() as u32).to_le_bytes())?;
        if e.key.1 & LOWER != 0 {
            lowered.clear();
            lowered.extend(key.iter().map(u8::to_ascii_lowercase));
            out.write_all(&lowered)?;
        } else {
            out.write_all(key)?;
        }
        out.write_all(value)?;
        slot(e.hash, pos);
        let len = u32::try_from(8 + kl + value.len()).map_err(|_| too_large())?;
        pos = pos.checked_add(len).ok_or_else(too_large)?;
    }
    Ok(pos)
}

fn too_large() -> std::io::Error {
    std::io::Error::other("the table would pass the 4 GiB a CDB file can address")
}

/// Writes the table of map `name` of `rendered` to `out`: a record per line, in file order (on
/// a repeated key the first wins, as in `postmap` and `lsearch`). `cache` holds the records of
/// the pieces of this map's table before; on return, those of this one.
pub(super) fn write(
    file: &File,
    rendered: &Rendered,
    name: &'static str,
    cache: &mut Pieces,
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(&[0u8; 2048])?;
    let mut used = HashMap::with_capacity(cache.len());
    let mut buckets: Vec<Vec<(u32, u32)>> = vec![Vec::new(); 256];
    let mut pos: u32 = 2048;
    for part in &rendered.parts {
        let Some(text) = part.files.get(name) else {
            continue;
        };
        for piece in text.shared_pieces() {
            let key = Arc::as_ptr(piece) as usize;
            let recs = match cache.remove(&key) {
                Some((_, r)) => r,
                None => Arc::new(records(name, piece)),
            };
            pos = write_records(&mut out, piece, &recs, pos, |h, at| {
                buckets[(h & 0xff) as usize].push((h, at));
            })?;
            used.insert(key, (Arc::clone(piece), recs));
        }
    }
    let mut header = [0u8; 2048];
    let mut table: Vec<(u32, u32)> = Vec::new();
    for (i, bucket) in buckets.iter().enumerate() {
        let len = bucket.len() * 2;
        header[i * 8..i * 8 + 4].copy_from_slice(&pos.to_le_bytes());
        header[i * 8 + 4..i * 8 + 8].copy_from_slice(&(len as u32).to_le_bytes());
        table.clear();
        table.resize(len, (0, 0));
        for &(h, at) in bucket {
            // Positions are past the header, never 0: a slot at 0 is free.
            let mut j = (h >> 8) as usize % len;
            while table[j].1 != 0 {
                j = if j + 1 == len { 0 } else { j + 1 };
            }
            table[j] = (h, at);
        }
        for &(h, at) in &table {
            out.write_all(&h.to_le_bytes())?;
            out.write_all(&at.to_le_bytes())?;
        }
        let bytes = u32::try_from(len * 8).map_err(|_| too_large())?;
        pos = pos.checked_add(bytes).ok_or_else(too_large)?;
    }
    out.flush()?;
    file.write_all_at(&header, 0)?;
    *cache = used;
    Ok(())
}

#[cfg(test)]
mod tests;
