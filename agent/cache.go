package agent

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/romana/romana/api"
)

// cache is romanad's state as the agent last heard it: a snapshot with
// the watch events after it applied. It is not safe for concurrent use.
type cache struct {
	rev       int64
	networks  map[string]api.Network
	hosts     map[string]api.Host
	tenants   map[string]api.Tenant
	segments  map[string]api.Segment // "tenant/segment"
	addresses map[string]api.Address
	policies  map[string]api.Policy
	chains    map[string]api.Chain // service chains (chain.go)
	devices   map[string]api.Device
}

func newCache(s api.Snapshot) *cache {
	c := &cache{rev: s.Revision,
		networks: map[string]api.Network{}, hosts: map[string]api.Host{}, tenants: map[string]api.Tenant{},
		segments: map[string]api.Segment{}, addresses: map[string]api.Address{}, policies: map[string]api.Policy{},
		devices: map[string]api.Device{}}
	for _, x := range s.Networks {
		c.networks[x.Name] = x
	}
	for _, x := range s.Hosts {
		c.hosts[x.Name] = x
	}
	for _, x := range s.Tenants {
		c.tenants[x.Name] = x
	}
	for _, x := range s.Segments {
		c.segments[x.Tenant+"/"+x.Name] = x
	}
	for _, x := range s.Addresses {
		c.addresses[x.Name] = x
	}
	for _, x := range s.Policies {
		c.policies[x.Name] = x
	}
	c.chains = map[string]api.Chain{}
	for _, x := range s.Chains {
		c.chains[x.Name] = x
	}
	for _, x := range s.Devices {
		c.devices[x.Name] = x
	}
	return c
}

// apply applies one watch event. Events of unknown kinds are ignored (a
// newer romanad may send more); a put whose object does not decode is an
// error, after which the caller must re-read a snapshot.
func (c *cache) apply(ev api.Event) error {
	var err error
	switch ev.Kind {
	case api.KindNetwork:
		err = applyTo(c.networks, ev)
	case api.KindHost:
		err = applyTo(c.hosts, ev)
	case api.KindTenant:
		err = applyTo(c.tenants, ev)
	case api.KindSegment:
		err = applyTo(c.segments, ev)
	case api.KindAddress:
		err = applyTo(c.addresses, ev)
	case api.KindPolicy:
		err = applyTo(c.policies, ev)
	case api.KindChain:
		err = applyTo(c.chains, ev)
	case api.KindDevice:
		err = applyTo(c.devices, ev)
	default:
		return nil
	}
	if err != nil {
		return err
	}
	if ev.Revision > c.rev {
		c.rev = ev.Revision
	}
	return nil
}

func applyTo[T any](m map[string]T, ev api.Event) error {
	switch ev.Type {
	case api.EventDelete:
		delete(m, ev.Name)
	case api.EventPut:
		var v T
		if err := json.Unmarshal(ev.Object, &v); err != nil {
			return fmt.Errorf("decode %s %q at revision %d: %w", ev.Kind, ev.Name, ev.Revision, err)
		}
		m[ev.Name] = v
	default:
		return fmt.Errorf("%s %q at revision %d: unknown event type %q", ev.Kind, ev.Name, ev.Revision, ev.Type)
	}
	return nil
}

// snapshot returns the cached state as a snapshot (in map order: the
// computation sorts what it needs).
func (c *cache) snapshot() api.Snapshot {
	return api.Snapshot{
		Revision:  c.rev,
		Networks:  slices.Collect(maps.Values(c.networks)),
		Hosts:     slices.Collect(maps.Values(c.hosts)),
		Tenants:   slices.Collect(maps.Values(c.tenants)),
		Segments:  slices.Collect(maps.Values(c.segments)),
		Addresses: slices.Collect(maps.Values(c.addresses)),
		Policies:  slices.Collect(maps.Values(c.policies)),
		Chains:    slices.Collect(maps.Values(c.chains)),
		Devices:   slices.Collect(maps.Values(c.devices)),
	}
}
