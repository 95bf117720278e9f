package netpol

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/romana/romana/api"
)

// portSpec is one port match of a Kubernetes rule: all ports of a
// protocol, a number, a range, or a named container port.
type portSpec struct {
	proto      string // Romana protocol; "" for a named port of any protocol
	all        bool
	port       uint16
	lo, hi     uint16 // a range when hi != 0
	named      string
	namedProto corev1.Protocol // "" when the named port may be of any protocol
}

// peerSpec is one peer of a Kubernetes rule: fixed Romana peers (CIDRs,
// node addresses), or a group of pods.
type peerSpec struct {
	fixed []api.Peer
	g     *group
}

// resolver resolves a named port on the policy's targets (ingress); nil
// when named ports are resolved on the peers (egress).
type resolver func(name string, proto corev1.Protocol) (corev1.Protocol, int32, bool)

var protoOrder = []string{api.ProtoTCP, api.ProtoUDP, api.ProtoSCTP}

// rules compiles one Kubernetes rule (its peers, any peer when anyPeer,
// and its ports, all when empty) into Romana rules with one action. A rule
// whose peers or ports all compile to nothing yields no rule: it never
// becomes a rule without peers or ports, which would match everything.
func (w *world) rules(action string, anyPeer bool, peers []peerSpec, ports []portSpec, res resolver) []api.Rule {
	var rp []api.Peer
	if !anyPeer {
		for _, p := range peers {
			rp = append(rp, p.fixed...)
			if p.g != nil {
				for _, x := range w.parts(*p.g, true) {
					rp = append(rp, x.peer())
				}
			}
		}
		if len(rp) == 0 {
			return nil
		}
	}
	if len(ports) == 0 {
		return []api.Rule{{Action: action, Peers: rp, Protocol: api.ProtoAny}}
	}
	type acc struct {
		all    bool
		ports  []uint16
		ranges [][2]uint16
	}
	by := map[string]*acc{}
	get := func(p string) *acc {
		if by[p] == nil {
			by[p] = &acc{}
		}
		return by[p]
	}
	var named []api.Rule
	for _, ps := range ports {
		switch {
		case ps.named != "" && res != nil:
			pr, n, ok := res(ps.named, ps.namedProto)
			if !ok {
				continue
			}
			if rpr, ok := romanaProto(pr); ok && n >= 1 && n <= 65535 {
				get(rpr).ports = append(get(rpr).ports, uint16(n))
			}
		case ps.named != "":
			named = append(named, w.namedPeerRules(action, anyPeer, peers, ps)...)
		case ps.all:
			get(ps.proto).all = true
		case ps.hi != 0:
			a := get(ps.proto)
			a.ranges = append(a.ranges, [2]uint16{ps.lo, ps.hi})
		default:
			a := get(ps.proto)
			a.ports = append(a.ports, ps.port)
		}
	}
	var out []api.Rule
	for _, p := range protoOrder {
		a := by[p]
		if a == nil {
			continue
		}
		r := api.Rule{Action: action, Peers: rp, Protocol: p}
		if !a.all {
			slices.Sort(a.ports)
			r.Ports = slices.Compact(a.ports)
			slices.SortFunc(a.ranges, func(x, y [2]uint16) int {
				return cmp.Or(cmp.Compare(x[0], y[0]), cmp.Compare(x[1], y[1]))
			})
			for _, rg := range slices.Compact(a.ranges) {
				r.PortRanges = append(r.PortRanges, fmt.Sprintf("%d-%d", rg[0], rg[1]))
			}
		}
		out = append(out, r)
	}
	return append(out, named...)
}

// namedPeerRules compiles a named port resolved on the peers (egress): per
// port number, one rule whose peer is the set of the peer pods that have
// the named port with that number. CIDR and node peers have no named
// ports and match nothing here.
func (w *world) namedPeerRules(action string, anyPeer bool, peers []peerSpec, ps portSpec) []api.Rule {
	groups := []group{}
	if anyPeer {
		groups = append(groups, group{nss: everything(), pods: everything()})
	}
	for _, p := range peers {
		if p.g != nil {
			groups = append(groups, *p.g)
		}
	}
	type num struct {
		proto string
		n     int32
	}
	byNum := map[num][]*pod{}
	gkeys := ""
	for _, g := range groups {
		gkeys += g.key() + ";"
	}
	for _, g := range groups {
		for _, p := range w.members(g) {
			pr, n, ok := resolvePort(p, ps.named, ps.namedProto)
			rpr, ok2 := romanaProto(pr)
			if !ok || !ok2 || n < 1 || n > 65535 {
				continue
			}
			k := num{rpr, n}
			byNum[k] = append(byNum[k], p)
		}
	}
	nums := make([]num, 0, len(byNum))
	for k := range byNum {
		nums = append(nums, k)
	}
	slices.SortFunc(nums, func(a, b num) int { return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.n, b.n)) })
	var out []api.Rule
	for _, k := range nums {
		key := "named:" + ps.named + "/" + string(ps.namedProto) + "=" + k.proto + "/" + strconv.Itoa(int(k.n)) + "|" + gkeys
		set := w.podsSet(key, byNum[k])
		out = append(out, api.Rule{Action: action, Peers: []api.Peer{{Set: set}}, Protocol: k.proto, Ports: []uint16{uint16(k.n)}})
	}
	return out
}

func everything() sel { s, _ := (&world{}).parseSel(nil); return s }

// namedPorts lists the named ports of specs (for target-side resolution).
func namedPorts(specs ...[]portSpec) []portSpec {
	var out []portSpec
	for _, ss := range specs {
		for _, s := range ss {
			if s.named != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// targetGroups splits the targets' pods by how they resolve the named
// ports (their signature). It returns the signatures in order with their
// pods; with no named ports, or no pods, one group with signature "".
func targetGroups(pods []*pod, named []portSpec) ([]string, map[string][]*pod) {
	by := map[string][]*pod{}
	for _, p := range pods {
		sig := ""
		for _, n := range named {
			pr, num, ok := resolvePort(p, n.named, n.namedProto)
			if ok {
				sig += fmt.Sprintf("%s/%s=%s/%d;", n.named, n.namedProto, pr, num)
			} else {
				sig += n.named + "/" + string(n.namedProto) + "=none;"
			}
		}
		by[sig] = append(by[sig], p)
	}
	if len(by) == 0 {
		by[""] = nil
	}
	sigs := make([]string, 0, len(by))
	for s := range by {
		sigs = append(sigs, s)
	}
	slices.Sort(sigs)
	return sigs, by
}

// podResolver resolves named ports as pod p does (any pod of a target
// group resolves them alike); nil p resolves nothing.
func podResolver(p *pod) resolver {
	return func(name string, proto corev1.Protocol) (corev1.Protocol, int32, bool) {
		if p == nil {
			return "", 0, false
		}
		return resolvePort(p, name, proto)
	}
}
