//! Test support: an in-memory primary described by a small fixture text, built into content the
//! way the agent builds it from disk.
//!
//! A fixture is sections headed `== NAME`: `aliases`, `virtual`, `recipients`, `passwd` (the
//! default passwd has alice, bob and carol with homes under /home), or an absolute path (an
//! include file, a `~/.forward`, a `~/.procmailrc`). `== !PATH` makes PATH exist but unreadable.
//! Served domains are example.org and example.com.

use std::collections::BTreeMap;

use crate::build::Builder;
use crate::plan::{Class, Plan};
use crate::snapshot::Content;

pub const DOMAINS: [&str; 2] = ["example.org", "example.com"];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
bob:x:1001:1001:Bob:/home/bob:/bin/sh\n\
carol:x:1002:1002:Carol:/home/carol:/bin/sh\n";

/// Files of a fixture: path -> Ok(body) or Err(read error).
pub fn files(fixture: &str) -> BTreeMap<String, Result<String, String>> {
    let mut out = BTreeMap::new();
    let mut cur: Option<(String, bool)> = None;
    let mut body = String::new();
    let mut flush = |cur: &Option<(String, bool)>, body: &mut String| {
        if let Some((name, unreadable)) = cur {
            let v = if *unreadable {
                Err("permission denied".to_string())
            } else {
                Ok(std::mem::take(body))
            };
            out.insert(name.clone(), v);
        }
        body.clear();
    };
    for line in fixture.split_inclusive('\n') {
        if let Some(h) = line.strip_prefix("== ") {
            flush(&cur, &mut body);
            let h = h.trim();
            cur = Some(match h.strip_prefix('!') {
                Some(p) => (p.to_string(), true),
                None => (h.to_string(), false),
            });
        } else {
            body.push_str(line);
        }
    }
    flush(&cur, &mut body);
    out
}

/// Builds content from a fixture as the agent does from disk.
pub fn content(fixture: &str) -> Content {
    let f = files(fixture);
    let domains: Vec<String> = DOMAINS.iter().map(|d| d.to_string()).collect();
    let mut b = Builder::new(&domains);
    let get = |name: &str| {
        f.get(name)
            .and_then(|r| r.as_ref().ok())
            .map(String::as_str)
    };
    b.aliases("/etc/aliases", get("aliases").unwrap_or("").as_bytes());
    loop {
        let pending = b.pending_includes();
        if pending.is_empty() {
            break;
        }
        for p in pending {
            match f.get(&p) {
                Some(Ok(body)) => b.include(&p, Ok(body.as_bytes())),
                Some(Err(e)) => b.include(&p, Err(e.clone())),
                None => b.include(&p, Err("no such file or directory".into())),
            }
        }
    }
    if let Some(v) = get("virtual") {
        b.virtual_map("/etc/postfix/virtual", v.as_bytes());
    }
    if let Some(r) = get("recipients") {
        b.recipients("/etc/postfix/relay_recipients", r.as_bytes());
    }
    let passwd = get("passwd").unwrap_or(PASSWD);
    for u in b.passwd("/etc/passwd", passwd.as_bytes(), 1000) {
        let rc = format!("{}/.procmailrc", u.home);
        if f.contains_key(&rc) {
            b.procmail(u.index, &rc);
        }
        let fw = format!("{}/.forward", u.home);
        match f.get(&fw) {
            Some(Ok(body)) => b.forward(u.index, &fw, Ok(body.as_bytes())),
            Some(Err(e)) => b.forward(u.index, &fw, Err(e.clone())),
            None => {}
        }
    }
    b.finish()
}

/// A plan in one line: `forward: T..`, `split: T.. | U..`, `punt: CODE..` or `-` for none.
pub fn summarize(plan: Option<&Plan>) -> String {
    let Some(p) = plan else {
        return "-".to_string();
    };
    match p.class {
        Class::Forward => format!("forward: {}", p.forward.join(" ")),
        Class::Split => format!("split: {} | {}", p.forward.join(" "), p.punt.join(" ")),
        Class::Punt => {
            let mut codes: Vec<String> = p
                .reasons
                .iter()
                .map(|r| {
                    serde_json::to_string(&r.code)
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string()
                })
                .collect();
            codes.sort();
            codes.dedup();
            format!("punt: {}", codes.join(" "))
        }
    }
}

