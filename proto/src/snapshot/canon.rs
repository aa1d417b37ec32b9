//! The canonical encoding a content's hash is taken over (and the binary body carries):
//! every list in order, each string with its length, hashed beside the encoding on another
//! thread for a large content.

use sha2::{Digest, Sha256};

use super::{Content, FORMAT, Target};

impl Content {
    /// SHA-256 over the canonical encoding, lowercase hex. Call on normalized content.
    ///
    /// A large content is encoded on this thread while another runs SHA-256 over what is
    /// encoded so far (each takes about half the time at a million aliases).
    pub fn hash(&self) -> String {
        self.hash_with(self.entries() >= HASH_BESIDE)
    }

    /// How many entries its lists hold: aliases, include files, virtual entries, recipients
    /// and users (what decides whether a step is worth a second thread).
    pub fn entries(&self) -> usize {
        self.aliases.len()
            + self.includes.len()
            + self.virtuals.len()
            + self.recipients.len()
            + self.users.len()
    }

    /// [`Content::hash`], with SHA-256 on another thread (`beside`) or on this one.
    pub(super) fn hash_with(&self, beside: bool) -> String {
        if !beside {
            let mut c = Canon::new(Out::Here(Sha256::new()));
            self.encode(&mut c);
            c.flush();
            let Out::Here(h) = c.out else {
                unreachable!("made with Out::Here")
            };
            return hex(&h.finalize());
        }
        let (full, chunks) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (give_back, empty) = std::sync::mpsc::channel::<Vec<u8>>();
        let encoding = || {
            let mut c = Canon::new(Out::Beside {
                full,
                empty: &empty,
            });
            self.encode(&mut c);
            c.flush();
            // The last chunk is sent; dropping the sender (with `c`) ends the hashing loop.
        };
        let hashing = move || {
            let mut h = Sha256::new();
            for mut chunk in chunks {
                h.update(&chunk);
                chunk.clear();
                let _ = give_back.send(chunk);
            }
            h.finalize()
        };
        let ((), digest) = crate::par::beside(encoding, hashing);
        hex(&digest)
    }

    /// The canonical encoding, into `c`.
    pub(super) fn encode(&self, c: &mut Canon<'_>) {
        c.bytes(b"mxsync-content");
        c.u32(FORMAT);
        c.strs(&self.domains);
        c.strs(&self.files);
        c.u64(self.aliases.len() as u64);
        for a in &self.aliases {
            c.str(&a.name);
            c.u32(a.file);
            c.u32(a.line);
            c.targets(&a.targets);
        }
        c.u64(self.includes.len() as u64);
        for i in &self.includes {
            c.str(&i.path);
            c.u32(i.file);
            c.targets(&i.targets);
            c.opt_str(i.error.as_deref());
        }
        c.u64(self.virtuals.len() as u64);
        for v in &self.virtuals {
            c.str(&v.key);
            c.u32(v.file);
            c.u32(v.line);
            c.targets(&v.targets);
        }
        c.u64(self.recipients.len() as u64);
        for r in &self.recipients {
            c.str(&r.address);
            c.u32(r.file);
            c.u32(r.line);
        }
        c.u64(self.users.len() as u64);
        for u in &self.users {
            c.str(&u.name);
            c.u32(u.file);
            c.u32(u.line);
            match u.procmail {
                Some(p) => {
                    c.u8(1);
                    c.u32(p);
                }
                None => c.u8(0),
            }
            match &u.forward {
                Some(fw) => {
                    c.u8(1);
                    c.u32(fw.file);
                    c.targets(&fw.targets);
                    c.u8(u8::from(fw.filter));
                    c.opt_str(fw.error.as_deref());
                }
                None => c.u8(0),
            }
        }
        c.u64(self.diagnostics.len() as u64);
        for d in &self.diagnostics {
            c.str(&d.file);
            c.u32(d.line);
            c.u8(d.severity as u8);
            c.str(&d.message);
        }
    }
}

/// Contents with at least this many entries are hashed on two threads.
pub(super) const HASH_BESIDE: usize = 50_000;
/// The encoding goes to SHA-256 in chunks of about this many bytes.
const CHUNK: usize = 1 << 16;

/// Where [`Canon`]'s chunks go: SHA-256 here, another thread running it, or a writer (the
/// binary body, see [`binary`]).
pub(super) enum Out<'a> {
    Here(Sha256),
    /// Written out; the first error is kept and ends the writing.
    Write(&'a mut dyn std::io::Write, Option<std::io::Error>),
    Beside {
        full: std::sync::mpsc::SyncSender<Vec<u8>>,
        /// Chunks the other thread hashed, for reuse.
        empty: &'a std::sync::mpsc::Receiver<Vec<u8>>,
    },
}

/// The canonical encoding, streamed straight into SHA-256: fixed-width little-endian integers,
/// length-prefixed strings and lists, one tag byte per enum.
pub(super) struct Canon<'a> {
    pub(super) out: Out<'a>,
    buf: Vec<u8>,
}

impl<'a> Canon<'a> {
    pub(super) fn new(out: Out<'a>) -> Self {
        Canon {
            out,
            buf: Vec::with_capacity(CHUNK),
        }
    }
    pub(super) fn flush_if_full(&mut self) {
        if self.buf.len() >= CHUNK {
            self.flush();
        }
    }
    /// Hands what is buffered on.
    pub(super) fn flush(&mut self) {
        match &mut self.out {
            Out::Write(w, err) => {
                if err.is_none()
                    && let Err(e) = w.write_all(&self.buf)
                {
                    *err = Some(e);
                }
                self.buf.clear();
            }
            Out::Here(h) => {
                h.update(&self.buf);
                self.buf.clear();
            }
            Out::Beside { full, empty } => {
                let next = empty
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                let chunk = std::mem::replace(&mut self.buf, next);
                // The other thread only stops by panicking, which its join passes on.
                let _ = full.send(chunk);
            }
        }
    }
    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.buf.extend_from_slice(b);
        self.flush_if_full();
    }
    pub(super) fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    pub(super) fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    pub(super) fn strs(&mut self, v: &[String]) {
        self.u64(v.len() as u64);
        for s in v {
            self.str(s);
        }
    }
    pub(super) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn targets(&mut self, ts: &[Target]) {
        self.u64(ts.len() as u64);
        for t in ts {
            self.u8(t.kind.tag());
            self.str(&t.value);
            self.u32(t.line);
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}
