package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/romana/romana/cni/install"
	"github.com/romana/romana/kubetest"
)

// object is one manifest document, decoded strictly into its API type.
type object struct {
	kind, name, namespace string
	raw                   []byte // the document's YAML
	typed                 any
}

// split cuts a YAML stream into documents, leaving out empty ones.
func split(stream []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(stream), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// load decodes every manifest strictly: an unknown or misspelt field, a
// duplicate key or a kind this test does not know fails.
func load(t *testing.T) []object {
	t.Helper()
	m, err := Manifests()
	if err != nil {
		t.Fatal(err)
	}
	var objs []object
	for _, doc := range split(m) {
		var tm struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		var typed any
		switch tm.APIVersion + "/" + tm.Kind {
		case "v1/Namespace":
			typed = &corev1.Namespace{}
		case "v1/ServiceAccount":
			typed = &corev1.ServiceAccount{}
		case "v1/Service":
			typed = &corev1.Service{}
		case "v1/ConfigMap":
			typed = &corev1.ConfigMap{}
		case "apps/v1/StatefulSet":
			typed = &appsv1.StatefulSet{}
		case "apps/v1/DaemonSet":
			typed = &appsv1.DaemonSet{}
		case "apps/v1/Deployment":
			typed = &appsv1.Deployment{}
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			typed = &rbacv1.ClusterRole{}
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			typed = &rbacv1.ClusterRoleBinding{}
		case "rbac.authorization.k8s.io/v1/Role":
			typed = &rbacv1.Role{}
		case "rbac.authorization.k8s.io/v1/RoleBinding":
			typed = &rbacv1.RoleBinding{}
		case "batch/v1/Job":
			typed = &batchv1.Job{}
		case "apiextensions.k8s.io/v1/CustomResourceDefinition":
			// No Go types in go.mod; TestCRDMatchesModule holds it to the
			// module's own file.
			typed = &map[string]any{}
		default:
			t.Fatalf("manifest of kind %s/%s %s: not expected", tm.APIVersion, tm.Kind, tm.Metadata.Name)
		}
		if err := yaml.UnmarshalStrict(doc, typed); err != nil {
			t.Fatalf("%s %s: strict decoding: %v", tm.Kind, tm.Metadata.Name, err)
		}
		objs = append(objs, object{kind: tm.Kind, name: tm.Metadata.Name, namespace: tm.Metadata.Namespace, raw: doc, typed: typed})
	}
	return objs
}

func find[T any](t *testing.T, objs []object, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			return o.typed.(T)
		}
	}
	t.Fatalf("no %s %s in the manifests", kind, name)
	var zero T
	return zero
}

// TestManifests: the expected objects, each namespaced one in
// romana-system, one ServiceAccount per component.
func TestManifests(t *testing.T) {
	objs := load(t)
	var got []string
	for _, o := range objs {
		got = append(got, o.kind+"/"+o.name)
		if o.kind != "Namespace" && o.kind != "ClusterRole" && o.kind != "ClusterRoleBinding" && o.kind != "CustomResourceDefinition" && o.namespace != "romana-system" {
			t.Errorf("%s %s is in namespace %q, not romana-system", o.kind, o.name, o.namespace)
		}
	}
	sort.Strings(got)
	want := []string{
		"ClusterRole/romana-bootstrap", "ClusterRole/romana-kube", "ClusterRoleBinding/romana-bootstrap", "ClusterRoleBinding/romana-kube",
		"ConfigMap/romana-agent-config", "ConfigMap/romana-kube-config", "ConfigMap/romanad-config",
		"CustomResourceDefinition/clusternetworkpolicies.policy.networking.k8s.io",
		"DaemonSet/romana-agent", "Deployment/romana-kube", "Job/romana-bootstrap", "Namespace/romana-system",
		"Role/romana-agent-join", "Role/romana-bootstrap", "RoleBinding/romana-agent-join", "RoleBinding/romana-bootstrap", "Service/romanad",
		"ServiceAccount/romana-agent", "ServiceAccount/romana-bootstrap", "ServiceAccount/romana-kube", "ServiceAccount/romanad",
		"StatefulSet/romanad",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("objects:\n got %v\nwant %v", got, want)
	}
	for _, w := range []struct{ kind, name, sa string }{
		{"StatefulSet", "romanad", "romanad"}, {"DaemonSet", "romana-agent", "romana-agent"}, {"Deployment", "romana-kube", "romana-kube"},
		{"Job", "romana-bootstrap", "romana-bootstrap"},
	} {
		if sa := podSpec(t, objs, w.kind, w.name).ServiceAccountName; sa != w.sa {
			t.Errorf("%s %s runs as ServiceAccount %q, want %q", w.kind, w.name, sa, w.sa)
		}
	}
	if d := find[*appsv1.Deployment](t, objs, "Deployment", "romana-kube"); d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Error("romana-kube must run one replica, never two at once (Recreate)")
	}
}

