//! Resolving what a name or an item is: the alias, user, virtual entry, recipient or include
//! file it names, and the node of the walk that stands for it (with its own items), or a leaf
//! (a remote address, a punt unit, a reason to punt).

use super::*;

impl<'a> Planner<'a> {
    /// The alias, user and bare virtual entry named `name` (folded).
    pub(super) fn named(&self, name: &str) -> Named {
        let c = self.c;
        if let Some(m) = &self.maps {
            return m.names.get(name);
        }
        let user = (c.users.binary_search_by(|u| u.name.as_str().cmp(name))).ok();
        Named::new(
            (c.aliases.binary_search_by(|a| a.name.as_str().cmp(name))).ok(),
            user,
            (c.virtuals.binary_search_by(|v| v.key.as_str().cmp(name)))
                .ok()
                .filter(|&i| !c.virtuals[i].key.contains('@')),
        )
        .procmail(user.is_some_and(|i| c.users[i].procmail.is_some()))
    }

    /// The virtual entry whose key is `local@domain`.
    pub(super) fn virtual_at(&self, local: &str, domain: &str) -> Option<usize> {
        let hashed = self.maps.as_ref().map(|m| m.virtuals.get(&(local, domain)));
        find(hashed, &self.c.virtuals, |v| {
            cmp_joined(&v.key, (local, domain))
        })
    }

    pub(super) fn recipient(&self, local: &str, domain: &str) -> Option<usize> {
        let hashed = self
            .maps
            .as_ref()
            .map(|m| m.recipients.get(&(local, domain)));
        find(hashed, &self.c.recipients, |r| {
            cmp_joined(&r.address, (local, domain))
        })
    }

    pub(super) fn include(&self, path: &str) -> Option<usize> {
        let hashed = self.maps.as_ref().map(|m| m.includes.get(path));
        find(hashed, &self.c.includes, |i| i.path.as_str().cmp(path))
    }

    pub(super) fn origin(&self, at: FileLine) -> String {
        match self.c.files.get(at.file as usize) {
            Some(f) if at.line > 0 => format!("{f}:{}", at.line),
            Some(f) => f.clone(),
            None => String::new(),
        }
    }

