package route

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/romana/romana/hoststate"
)

// Fake is an in-memory kernel: links, a main routing table with protocol
// numbers, sysctls, and for Policy ip rules and other routing tables. It
// behaves like the kernel where Manager and Policy can tell (a route needs
// its device; deleting a link removes its routes; replacing a route
// replaces whatever route has its table and destination) and lets tests
// cause drift and inspect the result.
type Fake struct {
	mu      sync.Mutex
	links   map[string]*FakeLink
	routes  map[netip.Prefix]FakeRoute
	sysctls map[string]string
	// rules in the kernel's order: by priority, then as added.
	rules []KernelRule
	// tables holds the routes of tables other than main.
	tables map[tableDst]KernelTableRoute
	// Fail, when set, is returned by every mutating call (to test errors).
	fail error
}

// FakeLink is a link of the fake kernel.
type FakeLink struct {
	Kind  string
	Up    bool
	Addrs []netip.Prefix
}

// FakeRoute is a route of the fake kernel with its protocol.
type FakeRoute struct {
	hoststate.Route
	Protocol int
}

// NewFake returns a Manager on a new Fake kernel with "lo", forwarding off.
func NewFake(log *slog.Logger) (*Manager, *Fake) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fake{
		links:   map[string]*FakeLink{"lo": {Kind: "loopback", Up: true}},
		routes:  map[netip.Prefix]FakeRoute{},
		sysctls: map[string]string{"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0"},
		tables:  map[tableDst]KernelTableRoute{},
	}
	return &Manager{k: f, log: log}, f
}

// NewFakePolicy returns a Policy on the fake kernel f (which NewFake made,
// so that a Manager and a Policy share its links).
func NewFakePolicy(f *Fake, log *slog.Logger) *Policy {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Policy{k: f, log: log}
}

// AddLink adds a link (a veth the CNI plugin created, say).
func (f *Fake) AddLink(name, kind string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[name] = &FakeLink{Kind: kind, Up: true}
}

// DeleteLink removes a link and, like the kernel, every route through it.
func (f *Fake) DeleteLink(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.links, name)
	for dst, r := range f.routes {
		if r.Dev == name {
			delete(f.routes, dst)
		}
	}
	for k, r := range f.tables {
		if r.Dev == name {
			delete(f.tables, k)
		}
	}
	for key := range f.sysctls {
		if link, ok := ifaceSysctl(key); ok && link == name {
			delete(f.sysctls, key)
		}
	}
}

// Link returns a copy of a link, or false.
func (f *Fake) Link(name string) (FakeLink, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return FakeLink{}, false
	}
	c := *l
	c.Addrs = slices.Clone(l.Addrs)
	return c, true
}

// AddRoute installs a route with any protocol (a foreign route, or drift).
func (f *Fake) AddRoute(r hoststate.Route, protocol int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[r.Dst] = FakeRoute{Route: r, Protocol: protocol}
}

// DeleteRoute removes the route to dst whatever its protocol (drift).
func (f *Fake) DeleteRoute(dst netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.routes, dst)
}

// Routes returns the whole table, sorted.
func (f *Fake) Routes() []FakeRoute {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]FakeRoute, 0, len(f.routes))
	for _, r := range f.routes {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b FakeRoute) int { return hoststate.CompareRoutes(a.Route, b.Route) })
	return out
}

// Sysctl returns a setting.
func (f *Fake) Sysctl(key string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sysctls[key]
}

// SetFail makes every mutating call fail with err (nil restores).
func (f *Fake) SetFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *Fake) listRoutes(dsts map[netip.Prefix]bool) ([]hoststate.Route, map[netip.Prefix]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hoststate.Route
	foreign := map[netip.Prefix]string{}
	for _, r := range f.routes {
		switch {
		case r.Protocol == Protocol:
			out = append(out, r.Route)
		case dsts[r.Dst]:
			foreign[r.Dst] = fmt.Sprintf("%s proto %d", r.Route, r.Protocol)
		}
	}
	return out, foreign, nil
}

