package netpol

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"
)

type cnpScenario struct {
	name, manifest string
	ops            []cnpOp
}

// cnpOp is one step of a conformance test: a subtest starts (run), a
// change (mut), a skipped probe (skip), or a probe.
type cnpOp struct {
	run, mut, skip string
	from, to       string // "<house initial>/<pod>"
	proto          string
	port           uint16
	want           bool
}

var houses = map[string]string{"g": "gryffindor", "s": "slytherin", "h": "hufflepuff", "r": "ravenclaw", "f": "forbidden-forrest"}

func housePod(s string) string {
	h, p, _ := strings.Cut(s, "/")
	return "network-policy-conformance-" + houses[h] + "/" + p
}

// conformanceDir is the module's conformance directory.
func conformanceDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/network-policy-api").Output()
	if err != nil {
		t.Fatalf("go list -m sigs.k8s.io/network-policy-api: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "conformance")
}

// loadManifest adds a manifest's objects to c: namespaces, StatefulSets
// (as their running pods name-0, name-1, ...), ClusterNetworkPolicies
// and NetworkPolicies.
func (c *cluster) loadManifest(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		if bytes.Contains(doc, []byte("{{")) {
			continue // the host-network StatefulSet (a template of the suite's ports): no endpoints
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		switch meta.Kind {
		case "":
		case "Namespace":
			var ns corev1.Namespace
			must(t, yaml.Unmarshal(doc, &ns))
			c.addNamespace(ns.Name, ns.Labels)
		case "StatefulSet":
			var ss appsv1.StatefulSet
			must(t, yaml.Unmarshal(doc, &ss))
			var ports []corev1.ContainerPort
			for _, ct := range ss.Spec.Template.Spec.Containers {
				ports = append(ports, ct.Ports...)
			}
			for i := int32(0); i < *ss.Spec.Replicas; i++ {
				name := fmt.Sprintf("%s-%d", ss.Name, i)
				l := map[string]string{"statefulset.kubernetes.io/pod-name": name}
				for k, v := range ss.Spec.Template.Labels {
					l[k] = v
				}
				c.addPod(ss.Namespace, name, l, ports...)
			}
		case "ClusterNetworkPolicy":
			var p v1alpha2.ClusterNetworkPolicy
			must(t, yaml.UnmarshalStrict(doc, &p))
			c.cnps = append(c.cnps, p)
		case "NetworkPolicy":
			var p networkingv1.NetworkPolicy
			must(t, yaml.UnmarshalStrict(doc, &p))
			c.nps = append(c.nps, p)
		default:
			t.Fatalf("%s: kind %s", path, meta.Kind)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) cnp(name string) *v1alpha2.ClusterNetworkPolicy {
	for i := range c.cnps {
		if c.cnps[i].Name == name || name == "" && len(c.cnps) == 1 {
			return &c.cnps[i]
		}
	}
	panic("no clusternetworkpolicy " + name)
}

// The changes the conformance tests make, by test and index (the tests
// change the policy in the cluster, so changes accumulate within a test).
var cnpMutations = func() map[string]func(c *cluster) {
	m := map[string]func(c *cluster){}
	swapE := func(i, j int) func(c *cluster) {
		return func(c *cluster) { e := c.cnp("").Spec.Egress; e[i], e[j] = e[j], e[i] }
	}
	swapI := func(i, j int) func(c *cluster) {
		return func(c *cluster) { e := c.cnp("").Spec.Ingress; e[i], e[j] = e[j], e[i] }
	}
	both := func(i, j int) func(c *cluster) {
		return func(c *cluster) { swapE(i, j)(c); swapI(i, j)(c) }
	}
	for _, tier := range []string{"Admin", "Baseline"} {
		for _, p := range []string{"SCTP", "TCP", "UDP"} {
			m["CNP"+tier+"TierEgress"+p+"#0"] = swapE(0, 1)
			m["CNP"+tier+"TierEgress"+p+"#1"] = swapE(0, 2)
			m["CNP"+tier+"TierEgress"+p+"#2"] = swapE(3, 4)
			m["CNP"+tier+"TierIngress"+p+"#0"] = swapI(0, 1)
			m["CNP"+tier+"TierIngress"+p+"#1"] = swapI(0, 2)
			m["CNP"+tier+"TierIngress"+p+"#2"] = swapI(3, 4)
		}
		m["CNP"+tier+"TierGress#0"] = both(0, 1)
		m["CNP"+tier+"TierGress#1"] = both(0, 2)
		m["CNP"+tier+"TierGress#2"] = both(3, 4)
		m["CNP"+tier+"TierEgressInlineCIDRPeers#0"] = func(c *cluster) {
			c.setNamespaceLabels("network-policy-conformance-slytherin", map[string]string{"conformance-house": "denied-namespace-label"})
		}
		m["CNP"+tier+"TierEgressInlineCIDRPeers#1"] = func(c *cluster) {
			c.setNamespaceLabels("network-policy-conformance-slytherin", map[string]string{"conformance-house": "slytherin"})
		}
		m["CNP"+tier+"TierEgressInlineCIDRPeers#2"] = func(c *cluster) {
			p := c.cnp("")
			rule := v1alpha2.ClusterNetworkPolicyEgressRule{Name: "allow-egress-to-specific-podIPs", Action: v1alpha2.ClusterNetworkPolicyRuleActionAccept,
				To: []v1alpha2.ClusterNetworkPolicyEgressPeer{{Networks: []v1alpha2.CIDR{
					v1alpha2.CIDR(c.ip(housePod("r/luna-lovegood-0")).String() + "/32"),
					v1alpha2.CIDR(c.ip(housePod("h/cedric-diggory-0")).String() + "/32")}}}}
			p.Spec.Egress = append([]v1alpha2.ClusterNetworkPolicyEgressRule{rule}, p.Spec.Egress...)
		}
		labels := []struct {
			pod, value string // "" removes the label
		}{{"h/cedric-diggory-0", ""}, {"h/cedric-diggory-1", ""}, {"h/cedric-diggory-0", "blocked"}, {"h/cedric-diggory-0", ""},
			{"h/cedric-diggory-1", "blocked"}, {"r/luna-lovegood-0", ""}, {"r/luna-lovegood-1", ""}, {"r/luna-lovegood-0", "restricted"},
			{"r/luna-lovegood-0", ""}, {"r/luna-lovegood-1", "restricted"}}
		for i, l := range labels {
			m[fmt.Sprintf("CNP%sTierPodSelector#%d", tier, i)] = func(c *cluster) {
				p := c.pod(housePod(l.pod))
				if l.value == "" {
					delete(p.Labels, "conformance-role")
				} else {
					p.Labels["conformance-role"] = l.value
				}
			}
		}
	}
	named := func(dir string, i int, name string) func(c *cluster) {
		return func(c *cluster) {
			pr := []v1alpha2.ClusterNetworkPolicyProtocol{{DestinationNamedPort: name}}
			if dir == "egress" {
				c.cnp("").Spec.Egress[i].Protocols = pr
			} else {
				c.cnp("").Spec.Ingress[i].Protocols = pr
			}
		}
	}
	m["CNPAdminTierEgressNamedPort#0"] = named("egress", 5, "web")
	m["CNPAdminTierIngressNamedPort#0"] = named("ingress", 5, "dns")
	m["CNPBaselineTierEgressNamedPort#0"] = named("egress", 3, "dns")
	m["CNPBaselineTierIngressNamedPort#0"] = named("ingress", 3, "web")
	m["CNPAdminTierIntegration#0"] = func(c *cluster) {
		c.cnp("pass-example").Spec.Ingress[0].Action = v1alpha2.ClusterNetworkPolicyRuleActionPass
	}
	m["CNPAdminTierIntegration#1"] = func(c *cluster) {
		c.cnp("pass-example").Spec.Egress[0].Action = v1alpha2.ClusterNetworkPolicyRuleActionPass
	}
	m["CNPAdminTierIntegration#2"] = func(c *cluster) {
		c.deleteNP("network-policy-conformance-gryffindor", "allow-gress-from-to-slytherin-to-gryffindor")
	}
	m["CNPAdminTierPriorityField#0"] = func(c *cluster) { c.cnp("old-priority-60-new-priority-40-example").Spec.Priority = 40 }
	return m
}()

func (c *cluster) setNamespaceLabels(name string, l map[string]string) {
	for i := range c.nss {
		if c.nss[i].Name == name {
			m := map[string]string{"kubernetes.io/metadata.name": name}
			for k, v := range l {
				m[k] = v
			}
			c.nss[i].Labels = m
		}
	}
}

// TestClusterNetworkPolicyConformance runs every probe of the module's
// conformance tests (Admin and Baseline tiers, priorities, Pass, TCP, UDP
// and SCTP ports and ranges, CIDR peers, pod and namespace selectors,
// named ports, the NetworkPolicy integration) on the module's own
// manifests, compiled by Compile and decided by verdict.
func TestClusterNetworkPolicyConformance(t *testing.T) {
	dir := conformanceDir(t)
	probes, skipped := 0, 0
	for _, sc := range cnpScenarios {
		t.Run(sc.name, func(t *testing.T) {
			c := newCluster(Config{})
			c.loadManifest(t, filepath.Join(dir, "base/manifests.yaml"))
			c.loadManifest(t, filepath.Join(dir, sc.manifest))
			run := ""
			for _, op := range sc.ops {
				switch {
				case op.run != "":
					run = op.run
				case op.skip != "":
					skipped++
				case op.mut != "":
					f, ok := cnpMutations[op.mut]
					if !ok {
						t.Fatalf("no mutation %s", op.mut)
					}
					f(c)
				default:
					probes++
					out := Compile(c.input())
					if len(out.Problems) > 0 {
						t.Errorf("%s: problems %v", run, out.Problems)
					}
					src, dst := c.ip(housePod(op.from)), c.ip(housePod(op.to))
					got, by := verdict(t, c, out, src, dst, probe{op.proto, op.port})
					if got != op.want {
						t.Errorf("%s: %s -> %s %s/%d: connects %v (%s), want %v\n%s", run, op.from, op.to, op.proto, op.port, got, by, op.want, out)
					}
				}
			}
		})
	}
	t.Logf("%d conformance probes checked, %d skipped (host-network servers)", probes, skipped)
}

// Tenant isolation written as ClusterNetworkPolicies (user story 4 of the
// API: per tenant, Pass from the tenant's namespaces, Deny from all
// namespaces) compiles to what Romana's own tenant isolation is: per
// tenant, one policy applied to the tenant's masked range, a pass rule
// from that range and a deny rule from the pod pools; no sets.
func TestTenancyAsClusterNetworkPolicy(t *testing.T) {
	c := newCluster(Config{TenantLabel: "tenant", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	for _, ns := range []struct{ name, tenant string }{{"a1", "acme"}, {"a2", "acme"}, {"b1", "beta"}, {"o1", ""}} {
		l := map[string]string{}
		if ns.tenant != "" {
			l["tenant"] = ns.tenant
		}
		c.addNamespace(ns.name, l)
		c.addPod(ns.name, "p", nil)
		c.addPod(ns.name, "q", nil)
	}
	for _, tn := range []string{"acme", "beta"} {
		c.cnps = append(c.cnps, v1alpha2.ClusterNetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "tenant-" + tn},
			Spec: v1alpha2.ClusterNetworkPolicySpec{Tier: v1alpha2.AdminTier, Priority: 50,
				Subject: v1alpha2.ClusterNetworkPolicySubject{Namespaces: labelSel("tenant", tn)},
				Ingress: []v1alpha2.ClusterNetworkPolicyIngressRule{
					{Action: v1alpha2.ClusterNetworkPolicyRuleActionPass, From: []v1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: labelSel("tenant", tn)}}},
					{Action: v1alpha2.ClusterNetworkPolicyRuleActionDeny, From: []v1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: labelSel()}}},
				}}})
	}
	out := Compile(c.input())
	want := `policy k8s.cnpi.tenant-acme tier="admin" prio=3201 dir=[ingress] to=[{tenant=acme}]
  rule 0 pass any peers=[{tenant=acme}]
  rule 1 deny any peers=[{cidr=10.0.0.0/8}]
policy k8s.cnpi.tenant-beta tier="admin" prio=3201 dir=[ingress] to=[{tenant=beta}]
  rule 0 pass any peers=[{tenant=beta}]
  rule 1 deny any peers=[{cidr=10.0.0.0/8}]
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
	// And it isolates: within a tenant (across its namespaces) open,
	// across tenants closed; the unlabelled namespace o1 (a tenant of its
	// own, no policy) stays open to all.
	r := newReach(c.podKeys(), true)
	for _, to := range []string{"a1/*", "a2/*", "b1/*"} {
		r.set(all, to, false)
	}
	r.set("a1/*", "a1/*", true).set("a1/*", "a2/*", true).set("a2/*", "a1/*", true).set("a2/*", "a2/*", true).set("b1/*", "b1/*", true)
	c.check(t, "tenancy", tcp80, r)
	if len(out.Sets) != 0 {
		t.Errorf("sets %v, want none", out.Sets)
	}
	// Without PodCIDRs, "all namespaces" is one masked match per tenant.
	c.cfg.PodCIDRs = nil
	out = Compile(c.input())
	if !strings.Contains(out.String(), "rule 1 deny any peers=[{tenant=acme} {tenant=beta} {tenant=o1}]") || len(out.Sets) != 0 {
		t.Errorf("want one tenant peer per tenant:\n%s", out)
	}
}
