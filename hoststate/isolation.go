package hoststate

import (
	"fmt"
	"strings"

	"github.com/romana/romana/api"
)

// tenantChainCache keeps each tenant's isolation chains (tenantChains)
// from call to call: they depend on the tenant, its segments and the
// networks only, so a policy change, the usual event, reuses every one of
// them (at 1,000 tenants, making them again was a third of the
// computation of a policy change). The model makes a new tenant list when
// a tenant or a segment changes, so the list's identity, with the
// networks as tenantChains reads them (key), tells whether they are still
// right; any change drops them all.
type tenantChainCache struct {
	tenants []api.Tenant // the model's list they were made from
	key     string       // isolationKey of the networks
	byID    map[uint64]tenantChainsOf
	made    int // tenants whose chains were made, for tests
}

// tenantChainsOf is what tenantChains returned for one tenant, comments
// clipped. Its chains are shared by every ruleset made since: never
// modified.
type tenantChainsOf struct {
	chains   []Chain
	problems []string
}

// appendTenantChains appends the isolation chains of in's tenants for
// which used is set, in the tenants' order, and reports their problems.
// A nil c caches nothing.
func (c *Compiler) appendTenantChains(out []Chain, in *inputs, used map[uint64]bool) []Chain {
	var tc *tenantChainCache
	if c != nil {
		tc = &c.tenantChains
		if key := isolationKey(in); !sameList(in.tenants, tc.tenants) || key != tc.key {
			*tc = tenantChainCache{tenants: in.tenants, key: key, byID: map[uint64]tenantChainsOf{}, made: tc.made}
		}
	}
	for _, t := range in.tenants {
		if !used[t.ID] {
			continue
		}
		e, ok := tenantChainsOf{}, false
		if tc != nil {
			e, ok = tc.byID[t.ID]
		}
		if !ok {
			e.chains, e.problems = tenantChains(in, t)
			clipChains(e.chains)
			if tc != nil {
				tc.byID[t.ID] = e
				tc.made++
			}
		}
		out = append(out, e.chains...)
		for _, p := range e.problems {
			in.problem("%s", p)
		}
	}
	return out
}

// isolationKey describes the networks as tenantChains reads them: their
// plans, the tenants they admit and whether this host has a block.
func isolationKey(in *inputs) string {
	var b strings.Builder
	for _, n := range in.networks {
		writeNetworkKey(&b, n.Network)
		fmt.Fprintf(&b, " %v;", n.mine.IsValid())
	}
	return b.String()
}
