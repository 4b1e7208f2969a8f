//! `prismctl ts ...`

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Subcommand, ValueEnum};
use prism_proto::timeseries::v1::subscribe_request::Start;
use prism_proto::timeseries::v1::time_series_service_client::TimeSeriesServiceClient;
use prism_proto::timeseries::v1::{
    AggregateFunction, AggregateRequest, AppendRequest, Event, Order, QueryRequest, SubscribeRequest,
};
use serde_json::json;

use crate::Client;
use crate::complete::namespaces;
use crate::output::{columns, emit, list_header, list_row, pairs_cell, table, text_cell, value_json, value_text};

#[derive(Debug, Subcommand)]
pub enum TsCommand {
    /// Append one event to a series. Appending the same (time, id) again
    /// stores nothing new.
    #[command(
        after_help = "Examples:\n  prismctl ts append metrics cpu --id web-1 --value 0.42\n  prismctl ts append metrics cpu --id web-1 --value 0.5 --at 2026-12-01T10:00:00Z --attr host=web-1"
    )]
    Append {
        /// The TimeSeries namespace.
        #[arg(add = namespaces("timeseries"))]
        namespace: String,
        /// The series, e.g. a metric's name.
        series: String,
        /// Event id, unique within the series at its timestamp.
        #[arg(long)]
        id: String,
        /// A number to aggregate.
        #[arg(long, allow_hyphen_values = true)]
        value: Option<f64>,
        /// When it happened: an RFC 3339 time (2026-12-01T10:00:00Z),
        /// milliseconds since the epoch, `now`, or a duration ago (5m, -5m).
        #[arg(long, default_value = "now", allow_hyphen_values = true, value_parser = parse_time)]
        at: i64,
        /// An attribute as key=value (repeatable).
        #[arg(long = "attr", value_parser = parse_pair)]
        attributes: Vec<(String, String)>,
        /// Bytes stored with the event (UTF-8).
        #[arg(long, default_value = "")]
        payload: String,
    },
    /// List events in a time range, oldest first unless --desc.
    #[command(
        after_help = "Examples:\n  prismctl ts query metrics cpu --since 1h\n  prismctl ts query metrics cpu --since 2026-12-01T00:00:00Z --until 2026-12-02T00:00:00Z\n  prismctl ts query metrics cpu --desc --limit 10"
    )]
    Query {
        /// The TimeSeries namespace.
        #[arg(add = namespaces("timeseries"))]
        namespace: String,
        /// The series, e.g. a metric's name.
        series: String,
        /// Inclusive start: an RFC 3339 time, milliseconds, `now`, or a
        /// duration ago (`--since 1h`, `--start -1h`).
        #[arg(long, alias = "since", default_value = "-1h", allow_hyphen_values = true, value_parser = parse_time)]
        start: i64,
        /// Exclusive end, in the same forms; just after now by default.
        #[arg(long, alias = "until", allow_hyphen_values = true, value_parser = parse_time)]
        end: Option<i64>,
        /// Newest first.
        #[arg(long)]
        desc: bool,
        /// Stop after this many events (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Events fetched per call (the proxy may lower it to its own limit).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
    },
    /// Summarize a time range into buckets.
    #[command(
        after_help = "Examples:\n  prismctl ts aggregate metrics cpu --bucket 5m --fn avg\n  prismctl ts aggregate metrics cpu --since 1d --bucket 1h --fn max"
    )]
    Aggregate {
        /// The TimeSeries namespace.
        #[arg(add = namespaces("timeseries"))]
        namespace: String,
        /// The series, e.g. a metric's name.
        series: String,
        /// Bucket width, e.g. 1m.
        #[arg(long, value_parser = humantime::parse_duration)]
        bucket: std::time::Duration,
        /// What to compute per bucket.
        #[arg(long = "fn", value_enum, default_value_t = Function::Count)]
        function: Function,
        /// Inclusive start, as for `query` (alias --since).
        #[arg(long, alias = "since", default_value = "-1h", allow_hyphen_values = true, value_parser = parse_time)]
        start: i64,
        /// Exclusive end, as for `query` (alias --until).
        #[arg(long, alias = "until", allow_hyphen_values = true, value_parser = parse_time)]
        end: Option<i64>,
    },
    /// Follow a series as events are appended, like `tail -f`: new events
    /// by default, or from a time or a position. A stream the proxy ends
    /// (shutdown, idle, a slow reader) is resumed from the last position,
    /// so no event is missed; Ctrl-C stops and prints the position to
    /// resume from.
    #[command(after_help = "Examples:
  prismctl ts tail metrics cpu
  prismctl ts tail metrics cpu --from 10m
  prismctl ts tail metrics cpu --from start --limit 100
  prismctl ts tail metrics cpu -o json --position CgdtZXRyaWNz...")]
    Tail {
        /// The TimeSeries namespace.
        #[arg(add = namespaces("timeseries"))]
        namespace: String,
        /// The series, e.g. a metric's name.
        series: String,
        /// Start with the first event appended at or after this time: an
        /// RFC 3339 time, milliseconds, a duration ago (10m), or `start`
        /// for every stored event. Default: the next event appended.
        #[arg(long, allow_hyphen_values = true, value_parser = parse_from, conflicts_with = "position")]
        from: Option<i64>,
        /// Continue right after this position (each event's, in `-o json`
        /// output, or the one printed when a tail stops).
        #[arg(long)]
        position: Option<String>,
        /// Stop after this many events (0: follow until interrupted).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
}

