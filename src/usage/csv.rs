//! Minimal RFC 4180 CSV: enough for exports and directory imports without another dependency.

/// Appends one record (fields quoted when needed) and a CRLF line ending.
pub fn write_record<S: AsRef<str>>(out: &mut String, fields: &[S]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let f = f.as_ref();
        // A leading '=', '+', '-' or '@' would be run as a formula by spreadsheet software;
        // display names come from outside, so neutralise it with a leading apostrophe.
        let f = if f.starts_with(['=', '+', '@'])
            || (f.starts_with('-') && f.parse::<f64>().is_err())
        {
            std::borrow::Cow::Owned(format!("'{f}"))
        } else {
            std::borrow::Cow::Borrowed(f)
        };
        if f.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&f);
        }
    }
    out.push_str("\r\n");
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("CSV line {line}: {message}")]
pub struct CsvError {
    pub line: usize,
    pub message: &'static str,
}

/// Parses CSV text into records (quoted fields, doubled quotes, CRLF or LF); blank lines are
/// skipped.
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, CsvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text); // Excel writes a BOM.
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut in_quotes = false;
    let mut quoted_field = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted_field => {
                in_quotes = true;
                quoted_field = true;
            }
            '"' => {
                return Err(CsvError {
                    line,
                    message: "quote inside an unquoted field",
                })
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                quoted_field = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                record.push(std::mem::take(&mut field));
                quoted_field = false;
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push(std::mem::take(&mut record));
                }
                record.clear();
                line += 1;
            }
            _ if quoted_field => {
                return Err(CsvError {
                    line,
                    message: "text after a closing quote",
                })
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(CsvError {
            line,
            message: "unterminated quoted field",
        });
    }
    if !field.is_empty() || quoted_field || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_quotes_commas_and_newlines() {
        let mut out = String::new();
        write_record(&mut out, &["a", "b,c", "say \"hi\"", "两\n行"]);
        write_record(&mut out, &["", "-1.5", "=cmd()", "x"]);
        let back = parse(&out).unwrap();
        assert_eq!(back[0], vec!["a", "b,c", "say \"hi\"", "两\n行"]);
        assert_eq!(back[1], vec!["", "-1.5", "'=cmd()", "x"]);
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(
            parse("a,\"b").unwrap_err().message,
            "unterminated quoted field"
        );
        assert!(parse("a,b\"c").is_err());
        assert!(parse("\"a\"b").is_err());
        assert_eq!(parse("\u{feff}x,y\n\n").unwrap(), vec![vec!["x", "y"]]);
    }
}
