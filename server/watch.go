package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/romana/romana/api"
	"github.com/romana/romana/pki"
)

// KeepaliveHeader is the watch response header that gives the interval of
// the stream's keepalive lines (a Go duration, "15s"): a client that sees no
// line for several intervals may take the stream for dead.
const KeepaliveHeader = "Romana-Watch-Keepalive"

// watch streams events as NDJSON, one flushed line per event, with an
// empty line every keepalive interval while idle. Errors found before the
// stream starts (bad, future or compacted revision) are JSON errors with a
// status. A stream that ends for any other reason than its client going
// away ends with one error line, {"error":{...}} as in an error response:
// a watcher cut off for falling behind, romanad shutting down, the store
// failing, a revoked or expired certificate. The client then watches again
// from the revision after the last one it has whole (api.Event.RevisionEnd).
//
// Every stream is served by the registry's one etcd watch (its feed, which
// Serve runs), not one of its own. Every line must be written within the
// write timeout: a client that stops reading holds romanad's socket
// buffers for that long at most, and is cut off once it falls the
// registry's bounded backlog (ipam.Options.WatchBacklog) behind.
func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	var rev int64
	if v := r.URL.Query().Get("revision"); v != "" {
		var err error
		if rev, err = strconv.ParseInt(v, 10, 64); err != nil || rev < 0 {
			s.writeError(w, r, api.Errorf(api.ReasonInvalid, "query parameter revision: %q is not a revision number", v))
			return
		}
	}
	ctx := r.Context()
	sub, err := s.reg.Watch(ctx, rev)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer sub.Close()
	s.metrics.watches.Inc()
	defer s.metrics.watches.Dec()
	rc := http.NewResponseController(w)
	// write writes and flushes one line within the write timeout.
	write := func(line []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(s.writeTO))
		if _, err := w.Write(line); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// end writes the error line that ends the stream.
	end := func(e *api.Error) {
		line, _ := json.Marshal(api.ErrorBody{Error: e})
		write(append(line, '\n'))
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set(KeepaliveHeader, s.keepalive.String())
	w.WriteHeader(http.StatusOK)
	if !write(nil) {
		return
	}
	tick := time.NewTicker(s.keepalive)
	defer tick.Stop()
	// A stream lives no longer than its client certificate: it ends when the
	// certificate is revoked or expires, and the client reconnects with its
	// renewed one.
	var revoked <-chan struct{}
	var expired <-chan time.Time
	if c := callerOf(r); c.cert != nil {
		ch, unregister := s.revoked.stream(pki.Serial(c.cert))
		defer unregister()
		revoked = ch
		t := time.NewTimer(time.Until(c.cert.NotAfter))
		defer t.Stop()
		expired = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stopping:
			end(api.Errorf(api.ReasonUnavailable, "romanad is shutting down: watch again (from the revision after the last whole one) once it is back"))
			return
		case <-revoked:
			s.log.Info("watch stream ended: client certificate revoked", "identity", callerOf(r).id.String())
			end(api.Errorf(api.ReasonUnauthorized, "the client certificate of this watch has been revoked"))
			return
		case <-expired:
			s.log.Info("watch stream ended: client certificate expired", "identity", callerOf(r).id.String())
			end(api.Errorf(api.ReasonUnauthorized, "the client certificate of this watch has expired: renew it and watch again"))
			return
		case <-tick.C:
			if !write([]byte("\n")) {
				return
			}
		case <-sub.Ready(): // one batch at a time: Next rearms Ready if there is more
			b, ok := sub.Next()
			if !ok {
				continue
			}
			if b.Err != nil {
				s.log.Info("watch stream ended", "from", rev, "err", b.Err)
				var ae *api.Error
				if !errors.As(b.Err, &ae) {
					ae = api.Errorf(api.ReasonInternal, "watch: %v", b.Err)
				}
				end(ae)
				return
			}
			for _, ev := range b.Events {
				line, err := json.Marshal(ev)
				if err != nil {
					s.log.Error("encode watch event", "kind", ev.Kind, "name", ev.Name, "err", err)
					end(api.Errorf(api.ReasonInternal, "encode watch event %s %s: %v", ev.Kind, ev.Name, err))
					return
				}
				if !write(append(line, '\n')) {
					return
				}
			}
			tick.Reset(s.keepalive)
		}
	}
}
