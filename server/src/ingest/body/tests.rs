//! Inflating bodies: one stream, or sized frames side by side, each within the limit.

use super::*;

fn frame(plain: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(plain, 1).unwrap()
}

#[test]
fn sized_frames_inflate_to_what_one_stream_gives_and_lies_are_refused() {
    let plain: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let (a, b) = plain.split_at(300_001);
    let two = [frame(a), frame(b)].concat();
    let check = |body: &[u8], limit: u64, expected: Result<&[u8], &str>| {
        let got = inflate(body, Some("zstd"), limit);
        match (got, expected) {
            (Ok(got), Ok(want)) => assert!(got == want, "{} bytes", got.len()),
            (Err(e), Err(code)) => assert_eq!(e.code(), code, "{e}"),
            (got, want) => panic!("{:?} against {want:?}", got.map(|g| g.len())),
        }
    };
    assert_eq!(sized_frames(&two).map(|f| f.len()), Some(2));
    check(&two, 1 << 30, Ok(&plain));
    // One frame, and a stream without sizes, are read as a stream.
    let one = frame(&plain);
    assert!(sized_frames(&one).is_none());
    check(&one, 1 << 30, Ok(&plain));
    let stream = zstd::stream::encode_all(&plain[..], 1).unwrap();
    check(&stream, 1 << 30, Ok(&plain));
    // Three frames, side by side too; one without its size among them: a stream.
    let (b1, b2) = b.split_at(10);
    let three = [frame(a), frame(b1), frame(b2)].concat();
    assert_eq!(sized_frames(&three).map(|f| f.len()), Some(3));
    check(&three, 1 << 30, Ok(&plain));
    let unsized_ = [frame(a), zstd::stream::encode_all(b, 1).unwrap()].concat();
    assert!(sized_frames(&unsized_).is_none());
    check(&unsized_, 1 << 30, Ok(&plain));
    // Over the limit, by their declared sizes or by what they hold.
    check(&two, plain.len() as u64 - 1, Err("too_large"));
    check(&one, plain.len() as u64 - 1, Err("too_large"));
    // A frame that declares less than it holds.
    let mut small = frame(&plain[..1000]);
    let mut liar = frame(&plain[..2000]);
    let header = |f: &[u8]| zstd::zstd_safe::get_frame_content_size(f).unwrap();
    assert_eq!(header(&liar), Some(2000));
    // The size sits in the frame header; swap in a smaller frame's header to make it lie.
    let n = (1..20)
        .find(|&n| zstd::zstd_safe::get_frame_content_size(&small[..n]).is_ok())
        .unwrap();
    assert!(zstd::zstd_safe::get_frame_content_size(&liar[..n]).is_ok());
    liar[..n].copy_from_slice(&small[..n]);
    assert_eq!(header(&liar), Some(1000));
    small.extend_from_slice(&liar);
    assert!(sized_frames(&small).is_some());
    check(&small, 1 << 30, Err("bad_request"));
    // A truncated second frame: not two frames, and the stream fails.
    let cut = &two[..two.len() - 5];
    check(cut, 1 << 30, Err("bad_request"));
}
