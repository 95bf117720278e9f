package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// kernelRuleCounters returns the chain, comment and counters of each rule
// in the chains of table inet <table> that keep(chain) selects, read over
// netlink in the calling thread's network namespace: one dump of the
// chains, then one dump of the rules per selected chain (NFT_MSG_GETRULE
// filtered by table and chain in the kernel). A missing table gives none.
//
// One dump per chain, because the kernel resumes a rule dump for each
// message buffer it fills by walking the table's rules from the start: a
// single dump of 50,000 rules costs seconds of system time, quadratic in
// the table's size, and one per chain only the chain's own rules.
func kernelRuleCounters(table string, keep func(chain string) bool) ([]countedRule, error) {
	chains, err := retryDump(func() ([]string, error) { return dumpChains(table) })
	if err != nil {
		return nil, err
	}
	var rules []countedRule
	for _, c := range chains {
		if !keep(c) {
			continue
		}
		rs, err := retryDump(func() ([]countedRule, error) { return dumpRuleCounters(table, c) })
		if err != nil {
			return nil, err
		}
		rules = append(rules, rs...)
	}
	return rules, nil
}

// retryDump runs dump again, up to three times in all, while the kernel
// reports it interrupted (the table changed meanwhile).
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range 3 {
		var out []T
		out, err = dump()
		if !errors.Is(err, nl.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}

// dumpChains returns the names of the chains of table inet <table>; none
// when there is no such table.
func dumpChains(table string) ([]string, error) {
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETCHAIN, unix.NLM_F_DUMP)
	req.AddData(nfgenmsgFamily(unix.NFPROTO_INET))
	var names []string
	var perr error
	err := req.ExecuteIter(unix.NETLINK_NETFILTER, 0, func(msg []byte) bool {
		if len(msg) < 4 {
			perr = errors.New("short chain message")
			return false
		}
		attrs, err := nl.ParseRouteAttr(msg[4:])
		if err != nil {
			perr = fmt.Errorf("chain attributes: %w", err)
			return false
		}
		var tbl, name string
		for _, a := range attrs {
			switch attrType(a.Attr.Type) {
			case unix.NFTA_CHAIN_TABLE:
				tbl = cString(a.Value)
			case unix.NFTA_CHAIN_NAME:
				name = cString(a.Value)
			}
		}
		if tbl == table {
			names = append(names, name)
		}
		return true
	})
	if err == nil {
		err = perr
	}
	if err != nil {
		return names, fmt.Errorf("dump chains of table inet %s: %w", table, err)
	}
	return names, nil
}

// dumpRuleCounters dumps the rules of one chain; none when the chain (or
// its table) is gone.
func dumpRuleCounters(table, chain string) ([]countedRule, error) {
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETRULE, unix.NLM_F_DUMP)
	req.AddData(nfgenmsgFamily(unix.NFPROTO_INET))
	req.AddData(nl.NewRtAttr(unix.NFTA_RULE_TABLE, nl.ZeroTerminated(table)))
	req.AddData(nl.NewRtAttr(unix.NFTA_RULE_CHAIN, nl.ZeroTerminated(chain)))
	var rules []countedRule
	var perr error
	err := req.ExecuteIter(unix.NETLINK_NETFILTER, 0, func(msg []byte) bool {
		r, err := parseRuleMsg(msg)
		if err != nil {
			perr = err
			return false
		}
		rules = append(rules, r...)
		return true
	})
	if err == nil {
		err = perr
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, nil
	case err != nil:
		return rules, fmt.Errorf("dump rules of chain %s in table inet %s: %w", chain, table, err)
	}
	return rules, nil
}

// parseRuleMsg reads one NFT_MSG_NEWRULE message of a dump (nfgenmsg, then
// the rule's attributes): its chain, its comment (the userdata's
// NFTNL_UDATA_RULE_COMMENT) and one countedRule per counter expression,
// or one without a counter if it has none.
func parseRuleMsg(msg []byte) ([]countedRule, error) {
	if len(msg) < 4 {
		return nil, errors.New("short rule message")
	}
	attrs, err := nl.ParseRouteAttr(msg[4:])
	if err != nil {
		return nil, fmt.Errorf("rule attributes: %w", err)
	}
	var r countedRule
	var counters [][2]uint64
	for _, a := range attrs {
		switch attrType(a.Attr.Type) {
		case unix.NFTA_RULE_CHAIN:
			r.chain = cString(a.Value)
		case unix.NFTA_RULE_USERDATA:
			r.comment = userdataComment(a.Value)
		case unix.NFTA_RULE_EXPRESSIONS:
			if counters, err = parseCounterExprs(a.Value); err != nil {
				return nil, err
			}
		}
	}
	if len(counters) == 0 {
		return []countedRule{r}, nil
	}
	out := make([]countedRule, 0, len(counters))
	for _, c := range counters {
		x := r
		x.bytes, x.packets, x.hasCounter = c[0], c[1], true
		out = append(out, x)
	}
	return out, nil
}

// parseCounterExprs returns bytes and packets of each "counter" expression
// in an NFTA_RULE_EXPRESSIONS list.
func parseCounterExprs(b []byte) ([][2]uint64, error) {
	elems, err := nl.ParseRouteAttr(b)
	if err != nil {
		return nil, fmt.Errorf("rule expressions: %w", err)
	}
	var out [][2]uint64
	for _, el := range elems {
		if attrType(el.Attr.Type) != unix.NFTA_LIST_ELEM {
			continue
		}
		parts, err := nl.ParseRouteAttr(el.Value)
		if err != nil {
			return nil, fmt.Errorf("rule expression: %w", err)
		}
		var name string
		var data []byte
		for _, p := range parts {
			switch attrType(p.Attr.Type) {
			case unix.NFTA_EXPR_NAME:
				name = cString(p.Value)
			case unix.NFTA_EXPR_DATA:
				data = p.Value
			}
		}
		if name != "counter" {
			continue
		}
		cs, err := nl.ParseRouteAttr(data)
		if err != nil {
			return nil, fmt.Errorf("counter expression: %w", err)
		}
		var c [2]uint64
		for _, a := range cs {
			if len(a.Value) != 8 {
				continue
			}
			switch attrType(a.Attr.Type) {
			case unix.NFTA_COUNTER_BYTES:
				c[0] = binary.BigEndian.Uint64(a.Value)
			case unix.NFTA_COUNTER_PACKETS:
				c[1] = binary.BigEndian.Uint64(a.Value)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// userdataComment returns the comment in a rule's userdata (type-length-
// value records of one byte each; the comment is type 0, NUL-terminated),
// or "".
func userdataComment(b []byte) string {
	for len(b) >= 2 {
		typ, n := b[0], int(b[1])
		if len(b) < 2+n {
			return ""
		}
		if typ == 0 { // NFTNL_UDATA_RULE_COMMENT
			return cString(b[2 : 2+n])
		}
		b = b[2+n:]
	}
	return ""
}

// attrType strips the nested and byte-order flags off an attribute type.
func attrType(t uint16) uint16 { return t &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER) }

// cString returns b up to its first NUL.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// nfgenmsgFamily is an nfnetlink header for one address family, version
// 0, resource id 0.
type nfgenmsgFamily uint8

func (nfgenmsgFamily) Len() int            { return 4 }
func (f nfgenmsgFamily) Serialize() []byte { return []byte{byte(f), unix.NFNETLINK_V0, 0, 0} }
