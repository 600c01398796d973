//! [`EmbeddedFluxion`]: the [`Fluxion`] trait over the in-process [`Matcher`].

use std::time::Instant;

use crate::jobspec::Jobspec;
use crate::matcher::{Graph, Matcher, Policy};
use crate::{Fluxion, FluxionError, MatchOutcome};

/// A Fluxion that matches in process, with the semantics of the public service
/// plus a busy/unsatisfiable distinction and [`Fluxion::restore`].
///
/// `init` is atomic: when the policy or the graph is refused, the previous
/// graph and its allocations stay as they were.
#[derive(Debug, Default)]
pub struct EmbeddedFluxion {
    matcher: Option<Matcher>,
}

impl EmbeddedFluxion {
    /// An uninitialised instance (every call but `init` answers `NotInitialized`).
    pub fn new() -> Self {
        Self::default()
    }

    /// The matcher, once initialised.
    pub fn matcher(&self) -> Option<&Matcher> {
        self.matcher.as_ref()
    }

    /// The matcher, once initialised, for direct use (clock, inspection).
    pub fn matcher_mut(&mut self) -> Option<&mut Matcher> {
        self.matcher.as_mut()
    }
}

impl Fluxion for EmbeddedFluxion {
    fn init(&mut self, policy: &str, jgf: &str) -> Result<(), FluxionError> {
        let policy = Policy::parse(policy)?;
        let graph = Graph::parse(jgf)?;
        self.matcher = Some(Matcher::new(graph, policy));
        Ok(())
    }

    fn match_allocate(
        &mut self,
        jobspec: &str,
        reserve: bool,
    ) -> Result<MatchOutcome, FluxionError> {
        let m = self.matcher.as_mut().ok_or(FluxionError::NotInitialized)?;
        let t0 = Instant::now();
        let js = Jobspec::parse(jobspec)?;
        let a = if reserve {
            m.allocate_or_reserve(&js.request)?
        } else {
            m.allocate(&js.request)?
        };
        Ok(MatchOutcome {
            jobid: a.jobid,
            allocation: a.jgf,
            reserved: a.reserved,
            at: a.at,
            overhead: t0.elapsed().as_secs_f32(),
        })
    }

    fn set_clock(&mut self, now: i64) {
        if let Some(m) = self.matcher.as_mut() {
            m.advance_to(now);
        }
    }

    fn cancel(&mut self, jobid: i64) -> Result<(), FluxionError> {
        let m = self.matcher.as_mut().ok_or(FluxionError::NotInitialized)?;
        m.cancel(jobid);
        Ok(())
    }

    fn restore(&mut self, jobid: i64, allocation: &str) -> Result<(), FluxionError> {
        let m = self.matcher.as_mut().ok_or(FluxionError::NotInitialized)?;
        m.restore(jobid, allocation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn is_send() {
        assert_send::<EmbeddedFluxion>();
    }
}
