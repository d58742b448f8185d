"""What the provider admitted lately, as the rate controller measures it: a two-bucket
meter of answers and bare 503s over about a second, the outcomes of the last two round
trips, and the half-second medians of round trips that tell queueing apart."""

from __future__ import annotations

from collections import deque

from pipeline.limiter._values import _INF

__all__ = ["AnswerMeter"]

_METER_SPAN = 0.5  # seconds per bucket of the success-rate meter (two buckets kept)
_RTT_BUCKETS = 20  # half-second medians of round trips kept (ten seconds, as BBR keeps its min)
_RTT_SAMPLES = 128  # round trips kept per half second for its median (the first ones)
_QUEUE_FACTOR = 2.0  # a round trip past this x the typical one (plus the slack) is queueing
_QUEUE_SLACK = 0.005  # seconds: loopback round trips of 2-3 ms jitter by that much
_ROUND_TRIPS = 2.0  # the outcomes of this many typical round trips are "the last round"
_ROUND_SPAN = (0.02, 0.5)  # seconds: the least and most that window spans


class AnswerMeter:
    """The measuring half of :class:`~pipeline.limiter._control.RateController` (its base):
    answers and bare 503s per meter bucket, the last bucket's too, and round-trip medians.
    ``time_scale`` divides its spans, as the controller's own durations."""

    __slots__ = ("_m_503", "_m_ok_r", "_m_ok_t", "_m_prev_503", "_m_prev_r", "_m_prev_t",
                 "_m_start", "_round", "_round_503", "_rtt_medians", "_rtts",
                 "_s_meter_span", "_s_queue_slack", "_s_round", "_s_round_span")

    def __init__(self, time_scale: float) -> None:
        self._s_meter_span = _METER_SPAN / time_scale
        self._s_queue_slack = _QUEUE_SLACK / time_scale
        self._s_round_span = (_ROUND_SPAN[0] / time_scale, _ROUND_SPAN[1] / time_scale)
        self._s_round = 0.1 / time_scale  # until round trips are known
        # The outcomes of about the last two round trips: (time, bare 503?), and the 503s
        # among them. A gateway's cap refuses a round's excess at once; over the meter's
        # second, among forty rounds of answers, that storm is a small share.
        self._round: deque[tuple[float, bool]] = deque()
        self._round_503 = 0
        self._m_start = -_INF
        self._m_ok_r = self._m_ok_t = self._m_prev_r = self._m_prev_t = 0.0
        self._m_503 = self._m_prev_503 = 0.0
        self._rtts: list[float] = []  # round trips of this meter bucket's successes
        self._rtt_medians: list[float] = []  # medians of the last few buckets, oldest first

    def _meter(self, now: float, requests: float, tokens: float) -> None:
        """Count answers in the two-bucket meter of what the provider admitted."""
        if now - self._m_start >= self._s_meter_span:
            recent = now - self._m_start < 2 * self._s_meter_span
            self._rotate_rtts(recent)
            self._m_prev_r = self._m_ok_r if recent else 0.0
            self._m_prev_t = self._m_ok_t if recent else 0.0
            self._m_prev_503 = self._m_503 if recent else 0.0
            self._m_ok_r = self._m_ok_t = self._m_503 = 0.0
            self._m_start = now
        self._m_ok_r += requests
        self._m_ok_t += tokens

    def _rotate_rtts(self, recent: bool) -> None:
        """Close a meter bucket: keep the median of its round trips (a few answers at least)."""
        rtts = self._rtts
        if not recent:
            self._rtt_medians.clear()  # an idle spell: what was typical then may not be now
        if len(rtts) >= 4:
            rtts.sort()
            self._rtt_medians.append(rtts[len(rtts) // 2])
            del self._rtt_medians[:-_RTT_BUCKETS]
            least, most = self._s_round_span
            self._s_round = min(max(_ROUND_TRIPS * min(self._rtt_medians), least), most)
        rtts.clear()

    def _note_round(self, now: float, refused: bool) -> tuple[int, int]:
        """Count an outcome in the last round (an answer, or a bare 503 when ``refused``);
        the round's ``(503s, outcomes)``."""
        window = self._round
        window.append((now, refused))
        if refused:
            self._round_503 += 1
        cutoff = now - self._s_round
        while window[0][0] < cutoff:
            if window.popleft()[1]:
                self._round_503 -= 1
        return self._round_503, len(window)

    def _answered_lately(self, now: float) -> int:
        """Answers in about the last round trip: what a gateway's cap lets through a round
        (a flow at the cap completes as many a round trip as it holds in flight). Counting
        refusals instead undercounts what got through: a refused request's slot comes back
        at once and is refused again, many times a round (that cut a cap of 16 to 6)."""
        window = self._round
        if self._rtt_medians:
            rtt = min(self._rtt_medians)
        elif self._rtts:  # the first half second: its round trips so far
            rtt = sorted(self._rtts)[len(self._rtts) // 2]
        else:
            rtt = 0.5 * self._s_round
        cutoff = now - rtt
        answered = 0
        for index in range(len(window) - 1, -1, -1):
            at, refused = window[index]
            if at <= cutoff:
                break
            answered += not refused
        return answered

    def _queueing(self, rtt: float) -> bool:
        """Whether a round trip this long says requests are queueing somewhere.

        The yardstick is the lowest half-second median of the last ten seconds: robust to
        the first answers' connection set-up, and to latencies that vary by nature (an LLM's
        answers take as long as they are), which move a median little.
        """
        if not self._rtt_medians:
            return False
        return rtt > _QUEUE_FACTOR * min(self._rtt_medians) + self._s_queue_slack

    def _measured(self, now: float) -> tuple[float, float] | None:
        """Successes per second (requests, tokens) over about the last second, if known."""
        if self._m_start == -_INF:
            return None
        age = now - self._m_start
        if age >= 2 * self._s_meter_span:
            return 0.0, 0.0
        span = age + self._s_meter_span
        if span < self._s_meter_span:
            return None
        return ((self._m_ok_r + self._m_prev_r) / span, (self._m_ok_t + self._m_prev_t) / span)
