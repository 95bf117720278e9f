package api

import "net/netip"

// KindAddressSet is the kind of address sets in the watch stream.
const KindAddressSet = "addressset"

// AddressSet is a named, explicit set of endpoint addresses that policies
// select (Selector.Set) or name as peers (Peer.Set). It exists for
// groupings the address plan cannot express as a masked range: the pods a
// Kubernetes label selector picks. Agents hold each set as nft named sets
// (one per family) and follow membership changes by adding and deleting
// elements, never by rewriting rules. Addresses are sorted and distinct.
type AddressSet struct {
	Name        string       `json:"name"`
	Description string       `json:"description,omitempty"`
	Addresses   []netip.Addr `json:"addresses"`
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
