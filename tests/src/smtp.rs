//! A minimal SMTP sink on 127.0.0.1:0 for the real-MTA tests: it accepts every message and
//! records its envelope recipients and its `X-Probe` header. One thread per connection.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One message received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `RCPT TO` addresses, as sent.
    pub rcpts: Vec<String>,
    /// The value of the message's `X-Probe:` header.
    pub probe: String,
}

/// A running sink.
pub struct Sink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Every message received so far.
    pub got: Arc<Mutex<Vec<Delivery>>>,
}

fn addr(arg: &str) -> String {
    let a = arg.split_once(':').map_or(arg, |(_, v)| v).trim();
    a.trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("")
        .to_string()
}

impl Sink {
    /// Starts a sink.
    pub fn start(name: &'static str) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let port = listener.local_addr().expect("sink addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = Arc::clone(&got);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let g = Arc::clone(&g);
                std::thread::spawn(move || {
                    let _ = session(stream, name, &g);
                });
            }
        });
        Sink { port, got }
    }

    /// Recipients received for `probe`, sorted.
    pub fn rcpts_for(&self, probe: &str) -> Vec<String> {
        let mut r: Vec<String> = self
            .got
            .lock()
            .expect("sink lock")
            .iter()
            .filter(|d| d.probe == probe)
            .flat_map(|d| d.rcpts.iter().cloned())
            .collect();
        r.sort();
        r
    }
}

/// The reply code a server on 127.0.0.1:`port` gives `RCPT TO:<to>` in a session of its own
/// (EHLO, MAIL FROM, RCPT, QUIT): 250 when it accepts the recipient.
pub fn rcpt_status(port: u16, to: &str) -> std::io::Result<u16> {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    // The code of the last line of a reply (`250-...` lines continue it).
    let reply = |r: &mut BufReader<std::net::TcpStream>| -> std::io::Result<u16> {
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return line
                    .get(..3)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| std::io::Error::other(format!("bad reply {line:?}")));
            }
        }
    };
    reply(&mut r)?;
    for cmd in ["EHLO probe.example", "MAIL FROM:<probe@outside.example>"] {
        write!(w, "{cmd}\r\n")?;
        reply(&mut r)?;
    }
    write!(w, "RCPT TO:<{to}>\r\n")?;
    let code = reply(&mut r)?;
    write!(w, "QUIT\r\n")?;
    let _ = reply(&mut r);
    Ok(code)
}

fn session(
    stream: std::net::TcpStream,
    name: &str,
    got: &Mutex<Vec<Delivery>>,
) -> std::io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    write!(w, "220 {name} ESMTP sink\r\n")?;
    let mut rcpts = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write!(w, "250 {name}\r\n")?;
        } else if upper.starts_with("MAIL") {
            rcpts.clear();
            write!(w, "250 ok\r\n")?;
        } else if upper.starts_with("RCPT") {
            rcpts.push(addr(&cmd));
            write!(w, "250 ok\r\n")?;
        } else if upper.starts_with("DATA") {
            write!(w, "354 go\r\n")?;
            let mut probe = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                if let Some(v) = line.strip_prefix("X-Probe:") {
                    probe = v.trim().to_string();
                }
            }
            got.lock().expect("sink lock").push(Delivery {
                rcpts: std::mem::take(&mut rcpts),
                probe,
            });
            write!(w, "250 queued\r\n")?;
        } else if upper.starts_with("QUIT") {
            write!(w, "221 bye\r\n")?;
            return Ok(());
        } else {
            write!(w, "250 ok\r\n")?;
        }
    }
}
