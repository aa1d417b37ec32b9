//! Fuzzes snapshot decoding as the server does it: parse (JSON, or the binary body when the
//! bytes open as one), normalize, validate, hash, and plan what validates. No input may panic;
//! a binary body that reads encodes back to the same bytes; a validated snapshot's plans only
//! name valid addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let snap = if proto::snapshot::is_binary(data) {
        proto::Snapshot::from_binary(data).ok().inspect(|s| {
            assert_eq!(s.to_binary(), data, "a binary body reads back to other bytes");
        })
    } else {
        serde_json::from_slice::<proto::Snapshot>(data).ok()
    };
    let Some(mut snap) = snap else {
        return;
    };
    snap.content.normalize();
    let _ = snap.content.hash();
    if snap.content.validate().is_ok() {
        for p in proto::plan::plan_all(&snap.content) {
            assert!(proto::addr::valid_address(&p.address), "{:?}", p.address);
            for f in p.forward.iter().chain(p.punt.iter()) {
                assert!(proto::addr::valid_address(f), "{f:?}");
            }
        }
    }
});
