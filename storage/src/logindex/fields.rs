//! The tantivy schema of a log index, and the documents built from `logs` rows.
//!
//! The index keeps no copy of a log line: it holds postings for search and a few fast
//! columns (time, id, where the row is), and the row itself stays in the Parquet file or
//! the head. `locator` says where: the row number inside the Parquet file the index
//! belongs to, or for the head `batch sequence << 32 | row`.

use std::collections::BTreeMap;

use arrow::array::{
    Array, AsArray, Int32Array, MapArray, StringArray, TimestampNanosecondArray, UInt64Array,
};
use arrow::record_batch::RecordBatch;
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, JsonObjectOptions, OwnedValue, Schema, TextFieldIndexing,
    TextOptions,
};
use tantivy::tokenizer::{LowerCaser, RawTokenizer, TextAnalyzer};
use tantivy::{Index, TantivyDocument};

use super::tokenizer::{EXACT_TOKENIZER, TEXT_TOKENIZER, TextTokenizer};
use crate::error::{Error, Result};

/// The fields of a log index.
#[derive(Debug, Clone)]
pub struct LogFields {
    /// The schema holding the fields below.
    pub schema: Schema,
    /// Log body (structured bodies as their JSON text), tokenized with positions.
    pub body: Field,
    /// Log attributes, a JSON object of string values, tokenized with positions.
    pub attributes: Field,
    /// Resource attributes, like `attributes`.
    pub resource: Field,
    /// `service.name`, exact and lower-cased.
    pub service: Field,
    /// Trace id in lower-case hex, exact.
    pub trace_id: Field,
    /// Span id in lower-case hex, exact.
    pub span_id: Field,
    /// Severity text, exact and lower-cased.
    pub severity_text: Field,
    /// OTLP severity number, for range queries.
    pub severity: Field,
    /// Unix nanoseconds (fast column).
    pub timestamp: Field,
    /// The row's `log_id` (fast column).
    pub log_id: Field,
    /// Where the row is (fast column); see the module documentation.
    pub locator: Field,
}

/// Name of the timestamp fast column.
pub const TIMESTAMP: &str = "timestamp";
/// Name of the log id fast column.
pub const LOG_ID: &str = "log_id";
/// Name of the locator fast column.
pub const LOCATOR: &str = "locator";

impl LogFields {
    /// The schema every log index uses.
    pub fn new() -> LogFields {
        let mut b = Schema::builder();
        // No field norms: hits are ordered by time, never scored.
        let text = TextFieldIndexing::default()
            .set_tokenizer(TEXT_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions)
            .set_fieldnorms(false);
        let exact = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(EXACT_TOKENIZER)
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        );
        let json = JsonObjectOptions::default()
            .set_indexing_options(text.clone())
            .set_expand_dots_enabled();
        let body = b.add_text_field("body", TextOptions::default().set_indexing_options(text));
        let attributes = b.add_json_field("attributes", json.clone());
        let resource = b.add_json_field("resource", json);
        let service = b.add_text_field("service", exact.clone());
        let trace_id = b.add_text_field("trace_id", exact.clone());
        let span_id = b.add_text_field("span_id", exact.clone());
        let severity_text = b.add_text_field("severity_text", exact);
        let severity = b.add_i64_field("severity", INDEXED);
        let timestamp = b.add_i64_field(TIMESTAMP, tantivy::schema::FAST);
        let log_id = b.add_u64_field(LOG_ID, tantivy::schema::FAST);
        let locator = b.add_u64_field(LOCATOR, tantivy::schema::FAST);
        LogFields {
            schema: b.build(),
            body,
            attributes,
            resource,
            service,
            trace_id,
            span_id,
            severity_text,
            severity,
            timestamp,
            log_id,
            locator,
        }
    }

    /// Registers the tokenizers this schema names on `index`.
    pub fn register_tokenizers(index: &Index) {
        let manager = index.tokenizers();
        manager.register(TEXT_TOKENIZER, TextAnalyzer::from(TextTokenizer::default()));
        manager.register(
            EXACT_TOKENIZER,
            TextAnalyzer::builder(RawTokenizer::default())
                .filter(LowerCaser)
                .build(),
        );
    }

    /// The document of one row; `locator` says where the row is.
    pub(crate) fn document(
        &self,
        cols: &LogColumns<'_>,
        row: usize,
        locator: u64,
    ) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        if cols.body.is_valid(row) {
            doc.add_text(self.body, cols.body.value(row));
        }
        add_map(&mut doc, self.attributes, cols.attributes, row);
        add_map(&mut doc, self.resource, cols.resource, row);
        for (field, col) in [
            (self.service, cols.service),
            (self.trace_id, cols.trace_id),
            (self.span_id, cols.span_id),
            (self.severity_text, cols.severity_text),
        ] {
            if col.is_valid(row) && !col.value(row).is_empty() {
                doc.add_text(field, col.value(row));
            }
        }
        if cols.severity.is_valid(row) {
            doc.add_i64(self.severity, i64::from(cols.severity.value(row)));
        }
        doc.add_i64(self.timestamp, cols.timestamp.value(row));
        doc.add_u64(self.log_id, cols.log_id.value(row));
        doc.add_u64(self.locator, locator);
        doc
    }
}

impl Default for LogFields {
    fn default() -> Self {
        LogFields::new()
    }
}

fn add_map(doc: &mut TantivyDocument, field: Field, map: &MapArray, row: usize) {
    if !map.is_valid(row) || map.value_length(row) == 0 {
        return;
    }
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    let mut object = BTreeMap::new();
    for i in 0..entries.len() {
        if values.is_valid(i) {
            object.insert(
                keys.value(i).to_string(),
                OwnedValue::Str(values.value(i).to_string()),
            );
        }
    }
    doc.add_object(field, object);
}

/// The columns of a `logs` batch that the index reads.
pub(crate) struct LogColumns<'a> {
    pub body: &'a StringArray,
    pub service: &'a StringArray,
    pub trace_id: &'a StringArray,
    pub span_id: &'a StringArray,
    pub severity_text: &'a StringArray,
    pub severity: &'a Int32Array,
    pub timestamp: &'a TimestampNanosecondArray,
    pub log_id: &'a UInt64Array,
    pub attributes: &'a MapArray,
    pub resource: &'a MapArray,
}

impl<'a> LogColumns<'a> {
    pub fn of(batch: &'a RecordBatch) -> Result<LogColumns<'a>> {
        fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<T>())
                .ok_or_else(|| Error::Schema(format!("logs batch lacks column `{name}`")))
        }
        Ok(LogColumns {
            body: col(batch, "body")?,
            service: col(batch, "service_name")?,
            trace_id: col(batch, "trace_id")?,
            span_id: col(batch, "span_id")?,
            severity_text: col(batch, "severity_text")?,
            severity: col(batch, "severity_number")?,
            timestamp: col(batch, "timestamp")?,
            log_id: col(batch, "log_id")?,
            attributes: col(batch, "attributes")?,
            resource: col(batch, "resource_attributes")?,
        })
    }
}
