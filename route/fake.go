package route

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/romana/romana/hoststate"
)

// Fake is an in-memory kernel: links, a main routing table with protocol
// numbers, and sysctls. It behaves like the kernel where Manager can tell
// (a route needs its device; deleting a link removes its routes) and lets
// tests cause drift and inspect the result.
type Fake struct {
	mu      sync.Mutex
	links   map[string]*FakeLink
	routes  map[netip.Prefix]FakeRoute
	sysctls map[string]string
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
	}
	return &Manager{k: f, log: log}, f
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