/// A model primary edited at random, one line at a time (for property tests here and in the
/// server's).
pub mod model {
    use proptest::prelude::*;

    /// The editable files of the model primary.
    pub const FILES: [&str; 7] = [
        "aliases",
        "virtual",
        "recipients",
        "/lists/x",
        "/lists/y",
        "/home/bob/.forward",
        "/home/carol/.procmailrc",
    ];

    /// A random line of file `file` (an index into [`FILES`]).
    pub fn line(file: usize) -> BoxedStrategy<String> {
        let name = (0..12u8).prop_map(|i| format!("n{i}"));
        let target = prop_oneof![
            3 => (0..5u8).prop_map(|i| format!("r{i}@remote.net")),
            2 => (0..12u8).prop_map(|i| format!("n{i}")),
            1 => prop_oneof![
                Just(":include:/lists/x"), Just(":include:/lists/y"), Just("\"|/bin/prog\""),
                Just("/var/file"), Just("alice"), Just("bob"), Just(":blackhole:"),
            ].prop_map(String::from),
        ];
        let targets = prop::collection::vec(target, 1..4).prop_map(|t| t.join(", "));
        match file {
            0 => prop_oneof![
                8 => (name, targets).prop_map(|(n, t)| format!("{n}: {t}")),
                1 => Just("# a comment".to_string()),
                1 => Just("broken line".to_string()),
            ]
            .boxed(),
            1 => ((0..6u8), targets)
                .prop_map(|(i, t)| format!("v{i}@example.org {t}"))
                .boxed(),
            2 => (0..6u8).prop_map(|i| format!("box{i}@example.org")).boxed(),
            _ => targets.boxed(),
        }
    }

    /// One edit: insert, remove or replace a line of a file (positions taken modulo length).
    #[derive(Debug, Clone)]
    pub enum Edit {
        /// Insert line (file, position, text).
        Insert(usize, usize, String),
        /// Remove line (file, position).
        Remove(usize, usize),
        /// Replace line (file, position, text).
        Replace(usize, usize, String),
    }

    /// A random edit.
    pub fn edit() -> impl Strategy<Value = Edit> {
        (0..FILES.len()).prop_flat_map(|f| {
            prop_oneof![
                3 => (any::<usize>(), line(f)).prop_map(move |(at, l)| Edit::Insert(f, at, l)),
                1 => any::<usize>().prop_map(move |at| Edit::Remove(f, at)),
                2 => (any::<usize>(), line(f)).prop_map(move |(at, l)| Edit::Replace(f, at, l)),
            ]
        })
    }

    /// The fixture text of the files.
    pub fn fixture(files: &[Vec<String>]) -> String {
        let mut out = String::new();
        for (name, lines) in FILES.iter().zip(files) {
            if !lines.is_empty() {
                out.push_str(&format!("== {name}\n"));
                for l in lines {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Applies `e` to `files`.
    pub fn edit_files(files: &mut [Vec<String>], e: &Edit) {
        match e {
            Edit::Insert(f, at, l) => {
                let at = at % (files[*f].len() + 1);
                files[*f].insert(at, l.clone());
            }
            Edit::Remove(f, at) if !files[*f].is_empty() => {
                let at = at % files[*f].len();
                files[*f].remove(at);
            }
            Edit::Replace(f, at, l) if !files[*f].is_empty() => {
                let at = at % files[*f].len();
                files[*f][at] = l.clone();
            }
            _ => {}
        }
    }

    /// The content of the model primary after `edits`, from empty files.
    pub fn content_after(edits: &[Edit]) -> crate::snapshot::Content {
        let mut files = vec![Vec::new(); FILES.len()];
        edits.iter().for_each(|e| edit_files(&mut files, e));
        super::content(&fixture(&files))
    }

    /// Brings the model primary to `start`, then makes each of `edits` in turn, calling `step`
    /// with the content before and after each one; stops at the first error.
    pub fn walk<E>(
        start: &[Edit],
        edits: &[Edit],
        mut step: impl FnMut(&crate::snapshot::Content, &crate::snapshot::Content) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut files = vec![Vec::new(); FILES.len()];
        start.iter().for_each(|e| edit_files(&mut files, e));
        let mut old = super::content(&fixture(&files));
        for e in edits {
            edit_files(&mut files, e);
            let new = super::content(&fixture(&files));
            step(&old, &new)?;
            old = new;
        }
        Ok(())
    }
}
