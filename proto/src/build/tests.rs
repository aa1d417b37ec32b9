//! The builder: which includes are pending, and include batches parsed side by side.

use super::*;

#[test]
fn pending_includes_are_those_named_and_not_added_yet() {
    let mut b = Builder::new(&["example.org".to_string()]);
    let check = |b: &mut Builder, expected: &[&str]| {
        assert_eq!(b.pending_includes(), expected);
    };
    b.aliases(
        "/etc/aliases",
        b"a: :include:/l/b, :include:/l/a\nr: :include:rel\nx: y@remote.net\n",
    );
    check(&mut b, &["/l/a", "/l/b"]);
    // Asked again before anything is added: the same.
    check(&mut b, &["/l/a", "/l/b"]);
    b.include("/l/a", Ok(b"m@remote.net\n"));
    check(&mut b, &["/l/b"]);
    // An include naming one added already and a new one.
    b.include("/l/b", Ok(b":include:/l/a\n:include:/l/c\n"));
    check(&mut b, &["/l/c"]);
    // Aliases added later are looked through too.
    b.aliases("/etc/aliases.more", b"d: :include:/l/d, :include:/l/c\n");
    check(&mut b, &["/l/c", "/l/d"]);
    b.include("/l/c", Err("gone".into()));
    b.include("/l/d", Ok(b""));
    check(&mut b, &[]);
}

#[test]
fn includes_in_a_batch_give_what_they_give_one_by_one() {
    // Bodies with items, a warning, an unreadable file, an empty one; a file named twice
    // in the batch and one added before it: each added once, the first time.
    let bodies: Vec<(String, Result<Vec<u8>, String>)> = (0..2 * PARALLEL_INCLUDES + 3)
        .map(|i| {
            let body = match i % 5 {
                0 => Ok(format!("m{i}@remote.net\nlocal{i}\n").into_bytes()),
                1 => Ok(format!("a{i}@x.org b@y.org\n").into_bytes()),
                2 => Err(format!("gone {i}")),
                3 => Ok(Vec::new()),
                _ => Ok(format!("|/bin/x {i}\n").into_bytes()),
            };
            (format!("/l/{}", i % (2 * PARALLEL_INCLUDES)), body)
        })
        .collect();
    let start = |b: &mut Builder| {
        b.aliases("/etc/aliases", b"a: :include:/l/1\n");
        b.include("/l/7", Ok(b"first@remote.net\n"));
    };
    let mut one = Builder::new(&["example.org".to_string()]);
    start(&mut one);
    for (path, body) in &bodies {
        one.include(path, body.as_deref().map_err(Clone::clone));
    }
    for parallel in [true, false] {
        let mut many = Builder::new(&["example.org".to_string()]);
        start(&mut many);
        if parallel {
            many.includes(&bodies);
        } else {
            for chunk in bodies.chunks(PARALLEL_INCLUDES - 1) {
                many.includes(chunk);
            }
        }
        let (want, got) = (one.content.clone(), many.content.clone());
        assert_eq!(got.includes.len(), 2 * PARALLEL_INCLUDES);
        assert_eq!(got, want, "in parallel: {parallel}");
    }
    let seven = one.content.includes.iter().find(|i| i.path == "/l/7");
    assert_eq!(seven.unwrap().targets[0].value, "first@remote.net");
}
