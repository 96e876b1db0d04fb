//! Upgrades `apt-get upgrade` keeps back (it installs no new package) are kept back by the
//! patch too, and said to be, while the rest is patched.

use crate::common::apt::DebSpec;
use crate::common::images::{self, Format};
use crate::dpkg::*;
use crate::image::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_whose_new_depends_the_image_lacks_is_kept_back() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    let spec = |name: &str, version: &str| {
        DebSpec::new(name, version, "amd64").file(
            &format!("usr/share/{name}/v"),
            version.as_bytes(),
            0o644,
        )
    };
    let (old_pam, old_bin, old_other) =
        (spec("pam", OLD), spec("pam-bin", OLD), spec("other", OLD));
    // As noble's libpam-modules(-bin): the fixed versions need a library the image lacks,
    // and pam needs pam-bin at exactly its own version.
    let mut new_bin = spec("pam-bin", NEW);
    new_bin.control.push("Pre-Depends: libdb5.3t64".into());
    let mut new_pam = spec("pam", NEW);
    new_pam
        .control
        .push(format!("Pre-Depends: pam-bin (= {NEW})"));
    let mut new_other = spec("other", NEW);
    new_other.control.push(format!("Depends: pam (>= {OLD})"));
    for new in [&new_bin, &new_pam, &new_other] {
        setup.repo.add(new);
    }
    setup.repo.publish();
    let installed: Vec<Installed> = [&old_pam, &old_bin, &old_other]
        .into_iter()
        .map(|spec| Installed {
            spec,
            modified_conffiles: Vec::new(),
        })
        .collect();
    let original = image(
        Format::Oci,
        "amd64",
        &[base_files(false), dpkg_files(&installed)],
    );
    images::push_image(&setup.registry.url(), "test/held", "1", &original).await;
    let config = setup.config("run");
    let layout = setup.path("layout");
    let run = patchpull(
        &config,
        &[
            "patch",
            "--insecure",
            "--oci-dir",
            layout.to_str().unwrap(),
            &setup.reference("test/held:1"),
        ],
    )
    .await;
    run.assert_ok();
    assert!(
        run.stdout.contains(&format!(
            "not planned: pam-bin {OLD} : kept back, as apt-get upgrade keeps it: pam-bin {NEW} \
             needs libdb5.3t64, which is not installed (apt-get upgrade installs no new package)"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "not planned: pam {OLD} : kept back, as apt-get upgrade keeps it: pam {NEW} needs \
             pam-bin (= {NEW}), and pam-bin is kept back"
        )),
        "{}",
        run.stdout
    );
    let root = unpack(&layout, "1-patched", &setup.path("bundle"));
    let versions = dpkg_query(&root);
    for expected in [
        format!("other {NEW}"),
        format!("pam {OLD}"),
        format!("pam-bin {OLD}"),
    ] {
        assert!(versions.contains(&expected), "{expected}: {versions}");
    }
}
