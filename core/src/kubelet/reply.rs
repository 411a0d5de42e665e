//! The kubelet API's plain answers, shared by its log ([`super::server`]) and streaming
//! ([`super::streaming`]) handlers.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// The body type of every kubelet API answer.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A `text/plain` answer, as upstream's kubelet gives its errors.
pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut body = message.into();
    body.push('\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}
