package main

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestRackConfigMap: the demo's rack setting is romana-kube's own
// ConfigMap from deploy/kubernetes with its commented topology line set,
// and the result still parses with the topology in romana-kube.yaml.
func TestRackConfigMap(t *testing.T) {
	b, err := rackConfigMap("../../deploy/kubernetes/30-romana-kube.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(b, &cm); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if cm.Kind != "ConfigMap" || cm.Name != "romana-kube-config" || cm.Namespace != "romana-system" {
		t.Fatalf("got %s %s/%s", cm.Kind, cm.Namespace, cm.Name)
	}
	var flags map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["romana-kube.yaml"]), &flags); err != nil {
		t.Fatal(err)
	}
	topo, _ := flags["topology"].([]any)
	if len(topo) != 1 || topo[0] != "rack="+zoneLabel {
		t.Errorf("topology %v, want [rack=%s]", flags["topology"], zoneLabel)
	}
	if _, err := rackConfigMap("../../deploy/kubernetes/20-romana-agent.yaml"); err == nil {
		t.Error("a manifest without the knob gave a ConfigMap")
	}
}

func TestDecoded(t *testing.T) {
	js := `{"network":"pods","host":"node3","tenant":"demo","segment":"web","endpoint":1,"loc":{"groups":[1],"host":0},"ip":"10.144.5.17"}`
	if got, want := decoded(js), "demo/web  (network pods, rack 1, host node3, endpoint 1)"; got != want {
		t.Errorf("decoded: %q, want %q", got, want)
	}
	if got := decoded("not json\n"); got != "not json" {
		t.Errorf("decoded of text: %q", got)
	}
}

func TestLeftovers(t *testing.T) {
	before := state{netns: []string{"romk-1-node1"}, cgroups: []string{"romana-kn-1-node1"}, mounts: 2}
	after := state{netns: []string{"romk-1-node1", "romk-2-node1"}, procs: []string{"9 kubelet"}, cgroups: []string{"romana-kn-1-node1"}, mounts: 2}
	left := after.minus(before)
	if left.empty() || !strings.Contains(left.String(), "romk-2-node1") || strings.Contains(left.String(), "romk-1-node1") || !strings.Contains(left.String(), "9 kubelet") {
		t.Errorf("left %q", left)
	}
	if d := before.minus(before); !d.empty() || d.err() != nil {
		t.Errorf("a state minus itself: %q", d)
	}
}
