//! A request's body: how it is written (`Coding`), inflating it within the size limit (sized
//! zstd frames side by side, as the agent sends them), and how it is kept for history.

use std::io::Read;

use proto::Snapshot;

use super::IngestError;

/// How a request body is written: its `Content-Encoding` and `Content-Type` headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Coding<'a> {
    /// `Content-Encoding`: none, `zstd` or `gzip`.
    pub encoding: Option<&'a str>,
    /// `Content-Type`: JSON (or none), or for a full snapshot [`proto::snapshot::MEDIA_TYPE`].
    pub media: Option<&'a str>,
}

impl Coding<'_> {
    /// Whether the body is a binary snapshot rather than JSON (`binary_ok`: whether the
    /// endpoint takes one).
    pub(super) fn binary(&self, binary_ok: bool) -> Result<bool, IngestError> {
        let media = self.media.map(|m| {
            let essence = m.split(';').next().unwrap_or_default();
            essence.trim().to_ascii_lowercase()
        });
        match media.as_deref() {
            None | Some("") | Some("application/json") => Ok(false),
            Some(proto::snapshot::MEDIA_TYPE) if binary_ok => Ok(true),
            Some(other) => Err(IngestError::UnsupportedMedia(format!(
                "unsupported content-type {other:?}: use application/json{}",
                if binary_ok {
                    format!(" or {}", proto::snapshot::MEDIA_TYPE)
                } else {
                    String::new()
                }
            ))),
        }
    }
}

/// Decompresses `body` per `Content-Encoding`, refusing output larger than `limit`.
pub fn inflate(body: &[u8], encoding: Option<&str>, limit: u64) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::new();
    let read = |r: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), IngestError> {
        r.take(limit.saturating_add(1))
            .read_to_end(out)
            .map_err(|e| IngestError::BadRequest(format!("cannot decompress the body: {e}")))?;
        Ok(())
    };
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => out.extend_from_slice(body),
        Some("zstd") if let Some(frames) = sized_frames(body) => {
            return inflate_frames(&frames, limit);
        }
        Some("zstd") => {
            let mut d = zstd::stream::read::Decoder::new(body)
                .map_err(|e| IngestError::BadRequest(format!("cannot decompress the body: {e}")))?;
            read(&mut d, &mut out)?;
        }
        Some("gzip") => read(&mut flate2::read::GzDecoder::new(body), &mut out)?,
        Some(other) => {
            return Err(IngestError::BadRequest(format!(
                "unsupported content-encoding {other:?}: use zstd, gzip or none"
            )));
        }
    }
    if out.len() as u64 > limit {
        return Err(IngestError::TooLarge(format!(
            "the decompressed snapshot exceeds {limit} bytes"
        )));
    }
    Ok(out)
}

/// A zstd frame and the size it inflates to.
type Frame<'a> = (&'a [u8], u64);

/// The most frames inflated side by side; a body of more is read as a stream.
const MOST_FRAMES: usize = 1024;

/// `body` as two or more zstd frames that each say their size (how the agent sends a full
/// snapshot, one frame per piece); `None` for anything else, which is read as a stream.
pub(super) fn sized_frames(body: &[u8]) -> Option<Vec<Frame<'_>>> {
    use zstd::zstd_safe::{find_frame_compressed_size, get_frame_content_size};
    let mut frames = Vec::new();
    let mut rest = body;
    while !rest.is_empty() && frames.len() < MOST_FRAMES {
        let n = find_frame_compressed_size(rest).ok()?;
        let f = rest.get(..n)?;
        frames.push((f, get_frame_content_size(f).ok()??));
        rest = &rest[n..];
    }
    (rest.is_empty() && frames.len() >= 2).then_some(frames)
}

/// Inflates sized frames side by side, into one buffer, refusing more than `limit` bytes.
fn inflate_frames(frames: &[Frame<'_>], limit: u64) -> Result<Vec<u8>, IngestError> {
    use rayon::prelude::*;
    let total = (frames.iter())
        .try_fold(0u64, |t, &(_, n)| t.checked_add(n))
        .filter(|&t| t <= limit)
        .ok_or_else(|| {
            IngestError::TooLarge(format!("the decompressed snapshot exceeds {limit} bytes"))
        })?;
    let mut out = vec![0; total as usize];
    let mut jobs = Vec::with_capacity(frames.len());
    let mut rest = &mut out[..];
    for &(frame, n) in frames {
        let (into, after) = rest.split_at_mut(n as usize);
        jobs.push((frame, into));
        rest = after;
    }
    let inflate = |(frame, into): (&[u8], &mut [u8])| {
        let want = into.len();
        match zstd::bulk::decompress_to_buffer(frame, into) {
            Ok(n) if n == want => Ok(()),
            Ok(n) => Err(format!(
                "a frame gave {n} bytes, not the {want} it declares"
            )),
            Err(e) => Err(e.to_string()),
        }
    };
    (jobs.into_par_iter().try_for_each(inflate))
        .map_err(|e| IngestError::BadRequest(format!("cannot decompress the body: {e}")))?;
    Ok(out)
}

/// How to keep a request's body (snapshot or delta) for a later restart or release.
pub(super) enum Body<'a> {
    /// The zstd body as the agent sent it.
    Zstd(&'a [u8]),
    /// The body uncompressed (JSON or binary), to be compressed.
    Plain(Vec<u8>),
}

impl Body<'_> {
    /// The inflated body can be as large as the content itself: keep it only if it is what
    /// will be stored (compressed).
    pub(super) fn of<'a>(body: &'a [u8], encoding: Option<&str>, plain: Vec<u8>) -> Body<'a> {
        match encoding.map(str::trim) {
            Some("zstd") => {
                drop(plain);
                Body::Zstd(body)
            }
            _ => Body::Plain(plain),
        }
    }

    /// The compressed bytes to store.
    pub(super) fn stored(self) -> Result<Vec<u8>, IngestError> {
        match self {
            Body::Zstd(body) => Ok(body.to_vec()),
            Body::Plain(plain) => zstd::stream::encode_all(&plain[..], proto::wire::ZSTD_LEVEL)
                .map_err(|e| IngestError::Internal(e.into())),
        }
    }
}

/// The whole snapshot, compressed for history: its binary body, streamed into the encoder
/// (no second copy of the content in memory).
pub(super) fn encode_full(snap: &Snapshot) -> Result<Vec<u8>, IngestError> {
    let internal = |e: std::io::Error| IngestError::Internal(e.into());
    let mut enc =
        zstd::stream::Encoder::new(Vec::new(), proto::wire::ZSTD_LEVEL).map_err(internal)?;
    // Compressed by a zstd worker while this thread encodes, as the agent does.
    enc.multithread(1).map_err(internal)?;
    let head = proto::snapshot::Head {
        agent: &snap.agent,
        version: snap.version,
        hash: &snap.hash,
        created_at: snap.created_at,
    };
    proto::snapshot::write_binary(&mut enc, head, &snap.content).map_err(internal)?;
    enc.finish().map_err(internal)
}

#[cfg(test)]
mod tests;
