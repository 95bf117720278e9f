package api

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestAddressSetValidate(t *testing.T) {
	a := netip.MustParseAddr
	got, err := AddressSet{Name: "web", Addresses: []netip.Addr{a("fd00::2"), a("::ffff:10.0.0.9"), a("10.0.0.1"), a("10.0.0.9"), a("fd00::2")}}.Validate()
	want := AddressSet{Name: "web", Addresses: []netip.Addr{a("10.0.0.1"), a("10.0.0.9"), a("fd00::2")}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Validate = %+v, %v; want %+v", got, err, want)
	}
	if got, err := (AddressSet{Name: "empty"}).Validate(); err != nil || got.Addresses == nil {
		t.Errorf("empty set: %+v, %v; want an empty, non-nil list", got, err)
	}
	for _, tc := range []struct {
		s    AddressSet
		want string
	}{
		{AddressSet{Name: "A"}, `invalid address set name "A"`},
		{AddressSet{Name: "s", Addresses: []netip.Addr{{}}}, "addresses[0] is missing"},
		{AddressSet{Name: "s", Addresses: []netip.Addr{a("10.0.0.1"), a("fe80::1%eth0")}}, "addresses[1] fe80::1%eth0 has a zone"},
		{AddressSet{Name: "s", Addresses: make([]netip.Addr, MaxAddressSetSize+1)}, "has 65537 addresses; a set holds at most 65536"},
		{AddressSet{Name: "s", Description: strings.Repeat("d", 1025)}, "description longer than 1024"},
	} {
		if _, err := tc.s.Validate(); ReasonOf(err) != ReasonInvalid || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%.60v) = %v; want Invalid containing %q", tc.s, err, tc.want)
		}
	}
}

func TestPodKeyAndValidate(t *testing.T) {
	for _, k := range []string{"ns/p", "kube-system/coredns-5d78c9869d-abcde", "a/b.c-d", "n/" + strings.Repeat("x", 253)} {
		ns, name, err := ParsePodKey(k)
		if err != nil || ns+"/"+name != k {
			t.Errorf("ParsePodKey(%q) = %q, %q, %v", k, ns, name, err)
		}
	}
	for _, k := range []string{"", "ns", "ns/", "/p", "NS/p", "ns/P", "ns/p/q", "ns/-p", "ns/p_1", "n/" + strings.Repeat("x", 254)} {
		if _, _, err := ParsePodKey(k); ReasonOf(err) != ReasonInvalid {
			t.Errorf("ParsePodKey(%q) = %v; want Invalid", k, err)
		}
	}
	good := Pod{Namespace: "ns", Name: "p", Tenant: "t", Segment: "s"}
	if err := good.Validate(); err != nil {
		t.Error(err)
	}
	for _, tc := range []struct {
		mutate func(*Pod)
		want   string
	}{
		{func(p *Pod) { p.Tenant = "" }, "pod ns/p: tenant is required"},
		{func(p *Pod) { p.Segment = "" }, "pod ns/p: segment is required"},
		{func(p *Pod) { p.Segment = "S" }, `pod ns/p: invalid segment name "S"`},
		{func(p *Pod) { p.UID = strings.Repeat("u", 129) }, "uid longer than 128"},
		{func(p *Pod) { p.Namespace = "" }, `invalid namespace name ""`},
	} {
		p := good
		tc.mutate(&p)
		if err := p.Validate(); ReasonOf(err) != ReasonInvalid || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v; want %q", p, err, tc.want)
		}
	}
}

func TestAddressSetValidatePods(t *testing.T) {
	got, err := AddressSet{Name: "web", Pods: []string{"ns/b", "ns/a", "ns/b", "other/a"}}.Validate()
	want := AddressSet{Name: "web", Addresses: []netip.Addr{}, Pods: []string{"ns/a", "ns/b", "other/a"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Validate = %+v, %v; want %+v", got, err, want)
	}
	if got, err := (AddressSet{Name: "nopods"}).Validate(); err != nil || got.Pods != nil {
		t.Errorf("a set without pods: %+v, %v; want Pods nil (left out of the JSON, as agents older than Pods expect)", got, err)
	}
	for _, tc := range []struct {
		pods []string
		want string
	}{
		{[]string{"ns/a", "ns"}, `pods[1]: pod "ns": want namespace/name`},
		{[]string{"NS/a"}, `pods[0]: invalid namespace name "NS"`},
		{[]string{"ns/a/b"}, `pods[0]: invalid pod name "a/b"`},
		{[]string{""}, `pods[0]: pod "": want namespace/name`},
		{make([]string, MaxAddressSetSize+1), "has 65537 pods; a set holds at most 65536"},
	} {
		if _, err := (AddressSet{Name: "s", Pods: tc.pods}).Validate(); ReasonOf(err) != ReasonInvalid || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(pods %.40q) = %v; want Invalid containing %q", tc.pods, err, tc.want)
		}
	}
}
