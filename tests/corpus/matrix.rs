//! The corpus: which images, from which suite, with which packages, and what must run in
//! them. One table; everything else reads it.

/// A release, debootstrapped once per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Suite {
    Bookworm,
    Trixie,
    Jammy,
    Noble,
}

impl Suite {
    pub fn codename(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
            Suite::Jammy => "jammy",
            Suite::Noble => "noble",
        }
    }

    pub fn is_ubuntu(self) -> bool {
        matches!(self, Suite::Jammy | Suite::Noble)
    }

    /// The release suite's archive (debootstrap, the variants' packages).
    pub fn archive(self) -> &'static str {
        if self.is_ubuntu() {
            crate::archive::ARCHIVE
        } else {
            "http://deb.debian.org/debian"
        }
    }

    /// The one line of apt's sources that the reference upgrade reads: the security suite
    /// alone, where patchpull's scanner looks (`scan.point_releases = false`).
    pub fn security_source(self) -> String {
        let codename = self.codename();
        if self.is_ubuntu() {
            format!(
                "deb {} {codename}-security main restricted universe multiverse\n",
                crate::archive::ARCHIVE
            )
        } else {
            format!("deb http://deb.debian.org/debian-security {codename}-security main\n")
        }
    }

    /// The security suite's `InRelease`, whose `Valid-Until` bounds how far the second
    /// patch's clock may move.
    pub fn security_inrelease(self) -> String {
        let codename = self.codename();
        if self.is_ubuntu() {
            format!(
                "{}/dists/{codename}-security/InRelease",
                crate::archive::ARCHIVE
            )
        } else {
            format!("http://deb.debian.org/debian-security/dists/{codename}-security/InRelease")
        }
    }
}

/// What a variant does to its copy of the suite's root besides installing packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    None,
    /// `/etc/localtime` and `/etc/timezone` set to this zone and tzdata reconfigured, as a
    /// Dockerfile with `ENV TZ=...` does.
    TimeZone(&'static str),
    /// `/etc/dpkg/dpkg.cfg.d/excludes` written before the packages are installed, as slim
    /// images have it: no documentation but copyrights, no manual or info pages.
    DocsLess,
}

/// A root: the suite's minbase plus packages installed from the release suite (the point
/// release), shared by the images made of it.
#[derive(Debug)]
pub struct Variant {
    pub name: &'static str,
    pub suite: Suite,
    pub packages: &'static [&'static str],
    pub setup: Setup,
}

