//! From a key to its plan: the top of the walk for one address, the punt units the secondary
//! would expand again demoted, and the plan filled in (borrowed, or owned with its reasons).

use super::*;

impl<'a> Planner<'a> {
    /// The content-owned `(local, domain)` of a valid address, or `None`.
    pub(super) fn key_of(&self, local: &str, domain: &str) -> Option<Key<'a>> {
        let domain = self.domains.get(domain)?;
        let lkey = lower(local);
        let c = self.c;
        let named = self.named(&lkey);
        let local = if let Some(i) = self.virtual_at(&lkey, domain) {
            addr::split(&c.virtuals[i].key)?.0
        } else if let Some(i) = self.recipient(&lkey, domain) {
            addr::split(&c.recipients[i].address)?.0
        } else if let Some(i) = named.alias() {
            c.aliases[i].name.as_str()
        } else if let Some(i) = named.user() {
            c.users[i].name.as_str()
        } else {
            c.virtuals[named.bare()?].key.as_str()
        };
        Some(Key {
            addr: (local, domain),
            named,
        })
    }

    /// Resolves a valid address and expands what it needs. The expansion is then in the memo
    /// (the returned node) or in `scratch`; the returned domain binds its local units.
    pub(super) fn top(
        &mut self,
        key: Key<'a>,
        scratch: &mut Expansion<'a>,
    ) -> (Option<usize>, Option<&'a str>) {
        let (local, domain) = key.addr;
        let at = FileLine {
            file: u32::MAX,
            line: 0,
        };
        scratch.forward.clear();
        scratch.units.clear();
        scratch.reasons.clear();
        // The key's local part is folded already.
        match self.resolve_named(local, local, key.named, domain, local, at) {
            Resolved::Node { id, domain: d, .. } => {
                self.eval(id);
                if self.state[id] == DONE {
                    return (Some(id), d);
                }
                std::mem::swap(scratch, &mut self.root);
                return (None, d);
            }
            Resolved::Leaf(_, reason) => scratch.reasons.push(reason),
            Resolved::UserForward(ts) => {
                scratch.forward.extend(ts.iter().map(|t| t.value.as_str()));
                scratch.seal();
            }
            Resolved::Forward(a) => scratch.forward.push(a),
        }
        (None, Some(domain))
    }

    /// The class of an address before the unit check, or `None` if it is not valid.
    pub(super) fn class_of(&mut self, (local, domain): (&'a str, &'a str)) -> Option<Class> {
        let key = self.key_of(local, domain)?;
        let mut scratch = Expansion::default();
        let (id, _) = self.top(key, &mut scratch);
        Some(class(self.expansion(id, &scratch)))
    }

    /// Whether the secondary would expand the address `unit` again: it is a valid address
    /// whose own plan does not punt.
    pub(super) fn again(&mut self, unit: (&'a str, &'a str)) -> bool {
        if let Some(&again) = self.again.get(&unit) {
            return again;
        }
        let again = self.class_of(unit).is_some_and(|k| k != Class::Punt);
        self.again.insert(unit, again);
        again
    }

    /// Plans `key`: expands what it needs and decides its class. A split plan with a unit that
    /// the secondary would expand again is demoted to punt. The punt units are left in
    /// `self.units` for [`Planner::view`].
    pub(super) fn settle(&mut self, key: Key<'a>, scratch: &mut Expansion<'a>) -> Settled<'a> {
        let (id, bound) = self.top(key, scratch);
        let (local, domain) = key.addr;
        let mut units = std::mem::take(&mut self.units);
        units.clear();
        let exp = self.expansion(id, scratch);
        let mut class = class(exp);
        if class == Class::Split {
            units.extend(exp.units.iter().map(|&u| u.address(bound, domain)));
            units.sort_unstable_by(|a, b| cmp_addr(*a, *b));
            units.dedup();
        }
        let demoted = match class {
            Class::Split => units.iter().copied().find(|&u| self.again(u)),
            _ => None,
        };
        if demoted.is_some() {
            class = Class::Punt;
        }
        if class == Class::Punt {
            units.clear();
            units.push((local, domain));
        }
        self.units = units;
        Settled {
            id,
            bound,
            class,
            demoted,
        }
    }

    /// The plan of `key` as [`Planner::settle`] left it.
    pub(super) fn view<'s>(
        &'s self,
        key: Key<'a>,
        s: &Settled<'a>,
        scratch: &'s Expansion<'a>,
    ) -> PlanRef<'s> {
        let exp = self.expansion(s.id, scratch);
        PlanRef {
            local: key.addr.0,
            domain: key.addr.1,
            class: s.class,
            forward: if s.class == Class::Punt {
                &[]
            } else {
                &exp.forward
            },
            punt: if s.class == Class::Forward {
                &[]
            } else {
                &self.units
            },
        }
    }

    /// Fills `plan` for `key`, reusing its allocations.
    pub(super) fn fill(&mut self, key: Key<'a>, plan: &mut Plan, scratch: &mut Expansion<'a>) {
        let s = self.settle(key, scratch);
        // Taken out while the view borrows the planner, put back at the end.
        let mut spare = std::mem::take(&mut self.spare);
        let v = self.view(key, &s, scratch);
        set(&mut plan.address, &[v.local, "@", v.domain]);
        plan.class = v.class;
        fill_list(
            &mut plan.forward,
            v.forward.iter().map(|f| [*f, "", ""]),
            &mut spare,
        );
        fill_list(
            &mut plan.punt,
            v.punt.iter().map(|(l, d)| [*l, "@", *d]),
            &mut spare,
        );
        let exp = self.expansion(s.id, scratch);
        // A demoted plan's one reason is written below.
        let reasons: &[ReasonRef<'a>] = match (self.reasons, s.demoted) {
            (true, None) => &exp.reasons,
            _ => &[],
        };
        for gone in plan.reasons.drain(reasons.len().min(plan.reasons.len())..) {
            spare.extend([gone.target, gone.origin]);
            spare.extend(gone.via);
        }
        for (i, r) in reasons.iter().enumerate() {
            if i == plan.reasons.len() {
                plan.reasons.push(Reason {
                    code: r.code,
                    target: spare.pop().unwrap_or_default(),
                    origin: spare.pop().unwrap_or_default(),
                    via: None,
                });
            }
            let slot = &mut plan.reasons[i];
            slot.code = r.code;
            set(&mut slot.target, &[r.target]);
            slot.origin.clear();
            if let Some(f) = self.c.files.get(r.at.file as usize) {
                slot.origin.push_str(f);
                if r.at.line > 0 {
                    slot.origin.push(':');
                    push_number(&mut slot.origin, r.at.line);
                }
            }
            match r.via.map(|u| u.address(s.bound, key.addr.1)) {
                Some((l, d)) => set(
                    slot.via
                        .get_or_insert_with(|| spare.pop().unwrap_or_default()),
                    &[l, "@", d],
                ),
                None => spare.extend(slot.via.take()),
            }
        }
        if let (Some((l, d)), true) = (s.demoted, self.reasons) {
            // Demoted: the unit the secondary would expand again is the reason.
            let unit = format!("{l}@{d}");
            plan.reasons.push(Reason {
                code: Code::Unknown,
                target: unit.clone(),
                origin: String::new(),
                via: Some(unit),
            });
        }
        self.spare = spare;
    }
}

/// Appends `n` in decimal to `s` (the formatting machinery cost a twentieth of planning's
/// instructions, for the line of every reason).
pub(super) fn push_number(s: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// Sets `s` to the concatenation of `parts`, keeping its allocation (and growing it at most
/// once).
pub(super) fn set(s: &mut String, parts: &[&str]) {
    s.clear();
    s.reserve(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
}

/// Sets `v` to the given strings (each the concatenation of three parts), reusing its strings
/// and those in `spare`, and leaving the ones it no longer needs there.
pub(super) fn fill_list<'x>(
    v: &mut Vec<String>,
    items: impl Iterator<Item = [&'x str; 3]>,
    spare: &mut Vec<String>,
) {
    let mut n = 0;
    for parts in items {
        if n == v.len() {
            v.push(spare.pop().unwrap_or_default());
        }
        set(&mut v[n], &parts);
        n += 1;
    }
    spare.extend(v.drain(n..));
}