func podSpec(t *testing.T, objs []object, kind, name string) *corev1.PodSpec {
	t.Helper()
	switch kind {
	case "StatefulSet":
		return &find[*appsv1.StatefulSet](t, objs, kind, name).Spec.Template.Spec
	case "DaemonSet":
		return &find[*appsv1.DaemonSet](t, objs, kind, name).Spec.Template.Spec
	case "Deployment":
		return &find[*appsv1.Deployment](t, objs, kind, name).Spec.Template.Spec
	case "Job":
		return &find[*batchv1.Job](t, objs, kind, name).Spec.Template.Spec
	}
	t.Fatalf("no pod template in a %s", kind)
	return nil
}

// workloads are the manifests' pod templates.
var workloads = []struct{ kind, name string }{
	{"StatefulSet", "romanad"}, {"DaemonSet", "romana-agent"}, {"Deployment", "romana-kube"}, {"Job", "romana-bootstrap"},
}

// TestRBAC: romana-kube may get, list and watch nodes, namespaces, pods,
// NetworkPolicies and ClusterNetworkPolicies, and nothing else; no other
// component has any role.
func TestRBAC(t *testing.T) {
	objs := load(t)
	role := find[*rbacv1.ClusterRole](t, objs, "ClusterRole", "romana-kube")
	want := map[string]bool{}
	for _, r := range []string{"/nodes", "/namespaces", "/pods", "networking.k8s.io/networkpolicies", "policy.networking.k8s.io/clusternetworkpolicies"} {
		want[r] = true
	}
	got := map[string]bool{}
	for _, r := range role.Rules {
		if v := slices.Sorted(slices.Values(r.Verbs)); !reflect.DeepEqual(v, []string{"get", "list", "watch"}) {
			t.Errorf("rule %v: verbs %v, want get, list, watch", r, r.Verbs)
		}
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %v: resourceNames or nonResourceURLs", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				if g == "*" || res == "*" || strings.Contains(res, "/") {
					t.Errorf("rule %v: wildcard or subresource", r)
				}
				got[g+"/"+res] = true
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("romana-kube may read %v, want exactly %v", got, want)
	}
	b := find[*rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", "romana-kube")
	if b.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "romana-kube"}) ||
		!reflect.DeepEqual(b.Subjects, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "romana-kube", Namespace: "romana-system"}}) {
		t.Errorf("binding %+v %+v", b.RoleRef, b.Subjects)
	}
	for _, o := range objs {
		if (o.kind == "ClusterRole" || o.kind == "ClusterRoleBinding" || o.kind == "Role" || o.kind == "RoleBinding") && o.name != "romana-kube" && o.name != "romana-bootstrap" && o.name != "romana-agent-join" {
			t.Errorf("%s %s: only romana-kube, romana-bootstrap and the agent's romana-agent-join have roles", o.kind, o.name)
		}
	}
	// The bootstrap Job: list nodes; create Secrets, get and update its two.
	br := find[*rbacv1.ClusterRole](t, objs, "ClusterRole", "romana-bootstrap")
	if want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list"}}}; !reflect.DeepEqual(br.Rules, want) {
		t.Errorf("romana-bootstrap ClusterRole %+v", br.Rules)
	}
	nr := find[*rbacv1.Role](t, objs, "Role", "romana-bootstrap")
	if want := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"romana-kube", "romana-join"}, Verbs: []string{"get", "update"}},
	}; !reflect.DeepEqual(nr.Rules, want) || nr.Namespace != "romana-system" {
		t.Errorf("romana-bootstrap Role %+v", nr.Rules)
	}
	// The agent may get its join Secret, nothing else.
	ar := find[*rbacv1.Role](t, objs, "Role", "romana-agent-join")
	if want := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"romana-join"}, Verbs: []string{"get"}},
	}; !reflect.DeepEqual(ar.Rules, want) || ar.Namespace != "romana-system" {
		t.Errorf("romana-agent-join Role %+v", ar.Rules)
	}
	// The components that do not talk to the Kubernetes API get no token.
	for _, w := range []struct{ kind, name string }{{"StatefulSet", "romanad"}} {
		if p := podSpec(t, objs, w.kind, w.name); p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken {
			t.Errorf("%s %s mounts a ServiceAccount token it does not use", w.kind, w.name)
		}
	}
}

