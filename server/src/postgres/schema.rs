//! The tables in PostgreSQL (schema `mxsync`) and their migrations. Every MTA lookup is by
//! primary key: Postfix and Exim ask for one address or one domain at a time.

use tokio_postgres::Client;

/// Migrations, in order; the index + 1 is the version they lead to. Applied by the first
/// server that connects, under an advisory lock (an HA pair may start together).
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE mxsync.agents (
    agent text PRIMARY KEY,
    version bigint NOT NULL,
    hash text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE mxsync.domains (
    domain text PRIMARY KEY,
    agent text NOT NULL,
    transport text NOT NULL,
    route text NOT NULL
);
CREATE TABLE mxsync.recipients (
    address text PRIMARY KEY,
    agent text NOT NULL
);
CREATE INDEX recipients_agent ON mxsync.recipients (agent);
CREATE TABLE mxsync.forwards (
    address text PRIMARY KEY,
    agent text NOT NULL,
    targets text NOT NULL
);
CREATE INDEX forwards_agent ON mxsync.forwards (agent);
CREATE TABLE mxsync.deferred (
    domain text PRIMARY KEY
);
"#];

/// The schema version this server writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock of the schema's migrations (the first key of every lock mxsync takes).
pub const LOCK: i32 = 0x6d78;

/// Creates or migrates the schema; refuses a database whose schema is newer than this server.
pub async fn migrate(client: &mut Client) -> Result<(), super::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK])
        .await?;
    // A schema made beforehand by an administrator (README) needs no CREATE on the database.
    let made = (tx.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = 'mxsync'", &[]))
        .await?
        .is_some();
    if !made {
        tx.batch_execute("CREATE SCHEMA mxsync").await?;
    }
    tx.batch_execute("CREATE TABLE IF NOT EXISTS mxsync.schema_version (version integer NOT NULL)")
        .await?;
    let at: i64 = tx
        .query_opt("SELECT version FROM mxsync.schema_version", &[])
        .await?
        .map_or(0, |r| i64::from(r.get::<_, i32>(0)));
    if at > VERSION {
        return Err(super::Error::Newer(at));
    }
    for sql in &MIGRATIONS[at as usize..] {
        tx.batch_execute(sql).await?;
    }
    if at < VERSION {
        let v = VERSION as i32;
        tx.execute("DELETE FROM mxsync.schema_version", &[]).await?;
        tx.execute("INSERT INTO mxsync.schema_version VALUES ($1)", &[&v])
            .await?;
        tracing::info!(from = at, to = VERSION, "postgres: schema migrated");
    }
    tx.commit().await?;
    Ok(())
}
