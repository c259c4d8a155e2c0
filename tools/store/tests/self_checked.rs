//! Images that carry their own checksums: the store keeps none, says so, and survives a reopen.

use store::{ImageKind, MemDevice, Store};

#[test]
fn a_self_checked_image_is_stored_without_a_store_checksum_and_says_so_after_a_reopen() {
    let mut s = Store::format(MemDevice::new(8192)).unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = s.begin_self_checked("img", ImageKind::Domain, "test").unwrap();
    s.write(&mut w, &data).unwrap();
    let e = s.commit(w).unwrap();
    assert!(e.self_checked);
    assert_eq!(e.checksum, 0);
    let mut w = s.begin("plain", ImageKind::Domain, "test").unwrap();
    s.write(&mut w, &data).unwrap();
    assert!(!s.commit(w).unwrap().self_checked);
    let mut s = Store::open(s.into_device()).unwrap();
    let e = s.find("img").unwrap().clone();
    assert!(e.self_checked && e.kind == ImageKind::Domain);
    assert!(!s.find("plain").unwrap().self_checked);
    s.verify("img").unwrap();
    s.verify("plain").unwrap();
    let mut back = vec![0u8; data.len()];
    assert_eq!(s.read_at("img", 0, &mut back).unwrap(), data.len());
    assert_eq!(back, data);
}
