//! Per-packet loss: independent random loss plus optional Gilbert-Elliott bursts.

use super::config::GilbertElliott;
use super::rng::Rng;

/// Decides, packet by packet, whether the wire loses it.
#[derive(Debug, Clone)]
pub struct LossProcess {
    random: f64,
    gilbert: Option<GilbertElliott>,
    bad: bool,
    rng: Rng,
}

impl LossProcess {
    pub fn new(random: f64, gilbert: Option<GilbertElliott>, seed: u64) -> Self {
        Self {
            random,
            gilbert,
            bad: false,
            rng: Rng::new(seed),
        }
    }

    /// True while the Gilbert-Elliott chain is in its bad state.
    pub fn in_bad_state(&self) -> bool {
        self.bad
    }

    /// Loss decision for the next packet; advances the burst state.
    pub fn lose(&mut self) -> bool {
        // Always draw the same number of values per packet so a seed gives the
        // same trace whatever the outcome of earlier draws.
        let random_loss = self.rng.chance(self.random);
        let Some(ge) = self.gilbert else {
            return random_loss;
        };
        let p = if self.bad { ge.loss_bad } else { ge.loss_good };
        let burst_loss = self.rng.chance(p);
        let flip = if self.bad { ge.p_bg } else { ge.p_gb };
        if self.rng.chance(flip) {
            self.bad = !self.bad;
        }
        random_loss || burst_loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(p: &mut LossProcess, n: usize) -> f64 {
        (0..n).filter(|_| p.lose()).count() as f64 / n as f64
    }

    #[test]
    fn random_loss_matches_setting() {
        let mut p = LossProcess::new(0.1, None, 42);
        let r = rate(&mut p, 200_000);
        assert!((r - 0.1).abs() < 0.01, "{r}");
        let mut none = LossProcess::new(0.0, None, 42);
        assert_eq!(rate(&mut none, 10_000), 0.0);
    }

    #[test]
    fn gilbert_elliott_average_and_burstiness() {
        let ge = GilbertElliott {
            p_gb: 0.05,
            p_bg: 0.3,
            loss_bad: 0.9,
            loss_good: 0.01,
        };
        let expected = ge.stationary_loss();
        assert!((expected - 0.1371).abs() < 1e-3, "{expected}");
        let mut p = LossProcess::new(0.0, Some(ge), 9);
        let n = 400_000;
        let outcomes: Vec<bool> = (0..n).map(|_| p.lose()).collect();
        let avg = outcomes.iter().filter(|&&l| l).count() as f64 / n as f64;
        assert!(
            (avg - expected).abs() < 0.1 * expected,
            "avg {avg} vs {expected}"
        );
        // Bursty: a loss is far more likely right after a loss than on average.
        let after_loss = outcomes.windows(2).filter(|w| w[0]).count() as f64;
        let loss_after_loss = outcomes.windows(2).filter(|w| w[0] && w[1]).count() as f64;
        let conditional = loss_after_loss / after_loss;
        assert!(
            conditional > 3.0 * avg,
            "P(loss|loss) {conditional} vs {avg}"
        );
    }

    #[test]
    fn combined_loss_is_union() {
        let ge = GilbertElliott {
            p_gb: 0.0,
            p_bg: 0.0,
            loss_bad: 1.0,
            loss_good: 0.2,
        };
        let mut p = LossProcess::new(0.5, Some(ge), 3);
        let r = rate(&mut p, 200_000);
        assert!((r - 0.6).abs() < 0.01, "{r}");
    }
}
