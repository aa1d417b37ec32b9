//! Fuzzes aliases(5) parsing, building and planning: no input may panic or hang, every name kept
//! is map-safe, and the plan invariants of DESIGN section 5 hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::{Class, Kind, addr};

fuzz_target!(|data: &[u8]| {
    let mut b = proto::Builder::new(&["example.org".to_string()]);
    b.aliases("/etc/aliases", data);
    b.passwd("/etc/passwd", b"u:x:1000:1000::/nonexistent:/bin/sh\n", 1000);
    let c = b.finish();
    assert!(c.validate().is_ok(), "{:?}", c.validate());
    for a in &c.aliases {
        assert!(addr::valid_local_part(&a.name));
        for t in &a.targets {
            if t.kind == Kind::Address {
                assert!(addr::valid_address(&t.value));
            }
        }
    }
    let plans = proto::plan::plan_all(&c);
    let class: std::collections::HashMap<&str, Class> =
        plans.iter().map(|p| (p.address.as_str(), p.class)).collect();
    for p in &plans {
        for u in &p.punt {
            assert!(class.get(u.as_str()).is_none_or(|k| *k == Class::Punt), "{} punts {u}", p.address);
        }
        for f in &p.forward {
            assert!(addr::valid_address(f), "{f:?}");
        }
    }
});
