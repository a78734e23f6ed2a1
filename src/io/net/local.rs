//! The network backends' loop: the shared rounds (`io/local.rs`), plus the
//! sleep with its own flag protocol that a backend on a thread of its own
//! uses between them.

pub(crate) use crate::io::local::{Round, Rounds};
use std::time::Duration;

/// A network backend's loop, in pieces.
pub(crate) trait Backend: Rounds {
    /// Sleeps in the kernel until an event, the wake-up, or `most`, with
    /// the flag protocol on the inbox's signal (its clients' pushes wake it
    /// through that signal; an inbox's rings close its signal when they
    /// close, so it cannot be the worker's own).
    fn sleep(&mut self, most: Option<Duration>);
}

impl Rounds for Box<dyn Backend> {
    fn round(&mut self) -> Round {
        (**self).round()
    }
    fn ready(&mut self) -> bool {
        (**self).ready()
    }
    fn wait(&mut self, most: Option<Duration>) {
        (**self).wait(most)
    }
    fn attach(&mut self, eventfd: std::os::fd::RawFd) -> bool {
        (**self).attach(eventfd)
    }
    fn busy(&self) -> bool {
        (**self).busy()
    }
    fn flush(&mut self) -> usize {
        (**self).flush()
    }
    fn shut_down(&mut self) {
        (**self).shut_down()
    }
}
