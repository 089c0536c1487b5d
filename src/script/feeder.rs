//! Data feeders: a CSV or JSONL file whose rows fill the clients' templates, so a thousand
//! simulated users log in as a thousand different accounts instead of one.
//!
//! A file is read once, at plan time, into a [`Feeder`] that every client of a group shares
//! behind an `Arc` and that travels to worker processes inside the plan. Each client picks its
//! row with [`Feeder::row_for`], a pure function of the order, its id and the run's seed, so a
//! replay with the same seed gives every client the same row again.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Larger files are refused: the whole file is held in memory, in every worker process.
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Which row each client takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedOrder {
    /// Client `n` takes row `n`, wrapping around when clients outnumber rows.
    Sequential,
    /// Each client takes a row drawn from the run's seed, uniformly, with repeats.
    Random,
    /// Like sequential, but the plan refuses more clients than rows: no row is used twice.
    Unique,
}

/// The rows of a CSV (first row = column names, RFC 4180 quoting) or JSONL file (one JSON
/// object per line; a string value is used as is, numbers, bools and null as their JSON text,
/// nested objects and arrays as compact JSON text; the columns are the union of keys in
/// first-appearance order, a missing key is an empty string).
///
/// Serializes as `{"columns": [..], "rows": [[..], ..]}`; deserializing checks the shape, so
/// a feeder always has at least one column and one row.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "FeederRows")]
pub struct Feeder {
    columns: Vec<String>,
    /// Every cell's text back to back, row by row: one allocation for the whole file rather
    /// than one per cell, which matters for a million-row list of accounts.
    text: String,
    /// Where each cell starts in `text`, plus where the last one ends: cell `i` is
    /// `text[bounds[i]..bounds[i + 1]]`. `u32` halves the index next to `usize`; the file cap
    /// keeps offsets far below its limit.
    bounds: Vec<u32>,
}

/// The shape a feeder travels in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeederRows {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// The formats a data file can be in, told apart by its extension.
#[derive(Clone, Copy)]
enum Format {
    Csv,
    Jsonl,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

impl Feeder {
    /// Reads a `.csv`, `.jsonl` or `.ndjson` file. Errors name the file and, for its content,
    /// the line.
    pub fn load(path: &Path) -> Result<Feeder, String> {
        let shown = path.display();
        let format = Format::of(path).ok_or_else(|| {
            format!("cannot tell the format of {shown}: expected a .csv, .jsonl or .ndjson file")
        })?;
        let text = read_text(path)?;
        match format {
            Format::Csv => Feeder::from_csv_text(&text),
            Format::Jsonl => Feeder::from_jsonl_text(&text),
        }
        .map_err(|e| format!("{shown}: {e}"))
    }

    /// A header row of column names, then one row per record; fields may be quoted, with
    /// commas, doubled quotes and line breaks inside the quotes (RFC 4180).
    pub fn from_csv_text(text: &str) -> Result<Feeder, String> {
        let mut reader = csv::Reader::from_reader(without_bom(text).as_bytes());
        let header = reader.headers().map_err(csv_error)?;
        if header.is_empty() {
            return Err(
                "the file is empty; expected a header row of column names, then data rows".into(),
            );
        }
        let mut table = Table::new(header.iter().map(str::to_owned).collect())?;
        let mut record = csv::StringRecord::new();
        while reader.read_record(&mut record).map_err(csv_error)? {
            for field in &record {
                table.push_cell(field)?;
            }
        }
        table.finish("the header row is not followed by any data rows")
    }

