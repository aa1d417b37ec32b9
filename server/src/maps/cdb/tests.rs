//! The writer against the cdb2 crate's reader, and a table reusing pieces against one
//! written from nothing.

use super::*;
use crate::render::{AgentPart, Text};

fn set(pieces: &[Arc<String>]) -> Rendered {
    let mut part = AgentPart::default();
    part.files
        .insert("postfix/virtual", Text::from_pieces(pieces.to_vec()));
    Rendered {
        names: vec!["postfix/virtual"],
        parts: vec![Arc::new(part)],
        ..Rendered::default()
    }
}

fn table(rendered: &Rendered, cache: &mut Pieces) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.cdb");
    let f = File::create(&path).unwrap();
    write(&f, rendered, "postfix/virtual", cache).unwrap();
    std::fs::read(path).unwrap()
}

fn lines(from: usize, to: usize, target: &str) -> Arc<String> {
    Arc::new(
        (from..to)
            .map(|i| format!("a{i}@example.org {target}{i}@remote.net\n"))
            .collect(),
    )
}

#[test]
fn the_cdb_crate_reads_what_is_written_and_reused_pieces_change_nothing() {
    let pieces = vec![
        lines(0, 500, "x"),
        lines(500, 1000, "y"),
        lines(1000, 1500, "z"),
    ];
    let one = set(&pieces);
    let mut cache = HashMap::new();
    let first = table(&one, &mut cache);
    assert_eq!(cache.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.cdb"), &first).unwrap();
    let db = cdb2::CDB::open(dir.path().join("t.cdb")).unwrap();
    for i in [0, 499, 500, 1234, 1499] {
        let t = ["x", "y", "z"][i / 500];
        let got = db
            .find(format!("a{i}@example.org").as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(got, format!("{t}{i}@remote.net").into_bytes(), "a{i}");
    }
    assert!(db.find(b"a1500@example.org").next().is_none());
    assert_eq!(db.iter().count(), 1500);
    // The middle piece changed: the others' records are taken from the cache, and the
    // table is the one a writer with no cache makes.
    let kept = Arc::clone(&cache[&(Arc::as_ptr(&pieces[0]) as usize)].1);
    let two = set(&[
        Arc::clone(&pieces[0]),
        lines(500, 1001, "w"),
        Arc::clone(&pieces[2]),
    ]);
    let reused = table(&two, &mut cache);
    assert!(Arc::ptr_eq(
        &kept,
        &cache[&(Arc::as_ptr(&pieces[0]) as usize)].1
    ));
    assert_eq!(cache.len(), 3, "the old middle piece is dropped");
    assert_eq!(reused, table(&two, &mut HashMap::new()));
    assert_ne!(reused, first);
}
