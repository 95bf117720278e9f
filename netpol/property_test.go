package netpol

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/romana/romana/api"
	"github.com/romana/romana/policy"
)

// randomState builds a random cluster: namespaces, pods with labels and
// named ports, NetworkPolicies and ClusterNetworkPolicies drawing on a
// small vocabulary (so that selectors match something), including a few
// things Compile must report (bad operators, unknown protocols).
func randomState(r *rand.Rand) *cluster {
	c := newCluster(Config{TenantLabel: pick(r, "", "tenant")})
	nss := []string{"x", "y", "z", "w"}[:1+r.IntN(4)]
	for _, n := range nss {
		l := map[string]string{"ns": n}
		if r.IntN(3) == 0 {
			l["tenant"] = pick(r, "t1", "t2")
		}
		c.addNamespace(n, l)
	}
	for i := range 1 + r.IntN(8) {
		l := map[string]string{"pod": pick(r, "a", "b", "c")}
		if r.IntN(3) == 0 {
			l[DefaultSegmentLabel] = pick(r, "web", "db", "default")
		}
		ports := servePorts(80)
		if r.IntN(2) == 0 {
			ports = append(ports, corev1.ContainerPort{Name: "web", ContainerPort: int32(8000 + r.IntN(3))})
		}
		c.addPod(nss[r.IntN(len(nss))], fmt.Sprintf("p%d", i), l, ports...)
	}
	sel := func() *metav1.LabelSelector {
		switch r.IntN(6) {
		case 0:
			return &metav1.LabelSelector{}
		case 1:
			return labelSel("pod", pick(r, "a", "b"))
		case 2:
			return exprSel("pod", metav1.LabelSelectorOperator(pick(r, "In", "NotIn", "Exists", "DoesNotExist", "Bogus")), pick(r, "a", "b"))
		case 3:
			return labelSel(DefaultSegmentLabel, pick(r, "web", "db"))
		case 4:
			return labelSel("ns", pick(r, "x", "y"))
		}
		return nil
	}
	npPeer := func() networkingv1.NetworkPolicyPeer {
		switch r.IntN(4) {
		case 0:
			var except []string
			if r.IntN(2) == 0 {
				except = append(except, pick(r, "10.1.0.0/24", "10.2.0.0/16", "10.1.2.3/24"))
			}
			return ipPeer(pick(r, "10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/8", "bogus"), except...)
		case 1:
			return nsPeer(sel())
		case 2:
			return podPeer(sel())
		}
		return nsPodPeer(sel(), sel())
	}
	npPorts := func() []networkingv1.NetworkPolicyPort {
		var out []networkingv1.NetworkPolicyPort
		for range r.IntN(3) {
			proto := corev1.Protocol(pick(r, "TCP", "UDP", "SCTP", "ICMP"))
			switch r.IntN(4) {
			case 0:
				out = append(out, port(proto, int32(r.IntN(70000))))
			case 1:
				out = append(out, portRange(proto, 80, int32(79+r.IntN(5))))
			case 2:
				out = append(out, namedPort(proto, pick(r, "web", "serve-80-tcp", "nope")))
			default:
				out = append(out, protoOnly(proto))
			}
		}
		return out
	}
	for i := range r.IntN(5) {
		var opts []npOpt
		for range r.IntN(3) {
			var peers []networkingv1.NetworkPolicyPeer
			for range r.IntN(3) {
				peers = append(peers, npPeer())
			}
			if r.IntN(2) == 0 {
				opts = append(opts, from(npPorts(), peers...))
			} else {
				opts = append(opts, to(npPorts(), peers...))
			}
		}
		if r.IntN(3) == 0 {
			opts = append(opts, types(tIn, tEg))
		}
		c.putNP(newNP(nss[r.IntN(len(nss))], fmt.Sprintf("np%d", i), sel(), opts...))
	}
	for i := range r.IntN(4) {
		cnp := v1alpha2.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cnp%d", i)}}
		cnp.Spec.Tier = v1alpha2.Tier(pick(r, "Admin", "Baseline", "Admin", "Other"))
		cnp.Spec.Priority = int32(r.IntN(1002) - 1)
		if r.IntN(2) == 0 {
			cnp.Spec.Subject.Namespaces = sel()
		} else {
			cnp.Spec.Subject.Pods = &v1alpha2.NamespacedPod{}
		}
		act := func() v1alpha2.ClusterNetworkPolicyRuleAction {
			return v1alpha2.ClusterNetworkPolicyRuleAction(pick(r, "Accept", "Deny", "Pass", "Maybe"))
		}
		peer := func() v1alpha2.ClusterNetworkPolicyEgressPeer {
			switch r.IntN(5) {
			case 0:
				return v1alpha2.ClusterNetworkPolicyEgressPeer{Namespaces: sel()}
			case 1:
				return v1alpha2.ClusterNetworkPolicyEgressPeer{Pods: &v1alpha2.NamespacedPod{PodSelector: *labelSel("pod", "a")}}
			case 2:
				return v1alpha2.ClusterNetworkPolicyEgressPeer{Networks: []v1alpha2.CIDR{v1alpha2.CIDR(pick(r, "10.0.0.0/8", "0.0.0.0/0", "nope"))}}
			case 3:
				return v1alpha2.ClusterNetworkPolicyEgressPeer{Nodes: &metav1.LabelSelector{}}
			}
			return v1alpha2.ClusterNetworkPolicyEgressPeer{DomainNames: []v1alpha2.DomainName{"example.com"}}
		}
		protos := func() []v1alpha2.ClusterNetworkPolicyProtocol {
			var out []v1alpha2.ClusterNetworkPolicyProtocol
			for range r.IntN(3) {
				switch r.IntN(4) {
				case 0:
					out = append(out, v1alpha2.ClusterNetworkPolicyProtocol{TCP: &v1alpha2.ClusterNetworkPolicyProtocolTCP{DestinationPort: &v1alpha2.Port{Number: int32(r.IntN(70000))}}})
				case 1:
					out = append(out, v1alpha2.ClusterNetworkPolicyProtocol{UDP: &v1alpha2.ClusterNetworkPolicyProtocolUDP{DestinationPort: &v1alpha2.Port{Range: &v1alpha2.PortRange{Start: 80, End: int32(78 + r.IntN(5))}}}})
				case 2:
					out = append(out, v1alpha2.ClusterNetworkPolicyProtocol{DestinationNamedPort: pick(r, "web", "serve-80-udp")})
				default:
					out = append(out, v1alpha2.ClusterNetworkPolicyProtocol{})
				}
			}
			return out
		}
		for range r.IntN(4) {
			rule := v1alpha2.ClusterNetworkPolicyEgressRule{Action: act(), Protocols: protos()}
			for range r.IntN(3) {
				rule.To = append(rule.To, peer())
			}
			cnp.Spec.Egress = append(cnp.Spec.Egress, rule)
			in := v1alpha2.ClusterNetworkPolicyIngressRule{Action: act(), Protocols: protos()}
			for _, p := range rule.To {
				in.From = append(in.From, v1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: p.Namespaces, Pods: p.Pods})
			}
			cnp.Spec.Ingress = append(cnp.Spec.Ingress, in)
		}
		c.cnps = append(c.cnps, cnp)
	}
	if r.IntN(2) == 0 {
		c.nodes = []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.0.1"}}}}}
	}
	return c
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

