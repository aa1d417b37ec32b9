//! The store's schema: its migrations, in order, and the query that follows a snapshot's chain.

/// Schema migrations, in order; the index + 1 is the version they lead to.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL DEFAULT 0,
    last_contact_at INTEGER,
    reported_version INTEGER,
    reported_hash TEXT,
    applied_snapshot INTEGER,
    applied_version INTEGER,
    applied_hash TEXT,
    applied_at INTEGER,
    applied_addresses INTEGER,
    held_snapshot INTEGER,
    release_requested INTEGER NOT NULL DEFAULT 0,
    problem TEXT,
    state TEXT NOT NULL DEFAULT 'never'
);
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    applied_at INTEGER,
    outcome TEXT NOT NULL,
    detail TEXT,
    addresses INTEGER,
    forward INTEGER,
    split INTEGER,
    punt INTEGER,
    body BLOB
);
CREATE INDEX snapshots_by_agent ON snapshots (agent, id);
"#,
    r#"
ALTER TABLE snapshots ADD COLUMN base INTEGER;
"#,
    // Bodies in a table of their own: SQLite writes a row again whole when it is updated, and
    // a full snapshot's body is 30 MiB at a million aliases, so recording an apply (outcome,
    // counts) on its row cost a rewrite of the body. Only kept bodies have a row here.
    r#"
CREATE TABLE bodies (
    snapshot INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
INSERT INTO bodies (snapshot, body) SELECT id, body FROM snapshots WHERE body IS NOT NULL;
ALTER TABLE snapshots DROP COLUMN body;
"#,
];

/// A common table expression `name(id)` for a `WITH RECURSIVE` clause: the rows `seed` (a
/// subquery or a parameter) names, and the base of each of them, down to full bodies. These
/// are the rows the seed rows' contents are rebuilt from.
pub(super) fn chain_cte(name: &str, seed: &str) -> String {
    format!(
        "{name}(id) AS (SELECT id FROM snapshots WHERE id IN ({seed})
           UNION SELECT s.base FROM snapshots s JOIN {name} c ON s.id = c.id WHERE s.base IS NOT NULL)"
    )
}
