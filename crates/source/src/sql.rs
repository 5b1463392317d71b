//! Quoting of identifiers and literals for SQL we build from user input.

/// `"ident"`, always quoted, inner double quotes doubled, so the name is
/// taken exactly as given (no case folding, no keyword clash).
pub fn quote_ident(ident: &str) -> String {
    let mut out = String::with_capacity(ident.len() + 2);
    out.push('"');
    for c in ident.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `'text'` with inner single quotes doubled; when the text has a backslash
/// the `E'...'` form with backslashes doubled, which means the same whatever
/// `standard_conforming_strings` is.
pub fn quote_literal(text: &str) -> String {
    let has_backslash = text.contains('\\');
    let mut out = String::with_capacity(text.len() + 3);
    if has_backslash {
        out.push('E');
    }
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idents_are_always_quoted() {
        assert_eq!(quote_ident("abc"), "\"abc\"");
        assert_eq!(quote_ident("Mixed Case"), "\"Mixed Case\"");
        assert_eq!(quote_ident(""), "\"\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn ident_injection_stays_inside_quotes() {
        let q = quote_ident("x\"; DROP TABLE t; --");
        assert_eq!(q, "\"x\"\"; DROP TABLE t; --\"");
        // Every inner quote is doubled, so the only lone quotes are the ends.
        let inner = &q[1..q.len() - 1];
        assert!(!inner.replace("\"\"", "").contains('"'));
    }

    #[test]
    fn literals() {
        assert_eq!(quote_literal("abc"), "'abc'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
        assert_eq!(quote_literal(""), "''");
    }

    #[test]
    fn literal_injection_stays_inside_quotes() {
        assert_eq!(
            quote_literal("'); DROP TABLE t; --"),
            "'''); DROP TABLE t; --'"
        );
        // A backslash must not be able to escape the closing quote.
        assert_eq!(quote_literal(r"\'; SELECT 1; --"), r"E'\\''; SELECT 1; --'");
    }
}