    pub(super) fn user_ref(&self, u: &'a User, unit: Unit<'a>) -> Resolved<'a> {
        let at = FileLine {
            file: u.file,
            line: u.line,
        };
        if let Some(p) = u.procmail {
            let target = self.c.files.get(p as usize).map_or("", String::as_str);
            return Resolved::Leaf(
                unit,
                ReasonRef {
                    code: Code::Procmail,
                    target,
                    at,
                    via: None,
                },
            );
        }
        let Some(fw) = &u.forward else {
            return Resolved::punt(unit, Code::Mailbox, &u.name, at);
        };
        let fat = |line| FileLine {
            file: fw.file,
            line,
        };
        let path = self
            .c
            .files
            .get(fw.file as usize)
            .map_or("", String::as_str);
        if fw.error.is_some() || fw.filter {
            return Resolved::punt(unit, Code::DotForward, path, fat(0));
        }
        if fw.targets.is_empty() {
            return Resolved::punt(unit, Code::Mailbox, &u.name, at);
        }
        for t in &fw.targets {
            let remote = t.kind == Kind::Address
                && addr::split(&t.value).is_some_and(|(_, d)| !self.domains.contains(d));
            if !remote {
                return Resolved::punt(unit, Code::DotForward, &t.value, fat(t.line));
            }
        }
        Resolved::UserForward(&fw.targets)
    }

    /// The user of `named` when it has a `~/.procmailrc` (which comes before any alias).
    pub(super) fn procmail_user(&self, named: Named) -> Option<&'a User> {
        if !named.has_procmail() {
            return None;
        }
        named.user().map(|i| &self.c.users[i])
    }

    /// A local name inside an alias list: alias first, then user; the primary bounces the rest.
    pub(super) fn resolve_local(&mut self, name: &'a str, at: FileLine) -> Resolved<'a> {
        let folded = lower(name);
        let named = self.named(&folded);
        if let Some(u) = self.procmail_user(named) {
            return self.user_ref(u, Unit::Local(&u.name));
        }
        if let Some(i) = named.alias() {
            // The item's own text when folding left it as it was: it is the alias's name, and
            // the alias's entry is not read before its expansion is needed.
            let own = match folded {
                Cow::Borrowed(n) => n,
                Cow::Owned(_) => self.c.aliases[i].name.as_str(),
            };
            return Resolved::Node {
                id: i,
                unit: Unit::Local(own),
                domain: None,
            };
        }
        if let Some(i) = named.user() {
            let u = &self.c.users[i];
            return self.user_ref(u, Unit::Local(&u.name));
        }
        self.unknown.insert((name, at));
        Resolved::punt(Unit::Local(name), Code::Unknown, name, at)
    }

    /// An address at a served domain, resolved as the primary's MTA does: virtual, alias, user,
    /// recipient list. `full` is the address as written, for an unknown.
    pub(super) fn resolve_addr(
        &mut self,
        local: &'a str,
        domain: &'a str,
        full: &'a str,
        at: FileLine,
    ) -> Resolved<'a> {
        let lkey = lower(local);
        let named = self.named(&lkey);
        self.resolve_named(local, &lkey, named, domain, full, at)
    }

    /// [`Planner::resolve_addr`] with `local` folded (`lkey`) and the entries it names found.
    pub(super) fn resolve_named(
        &mut self,
        local: &'a str,
        lkey: &str,
        named: Named,
        domain: &'a str,
        full: &'a str,
        at: FileLine,
    ) -> Resolved<'a> {
        if let Some(u) = self.procmail_user(named) {
            return self.user_ref(u, Unit::Addr(&u.name, domain));
        }
        if let Some(i) = self.virtual_at(lkey, domain) {
            let key = self.c.virtuals[i].key.as_str();
            let (l, d) = addr::split(key).unwrap_or((key, domain));
            return Resolved::Node {
                id: self.c.aliases.len() + i,
                unit: Unit::Addr(l, d),
                domain: Some(domain),
            };
        }
        if let Some(i) = named.bare() {
            let v = &self.c.virtuals[i];
            let at = FileLine {
                file: v.file,
                line: v.line,
            };
            return Resolved::punt(Unit::Addr(&v.key, domain), Code::Unknown, &v.key, at);
        }
        if let Some(i) = named.alias() {
            let name = self.c.aliases[i].name.as_str();
            return Resolved::Node {
                id: i,
                unit: Unit::Addr(name, domain),
                domain: Some(domain),
            };
        }
        if let Some(i) = named.user() {
            let u = &self.c.users[i];
            return self.user_ref(u, Unit::Addr(&u.name, domain));
        }
        if let Some(i) = self.recipient(lkey, domain) {
            let r = &self.c.recipients[i];
            let (l, d) = addr::split(&r.address).unwrap_or((&r.address, domain));
            let at = FileLine {
                file: r.file,
                line: r.line,
            };
            return Resolved::punt(Unit::Addr(l, d), Code::Mailbox, &r.address, at);
        }
        self.unknown.insert((full, at));
        Resolved::punt(Unit::Addr(local, domain), Code::Unknown, full, at)
    }

    /// The items of an alias with `:include:` files inlined (into `items`), or the reasons it
    /// must punt as a whole (an item only the primary can deliver, written directly in its list).
    pub(super) fn own_items(
        &self,
        node: usize,
        items: &mut Vec<(&'a Target, u32)>,
    ) -> Result<(), Vec<ReasonRef<'a>>> {
        let c = self.c;
        let (targets, file, key): (&'a [Target], u32, Option<&'a str>) = if node < c.aliases.len() {
            let a = &c.aliases[node];
            (&a.targets, a.file, None)
        } else {
            let v = &c.virtuals[node - c.aliases.len()];
            (&v.targets, v.file, Some(v.key.as_str()))
        };
        items.reserve(targets.len());
        let mut direct = Vec::new();
        // Include files still to read: (items, file, nesting). Most aliases have none.
        let mut work: Vec<(&'a [Target], u32, u32)> = Vec::new();
        let mut next = Some((targets, file, 0u32));
        let mut seen_includes: FxHashSet<&'a str> = FxHashSet::default();
        while let Some((ts, file, nesting)) = next.take().or_else(|| work.pop()) {
            for t in ts {
                let at = FileLine { file, line: t.line };
                let r = |code| ReasonRef {
                    code,
                    target: t.value.as_str(),
                    at,
                    via: None,
                };
                match t.kind {
                    Kind::Address | Kind::Local if key.is_none() => items.push((t, file)),
                    Kind::Address => {
                        let lk = lower(&t.value);
                        if Some(lk.as_ref()) == key {
                            direct.push(r(Code::Loop));
                        } else {
                            items.push((t, file));
                        }
                    }
                    Kind::Local => direct.push(r(Code::Unknown)),
                    Kind::Pipe => direct.push(r(Code::Pipe)),
                    Kind::File => direct.push(r(Code::File)),
                    Kind::Backslash => direct.push(r(Code::Backslash)),
                    Kind::Special => direct.push(r(Code::Special)),
                    Kind::Invalid => direct.push(r(Code::Unknown)),
                    Kind::Include => {
                        let inc = self.include(&t.value).map(|i| &c.includes[i]);
                        match inc {
                            _ if key.is_some() => direct.push(r(Code::Include)),
                            Some(inc) if inc.error.is_some() => {
                                direct.push(r(Code::IncludeUnreadable))
                            }
                            Some(inc)
                                if nesting < MAX_INCLUDE_NESTING
                                    && seen_includes.insert(inc.path.as_str()) =>
                            {
                                work.push((&inc.targets, inc.file, nesting + 1));
                            }
                            // Nested too deep, included twice, relative or never read: punt.
                            _ => direct.push(r(Code::Include)),
                        }
                    }
                }
            }
        }
        if direct.is_empty() {
            Ok(())
        } else {
            Err(direct)
        }
    }

    /// The expansion kept for `node`.
    pub(super) fn memo(&self, node: usize) -> Option<&Expansion<'a>> {
        self.exps.get(self.memo[node] as usize)
    }

    /// A plan's expansion: kept for node `id`, or, when `id` is `None`, the one [`Planner::top`]
    /// left in `scratch`.
    pub(super) fn expansion<'s>(
        &'s self,
        id: Option<usize>,
        scratch: &'s Expansion<'a>,
    ) -> &'s Expansion<'a> {
        id.and_then(|i| self.memo(i)).unwrap_or(scratch)
    }

    /// Keeps `exp` as the expansion of `node`.
    pub(super) fn keep(&mut self, node: usize, exp: Expansion<'a>) {
        self.memo[node] = u32::try_from(self.exps.len()).expect("fewer than 2^32 nodes");
        self.exps.push(exp);
    }

    pub(super) fn node_at(&self, node: usize) -> (&'a str, FileLine) {
        let c = self.c;
        if node < c.aliases.len() {
            let a = &c.aliases[node];
            (
                &a.name,
                FileLine {
                    file: a.file,
                    line: a.line,
                },
            )
        } else {
            let v = &c.virtuals[node - c.aliases.len()];
            (
                &v.key,
                FileLine {
                    file: v.file,
                    line: v.line,
                },
            )
        }
    }

    pub(super) fn resolve_item(&mut self, t: &'a Target, file: u32) -> Resolved<'a> {
        let at = FileLine { file, line: t.line };
        match t.kind {
            Kind::Local => self.resolve_local(&t.value, at),
            _ => match addr::split(&t.value).and_then(|(l, d)| Some((l, self.domains.get(d)?))) {
                Some((l, d)) => self.resolve_addr(l, d, &t.value, at),
                None => Resolved::Forward(&t.value),
            },
        }
    }
}
