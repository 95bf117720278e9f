// Package plan is the pure address math of a Romana network: it places
// topology, host, tenant, segment and endpoint identifiers into bit fields of
// an IPv4 or IPv6 pool and computes CIDRs, masked matches and decodings.
package plan

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Names of the fields every layout has, in this order, after any topology levels.
const (
	FieldHost    = "host"
	FieldTenant  = "tenant"
	FieldSegment = "segment"
)

// Limits on field widths. Identifier fields are 32 bits at most so that ids
// fit in JSON numbers everywhere; endpoint indexes fit in a uint64.
const (
	MaxIDBits       = 32
	MaxEndpointBits = 64
)

// Field is one named bit field of a layout.
type Field struct {
	Name string `json:"name"`
	Bits int    `json:"bits"`
}

// Spec is the user-facing description of a plan: a pool CIDR and the ordered
// fields below its prefix. Endpoint bits are whatever remains.
type Spec struct {
	Name   string  `json:"name"`
	CIDR   string  `json:"cidr"`
	Fields []Field `json:"fields"`
}

// Plan is a validated, immutable address layout. It is safe for concurrent use.
type Plan struct {
	name         string
	prefix       netip.Prefix
	levels       []Field // topology levels, outermost first
	hostBits     int
	tenantBits   int
	segmentBits  int
	endpointBits int
	width        int // 32 or 128
}

// Loc is a host's position in a plan: one id per topology level, outermost
// first, then the host's id within its innermost group.
type Loc struct {
	Groups []uint64 `json:"groups,omitempty"`
	Host   uint64   `json:"host"`
}

func (l Loc) String() string {
	var b strings.Builder
	for _, g := range l.Groups {
		fmt.Fprintf(&b, "%d.", g)
	}
	fmt.Fprintf(&b, "%d", l.Host)
	return b.String()
}

// Match is a (value, mask) pair: an address a matches when a&Mask == Value.
// The mask need not be contiguous: a tenant match ignores the host bits.
type Match struct {
	Value netip.Addr `json:"value"`
	Mask  netip.Addr `json:"mask"`
}

// Contains reports whether a matches.
func (m Match) Contains(a netip.Addr) bool {
	if a.Is4() != m.Value.Is4() {
		return false
	}
	return fromAddr(a).and(fromAddr(m.Mask)) == fromAddr(m.Value)
}

func (m Match) String() string { return m.Value.String() + "/" + m.Mask.String() }

// Decoded is an address taken apart into its fields.
type Decoded struct {
	Network  string `json:"network"`
	Loc      Loc    `json:"loc"`
	Tenant   uint64 `json:"tenant"`
	Segment  uint64 `json:"segment"`
	Endpoint uint64 `json:"endpoint"`
}