    /// One JSON object per line; blank lines are skipped.
    pub fn from_jsonl_text(text: &str) -> Result<Feeder, String> {
        // Columns are only known once every line is read, so values are first staged in file
        // order with their column, then laid out row by row.
        let mut columns = Vec::new();
        let mut column_of = HashMap::new();
        let mut staged = String::new();
        let mut cells: Vec<(usize, usize, usize)> = Vec::new(); // (column, start, end) in `staged`
        let mut row_starts = Vec::new(); // where each row's cells start in `cells`
        // The last row that set each column, to catch a key given twice in one object.
        let mut last_row_of_column: Vec<usize> = Vec::new();

        for (index, line) in without_bom(text).split('\n').enumerate() {
            let line_number = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let JsonRow(pairs) = serde_json::from_str(line).map_err(|e| {
                // serde_json counts lines within the one line it was given: keep its column,
                // put the file's line number in front. A line that is JSON but not an object
                // (the only data error, as nested values may be anything) gets no column:
                // serde_json puts it before or after the value depending on its type.
                let message = e.to_string();
                let suffix = format!(" at line {} column {}", e.line(), e.column());
                let message = message.strip_suffix(&suffix).unwrap_or(&message);
                match e.classify() {
                    serde_json::error::Category::Data => format!("line {line_number}: {message}"),
                    _ => format!("line {line_number}, column {}: {message}", e.column()),
                }
            })?;
            let row = row_starts.len();
            row_starts.push(cells.len());
            for (key, value) in pairs {
                let column = match column_of.entry(key) {
                    Entry::Occupied(entry) => *entry.get(),
                    Entry::Vacant(entry) => {
                        columns.push(entry.key().clone());
                        last_row_of_column.push(usize::MAX);
                        *entry.insert(columns.len() - 1)
                    }
                };
                if last_row_of_column[column] == row {
                    return Err(format!(
                        "line {line_number}: key \"{}\" appears twice in the object",
                        columns[column]
                    ));
                }
                last_row_of_column[column] = row;
                let start = staged.len();
                staged.push_str(&value);
                cells.push((column, start, staged.len()));
            }
        }
        if row_starts.is_empty() {
            return Err("the file has no rows; expected one JSON object per line".into());
        }
        if columns.is_empty() {
            return Err("every object is empty; expected objects with at least one key".into());
        }

        let width = columns.len();
        let mut table = Table::new(columns)?;
        let mut slots = vec![None; width];
        row_starts.push(cells.len());
        for row in row_starts.windows(2) {
            slots.fill(None);
            for &(column, start, end) in &cells[row[0]..row[1]] {
                slots[column] = Some(&staged[start..end]);
            }
            for slot in &slots {
                table.push_cell(slot.unwrap_or(""))?;
            }
        }
        table.finish("the file has no rows")
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The index of the column called `name`; names are unique, so there is at most one.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column == name)
    }

    /// At least one.
    pub fn rows(&self) -> usize {
        (self.bounds.len() - 1) / self.columns.len()
    }

    /// The row client `client` (global id 0..) uses: `Sequential` → `client % rows`; `Unique`
    /// → `client` (the plan has checked there are rows enough; it still wraps rather than fail);
    /// `Random` → a row picked by a hash of (seed, client), uniform over the rows.
    pub fn row_for(&self, order: FeedOrder, client: u32, seed: u64) -> usize {
        /// Keeps the random pick independent of the client's own RNG, which is seeded from
        /// `mix(seed, client)` itself.
        const FEEDER_STREAM: u64 = 0xfeed_0001;
        let rows = self.rows() as u64;
        let row = match order {
            FeedOrder::Sequential | FeedOrder::Unique => u64::from(client) % rows,
            FeedOrder::Random => {
                let hash = crate::seed::mix(crate::seed::mix(seed, FEEDER_STREAM), client.into());
                // Multiply-shift maps the hash onto 0..rows without a modulo's bias toward the
                // first rows (a bias of rows / 2^64 is left, far below what a run could see).
                ((u128::from(hash) * u128::from(rows)) >> 64) as u64
            }
        };
        row as usize
    }

    /// The text of one cell.
    ///
    /// # Panics
    ///
    /// If `row` or `column` is out of range; they come from [`Feeder::row_for`] and
    /// [`Feeder::column`], never straight from user input.
    pub fn value(&self, row: usize, column: usize) -> &str {
        assert!(
            column < self.columns.len(),
            "column {column} of a feeder with {} columns",
            self.columns.len()
        );
        let cell = row * self.columns.len() + column;
        &self.text[self.bounds[cell] as usize..self.bounds[cell + 1] as usize]
    }
}

impl Serialize for Feeder {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// The rows as nested sequences, written straight from the flat text without copying.
        struct Rows<'a>(&'a Feeder);
        struct Row<'a>(&'a Feeder, usize);
        impl Serialize for Rows<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq((0..self.0.rows()).map(|row| Row(self.0, row)))
            }
        }
        impl Serialize for Row<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let Row(feeder, row) = *self;
                serializer.collect_seq((0..feeder.columns.len()).map(|c| feeder.value(row, c)))
            }
        }

        let mut wire = serializer.serialize_struct("Feeder", 2)?;
        wire.serialize_field("columns", &self.columns)?;
        wire.serialize_field("rows", &Rows(self))?;
        wire.end()
    }
}

