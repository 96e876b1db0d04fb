//! Alpine version ordering, written here after apk-tools' `src/version.c` (apk-tools 2.14
//! and 3.x; no maintained crate implements it).
//!
//! Grammar: `digits{.digits}[letter]{_suffix[digits]}[~hash][-r digits]`, read as tokens:
//! 1. the initial number (required);
//! 2. more numbers, each after a `.`;
//! 3. at most one lowercase letter, only straight after a number;
//! 4. any number of suffixes `_alpha`, `_beta`, `_pre`, `_rc` (pre-releases) or `_cvs`,
//!    `_svn`, `_git`, `_hg`, `_p` (post-releases), each optionally followed by a number;
//! 5. at most one commit hash `~` + lowercase hex digits (at least one);
//! 6. at most one revision `-r` + digits (at least one).
//!
//! Anything else (uppercase letters, `1.0bc`, `1a1`, `_foo`, `-pre1`, `-r`, a second
//! revision, a suffix after the revision, ...) is invalid. Tokens must come in that
//! order, except that suffixes may repeat.
//!
//! Order: both versions are read token by token while the two tokens are of the same
//! kind, and the first difference decides:
//! - the initial number, suffix numbers and revisions compare as numbers;
//! - a later number compares as a number, unless either side starts with `0`: then both
//!   compare as strings (so `1.01 < 1.1`, `1.001 < 1.01`, `1.0 < 1.00`, `8.2.0015 <
//!   8.2.002`);
//! - letters by character, suffixes in the order `alpha < beta < pre < rc < (none) < cvs
//!   < svn < git < hg < p`, commit hashes as strings.
//!
//! When one version runs out or the kinds differ, the side with a pre-release suffix
//! there is lower; otherwise the side whose token comes earlier in the list above is
//! higher: "more version" wins. So `1.0 < 1.0.1`, `1.0 < 1.0a`, `1.0_rc1 < 1.0 < 1.0_p1`,
//! `1.0 < 1.0-r0 < 1.0-r1 < 1.0~abc < 1.0_cvs`, `1.0a < 1.0.0`, and `1.0_alpha_pre2 <
//! 1.0_alpha < 1.0_alpha1 < 1.0_alpha_p1 < 1.0_beta`.
//!
//! One deliberate difference: apk-tools keeps numbers in a `uint64_t` and wraps past
//! 20 digits; here numbers of any length compare exactly.

use std::cmp::Ordering;
use std::fmt;

use crate::pkgs::{Ecosystem, VersionError};

/// A version that passed apk's grammar; `Ord` is apk's order.
#[derive(Debug, Clone)]
pub struct ApkVersion(String);

impl ApkVersion {
    /// Parses `version`, erroring with [`VersionError`] (naming the offending position)
    /// when apk's grammar (above) rejects it.
    pub fn parse(version: &str) -> Result<ApkVersion, VersionError> {
        let mut tokens = Tokens::new(version);
        loop {
            let token = tokens.next_token();
            match token.kind {
                Kind::End => return Ok(ApkVersion(version.to_owned())),
                Kind::Invalid => {
                    let at = version.len() - tokens.rest.len();
                    let reason = if version.is_empty() {
                        "version is empty".to_owned()
                    } else if at == 0 {
                        "version does not start with a digit".to_owned()
                    } else {
                        format!("unexpected {:?} at byte {at}", &version[at..])
                    };
                    return Err(VersionError::new(Ecosystem::Apk, version, reason));
                }
                _ => {}
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for ApkVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ApkVersion {}

impl PartialOrd for ApkVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ApkVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_tokens(&self.0, &other.0)
    }
}

impl fmt::Display for ApkVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ApkVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApkVersion::parse(s)
    }
}

/// Orders two Alpine versions; errors on the first one that is not valid.
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(ApkVersion::parse(a)?.cmp(&ApkVersion::parse(b)?))
}

/// Checks `version` against the grammar above.
pub fn validate(version: &str) -> Result<(), VersionError> {
    ApkVersion::parse(version).map(|_| ())
}

// === tokens ===

/// Token kinds in the order the grammar allows them; the order also decides comparisons
/// between versions of different shapes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    InitialNumber,
    Number,
    Letter,
    Suffix,
    SuffixNumber,
    CommitHash,
    Revision,
    End,
    Invalid,
}

/// Suffixes in ascending order; `Rc` and everything before it are pre-releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Suffix {
    Alpha,
    Beta,
    Pre,
    Rc,
    Cvs,
    Svn,
    Git,
    Hg,
    P,
}

impl Suffix {
    fn from_name(name: &str) -> Option<Suffix> {
        Some(match name {
            "alpha" => Suffix::Alpha,
            "beta" => Suffix::Beta,
            "pre" => Suffix::Pre,
            "rc" => Suffix::Rc,
            "cvs" => Suffix::Cvs,
            "svn" => Suffix::Svn,
            "git" => Suffix::Git,
            "hg" => Suffix::Hg,
            "p" => Suffix::P,
            _ => return None,
        })
    }

