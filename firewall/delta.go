package firewall

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/romana/romana/hoststate"
)

// delta is what one transaction must do to turn the table holding one
// ruleset (old) into the table holding another (want), touching only what
// differs: chains whose rules differ are flushed and refilled, new chains,
// sets and maps are added, gone ones deleted, and set and map elements are
// added and deleted one by one (a map element whose verdict changed is
// deleted and added again). It is plain data, computed by diff.
type delta struct {
	newSets    []hoststate.Set
	newMaps    []hoststate.Map
	newChains  []hoststate.Chain // declared first, filled after the flushes
	changed    []hoststate.Chain // flushed and refilled
	goneChains []string          // flushed early, deleted last
	goneSets   []string
	goneMaps   []string
	delElems   []*knftables.Element
	addElems   []*knftables.Element
	// touched are the listing blocks ("chain x", "set s", "map m") that
	// exist after the transaction and whose listing it may change.
	touched []string
	// gone are the listing blocks the transaction deletes.
	gone []string
}

// empty reports whether the delta changes nothing in the kernel.
func (d *delta) empty() bool {
	return len(d.touched) == 0 && len(d.gone) == 0
}

// rules is the number of rules the transaction writes.
func (d *delta) rules() int {
	n := 0
	for _, c := range slices.Concat(d.newChains, d.changed) {
		n += len(c.Rules)
	}
	return n
}

// diff returns the delta from old to want, or a reason why none can
// express it and the table must be replaced: a chain whose hook or
// comment changed (nft keeps an existing chain's comment on "add chain"),
// a set or map whose type, flags or comment changed, or a change to any
// part of the ruleset beyond its sets, maps and chains.
func diff(old, want hoststate.Ruleset) (d delta, replace string) {
	if rest(old) != nil || rest(want) != nil {
		if !reflect.DeepEqual(rest(old), rest(want)) {
			return delta{}, "ruleset objects other than sets, maps and chains changed"
		}
	}
	oldSets := map[string]*hoststate.Set{}
	for i := range old.Sets {
		oldSets[old.Sets[i].Name] = &old.Sets[i]
	}
	wantSets := map[string]bool{}
	for _, st := range want.Sets {
		wantSets[st.Name] = true
		o := oldSets[st.Name]
		if o == nil {
			d.newSets = append(d.newSets, st)
			d.touched = append(d.touched, "set "+st.Name)
			for _, e := range st.Elements {
				d.addElems = append(d.addElems, setElement(st.Name, e))
			}
			continue
		}
		if o.KeyType != st.KeyType || o.Interval != st.Interval || o.Comment != st.Comment {
			return delta{}, fmt.Sprintf("set %s changed its type, flags or comment", st.Name)
		}
		had := toSet(o.Elements)
		has := toSet(st.Elements)
		n := len(d.delElems) + len(d.addElems)
		for _, e := range o.Elements {
			if !has[e] {
				d.delElems = append(d.delElems, setElement(st.Name, e))
			}
		}
		for _, e := range st.Elements {
			if !had[e] {
				d.addElems = append(d.addElems, setElement(st.Name, e))
			}
		}
		if len(d.delElems)+len(d.addElems) > n {
			d.touched = append(d.touched, "set "+st.Name)
		}
	}
	for _, st := range old.Sets {
		if !wantSets[st.Name] {
			d.goneSets = append(d.goneSets, st.Name)
			d.gone = append(d.gone, "set "+st.Name)
		}
	}

	oldMaps := map[string]*hoststate.Map{}
	for i := range old.Maps {
		oldMaps[old.Maps[i].Name] = &old.Maps[i]
	}
	wantMaps := map[string]bool{}
	for _, m := range want.Maps {
		wantMaps[m.Name] = true
		o := oldMaps[m.Name]
		if o == nil {
			d.newMaps = append(d.newMaps, m)
			d.touched = append(d.touched, "map "+m.Name)
			for _, e := range m.Elements {
				d.addElems = append(d.addElems, mapElement(m.Name, e))
			}
			continue
		}
		if o.KeyType != m.KeyType || o.Comment != m.Comment {
			return delta{}, fmt.Sprintf("map %s changed its type or comment", m.Name)
		}
		had := map[string]string{}
		for _, e := range o.Elements {
			had[e.Key] = e.Verdict
		}
		has := map[string]string{}
		for _, e := range m.Elements {
			has[e.Key] = e.Verdict
		}
		n := len(d.delElems) + len(d.addElems)
		for _, e := range o.Elements {
			if v, ok := has[e.Key]; !ok || v != e.Verdict {
				d.delElems = append(d.delElems, &knftables.Element{Map: m.Name, Key: []string{e.Key}})
			}
		}
		for _, e := range m.Elements {
			if v, ok := had[e.Key]; !ok || v != e.Verdict {
				d.addElems = append(d.addElems, mapElement(m.Name, e))
			}
		}
		if len(d.delElems)+len(d.addElems) > n {
			d.touched = append(d.touched, "map "+m.Name)
		}
	}
	for _, m := range old.Maps {
		if !wantMaps[m.Name] {
			d.goneMaps = append(d.goneMaps, m.Name)
			d.gone = append(d.gone, "map "+m.Name)
		}
	}

	oldChains := map[string]*hoststate.Chain{}
	for i := range old.Chains {
		oldChains[old.Chains[i].Name] = &old.Chains[i]
	}
	wantChains := map[string]bool{}
	for _, c := range want.Chains {
		wantChains[c.Name] = true
		o := oldChains[c.Name]
		switch {
		case o == nil:
			d.newChains = append(d.newChains, c)
		case o.Hook != c.Hook || o.Comment != c.Comment:
			return delta{}, fmt.Sprintf("chain %s changed its hook or comment", c.Name)
		case !sameRules(o.Rules, c.Rules):
			d.changed = append(d.changed, c)
		default:
			continue
		}
		d.touched = append(d.touched, "chain "+c.Name)
	}
	for _, c := range old.Chains {
		if !wantChains[c.Name] {
			d.goneChains = append(d.goneChains, c.Name)
			d.gone = append(d.gone, "chain "+c.Name)
		}
	}
	return d, ""
}