/// `--from`: `start` (every stored event) or a time as for `query`.
fn parse_from(text: &str) -> Result<i64, String> {
    if matches!(text, "start" | "beginning") { Ok(0) } else { parse_time(text) }
}

/// Statuses a tail resumes from (the proxy or plugin ended the stream, not
/// the request): anything else stops it with the error.
fn resumable(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Unknown | Code::Cancelled
    )
}

/// Follows a series until `limit` events were shown or Ctrl-C.
async fn tail(
    client: &Client,
    namespace: String,
    series: String,
    mut start: Option<Start>,
    limit: usize,
) -> anyhow::Result<()> {
    let shown = columns(client.format, &["TIME", "EVENT ID", "VALUE", "PAYLOAD", "ATTRIBUTES"], 4);
    let mut count = 0usize;
    let mut headed = false;
    let mut last: Option<String> = None;
    let mut retry = std::time::Duration::from_millis(100);
    let follow = async {
        loop {
            let request =
                SubscribeRequest { namespace: namespace.clone(), series: series.clone(), start: start.clone() };
            let opened = match client.channel().await {
                Ok(channel) => TimeSeriesServiceClient::new(channel).subscribe(client.stream_request(request)).await,
                Err(e) if last.is_some() => {
                    eprintln!("prismctl: {e}; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(std::time::Duration::from_secs(5));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut stream = match opened {
                Ok(stream) => {
                    // Once, when the first subscription opened: a refusal
                    // prints only its error.
                    if !headed && client.format.is_table() {
                        list_header(shown);
                    }
                    headed = true;
                    stream.into_inner()
                }
                // Opening failed for the request's own sake (unknown
                // namespace, refused, malformed position): say so and stop.
                Err(status) if last.is_none() || !resumable(status.code()) => return Err(status.into()),
                Err(status) => {
                    eprintln!("prismctl: {}; retrying", status.message());
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(std::time::Duration::from_secs(5));
                    continue;
                }
            };
            let ended = loop {
                match stream.message().await {
                    Ok(Some(message)) => {
                        retry = std::time::Duration::from_millis(100);
                        start = Some(Start::FromPosition(message.position.clone()));
                        last = Some(message.position.clone());
                        let Some(e) = message.event else { continue };
                        if client.format.is_table() {
                            event_row(&e, shown.len());
                        } else {
                            // One document per line (JSON Lines), so a
                            // reader can act on each as it comes.
                            let mut doc = event_json(&e);
                            doc["position"] = message.position.into();
                            println!("{doc}");
                        }
                        count += 1;
                        if limit > 0 && count >= limit {
                            return Ok(());
                        }
                    }
                    Ok(None) => break tonic::Status::unavailable("the proxy ended the stream"),
                    Err(status) => break status,
                }
            };
            if !resumable(ended.code()) {
                return Err(ended.into());
            }
            eprintln!("prismctl: {}; resuming", ended.message());
        }
    };
    tokio::select! {
        result = follow => result,
        _ = tokio::signal::ctrl_c() => {
            if let Some(position) = &last {
                eprintln!("prismctl: stopped; resume with --position {position}");
            }
            Ok(())
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Function {
    /// The number of events.
    Count,
    /// The sum of their values.
    Sum,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The mean value.
    Avg,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A time flag: an RFC 3339 time (`2026-12-01T10:00:00Z`, any offset),
/// milliseconds since the epoch, `now`, or a duration ago (`1h`, and the
/// older `-1h`), as milliseconds since the epoch.
fn parse_time(text: &str) -> Result<i64, String> {
    if text == "now" {
        return Ok(now_ms());
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text:?}: too large for milliseconds since the epoch"));
    }
    // A date first (`2026-...`): say what RFC 3339 wants rather than what
    // a duration does.
    if text.len() > 4 && text.as_bytes()[..4].iter().all(u8::is_ascii_digit) && text.as_bytes()[4] == b'-' {
        let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339);
        return parsed
            .ok()
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
            .ok_or_else(|| format!("{text:?} is not an RFC 3339 time: write a date, T, a time and an offset, such as 2026-12-01T10:00:00Z or 2026-12-01T12:00:00+02:00"));
    }
    let ago = text.strip_prefix('-').unwrap_or(text);
    match humantime::parse_duration(ago) {
        Ok(d) => Ok(now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!(
            "{text:?} is not a time: use an RFC 3339 time (2026-12-01T10:00:00Z), milliseconds since the epoch, `now`, or a duration ago (1h, or -1h)"
        )),
    }
}

/// Milliseconds since the epoch as an RFC 3339 UTC time with milliseconds,
/// a fixed width so that columns line up; the number itself for times
/// RFC 3339 cannot write (before year 0 or after 9999).
fn rfc3339(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) if (0..=9999).contains(&t.year()) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        _ => ms.to_string(),
    }
}

pub(crate) fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{text:?} is not key=value"))
}

/// An event as a row of `ts query` and `ts tail`, its first `columns`
/// cells.
fn event_row(e: &Event, columns: usize) {
    let value = e.value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let (time, id, payload) = (rfc3339(e.timestamp), text_cell(&e.event_id), value_text(&e.payload));
    let row = [time, id, value, payload, pairs_cell(&e.attributes)];
    list_row(&row[..columns]);
}

fn event_json(e: &Event) -> serde_json::Value {
    let (field, payload) = value_json(&e.payload);
    let mut doc = json!({
        "timestamp": e.timestamp,
        "time": rfc3339(e.timestamp),
        "event_id": e.event_id,
        "value": e.value,
        "attributes": e.attributes,
    });
    if !e.payload.is_empty() {
        doc[if field == "value" { "payload" } else { "payload_base64" }] = payload;
    }
    doc
}

pub async fn run(client: &Client, cmd: TsCommand) -> anyhow::Result<()> {
    if let TsCommand::Tail { namespace, series, from, position, limit } = cmd {
        let start = match (from, position) {
            (_, Some(position)) => Some(Start::FromPosition(position)),
            (Some(at), None) => Some(Start::FromTimestamp(at)),
            (None, None) => None,
        };
        return tail(client, namespace, series, start, limit).await;
    }
    let mut ts = TimeSeriesServiceClient::new(client.channel().await?);
    match cmd {
        TsCommand::Append { namespace, series, id, value, at, attributes, payload } => {
            let event = Event {
                timestamp: at,
                event_id: id,
                value,
                payload: payload.into(),
                attributes: attributes.into_iter().collect(),
            };
            let r =
                ts.append(client.request(AppendRequest { namespace, series, events: vec![event] })).await?.into_inner();
            let doc = json!({
                "timestamp": at,
                "time": rfc3339(at),
                "appended": r.appended,
                "duplicates": r.duplicates,
                "expired": r.expired,
            });
            let text = match (r.appended, r.duplicates) {
                (1, _) => format!("appended at {}", rfc3339(at)),
                (_, 1) => "already stored (duplicate)".to_owned(),
                _ => "dropped: older than the namespace's retention".to_owned(),
            };
            emit(client.format, &doc, || text)?;
        }
        TsCommand::Query { namespace, series, start, end, desc, limit, page_size } => {
            let end = end.unwrap_or_else(|| now_ms() + 1);
            let order = if desc { Order::Descending } else { Order::Ascending };
            let mut token = String::new();
            let mut events = Vec::new();
            let shown = columns(client.format, &["TIME", "EVENT ID", "VALUE", "PAYLOAD", "ATTRIBUTES"], 4);
            if client.format.is_table() {
                list_header(shown);
            }
            'pages: loop {
                let r = ts
                    .query(client.request(QueryRequest {
                        namespace: namespace.clone(),
                        series: series.clone(),
                        start,
                        end,
                        order: order as i32,
                        limit: page_size,
                        page_token: token,
                    }))
                    .await?
                    .into_inner();
                for e in r.events {
                    if limit > 0 && events.len() >= limit {
                        break 'pages;
                    }
                    if client.format.is_table() {
                        // Printed as they arrive: a long range starts showing at once.
                        event_row(&e, shown.len());
                    }
                    events.push(event_json(&e));
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
            if !client.format.is_table() {
                emit(client.format, &events, String::new)?;
            }
        }
        TsCommand::Aggregate { namespace, series, bucket, function, start, end } => {
            let end = end.unwrap_or_else(|| now_ms() + 1);
            let function = match function {
                Function::Count => AggregateFunction::Count,
                Function::Sum => AggregateFunction::Sum,
                Function::Min => AggregateFunction::Min,
                Function::Max => AggregateFunction::Max,
                Function::Avg => AggregateFunction::Avg,
            };
            let bucket_ms = i64::try_from(bucket.as_millis()).unwrap_or(i64::MAX);
            let r = ts
                .aggregate(client.request(AggregateRequest {
                    namespace,
                    series,
                    start,
                    end,
                    bucket_ms,
                    function: function as i32,
                }))
                .await?
                .into_inner();
            let docs: Vec<_> = r
                .buckets
                .iter()
                .map(
                    |b| json!({ "start": b.start, "start_time": rfc3339(b.start), "count": b.count, "value": b.value }),
                )
                .collect();
            emit(client.format, &docs, || {
                let rows = r
                    .buckets
                    .iter()
                    .map(|b| {
                        vec![
                            rfc3339(b.start),
                            b.count.to_string(),
                            b.value.map_or_else(|| "-".into(), |v| v.to_string()),
                        ]
                    })
                    .collect();
                table(&["TIME", "EVENTS", "VALUE"], rows)
            })?;
        }
        TsCommand::Tail { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        for ago in ["-1h", "1h", "60m"] {
            let at = parse_time(ago).unwrap();
            assert!((now_ms() - at - 3_600_000).abs() < 60_000, "{ago}");
        }
        assert!((now_ms() - parse_time("now").unwrap()).abs() < 60_000);
        assert_eq!(parse_time("2026-12-01T10:00:00Z").unwrap(), 1_796_119_200_000);
        assert_eq!(parse_time("2026-12-01T12:00:00.5+02:00").unwrap(), 1_796_119_200_500);
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        let err = parse_time("2026-12-01T10:00:00").unwrap_err();
        assert!(err.contains("RFC 3339") && err.contains("offset"), "{err}");
        let err = parse_time("yesterday").unwrap_err();
        assert!(err.contains("RFC 3339") && err.contains("duration ago"), "{err}");
        assert!(parse_time("99999999999999999999").is_err());
        assert_eq!(rfc3339(1_796_119_200_500), "2026-12-01T10:00:00.500Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
        for t in ["2026-12-01T10:00:00.250Z", "2000-02-29T23:59:59.999Z"] {
            assert_eq!(rfc3339(parse_time(t).unwrap()), t, "round trip");
        }
        assert_eq!(parse_pair("host=web-1").unwrap(), ("host".to_owned(), "web-1".to_owned()));
        assert_eq!(parse_from("start").unwrap(), 0);
        assert_eq!(parse_from("1700000000000").unwrap(), 1_700_000_000_000);
        assert!(parse_from("soon").is_err());
        assert!(resumable(tonic::Code::Unavailable) && !resumable(tonic::Code::NotFound));
        assert!(!resumable(tonic::Code::OutOfRange) && !resumable(tonic::Code::InvalidArgument));
        assert!(parse_pair("host").is_err());
    }
}