    fn is_pre_release(self) -> bool {
        self <= Suffix::Rc
    }
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    /// The token's characters without its separator (`.`, `_`, `~`, `-r`).
    text: &'a str,
    suffix: Option<Suffix>,
}

struct Tokens<'a> {
    rest: &'a str,
    last: Option<Kind>,
}

impl<'a> Tokens<'a> {
    fn new(version: &'a str) -> Self {
        Tokens {
            rest: version,
            last: None,
        }
    }

    fn next_token(&mut self) -> Token<'a> {
        let token = self.read();
        self.last = Some(token.kind);
        token
    }

    fn read(&mut self) -> Token<'a> {
        let Some(last) = self.last else {
            return self.digits(Kind::InitialNumber);
        };
        if last >= Kind::End {
            return token(last, "");
        }
        let Some(&first) = self.rest.as_bytes().first() else {
            return token(Kind::End, "");
        };
        match first {
            b'a'..=b'z' if last <= Kind::Number => {
                let (letter, rest) = self.rest.split_at(1);
                self.rest = rest;
                token(Kind::Letter, letter)
            }
            b'.' if last <= Kind::Number => {
                self.rest = &self.rest[1..];
                self.digits(Kind::Number)
            }
            b'0'..=b'9' if last == Kind::Suffix => self.digits(Kind::SuffixNumber),
            b'_' if last <= Kind::SuffixNumber => {
                let name = span(&self.rest[1..], |b| b.is_ascii_lowercase());
                match Suffix::from_name(name) {
                    Some(suffix) => {
                        self.rest = &self.rest[1 + name.len()..];
                        Token {
                            kind: Kind::Suffix,
                            text: name,
                            suffix: Some(suffix),
                        }
                    }
                    None => token(Kind::Invalid, ""),
                }
            }
            b'~' if last < Kind::CommitHash => {
                let hash = span(&self.rest[1..], |b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if hash.is_empty() {
                    return token(Kind::Invalid, "");
                }
                self.rest = &self.rest[1 + hash.len()..];
                token(Kind::CommitHash, hash)
            }
            b'-' if last < Kind::Revision => match self.rest.strip_prefix("-r") {
                Some(rest) => {
                    self.rest = rest;
                    self.digits(Kind::Revision)
                }
                None => token(Kind::Invalid, ""),
            },
            _ => token(Kind::Invalid, ""),
        }
    }

    fn digits(&mut self, kind: Kind) -> Token<'a> {
        let digits = span(self.rest, |b| b.is_ascii_digit());
        if digits.is_empty() {
            return token(Kind::Invalid, "");
        }
        self.rest = &self.rest[digits.len()..];
        token(kind, digits)
    }
}

fn token(kind: Kind, text: &str) -> Token<'_> {
    Token {
        kind,
        text,
        suffix: None,
    }
}

/// The longest prefix of `s` whose bytes all match `pred`.
fn span(s: &str, pred: impl Fn(u8) -> bool) -> &str {
    let end = s.bytes().position(|b| !pred(b)).unwrap_or(s.len());
    &s[..end]
}

/// apk's comparison (module doc). Defined for any input, valid or not, like apk-tools'
/// own: an invalid tail ends the walk as [`Kind::Invalid`], which sorts lowest.
fn compare_tokens(a: &str, b: &str) -> Ordering {
    let mut ta = Tokens::new(a);
    let mut tb = Tokens::new(b);
    loop {
        let x = ta.next_token();
        let y = tb.next_token();
        if x.kind != y.kind || x.kind >= Kind::End {
            return compare_tails(x, y);
        }
        let order = match x.kind {
            Kind::Number if x.text.starts_with('0') || y.text.starts_with('0') => {
                x.text.cmp(y.text)
            }
            Kind::InitialNumber | Kind::Number | Kind::SuffixNumber | Kind::Revision => {
                compare_numbers(x.text, y.text)
            }
            Kind::Suffix => x.suffix.cmp(&y.suffix),
            _ => x.text.cmp(y.text),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

/// Where the two versions stop having the same shape.
fn compare_tails(x: Token<'_>, y: Token<'_>) -> Ordering {
    let pre_release = |t: Token<'_>| t.suffix.is_some_and(Suffix::is_pre_release);
    if x.kind == y.kind {
        Ordering::Equal
    } else if pre_release(x) {
        Ordering::Less
    } else if pre_release(y) {
        Ordering::Greater
    } else {
        // The earlier kind means the version goes on where the other stopped.
        y.kind.cmp(&x.kind)
    }
}

/// Decimal digit strings compared by value, at any length.
fn compare_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests;
