//! `mxsync-agent run` and `once`: collect, version, sign and push; watch and heartbeat.
//!
//! One task owns the state. The `notify` callback only forwards events into a channel; every
//! event is a hint to read the sources again and re-hash (after `debounce_ms` of quiet), and a
//! full rescan runs every `rescan_secs` whatever the events said, so a lost event or an inotify
//! limit can delay a change but never lose it. Parent directories are watched (editors and
//! `postalias`-style tools replace files by rename; a file may not exist yet), and the watch set
//! follows the collected paths as aliases start or stop naming `:include:` files.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use notify::Watcher;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::collect::{Cache, Changed, Collected, collect, collect_with, named};
use crate::config::Config;
use crate::push::{Control, Current, Outcome, Target, receiver_loop};
use crate::state::Counters;

/// Builds the per-receiver targets (one HTTP client each, built once, with timeouts).
pub fn targets(cfg: &Config) -> anyhow::Result<Vec<Target>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut out = Vec::new();
    for r in &cfg.receivers {
        let key = crate::config::read_secret(&r.key_file).map_err(anyhow::Error::msg)?;
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300));
        if let Some(ca) = &r.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("parsing {}", ca.display()))?;
            b = b.tls_certs_only([cert]);
        }
        out.push(Target {
            url: r.url.trim_end_matches('/').to_string(),
            key: key.into_bytes(),
            agent: cfg.agent_id.clone(),
            client: b
                .build()
                .with_context(|| format!("building the http client for {}", r.url))?,
            json_since: Arc::default(),
            binary_retry: crate::push::BINARY_RETRY,
        });
    }
    Ok(out)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The snapshot of `content` (whose hash is `hash`) at `version`, patched from the content
/// whose hash `since` names with its changes, if it was. Its full body is encoded when a
/// receiver first needs it.
pub fn current(
    agent: &str,
    version: u64,
    content: Arc<proto::Content>,
    hash: String,
    since: Option<(String, Arc<proto::delta::Changes>)>,
) -> Current {
    Current {
        version,
        hash,
        agent: agent.to_string(),
        created_at: now_secs(),
        body: std::sync::OnceLock::new(),
        content,
        since,
    }
}

async fn collect_async(cfg: &Arc<Config>) -> anyhow::Result<Collected> {
    let c = Arc::clone(cfg);
    tokio::task::spawn_blocking(move || collect(&c.domains(), &c.sources))
        .await
        .context("collect task")
}

/// Collects with `cache`, given the paths events named since the last collection.
async fn collect_cached(
    cfg: &Arc<Config>,
    mut cache: Cache,
    changed: Changed,
) -> anyhow::Result<(Collected, Cache)> {
    let c = Arc::clone(cfg);
    tokio::task::spawn_blocking(move || {
        let got = collect_with(&c.domains(), &c.sources, &mut cache, &changed);
        (got, cache)
    })
    .await
    .context("collect task")
}

/// Records what `ev` says changed: its paths, or everything when the watcher lost events.
fn note(changed: &mut Changed, ev: &notify::Event) {
    if ev.need_rescan() {
        *changed = None;
    } else if let Some(set) = changed {
        set.extend(ev.paths.iter().cloned());
    }
}

/// Waits for quiet after a change (`first`, already noted): until `debounce` passes without a
/// relevant event and every file written since has been closed by its writer (a file written in
/// several steps, or truncated and then written at length, is read once it is whole, not
/// halfway), or at most [`settle_cap`]`(debounce)` after the call, so a file that never stops
/// changing, or a writer that keeps it open, still has it read. Every event that wakes the agent
/// is noted in `changed`.
async fn settle(
    rx: &mut mpsc::UnboundedReceiver<notify::Event>,
    changed: &mut Changed,
    paths: &BTreeSet<PathBuf>,
    debounce: Duration,
    first: &notify::Event,
) {
    let now = tokio::time::Instant::now();
    let give_up = now + settle_cap(debounce);
    let mut quiet = now + debounce;
    let mut writing = BTreeSet::new();
    track(&mut writing, first);
    loop {
        let until = if writing.is_empty() { quiet } else { give_up };
        tokio::select! {
            _ = tokio::time::sleep_until(until.min(give_up)) => return,
            more = rx.recv() => match more {
                // Only what can change a collected path is noted: the agent's own reads of
                // the last collection are reported too, and would keep the next from being a
                // patch.
                Some(ev) => {
                    if wakes(&ev, paths) {
                        note(changed, &ev);
                        track(&mut writing, &ev);
                        quiet = tokio::time::Instant::now() + debounce;
                    }
                }
                None => return,
            },
        }
    }
}

