package api

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// KindAddressSet is the kind of address sets in the watch stream.
const KindAddressSet = "addressset"

// AddressSet is a named, explicit set of endpoint addresses that policies
// select (Selector.Set) or name as peers (Peer.Set). It exists for
// groupings the address plan cannot express as a masked range: the pods a
// Kubernetes label selector picks. Agents hold each set as nft named sets
// (one per family) and follow membership changes by adding and deleting
// elements, never by rewriting rules. Addresses are sorted and distinct.
//
// Pods are members by name ("namespace/name", sorted and distinct): every
// agent resolves them to the addresses romanad allocated for those pods
// (the attributes AttrK8sNamespace and AttrK8sPod), so a pod's address is
// in its sets from the watch event that brings the allocation, on every
// host, without waiting for the set's writer to learn the address. The
// Kubernetes controller writes a pod's memberships before its pod record,
// and an allocation naming a pod needs the record: an address allocated
// for a pod is never without its pod's memberships. Addresses remain for
// what has no allocation at romanad (and for agents older than Pods, which
// read only Addresses). A set's members are Addresses plus the resolved
// pods.
type AddressSet struct {
	Name        string       `json:"name"`
	Description string       `json:"description,omitempty"`
	Addresses   []netip.Addr `json:"addresses"`
	Pods        []string     `json:"pods,omitempty"`
}

// KindPod is the kind of pod records: what romanad knows of a Kubernetes
// pod so that an attachment naming it (CNI_ARGS K8S_POD_NAMESPACE and
// K8S_POD_NAME) gets its address from the right tenant and segment. The
// Kubernetes controller (romana-kube) writes them; agents never see them
// (they are not in snapshots or agents' watches).
const KindPod = "pod"

// Pod is a Kubernetes pod as romanad resolves it. Its key is
// "Namespace/Name".
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
	// Tenant and Segment are where the pod's addresses come from: the
	// tenant of its namespace and the segment of its segment label.
	Tenant  string `json:"tenant"`
	Segment string `json:"segment"`
}

// Key returns "namespace/name".
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Address set limits. MaxAddressSetSize bounds a set's addresses, and
// separately its pods;
// MaxAddressSetBytes bounds its stored JSON, which must fit one etcd
// request (1.5 MiB by default) with room to spare: 65,536 IPv4 addresses
// fit, as many IPv6 addresses do not.
const (
	MaxAddressSetSize  = 65536
	MaxAddressSetBytes = 1 << 20
)

// Validate checks an address set and returns its canonical form:
// addresses unmapped, sorted and distinct; pods valid "namespace/name"
// keys (ParsePodKey), sorted and distinct. Errors are ReasonInvalid and
// name the set and the offending address or pod.
func (s AddressSet) Validate() (AddressSet, error) {
	if err := ValidateName("address set", s.Name); err != nil {
		return AddressSet{}, err
	}
	if len(s.Description) > 1024 {
		return AddressSet{}, Errorf(ReasonInvalid, "address set %s: description longer than 1024 characters", s.Name)
	}
	if len(s.Addresses) > MaxAddressSetSize {
		return AddressSet{}, Errorf(ReasonInvalid, "address set %s has %d addresses; a set holds at most %d: split it into several sets (a policy may name several)",
			s.Name, len(s.Addresses), MaxAddressSetSize)
	}
	out := AddressSet{Name: s.Name, Description: s.Description, Addresses: make([]netip.Addr, 0, len(s.Addresses))}
	for i, a := range s.Addresses {
		switch {
		case !a.IsValid():
			return AddressSet{}, Errorf(ReasonInvalid, "address set %s: addresses[%d] is missing (an empty string or null)", s.Name, i)
		case a.Zone() != "":
			return AddressSet{}, Errorf(ReasonInvalid, "address set %s: addresses[%d] %s has a zone; give endpoint addresses without one", s.Name, i, a)
		}
		out.Addresses = append(out.Addresses, a.Unmap())
	}
	slices.SortFunc(out.Addresses, netip.Addr.Compare)
	out.Addresses = slices.Compact(out.Addresses)
	if len(s.Pods) > MaxAddressSetSize {
		return AddressSet{}, Errorf(ReasonInvalid, "address set %s has %d pods; a set holds at most %d: split it into several sets (a policy may name several)",
			s.Name, len(s.Pods), MaxAddressSetSize)
	}
	if len(s.Pods) > 0 {
		out.Pods = make([]string, 0, len(s.Pods))
		for i, p := range s.Pods {
			if _, _, err := ParsePodKey(p); err != nil {
				return AddressSet{}, Errorf(ReasonInvalid, "address set %s: pods[%d]: %v", s.Name, i, err)
			}
			out.Pods = append(out.Pods, p)
		}
		slices.Sort(out.Pods)
		out.Pods = slices.Compact(out.Pods)
	}
	return out, nil
}

