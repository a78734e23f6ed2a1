//! Worker factories: closures that build one worker per index.

/// Something that builds the worker for index `i`: a closure `|i| W` or
/// `|| W`. The `Args` parameter only tells the two closure shapes apart.
pub trait WorkerFactory<W, Args>: Send {
    /// Builds the worker with this index.
    fn make(&mut self, index: usize) -> W;
}

impl<W, F: FnMut(usize) -> W + Send> WorkerFactory<W, (usize,)> for F {
    fn make(&mut self, index: usize) -> W {
        self(index)
    }
}

impl<W, F: FnMut() -> W + Send> WorkerFactory<W, ()> for F {
    fn make(&mut self, _index: usize) -> W {
        self()
    }
}
