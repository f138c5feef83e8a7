//! Low-level HTTP/1.x functions over byte slices: message detection and
//! head parsing. Stateless; see [`crate::Http1Connection`] for the
//! streaming state machine built on top.

mod detect;
mod head;
mod method;

pub use detect::{KNOWN_METHODS, looks_like_request, looks_like_response};
pub use head::{ParseError, RequestHead, ResponseHead, parse_request_head, parse_response_head};
pub use method::Method;

pub(crate) use detect::{Detect, classify_request, classify_response};
pub(crate) use head::{
    check_partial, find_head_end, has_valid_start_line, leading_newlines, parse_request_complete, parse_request_fast, parse_request_prefix,
    parse_response_complete, parse_response_fast, parse_response_prefix,
};
