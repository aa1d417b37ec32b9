//! The walk: expanding a node's items depth first (iteratively, Tarjan's strongly connected
//! components: an alias on a cycle punts), merging what each item resolves to, and keeping
//! what a node expands to for the nodes that name it.

use super::*;

impl<'a> Planner<'a> {
    /// Merges what `r` resolved to into `acc`. Returns a node that must be expanded first.
    pub(super) fn merge(
        &mut self,
        cur: usize,
        acc: &mut Expansion<'a>,
        r: Resolved<'a>,
    ) -> Option<usize> {
        match r {
            Resolved::Forward(a) => acc.forward.push(a),
            Resolved::Leaf(unit, reason) => {
                acc.units.push(unit);
                if self.reasons {
                    acc.add_reasons(std::iter::once(ReasonRef {
                        via: Some(unit),
                        ..reason
                    }));
                }
            }
            Resolved::UserForward(ts) => {
                acc.forward.extend(ts.iter().map(|t| t.value.as_str()));
                acc.height = acc.height.max(1);
            }
            Resolved::Node { id, unit, domain } => match self.state[id] {
                DONE => {
                    let reasons = self.reasons;
                    let child = self.memo(id)?;
                    if child.is_punt() {
                        acc.units.push(unit);
                        if reasons {
                            acc.add_reasons(child.reasons.iter().map(|r| ReasonRef {
                                via: Some(unit),
                                ..*r
                            }));
                        }
                    } else {
                        acc.forward.extend_from_slice(&child.forward);
                        acc.units.extend(child.units.iter().map(|u| u.bind(domain)));
                        if reasons {
                            acc.add_reasons(child.reasons.iter().map(|r| ReasonRef {
                                via: r.via.map(|u| u.bind(domain)),
                                ..*r
                            }));
                        }
                        acc.height = acc.height.max(child.height);
                    }
                }
                ON_STACK => {
                    // A cycle: `cur` and `id` are in one strongly connected component, and every
                    // alias in it punts (reason `loop`), so nothing is merged.
                    if id == cur {
                        self.self_loop[cur] = true;
                    }
                    self.low[cur] = self.low[cur].min(self.low[id]);
                }
                _ => return Some(id),
            },
        }
        None
    }

    /// Expands `root` and everything it reaches, without recursion (Tarjan's strongly connected
    /// components, so that loop membership does not depend on where the walk starts). The
    /// expansions reached are kept; `root`'s is kept only when it punts as soon as its items are
    /// read or is on a loop, and is otherwise left in `self.root` with `root` still unseen.
    pub(super) fn eval(&mut self, root: usize) {
        if self.state[root] == DONE {
            return;
        }
        let mut stack = std::mem::take(&mut self.frames);
        self.push(&mut stack, root);
        while let Some(mut frame) = stack.pop() {
            let mut child = None;
            while frame.pos < frame.items.len() {
                let (t, file) = frame.items[frame.pos];
                let r = self.resolve_item(t, file);
                if let Some(id) = self.merge(frame.node, &mut frame.acc, r) {
                    child = Some(id);
                    break;
                }
                frame.pos += 1;
            }
            match child {
                Some(id) => {
                    stack.push(frame);
                    self.push(&mut stack, id);
                }
                // The walk's first frame is its last.
                None => self.finish(frame, stack.is_empty()),
            }
        }
        self.frames = stack;
    }

    pub(super) fn push(&mut self, stack: &mut Vec<Frame<'a>>, node: usize) {
        let mut items = self.item_pool.pop().unwrap_or_default();
        match self.own_items(node, &mut items) {
            Ok(()) => {
                self.state[node] = ON_STACK;
                self.index[node] = self.counter;
                self.low[node] = self.counter;
                self.counter += 1;
                self.tarjan.push(node);
                stack.push(Frame {
                    node,
                    items,
                    pos: 0,
                    acc: self.pool.pop().unwrap_or_default(),
                });
            }
            Err(mut direct) => {
                items.clear();
                self.item_pool.push(items);
                direct.sort_unstable();
                direct.dedup();
                direct.truncate(MAX_REASONS);
                direct.shrink_to_fit();
                self.state[node] = DONE;
                self.keep(node, Expansion::punt(direct));
            }
        }
    }

    /// Completes `frame`'s node, and gives its accumulator and item list back to the pools.
    /// `root`: the node is the walk's root ([`Planner::eval`]).
    pub(super) fn finish(&mut self, frame: Frame<'a>, root: bool) {
        let Frame {
            node,
            mut acc,
            mut items,
            ..
        } = frame;
        items.clear();
        self.item_pool.push(items);
        self.complete(node, &mut acc, root);
        acc.forward.clear();
        acc.units.clear();
        acc.reasons.clear();
        acc.height = 0;
        self.pool.push(acc);
    }

    /// Keeps the expansion of `node` from what its items gave (`acc`) once its strongly
    /// connected component is complete; a walk's `root` not on a loop goes to `self.root` in
    /// `acc`'s place instead.
    pub(super) fn complete(&mut self, node: usize, acc: &mut Expansion<'a>, root: bool) {
        if self.low[node] < self.index[node] {
            // Part of a larger component whose root is still being expanded: it will punt as a
            // loop when the root completes.
            return;
        }
        let at_node = self.tarjan.iter().rposition(|&n| n == node).unwrap_or(0);
        if at_node + 1 < self.tarjan.len() || self.self_loop[node] {
            for n in self.tarjan.split_off(at_node) {
                let (name, at) = self.node_at(n);
                self.state[n] = DONE;
                self.keep(
                    n,
                    Expansion::punt(vec![ReasonRef {
                        code: Code::Loop,
                        target: name,
                        at,
                        via: None,
                    }]),
                );
            }
            return;
        }
        // A component of one node, not a loop.
        self.tarjan.truncate(at_node);
        acc.height += 1;
        if acc.height > MAX_DEPTH && !acc.forward.is_empty() {
            let (name, at) = self.node_at(node);
            *acc = Expansion::punt(vec![ReasonRef {
                code: Code::Depth,
                target: name,
                at,
                via: None,
            }]);
        } else {
            acc.seal();
            if acc.is_punt() {
                acc.units.clear();
            }
        }
        if root {
            // Left unseen: `self.root` holds its expansion until the next walk.
            self.state[node] = UNSEEN;
            std::mem::swap(&mut self.root, acc);
            return;
        }
        self.state[node] = DONE;
        // Kept at its size: the accumulator's room would be most of the memo's memory.
        self.keep(node, acc.clone());
    }
}