/// Keeps `writing`, the paths written (or truncated) and not yet closed by their writer, up to
/// date with `ev`.
fn track(writing: &mut BTreeSet<PathBuf>, ev: &notify::Event) {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match ev.kind {
        EventKind::Modify(ModifyKind::Data(_)) => writing.extend(ev.paths.iter().cloned()),
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Remove(_)
        | EventKind::Modify(ModifyKind::Name(_)) => {
            ev.paths.iter().for_each(|p| {
                writing.remove(p);
            });
        }
        _ => {}
    }
}

/// The longest [`settle`] waits: ten debounce periods, and at least a second.
fn settle_cap(debounce: Duration) -> Duration {
    (debounce * 10).max(Duration::from_secs(1))
}

/// The directory to watch for `p`: its parent (or, where that does not exist yet, the nearest
/// existing ancestor), or `p` itself if it is a directory (glob patterns).
fn watch_dir(p: &Path) -> Option<PathBuf> {
    let mut dir = if p.is_dir() {
        p.to_path_buf()
    } else {
        p.parent()?.to_path_buf()
    };
    while !dir.is_dir() {
        dir = dir.parent()?.to_path_buf();
    }
    Some(dir)
}

/// Past this many paths named by events, every watch directory is looked for again.
const FEW_CHANGED: usize = 64;

/// Whether an event makes the agent collect again: a relevant change, or a lost event queue.
fn wakes(event: &notify::Event, paths: &BTreeSet<PathBuf>) -> bool {
    relevant(event, paths) || event.need_rescan()
}

/// Whether a file event can mean that a collected path changed: it names a collected path, a
/// directory on the way to one, or an entry of a collected directory (glob patterns), and it is
/// not a mere access. Opening, reading and closing a file unwritten change nothing, and the
/// agent's own reads would otherwise wake it up again, for ever.
fn relevant(event: &notify::Event, paths: &BTreeSet<PathBuf>) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    if let EventKind::Access(a) = event.kind
        && a != AccessKind::Close(AccessMode::Write)
    {
        return false;
    }
    event.paths.iter().any(|p| {
        // Paths order by component, so the ones under `p` follow it.
        paths
            .range(p.clone()..)
            .next()
            .is_some_and(|w| w.starts_with(p))
            || p.parent().is_some_and(|d| paths.contains(d))
    })
}

/// The watcher and the directories it watches.
struct Watches {
    watcher: notify::RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
    /// Each collected path's watch directory, as last looked for.
    of: HashMap<PathBuf, Option<PathBuf>>,
    /// How many directories could not be watched at the last update (to warn once per change).
    failed: usize,
}