// rest returns the ruleset without its sets, maps and chains, or nil if
// nothing is left: the parts diff cannot update in place.
func rest(rs hoststate.Ruleset) *hoststate.Ruleset {
	rs.Sets, rs.Maps, rs.Chains = nil, nil, nil
	// A flowtable's devices follow the endpoints without a replace
	// (Firewall.syncFlowtables); its name and presence are compared.
	rs.Flowtables = withoutDevices(rs.Flowtables)
	if reflect.ValueOf(rs).IsZero() {
		return nil
	}
	return &rs
}

// sameRules compares what the kernel holds of two rule lists: expressions
// and comments (a rule's Policy is not written).
func sameRules(a, b []hoststate.Rule) bool {
	if len(a) > 0 && len(a) == len(b) && &a[0] == &b[0] {
		return true // one list (the compiler keeps unchanged chains)
	}
	return slices.EqualFunc(a, b, func(x, y hoststate.Rule) bool { return x.Expr == y.Expr && x.Comment == y.Comment })
}

func toSet(xs []string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func setElement(set, e string) *knftables.Element {
	return &knftables.Element{Set: set, Key: strings.Split(e, " . ")}
}

func mapElement(m string, e hoststate.Element) *knftables.Element {
	return &knftables.Element{Map: m, Key: []string{e.Key}, Value: []string{e.Verdict}}
}

// fill adds d's operations to tx, in an order nft accepts in one
// transaction: new sets, maps and chains are declared first (rules and
// elements may name them); elements are deleted (a map element may jump
// to a chain about to go); changed and gone chains are flushed (their
// rules may name chains, sets or maps about to go); changed and new
// chains are filled; elements are added; gone sets, maps and chains are
// deleted last, when nothing refers to them any more.
func (d *delta) fill(tx *knftables.Transaction) {
	for _, st := range d.newSets {
		tx.Add(setOf(st))
	}
	for _, m := range d.newMaps {
		tx.Add(mapOf(m))
	}
	for _, c := range d.newChains {
		tx.Add(chainOf(c))
	}
	for _, e := range d.delElems {
		tx.Delete(e)
	}
	for _, c := range d.changed {
		tx.Flush(&knftables.Chain{Name: c.Name})
	}
	for _, name := range d.goneChains {
		tx.Flush(&knftables.Chain{Name: name})
	}
	for _, c := range d.changed {
		addRules(tx, c)
	}
	for _, c := range d.newChains {
		addRules(tx, c)
	}
	for _, e := range d.addElems {
		tx.Add(e)
	}
	for _, name := range d.goneMaps {
		tx.Delete(&knftables.Map{Name: name})
	}
	for _, name := range d.goneSets {
		tx.Delete(&knftables.Set{Name: name})
	}
	for _, name := range d.goneChains {
		tx.Delete(&knftables.Chain{Name: name})
	}
}

func setOf(st hoststate.Set) *knftables.Set {
	ks := &knftables.Set{Name: st.Name, Type: st.KeyType}
	if st.Interval {
		ks.Flags = []knftables.SetFlag{knftables.IntervalFlag}
	}
	if st.Comment != "" {
		ks.Comment = knftables.PtrTo(st.Comment)
	}
	return ks
}

func mapOf(m hoststate.Map) *knftables.Map {
	km := &knftables.Map{Name: m.Name, Type: m.KeyType + " : verdict"}
	if m.Comment != "" {
		km.Comment = knftables.PtrTo(m.Comment)
	}
	return km
}
