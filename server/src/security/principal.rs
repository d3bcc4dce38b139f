//! Principals from TLS client certificates: the certificate's subject as Java's
//! `X500Principal.getName()` writes it (RFC 2253: most specific first, `CN=...,O=...`),
//! mapped by `ssl.principal.mapping.rules` (KIP-371: `RULE:pattern/replacement/[LU]`,
//! tried in order, `DEFAULT` keeps the subject).

use regex::Regex;

/// One `ssl.principal.mapping.rules` entry.
#[derive(Debug, Clone)]
enum Rule {
    Default,
    Map {
        pattern: Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// The parsed `ssl.principal.mapping.rules`.
#[derive(Debug, Clone)]
pub struct PrincipalRules(Vec<Rule>);

impl Default for PrincipalRules {
    fn default() -> Self {
        PrincipalRules(vec![Rule::Default])
    }
}

/// Reads up to the next unescaped `/`; returns (text with `\/` unescaped, rest after `/`).
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '/' => return Some((out, &s[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

impl PrincipalRules {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        let mut rest = text.trim();
        let group_ref = Regex::new(r"\$(\d+)").map_err(|e| e.to_string())?;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let bad = || format!("ssl.principal.mapping.rules: bad rule at {rest:?}");
                let (pattern, after) = until_slash(after).ok_or_else(bad)?;
                let (replacement, after) = until_slash(after).ok_or_else(bad)?;
                let (case, after) = match after.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                    _ => (None, after),
                };
                let pattern = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("ssl.principal.mapping.rules: {e}"))?;
                // Java's `$1` is `${1}` here (`$1a` would name a group "1a").
                let replacement = group_ref.replace_all(&replacement, "$${$1}").into_owned();
                rules.push(Rule::Map {
                    pattern,
                    replacement,
                    case,
                });
                rest = after;
            } else {
                return Err(format!(
                    "ssl.principal.mapping.rules: expected RULE: or DEFAULT at {rest:?}"
                ));
            }
            rest = rest.trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        }
        if rules.is_empty() {
            rules.push(Rule::Default);
        }
        Ok(PrincipalRules(rules))
    }

    /// The principal name for a certificate subject: the first rule that matches (the
    /// subject itself if none does, as Kafka).
    pub fn map(&self, subject: &str) -> String {
        for rule in &self.0 {
            match rule {
                Rule::Default => return subject.to_owned(),
                Rule::Map {
                    pattern,
                    replacement,
                    case,
                } => {
                    if pattern.is_match(subject) {
                        let out = pattern.replace(subject, replacement.as_str()).into_owned();
                        return match case {
                            Some('L') => out.to_lowercase(),
                            Some('U') => out.to_uppercase(),
                            _ => out,
                        };
                    }
                }
            }
        }
        subject.to_owned()
    }
}

/// A DER certificate's subject in RFC 2253 form (`CN=client,OU=eng,O=Example,C=US`).
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let rdns: Vec<String> = cert
        .subject()
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let key = x509_parser::objects::oid2abbrev(
                        atv.attr_type(),
                        x509_parser::objects::oid_registry(),
                    )
                    .map(str::to_owned)
                    .unwrap_or_else(|_| atv.attr_type().to_id_string());
                    let value = atv.as_str().map(escape).unwrap_or_default();
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

/// RFC 2253 escaping of an attribute value.
fn escape(v: &str) -> String {
    let mut out = String::new();
    for (i, c) in v.chars().enumerate() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kip371_rules_map_subjects() {
        let rules = PrincipalRules::parse(
            r"RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, DEFAULT",
        )
        .unwrap();
        assert_eq!(
            rules.map("CN=kafka-svc,OU=ServiceUsers,O=Unknown"),
            "kafka-svc"
        );
        assert_eq!(
            rules.map("CN=Duke,OU=JavaSoft,O=Sun,L=SC,ST=CA,C=US"),
            "duke@javasoft"
        );
        assert_eq!(rules.map("CN=other"), "CN=other");
        let upper = PrincipalRules::parse(r"RULE:^CN=([^,]*).*$/$1/U").unwrap();
        assert_eq!(upper.map("CN=alice,O=x"), "ALICE");
        assert_eq!(PrincipalRules::default().map("CN=a"), "CN=a");
        assert!(PrincipalRules::parse("RULE:(/x").is_err());
        assert!(PrincipalRules::parse("nonsense").is_err());
    }
}
