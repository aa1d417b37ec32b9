//! Fuzzes the other parsers: `:include:`/`.forward` bodies, virtual maps, recipient lists, passwd.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Vec::new();
    let list = proto::parse::parse_list(data, "f", &mut d);
    for t in &list.targets {
        assert!(t.line >= 1);
    }
    let _ = proto::parse::parse_virtual(data, "f", &mut d);
    for (a, _) in proto::parse::parse_recipients(data, "f", &mut d) {
        assert!(proto::addr::valid_address(&a));
    }
    let _ = proto::parse::parse_passwd(data, "f", &mut d);
    let mut b = proto::Builder::new(&["example.org".to_string()]);
    b.virtual_map("/v", data);
    b.recipients("/r", data);
    assert!(b.finish().validate().is_ok());
});
