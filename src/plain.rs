//! What the plain listener answers itself when `[tls]` is configured, on the general path (teal's
//! own HTTP/1.1 path hands these requests over): the key authorization of an ACME HTTP-01
//! challenge under way, or `redirect_http`'s 308 to `https://`. Which requests these are is
//! [`crate::policy::plain_answer`]'s decision, for both paths.

/// The general path's answer for [`crate::policy::plain_answer`]: the key authorization of a
/// challenge under way (or 404), or the 308 to `https://`.
pub(crate) fn answer<B>(
    answer: crate::policy::PlainAnswer<'_>,
    req: &http::Request<B>,
    state: &crate::state::State,
    mut exchange: crate::access::Exchange,
) -> http::Response<crate::body::ResponseBody> {
    use crate::body::ResponseBody;
    use crate::policy::PlainAnswer;
    use http::{header, HeaderValue, Response, StatusCode};
    let (status, body, location) = match answer {
        PlainAnswer::Challenge(token) => match state.tls().challenges.get(token) {
            Some(key_authorization) => (StatusCode::OK, key_authorization, None),
            None => (
                StatusCode::NOT_FOUND,
                "no such ACME challenge\n".into(),
                None,
            ),
        },
        PlainAnswer::Redirect => {
            let host = crate::headers::addressed_host(req);
            let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
            match crate::policy::https_location(host, state.tls().port(), target) {
                Some(location) => (
                    StatusCode::PERMANENT_REDIRECT,
                    format!("moved to {location}\n"),
                    HeaderValue::try_from(location).ok(),
                ),
                None => (
                    StatusCode::BAD_REQUEST,
                    "no Host to redirect to https://\n".into(),
                    None,
                ),
            }
        }
    };
    exchange.status = status.as_u16();
    let mut response = Response::new(ResponseBody::full(body, Some(exchange)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(location) = location {
        headers.insert(header::LOCATION, location);
    }
    response
}
