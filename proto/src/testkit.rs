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

pub(crate) const DOMAINS: [&str; 2] = ["example.org", "example.com"];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
bob:x:1001:1001:Bob:/home/bob:/bin/sh\n\
carol:x:1002:1002:Carol:/home/carol:/bin/sh\n";

/// Files of a fixture: path -> Ok(body) or Err(read error).
pub(crate) fn files(fixture: &str) -> BTreeMap<String, Result<String, String>> {
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
pub(crate) fn content(fixture: &str) -> Content {
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
pub(crate) fn summarize(plan: Option<&Plan>) -> String {
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
