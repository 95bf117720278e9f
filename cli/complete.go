package cli

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
)

// Shell completion of object names: "romana host show <TAB>" asks romanad
// for the hosts, with the --server, --config and credential of the command
// line being completed. cobra serves it through the hidden __complete
// command that the scripts of "romana completion SHELL" call.

// completeTimeout bounds the requests of one completion (a shell waits).
const completeTimeout = 5 * time.Second

// kind is what a positional argument or a flag names.
type kind int

const (
	none          kind = iota // nothing to offer (a new name, an IP)
	networks                  // network names
	hosts                     // host names
	tenants                   // tenant names
	segments                  // segment names: of the TENANT before (argument) or of --tenant (flag), else all
	tenantSegment             // TENANT/SEGMENT pairs
	tenantOrPair              // tenant names and TENANT/SEGMENT pairs
	addresses                 // allocated address names
	addressIPs                // allocated addresses' IPs
	policies                  // policy names
	chains                    // chain names
	devices                   // device names
	addressSets               // address set names
	pods                      // NAMESPACE/NAME of pod records
)

// completedArgs are the positional arguments of commands (by their path
// after "romana"), in order.
var completedArgs = map[string][]kind{
	"network show": {networks}, "network remove": {networks},
	"host show": {hosts}, "host remove": {hosts}, "host token": {hosts},
	"tenant show": {tenants}, "tenant remove": {tenants},
	"segment add": {tenants, none}, "segment list": {tenants},
	"segment show": {tenants, segments}, "segment remove": {tenants, segments},
	"address show": {addresses}, "address release": {addresses}, "address decode": {addressIPs},
	"policy show": {policies}, "policy remove": {policies},
	"chain show": {chains}, "chain remove": {chains},
	"device show": {devices}, "device remove": {devices},
	"addressset show": {addressSets}, "addressset remove": {addressSets},
	"pod show": {pods},
}

// completedFlags are the flags of commands that name objects.
var completedFlags = map[string]map[string]kind{
	"address allocate": {"network": networks, "host": hosts, "tenant": tenants, "segment": segments},
	"address list":     {"network": networks, "host": hosts, "tenant": tenants, "segment": segments},
	"address release":  {"ip": addressIPs},
	"plan":             {"network": networks},
	"policy stats":     {"policy": policies},
	"policy trace":     {"from": addressIPs, "to": addressIPs},
	"chain add":        {"from": tenantSegment, "to": tenantOrPair, "via": addressIPs},
	"fabric routes":    {"device": devices},
	"network add":      {"tenants": tenants},
}

// wireCompletion installs the completion functions of the tables above on
// root's commands. A table entry naming a command or flag that does not
// exist panics: every test that builds a root finds it.
func wireCompletion(g *Globals, root *cobra.Command) {
	find := func(path string) *cobra.Command {
		c, rest, err := root.Find(strings.Fields(path))
		if err != nil || len(rest) > 0 || c.CommandPath() != root.Name()+" "+path {
			panic(fmt.Sprintf("cli: completion of %q: no such command", path))
		}
		return c
	}
	for path, kinds := range completedArgs {
		c := find(path)
		c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) >= len(kinds) {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			tenant := ""
			if len(args) > 0 {
				tenant = args[0] // segment show|remove TENANT NAME
			}
			return g.complete(cmd, kinds[len(args)], tenant, toComplete)
		}
	}
	for path, flags := range completedFlags {
		c := find(path)
		for name, k := range flags {
			err := c.RegisterFlagCompletionFunc(name, func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				tenant := ""
				if f := cmd.Flags().Lookup("tenant"); f != nil && f.Value.Type() == "string" {
					tenant = f.Value.String()
				}
				return g.complete(cmd, k, tenant, toComplete)
			})
			if err != nil {
				panic(fmt.Sprintf("cli: completion of %s --%s: %v", path, name, err))
			}
		}
	}
}