func shuffled[T any](r *rand.Rand, xs []T) []T {
	out := append([]T(nil), xs...)
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// checkOutput checks what every Output must be: deterministic under any
// order of the input, sorted, and valid for romanad (policy.Validate,
// with address-set selectors and peers and the pass action, which the
// validator learns in the tiers track, stood in for).
func checkOutput(t *testing.T, r *rand.Rand, in Input) {
	t.Helper()
	out := Compile(in)
	for range 3 {
		sh := in
		sh.Namespaces, sh.Pods, sh.NetworkPolicies = shuffled(r, in.Namespaces), shuffled(r, in.Pods), shuffled(r, in.NetworkPolicies)
		sh.ClusterNetworkPolicies, sh.Addresses, sh.Nodes = shuffled(r, in.ClusterNetworkPolicies), shuffled(r, in.Addresses), shuffled(r, in.Nodes)
		if again := Compile(sh); !reflect.DeepEqual(out, again) {
			t.Fatalf("shuffled input, different output:\n%s\nvs\n%s", out, again)
		}
	}
	sets := map[string]bool{}
	for i, s := range out.Sets {
		sets[s.Name] = true
		if i > 0 && out.Sets[i-1].Name >= s.Name {
			t.Errorf("sets not sorted: %s, %s", out.Sets[i-1].Name, s.Name)
		}
		if api.ValidateName("set", s.Name) != nil {
			t.Errorf("set name %q", s.Name)
		}
	}
	for i, p := range out.Policies {
		if i > 0 && out.Policies[i-1].Name >= p.Name {
			t.Errorf("policies not sorted: %s, %s", out.Policies[i-1].Name, p.Name)
		}
		if p.Priority < 1 || p.Priority > 65535 {
			t.Errorf("policy %s priority %d", p.Name, p.Priority)
		}
		q := p
		q.AppliedTo = nil
		for _, s := range p.AppliedTo {
			if s.Set != "" && !sets[s.Set] {
				t.Errorf("policy %s names missing set %s", p.Name, s.Set)
			}
			if s.Set != "" && s.Tenant == "" && !s.All && s.Host == "" {
				s.Tenant = "set-standin"
			}
			q.AppliedTo = append(q.AppliedTo, s)
		}
		q.Rules = nil
		for _, rl := range p.Rules {
			if rl.Action == api.ActionPass {
				rl.Action = api.ActionDeny
			}
			var peers []api.Peer
			for _, x := range rl.Peers {
				if x.Set != "" {
					if !sets[x.Set] {
						t.Errorf("policy %s names missing set %s", p.Name, x.Set)
					}
					x = api.Peer{Tenant: "set-standin"}
				}
				peers = append(peers, x)
			}
			rl.Peers = peers
			q.Rules = append(q.Rules, rl)
		}
		if err := policy.Validate(q); err != nil {
			t.Errorf("policy %s: %v", p.Name, err)
		}
	}
}

// TestCompileProperties: random states compile deterministically (any
// input order, same Output), sorted, valid.
func TestCompileProperties(t *testing.T) {
	var pols, sets, probs int
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 7))
		c := randomState(r)
		checkOutput(t, r, c.input())
		out := Compile(c.input())
		pols, sets, probs = pols+len(out.Policies), sets+len(out.Sets), probs+len(out.Problems)
		if t.Failed() {
			t.Fatalf("seed %d", seed)
		}
	}
	t.Logf("300 random states: %d policies, %d sets, %d problems", pols, sets, probs)
}

