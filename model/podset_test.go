package model

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"

	"github.com/romana/romana/api"
)

// A set's members are its addresses and the addresses allocated for its
// pods; an address event of a listed pod says so (Change.SetMember), and
// so does one that stops being a listed pod's.
func TestAddressSetPodMembers(t *testing.T) {
	a := netip.MustParseAddr
	pod := func(name, ns, p, ip string) api.Address {
		return api.Address{Name: name, IP: a(ip), Host: "h1", Tenant: "acme", Segment: "default",
			Attrs: map[string]string{api.AttrK8sNamespace: ns, api.AttrK8sPod: p}}
	}
	snap := testSnapshot()
	snap.Addresses = []api.Address{pod("c0:eth0", "shop", "web-0", "10.1.16.5")}
	snap.AddressSets = []api.AddressSet{{Name: "web", Addresses: []netip.Addr{a("10.9.0.1")}, Pods: []string{"shop/web-0", "shop/web-1"}}}
	m := New(snap)
	rev := int64(1)
	apply := func(kind, name string, obj any) Change {
		t.Helper()
		rev++
		ev := api.Event{Revision: rev, Type: api.EventDelete, Kind: kind, Name: name}
		if obj != nil {
			b, _ := json.Marshal(obj)
			ev.Type, ev.Object = api.EventPut, b
		}
		c, ok, err := m.Apply(ev)
		if err != nil || !ok {
			t.Fatalf("Apply %s %s: %v, %v", kind, name, ok, err)
		}
		return c
	}
	members := func(want ...string) {
		t.Helper()
		var w []netip.Addr
		for _, s := range want {
			w = append(w, a(s))
		}
		if got := m.AddressSetMembers("web"); !slices.Equal(got, w) {
			t.Errorf("members of web = %v; want %v", got, w)
		}
	}
	members("10.1.16.5", "10.9.0.1") // from the snapshot
	// A listed address given to a pod the set does not list (a deleted
	// member's, reused before the set's writer caught up) is no member;
	// the allocation's event says the set changed.
	if c := apply(api.KindAddress, "reuse:eth0", pod("reuse:eth0", "shop", "intruder", "10.9.0.1")); !c.SetMember {
		t.Errorf("allocation of a listed address: %+v; want SetMember", c)
	}
	members("10.1.16.5")
	if c := apply(api.KindAddress, "reuse:eth0", nil); !c.SetMember {
		t.Errorf("release of a listed address: %+v; want SetMember", c)
	}
	members("10.1.16.5", "10.9.0.1")
	// Given to a listed pod, it stays a member (once).
	apply(api.KindAddress, "again:eth0", pod("again:eth0", "shop", "web-0", "10.9.0.1"))
	members("10.1.16.5", "10.9.0.1")
	apply(api.KindAddress, "again:eth0", nil)
	if c := apply(api.KindAddress, "c1:eth0", pod("c1:eth0", "shop", "web-1", "10.1.16.6")); !c.SetMember {
		t.Errorf("allocation for a listed pod: %+v; want SetMember", c)
	}
	members("10.1.16.5", "10.1.16.6", "10.9.0.1")
	if c := apply(api.KindAddress, "c2:eth0", pod("c2:eth0", "shop", "db-0", "10.1.16.7")); c.SetMember {
		t.Errorf("allocation for a pod no set lists: %+v; want no SetMember", c)
	}
	if c := apply(api.KindAddress, "c3:eth0", api.Address{Name: "c3:eth0", IP: a("10.1.16.8"), Host: "h1", Tenant: "acme", Segment: "default"}); c.SetMember {
		t.Errorf("an address of no pod: %+v; want no SetMember", c)
	}
	members("10.1.16.5", "10.1.16.6", "10.9.0.1")
	// Another namespace's pod of the same name is not a member.
	apply(api.KindAddress, "c4:eth0", pod("c4:eth0", "other", "web-1", "10.1.16.9"))
	members("10.1.16.5", "10.1.16.6", "10.9.0.1")
	// Released: the member goes, and the event says so.
	if c := apply(api.KindAddress, "c1:eth0", nil); !c.SetMember {
		t.Errorf("release of a listed pod's address: %+v; want SetMember", c)
	}
	members("10.1.16.5", "10.9.0.1")
	// The set changes: db-0 listed, web-0 not; allocations follow.
	apply(api.KindAddressSet, "web", api.AddressSet{Name: "web", Pods: []string{"shop/db-0"}})
	members("10.1.16.7")
	if c := apply(api.KindAddress, "c0:eth0", nil); c.SetMember {
		t.Errorf("release of a pod no longer listed: %+v; want no SetMember", c)
	}
	apply(api.KindAddressSet, "web", nil)
	members()
	if c := apply(api.KindAddress, "c2:eth0", nil); c.SetMember {
		t.Errorf("release after the set went: %+v; want no SetMember", c)
	}
	if got := m.PodAddresses("other/web-1"); len(got) != 1 || got[0].Name != "c4:eth0" {
		t.Errorf("PodAddresses(other/web-1) = %+v", got)
	}
	// A new model from the snapshot of this one agrees.
	if got, want := New(m.Snapshot()).AddressSetMembers("web"), m.AddressSetMembers("web"); !slices.Equal(got, want) {
		t.Errorf("rebuilt: %v, incremental: %v", got, want)
	}
}

// A set rewritten with the same members (its writer adding the address of
// a pod it lists, already resolved) is no change; one whose members or
// existence change is.
func TestAddressSetChangeOnlyWhenMembersChange(t *testing.T) {
	a := netip.MustParseAddr
	snap := testSnapshot()
	snap.Addresses = []api.Address{{Name: "c1:eth0", IP: a("10.1.16.5"), Host: "h1", Tenant: "acme", Segment: "default",
		Attrs: map[string]string{api.AttrK8sNamespace: "shop", api.AttrK8sPod: "web-1"}}}
	m := New(snap)
	rev := int64(1)
	put := func(s *api.AddressSet) bool {
		t.Helper()
		rev++
		ev := api.Event{Revision: rev, Type: api.EventDelete, Kind: api.KindAddressSet, Name: "web"}
		if s != nil {
			b, _ := json.Marshal(s)
			ev.Type, ev.Object = api.EventPut, b
		}
		c, ok, err := m.Apply(ev)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		return c.SetMember
	}
	for i, tc := range []struct {
		set  *api.AddressSet
		want bool
	}{
		{&api.AddressSet{Name: "web", Pods: []string{"shop/web-1"}}, true},                                           // created
		{&api.AddressSet{Name: "web", Pods: []string{"shop/web-1"}, Addresses: []netip.Addr{a("10.1.16.5")}}, false}, // its address added: same members
		{&api.AddressSet{Name: "web", Pods: []string{"shop/web-1"}, Description: "d"}, false},                        // description only
		{&api.AddressSet{Name: "web", Pods: []string{"shop/web-1"}, Addresses: []netip.Addr{a("10.9.0.1")}}, true},   // a member more
		{&api.AddressSet{Name: "web"}, true},                                                                         // none left
		{&api.AddressSet{Name: "web"}, false},                                                                        // still none
		{nil, true},                                                                                                  // gone (a missing set is not an empty one to policies)
	} {
		if got := put(tc.set); got != tc.want {
			t.Errorf("step %d (%+v): SetMember %v, want %v", i, tc.set, got, tc.want)
		}
	}
}