// complete returns the names of kind k that start with prefix, each with a
// short description, as cobra's completion functions do. An unreachable
// romanad completes nothing (the reason is in cobra's debug log,
// BASH_COMP_DEBUG_FILE).
func (g *Globals) complete(cmd *cobra.Command, k kind, tenant, prefix string) ([]string, cobra.ShellCompDirective) {
	const directive = cobra.ShellCompDirectiveNoFileComp
	if k == none {
		return nil, directive
	}
	c, err := g.Client()
	if err != nil {
		cobra.CompDebugln("romana: "+err.Error(), true)
		return nil, directive
	}
	ctx, cancel := g.Context(cmd)
	defer cancel()
	ctx, cancel2 := context.WithTimeout(ctx, completeTimeout)
	defer cancel2()
	type item struct{ name, desc string }
	var items []item
	switch k {
	case networks:
		var l []api.Network
		if l, err = c.ListNetworks(ctx); err == nil {
			for _, n := range l {
				items = append(items, item{n.Name, n.CIDR})
			}
		}
	case hosts:
		var l []api.Host
		if l, err = c.ListHosts(ctx); err == nil {
			for _, h := range l {
				items = append(items, item{h.Name, h.IP.String()})
			}
		}
	case tenants, tenantOrPair:
		var l []api.Tenant
		if l, err = c.ListTenants(ctx); err == nil {
			for _, t := range l {
				items = append(items, item{t.Name, "tenant"})
			}
		}
		if k == tenantOrPair && err == nil {
			var ss []api.Segment
			if ss, err = c.ListSegments(ctx, ""); err == nil {
				for _, s := range ss {
					items = append(items, item{s.Tenant + "/" + s.Name, "segment"})
				}
			}
		}
	case segments, tenantSegment:
		if k == tenantSegment {
			tenant = ""
		}
		var l []api.Segment
		if l, err = c.ListSegments(ctx, tenant); err == nil {
			seen := map[string]bool{}
			for _, s := range l {
				switch {
				case k == tenantSegment:
					items = append(items, item{s.Tenant + "/" + s.Name, ""})
				case !seen[s.Name]:
					seen[s.Name] = true
					desc := "segment of " + s.Tenant
					if tenant == "" {
						desc = "segment"
					}
					items = append(items, item{s.Name, desc})
				}
			}
		}
	case addresses, addressIPs:
		var l []api.Address
		if l, err = c.ListAddresses(ctx, api.AddressFilter{}); err == nil {
			for _, a := range l {
				if k == addresses {
					items = append(items, item{a.Name, a.IP.String()})
				} else {
					items = append(items, item{a.IP.String(), a.Name})
				}
			}
		}
	case policies:
		var l []api.Policy
		if l, err = c.ListPolicies(ctx); err == nil {
			for _, p := range l {
				items = append(items, item{p.Name, p.Description})
			}
		}
	case chains:
		var l []api.Chain
		if l, err = c.ListChains(ctx); err == nil {
			for _, ch := range l {
				items = append(items, item{ch.Name, ch.Tenant + "/" + ch.Segment})
			}
		}
	case addressSets:
		var l []api.AddressSet
		if l, err = c.ListAddressSets(ctx); err == nil {
			for _, s := range l {
				items = append(items, item{s.Name, fmt.Sprintf("%d addresses", len(s.Addresses))})
			}
		}
	case pods:
		var l []api.Pod
		if l, err = c.ListPods(ctx, ""); err == nil {
			for _, p := range l {
				items = append(items, item{p.Key(), p.Tenant + "/" + p.Segment})
			}
		}
	case devices:
		var l []api.Device
		if l, err = c.ListDevices(ctx); err == nil {
			for _, d := range l {
				items = append(items, item{d.Name, d.Kind})
			}
		}
	}
	if err != nil {
		cobra.CompDebugln("romana: "+g.explain(err).Error(), true)
		return nil, directive
	}
	slices.SortFunc(items, func(a, b item) int { return cmp.Compare(a.name, b.name) })
	var out []string
	for _, it := range items {
		if !strings.HasPrefix(it.name, prefix) {
			continue
		}
		if it.desc != "" {
			out = append(out, it.name+"\t"+it.desc)
		} else {
			out = append(out, it.name)
		}
	}
	return out, directive
}
