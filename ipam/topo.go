package ipam

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// groupRec is the stored value of a topology group: its id among its
// siblings and how many hosts it holds (a group is deleted at zero).
type groupRec struct {
	ID    uint64 `json:"id"`
	Hosts int    `json:"hosts"`
}

// group is a topology group in a topo.
type group struct {
	labels []string // label values from the outermost level to this group
	ids    []uint64 // ids from the outermost level to this group
	rec    groupRec
	modRev int64 // ModRevision when read; 0 for a group created by place
	dirty  bool  // rec changed
	gone   bool  // to be deleted
}

// topo is one network's placement state, as read at one revision. Its
// methods are pure: place and unplace update it in memory so that a batch of
// decisions sees its own earlier decisions; the caller turns the changes into
// one transaction guarded by the revisions it read.
type topo struct {
	net    string
	plan   *plan.Plan
	groups map[string]*group            // by labelKey(labels)
	hosts  map[string]map[uint64]string // group id path ("" without levels) -> host id -> host
	added  []plan.Loc                   // slots claimed by place
	freed  []freedSlot                  // slots released by unplace
}

func newTopo(net string, p *plan.Plan) *topo {
	return &topo{net: net, plan: p, groups: map[string]*group{}, hosts: map[string]map[uint64]string{}}
}

func labelKey(labels []string) string { return strings.Join(labels, "/") }

func idsKey(ids []uint64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(parts, ".")
}

// addGroup records a stored group (while reading).
func (t *topo) addGroup(labels []string, rec groupRec, modRev int64) {
	t.groups[labelKey(labels)] = &group{labels: labels, rec: rec, modRev: modRev}
}

// addSlot records a stored slot claim (while reading).
func (t *topo) addSlot(l plan.Loc, host string) {
	k := idsKey(l.Groups)
	if t.hosts[k] == nil {
		t.hosts[k] = map[uint64]string{}
	}
	t.hosts[k][l.Host] = host
}

// resolve fills in every group's id path; call once after reading.
func (t *topo) resolve() error {
	for _, g := range t.groups {
		g.ids = g.ids[:0]
		for i := 1; i <= len(g.labels); i++ {
			a, ok := t.groups[labelKey(g.labels[:i])]
			if !ok {
				return fmt.Errorf("network %s: group %s has no parent group %s", t.net, labelKey(g.labels), labelKey(g.labels[:i]))
			}
			g.ids = append(g.ids, a.rec.ID)
		}
	}
	return nil
}

// slotHost returns the host at l, or "".
func (t *topo) slotHost(l plan.Loc) string { return t.hosts[idsKey(l.Groups)][l.Host] }

// labelsFor returns the host's label values for the network's levels.
func (t *topo) labelsFor(host string, labels map[string]string) ([]string, error) {
	var out []string
	for _, lv := range t.plan.Levels() {
		v := labels[lv.Name]
		if v == "" {
			return nil, api.Errorf(api.ReasonInvalid,
				"host %s has no label %q, which network %s needs to place it (its layout has a %q level)", host, lv.Name, t.net, lv.Name)
		}
		out = append(out, v)
	}
	return out, nil
}

// place finds a location for host: each topology group is found by label
// (an existing group keeps its id; a new one takes the smallest id free among
// its siblings), then the host takes the smallest free id in its innermost group.
func (t *topo) place(host string, labels map[string]string) (plan.Loc, error) {
	vals, err := t.labelsFor(host, labels)
	if err != nil {
		return plan.Loc{}, err
	}
	levels := t.plan.Levels()
	var ids []uint64
	var path []*group
	for i := range vals {
		k := labelKey(vals[:i+1])
		g, ok := t.groups[k]
		if ok && g.gone {
			return plan.Loc{}, fmt.Errorf("network %s: group %s is being deleted", t.net, k)
		}
		if !ok {
			used := map[uint64]bool{}
			for _, s := range t.groups {
				if !s.gone && len(s.labels) == i+1 && labelKey(s.labels[:i]) == labelKey(vals[:i]) {
					used[s.rec.ID] = true
				}
			}
			id, ok := smallestFree(used, 0, plan.MaxID(levels[i].Bits))
			if !ok {
				return plan.Loc{}, api.Errorf(api.ReasonExhausted,
					"network %s: no free %s id for %s %q: all %d in use", t.net, levels[i].Name, levels[i].Name, vals[i], len(used))
			}
			g = &group{labels: append([]string(nil), vals[:i+1]...), rec: groupRec{ID: id}}
			t.groups[k] = g
		}
		ids = append(ids, g.rec.ID)
		g.ids = append([]uint64(nil), ids...)
		path = append(path, g)
	}
	used := map[uint64]bool{}
	for id := range t.hosts[idsKey(ids)] {
		used[id] = true
	}
	hid, ok := smallestFree(used, 0, plan.MaxID(t.plan.HostBits()))
	if !ok {
		where := "network " + t.net
		if len(levels) > 0 {
			where = fmt.Sprintf("%s %s of network %s", levels[len(levels)-1].Name, vals[len(vals)-1], t.net)
		}
		return plan.Loc{}, api.Errorf(api.ReasonExhausted, "%s is full: %d of %d host ids in use", where, len(used), len(used))
	}
	for _, g := range path {
		g.rec.Hosts++
		g.dirty = true
	}
	l := plan.Loc{Groups: ids, Host: hid}
	t.addSlot(l, host)
	t.added = append(t.added, l)
	return l, nil
}

// unplace releases host's slot at l (which must be host's) and every group
// left empty.
func (t *topo) unplace(host string, l plan.Loc) {
	if t.slotHost(l) != host {
		return
	}
	delete(t.hosts[idsKey(l.Groups)], l.Host)
	t.freed = append(t.freed, freedSlot{l, host})
	for _, g := range t.groups {
		if g.gone || len(g.ids) == 0 || len(g.ids) > len(l.Groups) || idsKey(g.ids) != idsKey(l.Groups[:len(g.ids)]) {
			continue
		}
		g.rec.Hosts--
		g.dirty = true
		if g.rec.Hosts <= 0 {
			g.gone = true
		}
	}
}

type freedSlot struct {
	loc  plan.Loc
	host string
}

// smallestFree returns the smallest value in [lo, hi] not in used.
func smallestFree(used map[uint64]bool, lo, hi uint64) (uint64, bool) {
	for v := lo; ; v++ {
		if !used[v] {
			return v, true
		}
		if v == hi {
			return 0, false
		}
	}
}