// TestPrivileges: nothing is privileged or may gain privileges, every
// container drops all capabilities, and only the agent adds any: exactly
// NET_ADMIN, NET_RAW and SYS_ADMIN (its systemd unit's bounding set).
func TestPrivileges(t *testing.T) {
	objs := load(t)
	for _, w := range workloads {
		p := podSpec(t, objs, w.kind, w.name)
		if !p.HostNetwork {
			t.Errorf("%s %s: not hostNetwork (Romana cannot wait for the pod network it makes)", w.kind, w.name)
		}
		if p.HostPID || p.HostIPC {
			t.Errorf("%s %s: hostPID or hostIPC", w.kind, w.name)
		}
		for _, c := range append(slices.Clone(p.InitContainers), p.Containers...) {
			sc := c.SecurityContext
			if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil ||
				!reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("%s %s container %s: want privileged false, no privilege escalation, a read-only root and all capabilities dropped: %+v", w.kind, w.name, c.Name, sc)
				continue
			}
			var add []corev1.Capability
			if w.name == "romana-agent" && c.Name == "romana-agent" {
				add = []corev1.Capability{"NET_ADMIN", "NET_RAW", "SYS_ADMIN"}
			}
			if !reflect.DeepEqual(sc.Capabilities.Add, add) {
				t.Errorf("%s %s container %s adds %v, want %v", w.kind, w.name, c.Name, sc.Capabilities.Add, add)
			}
		}
	}
	// The service unit of the agent grants the same set.
	unit, err := os.ReadFile("../packaging/systemd/romana-agent.service.in")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nCapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_ADMIN\n") {
		t.Error("the agent's systemd unit grants other capabilities than the DaemonSet: keep them one set")
	}
}

// TestAgentPaths: the agent's mounts and the installer's paths agree with
// each other and with the node's (README.md lists them).
func TestAgentPaths(t *testing.T) {
	objs := load(t)
	p := podSpec(t, objs, "DaemonSet", "romana-agent")
	host := map[string]string{} // volume → node path
	for _, v := range p.Volumes {
		if v.HostPath != nil {
			host[v.Name] = v.HostPath.Path
		}
	}
	want := map[string]string{"cni-bin": install.DefaultBinDir, "cni-conf": install.DefaultConfDir, "run-agent": "/run/romana-agent",
		"state": "/var/lib/romana/agent", "netns": "/run/netns"}
	if !reflect.DeepEqual(host, want) {
		t.Errorf("hostPath volumes %v, want %v", host, want)
	}
	mounts := func(c corev1.Container) map[string]corev1.VolumeMount {
		m := map[string]corev1.VolumeMount{}
		for _, vm := range c.VolumeMounts {
			m[vm.Name] = vm
		}
		return m
	}
	agent, init := p.Containers[0], p.InitContainers[0]
	am := mounts(agent)
	// The socket, the credential and the namespaces are at the node's paths
	// inside the pod too: romana-cni (on the node) and the runtime's
	// CNI_NETNS name them so.
	for _, v := range []string{"run-agent", "state", "netns"} {
		if am[v].MountPath != want[v] {
			t.Errorf("agent mounts %s at %q, want the node's path %q", v, am[v].MountPath, want[v])
		}
	}
	if am["netns"].MountPropagation == nil || *am["netns"].MountPropagation != corev1.MountPropagationHostToContainer {
		t.Error("/run/netns without HostToContainer propagation: pods' namespaces made after the agent started would be missing")
	}
	cm := find[*corev1.ConfigMap](t, objs, "ConfigMap", "romana-agent-config")
	var conf map[string]any
	if err := yaml.UnmarshalStrict([]byte(cm.Data["romana-agent.yaml"]), &conf); err != nil {
		t.Fatal(err)
	}
	if conf["cni-socket"] != "/run/romana-agent/cni.sock" {
		t.Errorf("agent config cni-socket %v", conf["cni-socket"])
	}
	im := mounts(init)
	args := strings.Join(init.Args, " ")
	for _, w := range []string{"install-cni", "--socket=" + conf["cni-socket"].(string), "--plugin=" + install.DefaultPluginSource,
		"--bin-dir=" + im["cni-bin"].MountPath, "--conf-dir=" + im["cni-conf"].MountPath} {
		if !strings.Contains(" "+args+" ", " "+w+" ") {
			t.Errorf("install-cni args %q lack %q", args, w)
		}
	}
	if init.Image != agent.Image {
		t.Errorf("the installer runs %s, the agent %s: the plugin must come with its agent", init.Image, agent.Image)
	}
}

