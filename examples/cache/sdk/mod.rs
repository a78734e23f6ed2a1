//! ElCache's unix-socket SDK protocol (`elcache-protocol.md` section 1):
//! the frame codec (`proto.rs`) and the socket's serving side
//! (`serve.rs`), on the same store as HTTP.

pub mod proto;
mod serve;

pub use serve::{SdkError, start};
