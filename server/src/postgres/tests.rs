//! What a write sends: the changes between two rendered parts, and COPY's escaping.

use std::sync::Arc;

use super::rows::{Changes, changes, copy_field};
use crate::render::Text;

fn text(pieces: &[&Arc<String>]) -> Text {
    Text::from_pieces(pieces.iter().map(|p| Arc::clone(p)).collect())
}

fn piece(lines: &str) -> Arc<String> {
    Arc::new(lines.to_string())
}

#[test]
fn only_the_pieces_a_change_touched_are_compared_and_only_changed_rows_come_out() {
    let check = |old: Text, new: Text, gone: &[&str], set: &[(&str, &str)]| {
        let got = changes("postfix/virtual", &old, &new);
        let want = Changes {
            gone: gone.iter().map(|s| s.to_string()).collect(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(got, want);
    };
    let a = piece("a@x.org r@remote.net\nb@x.org s@remote.net\n");
    let c = piece("c@x.org t@remote.net\n");
    let c2 = piece("c@x.org t@remote.net, u@remote.net\nd@x.org v@remote.net\n");
    let c3 = piece("c@x.org t@remote.net\n");
    // Shared pieces are not read; a value changed and an address added.
    check(
        text(&[&a, &c]),
        text(&[&a, &c2]),
        &[],
        &[
            ("c@x.org", "t@remote.net, u@remote.net"),
            ("d@x.org", "v@remote.net"),
        ],
    );
    // An address gone.
    check(
        text(&[&a, &c2]),
        text(&[&a, &c]),
        &["d@x.org"],
        &[("c@x.org", "t@remote.net")],
    );
    // A piece re-made with the same lines: nothing to write.
    check(text(&[&a, &c]), text(&[&a, &c3]), &[], &[]);
    // From nothing, and to nothing.
    check(text(&[]), text(&[&c]), &[], &[("c@x.org", "t@remote.net")]);
    check(text(&[&a]), text(&[]), &["a@x.org", "b@x.org"], &[]);
}

#[test]
fn copy_fields_escape_what_would_break_a_row() {
    let check = |field: &str, expected: &str| {
        let mut out = Vec::new();
        copy_field(&mut out, field);
        assert_eq!(String::from_utf8(out).unwrap(), expected, "{field:?}");
    };
    check("a@x.org", "a@x.org");
    check("a\\b", "a\\\\b");
    check("a\tb\nc\rd", "a\\tb\\nc\\rd");
    check("", "");
}

#[test]
fn settings_give_the_client_configuration_or_every_problem() {
    use super::Settings;
    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.path().join(name);
        std::fs::write(&p, "a-password-long-enough-0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let (private, open) = (secret("pw", 0o600), secret("open", 0o644));
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let base = Settings {
        user: Some("mxsync".into()),
        dbname: Some("mail".into()),
        connect_timeout_secs: 5,
        retry_secs: 30,
        ..Settings::default()
    };
    // (settings, Ok(tls used, described as) or Err(words every problem list holds))
    let check = |s: Settings, expected: Result<(bool, &str), &[&str]>| match (s.target(), expected)
    {
        (Ok(t), Ok((tls, describe))) => {
            assert_eq!((t.tls.is_some(), t.describe.as_str()), (tls, describe));
        }
        (Err(problems), Err(words)) => {
            let all = problems.join("\n");
            for w in words {
                assert!(all.contains(w), "{w:?} not in {all}");
            }
        }
        (got, want) => panic!("{:?} against {want:?}", got.map(|t| t.describe)),
    };
    let socket = Settings {
        host: Some("/run/postgresql".into()),
        password_file: Some(private.clone()),
        ..base.clone()
    };
    check(
        socket.clone(),
        Ok((false, "mxsync@/run/postgresql:5432/mail (disable)")),
    );
    // The keys override the URL's parts.
    check(
        Settings {
            url: Some("host=db.example.org port=6432 dbname=other user=someone".into()),
            sslmode: Some("disable".into()),
            ..base.clone()
        },
        Ok((false, "mxsync@db.example.org:6432/mail (disable)")),
    );
    // A network host is TLS by default, and needs its CA.
    check(
        Settings {
            host: Some("db.example.org".into()),
            ..base.clone()
        },
        Err(&["sslrootcert: verify-full needs the CA file"]),
    );
    check(
        Settings {
            host: Some("db.example.org".into()),
            sslrootcert: Some(ca),
            ..base.clone()
        },
        Err(&["no certificate in it"]),
    );
    check(
        Settings {
            sslmode: Some("require".into()),
            ..socket.clone()
        },
        Err(&["sslmode \"require\""]),
    );
    check(
        Settings {
            url: Some("postgresql://mxsync:secret@db.example.org/mail".into()),
            sslmode: Some("disable".into()),
            ..base.clone()
        },
        Err(&["holds a password"]),
    );
    check(
        Settings {
            password_file: Some(open),
            ..socket.clone()
        },
        Err(&["password_file"]),
    );
    check(
        Settings {
            user: None,
            retry_secs: 0,
            ..Settings::default()
        },
        Err(&["host", "role", "retry_secs"]),
    );
}