/// One image of the corpus.
#[derive(Debug)]
pub struct ImageSpec {
    pub name: &'static str,
    pub variant: &'static Variant,
    /// The variant laid out as Google's distroless images are: `status.d`, no shell, no
    /// dpkg, no apt (see `build::distroless`).
    pub distroless: bool,
    /// In the default `cargo test` run; the others only with `CORPUS=full` (or `rest`).
    pub fast: bool,
    /// The image's main programs, as argv (no shell: distroless images have none).
    pub programs: &'static [&'static [&'static str]],
    /// The image has libfaketime: the second patch fakes its maintainer scripts' clock too
    /// (`PATCHPULL_SCRIPTS_EXTRA_ENV`), so that py3compile's byte-code is made at another time.
    pub fake_script_clock: bool,
}

/// The shared-library set of a "many libraries" image: what a language runtime or an
/// application links against, without the programs.
const LIBRARIES: &[&str] = &[
    "libssl3",
    "libsqlite3-0",
    "libxml2",
    "libxslt1.1",
    "libcurl4",
    "libexpat1",
    "libgnutls30",
    "libkrb5-3",
    "libgssapi-krb5-2",
    "libldap-2.5-0",
    "libsasl2-2",
    "libnghttp2-14",
    "libssh2-1",
    "libpq5",
    "libtasn1-6",
];

pub static BOOKWORM_MINBASE: Variant = Variant {
    name: "bookworm-minbase",
    suite: Suite::Bookworm,
    packages: &[],
    setup: Setup::None,
};
pub static BOOKWORM_CURL: Variant = Variant {
    name: "bookworm-curl",
    suite: Suite::Bookworm,
    packages: &["ca-certificates", "openssl", "curl"],
    setup: Setup::None,
};
pub static BOOKWORM_PYTHON: Variant = Variant {
    name: "bookworm-python",
    suite: Suite::Bookworm,
    packages: &[
        "python3",
        "python3-minimal",
        "python3-yaml",
        "python3-six",
        "libfaketime",
    ],
    setup: Setup::None,
};
pub static BOOKWORM_PERL: Variant = Variant {
    name: "bookworm-perl",
    suite: Suite::Bookworm,
    packages: &["perl"],
    setup: Setup::None,
};
pub static BOOKWORM_NGINX: Variant = Variant {
    name: "bookworm-nginx",
    suite: Suite::Bookworm,
    packages: &["nginx"],
    setup: Setup::None,
};
pub static BOOKWORM_PSQL: Variant = Variant {
    name: "bookworm-postgresql-client",
    suite: Suite::Bookworm,
    packages: &["postgresql-client"],
    setup: Setup::None,
};
pub static BOOKWORM_JAVA: Variant = Variant {
    name: "bookworm-openjdk-17",
    suite: Suite::Bookworm,
    packages: &["openjdk-17-jre-headless"],
    setup: Setup::None,
};
pub static BOOKWORM_LIBS: Variant = Variant {
    name: "bookworm-libs",
    suite: Suite::Bookworm,
    packages: LIBRARIES,
    setup: Setup::None,
};
pub static BOOKWORM_TZDATA: Variant = Variant {
    name: "bookworm-tzdata",
    suite: Suite::Bookworm,
    packages: &["tzdata"],
    setup: Setup::TimeZone("Europe/Berlin"),
};
pub static BOOKWORM_SLIM: Variant = Variant {
    name: "bookworm-slim-curl",
    suite: Suite::Bookworm,
    packages: &["ca-certificates", "openssl", "curl"],
    setup: Setup::DocsLess,
};
pub static TRIXIE_MINBASE: Variant = Variant {
    name: "trixie-minbase",
    suite: Suite::Trixie,
    packages: &[],
    setup: Setup::None,
};
pub static JAMMY_MINBASE: Variant = Variant {
    name: "jammy-minbase",
    suite: Suite::Jammy,
    packages: &[],
    setup: Setup::None,
};
pub static NOBLE_MINBASE: Variant = Variant {
    name: "noble-minbase",
    suite: Suite::Noble,
    packages: &[],
    setup: Setup::None,
};

const APT_AND_PERL: &[&[&str]] = &[&["apt-get", "--version"], &["perl", "-e1"]];
const CURL: &[&[&str]] = &[&["openssl", "version"], &["curl", "--version"]];
/// The dynamic linker loads each library with everything it needs.
const LOAD_LIBRARIES: &[&[&str]] = &[
    &[
        "/lib64/ld-linux-x86-64.so.2",
        "--list",
        "/usr/lib/x86_64-linux-gnu/libcurl.so.4",
    ],
    &[
        "/lib64/ld-linux-x86-64.so.2",
        "--list",
        "/usr/lib/x86_64-linux-gnu/libxslt.so.1",
    ],
    &[
        "/lib64/ld-linux-x86-64.so.2",
        "--list",
        "/usr/lib/x86_64-linux-gnu/libpq.so.5",
    ],
];

const fn image(name: &'static str, variant: &'static Variant) -> ImageSpec {
    ImageSpec {
        name,
        variant,
        distroless: false,
        fast: false,
        programs: APT_AND_PERL,
        fake_script_clock: false,
    }
}

pub static BOOKWORM_MINBASE_IMAGE: ImageSpec = image("bookworm-minbase", &BOOKWORM_MINBASE);
pub static BOOKWORM_CURL_IMAGE: ImageSpec = ImageSpec {
    fast: true,
    programs: CURL,
    ..image("bookworm-curl", &BOOKWORM_CURL)
};
pub static BOOKWORM_PYTHON_IMAGE: ImageSpec = ImageSpec {
    programs: &[&[
        "python3",
        "-c",
        "import ssl, sqlite3, yaml, six; print(ssl.OPENSSL_VERSION)",
    ]],
    fake_script_clock: true,
    ..image("bookworm-python", &BOOKWORM_PYTHON)
};
pub static BOOKWORM_PERL_IMAGE: ImageSpec = ImageSpec {
    programs: &[
        &["perl", "-e1"],
        &["perl", "-MPOSIX", "-MDigest::SHA", "-e1"],
    ],
    ..image("bookworm-perl", &BOOKWORM_PERL)
};
pub static BOOKWORM_NGINX_IMAGE: ImageSpec = ImageSpec {
    programs: &[&["nginx", "-v"], &["nginx", "-t"]],
    ..image("bookworm-nginx", &BOOKWORM_NGINX)
};
pub static BOOKWORM_PSQL_IMAGE: ImageSpec = ImageSpec {
    programs: &[&["psql", "--version"]],
    ..image("bookworm-postgresql-client", &BOOKWORM_PSQL)
};
pub static BOOKWORM_JAVA_IMAGE: ImageSpec = ImageSpec {
    programs: &[&["java", "-version"]],
    ..image("bookworm-openjdk-17", &BOOKWORM_JAVA)
};
pub static BOOKWORM_LIBS_IMAGE: ImageSpec = ImageSpec {
    programs: LOAD_LIBRARIES,
    ..image("bookworm-libs", &BOOKWORM_LIBS)
};
pub static BOOKWORM_TZDATA_IMAGE: ImageSpec = ImageSpec {
    programs: &[&["date", "+%Z"]],
    ..image("bookworm-tzdata", &BOOKWORM_TZDATA)
};
pub static BOOKWORM_SLIM_IMAGE: ImageSpec = ImageSpec {
    programs: CURL,
    ..image("bookworm-slim-curl", &BOOKWORM_SLIM)
};
pub static TRIXIE_MINBASE_IMAGE: ImageSpec = image("trixie-minbase", &TRIXIE_MINBASE);
pub static JAMMY_MINBASE_IMAGE: ImageSpec = image("jammy-minbase", &JAMMY_MINBASE);
pub static NOBLE_MINBASE_IMAGE: ImageSpec = image("noble-minbase", &NOBLE_MINBASE);
pub static BOOKWORM_CURL_DISTROLESS: ImageSpec = ImageSpec {
    distroless: true,
    fast: true,
    programs: CURL,
    ..image("bookworm-curl-distroless", &BOOKWORM_CURL)
};
pub static BOOKWORM_LIBS_DISTROLESS: ImageSpec = ImageSpec {
    distroless: true,
    programs: LOAD_LIBRARIES,
    ..image("bookworm-libs-distroless", &BOOKWORM_LIBS)
};
pub static TRIXIE_MINBASE_DISTROLESS: ImageSpec = ImageSpec {
    distroless: true,
    programs: &[&["perl", "-e1"], &["ls", "/"]],
    ..image("trixie-minbase-distroless", &TRIXIE_MINBASE)
};

/// Every image, in the order of the matrix in docs/patching.md.
pub static ALL: &[&ImageSpec] = &[
    &BOOKWORM_MINBASE_IMAGE,
    &BOOKWORM_CURL_IMAGE,
    &BOOKWORM_PYTHON_IMAGE,
    &BOOKWORM_PERL_IMAGE,
    &BOOKWORM_NGINX_IMAGE,
    &BOOKWORM_PSQL_IMAGE,
    &BOOKWORM_JAVA_IMAGE,
    &BOOKWORM_LIBS_IMAGE,
    &BOOKWORM_TZDATA_IMAGE,
    &BOOKWORM_SLIM_IMAGE,
    &TRIXIE_MINBASE_IMAGE,
    &JAMMY_MINBASE_IMAGE,
    &NOBLE_MINBASE_IMAGE,
    &BOOKWORM_CURL_DISTROLESS,
    &BOOKWORM_LIBS_DISTROLESS,
    &TRIXIE_MINBASE_DISTROLESS,
];
