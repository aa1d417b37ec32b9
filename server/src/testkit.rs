//! Test support: a server on a temporary directory with one agent, signed requests, snapshots
//! built from aliases text, and readers for the live maps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Loaded;
use crate::store::Store;
use crate::{Server, maps};

pub(crate) const KEY: &str = "0123456789abcdef0123456789abcdef-mx1";
pub(crate) const READ: &str = "read-token-0123456789abcdef0123456789";

pub(crate) struct Harness {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) server: Arc<Server>,
    pub(crate) seq: u64,
}

pub(crate) fn write_secret(path: &Path, s: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, s).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The config text of a test server; `extra` is appended (tables of its own).
pub(crate) fn config_text(extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\nread_token_file = \"read.token\"\n\
         max_body_bytes = 1000000\n\
         [[agents]]\nid = \"mx1\"\nkey_file = \"mx1.key\"\ndomains = [\"example.org\", \"example.com\"]\nprimary = \"[127.0.0.1]:2525\"\n\
         [output]\ndir = \"maps\"\n{extra}"
    )
}

pub(crate) fn load(dir: &Path, extra: &str) -> Loaded {
    write_secret(&dir.join("mx1.key"), KEY);
    write_secret(&dir.join("read.token"), READ);
    let path = dir.join("server.toml");
    std::fs::write(&path, config_text(extra)).unwrap();
    Loaded::load(&path).unwrap()
}

impl Harness {
    pub(crate) fn new(extra: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let cfg = load(dir.path(), extra);
        let server = Server::with_store(cfg, Store::open_in_memory().unwrap()).unwrap();
        Harness {
            dir,
            server,
            seq: 0,
        }
    }

    pub(crate) fn maps_dir(&self) -> PathBuf {
        self.dir.path().join("maps")
    }

    /// The live text maps, by name (empty before the first apply). Each one's CDB table, when there is one, is checked
    /// against the text on the way: the same entries, in the same order.
    pub(crate) fn maps(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut tables = BTreeMap::new();
        if let Some(cur) = maps::current(&self.maps_dir()) {
            for f in ["postfix", "exim"] {
                for e in std::fs::read_dir(cur.join(f))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let name = format!("{f}/{}", e.file_name().to_string_lossy());
                    match name.strip_suffix(".cdb") {
                        Some(map) => {
                            tables.insert(map.to_string(), e.path());
                        }
                        None => {
                            out.insert(name, std::fs::read(e.path()).unwrap());
                        }
                    }
                }
            }
        }
        for (name, path) in tables {
            let text = String::from_utf8(out[&name].clone()).unwrap();
            let expected: Vec<(String, String)> = (text.lines())
                .filter(|l| !l.starts_with('#'))
                .map(|l| {
                    let (k, v) = crate::render::table_entry(&name, l);
                    (k.into_owned(), v.to_string())
                })
                .collect();
            let got: Vec<(String, String)> = (cdb2::CDB::open(&path).unwrap().iter())
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
                })
                .collect();
            assert_eq!(got, expected, "{name}.cdb against {name}");
        }
        out
    }

    pub(crate) fn map(&self, name: &str) -> String {
        String::from_utf8(self.maps().remove(name).unwrap_or_default()).unwrap()
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

/// Content of a primary with `aliases` at example.org and example.com.
pub(crate) fn content(aliases: &str) -> proto::Content {
    let mut b = proto::Builder::new(&["example.org".to_string(), "example.com".to_string()]);
    b.aliases("/etc/aliases", aliases.as_bytes());
    b.finish()
}

/// A snapshot of `aliases` as agent mx1 at `version`.
pub(crate) fn snapshot(aliases: &str, version: u64) -> proto::Snapshot {
    let content = content(aliases);
    proto::Snapshot {
        format: proto::snapshot::FORMAT,
        agent: "mx1".into(),
        version,
        hash: content.hash(),
        created_at: 0,
        content,
    }
}
