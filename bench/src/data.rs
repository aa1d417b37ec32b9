//! Deterministic generated primaries: the same `n` always gives the same bytes.
//!
//! The mix resembles a large site: mostly users forwarded off-site, mailing lists that mix remote
//! members, local users and other aliases, nested aliases, `:include:` lists, pipes and files,
//! the `list` + `list-archive` split pattern, and local users with `.forward` and `.procmailrc`.

use std::path::Path;

/// A small, fast, deterministic generator (xorshift64*).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A generated primary, in memory.
pub(crate) struct Primary {
    /// The aliases file.
    pub(crate) aliases: Vec<u8>,
    /// `:include:` files: absolute path (under `root`) and body.
    pub(crate) includes: Vec<(String, Vec<u8>)>,
    /// The passwd file (homes under `root/home`).
    pub(crate) passwd: Vec<u8>,
    /// `.forward` files: user and body.
    pub(crate) forwards: Vec<(String, Vec<u8>)>,
    /// Users with a `.procmailrc`.
    pub(crate) procmail: Vec<String>,
    /// Number of aliases.
    pub(crate) n: usize,
}

/// The served domain of generated primaries.
pub(crate) const DOMAIN: &str = "example.org";

/// Generates a primary with `n` aliases whose include files and homes live under `root`.
pub(crate) fn primary(n: usize, root: &str) -> Primary {
    let mut r = Rng::new(0x6d78_7379_6e63);
    let users = (n / 20).max(10);
    let mut aliases = Vec::with_capacity(n * 48);
    let mut includes = Vec::new();
    let mut passwd = Vec::new();
    let mut forwards = Vec::new();
    let mut procmail = Vec::new();
    for u in 0..users {
        passwd.extend_from_slice(
            format!("user{u}:x:{}:100::{root}/home/user{u}:/bin/sh\n", 1000 + u).as_bytes(),
        );
        match u % 10 {
            0 => forwards.push((
                format!("user{u}"),
                format!("user{u}@home{}.example\n", u % 97).into_bytes(),
            )),
            1 => forwards.push((format!("user{u}"), b"\"|/usr/bin/vacation\"\n".to_vec())),
            2 => procmail.push(format!("user{u}")),
            _ => {}
        }
    }
    let remote = |r: &mut Rng| {
        format!(
            "p{}.q{}@mx{}.remote{}.example",
            r.below(100_000),
            r.below(1000),
            r.below(10),
            r.below(300)
        )
    };
    let mut i = 0;
    while i < n {
        let kind = r.below(100);
        let line = match kind {
            0..=44 => format!("a{i}: {}\n", remote(&mut r)),
            45..=59 => {
                let members = 3 + r.below(6);
                let mut m: Vec<String> = Vec::new();
                for _ in 0..members {
                    m.push(match r.below(4) {
                        0 => format!("user{}", r.below(users as u64)),
                        1 if i > 0 => format!("a{}", r.below(i as u64)),
                        _ => remote(&mut r),
                    });
                }
                format!("a{i}: {}\n", m.join(",\n  "))
            }
            60..=71 => format!("a{i}: a{}\n", if i > 0 { r.below(i as u64) } else { 0 }),
            72..=74 => {
                let path = format!("{root}/lists/l{i}");
                let mut body = String::new();
                for _ in 0..(2 + r.below(10)) {
                    body.push_str(&remote(&mut r));
                    body.push('\n');
                }
                includes.push((path.clone(), body.into_bytes()));
                format!("a{i}: :include:{path}\n")
            }
            75..=77 => format!("a{i}: \"|/usr/local/bin/handler a{i}\"\n"),
            78..=80 => format!("a{i}: /var/spool/archive/a{i}\n"),
            81..=89 if i + 1 < n => {
                let s = format!(
                    "a{i}: {}, {}, a{}\na{}: /var/archive/a{i}\n",
                    remote(&mut r),
                    remote(&mut r),
                    i + 1,
                    i + 1
                );
                i += 1;
                s
            }
            _ => format!("a{i}: user{}\n", r.below(users as u64)),
        };
        aliases.extend_from_slice(line.as_bytes());
        i += 1;
    }
    Primary {
        aliases,
        includes,
        passwd,
        forwards,
        procmail,
        n,
    }
}

impl Primary {
    /// Builds the snapshot content as the agent would, from memory.
    pub(crate) fn content(&self, root: &str) -> proto::Content {
        let mut b = proto::Builder::new(&[DOMAIN.to_string()]);
        b.aliases(&format!("{root}/aliases"), &self.aliases);
        let inc: std::collections::HashMap<&str, &[u8]> = self
            .includes
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        loop {
            let pending = b.pending_includes();
            if pending.is_empty() {
                break;
            }
            let batch: Vec<(String, Result<&[u8], String>)> = (pending.into_iter())
                .map(|p| {
                    let body = inc.get(p.as_str()).copied();
                    (p, body.ok_or_else(|| "no such file".to_string()))
                })
                .collect();
            b.includes(&batch);
        }
        let fw: std::collections::HashMap<&str, &[u8]> = self
            .forwards
            .iter()
            .map(|(u, b)| (u.as_str(), b.as_slice()))
            .collect();
        let rc: std::collections::HashSet<&str> =
            self.procmail.iter().map(String::as_str).collect();
        for u in b.passwd(&format!("{root}/passwd"), &self.passwd, 1000) {
            if rc.contains(u.name.as_str()) {
                b.procmail(u.index, &format!("{}/.procmailrc", u.home));
            }
            if let Some(body) = fw.get(u.name.as_str()) {
                b.forward(u.index, &format!("{}/.forward", u.home), Ok(body));
            }
        }
        b.finish()
    }

    /// Writes the primary under `root`: `aliases`, `passwd`, `lists/`, `home/*/`.
    pub(crate) fn write(&self, root: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(root.join("lists"))?;
        std::fs::write(root.join("aliases"), &self.aliases)?;
        std::fs::write(root.join("passwd"), &self.passwd)?;
        for (p, b) in &self.includes {
            std::fs::write(p, b)?;
        }
        for (u, b) in &self.forwards {
            let home = root.join("home").join(u);
            std::fs::create_dir_all(&home)?;
            std::fs::write(home.join(".forward"), b)?;
        }
        for u in &self.procmail {
            let home = root.join("home").join(u);
            std::fs::create_dir_all(&home)?;
            std::fs::write(home.join(".procmailrc"), ":0\n")?;
        }
        Ok(())
    }
}
