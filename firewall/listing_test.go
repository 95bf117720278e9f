package firewall

import (
	"reflect"
	"strings"
	"testing"
)

// A listing as nft 1.0.6 prints it: map elements wrapped over lines,
// braces inside quoted comments, a chain comment and a hook line.
const sampleListing = `table inet romana {
	map tenants-net1 {
		type ipv4_addr : verdict
		comment "network net1: destination tenant to its chain"
		elements = { 10.0.16.0 : goto tenant-1, 10.0.32.0 : goto tenant-2,
			     10.0.48.0 : goto tenant-3 }
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr 10.0.0.0/8 fib saddr . iif oif missing counter drop comment "network net1: spoofed source"
		ct state established,related accept
		jump policies comment "romana ruleset 74da7c9c3ff65057"
	}

	chain tenant-1 {
		comment "tenant acme, isolation tenant"
		tcp dport { 80, 443 } counter accept comment "a { brace"
		counter drop comment "tenant acme: isolation"
	}

	chain listing-sums {
		comment "hashes of this table's listing, to find edits; never entered"
		return comment "romana listing base 0123abcd"
		return comment "romana listing policies 4567ef01"
	}
}
`

func TestParseListing(t *testing.T) {
	l, err := parseListing(sampleListing)
	if err != nil {
		t.Fatal(err)
	}
	if got := sortedKeys(l.chains); !reflect.DeepEqual(got, []string{"forward", "listing-sums", "tenant-1"}) {
		t.Fatalf("chains %v", got)
	}
	want := []listedRule{
		{expr: "tcp dport { 80, 443 } counter accept", comment: "a { brace", hasComment: true},
		{expr: "counter drop", comment: "tenant acme: isolation", hasComment: true},
	}
	if got := l.chains["tenant-1"].rules; !reflect.DeepEqual(got, want) {
		t.Fatalf("tenant-1 rules %+v, want %+v", got, want)
	}
	if got := l.chains["forward"].rules; len(got) != 3 || got[1].hasComment || got[1].expr != "ct state established,related accept" {
		t.Fatalf("forward rules %+v", got)
	}
	if m := l.others["map tenants-net1"]; len(m) != 4 || !strings.HasPrefix(m[3], "10.0.48.0") {
		t.Fatalf("map block %q", m)
	}
	if got := l.sums(); !reflect.DeepEqual(got, map[string]string{"base": "0123abcd", "policies": "4567ef01"}) {
		t.Fatalf("sums %v", got)
	}

	// Any change to a block changes its sum; other blocks' sums stay.
	blocks := []string{"map tenants-net1", "chain forward", "chain tenant-1"}
	before := l.sum(blocks)
	if l.sum(blocks[:2]) == before {
		t.Fatal("a missing block does not change the sum")
	}
	for _, edit := range [][2]string{
		{"counter drop comment \"tenant acme: isolation\"", "counter accept comment \"tenant acme: isolation\""},
		{"policy accept;", "policy drop;"},
		{"10.0.48.0 : goto tenant-3", "10.0.48.0 : goto tenant-1"},
		{"tcp dport { 80, 443 }", "tcp dport { 80, 444 }"},
	} {
		e, err := parseListing(strings.Replace(sampleListing, edit[0], edit[1], 1))
		if err != nil {
			t.Fatal(err)
		}
		if e.sum(blocks) == before {
			t.Errorf("edit %q -> %q: sum unchanged", edit[0], edit[1])
		}
		if e.sum([]string{"chain listing-sums"}) != l.sum([]string{"chain listing-sums"}) {
			t.Errorf("edit %q changed another block's sum", edit[0])
		}
	}
	// Indentation and blank lines are not part of the listing's meaning.
	e, err := parseListing(strings.ReplaceAll(strings.ReplaceAll(sampleListing, "\t", "    "), "\n\n", "\n"))
	if err != nil || e.sum(blocks) != before {
		t.Fatalf("reindented listing: %v, sum changed=%v", err, e == nil || e.sum(blocks) != before)
	}

	for _, bad := range []string{"", "chain x {\n}\n", "table inet romana {\n\tchain x {\n", "table inet romana {\n}\n}\n", "table inet romana {\n\tchain {\n\t}\n}\n"} {
		if _, err := parseListing(bad); err == nil {
			t.Errorf("parseListing(%q): no error", bad)
		}
	}
}

// FuzzParseListing: the parser never panics, and a listing it accepts
// hashes the same when reindented.
func FuzzParseListing(f *testing.F) {
	f.Add(sampleListing)
	f.Add("table inet romana {\n}\n")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := parseListing(s)
		if err != nil {
			return
		}
		var blocks []string
		for name := range l.chains {
			blocks = append(blocks, "chain "+name)
		}
		for name := range l.others {
			blocks = append(blocks, name)
		}
		l.sums()
		r, err := parseListing(strings.ReplaceAll(s, "\n", "\n  "))
		if err != nil || r.sum(blocks) != l.sum(blocks) {
			t.Fatalf("reindented listing parses differently: %v", err)
		}
	})
}

// A set's or map's elements hash the same in any order, and any other
// change to a block changes its hash.
func TestBlockSum(t *testing.T) {
	l, err := parseListing(sampleListing)
	if err != nil {
		t.Fatal(err)
	}
	sums := l.blockSums()
	if _, ok := sums["chain "+sumChain]; ok || len(sums) != 3 {
		t.Fatalf("block sums %v: want the map, forward and tenant-1, not the sums chain", sums)
	}
	reordered := strings.Replace(sampleListing, `{ 10.0.16.0 : goto tenant-1, 10.0.32.0 : goto tenant-2,
			     10.0.48.0 : goto tenant-3 }`, `{ 10.0.48.0 : goto tenant-3,
			10.0.32.0 : goto tenant-2, 10.0.16.0 : goto tenant-1 }`, 1)
	if reordered == sampleListing {
		t.Fatal("sample listing has no map elements to reorder")
	}
	r, err := parseListing(reordered)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.blockSums(); got["map tenants-net1"] != sums["map tenants-net1"] {
		t.Fatal("reordered map elements change the map's hash")
	}
	for _, edit := range [][2]string{
		{"10.0.48.0 : goto tenant-3", "10.0.48.0 : goto tenant-1"},
		{"10.0.48.0 : goto tenant-3 }", "10.0.48.0 : goto tenant-3, 10.0.64.0 : goto tenant-3 }"},
		{`comment "network net1`, `comment "network net2`},
	} {
		e, err := parseListing(strings.Replace(sampleListing, edit[0], edit[1], 1))
		if err != nil {
			t.Fatal(err)
		}
		if got := e.blockSums(); got["map tenants-net1"] == sums["map tenants-net1"] || got["chain forward"] != sums["chain forward"] {
			t.Errorf("edit %q -> %q: map hash unchanged or another block's changed", edit[0], edit[1])
		}
	}
	if indexOf(sums).sum() == indexOf(map[string]string{"chain forward": sums["chain forward"]}).sum() {
		t.Fatal("a missing block does not change the combined hash")
	}
}
