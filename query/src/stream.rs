//! Streamed exports (`/api/v1/export?format=csv|jsonl`): the response body is produced a
//! page of events at a time while the client reads, so memory stays bounded by one page
//! whatever the export's size. Spin writes a body to the client as it is polled.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use pipetrail_core::export;
use pipetrail_core::sql::DbError;
use pipetrail_core::store::{self, EventFilter, StoredEvent};
use pipetrail_platform::Db;

/// Events read per page.
pub const PAGE: usize = 500;

#[derive(Clone, Copy, PartialEq)]
pub enum Format {
    Csv,
    Jsonl,
}

type PageFuture = Pin<Box<dyn Future<Output = (Db, EventFilter, Result<Vec<StoredEvent>, DbError>)>>>;

pub struct EventStream {
    format: Format,
    /// The next page's query; `None` once the last page was read.
    next: Option<(Db, EventFilter)>,
    reading: Option<PageFuture>,
    header: Option<String>,
}

impl EventStream {
    pub fn new(db: Db, filter: EventFilter, format: Format) -> EventStream {
        EventStream {
            format,
            next: Some((db, filter)),
            reading: None,
            header: (format == Format::Csv).then(export::csv_header),
        }
    }
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(h) = this.header.take() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(h)))));
        }
        loop {
            if this.reading.is_none() {
                let Some((db, filter)) = this.next.take() else {
                    return Poll::Ready(None);
                };
                this.reading = Some(Box::pin(async move {
                    let page = store::list_events(&db, &filter, PAGE).await;
                    (db, filter, page)
                }));
            }
            let reading = this.reading.as_mut().expect("set above");
            let (db, mut filter, page) = match reading.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            this.reading = None;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    // The status line is long gone: end the body, and say so where a
                    // reader of the file will see it.
                    eprintln!("pipetrail: export stopped: {e}");
                    let note = match this.format {
                        Format::Csv => format!("# export stopped early: {e}\r\n"),
                        Format::Jsonl => format!(
                            "{}\n",
                            serde_json::json!({"error": "export_stopped", "message": e.to_string()})
                        ),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(note)))));
                }
            };
            if page.len() == PAGE {
                let last = page.last().map(|e| e.seq);
                if filter.descending {
                    filter.before_seq = last;
                } else {
                    filter.after_seq = last;
                }
                this.next = Some((db, filter));
            }
            let text: String = page
                .iter()
                .map(|e| match this.format {
                    Format::Csv => export::csv_row(e),
                    Format::Jsonl => export::jsonl_row(e),
                })
                .collect();
            if !text.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(text)))));
            }
        }
    }
}