impl Watches {
    /// Watches the directories `paths` need. A path's directory is looked for again (a few
    /// `stat`s) only when it is new, or events named it or a directory above it (`since`, as
    /// for the collection: None is everything); otherwise it is what it was. `same`: `paths`
    /// are the ones of the last update.
    fn update(&mut self, paths: &BTreeSet<PathBuf>, since: &Changed, same: bool) {
        let since = since.as_ref().filter(|s| s.len() <= FEW_CHANGED);
        if same && let Some(s) = since {
            // Only the paths under what events named can have moved.
            let mut moved = false;
            for c in s {
                for p in paths.range(c.clone()..).take_while(|p| p.starts_with(c)) {
                    let dir = watch_dir(p);
                    if self.of.get(p) != Some(&dir) {
                        self.of.insert(p.clone(), dir);
                        moved = true;
                    }
                }
            }
            if !moved {
                return;
            }
        }
        let mut of = HashMap::with_capacity(paths.len());
        for p in paths {
            let dir = match self.of.remove(p) {
                Some(d) if since.is_some_and(|s| !named(s, p)) => d,
                _ => watch_dir(p),
            };
            of.insert(p.clone(), dir);
        }
        self.of = of;
        let want: BTreeSet<PathBuf> = self.of.values().flatten().cloned().collect();
        for gone in self.dirs.difference(&want) {
            let _ = self.watcher.unwatch(gone);
        }
        let mut added = BTreeSet::new();
        let mut failed = 0usize;
        let mut first = None;
        for new in want.difference(&self.dirs) {
            match self.watcher.watch(new, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    added.insert(new.clone());
                }
                Err(e) => {
                    failed += 1;
                    first.get_or_insert_with(|| format!("{}: {e}", new.display()));
                }
            }
        }
        // One line, and only when the count changes: a primary with many homes can exceed the
        // inotify watch limit, and the periodic rescan still finds every change there.
        if failed != self.failed {
            if let Some(first) = first {
                tracing::warn!(
                    failed,
                    first,
                    "cannot watch some directories (raise fs.inotify.max_user_watches); changes there are found by the periodic rescan"
                );
            }
            self.failed = failed;
        }
        self.dirs.retain(|d| want.contains(d));
        self.dirs.extend(added);
    }
}

/// Runs the agent until `shutdown`: watch, collect, push to every receiver, heartbeat.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_reloading(cfg, shutdown, mpsc::unbounded_channel().1).await
}

/// What the receiver loops share with the owning loop.
struct Pushing {
    current: watch::Receiver<Option<Arc<Current>>>,
    control: mpsc::UnboundedSender<Control>,
    counters: Arc<Mutex<Counters>>,
    tracker: TaskTracker,
}

impl Pushing {
    /// One loop per target of `cfg`, until `stop`.
    fn spawn(&self, targets: Vec<Target>, cfg: &Config, stop: &CancellationToken) {
        for t in targets {
            self.tracker.spawn(receiver_loop(
                t,
                self.current.clone(),
                self.control.clone(),
                Arc::clone(&self.counters),
                Duration::from_secs(cfg.timing.heartbeat_secs),
                stop.clone(),
            ));
        }
    }
}

/// Whether two parts of a configuration differ (compared as they would be written).
fn differs<T: serde::Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() != serde_json::to_value(b).ok()
}

