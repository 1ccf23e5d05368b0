//! The verdict on one window of the canary pool's counters: too few requests (the window is
//! extended), pass, or a breach with the reason an operator reads.

use std::time::Duration;

use crate::config::RolloutConfig;
use crate::tally::Counts;

/// What a window says.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Fewer requests than `min_requests`: keep waiting, accumulating.
    TooFew,
    /// Within every limit.
    Pass,
    /// Over a limit: roll back, for this reason.
    Breach(String),
}

/// Judges `window` (the canary pool's counters over the step so far) against `plan`'s limits.
/// The error rate is judged first, then the p99 when `max_p99` is set.
pub fn judge(window: &Counts, plan: &RolloutConfig) -> Verdict {
    if window.requests < plan.min_requests.max(1) {
        return Verdict::TooFew;
    }
    let rate = window.error_rate();
    if rate > plan.max_error_rate {
        return Verdict::Breach(format!(
            "error rate {} > {} over {} requests ({} errors)",
            percent(rate),
            percent(plan.max_error_rate),
            window.requests,
            window.errors
        ));
    }
    if let (Some(max), Some(p99)) = (plan.max_p99, window.p99()) {
        if p99 > max {
            return Verdict::Breach(format!(
                "p99 {} > {} over {} requests",
                millis(p99),
                millis(max),
                window.requests
            ));
        }
    }
    Verdict::Pass
}

/// A fraction as a percentage with one decimal: 0.052 -> `5.2%`.
pub fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// A latency in milliseconds: `812ms`, `1.25s` past a second.
pub fn millis(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::Tally;

    fn plan(max_p99: Option<u64>) -> RolloutConfig {
        RolloutConfig {
            pool: "green".into(),
            steps: vec![5, 100],
            interval: Duration::from_secs(1),
            max_error_rate: 0.01,
            max_p99: max_p99.map(Duration::from_millis),
            min_requests: 100,
            step: 0,
        }
    }

    /// Requests with `errors` of them 500s, the rest 200s, each taking `ms`.
    fn window(tally: &Tally, requests: u64, errors: u64, ms: u64) -> Counts {
        let before = tally.read();
        for i in 0..requests {
            let status = if i < errors { 500 } else { 200 };
            tally.record(status, Duration::from_millis(ms));
        }
        tally.read().since(&before)
    }

    /// Below min_requests the window is extended, whatever its errors; once enough requests have
    /// accumulated it is judged on all of them.
    #[test]
    fn too_few_requests_extend() {
        let t = Tally::default();
        let first = window(&t, 99, 99, 1);
        assert_eq!(judge(&first, &plan(None)), Verdict::TooFew);
        let base = Counts::default();
        let more = window(&t, 901, 0, 1);
        let both = t.read().since(&base);
        assert_eq!(both.requests, 1000);
        assert!(matches!(judge(&both, &plan(None)), Verdict::Breach(_)));
        assert_eq!(judge(&more, &plan(None)), Verdict::Pass);
    }

    /// The error rate is over requests routed to the pool; the reason names it, the limit and
    /// the count; exactly at the limit passes.
    #[test]
    fn error_rate_breach() {
        let t = Tally::default();
        let w = window(&t, 1040, 54, 5);
        assert_eq!(
            judge(&w, &plan(None)),
            Verdict::Breach("error rate 5.2% > 1.0% over 1040 requests (54 errors)".into())
        );
        assert_eq!(judge(&window(&t, 1000, 10, 5), &plan(None)), Verdict::Pass);
        assert!(matches!(
            judge(&window(&t, 1000, 11, 5), &plan(None)),
            Verdict::Breach(_)
        ));
    }

    /// p99 from the buckets against max_p99: 2% slow requests breach, 0.5% do not.
    #[test]
    fn p99_breach() {
        let t = Tally::default();
        let base = t.read();
        window(&t, 980, 0, 20);
        window(&t, 20, 0, 1500);
        let slow = t.read().since(&base);
        match judge(&slow, &plan(Some(800))) {
            Verdict::Breach(r) => assert!(
                r.starts_with("p99 1.") && r.contains("> 800ms over 1000 requests"),
                "{r}"
            ),
            v => panic!("{v:?}"),
        }
        assert_eq!(judge(&slow, &plan(None)), Verdict::Pass);
        let base = t.read();
        window(&t, 995, 0, 20);
        window(&t, 5, 0, 1500);
        let fine = t.read().since(&base);
        assert_eq!(judge(&fine, &plan(Some(800))), Verdict::Pass);
    }
}