impl TryFrom<FeederRows> for Feeder {
    type Error = String;

    fn try_from(wire: FeederRows) -> Result<Feeder, String> {
        let width = wire.columns.len();
        if width == 0 {
            return Err("a feeder needs at least one column".into());
        }
        let mut table = Table::new(wire.columns)?;
        for (index, row) in wire.rows.iter().enumerate() {
            if row.len() != width {
                return Err(format!(
                    "feeder row {} has {} values for {width} columns",
                    index + 1,
                    row.len()
                ));
            }
            for cell in row {
                table.push_cell(cell)?;
            }
        }
        table.finish("a feeder needs at least one row")
    }
}

/// A feeder under construction; the one place the layout's invariants are kept.
struct Table {
    columns: Vec<String>,
    text: String,
    bounds: Vec<u32>,
}

impl Table {
    fn new(columns: Vec<String>) -> Result<Table, String> {
        let mut seen = HashMap::with_capacity(columns.len());
        for (index, name) in columns.iter().enumerate() {
            if let Some(first) = seen.insert(name.as_str(), index) {
                // Templates name columns, so a repeated name could only ever reach one of them.
                return Err(format!(
                    "column \"{name}\" appears twice in the header (columns {} and {})",
                    first + 1,
                    index + 1
                ));
            }
        }
        Ok(Table {
            columns,
            text: String::new(),
            bounds: vec![0],
        })
    }

    fn push_cell(&mut self, cell: &str) -> Result<(), String> {
        self.text.push_str(cell);
        let end = u32::try_from(self.text.len())
            .map_err(|_| "the data is over 4 GiB once parsed, too large to feed".to_owned())?;
        self.bounds.push(end);
        Ok(())
    }

    /// The feeder, or `no_rows` as the error if no row was pushed.
    fn finish(mut self, no_rows: &str) -> Result<Feeder, String> {
        if self.bounds.len() == 1 {
            return Err(no_rows.to_owned());
        }
        debug_assert_eq!((self.bounds.len() - 1) % self.columns.len(), 0);
        self.text.shrink_to_fit();
        self.bounds.shrink_to_fit();
        Ok(Feeder {
            columns: self.columns,
            text: self.text,
            bounds: self.bounds,
        })
    }
}

/// The file as text, refusing files over the cap before reading them.
fn read_text(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let cannot_read = |e: std::io::Error| format!("cannot read {shown}: {e}");
    let too_large = || format!("{shown} is larger than the 256 MiB limit for data files");
    let file = File::open(path).map_err(cannot_read)?;
    if file.metadata().map_err(cannot_read)?.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    // The size can change after the check, and pipes report none: the read is capped too.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        format!("{shown}: line {line} is not valid UTF-8 text")
    })
}

/// Spreadsheet exports often start with a byte order mark, which would otherwise become part
/// of the first column's name or break the first JSON object.
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

fn csv_error(e: csv::Error) -> String {
    let line = e.position().map(csv::Position::line);
    match (e.kind(), line) {
        (
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            },
            Some(line),
        ) => format!(
            "line {line}: expected {expected_len} fields, as in the header row, but found {len}"
        ),
        (_, Some(line)) => format!("line {line}: {e}"),
        (_, None) => e.to_string(),
    }
}

/// One JSONL line: its keys and cell texts in the order written. `serde_json::Map` would sort
/// the keys unless a crate feature is on, and the column order is the order the user wrote.
struct JsonRow(Vec<(String, String)>);

impl<'de> Deserialize<'de> for JsonRow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = JsonRow;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object (one row per line)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonRow, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((key, JsonText(value))) = map.next_entry::<String, Cell>()? {
                    pairs.push((key, value));
                }
                Ok(JsonRow(pairs))
            }
        }
        deserializer.deserialize_map(RowVisitor)
    }
}

/// A top-level value as a cell: a string as is, anything else as compact JSON.
type Cell = JsonText<false>;

/// A value as JSON text, compact; with `QUOTE` false a string is given bare, unquoted.
struct JsonText<const QUOTE: bool>(String);

