//! `ExportTraceServiceRequest` protobuf bytes → rows of the `spans` table, read in place:
//! the hot path of ingest. Ids, names and scalar attribute values are appended to the
//! Arrow builders straight from the request buffer, with no prost structs in between;
//! only what is once per resource or scope (resource, scope) or rare (events, links,
//! array and map values) is decoded with prost. The rows are exactly those
//! [`crate::spans`] makes of the decoded request (a test holds the two paths equal), and
//! bytes prost would refuse are refused.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use prost::Message;

use crate::traces::{Columns, Context, SpanRow};
use crate::wire::{Fields, WireError};
use crate::{AttrValue, Converted, Rejections, service_name};

fn prost_error(what: &str, e: prost::DecodeError) -> WireError {
    WireError(format!("{what}: {e}"))
}

/// Converts the protobuf bytes of an `ExportTraceServiceRequest` into `spans` rows,
/// rejecting invalid spans one by one as [`crate::spans`] does.
///
/// # Errors
/// [`WireError`] when the bytes are not a well-formed request (nothing is converted);
/// an Arrow error only if the batch cannot be assembled, which would be a bug.
pub fn spans_from_protobuf(
    bytes: &[u8],
) -> Result<Result<Converted, arrow::error::ArrowError>, WireError> {
    let mut state = State {
        columns: Columns::new(),
        rejected: Rejections::default(),
        accepted: 0,
        attributes: Vec::new(),
        events: Vec::new(),
        links: Vec::new(),
    };
    let mut request = Fields::new(bytes);
    while let Some((n, v)) = request.next_field()? {
        if n == 1 {
            state.resource_spans(v.bytes("ExportTraceServiceRequest.resource_spans")?)?;
        }
    }
    let State {
        columns,
        rejected,
        accepted,
        ..
    } = state;
    Ok(rejected.into_converted(accepted, || columns.finish()))
}

struct State<'a> {
    columns: Columns,
    rejected: Rejections,
    accepted: u64,
    /// Scratch space of one span, kept between spans.
    attributes: Vec<(&'a str, AttrValue<'a>)>,
    events: Vec<Event>,
    links: Vec<Link>,
}

impl<'a> State<'a> {
    fn resource_spans(&mut self, bytes: &'a [u8]) -> Result<(), WireError> {
        // The resource may come after the spans on the wire: read it first.
        let mut resource = Resource::default();
        let mut fields = Fields::new(bytes);
        while let Some((n, v)) = fields.next_field()? {
            match n {
                1 => resource
                    .merge(v.bytes("ResourceSpans.resource")?)
                    .map_err(|e| prost_error("ResourceSpans.resource", e))?,
                2 => {
                    v.bytes("ResourceSpans.scope_spans")?;
                }
                3 => {
                    v.str("ResourceSpans.schema_url")?;
                }
                _ => {}
            }
        }
        let service = service_name(&resource.attributes);
        let mut fields = Fields::new(bytes);
        while let Some((n, v)) = fields.next_field()? {
            if n == 2 {
                self.scope_spans(v.bytes("ResourceSpans.scope_spans")?, &resource, &service)?;
            }
        }
        Ok(())
    }

    fn scope_spans(
        &mut self,
        bytes: &'a [u8],
        resource: &Resource,
        service: &str,
    ) -> Result<(), WireError> {
        let mut scope: Option<InstrumentationScope> = None;
        let mut fields = Fields::new(bytes);
        while let Some((n, v)) = fields.next_field()? {
            match n {
                1 => scope
                    .get_or_insert_with(Default::default)
                    .merge(v.bytes("ScopeSpans.scope")?)
                    .map_err(|e| prost_error("ScopeSpans.scope", e))?,
                2 => {
                    v.bytes("ScopeSpans.spans")?;
                }
                3 => {
                    v.str("ScopeSpans.schema_url")?;
                }
                _ => {}
            }
        }
        let (scope_name, scope_version) = crate::scope_name_version(scope.as_ref());
        let ctx = Context {
            resource: &resource.attributes,
            service,
            scope_name,
            scope_version,
        };
        let mut fields = Fields::new(bytes);
        while let Some((n, v)) = fields.next_field()? {
            if n == 2 {
                self.span(v.bytes("ScopeSpans.spans")?, &ctx)?;
            }
        }
        Ok(())
    }

