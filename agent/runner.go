package agent

import "time"

// limiter bounds how often the loop syncs, like kube-proxy's
// BoundedFrequencyRunner: a token bucket of burst passes refilled at one
// per interval. A quiet agent syncs at once when a change arrives; a storm
// of changes is folded into at most one pass per interval after the burst.
// It is pure: the caller passes the clock.
type limiter struct {
	interval time.Duration
	burst    float64
	tokens   float64
	last     time.Time
}

func newLimiter(interval time.Duration, burst int) *limiter {
	return &limiter{interval: interval, burst: float64(burst), tokens: float64(burst)}
}

// take spends a token if one is left at now and reports true; otherwise
// it reports how long until one is.
func (l *limiter) take(now time.Time) (bool, time.Duration) {
	if l.interval <= 0 {
		return true, 0
	}
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+float64(now.Sub(l.last))/float64(l.interval))
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return true, 0
	}
	return false, time.Duration((1 - l.tokens) * float64(l.interval))
}

// backoff is the delay before retrying a failed pass: min, doubling up to
// max; reset after a pass that succeeds.
type backoff struct {
	min, max, next time.Duration
}

func (b *backoff) failed() time.Duration {
	d := max(b.next, b.min)
	b.next = min(2*d, b.max)
	return d
}

func (b *backoff) reset() { b.next = b.min }
