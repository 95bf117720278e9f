package cli

import (
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// PlanReport is what `romana plan` prints: the layout with bit positions,
// the capacities and, when asked, example CIDRs.
type PlanReport struct {
	Network string        `json:"network,omitempty"`
	CIDR    string        `json:"cidr"`
	Fields  []FieldReport `json:"fields"`
	// Capacity counts above 2^64-1 saturate (see plan.Capacity); the
	// table prints them exactly.
	Capacity plan.Capacity `json:"capacity"`
	// FirstEndpoint and LastEndpoint bound the endpoint indexes handed out in
	// each segment block.
	FirstEndpoint uint64          `json:"firstEndpoint"`
	LastEndpoint  uint64          `json:"lastEndpoint"`
	TenantMask    netip.Addr      `json:"tenantMask"`
	SegmentMask   netip.Addr      `json:"segmentMask"`
	Example       *ExampleReport  `json:"example,omitempty"`
	exact         exactCapacities // for the table: counts beyond uint64
}

// FieldReport is one field with its bit positions, counted from the most
// significant bit of the address (0). A 0-bit field has no positions.
type FieldReport struct {
	Name  string `json:"name"`
	Bits  int    `json:"bits"`
	First *int   `json:"firstBit,omitempty"`
	Last  *int   `json:"lastBit,omitempty"`
}

// ExampleReport holds the CIDRs of one location, tenant and segment.
type ExampleReport struct {
	Loc          *plan.Loc    `json:"loc,omitempty"`
	Groups       []GroupCIDR  `json:"groups,omitempty"`
	Host         netip.Prefix `json:"host,omitzero"`
	Tenant       *uint64      `json:"tenant,omitempty"`
	TenantCIDR   netip.Prefix `json:"tenantCidr,omitzero"`
	TenantMatch  *plan.Match  `json:"tenantMatch,omitempty"`
	Segment      *uint64      `json:"segment,omitempty"`
	SegmentCIDR  netip.Prefix `json:"segmentCidr,omitzero"`
	SegmentMatch *plan.Match  `json:"segmentMatch,omitempty"`
	FirstAddress netip.Addr   `json:"firstAddress,omitzero"`
	LastAddress  netip.Addr   `json:"lastAddress,omitzero"`
	Endpoint     *uint64      `json:"endpoint,omitempty"`
	Address      netip.Addr   `json:"address,omitzero"`
}

// GroupCIDR is the CIDR of a topology group.
type GroupCIDR struct {
	Level string       `json:"level"`
	ID    uint64       `json:"id"`
	CIDR  netip.Prefix `json:"cidr"`
}

type exactCapacities struct {
	levels                       []*big.Int
	hosts, segmentsTotal, endpts *big.Int
}

// Example selects what `romana plan` shows CIDRs for. Loc is nil when no
// host was given; Segment needs Tenant, Endpoint needs all three.
type Example struct {
	Loc      *plan.Loc
	Tenant   *uint64
	Segment  *uint64
	Endpoint *uint64
}

// NewPlanReport computes the report of p, with example CIDRs for ex.
func NewPlanReport(p *plan.Plan, ex Example) (PlanReport, error) {
	r := PlanReport{
		Network:     p.Name(),
		CIDR:        p.Prefix().String(),
		Capacity:    p.Capacity(),
		TenantMask:  p.TenantMask(),
		SegmentMask: p.SegmentMask(),
	}
	r.FirstEndpoint, r.LastEndpoint = p.EndpointRange()
	pos := p.Prefix().Bits()
	fieldAt := func(name string, bits, pos int) FieldReport {
		fr := FieldReport{Name: name, Bits: bits}
		if bits > 0 {
			first, last := pos, pos+bits-1
			fr.First, fr.Last = &first, &last
		}
		return fr
	}
	r.Fields = append(r.Fields, fieldAt("prefix", pos, 0))
	hostExp := 0
	for _, f := range p.Fields() {
		r.Fields = append(r.Fields, fieldAt(f.Name, f.Bits, pos))
		pos += f.Bits
	}
	// Exact counts for the table, which may exceed a uint64 in IPv6 plans.
	total := big.NewInt(1)
	for _, l := range p.Levels() {
		total = new(big.Int).Lsh(total, uint(l.Bits))
		r.exact.levels = append(r.exact.levels, total)
		hostExp += l.Bits
	}
	hostExp += p.HostBits()
	r.exact.hosts = new(big.Int).Lsh(big.NewInt(1), uint(hostExp))
	r.exact.segmentsTotal = new(big.Int).Lsh(r.exact.hosts, uint(p.TenantBits()+p.SegmentBits()))
	r.exact.endpts = new(big.Int).Mul(r.exact.segmentsTotal, new(big.Int).SetUint64(p.EndpointsPerSegment()))

	if ex.Segment != nil && ex.Tenant == nil {
		return r, usagef("--segment needs --tenant")
	}
	if ex.Endpoint != nil && (ex.Loc == nil || ex.Segment == nil) {
		return r, usagef("--endpoint needs --host-loc, --tenant and --segment")
	}
	if ex.Loc == nil && ex.Tenant == nil {
		return r, nil
	}
	e := &ExampleReport{Loc: ex.Loc, Tenant: ex.Tenant, Segment: ex.Segment}
	r.Example = e
	if ex.Loc != nil {
		levels := p.Levels()
		if len(ex.Loc.Groups) != len(levels) {
			return r, fmt.Errorf("host location %q: network %q has %d topology level(s) (%s), so give %d group id(s) then the host id, separated by dots",
				ex.Loc, p.Name(), len(levels), levelNames(levels), len(levels))
		}
		for i := range ex.Loc.Groups {
			c, err := p.GroupCIDR(ex.Loc.Groups[:i+1])
			if err != nil {
				return r, err
			}
			e.Groups = append(e.Groups, GroupCIDR{Level: levels[i].Name, ID: ex.Loc.Groups[i], CIDR: c})
		}
		var err error
		if e.Host, err = p.HostCIDR(*ex.Loc); err != nil {
			return r, err
		}
	}
	if ex.Tenant != nil {
		m, err := p.TenantMatch(*ex.Tenant)
		if err != nil {
			return r, err
		}
		e.TenantMatch = &m
		if ex.Loc != nil {
			if e.TenantCIDR, err = p.TenantCIDR(*ex.Loc, *ex.Tenant); err != nil {
				return r, err
			}
		}
	}
	if ex.Segment != nil {
		m, err := p.SegmentMatch(*ex.Tenant, *ex.Segment)
		if err != nil {
			return r, err
		}
		e.SegmentMatch = &m
		if ex.Loc != nil {
			if e.SegmentCIDR, err = p.SegmentCIDR(*ex.Loc, *ex.Tenant, *ex.Segment); err != nil {
				return r, err
			}
			if e.FirstAddress, err = p.Address(*ex.Loc, *ex.Tenant, *ex.Segment, r.FirstEndpoint); err != nil {
				return r, err
			}
			if e.LastAddress, err = p.Address(*ex.Loc, *ex.Tenant, *ex.Segment, r.LastEndpoint); err != nil {
				return r, err
			}
		}
	}
	if ex.Endpoint != nil {
		e.Endpoint = ex.Endpoint
		var err error
		if e.Address, err = p.Address(*ex.Loc, *ex.Tenant, *ex.Segment, *ex.Endpoint); err != nil {
			return r, err
		}
	}
	return r, nil
}

func levelNames(levels []plan.Field) string {
	if len(levels) == 0 {
		return "none"
	}
	n := make([]string, len(levels))
	for i, l := range levels {
		n[i] = l.Name
	}
	return strings.Join(n, ", ")
}

func writePlanHeader(w io.Writer, r PlanReport) {
	family := "IPv4"
	if a, err := netip.ParsePrefix(r.CIDR); err == nil && a.Addr().Is6() {
		family = "IPv6"
	}
	if r.Network == "" {
		fmt.Fprintf(w, "Plan %s (%s)\n", r.CIDR, family)
		return
	}
	fmt.Fprintf(w, "Network %s: %s (%s)\n", r.Network, r.CIDR, family)
}

// writePlanTable renders a report as aligned text.
func writePlanTable(w io.Writer, r PlanReport) {
	writePlanHeader(w, r)
	fmt.Fprintln(w)
	writePlanBody(w, r)
}

func writePlanBody(w io.Writer, r PlanReport) {
	row(w, "FIELD", "BITS", "POSITION", "VALUES")
	for _, f := range r.Fields {
		span := "-"
		if f.First != nil {
			span = fmt.Sprintf("%d-%d", *f.First, *f.Last)
		}
		values := "-"
		if f.Name != "prefix" {
			values = pow2(f.Bits).String()
		} else {
			values = r.CIDR
		}
		row(w, f.Name, f.Bits, span, values)
	}
	fmt.Fprintln(w, "(bit 0 is the most significant bit of the address)")

	c := r.Capacity
	fmt.Fprintf(w, "\nCAPACITY\n")
	parent := ""
	for i, l := range c.Levels {
		if i == 0 {
			row(w, l.Name+" groups", r.exact.levels[i].String())
		} else {
			row(w, l.Name+" groups", fmt.Sprintf("%s (%d per %s)", r.exact.levels[i], l.PerGroup, parent))
		}
		parent = l.Name
	}
	if parent != "" {
		row(w, "hosts per "+parent, c.HostsPerGroup)
	}
	row(w, "hosts", r.exact.hosts.String())
	row(w, "tenants", c.Tenants)
	row(w, "segments per tenant", c.SegmentsPerTenant)
	row(w, "endpoints per segment per host", fmt.Sprintf("%d (index %d to %d)", c.EndpointsPerSegment, r.FirstEndpoint, r.LastEndpoint))
	row(w, "segment blocks", r.exact.segmentsTotal.String())
	row(w, "endpoints", r.exact.endpts.String())

	fmt.Fprintf(w, "\nMATCH MASKS (one rule per tenant or segment, valid on every host)\n")
	row(w, "tenant", r.TenantMask)
	row(w, "segment", r.SegmentMask)

	e := r.Example
	if e == nil {
		return
	}
	fmt.Fprintf(w, "\nEXAMPLE")
	if e.Loc != nil {
		fmt.Fprintf(w, " host %s", e.Loc)
	}
	if e.Tenant != nil {
		fmt.Fprintf(w, " tenant %d", *e.Tenant)
	}
	if e.Segment != nil {
		fmt.Fprintf(w, " segment %d", *e.Segment)
	}
	if e.Endpoint != nil {
		fmt.Fprintf(w, " endpoint %d", *e.Endpoint)
	}
	fmt.Fprintln(w)
	for _, g := range e.Groups {
		row(w, fmt.Sprintf("%s %d", g.Level, g.ID), g.CIDR)
	}
	if e.Host.IsValid() {
		row(w, "host CIDR", e.Host)
	}
	if e.TenantCIDR.IsValid() {
		row(w, "tenant CIDR on the host", e.TenantCIDR)
	}
	if e.SegmentCIDR.IsValid() {
		row(w, "segment CIDR on the host", e.SegmentCIDR)
		row(w, "endpoint addresses", fmt.Sprintf("%s - %s", e.FirstAddress, e.LastAddress))
	}
	if e.Address.IsValid() {
		row(w, fmt.Sprintf("endpoint %d", *e.Endpoint), e.Address)
	}
	if e.TenantMatch != nil {
		row(w, "tenant match (every host)", e.TenantMatch)
	}
	if e.SegmentMatch != nil {
		row(w, "segment match (every host)", e.SegmentMatch)
	}
}

func pow2(bits int) *big.Int { return new(big.Int).Lsh(big.NewInt(1), uint(bits)) }

// parseField parses "name=bits".
func parseField(s string) (plan.Field, error) {
	name, bits, ok := strings.Cut(s, "=")
	if !ok {
		return plan.Field{}, usagef("--field %q: want NAME=BITS, for example host=8", s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(bits))
	if err != nil {
		return plan.Field{}, usagef("--field %q: bits must be a whole number", s)
	}
	return plan.Field{Name: strings.TrimSpace(name), Bits: n}, nil
}

func parseFields(flags []string) ([]plan.Field, error) {
	var out []plan.Field
	for _, s := range flags {
		f, err := parseField(s)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// parseLoc parses a host location "G1.G2.H" (group ids outermost first, then
// the host id), as plan.Loc prints it.
func parseLoc(s string) (plan.Loc, error) {
	parts := strings.Split(s, ".")
	ids := make([]uint64, len(parts))
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return plan.Loc{}, usagef("--host-loc %q: want dot-separated ids, group ids first, for example 5 or 2.17", s)
		}
		ids[i] = v
	}
	l := plan.Loc{Host: ids[len(ids)-1]}
	if len(ids) > 1 {
		l.Groups = ids[:len(ids)-1]
	}
	return l, nil
}

// readNetworkFile reads a network (or plan) spec in JSON or YAML:
// {name, cidr, fields: [{name, bits}], tenants}.
func readNetworkFile(cmd *cobra.Command, path string) (api.Network, error) {
	b, err := readInput(cmd, path)
	if err != nil {
		return api.Network{}, err
	}
	var n api.Network
	if err := decodeStrict(path, b, &n); err != nil {
		return api.Network{}, err
	}
	return n, nil
}

func newPlanCmd(g *Globals) *cobra.Command {
	var (
		file, cidr, name, network string
		fieldFlags                []string
		hostLoc                   string
		tenant, segment, endpoint uint64
	)
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show an address layout's fields, bit positions and capacities",
		Long: `Show what an address layout gives: each field's bits and position, how many
groups, hosts, tenants, segments and endpoints it holds, and the masks that
match a tenant or segment on every host.

The layout comes from exactly one of:
  -f FILE          a plan file (JSON or YAML: name, cidr, fields), offline
  --cidr/--field   flags, offline
  --network NAME   a network of romanad (--server)

With --host-loc, --tenant, --segment and --endpoint (numeric ids) it also
prints example CIDRs: the host's groups, the host, the tenant on it, the
segment of the tenant, its endpoint addresses, one endpoint's address, and the
tenant and segment matches.
A host location is the group ids, outermost first, then the host id,
separated by dots: "7" without topology levels, "2.7" with a rack level.`,
		Example: `  # The product page's worked example
  romana plan --cidr 10.0.0.0/8 --field host=8 --field tenant=8 --field segment=4 \
      --host-loc 1 --tenant 1 --segment 1 --endpoint 11

  # A plan file with a rack level
  cat > plan.yaml <<EOF
  name: dc1
  cidr: 10.0.0.0/8
  fields:
  - {name: rack, bits: 4}
  - {name: host, bits: 6}
  - {name: tenant, bits: 6}
  - {name: segment, bits: 4}
  EOF
  romana plan -f plan.yaml --host-loc 2.3 --tenant 5

  # A network defined on the server, as JSON
  romana plan --network main -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sources := 0
			for _, set := range []bool{file != "", cidr != "" || len(fieldFlags) > 0, network != ""} {
				if set {
					sources++
				}
			}
			if sources != 1 {
				return usagef("give the layout with exactly one of -f FILE, --cidr with --field, or --network NAME")
			}
			var spec plan.Spec
			switch {
			case file != "":
				n, err := readNetworkFile(cmd, file)
				if err != nil {
					return err
				}
				spec = n.Spec()
			case network != "":
				c, err := g.Client()
				if err != nil {
					return err
				}
				ctx, cancel := g.Context(cmd)
				defer cancel()
				n, err := c.GetNetwork(ctx, network)
				if err != nil {
					return err
				}
				spec = n.Spec()
			default:
				if cidr == "" {
					return usagef("--field needs --cidr")
				}
				if _, err := parsePrefixFlag("--cidr", cidr); err != nil {
					return err
				}
				fs, err := parseFields(fieldFlags)
				if err != nil {
					return err
				}
				spec = plan.Spec{Name: name, CIDR: cidr, Fields: fs}
			}
			if name != "" {
				spec.Name = name
			}
			p, err := plan.Parse(spec)
			if err != nil {
				if spec.Name == "" {
					return errors.New(strings.TrimPrefix(err.Error(), `network "": `))
				}
				return err
			}
			var ex Example
			if hostLoc != "" {
				l, err := parseLoc(hostLoc)
				if err != nil {
					return err
				}
				ex.Loc = &l
			}
			if cmd.Flags().Changed("tenant") {
				ex.Tenant = &tenant
			}
			if cmd.Flags().Changed("segment") {
				ex.Segment = &segment
			}
			if cmd.Flags().Changed("endpoint") {
				ex.Endpoint = &endpoint
			}
			r, err := NewPlanReport(p, ex)
			if err != nil {
				return err
			}
			return g.Emit(cmd, r, func(w io.Writer) { writePlanTable(w, r) })
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "plan file, JSON or YAML (- for stdin)")
	f.StringVar(&cidr, "cidr", "", "pool CIDR, e.g. 10.0.0.0/8 or fd00::/48")
	f.StringArrayVar(&fieldFlags, "field", nil, "field NAME=BITS, repeated in order: topology levels, then host, tenant, segment")
	f.StringVar(&name, "name", "", "name to show for the plan")
	f.StringVar(&network, "network", "", "use this network from romanad")
	f.StringVar(&hostLoc, "host-loc", "", "example host location: group ids then host id, dot-separated (e.g. 2.3)")
	f.Uint64Var(&tenant, "tenant", 0, "example tenant id")
	f.Uint64Var(&segment, "segment", 0, "example segment id (needs --tenant)")
	f.Uint64Var(&endpoint, "endpoint", 0, "example endpoint index in the segment (needs --host-loc, --tenant, --segment)")
	return cmd
}
