//! Fuzzes snapshot decoding as the server does it: parse, normalize, validate, hash, and plan
//! what validates. No input may panic; a validated snapshot's plans only name valid addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut snap) = serde_json::from_slice::<proto::Snapshot>(data) else {
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