// addRoute fails, like the kernel's exclusive create, when any route to
// the destination exists (the fake has no metrics).
func (f *Fake) addRoute(r hoststate.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.routes[r.Dst]; ok && f.fail == nil {
		return fmt.Errorf("%w: %s", ErrExists, r.Dst)
	}
	return f.installLocked(r)
}

func (f *Fake) replaceRoute(r hoststate.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.installLocked(r)
}

func (f *Fake) installLocked(r hoststate.Route) error {
	if f.fail != nil {
		return f.fail
	}
	if r.Dev != "" && f.links[r.Dev] == nil {
		return fmt.Errorf("%w: %s", ErrLinkNotFound, r.Dev)
	}
	f.routes[r.Dst] = FakeRoute{Route: r, Protocol: Protocol}
	return nil
}

func (f *Fake) deleteRoute(r hoststate.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if cur, ok := f.routes[r.Dst]; ok && cur.Protocol == Protocol {
		delete(f.routes, r.Dst)
	}
	return nil
}

func (f *Fake) ensureDummy(name string, addr netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	l := f.links[name]
	if l == nil {
		l = &FakeLink{Kind: "dummy"}
		f.links[name] = l
	}
	if l.Kind != "dummy" {
		return fmt.Errorf("link %s exists and is a %s, not a dummy", name, l.Kind)
	}
	l.Up = true
	if !slices.Contains(l.Addrs, addr) {
		l.Addrs = append(l.Addrs, addr)
	}
	return nil
}

func (f *Fake) deleteDummy(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if l := f.links[name]; l != nil && l.Kind == "dummy" {
		delete(f.links, name)
		for dst, r := range f.routes {
			if r.Dev == name {
				delete(f.routes, dst)
			}
		}
		for k, r := range f.tables {
			if r.Dev == name {
				delete(f.tables, k)
			}
		}
	}
	return nil
}

// ifaceSysctl returns the link a per-interface key ("net/ipv6/conf/<link>/<name>") names.
func ifaceSysctl(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "net/ipv6/conf/")
	if !ok {
		return "", false
	}
	link, _, ok := strings.Cut(rest, "/")
	return link, ok
}

// readSysctl knows the global settings NewFake creates and, for each link,
// net/ipv6/conf/<link>/force_forwarding (default "0").
func (f *Fake) readSysctl(key string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if link, ok := ifaceSysctl(key); ok {
		if f.links[link] == nil {
			return "", fmt.Errorf("%w: %s", ErrLinkNotFound, link)
		}
		if _, ok := f.sysctls[key]; !ok {
			return "0\n", nil
		}
	}
	v, ok := f.sysctls[key]
	if !ok {
		return "", fmt.Errorf("no sysctl %s", key)
	}
	return v + "\n", nil
}

func (f *Fake) writeSysctl(key, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	link, perLink := ifaceSysctl(key)
	if _, ok := f.sysctls[key]; !ok && !(perLink && f.links[link] != nil) {
		return fmt.Errorf("no sysctl %s", key)
	}
	f.sysctls[key] = value
	return nil
}

// tableDst is where a route of a table other than main lives: the fake,
// which has no metrics, holds one route per table and destination.
type tableDst struct {
	table int
	dst   netip.Prefix
}

// defaultDst is the default destination of r's family.
func defaultDst(r hoststate.TableRoute) netip.Prefix {
	if r.V6 {
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
}

// AddRule adds an ip rule with any protocol (a foreign rule, or drift),
// even one equal to a rule already there (as `ip rule add` without
// NLM_F_EXCL may).
func (f *Fake) AddRule(r KernelRule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.insertRuleLocked(r)
}

func (f *Fake) insertRuleLocked(r KernelRule) {
	i := len(f.rules)
	for i > 0 && f.rules[i-1].Priority > r.Priority {
		i--
	}
	f.rules = slices.Insert(f.rules, i, r)
}

// DeleteRule removes the first rule equal to r, if any (drift).
func (f *Fake) DeleteRule(r KernelRule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := slices.Index(f.rules, r); i >= 0 {
		f.rules = slices.Delete(f.rules, i, i+1)
	}
}

// Rules returns the ip rules in the kernel's order.
func (f *Fake) Rules() []KernelRule {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.rules)
}

