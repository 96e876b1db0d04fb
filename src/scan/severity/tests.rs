use super::*;

const TRACKER: &[u8] = include_bytes!("../testdata/severity/debian-tracker.json");
const OVAL: &[u8] = include_bytes!("../testdata/severity/com.ubuntu.jammy.cve.oval.xml");

fn index() -> SeverityIndex {
    SeverityIndex::from_sources(&[
        ("tracker.json".into(), TRACKER.to_vec()),
        ("jammy.oval.xml".into(), OVAL.to_vec()),
    ])
    .unwrap()
}

#[test]
fn the_debian_tracker_gives_the_urgency_of_the_images_release() {
    let index = index();
    let of = |pkg, cve, release| index.lookup("debian", release, pkg, cve);
    assert_eq!(
        of("openssl", "CVE-2024-5535", "bookworm"),
        Some(Severity::Low)
    );
    // "medium**": an urgency not yet confirmed still reads as medium.
    assert_eq!(
        of("openssl", "CVE-2024-9143", "bookworm"),
        Some(Severity::Medium)
    );
    assert_eq!(
        of("expat", "CVE-2024-45491", "bookworm"),
        Some(Severity::High)
    );
    assert_eq!(
        of("expat", "CVE-2023-52426", "bookworm"),
        Some(Severity::Low)
    );
    // "not yet assigned", another release, another package: unknown.
    assert_eq!(of("expat", "CVE-2024-45491", "trixie"), None);
    assert_eq!(of("openssl", "CVE-2024-5535", "bullseye"), None);
    assert_eq!(of("openssl", "CVE-2024-5535", "trixie"), None);
    assert_eq!(of("curl", "CVE-2024-5535", "bookworm"), None);
}

#[test]
fn ubuntu_oval_gives_the_advisory_severity_per_codename() {
    let index = index();
    let of = |cve, release| index.lookup("ubuntu", release, "libexample", cve);
    assert_eq!(of("CVE-2024-5119", "jammy"), Some(Severity::Medium));
    assert_eq!(of("CVE-2024-0001", "jammy"), Some(Severity::Critical));
    assert_eq!(of("CVE-2024-9999", "jammy"), None, "untriaged");
    assert_eq!(of("CVE-2024-5119", "noble"), None);
    assert_eq!(
        index.lookup("debian", "jammy", "libexample", "CVE-2024-5119"),
        None
    );
}

#[test]
fn the_mapping_is_the_documented_one() {
    for (urgency, severity) in [
        ("unimportant", Some(Severity::Low)),
        ("low", Some(Severity::Low)),
        ("low*", Some(Severity::Low)),
        ("medium", Some(Severity::Medium)),
        ("high", Some(Severity::High)),
        ("not yet assigned", None),
        ("end-of-life", None),
        ("", None),
    ] {
        assert_eq!(debian_urgency(urgency), severity, "{urgency:?}");
    }
    for (priority, severity) in [
        ("Negligible", Some(Severity::Low)),
        ("Low", Some(Severity::Low)),
        ("Medium", Some(Severity::Medium)),
        ("High", Some(Severity::High)),
        ("Critical", Some(Severity::Critical)),
        ("Untriaged", None),
    ] {
        assert_eq!(ubuntu_priority(priority), severity, "{priority:?}");
    }
}

#[test]
fn a_source_in_no_known_format_is_refused_by_name() {
    for bytes in [
        &b"CVE-1,HIGH"[..],
        b"{\"openssl\": 5}",
        b"<html><body/></html>",
    ] {
        let e = SeverityIndex::from_sources(&[("src.txt".into(), bytes.to_vec())]).unwrap_err();
        assert!(e.to_string().contains("src.txt"), "{e}");
    }
}