// Kubernetes attributes romanad puts on an address allocated for a pod
// (AddressRequest.Pod).
const (
	AttrK8sNamespace = "k8s.namespace"
	AttrK8sPod       = "k8s.pod"
	// AttrK8sUID is the pod's UID, from its record, when the record has
	// one: it tells a pod's address from an earlier pod's of the same
	// name that is not released yet.
	AttrK8sUID = "k8s.uid"
)

// podNameRE is a Kubernetes object name (DNS-1123 subdomain): lowercase
// letters, digits, '-' and '.', starting and ending with a letter or digit.
var podNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// ParsePodKey splits "namespace/name" and checks both parts: the namespace
// a DNS label (ValidateName), the name a DNS subdomain of at most 253
// characters. Errors are ReasonInvalid.
func ParsePodKey(key string) (namespace, name string, _ error) {
	ns, n, ok := strings.Cut(key, "/")
	if !ok {
		return "", "", Errorf(ReasonInvalid, "pod %q: want namespace/name", key)
	}
	if err := ValidatePodName(ns, n); err != nil {
		return "", "", err
	}
	return ns, n, nil
}

// ValidatePodName checks a pod's namespace and name as Kubernetes does.
func ValidatePodName(namespace, name string) error {
	if err := ValidateName("namespace", namespace); err != nil {
		return err
	}
	if len(name) > 253 || !podNameRE.MatchString(name) {
		return Errorf(ReasonInvalid, "invalid pod name %q: use 1-253 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit", name)
	}
	return nil
}

// Validate checks a pod record: its namespace and name, and the tenant
// and segment its addresses come from (both required, valid names; they
// need not exist yet: allocation reports a missing one).
func (p Pod) Validate() error {
	if err := ValidatePodName(p.Namespace, p.Name); err != nil {
		return err
	}
	if len(p.UID) > 128 {
		return Errorf(ReasonInvalid, "pod %s: uid longer than 128 characters", p.Key())
	}
	for _, f := range []struct{ kind, v string }{{"tenant", p.Tenant}, {"segment", p.Segment}} {
		if f.v == "" {
			return Errorf(ReasonInvalid, "pod %s: %s is required (where the pod's addresses come from)", p.Key(), f.kind)
		}
		if err := ValidateName(f.kind, f.v); err != nil {
			return Errorf(ReasonInvalid, "pod %s: %v", p.Key(), err)
		}
	}
	return nil
}

// LabelSource is the host (and tenant) label naming who registered a host
// or created a tenant; the Kubernetes controller labels its hosts and
// tenants SourceKubernetes, and its identity may release the addresses of
// those hosts only, and remove those tenants (and their segments) only.
const (
	LabelSource      = "romana.io/source"
	SourceKubernetes = "kubernetes"
)

// ReleasedAddresses answers DELETE /v1/hosts/{name}/addresses.
type ReleasedAddresses struct {
	Host     string   `json:"host"`
	Released []string `json:"released"`
}
