package api

import (
	"net/netip"
	"time"
)

// TraceRequest is a connection's first packet for GET /v1/policy/trace
// (query parameters from, to, proto, port, icmpType, icmpCode).
type TraceRequest struct {
	From     netip.Addr `json:"from"`
	To       netip.Addr `json:"to"`
	Proto    string     `json:"proto"` // tcp, udp, sctp or icmp
	Port     uint16     `json:"port,omitempty"`
	ICMPType uint8      `json:"icmpType,omitempty"`
	ICMPCode uint8      `json:"icmpCode,omitempty"`
}

// TraceStep is one enforcement point a packet passes: the egress stage on
// the source's host, the ingress stage and tenant isolation on the
// destination's host.
type TraceStep struct {
	Host    string `json:"host"`
	Stage   string `json:"stage"`  // egress, ingress or isolation
	Result  string `json:"result"` // allow, deny or pass (no rule matched)
	Policy  string `json:"policy,omitempty"`
	Rule    *int   `json:"rule,omitempty"` // index in the policy's rules
	Reason  string `json:"reason"`
	RuleNFT string `json:"nft,omitempty"` // the deciding nft rule
}

// Trace answers whether a new connection is allowed and what decided.
type Trace struct {
	Request  TraceRequest `json:"request"`
	Verdict  string       `json:"verdict"` // allow or deny
	Decision TraceStep    `json:"decision"`
	Steps    []TraceStep  `json:"steps"`
}

// RuleCounter is one compiled policy rule's counters on one host.
type RuleCounter struct {
	Policy  string `json:"policy"`
	Rule    int    `json:"rule"`
	Stage   string `json:"stage"` // egress or ingress
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// HostPolicyStats is what an agent reports (PUT /v1/policy/stats/{host}):
// its policy rules' counters, summed per policy, rule and stage.
type HostPolicyStats struct {
	Host     string        `json:"host"`
	Time     time.Time     `json:"time"`
	Counters []RuleCounter `json:"counters"`
}