/// Like [`run`], and each configuration that comes on `reloads` (SIGHUP) is put in force
/// without a restart: new receivers, keys or heartbeat restart the receiver loops (each pushes
/// the current snapshot once); new sources or domains are read at once. `agent_id` and
/// `state_dir` keep their running values until a restart. A configuration whose keys or
/// certificates cannot be read is refused whole, and the running one stays.
pub async fn run_reloading(
    cfg: Config,
    shutdown: CancellationToken,
    mut reloads: mpsc::UnboundedReceiver<Config>,
) -> anyhow::Result<()> {
    let mut cfg = Arc::new(cfg);
    let counters = Arc::new(Mutex::new(Counters::load(&cfg.state_dir)?));
    let first = targets(&cfg)?;
    let (cur_tx, cur_rx) = watch::channel::<Option<Arc<Current>>>(None);
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Control>();
    let tracker = TaskTracker::new();
    let pushing = Pushing {
        current: cur_rx,
        control: ctl_tx,
        counters: Arc::clone(&counters),
        tracker: tracker.clone(),
    };
    let mut receivers = shutdown.child_token();
    pushing.spawn(first, &cfg, &receivers);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<notify::Event>();
    let watcher = notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
        if let Ok(e) = r {
            let _ = ev_tx.send(e);
        }
    })
    .context("starting the file watcher")?;
    let mut watches = Watches {
        watcher,
        dirs: BTreeSet::new(),
        of: HashMap::new(),
        failed: 0,
    };
    let mut debounce = Duration::from_millis(cfg.timing.debounce_ms);
    let mut rescan = Duration::from_secs(cfg.timing.rescan_secs);
    tracing::info!(
        agent = cfg.agent_id,
        receivers = cfg.receivers.len(),
        "mxsync-agent started"
    );

    let mut paths = Arc::new(BTreeSet::new());
    let mut dirty = true;
    let mut next_rescan = tokio::time::Instant::now() + rescan;
    // What was read last, and the paths events named since (None: read everything again).
    let mut cache = Cache::default();
    let mut changed: Changed = None;
    let mut ready = false;
    // WATCHDOG=1 from this loop (under a unit with WatchdogSec=): a loop stuck in a collection
    // or a select stops it.
    let mut watchdog = tokio::time::interval(Duration::from_secs(5));
    loop {
        if dirty {
            dirty = false;
            let since = changed.replace(BTreeSet::new());
            let began = std::time::Instant::now();
            let (c, kept) = collect_cached(&cfg, std::mem::take(&mut cache), since.clone()).await?;
            cache = kept;
            let collected = began.elapsed();
            let same_paths = Arc::ptr_eq(&c.paths, &paths) || c.paths == paths;
            watches.update(&c.paths, &since, same_paths);
            let watched = began.elapsed();
            let patched = c.patched();
            paths = c.paths;
            let fresh = c.content;
            let hash = {
                let f = Arc::clone(&fresh);
                tokio::task::spawn_blocking(move || f.hash()).await?
            };
            let same = cur_tx.borrow().as_ref().is_some_and(|cur| cur.hash == hash);
            if same {
                let ms = began.elapsed().as_millis() as u64;
                tracing::debug!(ms, "collected again; nothing changed");
            }
            if !same {
                let version = {
                    let counters = Arc::clone(&counters);
                    let h = hash.clone();
                    tokio::task::spawn_blocking(move || crate::lock(&counters).observe(&h))
                        .await??
                };
                // The changes of a patch stand for a diff against the snapshot it was patched
                // from: the one being pushed, when it holds that very content.
                let since = c.since.and_then(|(from, changes)| {
                    let last = cur_tx.borrow();
                    let last = last.as_ref().filter(|l| Arc::ptr_eq(&l.content, &from))?;
                    Some((last.hash.clone(), changes))
                });
                let cur = current(
                    &cfg.agent_id,
                    version,
                    Arc::clone(&fresh),
                    hash.clone(),
                    since,
                );
                tracing::info!(
                    version,
                    hash = &hash[..16],
                    diagnostics = fresh.diagnostics.len(),
                    ms = began.elapsed().as_millis() as u64,
                    collect_ms = collected.as_millis() as u64,
                    watch_ms = (watched - collected).as_millis() as u64,
                    patched,
                    in_place = c.in_place,
                    "new snapshot"
                );
                cur_tx.send_replace(Some(Arc::new(cur)));
            }
            // Under a Type=notify unit: started once the first snapshot is made.
            if let Some(cur) = cur_tx.borrow().as_ref() {
                let status = format!("snapshot version {} hash {}", cur.version, &cur.hash[..16]);
                let mut states = vec![sd_notify::NotifyState::Status(&status)];
                if !ready {
                    ready = true;
                    states.push(sd_notify::NotifyState::Ready);
                }
                if let Err(e) = sd_notify::notify(&states) {
                    tracing::warn!(error = %e, "cannot notify systemd");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(ev) = ev_rx.recv() => {
                if wakes(&ev, &paths) {
                    tracing::debug!(paths = ?ev.paths, kind = ?ev.kind, "change noticed");
                    note(&mut changed, &ev);
                    settle(&mut ev_rx, &mut changed, &paths, debounce, &ev).await;
                    dirty = true;
                }
            }
            _ = watchdog.tick() => {
                if ready {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            _ = tokio::time::sleep_until(next_rescan) => {
                next_rescan = tokio::time::Instant::now() + rescan;
                // The safety net for lost events: everything is read again.
                changed = None;
                dirty = true;
            }
            Some(mut new) = reloads.recv() => {
                let mut kept = Vec::new();
                if new.agent_id != cfg.agent_id {
                    kept.push("agent_id");
                    new.agent_id.clone_from(&cfg.agent_id);
                }
                if new.state_dir != cfg.state_dir {
                    kept.push("state_dir");
                    new.state_dir.clone_from(&cfg.state_dir);
                }
                if differs(&new.receivers, &cfg.receivers)
                    || new.timing.heartbeat_secs != cfg.timing.heartbeat_secs
                {
                    let fresh = match targets(&new) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "configuration not reloaded; the running one stays");
                            continue;
                        }
                    };
                    receivers.cancel();
                    receivers = shutdown.child_token();
                    pushing.spawn(fresh, &new, &receivers);
                }
                if differs(&new.sources, &cfg.sources) || new.domains != cfg.domains {
                    cache = Cache::default();
                    changed = None;
                    dirty = true;
                }
                debounce = Duration::from_millis(new.timing.debounce_ms);
                rescan = Duration::from_secs(new.timing.rescan_secs);
                next_rescan = tokio::time::Instant::now() + rescan;
                cfg = Arc::new(new);
                tracing::info!(receivers = cfg.receivers.len(), "configuration reloaded");
                if !kept.is_empty() {
                    tracing::warn!(settings = ?kept, "these changed settings keep their running value until a restart");
                }
            }
            Some(Control::RaiseAbove(v)) = ctl_rx.recv() => {
                let content = cur_tx.borrow().as_ref().map(|c| (Arc::clone(&c.content), c.hash.clone(), c.since.clone()));
                if let Some((c, hash, since)) = content {
                    let counters2 = Arc::clone(&counters);
                    let version = tokio::task::spawn_blocking(move || crate::lock(&counters2).raise_above(v)).await??;
                    let cur_version = cur_tx.borrow().as_ref().map_or(0, |c| c.version);
                    if version != cur_version {
                        tracing::info!(version, "version moved above the receiver's");
                        cur_tx.send_replace(Some(Arc::new(current(&cfg.agent_id, version, c, hash, since))));
                    }
                }
            }
        }
    }
    tracing::info!("mxsync-agent stop requested");
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight pushes abandoned after 10 s");
    }
    tracing::info!("mxsync-agent stopped");
    Ok(())
}

