//! Table names as configuration, signals and logs spell them, and table topics as Debezium
//! names them.
//!
//! PostgreSQL allows any character in a quoted identifier, a dot included, so `schema.table`
//! alone is ambiguous: `"a.b"."c"` and `"a"."b.c"` would both print `a.b.c`. tidemark
//! spells a table `schema.table` when neither part holds a dot or a double quote (or is
//! empty), and quotes the parts that do as PostgreSQL does (`"Quoted_"" . Schema".t`:
//! double quotes around, a quote inside doubled) — [`qualified`]. [`split_qualified`] reads
//! both spellings back ([`split_selector`] also tells `schema.*` from a table named `"*"`), so `source.tables`, `sink.tables`, routes, signals and the snapshot
//! progress can name every table; an unquoted part is taken as it is written (case kept).
//!
//! A table topic is `<prefix>.<schema>.<table>` with every character Kafka does not allow in
//! a topic name (anything but ASCII letters, digits, `.`, `_` and `-`) replaced by `_`, as
//! Debezium's topic naming strategy does ([`topic_name`]): `"sp ace"` lands on
//! `<prefix>.public.sp_ace`, `"Ünï"` on `<prefix>.public._n_`, and the dots of a dotted
//! name stay, so such a topic has more than three parts.

/// `schema.table`, each part quoted PostgreSQL-style when it holds a dot or a double quote
/// or is empty (see the module docs).
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", part(schema), part(table))
}

/// One part of [`qualified`].
fn part(name: &str) -> String {
    if name.is_empty() || name.contains(['.', '"']) {
        format!("\"{}\"", name.replace('"', "\"\""))
    } else {
        name.to_owned()
    }
}

/// Reads `schema.table` as [`qualified`] writes it (either part may be quoted, `""` inside
/// quotes standing for a quote); `None` when the text is not exactly two parts.
pub fn split_qualified(text: &str) -> Option<(String, String)> {
    split_parts(text).map(|((schema, _), (table, _))| (schema, table))
}

/// A table selector's `schema.table` or `schema.*`: the schema, and the table or `None` for
/// an unquoted `*` (a table named `*` is written `"*"`).
pub fn split_selector(text: &str) -> Option<(String, Option<String>)> {
    let ((schema, _), (table, quoted)) = split_parts(text)?;
    Some((schema, (quoted || table != "*").then_some(table)))
}

/// The two parts of `schema.table`, each with whether it was quoted.
fn split_parts(text: &str) -> Option<((String, bool), (String, bool))> {
    let (schema, rest) = read_part(text)?;
    let rest = rest.strip_prefix('.')?;
    let (table, rest) = read_part(rest)?;
    rest.is_empty().then_some((schema, table))
}

/// One part at the start of `text`, whether it was quoted, and what follows it: a quoted
/// identifier, or the text up to the next dot.
fn read_part(text: &str) -> Option<((String, bool), &str)> {
    let Some(mut rest) = text.strip_prefix('"') else {
        let end = text.find(['.', '"']).unwrap_or(text.len());
        return (end > 0).then(|| ((text[..end].to_owned(), false), &text[end..]));
    };
    let mut name = String::new();
    loop {
        let quote = rest.find('"')?;
        name.push_str(&rest[..quote]);
        rest = &rest[quote + 1..];
        match rest.strip_prefix('"') {
            Some(after) => {
                name.push('"');
                rest = after;
            }
            None => return Some(((name, true), rest)),
        }
    }
}

/// `<prefix>.<schema>.<table>` as a Kafka topic name, Debezium's way: every character but
/// ASCII letters, digits, `.`, `_` and `-` replaced by `_` (see the module docs).
pub fn topic_name(prefix: &str, schema: &str, table: &str) -> String {
    format!("{prefix}.{schema}.{table}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_plain_and_dotted_ones_are_quoted() {
        assert_eq!(qualified("public", "orders"), "public.orders");
        assert_eq!(qualified("Sales", "My Table"), "Sales.My Table");
        assert_eq!(
            qualified("Quoted_\" . Schema", "Quoted_\" . Table"),
            "\"Quoted_\"\" . Schema\".\"Quoted_\"\" . Table\""
        );
        assert_eq!(qualified("a.b", "c"), "\"a.b\".c");
    }

    #[test]
    fn every_spelling_reads_back() {
        for (schema, table) in [
            ("public", "orders"),
            ("a.b", "c"),
            ("a", "b.c"),
            ("Quoted_\" . Schema", "Quoted_\" . Table"),
            ("", "x"),
            ("sp ace", "Ünï"),
        ] {
            assert_eq!(
                split_qualified(&qualified(schema, table)),
                Some((schema.to_owned(), table.to_owned())),
                "{schema} {table}"
            );
        }
        assert_eq!(
            split_qualified("\"public\".\"Orders\""),
            Some(("public".into(), "Orders".into()))
        );
        for bad in [
            "public", "a.b.c", "\"a.b\"", "\"a\"x.b", "a.", ".b", "\"a.b",
        ] {
            assert_eq!(split_qualified(bad), None, "{bad}");
        }
        assert_eq!(split_selector("sales.*"), Some(("sales".into(), None)));
        assert_eq!(
            split_selector("sales.\"*\""),
            Some(("sales".into(), Some("*".into())))
        );
        assert_eq!(
            split_selector("\"a.b\".c"),
            Some(("a.b".into(), Some("c".into())))
        );
    }

    #[test]
    fn topics_are_named_as_debezium_names_them() {
        // Debezium 3.6.1's topics for these tables, from a run of its connector.
        assert_eq!(
            topic_name("pr", "Quoted_\" . Schema", "Quoted_\" . Table"),
            "pr.Quoted___._Schema.Quoted___._Table"
        );
        assert_eq!(topic_name("pr", "public", "sp ace"), "pr.public.sp_ace");
        assert_eq!(topic_name("pr", "public", "Ünï"), "pr.public._n_");
        assert_eq!(topic_name("shop", "public", "orders"), "shop.public.orders");
    }
}
