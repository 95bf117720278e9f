package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the agent's Prometheus metrics and its health.
type Metrics struct {
	reconciles  prometheus.Counter
	errors      prometheus.Counter
	lastSuccess prometheus.Gauge
	routes      prometheus.Gauge
	pending     prometheus.Gauge
	rules       prometheus.Gauge
	elements    prometheus.Gauge
	problems    prometheus.Gauge
	conflicts   prometheus.Gauge
	refused     prometheus.Gauge
	unresolved  prometheus.Gauge
	revision    prometheus.Gauge

	mu     sync.Mutex
	health error // nil when the last reconcile succeeded
	status Status
}

// Status is what the agent could not apply at its last reconciliation,
// served as JSON at /status.
type Status struct {
	Revision int64 `json:"revision"`
	// Problems are the objects skipped (hoststate.State.Problems) and the
	// policies nftables rejected.
	Problems []string `json:"problems"`
	// RouteConflicts are desired routes left out because a foreign route
	// (another protocol: the kernel's, an administrator's, a routing
	// daemon's) holds their destination in the main table; each is
	// retried at every reconciliation.
	RouteConflicts []string `json:"routeConflicts"`
	// RoutesPending are endpoint routes whose device does not exist yet.
	RoutesPending []string `json:"routesPending"`
	// RoutesRefused are routes the agent will not install, with the
	// reason: a next hop or device it may not use, a destination in its
	// own underlay (docs/agent.md, "What the agent refuses to install").
	RoutesRefused []string `json:"routesRefused"`
	// NeighborsUnresolved are remote hosts (flat mode) whose link-layer
	// address is not known yet: packets from their blocks are dropped
	// when they arrive from the underlay until it is.
	NeighborsUnresolved []string `json:"neighborsUnresolved"`
}

// NewMetrics registers the agent's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "romana_agent_" + name, Help: help})
	}
	m := &Metrics{
		reconciles:  prometheus.NewCounter(prometheus.CounterOpts{Name: "romana_agent_reconciles_total", Help: "Reconciliations run."}),
		errors:      prometheus.NewCounter(prometheus.CounterOpts{Name: "romana_agent_reconcile_errors_total", Help: "Reconciliations that failed (in part)."}),
		lastSuccess: g("last_success_timestamp_seconds", "Unix time of the last fully successful reconciliation."),
		routes:      g("routes", "Routes the agent wants (endpoint /32s and remote host CIDRs)."),
		pending:     g("routes_pending", "Desired endpoint routes whose device does not exist yet."),
		rules:       g("nft_rules", "Rules in table inet romana."),
		elements:    g("nft_map_elements", "Map elements in table inet romana."),
		problems:    g("problems", "Objects skipped because they are malformed or inconsistent, or policies nftables rejected."),
		conflicts:   g("route_conflicts", "Desired routes not installed because a foreign route (another protocol) holds their destination."),
		refused:     g("routes_refused", "Routes not installed because their next hop or device is not one this host may use, or their destination is in its underlay."),
		unresolved:  g("neighbors_unresolved", "Remote hosts (flat mode) whose link-layer address is not known yet; their blocks are dropped from the underlay until it is."),
		revision:    g("revision", "Store revision of the state last reconciled."),
		health:      errNotSynced,
	}
	reg.MustRegister(m.reconciles, m.errors, m.lastSuccess, m.routes, m.pending, m.rules, m.elements, m.problems, m.conflicts,
		m.refused, m.unresolved, m.revision)
	return m
}

var errNotSynced = fmt.Errorf("no reconciliation yet (waiting for romanad's initial snapshot)")

func (m *Metrics) setHealth(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.health = err
}

// Health returns nil when the last reconciliation succeeded, else why not.
func (m *Metrics) Health() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.health
}

func (m *Metrics) setStatus(s Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status = s
}

// Status returns what the last reconciliation could not apply.
func (m *Metrics) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// Handler serves /metrics from g, /status (Status as JSON) and /healthz:
// 200 "ok" when the last reconciliation succeeded, 503 with the reason
// otherwise. Route conflicts and problems do not make it fail: the rest
// of the host's state is applied.
func (m *Metrics) Handler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(m.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := m.Health(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
