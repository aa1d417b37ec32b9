//! Which file events wake the agent: table cases, and real inotify events on real files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind};
use notify::{Event, EventKind, Watcher};

use super::{relevant, settle, settle_cap};

fn collected() -> BTreeSet<PathBuf> {
    [
        "/etc/aliases",
        "/etc/lists/staff",
        "/home/ann/.forward",
        "/etc/postfix/virtual.d",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

fn check(kind: EventKind, path: &str, expected: bool) {
    let ev = Event::new(kind).add_path(PathBuf::from(path));
    assert_eq!(relevant(&ev, &collected()), expected, "{kind:?} {path}");
}

#[test]
fn changes_to_collected_paths_wake_the_agent_and_accesses_do_not() {
    let modify = EventKind::Modify(ModifyKind::Data(DataChange::Any));
    let cases = [
        // What changes a collected file, or the directories on the way to it.
        (modify, "/etc/aliases", true),
        (
            EventKind::Create(CreateKind::File),
            "/etc/lists/staff",
            true,
        ),
        (
            EventKind::Remove(RemoveKind::Any),
            "/home/ann/.forward",
            true,
        ),
        (EventKind::Create(CreateKind::Folder), "/etc/lists", true),
        (EventKind::Remove(RemoveKind::Folder), "/home/ann", true),
        (EventKind::Any, "/etc/aliases", true),
        (
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "/etc/aliases",
            true,
        ),
        // A new entry in a collected directory (a glob pattern's directory).
        (modify, "/etc/postfix/virtual.d/example.org", true),
        // Accesses change nothing, the agent's own reads included.
        (
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "/etc/aliases",
            false,
        ),
        (EventKind::Access(AccessKind::Read), "/etc/aliases", false),
        (
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            "/home/ann/.forward",
            false,
        ),
        // Neighbours that are not collected, nor on the way.
        (modify, "/etc/aliases.db", false),
        (modify, "/etc/list", false),
        (modify, "/home/ann/.bash_history", false),
        (modify, "/home/annie/.forward", false),
        (modify, "/etc/postfix/main.cf", false),
    ];
    for (kind, path, expected) in cases {
        check(kind, path, expected);
    }
}

/// The events the kernel reports for `dir` while `act` runs, waited for up to a deadline.
fn events_of(dir: &Path, act: impl FnOnce()) -> Vec<Event> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut w = notify::recommended_watcher(move |r: notify::Result<Event>| {
        if let Ok(e) = r {
            let _ = tx.send(e);
        }
    })
    .unwrap();
    w.watch(dir, notify::RecursiveMode::NonRecursive).unwrap();
    act();
    // A marker file written last: once its event is in, the ones before it are too.
    let marker = dir.join("zz-marker");
    std::fs::write(&marker, "x").unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(e) if e.paths.contains(&marker) => break,
            Ok(e) => out.push(e),
            Err(_) => {}
        }
    }
    out
}

#[test]
fn reading_a_collected_file_is_not_a_change_and_writing_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let aliases = dir.join("aliases");
    std::fs::write(&aliases, "a: b\n").unwrap();
    let paths: BTreeSet<PathBuf> = [aliases.clone()].into();
    let read = events_of(&dir, || {
        assert_eq!(std::fs::read_to_string(&aliases).unwrap(), "a: b\n");
    });
    assert!(
        read.iter().any(|e| e.paths.contains(&aliases)),
        "the read itself is reported: {read:?}"
    );
    assert!(
        !read.iter().any(|e| relevant(e, &paths)),
        "a read woke the agent: {read:?}"
    );
    let written = events_of(&dir, || std::fs::write(&aliases, "a: c\n").unwrap());
    assert!(
        written.iter().any(|e| relevant(e, &paths)),
        "a write did not wake the agent: {written:?}"
    );
}

/// An event in a settle test: a write of (or truncation of) the aliases file, its writer's
/// close, its removal, its arrival by rename, or a write of a file the agent does not read.
#[derive(Debug, Clone, Copy)]
enum Ev {
    Write,
    Close,
    Remove,
    Renamed,
    Unrelated,
}

