//! Where in the TOML text a dotted key or a byte offset is, so that every config error can name
//! file, line, column and key. Reads the text again with `toml_edit`, which keeps spans.

/// 1-based line and column (in characters) of byte `offset`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary_compat(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// `str::floor_char_boundary` is unstable; this is the same for our use.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// The byte offset of the dotted key `pools.green.servers[1]` in `text`: the key itself for
/// tables and values, the element for array items.
pub(super) fn locate(text: &str, dotted: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item = doc.as_item();
    let mut offset = None;
    for part in dotted.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let table = item.as_table_like()?;
        let (key, next) = table.get_key_value(name)?;
        offset = key
            .span()
            .or_else(|| next.span())
            .map(|s| s.start)
            .or(offset);
        item = next;
        if let Some(i) = index {
            let value = item.as_array()?.get(i)?;
            return value.span().map(|s| s.start).or(offset);
        }
    }
    offset
}

/// The dotted key whose key or value contains byte `offset`, the deepest one found.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    fn walk(table: &dyn toml_edit::TableLike, prefix: &str, offset: usize) -> Option<String> {
        for (key, item) in table.iter() {
            let name = if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            };
            if let Some(inner) = item.as_table_like() {
                if let Some(found) = walk(inner, &name, offset) {
                    return Some(found);
                }
            }
            let key_span = table.key(key).and_then(|k| k.span());
            let hit = |s: Option<std::ops::Range<usize>>| s.is_some_and(|s| s.contains(&offset));
            if hit(key_span) || (item.as_table_like().is_none() && hit(item.span())) {
                return Some(name);
            }
        }
        None
    }
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    walk(doc.as_table(), "", offset)
}
