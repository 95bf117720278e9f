package server

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/romana/romana/ipam"
)

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	watches  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, r *ipam.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "romanad_http_requests_total",
			Help: "HTTP requests by route (method and path pattern) and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "romanad_http_request_duration_seconds",
			Help:    "HTTP request latency by route (watch streams count their whole duration).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		watches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "romanad_watch_streams",
			Help: "Open watch streams.",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.watches,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "romanad_addresses_allocated_total",
			Help: "Addresses newly allocated (idempotent repeats not counted).",
		}, func() float64 { return float64(r.Stats().Allocations) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "romanad_addresses_released_total",
			Help: "Addresses released.",
		}, func() float64 { return float64(r.Stats().Releases) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "romanad_store_conflicts_total",
			Help: "Store transactions that lost a race with a concurrent writer and were retried.",
		}, func() float64 { return float64(r.Stats().Conflicts) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "romanad_watch_cutoffs_total",
			Help: "Watch streams ended because their client fell more than the watch backlog behind.",
		}, func() float64 { return float64(r.Stats().WatchCutoffs) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "romanad_watch_catchups_total",
			Help: "Watch streams from a revision older than the in-memory watch history, served by an etcd watch of their own until they reached it.",
		}, func() float64 { return float64(r.Stats().WatchCatchUps) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "romanad_watch_history_bytes",
			Help: "Bytes of recent changes kept in memory for watch streams to start or resume from.",
		}, func() float64 { return float64(r.Stats().Feed.HistoryBytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "romanad_etcd_watchers",
			Help:        "etcd watches romanad has open, by what they follow: object changes (one for all watch streams, plus one per stream catching up from before the watch history) and certificate revocations.",
			ConstLabels: prometheus.Labels{"follows": "events"},
		}, func() float64 { return float64(r.Stats().EventWatches) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "romanad_etcd_watchers",
			Help:        "etcd watches romanad has open, by what they follow: object changes (one for all watch streams, plus one per stream catching up from before the watch history) and certificate revocations.",
			ConstLabels: prometheus.Labels{"follows": "revocations"},
		}, func() float64 { return float64(r.Stats().RevocationWatches) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "romanad_etcd_watchers_opened_total",
			Help:        "etcd watches romanad has opened, by what they follow (see romanad_etcd_watchers).",
			ConstLabels: prometheus.Labels{"follows": "events"},
		}, func() float64 { return float64(r.Stats().EventWatchesOpened) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "romanad_etcd_watchers_opened_total",
			Help:        "etcd watches romanad has opened, by what they follow (see romanad_etcd_watchers).",
			ConstLabels: prometheus.Labels{"follows": "revocations"},
		}, func() float64 { return float64(r.Stats().RevocationWatchesOpened) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "romanad_pod_record_waits",
			Help: "Allocations for a Kubernetes pod waiting now for the pod's record (written by romana-kube).",
		}, func() float64 { return float64(r.Stats().PodWaits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "romana_store_undecodable_values_total",
			Help: "Stored values that a listing, the snapshot or host placement skipped because they do not decode (once per skip).",
		}, func() float64 { return float64(r.Stats().Undecodable) }),
	)
	return m
}

func (m *metrics) observe(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}