impl<'de, const QUOTE: bool> Deserialize<'de> for JsonText<QUOTE> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(TextVisitor::<QUOTE>)
            .map(JsonText)
    }
}

struct TextVisitor<const QUOTE: bool>;

impl<'de, const QUOTE: bool> Visitor<'de> for TextVisitor<QUOTE> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        // serde_json's own formatting, so 1.5 stays "1.5"; JSON text has no NaN or infinity.
        Ok(serde_json::Number::from_f64(v).map_or_else(|| "null".to_owned(), |n| n.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if QUOTE {
            serde_json::to_string(v).map_err(E::custom)
        } else {
            Ok(v.to_owned())
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        if QUOTE { self.visit_str(&v) } else { Ok(v) }
    }

    fn visit_unit<E>(self) -> Result<String, E> {
        Ok("null".to_owned())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        let mut out = String::from("[");
        while let Some(JsonText::<true>(item)) = seq.next_element()? {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&item);
        }
        out.push(']');
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        let mut out = String::from("{");
        while let Some((JsonText::<true>(key), JsonText::<true>(value))) = map.next_entry()? {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&key);
            out.push(':');
            out.push_str(&value);
        }
        out.push('}');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> Feeder {
        Feeder::from_csv_text(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn jsonl(text: &str) -> Feeder {
        Feeder::from_jsonl_text(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every row, as owned strings, to compare whole tables at once.
    fn table(feeder: &Feeder) -> Vec<Vec<&str>> {
        (0..feeder.rows())
            .map(|row| {
                (0..feeder.columns().len())
                    .map(|c| feeder.value(row, c))
                    .collect()
            })
            .collect()
    }

    fn write(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn csv_rows_and_columns() {
        let feeder = csv("user,token\nalice,t1\nbob,t2\n");
        assert_eq!(feeder.columns(), ["user", "token"]);
        assert_eq!(feeder.rows(), 2);
        assert_eq!(feeder.column("token"), Some(1));
        assert_eq!(feeder.column("nope"), None);
        assert_eq!(table(&feeder), [["alice", "t1"], ["bob", "t2"]]);
    }

    #[test]
    fn csv_quoting_keeps_commas_quotes_and_line_breaks() {
        let text = "id,note\r\n1,\"a, b\"\r\n2,\"say \"\"hi\"\"\"\r\n3,\"two\nlines\"\r\n4,\r\n";
        let feeder = csv(text);
        assert_eq!(
            table(&feeder),
            [
                ["1", "a, b"],
                ["2", "say \"hi\""],
                ["3", "two\nlines"],
                ["4", ""]
            ]
        );
    }

    #[test]
    fn csv_values_are_not_trimmed_and_a_bom_is_dropped() {
        let feeder = csv("\u{feff}name\n  spaced  \n");
        assert_eq!(feeder.columns(), ["name"]);
        assert_eq!(feeder.value(0, 0), "  spaced  ");
    }

    #[test]
    fn csv_row_with_the_wrong_field_count_names_its_line() {
        // The quoted line break makes the bad record start on line 4, not line 3.
        let err = Feeder::from_csv_text("a,b\n\"x\ny\",1\n3,4,5\n").unwrap_err();
        assert_eq!(
            err,
            "line 4: expected 2 fields, as in the header row, but found 3"
        );
        let err = Feeder::from_csv_text("a,b\n1,2\n3\n").unwrap_err();
        assert_eq!(
            err,
            "line 3: expected 2 fields, as in the header row, but found 1"
        );
    }

    #[test]
    fn csv_without_rows_or_with_a_repeated_column_is_refused() {
        let err = Feeder::from_csv_text("").unwrap_err();
        assert!(err.starts_with("the file is empty"), "{err}");
        let err = Feeder::from_csv_text("a,b\n").unwrap_err();
        assert_eq!(err, "the header row is not followed by any data rows");
        let err = Feeder::from_csv_text("id,name,id\n1,2,3\n").unwrap_err();
        assert_eq!(
            err,
            "column \"id\" appears twice in the header (columns 1 and 3)"
        );
    }

    #[test]
    fn jsonl_values_become_text() {
        let text = concat!(
            r#"{"s":"plain \"quoted\" é","n":42,"f":1.5,"neg":-7,"t":true,"z":null}"#,
            "\n",
            r#"{"o":{"b":1,"a":[1,"x",{"k":null}]},"arr":[],"empty":{}}"#,
            "\n",
        );
        let feeder = jsonl(text);
        assert_eq!(
            feeder.columns(),
            ["s", "n", "f", "neg", "t", "z", "o", "arr", "empty"]
        );
        let value = |row, name| feeder.value(row, feeder.column(name).unwrap());
        assert_eq!(value(0, "s"), "plain \"quoted\" é");
        assert_eq!(value(0, "n"), "42");
        assert_eq!(value(0, "f"), "1.5");
        assert_eq!(value(0, "neg"), "-7");
        assert_eq!(value(0, "t"), "true");
        assert_eq!(value(0, "z"), "null");
        // Nested values keep the key order they were written in.
        assert_eq!(value(1, "o"), r#"{"b":1,"a":[1,"x",{"k":null}]}"#);
        assert_eq!(value(1, "arr"), "[]");
        assert_eq!(value(1, "empty"), "{}");
        assert_eq!(value(1, "s"), "", "a missing key is empty");
        assert_eq!(value(0, "o"), "");
    }

    #[test]
    fn jsonl_nested_strings_are_escaped_again() {
        let feeder = jsonl(r#"{"o":{"q":"a\"b\\c\nd"}}"#);
        assert_eq!(feeder.value(0, 0), r#"{"q":"a\"b\\c\nd"}"#);
    }

    #[test]
    fn jsonl_columns_are_the_union_in_first_appearance_order() {
        let feeder = jsonl("{\"b\":1,\"a\":2}\r\n\n   \n{\"c\":3,\"a\":4}\n");
        assert_eq!(feeder.columns(), ["b", "a", "c"]);
        assert_eq!(table(&feeder), [["1", "2", ""], ["", "4", "3"]]);
    }

    #[test]
    fn jsonl_errors_name_line_and_column() {
        let err = Feeder::from_jsonl_text("{\"a\":1}\n\n[1,2]\n").unwrap_err();
        assert_eq!(
            err,
            "line 3: invalid type: sequence, expected a JSON object (one row per line)"
        );
        let err = Feeder::from_jsonl_text("{\"a\":1} x\n").unwrap_err();
        assert_eq!(err, "line 1, column 9: trailing characters");
        let err = Feeder::from_jsonl_text("{\"a\":1}\n{\"a\":}\n").unwrap_err();
        assert_eq!(err, "line 2, column 6: expected value");
        let err = Feeder::from_jsonl_text("\"text\"\n").unwrap_err();
        assert!(err.starts_with("line 1: invalid type: string"), "{err}");
        let err = Feeder::from_jsonl_text("{\"a\":1,\"a\":2}\n").unwrap_err();
        assert_eq!(err, "line 1: key \"a\" appears twice in the object");
    }

    #[test]
    fn jsonl_without_rows_or_keys_is_refused() {
        let err = Feeder::from_jsonl_text("\n  \n").unwrap_err();
        assert!(err.starts_with("the file has no rows"), "{err}");
        let err = Feeder::from_jsonl_text("{}\n{}\n").unwrap_err();
        assert!(err.starts_with("every object is empty"), "{err}");
    }

    #[test]
    fn load_picks_the_format_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let csv_path = write(&dir, "users.CSV", b"user\nalice\n");
        assert_eq!(table(&Feeder::load(&csv_path).unwrap()), [["alice"]]);
        for name in ["users.jsonl", "users.ndjson"] {
            let path = write(&dir, name, b"{\"user\":\"bob\"}\n");
            assert_eq!(table(&Feeder::load(&path).unwrap()), [["bob"]]);
        }
        let path = write(&dir, "users.txt", b"user\nalice\n");
        let err = Feeder::load(&path).unwrap_err();
        assert!(
            err.starts_with("cannot tell the format of ")
                && err.ends_with("expected a .csv, .jsonl or .ndjson file"),
            "{err}"
        );
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.csv");
        let err = Feeder::load(&missing).unwrap_err();
        assert!(
            err.starts_with(&format!("cannot read {}: ", missing.display()))
                && err.contains("os error"),
            "{err}"
        );

        let path = write(&dir, "bad.csv", b"a,b\n1,2\n3\n");
        let err = Feeder::load(&path).unwrap_err();
        assert_eq!(
            err,
            format!(
                "{}: line 3: expected 2 fields, as in the header row, but found 1",
                path.display()
            )
        );

        let path = write(&dir, "empty.jsonl", b"");
        let err = Feeder::load(&path).unwrap_err();
        assert!(err.contains("the file has no rows"), "{err}");

        let path = write(&dir, "latin1.csv", b"name\nok\ncaf\xe9\n");
        let err = Feeder::load(&path).unwrap_err();
        assert_eq!(
            err,
            format!("{}: line 3 is not valid UTF-8 text", path.display())
        );
    }

    #[test]
    fn load_refuses_files_over_the_cap_without_reading_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.csv");
        // Sparse, so the test costs no disk space.
        File::create(&path)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        let err = Feeder::load(&path).unwrap_err();
        assert!(
            err.ends_with("is larger than the 256 MiB limit for data files"),
            "{err}"
        );
    }

    fn numbered(rows: usize) -> Feeder {
        let text: String = std::iter::once("n\n".to_owned())
            .chain((0..rows).map(|i| format!("{i}\n")))
            .collect();
        csv(&text)
    }

    #[test]
    fn sequential_and_unique_take_the_clients_row_and_wrap() {
        let feeder = numbered(3);
        let picks = |order| {
            (0..7)
                .map(|c| feeder.row_for(order, c, 99))
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(FeedOrder::Sequential), [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(picks(FeedOrder::Unique), [0, 1, 2, 0, 1, 2, 0]);

        let feeder = numbered(1000);
        let mut rows: Vec<_> = (0..1000)
            .map(|c| feeder.row_for(FeedOrder::Unique, c, 5))
            .collect();
        rows.sort_unstable();
        rows.dedup();
        assert_eq!(rows.len(), 1000, "distinct clients get distinct rows");
        assert_eq!(
            feeder.row_for(FeedOrder::Unique, u32::MAX, 0),
            u32::MAX as usize % 1000
        );
    }

    #[test]
    fn random_is_deterministic_per_seed_and_roughly_uniform() {
        let feeder = numbered(10);
        let picks = |seed| {
            (0..20_000)
                .map(|c| feeder.row_for(FeedOrder::Random, c, seed))
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(1), picks(1));
        assert_ne!(picks(1), picks(2));
        let mut counts = [0; 10];
        for row in picks(1) {
            counts[row] += 1;
        }
        // 2000 expected per row; the standard deviation is about 42.
        assert!(
            counts.iter().all(|&n| (1800..2200).contains(&n)),
            "{counts:?}"
        );
        // Not the sequential order in disguise.
        assert_ne!(picks(1)[..10], (0..10).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn random_never_leaves_a_single_row() {
        let feeder = numbered(1);
        assert!((0..100).all(|c| feeder.row_for(FeedOrder::Random, c, 7) == 0));
    }

    #[test]
    fn feeders_travel_as_columns_and_rows() {
        let feeder = jsonl("{\"a\":\"x\",\"b\":{\"k\":1}}\n{\"b\":\"y\"}\n");
        let json = serde_json::to_value(&feeder).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"columns": ["a", "b"], "rows": [["x", "{\"k\":1}"], ["", "y"]]})
        );
        let back: Feeder = serde_json::from_value(json).unwrap();
        assert_eq!(back, feeder);
        assert_eq!(
            serde_json::to_value(FeedOrder::Sequential).unwrap(),
            "sequential"
        );
        assert_eq!(
            serde_json::from_str::<FeedOrder>("\"unique\"").unwrap(),
            FeedOrder::Unique
        );
    }

    #[test]
    fn a_malformed_serialized_feeder_is_an_error_not_a_panic() {
        let bad = |json: &str| {
            serde_json::from_str::<Feeder>(json)
                .unwrap_err()
                .to_string()
        };
        assert!(bad(r#"{"columns":["a","b"],"rows":[["1"]]}"#).contains("row 1 has 1 values"));
        assert!(bad(r#"{"columns":[],"rows":[]}"#).contains("at least one column"));
        assert!(bad(r#"{"columns":["a"],"rows":[]}"#).contains("at least one row"));
        assert!(bad(r#"{"columns":["a","a"],"rows":[["1","2"]]}"#).contains("twice"));
    }
}
