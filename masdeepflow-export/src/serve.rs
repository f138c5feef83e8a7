//! A small HTTP/1.1 server (hyper) for one document: `GET` (or `HEAD`)
//! of one path answers what `render` makes of the request's `Accept`
//! header; other paths are 404, other methods 405.
use std::{convert::Infallible, pin::Pin, sync::Arc};

use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, header, service::service_fn};
use hyper_util::rt::TokioIo;

/// The document for an `Accept` header: its content type and text.
pub type Render = Arc<dyn Fn(&str) -> (&'static str, String) + Send + Sync>;

/// Serves `path` on `listener` until the task is dropped. (Boxed, so that
/// its state machine stays compiled here, for size.)
pub fn serve(listener: tokio::net::TcpListener, path: &'static str, render: Render) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_on(listener, path, render))
}

async fn serve_on(listener: tokio::net::TcpListener, path: &'static str, render: Render) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let render = render.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let render = render.clone();
                async move { Ok::<_, Infallible>(respond(&req, path, &render)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                log::debug!("{path} connection: {e}");
            }
        });
    }
}

fn respond<B>(req: &Request<B>, path: &str, render: &Render) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = header::HeaderValue::from_str(content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    if req.uri().path() != path {
        return reply(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", format!("not found: metrics are at {path}\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "use GET\n".into());
    }
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (content_type, body) = render(accept);
    reply(StatusCode::OK, content_type, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let render: Render = Arc::new(|accept: &str| ("text/plain", format!("accept={accept}")));
        let get = |method: Method, path: &str| {
            let mut req = Request::new(());
            *req.method_mut() = method;
            *req.uri_mut() = path.parse().unwrap();
            req.headers_mut().insert(header::ACCEPT, header::HeaderValue::from_static("text/plain"));
            respond(&req, "/metrics", &render)
        };
        let ok = get(Method::GET, "/metrics");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CONTENT_TYPE], "text/plain");
        assert_eq!(get(Method::HEAD, "/metrics").status(), StatusCode::OK);
        assert_eq!(get(Method::GET, "/").status(), StatusCode::NOT_FOUND);
        assert_eq!(get(Method::POST, "/metrics").status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
