//! One agent's lines of the address maps (`relay_recipients`, `virtual`, Exim's `recipients`
//! and `forward`), built plan by plan in address order and cut into shared pieces.

use std::sync::Arc;

use proto::{Class, PlanRef, addr};

use super::{PIECE, RenderError, Text, file_names, push};
use crate::store::Counts;

/// The room to reserve for a piece of `piece` bytes: its last line takes it past the size, and a
/// buffer left to grow by doubling would end twice as large as its lines (0 when nothing is cut).
fn room(piece: usize) -> usize {
    if piece <= PIECE { piece + piece / 8 } else { 0 }
}

/// The files with one line per address, in the order of [`Lines`]' buffers.
pub(super) const ADDRESS_FILES: [&str; 4] = [
    "postfix/relay_recipients",
    "exim/recipients",
    "postfix/virtual",
    "exim/forward",
];

/// One agent's address lines of each file being built, from plans in address order.
pub(super) struct Lines<'x> {
    agent: &'x str,
    /// `relay_recipients`, exim `recipients`, `virtual`, exim `forward`, when rendered: the
    /// lines since the last full piece.
    bufs: [Option<String>; 4],
    /// The full pieces of each buffer.
    pieces: [Vec<Arc<String>>; 4],
    /// The size past which a buffer becomes a piece (after an address's lines).
    piece: usize,
    pub(super) counts: Counts,
    pub(super) error: Option<RenderError>,
    /// Reused per plan: the targets of a line, sorted and unique.
    order: Vec<(bool, usize)>,
    /// Reused per plan: the punt units of a split plan as addresses.
    units: Vec<String>,
}

impl<'x> Lines<'x> {
    pub(super) fn new(agent: &'x str, formats: &[String], piece: usize) -> Self {
        let names: Vec<&str> = file_names(formats).collect();
        Lines {
            agent,
            bufs: ADDRESS_FILES.map(|n| {
                names
                    .contains(&n)
                    .then(|| String::with_capacity(room(piece)))
            }),
            pieces: Default::default(),
            piece,
            counts: Counts::default(),
            error: None,
            order: Vec::new(),
            units: Vec::new(),
        }
    }

    fn bad(&self, what: &'static str, value: &str) -> RenderError {
        RenderError::Invalid {
            agent: self.agent.to_string(),
            what,
            value: value.to_string(),
        }
    }

    /// Adds the lines of `p` (the next address in order).
    pub(super) fn add(&mut self, p: &PlanRef<'_>) {
        if self.error.is_some() {
            return;
        }
        self.lines(p);
        // A piece ends between two addresses.
        for (b, pieces) in self.bufs.iter_mut().zip(&mut self.pieces) {
            if let Some(b) = b.as_mut().filter(|b| b.len() >= self.piece) {
                pieces.push(Arc::new(std::mem::replace(
                    b,
                    String::with_capacity(room(self.piece)),
                )));
            }
        }
    }

    /// The lines of every file, by [`ADDRESS_FILES`], for those rendered.
    pub(super) fn finish(self) -> [Option<Text>; 4] {
        let mut pieces = self.pieces.into_iter();
        self.bufs.map(|b| {
            let mut pieces = pieces.next().unwrap_or_default();
            let mut b = b?;
            if !b.is_empty() {
                // The room reserved for a full piece is not kept for the last one's lines.
                b.shrink_to_fit();
                pieces.push(Arc::new(b));
            }
            Some(Text { pieces })
        })
    }

    fn lines(&mut self, p: &PlanRef<'_>) {
        if !addr::valid_parts(p.local, p.domain) {
            self.error = Some(self.bad("address", &p.address()));
            return;
        }
        let c = &mut self.counts;
        c.addresses += 1;
        let a = [p.local, "@", p.domain];
        let [relay, recipients, virt, forward] = &mut self.bufs;
        if let Some(b) = relay.as_mut() {
            push(b, &a);
            b.push_str(" OK\n");
        }
        if let Some(b) = recipients.as_mut() {
            push(b, &a);
            b.push('\n');
        }
        match p.class {
            Class::Punt => c.punt += 1,
            Class::Forward | Class::Split => {
                if p.class == Class::Forward {
                    c.forward += 1;
                } else {
                    c.split += 1;
                }
                // The punt units as addresses, in strings kept between plans.
                let units = &mut self.units;
                units.resize_with(units.len().max(p.punt.len()), String::new);
                for (s, (l, d)) in units.iter_mut().zip(p.punt) {
                    s.clear();
                    push(s, &[l, "@", d]);
                }
                let units = &units[..p.punt.len()];
                // Sorted and unique, through a reused index buffer (no allocation per address).
                let get = |&(punt, i): &(bool, usize)| -> &str {
                    if punt { &units[i] } else { p.forward[i] }
                };
                let order = &mut self.order;
                order.clear();
                order.extend((0..p.forward.len()).map(|i| (false, i)));
                order.extend((0..p.punt.len()).map(|i| (true, i)));
                order.sort_unstable_by(|x, y| get(x).cmp(get(y)));
                order.dedup_by(|x, y| get(x) == get(y));
                if let Some(t) = order.iter().map(get).find(|t| !addr::valid_address(t)) {
                    let t = t.to_string();
                    self.error = Some(self.bad("target", &t));
                    return;
                }
                for (b, sep) in [(virt, " "), (forward, ": ")] {
                    if let Some(b) = b.as_mut() {
                        push(b, &a);
                        b.push_str(sep);
                        for (i, t) in order.iter().map(get).enumerate() {
                            if i > 0 {
                                b.push_str(", ");
                            }
                            b.push_str(t);
                        }
                        b.push('\n');
                    }
                }
            }
        }
    }
}
