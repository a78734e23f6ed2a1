//! Tree tests (filled below).