// FuzzCompile feeds Compile arbitrary JSON for its Kubernetes objects: it
// never panics, and its output has the properties above.
func FuzzCompile(f *testing.F) {
	for seed := range uint64(5) {
		c := randomState(rand.New(rand.NewPCG(seed, 7)))
		b, _ := json.Marshal(c.input())
		f.Add(b)
	}
	f.Add([]byte(`{"NetworkPolicies":[{"metadata":{"namespace":"x","name":"n"},"spec":{"podSelector":{"matchExpressions":[{"key":"a","operator":"In"}]},"ingress":[{"ports":[{"port":"web","endPort":90}]}]}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var in Input
		if json.Unmarshal(b, &in) != nil {
			return
		}
		if len(in.Pods)+len(in.Namespaces)+len(in.NetworkPolicies)+len(in.ClusterNetworkPolicies) > 64 {
			return
		}
		checkOutput(t, rand.New(rand.NewPCG(1, 2)), in)
	})
}

// A small change of state is a small change of output: a pod created,
// relabelled or deleted changes set members only; the policies and the
// set names stay as they were.
func TestSmallChangeSmallOutputChange(t *testing.T) {
	c := xyz()
	c.putNP(newNP("x", "a-from-b", labelSel("pod", "a"), from(nil, podPeer(labelSel("pod", "b")))))
	c.putNP(newNP("x", "egress-web", nil, types(tEg), to(ports(namedPort(pTCP, "serve-80-tcp")), nsPeer(labelSel("ns", "y")))))
	c.putNP(newNP("y", "from-x-b", nil, from(ports(port(pTCP, 80)), nsPodPeer(labelSel("ns", "x"), labelSel("pod", "b")))))
	before := Compile(c.input())
	setNames := func(o Output) []string {
		var n []string
		for _, s := range o.Sets {
			n = append(n, s.Name)
		}
		return n
	}
	for _, change := range []struct {
		name string
		f    func()
	}{
		{"pod created", func() { c.addPod("x", "d", map[string]string{"pod": "b"}, servePorts(80)...) }},
		{"pod relabelled", func() { c.pod("x/c").Labels["pod"] = "b" }},
		{"pod deleted", func() { c.deletePod("x/b") }},
		{"peer pod created elsewhere", func() { c.addPod("y", "e", map[string]string{"pod": "e"}, servePorts(80)...) }},
	} {
		change.f()
		after := Compile(c.input())
		if !reflect.DeepEqual(before.Policies, after.Policies) {
			t.Errorf("%s: policies changed:\n%s\nvs\n%s", change.name, before, after)
		}
		if !reflect.DeepEqual(setNames(before), setNames(after)) {
			t.Errorf("%s: set names changed: %v vs %v", change.name, setNames(before), setNames(after))
		}
		if reflect.DeepEqual(before.Sets, after.Sets) && change.name != "peer pod created elsewhere" {
			t.Errorf("%s: sets did not change", change.name)
		}
		before = after
	}
	// A policy added leaves the others' names and sets in place.
	names := func(o Output) map[string]bool {
		m := map[string]bool{}
		for _, p := range o.Policies {
			m[p.Name] = true
		}
		return m
	}
	c.putNP(newNP("z", "new", nil, from(nil, podPeer(labelSel("pod", "a")))))
	after := Compile(c.input())
	for n := range names(before) {
		if !names(after)[n] {
			t.Errorf("policy %s gone after an unrelated policy was added", n)
		}
	}
	if !strings.Contains(after.String(), "k8s.npi.z.new") {
		t.Errorf("new policy missing:\n%s", after)
	}
}