// AddTableRoute installs a route in a table other than main, with any
// protocol (a foreign route, or drift), replacing the route with its table
// and destination. Dst defaults to the default destination of r's family.
func (f *Fake) AddTableRoute(r KernelTableRoute) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !r.Dst.IsValid() {
		r.Dst = defaultDst(r.TableRoute)
	}
	f.tables[tableDst{r.Table, r.Dst}] = r
}

// DeleteTableRoute removes the route to dst of a table, whatever its
// protocol (drift).
func (f *Fake) DeleteTableRoute(table int, dst netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tables, tableDst{table, dst})
}

// TableRoutes returns the routes of the tables other than main, by table
// and destination.
func (f *Fake) TableRoutes() []KernelTableRoute {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tableRoutesLocked(func(KernelTableRoute) bool { return true })
}

func (f *Fake) tableRoutesLocked(keep func(KernelTableRoute) bool) []KernelTableRoute {
	var out []KernelTableRoute
	for _, r := range f.tables {
		if keep(r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b KernelTableRoute) int {
		if c := cmp.Compare(a.Table, b.Table); c != 0 {
			return c
		}
		if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Dst.Bits(), b.Dst.Bits())
	})
	return out
}

// PolicyString renders the ip rules and the routes of tables other than
// main, one a line, for tests to compare. Rules come by priority, then
// (unlike Rules, which keeps the kernel's order of rules with the same
// priority) as text.
func (f *Fake) PolicyString() string {
	var b strings.Builder
	rules := f.Rules()
	slices.SortStableFunc(rules, func(a, b KernelRule) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.String(), b.String()))
	})
	for _, r := range rules {
		b.WriteString("rule " + r.String() + "\n")
	}
	for _, r := range f.TableRoutes() {
		b.WriteString("route " + r.String() + "\n")
	}
	return b.String()
}

func (f *Fake) listTableRoutes() ([]KernelTableRoute, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tableRoutesLocked(func(KernelTableRoute) bool { return true }), nil
}

// replaceTableRoute replaces whatever route has r's table and destination,
// like the kernel (which would keep one with another metric: the fake has
// none).
func (f *Fake) replaceTableRoute(r hoststate.TableRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if !r.Blackhole && r.Dev != "" && f.links[r.Dev] == nil {
		return fmt.Errorf("%w: %s", ErrLinkNotFound, r.Dev)
	}
	if r.Blackhole {
		r.Via, r.Dev = netip.Addr{}, ""
	}
	dst := defaultDst(r)
	f.tables[tableDst{r.Table, dst}] = KernelTableRoute{TableRoute: r, Dst: dst, Protocol: Protocol}
	return nil
}

func (f *Fake) deleteTableRoute(r KernelTableRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	k := tableDst{r.Table, r.Dst}
	if cur, ok := f.tables[k]; ok && cur.Protocol == r.Protocol {
		delete(f.tables, k)
	}
	return nil
}

func (f *Fake) listRules() ([]KernelRule, error) {
	return f.Rules(), nil
}

// addRule fails, like the kernel's exclusive create, when an equal rule
// exists.
func (f *Fake) addRule(r KernelRule) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if slices.Contains(f.rules, r) {
		return fmt.Errorf("add rule %s: it exists", r)
	}
	f.insertRuleLocked(r)
	return nil
}

func (f *Fake) deleteRule(r KernelRule) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	i := slices.Index(f.rules, r)
	if i < 0 {
		return fmt.Errorf("rule %s: no such rule", r)
	}
	f.rules = slices.Delete(f.rules, i, i+1)
	return nil
}