var fieldName = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$`)

// Parse validates a Spec and builds its Plan.
func Parse(s Spec) (*Plan, error) {
	pfx, err := ParsePrefix(s.CIDR)
	if err != nil {
		return nil, fmt.Errorf("network %q: cidr %q: %w", s.Name, s.CIDR, err)
	}
	return New(s.Name, pfx, s.Fields)
}

// ParsePrefix parses a CIDR such as 10.0.0.0/8 or fd00::/48, with errors
// that say what is wrong in a user's terms (netip.ParsePrefix's name the
// function and repeat the input).
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	addr, bits, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, errors.New("want ADDRESS/LENGTH, for example 10.0.0.0/8")
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address (%s)", addr, AddrReason(err))
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n < 0 || n > a.BitLen() {
		family := "IPv4"
		if a.Is6() {
			family = "IPv6"
		}
		return netip.Prefix{}, fmt.Errorf("prefix length %q: want a whole number from 0 to %d for %s", bits, a.BitLen(), family)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, errors.New(AddrReason(err))
	}
	return p, nil
}

// AddrReason is the reason of a net/netip parse error without the function
// name and the input it repeats: for netip.ParseAddr("1.2.3")'s error,
// "IPv4 address too short".
func AddrReason(err error) string {
	msg := err.Error()
	for _, fn := range []string{"netip.ParsePrefix(", "netip.ParseAddr(", "ParseAddr(", "ParsePrefix("} {
		if strings.HasPrefix(msg, fn) {
			if _, rest, ok := strings.Cut(msg, "): "); ok {
				return rest
			}
		}
	}
	return msg
}

// New validates a layout and builds its Plan.
func New(name string, pfx netip.Prefix, fields []Field) (*Plan, error) {
	if !pfx.IsValid() {
		return nil, fmt.Errorf("network %q: invalid cidr", name)
	}
	if pfx.Addr().Is4In6() || pfx.Addr().Zone() != "" {
		return nil, fmt.Errorf("network %q: cidr %s: use a plain IPv4 or IPv6 prefix", name, pfx)
	}
	if pfx.Masked() != pfx {
		return nil, fmt.Errorf("network %q: cidr %s has bits set below the prefix length; did you mean %s?", name, pfx, pfx.Masked())
	}
	p := &Plan{name: name, prefix: pfx, width: pfx.Addr().BitLen()}
	if len(fields) < 3 {
		return nil, fmt.Errorf("network %q: layout needs at least the fields host, tenant, segment (in that order), got %d field(s)", name, len(fields))
	}
	seen := map[string]bool{}
	used := 0
	for i, f := range fields {
		if !fieldName.MatchString(f.Name) {
			return nil, fmt.Errorf("network %q: field %d: invalid name %q (lowercase letters, digits and '-', starting with a letter)", name, i, f.Name)
		}
		if seen[f.Name] {
			return nil, fmt.Errorf("network %q: field %q appears twice", name, f.Name)
		}
		seen[f.Name] = true
		if f.Bits < 0 || f.Bits > MaxIDBits {
			return nil, fmt.Errorf("network %q: field %q has %d bits; each field takes 0 to %d bits", name, f.Name, f.Bits, MaxIDBits)
		}
		used += f.Bits
		n := len(fields)
		switch i {
		case n - 3:
			if f.Name != FieldHost {
				return nil, fmt.Errorf("network %q: field %d is %q, expected %q: the layout ends with host, tenant, segment", name, i, f.Name, FieldHost)
			}
			p.hostBits = f.Bits
		case n - 2:
			if f.Name != FieldTenant {
				return nil, fmt.Errorf("network %q: field %d is %q, expected %q: the layout ends with host, tenant, segment", name, i, f.Name, FieldTenant)
			}
			p.tenantBits = f.Bits
		case n - 1:
			if f.Name != FieldSegment {
				return nil, fmt.Errorf("network %q: field %d is %q, expected %q: the layout ends with host, tenant, segment", name, i, f.Name, FieldSegment)
			}
			p.segmentBits = f.Bits
		default:
			if f.Name == FieldHost || f.Name == FieldTenant || f.Name == FieldSegment {
				return nil, fmt.Errorf("network %q: field %q must come after the topology levels, in the order host, tenant, segment", name, f.Name)
			}
			if f.Bits == 0 {
				return nil, fmt.Errorf("network %q: topology level %q has 0 bits; a level needs at least 1", name, f.Name)
			}
			p.levels = append(p.levels, f)
		}
	}
	avail := p.width - pfx.Bits()
	if used > avail {
		return nil, fmt.Errorf("network %q: fields need %d bits but %s leaves only %d", name, used, pfx, avail)
	}
	if used == avail {
		return nil, fmt.Errorf("network %q: fields need %d bits but %s leaves %d: no bits remain for endpoints", name, used, pfx, avail)
	}
	p.endpointBits = avail - used
	if p.endpointBits > MaxEndpointBits {
		return nil, fmt.Errorf("network %q: %d endpoint bits remain; at most %d are supported (widen the other fields or lengthen the prefix)", name, p.endpointBits, MaxEndpointBits)
	}
	return p, nil
}

// Name returns the network's name.
func (p *Plan) Name() string { return p.name }

// Prefix returns the pool.
func (p *Plan) Prefix() netip.Prefix { return p.prefix }

// Is4 reports whether the pool is IPv4.
func (p *Plan) Is4() bool { return p.width == 32 }

// Levels returns the topology levels, outermost first.
func (p *Plan) Levels() []Field { return append([]Field(nil), p.levels...) }

// Fields returns the full layout, endpoint bits last.
func (p *Plan) Fields() []Field {
	f := p.Levels()
	return append(f, Field{FieldHost, p.hostBits}, Field{FieldTenant, p.tenantBits},
		Field{FieldSegment, p.segmentBits}, Field{"endpoint", p.endpointBits})
}

// Spec returns the plan as a Spec that Parse accepts.
func (p *Plan) Spec() Spec {
	f := p.Fields()
	return Spec{Name: p.name, CIDR: p.prefix.String(), Fields: f[:len(f)-1]}
}

// HostBits, TenantBits, SegmentBits and EndpointBits return field widths.
func (p *Plan) HostBits() int     { return p.hostBits }
func (p *Plan) TenantBits() int   { return p.tenantBits }
func (p *Plan) SegmentBits() int  { return p.segmentBits }
func (p *Plan) EndpointBits() int { return p.endpointBits }

// shift of the lowest bit of each field, counted from the address's LSB.
func (p *Plan) segmentShift() int { return p.endpointBits }
func (p *Plan) tenantShift() int  { return p.endpointBits + p.segmentBits }
func (p *Plan) hostShift() int    { return p.tenantShift() + p.tenantBits }
func (p *Plan) levelShift(i int) int {
	s := p.hostShift() + p.hostBits
	for j := len(p.levels) - 1; j > i; j-- {
		s += p.levels[j].Bits
	}
	return s
}

// MaxID returns the largest id a field of width bits can hold.
func MaxID(bits int) uint64 {
	if bits >= 64 {
		return ^uint64(0)
	}
	return 1<<bits - 1
}

func checkID(what string, v uint64, bits int) error {
	if v > MaxID(bits) {
		return fmt.Errorf("%s %d does not fit in %d bits (max %d)", what, v, bits, MaxID(bits))
	}
	return nil
}

func (p *Plan) base() u128 { return fromAddr(p.prefix.Addr()) }

func (p *Plan) prefixOf(v u128, length int) netip.Prefix {
	return netip.PrefixFrom(v.addr(p.Is4()), length)
}

// ErrLoc is wrapped by errors about a Loc that does not fit the plan.
var ErrLoc = errors.New("location does not fit the plan")

func (p *Plan) groupsValue(groups []uint64) (u128, error) {
	if len(groups) > len(p.levels) {
		return u128{}, fmt.Errorf("%w: %d group ids for %d topology levels", ErrLoc, len(groups), len(p.levels))
	}
	v := p.base()
	for i, g := range groups {
		if err := checkID(p.levels[i].Name, g, p.levels[i].Bits); err != nil {
			return u128{}, fmt.Errorf("%w: %v", ErrLoc, err)
		}
		v = v.or(u128{lo: g}.shl(p.levelShift(i)))
	}
	return v, nil
}

func (p *Plan) groupsLen(n int) int {
	l := p.prefix.Bits()
	for i := 0; i < n; i++ {
		l += p.levels[i].Bits
	}
	return l
}

// GroupCIDR returns the CIDR of a topology group given the ids of it and its
// ancestors (outermost first). An empty path is the whole pool.
func (p *Plan) GroupCIDR(groups []uint64) (netip.Prefix, error) {
	v, err := p.groupsValue(groups)
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.prefixOf(v, p.groupsLen(len(groups))), nil
}

func (p *Plan) hostValue(l Loc) (u128, error) {
	if len(l.Groups) != len(p.levels) {
		return u128{}, fmt.Errorf("%w: %d group ids for %d topology levels", ErrLoc, len(l.Groups), len(p.levels))
	}
	v, err := p.groupsValue(l.Groups)
	if err != nil {
		return u128{}, err
	}
	if err := checkID("host", l.Host, p.hostBits); err != nil {
		return u128{}, fmt.Errorf("%w: %v", ErrLoc, err)
	}
	return v.or(u128{lo: l.Host}.shl(p.hostShift())), nil
}

func (p *Plan) hostLen() int    { return p.groupsLen(len(p.levels)) + p.hostBits }
func (p *Plan) tenantLen() int  { return p.hostLen() + p.tenantBits }
func (p *Plan) segmentLen() int { return p.tenantLen() + p.segmentBits }

// HostCIDR returns the block every address on the host at l falls in.
func (p *Plan) HostCIDR(l Loc) (netip.Prefix, error) {
	v, err := p.hostValue(l)
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.prefixOf(v, p.hostLen()), nil
}

func (p *Plan) tenantValue(l Loc, tenant uint64) (u128, error) {
	v, err := p.hostValue(l)
	if err != nil {
		return u128{}, err
	}
	if err := checkID("tenant", tenant, p.tenantBits); err != nil {
		return u128{}, err
	}
	return v.or(u128{lo: tenant}.shl(p.tenantShift())), nil
}

// TenantCIDR returns the block of a tenant on one host.
func (p *Plan) TenantCIDR(l Loc, tenant uint64) (netip.Prefix, error) {
	v, err := p.tenantValue(l, tenant)
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.prefixOf(v, p.tenantLen()), nil
}

func (p *Plan) segmentValue(l Loc, tenant, segment uint64) (u128, error) {
	v, err := p.tenantValue(l, tenant)
	if err != nil {
		return u128{}, err
	}
	if err := checkID("segment", segment, p.segmentBits); err != nil {
		return u128{}, err
	}
	return v.or(u128{lo: segment}.shl(p.segmentShift())), nil
}

// SegmentCIDR returns the block of one segment of a tenant on one host.
func (p *Plan) SegmentCIDR(l Loc, tenant, segment uint64) (netip.Prefix, error) {
	v, err := p.segmentValue(l, tenant, segment)
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.prefixOf(v, p.segmentLen()), nil
}

// Address returns endpoint ep of a segment on a host. Any endpoint index that
// fits is accepted; EndpointRange says which ones the allocator hands out.
func (p *Plan) Address(l Loc, tenant, segment, ep uint64) (netip.Addr, error) {
	v, err := p.segmentValue(l, tenant, segment)
	if err != nil {
		return netip.Addr{}, err
	}
	if err := checkID("endpoint", ep, p.endpointBits); err != nil {
		return netip.Addr{}, err
	}
	return v.or(u128{lo: ep}).addr(p.Is4()), nil
}

// EndpointRange returns the first and last endpoint index handed out in a
// segment block. With two or more endpoint bits the first (all zeros) and the
// last (all ones) are reserved, as network and broadcast-like addresses.
func (p *Plan) EndpointRange() (first, last uint64) {
	max := MaxID(p.endpointBits)
	if p.endpointBits >= 2 {
		return 1, max - 1
	}
	return 0, max
}

// EndpointsPerSegment is how many addresses one segment block hands out.
func (p *Plan) EndpointsPerSegment() uint64 {
	f, l := p.EndpointRange()
	return l - f + 1
}

// idMask returns the mask covering the pool prefix and the tenant (and, if
// withSegment, the segment) bits, but not the topology, host or endpoint bits.
func (p *Plan) idMask(withSegment bool) u128 {
	m := ones(p.prefix.Bits()).shl(p.width - p.prefix.Bits())
	m = m.or(field(p.tenantBits, p.tenantShift()))
	if withSegment {
		m = m.or(field(p.segmentBits, p.segmentShift()))
	}
	return m
}

// TenantMatch returns the match for every address of a tenant on every host.
func (p *Plan) TenantMatch(tenant uint64) (Match, error) {
	if err := checkID("tenant", tenant, p.tenantBits); err != nil {
		return Match{}, err
	}
	v := p.base().or(u128{lo: tenant}.shl(p.tenantShift()))
	return Match{Value: v.addr(p.Is4()), Mask: p.idMask(false).addr(p.Is4())}, nil
}

// SegmentMatch returns the match for every address of a tenant's segment on every host.
func (p *Plan) SegmentMatch(tenant, segment uint64) (Match, error) {
	if err := checkID("tenant", tenant, p.tenantBits); err != nil {
		return Match{}, err
	}
	if err := checkID("segment", segment, p.segmentBits); err != nil {
		return Match{}, err
	}
	v := p.base().or(u128{lo: tenant}.shl(p.tenantShift())).or(u128{lo: segment}.shl(p.segmentShift()))
	return Match{Value: v.addr(p.Is4()), Mask: p.idMask(true).addr(p.Is4())}, nil
}

// TenantMask and SegmentMask return the masks of TenantMatch and SegmentMatch.
func (p *Plan) TenantMask() netip.Addr  { return p.idMask(false).addr(p.Is4()) }
func (p *Plan) SegmentMask() netip.Addr { return p.idMask(true).addr(p.Is4()) }

// Decode takes an address of the pool apart into its fields.
func (p *Plan) Decode(a netip.Addr) (Decoded, error) {
	a = a.Unmap()
	if !p.prefix.Contains(a) {
		return Decoded{}, fmt.Errorf("address %s is not in network %q (%s)", a, p.name, p.prefix)
	}
	v := fromAddr(a)
	get := func(bits, shift int) uint64 { return v.shr(shift).and(ones(bits)).lo }
	d := Decoded{Network: p.name}
	for i, l := range p.levels {
		d.Loc.Groups = append(d.Loc.Groups, get(l.Bits, p.levelShift(i)))
	}
	d.Loc.Host = get(p.hostBits, p.hostShift())
	d.Tenant = get(p.tenantBits, p.tenantShift())
	d.Segment = get(p.segmentBits, p.segmentShift())
	d.Endpoint = get(p.endpointBits, 0)
	return d, nil
}

// Overlaps reports whether two plans' pools share any address.
func (p *Plan) Overlaps(q *Plan) bool { return p.prefix.Overlaps(q.prefix) }

// Capacity counts what a plan can hold. Counts that exceed a uint64 saturate.
type Capacity struct {
	Levels              []LevelCapacity `json:"levels,omitempty"`
	HostsPerGroup       uint64          `json:"hostsPerGroup"`
	Hosts               uint64          `json:"hosts"`
	Tenants             uint64          `json:"tenants"`
	SegmentsPerTenant   uint64          `json:"segmentsPerTenant"`
	EndpointsPerSegment uint64          `json:"endpointsPerSegmentPerHost"`
	Endpoints           uint64          `json:"endpoints"`
}

// LevelCapacity is how many groups one topology level has per parent group.
type LevelCapacity struct {
	Name     string `json:"name"`
	PerGroup uint64 `json:"perParent"`
	Total    uint64 `json:"total"`
}

func satMul(a, b uint64) uint64 {
	if a != 0 && b > ^uint64(0)/a {
		return ^uint64(0)
	}
	return a * b
}

func count(bits int) uint64 {
	if bits >= 64 {
		return ^uint64(0)
	}
	return 1 << bits
}

// Capacity returns the plan's capacities.
func (p *Plan) Capacity() Capacity {
	var c Capacity
	total := uint64(1)
	for _, l := range p.levels {
		total = satMul(total, count(l.Bits))
		c.Levels = append(c.Levels, LevelCapacity{Name: l.Name, PerGroup: count(l.Bits), Total: total})
	}
	c.HostsPerGroup = count(p.hostBits)
	c.Hosts = satMul(total, c.HostsPerGroup)
	c.Tenants = count(p.tenantBits)
	c.SegmentsPerTenant = count(p.segmentBits)
	c.EndpointsPerSegment = p.EndpointsPerSegment()
	c.Endpoints = satMul(satMul(satMul(c.Hosts, c.Tenants), c.SegmentsPerTenant), c.EndpointsPerSegment)
	return c
}

// String describes the layout, e.g. "10.0.0.0/8: host 8 | tenant 8 | segment 4 | endpoint 4".
func (p *Plan) String() string {
	parts := make([]string, 0, len(p.levels)+4)
	for _, f := range p.Fields() {
		parts = append(parts, fmt.Sprintf("%s %d", f.Name, f.Bits))
	}
	return p.prefix.String() + ": " + strings.Join(parts, " | ")
}
