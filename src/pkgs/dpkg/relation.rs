//! Package relationship fields (`deb-control(5)`: `Depends`, `Pre-Depends`, `Breaks`,
//! `Provides`, ...) as a dpkg database or a `.deb`'s control file writes them: groups
//! separated by `,`, alternatives by `|`, each `name[:arch] [(op version)]`. Architecture
//! restrictions (`[amd64]`) and build profiles (`<!nocheck>`) only appear in source
//! packages; they are skipped, not interpreted.

use std::cmp::Ordering;

use super::version::DebVersion;

/// `<<`, `<=`, `=`, `>=`, `>>` (and the obsolete `<` and `>`, which dpkg reads as `<=`
/// and `>=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Earlier,
    EarlierEqual,
    Equal,
    LaterEqual,
    Later,
}

impl Op {
    fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "<<" => Op::Earlier,
            "<=" | "<" => Op::EarlierEqual,
            "=" => Op::Equal,
            ">=" | ">" => Op::LaterEqual,
            ">>" => Op::Later,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Earlier => "<<",
            Op::EarlierEqual => "<=",
            Op::Equal => "=",
            Op::LaterEqual => ">=",
            Op::Later => ">>",
        }
    }

    fn accepts(self, order: Ordering) -> bool {
        match self {
            Op::Earlier => order == Ordering::Less,
            Op::EarlierEqual => order != Ordering::Greater,
            Op::Equal => order == Ordering::Equal,
            Op::LaterEqual => order != Ordering::Less,
            Op::Later => order == Ordering::Greater,
        }
    }
}

/// One alternative: a package name (its `:arch` qualifier dropped) and an optional
/// version constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub constraint: Option<(Op, String)>,
}

impl Relation {
    /// Whether `version` meets the constraint; an unparsable version meets none.
    pub fn accepts_version(&self, version: &str) -> bool {
        let Some((op, wanted)) = &self.constraint else {
            return true;
        };
        match (DebVersion::parse(version), DebVersion::parse(wanted)) {
            (Ok(have), Ok(wanted)) => op.accepts(have.cmp(&wanted)),
            _ => false,
        }
    }
}

impl std::fmt::Display for Relation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some((op, version)) = &self.constraint {
            write!(f, " ({} {version})", op.as_str())?;
        }
        Ok(())
    }
}

/// A group of alternatives (`a | b (>= 1)`): satisfied when any one is.
pub type Alternatives = Vec<Relation>;

/// Parses a relationship field into its groups; `Err` names the part that is not a
/// relation.
pub fn parse(field: &str) -> Result<Vec<Alternatives>, String> {
    let mut groups = Vec::new();
    for group in field.split(',') {
        if group.trim().is_empty() {
            continue;
        }
        let mut alternatives = Vec::new();
        for alternative in group.split('|') {
            alternatives.push(parse_one(alternative.trim())?);
        }
        groups.push(alternatives);
    }
    Ok(groups)
}

fn parse_one(text: &str) -> Result<Relation, String> {
    let invalid = || format!("not a package relation: {text:?}");
    let name_end = text
        .find(|c: char| c.is_whitespace() || matches!(c, '(' | '[' | '<'))
        .unwrap_or(text.len());
    let (qualified, mut rest) = text.split_at(name_end);
    let name = qualified.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return Err(invalid());
    }
    let mut constraint = None;
    rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('(') {
        let (inside, after) = inner.split_once(')').ok_or_else(invalid)?;
        let inside = inside.trim();
        let op_end = inside
            .find(|c: char| !matches!(c, '<' | '>' | '='))
            .ok_or_else(invalid)?;
        let op = Op::parse(&inside[..op_end]).ok_or_else(invalid)?;
        let version = inside[op_end..].trim();
        if version.is_empty() {
            return Err(invalid());
        }
        constraint = Some((op, version.to_owned()));
        rest = after.trim_start();
    }
    // `[arch ...]` and `<profile ...>` (source packages only) are skipped.
    if !rest.is_empty() && !rest.starts_with('[') && !rest.starts_with('<') {
        return Err(invalid());
    }
    Ok(Relation {
        name: name.to_owned(),
        constraint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_alternatives_qualifiers_and_constraints_parse() {
        let groups = parse(
            "libc6 (>= 2.34), libpam-modules-bin (= 1.5.3-5ubuntu5.7), \
             debconf (>= 0.5) | debconf-2.0, python3:any, perl (>> 5)",
        )
        .unwrap();
        assert_eq!(groups.len(), 5);
        assert_eq!(groups[2].len(), 2);
        assert_eq!(groups[2][1].name, "debconf-2.0");
        assert_eq!(groups[3][0].name, "python3");
        assert_eq!(
            groups[1][0].to_string(),
            "libpam-modules-bin (= 1.5.3-5ubuntu5.7)"
        );
        assert!(groups[0][0].accepts_version("2.36-9+deb12u4"));
        assert!(!groups[0][0].accepts_version("2.31-0ubuntu9"));
        assert!(!groups[4][0].accepts_version("5"));
        assert!(groups[4][0].accepts_version("5.36.0-7"));
        assert!(parse("").unwrap().is_empty());
        assert!(parse("libc6 (>= )").is_err());
        assert!(parse("libc6 junk").is_err());
    }
}
