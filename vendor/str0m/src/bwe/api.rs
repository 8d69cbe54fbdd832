//! Bandwidth estimation.

use crate::poll::RtcMut;
use crate::{Rtc, rtp_::Mid};

pub use crate::rtp_::Bitrate;
pub use crate::rtp_::RecentFeedback;

#[derive(Debug, PartialEq)]
#[non_exhaustive]
/// Bandwidth estimation kind.
pub enum BweKind {
    /// Transport wide congestion control.
    ///
    /// Emits the current estimate with `can_probe: true` when probing becomes
    /// available, initially using the configured starting bitrate. Estimate
    /// updates follow while probing is available. On loss of probing capability,
    /// emits the last reported estimate once with `can_probe: false`, then
    /// suppresses updates until probing becomes available again.
    Twcc {
        /// Estimated available bitrate. Initially this is the configured starting bitrate.
        /// When probing becomes unavailable, this retains the last estimate.
        estimate: Bitrate,
        /// Whether the local BWE can currently probe for capacity.
        ///
        /// Requires BWE to be enabled, SRTP keys, and a sending media section
        /// supporting TWCC feedback and the transport sequence extension.
        /// This does not guarantee that feedback is arriving.
        can_probe: bool,
    },
    /// REMB (Receiver Estimated Maximum Bitrate)
    Remb {
        /// Bitrate reported by the remote receiver.
        estimate: Bitrate,
        /// Media section associated with the report.
        mid: Mid,
    },
}

/// Access to the Bandwidth Estimate subsystem.
///
// The inner `RtcMut` arms the readiness on mutable deref only; see `crate::poll`.
pub struct Bwe<'a>(pub(crate) RtcMut<'a>);

impl<'a> Bwe<'a> {
    pub(crate) fn new(rtc: &'a mut Rtc) -> Self {
        Bwe(RtcMut::new(rtc))
    }

    /// Configure the minimum transmit bitrate and desired bandwidth.
    ///
    /// `minimum` is the total outgoing rate to sustain with media and padding. When
    /// media sends less, padding fills the gap, capped by the current bandwidth
    /// estimate. Padding is suppressed during overuse and requires an active sending
    /// media section with TWCC feedback and a usable padding source. This is not guaranteed bandwidth.
    /// The automatic 50 kbit/s padding target remains a floor, even with a zero
    /// minimum, and is also capped by the estimate. The minimum is clamped to
    /// `desired`; it does not force a probe or raise the estimate.
    ///
    /// `desired` is the bitrate you would like to eventually send at. BWE tries to
    /// discover this capacity through probing. It is not a hard ceiling: probes
    /// may exceed it, and the network may not sustain it. Allocate media using the
    /// estimates from [`Event::EgressBitrateEstimate`][crate::Event::EgressBitrateEstimate].
    ///
    /// Increasing the desired bitrate above the current estimate can trigger an allocation
    /// probe, whether or not the application is currently sending below its estimated capacity.
    /// Initial probing and congestion conditions can suppress this probe. Repeating or reducing
    /// the desired bitrate does not request an allocation probe.
    ///
    /// An SFU can set `minimum` to the rate needed to start its next video layer,
    /// and `desired` to the rate needed for its preferred quality. As the estimate
    /// grows, more padding is allowed until media can take its place. Lower the
    /// minimum when sustained traffic is no longer wanted.
    ///
    /// This only has an effect when BWE is enabled via
    /// [`RtcConfig::enable_bwe`][crate::RtcConfig::enable_bwe]. Both rates are retained
    /// across [`reset`][Self::reset].
    ///
    /// # Example
    ///
    /// ```
    /// # use str0m::{Rtc, bwe::Bitrate};
    /// # let mut rtc = Rtc::builder().enable_bwe(Some(Bitrate::kbps(300))).build(std::time::Instant::now());
    /// // Sustain traffic toward the next layer while probing for the preferred rate.
    /// rtc.bwe().set_bitrate(Bitrate::kbps(800), Bitrate::mbps(3));
    /// ```
    pub fn set_bitrate(&mut self, minimum: Bitrate, desired: Bitrate) {
        let mut m = self.0.mutate();
        m.session.set_bwe_bitrate(minimum, desired);
        // Reconfiguring BWE only re-arms the estimator/pacer timers; any probing
        // padding is produced later from the timeout path, so no event is queued.
        m.no_events();
    }

