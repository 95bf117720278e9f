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
	// sets and maps are the touched sets and maps, as want holds them:
	// new ones and those whose elements changed.
	sets []*hoststate.Set
	maps []*hoststate.Map
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
	why := pair(old.Sets, want.Sets, func(st *hoststate.Set) string { return st.Name }, func(o, st *hoststate.Set) string {
		if o == nil {
			d.newSets = append(d.newSets, *st)
			d.touched = append(d.touched, "set "+st.Name)
			d.sets = append(d.sets, st)
			for _, e := range st.Elements {
				d.addElems = append(d.addElems, setElement(st.Name, e))
			}
			return ""
		}
		if o.KeyType != st.KeyType || o.Interval != st.Interval || o.Comment != st.Comment {
			return fmt.Sprintf("set %s changed its type, flags or comment", st.Name)
		}
		if sameStrings(o.Elements, st.Elements) {
			return ""
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
			d.sets = append(d.sets, st)
		}
		return ""
	}, func(o *hoststate.Set) {
		d.goneSets = append(d.goneSets, o.Name)
		d.gone = append(d.gone, "set "+o.Name)
	})
	if why != "" {
		return delta{}, why
	}

	why = pair(old.Maps, want.Maps, func(m *hoststate.Map) string { return m.Name }, func(o, m *hoststate.Map) string {
		if o == nil {
			d.newMaps = append(d.newMaps, *m)
			d.touched = append(d.touched, "map "+m.Name)
			d.maps = append(d.maps, m)
			for _, e := range m.Elements {
				d.addElems = append(d.addElems, mapElement(m.Name, e))
			}
			return ""
		}
		if o.KeyType != m.KeyType || o.Comment != m.Comment {
			return fmt.Sprintf("map %s changed its type or comment", m.Name)
		}
		if slices.Equal(o.Elements, m.Elements) {
			return ""
		}
		had := make(map[string]string, len(o.Elements))
		for _, e := range o.Elements {
			had[e.Key] = e.Verdict
		}
		has := make(map[string]string, len(m.Elements))
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
			d.maps = append(d.maps, m)
		}
		return ""
	}, func(o *hoststate.Map) {
		d.goneMaps = append(d.goneMaps, o.Name)
		d.gone = append(d.gone, "map "+o.Name)
	})
	if why != "" {
		return delta{}, why
	}

	why = pair(old.Chains, want.Chains, func(c *hoststate.Chain) string { return c.Name }, func(o, c *hoststate.Chain) string {
		switch {
		case o == nil:
			d.newChains = append(d.newChains, *c)
		case o.Hook != c.Hook || o.Comment != c.Comment:
			return fmt.Sprintf("chain %s changed its hook or comment", c.Name)
		case !sameRules(o.Rules, c.Rules):
			d.changed = append(d.changed, *c)
		default:
			return ""
		}
		d.touched = append(d.touched, "chain "+c.Name)
		return ""
	}, func(o *hoststate.Chain) {
		d.goneChains = append(d.goneChains, o.Name)
		d.gone = append(d.gone, "chain "+o.Name)
	})
	if why != "" {
		return delta{}, why
	}
	return d, ""
}

// pair calls both for each element of want, in want's order, with the
// element of old of the same name (nil if none), stopping at the first
// reason it returns; then gone for each element of old whose name want
// lacks, in old's order. Names are unique within each list. When old and
// want name the same elements in the same order (a ruleset computed
// again after a change inside a few chains), it pairs them by position
// and builds no index.
func pair[T any](old, want []T, name func(*T) string, both func(o, w *T) string, gone func(o *T)) string {
	if len(old) == len(want) {
		aligned := true
		for i := range want {
			if name(&old[i]) != name(&want[i]) {
				aligned = false
				break
			}
		}
		if aligned {
			for i := range want {
				if why := both(&old[i], &want[i]); why != "" {
					return why
				}
			}
			return ""
		}
	}
	olds := make(map[string]*T, len(old))
	for i := range old {
		olds[name(&old[i])] = &old[i]
	}
	wants := make(map[string]bool, len(want))
	for i := range want {
		wants[name(&want[i])] = true
		if why := both(olds[name(&want[i])], &want[i]); why != "" {
			return why
		}
	}
	for i := range old {
		if !wants[name(&old[i])] {
			gone(&old[i])
		}
	}
	return ""
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

// sameStrings reports whether two lists hold the same strings in the same
// order, at once when they are one list.
func sameStrings(a, b []string) bool {
	if len(a) > 0 && len(a) == len(b) && &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
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