// TestImages: every container names one of Components' images at
// Registry and ManifestTag, every component is used, and Render gives
// exactly the names Build writes into the images.
func TestImages(t *testing.T) {
	objs := load(t)
	used := map[string]bool{}
	for _, w := range workloads {
		p := podSpec(t, objs, w.kind, w.name)
		for _, c := range append(slices.Clone(p.InitContainers), p.Containers...) {
			ok := false
			for _, comp := range Components {
				if c.Image == ImageName(Registry, comp.Name, ManifestTag) {
					ok, used[comp.Name] = true, true
				}
			}
			if !ok {
				t.Errorf("%s %s container %s: image %s is none of Romana's", w.kind, w.name, c.Name, c.Image)
			}
			if c.ImagePullPolicy != corev1.PullIfNotPresent {
				t.Errorf("%s %s container %s: imagePullPolicy %s, want IfNotPresent (images imported, no registry)", w.kind, w.name, c.Name, c.ImagePullPolicy)
			}
		}
	}
	if len(used) != len(Components) {
		t.Errorf("images used %v, want all of %d components", used, len(Components))
	}

	// Render with a tag, then every image named is one Build makes.
	m, _ := Manifests()
	r := Render(m, "registry.example:5000/net", "v1.2.3-4-gabc")
	if bytes.Contains(r, []byte(":"+ManifestTag+"\n")) {
		t.Error("Render left an image at the manifests' tag")
	}
	b := Build{BinDir: "/bin", Registry: "registry.example:5000/net", Tag: "v1.2.3-4-gabc", Arch: "amd64",
		ReadFile: func(p string) ([]byte, error) { return []byte("contents of " + p), nil },
		Libraries: func(string) ([]string, error) {
			return []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}, nil
		},
	}
	imgs, err := b.Images()
	if err != nil {
		t.Fatal(err)
	}
	built := map[string]bool{}
	for _, img := range imgs {
		built[img.Name] = true
	}
	named := map[string]bool{}
	for _, l := range regexp.MustCompile(`(?m)^\s*image:\s*(\S+)\s*$`).FindAllSubmatch(r, -1) {
		named[string(l[1])] = true
	}
	if !reflect.DeepEqual(named, built) {
		t.Errorf("rendered manifests name %v, Build makes %v", named, built)
	}
	// The agent's image has the plugin where install-cni looks and nft
	// with its libraries.
	files := map[string]bool{}
	for _, f := range imgs[1].Files {
		files[f.Path] = true
	}
	for _, p := range []string{"/usr/bin/romana-agent", install.DefaultPluginSource, "/usr/sbin/nft", "/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"} {
		if !files[p] {
			t.Errorf("agent image lacks %s", p)
		}
	}
}

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007feb0ccd9000)\n\tlibnftables.so.1 => /lib/x86_64-linux-gnu/libnftables.so.1 (0x00007f)\n" +
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
	got, err := parseLdd(out)
	want := []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libnftables.so.1", "/lib64/ld-linux-x86-64.so.2"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parseLdd = %v, %v; want %v", got, err, want)
	}
	if _, err := parseLdd("\tlibfoo.so.1 => not found\n"); err == nil {
		t.Error("a missing library was not an error")
	}
}

// TestCRDMatchesModule: the ClusterNetworkPolicy CRD in deploy/kubernetes
// is the module's, at the version go.mod requires (deploy/gen-crd.sh).
func TestCRDMatchesModule(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/network-policy-api").Output()
	if err != nil {
		t.Fatalf("go list -m sigs.k8s.io/network-policy-api: %v", err)
	}
	want, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), kubetest.CNPCRDPath))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("kubernetes/01-policy.networking.k8s.io_clusternetworkpolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("deploy/kubernetes's ClusterNetworkPolicy CRD differs from the module's: run deploy/gen-crd.sh")
	}
}