    fn span(&mut self, bytes: &'a [u8], ctx: &Context<'_>) -> Result<(), WireError> {
        self.attributes.clear();
        self.events.clear();
        self.links.clear();
        let mut row = SpanRow::default();
        let mut status_seen = false;
        let mut fields = Fields::new(bytes);
        while let Some((n, v)) = fields.next_field()? {
            match n {
                1 => row.trace_id = v.bytes("Span.trace_id")?,
                2 => row.span_id = v.bytes("Span.span_id")?,
                3 => row.trace_state = v.str("Span.trace_state")?,
                4 => row.parent_span_id = v.bytes("Span.parent_span_id")?,
                5 => row.name = v.str("Span.name")?,
                6 => row.kind = v.varint("Span.kind")? as i32,
                7 => row.start = v.fixed64("Span.start_time_unix_nano")?,
                8 => row.end = v.fixed64("Span.end_time_unix_nano")?,
                9 => {
                    let kv = key_value(v.bytes("Span.attributes")?)?;
                    self.attributes.push(kv);
                }
                10 | 12 | 14 => {
                    v.varint("Span.dropped_count")?;
                }
                11 => self.events.push(
                    Event::decode(v.bytes("Span.events")?)
                        .map_err(|e| prost_error("Span.events", e))?,
                ),
                13 => self.links.push(
                    Link::decode(v.bytes("Span.links")?)
                        .map_err(|e| prost_error("Span.links", e))?,
                ),
                15 => {
                    // A repeated message field merges: later fields win one by one.
                    if !status_seen {
                        row.status_code = 0;
                        row.status_message = "";
                        status_seen = true;
                    }
                    let mut status = Fields::new(v.bytes("Span.status")?);
                    while let Some((n, v)) = status.next_field()? {
                        match n {
                            2 => row.status_message = v.str("Status.message")?,
                            3 => row.status_code = v.varint("Status.code")? as i32,
                            _ => {}
                        }
                    }
                }
                16 => row.flags = v.fixed32("Span.flags")?,
                _ => {}
            }
        }
        row.attributes = &self.attributes;
        row.events = &self.events;
        row.links = &self.links;
        match self.columns.append(&row, ctx) {
            Ok(()) => self.accepted += 1,
            Err(why) => self
                .rejected
                .reject(|| format!("span {:?}: {why}", row.name)),
        }
        Ok(())
    }
}

/// One attribute read in place; values other than strings and numbers, or an attribute
/// whose value field is repeated (which merges), are decoded with prost.
fn key_value(bytes: &[u8]) -> Result<(&str, AttrValue<'_>), WireError> {
    let mut key = "";
    let mut value: Option<&[u8]> = None;
    let mut merged = false;
    let mut fields = Fields::new(bytes);
    while let Some((n, v)) = fields.next_field()? {
        match n {
            1 => key = v.str("KeyValue.key")?,
            2 => {
                merged |= value.is_some();
                value = Some(v.bytes("KeyValue.value")?);
            }
            3 => {
                v.varint("KeyValue.key_strindex")?;
            }
            _ => {}
        }
    }
    if merged {
        let kv = KeyValue::decode(bytes).map_err(|e| prost_error("KeyValue", e))?;
        return Ok((key, kv.value.map_or(AttrValue::None, AttrValue::owned)));
    }
    let Some(value) = value else {
        return Ok((key, AttrValue::None));
    };
    Ok((key, any_value(value)?))
}

impl AttrValue<'_> {
    /// A decoded value; scalars are kept by kind, as [`AttrValue::of`] does.
    fn owned(owned: AnyValue) -> Self {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        match owned.value.as_ref() {
            None => AttrValue::None,
            Some(V::BoolValue(b)) => AttrValue::Bool(*b),
            Some(V::IntValue(i)) => AttrValue::Int(*i),
            Some(V::DoubleValue(d)) => AttrValue::Double(*d),
            Some(_) => AttrValue::Other(Cow::Owned(owned)),
        }
    }
}

/// An `AnyValue` read in place (the last of its oneof fields wins, as in prost).
fn any_value(bytes: &[u8]) -> Result<AttrValue<'_>, WireError> {
    let mut out = AttrValue::None;
    let mut fields = Fields::new(bytes);
    while let Some((n, v)) = fields.next_field()? {
        out = match n {
            1 => AttrValue::Str(v.str("AnyValue.string_value")?),
            2 => AttrValue::Bool(v.varint("AnyValue.bool_value")? != 0),
            3 => AttrValue::Int(v.varint("AnyValue.int_value")? as i64),
            4 => AttrValue::Double(f64::from_bits(v.fixed64("AnyValue.double_value")?)),
            5..=8 => {
                let decoded = AnyValue::decode(bytes).map_err(|e| prost_error("AnyValue", e))?;
                return Ok(AttrValue::owned(decoded));
            }
            _ => continue,
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