    /// (tongbu patch) Loss, round trip and delivered rate of the packets sent during `window` before
    /// the newest one transport-wide feedback covered. Read at the caller's pace (cheap: walks
    /// the window's send records) where [`PeerStats`][crate::stats::PeerStats] comes too seldom
    /// and averages over a second that includes packets still in flight. `None` before feedback
    /// or without TWCC.
    pub fn recent_feedback(&self, window: std::time::Duration) -> Option<RecentFeedback> {
        self.0.session.recent_feedback(window)
    }

    /// (tongbu patch) When the newest transport-wide feedback arrived; `None` before any or
    /// without TWCC. Reports come every 50–100 ms from a receiver that gets anything: feedback
    /// that stops while media goes out is a link that carries nothing.
    pub fn last_feedback_at(&self) -> Option<std::time::Instant> {
        self.0.session.last_feedback_at()
    }

    /// (tongbu patch) When the oldest packet that no feedback has covered yet went out; `None`
    /// when every packet sent is covered. With [`Self::last_feedback_at`]: reports that stopped
    /// while packets went out, not while nothing did.
    pub fn oldest_unreported_send(&self) -> Option<std::time::Instant> {
        self.0.session.oldest_unreported_send()
    }

    /// (tongbu patch) Pace (and pad) at no more than `cap` while it is set, whatever the estimate.
    /// For an application that knows the link better than the estimator does for a while: a
    /// collapsed link whose queue overflows, seconds before the delay-based estimate falls,
    /// where pacing at the old estimate would send every keyframe in a burst the queue drops.
    /// `None` paces at the estimate again.
    pub fn set_pacing_cap(&mut self, cap: Option<Bitrate>) {
        let mut m = self.0.mutate();
        m.session.set_pacing_cap(cap);
        // Like set_bitrate: only the pacer's rates and timers move.
        m.no_events();
    }

    /// (tongbu patch) While `tolerant`, the estimate is the delay-based one: loss does not limit
    /// it. For an application that knows the loss is not congestion: a radio link that loses
    /// packets in bursts whatever the rate, with no queue standing (the round trip stays at its
    /// floor), where the loss-based controller would cut the estimate to a fraction of what the
    /// link carries. Queue growth still lowers the estimate. `false` (the default) lets the
    /// loss-based controller limit again at once, with what it learned meanwhile.
    pub fn set_loss_tolerant(&mut self, tolerant: bool) {
        let mut m = self.0.mutate();
        m.session.set_loss_tolerant(tolerant);
        m.no_events();
    }

    /// (tongbu patch) Probe toward `target` once, soon: padding at up to twice the estimate,
    /// like an allocation probe, if the estimator may probe now (not while it is congested, not
    /// during its initial probes, not when the estimate already reaches `target`). For an
    /// application short of a rate it knows is worth finding: the next layer of a subscriber
    /// that sends under its estimate, so neither the rate control's growth (at most 1.5× what is
    /// acked) nor an ALR probe (only while sending under 65 % of it) reaches it soon.
    pub fn request_probe(&mut self, target: Bitrate) {
        let mut m = self.0.mutate();
        m.session.request_bwe_probe(target);
        // Like set_bitrate: the probe goes out from the timeout path.
        m.no_events();
    }

    /// Reset the BWE with a new init_bitrate
    ///
    /// This discards the current estimator state and starts estimation again
    /// from `init_bitrate`. Normal transitions from audio-only to video sending
    /// do not require a reset: with TWCC negotiated, probing can discover
    /// capacity before video starts. The desired bitrate controls the capacity
    /// the estimator attempts to discover.
    pub fn reset(&mut self, init_bitrate: Bitrate) {
        let mut m = self.0.mutate();
        m.session.reset_bwe(init_bitrate);
        // Resetting the estimator moves no output, only timers.
        m.no_events();
    }
}
