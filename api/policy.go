package api

// Policy directions, actions and protocols.
const (
	DirectionIngress = "ingress"
	DirectionEgress  = "egress"
	ActionAllow      = "allow"
	ActionDeny       = "deny"
	// ActionPass ends the evaluation of the policy's tier for the packet
	// and goes on with the next tier (Kubernetes' ClusterNetworkPolicy
	// "Pass"); in the last tier it goes on to tenant isolation.
	ActionPass = "pass"
	ProtoTCP   = "tcp"
	ProtoUDP   = "udp"
	ProtoSCTP  = "sctp"
	ProtoICMP  = "icmp"
	ProtoAny   = "any"
)

// Policy tiers, in evaluation order. TierAdmin policies come before every
// policy of the default tier (""), which holds Romana's own policies and
// Kubernetes NetworkPolicies; TierBaseline policies come after them, right
// before tenant isolation.
const (
	TierAdmin    = "admin"
	TierDefault  = ""
	TierBaseline = "baseline"
)

// TierRank is a tier's position in evaluation order (admin 0, default 1,
// baseline 2); an unknown tier (which validation rejects) ranks after
// them all.
func TierRank(tier string) int {
	switch tier {
	case TierAdmin:
		return 0
	case TierDefault:
		return 1
	case TierBaseline:
		return 2
	}
	return 3
}

// DefaultPriority is a policy's priority when none is given. Priorities
// range over 1..65535; 0 (or absent) means DefaultPriority.
const DefaultPriority = 1000

// Policy opens (or closes) traffic beyond tenant isolation. Policies are
// evaluated by Tier (admin, default, baseline), then in ascending Priority,
// ties broken by Name; within a policy rules
// are evaluated in order; the first rule that matches decides. Traffic no
// rule matches falls to the tenant isolation default.
type Policy struct {
	Name        string     `json:"name"`
	Description string     `json:"description,omitempty"`
	Priority    int        `json:"priority,omitempty"`
	Tier        string     `json:"tier,omitempty"`
	Direction   []string   `json:"direction"` // "ingress", "egress", or both
	AppliedTo   []Selector `json:"appliedTo"`
	Rules       []Rule     `json:"rules"`
	// Log asks agents to log packets dropped by this policy's deny rules,
	// rate-limited, with the prefix "romana:<name>:".
	Log bool `json:"log,omitempty"`
}

// Selector picks the endpoints a policy applies to: exactly one of All,
// Tenant (optionally with Segment), or Host; Set, when given, narrows the
// selection to the addresses of that AddressSet (with All or Tenant, or
// alone: the set's addresses wherever they are).
type Selector struct {
	All     bool   `json:"all,omitempty"`
	Tenant  string `json:"tenant,omitempty"`
	Segment string `json:"segment,omitempty"`
	Host    string `json:"host,omitempty"`
	Set     string `json:"set,omitempty"`
}

// Peer is the other side of a connection: exactly one of Any, CIDR (with
// optional Except), Tenant (optionally with Segment), Host, or Set (the
// addresses of an AddressSet).
type Peer struct {
	Any     bool     `json:"any,omitempty"`
	CIDR    string   `json:"cidr,omitempty"`
	Except  []string `json:"except,omitempty"`
	Tenant  string   `json:"tenant,omitempty"`
	Segment string   `json:"segment,omitempty"`
	Host    string   `json:"host,omitempty"`
	Set     string   `json:"set,omitempty"`
}

// Rule matches traffic to or from its peers (any peer when empty) and
// decides with Action (allow when empty).
type Rule struct {
	Action     string   `json:"action,omitempty"`
	Peers      []Peer   `json:"peers,omitempty"`
	Protocol   string   `json:"protocol,omitempty"`
	Ports      []uint16 `json:"ports,omitempty"`
	PortRanges []string `json:"portRanges,omitempty"` // "8000-8080"
	ICMPType   *uint8   `json:"icmpType,omitempty"`
	ICMPCode   *uint8   `json:"icmpCode,omitempty"`
}