/// Collects once and pushes to every receiver; `Ok(true)` only if every receiver accepted.
pub async fn once(cfg: Config) -> anyhow::Result<bool> {
    let cfg = Arc::new(cfg);
    let counters = Arc::new(Mutex::new(Counters::load(&cfg.state_dir)?));
    let c = collect_async(&cfg).await?;
    let content = c.content;
    let hash = content.hash();
    let mut version = crate::lock(&counters).observe(&hash)?;
    let mut ok = true;
    for t in targets(&cfg)? {
        let mut attempts = 0;
        let mut backoff = crate::push::Backoff::new(7, Duration::from_secs(2));
        loop {
            attempts += 1;
            let cur = Arc::new(current(
                &cfg.agent_id,
                version,
                Arc::clone(&content),
                hash.clone(),
                None,
            ));
            match t.push(&cur, None, &counters).await {
                Outcome::Accepted => {
                    println!("{}: accepted version {version}", t.url);
                    break;
                }
                Outcome::Conflict(v) if attempts < 3 => {
                    version = crate::lock(&counters).raise_above(v)?;
                }
                Outcome::Retry(e) if attempts < 4 => {
                    tracing::warn!(receiver = t.url, error = e, "push failed; retrying");
                    tokio::time::sleep(backoff.delay()).await;
                }
                other => {
                    println!("{}: not accepted: {other}", t.url);
                    ok = false;
                    break;
                }
            }
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests;
