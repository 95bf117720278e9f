package ipam

import (
	"net/url"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/romana/romana/api"
	"github.com/romana/romana/plan"
)

// topoReads returns the two gets, at revision rev, that loadTopo needs for
// network net.
func (r *Registry) topoReads(net string, rev int64) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpGet(r.k.groups(net), clientv3.WithPrefix(), clientv3.WithRev(rev)),
		clientv3.OpGet(r.k.slotIDs(net), clientv3.WithPrefix(), clientv3.WithRev(rev)),
	}
}

// loadTopo builds a network's topo from the results of topoReads.
func (r *Registry) loadTopo(net string, p *plan.Plan, groups, slots []*mvccpb.KeyValue) (*topo, error) {
	t := newTopo(net, p)
	gp := r.k.groups(net)
	for _, kv := range groups {
		var labels []string
		for _, part := range strings.Split(strings.TrimPrefix(string(kv.Key), gp), "/") {
			v, err := url.PathUnescape(part)
			if err != nil {
				return nil, api.Errorf(api.ReasonInternal, "bad group key %s: %v", kv.Key, err)
			}
			labels = append(labels, v)
		}
		rec, err := decode[groupRec](kv)
		if err != nil {
			return nil, err
		}
		t.addGroup(labels, rec, kv.ModRevision)
	}
	if err := t.resolve(); err != nil {
		return nil, api.Errorf(api.ReasonInternal, "%v", err)
	}
	sp := r.k.slotIDs(net)
	for _, kv := range slots {
		l, ok := parseLoc(strings.TrimPrefix(string(kv.Key), sp))
		if !ok {
			return nil, api.Errorf(api.ReasonInternal, "bad slot key %s", kv.Key)
		}
		t.addSlot(l, string(kv.Value))
	}
	t.added, t.freed = nil, nil
	return t, nil
}

func parseLoc(s string) (plan.Loc, bool) {
	parts := strings.Split(s, ".")
	ids := make([]uint64, len(parts))
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return plan.Loc{}, false
		}
		ids[i] = v
	}
	return plan.Loc{Groups: ids[:len(ids)-1], Host: ids[len(ids)-1]}, true
}

func (r *Registry) groupKey(net string, labels []string) string {
	esc := make([]string, len(labels))
	for i, l := range labels {
		esc[i] = url.PathEscape(l)
	}
	return r.k.groups(net) + strings.Join(esc, "/")
}

// topoTxn turns the changes place and unplace made to t into compares and ops.
func (r *Registry) topoTxn(t *topo) (cmps []clientv3.Cmp, ops []clientv3.Op) {
	for _, g := range t.groups {
		if !g.dirty {
			continue
		}
		gk, ik := r.groupKey(t.net, g.labels), r.k.groupID(t.net, g.ids)
		switch {
		case g.gone && g.modRev != 0:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(gk), "=", g.modRev))
			ops = append(ops, clientv3.OpDelete(gk), clientv3.OpDelete(ik))
		case g.gone:
		case g.modRev != 0:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(gk), "=", g.modRev))
			ops = append(ops, clientv3.OpPut(gk, mustJSON(g.rec)))
		default:
			cmps = append(cmps, absent(gk), absent(ik))
			ops = append(ops, clientv3.OpPut(gk, mustJSON(g.rec)), clientv3.OpPut(ik, labelKey(g.labels)))
		}
	}
	for _, l := range t.added {
		k := r.k.slotID(t.net, l)
		cmps = append(cmps, absent(k))
		ops = append(ops, clientv3.OpPut(k, t.slotHost(l)))
	}
	for _, f := range t.freed {
		k := r.k.slotID(t.net, f.loc)
		cmps = append(cmps, clientv3.Compare(clientv3.Value(k), "=", f.host))
		ops = append(ops, clientv3.OpDelete(k))
	}
	return cmps, ops
}