impl Ev {
    fn event(self, i: usize) -> Event {
        let (kind, path) = match self {
            Ev::Write => (EventKind::Modify(ModifyKind::Data(DataChange::Any)), None),
            Ev::Close => (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                None,
            ),
            Ev::Remove => (EventKind::Remove(RemoveKind::File), None),
            Ev::Renamed => (
                EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::To)),
                None,
            ),
            Ev::Unrelated => (
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                Some(format!("/var/tmp/unrelated-{i}")),
            ),
        };
        let path = path.unwrap_or_else(|| "/etc/aliases".to_string());
        Event::new(kind).add_path(PathBuf::from(path))
    }
}

/// How long (virtual milliseconds) the agent waits after a change `first` when further events
/// come after each of `gaps` (ms), and how many paths it noted.
async fn settled_after(first: Ev, gaps: &[(u64, Ev)], debounce: u64) -> (u64, usize) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let events: Vec<(u64, Event)> = gaps
        .iter()
        .enumerate()
        .map(|(i, &(gap, ev))| (gap, ev.event(i)))
        .collect();
    tokio::spawn(async move {
        for (gap, ev) in events {
            tokio::time::sleep(Duration::from_millis(gap)).await;
            let _ = tx.send(ev);
        }
        // Keep the channel open: the agent's watcher outlives any wait.
        std::future::pending::<()>().await;
    });
    let mut changed = Some(BTreeSet::new());
    let start = tokio::time::Instant::now();
    settle(
        &mut rx,
        &mut changed,
        &collected(),
        Duration::from_millis(debounce),
        &first.event(usize::MAX),
    )
    .await;
    let noted = changed.map_or(usize::MAX, |c| c.len());
    (start.elapsed().as_millis() as u64, noted)
}

#[tokio::test(start_paused = true)]
async fn the_agent_reads_once_the_files_are_quiet_and_closed_but_not_never() {
    let cap = settle_cap(Duration::from_millis(20)).as_millis() as u64;
    assert_eq!(cap, 1000);
    assert_eq!(settle_cap(Duration::from_millis(500)).as_millis(), 5000);
    use Ev::*;
    // The first event, the events after it (gap in ms, event), and (ms waited, paths noted).
    type Case = (Ev, Vec<(u64, Ev)>, (u64, usize));
    let cases: Vec<Case> = vec![
        // A write closed at once: one debounce period.
        (Write, vec![(0, Close)], (20, 1)),
        // A file written in three steps 10 ms apart: read 20 ms after the last.
        (
            Write,
            vec![(10, Write), (10, Write), (10, Write), (0, Close)],
            (50, 1),
        ),
        // The next change comes after the quiet period: it is the next collection's.
        (Write, vec![(0, Close), (25, Write)], (20, 1)),
        // Events for files the agent does not read do not hold it back, nor are they noted
        // (the agent's own reads are reported too: noted, they would make the next collection
        // read what they name again, and keep it from being a patch).
        (
            Write,
            vec![(0, Close), (5, Unrelated), (5, Unrelated)],
            (20, 1),
        ),
        // Truncated, then written at length (one long write: no event until it ends): read
        // once the writer closed it, not at the debounce.
        (Write, vec![(300, Write), (0, Close)], (320, 1)),
        // Nor does an unrelated event end the wait for the writer.
        (Write, vec![(30, Unrelated), (300, Close)], (350, 1)),
        // A writer that keeps the file open: read at the cap.
        (Write, vec![], (cap, 0)),
        // A file that never stops changing is read at the cap.
        (Write, vec![(15, Write); 200], (cap, 1)),
        // Put in place by a rename, or removed: nothing to wait for.
        (Renamed, vec![], (20, 0)),
        (Write, vec![(5, Remove)], (25, 1)),
    ];
    for (first, gaps, expected) in cases {
        assert_eq!(
            settled_after(first, &gaps, 20).await,
            expected,
            "{first:?} {gaps:?}"
        );
    }
}
